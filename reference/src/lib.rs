//! The executable half of the vhost-user reply race: the wire format (used by
//! every crate of the workspace), QEMU's log messages, the variants and the
//! scenario description; and the reference implementation: transports (a
//! real Unix socket and an in-memory stream), the sync seam, a front-end
//! whose functions mirror QEMU's one to one, the threads of the race with
//! each variant's locks, a back-end, and the runnable scenario.
//!
//! Leaves out: everything of vhost-user that the race does not touch (see each
//! module's own doc).

pub mod backend;
pub mod frontend;
pub mod harness;
pub mod qemu;
pub mod qemu_log;
pub mod record;
pub mod reply_queue;
pub mod run;
pub mod scenario;
pub mod sync;
pub mod threads;
pub mod transport;
pub mod wire;
