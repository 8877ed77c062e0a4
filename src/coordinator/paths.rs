//! Paths another local user could prepare in advance: the socket directory (its fallback
//! `/tmp/cidcache-$UID` is predictable), the store's lock and segment names in the shared
//! `/dev/shm`, the data directory. Each is created without following a link, and an existing
//! one is used only when it is a real directory or file owned by this user; anything else is
//! refused with an error that names the path and its owner.
//!
//! The store's lock lives beside its segments (`SHM_DIR/cidcache.NAME.lock`), so that one store
//! name has one owner on the machine whatever socket or runtime directory each daemon was
//! given: the lock is what makes removing or adopting the segments found at start safe.

use crate::error::{Error, Result};
use rustix::fd::OwnedFd;
use rustix::fs::{self, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use std::path::{Path, PathBuf};

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Why `path` cannot be used: another user owns it, or it is not what it should be.
fn refused(path: &Path, what: &str, st: Option<&fs::Stat>) -> Error {
    match st {
        Some(st) if st.st_uid != euid() => Error::PermissionDenied(format!(
            "{} belongs to uid {}, not to this user (uid {}): another user prepared it, so it is \
             not used; remove it (as that user or root) or choose another path",
            path.display(),
            st.st_uid,
            euid()
        )),
        _ => Error::PermissionDenied(format!(
            "{} is {what}; it is not used: remove it or choose another path",
            path.display()
        )),
    }
}

fn kind(st: &fs::Stat) -> &'static str {
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Symlink => "a symbolic link",
        FileType::Directory => "a directory",
        FileType::RegularFile => "a regular file",
        _ => "a special file",
    }
}

/// Checks that `st` (of `path`) is a `want` owned by this user.
fn check_owned(path: &Path, st: &fs::Stat, want: FileType) -> Result<()> {
    if st.st_uid != euid() {
        return Err(refused(path, "", Some(st)));
    }
    if FileType::from_raw_mode(st.st_mode) != want {
        return Err(refused(path, kind(st), Some(st)));
    }
    Ok(())
}

/// Creates directory `dir` (its parents as needed) or uses the existing one, which must be a
/// real directory (not a link) owned by this user, and given exactly `mode`. Parents are not checked: they are the user's own (`$XDG_RUNTIME_DIR`,
/// `$HOME`) or `/tmp`, whose sticky bit keeps others from replacing our entry.
pub(crate) fn secure_dir(dir: &Path, mode: u32) -> Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            std::fs::create_dir_all(parent)
                .map_err(|e| Error::io(format!("cannot create {}", parent.display()), e))?;
        }
    }
    match fs::mkdir(dir, Mode::from_raw_mode(mode)) {
        Ok(()) | Err(Errno::EXIST) => {}
        Err(e) => return Err(Error::io(format!("cannot create {}", dir.display()), e)),
    }
    let fd = match fs::open(
        dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            let st = fs::lstat(dir).ok();
            return Err(match (&st, e) {
                (Some(s), Errno::LOOP | Errno::NOTDIR) => refused(dir, kind(s), st.as_ref()),
                _ => Error::io(format!("cannot open {}", dir.display()), e),
            });
        }
    };
    let st = fs::fstat(&fd).map_err(|e| Error::io(format!("cannot stat {}", dir.display()), e))?;
    check_owned(dir, &st, FileType::Directory)?;
    let have = st.st_mode & 0o7777;
    if have & 0o777 != mode {
        // Group or other write access means someone else may have put files in it.
        if have & !mode & 0o022 != 0 {
            tracing::warn!(
                "{} had mode {have:o}; setting it to {mode:o}",
                dir.display()
            );
        }
        // Exactly `mode`: bits beyond it are removed, and a group store's directory gets the
        // group's search bit it needs (0710).
        fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io(format!("cannot chmod {}", dir.display()), e))?;
    }
    Ok(())
}

/// Checks an entry of the shared-memory directory found by name: a regular file of this user.
pub(crate) fn check_shm_entry(path: &Path) -> Result<()> {
    let st =
        fs::lstat(path).map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
    check_owned(path, &st, FileType::RegularFile)
}

/// The store's lock, held for the life of the coordinator. `/dev/shm/cidcache.NAME.lock`
/// (`flock`, exclusive) records the owner's pid.
pub(crate) struct StoreLock {
    fd: OwnedFd,
    path: PathBuf,
}

pub(crate) use crate::shm::lock_name;

impl StoreLock {
    /// Takes the lock of `store` in `shm_dir`, or fails with [`Error::AlreadyRunning`] naming
    /// the owner's pid. A lock file that is a link or belongs to another user is refused.
    pub(crate) fn take(shm_dir: &Path, store: &str) -> Result<StoreLock> {
        let path = shm_dir.join(lock_name(store));
        // The file may be unlinked by an owner that stops between our open and our flock: then
        // we hold a lock on a file nobody else will see, so check and try again.
        for _ in 0..100 {
            let fd = match fs::open(
                &path,
                OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            ) {
                Ok(fd) => fd,
                Err(e) => {
                    let st = fs::lstat(&path).ok();
                    return Err(match &st {
                        Some(s) if s.st_uid != euid() => refused(&path, "", st.as_ref()),
                        Some(s) if e == Errno::LOOP => refused(&path, kind(s), st.as_ref()),
                        _ => Error::io(format!("cannot open lock file {}", path.display()), e),
                    });
                }
            };
            let st = fs::fstat(&fd)
                .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
            check_owned(&path, &st, FileType::RegularFile)?;
            if fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).is_err() {
                let mut buf = [0u8; 32];
                let n = rustix::io::pread(&fd, &mut buf, 0).unwrap_or(0);
                let pid = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                return Err(Error::AlreadyRunning(format!(
                    "another cidcached (pid {}) already serves this store ({store:?}, lock {}); stop it first or choose another --store",
                    if pid.is_empty() { "unknown" } else { &pid },
                    path.display()
                )));
            }
            match fs::lstat(&path) {
                Ok(now) if now.st_dev == st.st_dev && now.st_ino == st.st_ino => {}
                _ => continue,
            }
            let _ = fs::ftruncate(&fd, 0);
            let pid = format!("{}\n", std::process::id());
            let _ = rustix::io::pwrite(&fd, pid.as_bytes(), 0);
            return Ok(StoreLock { fd, path });
        }
        Err(Error::AlreadyRunning(format!(
            "the lock {} keeps changing; another cidcached is starting or stopping",
            path.display()
        )))
    }

    /// Removes the lock file (while still holding the lock: a daemon that opened it meanwhile
    /// sees it unlinked and retries) and releases it.
    pub(crate) fn release(self) {
        let _ = fs::unlink(&self.path);
        drop(self.fd);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_names_the_owner() {
        let d = tempfile::tempdir().unwrap();
        let a = StoreLock::take(d.path(), "s").unwrap();
        let e = StoreLock::take(d.path(), "s").err().unwrap().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        a.release();
        StoreLock::take(d.path(), "s").unwrap().release();
    }

    #[test]
    fn links_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let target = d.path().join("victim");
        std::fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, d.path().join(lock_name("s"))).unwrap();
        let e = StoreLock::take(d.path(), "s").err().unwrap().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        let link = d.path().join("sockdir");
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        let e = secure_dir(&link, 0o700).unwrap_err().to_string();
        assert!(e.contains("symbolic link"), "{e}");
        let f = d.path().join("file");
        std::fs::write(&f, b"").unwrap();
        assert!(secure_dir(&f, 0o700).is_err());
    }

    #[test]
    fn directories_are_created_private_and_loose_ones_tightened() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b");
        secure_dir(&p, 0o700).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
        secure_dir(&p, 0o700).unwrap();
        let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(m, 0o700);
    }
}
