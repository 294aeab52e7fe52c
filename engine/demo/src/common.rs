//! What the demo's parts share: its arguments, the domain the story
//! watches, and the small helpers for waiting and preflight. A leaf: it
//! reads no other module of the demo.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, bail};
use clap::Args;

/// Runs the minimal deployment end to end with a scripted story.
#[derive(Clone, Debug, Args)]
pub struct DemoArgs {
    /// The neutral source tree (holding examples/minimal, infra/, modules/).
    #[arg(long, default_value = ".")]
    pub source: PathBuf,
    /// Where to put the demo's repositories, data and logs (default: a new
    /// temporary folder, removed afterwards).
    #[arg(long)]
    pub workdir: Option<PathBuf>,
    /// Keep the work folder afterwards (processes are stopped regardless).
    #[arg(long)]
    pub keep: bool,
    /// Plain agents instead of full containerd + nginx nodes.
    #[arg(long)]
    pub lite: bool,
    /// Every node a Docker host of its own: a network per region, each node
    /// a container Terraform creates through the provider's `docker`
    /// launcher (an agent beside busybox httpd). Needs Docker Engine; the
    /// hosts' image is built once from Debian's packages (`scripts/hosts`).
    /// The API then listens on every address (the regions' networks reach
    /// it at this machine's address on them).
    #[arg(long, conflicts_with = "lite")]
    pub hosts: bool,
    /// The control plane's API address.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// The embedded DNS server's address.
    #[arg(long, default_value = "127.0.0.1:5353")]
    pub dns_listen: SocketAddr,
}

/// The domain the story watches.
pub const DOMAIN: &str = "app.example.test.";

/// Fails with what was being waited for.
pub fn timeout(what: &str, limit: Duration) -> anyhow::Error {
    anyhow::anyhow!("timed out after {}s waiting for {what}", limit.as_secs())
}

/// Refuses to run where the demo cannot.
pub fn preflight(source: &std::path::Path) -> Result<()> {
    for needed in [
        "examples/minimal/assemble",
        "infra/gtm",
        "infra/node-pool",
        "modules",
    ] {
        if !source.join(needed).exists() {
            bail!(
                "{} has no {needed}: run the demo from neutral's source tree (or pass --source)",
                source.display()
            );
        }
    }
    Ok(())
}
