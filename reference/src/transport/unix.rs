//! The real transport: one end of a `SOCK_STREAM` Unix socket (a socketpair
//! or an accepted connection), with file descriptors passed as `SCM_RIGHTS`.
//!
//! Models: QEMU's chardev socket as `vhost_user_write` and `read_all` use it:
//! one `sendmsg` per message carrying bytes and descriptors, `recvmsg` that
//! may return fewer bytes than asked, descriptors received as [`OwnedFd`]
//! (closed on drop, never leaked), `shutdown(SHUT_RDWR)` waking blocked
//! readers on both ends.
//!
//! Leaves out: non-blocking sockets and QEMU's GMainLoop-driven reads.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, Shutdown, SockFlag,
    SockType,
};

use super::{Transport, TransportError};
use crate::wire::MAX_FDS;

/// The most descriptors the kernel passes in one message (`SCM_MAX_FD`); the
/// receive buffer is sized for it so that nothing is ever truncated (and so
/// leaked) before we can count and close it.
const SCM_MAX_FD: usize = 253;

/// One end of a Unix stream socket.
#[derive(Debug)]
pub struct UnixTransport {
    fd: OwnedFd,
}

impl UnixTransport {
    /// A connected pair (`socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC)`).
    pub fn pair() -> Result<(UnixTransport, UnixTransport), TransportError> {
        let (a, b) =
            socket::socketpair(AddressFamily::Unix, SockType::Stream, None, SockFlag::SOCK_CLOEXEC)
                .map_err(std::io::Error::from)?;
        Ok((UnixTransport { fd: a }, UnixTransport { fd: b }))
    }

    /// Wraps a connected stream socket (e.g. one received as SET_BACKEND_REQ_FD).
    pub fn from_fd(fd: OwnedFd) -> Self {
        UnixTransport { fd }
    }

    /// Wraps an accepted or connected [`UnixStream`].
    pub fn from_stream(stream: UnixStream) -> Self {
        UnixTransport { fd: stream.into() }
    }
}

impl AsFd for UnixTransport {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Transport for UnixTransport {
    fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), TransportError> {
        if fds.len() > MAX_FDS {
            return Err(TransportError::TooManyFds(fds.len()));
        }
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let rights = [ControlMessage::ScmRights(&raw)];
        let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
        let mut sent = 0;
        while sent < bytes.len() {
            let iov = [IoSlice::new(&bytes[sent..])];
            // Descriptors go with the first byte only.
            let c = if sent == 0 { cmsgs } else { &[] };
            match socket::sendmsg::<()>(self.fd.as_raw_fd(), &iov, c, MsgFlags::MSG_NOSIGNAL, None)
            {
                Ok(n) => sent += n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EPIPE) | Err(Errno::ECONNRESET) => return Err(TransportError::Closed),
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
        }
        Ok(())
    }

    fn wait_readable(&self, timeout: std::time::Duration) -> Result<bool, TransportError> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        loop {
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(n) => return Ok(n > 0),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(std::io::Error::from(e).into()),
            }
        }
    }

    fn recv(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, TransportError> {
        let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
        loop {
            let mut iov = [IoSliceMut::new(buf)];
            let msg = match socket::recvmsg::<()>(
                self.fd.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => msg,
                Err(Errno::EINTR) => continue,
                Err(Errno::ECONNRESET) => return Ok(0),
                Err(e) => return Err(std::io::Error::from(e).into()),
            };
            let n = msg.bytes;
            let mut got = Vec::new();
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        for r in raw {
                            // SAFETY: the kernel just installed `r` in our
                            // table for this message; nothing else owns it.
                            got.push(unsafe { OwnedFd::from_raw_fd(r) });
                        }
                    }
                }
            }
            if fds.len() + got.len() > MAX_FDS {
                let count = fds.len() + got.len();
                drop(got);
                return Err(TransportError::TooManyFds(count));
            }
            fds.extend(got);
            return Ok(n);
        }
    }

    fn shutdown(&self) {
        // ENOTCONN after the peer is gone is fine: it is already shut.
        let _ = socket::shutdown(self.fd.as_raw_fd(), Shutdown::Both);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::read_all;

    #[test]
    fn bytes_and_fds_cross_and_shutdown_wakes_the_reader() {
        let (a, b) = UnixTransport::pair().unwrap();
        let (x, _y) = UnixTransport::pair().unwrap();
        a.send(b"hello world!", &[x.as_fd()]).unwrap();
        let mut buf = [0u8; 12];
        let mut fds = Vec::new();
        assert_eq!(read_all(&b, &mut buf, &mut fds).unwrap(), 12);
        assert_eq!(&buf, b"hello world!");
        assert_eq!(fds.len(), 1);
        let b = std::sync::Arc::new(b);
        let b2 = std::sync::Arc::clone(&b);
        let h = std::thread::spawn(move || b2.recv(&mut [0u8; 4], &mut Vec::new()).unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
        a.shutdown();
        assert_eq!(h.join().unwrap(), 0);
        assert!(matches!(a.send(b"x", &[]), Err(TransportError::Closed)));
    }

    #[test]
    fn a_read_that_gets_descriptors_ends_with_the_message_that_carries_them() {
        let (a, b) = UnixTransport::pair().unwrap();
        let (x, _y) = UnixTransport::pair().unwrap();
        a.send(&[1; 20], &[]).unwrap();
        a.send(&[2; 12], &[x.as_fd()]).unwrap();
        a.send(&[3; 12], &[]).unwrap();
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        assert_eq!(b.recv(&mut buf, &mut fds).unwrap(), 32, "up to the carrier's end");
        assert_eq!(fds.len(), 1);
        assert_eq!(b.recv(&mut buf, &mut fds).unwrap(), 12);
        assert_eq!(fds.len(), 1, "no more descriptors");
    }
}
