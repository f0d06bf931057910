//! shuttle, request/reply mutex (`LockPolicy::Mutex`), scenario
//! `all_threads_short_reads`: `all_threads` (the IOTLB updates, POSTCOPY_END,
//! the back-end's misses) with short reads (every receive returns a few bytes,
//! `Scenario::short_reads`), so that each header and payload read is several
//! scheduling points and a reader can be preempted in the middle of a header.
//!
//! Bounds (all in `proofs/src/lib.rs`): random scheduler,
//! `SHUTTLE_RANDOM_ITERATIONS` schedules from `SHUTTLE_SEED`; PCT,
//! `SHUTTLE_PCT_ITERATIONS` schedules of depth `SHUTTLE_PCT_DEPTH`
//! from the same seed. None may show a swapped, misframed or
//! misdelivered reply, a logged line, a failed thread or a deadlock.
//!
//! Leaves out: misses with NEED_REPLY and fail-start.

use proofs::body::{shuttle_pct, shuttle_random};
use proofs::scenarios::all_threads_short_reads;
use proofs::{SHUTTLE_PCT_DEPTH, SHUTTLE_PCT_ITERATIONS, SHUTTLE_RANDOM_ITERATIONS, SHUTTLE_SEED};
use reference::scenario::{LockPolicy, Variant};

const MUTEX: Variant = Variant::new(LockPolicy::Mutex);

#[test]
fn shuttle_random_mutex_all_threads_short_reads_has_no_misdelivered_reply() {
    let scenario = all_threads_short_reads();
    let runs = shuttle_random(MUTEX, scenario, SHUTTLE_SEED, SHUTTLE_RANDOM_ITERATIONS);
    assert_eq!(runs, SHUTTLE_RANDOM_ITERATIONS);
}

#[test]
fn shuttle_pct_mutex_all_threads_short_reads_has_no_misdelivered_reply() {
    let scenario = all_threads_short_reads();
    let runs =
        shuttle_pct(MUTEX, scenario, SHUTTLE_SEED, SHUTTLE_PCT_DEPTH, SHUTTLE_PCT_ITERATIONS);
    assert_eq!(runs, SHUTTLE_PCT_ITERATIONS);
}
