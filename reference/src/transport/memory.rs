//! The in-memory transport: a byte stream per direction inside one
//! [`Monitor`] of the sync family, so that under loom and shuttle a blocked
//! read is a wait on the family's condition variable.
//!
//! Models: a connected `SOCK_STREAM` pair: a send appends a whole message at
//! once (one lock acquisition and one notify), a receive takes up to the
//! bytes asked for (one acquisition, plus a wait while the stream is empty),
//! shutdown of either end makes reads on both ends return end of stream once
//! the buffered bytes are gone, as `shutdown(SHUT_RDWR)` on a Unix
//! socket, and descriptors travel with the first byte of their message (they
//! are duplicated on send, as the kernel does with `SCM_RIGHTS`) and end
//! the receive that gets them at their message's end, as Linux does.
//!
//! [`MemoryTransport::pair_with_chunk`] caps each receive to model short reads
//! ([`crate::scenario::Scenario::short_reads`]).
//!
//! [`MemoryTransport::with_gate`] puts a [`Gate`] around every send and
//! receive of one end: a test seam through which a scheduler releases the
//! threads' socket operations in an order it chooses (the model's replay in
//! `model/tests/replay_reference.rs`) and sees the bytes each one moved; it
//! also answers the end's [`Transport::goes_next`], so that the scheduler
//! takes the choices a real run leaves to timing (the back-end's miss or
//! its next request, the main loop's back-end channel or bottom half).
//!
//! Leaves out: socket buffer limits (sends never block), and partial sends.

use std::collections::VecDeque;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::{Transport, TransportError};
use crate::sync::{Monitor, SyncFamily};
use crate::wire::MAX_FDS;

/// Both directions of a connection.
struct Streams {
    /// Bytes in flight, index 0 from end A to end B, index 1 from B to A.
    bytes: [VecDeque<u8>; 2],
    /// Descriptors per direction, with the stream offset of the byte they
    /// arrive with (counted from the start of the direction's stream) and
    /// the length of the message that carries them.
    fds: [VecDeque<(u64, u64, Vec<OwnedFd>)>; 2],
    /// Bytes consumed so far per direction.
    consumed: [u64; 2],
    /// Bytes ever written per direction.
    written: [u64; 2],
    /// Shut down (by either end).
    closed: bool,
}

/// A socket operation a [`Gate`] is asked about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateOp {
    /// A send of this many bytes.
    Send(usize),
    /// A receive of at most this many bytes.
    Recv(usize),
}

/// A hook around every socket operation of one end (see
/// [`MemoryTransport::with_gate`]). Called on the thread that does the
/// operation, outside the transport's lock, so a gate may block.
pub trait Gate: Send + Sync {
    /// Before `op` on the end named `end`: may block until the operation's
    /// turn; returns the most bytes a receive may take (ignored for a send),
    /// or an error that the operation returns instead.
    fn before(&self, end: &'static str, op: GateOp) -> Result<usize, TransportError>;

    /// After `op` on `end`, with the bytes it sent or received.
    fn after(&self, end: &'static str, op: GateOp, bytes: &[u8]);

    /// Whether the calling thread's next operation is `op` on `end`, where
    /// the thread could also do something else first (see
    /// [`Transport::goes_next`]); may block until the gate knows. `None`:
    /// no opinion, the caller takes its real-run order. The default has
    /// none.
    fn goes_next(&self, end: &'static str, op: GateOp) -> Option<bool> {
        let _ = (end, op);
        None
    }
}

/// One end of an in-memory connection over sync family `F`.
pub struct MemoryTransport<F: SyncFamily> {
    streams: Arc<F::Monitor<Streams>>,
    /// 0 for end A, 1 for end B: the direction this end writes.
    side: usize,
    /// Most bytes one receive returns (`usize::MAX`: as many as asked).
    chunk: usize,
    /// A gate around every operation of this end, with the end's name.
    gate: Option<(Arc<dyn Gate>, &'static str)>,
}

impl<F: SyncFamily> std::fmt::Debug for MemoryTransport<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryTransport").field("side", &self.side).finish_non_exhaustive()
    }
}

impl<F: SyncFamily> MemoryTransport<F> {
    /// A connected pair; a receive returns as many bytes as asked when they
    /// are there.
    pub fn pair() -> (Self, Self) {
        Self::pair_with_chunk(usize::MAX)
    }

    /// A connected pair whose receives return at most `chunk` bytes (short
    /// reads: `read_all` loops).
    pub fn pair_with_chunk(chunk: usize) -> (Self, Self) {
        assert!(chunk > 0, "a receive must be able to return a byte");
        let streams = Arc::new(F::Monitor::new(Streams {
            bytes: [VecDeque::new(), VecDeque::new()],
            fds: [VecDeque::new(), VecDeque::new()],
            consumed: [0, 0],
            written: [0, 0],
            closed: false,
        }));
        (
            MemoryTransport { streams: Arc::clone(&streams), side: 0, chunk, gate: None },
            MemoryTransport { streams, side: 1, chunk, gate: None },
        )
    }

    /// This end with `gate` around every send and receive; `end` names the
    /// end in the gate's calls.
    pub fn with_gate(mut self, gate: Arc<dyn Gate>, end: &'static str) -> Self {
        self.gate = Some((gate, end));
        self
    }

    /// Bytes written into this end and not yet read by the peer.
    pub fn unread_by_peer(&self) -> usize {
        self.streams.with(|s| s.bytes[self.side].len())
    }
}

impl<F: SyncFamily> Transport for MemoryTransport<F> {
    fn send(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), TransportError> {
        let Some((gate, end)) = &self.gate else { return self.send_ungated(bytes, fds) };
        gate.before(end, GateOp::Send(bytes.len()))?;
        let r = self.send_ungated(bytes, fds);
        gate.after(end, GateOp::Send(bytes.len()), if r.is_ok() { bytes } else { &[] });
        r
    }

    fn recv(&self, buf: &mut [u8], fds: &mut Vec<OwnedFd>) -> Result<usize, TransportError> {
        let Some((gate, end)) = &self.gate else { return self.recv_ungated(buf, fds) };
        let cap = gate.before(end, GateOp::Recv(buf.len()))?;
        let want = buf.len().min(cap.max(1));
        let r = self.recv_ungated(&mut buf[..want], fds);
        let got = *r.as_ref().unwrap_or(&0);
        gate.after(end, GateOp::Recv(buf.len()), &buf[..got]);
        r
    }

    fn shutdown(&self) {
        self.streams.with_notify(|s| s.closed = true);
    }

    fn goes_next(&self, op: GateOp, default: bool) -> bool {
        let Some((gate, end)) = &self.gate else { return default };
        gate.goes_next(end, op).unwrap_or(default)
    }
}

impl<F: SyncFamily> MemoryTransport<F> {
    fn send_ungated(&self, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> Result<(), TransportError> {
        if fds.len() > MAX_FDS {
            return Err(TransportError::TooManyFds(fds.len()));
        }
        let owned =
            fds.iter().map(|f| f.try_clone_to_owned()).collect::<Result<Vec<OwnedFd>, _>>()?;
        let dir = self.side;
        self.streams.with_notify(|s| {
            if s.closed {
                return Err(TransportError::Closed);
            }
            if !owned.is_empty() {
                s.fds[dir].push_back((s.written[dir], bytes.len() as u64, owned));
            }
            s.bytes[dir].extend(bytes);
            s.written[dir] += bytes.len() as u64;
            Ok(())
        })
    }

    fn recv_ungated(
        &self,
        buf: &mut [u8],
        fds: &mut Vec<OwnedFd>,
    ) -> Result<usize, TransportError> {
        if buf.is_empty() {
            return Ok(0);
        }
        let dir = 1 - self.side;
        let want = buf.len().min(self.chunk);
        let (n, got) = self.streams.wait_until(|s| {
            if s.bytes[dir].is_empty() {
                return s.closed.then(|| (0, Vec::new()));
            }
            let mut n = want.min(s.bytes[dir].len());
            // As Linux: a read that gets descriptors ends with their message.
            if let Some((at, len, _)) = s.fds[dir].front() {
                let carrier_end = at + len.max(&1);
                if *at < s.consumed[dir] + n as u64 {
                    n = n.min((carrier_end - s.consumed[dir]) as usize);
                }
            }
            for (dst, src) in buf.iter_mut().zip(s.bytes[dir].drain(..n)) {
                *dst = src;
            }
            let end = s.consumed[dir] + n as u64;
            let mut got = Vec::new();
            while s.fds[dir].front().is_some_and(|(at, _, _)| *at < end) {
                got.extend(s.fds[dir].pop_front().expect("front exists").2);
            }
            s.consumed[dir] = end;
            Some((n, got))
        });
        if fds.len() + got.len() > MAX_FDS {
            return Err(TransportError::TooManyFds(fds.len() + got.len()));
        }
        fds.extend(got);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sync::ParkingLot;
    use crate::transport::read_all;
    use std::os::fd::AsFd;

    #[test]
    fn short_reads_loop_and_fds_arrive_with_their_message() {
        let (a, b) = MemoryTransport::<ParkingLot>::pair_with_chunk(4);
        let (x, _y) = MemoryTransport::<ParkingLot>::pair();
        drop(x);
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        a.send(&[1; 12], &[]).unwrap();
        a.send(&[2; 8], &[file.as_fd()]).unwrap();
        let mut fds = Vec::new();
        let mut h = [0u8; 12];
        assert_eq!(b.recv(&mut h, &mut fds).unwrap(), 4);
        assert_eq!(read_all(&b, &mut h[4..], &mut fds).unwrap(), 8);
        assert!(fds.is_empty());
        let mut p = [0u8; 8];
        assert_eq!(read_all(&b, &mut p, &mut fds).unwrap(), 8);
        assert_eq!(p, [2; 8]);
        assert_eq!(fds.len(), 1);
        b.shutdown();
        assert_eq!(a.recv(&mut p, &mut fds).unwrap(), 0);
        assert!(matches!(a.send(&[0], &[]), Err(TransportError::Closed)));
    }

    #[test]
    fn a_read_that_gets_descriptors_ends_with_the_message_that_carries_them() {
        let (a, b) = MemoryTransport::<ParkingLot>::pair();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        a.send(&[1; 20], &[]).unwrap();
        a.send(&[2; 12], &[file.as_fd()]).unwrap();
        a.send(&[3; 12], &[]).unwrap();
        let mut buf = [0u8; 64];
        let mut fds = Vec::new();
        assert_eq!(b.recv(&mut buf, &mut fds).unwrap(), 32, "up to the carrier's end");
        assert_eq!(fds.len(), 1);
        assert_eq!(b.recv(&mut buf, &mut fds).unwrap(), 12);
        assert_eq!(fds.len(), 1, "no more descriptors");
    }
}
