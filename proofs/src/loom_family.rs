//! The loom [`SyncFamily`](reference::sync::SyncFamily): the reference's
//! monitors, threads and yields on `loom::sync::{Mutex, Condvar}` and
//! `loom::thread`, so that loom explores every interleaving of the front-end
//! threads, the back-end and the in-memory transport's byte streams (each a
//! monitor) within the preemption bound (`LOOM_MAX_PREEMPTIONS`, else the
//! test's default, see the crate doc).
//!
//! Models: the definition shared with shuttle, [`crate::family`]'s
//! `sync_family!`, on loom's `sync` and `thread`: one loom mutex plus one
//! loom condition variable per monitor, a wait is `Condvar::wait` in a loop,
//! a spawn is a named `loom::thread::Builder` thread.
//!
//! Leaves out: nothing of the seam; but every value built from this family
//! must be created and used inside a `loom::model` closure (loom's types
//! panic outside one), which [`crate::body::loom_check`] does. Loom allows
//! at most 5 threads, the model's main thread included: a back-end and three
//! front-end roles is the most a scenario may use here.

crate::family::sync_family!(loom, Loom, LoomMonitor, LoomJoin);
