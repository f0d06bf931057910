use benches::{reference_channel, try_update, Workers, MUTEX, REPLY_QUEUE};
use std::sync::Arc;
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let v = if a[1] == "rq" { REPLY_QUEUE } else { MUTEX };
    let threads: usize = a[2].parse().unwrap();
    let n: u64 = a[3].parse().unwrap();
    let ch = reference_channel(v);
    let fe = Arc::clone(&ch.frontend);
    let w = Workers::new(
        threads,
        Arc::new(move |i: usize| {
            assert!(try_update(&fe, i as u8));
        }),
    );
    w.run(200);
    let t = w.run(n);
    println!("{} {} threads: {:.0}/s", a[1], threads, n as f64 / t.as_secs_f64());
}
