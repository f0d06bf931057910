//! shuttle, no lock (`LockPolicy::Qemu91`, QEMU up to 9.1), scenario
//! `all_threads`: an IOTLB update per virtqueue from device start, POSTCOPY_END
//! from the listen thread, the back-end's misses answered by the main loop,
//! nothing serialising the reply reads.
//!
//! Bounds (all in `proofs/src/lib.rs`): the random scheduler from
//! `SHUTTLE_SEED`, at most `SHUTTLE_RANDOM_ITERATIONS` schedules, and
//! PCT of depth `SHUTTLE_PCT_DEPTH` from the same seed, at most
//! `SHUTTLE_PCT_ITERATIONS` schedules, must each fail, and with the
//! race itself (swapped, misframed or misdelivered reply), not a deadlock or
//! any other panic. Shuttle persists the failing schedule to a file
//! (`proofs::body::schedule_dir`), read back and removed; replaying it with
//! `shuttle::replay` must fail again with the same violation,
//! word for word: the failure is a replayable schedule, not luck.
//!
//! Leaves out: pinning the schedule string in the source (it changes with
//! every change to the number of scheduling points in the reference; the
//! seed pins it instead, and the test captures and replays it).

use proofs::body::{
    expect_replayable_shuttle_violation, shuttle_pct, shuttle_random, shuttle_replay,
};
use proofs::scenarios::all_threads;
use proofs::{SHUTTLE_PCT_DEPTH, SHUTTLE_PCT_ITERATIONS, SHUTTLE_RANDOM_ITERATIONS, SHUTTLE_SEED};
use reference::scenario::{LockPolicy, Variant};

const QEMU91: Variant = Variant::new(LockPolicy::Qemu91);

#[test]
fn shuttle_random_qemu91_all_threads_finds_the_race_and_replays_it() {
    let (found, replayed, schedule) = expect_replayable_shuttle_violation(
        || shuttle_random(QEMU91, all_threads(), SHUTTLE_SEED, SHUTTLE_RANDOM_ITERATIONS),
        |schedule| shuttle_replay(QEMU91, all_threads(), schedule),
    );
    assert!(found.kind.is_race_symptom(), "{found}");
    eprintln!("shuttle random found: {found}\nschedule: {schedule}");
    assert_eq!(replayed, found, "the replayed schedule fails the same way");
}

#[test]
fn shuttle_pct_qemu91_all_threads_finds_the_race_and_replays_it() {
    let (found, replayed, schedule) = expect_replayable_shuttle_violation(
        || {
            shuttle_pct(
                QEMU91,
                all_threads(),
                SHUTTLE_SEED,
                SHUTTLE_PCT_DEPTH,
                SHUTTLE_PCT_ITERATIONS,
            )
        },
        |schedule| shuttle_replay(QEMU91, all_threads(), schedule),
    );
    assert!(found.kind.is_race_symptom(), "{found}");
    eprintln!("shuttle pct found: {found}\nschedule: {schedule}");
    assert_eq!(replayed, found, "the replayed schedule fails the same way");
}
