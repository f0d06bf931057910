//! The loom proofs, one test binary: each `tests/loom_*.rs` file is a
//! module here and keeps its own doc, scenario and claim. One binary links
//! once where one per file linked eight times. Each test runs its model in
//! a process of its own (`proofs::body::in_own_process`): two loom models in
//! one process contend on its address space, in two they run side by side.
//!
//! Leaves out: the shuttle proofs (`shuttle_suite.rs`): shuttle installs a
//! process-wide panic hook that loom's expected failures would run through.

mod loom_mutex_start_postcopy;
mod loom_mutex_start_postcopy_miss;
mod loom_mutex_start_postcopy_miss_need_reply;
mod loom_qemu91_start_postcopy;
mod loom_qemu91_start_postcopy_miss;
mod loom_reply_queue_start_postcopy;
mod loom_reply_queue_start_postcopy_miss;
mod loom_reply_queue_start_postcopy_miss_need_reply;
