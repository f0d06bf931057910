//! What a run leaves behind for tests: the QEMU log (the sink every front-end
//! error goes to, as [`LogLine`]s) and a ghost record of every request/reply
//! pair the front-end completed or failed, saying what the thread received.
//!
//! Models: QEMU's `error_report` output of one process, in the order the
//! lines were logged, and a diagnostic the real QEMU does not have: per
//! request, the reply header the thread actually read. From it tests tell
//! apart a *misframed header* (flags not 0x5: the thread read from the middle
//! of a message), a *misdelivered reply* (a whole reply to another request
//! code) and a *swapped reply* (two threads each got the other's reply; see
//! [`Record::swapped_pairs`]).
//!
//! Leaves out: misdelivery between two requests of the same code (two IOTLB
//! updates): their replies are byte-identical, so no reader can tell, and the
//! reference does not tag bytes with their owner (the model's ghost words do).

use serde::Serialize;

use crate::qemu_log::{LogLine, QemuError};
use crate::scenario::ThreadRole;
use crate::sync::{Monitor, SyncFamily};
use crate::wire::{Header, WireError};

/// How one request/reply pair ended, as seen by the thread that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum DeliveryOutcome {
    /// A reply header with this request's code and flags 0x5, and its payload.
    Replied,
    /// The header read had flags other than 0x5: the thread read from the
    /// middle of a message (QEMU: `Flags 0x.. instead of 0x5`).
    MisframedHeader {
        /// Flags found.
        flags: u32,
    },
    /// A well-formed reply to another request code (QEMU: `Received
    /// unexpected msg type`).
    Misdelivered {
        /// Request code of the reply received.
        received: u32,
    },
    /// The reply header announced more than the maximum payload.
    Oversized {
        /// The size found.
        size: u32,
    },
    /// The stream ended (or was shut down) before a whole header or payload.
    Short,
    /// The reply came with file descriptors it should not carry (closed).
    UnexpectedFds,
}

/// One request/reply pair the front-end attempted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub struct Delivery {
    /// The thread that sent the request.
    pub role: ThreadRole,
    /// The request code sent.
    pub request: u32,
    /// The header the thread read, if it read 12 bytes.
    pub received: Option<Header>,
    /// How it ended.
    pub outcome: DeliveryOutcome,
}

impl Delivery {
    /// Whether this delivery shows the race: a header read mid-message or a
    /// whole reply to another request.
    pub fn is_race_symptom(&self) -> bool {
        matches!(
            self.outcome,
            DeliveryOutcome::MisframedHeader { .. } | DeliveryOutcome::Misdelivered { .. }
        )
    }

    /// Classifies what a thread read for `request`, by QEMU's reply check
    /// ([`Header::validate_reply_for`]).
    pub fn classify(role: ThreadRole, request: u32, received: Option<Header>) -> Delivery {
        let outcome = match received.map(|h| h.validate_reply_for(request)) {
            None => DeliveryOutcome::Short,
            Some(Ok(())) => DeliveryOutcome::Replied,
            Some(Err(WireError::BadFlags { got, .. })) => {
                DeliveryOutcome::MisframedHeader { flags: got }
            }
            Some(Err(WireError::PayloadTooLarge(size))) => DeliveryOutcome::Oversized { size },
            Some(Err(WireError::UnexpectedRequest { received, .. })) => {
                DeliveryOutcome::Misdelivered { received }
            }
            Some(Err(e)) => unreachable!("the reply check gives flags, size or code errors: {e}"),
        };
        Delivery { role, request, received, outcome }
    }
}

#[derive(Debug, Default)]
struct Inner {
    log: Vec<LogLine>,
    deliveries: Vec<Delivery>,
}

/// The log sink and delivery record of one front-end, over sync family `F`.
pub struct Record<F: SyncFamily> {
    inner: F::Monitor<Inner>,
}

impl<F: SyncFamily> Default for Record<F> {
    fn default() -> Self {
        Record { inner: F::Monitor::new(Inner::default()) }
    }
}

impl<F: SyncFamily> std::fmt::Debug for Record<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record").field("log", &self.rendered()).finish()
    }
}

impl<F: SyncFamily> Record<F> {
    /// An empty record.
    pub fn new() -> Self {
        Self::default()
    }

    /// `error_report` from thread `role`.
    pub fn log(&self, role: ThreadRole, error: QemuError) {
        self.inner.with(|i| i.log.push(LogLine::from_thread(role.tid(), error)));
    }

    /// Records a request/reply pair.
    pub fn deliver(&self, d: Delivery) {
        self.inner.with(|i| i.deliveries.push(d));
    }

    /// The log lines so far, in order.
    pub fn log_lines(&self) -> Vec<LogLine> {
        self.inner.with(|i| i.log.clone())
    }

    /// The log as QEMU prints it, one line each.
    pub fn rendered(&self) -> Vec<String> {
        self.log_lines().iter().map(|l| l.to_string()).collect()
    }

    /// The deliveries so far, in completion order.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.inner.with(|i| i.deliveries.clone())
    }

    /// Pairs of misdelivered replies that are each other's: thread A got the
    /// reply to B's request code and B got the reply to A's (whole replies
    /// swapped).
    pub fn swapped_pairs(&self) -> Vec<(Delivery, Delivery)> {
        let ds = self.deliveries();
        let mut out = Vec::new();
        for (i, a) in ds.iter().enumerate() {
            for b in &ds[i + 1..] {
                if let (
                    DeliveryOutcome::Misdelivered { received: ra },
                    DeliveryOutcome::Misdelivered { received: rb },
                ) = (a.outcome, b.outcome)
                {
                    if a.role != b.role && ra == b.request && rb == a.request {
                        out.push((*a, *b));
                    }
                }
            }
        }
        out
    }
}
