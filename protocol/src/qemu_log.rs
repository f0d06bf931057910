//! QEMU's vhost-user error messages, once: how the model, the reference
//! front-end and the checker render them, and how `explain` parses them back.
//!
//! Models: the `error_report` lines of `vhost_user_read_header`,
//! `vhost_user_read`, `process_message_reply`, `vhost_device_iotlb_miss` and
//! `vhost_user_postcopy_end` (QEMU mid-2024), in the form
//! `qemu-kvm: <function>: <pid>,<tid>: <message>`, and the plain form without
//! the `function: pid,tid:` part.
//!
//! Leaves out: every other QEMU message (the parser counts such lines as
//! unrelated), and the `error_setg` chaining QEMU applies above these calls.

use std::fmt;

use crate::wire::{HEADER_SIZE, MAX_PAYLOAD, REPLY_FLAGS};

/// The process id the rendered logs use (the example on the facts page).
pub const QEMU_PID: u32 = 4100;

/// One vhost-user error QEMU logs, with the numbers it prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum QemuError {
    /// `vhost_user_read_header`: fewer than 12 header bytes (EOF or error).
    ReadHeaderShort {
        /// What `read_all` returned.
        read: i32,
        /// The request whose reply was awaited.
        request: u32,
    },
    /// `vhost_user_read_header`: flags other than 0x5; the payload is not read.
    ReadHeaderFlags {
        /// The flags found.
        flags: u32,
    },
    /// `vhost_user_read`: the announced size exceeds the maximum.
    ReadHeaderSize {
        /// The size found.
        size: u32,
    },
    /// `vhost_user_read`: fewer payload bytes than announced.
    ReadPayloadShort {
        /// What `read_all` returned.
        read: i32,
        /// The size announced.
        size: u32,
    },
    /// `process_message_reply`: the reply's request code is not the request's.
    UnexpectedMsgType {
        /// The request sent.
        expected: u32,
        /// The code in the reply header read.
        received: u32,
    },
    /// `vhost_device_iotlb_miss`: the IOTLB update failed.
    IotlbUpdateFailed,
    /// `vhost_user_postcopy_end`: the reply to POSTCOPY_END failed.
    PostcopyEndFailed,
    /// `vhost_user_get_vring_base`: the reply's size is not a
    /// `vhost_vring_state`'s 8 bytes.
    BadMsgSize,
    /// `vhost_virtqueue_stop` at device stop: GET_VRING_BASE failed (always
    /// with -EPROTO, 71, on the read paths modelled here).
    RingRestoreFailed {
        /// The virtqueue index within the device.
        vq: u32,
    },
}

/// `EPROTO`: what every failed reply check of QEMU's read path returns.
pub const EPROTO: i32 = 71;

impl QemuError {
    /// The QEMU function that logs it.
    pub fn function(&self) -> &'static str {
        match self {
            QemuError::ReadHeaderShort { .. } | QemuError::ReadHeaderFlags { .. } => {
                "vhost_user_read_header"
            }
            QemuError::ReadHeaderSize { .. } | QemuError::ReadPayloadShort { .. } => {
                "vhost_user_read"
            }
            QemuError::UnexpectedMsgType { .. } => "process_message_reply",
            QemuError::IotlbUpdateFailed => "vhost_device_iotlb_miss",
            QemuError::PostcopyEndFailed => "vhost_user_postcopy_end",
            QemuError::BadMsgSize => "vhost_user_get_vring_base",
            QemuError::RingRestoreFailed { .. } => "vhost_virtqueue_stop",
        }
    }

    /// A short stable name of the kind of message, for matching without numbers.
    pub fn kind(&self) -> &'static str {
        match self {
            QemuError::ReadHeaderShort { .. } => "read-header-short",
            QemuError::ReadHeaderFlags { .. } => "read-header-flags",
            QemuError::ReadHeaderSize { .. } => "read-header-size",
            QemuError::ReadPayloadShort { .. } => "read-payload-short",
            QemuError::UnexpectedMsgType { .. } => "unexpected-msg-type",
            QemuError::IotlbUpdateFailed => "iotlb-update-failed",
            QemuError::PostcopyEndFailed => "postcopy-end-failed",
            QemuError::BadMsgSize => "bad-msg-size",
            QemuError::RingRestoreFailed { .. } => "ring-restore-failed",
        }
    }

    /// Parses a message text (without prefix) back into the error it reports.
    pub fn parse_message(msg: &str) -> Option<QemuError> {
        let msg = msg.trim_end();
        if let Some(rest) = msg.strip_prefix("Failed to read msg header. Flags 0x") {
            let (flags, tail) = rest.split_once(" instead of 0x")?;
            let expected = tail.strip_suffix('.')?;
            if u32::from_str_radix(expected, 16).ok()? != REPLY_FLAGS {
                return None;
            }
            return Some(QemuError::ReadHeaderFlags {
                flags: u32::from_str_radix(flags, 16).ok()?,
            });
        }
        if let Some(rest) = msg.strip_prefix("Failed to read msg header. Read ") {
            let (read, tail) = rest.split_once(" instead of ")?;
            let (_, req) = tail.split_once(". Original request ")?;
            return Some(QemuError::ReadHeaderShort {
                read: read.parse().ok()?,
                request: req.strip_suffix('.')?.parse().ok()?,
            });
        }
        if let Some(rest) = msg.strip_prefix("Failed to read msg header. Size ") {
            let (size, _) = rest.split_once(" exceeds the maximum ")?;
            return Some(QemuError::ReadHeaderSize { size: size.parse().ok()? });
        }
        if let Some(rest) = msg.strip_prefix("Failed to read msg payload. Read ") {
            let (read, size) = rest.split_once(" instead of ")?;
            return Some(QemuError::ReadPayloadShort {
                read: read.parse().ok()?,
                size: size.strip_suffix('.')?.parse().ok()?,
            });
        }
        if let Some(rest) = msg.strip_prefix("Received unexpected msg type. Expected ") {
            let (expected, received) = rest.split_once(" received ")?;
            return Some(QemuError::UnexpectedMsgType {
                expected: expected.parse().ok()?,
                received: received.parse().ok()?,
            });
        }
        if let Some(rest) = msg.strip_prefix("vhost VQ ") {
            let (vq, tail) = rest.split_once(" ring restore failed: ")?;
            let proto = format!("-{EPROTO}: Protocol error ({EPROTO})");
            return (tail == proto)
                .then_some(QemuError::RingRestoreFailed { vq: vq.parse().ok()? });
        }
        match msg {
            "Fail to update device iotlb" => Some(QemuError::IotlbUpdateFailed),
            "Failed to receive reply to postcopy_end" => Some(QemuError::PostcopyEndFailed),
            "Received bad msg size." => Some(QemuError::BadMsgSize),
            _ => None,
        }
    }
}

impl fmt::Display for QemuError {
    /// The message text exactly as QEMU's `error_report` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            QemuError::ReadHeaderShort { read, request } => write!(
                f,
                "Failed to read msg header. Read {read} instead of {HEADER_SIZE}. Original request {request}."
            ),
            QemuError::ReadHeaderFlags { flags } => write!(
                f,
                "Failed to read msg header. Flags 0x{flags:x} instead of 0x{REPLY_FLAGS:x}."
            ),
            QemuError::ReadHeaderSize { size } => write!(
                f,
                "Failed to read msg header. Size {size} exceeds the maximum {MAX_PAYLOAD}."
            ),
            QemuError::ReadPayloadShort { read, size } => {
                write!(f, "Failed to read msg payload. Read {read} instead of {size}.")
            }
            QemuError::UnexpectedMsgType { expected, received } => {
                write!(f, "Received unexpected msg type. Expected {expected} received {received}")
            }
            QemuError::IotlbUpdateFailed => write!(f, "Fail to update device iotlb"),
            QemuError::PostcopyEndFailed => write!(f, "Failed to receive reply to postcopy_end"),
            QemuError::BadMsgSize => write!(f, "Received bad msg size."),
            // VHOST_OPS_DEBUG: the message, then ": %s (%d)" with strerror.
            QemuError::RingRestoreFailed { vq } => write!(
                f,
                "vhost VQ {vq} ring restore failed: -{EPROTO}: Protocol error ({EPROTO})"
            ),
        }
    }
}

/// One log line: the error and, where the log had them, pid and tid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct LogLine {
    /// `pid,tid` of the thread that logged, if the line carries them.
    pub ids: Option<(u32, u32)>,
    /// What was logged.
    pub error: QemuError,
}

impl LogLine {
    /// A line from thread `tid` of the QEMU process [`QEMU_PID`].
    pub fn from_thread(tid: u32, error: QemuError) -> Self {
        LogLine { ids: Some((QEMU_PID, tid)), error }
    }

    /// Parses one line of a real log. Accepts an optional timestamp or other
    /// prefix before `qemu-kvm:`/`qemu-system-*:`, the program prefix itself
    /// optional, and the `function: pid,tid:` part optional. Returns `None`
    /// for lines that are not one of the messages this project models.
    pub fn parse(line: &str) -> Option<LogLine> {
        let line = line.trim();
        // Drop anything before the program name (timestamps, journal fields).
        let body = match find_program_prefix(line) {
            Some(end) => &line[end..],
            None => line,
        };
        let body = body.trim_start();
        if let Some(error) = QemuError::parse_message(body) {
            return Some(LogLine { ids: None, error });
        }
        // `function: pid,tid: message`
        let (function, rest) = body.split_once(": ")?;
        let rest = rest.trim_start();
        let (ids, message) = match rest.split_once(": ") {
            Some((ids, message)) if parse_ids(ids).is_some() => (parse_ids(ids), message),
            _ => (None, rest),
        };
        let error = QemuError::parse_message(message)?;
        if error.function() != function {
            return None;
        }
        Some(LogLine { ids, error })
    }
}

/// How each modelled message begins (numbers follow): where a torn line
/// is cut, and what makes a line that does not parse an unparsed message.
const MESSAGE_STARTS: [&str; 6] = [
    "Failed to read msg ",
    "Received unexpected msg type.",
    "Fail to update device iotlb",
    "Failed to receive reply to postcopy_end",
    "Received bad msg size.",
    "vhost VQ ",
];

/// Whether `s` starts with an ISO 8601 timestamp as `-msg timestamp=on`
/// prints it (`2026-11-28T08:17:39.487322Z`), and its length.
fn timestamp_len(s: &[u8]) -> Option<usize> {
    let shape = b"dddd-dd-ddTdd:dd:dd";
    if s.len() < shape.len() {
        return None;
    }
    let fits =
        shape.iter().zip(s).all(|(&p, &c)| if p == b'd' { c.is_ascii_digit() } else { c == p });
    if !fits {
        return None;
    }
    let rest = &s[shape.len()..];
    let frac = rest.iter().skip(1).take_while(|c| c.is_ascii_digit()).count();
    let mut n = shape.len();
    if rest.first() == Some(&b'.') {
        n += 1 + frac;
    }
    if s.get(n) == Some(&b'Z') {
        n += 1;
    }
    Some(n)
}

impl LogLine {
    /// Whether a line that [`LogLine::parse`] rejects still carries one of
    /// the modelled messages' texts: a number too large for its field
    /// (`Flags 0xffffffffffffffff`: QEMU prints a 32-bit value), a flags
    /// word compared with something other than 0x5, a function name that
    /// does not log that message. `explain` reports such lines as unparsed
    /// instead of counting them as unrelated.
    pub fn is_unparsed_message(line: &str) -> bool {
        LogLine::parse(line).is_none() && MESSAGE_STARTS.iter().any(|m| line.contains(m))
    }

    /// The modelled messages in a line that concurrent threads tore: two
    /// timestamps or program prefixes on one line, two messages glued
    /// together, a QEMU trace event in front of a message. The line is cut
    /// at every timestamp, program prefix and message start, and each piece
    /// is parsed alone (a piece keeps no `function: pid,tid:` part). A line
    /// [`LogLine::parse`] reads whole is returned as that one line.
    pub fn parse_torn(line: &str) -> Vec<LogLine> {
        if let Some(l) = LogLine::parse(line) {
            return vec![l];
        }
        let bytes = line.as_bytes();
        let mut cuts = vec![0, line.len()];
        for (i, _) in line.char_indices() {
            let rest = &line[i..];
            if MESSAGE_STARTS.iter().any(|m| rest.starts_with(m)) {
                cuts.push(i);
            } else if let Some(n) = timestamp_len(&bytes[i..]) {
                cuts.extend([i, i + n]);
            } else if rest.starts_with("qemu-kvm:") || rest.starts_with("qemu-system-") {
                cuts.push(i);
                if let Some(c) = rest.find(':') {
                    cuts.push(i + c + 1);
                }
            }
        }
        cuts.sort_unstable();
        cuts.dedup();
        cuts.windows(2)
            .filter_map(|w| LogLine::parse(&line[w[0]..w[1]]))
            .map(|l| LogLine { ids: None, ..l })
            .collect()
    }
}

/// Byte offset just past `qemu-kvm:` or `qemu-system-<arch>:` if present.
fn find_program_prefix(line: &str) -> Option<usize> {
    // Every occurrence: a journal line names the program twice, first as
    // `qemu-system-x86_64[pid]:` (not the prefix), then as QEMU prints it.
    for name in ["qemu-kvm:", "qemu-system-"] {
        for (pos, _) in line.match_indices(name) {
            let after = pos + name.len();
            if name.ends_with(':') {
                return Some(after);
            }
            let Some(colon) = line[after..].find(':') else { continue };
            if line[after..after + colon].chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Some(after + colon + 1);
            }
        }
    }
    None
}

fn parse_ids(s: &str) -> Option<(u32, u32)> {
    let (pid, tid) = s.split_once(',')?;
    Some((pid.trim().parse().ok()?, tid.trim().parse().ok()?))
}

impl fmt::Display for LogLine {
    /// `qemu-kvm: <function>: <pid>,<tid>: <message>`, or `qemu-kvm: <message>`
    /// without ids.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ids {
            Some((pid, tid)) => {
                write!(f, "qemu-kvm: {}: {pid},{tid}: {}", self.error.function(), self.error)
            }
            None => write!(f, "qemu-kvm: {}", self.error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FACTS_EXAMPLE: &str = "\
qemu-kvm: process_message_reply: 4100,4100: Received unexpected msg type. Expected 22 received 30
qemu-kvm: vhost_device_iotlb_miss: 4100,4100: Fail to update device iotlb
qemu-kvm: process_message_reply: 4100,4133: Received unexpected msg type. Expected 30 received 22
qemu-kvm: vhost_user_postcopy_end: 4100,4133: Failed to receive reply to postcopy_end";

    #[test]
    fn the_facts_example_round_trips() {
        let lines: Vec<LogLine> =
            FACTS_EXAMPLE.lines().map(|l| LogLine::parse(l).unwrap()).collect();
        assert_eq!(
            lines[0],
            LogLine::from_thread(4100, QemuError::UnexpectedMsgType { expected: 22, received: 30 })
        );
        assert_eq!(lines[3], LogLine::from_thread(4133, QemuError::PostcopyEndFailed));
        let rendered: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
        assert_eq!(rendered.join("\n"), FACTS_EXAMPLE);
    }

    #[test]
    fn every_message_renders_and_parses_back() {
        let all = [
            QemuError::ReadHeaderShort { read: 0, request: 22 },
            QemuError::ReadHeaderFlags { flags: 0 },
            QemuError::ReadHeaderFlags { flags: 0x1e },
            QemuError::ReadHeaderSize { size: 5000 },
            QemuError::ReadPayloadShort { read: 4, size: 8 },
            QemuError::UnexpectedMsgType { expected: 30, received: 22 },
            QemuError::IotlbUpdateFailed,
            QemuError::PostcopyEndFailed,
            QemuError::BadMsgSize,
            QemuError::RingRestoreFailed { vq: 1 },
        ];
        for e in all {
            assert_eq!(QemuError::parse_message(&e.to_string()), Some(e), "{e}");
            let line = LogLine::from_thread(4133, e);
            assert_eq!(LogLine::parse(&line.to_string()), Some(line));
        }
    }

    /// Device stop's lines, as QEMU 7.2 printed them after a misframed race.
    #[test]
    fn device_stop_lines_are_qemus() {
        let got = LogLine::parse(
            "2026-11-28T08:16:01.123456Z qemu-system-x86_64: vhost VQ 0 ring restore failed: -71: Protocol error (71)",
        );
        assert_eq!(got.map(|l| l.error), Some(QemuError::RingRestoreFailed { vq: 0 }));
        assert_eq!(
            LogLine::parse(
                "qemu-system-x86_64: vhost VQ 0 ring restore failed: -5: Input/output error (5)"
            ),
            None,
            "an EOF is not a failure the model makes"
        );
    }

    /// Lines torn by two threads printing at once, as `-msg timestamp=on`
    /// and `-trace` make them.
    #[test]
    fn torn_lines_give_every_message_in_them() {
        use QemuError::*;
        let cases: [(&str, Vec<QemuError>); 5] = [
            (
                "2026-11-28T08:17:39.487322Z 2026-11-28T08:17:39.487331Z qemu-system-x86_64: qemu-system-x86_64: Fail to update device iotlb",
                vec![IotlbUpdateFailed],
            ),
            (
                "2026-11-28T08:17:39.487322Z qemu-system-x86_64: Fail to update device iotlbFailed to receive reply to postcopy_end",
                vec![IotlbUpdateFailed, PostcopyEndFailed],
            ),
            (
                "qemu-system-x86_64: Received unexpected msg type. Expected 22 received 302026-11-28T08:17:39.5Z qemu-system-x86_64: Received unexpected msg type. Expected 30 received 22",
                vec![
                    UnexpectedMsgType { expected: 22, received: 30 },
                    UnexpectedMsgType { expected: 30, received: 22 },
                ],
            ),
            (
                "1234@1764317859.487322:vhost_user_postcopy_end_entry Failed to read msg header. Flags 0x0 instead of 0x5.",
                vec![ReadHeaderFlags { flags: 0 }],
            ),
            ("2026-11-28T08:17:39.487322Z qemu-system-x86_64: ", vec![]),
        ];
        for (line, want) in cases {
            let got: Vec<QemuError> = LogLine::parse_torn(line).iter().map(|l| l.error).collect();
            assert_eq!(got, want, "{line}");
        }
        // A whole line keeps its thread ids.
        let whole = "qemu-kvm: process_message_reply: 4100,4133: Received unexpected msg type. Expected 30 received 22";
        assert_eq!(LogLine::parse_torn(whole)[0].ids, Some((4100, 4133)));
    }

    #[test]
    fn the_flags_message_is_qemus() {
        assert_eq!(
            QemuError::ReadHeaderFlags { flags: 0 }.to_string(),
            "Failed to read msg header. Flags 0x0 instead of 0x5."
        );
    }

    #[test]
    fn prefixes_and_plain_lines_parse() {
        let plain = LogLine::parse("qemu-kvm: Fail to update device iotlb").unwrap();
        assert_eq!(plain, LogLine { ids: None, error: QemuError::IotlbUpdateFailed });
        let stamped = LogLine::parse(
            "2024-08-01T10:00:00.123456Z qemu-system-x86_64: vhost_user_read_header: 7,9: Failed to read msg header. Flags 0x0 instead of 0x5.",
        )
        .unwrap();
        assert_eq!(stamped.ids, Some((7, 9)));
        assert_eq!(stamped.error, QemuError::ReadHeaderFlags { flags: 0 });
        let bare = LogLine::parse("Failed to receive reply to postcopy_end").unwrap();
        assert_eq!(bare.error, QemuError::PostcopyEndFailed);
    }

    #[test]
    fn journal_lines_name_the_program_twice() {
        let l = LogLine::parse(
            "Aug 01 10:17:41 host qemu-system-x86_64[31337]: qemu-system-x86_64: vhost_user_postcopy_end: 31337,31342: Failed to receive reply to postcopy_end",
        )
        .unwrap();
        assert_eq!(l, LogLine { ids: Some((31337, 31342)), error: QemuError::PostcopyEndFailed });
        let k = LogLine::parse(
            "Aug 01 10:17:41 host qemu-kvm[31337]: qemu-kvm: Fail to update device iotlb",
        );
        assert_eq!(k, Some(LogLine { ids: None, error: QemuError::IotlbUpdateFailed }));
    }

    #[test]
    fn unrelated_and_mangled_lines_are_not_messages() {
        for l in [
            "qemu-kvm: terminating on signal 15 from pid 1",
            "",
            "qemu-kvm: vhost_user_postcopy_end: 4100,4133: Fail to update device iotlb",
            "Received unexpected msg type. Expected x received 3",
            "Failed to read msg header. Flags 0x0 instead of 0x7.",
        ] {
            assert_eq!(LogLine::parse(l), None, "{l:?}");
        }
    }

    #[test]
    fn numbers_that_overflow_are_unparsed_messages_not_unrelated_lines() {
        for l in [
            "qemu-kvm: vhost_user_read_header: 4100,4133: Failed to read msg header. Flags 0xffffffffffffffff instead of 0x5.",
            "qemu-kvm: process_message_reply: 4100,4100: Received unexpected msg type. Expected 99999999999 received 30",
            "qemu-kvm: Failed to read msg header. Size 4294967296 exceeds the maximum 4096.",
        ] {
            assert_eq!(LogLine::parse(l), None, "{l:?}");
            assert!(LogLine::is_unparsed_message(l), "{l:?}");
        }
        let fits = "qemu-kvm: vhost_user_read_header: 4100,4133: Failed to read msg header. Flags 0xffffffff instead of 0x5.";
        assert!(LogLine::parse(fits).is_some());
        assert!(!LogLine::is_unparsed_message(fits));
        assert!(!LogLine::is_unparsed_message("qemu-kvm: terminating on signal 15 from pid 1"));
    }
}
