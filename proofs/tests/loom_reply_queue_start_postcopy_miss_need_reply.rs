//! loom, reply-queue (`LockPolicy::ReplyQueue`), scenario
//! `start_postcopy_miss_need_reply`: as `start_postcopy_miss`, but the back-end
//! sends its miss with NEED_REPLY and reads nothing on the main socket until
//! the main loop has answered it on the back-end channel, while device start
//! holds the BQL and waits for its update's reply: the scenario in which the
//! mutex deadlocks (`loom_mutex_start_postcopy_miss_need_reply.rs`). loom
//! explores every interleaving with at most `LOOM_PREEMPTION_BOUND` (or
//! `LOOM_MAX_PREEMPTIONS`) preemptions and finds no swapped, misframed or
//! misdelivered reply, no logged line, no failed thread and no deadlock; and in
//! at least one of them the main loop borrowed the BQL from device start while
//! device start was waiting for its reply (rule 3 was exercised, not only the
//! paths in which the main loop took the BQL before device start).
//!
//! Leaves out: fail-start.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use proofs::body::{in_own_process, loom_check_observed};
use proofs::scenarios::start_postcopy_miss_need_reply;
use reference::scenario::{LockPolicy, Variant};

#[test]
fn loom_reply_queue_start_postcopy_miss_need_reply_completes_and_lends_the_bql() {
    in_own_process(|| {
        let lent = Arc::new(AtomicU64::new(0));
        let seen = Arc::clone(&lent);
        let run = loom_check_observed(
            Variant::new(LockPolicy::ReplyQueue),
            start_postcopy_miss_need_reply(),
            move |o| {
                seen.fetch_add(u64::from(o.bql_loans > 0), Ordering::Relaxed);
            },
        );
        let lent = lent.load(Ordering::Relaxed);
        eprintln!("loom explored {run}, {lent} with the BQL lent");
        assert!(lent > 0, "no execution had the main loop borrow the BQL from device start");
    });
}
