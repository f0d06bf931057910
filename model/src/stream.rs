//! One direction of a vhost-user socket as the model keeps it: the bytes in
//! flight, in order, with ghost data per run of bytes (whose request the
//! bytes belong to or answer, and whether a message starts at the run's
//! first byte), so that the properties can say who read whose reply and
//! whether a header read began where a message begins.
//!
//! A write appends a whole message (one run). A read takes exactly the
//! bytes it asks for, from any offset: a run is split where a read ends, and
//! the part left on the stream no longer starts a message. The runs are kept
//! in one canonical form (a run that does not start a message is merged into
//! the run before it when both have the same owner), so two streams with the
//! same bytes and the same owner and message start per byte are equal, and
//! the model's state count is that of a per-byte ghost.
//!
//! Leaves out: file descriptors sent with a message (none of the modelled
//! messages carries one) and the kernel's buffer limits (a write always fits).

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

/// Bytes on a stream (or read from one), with their ghost runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Stream {
    bytes: Vec<u8>,
    runs: Vec<Run>,
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
        self.bytes.len()
    }

    /// Whether no byte is there.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// The bytes, in order.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The ghost runs, in order; their lengths add up to [`Stream::len`].
    pub fn runs(&self) -> &[Run] {
        &self.runs
    }

    /// Appends a whole message of `owner` (`vhost_user_write`: one `sendmsg`).
    pub fn push_message(&mut self, owner: ThreadRole, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        self.bytes.extend_from_slice(bytes);
        self.push_run(Run { len: run_len(bytes.len()), owner, start: true });
    }

    fn push_run(&mut self, run: Run) {
        match self.runs.last_mut() {
            Some(last) if !run.start && last.owner == run.owner => last.len += run.len,
            _ => self.runs.push(run),
        }
    }

    /// Appends bytes taken from another stream, ghost data and all.
    pub fn append(&mut self, other: Stream) {
        self.bytes.extend(other.bytes);
        for r in other.runs {
            self.push_run(r);
        }
    }

    /// Takes the first `n` bytes off the stream (a read of `n` bytes).
    ///
    /// # Panics
    /// If fewer than `n` bytes are there.
    pub fn take(&mut self, n: usize) -> Stream {
        assert!(n <= self.len(), "take {n} of {} bytes", self.len());
        let bytes: Vec<u8> = self.bytes.drain(..n).collect();
        let mut runs = Vec::new();
        let mut left = n;
        while left > 0 {
            let head = &mut self.runs[0];
            let len = usize::from(head.len);
            if len <= left {
                runs.push(self.runs.remove(0));
                left -= len;
            } else {
                runs.push(Run { len: run_len(left), ..*head });
                head.len -= run_len(left);
                head.start = false;
                left = 0;
            }
        }
        Stream { bytes, runs }
    }

    /// The first `n` bytes, left on the stream (what a read of `n` would take).
    ///
    /// # Panics
    /// If fewer than `n` bytes are there.
    pub fn peek(&self, n: usize) -> Stream {
        self.clone().take(n)
    }

    /// Empties the stream, returning what it held.
    pub fn take_all(&mut self) -> Stream {
        std::mem::take(self)
    }

    /// Whether a message starts at the first byte.
    pub fn starts_message(&self) -> bool {
        self.runs.first().is_some_and(|r| r.start)
    }

    /// The owner of the first byte.
    pub fn first_owner(&self) -> Option<ThreadRole> {
        self.runs.first().map(|r| r.owner)
    }

    /// Whether every byte belongs to `role`.
    pub fn all_owned_by(&self, role: ThreadRole) -> bool {
        self.runs.iter().all(|r| r.owner == role)
    }

    /// The first owner that is not `role`, if any byte is someone else's.
    pub fn foreign_owner(&self, role: ThreadRole) -> Option<ThreadRole> {
        self.runs.iter().map(|r| r.owner).find(|&o| o != role)
    }

    /// The header in the first 12 bytes, as `vhost_user_read_header` decodes it.
    ///
    /// # Panics
    /// If fewer than 12 bytes are there.
    pub fn header(&self) -> Header {
        bytes_header(&self.bytes)
    }
}

/// The header in the first 12 of `bytes`.
///
/// # Panics
/// If fewer than 12 bytes are given.
pub fn bytes_header(bytes: &[u8]) -> Header {
    Header::from_bytes(bytes[..HEADER_SIZE].try_into().expect("12 header bytes"))
}

fn run_len(n: usize) -> u16 {
    u16::try_from(n).expect("a run is shorter than 64 KiB")
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
    fn a_read_inside_a_message_splits_its_run_and_the_rest_starts_nothing() {
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
    }

    #[test]
    fn two_messages_of_one_owner_stay_two_runs() {
        let mut s = Stream::message(MainLoop, &[0; 4]);
        s.push_message(MainLoop, &[0; 4]);
        assert_eq!(s.runs().len(), 2);
        assert!(s.runs().iter().all(|r| r.start));
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
