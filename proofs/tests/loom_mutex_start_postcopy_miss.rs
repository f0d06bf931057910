//! loom, request/reply mutex (`LockPolicy::Mutex`), scenario
//! `start_postcopy_miss`: device start sends 1 IOTLB update (under the BQL),
//! the postcopy listen thread sends POSTCOPY_END and the main loop answers 1
//! back-end IOTLB miss (under the BQL) with an update, all on one in-memory
//! socket, against the back-end thread: 5 threads, loom's maximum. loom
//! explores every interleaving with at most `LOOM_PREEMPTION_BOUND` (or
//! `LOOM_MAX_PREEMPTIONS`) preemptions and finds no swapped, misframed or
//! misdelivered reply, no logged line, no failed thread and no deadlock.
//!
//! Leaves out: misses with NEED_REPLY and fail-start.

use proofs::body::{in_own_process, loom_check};
use proofs::scenarios::start_postcopy_miss;
use reference::scenario::{LockPolicy, Variant};

#[test]
fn loom_mutex_start_postcopy_miss_has_no_misdelivered_reply() {
    in_own_process(|| {
        let run = loom_check(Variant::new(LockPolicy::Mutex), start_postcopy_miss());
        eprintln!("loom explored {run}");
    });
}
