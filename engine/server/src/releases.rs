//! The release queue: the latest release asked for per node, exchanged on
//! the node's heartbeats until the agent reports its result. This is the
//! daemon's cache of it; every change is also written to the store (by the
//! API's handlers), which a restart reads back ([`Releases::adopt`]) and
//! other replicas read every half second (`replicas.rs`), so an order
//! reaches its node through whichever replica it heartbeats to. A leaf: the
//! API's handlers (`api::releases`) validate, audit and persist; this module
//! must not import any other module of the crate.

use std::collections::HashMap;
use std::sync::Mutex;

use neutral_core::model::Timestamp;
use serde::{Deserialize, Serialize};

/// The order an agent finds in its heartbeat answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// Where a release stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReleaseState {
    /// Asked for; the agent has not reported yet.
    Pending,
    Released,
    Failed,
}

impl ReleaseState {
    pub fn as_str(self) -> &'static str {
        match self {
            ReleaseState::Pending => "pending",
            ReleaseState::Released => "released",
            ReleaseState::Failed => "failed",
        }
    }
}

/// The latest release of one node, for `GET /nodes/{id}/release`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseView {
    #[serde(flatten)]
    pub order: ReleaseOrder,
    /// `pending` until the agent reports, then `released` or `failed`.
    pub state: ReleaseState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// When it was asked for or last changed (ms since the epoch): of two
    /// copies, the later one wins.
    #[serde(default)]
    pub updated_at: Timestamp,
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
        at: Timestamp,
    ) -> (Option<ReleaseOrder>, Option<ReleaseView>) {
        let mut releases = self.lock();
        let Some(view) = releases.get_mut(node) else {
            return (None, None);
        };
        let mut finished = None;
        if let Some(result) = result
            && view.state == ReleaseState::Pending
            && result.id == view.order.id
        {
            view.state = if result.ok {
                ReleaseState::Released
            } else {
                ReleaseState::Failed
            };
            view.message = Some(result.message.chars().take(2000).collect());
            view.duration_ms = result.duration_ms;
            view.updated_at = at.max(view.updated_at);
            finished = Some(view.clone());
        }
        let order = (view.state == ReleaseState::Pending).then(|| view.order.clone());
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
    pub fn begin(
        &self,
        node: &str,
        order: ReleaseOrder,
        at: Timestamp,
    ) -> Result<ReleaseView, Box<ReleaseView>> {
        let mut releases = self.lock();
        if let Some(existing) = releases
            .get(node)
            .filter(|v| v.state == ReleaseState::Pending)
        {
            return Err(Box::new(existing.clone()));
        }
        let view = ReleaseView {
            order,
            state: ReleaseState::Pending,
            message: None,
            duration_ms: None,
            updated_at: at,
        };
        releases.insert(node.to_owned(), view.clone());
        Ok(view)
    }

    /// Takes in stored copies (at start, and from other replicas): each
    /// replaces this cache's copy unless that one changed later.
    pub fn adopt(&self, stored: impl IntoIterator<Item = (String, ReleaseView)>) {
        let mut releases = self.lock();
        for (node, view) in stored {
            let newer = releases
                .get(&node)
                .is_none_or(|mine| view.updated_at > mine.updated_at);
            if newer {
                releases.insert(node, view);
            }
        }
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
        assert_eq!(releases.exchange("n1", None, Timestamp(1)), (None, None));
        assert!(releases.begin("n1", order("rel-1"), Timestamp(1)).is_ok());
        assert!(
            releases.begin("n1", order("rel-2"), Timestamp(2)).is_err(),
            "one pending at a time"
        );
        let (order, finished) = releases.exchange("n1", None, Timestamp(1));
        assert_eq!(order.map(|o| o.id).as_deref(), Some("rel-1"));
        assert!(finished.is_none());
        // A result for another release changes nothing.
        let stale = ReleaseResult {
            id: "rel-0".into(),
            ok: true,
            message: "done".into(),
            duration_ms: None,
        };
        assert!(
            releases
                .exchange("n1", Some(&stale), Timestamp(3))
                .0
                .is_some()
        );
        let result = ReleaseResult {
            id: "rel-1".into(),
            ok: false,
            message: "health check failed".into(),
            duration_ms: Some(1500),
        };
        let (order, finished) = releases.exchange("n1", Some(&result), Timestamp(4));
        assert!(order.is_none());
        let finished = finished.unwrap();
        assert_eq!(finished.state, ReleaseState::Failed);
        assert_eq!(finished.updated_at, Timestamp(4));
        assert_eq!(finished.duration_ms, Some(1500));
        // Reported twice: recorded once.
        assert_eq!(
            releases.exchange("n1", Some(&result), Timestamp(4)),
            (None, None)
        );
    }

    #[test]
    fn stored_copies_replace_older_ones_only() {
        let releases = Releases::default();
        let mine = releases.begin("n1", order("rel-1"), Timestamp(10)).unwrap();
        let mut older = mine.clone();
        older.order = order("rel-0");
        older.updated_at = Timestamp(5);
        releases.adopt([("n1".to_owned(), older)]);
        assert_eq!(releases.latest("n1").unwrap().order.id, "rel-1");
        let mut finished = mine;
        finished.state = ReleaseState::Released;
        finished.updated_at = Timestamp(20);
        let mut other = finished.clone();
        other.order = order("rel-9");
        releases.adopt([("n1".to_owned(), finished), ("n2".to_owned(), other)]);
        assert_eq!(releases.latest("n1").unwrap().state, ReleaseState::Released);
        assert_eq!(releases.latest("n2").unwrap().order.id, "rel-9");
        // A stored copy round-trips through its JSON.
        let view = releases.latest("n1").unwrap();
        let text = serde_json::to_string(&view).unwrap();
        assert_eq!(serde_json::from_str::<ReleaseView>(&text).unwrap(), view);
    }
}
