//! Judging one proposed configuration, the part `pre-receive` and
//! `pre-commit` share: static validation with the core
//! ([`neutral_core::config::load`]), then, when that passed, the control plane
//! is configured and the configuration changed, the core's what-if checks
//! ([`neutral_core::whatif`]) against the control plane's live nodes.
//!
//! This module owns that order, the live-health source (asked at most once per
//! hook run, bounded by `neutral.liveTimeout`) and how a verdict is printed:
//! every diagnostic as `path:line:col: severity: message`, the control plane's
//! state when it matters, and one summary line. It must not compute weights or
//! validate anything itself: the core does.

use std::io::Write;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use neutral_core::config::{self, RepoFile};
use neutral_core::diag::Diagnostic;
use neutral_core::model::{Node, Timestamp};
use neutral_core::weights::WeightSettings;
use neutral_core::whatif;

use crate::control_plane::{ControlPlane, LeaderLease};
use crate::settings::Settings;

/// What became of the what-if checks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Live {
    /// No `neutral.controlPlane`: static validation only.
    NotConfigured,
    /// Static validation failed; the what-if checks need a valid tree.
    SkippedInvalid,
    /// The configuration files are the same as before: nothing can change.
    NoConfigChange,
    /// The control plane did not answer in time (or at all).
    Unreachable(String),
    /// Checked against this many live nodes.
    Checked { nodes: usize },
}

/// The verdict on one proposed configuration.
#[derive(Clone, Debug)]
pub struct Verdict {
    /// Static diagnostics, then what-if diagnostics.
    pub diagnostics: Vec<Diagnostic>,
    /// Configuration files read.
    pub files: usize,
    /// Terraform files judged by the policy (`infra/**`, `modules/**`).
    pub terraform_files: usize,
    pub live: Live,
}

impl Verdict {
    pub fn errors(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }

    pub fn warnings(&self) -> usize {
        self.diagnostics.len().saturating_sub(self.errors())
    }

    pub fn accepted(&self) -> bool {
        self.errors() == 0
    }
}

/// The control plane's nodes, fetched on first use and kept for the rest of
/// the hook run (a push updating several followed branches asks once).
#[derive(Debug)]
pub struct LiveHealth {
    control_plane: Option<Result<ControlPlane, String>>,
    token: Result<Option<String>, String>,
    deadline: std::time::Duration,
    fetched: Option<Result<Vec<Node>, String>>,
}

impl LiveHealth {
    pub fn new(settings: &Settings) -> LiveHealth {
        let control_plane = settings.control_plane.as_deref().map(|url| {
            ControlPlane::new(url, settings.ca_file.as_deref())
                .map_err(|err| format!("control plane {url}: {err}"))
        });
        LiveHealth {
            control_plane,
            token: settings.read_token(),
            deadline: settings.live_timeout,
            fetched: None,
        }
    }

    fn is_configured(&self) -> bool {
        self.control_plane.is_some()
    }

    /// The leader lease from the control plane; `Ok(None)` when no control
    /// plane is configured.
    pub fn leader(&self) -> Result<Option<LeaderLease>, String> {
        match &self.control_plane {
            None => Ok(None),
            Some(Err(err)) => Err(err.clone()),
            Some(Ok(cp)) => {
                let token = self.token.clone()?;
                cp.leader(token.as_deref(), self.deadline)
                    .map(Some)
                    .map_err(|err| format!("control plane {}: {err}", cp.base()))
            }
        }
    }

    fn nodes(&mut self) -> Result<&[Node], String> {
        if self.fetched.is_none() {
            let fetched = match &self.control_plane {
                None => Err("no control plane configured".to_owned()),
                Some(Err(err)) => Err(err.clone()),
                Some(Ok(cp)) => match &self.token {
                    Err(err) => Err(err.clone()),
                    Ok(token) => cp
                        .nodes(token.as_deref(), self.deadline)
                        .map_err(|err| format!("control plane {}: {err}", cp.base())),
                },
            };
            self.fetched = Some(fetched);
        }
        match &self.fetched {
            Some(Ok(nodes)) => Ok(nodes),
            Some(Err(err)) => Err(err.clone()),
            None => Err("no answer".to_owned()),
        }
    }
}

/// Judges `after` (the proposed configuration files). `before` reads the
/// configuration it replaces (empty for a new branch); it is called only
/// when the what-if checks run.
pub fn judge<E>(
    after: &[RepoFile],
    before: impl FnOnce() -> Result<Vec<RepoFile>, E>,
    live: &mut LiveHealth,
) -> Result<Verdict, E> {
    let loaded = config::load(after);
    let mut verdict = Verdict {
        diagnostics: loaded.diagnostics,
        files: after.len(),
        terraform_files: 0,
        live: Live::NotConfigured,
    };
    if !live.is_configured() {
        return Ok(verdict);
    }
    if verdict.errors() > 0 {
        verdict.live = Live::SkippedInvalid;
        return Ok(verdict);
    }
    let before_files = before()?;
    if before_files == after {
        verdict.live = Live::NoConfigChange;
        return Ok(verdict);
    }
    let nodes = match live.nodes() {
        Ok(nodes) => nodes,
        Err(err) => {
            verdict.live = Live::Unreachable(err);
            return Ok(verdict);
        }
    };
    let previous = config::load(&before_files);
    let change = whatif::Change {
        before: &previous.declarations,
        after: &loaded.declarations,
        after_files: after,
    };
    let found = whatif::check(&change, nodes, now(), &WeightSettings::default());
    verdict.diagnostics.extend(found);
    verdict.live = Live::Checked { nodes: nodes.len() };
    Ok(verdict)
}

/// Adds the Terraform policy's findings on `terraform` (the files
/// [`neutral_core::policy::is_policy_input`] selects) to `verdict`.
pub fn add_policy(verdict: &mut Verdict, terraform: &[RepoFile]) {
    verdict.terraform_files = terraform
        .iter()
        .filter(|f| f.path.ends_with(".tf") || f.path.ends_with(".tf.json"))
        .count();
    verdict
        .diagnostics
        .extend(neutral_core::policy::check(terraform));
}

fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp(millis)
}

/// Prints `verdict` on `out`: the diagnostics, a line about live health
/// when it was wanted but missing, and the summary for `subject` (e.g.
/// `refs/heads/main at 1a2b3c4`), with the time since `started`.
pub fn print(
    out: &mut dyn Write,
    verdict: &Verdict,
    subject: &str,
    started: Instant,
) -> std::io::Result<()> {
    for diagnostic in &verdict.diagnostics {
        writeln!(out, "{diagnostic}")?;
    }
    if let Live::Unreachable(why) = &verdict.live {
        writeln!(
            out,
            "neutral: warning: {why}; decided on static validation alone (no what-if checks against live health)"
        )?;
    }
    let (errors, warnings) = (verdict.errors(), verdict.warnings());
    let live = match &verdict.live {
        Live::NotConfigured => "static validation only (no neutral.controlPlane)".to_owned(),
        Live::SkippedInvalid => "what-if checks skipped".to_owned(),
        Live::NoConfigChange => "no configuration change".to_owned(),
        Live::Unreachable(_) => "live health unavailable".to_owned(),
        Live::Checked { nodes } => format!(
            "what-if checked against {nodes} live {}",
            plural(*nodes, "node", "nodes")
        ),
    };
    let elapsed = started.elapsed().as_millis();
    let terraform = match verdict.terraform_files {
        0 => String::new(),
        n => format!(" and {n} Terraform {}", plural(n, "file", "files")),
    };
    if verdict.accepted() {
        writeln!(
            out,
            "neutral: ok: {subject}: {} config {}{terraform} valid, {warnings} {}; {live} ({elapsed} ms)",
            verdict.files,
            plural(verdict.files, "file", "files"),
            plural(warnings, "warning", "warnings"),
        )
    } else {
        let files = verdict
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .map(|d| d.path.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len();
        writeln!(
            out,
            "neutral: rejected: {subject}: {errors} {}, {warnings} {} in {files} {}; {live} ({elapsed} ms)",
            plural(errors, "error", "errors"),
            plural(warnings, "warning", "warnings"),
            plural(files, "file", "files"),
        )
    }
}

fn plural<'a>(n: usize, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 { one } else { many }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neutral_core::config::FileContent;

    fn file(path: &str, text: &str) -> RepoFile {
        RepoFile {
            path: path.to_owned(),
            content: FileContent::Bytes(text.as_bytes().to_vec()),
        }
    }

    fn no_control_plane() -> LiveHealth {
        LiveHealth::new(&Settings::default())
    }

    fn unreachable_control_plane() -> LiveHealth {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        LiveHealth::new(&Settings {
            control_plane: Some(format!("http://127.0.0.1:{port}")),
            ..Settings::default()
        })
    }

    fn render(verdict: &Verdict) -> String {
        let mut out = Vec::new();
        print(
            &mut out,
            verdict,
            "refs/heads/main at 1234567",
            Instant::now(),
        )
        .unwrap();
        let text = String::from_utf8(out).unwrap();
        // The elapsed time varies.
        let cut = text.rfind(" (").unwrap();
        format!("{}{}", &text[..cut], " (… ms)\n")
    }

    fn never_read() -> Result<Vec<RepoFile>, std::convert::Infallible> {
        panic!("the previous configuration must not be read")
    }

    #[test]
    fn invalid_files_are_rejected_with_their_diagnostics() {
        let after = [
            file(
                "platform-config/regions/jp.yaml",
                "name: jp\nprovider: mars\nmax_nodes: 1\nmin_nodes: 2\n",
            ),
            file(
                "infra/node-pool/jp.tfvars",
                "region = \"jp\"\ndesired_nodes = 7\n",
            ),
        ];
        let verdict = judge(&after, never_read, &mut unreachable_control_plane()).unwrap();
        assert!(!verdict.accepted());
        assert_eq!(verdict.live, Live::SkippedInvalid);
        expect_test::expect![[r#"
            platform-config/regions/jp.yaml:2:11: error: `provider` must be one of: aws, alicloud, tencent, ucloud, edge, local; found `mars`
            platform-config/regions/jp.yaml:4:12: error: `min_nodes` (2) is greater than `max_nodes` (1)
            neutral: rejected: refs/heads/main at 1234567: 2 errors, 0 warnings in 1 file; what-if checks skipped (… ms)
        "#]]
        .assert_eq(&render(&verdict));
    }

    #[test]
    fn valid_files_without_a_control_plane_are_accepted_on_static_validation() {
        let after = [file(
            "platform-config/regions/jp.yaml",
            "name: jp\nprovider: local\nmax_nodes: 1\n",
        )];
        let verdict = judge(&after, never_read, &mut no_control_plane()).unwrap();
        assert!(verdict.accepted());
        expect_test::expect![[r#"
            neutral: ok: refs/heads/main at 1234567: 1 config file valid, 0 warnings; static validation only (no neutral.controlPlane) (… ms)
        "#]]
        .assert_eq(&render(&verdict));
    }

    #[test]
    fn an_unchanged_configuration_does_not_ask_the_control_plane() {
        let after = vec![file(
            "platform-config/regions/jp.yaml",
            "name: jp\nprovider: local\nmax_nodes: 1\n",
        )];
        let same = after.clone();
        let mut live = unreachable_control_plane();
        let verdict = judge(&after, || Ok::<_, ()>(same), &mut live).unwrap();
        assert_eq!(verdict.live, Live::NoConfigChange);
        assert!(live.fetched.is_none());
    }

    #[test]
    fn an_unreachable_control_plane_is_a_warning_not_a_rejection() {
        let after = vec![file(
            "platform-config/regions/jp.yaml",
            "name: jp\nprovider: local\nmax_nodes: 1\n",
        )];
        let verdict = judge(
            &after,
            || Ok::<_, ()>(Vec::new()),
            &mut unreachable_control_plane(),
        )
        .unwrap();
        assert!(verdict.accepted());
        assert!(matches!(verdict.live, Live::Unreachable(_)));
        let text = render(&verdict);
        assert!(
            text.contains("neutral: warning: control plane http://127.0.0.1:"),
            "{text}"
        );
        assert!(
            text.contains("decided on static validation alone"),
            "{text}"
        );
        assert!(text.ends_with("live health unavailable (… ms)\n"), "{text}");
    }

    #[test]
    fn a_provisioner_in_a_root_is_refused_with_its_place_and_rule() {
        let after = [file(
            "platform-config/regions/jp.yaml",
            "name: jp\nprovider: local\nmax_nodes: 1\n",
        )];
        let mut verdict = judge(&after, never_read, &mut no_control_plane()).unwrap();
        add_policy(
            &mut verdict,
            &[
                file(
                    "infra/gtm/main.tf",
                    "module \"gtm\" {\n  source = \"../../modules/gtm\"\n}\n",
                ),
                file(
                    "infra/gtm/x.tf",
                    "resource \"terraform_data\" \"x\" {\n  provisioner \"local-exec\" {\n    command = \"env > /tmp/leak\"\n  }\n}\n",
                ),
                file(
                    "modules/x/main.tf",
                    "data \"external\" \"e\" {\n  program = [\"env\"]\n}\n",
                ),
            ],
        );
        assert!(!verdict.accepted());
        expect_test::expect![[r#"
            infra/gtm/x.tf:2:3: error: [provisioner] provisioner `local-exec` in resource `terraform_data`: provisioners run commands on the control plane's machine; not allowed
            modules/x/main.tf:1:1: error: [external-data] data source `external` runs a program on the control plane's machine; never allowed
            modules/x/main.tf:1:1: error: [provider] data `external` uses provider `external` (registry.terraform.io/hashicorp/external), which is not allowed; allowed: registry.terraform.io/neutral/neutral, terraform.io/builtin/terraform
            neutral: rejected: refs/heads/main at 1234567: 3 errors, 0 warnings in 2 files; static validation only (no neutral.controlPlane) (… ms)
        "#]].assert_eq(&render(&verdict));
    }
}
