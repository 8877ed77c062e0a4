//! What a coordinator finds of its store in the shared-memory directory at start, and taking
//! it over after a crash.
//!
//! The store's lock is held before any of this runs, so whatever carries the store's name was
//! left by a previous coordinator of the same store that is gone. Every name is checked first:
//! one that is a link, or belongs to another user, stops the start with an error naming it
//! (a squatter could otherwise feed us a file of its choice).
//!
//! Adoption keeps the control segment where it is (clients of the previous coordinator
//! still map it): the run token is cleared first, so that those clients stop using it (see
//! `layout::token_current`), then the header is validated, the data segments in its table
//! are mapped, and the index is walked once (`IndexWriter::adopt`), keeping every entry that
//! lies inside a mapped segment and overlaps no other. The rest is removed with a log line.

use super::paths;
use crate::error::{Error, Result};
use crate::layout::{self, hdr, Geometry, Header};
use crate::pins::Lease;
use crate::shm::{self, Access, Mapping};
use crate::sync::AtomicU64;
use rustix::fd::OwnedFd;
use rustix::fs::FlockOperation;
use std::path::Path;

/// The files of a store found in the shared-memory directory (the lock file excluded).
#[derive(Debug, Default)]
pub(crate) struct Survey {
    pub ctl: bool,
    pub data: Vec<u64>,
    pub leases: Vec<u64>,
    /// Names with the store's prefix that no coordinator creates.
    pub other: Vec<String>,
}

impl Survey {
    /// True when the store left nothing.
    pub(crate) fn is_empty(&self) -> bool {
        !self.ctl && self.data.is_empty() && self.leases.is_empty() && self.other.is_empty()
    }

    /// Every name found.
    pub(crate) fn names(&self, store: &str) -> Vec<String> {
        let mut v: Vec<String> = self.other.clone();
        if self.ctl {
            v.push(shm::ctl_name(store));
        }
        v.extend(self.data.iter().map(|&id| shm::data_name(store, id)));
        v.extend(self.leases.iter().map(|&id| shm::lease_name(store, id)));
        v
    }

    /// Removes every file found (the store is ours: we hold its lock).
    pub(crate) fn remove_all(&self, dir: &Path, store: &str) -> usize {
        let names = self.names(store);
        for n in &names {
            shm::unlink_segment(dir, n);
        }
        names.len()
    }
}

/// Lists the files of `store` in `dir` without following links, and refuses any that is not a
/// regular file of this user.
pub(crate) fn survey(dir: &Path, store: &str) -> Result<Survey> {
    let prefix = shm::store_prefix(store);
    let lock = paths::lock_name(store);
    let mut s = Survey::default();
    let rd = std::fs::read_dir(dir)
        .map_err(|e| Error::io(format!("cannot list {}", dir.display()), e))?;
    for e in rd.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        if name == lock {
            continue;
        }
        paths::check_shm_entry(&e.path())?;
        let num = |p: &str| rest.strip_prefix(p).and_then(|n| n.parse::<u64>().ok());
        if rest == "ctl" {
            s.ctl = true;
        } else if let Some(id) = num("d") {
            s.data.push(id);
        } else if let Some(id) = num("l") {
            s.leases.push(id);
        } else {
            s.other.push(name.to_string());
        }
    }
    s.data.sort_unstable();
    s.leases.sort_unstable();
    Ok(s)
}

/// A control segment that passed validation, with its run token cleared.
pub(crate) struct Control {
    pub map: Mapping,
    pub geometry: Geometry,
}

fn header_of(map: &Mapping) -> Header<'_> {
    // SAFETY: the mapping is at least HEADER_BYTES long (checked by the callers) and
    // page-aligned; the header words are naturally aligned atomics.
    Header::new(unsafe { std::slice::from_raw_parts(map.as_ptr() as *const AtomicU64, hdr::COUNT) })
}

/// Opens the control segment a previous coordinator left and validates its header: magic,
/// layout version, hash seed, and a geometry whose offsets and total size are exactly what
/// this version computes for it, matching the file; it gets `mode`. On success the run token is cleared and
/// fenced (clients of the previous coordinator stop using the segment before anything in it
/// changes); on failure the reason.
pub(crate) fn open_control(
    dir: &Path,
    store: &str,
    mode: u32,
) -> std::result::Result<Control, String> {
    let name = shm::ctl_name(store);
    let (fd, len) = shm::open_segment(dir, &name, Access::ReadWrite).map_err(|e| e.to_string())?;
    // The store's mode now (a store restarted with or without --group), whatever the umask.
    rustix::fs::fchmod(&fd, rustix::fs::Mode::from_raw_mode(mode))
        .map_err(|e| format!("cannot set its mode: {e}"))?;
    if len < layout::HEADER_BYTES as u64 || len > isize::MAX as u64 {
        return Err(format!(
            "its size ({len} bytes) is not that of a control segment"
        ));
    }
    let map =
        Mapping::map(&fd, len as usize, Access::ReadWrite, true).map_err(|e| e.to_string())?;
    let h = header_of(&map);
    if h.get(hdr::MAGIC) != layout::MAGIC {
        return Err("it has no cidcache magic (the coordinator died while creating it)".into());
    }
    if h.get(hdr::VERSION) != layout::LAYOUT_VERSION {
        return Err(format!(
            "its layout version is {}, this coordinator's {}",
            h.get(hdr::VERSION),
            layout::LAYOUT_VERSION
        ));
    }
    if h.get(hdr::HASH_SEED) != layout::HASH_SEED {
        return Err("its hash seed is not cidcache's".into());
    }
    let g = Geometry {
        index_capacity: h.get(hdr::INDEX_CAPACITY),
        seg_len: h.get(hdr::SEG_LEN),
    };
    let sane = g.index_capacity.is_power_of_two()
        && g.index_capacity <= 1 << 32
        && g.seg_len.is_power_of_two()
        && g.seg_len <= 1 << 20;
    if !sane
        || h.get(hdr::SEG_OFFSET) != g.seg_offset()
        || h.get(hdr::INDEX_OFFSET) != g.index_offset()
        || h.get(hdr::TOTAL_SIZE) != g.total_size()
        || g.total_size() != len
    {
        return Err(format!(
            "its geometry is inconsistent (capacity {}, segment table {}, size {len})",
            g.index_capacity, g.seg_len
        ));
    }
    h.set(hdr::RUN_TOKEN, 0);
    crate::sync::fence(crate::sync::Ordering::SeqCst);
    Ok(Control { map, geometry: g })
}

/// Tells the clients of a control segment that will not be adopted that it is dead (run token
/// cleared, state stopped), so they answer `Disconnected` instead of reading an index nobody
/// maintains. Best effort: a segment without the magic has no client.
pub(crate) fn retire_control(dir: &Path, store: &str) {
    let Ok((fd, len)) = shm::open_segment(dir, &shm::ctl_name(store), Access::ReadWrite) else {
        return;
    };
    if len < layout::HEADER_BYTES as u64 {
        return;
    }
    let Ok(map) = Mapping::map(&fd, layout::HEADER_BYTES, Access::ReadWrite, false) else {
        return;
    };
    let h = header_of(&map);
    if h.get(hdr::MAGIC) == layout::MAGIC {
        h.set(hdr::RUN_TOKEN, 0);
        h.set(hdr::STATE, layout::STATE_STOPPED);
    }
}

/// The lease page of a client of the previous coordinator whose process still holds it (the
/// client library keeps a shared `flock` on it for as long as anything of that connection
/// lives). Its pins are honoured and the adopted arenas' free space is held back until it goes.
pub(crate) struct Orphan {
    pub name: String,
    pub fd: OwnedFd,
    pub map: Mapping,
    /// The client id the page was created for (from its name).
    pub id: u64,
    /// Its pin and hit-ring sizes, read from its header once at adoption (within the page);
    /// later reads check the header against them, as for a live client's page.
    pub pins: usize,
    pub hits: usize,
}

impl Orphan {
    /// The page's words, for [`Lease::with_sizes`].
    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: the mapping is the whole page (a multiple of 8 bytes, page-aligned), alive
        // as long as `self`; its client may still write it, so it is read with atomic loads
        // only.
        unsafe {
            std::slice::from_raw_parts(self.map.as_ptr() as *const AtomicU64, self.map.len() / 8)
        }
    }

    /// Checks the page as the coordinator checks a live client's ([`Lease::check_header`],
    /// [`Lease::collect_pins_checked`]) and appends its pins to `out`; on failure `out` is
    /// left as it was.
    pub(crate) fn collect_pins(
        &self,
        slots: u32,
        out: &mut Vec<u64>,
    ) -> std::result::Result<(), String> {
        let mark = out.len();
        let Some(l) = Lease::with_sizes(self.words(), self.pins, self.hits) else {
            return Err("its page is too small for its sizes".into());
        };
        let r = l
            .check_header(self.id)
            .and_then(|()| l.collect_pins_checked(slots, out));
        r.map_err(|f| {
            out.truncate(mark);
            f.to_string()
        })
    }

    /// Whether the client process still holds the page.
    pub(crate) fn held(&self) -> bool {
        match rustix::fs::flock(&self.fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                let _ = rustix::fs::flock(&self.fd, FlockOperation::Unlock);
                false
            }
            Err(_) => true,
        }
    }
}

/// Sorts the lease pages left by the previous coordinator: pages nobody holds are removed;
/// held ones are returned as orphans (mapped read-only). A page that cannot be opened or mapped,
/// or whose header is not what a coordinator writes for that client (the page is hostile input:
/// its client may have written anything), is removed: its pins count for nothing.
pub(crate) fn classify_leases(dir: &Path, store: &str, ids: &[u64]) -> (Vec<Orphan>, usize) {
    let mut orphans = Vec::new();
    let mut removed = 0;
    for &id in ids {
        let name = shm::lease_name(store, id);
        let orphan = shm::open_segment(dir, &name, Access::ReadOnly)
            .ok()
            .filter(|(_, len)| *len >= 64 && len.is_multiple_of(8) && *len <= 1 << 30)
            .and_then(|(fd, len)| {
                let map = Mapping::map(&fd, len as usize, Access::ReadOnly, false).ok()?;
                let mut o = Orphan {
                    name: name.clone(),
                    fd,
                    map,
                    id,
                    pins: 0,
                    hits: 0,
                };
                // Sizes from the header, bounded by the page (`Lease::new` checks they fit).
                let (pins, hits) = {
                    let l = Lease::new(o.words())?;
                    l.check_header(id).ok()?;
                    (l.capacity(), l.hit_capacity())
                };
                (o.pins, o.hits) = (pins, hits);
                Some(o)
            })
            .filter(|o| o.held());
        match orphan {
            Some(o) => orphans.push(o),
            None => {
                shm::unlink_segment(dir, &name);
                removed += 1;
            }
        }
    }
    (orphans, removed)
}
