//! The model crate's integration tests, one test binary: each file in
//! `tests/` is a module here and keeps its own doc, helpers and claims. One
//! binary links once where one per file linked five times; the tests run in
//! parallel as before.
//!
//! Leaves out: nothing of the files' tests; only the binary they run in.

mod conformance;
mod device_stop;
mod explain;
mod model;
mod replay_reference;

// That every file in tests/ is in a test binary is checked for every
// crate of the workspace in one place: checker/tests/integration.rs.
