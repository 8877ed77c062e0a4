//! File-descriptor passing over Unix stream sockets, as Plasma does it.
//!
//! * [`send_fd`]: one `sendmsg` carrying **exactly one data byte** and one
//!   `SCM_RIGHTS` fd (the store's segment fds, the client's notification fd).
//! * [`recv_with_fds`]: a `recvmsg` with a control buffer, used to read *all*
//!   stream data so that fds riding on the stream are never lost.
//! * [`recv_fd`]: the client's blocking "receive exactly one fd" (1-byte iov).
//!
//! Everything goes through rustix's safe wrappers: received fds are
//! [`OwnedFd`]s (closed on drop, `MSG_CMSG_CLOEXEC` set), so this file needs
//! no `unsafe` at all.

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::net::{
    recvmsg, sendmsg, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use thiserror::Error;

/// Maximum number of fds accepted in a single `recvmsg` by [`recv_with_fds`].
pub const MAX_FDS_PER_RECV: usize = 8;

/// The dummy data byte sent along with each fd (the reference store sends 0x14;
/// receivers ignore its value).
pub const FD_DUMMY_BYTE: u8 = 0x14;

/// Errors from fd passing.
#[derive(Debug, Error)]
pub enum FdPassError {
    /// The underlying syscall failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer closed the connection.
    #[error("connection closed by peer")]
    Eof,
    /// The kernel truncated the control data (too many fds were sent); the
    /// excess fds were closed by the kernel.
    #[error("control message truncated")]
    ControlTruncated,
    /// Expected exactly one fd, got a different number.
    #[error("expected exactly one fd, received {0}")]
    WrongFdCount(usize),
    /// The socket is non-blocking and would block.
    #[error("operation would block")]
    WouldBlock,
}

fn errno_to_err(e: Errno) -> FdPassError {
    if e == Errno::AGAIN || e == Errno::WOULDBLOCK {
        FdPassError::WouldBlock
    } else {
        FdPassError::Io(e.into())
    }
}

/// Sends `fd` over `sock` with exactly one data byte and one `SCM_RIGHTS`
/// control message. Retries on `EINTR`; never raises SIGPIPE (`MSG_NOSIGNAL`).
///
/// Returns [`FdPassError::WouldBlock`] on a non-blocking socket that is full;
/// in that case nothing was sent and the call may be repeated later.
pub fn send_fd(sock: impl AsFd, fd: BorrowedFd<'_>) -> Result<(), FdPassError> {
    let fds = [fd];
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        // push() only fails if the buffer is too small, which cmsg_space! rules out.
        if !control.push(SendAncillaryMessage::ScmRights(&fds)) {
            return Err(FdPassError::ControlTruncated);
        }
        let byte = [FD_DUMMY_BYTE];
        match sendmsg(
            sock.as_fd(),
            &[IoSlice::new(&byte)],
            &mut control,
            SendFlags::NOSIGNAL,
        ) {
            Ok(1) => return Ok(()),
            // A stream socket either takes the whole single byte or nothing.
            Ok(_) => return Err(FdPassError::Eof),
            Err(Errno::INTR) => continue,
            Err(e) => return Err(errno_to_err(e)),
        }
    }
}

/// Reads up to `buf.len()` bytes with `recvmsg`, appending any fds carried by
/// the data to `fds`. Returns the number of bytes read (0 = EOF).
///
/// Retries on `EINTR`. On a non-blocking socket with no data, returns
/// [`FdPassError::WouldBlock`]. If the control buffer was truncated the
/// received fds are still returned but the call reports
/// [`FdPassError::ControlTruncated`] (the peer sent more fds than allowed,
/// which the Plasma protocol never does).
pub fn recv_with_fds(
    sock: impl AsFd,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<usize, FdPassError> {
    loop {
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS_PER_RECV))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let res = recvmsg(
            sock.as_fd(),
            &mut [IoSliceMut::new(buf)],
            &mut control,
            RecvFlags::CMSG_CLOEXEC,
        );
        match res {
            Ok(msg) => {
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(it) = m {
                        fds.extend(it);
                    }
                }
                if msg.flags.contains(ReturnFlags::CTRUNC) {
                    return Err(FdPassError::ControlTruncated);
                }
                return Ok(msg.bytes);
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(errno_to_err(e)),
        }
    }
}

/// Receives exactly one fd carried by a 1-byte message (the client side of
/// the store's segment-fd passing). Blocks on a blocking socket.
pub fn recv_fd(sock: impl AsFd) -> Result<OwnedFd, FdPassError> {
    let mut byte = [0u8; 1];
    let mut fds = Vec::new();
    let n = recv_with_fds(sock, &mut byte, &mut fds)?;
    if n == 0 {
        return Err(FdPassError::Eof);
    }
    if fds.len() != 1 {
        return Err(FdPassError::WrongFdCount(fds.len()));
    }
    Ok(fds.pop().expect("length checked above"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
    use std::io::{Read, Seek, SeekFrom, Write};

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::UNIX,
            SocketType::STREAM,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap()
    }

    #[test]
    fn fd_round_trip() {
        let (a, b) = pair();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(b"plasma").unwrap();
        send_fd(&a, f.as_fd()).unwrap();
        let got = recv_fd(&b).unwrap();
        let mut g = std::fs::File::from(got);
        g.seek(SeekFrom::Start(0)).unwrap();
        let mut s = String::new();
        g.read_to_string(&mut s).unwrap();
        assert_eq!(s, "plasma");
    }

    #[test]
    fn data_then_fd_is_not_lost() {
        let (a, b) = pair();
        rustix::io::write(&a, b"header-bytes").unwrap();
        let f = tempfile::tempfile().unwrap();
        send_fd(&a, f.as_fd()).unwrap();
        rustix::io::write(&a, b"tail").unwrap();
        let mut fds = Vec::new();
        let mut all = Vec::new();
        let mut buf = [0u8; 64];
        while all.len() < 12 + 1 + 4 {
            let n = recv_with_fds(&b, &mut buf, &mut fds).unwrap();
            all.extend_from_slice(&buf[..n]);
        }
        assert_eq!(&all[..12], b"header-bytes");
        assert_eq!(all[12], FD_DUMMY_BYTE);
        assert_eq!(&all[13..], b"tail");
        assert_eq!(fds.len(), 1);
    }

    #[test]
    fn recv_fd_without_fd_is_error() {
        let (a, b) = pair();
        rustix::io::write(&a, b"x").unwrap();
        assert!(matches!(recv_fd(&b), Err(FdPassError::WrongFdCount(0))));
        drop(a);
        assert!(matches!(recv_fd(&b), Err(FdPassError::Eof)));
    }

    #[test]
    fn nonblocking_empty_would_block() {
        let (_a, b) = pair();
        rustix::fs::fcntl_setfl(&b, rustix::fs::OFlags::NONBLOCK).unwrap();
        let mut fds = Vec::new();
        let mut buf = [0u8; 4];
        assert!(matches!(
            recv_with_fds(&b, &mut buf, &mut fds),
            Err(FdPassError::WouldBlock)
        ));
    }
}
