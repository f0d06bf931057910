//! The executable half of the vhost-user reply race, built on the pure
//! [`protocol`] crate (the wire format, QEMU's log messages, the variants and
//! the scenario, re-exported here as [`wire`], [`qemu_log`] and [`scenario`]
//! so that `reference::wire::...` paths keep working): transports (a real
//! Unix socket and an in-memory stream), the sync seam, a front-end whose
//! functions mirror QEMU's one to one, the threads of the race with each
//! variant's locks, a back-end, and the runnable scenario.
//!
//! Leaves out: everything of vhost-user that the race does not touch (see each
//! module's own doc).

pub use protocol::{qemu_log, scenario, wire};

pub mod backend;
pub mod frontend;
pub mod harness;
pub mod qemu;
pub mod record;
pub mod reply_queue;
pub mod run;
pub mod sync;
pub mod threads;
pub mod transport;
