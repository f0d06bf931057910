//! The vhost-user reply path, measured: one binary so that every figure of
//! the README table comes from one run on one machine.
//!
//! Criterion groups (each element is one request and its reply, so
//! criterion's throughput is requests per second):
//! - `limit`: the ceiling, a raw socketpair ping-pong with the IOTLB byte
//!   sizes (44-byte request, 20-byte reply), one read per message
//!   (`pingpong`) and header and payload read separately
//!   (`pingpong-split-reads`); and the request/reply mutex alone, one
//!   uncontended take and release (`request-reply-lock-only`, not a round trip).
//! - `reference`: IOTLB updates with NEED_REPLY through the reference
//!   front-end against the reference back-end over a socketpair:
//!   `unlocked/1` (QEMU 9.1, one thread: more would race) and `mutex/1`,
//!   `mutex/2`, `mutex/4` (aggregate over that many requesting threads).
//! - `peer`: rust-vmm's `vhost::vhost_user::Frontend` and the reference
//!   front-end against the same reference back-end: `set-vring-num/*` (with
//!   NEED_REPLY and REPLY_ACK) and `get-features/*`.
//! - `model`: exhaustive BFS of the model, elements = unique states, so the
//!   throughput is states per second: `default-all-variants/{1,2}` (the ten
//!   variants on `Scenario::default()`) and `large-qemu-9.1/{1,2}` (8
//!   virtqueues, 3 back-end misses, every thread), with 1 and 2 checker threads.
//!
//! After the groups, a `summary` pass measures the same set-ups again in
//! short interleaved rounds (the median is kept; ratios are paired within a
//! round), recording every request's latency in an HDR histogram (criterion
//! gives no p99), and prints the README table with the load average.
//! `cargo bench -- --quick` (at the root or with `-p benches`) shortens
//! everything; a name filter skips the summary unless it matches `summary`.
//!
//! Leaves out: guest memory traffic, the back-end channel, the race (the
//! unlocked front-end is only driven by one thread), and process boundaries
//! (the back-end is a thread of the same process).

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use benches::{
    explore, explore_all, large_scenario, latency_histogram, load_average, median, micros,
    paired_ratio, per_second, quantile, reference_channel, selected, update, LockOnly, Mode, Op,
    PingPong, ReferencePeer, RustVmmPeer, Workers, MUTEX, UNLOCKED,
};
use criterion::{BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use reference::scenario::{LockPolicy, Scenario, Variant};

/// Requesting-thread counts of the mutex policy.
const THREADS: [usize; 3] = [1, 2, 4];

fn limit(c: &mut Criterion) {
    let mut g = c.benchmark_group("limit");
    g.throughput(Throughput::Elements(1));
    for (name, split) in [("pingpong", false), ("pingpong-split-reads", true)] {
        let mut p = PingPong::new(split);
        g.bench_function(name, |b| b.iter(|| p.round_trip()));
    }
    let lock = LockOnly::default();
    g.bench_function("request-reply-lock-only", |b| b.iter(|| lock.take()));
    g.finish();
}

fn reference(c: &mut Criterion) {
    let mut g = c.benchmark_group("reference");
    g.throughput(Throughput::Elements(1));
    let ch = reference_channel(UNLOCKED);
    g.bench_function(BenchmarkId::new("unlocked", 1), |b| b.iter(|| ch.update(0)));
    drop(ch);
    for threads in THREADS {
        let ch = reference_channel(MUTEX);
        if threads == 1 {
            g.bench_function(BenchmarkId::new("mutex", 1), |b| b.iter(|| ch.update(0)));
            continue;
        }
        let fe = Arc::clone(&ch.frontend);
        let w = Workers::new(threads, Arc::new(move |i: usize| update(&fe, i as u8)));
        g.bench_function(BenchmarkId::new("mutex", threads), |b| b.iter_custom(|n| w.run(n)));
    }
    g.finish();
}

fn peer(c: &mut Criterion) {
    let mut g = c.benchmark_group("peer");
    g.throughput(Throughput::Elements(1));
    let vmm = RustVmmPeer::new();
    let ref_mutex = ReferencePeer::new(MUTEX).expect("reference negotiates");
    let ref_unlocked = ReferencePeer::new(UNLOCKED).expect("reference negotiates");
    g.bench_function("set-vring-num/rust-vmm", |b| b.iter(|| vmm.set_vring_num()));
    g.bench_function("set-vring-num/reference-mutex", |b| b.iter(|| ref_mutex.set_vring_num()));
    g.bench_function("set-vring-num/reference-unlocked", |b| {
        b.iter(|| ref_unlocked.set_vring_num())
    });
    g.bench_function("get-features/rust-vmm", |b| b.iter(|| black_box(vmm.get_features())));
    g.bench_function("get-features/reference-mutex", |b| {
        b.iter(|| black_box(ref_mutex.get_features()))
    });
    g.bench_function("get-features/reference-unlocked", |b| {
        b.iter(|| black_box(ref_unlocked.get_features()))
    });
    g.finish();
}

fn model(c: &mut Criterion, mode: Mode) {
    let mut g = c.benchmark_group("model");
    g.sample_size(10);
    let qemu91 = Variant::new(LockPolicy::Qemu91);
    for threads in [1, 2] {
        if !selected(&format!("model/default-all-variants/{threads}")) {
            continue;
        }
        g.throughput(Throughput::Elements(states(mode, || {
            explore_all(Scenario::default(), threads).0
        })));
        g.bench_function(BenchmarkId::new("default-all-variants", threads), |b| {
            b.iter_custom(|n| (0..n).map(|_| explore_all(Scenario::default(), threads).1).sum())
        });
    }
    for threads in [1, 2] {
        if !selected(&format!("model/large-qemu-9.1/{threads}")) {
            continue;
        }
        g.throughput(Throughput::Elements(states(mode, || {
            explore(qemu91, large_scenario(), threads).0
        })));
        g.bench_function(BenchmarkId::new("large-qemu-9.1", threads), |b| {
            b.iter_custom(|n| (0..n).map(|_| explore(qemu91, large_scenario(), threads).1).sum())
        });
    }
    g.finish();
}

/// The unique states a run explores (the throughput's element count);
/// not computed in test mode, which only checks that each benchmark runs.
fn states(mode: Mode, count: impl FnOnce() -> usize) -> u64 {
    if mode == Mode::Test {
        1
    } else {
        count() as u64
    }
}

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
        ("default scenario, all 10 variants", 1, 0, Vec::new()),
        ("default scenario, all 10 variants", 2, 0, Vec::new()),
        ("8 virtqueues, 3 misses, qemu-9.1", 1, 0, Vec::new()),
        ("8 virtqueues, 3 misses, qemu-9.1", 2, 0, Vec::new()),
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
                // `cargo test --benches` skips the seconds-long run (row left at 0).
                continue;
            }
            let (n, t) = if i < 2 {
                explore_all(Scenario::default(), *threads)
            } else {
                explore(Variant::new(LockPolicy::Qemu91), large_scenario(), *threads)
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
    println!("| model (exhaustive BFS) | checker threads | unique states | states/s |");
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
    let mode = Mode::from_args();
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    limit(&mut c);
    reference(&mut c);
    peer(&mut c);
    model(&mut c, mode);
    c.final_summary();
    if mode != Mode::List && selected("summary") {
        summary(mode);
    }
}
