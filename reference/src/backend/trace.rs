//! The back-end's request trace: one JSON line per message received or sent,
//! with the time since the back-end started, so that a test (or a person)
//! can read what a front-end such as QEMU sent and what it was answered.
//!
//! Leaves out: payload bytes beyond a short description, and messages on the
//! back-end channel.

use std::io::Write;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::wire::{Header, Request};

/// Which way a message went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// From the front-end.
    Received,
    /// To the front-end.
    Sent,
    /// What the back-end made of the request just received (an IOTLB
    /// update's guest physical address).
    Translated,
    /// A reply it holds back (fault injection).
    Held,
}

/// One traced message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Seconds since the back-end started.
    pub t: f64,
    /// Connection number (the back-end serves reconnecting front-ends).
    pub conn: u32,
    /// Received or sent.
    pub dir: Direction,
    /// The request's C name, or `unknown`.
    pub request: String,
    /// The header's request code.
    pub code: u32,
    /// The header's flags.
    pub flags: u32,
    /// The header's size.
    pub size: u32,
    /// Descriptors that came or went with it.
    pub fds: usize,
    /// What the payload says, where it matters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl TraceEvent {
    /// The event for header `h`.
    pub fn new(
        since_start: Duration,
        conn: u32,
        dir: Direction,
        h: &Header,
        fds: usize,
        note: Option<String>,
    ) -> Self {
        let request = Request::try_from(h.request).map_or("unknown", Request::c_name).to_string();
        TraceEvent {
            t: since_start.as_secs_f64(),
            conn,
            dir,
            request,
            code: h.request,
            flags: h.flags,
            size: h.size,
            fds,
            note,
        }
    }

    /// Writes the event as one JSON line and flushes, so that a reader of
    /// the file sees it at once.
    pub fn write_line(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let line = serde_json::to_string(self).map_err(std::io::Error::other)?;
        writeln!(out, "{line}")?;
        out.flush()
    }

    /// Parses a trace file's lines; a line that is not an event is an error
    /// naming its number.
    pub fn parse_all(text: &str) -> Result<Vec<TraceEvent>, String> {
        text.lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| serde_json::from_str(l).map_err(|e| format!("trace line {}: {e}", i + 1)))
            .collect()
    }

    /// Whether this is the receipt of request `r`.
    pub fn received(&self, r: Request) -> bool {
        self.dir == Direction::Received && self.code == r as u32
    }
}

/// A trace destination shared between the back-end's thread and a reader
/// in the same process (tests, `qemu-replay`): lines go to memory.
#[derive(Debug, Clone, Default)]
pub struct SharedTrace(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

impl SharedTrace {
    /// The events written so far.
    pub fn events(&self) -> Vec<TraceEvent> {
        let text = String::from_utf8_lossy(&self.0.lock()).into_owned();
        // Only whole lines are parsed: a line being written is left for later.
        let whole = text.rfind('\n').map_or("", |i| &text[..=i]);
        TraceEvent::parse_all(whole).unwrap_or_default()
    }
}

impl Write for SharedTrace {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
