//! loom, reply-queue (`LockPolicy::ReplyQueue`), scenario
//! `start_postcopy_miss`: device start's IOTLB update (holding the BQL), the
//! listen thread's POSTCOPY_END and the main loop's answer to a back-end
//! miss without NEED_REPLY (sent, under reply-queue, as an update without
//! NEED_REPLY), against the back-end thread: 5 threads, loom's maximum.
//! loom explores every interleaving within the preemption bound and finds
//! no swapped, misframed or misdelivered reply, no logged line, no failed
//! thread and no deadlock.
//!
//! Bounds: with no lock held across a round trip, all three front-end threads
//! and the back-end run at once (under the mutex two of them are blocked most
//! of the time), so the space at `LOOM_PREEMPTION_BOUND` is many times the
//! mutex's, too slow for the default suite; this test's default is
//! `LOOM_REDUCED_PREEMPTION_BOUND`. The deeper run is `LOOM_MAX_PREEMPTIONS=2
//! cargo test --release -p proofs --test loom_reply_queue_start_postcopy_miss
//! -- --nocapture` (it prints the executions it ran).
//!
//! Leaves out: fail-start; the miss with NEED_REPLY is
//! `loom_reply_queue_start_postcopy_miss_need_reply.rs` (at
//! `LOOM_PREEMPTION_BOUND`).

use proofs::body::{in_own_process, loom_check_bounded};
use proofs::scenarios::start_postcopy_miss;
use proofs::LOOM_REDUCED_PREEMPTION_BOUND;
use reference::scenario::{LockPolicy, Variant};

#[test]
fn loom_reply_queue_start_postcopy_miss_has_no_misdelivered_reply() {
    in_own_process(|| {
        let run = loom_check_bounded(
            Variant::new(LockPolicy::ReplyQueue),
            start_postcopy_miss(),
            LOOM_REDUCED_PREEMPTION_BOUND,
            |_| {},
        );
        eprintln!("loom explored {run}");
    });
}
