//! The Terraform policy before `plan`: reads the exported commit's
//! `infra/**`, `modules/**` and policy file from disk and hands them to the
//! core's checker (`neutral_core::policy::check`), the same one the
//! `pre-receive` hook runs — so a commit written into the repository without
//! the hooks still cannot run a provisioner or an unknown provider.
//!
//! This module owns reading the tree the way the hooks read a commit
//! (symbolic links passed on as links, never followed; files over the
//! core's size limit left unread; the runner's backend override skipped:
//! the runner rewrites it before every command). It must not judge anything
//! itself.

use std::path::Path;

use neutral_core::config::{FileContent, MAX_FILE_BYTES, RepoFile};
use neutral_core::diag::Diagnostic;
use neutral_core::policy::{POLICY_FILE, TERRAFORM_FOLDERS};

/// Folders deeper than this below `infra/` or `modules/` are not read
/// (a policy error names the first one).
const MAX_DEPTH: usize = 32;

/// The policy's findings on the exported tree at `tree`; `Err` when the
/// tree cannot be read.
pub fn check_tree(tree: &Path) -> std::io::Result<Vec<Diagnostic>> {
    let mut files = Vec::new();
    for folder in TERRAFORM_FOLDERS {
        let folder = folder.trim_end_matches('/');
        read_dir(tree, folder, 0, &mut files)?;
    }
    if let Some(file) = read_file(tree, POLICY_FILE)? {
        files.push(file);
    }
    Ok(neutral_core::policy::check(&files))
}

/// Whether `diagnostics` hold an error (the run must not go on).
pub fn refuses(diagnostics: &[Diagnostic]) -> bool {
    diagnostics.iter().any(Diagnostic::is_error)
}

fn read_dir(
    tree: &Path,
    relative: &str,
    depth: usize,
    files: &mut Vec<RepoFile>,
) -> std::io::Result<()> {
    let dir = tree.join(relative);
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => return Err(err),
    };
    let mut names: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    for name in names {
        let path = format!("{relative}/{name}");
        let meta = std::fs::symlink_metadata(tree.join(&path))?;
        if meta.is_dir() {
            if depth >= MAX_DEPTH {
                files.push(RepoFile {
                    path: format!("{path}/"),
                    content: FileContent::Symlink(format!(
                        "(a folder nested over {MAX_DEPTH} levels)"
                    )),
                });
                continue;
            }
            read_dir(tree, &path, depth + 1, files)?;
        } else if name == crate::runner::BACKEND_OVERRIDE {
            // The runner's own file, rewritten before every run.
            continue;
        } else if let Some(file) = read_file(tree, &path)? {
            files.push(file);
        }
    }
    Ok(())
}

fn read_file(tree: &Path, relative: &str) -> std::io::Result<Option<RepoFile>> {
    let full = tree.join(relative);
    let meta = match std::fs::symlink_metadata(&full) {
        Ok(meta) => meta,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(err),
    };
    let content = if meta.file_type().is_symlink() {
        FileContent::Symlink(std::fs::read_link(&full)?.to_string_lossy().into_owned())
    } else if meta.len() > MAX_FILE_BYTES {
        FileContent::Oversized(meta.len())
    } else if meta.is_file() {
        FileContent::Bytes(std::fs::read(&full)?)
    } else {
        return Ok(None);
    };
    Ok(Some(RepoFile {
        path: relative.to_owned(),
        content,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exported_tree_is_judged_like_a_pushed_commit() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("infra/gtm")).unwrap();
        std::fs::create_dir_all(root.join("modules/m")).unwrap();
        std::fs::write(
            root.join("infra/gtm/x.tf"),
            "resource \"terraform_data\" \"x\" {\n  provisioner \"local-exec\" {\n    command = \"env\"\n  }\n}\n",
        )
        .unwrap();
        std::fs::write(root.join("modules/m/ok.tf"), "locals {\n  a = 1\n}\n").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("modules/m/link.tf")).unwrap();
        std::fs::write(
            root.join("platform-config.tf"),
            "not judged: outside the folders",
        )
        .unwrap();
        // The runner's backend override (rewritten before every run).
        std::fs::write(
            root.join("infra/gtm").join(crate::runner::BACKEND_OVERRIDE),
            "terraform {\n  backend \"local\" {}\n}\n",
        )
        .unwrap();
        let found = check_tree(root).unwrap();
        assert!(refuses(&found));
        let text: Vec<String> = found.iter().map(ToString::to_string).collect();
        expect_test::expect![[r#"
            [
                "infra/gtm/x.tf:2:3: error: [provisioner] provisioner `local-exec` in resource `terraform_data`: provisioners run commands on the control plane's machine; not allowed",
                "modules/m/link.tf:1:1: error: [symlink] symbolic link to `/etc/passwd`: Terraform's folders may hold only regular files",
            ]
        "#]]
        .assert_debug_eq(&text);

        // The policy file is read from the tree too.
        std::fs::create_dir_all(root.join(".neutral")).unwrap();
        std::fs::write(root.join(POLICY_FILE), "providers: 3\n").unwrap();
        let found = check_tree(root).unwrap();
        assert!(
            found
                .iter()
                .any(|d| d.path == POLICY_FILE && d.message.contains("[policy]")),
            "{found:?}"
        );
    }

    #[test]
    fn a_tree_without_terraform_folders_passes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_tree(dir.path()).unwrap().is_empty());
    }
}
