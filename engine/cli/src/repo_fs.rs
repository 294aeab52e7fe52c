//! Reads the configuration part of a repository from disk into the core's
//! `RepoFile` list. Symlinks are passed on as links (the core decides whether
//! they stay inside the repository); files over the core's size limit are not
//! read at all. This module never interprets file contents.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use neutral_core::config::{FileContent, MAX_FILE_BYTES, RepoFile};

/// Folders of a repository that hold configuration.
pub const CONFIG_DIRS: &[&str] = &["platform-config", "infra/node-pool"];

/// Collects every file below the configuration folders of `root`, sorted by
/// path. Fails when `root` is not a directory or holds none of the folders.
pub fn read_config_tree(root: &Path) -> Result<Vec<RepoFile>> {
    let meta = fs::metadata(root).with_context(|| format!("cannot read {}", root.display()))?;
    if !meta.is_dir() {
        bail!("{} is not a directory", root.display());
    }
    let mut files = Vec::new();
    let mut found_any = false;
    for dir in CONFIG_DIRS {
        let path = root.join(dir);
        match fs::symlink_metadata(&path) {
            Ok(m) if m.is_dir() => {
                found_any = true;
                walk(root, &path, &mut files)?;
            }
            Ok(_) => {
                found_any = true;
                files.push(read_entry(root, &path)?);
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(err).with_context(|| format!("cannot read {}", path.display())),
        }
    }
    if !found_any {
        bail!(
            "{} holds neither platform-config/ nor infra/node-pool/; is it a neutral repository?",
            root.display()
        );
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<RepoFile>) -> Result<()> {
    let mut stack: Vec<PathBuf> = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("cannot list {}", dir.display()))?;
            let path = entry.path();
            let kind = entry
                .file_type()
                .with_context(|| format!("cannot stat {}", path.display()))?;
            if kind.is_dir() {
                stack.push(path);
            } else {
                files.push(read_entry(root, &path)?);
            }
        }
    }
    Ok(())
}

fn read_entry(root: &Path, path: &Path) -> Result<RepoFile> {
    let relative = path
        .strip_prefix(root)
        .with_context(|| format!("{} is outside {}", path.display(), root.display()))?;
    let repo_path = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/");
    let meta =
        fs::symlink_metadata(path).with_context(|| format!("cannot stat {}", path.display()))?;
    let content = if meta.file_type().is_symlink() {
        let target =
            fs::read_link(path).with_context(|| format!("cannot read link {}", path.display()))?;
        FileContent::Symlink(target.to_string_lossy().into_owned())
    } else if meta.len() > MAX_FILE_BYTES {
        FileContent::Oversized(meta.len())
    } else {
        let mut bytes = Vec::new();
        fs::File::open(path)
            .and_then(|f| f.take(MAX_FILE_BYTES + 1).read_to_end(&mut bytes))
            .with_context(|| format!("cannot read {}", path.display()))?;
        FileContent::Bytes(bytes)
    };
    Ok(RepoFile {
        path: repo_path,
        content,
    })
}
