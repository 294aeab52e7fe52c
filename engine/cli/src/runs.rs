//! `neutral runs`: the Terraform runs the control plane's scheduler recorded,
//! newest first (`GET /runs`).

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::output::{Format, Outcome};

/// The token to read with: `file`, else env `NEUTRAL_VIEWER_TOKEN`, else
/// env `NEUTRAL_ADMIN_TOKEN` (reads need a viewer or admin token).
fn read_token(file: Option<&std::path::Path>) -> Result<Option<String>> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read token file {}", path.display()))?;
        return Ok(Some(text.trim().to_owned()));
    }
    Ok(["NEUTRAL_VIEWER_TOKEN", "NEUTRAL_ADMIN_TOKEN"]
        .iter()
        .filter_map(|v| std::env::var(v).ok())
        .map(|v| v.trim().to_owned())
        .find(|v| !v.is_empty()))
}

/// Fetches `GET /runs` and prints it.
pub fn run(
    control_plane: &str,
    limit: u32,
    root: Option<&str>,
    token_file: Option<&std::path::Path>,
    format: Format,
) -> Result<Outcome> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let token = read_token(token_file)?;
    let base = control_plane.trim_end_matches('/');
    let mut url = format!("{base}/runs?limit={limit}");
    if let Some(root) = root {
        url.push_str("&root=");
        url.push_str(&encode(root));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the runtime")?;
    let body: Value = runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()
            .context("cannot build the HTTP client")?;
        let mut request = client.get(&url);
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let response = request
            .send()
            .await
            .with_context(|| format!("cannot reach the control plane at {base}"))?;
        let status = response.status();
        let text = response.text().await.context("reading the answer")?;
        if !status.is_success() {
            bail!("GET {url}: HTTP {status}: {text}");
        }
        serde_json::from_str(&text).with_context(|| format!("GET {url} did not answer JSON"))
    })?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&body)?),
        Format::Text => print!("{}", render(&body)),
    }
    Ok(Outcome::Ok)
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A table of runs plus the scheduler's queue and drift.
pub fn render(body: &Value) -> String {
    let mut out = String::new();
    if body["scheduler"] == false {
        out.push_str("the scheduler is off (neutral serve without --run-terraform): runs happen in external CI\n");
    }
    let text = |v: &Value| match v {
        Value::Null => "-".to_owned(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let rows: Vec<[String; 9]> = body["runs"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|r| {
            [
                text(&r["id"]),
                text(&r["root"]),
                text(&r["workspace"]),
                text(&r["trigger"]),
                r["commit"]
                    .as_str()
                    .map_or_else(|| "-".to_owned(), |c| c.chars().take(10).collect()),
                text(&r["status"]),
                format!(
                    "+{} ~{} -{}",
                    text(&r["adds"]),
                    text(&r["changes"]),
                    text(&r["destroys"])
                ),
                text(&r["exit_code"]),
                r["duration_ms"].as_u64().map_or_else(
                    || "-".to_owned(),
                    |ms| format!("{:.1}s", ms as f64 / 1000.0),
                ),
            ]
        })
        .collect();
    let header = [
        "ID",
        "ROOT",
        "WORKSPACE",
        "TRIGGER",
        "COMMIT",
        "STATUS",
        "PLAN",
        "EXIT",
        "TOOK",
    ];
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{}\n", padded.join("  ").trim_end())
    };
    out.push_str(&line(header.to_vec()));
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    if rows.is_empty() {
        out.push_str("(no runs yet)\n");
    }
    for job in body["pending"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        out.push_str(&format!(
            "queued: {} [{}]\n",
            text(&job["key"]["root"]),
            text(&job["key"]["workspace"])
        ));
    }
    for drift in body["drift"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
    {
        if !drift["drift"].is_null() {
            let s = &drift["drift"]["summary"];
            out.push_str(&format!(
                "DRIFT: {} [{}]: +{} ~{} -{} (not applied)\n",
                text(&drift["root"]),
                text(&drift["workspace"]),
                text(&s["adds"]),
                text(&s["changes"]),
                text(&s["destroys"])
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_runs_queue_and_drift() {
        let body = serde_json::json!({
            "scheduler": true,
            "runs": [{"id": 7, "root": "infra/gtm", "workspace": "default", "trigger": "health",
                      "commit": "0123456789abcdef", "status": "succeeded", "adds": 0, "changes": 1,
                      "destroys": 0, "exit_code": 0, "duration_ms": 1234}],
            "pending": [{"key": {"root": "infra/node-pool", "workspace": "jp"}}],
            "drift": [{"root": "infra/node-pool", "workspace": "sg",
                       "drift": {"checked_at": 1, "summary": {"adds": 0, "changes": 1, "destroys": 0}}}],
        });
        expect_test::expect![[r#"
            ID  ROOT       WORKSPACE  TRIGGER  COMMIT      STATUS     PLAN      EXIT  TOOK
            7   infra/gtm  default    health   0123456789  succeeded  +0 ~1 -0  0     1.2s
            queued: infra/node-pool [jp]
            DRIFT: infra/node-pool [sg]: +0 ~1 -0 (not applied)
        "#]]
        .assert_eq(&render(&body));
    }
}
