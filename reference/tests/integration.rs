//! The reference crate's integration tests, one test binary: each file in
//! `tests/` is a module here and keeps its own doc, helpers and claims. One
//! binary links once where one per file linked three times; the tests run
//! in parallel as before.
//!
//! Leaves out: `tests/malformed.rs`, its own binary (`[[test]]` in
//! `Cargo.toml`): it counts the process's descriptors, which tests running
//! beside it in the same process would change.

mod external_family;
mod memory_transport;
mod race_socket;

// That every file in tests/ is in a test binary is checked for every
// crate of the workspace in one place: checker/tests/integration.rs.
