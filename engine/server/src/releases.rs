//! The release queue: the latest release asked for per node, exchanged on
//! the node's heartbeats until the agent reports its result. Orders live in
//! memory only (after a restart an unfinished order is gone and must be
//! asked for again). A leaf: the API's handlers (`api::releases`) validate
//! and audit; this module must not import any other module of the crate.

use std::collections::HashMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

/// The order an agent finds in its heartbeat answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReleaseOrder {
    pub id: String,
    pub image: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub health_path: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
}

/// What an agent reports in a heartbeat once a release ended.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseResult {
    pub id: String,
    pub ok: bool,
    pub message: String,
    #[serde(default)]
    pub duration_ms: Option<u64>,
}

/// The latest release of one node, for `GET /nodes/{id}/release`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReleaseView {
    #[serde(flatten)]
    pub order: ReleaseOrder,
    /// `pending` until the agent reports, then `released` or `failed`.
    pub state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
}

/// The latest release per node.
#[derive(Debug, Default)]
pub struct Releases(Mutex<HashMap<String, ReleaseView>>);

impl Releases {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, ReleaseView>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The order to put in `node`'s heartbeat answer, after taking the
    /// result the agent reported (returned when it finished a pending order).
    pub fn exchange(
        &self,
        node: &str,
        result: Option<&ReleaseResult>,
    ) -> (Option<ReleaseOrder>, Option<ReleaseView>) {
        let mut releases = self.lock();
        let Some(view) = releases.get_mut(node) else {
            return (None, None);
        };
        let mut finished = None;
        if let Some(result) = result
            && view.state == "pending"
            && result.id == view.order.id
        {
            view.state = if result.ok { "released" } else { "failed" };
            view.message = Some(result.message.chars().take(2000).collect());
            view.duration_ms = result.duration_ms;
            finished = Some(view.clone());
        }
        let order = (view.state == "pending").then(|| view.order.clone());
        (order, finished)
    }

    pub fn forget(&self, node: &str) {
        self.lock().remove(node);
    }

    /// The latest release asked for on `node`.
    pub fn latest(&self, node: &str) -> Option<ReleaseView> {
        self.lock().get(node).cloned()
    }

    /// Records `order` as `node`'s pending release, unless one is still
    /// pending there (returned as the error).
    pub fn begin(&self, node: &str, order: ReleaseOrder) -> Result<ReleaseView, Box<ReleaseView>> {
        let mut releases = self.lock();
        if let Some(existing) = releases.get(node).filter(|v| v.state == "pending") {
            return Err(Box::new(existing.clone()));
        }
        let view = ReleaseView {
            order,
            state: "pending",
            message: None,
            duration_ms: None,
        };
        releases.insert(node.to_owned(), view.clone());
        Ok(view)
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

    #[test]
    fn an_order_rides_on_heartbeats_until_its_result_comes_back() {
        let releases = Releases::default();
        assert_eq!(releases.exchange("n1", None), (None, None));
        assert!(releases.begin("n1", order("rel-1")).is_ok());
        assert!(
            releases.begin("n1", order("rel-2")).is_err(),
            "one pending at a time"
        );
        let (order, finished) = releases.exchange("n1", None);
        assert_eq!(order.map(|o| o.id).as_deref(), Some("rel-1"));
        assert!(finished.is_none());
        // A result for another release changes nothing.
        let stale = ReleaseResult {
            id: "rel-0".into(),
            ok: true,
            message: "done".into(),
            duration_ms: None,
        };
        assert!(releases.exchange("n1", Some(&stale)).0.is_some());
        let result = ReleaseResult {
            id: "rel-1".into(),
            ok: false,
            message: "health check failed".into(),
            duration_ms: Some(1500),
        };
        let (order, finished) = releases.exchange("n1", Some(&result));
        assert!(order.is_none());
        let finished = finished.unwrap();
        assert_eq!(finished.state, "failed");
        assert_eq!(finished.duration_ms, Some(1500));
        // Reported twice: recorded once.
        assert_eq!(releases.exchange("n1", Some(&result)), (None, None));
    }
}
