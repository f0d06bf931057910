//! Building blocks for runners other than [`crate::run`]: the loom and
//! shuttle proofs and the benchmarks. A front-end and a back-end connected by
//! the in-memory transport of any [`SyncFamily`], and the scenario's threads
//! started on that family's threads.
//!
//! Models: the same objects [`crate::run`] uses over real sockets, with the
//! back-end channel preset instead of passed as a descriptor (the in-memory
//! transport carries none here) and, optionally, the handshake skipped: both
//! sides then start in the negotiated state QEMU reaches after it (REPLY_ACK,
//! BACKEND_REQ and PAGEFAULT, owner set, postcopy listening), which keeps the
//! number of synchronisation operations small for loom.
//!
//! For benchmarks over a real socket, [`over_socketpair`] does what one
//! iteration of [`crate::run`] does up to the threads: socketpairs, memfd
//! guest RAM, a back-end thread, and the whole handshake.
//!
//! Leaves out: hang detection (under loom and shuttle a blocked thread is a
//! deadlock the checker reports; with real threads use [`crate::run`]).
//!
//! Order of use: build with [`in_memory`], start the back-end with
//! [`spawn_backend`] and the roles with [`spawn_roles`], join the roles, call
//! [`Frontend::shutdown`], join the back-end, then read
//! [`Frontend::record`].

use std::sync::Arc;

use crate::backend::{Backend, BackendConfig, BackendError};
use crate::frontend::Frontend;
use crate::frontend::{FrontendError, GUEST_RAM_SIZE};
use crate::scenario::{Scenario, ThreadRole, Variant};
use crate::sync::ParkingLot;
use crate::sync::SyncFamily;
use crate::threads::ThreadResult;
use crate::transport::{MemoryTransport, Transport, TransportError, UnixTransport};
use std::os::fd::{AsFd, OwnedFd};

/// A front-end and back-end over family `F`'s in-memory transport.
pub type MemoryPair<F> = (Frontend<F, MemoryTransport<F>>, Backend<MemoryTransport<F>>);

/// Connects a front-end and a back-end for `variant` and `scenario` over
/// in-memory streams (receives capped at 4 bytes when
/// [`Scenario::short_reads`]; otherwise a receive takes what is queued, up
/// to what it asks, as [`Scenario::queued_reads`] says Linux does). With
/// `negotiated`, both start after the handshake; without, call
/// [`Frontend::handshake`] (with no descriptors) while the back-end serves.
pub fn in_memory<F: SyncFamily>(
    variant: Variant,
    scenario: &Scenario,
    negotiated: bool,
) -> MemoryPair<F> {
    let chunk = if scenario.short_reads { 4 } else { usize::MAX };
    let (fe_main, be_main) = MemoryTransport::<F>::pair_with_chunk(chunk);
    let (fe_chan, be_chan) = MemoryTransport::<F>::pair_with_chunk(chunk);
    let cfg = BackendConfig { map_memory: false, ..BackendConfig::for_scenario(scenario) };
    let mut backend = Backend::new(be_main, Some(Box::new(be_chan)), cfg);
    if negotiated {
        backend.assume_negotiated();
    }
    (Frontend::new(fe_main, Some(fe_chan), variant, *scenario), backend)
}

/// Starts each of `roles` on one of `F`'s threads.
pub fn spawn_roles<F: SyncFamily, T: Transport + 'static>(
    frontend: &Arc<Frontend<F, T>>,
    roles: &[ThreadRole],
) -> Vec<(ThreadRole, F::JoinHandle<ThreadResult>)> {
    roles
        .iter()
        .map(|&role| {
            let fe = Arc::clone(frontend);
            (role, F::spawn(role.name(), move || fe.run_role(role)))
        })
        .collect()
}

/// Starts the back-end's serve loop on one of `F`'s threads; it returns the
/// number of requests served once the front-end shuts the connection down.
pub fn spawn_backend<F: SyncFamily, T: Transport + 'static>(
    mut backend: Backend<T>,
) -> F::JoinHandle<Result<u64, BackendError>> {
    F::spawn("vhost-user-backend", move || {
        backend.serve()?;
        Ok(backend.requests_served())
    })
}

/// A front-end over a real Unix socket with real threads.
pub type SocketFrontend = Frontend<ParkingLot, UnixTransport>;
/// A back-end serving on its own thread; joins to its serve result.
pub type BackendThread = std::thread::JoinHandle<Result<(), BackendError>>;

/// Guest RAM as QEMU passes it in SET_MEM_TABLE: a memfd of
/// [`GUEST_RAM_SIZE`] bytes, for [`crate::frontend::guest_ram_region`].
pub fn guest_ram_memfd() -> Result<OwnedFd, TransportError> {
    let mem = nix::sys::memfd::memfd_create(c"guest-ram", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
        .map_err(|e| TransportError::Io(e.into()))?;
    nix::unistd::ftruncate(&mem, GUEST_RAM_SIZE as i64)
        .map_err(|e| TransportError::Io(e.into()))?;
    Ok(mem)
}

/// A front-end over a real socketpair, handshaken (through POSTCOPY_LISTEN)
/// with a back-end serving on its own thread, which returns once the
/// front-end is shut down ([`Frontend::shutdown`]) or dropped.
pub fn over_socketpair(
    variant: Variant,
    scenario: &Scenario,
) -> Result<(SocketFrontend, BackendThread), FrontendError> {
    let (fe_main, be_main) = UnixTransport::pair()?;
    let (fe_chan, be_chan) = UnixTransport::pair()?;
    let mem = guest_ram_memfd()?;
    let cfg = BackendConfig::for_scenario(scenario);
    let backend =
        ParkingLot::spawn("vhost-user-backend", move || Backend::new(be_main, None, cfg).serve());
    let mut fe = Frontend::new(fe_main, Some(fe_chan), variant, *scenario);
    let handshake = fe.handshake(Some(be_chan.as_fd()), Some(mem.as_fd()));
    // QEMU closes its copies once they are sent.
    drop(be_chan);
    drop(mem);
    match handshake {
        Ok(_userfaultfd) => Ok((fe, backend)),
        Err(e) => {
            fe.shutdown();
            let _ = backend.join();
            Err(e)
        }
    }
}
