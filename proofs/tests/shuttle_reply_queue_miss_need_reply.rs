//! shuttle, reply-queue (`LockPolicy::ReplyQueue`), scenarios
//! `all_threads_miss_need_reply` and `all_threads_miss_need_reply_short_reads`:
//! `all_threads` (the IOTLB updates from device start holding the BQL,
//! POSTCOPY_END, the back-end's misses) with every miss sent with NEED_REPLY:
//! the back-end reads nothing on the main socket until the main loop has
//! answered the miss on the back-end channel. The main loop borrows the BQL
//! from device start while device start waits for a reply, and answers the miss
//! with an update without NEED_REPLY; so every thread finishes. The
//! request/reply mutex deadlocks here
//! (`shuttle_mutex_miss_need_reply_deadlocks` below).
//!
//! Bounds (all in `proofs/src/lib.rs`): random scheduler,
//! `SHUTTLE_RANDOM_ITERATIONS` schedules, and PCT,
//! `SHUTTLE_PCT_ITERATIONS` schedules of depth `SHUTTLE_PCT_DEPTH`
//!, from `SHUTTLE_SEED`, for each scenario; and the first scenario
//! `STD_ITERATIONS` times on real threads. None may show a swapped,
//! misframed or misdelivered reply, a logged line, a failed thread or a
//! deadlock.
//!
//! Leaves out: fail-start.

use proofs::body::{expect_deadlock, shuttle_pct, shuttle_random, std_check};
use proofs::scenarios::{all_threads_miss_need_reply, all_threads_miss_need_reply_short_reads};
use proofs::{
    SHUTTLE_PCT_DEPTH, SHUTTLE_PCT_ITERATIONS, SHUTTLE_RANDOM_ITERATIONS, SHUTTLE_SEED,
    STD_ITERATIONS,
};
use reference::scenario::{LockPolicy, Variant};

const REPLY_QUEUE: Variant = Variant::new(LockPolicy::ReplyQueue);

#[test]
fn shuttle_random_reply_queue_miss_need_reply_finishes_without_misdelivery() {
    let scenario = all_threads_miss_need_reply();
    let runs = shuttle_random(REPLY_QUEUE, scenario, SHUTTLE_SEED, SHUTTLE_RANDOM_ITERATIONS);
    assert_eq!(runs, SHUTTLE_RANDOM_ITERATIONS);
}

#[test]
fn shuttle_pct_reply_queue_miss_need_reply_finishes_without_misdelivery() {
    let scenario = all_threads_miss_need_reply();
    let runs =
        shuttle_pct(REPLY_QUEUE, scenario, SHUTTLE_SEED, SHUTTLE_PCT_DEPTH, SHUTTLE_PCT_ITERATIONS);
    assert_eq!(runs, SHUTTLE_PCT_ITERATIONS);
}

#[test]
fn std_threads_reply_queue_miss_need_reply_finishes_without_misdelivery() {
    std_check(REPLY_QUEUE, all_threads_miss_need_reply(), STD_ITERATIONS);
}

#[test]
fn shuttle_random_reply_queue_miss_need_reply_short_reads_finishes_without_misdelivery() {
    let scenario = all_threads_miss_need_reply_short_reads();
    let runs = shuttle_random(REPLY_QUEUE, scenario, SHUTTLE_SEED, SHUTTLE_RANDOM_ITERATIONS);
    assert_eq!(runs, SHUTTLE_RANDOM_ITERATIONS);
}

#[test]
fn shuttle_pct_reply_queue_miss_need_reply_short_reads_finishes_without_misdelivery() {
    let scenario = all_threads_miss_need_reply_short_reads();
    let runs =
        shuttle_pct(REPLY_QUEUE, scenario, SHUTTLE_SEED, SHUTTLE_PCT_DEPTH, SHUTTLE_PCT_ITERATIONS);
    assert_eq!(runs, SHUTTLE_PCT_ITERATIONS);
}

/// The same scenario under the request/reply mutex: shuttle's first
/// schedules already deadlock (device start holds the BQL and the mutex
/// while the back-end waits for the miss's answer, or the main loop holds
/// them and waits for the reply to its own update with NEED_REPLY).
#[test]
fn shuttle_mutex_miss_need_reply_deadlocks() {
    let report = expect_deadlock(|| {
        shuttle_random(
            Variant::new(LockPolicy::Mutex),
            all_threads_miss_need_reply(),
            SHUTTLE_SEED,
            SHUTTLE_RANDOM_ITERATIONS,
        )
    });
    eprintln!("shuttle found: {}", report.lines().next().unwrap_or(""));
}
