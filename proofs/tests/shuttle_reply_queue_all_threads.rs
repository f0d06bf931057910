//! shuttle, reply-queue (`LockPolicy::ReplyQueue`), scenario `all_threads`:
//! device start sends one IOTLB update per virtqueue (holding the BQL), the
//! listen thread sends POSTCOPY_END and the main loop answers the back-end's
//! misses without NEED_REPLY, all through the per-connection FIFO (the misses'
//! updates without NEED_REPLY, outside it), against the back-end thread.
//!
//! Bounds (all in `proofs/src/lib.rs`): shuttle's random scheduler,
//! `SHUTTLE_RANDOM_ITERATIONS` schedules from `SHUTTLE_SEED`; PCT,
//! `SHUTTLE_PCT_ITERATIONS` schedules of depth `SHUTTLE_PCT_DEPTH`
//! from the same seed; and the same body `STD_ITERATIONS` times on
//! real threads. None may show a swapped, misframed or misdelivered reply, a
//! logged line, a failed thread or a deadlock. Device start without the BQL
//! (where every BQL placement of QEMU races) is checked the same way.
//!
//! Leaves out: fail-start (device start never fails here).

use proofs::body::{shuttle_pct, shuttle_random, std_check};
use proofs::scenarios::{all_threads, all_threads_without_bql};
use proofs::{
    SHUTTLE_PCT_DEPTH, SHUTTLE_PCT_ITERATIONS, SHUTTLE_RANDOM_ITERATIONS, SHUTTLE_SEED,
    STD_ITERATIONS,
};
use reference::scenario::{LockPolicy, Variant};

const REPLY_QUEUE: Variant = Variant::new(LockPolicy::ReplyQueue);

#[test]
fn shuttle_random_reply_queue_all_threads_has_no_misdelivered_reply() {
    let runs = shuttle_random(REPLY_QUEUE, all_threads(), SHUTTLE_SEED, SHUTTLE_RANDOM_ITERATIONS);
    assert_eq!(runs, SHUTTLE_RANDOM_ITERATIONS);
}

#[test]
fn shuttle_pct_reply_queue_all_threads_has_no_misdelivered_reply() {
    let runs = shuttle_pct(
        REPLY_QUEUE,
        all_threads(),
        SHUTTLE_SEED,
        SHUTTLE_PCT_DEPTH,
        SHUTTLE_PCT_ITERATIONS,
    );
    assert_eq!(runs, SHUTTLE_PCT_ITERATIONS);
}

#[test]
fn std_threads_reply_queue_all_threads_has_no_misdelivered_reply() {
    std_check(REPLY_QUEUE, all_threads(), STD_ITERATIONS);
}

#[test]
fn shuttle_pct_reply_queue_all_threads_without_bql_has_no_misdelivered_reply() {
    let runs = shuttle_pct(
        REPLY_QUEUE,
        all_threads_without_bql(),
        SHUTTLE_SEED,
        SHUTTLE_PCT_DEPTH,
        SHUTTLE_PCT_ITERATIONS,
    );
    assert_eq!(runs, SHUTTLE_PCT_ITERATIONS);
}
