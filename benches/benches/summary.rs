//! The README table: every set-up of `reply_path.rs` measured again in
//! short interleaved rounds (the median is kept; ratios are paired within a
//! round), every request's latency recorded in an HDR histogram (criterion
//! gives no p99), and the model's exhaustive runs, the large scenario
//! included, timed whole (one exploration is a round; ~13 s for the large
//! scenario, too long for criterion's samples). Printed with the load
//! average, after criterion's groups (`cargo bench` runs bench targets in
//! name order: `reply_path`, then `summary`).
//!
//! Arguments are cargo's and the user's, not criterion's: `--bench` (absent
//! under `cargo test --benches`: one smoke round, large scenario skipped),
//! `--quick` (short rounds), `--list`; any other flag is ignored, and a free
//! argument is a name filter that runs this table only when it is a
//! substring of `summary`.
//!
//! Leaves out: criterion's statistics (outliers, bootstrap intervals,
//! comparison with a saved baseline) and its plots.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::{
    explore, explore_all, large_scenario, latency_histogram, load_average, median, micros,
    paired_ratio, per_second, quantile, reference_channel, search, short_reads_scenario, update,
    LockOnly, Mode, Op, PingPong, ReferencePeer, RustVmmPeer, Workers, MUTEX, UNLOCKED,
};
use hdrhistogram::Histogram;
use reference::scenario::{LockPolicy, Scenario, Variant};

/// One row of the summary: a set-up measured round after round.
struct Row {
    name: &'static str,
    threads: usize,
    rates: Vec<f64>,
    hist: Histogram<u64>,
}

/// Runs `op` on `threads` workers for about `dur`; requests per second and
/// the latency histogram.
fn measure(threads: usize, op: Op, dur: Duration) -> (f64, Histogram<u64>) {
    let w = Workers::new(threads, op);
    // Warm-up: connections, caches, the back-end's IOTLB.
    w.run(1000);
    let mut hist = latency_histogram();
    let mut done = 0u64;
    let mut elapsed = Duration::ZERO;
    while elapsed < dur {
        let (t, h) = w.run_recorded(500);
        hist.add(&h).expect("same bounds");
        done += 500 * threads as u64;
        elapsed += t;
    }
    (done as f64 / elapsed.as_secs_f64(), hist)
}

fn summary(mode: Mode) {
    let dur = mode.summary_duration();
    let load_before = load_average();
    let started = Instant::now();
    type SetUp = Box<dyn Fn() -> (Op, Box<dyn std::any::Any>)>;
    // Each set-up returns the op and whatever must live as long as it does.
    let mut setups: Vec<(&'static str, usize, SetUp)> = vec![
        (
            "raw ping-pong",
            1,
            Box::new(|| {
                let p = Arc::new(parking_lot::Mutex::new(PingPong::new(false)));
                let q = Arc::clone(&p);
                (Arc::new(move |_| q.lock().round_trip()) as Op, Box::new(p) as _)
            }),
        ),
        (
            "raw ping-pong, split reads",
            1,
            Box::new(|| {
                let p = Arc::new(parking_lot::Mutex::new(PingPong::new(true)));
                let q = Arc::clone(&p);
                (Arc::new(move |_| q.lock().round_trip()) as Op, Box::new(p) as _)
            }),
        ),
    ];
    for (name, variant, threads) in [
        ("reference IOTLB, unlocked", UNLOCKED, 1),
        ("reference IOTLB, mutex", MUTEX, 1),
        ("reference IOTLB, mutex", MUTEX, 2),
        ("reference IOTLB, mutex", MUTEX, 4),
    ] {
        setups.push((
            name,
            threads,
            Box::new(move || {
                let ch = reference_channel(variant);
                let fe = Arc::clone(&ch.frontend);
                (Arc::new(move |i: usize| update(&fe, i as u8)) as Op, Box::new(ch) as _)
            }),
        ));
    }
    setups.push((
        "SET_VRING_NUM, rust-vmm Frontend",
        1,
        Box::new(|| {
            let p = Arc::new(RustVmmPeer::new());
            let q = Arc::clone(&p);
            (Arc::new(move |_| q.set_vring_num()) as Op, Box::new(p) as _)
        }),
    ));
    for (name, variant) in
        [("SET_VRING_NUM, reference mutex", MUTEX), ("SET_VRING_NUM, reference unlocked", UNLOCKED)]
    {
        setups.push((
            name,
            1,
            Box::new(move || {
                let p = Arc::new(ReferencePeer::new(variant).expect("negotiates"));
                let q = Arc::clone(&p);
                (Arc::new(move |_| q.set_vring_num()) as Op, Box::new(p) as _)
            }),
        ));
    }
    setups.push((
        "GET_FEATURES, rust-vmm Frontend",
        1,
        Box::new(|| {
            let p = Arc::new(RustVmmPeer::new());
            let q = Arc::clone(&p);
            (
                Arc::new(move |_| {
                    black_box(q.get_features());
                }) as Op,
                Box::new(p) as _,
            )
        }),
    ));
    for (name, variant) in
        [("GET_FEATURES, reference mutex", MUTEX), ("GET_FEATURES, reference unlocked", UNLOCKED)]
    {
        setups.push((
            name,
            1,
            Box::new(move || {
                let p = Arc::new(ReferencePeer::new(variant).expect("negotiates"));
                let q = Arc::clone(&p);
                (
                    Arc::new(move |_| {
                        black_box(q.get_features());
                    }) as Op,
                    Box::new(p) as _,
                )
            }),
        ));
    }

    let mut rows: Vec<Row> = setups
        .iter()
        .map(|(name, threads, _)| Row {
            name,
            threads: *threads,
            rates: Vec::new(),
            hist: latency_histogram(),
        })
        .collect();
    let mut model_rows: Vec<(&str, usize, usize, Vec<f64>)> = vec![
        ("default scenario, all 12 variants", 1, 0, Vec::new()),
        ("default scenario, all 12 variants", 2, 0, Vec::new()),
        ("8 virtqueues, 3 misses, qemu-9.1", 1, 0, Vec::new()),
        ("8 virtqueues, 3 misses, qemu-9.1", 2, 0, Vec::new()),
        ("our DFS, qemu-9.1, 4 vq, short reads, every interleaving", 1, 0, Vec::new()),
        ("our DFS, qemu-9.1, 4 vq, short reads, reduced", 1, 0, Vec::new()),
    ];
    for _ in 0..mode.summary_rounds() {
        for ((_, threads, setup), row) in setups.iter().zip(rows.iter_mut()) {
            let (op, keep) = setup();
            let (rate, hist) = measure(*threads, op, dur);
            drop(keep);
            row.rates.push(rate);
            row.hist.add(&hist).expect("same bounds");
        }
    }
    for _ in 0..mode.model_rounds() {
        for (i, (_, threads, states, rates)) in model_rows.iter_mut().enumerate() {
            if i >= 2 && mode == Mode::Test {
                // `cargo test --benches` skips the seconds-long runs (row left at 0).
                continue;
            }
            let qemu91 = Variant::new(LockPolicy::Qemu91);
            let (n, t) = match i {
                0 | 1 => explore_all(Scenario::default(), *threads),
                2 | 3 => explore(qemu91, large_scenario(), *threads),
                4 => search(qemu91, short_reads_scenario(), false),
                _ => search(qemu91, short_reads_scenario(), true),
            };
            *states = n;
            rates.push(n as f64 / t.as_secs_f64());
        }
    }
    let load_after = load_average();

    let rate = |name: &str, threads: usize| {
        rows.iter().find(|r| r.name == name && r.threads == threads).expect("row").rates.clone()
    };
    let ceiling = rate("raw ping-pong", 1);
    let split = rate("raw ping-pong, split reads", 1);
    let unlocked = rate("reference IOTLB, unlocked", 1);
    let mutex1 = rate("reference IOTLB, mutex", 1);
    let vmm_set = rate("SET_VRING_NUM, rust-vmm Frontend", 1);
    let ref_set = rate("SET_VRING_NUM, reference mutex", 1);
    let vmm_get = rate("GET_FEATURES, rust-vmm Frontend", 1);
    let ref_get = rate("GET_FEATURES, reference mutex", 1);

    println!();
    println!(
        "## Summary ({} ms per measurement, median of {} interleaved rounds; model: median of {}; {:.0} s in all)",
        dur.as_millis(),
        mode.summary_rounds(),
        mode.model_rounds(),
        started.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "Machine: {} cores; load average (1, 5, 15 min) {load_before} before, {load_after} after.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| measurement | threads | requests/s (aggregate, median) | rounds' middle half | p50 | p99 |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for r in &mut rows {
        println!(
            "| {} | {} | {} | {}–{} | {} | {} |",
            r.name,
            r.threads,
            per_second(median(&mut r.rates)),
            per_second(quantile(&r.rates, 0.25)),
            per_second(quantile(&r.rates, 0.75)),
            micros(r.hist.value_at_quantile(0.5)),
            micros(r.hist.value_at_quantile(0.99)),
        );
    }
    println!();
    println!(
        "| model (stateright's BFS, or our DFS) | checker threads | unique states | states/s |"
    );
    println!("|---|---:|---:|---:|");
    for (name, threads, states, rates) in &mut model_rows {
        println!("| {name} | {threads} | {} | {} |", per_second(*states as f64), {
            per_second(median(rates))
        });
    }
    println!();
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    println!("Ratios are medians of per-round ratios (both sides measured in the same round).");
    println!();
    let lock_cost = (1.0 - paired_ratio(&mutex1, &unlocked)) * 100.0;
    let lock_ns = LockOnly::default().ns_per_take(10_000_000);
    let intrinsic = lock_ns * median(&mut unlocked.clone()) / 1e9 * 100.0;
    let vs_ceiling = paired_ratio(&ceiling, &unlocked);
    let vs_split = paired_ratio(&split, &unlocked);
    let vs_vmm_set = paired_ratio(&ref_set, &vmm_set);
    let vs_vmm_get = paired_ratio(&ref_get, &vmm_get);
    println!("| target | measured | |");
    println!("|---|---:|---|");
    println!(
        "| lock costs under 3% at one thread (mutex/1 vs unlocked/1) | {lock_cost:+.1}% | {} |",
        verdict(lock_cost < 3.0)
    );
    println!(
        "| the lock alone ({lock_ns:.1} ns uncontended) as a share of one unlocked round trip | {intrinsic:.2}% | {} |",
        verdict(intrinsic < 3.0)
    );
    println!(
        "| reference within 1.3x of the raw ping-pong (unlocked/1) | {vs_ceiling:.2}x | {} |",
        verdict(vs_ceiling <= 1.3)
    );
    println!(
        "| (information) reference vs a ping-pong that also reads header and payload apart | {vs_split:.2}x | |"
    );
    println!(
        "| reference at least as fast as rust-vmm, SET_VRING_NUM (both locked) | {:.2}x | {} |",
        vs_vmm_set,
        verdict(vs_vmm_set >= 1.0)
    );
    println!(
        "| reference at least as fast as rust-vmm, GET_FEATURES (both locked) | {:.2}x | {} |",
        vs_vmm_get,
        verdict(vs_vmm_get >= 1.0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = Mode::from_args(&args);
    if mode == Mode::List {
        println!("summary: bench");
        return;
    }
    if !bench_support::filter_selects(&args, "summary") {
        return;
    }
    summary(mode);
}
