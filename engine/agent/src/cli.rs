//! `neutral agent`'s command line: without a subcommand it runs the agent;
//! `release` and `status` talk to the running agent of this node through its
//! control socket and print the result.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::config::{AgentArgs, DEFAULT_NODE_DIR};
use crate::node::control::{self, ControlRequest, ControlResponse, SOCKET_NAME};
use crate::node::{NodeView, ReleaseReport, ReleaseRequest};

/// `neutral agent [OPTIONS]` or `neutral agent <release|status>`: exactly
/// one of the two is set.
#[derive(Debug)]
pub struct AgentCli {
    pub command: Option<AgentCommand>,
    pub run: Option<AgentArgs>,
}

// By hand: the agent's required flags must not be required with a
// subcommand, which derived (flattened) arguments cannot express.
impl clap::FromArgMatches for AgentCli {
    fn from_arg_matches(matches: &clap::ArgMatches) -> Result<Self, clap::Error> {
        if matches.subcommand_name().is_some() {
            Ok(AgentCli {
                command: Some(AgentCommand::from_arg_matches(matches)?),
                run: None,
            })
        } else {
            Ok(AgentCli {
                command: None,
                run: Some(AgentArgs::from_arg_matches(matches)?),
            })
        }
    }

    fn update_from_arg_matches(&mut self, matches: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(matches)?;
        Ok(())
    }
}

impl clap::Args for AgentCli {
    fn augment_args(command: clap::Command) -> clap::Command {
        let command = AgentCommand::augment_subcommands(command);
        AgentArgs::augment_args(command)
            .args_conflicts_with_subcommands(true)
            .subcommand_negates_reqs(true)
    }

    fn augment_args_for_update(command: clap::Command) -> clap::Command {
        Self::augment_args(command)
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum AgentCommand {
    /// Blue/green release on this node, through its running agent.
    Release(ReleaseArgs),
    /// The node's active colour, image, containers and release history.
    Status(StatusArgs),
}

#[derive(Debug, clap::Args)]
pub struct ReleaseArgs {
    /// Image reference to release.
    #[arg(long, value_name = "REF")]
    pub image: String,
    /// Image tarball (OCI layout) to import first.
    #[arg(long, value_name = "FILE")]
    pub archive: Option<PathBuf>,
    /// Health-check path [default: the agent's --health-path].
    #[arg(long, value_name = "PATH")]
    pub health_path: Option<String>,
    /// How long the new colour may take to become healthy [default: the
    /// agent's --health-timeout].
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,
    #[arg(long, value_name = "DIR", default_value = DEFAULT_NODE_DIR)]
    pub node_dir: PathBuf,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    #[arg(long, value_name = "DIR", default_value = DEFAULT_NODE_DIR)]
    pub node_dir: PathBuf,
    /// Print the status as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `neutral agent …`. Exit codes: 0 success, 1 the release failed (the
/// serving colour is untouched), 2 usage error or no agent to talk to.
pub fn main(cli: AgentCli) -> ExitCode {
    match (cli.command, cli.run) {
        (Some(AgentCommand::Release(args)), _) => client(release(args)),
        (Some(AgentCommand::Status(args)), _) => client(status(args)),
        (None, Some(run)) => crate::run_blocking(run),
        (None, None) => {
            eprintln!("error: `neutral agent` needs --control-plane and --region, or a subcommand");
            ExitCode::from(2)
        }
    }
}

fn client(work: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(work),
        Err(err) => {
            eprintln!("error: starting the async runtime: {err}");
            ExitCode::from(2)
        }
    }
}

async fn release(args: ReleaseArgs) -> ExitCode {
    let archive = match args.archive.as_deref().map(std::path::absolute).transpose() {
        Ok(archive) => archive,
        Err(err) => {
            eprintln!("error: --archive: {err}");
            return ExitCode::from(2);
        }
    };
    let timeout_ms = args
        .timeout
        .map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX));
    let request = ControlRequest::Release(ReleaseRequest {
        image: args.image,
        archive,
        health_path: args.health_path,
        timeout_ms,
        id: None,
    });
    // The agent bounds each step; this only guards against a hung agent.
    let wait = args.timeout.unwrap_or(Duration::from_secs(30)) + Duration::from_secs(600);
    let socket = args.node_dir.join(SOCKET_NAME);
    match control::request(&socket, &request, wait).await {
        Ok(ControlResponse::Released(report)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", describe_release(&report));
            }
            ExitCode::SUCCESS
        }
        Ok(ControlResponse::Error { message }) => {
            eprintln!("error: release failed: {message}");
            ExitCode::from(1)
        }
        Ok(other) => {
            eprintln!("error: unexpected answer: {other:?}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

async fn status(args: StatusArgs) -> ExitCode {
    let socket = args.node_dir.join(SOCKET_NAME);
    match control::request(&socket, &ControlRequest::Status, Duration::from_secs(30)).await {
        Ok(ControlResponse::Status(view)) => {
            if args.json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&view).unwrap_or_default()
                );
            } else {
                print!("{}", describe_status(&view));
            }
            ExitCode::SUCCESS
        }
        Ok(ControlResponse::Error { message }) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
        Ok(other) => {
            eprintln!("error: unexpected answer: {other:?}");
            ExitCode::from(2)
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::from(2)
        }
    }
}

/// The text `neutral agent release` prints.
pub fn describe_release(report: &ReleaseReport) -> String {
    let previous = report.previous.as_ref().map_or_else(
        || "nothing".to_owned(),
        |p| format!("{} on {}", p.image, p.colour),
    );
    format!(
        "released {} on {} (was {previous})\n\
         healthy after {} ms, switched after {} ms, old requests {} after {} ms, old colour stopped after {} ms\n",
        report.image,
        report.colour,
        report.healthy_ms,
        report.switched_ms,
        if report.drained { "drained" } else { "cut off" },
        report.drained_ms,
        report.stopped_ms,
    )
}

/// The text `neutral agent status` prints.
pub fn describe_status(view: &NodeView) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    match &view.active {
        Some(active) => {
            let _ = writeln!(out, "active: {} serving {}", active.colour, active.image);
        }
        None => out.push_str("active: none (no release yet)\n"),
    }
    let _ = writeln!(
        out,
        "nginx: {} on {}, upstream {}",
        if view.nginx_running {
            "running"
        } else {
            "not running"
        },
        view.listen,
        view.upstream
            .map_or_else(|| "none".to_owned(), |u| u.to_string()),
    );
    for colour in &view.colours {
        let _ = writeln!(
            out,
            "{}: port {}, container {} {}",
            colour.colour, colour.port, colour.container, colour.state
        );
    }
    if view.releasing {
        out.push_str("a release is in progress\n");
    }
    out.push_str("history (newest first):\n");
    if view.history.is_empty() {
        out.push_str("  none\n");
    }
    for record in view.history.iter().rev() {
        let time = std::time::UNIX_EPOCH + Duration::from_millis(record.started_unix_ms);
        let _ = writeln!(
            out,
            "  {} {} {} on {} in {} ms{}",
            humantime::format_rfc3339_seconds(time),
            match record.outcome {
                crate::node::release::Outcome::Released => "released",
                crate::node::release::Outcome::Failed => "FAILED  ",
            },
            record.image,
            record.colour,
            record.duration_ms,
            record
                .reason
                .as_ref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default(),
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::node::release::{Active, Colour, Outcome, ReleaseRecord};

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentCli,
    }

    fn parse(args: &[&str]) -> Result<AgentCli, clap::Error> {
        Cli::try_parse_from(std::iter::once("agent").chain(args.iter().copied())).map(|c| c.agent)
    }

    #[test]
    fn subcommands_need_no_control_plane_and_running_needs_one() {
        let cli = parse(&["release", "--image", "web:v2", "--timeout", "5s"]).unwrap();
        match cli.command {
            Some(AgentCommand::Release(args)) => {
                assert_eq!(args.image, "web:v2");
                assert_eq!(args.timeout, Some(Duration::from_secs(5)));
                assert_eq!(args.node_dir, PathBuf::from(DEFAULT_NODE_DIR));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            parse(&["status", "--json"]).unwrap().command,
            Some(AgentCommand::Status(StatusArgs { json: true, .. }))
        ));
        let run = parse(&["--control-plane", "http://127.0.0.1:7400", "--region", "jp"]).unwrap();
        assert!(run.command.is_none());
        assert_eq!(run.run.unwrap().region, "jp");
        assert!(parse(&["--region", "jp"]).is_err());
        assert!(parse(&["release"]).is_err(), "--image is required");
    }

    #[test]
    fn full_node_flags_parse() {
        let cli = parse(&[
            "--control-plane",
            "http://127.0.0.1:7400",
            "--region",
            "jp",
            "--runtime",
            "containerd",
            "--nginx",
            "--containerd-private",
            "--blue-port",
            "18081",
            "--pull",
            "never",
            "--drain-grace",
            "10s",
        ])
        .unwrap();
        let run = cli.run.unwrap();
        assert_eq!(run.node.runtime, crate::config::RuntimeKind::Containerd);
        assert!(run.node.nginx && run.node.containerd_private);
        assert_eq!(run.node.blue_port, 18081);
        assert_eq!(run.drain_grace, Some(Duration::from_secs(10)));
        assert!(
            parse(&[
                "--control-plane",
                "http://x",
                "--region",
                "jp",
                "--pull",
                "always"
            ])
            .is_err()
        );
    }

    #[test]
    fn status_text_shows_the_active_colour_and_newest_history_first() {
        let view = NodeView {
            active: Some(Active {
                colour: Colour::Green,
                image: "web:v2".into(),
                since_unix_ms: 0,
            }),
            listen: "127.0.0.2:80".parse().unwrap(),
            upstream: Some("127.0.0.1:28080".parse().unwrap()),
            nginx_running: true,
            colours: vec![],
            releasing: false,
            history: vec![
                ReleaseRecord {
                    id: None,
                    image: "web:v2".into(),
                    colour: Colour::Green,
                    started_unix_ms: 0,
                    duration_ms: 900,
                    outcome: Outcome::Released,
                    reason: None,
                },
                ReleaseRecord {
                    id: None,
                    image: "web:v3".into(),
                    colour: Colour::Blue,
                    started_unix_ms: 60_000,
                    duration_ms: 3000,
                    outcome: Outcome::Failed,
                    reason: Some("health check failed".into()),
                },
            ],
        };
        expect_test::expect![[r#"
            active: green serving web:v2
            nginx: running on 127.0.0.2:80, upstream 127.0.0.1:28080
            history (newest first):
              1970-01-01T00:01:00Z FAILED   web:v3 on blue in 3000 ms: health check failed
              1970-01-01T00:00:00Z released web:v2 on green in 900 ms
        "#]]
        .assert_eq(&describe_status(&view));
    }
}
