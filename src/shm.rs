//! Shared-memory segments: creating, sizing, reserving and mapping the files under the store's
//! shared-memory directory (`/dev/shm` by default).
//!
//! Segments are plain files in a tmpfs directory rather than `shm_open` names so that a store can
//! be pointed at another directory (tests, hugetlbfs) and so that Plasma clients can be handed
//! their file descriptors. Every segment is created with mode 0600 (owner only) and reserved
//! with `fallocate`, so that running out of `/dev/shm` is an error at creation time and never a
//! `SIGBUS` on first touch.

use crate::error::{Error, Result};
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{self, FallocateFlags, Mode, OFlags};
use rustix::mm::{self, MapFlags, ProtFlags};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;

/// File name of the control segment of `store`.
pub fn ctl_name(store: &str) -> String {
    format!("cidcache.{store}.ctl")
}

/// File name of data segment `id` of `store`.
pub fn data_name(store: &str, id: u64) -> String {
    format!("cidcache.{store}.d{id}")
}

/// File name of the lease page of client `id` of `store`.
pub fn lease_name(store: &str, id: u64) -> String {
    format!("cidcache.{store}.l{id}")
}

/// File name of the lock of `store` (held by its coordinator; see `docs/operations.md`).
pub fn lock_name(store: &str) -> String {
    format!("cidcache.{store}.lock")
}

/// Prefix shared by every file of `store` in the shared-memory directory.
pub fn store_prefix(store: &str) -> String {
    format!("cidcache.{store}.")
}

/// Access wanted for a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// `PROT_READ` over a file opened read-only: the process cannot change what others see.
    ReadOnly,
    /// `PROT_READ | PROT_WRITE`, `MAP_SHARED`.
    ReadWrite,
}

/// An owned memory mapping of a whole segment file. Unmapped on drop.
///
/// The mapping itself is `Send + Sync`: it is only an address range; what may be done with the
/// bytes (and how concurrent access is ordered) is the business of the layout that uses it.
pub struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: a mapping is an address range owned by this value; sharing the range between threads
// is sound, and every access to the bytes goes through atomics or immutable (sealed) data.
unsafe impl Send for Mapping {}
// SAFETY: see above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` from offset 0, shared.
    pub fn map(fd: impl AsFd, len: usize, access: Access, populate: bool) -> Result<Mapping> {
        if len == 0 {
            return Err(Error::InvalidArgument("cannot map an empty segment".into()));
        }
        let prot = match access {
            Access::ReadOnly => ProtFlags::READ,
            Access::ReadWrite => ProtFlags::READ | ProtFlags::WRITE,
        };
        let mut flags = MapFlags::SHARED;
        if populate {
            flags |= MapFlags::POPULATE;
        }
        // SAFETY: we request a fresh mapping at a kernel-chosen address (no MAP_FIXED), so no
        // existing memory is replaced; the result is owned by the returned value.
        let ptr = unsafe { mm::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) }
            .map_err(|e| Error::io("mmap of a shared-memory segment failed", e))?;
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| Error::Internal("mmap returned a null pointer".into()))?;
        Ok(Mapping { ptr, len })
    }

    /// Base address of the mapping.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: empty mappings cannot be created.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: ptr/len describe exactly the mapping created in `map`, and it is unmapped once.
        let _ = unsafe { mm::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Creates a new segment file `dir/name` (failing if it exists), sizes it to `len` bytes and
/// reserves its memory, so later touches never fault with `SIGBUS`.
pub fn create_segment(dir: &Path, name: &str, len: u64, mode: u32) -> Result<OwnedFd> {
    let path = dir.join(name);
    // O_EXCL never follows a link and never opens what someone else created.
    let fd = fs::open(
        &path,
        OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
    .map_err(|e| match fs::lstat(&path) {
        Ok(st)
            if e == rustix::io::Errno::EXIST
                && st.st_uid != rustix::process::geteuid().as_raw() =>
        {
            Error::PermissionDenied(format!(
                "cannot create segment {}: the name is taken by uid {}, not this user; another \
                 user squats this store's names: remove the file (as that user or root) or \
                 choose another --store",
                path.display(),
                st.st_uid
            ))
        }
        _ => Error::io(format!("cannot create segment {}", path.display()), e),
    })?;
    // The umask applied to the mode above; the store's mode (0660 for a group) is meant.
    if let Err(e) = fs::fchmod(&fd, Mode::from_raw_mode(mode)) {
        let _ = fs::unlink(&path);
        return Err(Error::io(
            format!("cannot set the mode of {}", path.display()),
            e,
        ));
    }
    let reserve = fs::fallocate(&fd, FallocateFlags::empty(), 0, len);
    if let Err(e) = reserve {
        let _ = fs::unlink(&path);
        return Err(if e == rustix::io::Errno::NOSPC {
            Error::StoreFull(format!(
                "{} has no room for a {} segment: free space in it, or lower the memory limit",
                dir.display(),
                human_bytes(len)
            ))
        } else if e == rustix::io::Errno::OPNOTSUPP {
            // Not every filesystem supports fallocate; fall back to a plain size.
            match fs::ftruncate(&fd, len) {
                Ok(()) => return Ok(fd),
                Err(e2) => {
                    let _ = fs::unlink(&path);
                    Error::io(format!("cannot size segment {}", path.display()), e2)
                }
            }
        } else {
            Error::io(format!("cannot reserve segment {}", path.display()), e)
        });
    }
    Ok(fd)
}

/// Opens an existing segment file for mapping.
pub fn open_segment(dir: &Path, name: &str, access: Access) -> Result<(OwnedFd, u64)> {
    let path = dir.join(name);
    let flags = match access {
        Access::ReadOnly => OFlags::RDONLY,
        Access::ReadWrite => OFlags::RDWR,
    } | OFlags::CLOEXEC
        | OFlags::NOFOLLOW;
    let fd = fs::open(&path, flags, Mode::empty())
        .map_err(|e| Error::io(format!("cannot open segment {}", path.display()), e))?;
    let st = fs::fstat(&fd)
        .map_err(|e| Error::io(format!("cannot stat segment {}", path.display()), e))?;
    Ok((fd, st.st_size as u64))
}

/// Removes a segment file; a file that is already gone is not an error.
pub fn unlink_segment(dir: &Path, name: &str) {
    let _ = fs::unlink(dir.join(name));
}

/// Removes every file of `store` in `dir` (left behind by a coordinator that died).
/// Returns the names removed.
pub fn remove_store_files(dir: &Path, store: &str) -> Vec<PathBuf> {
    let prefix = store_prefix(store);
    let mut removed = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.starts_with(&prefix) && std::fs::remove_file(e.path()).is_ok() {
                removed.push(e.path());
            }
        }
    }
    removed
}

/// Free bytes in the filesystem holding `dir` (for the start-up check of `/dev/shm`).
pub fn free_bytes(dir: &Path) -> Result<u64> {
    let st =
        fs::statvfs(dir).map_err(|e| Error::io(format!("cannot statvfs {}", dir.display()), e))?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Formats a byte count for messages (`1.5 GiB`).
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Parses a byte size with an optional binary suffix (`64M`, `1GiB`, `4096`).
pub fn parse_bytes(s: &str) -> std::result::Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (examples: 4096, 64M, 2G)"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return Err(format!("{s:?}: unknown size unit (use K, M, G or T)")),
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes("64M").unwrap(), 64 << 20);
        assert_eq!(parse_bytes("2GiB").unwrap(), 2 << 30);
        assert!(parse_bytes("1X").is_err());
        assert!(parse_bytes("").is_err());
    }

    #[test]
    fn create_map_and_remove() {
        let dir = tempfile::tempdir().unwrap();
        let fd = create_segment(dir.path(), "cidcache.t.d1", 1 << 16, 0o600).unwrap();
        let m = Mapping::map(&fd, 1 << 16, Access::ReadWrite, true).unwrap();
        // SAFETY: the mapping is 64 KiB and writable.
        unsafe { m.as_ptr().write(7) };
        let (fd2, len) = open_segment(dir.path(), "cidcache.t.d1", Access::ReadOnly).unwrap();
        assert_eq!(len, 1 << 16);
        let r = Mapping::map(&fd2, 1 << 16, Access::ReadOnly, false).unwrap();
        // SAFETY: the mapping is 64 KiB and readable.
        assert_eq!(unsafe { r.as_ptr().read() }, 7);
        assert!(create_segment(dir.path(), "cidcache.t.d1", 1, 0o600).is_err());
        assert_eq!(remove_store_files(dir.path(), "t").len(), 1);
    }
}
