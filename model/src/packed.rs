//! How a state is hashed: its small fields packed into a few 64-bit words,
//! each stream as its digest ([`crate::Stream`]), so that fingerprinting a
//! state is a dozen hasher writes instead of one per field (the checker
//! fingerprints every state it generates). Equal states pack to equal
//! words, as `Hash` requires; every field is destructured, so a field added
//! to a state and left out here does not compile.
//!
//! [`Hash`] leaves out nothing. [`ForVerdicts`] hashes a state with its QEMU
//! log reduced to whether anything was logged (and a pending log line to
//! whether there is one): the log's lines never decide what can happen
//! next, and the only property that reads the log asks whether it is empty,
//! so states that differ only in their lines have the same futures and the
//! same verdicts. The reduced search ([`crate::reduce`]) takes them as one.

use std::hash::{Hash, Hasher};

use protocol::scenario::ThreadRole;

use crate::{BackendState, Routine, State, ThreadState};

fn routine(r: Routine) -> u64 {
    match r {
        Routine::Absent => 0,
        Routine::Idle => 1,
        Routine::Done => 2,
        Routine::Running(p) => 3 + p as u64,
    }
}

/// A thread or nobody, in two bits.
fn role(r: Option<ThreadRole>) -> u64 {
    r.map_or(0, |r| 1 + r as u64)
}

impl Hash for ThreadState {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_thread(self, h, true);
    }
}

fn hash_thread<H: Hasher>(t: &ThreadState, h: &mut H, lines: bool) {
    let ThreadState {
        routine: r,
        pc,
        buf,
        hdr,
        expect,
        call_failed,
        start_failed,
        own_acks,
        misses_taken,
        miss_need_reply,
        bh_done,
        reported_success,
        reply_is_own,
        pending_log,
    } = t;
    let reported = match reported_success {
        None => 0,
        Some(false) => 1,
        Some(true) => 2,
    };
    let w0 = routine(*r)
        | u64::from(*pc) << 8
        | u64::from(*own_acks) << 16
        | u64::from(*misses_taken) << 24
        | u64::from(*expect) << 32;
    let flags = u64::from(*call_failed)
        | u64::from(*start_failed) << 1
        | u64::from(*miss_need_reply) << 2
        | u64::from(*bh_done) << 3
        | u64::from(*reply_is_own) << 4
        | reported << 5
        | u64::from(hdr.is_some()) << 7
        | u64::from(pending_log.is_some()) << 8;
    let (w1, w2) = match hdr {
        Some(hd) => {
            (flags | u64::from(hd.size) << 32, u64::from(hd.request) | u64::from(hd.flags) << 32)
        }
        None => (flags, 0),
    };
    h.write_u64(w0);
    h.write_u64(w1);
    h.write_u64(w2);
    buf.hash(h);
    if let (true, Some(e)) = (lines, pending_log) {
        e.hash(h);
    }
}

impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_state(self, h, true);
    }
}

/// A state hashed for the verdicts only: its log as whether anything was
/// logged (see the module doc).
pub(crate) struct ForVerdicts<'a>(pub &'a State);

impl Hash for ForVerdicts<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_state(self.0, h, false);
    }
}

fn hash_state<H: Hasher>(s: &State, h: &mut H, lines: bool) {
    let State {
        threads,
        backend: BackendState { misses_sent, awaiting_miss_reply, unsent },
        to_backend,
        to_frontend,
        backend_channel,
        backend_channel_replies,
        bql,
        mutex,
        bh_pending,
        log,
        stolen,
        misframed,
        reply_queue,
        reader,
        reader_buf,
        bql_lent_by,
    } = s;
    for t in threads {
        hash_thread(t, h, lines);
    }
    // The queue holds each thread at most once: up to 3 entries of 2 bits.
    let queue = reply_queue.iter().fold(0u64, |q, &r| q << 2 | (1 + r as u64));
    h.write_u64(
        u64::from(*misses_sent)
            | u64::from(*awaiting_miss_reply) << 8
            | role(*bql) << 9
            | role(*mutex) << 11
            | role(*reader) << 13
            | role(*bql_lent_by) << 15
            | u64::from(*bh_pending) << 17
            | u64::from(*stolen) << 18
            | u64::from(*misframed) << 19
            | queue << 24,
    );
    for s in [to_backend, to_frontend, backend_channel, backend_channel_replies, reader_buf, unsent]
    {
        s.hash(h);
    }
    if lines {
        log.hash(h);
    } else {
        h.write_u8(u8::from(log.is_empty()));
    }
}
