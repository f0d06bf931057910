//! How a state is hashed: its small fields packed into a few 64-bit words,
//! each stream as its digest ([`crate::Stream`]), so that fingerprinting a
//! state is a dozen hasher writes instead of one per field (the checker
//! fingerprints every state it generates). Equal states pack to equal
//! words, as `Hash` requires; every field is destructured, so a field added
//! to a state and left out here does not compile.
//!
//! [`Hash`] leaves out nothing. [`ForVerdicts`] leaves out what can no
//! longer change a verdict, so that the reduced search
//! ([`crate::reduce`]) and the search of shortest counterexamples take
//! states that differ only there as one:
//! - the log's lines (kept: whether anything was logged, and whether a line
//!   is pending): no move reads them, and "no log" asks only whether there
//!   are any;
//! - the bytes of a read whose call has already failed, kept as their
//!   number: a header whose flags (bytes 4 to 8) are not 0x5, whose rest
//!   `vhost_user_read_header` never looks at, and a payload after a header
//!   with the wrong request code (`process_message_reply` fails whatever
//!   it holds) or of GET_VRING_BASE (checked by its header's size);
//! - the request code of such a header beyond "not the one expected";
//! - the ghost data, once what it feeds is settled: a byte's owner feeds
//!   `stolen` and device start's own acks, a message start feeds
//!   `misframed` and the same acks; `stolen` and `misframed` never go back
//!   to false, and the acks stop mattering once one update device start
//!   finished was not acknowledged by its own reply (it can no longer count
//!   them all) or every update is finished; `reply_is_own` matters only
//!   during device start's payload read.
//!
//! Why that is sound: two states with one [`ForVerdicts`] hash have the same
//! moves, the same moves kept by the reduction, the same properties, and
//! after each move states with one hash again; so the states it merges are
//! a bisimulation for the verdicts, and merging them keeps every verdict
//! and the length of every shortest counterexample (the path shown is a
//! path of the model: it replays like any other). The test below checks
//! exactly that, state by state, over every state of several scenarios.
//! The full search (`--full`) and `explain` hash states whole.

use std::hash::{Hash, Hasher};

use protocol::scenario::ThreadRole;
use protocol::wire::{self, Request};

use crate::stream::Ghost;
use crate::{BackendState, Op, Program, ReplyRace, Routine, State, ThreadState};

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

/// What a hash keeps: everything, or what the verdicts need.
#[derive(Clone, Copy)]
enum Keep<'m> {
    /// Every field ([`Hash`]).
    All,
    /// What can still change a verdict ([`ForVerdicts`]).
    Verdicts(&'m ReplyRace),
}

/// What [`Keep::Verdicts`] keeps of one state's ghost data (see the module doc).
#[derive(Clone, Copy)]
struct Live {
    /// Per stream byte: its owner and whether a message starts there.
    ghost: Ghost,
    /// Device start's own acks still count: "start ok" is not settled.
    own_acks: bool,
}

#[inline(always)]
fn hash_thread<H: Hasher>(t: &ThreadState, role: ThreadRole, h: &mut H, keep: Keep, live: Live) {
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
    let mut own_acks = *own_acks;
    let mut reply_is_own = *reply_is_own;
    let mut hdr = *hdr;
    // Whether the bytes of the read in progress can still matter: a read
    // whose call has already failed keeps only its length.
    let mut buf_live = true;
    if let Keep::Verdicts(model) = keep {
        let device_start = role == ThreadRole::DeviceStart;
        let op = model.current_op(t);
        // `reply_is_own` is read only when device start's payload read ends.
        if !(device_start && live.own_acks && op == Some(Op::ReadPayload)) {
            reply_is_own = false;
        }
        if device_start && !live.own_acks {
            own_acks = u8::from(own_acks == model.scenario.virtqueues);
        }
        match (op, hdr.as_mut()) {
            (Some(Op::ReadPayload), Some(hd)) => {
                // `process_message_reply` fails on a wrong request code
                // whatever the payload; GET_VRING_BASE's reply is checked
                // by its header alone.
                let mismatch = hd.request != *expect;
                if mismatch || *expect == Request::GetVringBase as u32 {
                    buf_live = false;
                }
                if mismatch {
                    hd.request = u32::MAX;
                }
                hd.flags = 0;
            }
            (Some(Op::ReadHeader), _) => {
                // Flags other than 0x5 fail the header whatever the rest.
                buf_live = buf.word(4).is_none_or(|flags| flags == wire::REPLY_FLAGS);
            }
            _ => {}
        }
    }
    let w0 = routine(*r)
        | u64::from(*pc) << 8
        | u64::from(own_acks) << 16
        | u64::from(*misses_taken) << 24
        | u64::from(*expect) << 32;
    let flags = u64::from(*call_failed)
        | u64::from(*start_failed) << 1
        | u64::from(*miss_need_reply) << 2
        | u64::from(*bh_done) << 3
        | u64::from(reply_is_own) << 4
        | reported << 5
        | u64::from(hdr.is_some()) << 7
        | u64::from(pending_log.is_some()) << 8
        | u64::from(buf_live) << 9;
    let (w1, w2) = match hdr {
        Some(hd) => {
            (flags | u64::from(hd.size) << 32, u64::from(hd.request) | u64::from(hd.flags) << 32)
        }
        None => (flags, 0),
    };
    h.write_u64(w0);
    h.write_u64(w1);
    h.write_u64(w2);
    if buf_live {
        buf.hash_keeping(live.ghost, h);
    } else {
        h.write_usize(buf.len());
    }
    if let (Keep::All, Some(e)) = (keep, pending_log) {
        e.hash(h);
    }
}

impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_state(self, h, Keep::All);
    }
}

/// A state hashed for the verdicts of `model` only: what can no longer
/// change a verdict is left out (see the module doc).
pub(crate) struct ForVerdicts<'a>(pub &'a ReplyRace, pub &'a State);

impl Hash for ForVerdicts<'_> {
    fn hash<H: Hasher>(&self, h: &mut H) {
        hash_state(self.1, h, Keep::Verdicts(self.0));
    }
}

/// Whether "start ok" is settled in `s`: whether device start's own acks
/// can still decide it. Device start's final `own_acks` only matters as
/// equal to the virtqueues or not; once an update it finished was not
/// acknowledged by its own reply, or it has finished them all, that is
/// known.
fn start_ok_settled(model: &ReplyRace, s: &State) -> bool {
    let t = s.thread(ThreadRole::DeviceStart);
    match t.routine {
        Routine::Running(Program::DeviceStart) => {
            let done = model.updates_finished(usize::from(t.pc));
            t.own_acks < done || done == model.scenario.virtqueues
        }
        _ => true,
    }
}

#[inline(always)]
fn hash_state<H: Hasher>(s: &State, h: &mut H, keep: Keep) {
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
    let live = match keep {
        Keep::All => Live { ghost: Ghost::ALL, own_acks: true },
        Keep::Verdicts(model) => {
            // A byte's owner feeds `stolen` and device start's own acks; a
            // message start feeds `misframed` and the same acks.
            let own_acks = !start_ok_settled(model, s);
            Live {
                ghost: Ghost { owners: !*stolen || own_acks, starts: !*misframed || own_acks },
                own_acks,
            }
        }
    };
    for (t, role) in threads.iter().zip(ThreadRole::ALL) {
        hash_thread(t, role, h, keep, live);
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
        s.hash_keeping(live.ghost, h);
    }
    match keep {
        Keep::All => log.hash(h),
        Keep::Verdicts(_) => h.write_u8(u8::from(log.is_empty())),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use protocol::scenario::Scenario;
    use stateright::Model;

    use crate::reduce::Reduction;
    use crate::search::{fingerprint, fingerprint_for_verdicts};
    use crate::{Prop, ReplyRace, State};

    /// Walks every state of `model` and holds each state against the first
    /// one met with its verdict fingerprint: the same moves, the same moves
    /// kept by the reduction, the same properties, and after each move
    /// successors with one verdict fingerprint again. That makes the states
    /// one fingerprint merges a bisimulation for the verdicts, so merging
    /// them changes no verdict and no shortest counterexample's length.
    /// Returns how many states were merged with another.
    fn merged_states_agree(model: &ReplyRace) -> usize {
        let verdicts = |s: &State| fingerprint_for_verdicts(model, s);
        let reduction = Reduction::new(model);
        let mut first: HashMap<u64, State> = HashMap::new();
        let mut seen: HashSet<u64> = HashSet::new();
        let mut pending = model.init_states();
        let mut merged = 0;
        while let Some(s) = pending.pop() {
            let mut moves = Vec::new();
            model.actions(&s, &mut moves);
            match first.get(&verdicts(&s)) {
                None => {
                    first.insert(verdicts(&s), s.clone());
                }
                Some(rep) if fingerprint(rep) != fingerprint(&s) => {
                    merged += 1;
                    let mut rep_moves = Vec::new();
                    model.actions(rep, &mut rep_moves);
                    assert_eq!(rep_moves, moves, "{rep:#?}\n{s:#?}");
                    let stuck = moves.is_empty();
                    for p in Prop::ALL {
                        assert_eq!(model.holds(p, rep, stuck), model.holds(p, &s, stuck), "{p:?}");
                    }
                    let (mut a, mut b) = (rep_moves.clone(), moves.clone());
                    reduction.ample(rep, &mut a);
                    reduction.ample(&s, &mut b);
                    assert_eq!(a, b, "ample sets of {rep:#?}\n{s:#?}");
                    for &m in &moves {
                        let after = |t: &State| model.next_state(t, m).map(|n| verdicts(&n));
                        assert_eq!(after(rep), after(&s), "{m:?} from {rep:#?}\n{s:#?}");
                    }
                }
                Some(_) => {}
            }
            for m in moves {
                if let Some(n) = model.next_state(&s, m) {
                    if seen.insert(fingerprint(&n)) {
                        pending.push(n);
                    }
                }
            }
        }
        merged
    }

    #[test]
    fn states_merged_for_the_verdicts_have_the_same_futures() {
        let short = Scenario { short_reads: true, ..Scenario::default() };
        let scenarios = [
            short,
            Scenario { device_stop: true, ..short },
            Scenario {
                device_start_holds_bql: false,
                miss_need_reply: true,
                ..Scenario::default()
            },
            Scenario {
                split_replies: true,
                queued_reads: true,
                device_stop: true,
                ..Scenario::default()
            },
        ];
        for variant in ["qemu-9.1", "qemu-9.1+fail-start", "reply-queue", "bql-listen"] {
            for scenario in &scenarios {
                let model = ReplyRace::new(variant.parse().unwrap(), *scenario);
                let merged = merged_states_agree(&model);
                if variant == "qemu-9.1" {
                    // Not vacuous: the race's states are merged.
                    assert!(merged > 1_000, "{variant} {scenario:?}: {merged}");
                }
            }
        }
    }
}
