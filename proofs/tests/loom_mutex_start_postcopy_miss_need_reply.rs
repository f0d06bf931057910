//! loom, request/reply mutex (`LockPolicy::Mutex`), scenario
//! `start_postcopy_miss_need_reply`: the back-end's miss carries NEED_REPLY,
//! so the back-end reads nothing on the main socket until the miss is
//! answered. loom must report a deadlock, and nothing else: either device
//! start holds the BQL and the mutex while waiting for a reply the back-end
//! will not send, and the main loop waits for the BQL; or the main loop got
//! the BQL first and waits, holding the mutex, for the reply to its own
//! update with NEED_REPLY, which the back-end will not send either. The
//! reply-queue passes this scenario
//! (`loom_reply_queue_start_postcopy_miss_need_reply.rs`).
//!
//! Leaves out: which deadlock loom meets first; the kind is pinned.

use proofs::body::{expect_deadlock, in_own_process, loom_check};
use proofs::scenarios::start_postcopy_miss_need_reply;
use reference::scenario::{LockPolicy, Variant};

#[test]
fn loom_mutex_start_postcopy_miss_need_reply_deadlocks() {
    in_own_process(|| {
        let report = expect_deadlock(|| {
            loom_check(Variant::new(LockPolicy::Mutex), start_postcopy_miss_need_reply())
        });
        eprintln!("loom found: {report}");
    });
}
