//! loom, request/reply mutex (`LockPolicy::Mutex`), scenario `start_postcopy`:
//! device start sends 1 IOTLB update (under the BQL) while the postcopy listen
//! thread sends POSTCOPY_END, on one in-memory socket, against the back-end
//! thread. loom explores every interleaving with at most
//! `LOOM_PREEMPTION_BOUND` (or `LOOM_MAX_PREEMPTIONS`) preemptions and finds no
//! swapped, misframed or misdelivered reply, no logged line, no failed thread
//! and no deadlock.
//!
//! Leaves out: the main loop (see `loom_mutex_start_postcopy_miss.rs`) and
//! fail-start (device start never fails here).

use proofs::body::{in_own_process, loom_check};
use proofs::scenarios::start_postcopy;
use reference::scenario::{LockPolicy, Variant};

#[test]
fn loom_mutex_start_postcopy_has_no_misdelivered_reply() {
    in_own_process(|| {
        let run = loom_check(Variant::new(LockPolicy::Mutex), start_postcopy());
        eprintln!("loom explored {run}");
    });
}
