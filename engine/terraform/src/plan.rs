//! What a saved plan will do, read from `terraform show -json <plan>`
//! (the documented JSON output format, `format_version` 1.x): resources to
//! create, update, delete or replace, and outputs. Pure.

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct PlanSummary {
    pub adds: u32,
    pub changes: u32,
    pub destroys: u32,
    /// `(address, actions)` of every resource the plan touches.
    pub resources: Vec<(String, Vec<String>)>,
}

impl PlanSummary {
    pub fn is_empty(&self) -> bool {
        self.adds == 0 && self.changes == 0 && self.destroys == 0
    }
}

#[derive(Deserialize)]
struct ShowJson {
    #[serde(default)]
    resource_changes: Vec<ResourceChange>,
}

#[derive(Deserialize)]
struct ResourceChange {
    address: String,
    change: Change,
}

#[derive(Deserialize)]
struct Change {
    actions: Vec<String>,
}

/// Counts a plan's actions the way `terraform plan` summarises them: a
/// replacement (`["delete","create"]` or `["create","delete"]`) is one add
/// and one destroy; `no-op` and `read` count as nothing.
pub fn summarize(show_json: &str) -> Result<PlanSummary, serde_json::Error> {
    let show: ShowJson = serde_json::from_str(show_json)?;
    let mut summary = PlanSummary::default();
    for rc in show.resource_changes {
        let actions = rc.change.actions;
        let has = |a: &str| actions.iter().any(|x| x == a);
        if has("create") {
            summary.adds += 1;
        }
        if has("delete") {
            summary.destroys += 1;
        }
        if has("update") {
            summary.changes += 1;
        }
        if has("create") || has("delete") || has("update") {
            summary.resources.push((rc.address, actions));
        }
    }
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_like_terraform_plan() {
        let json = r#"{"format_version":"1.2","resource_changes":[
            {"address":"a.x","change":{"actions":["create"]}},
            {"address":"a.y","change":{"actions":["update"]}},
            {"address":"a.z","change":{"actions":["delete","create"]}},
            {"address":"a.w","change":{"actions":["no-op"]}},
            {"address":"data.a.v","change":{"actions":["read"]}},
            {"address":"a.u","change":{"actions":["delete"]}}]}"#;
        let summary = summarize(json).unwrap();
        assert_eq!((summary.adds, summary.changes, summary.destroys), (2, 1, 2));
        assert_eq!(summary.resources.len(), 4);
        assert!(summarize(r#"{"format_version":"1.2"}"#).unwrap().is_empty());
        assert!(summarize("not json").is_err());
    }
}
