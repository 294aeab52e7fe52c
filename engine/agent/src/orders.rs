//! Releases ordered through the control plane, pure: the order rides on
//! heartbeat answers until the agent's heartbeat carries its result, so the
//! agent must start each order once, report its result until the control
//! plane stops sending the order, and ignore repeats.

use crate::protocol::{ReleaseOrder, ReleaseResult};

/// What the agent knows of ordered releases.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Orders {
    /// The latest order started.
    started: Option<String>,
    /// Its result, until the control plane has it.
    result: Option<ReleaseResult>,
}

impl Orders {
    /// Takes a heartbeat answer's order; returns it when it is new and must
    /// be started.
    pub fn on_answer(&mut self, order: Option<&ReleaseOrder>) -> Option<ReleaseOrder> {
        match order {
            None => {
                // The control plane recorded the result (or forgot the order).
                self.result = None;
                None
            }
            Some(order) if self.started.as_deref() == Some(order.id.as_str()) => None,
            Some(order) => {
                self.started = Some(order.id.clone());
                self.result = None;
                Some(order.clone())
            }
        }
    }

    /// Records how the order `result.id` ended (ignored for another order).
    pub fn finished(&mut self, result: ReleaseResult) {
        if self.started.as_deref() == Some(result.id.as_str()) {
            self.result = Some(result);
        }
    }

    /// What the next heartbeat reports.
    pub fn to_report(&self) -> Option<ReleaseResult> {
        self.result.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(id: &str) -> ReleaseOrder {
        ReleaseOrder {
            id: id.into(),
            image: "web:v2".into(),
            health_path: None,
            timeout_ms: None,
        }
    }

    fn result(id: &str) -> ReleaseResult {
        ReleaseResult {
            id: id.into(),
            ok: true,
            message: "released".into(),
            duration_ms: Some(600),
        }
    }

    #[test]
    fn an_order_starts_once_and_its_result_is_reported_until_acknowledged() {
        let mut orders = Orders::default();
        assert_eq!(orders.on_answer(None), None);
        assert_eq!(
            orders.on_answer(Some(&order("rel-1"))),
            Some(order("rel-1"))
        );
        // Repeated while it runs: not started again, nothing to report yet.
        assert_eq!(orders.on_answer(Some(&order("rel-1"))), None);
        assert_eq!(orders.to_report(), None);
        orders.finished(result("rel-1"));
        assert_eq!(orders.to_report(), Some(result("rel-1")));
        // The answer to a heartbeat sent before the result still has the order.
        assert_eq!(orders.on_answer(Some(&order("rel-1"))), None);
        assert_eq!(orders.to_report(), Some(result("rel-1")));
        // Recorded: the order is gone from answers, so is the report.
        assert_eq!(orders.on_answer(None), None);
        assert_eq!(orders.to_report(), None);
        assert_eq!(
            orders.on_answer(Some(&order("rel-2"))),
            Some(order("rel-2"))
        );
    }

    #[test]
    fn a_result_for_an_older_order_is_not_reported() {
        let mut orders = Orders::default();
        orders.on_answer(Some(&order("rel-1")));
        orders.on_answer(Some(&order("rel-2")));
        orders.finished(result("rel-1"));
        assert_eq!(orders.to_report(), None);
    }
}
