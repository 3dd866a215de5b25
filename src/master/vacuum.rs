//! Files the master makes for itself (the stats and metrics unix sockets,
//! the control FIFO) are removed when it exits, as uWSGI's `vacuum` does.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use tracing::debug;

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
        if let Err(error) = std::fs::remove_file(&self.path) {
            debug!(path = %self.path.display(), %error, "cannot remove");
        }
    }
}
