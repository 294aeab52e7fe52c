//! The hooks' settings, read from the repository's git config (`git config
//! neutral.<key>`), so one `neutral hooks install` configures them and a
//! server-side hook needs no environment of its own.
//!
//! | key | meaning | default |
//! |---|---|---|
//! | `neutral.branch` | branch the control plane follows; repeat the key (or separate with commas) for several | `main` |
//! | `neutral.controlPlane` | control plane URL for what-if checks, leader-term checks (`fence`) and the sync trigger | none: static validation only |
//! | `neutral.tokenFile` | file holding the admin token for `POST /sync` (else env `NEUTRAL_ADMIN_TOKEN`) | none |
//! | `neutral.readTokenFile` | file holding a viewer (read-only) token for `GET /nodes` in the what-if checks (else `neutral.tokenFile`, else env `NEUTRAL_VIEWER_TOKEN`, else env `NEUTRAL_ADMIN_TOKEN`) | none |
//! | `neutral.caFile` | PEM CA the control plane's certificate must chain to (else the system roots) | none |
//! | `neutral.liveTimeout` | total time the pre-receive/pre-commit hooks wait for live health | `500ms` |
//! | `neutral.syncTimeout` | total time the post-receive hook waits for `POST /sync` | `2s` |
//!
//! This module owns the key names, their defaults and their parsing. It must
//! not act on them.

use std::path::PathBuf;
use std::time::Duration;

use git2::Repository;
use neutral_core::model::parse_duration;

pub const BRANCH: &str = "neutral.branch";
pub const CONTROL_PLANE: &str = "neutral.controlPlane";
pub const TOKEN_FILE: &str = "neutral.tokenFile";
pub const READ_TOKEN_FILE: &str = "neutral.readTokenFile";
pub const CA_FILE: &str = "neutral.caFile";
pub const LIVE_TIMEOUT: &str = "neutral.liveTimeout";
pub const SYNC_TIMEOUT: &str = "neutral.syncTimeout";

pub const DEFAULT_BRANCH: &str = "main";
pub const DEFAULT_LIVE_TIMEOUT: Duration = Duration::from_millis(500);
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(2);
/// No setting may make a hook wait longer than this for the control plane.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything the hooks read from git config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    pub branches: Vec<String>,
    pub control_plane: Option<String>,
    pub token_file: Option<PathBuf>,
    pub read_token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub live_timeout: Duration,
    pub sync_timeout: Duration,
    /// Problems with the settings themselves; the hooks print them and go on
    /// with the defaults.
    pub warnings: Vec<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            branches: vec![DEFAULT_BRANCH.to_owned()],
            control_plane: None,
            token_file: None,
            read_token_file: None,
            ca_file: None,
            live_timeout: DEFAULT_LIVE_TIMEOUT,
            sync_timeout: DEFAULT_SYNC_TIMEOUT,
            warnings: Vec::new(),
        }
    }
}

impl Settings {
    /// The token the what-if checks read live nodes with: the viewer token
    /// file, else the admin token file, else env `NEUTRAL_VIEWER_TOKEN`,
    /// else env `NEUTRAL_ADMIN_TOKEN`; `Err` says why none was usable.
    pub fn read_token(&self) -> Result<Option<String>, String> {
        if let Some(file) = self.read_token_file.as_ref().or(self.token_file.as_ref()) {
            let text = std::fs::read_to_string(file)
                .map_err(|err| format!("cannot read token file {}: {err}", file.display()))?;
            let token = text.trim();
            if token.is_empty() {
                return Err(format!("token file {} is empty", file.display()));
            }
            return Ok(Some(token.to_owned()));
        }
        Ok(["NEUTRAL_VIEWER_TOKEN", "NEUTRAL_ADMIN_TOKEN"]
            .iter()
            .filter_map(|var| std::env::var(var).ok())
            .map(|v| v.trim().to_owned())
            .find(|v| !v.is_empty()))
    }

    /// Reads the settings from `repo`'s config (repository, global and
    /// system levels, as git does). A missing or unreadable config gives
    /// the defaults.
    pub fn read(repo: &Repository) -> Settings {
        let mut settings = Settings::default();
        let Ok(mut config) = repo.config() else {
            settings
                .warnings
                .push("cannot read the repository's git config; using defaults".to_owned());
            return settings;
        };
        let Ok(config) = config.snapshot() else {
            return settings;
        };
        let mut branches = Vec::new();
        if let Ok(mut entries) = config.multivar(BRANCH, None) {
            while let Some(Ok(entry)) = entries.next() {
                if let Ok(value) = entry.value() {
                    branches.extend(split_branches(value));
                }
            }
        }
        if !branches.is_empty() {
            settings.branches = branches;
        }
        let text = |key: &str| {
            config
                .get_string(key)
                .ok()
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
        };
        settings.control_plane = text(CONTROL_PLANE);
        settings.token_file = text(TOKEN_FILE).map(PathBuf::from);
        settings.read_token_file = text(READ_TOKEN_FILE).map(PathBuf::from);
        settings.ca_file = text(CA_FILE).map(PathBuf::from);
        for (key, slot) in [
            (LIVE_TIMEOUT, &mut settings.live_timeout),
            (SYNC_TIMEOUT, &mut settings.sync_timeout),
        ] {
            if let Some(value) = text(key) {
                match parse_duration(&value) {
                    Ok(duration) if duration <= MAX_TIMEOUT => *slot = duration,
                    Ok(_) => {
                        settings.warnings.push(format!(
                            "{key} = {value} is longer than {}s; using {}s",
                            MAX_TIMEOUT.as_secs(),
                            MAX_TIMEOUT.as_secs()
                        ));
                        *slot = MAX_TIMEOUT;
                    }
                    Err(err) => settings
                        .warnings
                        .push(format!("{key} = {value}: {err}; using the default")),
                }
            }
        }
        settings
    }
}

fn split_branches(value: &str) -> impl Iterator<Item = String> + '_ {
    value
        .split(',')
        .map(str::trim)
        .filter(|b| !b.is_empty())
        .map(|b| b.strip_prefix("refs/heads/").unwrap_or(b).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repo_with(config: &[(&str, &str)]) -> (tempfile::TempDir, Repository) {
        let dir = tempfile::tempdir().unwrap();
        let repo = Repository::init_bare(dir.path()).unwrap();
        {
            let mut cfg = repo
                .config()
                .unwrap()
                .open_level(git2::ConfigLevel::Local)
                .unwrap();
            for (key, value) in config {
                cfg.set_multivar(key, "^$", value).unwrap();
            }
        }
        (dir, repo)
    }

    #[test]
    fn defaults_follow_main_without_a_control_plane() {
        let (_dir, repo) = repo_with(&[]);
        let settings = Settings::read(&repo);
        assert_eq!(settings.branches, ["main"]);
        assert_eq!(settings.control_plane, None);
        assert_eq!(settings.live_timeout, Duration::from_millis(500));
        assert_eq!(settings.sync_timeout, Duration::from_secs(2));
    }

    #[test]
    fn branches_come_from_every_value_and_commas() {
        let (_dir, repo) = repo_with(&[
            (BRANCH, "prod, refs/heads/staging"),
            (BRANCH, "main"),
            (CONTROL_PLANE, "http://127.0.0.1:7070"),
            (LIVE_TIMEOUT, "250ms"),
        ]);
        let settings = Settings::read(&repo);
        assert_eq!(settings.branches, ["prod", "staging", "main"]);
        assert_eq!(
            settings.control_plane.as_deref(),
            Some("http://127.0.0.1:7070")
        );
        assert_eq!(settings.live_timeout, Duration::from_millis(250));
        assert!(settings.warnings.is_empty());
    }

    #[test]
    fn bad_or_huge_timeouts_warn_and_stay_bounded() {
        let (_dir, repo) = repo_with(&[(LIVE_TIMEOUT, "soon"), (SYNC_TIMEOUT, "1h")]);
        let settings = Settings::read(&repo);
        assert_eq!(settings.live_timeout, DEFAULT_LIVE_TIMEOUT);
        assert_eq!(settings.sync_timeout, MAX_TIMEOUT);
        assert_eq!(settings.warnings.len(), 2, "{:?}", settings.warnings);
    }
}
