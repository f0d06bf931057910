//! The shuttle [`SyncFamily`]: the reference's monitors, threads and yields
//! on `shuttle::sync::{Mutex, Condvar}` and `shuttle::thread`, so that
//! shuttle's random and PCT schedulers drive the front-end threads, the
//! back-end and the in-memory transport, with every lock acquisition, wait
//! and notify a scheduling point.
//!
//! Models: one shuttle mutex plus one shuttle condition variable per
//! monitor; a wait is `Condvar::wait` in a loop; a spawn is a named shuttle
//! thread (the name shows in shuttle's failure report).
//!
//! Leaves out: nothing of the seam; values built from this family must be
//! created and used inside a shuttle test closure, which the runners of
//! [`crate::body`] do. Shuttle samples schedules, it does not enumerate
//! them: a pass is evidence within the stated iterations, not a proof.

use reference::sync::{Join, Monitor, Panicked, SyncFamily};
use shuttle::sync::{Condvar, Mutex};

/// Shuttle's primitives as a [`SyncFamily`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Shuttle;

/// [`Shuttle`]'s monitor: a shuttle mutex and its condition variable.
#[derive(Debug)]
pub struct ShuttleMonitor<T> {
    value: Mutex<T>,
    cond: Condvar,
}

impl<T: Send> Monitor<T> for ShuttleMonitor<T> {
    fn new(value: T) -> Self {
        ShuttleMonitor { value: Mutex::new(value), cond: Condvar::new() }
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.value.lock().expect("a shuttle mutex is never poisoned here"))
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
        let mut guard = self.value.lock().expect("a shuttle mutex is never poisoned here");
        loop {
            if let Some(r) = ready(&mut guard) {
                return r;
            }
            guard = self.cond.wait(guard).expect("a shuttle mutex is never poisoned here");
        }
    }
}

/// [`Shuttle`]'s join handle.
#[derive(Debug)]
pub struct ShuttleJoin<R>(shuttle::thread::JoinHandle<R>);

impl<R> Join<R> for ShuttleJoin<R> {
    fn join(self) -> Result<R, Panicked> {
        self.0.join().map_err(|_| Panicked)
    }
}

impl SyncFamily for Shuttle {
    type Monitor<T: Send + 'static> = ShuttleMonitor<T>;
    type JoinHandle<R: Send + 'static> = ShuttleJoin<R>;

    fn spawn<R: Send + 'static>(
        name: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Self::JoinHandle<R> {
        let h = shuttle::thread::Builder::new()
            .name(name.to_string())
            .spawn(f)
            .expect("spawn a shuttle thread");
        ShuttleJoin(h)
    }

    fn yield_now() {
        shuttle::thread::yield_now();
    }
}
