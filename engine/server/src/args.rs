//! `neutral serve` flags. Durations use the platform-config syntax (`10s`,
//! `1m30s`, `500ms`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, ValueEnum};
use neutral_core::weights::WeightSettings;

use crate::connlimit::ConnLimits;
use crate::listener::Timeouts;
use crate::settings::{
    AuditRetention, AutoscaleSettings, RegistrationSettings, Settings, TerraformSettings,
};
use crate::world::LivenessDefaults;

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// The `--store` URL. It may hold a password: `Debug` and `Display` show
/// it redacted; [`StoreUrl::expose`] gives the text to connect with.
#[derive(Clone, PartialEq, Eq)]
pub struct StoreUrl(String);

impl StoreUrl {
    /// The URL as given, password included: only for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for StoreUrl {
    type Err = std::convert::Infallible;

    /// Never fails here (clap would quote the value, password and all);
    /// the store checks it when it opens.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Ok(StoreUrl(text.to_owned()))
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreUrl({self})")
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&neutral_core::redact::redact(&self.0))
    }
}

fn duration(text: &str) -> Result<Duration, String> {
    neutral_core::model::parse_duration(text).map_err(|e| e.to_string())
}

fn share(text: &str) -> Result<f64, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number"))?;
    if (0.0..=1.0).contains(&value) {
        Ok(value)
    } else {
        Err(format!("{value} is outside 0..=1"))
    }
}

/// Runs the control plane: node API, GitOps sync, health checking, the GTM
/// controller and the embedded DNS server.
#[derive(Clone, Debug, Args)]
pub struct ServeArgs {
    /// Git URL or path of the configuration repository.
    #[arg(long)]
    pub repo: String,
    /// Branch to follow.
    #[arg(long, default_value = "main")]
    pub branch: String,
    /// Directory for the database and the Git mirror.
    #[arg(long)]
    pub data: PathBuf,
    /// Keep every store in this PostgreSQL database
    /// (`postgres://user[:password]@host[:port]/database`) instead of the
    /// SQLite file in --data (the Git mirror and Terraform's files stay in
    /// --data). Prefer env NEUTRAL_STORE when the URL holds a password.
    #[arg(long, env = "NEUTRAL_STORE", hide_env_values = true)]
    pub store: Option<StoreUrl>,
    /// Address of the HTTP(S) API.
    #[arg(long, default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,
    /// Address of the embedded authoritative DNS server (UDP and TCP).
    #[arg(long, default_value = "127.0.0.1:5353")]
    pub dns_listen: SocketAddr,
    /// UDP responses per second to one client prefix (/24, /56) before the
    /// rest are dropped or slipped (TC=1, every second one); 0 turns response
    /// rate limiting off.
    #[arg(long, default_value = "100")]
    pub dns_rate_limit: u32,
    /// Responses a quiet prefix may get at once, above --dns-rate-limit.
    #[arg(long, default_value = "200")]
    pub dns_rate_burst: u32,
    /// DNS-over-TCP connections served at once, all clients together.
    #[arg(long, default_value = "256", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub dns_tcp_max_connections: u32,
    /// DNS-over-TCP connections served at once from one client address.
    #[arg(long, default_value = "16", value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub dns_tcp_max_per_ip: u32,
    /// Interval nodes are told to heartbeat at.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub heartbeat_interval: Duration,
    /// A node without a heartbeat for this long is down.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub heartbeat_timeout: Duration,
    /// How often to fetch the repository (besides `POST /sync`).
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub sync_interval: Duration,
    /// File holding the join token (else env NEUTRAL_JOIN_TOKEN); at least
    /// 16 characters.
    #[arg(long)]
    pub join_token_file: Option<PathBuf>,
    /// File holding the admin token (else env NEUTRAL_ADMIN_TOKEN); at least
    /// 16 characters.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
    /// File holding a read-only viewer token for dashboards, scrapers and
    /// the hooks' what-if reads (else env NEUTRAL_VIEWER_TOKEN; optional).
    #[arg(long)]
    pub viewer_token_file: Option<PathBuf>,
    /// PEM certificate chain: serve the API over TLS (needs --tls-key).
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t)]
    pub log_format: LogFormat,
    /// Do not probe nodes over HTTP; heartbeats alone decide liveness.
    #[arg(long)]
    pub no_probes: bool,
    /// Split-brain guard: more than this share of nodes going down within
    /// --split-brain-window suspends health-driven removals.
    #[arg(long, default_value = "0.5", value_parser = share)]
    pub split_brain_share: f64,
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub split_brain_window: Duration,
    /// The guard never trips with fewer nodes than this.
    #[arg(long, default_value = "3")]
    pub split_brain_min_nodes: u32,
    /// How often the autoscaler decides per region.
    #[arg(long, default_value = "15s", value_parser = duration)]
    pub autoscale_interval: Duration,
    /// Run no autoscaler (decisions are still visible with `neutral explain`).
    #[arg(long)]
    pub no_autoscale: bool,
    /// An in-flight autoscale action older than this no longer blocks new ones.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub autoscale_in_flight_timeout: Duration,
    /// Name the autoscaler commits as.
    #[arg(long, default_value = "neutral autoscaler")]
    pub git_author_name: String,
    /// Email the autoscaler commits as.
    #[arg(long, default_value = "autoscaler@neutral.invalid")]
    pub git_author_email: String,
    /// Run Terraform here (the scheduler): on pushes, health changes,
    /// autoscaler actions and drift checks. Off when an external CI runs it.
    #[arg(long)]
    pub run_terraform: bool,
    /// The terraform (or tofu) binary; default `$TERRAFORM_BIN`, else
    /// `terraform`/`tofu` on PATH.
    #[arg(long)]
    pub terraform_bin: Option<PathBuf>,
    /// Folder holding `terraform-provider-neutral`; default: this binary's.
    #[arg(long)]
    pub provider_dir: Option<PathBuf>,
    /// The GTM root: one state; health changes apply only the affected records.
    #[arg(long, default_value = "infra/gtm")]
    pub gtm_root: String,
    /// Address of one domain's record in the GTM root (`{domain}` replaced).
    #[arg(
        long,
        default_value = "module.gtm.neutral_gtm_record.this[\"{domain}\"]"
    )]
    pub gtm_target: String,
    /// The node-pool root: one state per `<region>.tfvars` in it.
    #[arg(long, default_value = "infra/node-pool")]
    pub node_pool_root: String,
    /// How often every root is planned to detect drift.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub drift_interval: Duration,
    /// Keep Terraform's state in PostgreSQL (`postgres://…`; Terraform's
    /// `pg` backend, one schema per root and workspace) instead of files
    /// under the Terraform folder, so every replica's scheduler finds it.
    /// Give it a role that may only create its own schemas: Terraform and
    /// its providers see this URL.
    #[arg(
        long,
        env = "NEUTRAL_TERRAFORM_STATE",
        value_name = "URL",
        hide_env_values = true
    )]
    pub terraform_state: Option<String>,
    /// Terraform's working folder (exported commits, plans, state, HOME),
    /// outside the data directory; default: `<data>-terraform` beside it.
    #[arg(long)]
    pub terraform_dir: Option<PathBuf>,
    /// Run Terraform as this user (the daemon must run as root): the
    /// Terraform folder becomes its, the data folder and the daemon's
    /// environment stay out of its reach. Launchers that need root (full
    /// local nodes, Docker) do not work under it.
    #[arg(long, env = "NEUTRAL_TERRAFORM_USER", value_name = "USER")]
    pub terraform_user: Option<String>,
    /// Pass this variable of the daemon's environment on to Terraform
    /// (besides TF_VAR_*, the locale, TLS roots and the DNS backends'
    /// credentials); repeat for several. NEUTRAL_* never passes.
    #[arg(long = "terraform-pass-env", value_name = "NAME")]
    pub terraform_pass_env: Vec<String>,
    /// Apply drift found by the periodic check instead of only reporting it.
    #[arg(long)]
    pub apply_drift: bool,
    /// Git credentials in `git credential-store` format
    /// (`https://user:password@host[/path]` per line), instead of in --repo.
    #[arg(long)]
    pub repo_credentials_file: Option<PathBuf>,
    /// Start over from nothing when the store file is empty (0 bytes) or
    /// missing from a data folder that holds other state. Without it such a
    /// folder is refused. A new, empty folder needs no flag.
    #[arg(long)]
    pub init: bool,
    /// Registrations per second each client address may make (after its burst).
    #[arg(long, default_value = "20")]
    pub register_rate: f64,
    /// Registrations a client address may make at once.
    #[arg(long, default_value = "300")]
    pub register_burst: u32,
    /// A registration without a single heartbeat is deleted after this long.
    #[arg(long, default_value = "10m", value_parser = duration)]
    pub registration_expiry: Duration,
    /// Metric samples older than this (behind the newest heartbeat) are
    /// pruned. Keep it above twice the longest autoscale window (`for`),
    /// which the autoscaler looks back over. At least 1m.
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub sample_retention: Duration,
    /// Audit entries older than this are pruned (by the leader, in batches,
    /// each leaving an `audit.pruned` entry) [default: kept for ever].
    /// Typically days: `2160h` keeps 90.
    #[arg(long, env = "NEUTRAL_AUDIT_RETENTION", value_parser = duration)]
    pub audit_retention: Option<Duration>,
    /// With --audit-retention: write pruned entries here first, as JSON lines
    /// (one file per batch, `audit-<first id>.jsonl`, the records of
    /// `GET /audit`); an entry is deleted only once its file is on disk.
    #[arg(long, env = "NEUTRAL_AUDIT_ARCHIVE", requires = "audit_retention")]
    pub audit_archive: Option<PathBuf>,
    /// SQLite's page cache per store connection (four: the writer, the
    /// WAL checkpointer and two readers), in MiB, 1 to 65536. The daemon's
    /// memory grows by up to this much per connection as the database
    /// grows; smaller bounds it, larger keeps a large fleet's samples
    /// index in memory. Ignored with a PostgreSQL store.
    #[arg(long, env = "NEUTRAL_STORE_CACHE_MIB", default_value = "32",
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub store_cache_mib: u32,
    /// With a PostgreSQL store, replicas elect the one that runs sync, the
    /// autoscaler and the scheduler: the leader's lease lasts this long and
    /// is renewed every third of it, so a dead leader is replaced within
    /// about this long plus a third.
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub lease_ttl: Duration,
    /// This replica's name in the leader lease and in `/status`
    /// [default: host name, API address and process id].
    #[arg(long)]
    pub replica_id: Option<String>,
    /// API connections open at once, all clients together. Default and
    /// ceiling: the open-file limit minus --fd-reserve.
    #[arg(long)]
    pub max_connections: Option<usize>,
    /// Open files kept out of --max-connections for the store, the DNS
    /// server, Git, Terraform and the prober.
    #[arg(long, default_value = "256")]
    pub fd_reserve: usize,
    /// API connections open at once from one client address.
    #[arg(long, default_value = "256")]
    pub max_connections_per_ip: usize,
    /// Heartbeats accepted and not yet written to the store. When the queue
    /// is full and other replicas are live, or its oldest heartbeat has
    /// waited half the heartbeat timeout and another live replica's writer
    /// is less behind, heartbeats are refused with `503 overloaded` (agents
    /// move to another replica); a lone replica keeps them in memory and
    /// loses only their stored samples.
    #[arg(long, default_value = "50000", value_parser = clap::value_parser!(u32).range(1..))]
    pub heartbeat_queue: u32,
    /// Agent streams (docs/api.md, "Agent stream") open at once on this
    /// replica. A node has at most one (a newer one ends the older), so
    /// this caps the nodes streaming here; the others use HTTP heartbeats.
    #[arg(long, default_value = "100000", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_node_streams: u32,
    /// Of --max-connections, slots only addresses that nodes registered or
    /// heartbeated from (in the last 10 minutes) may take; at most half.
    #[arg(long, default_value = "128")]
    pub node_connection_reserve: usize,
    /// Addresses of this network (CIDR, e.g. 10.0.0.0/8 or ::1/128) may
    /// always use that reserve too: load balancers' health checks,
    /// monitoring. Repeat for several.
    #[arg(long = "connection-reserve-for", value_name = "CIDR")]
    pub connection_reserve_for: Vec<ipnet::IpNet>,
    /// A connection that does not complete a request head within this long
    /// (after connecting, or between keep-alive requests) is closed.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub header_read_timeout: Duration,
    /// A connection with no byte read or written for this long is closed,
    /// whatever it is doing (longer than `POST /sync`'s 120 s wait).
    #[arg(long, default_value = "150s", value_parser = duration)]
    pub idle_timeout: Duration,
    /// A TLS handshake not done within this long ends the connection.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub tls_handshake_timeout: Duration,
}

impl ServeArgs {
    /// Checks combinations clap cannot express.
    pub fn check(&self) -> Result<(), String> {
        if self.heartbeat_interval.is_zero() {
            return Err("--heartbeat-interval must be positive".into());
        }
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(format!(
                "--heartbeat-timeout ({:?}) must be longer than --heartbeat-interval ({:?})",
                self.heartbeat_timeout, self.heartbeat_interval
            ));
        }
        if self.sync_interval.is_zero() {
            return Err("--sync-interval must be positive".into());
        }
        if self.autoscale_interval.is_zero() {
            return Err(
                "--autoscale-interval must be positive (use --no-autoscale to turn it off)".into(),
            );
        }
        if !(self.register_rate.is_finite() && self.register_rate >= 0.0) {
            return Err("--register-rate must be a number ≥ 0".into());
        }
        if self.register_burst == 0 {
            return Err("--register-burst must be at least 1".into());
        }
        for (flag, value) in [
            ("--header-read-timeout", self.header_read_timeout),
            ("--idle-timeout", self.idle_timeout),
            ("--tls-handshake-timeout", self.tls_handshake_timeout),
        ] {
            if value.is_zero() {
                return Err(format!("{flag} must be positive"));
            }
        }
        if self.max_connections == Some(0) || self.max_connections_per_ip == 0 {
            return Err("--max-connections and --max-connections-per-ip must be at least 1".into());
        }
        if self.sample_retention < Duration::from_secs(60) {
            return Err(format!(
                "--sample-retention {} is below 1m: the autoscaler could not see its windows",
                humantime::format_duration(self.sample_retention)
            ));
        }
        if self.audit_retention == Some(Duration::ZERO) {
            return Err("--audit-retention must be longer than 0s".into());
        }
        if self.registration_expiry <= self.heartbeat_timeout {
            return Err(format!(
                "--registration-expiry ({:?}) must be longer than --heartbeat-timeout ({:?})",
                self.registration_expiry, self.heartbeat_timeout
            ));
        }
        if self.lease_ttl < Duration::from_millis(300) {
            return Err(format!(
                "--lease-ttl ({:?}) must be at least 300ms: it is renewed every third of it",
                self.lease_ttl
            ));
        }
        if self
            .replica_id
            .as_deref()
            .is_some_and(|id| id.trim().is_empty() || id.len() > 200)
        {
            return Err("--replica-id must be 1 to 200 characters".into());
        }
        Ok(())
    }

    /// The API's connection limits for a process allowed `fd_limit` open
    /// files: the total below `fd_limit - --fd-reserve`, the node reserve at
    /// most half of it.
    pub fn connection_limits(&self, fd_limit: u64) -> ConnLimits {
        let total =
            crate::connlimit::cap_for_fd_limit(self.max_connections, fd_limit, self.fd_reserve);
        ConnLimits {
            total,
            per_ip: self.max_connections_per_ip,
            reserve: self.node_connection_reserve.min(total / 2),
        }
    }

    /// The timeouts each API connection is served with.
    pub fn connection_timeouts(&self) -> Timeouts {
        Timeouts {
            header_read: self.header_read_timeout,
            idle: self.idle_timeout,
            tls_handshake: self.tls_handshake_timeout,
        }
    }

    /// The settings the world and the services run with.
    pub fn settings(&self) -> Settings {
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        Settings {
            repo: self.repo.clone(),
            branch: self.branch.clone(),
            data: self.data.clone(),
            heartbeat_interval: self.heartbeat_interval,
            liveness: LivenessDefaults {
                heartbeat_timeout: self.heartbeat_timeout,
                probes: !self.no_probes,
            },
            weights: WeightSettings {
                split_brain_share: self.split_brain_share,
                split_brain_window: self.split_brain_window,
                split_brain_min_nodes: self.split_brain_min_nodes,
            },
            sync_interval: self.sync_interval,
            registration: RegistrationSettings {
                rate_per_second: self.register_rate,
                burst: self.register_burst,
                expiry: self.registration_expiry,
            },
            audit: self.audit_retention.map(|keep| AuditRetention {
                keep,
                archive: self.audit_archive.clone(),
            }),
            autoscale: AutoscaleSettings {
                enabled: !self.no_autoscale,
                interval: self.autoscale_interval,
                in_flight_timeout: self.autoscale_in_flight_timeout,
                author_name: self.git_author_name.clone(),
                author_email: self.git_author_email.clone(),
            },
            terraform: self.run_terraform.then(|| TerraformSettings {
                bin: self.terraform_bin.clone(),
                provider_dir: self.provider_dir.clone(),
                endpoint: format!("{scheme}://{}", self.listen),
                gtm_root: self.gtm_root.clone(),
                gtm_target: self.gtm_target.clone(),
                node_pool_root: self.node_pool_root.clone(),
                drift_interval: self.drift_interval,
                apply_drift: self.apply_drift,
                dir: self.terraform_dir.clone().unwrap_or_else(|| {
                    let mut name = self.data.file_name().unwrap_or_default().to_os_string();
                    name.push("-terraform");
                    self.data.with_file_name(name)
                }),
                pass_env: self.terraform_pass_env.clone(),
                state_store: self.terraform_state.clone(),
                user: self.terraform_user.clone(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    fn parse(extra: &[&str]) -> Result<ServeArgs, String> {
        let mut args = vec!["neutral", "--repo", "r", "--data", "d"];
        args.extend_from_slice(extra);
        Cli::try_parse_from(args)
            .map(|cli| cli.serve)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn connection_reserve_networks_are_cidrs_and_a_bad_one_names_the_flag() {
        let args = parse(&[
            "--connection-reserve-for",
            "10.9.0.0/16",
            "--connection-reserve-for",
            "::1/128",
        ])
        .unwrap();
        assert_eq!(
            args.connection_reserve_for,
            vec![
                "10.9.0.0/16".parse::<ipnet::IpNet>().unwrap(),
                "::1/128".parse().unwrap()
            ]
        );
        assert!(parse(&[]).unwrap().connection_reserve_for.is_empty());
        let err = parse(&["--connection-reserve-for", "10.0.0.0/33"]).unwrap_err();
        assert!(
            err.contains("invalid value '10.0.0.0/33' for '--connection-reserve-for <CIDR>'"),
            "{err}"
        );
    }

    #[test]
    fn audit_retention_is_off_by_default_and_an_archive_needs_it() {
        let args = parse(&[]).unwrap();
        assert!(args.settings().audit.is_none());
        let kept = parse(&[
            "--audit-retention",
            "2160h",
            "--audit-archive",
            "/var/archive",
        ])
        .unwrap();
        assert_eq!(kept.check(), Ok(()));
        let audit = kept.settings().audit.unwrap();
        assert_eq!(audit.keep, Duration::from_secs(90 * 86_400));
        assert_eq!(audit.archive, Some(PathBuf::from("/var/archive")));
        let err = parse(&["--audit-archive", "/var/archive"]).unwrap_err();
        assert!(err.contains("--audit-retention"), "{err}");
        let zero = parse(&["--audit-retention", "0s"]).unwrap();
        assert_eq!(
            zero.check(),
            Err("--audit-retention must be longer than 0s".into())
        );
    }

    #[test]
    fn sample_retention_defaults_to_an_hour_and_is_at_least_a_minute() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.sample_retention, Duration::from_secs(3600));
        assert_eq!(args.check(), Ok(()));
        let short = parse(&["--sample-retention", "30s"]).unwrap();
        let err = short.check().unwrap_err();
        assert!(err.contains("--sample-retention 30s is below 1m"), "{err}");
        assert_eq!(
            parse(&["--sample-retention", "10m"]).unwrap().check(),
            Ok(())
        );
    }

    #[test]
    fn the_store_cache_defaults_to_32_mib_per_connection_and_names_its_range() {
        assert_eq!(parse(&[]).unwrap().store_cache_mib, 32);
        assert_eq!(
            parse(&["--store-cache-mib", "4"]).unwrap().store_cache_mib,
            4
        );
        let err = parse(&["--store-cache-mib", "0"]).unwrap_err();
        assert!(
            err.contains("invalid value '0' for '--store-cache-mib <STORE_CACHE_MIB>'")
                && err.contains("1..=65536"),
            "{err}"
        );
    }
}
