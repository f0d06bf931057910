//! The pure protocol half of the vhost-user reply race, shared by the model
//! (`model`), the reference implementation (`reference`, which re-exports
//! these modules), the checker, the proofs and the benches: the wire format
//! with QEMU's reply check ([`wire`]), the variants and the scenario
//! ([`scenario`]), QEMU's error messages rendered and parsed ([`qemu_log`]),
//! and the back-end's fault-injection plan that replays a model
//! counterexample on QEMU ([`plan`]).
//!
//! Models: data and pure functions only; no socket, no thread, no memory
//! mapping, so that the model depends on no OS crate.
//!
//! Leaves out: everything that runs (transports, the sync seam, the
//! front-end, the back-end, the threads of the race): those are in
//! `reference`.

pub mod plan;
pub mod qemu_log;
pub mod scenario;
pub mod wire;
