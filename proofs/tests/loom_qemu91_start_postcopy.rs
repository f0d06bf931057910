//! loom, no lock (`LockPolicy::Qemu91`, QEMU up to 9.1), scenario
//! `start_postcopy`: device start's IOTLB update and the listen thread's
//! POSTCOPY_END share the socket with nothing serialising their reply reads.
//! Within `LOOM_PREEMPTION_BOUND` (or `LOOM_MAX_PREEMPTIONS`) preemptions loom
//! must find an interleaving that fails the check, and the failure must be the
//! race itself (replies swapped, a header misframed or a reply misdelivered),
//! not a deadlock or any other panic.
//!
//! Leaves out: which interleaving loom meets first (it depends on loom's
//! exploration order); the test pins the kind of failure, not the trace.

use proofs::body::{expect_violation, in_own_process, loom_check};
use proofs::scenarios::start_postcopy;
use reference::scenario::{LockPolicy, Variant};

#[test]
fn loom_qemu91_start_postcopy_finds_the_reply_race() {
    in_own_process(|| {
        let v = expect_violation(|| loom_check(Variant::new(LockPolicy::Qemu91), start_postcopy()));
        assert!(v.kind.is_race_symptom(), "{v}");
        eprintln!("loom found: {v}");
    });
}
