//! `neutral release --node <id> --image <ref>`: asks the control plane for a
//! release on one node (`POST /nodes/{id}/release`, admin token) and, unless
//! `--no-wait`, follows it (`GET /nodes/{id}/release`) until the node reports
//! the result through its heartbeats.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::Url;
use serde_json::json;

/// The environment variable holding the admin token when no file is given.
pub const ADMIN_TOKEN_ENV: &str = "NEUTRAL_ADMIN_TOKEN";

/// Arguments of `neutral release`.
#[derive(Debug, clap::Args)]
pub struct RemoteReleaseArgs {
    /// The node to release on.
    #[arg(long, value_name = "ID")]
    pub node: String,
    /// Image reference to release.
    #[arg(long, value_name = "REF")]
    pub image: String,
    /// Control plane base URL.
    #[arg(long, value_name = "URL", default_value = "http://127.0.0.1:7400")]
    pub control_plane: Url,
    /// File holding the admin token [default: the NEUTRAL_ADMIN_TOKEN variable].
    #[arg(long, value_name = "FILE")]
    pub admin_token_file: Option<PathBuf>,
    /// PEM file of the CA that signed the control plane's certificate.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Health-check path [default: the agent's].
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// How long the new colour may take to become healthy [default: the agent's].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    /// Return once the control plane has queued the release.
    #[arg(long)]
    pub no_wait: bool,
    /// How long to follow the release.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
}

/// Exit codes: 0 released (or queued with `--no-wait`), 1 the release failed
/// or was refused, 2 usage or transport error.
pub fn main(args: RemoteReleaseArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: RemoteReleaseArgs) -> Result<ExitCode, String> {
    let token = match &args.admin_token_file {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|err| format!("{}: {err}", path.display()))?
            .trim()
            .to_owned(),
        None => std::env::var(ADMIN_TOKEN_ENV)
            .map_err(|_| {
                format!("no admin token: set {ADMIN_TOKEN_ENV} or pass --admin-token-file")
            })?
            .trim()
            .to_owned(),
    };
    crate::install_crypto_provider();
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(30));
    if let Some(path) = &args.ca_file {
        let pem = std::fs::read(path).map_err(|err| format!("{}: {err}", path.display()))?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|err| format!("{}: {err}", path.display()))?;
        builder = builder.tls_certs_only(certificates);
    }
    let http = builder.build().map_err(|err| err.to_string())?;
    let mut base = args.control_plane.clone();
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    let url = base
        .join(&format!("nodes/{}/release", args.node))
        .map_err(|err| err.to_string())?;
    let mut body = json!({ "image": args.image });
    if let Some(path) = &args.health_path {
        body["health_path"] = json!(path);
    }
    if let Some(timeout) = args.timeout {
        body["timeout_ms"] = json!(u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX));
    }
    let response = http
        .post(url.clone())
        .bearer_auth(&token)
        .json(&body)
        .send()
        .await
        .map_err(|err| format!("{url}: {err}"))?;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap_or_default();
    if !status.is_success() {
        eprintln!(
            "error: the control plane refused the release (HTTP {status}): {}",
            answer["message"].as_str().unwrap_or("")
        );
        return Ok(ExitCode::from(1));
    }
    let id = answer["id"].as_str().unwrap_or_default().to_owned();
    println!(
        "release {id} of {} queued for node {}",
        args.image, args.node
    );
    if args.no_wait {
        return Ok(ExitCode::SUCCESS);
    }
    let deadline = tokio::time::Instant::now() + args.wait_timeout;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let view: serde_json::Value = match http.get(url.clone()).bearer_auth(&token).send().await {
            Ok(response) => response.json().await.unwrap_or_default(),
            Err(err) => {
                eprintln!("warning: {url}: {err}");
                serde_json::Value::Null
            }
        };
        if view["id"] == id.as_str() {
            match view["state"].as_str() {
                Some("released") => {
                    println!("{}", view["message"].as_str().unwrap_or("released"));
                    return Ok(ExitCode::SUCCESS);
                }
                Some("failed") => {
                    eprintln!(
                        "error: release failed: {}",
                        view["message"].as_str().unwrap_or("")
                    );
                    return Ok(ExitCode::from(1));
                }
                _ => {}
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(format!(
                "release {id} has no result after {}; follow it with GET {url}",
                humantime::format_duration(args.wait_timeout)
            ));
        }
    }
}
