//! The sync seam: every lock, wait and thread of the reference goes through a
//! [`SyncFamily`], so that the same channel, back-end and threads run on real
//! threads with parking_lot ([`ParkingLot`]) and, in the `proofs` crate, under
//! loom and shuttle (their families live there; this trait is built to be
//! implemented from outside).
//!
//! Models: three primitives only, all closure-scoped so that an
//! implementation never has to name a guard type: a [`Monitor`] (a mutex with
//! its condition variable, for the in-memory transport, the log sink and the
//! main loop's bottom-half queue), used as a plain lock (QEMU's BQL and the
//! request/reply mutex) when its value is `()`; a thread spawn with a join
//! handle; and a yield hook (the opt-in race-window widener).
//!
//! Leaves out: timed waits (the real-thread runner in `run` uses parking_lot
//! directly for its bounded wait, which loom and shuttle have no use for),
//! recursive locking (QEMU's BQL is not taken recursively on these paths) and
//! read-write locks.
//!
//! The loom and shuttle families are written once, by the `sync_family!`
//! macro in `proofs/src/family.rs`, on the `sync` and `thread` modules of
//! each checker (they mirror std's): a mutex with its condition variable per
//! monitor, overriding [`Monitor::with_notify_if`] as [`ParkingLot`] does.
//!
//! Loom cost: [`Monitor::with`] is one lock acquisition, [`Monitor::with_notify`]
//! one acquisition and one notify, [`Monitor::with_notify_if`] one
//! acquisition and a notify only when asked, [`Monitor::wait_until`] one acquisition plus
//! one wait per wake-up.

/// A mutex-protected value with a condition variable, used through closures.
pub trait Monitor<T>: Send + Sync {
    /// A monitor holding `value`.
    fn new(value: T) -> Self;

    /// Runs `f` with the lock held.
    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R;

    /// Runs `f` with the lock held, then wakes every waiter.
    fn with_notify<R>(&self, f: impl FnOnce(&mut T) -> R) -> R;

    /// Runs `f` with the lock held, then wakes every waiter if `f` says so
    /// (the second element), so that a caller that knows nobody can be
    /// waiting saves the notify (a scheduling point under loom). The default
    /// always notifies; the families of this workspace override it.
    fn with_notify_if<R>(&self, f: impl FnOnce(&mut T) -> (R, bool)) -> R {
        self.with_notify(|v| f(v).0)
    }

    /// Blocks until `ready` returns `Some` (checked with the lock held, first
    /// at once, then after each wake-up) and returns its value.
    fn wait_until<R>(&self, ready: impl FnMut(&mut T) -> Option<R>) -> R;
}

/// A joined thread had panicked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the thread panicked")]
pub struct Panicked;

/// A thread's join handle.
pub trait Join<R> {
    /// Waits for the thread; `Err` if it panicked.
    fn join(self) -> Result<R, Panicked>;
}

/// A family of synchronisation primitives and threads: real, loom or shuttle.
pub trait SyncFamily: Send + Sync + 'static {
    /// The family's monitor over a `T`.
    type Monitor<T: Send + 'static>: Monitor<T>;
    /// The family's join handle.
    type JoinHandle<R: Send + 'static>: Join<R>;

    /// Starts a thread running `f`. `name` is for diagnostics only.
    fn spawn<R: Send + 'static>(
        name: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Self::JoinHandle<R>;

    /// Lets another thread run (a scheduling point under loom and shuttle).
    fn yield_now();
}

/// A plain lock: the BQL or the request/reply mutex.
pub type Lock<F> = <F as SyncFamily>::Monitor<()>;

/// Runs `f` holding `lock` if `take` is set, else runs it directly.
pub fn with_lock_if<F: SyncFamily, R>(lock: &Lock<F>, take: bool, f: impl FnOnce() -> R) -> R {
    if take {
        lock.with(|_| f())
    } else {
        f()
    }
}

/// Real threads: parking_lot's mutex and condvar, `std::thread`.
#[derive(Debug, Clone, Copy, Default)]
pub struct ParkingLot;

/// [`ParkingLot`]'s monitor.
#[derive(Debug, Default)]
pub struct PlMonitor<T> {
    value: parking_lot::Mutex<T>,
    cond: parking_lot::Condvar,
}

impl<T: Send> Monitor<T> for PlMonitor<T> {
    fn new(value: T) -> Self {
        PlMonitor { value: parking_lot::Mutex::new(value), cond: parking_lot::Condvar::new() }
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        f(&mut self.value.lock())
    }

    fn with_notify<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let r = f(&mut self.value.lock());
        self.cond.notify_all();
        r
    }

    fn with_notify_if<R>(&self, f: impl FnOnce(&mut T) -> (R, bool)) -> R {
        let (r, notify) = f(&mut self.value.lock());
        if notify {
            self.cond.notify_all();
        }
        r
    }

    fn wait_until<R>(&self, mut ready: impl FnMut(&mut T) -> Option<R>) -> R {
        let mut guard = self.value.lock();
        loop {
            if let Some(r) = ready(&mut guard) {
                return r;
            }
            self.cond.wait(&mut guard);
        }
    }
}

impl<R> Join<R> for std::thread::JoinHandle<R> {
    fn join(self) -> Result<R, Panicked> {
        std::thread::JoinHandle::join(self).map_err(|_| Panicked)
    }
}

impl SyncFamily for ParkingLot {
    type Monitor<T: Send + 'static> = PlMonitor<T>;
    type JoinHandle<R: Send + 'static> = std::thread::JoinHandle<R>;

    fn spawn<R: Send + 'static>(
        name: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Self::JoinHandle<R> {
        std::thread::Builder::new().name(name.to_string()).spawn(f).expect("spawn a thread")
    }

    fn yield_now() {
        std::thread::yield_now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn wait_until_sees_a_notified_update() {
        let m = Arc::new(<ParkingLot as SyncFamily>::Monitor::<u32>::new(0));
        let m2 = Arc::clone(&m);
        let h = ParkingLot::spawn("waiter", move || m2.wait_until(|v| (*v == 3).then_some(*v)));
        for _ in 0..3 {
            m.with_notify(|v| *v += 1);
        }
        assert_eq!(Join::join(h), Ok(3));
    }

    #[test]
    fn with_lock_if_runs_the_closure_either_way() {
        let lock = <Lock<ParkingLot>>::new(());
        assert_eq!(with_lock_if::<ParkingLot, _>(&lock, true, || 1), 1);
        assert_eq!(with_lock_if::<ParkingLot, _>(&lock, false, || 2), 2);
    }
}
