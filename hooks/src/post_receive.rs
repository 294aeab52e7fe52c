//! `neutral hook post-receive`: tells the control plane that a commit
//! landed on a followed branch, so it syncs now instead of at its next
//! interval.
//!
//! One `POST /sync` with the admin token (`neutral.tokenFile`, else env
//! `NEUTRAL_ADMIN_TOKEN`), bounded by `neutral.syncTimeout` (default 2 s) so
//! it never holds the push for long, and one line saying what happened. The
//! push has already succeeded when this runs: nothing here fails it. This
//! module owns that call and its report.

use std::io::Write;
use std::path::Path;

use crate::control_plane::{CallError, ControlPlane};
use crate::settings::Settings;
use crate::updates::{self, Plan};

/// Reports on `out`; never fails the push (write errors are ignored). The
/// report is redacted first (`neutral_core::redact`): a control-plane URL
/// with credentials in it must not reach the pusher's terminal.
pub fn run(settings: &Settings, input: &str, out: &mut dyn Write) {
    let mut text = Vec::new();
    let _ = report(settings, input, &mut text);
    let text = String::from_utf8_lossy(&text);
    let _ = out.write_all(neutral_core::redact::redact(&text).as_bytes());
}

fn report(settings: &Settings, input: &str, out: &mut dyn Write) -> std::io::Result<()> {
    let updates = match updates::parse(input) {
        Ok(updates) => updates,
        Err(err) => return writeln!(out, "neutral: post-receive: {err}"),
    };
    let landed = updates
        .iter()
        .rev()
        .find_map(|u| match u.plan(&settings.branches) {
            Plan::Check { new, .. } => Some((u.name.as_str(), new)),
            Plan::Unrelated | Plan::Delete => None,
        });
    let Some((name, commit)) = landed else {
        return Ok(());
    };
    let short = commit.short();
    let Some(url) = settings.control_plane.as_deref() else {
        return writeln!(
            out,
            "neutral: {name} at {short}; no neutral.controlPlane configured, nobody to tell"
        );
    };
    let later = format!("it picks up {short} at its next sync");
    let token = match admin_token(settings.token_file.as_deref()) {
        Ok(token) => token,
        Err(why) => return writeln!(out, "neutral: not asking {url} to sync ({why}); {later}"),
    };
    let reply = ControlPlane::new(url, settings.ca_file.as_deref())
        .and_then(|cp| cp.sync(&token, settings.sync_timeout));
    match reply {
        Ok(reply) => {
            let at = reply
                .commit
                .as_deref()
                .map_or_else(String::new, |c| c.get(..7).unwrap_or(c).to_owned());
            match reply.result.as_str() {
                "applied" => writeln!(
                    out,
                    "neutral: control plane {url} applied {at}: {}",
                    reply.message
                ),
                "unchanged" => writeln!(out, "neutral: control plane {url} is at {at} already"),
                "rejected" => {
                    writeln!(
                        out,
                        "neutral: control plane {url} rejected {at}: {}",
                        reply.message
                    )?;
                    for diagnostic in reply.diagnostics.iter().filter(|d| d.is_error()) {
                        writeln!(out, "{diagnostic}")?;
                    }
                    Ok(())
                }
                _ => writeln!(
                    out,
                    "neutral: control plane {url} could not sync: {}",
                    reply.message
                ),
            }
        }
        Err(CallError::Timeout(after)) => writeln!(
            out,
            "neutral: control plane {url} did not answer within {} ms; {later}",
            after.as_millis()
        ),
        Err(CallError::Rejected { status, message }) => writeln!(
            out,
            "neutral: control plane {url} refused the sync (HTTP {status}: {message}); {later}"
        ),
        Err(err) => writeln!(
            out,
            "neutral: control plane {url} unreachable ({err}); {later}"
        ),
    }
}

fn admin_token(file: Option<&Path>) -> Result<String, String> {
    let token = match file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|err| format!("cannot read token file {}: {err}", path.display()))?,
        None => std::env::var("NEUTRAL_ADMIN_TOKEN").map_err(|_| {
            "no admin token: set git config neutral.tokenFile or env NEUTRAL_ADMIN_TOKEN".to_owned()
        })?,
    };
    let token = token.trim().to_owned();
    if token.is_empty() {
        return Err("the admin token is empty".to_owned());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_never_shows_credentials_of_the_control_plane_url() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "admin-token-of-sixteen+").unwrap();
        let settings = Settings {
            // Nothing listens on port 9 of loopback.
            control_plane: Some("http://ops:HOOK-SECRET@127.0.0.1:9".into()),
            token_file: Some(token),
            ..Settings::default()
        };
        let input = format!("{} {} refs/heads/main\n", "0".repeat(40), "1".repeat(40));
        let mut out = Vec::new();
        run(&settings, &input, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("http://***@127.0.0.1:9"), "{text}");
        assert!(!text.contains("HOOK-SECRET"), "{text}");
    }
}
