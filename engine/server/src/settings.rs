//! The daemon's settings as its parts need them, derived once from the
//! command line (`ServeArgs::settings`). The world and the services read
//! these, never the CLI's flags: a test or a second front end can build
//! them without clap, and a flag's spelling is no concern of the parts.
//!
//! Plain data: this module must not import any other module of the crate
//! but `world` (whose liveness defaults it carries).

use std::path::PathBuf;
use std::time::Duration;

use neutral_core::weights::WeightSettings;

use crate::world::LivenessDefaults;

/// Everything the world and the services are configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Git URL or path of the configuration repository, and its branch.
    pub repo: String,
    pub branch: String,
    /// The data directory (store, Git mirror, Terraform folders).
    pub data: PathBuf,
    /// The interval nodes are told to heartbeat at.
    pub heartbeat_interval: Duration,
    /// Heartbeat timeout and whether probes run.
    pub liveness: LivenessDefaults,
    /// The split-brain guard.
    pub weights: WeightSettings,
    /// How often the repository is fetched.
    pub sync_interval: Duration,
    /// Limits on node registrations (see `api::admission`).
    pub registration: RegistrationSettings,
    /// How long audit entries are kept; `None`: for ever.
    pub audit: Option<AuditRetention>,
    pub autoscale: AutoscaleSettings,
    /// The scheduler's settings; `None` when an external CI runs Terraform.
    pub terraform: Option<TerraformSettings>,
}

/// Limits on node registrations.
#[derive(Clone, Copy, Debug)]
pub struct RegistrationSettings {
    /// Per client address: refill rate and burst of its token bucket.
    pub rate_per_second: f64,
    pub burst: u32,
    /// A registration that never heartbeated is deleted after this long.
    pub expiry: Duration,
}

/// Audit retention: entries older than `keep` are pruned (by the leader),
/// after being written to `archive` when it is set.
#[derive(Clone, Debug)]
pub struct AuditRetention {
    pub keep: Duration,
    pub archive: Option<PathBuf>,
}

/// The autoscaler's settings.
#[derive(Clone, Debug)]
pub struct AutoscaleSettings {
    pub enabled: bool,
    pub interval: Duration,
    /// An in-flight action older than this no longer blocks new ones.
    pub in_flight_timeout: Duration,
    /// The author of the autoscaler's commits.
    pub author_name: String,
    pub author_email: String,
}

/// The scheduler's settings (`--run-terraform`).
#[derive(Clone, Debug)]
pub struct TerraformSettings {
    /// The terraform (or tofu) binary, when given.
    pub bin: Option<PathBuf>,
    /// The folder holding `terraform-provider-neutral`, when given.
    pub provider_dir: Option<PathBuf>,
    /// This control plane's API as the provider reaches it.
    pub endpoint: String,
    pub gtm_root: String,
    /// Address of one domain's record in the GTM root (`{domain}` replaced).
    pub gtm_target: String,
    pub node_pool_root: String,
    pub drift_interval: Duration,
    pub apply_drift: bool,
    /// Terraform's working folder, outside the data directory.
    pub dir: PathBuf,
    /// Extra variables passed from the daemon's environment to Terraform.
    pub pass_env: Vec<String>,
    /// `--terraform-state`: state in PostgreSQL at this URL.
    pub state_store: Option<String>,
    /// `--terraform-user`: the user Terraform runs as, when not the daemon's.
    pub user: Option<String>,
}
