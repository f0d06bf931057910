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

use std::ops::Range;
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

    /// Whether the calling thread's next operation is `op` on this end, at
    /// a choice a real run leaves to timing: the back-end sends its next
    /// miss on the back-end channel or reads the next request first; QEMU's
    /// main loop reads the back-end channel or runs a pending bottom half
    /// first (which of two ready sources its `poll` saw first). Returns
    /// `default`, the order of a run on real threads; an end with a
    /// [`Gate`] asks the gate ([`Gate::goes_next`]), so that a scheduler can
    /// take every order.
    fn goes_next(&self, op: GateOp, default: bool) -> bool {
        let _ = op;
        default
    }
}

/// Bytes of a [`RecvBuffer`]: room for the largest message (a 12-byte
/// header and [`crate::wire::MAX_PAYLOAD`]) after any partial one.
const REPLY_BUFFER_SIZE: usize = 3 * 4096;

/// A receive buffer for a reader that frames messages itself: bytes
/// received and not yet framed, with the descriptors that came with them,
/// so that one `recv` of whatever is there can serve several messages (the
/// reply-queue's reader, lent it by [`crate::reply_queue::ReplyQueue`] for a
/// turn, and the back-end's request loop).
///
/// Descriptors belong to the message that carries them, and a receive ends
/// with that message ([`crate::transport::Transport::recv`]): the
/// descriptors of one receive go to the last message that begins in its
/// bytes, which is the first message that begins in them and reaches their
/// end.
#[derive(Debug, Default)]
pub struct RecvBuffer {
    bytes: Vec<u8>,
    start: usize,
    end: usize,
    /// Stream offset of `bytes[start]`.
    offset: u64,
    /// Descriptors received, with the stream range of their receive.
    fds: Vec<(Range<u64>, Vec<OwnedFd>)>,
}

impl RecvBuffer {
    /// The bytes received and not yet framed.
    pub fn available(&self) -> &[u8] {
        &self.bytes[self.start..self.end]
    }

    /// Room for one receive (at least [`crate::wire::MAX_PAYLOAD`] bytes):
    /// the unframed bytes move to the front first.
    pub fn spare(&mut self) -> &mut [u8] {
        if self.bytes.is_empty() {
            self.bytes = vec![0; REPLY_BUFFER_SIZE];
        }
        if self.start > 0 {
            self.bytes.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.bytes[self.end..]
    }

    /// Records a receive of `n` bytes into [`RecvBuffer::spare`] and the
    /// descriptors that came with them.
    pub fn received(&mut self, n: usize, fds: Vec<OwnedFd>) {
        let at = self.offset + (self.end - self.start) as u64;
        self.end += n;
        if !fds.is_empty() {
            self.fds.push((at..at + n as u64, fds));
        }
    }

    /// Frames the first `len` unframed bytes as one message and returns its
    /// descriptors: those of a receive in which it begins and which it
    /// reaches the end of. Descriptors of receives it covers are closed
    /// (none arrive that way on a well-formed stream).
    pub fn consume(&mut self, len: usize) -> Vec<OwnedFd> {
        let (begin, end) = (self.offset, self.offset + len as u64);
        let mut mine = Vec::new();
        self.fds.retain_mut(|(r, fds)| {
            if r.contains(&begin) && end >= r.end {
                mine.append(fds);
            }
            r.end > end
        });
        self.start += len;
        self.offset = end;
        mine
    }
}

impl RecvBuffer {
    /// Receives from `t` until the buffer holds `len` unframed bytes; at the
    /// end of the stream `Ok(false)` (the bytes received stay there).
    pub fn fill<T: Transport + ?Sized>(
        &mut self,
        t: &T,
        len: usize,
    ) -> Result<bool, TransportError> {
        while self.available().len() < len {
            let mut fds = Vec::new();
            let n = t.recv(self.spare(), &mut fds)?;
            if n == 0 {
                return Ok(false);
            }
            self.received(n, fds);
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_go_to_the_last_message_that_begins_in_their_receive() {
        let file = || OwnedFd::from(std::fs::File::open("/proc/self/exe").unwrap());
        let mut buf = RecvBuffer::default();
        // One receive: a 20-byte message, then a 12-byte one that carries a
        // descriptor (the receive ends with it).
        buf.spare()[..32].fill(7);
        buf.received(32, vec![file()]);
        assert!(buf.consume(20).is_empty(), "a later message begins in the receive");
        assert_eq!(buf.consume(12).len(), 1);
        // A receive that ends inside the message carrying a descriptor.
        buf.spare()[..4].fill(7);
        buf.received(4, vec![file()]);
        buf.spare()[..16].fill(7);
        buf.received(16, Vec::new());
        assert_eq!(buf.consume(20).len(), 1);
        assert!(buf.available().is_empty());
    }
}
