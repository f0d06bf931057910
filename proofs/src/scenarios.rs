//! The scenarios the proofs run, named as the test files are.
//!
//! Models: `reference::scenario::Scenario`s, each built from the default
//! (device start under the BQL, POSTCOPY_END, misses without NEED_REPLY,
//! as DPDK sends them) with the sizes changed.
//!
//! Misses with NEED_REPLY (the back-end then waits on the back-end channel
//! before it reads the main socket again) are used only where a policy is
//! meant to survive them (reply-queue) or to show that it does not (the
//! mutex deadlocks: its miss handler waits on the main socket for the reply
//! to its own update).
//!
//! Leaves out: the handshake.

use reference::scenario::Scenario;

/// loom, 2 front-end threads: device start with 1 IOTLB update and the
/// postcopy listen thread's POSTCOPY_END (5 threads with the back-end and
/// loom's main thread is loom's maximum; this uses 4).
pub fn start_postcopy() -> Scenario {
    Scenario { virtqueues: 1, backend_misses: 0, ..Scenario::default() }
}

/// loom, 3 front-end threads: [`start_postcopy`] plus the main loop
/// answering 1 back-end miss (5 threads, loom's maximum).
pub fn start_postcopy_miss() -> Scenario {
    Scenario { virtqueues: 1, backend_misses: 1, ..Scenario::default() }
}

/// shuttle, beyond loom's reach: device start with 4 IOTLB updates,
/// POSTCOPY_END and 3 back-end misses answered by the main loop.
pub fn all_threads() -> Scenario {
    Scenario { virtqueues: 4, backend_misses: 3, ..Scenario::default() }
}

/// shuttle: [`all_threads`] with short reads (every receive returns at most
/// 4 bytes, so each header and payload read is several scheduling points).
pub fn all_threads_short_reads() -> Scenario {
    Scenario { short_reads: true, ..all_threads() }
}

/// loom, 3 front-end threads: [`start_postcopy_miss`] with the miss sent
/// with NEED_REPLY: the back-end reads nothing on the main socket until the
/// main loop has answered on the back-end channel, while device start holds
/// the BQL and waits for its update's reply.
pub fn start_postcopy_miss_need_reply() -> Scenario {
    Scenario { miss_need_reply: true, ..start_postcopy_miss() }
}

/// shuttle: [`all_threads`] with the misses sent with NEED_REPLY.
pub fn all_threads_miss_need_reply() -> Scenario {
    Scenario { miss_need_reply: true, ..all_threads() }
}

/// shuttle: [`all_threads_miss_need_reply`] with short reads.
pub fn all_threads_miss_need_reply_short_reads() -> Scenario {
    Scenario { short_reads: true, ..all_threads_miss_need_reply() }
}

/// shuttle: [`all_threads`] with device start running without the BQL.
pub fn all_threads_without_bql() -> Scenario {
    Scenario { device_start_holds_bql: false, ..all_threads() }
}
