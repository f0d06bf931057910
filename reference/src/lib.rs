//! The executable half of the vhost-user reply race: the wire format (used by
//! every crate of the workspace), QEMU's log messages, the variants and the
//! scenario description.
//!
//! Leaves out: everything of vhost-user that the race does not touch (see each
//! module's own doc).

pub mod qemu_log;
pub mod scenario;
pub mod sync;
pub mod transport;
pub mod wire;
