//! loom, no lock (`LockPolicy::Qemu91`), scenario `start_postcopy_miss`: device
//! start's IOTLB update, the listen thread's POSTCOPY_END and the main loop's
//! answer to a back-end miss share the socket (5 threads, loom's maximum).
//! Within `LOOM_PREEMPTION_BOUND` (or `LOOM_MAX_PREEMPTIONS`) preemptions loom
//! must find a failing interleaving, and the failure must be the race itself
//! (replies swapped, a header misframed or a reply misdelivered), not a
//! deadlock or any other panic.
//!
//! Leaves out: which interleaving loom meets first; the kind is pinned, not
//! the trace. Device start and the main loop both hold the BQL here, so the
//! race loom finds involves the listen thread, as in QEMU.

use proofs::body::{expect_violation, in_own_process, loom_check};
use proofs::scenarios::start_postcopy_miss;
use reference::scenario::{LockPolicy, Variant};

#[test]
fn loom_qemu91_start_postcopy_miss_finds_the_reply_race() {
    in_own_process(|| {
        let v = expect_violation(|| {
            loom_check(Variant::new(LockPolicy::Qemu91), start_postcopy_miss())
        });
        assert!(v.kind.is_race_symptom(), "{v}");
        assert!(v.detail.contains("4100,4133"), "the listen thread (tid 4133) is in the race: {v}");
        eprintln!("loom found: {v}");
    });
}
