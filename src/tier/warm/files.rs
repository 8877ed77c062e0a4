//! Crash-safe file creation and quarantine for the warm tier.
//!
//! A file becomes visible under its final name only once its bytes are on disk: it is written
//! under `tmp/`, `fsync`ed, renamed into place, and the directory is `fsync`ed. A crash at any
//! point leaves either no file or a complete one (plus debris in `tmp/`, removed at start).

use crate::error::{Error, Result};
use std::fs::File;
use std::path::{Path, PathBuf};

/// The warm tier's directories under the store's data directory.
#[derive(Debug, Clone)]
pub(crate) struct Dirs {
    /// Completed data files.
    pub root: PathBuf,
    /// Files being written; emptied at start.
    pub tmp: PathBuf,
    /// Files that failed to read (truncated, corrupt, hostile), kept for inspection.
    pub quarantine: PathBuf,
}

impl Dirs {
    /// Creates (mode 0700) the directories of a warm tier rooted at `root`, and removes what an
    /// interrupted write left in `tmp/`.
    pub(crate) fn create(root: &Path) -> Result<Dirs> {
        let d = Dirs {
            root: root.to_path_buf(),
            tmp: root.join("tmp"),
            quarantine: root.join("quarantine"),
        };
        for p in [&d.root, &d.tmp, &d.quarantine] {
            std::fs::create_dir_all(p)
                .map_err(|e| Error::io(format!("cannot create {}", p.display()), e))?;
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700));
        }
        if let Ok(rd) = std::fs::read_dir(&d.tmp) {
            for e in rd.flatten() {
                let _ = std::fs::remove_file(e.path());
            }
        }
        Ok(d)
    }
}

/// `fsync`s a directory so that a rename or unlink inside it is durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|f| f.sync_all())
        .map_err(|e| Error::io(format!("cannot sync directory {}", dir.display()), e))
}

/// A file being written under `tmp/`; [`Staged::commit`] makes it durable under its final name,
/// dropping it without committing removes it.
pub(crate) struct Staged {
    tmp: PathBuf,
    done: bool,
}

impl Staged {
    /// Creates `tmp/NAME` (mode 0600) for writing.
    pub(crate) fn create(dirs: &Dirs, name: &str) -> Result<(Staged, File)> {
        let tmp = dirs.tmp.join(name);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode_0600()
            .open(&tmp)
            .map_err(|e| Error::io(format!("cannot create {}", tmp.display()), e))?;
        Ok((Staged { tmp, done: false }, f))
    }

    /// `fsync`s `file` (the one [`Staged::create`] returned), renames it to `dest` and `fsync`s
    /// the destination directory.
    pub(crate) fn commit(mut self, file: &File, dest: &Path) -> Result<()> {
        file.sync_all()
            .map_err(|e| Error::io(format!("cannot sync {}", self.tmp.display()), e))?;
        std::fs::rename(&self.tmp, dest).map_err(|e| {
            Error::io(
                format!("cannot rename {} to {}", self.tmp.display(), dest.display()),
                e,
            )
        })?;
        self.done = true;
        sync_dir(dest.parent().unwrap_or(Path::new(".")))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// Moves a file that failed to read into `quarantine/` (keeping its name) and logs why.
/// Returns the error to report to whoever asked for the data.
pub(crate) fn quarantine(dirs: &Dirs, path: &Path, why: &str) -> Error {
    let name = path.file_name().map(|n| n.to_owned()).unwrap_or_default();
    let dest = dirs.quarantine.join(&name);
    match std::fs::rename(path, &dest) {
        Ok(()) => {
            let _ = sync_dir(&dirs.root);
            tracing::error!(
                "warm tier: {} is unreadable ({why}); moved to {}",
                path.display(),
                dest.display()
            );
        }
        Err(e) => tracing::error!(
            "warm tier: {} is unreadable ({why}) and could not be quarantined: {e}",
            path.display()
        ),
    }
    Error::Corrupt(format!(
        "{} is unreadable ({why}); it was moved to {}",
        path.display(),
        dirs.quarantine.display()
    ))
}

/// Runs `f`, turning a panic inside a file decoder into an error: a hostile file must never take
/// the daemon down.
pub(crate) fn no_panic<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "decoder panicked".into());
            Err(Error::Corrupt(format!("{what}: {msg}")))
        }
    }
}

impl From<parquet::errors::ParquetError> for Error {
    fn from(e: parquet::errors::ParquetError) -> Self {
        Error::Corrupt(format!("parquet: {e}"))
    }
}
