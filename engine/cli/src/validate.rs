//! `neutral validate`: load a repository's configuration with the core and
//! print every diagnostic.

use std::path::Path;

use anyhow::Result;
use neutral_core::config;
use serde_json::json;

use crate::output::{Format, Outcome};
use crate::repo_fs;

pub fn run(dir: &Path, format: Format) -> Result<Outcome> {
    let files = repo_fs::read_config_tree(dir)?;
    let loaded = config::load(&files);
    let errors = loaded.diagnostics.iter().filter(|d| d.is_error()).count();
    let warnings = loaded.diagnostics.len() - errors;
    let decl = &loaded.declarations;
    match format {
        Format::Text => {
            for diagnostic in &loaded.diagnostics {
                println!("{diagnostic}");
            }
            if loaded.is_valid() {
                println!(
                    "ok: {} files; {} regions, {} domains, {} autoscale policies, {} node pools; {warnings} warnings",
                    files.len(),
                    decl.regions.len(),
                    decl.gtm.len(),
                    decl.autoscale.len(),
                    decl.node_pools.len(),
                );
            } else {
                println!(
                    "invalid: {errors} errors, {warnings} warnings in {} files",
                    files.len()
                );
            }
        }
        Format::Json => {
            let out = json!({
                "valid": loaded.is_valid(),
                "files": files.len(),
                "errors": errors,
                "warnings": warnings,
                "diagnostics": loaded.diagnostics,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
    }
    Ok(if loaded.is_valid() {
        Outcome::Ok
    } else {
        Outcome::Invalid
    })
}
