//! The node agent, `neutral agent`: registers the node with the control plane
//! and heartbeats with its CPU, RTT and error-rate metrics.
//!
//! It owns the agent side of the node API (see [`protocol`]): registration
//! that keeps the node's identity across restarts ([`state`]), heartbeats at
//! the interval the control plane gives, re-registration when the control
//! plane has lost the node, and backoff with jitter while it is unreachable
//! ([`backoff`]). Metrics come from `/proc/stat` ([`cpu`]), from probing the
//! node's own service ([`probe`]), or from a Prometheus text file
//! ([`metrics_file`]). It must not decide anything about the node's status or
//! weights: the control plane does.
//!
//! The CLI calls [`run_blocking`] with [`AgentArgs`]; tests and embedders use
//! [`run`] or [`run_with_config`] with their own shutdown future. Logging goes
//! through `tracing`; installing a subscriber is the caller's job.

mod agent;
/// The backoff schedule is the core's (shared with the provider and the scheduler).
pub use neutral_core::backoff;
pub mod cli;
mod client;
mod config;
pub mod cpu;
pub mod drain;
mod full_node;
pub mod metrics_file;
pub mod node;
pub mod node_exporter;
pub mod orders;
pub mod probe;
pub mod protocol;
pub mod remote_release;
pub mod state;
mod stream;

use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

pub use agent::{
    AgentError, MAX_INTERVAL, MIN_INTERVAL, clamp_interval, combine_metrics, heartbeat_timeout,
    run_with_config,
};
pub use client::{CallError, ControlPlane, Disposition, TlsSetupError, install_crypto_provider};
pub use config::{
    AgentArgs, AgentConfig, ConfigError, JOIN_TOKEN_ENV, LogFormat, default_probe_url,
    route_source_address,
};

/// Resolves `args` (join token from [`JOIN_TOKEN_ENV`] unless a file is
/// given) and runs the agent until `shutdown` completes.
pub async fn run(args: AgentArgs, shutdown: impl Future<Output = ()>) -> Result<(), AgentError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let config = tokio::select! {
        biased;
        () = &mut shutdown => return Ok(()),
        config = AgentConfig::from_args(args) => config?,
    };
    run_with_config(config, shutdown).await
}

/// Runs the agent on its own tokio runtime until SIGTERM or SIGINT. Exit
/// codes: 0 after a signal, 1 when the control plane refused the node, 2 for
/// bad arguments or files (the error is logged and printed to stderr).
pub fn run_blocking(args: AgentArgs) -> ExitCode {
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
    let result = runtime.block_on(async {
        // Listen before anything else, so an early signal is not lost.
        let shutdown = shutdown_signal();
        run(args, shutdown).await
    });
    // Connection tasks still pending are dropped, not awaited.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = %err, "agent stopped");
            eprintln!("error: {err}");
            ExitCode::from(if err.is_usage() { 2 } else { 1 })
        }
    }
}

/// Starts listening for SIGTERM and SIGINT at once (call it inside a tokio
/// runtime); the future completes at the first of them.
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => Some((term, int)),
            (Err(err), _) | (_, Err(err)) => {
                tracing::warn!(error = %err, "cannot listen for SIGTERM; stopping on Ctrl-C only");
                None
            }
        }
    };
    async move {
        #[cfg(unix)]
        if let Some((mut term, mut int)) = signals {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
            return;
        }
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}
