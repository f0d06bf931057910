//! The byte-stream seam between vhost-user peers: what the front-end channel
//! and the back-end need from a socket, so that the same code runs over a
//! real Unix socket and over the in-memory stream that loom and shuttle check.
//!
//! Models: a SOCK_STREAM connection as QEMU's chardev uses it: one `sendmsg`
//! per message (bytes and file descriptors together), reads that may return
//! fewer bytes than asked, `read_all` looping until the count is reached or
//! the peer closes, and shutdown waking every blocked reader.
//!
//! Leaves out: non-blocking I/O and QEMU's nested main-loop reads
//! (`vhost_user_read` with a GMainLoop); reads here simply block.

use std::os::fd::{BorrowedFd, OwnedFd};

pub mod memory;
pub mod unix;

pub use memory::{Gate, GateOp, MemoryTransport};
pub use unix::UnixTransport;

/// A transport failure.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// An operating-system error on the socket.
    #[error("socket error: {0}")]
    Io(std::io::Error),
    /// The connection was shut down or the peer closed it.
    #[error("connection closed")]
    Closed,
    /// The peer sent more file descriptors than one message may carry; all
    /// of them were closed.
    #[error("{0} file descriptors in one message (at most {max})", max = crate::wire::MAX_FDS)]
    TooManyFds(usize),
}

/// By hand, not `#[from]`: the message already carries the OS error, and a
/// `source` too would print it twice in an error chain.
impl From<std::io::Error> for TransportError {
    fn from(e: std::io::Error) -> Self {
        TransportError::Io(e)
    }
}

/// One end of a vhost-user connection.
pub trait Transport: Send + Sync {
    /// Sends one whole message (its bytes and descriptors) as one write.
    fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), TransportError>;

    /// Reads at most `buf.len()` bytes, blocking until at least one byte is
    /// there; returns 0 at end of stream. Descriptors that arrive with these
    /// bytes are appended to `fds` (the caller owns, and so closes, them).
    /// They come with the first byte of the message that carries them, and
    /// a read that gets them ends at the latest with that message (Linux
    /// stops a stream `recvmsg` after the segment that carries `SCM_RIGHTS`,
    /// and each `sendmsg` starts a new segment): so they belong to the last
    /// message that begins in the bytes read.
    fn recv(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, TransportError>;

    /// Shuts both directions down: blocked and later reads on either end
    /// return end of stream, later sends fail.
    fn shutdown(&self);

    /// Waits up to `timeout` for bytes (or end of stream) to read; `false`
    /// when the time ran out. Transports that cannot wait with a bound say
    /// `true` at once, and the next read blocks as before.
    fn wait_readable(&self, timeout: std::time::Duration) -> Result<bool, TransportError> {
        let _ = timeout;
        Ok(true)
    }
}

/// QEMU's `qemu_chr_fe_read_all`: reads until `buf` is full or the stream
/// ends; returns how many bytes were read (less than `buf.len()` only at end
/// of stream).
pub fn read_all<T: Transport + ?Sized>(
    t: &T,
    buf: &mut [u8],
    fds: &mut Vec<OwnedFd>,
) -> Result<usize, TransportError> {
    let mut got = 0;
    while got < buf.len() {
        let n = t.recv(&mut buf[got..], fds)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    Ok(got)
}
