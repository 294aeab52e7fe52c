//! The agent's identity across restarts: node id and node token in a small
//! JSON file, readable by its owner only (mode 0600), replaced atomically.

use std::io::Write;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// State files larger than this are not ours.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// What the agent remembers about its registration.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub node_id: String,
    pub node_token: String,
    /// Region and address the id was granted for, so an operator reading the
    /// file knows what it belongs to.
    pub region: String,
    pub address: IpAddr,
    pub control_plane: String,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("node_id", &self.node_id)
            .field("node_token", &"<redacted>")
            .field("region", &self.region)
            .field("address", &self.address)
            .field("control_plane", &self.control_plane)
            .finish()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("reading state file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("state file {} is larger than {MAX_STATE_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("state file {} is not valid: {source}", path.display())]
    Invalid {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("writing state file {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Loads the identity; `Ok(None)` when the file does not exist yet.
pub fn load(path: &Path) -> Result<Option<Identity>, StateError> {
    let read_error = |source| StateError::Read {
        path: path.to_owned(),
        source,
    };
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(read_error(err)),
    };
    if metadata.len() > MAX_STATE_BYTES {
        return Err(StateError::TooLarge {
            path: path.to_owned(),
        });
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    serde_json::from_slice(&bytes)
        .map(Some)
        .map_err(|source| StateError::Invalid {
            path: path.to_owned(),
            source,
        })
}

/// Writes the identity: a private temporary file beside `path`, synced, then
/// renamed over it, so a crash leaves either the old or the new identity.
pub fn save(path: &Path, identity: &Identity) -> Result<(), StateError> {
    let write_error = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let json = serde_json::to_vec_pretty(identity).map_err(|source| StateError::Invalid {
        path: path.to_owned(),
        source,
    })?;
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| "agent-state".to_owned());
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let result = (|| {
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = private_file(&temporary)?;
        file.write_all(&json)?;
        file.write_all(b"\n")?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            // Persist the rename; not every filesystem lets a directory be synced.
            let _ = std::fs::File::open(dir).and_then(|dir| dir.sync_all());
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temporary);
    }
    result.map_err(write_error)
}

/// Removes the identity (the control plane no longer knows it).
pub fn forget(path: &Path) -> Result<(), StateError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(StateError::Write {
            path: path.to_owned(),
            source,
        }),
    }
}

#[cfg(unix)]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // The file may have existed with wider permissions.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(not(unix))]
fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::File::create(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(id: &str) -> Identity {
        Identity {
            node_id: id.into(),
            node_token: "secret-token".into(),
            region: "jp".into(),
            address: "127.0.0.2".parse().unwrap(),
            control_plane: "http://127.0.0.1:7400/".into(),
        }
    }

    #[test]
    fn identity_round_trips_through_a_private_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &identity("jp-1")).unwrap();
        assert_eq!(load(&path).unwrap(), Some(identity("jp-1")));
        save(&path, &identity("jp-2")).unwrap();
        assert_eq!(load(&path).unwrap(), Some(identity("jp-2")));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
        forget(&path).unwrap();
        assert_eq!(load(&path).unwrap(), None);
        forget(&path).unwrap();
    }

    #[test]
    fn corrupt_or_oversized_state_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.json");
        std::fs::write(&path, "{ not json").unwrap();
        let err = load(&path).unwrap_err();
        assert!(err.to_string().contains("agent.json"), "{err}");
        std::fs::write(&path, vec![b' '; 100_000]).unwrap();
        assert!(matches!(load(&path), Err(StateError::TooLarge { .. })));
    }

    #[test]
    fn the_token_is_never_in_debug_output() {
        assert!(!format!("{:?}", identity("jp-1")).contains("secret-token"));
    }

    #[test]
    fn saving_creates_a_missing_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing").join("agent.json");
        save(&path, &identity("jp-1")).unwrap();
        assert_eq!(load(&path).unwrap(), Some(identity("jp-1")));
    }

    #[test]
    fn saving_where_a_file_blocks_the_directory_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("blocker"), "").unwrap();
        let path = dir.path().join("blocker").join("agent.json");
        let err = save(&path, &identity("jp-1")).unwrap_err();
        assert!(matches!(err, StateError::Write { .. }));
        assert!(err.to_string().contains("blocker"), "{err}");
    }
}
