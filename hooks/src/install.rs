//! `neutral hooks install`: writes the hook scripts into a repository and
//! records the settings in its git config.
//!
//! A bare repository (`--repo`) gets `pre-receive` and `post-receive`; a
//! working clone (`--clone`) gets `pre-commit`. Each script is a two-line sh
//! wrapper that execs the absolute path of the `neutral` binary that
//! installed it, marked as ours by a comment. Re-running is harmless: our own
//! scripts are rewritten (or left alone when identical), git config keys are
//! set only when their flag is given, and a hook someone else wrote is never
//! replaced without `--force` (which keeps it as `<hook>.before-neutral`).
//! Nothing is written unless every hook can be installed.
//!
//! This module owns the script text, the marker and where hooks live
//! (`core.hooksPath` when set). It must not run hooks.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use git2::Repository;

use crate::settings;

/// The comment that marks a hook script as written by this installer.
pub const MARKER: &str = "# neutral-hook:";

/// Where to install and what to configure.
#[derive(Clone, Debug, Default)]
pub struct Request {
    /// The repository: a bare one for the server-side hooks, a clone for
    /// `pre-commit`.
    pub repo: PathBuf,
    /// Server side (`pre-receive`, `post-receive`) or client side
    /// (`pre-commit`).
    pub server_side: bool,
    /// The `neutral` binary the scripts run (absolute).
    pub binary: PathBuf,
    pub control_plane: Option<String>,
    pub token_file: Option<PathBuf>,
    /// A viewer token file for the what-if reads (`neutral.readTokenFile`).
    pub read_token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub branches: Vec<String>,
    /// Replace hooks someone else wrote (keeping a copy).
    pub force: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("opening repository {}: {source}", path.display())]
    Open { path: PathBuf, source: git2::Error },
    #[error("{} is a bare repository: use --repo for it (--clone is for working clones)", .0.display())]
    BareClone(PathBuf),
    #[error("{} has a work tree: pre-receive/post-receive belong in the bare repository people push to (use --clone for a working clone)", .0.display())]
    NotBare(PathBuf),
    #[error(
        "{} exists and was not installed by neutral; re-run with --force to replace it (it is kept as {})",
        path.display(),
        backup.display()
    )]
    Foreign { path: PathBuf, backup: PathBuf },
    #[error("{what} {}: {source}", path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("setting {key} in {}: {source}", path.display())]
    Config {
        key: &'static str,
        path: PathBuf,
        source: git2::Error,
    },
    #[error("the path of the neutral binary is not valid UTF-8: {}", .0.display())]
    BinaryPath(PathBuf),
}

/// What happened to one hook or setting, for the installer's report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Installed(PathBuf),
    Updated(PathBuf),
    Unchanged(PathBuf),
    /// A foreign hook replaced under `--force`; the second path keeps it.
    Replaced(PathBuf, PathBuf),
    Set {
        key: &'static str,
        value: String,
    },
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Action::Installed(path) => write!(f, "installed {}", path.display()),
            Action::Updated(path) => write!(f, "updated {}", path.display()),
            Action::Unchanged(path) => write!(f, "unchanged {}", path.display()),
            Action::Replaced(path, backup) => write!(
                f,
                "replaced {} (the previous hook is kept as {})",
                path.display(),
                backup.display()
            ),
            Action::Set { key, value } => write!(f, "set {key} = {value}"),
        }
    }
}

/// The hooks a request installs.
pub fn hook_names(server_side: bool) -> &'static [&'static str] {
    if server_side {
        &["pre-receive", "post-receive"]
    } else {
        &["pre-commit"]
    }
}

/// The script for `hook` running `binary`.
pub fn script(binary: &str, hook: &str) -> String {
    let mut text = String::from("#!/bin/sh\n");
    let _ = writeln!(
        text,
        "{MARKER} {hook}, installed by `neutral hooks install`; re-running it rewrites this file."
    );
    let _ = writeln!(text, "exec {} hook {hook} \"$@\"", shell_quote(binary));
    text
}

/// `text` as one sh word.
fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

/// Installs the hooks and settings of `request`.
pub fn install(request: &Request) -> Result<Vec<Action>, InstallError> {
    let repo = Repository::open(&request.repo).map_err(|source| InstallError::Open {
        path: request.repo.clone(),
        source,
    })?;
    if request.server_side && !repo.is_bare() {
        return Err(InstallError::NotBare(request.repo.clone()));
    }
    if !request.server_side && repo.is_bare() {
        return Err(InstallError::BareClone(request.repo.clone()));
    }
    let binary = request
        .binary
        .to_str()
        .ok_or_else(|| InstallError::BinaryPath(request.binary.clone()))?;
    let dir = hooks_dir(&repo);

    // Decide everything first, so a foreign hook stops the whole install.
    let mut plans = Vec::new();
    for hook in hook_names(request.server_side) {
        let path = dir.join(hook);
        let wanted = script(binary, hook);
        let existing = match std::fs::read(&path) {
            Ok(bytes) => Some(String::from_utf8_lossy(&bytes).into_owned()),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(InstallError::Io {
                    what: "reading",
                    path,
                    source,
                });
            }
        };
        let backup = dir.join(format!("{hook}.before-neutral"));
        let ours = existing.as_deref().is_none_or(|text| text.contains(MARKER));
        if !ours && !request.force {
            return Err(InstallError::Foreign { path, backup });
        }
        plans.push((path, wanted, existing, ours, backup));
    }

    let mut actions = Vec::new();
    std::fs::create_dir_all(&dir).map_err(|source| InstallError::Io {
        what: "creating",
        path: dir.clone(),
        source,
    })?;
    for (path, wanted, existing, ours, backup) in plans {
        let action = match existing {
            Some(text) if text == wanted => Action::Unchanged(path.clone()),
            Some(_) if !ours => {
                std::fs::rename(&path, &backup).map_err(|source| InstallError::Io {
                    what: "keeping the previous hook as",
                    path: backup.clone(),
                    source,
                })?;
                Action::Replaced(path.clone(), backup)
            }
            Some(_) => Action::Updated(path.clone()),
            None => Action::Installed(path.clone()),
        };
        if !matches!(action, Action::Unchanged(_)) {
            write_executable(&path, &wanted)?;
        }
        make_executable(&path)?;
        actions.push(action);
    }
    actions.extend(configure(&repo, request)?);
    Ok(actions)
}

/// Where git runs `repo`'s hooks from: `core.hooksPath` (relative to the
/// repository for a bare one, to the work tree otherwise), else `hooks/` in
/// the common git directory (shared by linked worktrees).
pub fn hooks_dir(repo: &Repository) -> PathBuf {
    let configured = repo
        .config()
        .ok()
        .and_then(|c| c.get_path("core.hooksPath").ok());
    match configured {
        Some(path) if path.is_absolute() => path,
        Some(path) => repo.workdir().unwrap_or_else(|| repo.path()).join(path),
        None => repo.commondir().join("hooks"),
    }
}

fn write_executable(path: &Path, text: &str) -> Result<(), InstallError> {
    let io = |source| InstallError::Io {
        what: "writing",
        path: path.to_path_buf(),
        source,
    };
    // Write beside it and rename, so git never runs half a script.
    let temporary = path.with_extension("neutral-tmp");
    let mut file = std::fs::File::create(&temporary).map_err(io)?;
    file.write_all(text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    make_executable(&temporary)?;
    std::fs::rename(&temporary, path).map_err(io)
}

fn make_executable(path: &Path) -> Result<(), InstallError> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        InstallError::Io {
            what: "making executable",
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Sets the git config keys whose flags were given; others keep their
/// values.
fn configure(repo: &Repository, request: &Request) -> Result<Vec<Action>, InstallError> {
    let config_path = repo.path().join("config");
    let config_err = |key, source| InstallError::Config {
        key,
        path: config_path.clone(),
        source,
    };
    let mut config = repo
        .config()
        .and_then(|c| c.open_level(git2::ConfigLevel::Local))
        .map_err(|source| config_err("the repository config", source))?;
    let mut actions = Vec::new();
    let mut set = |key: &'static str, value: String| -> Result<(), InstallError> {
        let current = config.get_string(key).ok();
        if current.as_deref() != Some(value.as_str()) {
            config
                .set_str(key, &value)
                .map_err(|source| config_err(key, source))?;
        }
        actions.push(Action::Set { key, value });
        Ok(())
    };
    if let Some(url) = &request.control_plane {
        set(
            settings::CONTROL_PLANE,
            url.trim_end_matches('/').to_owned(),
        )?;
    }
    if let Some(path) = &request.read_token_file {
        set(
            settings::READ_TOKEN_FILE,
            absolute(path).display().to_string(),
        )?;
    }
    if let Some(path) = &request.token_file {
        set(settings::TOKEN_FILE, absolute(path).display().to_string())?;
    }
    if let Some(path) = &request.ca_file {
        set(settings::CA_FILE, absolute(path).display().to_string())?;
    }
    if !request.branches.is_empty() {
        set(settings::BRANCH, request.branches.join(","))?;
    }
    if request.server_side {
        // Lets a control-plane leader's push carry its term to pre-receive
        // (`fence`); git refuses push options unless the remote takes them.
        set("receive.advertisePushOptions", "true".to_owned())?;
    }
    Ok(actions)
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bare() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        Repository::init_bare(dir.path()).unwrap();
        dir
    }

    fn request(repo: &Path) -> Request {
        Request {
            repo: repo.to_path_buf(),
            server_side: true,
            binary: PathBuf::from("/opt/neutral's bin/neutral"),
            ..Request::default()
        }
    }

    fn names(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .map(|a| {
                a.to_string()
                    .replace(&*std::env::temp_dir().to_string_lossy(), "TMP")
            })
            .collect()
    }

    #[test]
    fn the_script_execs_the_quoted_binary_with_the_hook() {
        expect_test::expect![[r#"
            #!/bin/sh
            # neutral-hook: pre-receive, installed by `neutral hooks install`; re-running it rewrites this file.
            exec '/opt/neutral'\''s bin/neutral' hook pre-receive "$@"
        "#]]
        .assert_eq(&script("/opt/neutral's bin/neutral", "pre-receive"));
    }

    #[test]
    fn installing_twice_changes_nothing_the_second_time() {
        let dir = bare();
        let mut req = request(dir.path());
        req.control_plane = Some("http://127.0.0.1:7070/".to_owned());
        let first = install(&req).unwrap();
        assert!(matches!(first[0], Action::Installed(_)));
        assert!(matches!(first[1], Action::Installed(_)));
        let hook = dir.path().join("hooks/pre-receive");
        let mode = std::fs::metadata(&hook).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        let second = install(&req).unwrap();
        assert!(matches!(second[0], Action::Unchanged(_)));
        assert!(matches!(second[1], Action::Unchanged(_)));
        let repo = Repository::open(dir.path()).unwrap();
        assert_eq!(
            repo.config()
                .unwrap()
                .get_string(settings::CONTROL_PLANE)
                .unwrap(),
            "http://127.0.0.1:7070"
        );
        assert_eq!(
            repo.config()
                .unwrap()
                .get_bool("receive.advertisePushOptions")
                .ok(),
            Some(true),
            "a leader's push may carry its term to pre-receive"
        );
        // Without the flag, the earlier setting stays.
        req.control_plane = None;
        install(&req).unwrap();
        let settings = crate::settings::Settings::read(&repo);
        assert_eq!(
            settings.control_plane.as_deref(),
            Some("http://127.0.0.1:7070")
        );
    }

    #[test]
    fn a_moved_binary_updates_our_own_hooks() {
        let dir = bare();
        let mut req = request(dir.path());
        install(&req).unwrap();
        req.binary = PathBuf::from("/usr/local/bin/neutral");
        let actions = install(&req).unwrap();
        assert!(matches!(actions[0], Action::Updated(_)), "{actions:?}");
        let text = std::fs::read_to_string(dir.path().join("hooks/post-receive")).unwrap();
        assert!(text.contains("exec '/usr/local/bin/neutral' hook post-receive"));
    }

    #[test]
    fn a_foreign_hook_is_kept_unless_forced() {
        let dir = bare();
        let hooks = dir.path().join("hooks");
        std::fs::create_dir_all(&hooks).unwrap();
        std::fs::write(hooks.join("post-receive"), "#!/bin/sh\necho mine\n").unwrap();
        let mut req = request(dir.path());
        let err = install(&req).unwrap_err().to_string();
        assert!(
            err.contains("was not installed by neutral; re-run with --force"),
            "{err}"
        );
        assert!(
            !hooks.join("pre-receive").exists(),
            "nothing is written when one hook cannot be installed"
        );
        req.force = true;
        let actions = install(&req).unwrap();
        assert!(matches!(actions[1], Action::Replaced(..)), "{actions:?}");
        assert_eq!(
            std::fs::read_to_string(hooks.join("post-receive.before-neutral")).unwrap(),
            "#!/bin/sh\necho mine\n"
        );
        // Ours now: a second run without --force is fine.
        req.force = false;
        let again = names(&install(&req).unwrap());
        assert_eq!(again.len(), 3, "{again:?}");
        assert!(again[0].starts_with("unchanged ") && again[0].ends_with("hooks/pre-receive"));
        assert!(again[1].starts_with("unchanged ") && again[1].ends_with("hooks/post-receive"));
        assert_eq!(again[2], "set receive.advertisePushOptions = true");
    }

    #[test]
    fn server_hooks_need_a_bare_repository_and_pre_commit_a_clone() {
        let dir = tempfile::tempdir().unwrap();
        Repository::init(dir.path()).unwrap();
        let err = install(&request(dir.path())).unwrap_err();
        assert!(matches!(err, InstallError::NotBare(_)), "{err}");
        let mut req = request(dir.path());
        req.server_side = false;
        req.branches = vec!["main".to_owned(), "prod".to_owned()];
        let actions = install(&req).unwrap();
        assert!(dir.path().join(".git/hooks/pre-commit").exists());
        assert_eq!(
            actions.last(),
            Some(&Action::Set {
                key: settings::BRANCH,
                value: "main,prod".to_owned()
            })
        );
        let bare = bare();
        let mut req = request(bare.path());
        req.server_side = false;
        assert!(matches!(install(&req), Err(InstallError::BareClone(_))));
    }

    #[test]
    fn core_hooks_path_is_honoured() {
        let dir = bare();
        let repo = Repository::open(dir.path()).unwrap();
        repo.config()
            .unwrap()
            .set_str("core.hooksPath", "custom-hooks")
            .unwrap();
        install(&request(dir.path())).unwrap();
        assert!(dir.path().join("custom-hooks/pre-receive").exists());
    }
}
