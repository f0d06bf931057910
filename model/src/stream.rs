//! One direction of a vhost-user socket as the model keeps it: the bytes in
//! flight, in order, with ghost data per byte (whose request the byte
//! belongs to or answers, and whether a message starts at it), so that the
//! properties can say who read whose reply and whether a header read began
//! where a message begins.
//!
//! A write appends a whole message. A read takes exactly the bytes it asks
//! for, from any offset. Each byte is kept as one `u16` cell (the byte, its
//! owner, whether a message starts at it), and two streams with the same
//! bytes and the same owner and message start per byte are equal.
//! [`Stream::runs`] gives the ghost data as runs for readers.
//!
//! Cost, since the checker copies and hashes every state it generates and
//! a transition changes one or two streams of the seven: the cells are
//! shared between copies (an `Arc`, copied on write), and their 64-bit
//! digest is computed when they change, so hashing a stream is one word.
//!
//! Leaves out: file descriptors sent with a message (none of the modelled
//! messages carries one) and the kernel's buffer limits (a write always fits).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use protocol::scenario::ThreadRole;
use protocol::wire::{Header, HEADER_SIZE};

/// A run of consecutive bytes of one owner; at most its first byte starts a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Run {
    /// Number of bytes.
    pub len: u16,
    /// Whose request these bytes belong to (or answer).
    pub owner: ThreadRole,
    /// Whether a message starts at the run's first byte.
    pub start: bool,
}

/// A cell's owner bits (the owner's index in [`ThreadRole::ALL`]).
const OWNER_SHIFT: u16 = 8;
/// A cell's bit for "a message starts at this byte".
const START: u16 = 1 << 10;

fn cell(value: u8, owner: ThreadRole, start: bool) -> u16 {
    u16::from(value) | (owner as u16) << OWNER_SHIFT | if start { START } else { 0 }
}

fn owner(cell: u16) -> ThreadRole {
    ThreadRole::ALL[usize::from((cell >> OWNER_SHIFT) & 3)]
}

fn is_start(cell: u16) -> bool {
    cell & START != 0
}

/// Bytes on a stream (or read from one), with their ghost data.
#[derive(Clone, Default)]
pub struct Stream {
    /// The cells, shared by the copies of a state until one changes them;
    /// the stream is `buf[start..]` (a read moves `start`, copying nothing).
    /// `None` when empty: most of a state's streams are, and copying one
    /// then costs nothing (no reference count to touch).
    buf: Option<Arc<Vec<u16>>>,
    start: usize,
    /// [`digest`] of the cells, kept in step by every change.
    digest: u64,
}

impl PartialEq for Stream {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.cells() == other.cells()
    }
}

impl Eq for Stream {}

impl Hash for Stream {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.digest);
    }
}

/// A 64-bit digest of cells (aHash with fixed keys: the same in every run).
/// The empty stream's is 0, so that `Stream::default()` is in step.
fn digest(cells: &[u16]) -> u64 {
    if cells.is_empty() {
        return 0;
    }
    HASH_KEYS.hash_one(cells)
}

/// Fixed aHash keys, so that digests and fingerprints are the same in
/// every run (aHash mixes them with its own constants; these are
/// SplitMix64's).
pub(crate) const HASH_KEYS: ahash::RandomState = ahash::RandomState::with_seeds(
    0x9e37_79b9_7f4a_7c15,
    0xbf58_476d_1ce4_e5b9,
    0x94d0_49bb_1331_11eb,
    0x2545_f491_4f6c_dd1d,
);

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("bytes", &hex(&self.bytes()))
            .field("runs", &self.runs())
            .finish()
    }
}

impl Stream {
    /// An empty stream.
    pub fn new() -> Self {
        Stream::default()
    }

    /// One whole message of `owner`.
    pub fn message(owner: ThreadRole, bytes: &[u8]) -> Self {
        let mut s = Stream::new();
        s.push_message(owner, bytes);
        s
    }

    /// Number of bytes.
    pub fn len(&self) -> usize {
        self.cells().len()
    }

    /// Whether no byte is there.
    pub fn is_empty(&self) -> bool {
        self.cells().is_empty()
    }

    /// The bytes, in order.
    pub fn bytes(&self) -> Vec<u8> {
        self.cells().iter().map(|&c| c as u8).collect()
    }

    /// The ghost data as runs, in order: a new run where the owner changes
    /// or a message starts. Their lengths add up to [`Stream::len`].
    pub fn runs(&self) -> Vec<Run> {
        let mut runs: Vec<Run> = Vec::new();
        for &c in self.cells() {
            match runs.last_mut() {
                Some(r) if !is_start(c) && r.owner == owner(c) => r.len += 1,
                _ => runs.push(Run { len: 1, owner: owner(c), start: is_start(c) }),
            }
        }
        runs
    }

    /// Appends a whole message of `owner` (`vhost_user_write`: one `sendmsg`).
    pub fn push_message(&mut self, owner: ThreadRole, bytes: &[u8]) {
        self.change(|c| c.extend(bytes.iter().enumerate().map(|(i, &b)| cell(b, owner, i == 0))));
    }

    /// Changes the cells (copying them first if another state shares them)
    /// and brings the digest in step.
    fn change(&mut self, f: impl FnOnce(&mut Vec<u16>)) {
        match self.buf.as_mut().and_then(Arc::get_mut) {
            Some(buf) => {
                buf.drain(..self.start);
                f(buf);
            }
            None => {
                let mut buf = self.cells().to_vec();
                f(&mut buf);
                self.buf = Some(Arc::new(buf));
            }
        }
        self.start = 0;
        self.digest = digest(self.cells());
        if self.cells().is_empty() {
            *self = Stream::default();
        }
    }

    fn from_cells(cells: Vec<u16>) -> Self {
        if cells.is_empty() {
            return Stream::default();
        }
        Stream { digest: digest(&cells), buf: Some(Arc::new(cells)), start: 0 }
    }

    /// The cells in the stream.
    fn cells(&self) -> &[u16] {
        self.buf.as_ref().map_or(&[], |b| &b[self.start..])
    }

    /// Appends bytes taken from another stream, ghost data and all.
    pub fn append(&mut self, other: Stream) {
        if self.is_empty() {
            *self = other;
        } else {
            self.change(|c| c.extend_from_slice(other.cells()));
        }
    }

    /// Takes the first `n` bytes off the stream (a read of `n` bytes).
    ///
    /// # Panics
    /// If fewer than `n` bytes are there.
    pub fn take(&mut self, n: usize) -> Stream {
        assert!(n <= self.len(), "take {n} of {} bytes", self.len());
        if n == self.len() {
            return self.take_all();
        }
        let taken = Stream::from_cells(self.cells()[..n].to_vec());
        self.start += n;
        self.digest = digest(self.cells());
        taken
    }

    /// The first `n` bytes, left on the stream (what a read of `n` would take).
    ///
    /// # Panics
    /// If fewer than `n` bytes are there.
    pub fn peek(&self, n: usize) -> Stream {
        Stream::from_cells(self.cells()[..n].to_vec())
    }

    /// Empties the stream, returning what it held.
    pub fn take_all(&mut self) -> Stream {
        std::mem::take(self)
    }

    /// Whether a message starts at the first byte.
    pub fn starts_message(&self) -> bool {
        self.cells().first().is_some_and(|&c| is_start(c))
    }

    /// The owner of the first byte.
    pub fn first_owner(&self) -> Option<ThreadRole> {
        self.cells().first().map(|&c| owner(c))
    }

    /// Whether every byte belongs to `role`.
    pub fn all_owned_by(&self, role: ThreadRole) -> bool {
        self.foreign_owner(role).is_none()
    }

    /// The first owner that is not `role`, if any byte is someone else's.
    pub fn foreign_owner(&self, role: ThreadRole) -> Option<ThreadRole> {
        self.cells().iter().map(|&c| owner(c)).find(|&o| o != role)
    }

    /// The header in the first 12 bytes, as `vhost_user_read_header` decodes it.
    ///
    /// # Panics
    /// If fewer than 12 bytes are there.
    pub fn header(&self) -> Header {
        let mut bytes = [0u8; HEADER_SIZE];
        for (b, &c) in bytes.iter_mut().zip(&self.cells()[..HEADER_SIZE]) {
            *b = c as u8;
        }
        Header::from_bytes(&bytes)
    }
}

/// Which ghost data a hash of a stream keeps ([`Stream::hash_keeping`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ghost {
    /// Each byte's owner.
    pub owners: bool,
    /// Whether a message starts at each byte.
    pub starts: bool,
}

impl Ghost {
    /// Every ghost bit.
    pub(crate) const ALL: Ghost = Ghost { owners: true, starts: true };
}

impl Stream {
    /// Hashes the stream's bytes with the ghost data `keep` says: its
    /// digest when it keeps all, else the cells with the other ghost bits
    /// cleared (computed here: the checker asks for it only in states
    /// whose ghost data can no longer change a verdict).
    #[inline]
    pub(crate) fn hash_keeping<H: Hasher>(&self, keep: Ghost, h: &mut H) {
        if keep == Ghost::ALL || self.is_empty() {
            h.write_u64(self.digest);
        } else {
            self.hash_masked(keep, h);
        }
    }

    fn hash_masked<H: Hasher>(&self, keep: Ghost, h: &mut H) {
        let mask = 0xff
            | if keep.owners { 3 << OWNER_SHIFT } else { 0 }
            | if keep.starts { START } else { 0 };
        let mut chunk = [0u16; 64];
        for part in self.cells().chunks(chunk.len()) {
            for (d, &c) in chunk.iter_mut().zip(part) {
                *d = c & mask;
            }
            chunk[..part.len()].hash(h);
        }
    }

    /// The little-endian word at byte `at`, if the stream has its 4 bytes
    /// (a header's flags are the word at 4).
    pub(crate) fn word(&self, at: usize) -> Option<u32> {
        let cells = self.cells().get(at..at + 4)?;
        Some(u32::from_le_bytes(std::array::from_fn(|i| cells[i] as u8)))
    }
}

/// `bytes` as the diagrams show them: each whole 4-byte group as a
/// little-endian u32 in hex (`16 5 8` for a REPLY_ACK header), then a tail
/// of 1 to 3 bytes, if any, after `|` as two-digit hex bytes
/// (`[0 0 1e 5 8 0 0 | 16 00]` for 30 bytes).
pub fn hex(bytes: &[u8]) -> String {
    let mut parts: Vec<String> = bytes
        .chunks_exact(4)
        .map(|c| format!("{:x}", u32::from_le_bytes(c.try_into().expect("4 bytes"))))
        .collect();
    let tail = bytes.chunks_exact(4).remainder();
    if !tail.is_empty() {
        parts.push("|".into());
        parts.extend(tail.iter().map(|b| format!("{b:02x}")));
    }
    format!("[{}]", parts.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ThreadRole::*;

    #[test]
    fn a_read_inside_a_message_splits_its_run_and_the_rest_starts_no_message() {
        let mut s = Stream::message(DeviceStart, &[1; 20]);
        s.push_message(PostcopyListen, &[2; 20]);
        let first = s.take(14);
        assert_eq!(first.runs(), &[Run { len: 14, owner: DeviceStart, start: true }]);
        assert!(!s.starts_message());
        let second = s.take(10);
        assert_eq!(
            second.runs(),
            &[
                Run { len: 6, owner: DeviceStart, start: false },
                Run { len: 4, owner: PostcopyListen, start: true }
            ]
        );
        assert_eq!(second.bytes(), &[1, 1, 1, 1, 1, 1, 2, 2, 2, 2]);
        assert_eq!(s.len(), 16);
        assert_eq!(s.foreign_owner(PostcopyListen), None);
    }

    #[test]
    fn pieces_of_one_message_read_in_turn_are_one_run_again() {
        let whole = Stream::message(DeviceStart, &[7; 20]);
        let mut s = whole.clone();
        let mut read = s.take(3);
        read.append(s.take(12));
        read.append(s.take(5));
        assert_eq!(read, whole, "same bytes, same per-byte ghost, same value");
        assert!(s.is_empty() && s.runs().is_empty());
        assert_eq!(read.runs(), [Run { len: 20, owner: DeviceStart, start: true }]);
    }

    #[test]
    fn two_messages_of_one_owner_stay_two_runs() {
        let mut s = Stream::message(MainLoop, &[0; 4]);
        s.push_message(MainLoop, &[0; 4]);
        assert_eq!(s.runs().len(), 2);
        assert!(s.runs().iter().all(|r| r.start));
    }

    #[test]
    fn the_digest_follows_the_cells() {
        let a = Stream::message(DeviceStart, &[1; 20]);
        let b = Stream::message(DeviceStart, &[2; 20]);
        let c = Stream::message(PostcopyListen, &[1; 20]);
        assert_ne!(a.digest, b.digest);
        assert_ne!(a.digest, c.digest);
        let mut pieces = a.clone();
        let mut joined = pieces.take(7);
        joined.append(pieces.take_all());
        assert_eq!((joined.digest, &joined), (a.digest, &a));
        assert_eq!(Stream::new().digest, digest(&[]));
    }

    #[test]
    fn hex_shows_words_then_a_byte_tail() {
        let mut b = protocol::wire::ack_reply(protocol::wire::Request::IotlbMsg, 0);
        assert_eq!(hex(&b[..12]), "[16 5 8]");
        b.truncate(14);
        assert_eq!(hex(&b), "[16 5 8 | 00 00]");
        assert_eq!(hex(&[]), "[]");
    }
}
