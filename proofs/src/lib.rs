//! loom and shuttle proofs of the reference channel: the same front-end,
//! threads, back-end and in-memory transport as `reference` runs on real
//! threads, on loom's and shuttle's primitives through the `SyncFamily`
//! seam, so that the checkers control every lock, wait and notify.
//!
//! Models: the families ([`loom_family::Loom`], [`shuttle_family::Shuttle`],
//! both written by one macro, [`family`]),
//! one parameterised test body with its runners ([`body`]), the scenarios
//! the tests use ([`scenarios`]) and every bound in one place (the consts
//! below). The tests are in `tests/`, one file per checker, policy and
//! scenario (`loom_mutex_start_postcopy.rs`, `shuttle_qemu91_all_threads.rs`,
//! ...), in two test binaries (`tests/loom_suite.rs`,
//! `tests/shuttle_suite.rs`); a plain `cargo test` runs them: no feature, no
//! `cfg(loom)`, no RUSTFLAGS (loom's types are only ever built inside
//! `loom::model`).
//!
//! Deeper loom runs: loom explores every interleaving within a preemption
//! bound, which is `LOOM_MAX_PREEMPTIONS` when it is set and otherwise the
//! test's default ([`LOOM_PREEMPTION_BOUND`], or
//! [`LOOM_REDUCED_PREEMPTION_BOUND`] for a test whose space at the former
//! takes minutes). To run every loom test
//! deeper, no source edit needed:
//! `LOOM_MAX_PREEMPTIONS=3 cargo test --release -p proofs loom_`
//! (each loom test prints the executions it ran and the bound it used; run
//! with `-- --nocapture` to see them). The shuttle bounds are the consts
//! below.
//!
//! Leaves out: the handshake (it runs on one thread before the race; the
//! runs start negotiated), real sockets (the `reference` crate's own tests
//! run the race there), and the variants other than the request/reply mutex,
//! QEMU 9.1 and reply-queue (the stateright model covers all of them).

pub mod body;
pub mod family;
pub mod loom_family;
pub mod scenarios;
pub mod shuttle_family;

/// Loom's preemption bound for the loom tests when `LOOM_MAX_PREEMPTIONS`
/// is not set: loom explores every interleaving in which threads are
/// preempted at most this many times (blocking on a lock or condition
/// variable is not a preemption).
pub const LOOM_PREEMPTION_BOUND: usize = 2;

/// The default preemption bound of a loom test whose space at
/// [`LOOM_PREEMPTION_BOUND`] is too slow for the default suite (such a test
/// says so); as that
/// one, used only when `LOOM_MAX_PREEMPTIONS` is not set.
pub const LOOM_REDUCED_PREEMPTION_BOUND: usize = 1;

/// The seed of every shuttle scheduler (random and PCT).
pub const SHUTTLE_SEED: u64 = 0x7668_6f73_7475_7365;

/// Schedules shuttle's random scheduler tries per test.
pub const SHUTTLE_RANDOM_ITERATIONS: usize = 20_000;

/// Schedules shuttle's PCT scheduler tries per test.
pub const SHUTTLE_PCT_ITERATIONS: usize = 20_000;

/// PCT's depth: the number of priority change points per schedule (a bug
/// of depth d is found with probability at least 1/(n * k^(d-1)) per run).
pub const SHUTTLE_PCT_DEPTH: usize = 3;

/// Runs of the same body on real threads (parking_lot), per test.
pub const STD_ITERATIONS: usize = 200;
