//! The scenarios the proofs run, named as the test files are.
//!
//! Models: `reference::scenario::Scenario`s, each built from the default
//! (device start under the BQL, POSTCOPY_END, misses without NEED_REPLY,
//! as DPDK sends them) with the sizes changed.
//!
//! Leaves out: misses with NEED_REPLY (the back-end then waits on the
//! back-end channel while the main loop waits for its reply on the main
//! socket: a hang by design of the scenario, not of a lock policy; the
//! model explores it) and the handshake.

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
