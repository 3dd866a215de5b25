//! Files the master makes for itself (the stats and metrics unix sockets,
//! the control FIFO, the listening unix sockets, the pidfile) are removed
//! when it exits, as uWSGI's `vacuum` does.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tracing::{debug, warn};

/// A file the master made; removed on drop unless something else has
/// replaced it since (another instance's socket at the same path).
pub struct OwnedFile {
    path: PathBuf,
    identity: (u64, u64),
}

impl OwnedFile {
    /// Records the file now at `path` as the master's.
    pub fn record(path: &Path) -> Option<Self> {
        let metadata = std::fs::symlink_metadata(path).ok()?;
        Some(Self {
            path: path.to_owned(),
            identity: (metadata.dev(), metadata.ino()),
        })
    }
}

impl Drop for OwnedFile {
    fn drop(&mut self) {
        let unchanged = std::fs::symlink_metadata(&self.path)
            .is_ok_and(|metadata| (metadata.dev(), metadata.ino()) == self.identity);
        if !unchanged {
            debug!(path = %self.path.display(), "left in place: it is no longer the file mercy made");
            return;
        }
        remove_at_exit(&self.path);
    }
}

/// Removes a file the master made, at exit. A file that cannot be removed
/// is named in a warning: after --uid/--gid the master may no longer have
/// the right to remove what it made as root (uWSGI has the same limit).
pub fn remove_at_exit(path: &Path) {
    let error = match std::fs::remove_file(path) {
        Ok(()) => return,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return,
        Err(error) => error,
    };
    let hint = if error.kind() == std::io::ErrorKind::PermissionDenied {
        "; the master runs as the --uid/--gid user, who cannot remove a file \
         made before the privileges were dropped: remove it by hand, or give \
         that user write access to its folder"
    } else {
        "; remove it by hand"
    };
    warn!(path = %path.display(), %error, "cannot remove {} at exit: {error}{hint}", path.display());
}
