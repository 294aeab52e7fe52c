//! neutral's Git edge: a local mirror of the configuration repository's
//! branch, and reading `platform-config/` and `infra/node-pool/` straight from
//! a commit's tree in the object database (no checkout, no work tree).
//!
//! This crate owns talking to libgit2. It must not interpret configuration:
//! it hands `neutral_core::config::RepoFile`s to the core, which validates
//! them. Symlinks are passed on as links and blobs over the core's size limit
//! are not read, so a hostile commit costs no more than a hostile directory.

use std::path::{Path, PathBuf};

use git2::{FetchOptions, ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use neutral_core::config::{FileContent, MAX_FILE_BYTES, RepoFile, is_config_path};
use neutral_core::redact::redact;

pub use git2::Oid as CommitId;

/// Failures of the Git edge, each naming what was being done.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{op} ({path}): {source}")]
    Repo {
        op: &'static str,
        path: PathBuf,
        source: git2::Error,
    },
    /// `url` and `message` are redacted ([`neutral_core::redact`]): a URL's
    /// credentials never reach an error text.
    #[error("fetching branch `{branch}` from {url}: {message}")]
    Fetch {
        url: String,
        branch: String,
        message: String,
    },
    #[error("branch `{branch}` not found in {url}")]
    NoSuchBranch { url: String, branch: String },
    #[error("reading commit {commit}: {source}")]
    Read { commit: String, source: git2::Error },
    #[error("credentials file {path}: {message}")]
    Credentials { path: PathBuf, message: String },
}

/// One line of a git-credential-store file.
#[derive(Clone, PartialEq, Eq)]
struct CredentialEntry {
    target: CredentialTarget,
    username: String,
    password: String,
}

impl std::fmt::Debug for CredentialEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredentialEntry")
            .field("target", &self.target)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

/// Scheme, host (with port) and path of a URL, as credentials are matched.
#[derive(Clone, Debug, PartialEq, Eq)]
struct CredentialTarget {
    scheme: String,
    host: String,
    path: String,
}

impl CredentialTarget {
    /// `scheme://[userinfo@]host[:port][/path]`; `None` for anything else.
    fn parse(url: &str) -> Option<CredentialTarget> {
        let (scheme, rest) = url.split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = rest.get(..end)?;
        let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let path = rest.get(end..).unwrap_or_default();
        let path = path.split(['?', '#']).next().unwrap_or_default();
        (!scheme.is_empty() && !host.is_empty()).then(|| CredentialTarget {
            scheme: scheme.to_ascii_lowercase(),
            host: host.to_ascii_lowercase(),
            path: path.trim_matches('/').to_owned(),
        })
    }
}

impl CredentialEntry {
    /// Same scheme and host; an entry with a path only fits URLs under it.
    fn matches(&self, url: &CredentialTarget) -> bool {
        self.target.scheme == url.scheme
            && self.target.host == url.host
            && (self.target.path.is_empty()
                || url.path == self.target.path
                || url.path.starts_with(&format!("{}/", self.target.path)))
    }
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = text.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Reads a git-credential-store file. Errors name the line, never its
/// content.
fn read_credentials(path: &Path) -> Result<Vec<CredentialEntry>, GitError> {
    let fail = |message: String| GitError::Credentials {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| fail(format!("cannot read: {e}")))?;
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || {
            fail(format!(
                "line {}: expected `scheme://user:password@host[/path]`",
                number + 1
            ))
        };
        let target = CredentialTarget::parse(line).ok_or_else(bad)?;
        let (_, rest) = line.split_once("://").ok_or_else(bad)?;
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, _) = authority.rsplit_once('@').ok_or_else(bad)?;
        let (user, password) = userinfo.split_once(':').ok_or_else(bad)?;
        entries.push(CredentialEntry {
            target,
            username: percent_decode(user).ok_or_else(bad)?,
            password: percent_decode(password).ok_or_else(bad)?,
        });
    }
    Ok(entries)
}

/// A commit's identity and the first line of its message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    pub sha: String,
    pub summary: String,
    pub author: String,
    /// Seconds since the Unix epoch.
    pub time: i64,
}

/// The push option a leader's autoscaler commit carries (`<name>=<term>`):
/// the remote's pre-receive hook refuses it unless the term still holds the
/// leader lease, so a deposed leader's late push never lands.
pub const LEADER_TERM_PUSH_OPTION: &str = "neutral-leader-term";

/// A bare mirror of one branch of a remote repository (a URL or a local
/// path), kept under the control plane's data directory.
pub struct Mirror {
    repo: Repository,
    path: PathBuf,
    url: String,
    branch: String,
    /// Credentials in git-credential-store format ([`Mirror::with_credentials_file`]).
    credentials_file: Option<PathBuf>,
}

impl std::fmt::Debug for Mirror {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mirror")
            .field("path", &self.path)
            .field("url", &redact(&self.url))
            .field("branch", &self.branch)
            .field("credentials_file", &self.credentials_file)
            .finish()
    }
}

impl Mirror {
    /// Opens the mirror at `path`, creating a bare repository there when
    /// none exists. The remote is always (re)pointed at `url`.
    pub fn open_or_init(path: &Path, url: &str, branch: &str) -> Result<Mirror, GitError> {
        let repo = match Repository::open_bare(path) {
            Ok(repo) => repo,
            Err(_) => Repository::init_bare(path).map_err(|source| GitError::Repo {
                op: "creating the mirror",
                path: path.to_path_buf(),
                source,
            })?,
        };
        Ok(Mirror {
            repo,
            path: path.to_path_buf(),
            url: url.to_owned(),
            branch: branch.to_owned(),
            credentials_file: None,
        })
    }

    /// Takes the credentials for the remote from `file`, in the format of
    /// `git credential-store` (one `https://user:password@host[/path]` per
    /// line, percent-encoded; `#` comments), instead of from the URL. The
    /// file is read at every fetch and push (so it can be rotated) and is
    /// checked now: it must parse and hold an entry for the URL's host.
    /// Fetches answer libgit2's credential request from it; pushes run
    /// `git push` with `credential.helper=store --file=<file>`.
    pub fn with_credentials_file(mut self, file: &Path) -> Result<Mirror, GitError> {
        let entries = read_credentials(file)?;
        let target = CredentialTarget::parse(&self.url);
        if !entries
            .iter()
            .any(|e| target.as_ref().is_some_and(|t| e.matches(t)))
        {
            return Err(GitError::Credentials {
                path: file.to_path_buf(),
                message: format!("no entry for {}", redact(&self.url)),
            });
        }
        self.credentials_file = Some(file.to_path_buf());
        Ok(self)
    }

    /// libgit2 callbacks answering credential requests from the file.
    fn callbacks(&self) -> git2::RemoteCallbacks<'static> {
        let mut callbacks = git2::RemoteCallbacks::new();
        if let Some(file) = self.credentials_file.clone() {
            let mut tries = 0u32;
            callbacks.credentials(move |url, _user, allowed| {
                // libgit2 asks again after a refusal: answer once, then fail.
                tries += 1;
                if tries > 1 || !allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
                    return Err(git2::Error::from_str(
                        "the credentials file's entry was refused (or does not fit)",
                    ));
                }
                let entries = read_credentials(&file)
                    .map_err(|err| git2::Error::from_str(&err.to_string()))?;
                let target = CredentialTarget::parse(url);
                let entry = entries
                    .iter()
                    .find(|e| target.as_ref().is_some_and(|t| e.matches(t)))
                    .ok_or_else(|| {
                        git2::Error::from_str(&format!(
                            "{}: no entry for {}",
                            file.display(),
                            redact(url)
                        ))
                    })?;
                git2::Cred::userpass_plaintext(&entry.username, &entry.password)
            });
        }
        callbacks
    }

    fn tracking_ref(&self) -> String {
        format!("refs/remotes/origin/{}", self.branch)
    }

    /// Fetches the branch and returns the commit it points at.
    pub fn fetch(&self) -> Result<Oid, GitError> {
        let fetch_err = |source: git2::Error| GitError::Fetch {
            url: redact(&self.url).into_owned(),
            message: redact(source.message()).into_owned(),
            branch: self.branch.clone(),
        };
        let mut remote = self.repo.remote_anonymous(&self.url).map_err(fetch_err)?;
        let refspec = format!("+refs/heads/{}:{}", self.branch, self.tracking_ref());
        let mut options = FetchOptions::new();
        options.download_tags(git2::AutotagOption::None);
        // A branch deleted on the remote must not be served from the stale
        // tracking ref: pruning removes it, and `head()` then says so. The
        // commits already fetched stay in the object database.
        options.prune(git2::FetchPrune::On);
        options.remote_callbacks(self.callbacks());
        remote
            .fetch(&[refspec.as_str()], Some(&mut options), None)
            .map_err(fetch_err)?;
        self.head().ok_or_else(|| GitError::NoSuchBranch {
            url: redact(&self.url).into_owned(),
            branch: self.branch.clone(),
        })
    }

    /// The commit the mirrored branch pointed at when last fetched.
    pub fn head(&self) -> Option<Oid> {
        self.repo
            .find_reference(&self.tracking_ref())
            .ok()
            .and_then(|r| r.target())
    }

    pub fn repository(&self) -> &Repository {
        &self.repo
    }

    pub fn commit_info(&self, commit: Oid) -> Result<CommitInfo, GitError> {
        commit_info(&self.repo, commit)
    }

    /// The configuration files of `commit`.
    pub fn config_tree(&self, commit: Oid) -> Result<Vec<RepoFile>, GitError> {
        config_tree(&self.repo, commit)
    }

    /// Writes the whole tree of `commit` into `dest` (created if missing),
    /// as a plain directory: what Terraform runs against.
    pub fn export(&self, commit: Oid, dest: &Path) -> Result<(), GitError> {
        let read_err = |source| GitError::Read {
            commit: commit.to_string(),
            source,
        };
        std::fs::create_dir_all(dest).map_err(|e| GitError::Read {
            commit: commit.to_string(),
            source: git2::Error::from_str(&format!("creating {}: {e}", dest.display())),
        })?;
        let tree = self
            .repo
            .find_commit(commit)
            .and_then(|c| c.tree())
            .map_err(read_err)?;
        let mut checkout = git2::build::CheckoutBuilder::new();
        checkout.target_dir(dest).force().recreate_missing(true);
        self.repo
            .checkout_tree(tree.as_object(), Some(&mut checkout))
            .map_err(read_err)
    }

    /// Paths that differ between `from` (nothing when `None`) and `to`.
    pub fn changed_paths(&self, from: Option<Oid>, to: Oid) -> Result<Vec<String>, GitError> {
        let read_err = |source| GitError::Read {
            commit: to.to_string(),
            source,
        };
        let new = self
            .repo
            .find_commit(to)
            .and_then(|c| c.tree())
            .map_err(read_err)?;
        let old = match from {
            Some(from) => Some(
                self.repo
                    .find_commit(from)
                    .and_then(|c| c.tree())
                    .map_err(read_err)?,
            ),
            None => None,
        };
        let diff = self
            .repo
            .diff_tree_to_tree(old.as_ref(), Some(&new), None)
            .map_err(read_err)?;
        let mut paths: Vec<String> = diff
            .deltas()
            .flat_map(|d| [d.old_file().path(), d.new_file().path()])
            .flatten()
            .map(|p| p.to_string_lossy().replace('\\', "/"))
            .collect();
        paths.sort();
        paths.dedup();
        Ok(paths)
    }
}

/// Identity and summary of `commit`.
pub fn commit_info(repo: &Repository, commit: Oid) -> Result<CommitInfo, GitError> {
    let read_err = |source| GitError::Read {
        commit: commit.to_string(),
        source,
    };
    let c = repo.find_commit(commit).map_err(read_err)?;
    Ok(CommitInfo {
        sha: commit.to_string(),
        summary: String::from_utf8_lossy(c.summary_bytes().unwrap_or_default()).into_owned(),
        author: String::from_utf8_lossy(c.author().name_bytes()).into_owned(),
        time: c.time().seconds(),
    })
}

/// Reads every file below `platform-config/` and `infra/node-pool/` of the
/// tree of `commit` from the object database, sorted by path.
///
/// Regular files become bytes (or `Oversized` without reading the blob when
/// larger than the core's limit), symlinks become their target text;
/// submodules are skipped (they hold no files of this repository).
pub fn config_tree(repo: &Repository, commit: Oid) -> Result<Vec<RepoFile>, GitError> {
    tree_files(
        repo,
        commit,
        is_config_path,
        &["platform-config/", "infra/node-pool/"],
    )
}

/// The folders the Terraform policy reads (`neutral_core::policy`).
const POLICY_FOLDERS: [&str; 3] = ["infra/", "modules/", ".neutral/"];

/// Reads the files the Terraform policy judges (`infra/**`, `modules/**`
/// and the policy file) from the tree of `commit`, like [`config_tree`].
pub fn policy_tree(repo: &Repository, commit: Oid) -> Result<Vec<RepoFile>, GitError> {
    tree_files(
        repo,
        commit,
        neutral_core::policy::is_policy_input,
        &POLICY_FOLDERS,
    )
}

/// Reads the files the Terraform policy judges from the index, like
/// [`config_index`].
pub fn policy_index(repo: &Repository) -> Result<Vec<RepoFile>, GitError> {
    index_files(repo, neutral_core::policy::is_policy_input)
}

/// The files of `commit`'s tree for which `wanted` holds, descending only
/// into folders below or leading to one of `folders` (each ending in `/`).
fn tree_files(
    repo: &Repository,
    commit: Oid,
    wanted: fn(&str) -> bool,
    folders: &[&str],
) -> Result<Vec<RepoFile>, GitError> {
    let read_err = |source| GitError::Read {
        commit: commit.to_string(),
        source,
    };
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree())
        .map_err(read_err)?;
    let odb = repo.odb().map_err(read_err)?;
    let mut files = Vec::new();
    let mut failure: Option<git2::Error> = None;
    tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            return TreeWalkResult::Skip;
        };
        let path = format!("{dir}{name}");
        if entry.kind() == Some(ObjectType::Tree) {
            // Descend only into folders that are, or lead to, config folders.
            let folder = format!("{path}/");
            let descend = folders
                .iter()
                .any(|f| folder.starts_with(f) || f.starts_with(&folder));
            return if descend {
                TreeWalkResult::Ok
            } else {
                TreeWalkResult::Skip
            };
        }
        if !wanted(&path) || entry.kind() != Some(ObjectType::Blob) {
            return TreeWalkResult::Ok;
        }
        let content = match read_blob(&odb, entry.id(), entry.filemode()) {
            Ok(content) => content,
            Err(err) => {
                failure = Some(err);
                return TreeWalkResult::Abort;
            }
        };
        files.push(RepoFile { path, content });
        TreeWalkResult::Ok
    })
    .map_err(read_err)?;
    if let Some(err) = failure {
        return Err(read_err(err));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Reads every file below `platform-config/` and `infra/node-pool/` staged in
/// `repo`'s index (what the next commit will hold), sorted by path, the same
/// way [`config_tree`] reads a commit: blobs by the entries' ids from the
/// object database, symlinks (mode 120000) as links, big blobs unread.
///
/// Only merged entries (stage 0) are read; submodules and entries added with
/// `git add --intent-to-add` (no content yet) are skipped.
pub fn config_index(repo: &Repository) -> Result<Vec<RepoFile>, GitError> {
    index_files(repo, is_config_path)
}

fn index_files(repo: &Repository, wanted: fn(&str) -> bool) -> Result<Vec<RepoFile>, GitError> {
    let read_err = |source| GitError::Repo {
        op: "reading the index",
        path: repo.path().to_path_buf(),
        source,
    };
    let index = repo.index().map_err(read_err)?;
    let odb = repo.odb().map_err(read_err)?;
    let mut files = Vec::new();
    for entry in index.iter() {
        let stage = (entry.flags >> 12) & 0x3;
        let intent_to_add = entry.flags_extended & INTENT_TO_ADD != 0;
        if stage != 0 || intent_to_add {
            continue;
        }
        let Ok(path) = String::from_utf8(entry.path) else {
            continue;
        };
        let mode = i32::try_from(entry.mode).unwrap_or_default();
        if !wanted(&path) || (mode != SYMLINK_MODE && mode & 0o170_000 != 0o100_000) {
            continue;
        }
        let content = read_blob(&odb, entry.id, mode).map_err(read_err)?;
        files.push(RepoFile { path, content });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// `GIT_INDEX_ENTRY_INTENT_TO_ADD`, in an entry's extended flags.
const INTENT_TO_ADD: u16 = 1 << 13;

const SYMLINK_MODE: i32 = 0o120_000;

fn read_blob(odb: &git2::Odb<'_>, id: Oid, mode: i32) -> Result<FileContent, git2::Error> {
    let (size, _) = odb.read_header(id)?;
    let size = u64::try_from(size).unwrap_or(u64::MAX);
    if mode == SYMLINK_MODE {
        // A link's target is its blob; anything huge is not a real target.
        if size > 4096 {
            return Ok(FileContent::Symlink(String::new()));
        }
        let object = odb.read(id)?;
        return Ok(FileContent::Symlink(
            String::from_utf8_lossy(object.data()).into_owned(),
        ));
    }
    if size > MAX_FILE_BYTES {
        return Ok(FileContent::Oversized(size));
    }
    let object = odb.read(id)?;
    Ok(FileContent::Bytes(object.data().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) {
        let status = Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .status()
            .unwrap();
        assert!(status.success(), "git {args:?}");
    }

    fn work_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        git(root, &["init", "-q", "-b", "main"]);
        std::fs::create_dir_all(root.join("platform-config/regions")).unwrap();
        std::fs::create_dir_all(root.join("infra/node-pool")).unwrap();
        std::fs::create_dir_all(root.join("docs")).unwrap();
        std::fs::write(root.join("platform-config/regions/jp.yaml"), "name: jp\n").unwrap();
        std::fs::write(root.join("infra/node-pool/jp.tfvars"), "region = \"jp\"\n").unwrap();
        std::fs::write(root.join("infra/main.tf"), "# not config\n").unwrap();
        std::fs::write(root.join("docs/readme.md"), "docs\n").unwrap();
        std::os::unix::fs::symlink(
            "../../../etc/passwd",
            root.join("platform-config/evil.yaml"),
        )
        .unwrap();
        std::fs::write(root.join("platform-config/big.yaml"), vec![b'#'; 2 << 20]).unwrap();
        git(root, &["add", "-A"]);
        git(root, &["commit", "-q", "-m", "first"]);
        dir
    }

    #[test]
    fn reads_config_files_links_and_oversized_blobs_from_a_commit() {
        let work = work_repo();
        let data = tempfile::tempdir().unwrap();
        let mirror = Mirror::open_or_init(
            &data.path().join("mirror"),
            work.path().to_str().unwrap(),
            "main",
        )
        .unwrap();
        let head = mirror.fetch().unwrap();
        assert_eq!(mirror.head(), Some(head));
        let files = mirror.config_tree(head).unwrap();
        let summary: Vec<(String, String)> = files
            .iter()
            .map(|f| {
                let what = match &f.content {
                    FileContent::Bytes(b) => format!("{} bytes", b.len()),
                    FileContent::Symlink(t) => format!("-> {t}"),
                    FileContent::Oversized(n) => format!("oversized {n}"),
                };
                (f.path.clone(), what)
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "infra/node-pool/jp.tfvars".to_owned(),
                    "14 bytes".to_owned()
                ),
                (
                    "platform-config/big.yaml".to_owned(),
                    "oversized 2097152".to_owned()
                ),
                (
                    "platform-config/evil.yaml".to_owned(),
                    "-> ../../../etc/passwd".to_owned()
                ),
                (
                    "platform-config/regions/jp.yaml".to_owned(),
                    "9 bytes".to_owned()
                ),
            ]
        );
        let info = mirror.commit_info(head).unwrap();
        assert_eq!(info.summary, "first");
    }

    #[test]
    fn exports_trees_and_lists_changed_paths() {
        let work = work_repo();
        let data = tempfile::tempdir().unwrap();
        let mirror = Mirror::open_or_init(
            &data.path().join("m"),
            work.path().to_str().unwrap(),
            "main",
        )
        .unwrap();
        let first = mirror.fetch().unwrap();
        std::fs::write(
            work.path().join("infra/node-pool/jp.tfvars"),
            "region = \"jp\"\ndesired_nodes = 2\n",
        )
        .unwrap();
        git(work.path(), &["commit", "-qam", "two"]);
        let second = mirror.fetch().unwrap();
        assert_eq!(
            mirror.changed_paths(Some(first), second).unwrap(),
            ["infra/node-pool/jp.tfvars"]
        );
        assert!(mirror.changed_paths(None, second).unwrap().len() >= 5);
        let out = data.path().join("export");
        mirror.export(second, &out).unwrap();
        assert_eq!(
            std::fs::read_to_string(out.join("infra/node-pool/jp.tfvars")).unwrap(),
            "region = \"jp\"\ndesired_nodes = 2\n"
        );
        assert!(out.join("docs/readme.md").is_file());
    }

    #[test]
    fn reads_the_staged_config_files_not_the_work_tree() {
        let work = work_repo();
        let root = work.path();
        std::fs::write(
            root.join("platform-config/regions/jp.yaml"),
            "name: staged\n",
        )
        .unwrap();
        git(root, &["add", "platform-config/regions/jp.yaml"]);
        // Changed after staging: the index still holds "name: staged".
        std::fs::write(
            root.join("platform-config/regions/jp.yaml"),
            "name: unstaged\n",
        )
        .unwrap();
        std::fs::write(root.join("platform-config/regions/new.yaml"), "name: new\n").unwrap();
        git(
            root,
            &["add", "--intent-to-add", "platform-config/regions/new.yaml"],
        );
        git(root, &["rm", "-q", "--cached", "infra/node-pool/jp.tfvars"]);
        let repo = Repository::open(root).unwrap();
        let files = config_index(&repo).unwrap();
        let summary: Vec<(String, FileContent)> =
            files.into_iter().map(|f| (f.path, f.content)).collect();
        assert_eq!(
            summary,
            [
                (
                    "platform-config/big.yaml".to_owned(),
                    FileContent::Oversized(2 << 20)
                ),
                (
                    "platform-config/evil.yaml".to_owned(),
                    FileContent::Symlink("../../../etc/passwd".to_owned())
                ),
                (
                    "platform-config/regions/jp.yaml".to_owned(),
                    FileContent::Bytes(b"name: staged\n".to_vec())
                ),
            ]
        );
    }

    #[test]
    fn fetch_follows_new_commits_and_reports_missing_branches() {
        let work = work_repo();
        let data = tempfile::tempdir().unwrap();
        let url = work.path().to_str().unwrap();
        let mirror = Mirror::open_or_init(&data.path().join("m"), url, "main").unwrap();
        let first = mirror.fetch().unwrap();
        std::fs::write(
            work.path().join("platform-config/regions/sg.yaml"),
            "name: sg\n",
        )
        .unwrap();
        git(work.path(), &["add", "-A"]);
        git(work.path(), &["commit", "-q", "-m", "second"]);
        let second = mirror.fetch().unwrap();
        assert_ne!(first, second);
        assert_eq!(mirror.config_tree(second).unwrap().len(), 5);

        let missing = Mirror::open_or_init(&data.path().join("m2"), url, "nope").unwrap();
        let err = missing.fetch().unwrap_err().to_string();
        assert!(err.starts_with("branch `nope` not found in"), "{err}");
        let unreachable =
            Mirror::open_or_init(&data.path().join("m3"), "/nonexistent/repo", "main").unwrap();
        assert!(unreachable.fetch().is_err());
    }

    #[test]
    fn a_deleted_branch_is_reported_missing_not_served_from_the_stale_mirror() {
        let work = work_repo();
        let data = tempfile::tempdir().unwrap();
        let url = work.path().to_str().unwrap();
        git(work.path(), &["branch", "-q", "config"]);
        let mirror = Mirror::open_or_init(&data.path().join("m"), url, "config").unwrap();
        let first = mirror.fetch().unwrap();
        git(work.path(), &["branch", "-q", "-D", "config"]);
        let err = mirror.fetch().unwrap_err();
        assert!(
            matches!(err, GitError::NoSuchBranch { .. }),
            "a deleted branch must fail the fetch: {err}"
        );
        assert!(
            err.to_string().starts_with("branch `config` not found in"),
            "{err}"
        );
        // The objects of the last good commit stay readable.
        assert_eq!(mirror.config_tree(first).unwrap().len(), 4);
    }

    #[test]
    fn credentials_files_parse_match_by_host_and_path_and_never_print() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("creds");
        std::fs::write(
            &file,
            "# deploy keys\nhttps://deploy:p%40ss%3Aword@git.example.com/team\n\
             http://other:x@127.0.0.1:8080\n",
        )
        .unwrap();
        let entries = read_credentials(&file).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].username, "deploy");
        assert_eq!(entries[0].password, "p@ss:word");
        let url = |u: &str| CredentialTarget::parse(u).unwrap();
        assert!(entries[0].matches(&url("https://git.example.com/team/config.git")));
        assert!(!entries[0].matches(&url("https://git.example.com/other/config.git")));
        assert!(!entries[0].matches(&url("http://git.example.com/team/config.git")));
        assert!(entries[1].matches(&url("http://127.0.0.1:8080/x.git")));
        assert!(!format!("{entries:?}").contains("word"));

        let mirror = Mirror::open_or_init(
            &dir.path().join("m"),
            "https://git.example.com/team/config.git",
            "main",
        )
        .unwrap();
        let mirror = mirror.with_credentials_file(&file).unwrap();
        assert!(!format!("{mirror:?}").contains("word"));
        let elsewhere =
            Mirror::open_or_init(&dir.path().join("m2"), "https://elsewhere/x.git", "main")
                .unwrap();
        let err = elsewhere.with_credentials_file(&file).unwrap_err();
        assert!(
            err.to_string()
                .contains("no entry for https://elsewhere/x.git"),
            "{err}"
        );
        std::fs::write(&file, "https://nopassword@host\n").unwrap();
        let err = read_credentials(&file).unwrap_err().to_string();
        assert!(err.contains("line 1: expected"), "{err}");
        assert!(!err.contains("nopassword"), "{err}");
    }

    #[test]
    fn urls_in_errors_and_debug_output_carry_no_credentials() {
        let data = tempfile::tempdir().unwrap();
        // Nothing listens on port 9 of loopback: the fetch fails at once.
        let url = "http://deploy:SECRET-PW@127.0.0.1:9/x.git?token=SECRET-TK";
        let mirror = Mirror::open_or_init(&data.path().join("m"), url, "main").unwrap();
        let err = mirror.fetch().unwrap_err();
        for text in [err.to_string(), format!("{err:?}"), format!("{mirror:?}")] {
            assert!(!text.contains("SECRET"), "{text}");
        }
        assert!(
            err.to_string().contains("http://***@127.0.0.1:9/x.git"),
            "{err}"
        );
    }
}

/// Who the control plane commits as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Author {
    pub name: String,
    pub email: String,
}

/// The outcome of [`Mirror::commit_file_and_push`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// A new commit is on the remote branch.
    Commit {
        sha: String,
        attempts: u32,
        /// The push options were dropped: the remote does not take push
        /// options (`receive.advertisePushOptions` is off), so its hooks
        /// could not see them.
        options_dropped: bool,
    },
    /// The file already had the wanted content at the branch head.
    Unchanged { head: String },
}

/// Why a commit could not be pushed.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error("{path}: {message}")]
    Edit { path: String, message: String },
    #[error("writing the commit: {0}")]
    Write(git2::Error),
    #[error("the remote rejected the push of {sha}:\n{stderr}")]
    Rejected { sha: String, stderr: String },
    #[error("the branch kept moving: gave up after {attempts} attempts")]
    Contended { attempts: u32 },
    #[error("cannot run `git push`: {0}")]
    Spawn(std::io::Error),
}

impl Mirror {
    /// Commits a change of one file on top of the remote branch and pushes it,
    /// never forcing. `edit` gets the file's current content (`None` when it
    /// does not exist) and returns the new content, or `Ok(None)` for "leave
    /// it". On a non-fast-forward rejection the branch is fetched again and
    /// the edit re-applied to the new head (a rebase of this one change), up
    /// to `max_attempts` times. The push goes through `git push`, so the
    /// remote's hooks (pre-receive validation) run as for any other push;
    /// `push_options` reach them (`GIT_PUSH_OPTION_<n>`). A remote that does
    /// not take push options gets the push without them
    /// ([`Pushed::Commit::options_dropped`]).
    pub fn commit_file_and_push(
        &self,
        path: &str,
        mut edit: impl FnMut(Option<&str>) -> Result<Option<String>, String>,
        message: &str,
        author: &Author,
        max_attempts: u32,
        push_options: &[String],
    ) -> Result<Pushed, PushError> {
        let mut options = push_options;
        for attempt in 1..=max_attempts.max(1) {
            let head = self.fetch()?;
            let current = read_text(&self.repo, head, path).map_err(PushError::Write)?;
            let new = match edit(current.as_deref()).map_err(|message| PushError::Edit {
                path: path.to_owned(),
                message,
            })? {
                Some(new) if current.as_deref() != Some(new.as_str()) => new,
                _ => {
                    return Ok(Pushed::Unchanged {
                        head: head.to_string(),
                    });
                }
            };
            let commit = write_commit(&self.repo, head, path, &new, message, author)
                .map_err(PushError::Write)?;
            let sha = commit.to_string();
            let mut output = self.push(&sha, options)?;
            if !output.status.success()
                && !options.is_empty()
                && String::from_utf8_lossy(&output.stderr).contains("does not support push options")
            {
                options = &[];
                output = self.push(&sha, options)?;
            }
            if output.status.success() {
                // Record what we pushed so `head()` reflects it before the next fetch.
                let _ = self
                    .repo
                    .reference(&self.tracking_ref(), commit, true, "neutral: pushed");
                return Ok(Pushed::Commit {
                    sha,
                    attempts: attempt,
                    options_dropped: options.len() < push_options.len(),
                });
            }
            let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
            let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
            let non_fast_forward = stdout.contains("[rejected]")
                && (stdout.contains("non-fast-forward") || stdout.contains("fetch first"))
                || stderr.contains("non-fast-forward")
                || stderr.contains("fetch first");
            if !non_fast_forward {
                return Err(PushError::Rejected {
                    sha,
                    stderr: redact(format!("{stdout}{stderr}").trim()).into_owned(),
                });
            }
        }
        Err(PushError::Contended {
            attempts: max_attempts.max(1),
        })
    }

    /// `git push` of `sha` to the branch, never forced, with `options`.
    fn push(&self, sha: &str, options: &[String]) -> Result<std::process::Output, PushError> {
        let mut push = std::process::Command::new("git");
        push.arg("--git-dir").arg(&self.path);
        if let Some(file) = &self.credentials_file {
            // The empty helper first clears helpers from other configs.
            push.args(["-c", "credential.helper="])
                .arg("-c")
                .arg(format!("credential.helper=store --file={}", file.display()));
        }
        push.args(["push", "--quiet", "--porcelain"]);
        for option in options {
            push.arg(format!("--push-option={option}"));
        }
        push.arg(&self.url)
            .arg(format!("{sha}:refs/heads/{}", self.branch))
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(PushError::Spawn)
    }

    /// The text of `path` at the remote branch's tip, fetched now; `None`
    /// when the file is not there.
    pub fn file_at_tip(&self, path: &str) -> Result<Option<String>, GitError> {
        let head = self.fetch()?;
        read_text(&self.repo, head, path).map_err(|source| GitError::Read {
            commit: head.to_string(),
            source,
        })
    }
}

/// The text of `path` at `commit`, `None` when absent.
fn read_text(repo: &Repository, commit: Oid, path: &str) -> Result<Option<String>, git2::Error> {
    let tree = repo.find_commit(commit)?.tree()?;
    let entry = match tree.get_path(Path::new(path)) {
        Ok(entry) => entry,
        Err(err) if err.code() == git2::ErrorCode::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let blob = repo.find_blob(entry.id())?;
    Ok(Some(String::from_utf8_lossy(blob.content()).into_owned()))
}

/// Writes a commit whose tree is `parent`'s with `path` set to `content`.
fn write_commit(
    repo: &Repository,
    parent: Oid,
    path: &str,
    content: &str,
    message: &str,
    author: &Author,
) -> Result<Oid, git2::Error> {
    let parent = repo.find_commit(parent)?;
    let blob = repo.blob(content.as_bytes())?;
    let components: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let tree = replace_in_tree(repo, Some(&parent.tree()?), &components, blob)?;
    let tree = repo.find_tree(tree)?;
    let signature = git2::Signature::now(&author.name, &author.email)?;
    repo.commit(None, &signature, &signature, message, &tree, &[&parent])
}

/// Rebuilds the trees along `components`, putting `blob` at the end.
fn replace_in_tree(
    repo: &Repository,
    tree: Option<&git2::Tree<'_>>,
    components: &[&str],
    blob: Oid,
) -> Result<Oid, git2::Error> {
    let mut builder = repo.treebuilder(tree)?;
    match components {
        [] => Err(git2::Error::from_str("empty path")),
        [name] => {
            builder.insert(name, blob, 0o100_644)?;
            builder.write()
        }
        [name, rest @ ..] => {
            let subtree = match tree.and_then(|t| t.get_name(name)) {
                Some(entry) if entry.kind() == Some(ObjectType::Tree) => {
                    Some(repo.find_tree(entry.id())?)
                }
                _ => None,
            };
            let child = replace_in_tree(repo, subtree.as_ref(), rest, blob)?;
            builder.insert(name, child, 0o040_000)?;
            builder.write()
        }
    }
}

#[cfg(test)]
mod push_tests {
    use super::*;
    use std::process::Command;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .current_dir(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "git {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    fn author() -> Author {
        Author {
            name: "neutral autoscaler".into(),
            email: "autoscaler@neutral.invalid".into(),
        }
    }

    /// A bare remote with one commit, and a clone people push from.
    fn remote() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().join("work");
        std::fs::create_dir_all(work.join("infra/node-pool")).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        std::fs::write(
            work.join("infra/node-pool/jp.tfvars"),
            "# jp\nregion = \"jp\"\ndesired_nodes = 1\n",
        )
        .unwrap();
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", "init"]);
        let bare = dir.path().join("remote.git");
        git(
            dir.path(),
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                bare.to_str().unwrap(),
            ],
        );
        git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
        (dir, work, bare)
    }

    fn bump(text: Option<&str>) -> Result<Option<String>, String> {
        Ok(Some(
            text.unwrap_or_default()
                .replace("desired_nodes = 1", "desired_nodes = 2"),
        ))
    }

    #[test]
    fn commits_one_file_keeping_the_rest_and_pushes() {
        let (dir, _work, bare) = remote();
        let mirror =
            Mirror::open_or_init(&dir.path().join("m"), bare.to_str().unwrap(), "main").unwrap();
        let pushed = mirror
            .commit_file_and_push(
                "infra/node-pool/jp.tfvars",
                bump,
                "autoscale(jp): 1 -> 2",
                &author(),
                3,
                &[],
            )
            .unwrap();
        let Pushed::Commit {
            sha,
            attempts,
            options_dropped,
        } = pushed
        else {
            panic!("{pushed:?}")
        };
        assert_eq!((attempts, options_dropped), (1, false));
        assert_eq!(git(&bare, &["rev-parse", "main"]), sha);
        assert_eq!(
            git(&bare, &["show", "main:infra/node-pool/jp.tfvars"]),
            "# jp\nregion = \"jp\"\ndesired_nodes = 2"
        );
        assert_eq!(
            git(&bare, &["log", "-1", "--format=%an <%ae>|%s", "main"]),
            "neutral autoscaler <autoscaler@neutral.invalid>|autoscale(jp): 1 -> 2"
        );
        // Nothing to do the second time.
        let again = mirror
            .commit_file_and_push(
                "infra/node-pool/jp.tfvars",
                bump,
                "again",
                &author(),
                3,
                &[],
            )
            .unwrap();
        assert!(matches!(again, Pushed::Unchanged { .. }), "{again:?}");
    }

    #[test]
    fn push_options_reach_the_remotes_hooks_and_are_dropped_where_it_takes_none() {
        let (dir, _work, bare) = remote();
        let seen = dir.path().join("seen");
        let hook = bare.join("hooks/pre-receive");
        std::fs::write(
            &hook,
            format!(
                "#!/bin/sh\necho \"${{GIT_PUSH_OPTION_COUNT:-unset}} ${{GIT_PUSH_OPTION_0:-}}\" >> {}\n",
                seen.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let mirror =
            Mirror::open_or_init(&dir.path().join("m"), bare.to_str().unwrap(), "main").unwrap();
        let options = ["neutral-leader-term=7".to_owned()];
        // The remote does not advertise push options yet: pushed without.
        let pushed = mirror
            .commit_file_and_push(
                "infra/node-pool/jp.tfvars",
                bump,
                "one",
                &author(),
                3,
                &options,
            )
            .unwrap();
        assert!(
            matches!(
                pushed,
                Pushed::Commit {
                    options_dropped: true,
                    ..
                }
            ),
            "{pushed:?}"
        );
        git(&bare, &["config", "receive.advertisePushOptions", "true"]);
        let pushed = mirror
            .commit_file_and_push(
                "infra/node-pool/jp.tfvars",
                |text| Ok(text.map(|t| t.replace("desired_nodes = 2", "desired_nodes = 3"))),
                "two",
                &author(),
                3,
                &options,
            )
            .unwrap();
        assert!(
            matches!(
                pushed,
                Pushed::Commit {
                    options_dropped: false,
                    ..
                }
            ),
            "{pushed:?}"
        );
        assert_eq!(
            std::fs::read_to_string(&seen).unwrap(),
            "0 \n1 neutral-leader-term=7\n"
        );
        assert_eq!(
            mirror
                .file_at_tip("infra/node-pool/jp.tfvars")
                .unwrap()
                .as_deref(),
            Some("# jp\nregion = \"jp\"\ndesired_nodes = 3\n")
        );
        assert_eq!(mirror.file_at_tip("nowhere").unwrap(), None);
    }

    #[test]
    fn a_moved_branch_is_fetched_and_the_edit_reapplied_never_forced() {
        let (dir, work, bare) = remote();
        let mirror =
            Mirror::open_or_init(&dir.path().join("m"), bare.to_str().unwrap(), "main").unwrap();
        let mut calls = 0;
        let pushed = mirror
            .commit_file_and_push(
                "infra/node-pool/jp.tfvars",
                |text| {
                    calls += 1;
                    if calls == 1 {
                        // Someone else pushes between our fetch and our push.
                        std::fs::write(work.join("README.md"), "hello\n").unwrap();
                        git(&work, &["add", "-A"]);
                        git(&work, &["commit", "-q", "-m", "docs"]);
                        git(&work, &["push", "-q", "origin", "main"]);
                    }
                    bump(text)
                },
                "autoscale(jp): 1 -> 2",
                &author(),
                3,
                &[],
            )
            .unwrap();
        assert!(
            matches!(pushed, Pushed::Commit { attempts: 2, .. }),
            "{pushed:?}"
        );
        assert_eq!(
            git(&bare, &["log", "--format=%s", "main"]),
            "autoscale(jp): 1 -> 2\ndocs\ninit"
        );
    }

    #[test]
    fn a_hook_rejection_is_reported_with_its_message() {
        let (dir, _work, bare) = remote();
        let hook = bare.join("hooks/pre-receive");
        std::fs::write(
            &hook,
            "#!/bin/sh\necho 'infra/node-pool/jp.tfvars:3:17: error: too many' >&2\nexit 1\n",
        )
        .unwrap();
        Command::new("chmod").arg("+x").arg(&hook).status().unwrap();
        let mirror =
            Mirror::open_or_init(&dir.path().join("m"), bare.to_str().unwrap(), "main").unwrap();
        let err = mirror
            .commit_file_and_push("infra/node-pool/jp.tfvars", bump, "x", &author(), 3, &[])
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("jp.tfvars:3:17: error: too many"), "{text}");
    }
}
