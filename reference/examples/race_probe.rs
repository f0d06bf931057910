//! Measures, on a real socketpair, at which iteration a variant first logs a
//! misframed header (`Flags 0x.. instead of 0x5`) and a swapped reply
//! (`Received unexpected msg type`), with or without the race-window knob,
//! then prints the report of a full run.
//!
//! Leaves out: nothing to model; this is a measuring tool.
//! Usage: `cargo run --release -p reference --example race_probe -- qemu-9.1 10000 [widen]`

use reference::qemu_log::{LogLine, QemuError};
use reference::run::run;
use reference::scenario::{Scenario, Variant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let variant: Variant = args.get(1).map_or("qemu-9.1", String::as_str).parse().expect("variant");
    let n: u64 = args.get(2).map_or(10_000, |s| s.parse().expect("iterations"));
    let widen = args.get(3).is_some_and(|s| s == "widen");
    let (mut misframed, mut swapped) = (None, None);
    for i in 0..n {
        let r = run(variant, &Scenario::default(), 1, widen);
        for l in r.sequences.iter().flat_map(|s| &s.lines) {
            match LogLine::parse(l).map(|l| l.error) {
                Some(QemuError::ReadHeaderFlags { .. }) => misframed = misframed.or(Some(i)),
                Some(QemuError::UnexpectedMsgType { .. }) => swapped = swapped.or(Some(i)),
                _ => {}
            }
        }
        if misframed.is_some() && swapped.is_some() {
            break;
        }
    }
    println!(
        "first misframed header at iteration {misframed:?}, first swapped reply at {swapped:?}"
    );
    print!("{}", run(variant, &Scenario::default(), n, widen));
}
