//! The shuttle proofs, one test binary: each `tests/shuttle_*.rs` file is a
//! module here and keeps its own doc, scenario and claim. One binary links
//! once where one per file linked six times, and its tests run in parallel.
//! Every shuttle runner of the process has the same failure persistence
//! (`proofs::body`'s schedule directory; shuttle's panic hook keeps the
//! first runner's), and the runs that must fail take turns with it.
//!
//! Leaves out: the loom proofs (`loom_suite.rs`).

mod shuttle_mutex_all_threads;
mod shuttle_mutex_all_threads_short_reads;
mod shuttle_qemu91_all_threads;
mod shuttle_reply_queue_all_threads;
mod shuttle_reply_queue_all_threads_short_reads;
mod shuttle_reply_queue_miss_need_reply;
