//! Measures how many iterations a variant needs before its first logged error
//! on a real socketpair, with and without the race-window knob.
//!
//! Leaves out: nothing to model; this is a measuring tool.
//! Usage: `cargo run --release -p reference --example race_probe -- qemu-9.1 10000 [widen]`

use reference::run::{run_with, RunOptions};
use reference::scenario::{Scenario, Variant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let variant: Variant = args.get(1).map_or("qemu-9.1", String::as_str).parse().expect("variant");
    let n: u64 = args.get(2).map_or(10_000, |s| s.parse().expect("iterations"));
    let widen = args.get(3).is_some_and(|s| s == "widen");
    let first = run_with(
        variant,
        &Scenario::default(),
        n,
        RunOptions { widen_race_window: widen, stop_at_first_failure: true, ..Default::default() },
    );
    println!("first failure: {:?}", first.first_failure.as_ref().map(|f| f.iteration));
    let all = run_with(
        variant,
        &Scenario::default(),
        n,
        RunOptions { widen_race_window: widen, ..Default::default() },
    );
    print!("{all}");
}
