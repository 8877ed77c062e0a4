//! Who may connect: the peer-credential check shared by the native and the Plasma socket.
//!
//! A socket file's mode is the first gate (0600, or 0660 for a `--group` store, set explicitly
//! so the umask does not matter); this is the second, checked on every accepted connection
//! from the kernel's record of the peer (`SO_PEERCRED`, `SO_PEERGROUPS`), which a client cannot
//! forge. Allowed: the daemon's own user, root, and for a group store any process whose primary
//! or supplementary groups include the daemon's group.

use rustix::fd::AsFd;

/// The rule applied to accepted connections. Cheap to copy; thread-safe.
#[derive(Debug, Clone, Copy)]
pub struct PeerPolicy {
    uid: u32,
    gid: u32,
    group: bool,
}

impl PeerPolicy {
    /// The daemon's own user (and root); with `group`, also members of the daemon's
    /// (effective) group.
    pub fn for_daemon(group: bool) -> PeerPolicy {
        PeerPolicy {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            group,
        }
    }

    /// Checks the peer of a connected Unix socket. `Err` says who was refused and why, for
    /// the log; the caller closes the connection.
    pub fn check(&self, sock: impl AsFd) -> Result<(), String> {
        let cred = rustix::net::sockopt::socket_peercred(&sock)
            .map_err(|e| format!("cannot read the peer's credentials: {e}"))?;
        let (uid, gid, pid) = (
            cred.uid.as_raw(),
            cred.gid.as_raw(),
            cred.pid.as_raw_nonzero().get(),
        );
        if uid == self.uid || uid == 0 {
            return Ok(());
        }
        if self.group && (gid == self.gid || peer_groups(&sock).contains(&self.gid)) {
            return Ok(());
        }
        Err(format!(
            "refused a connection from pid {pid} (uid {uid}, gid {gid}): only uid {}{} may connect",
            self.uid,
            if self.group {
                format!(" and members of group {}", self.gid)
            } else {
                " (start the daemon with --group to admit its group)".to_string()
            }
        ))
    }
}

/// Supplementary groups of the peer (`SO_PEERGROUPS`, Linux 4.13+); empty when unavailable.
#[cfg(all(
    target_os = "linux",
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
))]
fn peer_groups(sock: &impl AsFd) -> Vec<u32> {
    use std::os::fd::AsRawFd;
    // asm-generic value; the libc crate does not export it for every target.
    const SO_PEERGROUPS: libc::c_int = 59;
    let mut groups = vec![0u32; 64];
    for _ in 0..2 {
        let mut len = (groups.len() * 4) as libc::socklen_t;
        // SAFETY: `groups` is a live buffer of `len` bytes; the kernel writes at most `len`
        // bytes and reports the size it needs (ERANGE) when the buffer is too small.
        let r = unsafe {
            libc::getsockopt(
                sock.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        if r == 0 {
            groups.truncate(len as usize / 4);
            return groups;
        }
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            break;
        }
        // NGROUPS_MAX is 65536: bounded whatever the kernel reports.
        groups.resize((len as usize / 4).clamp(1, 65536), 0);
    }
    Vec::new()
}

#[cfg(not(all(
    target_os = "linux",
    any(
        target_arch = "x86",
        target_arch = "x86_64",
        target_arch = "arm",
        target_arch = "aarch64",
        target_arch = "riscv64",
        target_arch = "powerpc64",
        target_arch = "s390x",
        target_arch = "loongarch64"
    )
)))]
fn peer_groups(_sock: &impl AsFd) -> Vec<u32> {
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_user_is_admitted_and_groups_are_read() {
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(PeerPolicy::for_daemon(false).check(&a).is_ok());
        // The peer is this process: its supplementary groups are ours.
        let ours = rustix::process::getgroups().unwrap();
        let mut got = peer_groups(&b);
        got.sort_unstable();
        let mut want: Vec<u32> = ours.iter().map(|g| g.as_raw()).collect();
        want.sort_unstable();
        assert_eq!(got, want);
    }

    #[test]
    fn another_user_is_refused_unless_in_the_group() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let me = rustix::process::geteuid().as_raw();
        let p = PeerPolicy {
            uid: me.wrapping_add(1),
            gid: u32::MAX - 7,
            group: true,
        };
        if me == 0 {
            // Root is always admitted.
            assert!(p.check(&a).is_ok());
            return;
        }
        let e = p.check(&a).unwrap_err();
        assert!(e.contains("refused"), "{e}");
        let p = PeerPolicy {
            gid: rustix::process::getegid().as_raw(),
            ..p
        };
        assert!(p.check(&a).is_ok());
    }
}
