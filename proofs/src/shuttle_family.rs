//! The shuttle [`SyncFamily`](reference::sync::SyncFamily): the reference's
//! monitors, threads and yields on `shuttle::sync::{Mutex, Condvar}` and
//! `shuttle::thread`, so that shuttle's random and PCT schedulers drive the
//! front-end threads, the back-end and the in-memory transport, with every lock
//! acquisition, wait and notify a scheduling point.
//!
//! Models: the definition shared with loom, [`crate::family`]'s
//! `sync_family!`, on shuttle's `sync` and `thread`: one shuttle mutex plus
//! one shuttle condition variable per monitor, a wait is `Condvar::wait` in
//! a loop, a spawn is a named shuttle thread (the name shows in shuttle's
//! failure report).
//!
//! Leaves out: nothing of the seam; values built from this family must be
//! created and used inside a shuttle test closure, which the runners of
//! [`crate::body`] do. Shuttle samples schedules, it does not enumerate
//! them: a pass is evidence within the stated iterations, not a proof.

crate::family::sync_family!(shuttle, Shuttle, ShuttleMonitor, ShuttleJoin);
