//! The sync seam is implementable from outside the crate, as the `proofs`
//! crate must do for loom and shuttle: a family over `std::sync` written
//! here, with the same front-end, threads and back-end over the in-memory
//! transport, counting every lock acquisition to keep the per-message cost
//! in view (loom's state space grows with it).
//!
//! Leaves out: loom and shuttle themselves (they live in `proofs`).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use reference::harness::{in_memory, spawn_backend, spawn_roles};
use reference::scenario::{LockPolicy, Scenario, Variant};
use reference::sync::{Join, Monitor, Panicked, SyncFamily};

static ACQUISITIONS: AtomicUsize = AtomicUsize::new(0);

struct StdFamily;

struct StdMonitor<T> {
    value: Mutex<T>,
    cond: Condvar,
}

impl<T: Send> Monitor<T> for StdMonitor<T> {
    fn new(value: T) -> Self {
        StdMonitor { value: Mutex::new(value), cond: Condvar::new() }
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        ACQUISITIONS.fetch_add(1, Ordering::Relaxed);
        f(&mut self.value.lock().unwrap())
    }

    fn with_notify<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let r = self.with(f);
        self.cond.notify_all();
        r
    }

    fn wait_until<R>(&self, mut ready: impl FnMut(&mut T) -> Option<R>) -> R {
        ACQUISITIONS.fetch_add(1, Ordering::Relaxed);
        let mut g = self.value.lock().unwrap();
        loop {
            if let Some(r) = ready(&mut g) {
                return r;
            }
            g = self.cond.wait(g).unwrap();
        }
    }
}

struct StdJoin<R>(std::thread::JoinHandle<R>);

impl<R> Join<R> for StdJoin<R> {
    fn join(self) -> Result<R, Panicked> {
        self.0.join().map_err(|_| Panicked)
    }
}

impl SyncFamily for StdFamily {
    type Monitor<T: Send + 'static> = StdMonitor<T>;
    type JoinHandle<R: Send + 'static> = StdJoin<R>;

    fn spawn<R: Send + 'static>(
        _name: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Self::JoinHandle<R> {
        StdJoin(std::thread::spawn(f))
    }

    fn yield_now() {
        std::thread::yield_now();
    }
}

#[test]
fn an_external_family_runs_the_scenario_over_memory() {
    let scenario = Scenario::default();
    let variant = Variant::new(LockPolicy::Mutex);
    let (fe, be) = in_memory::<StdFamily>(variant, &scenario, true);
    let backend = spawn_backend::<StdFamily, _>(be);
    let fe = Arc::new(fe);
    let before = ACQUISITIONS.load(Ordering::Relaxed);
    for (_, h) in spawn_roles(&fe, &scenario.threads(variant.policy)) {
        Join::join(h).unwrap().unwrap();
    }
    let used = ACQUISITIONS.load(Ordering::Relaxed) - before;
    fe.shutdown();
    // 4 request/reply pairs (2 IOTLB updates, POSTCOPY_END, 1 miss answer)
    // plus one miss on the back-end channel.
    assert_eq!(Join::join(backend).unwrap().unwrap(), 4);
    assert!(fe.record().log_lines().is_empty());
    // Per request/reply pair the front-end takes: send 1, header recv 1,
    // payload recv 1, delivery record 1, request/reply mutex 1; the back-end:
    // header recv 1, payload recv 1, reply send 1. With the BQL and the
    // miss, the whole scenario stays within a small bound.
    assert!(used <= 4 * 8 + 12, "{used} lock acquisitions");
    eprintln!("lock acquisitions for the default scenario under mutex: {used}");
}
