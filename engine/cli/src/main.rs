//! `neutral`: the command-line entry point.
//!
//! Thin by design: argument parsing, reading files, printing and exit codes.
//! Every computation is a call into `neutral-core`. Exit codes: 0 success,
//! 1 the input is invalid (diagnostics printed), 2 usage or IO error.

mod arenas;
mod explain;
mod init;
mod output;
mod repo_fs;
mod runs;
mod state;
mod status;
mod validate;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::output::{Format, Outcome};

#[derive(Debug, Parser)]
#[command(
    name = "neutral",
    version,
    about = "Cloud-neutral control plane: GTM and elastic node pools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a repository's platform-config/ and infra/node-pool/.
    Validate {
        /// Repository root.
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Scaffold a platform repository: platform-config, the node counts,
    /// the Terraform roots and modules, Ansible roles, a CI workflow.
    Init(init::InitArgs),
    /// Show effective weights and autoscale decisions for an observed state.
    Explain {
        /// Observed-state JSON file (nodes, metrics, last actions).
        #[arg(long)]
        state: PathBuf,
        /// Repository root.
        #[arg(default_value = ".")]
        dir: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run the control plane: node API, GitOps sync, health, GTM, embedded DNS.
    Serve(Box<neutral_server::ServeArgs>),
    /// Run the node agent (register, heartbeat, run the workload), or talk to
    /// the running one: `neutral agent release`, `neutral agent status`.
    Agent(Box<neutral_agent::cli::AgentCli>),
    /// Run the minimal deployment end to end with a scripted story (the
    /// README's main command).
    Demo(Box<neutral_demo::DemoArgs>),
    /// Release an image on a node through the control plane (blue/green).
    Release(Box<neutral_agent::remote_release::RemoteReleaseArgs>),
    /// List the Terraform runs the control plane's scheduler recorded.
    Runs {
        /// The control plane (else $NEUTRAL_ENDPOINT, else http://127.0.0.1:7400).
        #[arg(
            long,
            env = "NEUTRAL_ENDPOINT",
            default_value = "http://127.0.0.1:7400"
        )]
        control_plane: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Only runs of this root (e.g. infra/gtm).
        #[arg(long)]
        root: Option<String>,
        /// File holding a viewer (or admin) token; else env
        /// NEUTRAL_VIEWER_TOKEN, else env NEUTRAL_ADMIN_TOKEN.
        #[arg(long)]
        token_file: Option<std::path::PathBuf>,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// The control plane at a glance: regions, domains with their answers
    /// and reasons, nodes, the autoscaler and Terraform runs.
    Status {
        /// The control plane (else $NEUTRAL_ENDPOINT, else http://127.0.0.1:7400).
        #[arg(
            long,
            env = "NEUTRAL_ENDPOINT",
            default_value = "http://127.0.0.1:7400"
        )]
        control_plane: String,
        /// File holding a read token [default: $NEUTRAL_VIEWER_TOKEN, else
        /// $NEUTRAL_ADMIN_TOKEN, else none].
        #[arg(long)]
        token_file: Option<PathBuf>,
        /// Redraw every SECONDS until ctrl-c (or --count pictures).
        #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=3600))]
        watch: Option<u64>,
        /// With --watch: stop after this many pictures.
        #[arg(long, requires = "watch", value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// How many recent Terraform runs to show.
        #[arg(long, default_value_t = 5)]
        runs: u32,
        #[arg(long, value_enum, default_value_t)]
        format: Format,
    },
    /// Run a Git hook (pre-receive, pre-commit, post-receive); git runs it.
    Hook(neutral_hooks::HookArgs),
    /// Install the Git hooks into a bare repository or a working clone.
    Hooks(neutral_hooks::HooksArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            let code = if err.use_stderr() { 2 } else { 0 };
            let _ = err.print();
            return ExitCode::from(code);
        }
    };
    let result = match cli.command {
        Command::Validate { dir, format } => validate::run(&dir, format),
        Command::Init(args) => init::run(args).map(|()| Outcome::Ok),
        Command::Explain { state, dir, format } => explain::run(&state, &dir, format),
        Command::Runs {
            control_plane,
            limit,
            root,
            format,
            token_file,
        } => runs::run(
            &control_plane,
            limit,
            root.as_deref(),
            token_file.as_deref(),
            format,
        ),
        Command::Status {
            control_plane,
            token_file,
            watch,
            count,
            runs,
            format,
        } => status::run(&status::Options {
            control_plane,
            token_file,
            format,
            watch,
            count,
            runs,
        }),
        Command::Serve(args) => {
            arenas::bound();
            return neutral_server::run_blocking(*args);
        }
        Command::Agent(args) => {
            init_agent_logging(
                args.run
                    .as_ref()
                    .map(|run| run.log_format)
                    .unwrap_or_default(),
            );
            return neutral_agent::cli::main(*args);
        }
        Command::Hook(args) => return neutral_hooks::run_hook(&args),
        Command::Hooks(args) => return neutral_hooks::run_hooks(&args),
        Command::Release(args) => return neutral_agent::remote_release::main(*args),
        Command::Demo(args) => return neutral_demo::run_blocking(*args),
    };
    match result {
        Ok(Outcome::Ok) => ExitCode::SUCCESS,
        Ok(Outcome::Invalid) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_agent_logging(format: neutral_agent::LogFormat) {
    use tracing_subscriber::EnvFilter;
    // NEUTRAL_LOG first, then the usual RUST_LOG.
    let filter = EnvFilter::try_from_env("NEUTRAL_LOG")
        .or_else(|_| EnvFilter::try_from_env("RUST_LOG"))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        neutral_agent::LogFormat::Text => builder.try_init(),
        neutral_agent::LogFormat::Json => builder.json().try_init(),
    };
}
