//! The one definition of the checked [`SyncFamily`]s: `sync_family!`
//! writes a family (a unit struct, its monitor and its join handle) on the
//! `sync` and `thread` modules of a crate that mirrors std's API, so that
//! loom's family ([`crate::loom_family`]) and shuttle's
//! ([`crate::shuttle_family`]) are the same code on different primitives.
//!
//! Models: a monitor is the crate's `sync::Mutex` plus its `sync::Condvar`;
//! [`Monitor::with_notify`] notifies every waiter after the closure,
//! [`Monitor::with_notify_if`] only when the closure asks (each notify is a
//! scheduling point, so a saved one is a smaller state space);
//! [`Monitor::wait_until`] waits on the condition variable in a loop; a
//! spawn is a named `thread::Builder` thread (the name shows in the
//! checker's report); a yield is `thread::yield_now`.
//!
//! Leaves out: what differs between the checkers (which closure must hold
//! the values, how far they explore): the two families' own modules say it.
//! The real-thread family, parking_lot's, stays in `reference::sync`: its
//! guard API differs (no poisoning, `wait(&mut guard)`).
//!
//! [`SyncFamily`]: reference::sync::SyncFamily
//! [`Monitor::with_notify`]: reference::sync::Monitor::with_notify
//! [`Monitor::with_notify_if`]: reference::sync::Monitor::with_notify_if
//! [`Monitor::wait_until`]: reference::sync::Monitor::wait_until

/// Defines `$family`, a [`reference::sync::SyncFamily`] on
/// `$krate::sync::{Mutex, Condvar}` and `$krate::thread`, with its monitor
/// `$monitor` and join handle `$join`.
macro_rules! sync_family {
    ($krate:ident, $family:ident, $monitor:ident, $join:ident) => {
        /// The `expect` of a lock or wait: a failed check is the only panic
        /// with a lock held, and it ends the run.
        const NEVER_POISONED: &str =
            concat!("a ", stringify!($krate), " mutex is never poisoned here");

        #[doc = concat!("`", stringify!($krate), "`'s primitives as a")]
        #[doc = "[`SyncFamily`](reference::sync::SyncFamily)."]
        #[derive(Debug, Clone, Copy, Default)]
        pub struct $family;

        #[doc = concat!("[`", stringify!($family), "`]'s monitor: a ", stringify!($krate))]
        #[doc = "mutex and its condition variable."]
        #[derive(Debug)]
        pub struct $monitor<T> {
            value: $krate::sync::Mutex<T>,
            cond: $krate::sync::Condvar,
        }

        impl<T: Send> ::reference::sync::Monitor<T> for $monitor<T> {
            fn new(value: T) -> Self {
                $monitor {
                    value: $krate::sync::Mutex::new(value),
                    cond: $krate::sync::Condvar::new(),
                }
            }

            fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
                f(&mut self.value.lock().expect(NEVER_POISONED))
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
                let mut guard = self.value.lock().expect(NEVER_POISONED);
                loop {
                    if let Some(r) = ready(&mut guard) {
                        return r;
                    }
                    guard = self.cond.wait(guard).expect(NEVER_POISONED);
                }
            }
        }

        #[doc = concat!("[`", stringify!($family), "`]'s join handle.")]
        #[derive(Debug)]
        pub struct $join<R>($krate::thread::JoinHandle<R>);

        impl<R> ::reference::sync::Join<R> for $join<R> {
            fn join(self) -> Result<R, ::reference::sync::Panicked> {
                self.0.join().map_err(|_| ::reference::sync::Panicked)
            }
        }

        impl ::reference::sync::SyncFamily for $family {
            type Monitor<T: Send + 'static> = $monitor<T>;
            type JoinHandle<R: Send + 'static> = $join<R>;

            fn spawn<R: Send + 'static>(
                name: &str,
                f: impl FnOnce() -> R + Send + 'static,
            ) -> Self::JoinHandle<R> {
                let h = $krate::thread::Builder::new()
                    .name(name.to_string())
                    .spawn(f)
                    .expect(concat!("spawn a ", stringify!($krate), " thread"));
                $join(h)
            }

            fn yield_now() {
                $krate::thread::yield_now();
            }
        }
    };
}

pub(crate) use sync_family;
