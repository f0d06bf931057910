//! The loom [`SyncFamily`]: the reference's monitors, threads and yields on
//! `loom::sync::{Mutex, Condvar}` and `loom::thread`, so that loom explores
//! every interleaving of the front-end threads, the back-end and the
//! in-memory transport's byte streams (each a monitor) within the preemption
//! bound [`crate::LOOM_PREEMPTION_BOUND`].
//!
//! Models: one loom mutex plus one loom condition variable per monitor; a
//! wait is `Condvar::wait` in a loop, as in the parking_lot family; a spawn is
//! `loom::thread::spawn` (the name is dropped: loom threads are unnamed).
//!
//! Leaves out: nothing of the seam; but every value built from this family
//! must be created and used inside a `loom::model` closure (loom's types
//! panic outside one), which [`crate::body::loom_check`] does. Loom allows
//! at most 5 threads, the model's main thread included: a back-end and three
//! front-end roles is the most a scenario may use here.

use loom::sync::{Condvar, Mutex};
use reference::sync::{Join, Monitor, Panicked, SyncFamily};

/// Loom's primitives as a [`SyncFamily`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Loom;

/// [`Loom`]'s monitor: a loom mutex and its condition variable.
#[derive(Debug)]
pub struct LoomMonitor<T> {
    value: Mutex<T>,
    cond: Condvar,
}

impl<T: Send> Monitor<T> for LoomMonitor<T> {
    fn new(value: T) -> Self {
        LoomMonitor { value: Mutex::new(value), cond: Condvar::new() }
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.value.lock().expect("a loom mutex is never poisoned here"))
    }

    fn with_notify<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let r = self.with(f);
        self.cond.notify_all();
        r
    }

    fn with_notify_if<R>(&self, f: impl FnOnce(&mut T) -> (R, bool)) -> R {
        let (r, notify) = self.with(f);
        if notify {
            self.cond.notify_all();
        }
        r
    }

    fn wait_until<R>(&self, mut ready: impl FnMut(&mut T) -> Option<R>) -> R {
        let mut guard = self.value.lock().expect("a loom mutex is never poisoned here");
        loop {
            if let Some(r) = ready(&mut guard) {
                return r;
            }
            guard = self.cond.wait(guard).expect("a loom mutex is never poisoned here");
        }
    }
}

/// [`Loom`]'s join handle.
#[derive(Debug)]
pub struct LoomJoin<R>(loom::thread::JoinHandle<R>);

impl<R> Join<R> for LoomJoin<R> {
    fn join(self) -> Result<R, Panicked> {
        self.0.join().map_err(|_| Panicked)
    }
}

impl SyncFamily for Loom {
    type Monitor<T: Send + 'static> = LoomMonitor<T>;
    type JoinHandle<R: Send + 'static> = LoomJoin<R>;

    fn spawn<R: Send + 'static>(
        _name: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Self::JoinHandle<R> {
        LoomJoin(loom::thread::spawn(f))
    }

    fn yield_now() {
        loom::thread::yield_now();
    }
}
