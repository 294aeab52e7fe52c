//! `neutral serve`: the control plane daemon.
//!
//! Wires the IO edges around the pure core: the HTTP API (`api`), GitOps sync
//! (`sync`), health checking (`health`), the batched heartbeat writer
//! (`ingest`), the embedded DNS server (`dns`), the autoscaler, the
//! Terraform scheduler, and the in-memory world with its two reactions,
//! reconcile and recompute (`world`, a leaf: state and computation only).
//! [`app::App`] composes the world with the services' handles and is the
//! state every task and handler shares; this file builds it from
//! [`ServeArgs`] (turned into [`settings::Settings`] once) and decides which
//! tasks run ([`spawn_singleton_tasks`] holds the ones only a leader may
//! run). Modules import downwards only — tasks and handlers → `app` →
//! handles and `world` — which `scripts/check-module-cycles` checks. Every computation —
//! validation, liveness, effective weights — is a call into `neutral-core`;
//! this crate decides only when to compute and where results go. The GTM
//! controller never writes a DNS backend's records: those change through
//! Terraform. It only pushes node health into the embedded server's data
//! plane, which is what makes failover as fast as detection.

pub mod admission;
pub mod api;
pub mod app;
pub mod args;
pub mod audit_retention;
pub mod auth;
pub mod autoscaler;
pub mod backlog;
pub mod coalesce;
pub mod connlimit;
pub mod counters;
pub mod dns;
pub mod elector;
pub mod error;
pub mod event_streams;
pub mod health;
pub mod ingest;
pub mod leadership;
pub mod listener;
pub mod metrics;
pub mod node_streams;
pub mod node_table;
pub mod releases;
pub mod replicas;
pub mod sample_rings;
pub mod scheduler;
pub mod settings;
pub mod shutdown;
pub mod snapshots;
pub mod sync;
pub mod ui;
pub mod world;

use std::future::Future;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use neutral_dns::{DnsServer, Zone, ZoneSet};
use neutral_store::{Heartbeat, Store, StoreLocation, StoreOptions};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio::task::JoinSet;

pub use args::{LogFormat, ServeArgs};

use crate::app::App;
use crate::counters::Counters;
use crate::dns::DnsBridge;
use crate::scheduler::Scheduler;
use crate::shutdown::Shutdown;
use crate::sync::SyncRequest;
use crate::world::ChangeEvent;

/// Builds the runtime, installs logging and signal handling, and serves
/// until SIGTERM or SIGINT. Exit code 0 after a clean shutdown, 1 on a
/// runtime failure, 2 on bad flags or unusable files.
pub fn run_blocking(args: ServeArgs) -> ExitCode {
    init_logging(args.log_format);
    if let Err(message) = args.check() {
        eprintln!("error: {message}");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(async move {
        let signal = shutdown_signal();
        serve(args, signal).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!(
                "error: {}",
                neutral_core::redact::redact(&format!("{err:#}"))
            );
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // NEUTRAL_LOG first, then the usual RUST_LOG.
    let filter = EnvFilter::try_from_env("NEUTRAL_LOG")
        .or_else(|_| EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| EnvFilter::new("info,hickory_server=warn,hickory_proto=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Text => builder.try_init(),
    };
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
    }
}

/// Holds `<data>/serve.lock` (an advisory lock the kernel drops when the
/// process ends, kill -9 included) for as long as the returned file lives:
/// two daemons on one data directory would interleave their store, DNS and
/// Terraform state.
fn lock_data_dir(data: &std::path::Path) -> Result<std::fs::File> {
    let path = data.join("serve.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(anyhow::anyhow!(
            "data directory {} is in use by another neutral serve (it holds {})",
            data.display(),
            path.display()
        )),
        Err(std::fs::TryLockError::Error(err)) => {
            Err(err).with_context(|| format!("cannot lock {}", path.display()))
        }
    }
}

/// Env var naming the store's `pause_inside_apply` arm file (crash tests
/// only; see `neutral_store::StoreOptions`).
pub const FAULT_PAUSE_INSIDE_APPLY: &str = "NEUTRAL_FAULT_PAUSE_INSIDE_APPLY";
/// The same for a heartbeat batch's transaction.
pub const FAULT_PAUSE_INSIDE_HEARTBEATS: &str = "NEUTRAL_FAULT_PAUSE_INSIDE_HEARTBEATS";
pub use ingest::FAULT_HOLD_HEARTBEAT_WRITER;
/// The same for a DNS zone write's transaction.
pub const FAULT_PAUSE_INSIDE_ZONE_WRITE: &str = "NEUTRAL_FAULT_PAUSE_INSIDE_ZONE_WRITE";

/// Runs the control plane until `stop` resolves.
pub async fn serve(args: ServeArgs, stop: impl Future<Output = ()>) -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Every connection and file costs a descriptor: take all the hard limit
    // allows, and keep the API's connections below it (--fd-reserve).
    let fd_limit = match listener::raise_fd_limit() {
        Ok(fds) => {
            tracing::info!(
                soft_before = fds.soft_before,
                soft = fds.soft,
                hard = fds.hard,
                "open-file limit"
            );
            fds.soft
        }
        Err(error) => {
            let soft = rlimit::getrlimit(rlimit::Resource::NOFILE).map_or(1024, |(soft, _)| soft);
            tracing::warn!(%error, soft, "cannot raise the open-file limit");
            soft
        }
    };
    let connection_limits = args.connection_limits(fd_limit);
    if args
        .max_connections
        .is_some_and(|wanted| wanted > connection_limits.total)
    {
        tracing::warn!(
            wanted = args.max_connections,
            max_connections = connection_limits.total,
            fd_limit,
            fd_reserve = args.fd_reserve,
            "--max-connections lowered to the open-file limit minus --fd-reserve"
        );
    }
    let join_token = auth::load_secret(args.join_token_file.as_deref(), "NEUTRAL_JOIN_TOKEN")
        .context("join token")?;
    let admin_token = auth::load_secret(args.admin_token_file.as_deref(), "NEUTRAL_ADMIN_TOKEN")
        .context("admin token")?;
    if join_token == admin_token {
        anyhow::bail!(
            "the join token must differ from the admin token: every node would hold admin \
             rights (set NEUTRAL_JOIN_TOKEN / --join-token-file to a secret of its own)"
        );
    }
    // The data folder is the daemon's alone: created 0700, refused when
    // others may write into it, tightened (loudly) when they may read it.
    let data = args.data.clone();
    match tokio::task::spawn_blocking(move || neutral_store::secure_data_dir(&data)).await?? {
        neutral_store::DataDirSecurity::Tightened { old_mode } => tracing::warn!(
            data = %args.data.display(),
            old_mode = format!("{old_mode:o}"),
            "the data folder was readable by other users (its store and Terraform state may hold \
             secrets); it is now 0700"
        ),
        neutral_store::DataDirSecurity::Created | neutral_store::DataDirSecurity::Private => {}
    }
    let viewer_token =
        auth::load_viewer(args.viewer_token_file.as_deref()).context("viewer token")?;
    let _data_lock = lock_data_dir(&args.data)?;
    let data = args.data.clone();
    let options = StoreOptions {
        init: args.init,
        sample_retention: args.sample_retention,
        cache_mib: args.store_cache_mib,
        pause_inside_apply: std::env::var_os(FAULT_PAUSE_INSIDE_APPLY).map(Into::into),
        pause_inside_heartbeats: std::env::var_os(FAULT_PAUSE_INSIDE_HEARTBEATS).map(Into::into),
        pause_inside_zone_write: std::env::var_os(FAULT_PAUSE_INSIDE_ZONE_WRITE).map(Into::into),
        ..StoreOptions::default()
    };
    let location = match &args.store {
        Some(url) => StoreLocation::Postgres(url.expose().to_owned()),
        None => StoreLocation::SqliteDir(data),
    };
    if args.init && args.store.is_none() {
        tracing::warn!(data = %args.data.display(), "--init: an empty or missing store starts over from nothing");
    }
    let shown = location.to_string();
    let store = tokio::task::spawn_blocking(move || Store::open_at(&location, options))
        .await?
        .with_context(|| match &args.store {
            Some(_) => "cannot open the store given by --store".to_owned(),
            None => format!("cannot open the store in {}", args.data.display()),
        })?;
    tracing::info!(store = %shown, backend = ?store.backend(), "store open");
    let store = Arc::new(store);
    // Replicas on one PostgreSQL store elect who runs the singleton work;
    // with SQLite (one daemon per store) this daemon always does.
    let elected = store.backend() == neutral_store::Backend::Postgres;
    // Runs a killed daemon left queued or running end `interrupted`; the
    // scheduler's first pass plans every root again. An elected replica
    // does this when it becomes the leader, not before (another may lead).
    let interrupted = if elected {
        Vec::new()
    } else {
        let store = Arc::clone(&store);
        let at = world::now();
        tokio::task::spawn_blocking(move || store.runs().interrupt_unfinished(at, "start"))
            .await??
    };
    for run in &interrupted {
        tracing::warn!(
            run = run.id,
            root = %run.root,
            workspace = %run.workspace,
            "run was left unfinished by a stopped control plane: marked interrupted; its root is planned again"
        );
    }

    let settings = args.settings();
    let at = world::now();
    let restored = {
        let store = Arc::clone(&store);
        let liveness = settings.liveness;
        tokio::task::spawn_blocking(move || world::restore(&liveness, &store, at)).await??
    };
    let mut zones = ZoneSet::new();
    {
        let store = Arc::clone(&store);
        let stored =
            tokio::task::spawn_blocking(move || store.zones().list_zones::<Zone>()).await??;
        for zone in stored {
            zones.insert(zone.zone);
        }
    }
    let dns_server = DnsServer::bind_with_limits(
        args.dns_listen,
        zones,
        neutral_dns::RateLimit {
            responses_per_second: args.dns_rate_limit,
            burst: args.dns_rate_burst.max(args.dns_rate_limit),
            ..neutral_dns::RateLimit::default()
        },
        neutral_dns::TcpLimits {
            connections: args.dns_tcp_max_connections as usize,
            per_address: args.dns_tcp_max_per_ip as usize,
        },
    )
    .await
    .with_context(|| format!("cannot serve DNS on {}", args.dns_listen))?;
    tracing::info!(
        nodes = restored.nodes.len(),
        commit = restored.commit.as_deref().unwrap_or("none"),
        "restored state"
    );

    let mirror = {
        let path = args.data.join("mirror.git");
        let (url, branch) = (args.repo.clone(), args.branch.clone());
        let credentials = args.repo_credentials_file.clone();
        tokio::task::spawn_blocking(move || {
            let mirror = neutral_git::Mirror::open_or_init(&path, &url, &branch)?;
            match credentials {
                Some(file) => mirror.with_credentials_file(&file),
                None => Ok(mirror),
            }
        })
        .await?
        .context("cannot open the Git mirror")?
    };
    let scheduler = match &settings.terraform {
        Some(terraform) => {
            // Only to keep them out of Terraform's environment.
            let admin = auth::read_secret(args.admin_token_file.as_deref(), "NEUTRAL_ADMIN_TOKEN")?;
            let join = auth::read_secret(args.join_token_file.as_deref(), "NEUTRAL_JOIN_TOKEN")?;
            let viewer = std::env::var(auth::VIEWER_ENV).unwrap_or_default();
            let viewer = match &args.viewer_token_file {
                Some(path) => std::fs::read_to_string(path).unwrap_or_default(),
                None => viewer,
            };
            Some(Arc::new(Scheduler::new(
                &settings,
                terraform,
                &[admin.as_str(), join.as_str(), viewer.trim()],
            )?))
        }
        None => None,
    };
    let (heartbeat_tx, heartbeat_rx) = mpsc::channel(args.heartbeat_queue as usize);
    let (sync_tx, sync_rx) = mpsc::channel(16);
    let (events, _) = broadcast::channel(1024);
    let app = Arc::new(App {
        settings,
        store,
        join_token,
        admin_token,
        viewer_token,
        grants: auth::Grants::default(),
        world: RwLock::new(restored),
        heartbeats: heartbeat_tx,
        heartbeat_backlog: backlog::Backlog::default(),
        sync_requests: sync_tx,
        events,
        event_streams: event_streams::EventStreams::default(),
        leadership: leadership::Leadership::new(
            args.replica_id
                .clone()
                .unwrap_or_else(|| default_replica_id(args.listen)),
            elected,
        ),
        dns: DnsBridge::new(dns_server.handle()),
        counters: Counters::default(),
        probe_wakeup: Notify::new(),
        mirror: Arc::new(std::sync::Mutex::new(mirror)),
        scheduler,
        reconcile_soon: Notify::new(),
        recompute_soon: Notify::new(),
        verdict_changed: Notify::new(),
        reconciles: coalesce::Coalescer::default(),
        recomputes: coalesce::Coalescer::default(),
        releases: releases::Releases::default(),
        registrations: admission::RateLimiter::new(args.register_rate, args.register_burst),
        registering: admission::InFlight::default(),
        connections: connlimit::ConnTable::reserving_for(
            connection_limits,
            args.connection_reserve_for.clone(),
        ),
        node_streams: node_streams::NodeStreams::new(args.max_node_streams as usize),
        probe_client: health::probe_client().context("cannot build the probe client")?,
    });
    // Releases asked for before a restart (or on another replica) still
    // ride on their nodes' heartbeats.
    api::releases::load(&app).await;
    snapshots::restore_dns_memory(&app).await;
    app.recompute("start").await;

    let (trigger, shutdown) = shutdown::channel();
    let (stop_http, http_stop) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    spawn_replica_tasks(&app, heartbeat_rx, &mut tasks, &shutdown, elected);
    let sync_requests = Arc::new(tokio::sync::Mutex::new(sync_rx));
    if elected {
        let leader_app = Arc::clone(&app);
        tasks.spawn(elector::run(
            Arc::clone(&app),
            args.lease_ttl,
            move |term_tasks: &mut JoinSet<()>, term: &Shutdown| {
                let events = leader_app.events.subscribe();
                // Every replica probes (`spawn_replica_tasks`); the leader
                // alone decides statuses, from the replicas' verdicts.
                term_tasks.spawn(health::run_ticker(Arc::clone(&leader_app), term.clone()));
                spawn_singleton_tasks(
                    &leader_app,
                    Arc::clone(&sync_requests),
                    events,
                    term_tasks,
                    term,
                );
            },
            shutdown.clone(),
        ));
    } else {
        // Subscribed before any task starts, so that no change (such as the
        // first sync) can slip by the scheduler.
        let scheduler_events = app.events.subscribe();
        spawn_singleton_tasks(&app, sync_requests, scheduler_events, &mut tasks, &shutdown);
    }

    let router = api::router(Arc::clone(&app));
    let grpc = api::stream::router(Arc::clone(&app));
    let server = {
        let listen = args.listen;
        let tls = match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => {
                Some(listener::tls_acceptor(cert, key).with_context(|| {
                    format!(
                        "cannot load TLS certificate {} / key {}",
                        cert.display(),
                        key.display()
                    )
                })?)
            }
            _ => None,
        };
        let listener =
            listener::bind(listen).with_context(|| format!("cannot listen on {listen}"))?;
        let limits = app.connections.limits();
        let timeouts = args.connection_timeouts();
        tracing::info!(
            %listen,
            tls = tls.is_some(),
            max_connections = limits.total,
            max_connections_per_ip = limits.per_ip,
            node_connection_reserve = limits.reserve,
            header_read_timeout = ?timeouts.header_read,
            idle_timeout = ?timeouts.idle,
            "API listening"
        );
        tokio::spawn(listener::serve(
            listener,
            tls,
            listener::Routers { api: router, grpc },
            Arc::clone(&app.connections),
            timeouts,
            http_stop,
        ))
    };

    // Run until asked to stop (or the API server dies).
    tokio::pin!(stop);
    let mut server = server;
    let server_result = tokio::select! {
        () = &mut stop => None,
        result = &mut server => Some(result),
    };
    tracing::info!("stopping");
    app.event_streams.stop();
    app.node_streams.stop();
    let _ = stop_http.send(true);
    trigger.fire();
    while tasks.join_next().await.is_some() {}
    let _ = dns_server.shutdown().await;
    if server_result.is_none() {
        let _ = server.await;
    }
    let _ = app.with_store(Store::checkpoint).await;
    match server_result {
        Some(Ok(())) => Err(anyhow::anyhow!("the API server stopped on its own")),
        None => Ok(()),
        Some(Err(err)) => Err(err).context("API server task failed"),
    }
}

/// The tasks every control plane process runs: the batched heartbeat
/// writer, and health checking — a sole control plane's own, or among
/// replicas this replica's probes and the exchange of node changes and
/// verdicts (`replicas.rs`; the leader decides statuses, its ticker runs
/// under its term).
fn spawn_replica_tasks(
    app: &Arc<App>,
    heartbeats: mpsc::Receiver<Heartbeat>,
    tasks: &mut JoinSet<()>,
    shutdown: &Shutdown,
    elected: bool,
) {
    tasks.spawn(ingest::run(Arc::clone(app), heartbeats, shutdown.clone()));
    tasks.spawn(health::run_recompute_requests(
        Arc::clone(app),
        shutdown.clone(),
    ));
    if elected {
        tasks.spawn(replicas::run(Arc::clone(app), shutdown.clone()));
        tasks.spawn(health::run_prober(Arc::clone(app), shutdown.clone()));
    } else {
        spawn_health_tasks(app, tasks, shutdown);
    }
}

/// Health checking: the heartbeat-timeout ticker (reconcile) and the prober.
fn spawn_health_tasks(app: &Arc<App>, tasks: &mut JoinSet<()>, shutdown: &Shutdown) {
    tasks.spawn(health::run_ticker(Arc::clone(app), shutdown.clone()));
    tasks.spawn(health::run_prober(Arc::clone(app), shutdown.clone()));
}

/// This replica's default name in the leader lease.
fn default_replica_id(listen: std::net::SocketAddr) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned());
    format!("{host}/{listen}/{}", std::process::id())
}

/// The tasks of which one instance may run per deployment, because they
/// write what others only read: sync (stores the declarations in force),
/// the autoscaler (commits to the repository) and the scheduler (runs
/// Terraform). This is the one place that decides it: a sole control plane
/// (SQLite) runs them from the start; replicas on PostgreSQL run them while
/// they hold the leader lease (`elector.rs`), under a shutdown that ends
/// with the term.
fn spawn_singleton_tasks(
    app: &Arc<App>,
    sync_requests: Arc<tokio::sync::Mutex<mpsc::Receiver<SyncRequest>>>,
    scheduler_events: broadcast::Receiver<ChangeEvent>,
    tasks: &mut JoinSet<()>,
    shutdown: &Shutdown,
) {
    tasks.spawn(sync::task::run(
        Arc::clone(app),
        sync_requests,
        shutdown.clone(),
    ));
    tasks.spawn(autoscaler::run(Arc::clone(app), shutdown.clone()));
    tasks.spawn(snapshots::run(Arc::clone(app), shutdown.clone()));
    tasks.spawn(api::expire_registrations(Arc::clone(app), shutdown.clone()));
    if let Some(retention) = &app.settings.audit {
        tasks.spawn(audit_retention::run(
            Arc::clone(app),
            retention.clone(),
            shutdown.clone(),
        ));
    }
    if let Some(scheduler) = &app.scheduler {
        tasks.spawn(scheduler::task::run(
            Arc::clone(app),
            Arc::clone(scheduler),
            scheduler_events,
            shutdown.clone(),
        ));
    }
}
