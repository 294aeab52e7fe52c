//! `neutral explain`: the engine's computation for one observed state,
//! without any daemon: effective weights per domain and the autoscale
//! decision per region, each with its reason.

use std::path::Path;

use anyhow::Result;
use neutral_core::autoscale::{self, Action, AutoscaleSettings, Decision};
use neutral_core::config;
use neutral_core::weights::{self, WeightSettings};
use serde_json::json;

use crate::output::{Format, Outcome};
use crate::{repo_fs, state};

pub fn run(state_path: &Path, dir: &Path, format: Format) -> Result<Outcome> {
    let observed = state::read(state_path)?;
    let files = repo_fs::read_config_tree(dir)?;
    let loaded = config::load(&files);
    if !loaded.is_valid() {
        for diagnostic in &loaded.diagnostics {
            println!("{diagnostic}");
        }
        println!("cannot explain an invalid configuration; fix the errors above");
        return Ok(Outcome::Invalid);
    }
    let decl = &loaded.declarations;
    let report = weights::compute(
        decl,
        &observed.nodes,
        &observed.previous,
        observed.now,
        &WeightSettings::default(),
    );
    let decisions = autoscale::decide_all(
        decl,
        &observed.nodes,
        &observed.samples,
        &observed.last_actions,
        observed.now,
        &AutoscaleSettings::default(),
    );
    match format {
        Format::Text => {
            print!("{}", weights::compact(&report));
            println!();
            for decision in decisions.values() {
                println!("{}", render_decision(decision));
            }
        }
        Format::Json => {
            let out = json!({ "now": observed.now, "weights": report, "autoscale": decisions });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(Outcome::Ok)
}

fn render_decision(decision: &Decision) -> String {
    let action = match &decision.action {
        Action::None => "no change".to_owned(),
        Action::ScaleOut { from, to } => format!("scale out {from} -> {to}"),
        Action::ScaleIn { from, to, drain } => {
            format!("scale in {from} -> {to}, drain [{}]", drain.join(", "))
        }
        Action::Replace { nodes } => format!("replace [{}]", nodes.join(", ")),
    };
    format!(
        "autoscale {} [{action}]: {}",
        decision.region, decision.reason
    )
}
