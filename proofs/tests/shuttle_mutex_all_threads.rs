//! shuttle, request/reply mutex (`LockPolicy::Mutex`), scenario `all_threads`:
//! device start sends one IOTLB update per virtqueue (under the BQL), the
//! listen thread sends POSTCOPY_END and the main loop answers the back-end's
//! misses (under the BQL), against the back-end thread: beyond loom's reach.
//!
//! Bounds (all in `proofs/src/lib.rs`): shuttle's random scheduler,
//! `SHUTTLE_RANDOM_ITERATIONS` schedules from `SHUTTLE_SEED`; PCT,
//! `SHUTTLE_PCT_ITERATIONS` schedules of depth `SHUTTLE_PCT_DEPTH`
//! from the same seed; and the same body `STD_ITERATIONS` times on
//! real threads. None may show a swapped, misframed or misdelivered reply, a
//! logged line, a failed thread or a deadlock.
//!
//! Leaves out: misses with NEED_REPLY and fail-start.

use proofs::body::{shuttle_pct, shuttle_random, std_check};
use proofs::scenarios::all_threads;
use proofs::{
    SHUTTLE_PCT_DEPTH, SHUTTLE_PCT_ITERATIONS, SHUTTLE_RANDOM_ITERATIONS, SHUTTLE_SEED,
    STD_ITERATIONS,
};
use reference::scenario::{LockPolicy, Variant};

const MUTEX: Variant = Variant::new(LockPolicy::Mutex);

#[test]
fn shuttle_random_mutex_all_threads_has_no_misdelivered_reply() {
    let runs = shuttle_random(MUTEX, all_threads(), SHUTTLE_SEED, SHUTTLE_RANDOM_ITERATIONS);
    assert_eq!(runs, SHUTTLE_RANDOM_ITERATIONS);
}

#[test]
fn shuttle_pct_mutex_all_threads_has_no_misdelivered_reply() {
    let runs =
        shuttle_pct(MUTEX, all_threads(), SHUTTLE_SEED, SHUTTLE_PCT_DEPTH, SHUTTLE_PCT_ITERATIONS);
    assert_eq!(runs, SHUTTLE_PCT_ITERATIONS);
}

#[test]
fn std_threads_mutex_all_threads_has_no_misdelivered_reply() {
    std_check(MUTEX, all_threads(), STD_ITERATIONS);
}
