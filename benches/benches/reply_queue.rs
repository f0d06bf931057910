//! Issue 14's measurement: IOTLB updates with NEED_REPLY through the
//! reference front-end against the reference back-end over a real
//! socketpair (handshaken as QEMU does), at 1, 2 and 4 requesting threads,
//! for `reply-queue`, `mutex` and `qemu-9.1` (unlocked). Throughput, and
//! p50 and p99 of every request's latency in an HDR histogram; short
//! interleaved rounds as the `summary` target takes them (the median is
//! kept, ratios are paired within a round), each set-up on a fresh
//! connection. Ends with the targets: at 1 thread reply-queue
//! within 3% of the mutex; at 4 threads at least 1.5x the mutex's
//! throughput, and its p99 within 5x of its own p50.
//!
//! The unlocked front-end races as soon as two threads share the socket:
//! its failed requests are counted (not fatal), throughput counts
//! acknowledged requests only, and a round in which a thread stays blocked
//! (a reader waiting for bytes another thread took) is cut by a watchdog
//! that shuts the connection down, and counted as hung.
//!
//! Arguments as the `summary` target reads them: `--bench` (absent under
//! `cargo test --benches`: one smoke round), `--quick`, `--list`; a free
//! argument runs this table only when it is a substring of `reply_queue`.
//!
//! Leaves out: the back-end channel (no misses are sent while measuring),
//! guest memory traffic, and process boundaries (the back-end is a thread).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use bench_support::{
    latency_histogram, load_average, median, micros, paired_ratio, per_second, quantile,
    reference_channel, try_update, Mode, Workers, MUTEX, REPLY_QUEUE, UNLOCKED,
};
use hdrhistogram::Histogram;
use reference::scenario::Variant;

/// Requesting thread counts measured.
const THREADS: [usize; 3] = [1, 2, 4];

/// One row: a policy at a thread count, measured round after round.
struct Row {
    variant: Variant,
    threads: usize,
    rates: Vec<f64>,
    hist: Histogram<u64>,
    failed: u64,
    hung: u64,
}

/// What one measurement of one set-up gave.
struct Measured {
    /// Acknowledged requests per second.
    rate: f64,
    hist: Histogram<u64>,
    failed: u64,
    hung: bool,
}

/// A fresh handshaken channel for `variant`, `threads` workers sending
/// IOTLB updates on it for about `dur` (after a warm-up), with a watchdog
/// that shuts the channel down if the measurement has not ended `dur` + 2 s
/// after it started.
fn measure(variant: Variant, threads: usize, dur: Duration) -> Measured {
    let ch = reference_channel(variant);
    let failed = Arc::new(AtomicU64::new(0));
    let fe = Arc::clone(&ch.frontend);
    let errors = Arc::clone(&failed);
    let w = Workers::new(
        threads,
        Arc::new(move |i: usize| {
            if !try_update(&fe, i as u8) {
                errors.fetch_add(1, Ordering::Relaxed);
            }
        }),
    );
    let (stop, stopped) = mpsc::channel::<()>();
    let hung = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let fe = Arc::clone(&ch.frontend);
        let hung = Arc::clone(&hung);
        std::thread::spawn(move || {
            if let Err(mpsc::RecvTimeoutError::Timeout) =
                stopped.recv_timeout(dur + Duration::from_secs(2))
            {
                hung.store(true, Ordering::Relaxed);
                fe.shutdown();
            }
        })
    };
    w.run(200 * threads as u64);
    failed.store(0, Ordering::Relaxed);
    let mut hist = latency_histogram();
    let mut done = 0u64;
    let mut elapsed = Duration::ZERO;
    while elapsed < dur {
        let (t, h) = w.run_recorded(250);
        hist.add(&h).expect("same bounds");
        done += 250 * threads as u64;
        elapsed += t;
    }
    let _ = stop.send(());
    let _ = watchdog.join();
    drop(w);
    drop(ch);
    let failed = failed.load(Ordering::Relaxed);
    Measured {
        rate: done.saturating_sub(failed) as f64 / elapsed.as_secs_f64(),
        hist,
        failed,
        hung: hung.load(Ordering::Relaxed),
    }
}

fn table(mode: Mode) {
    let dur = mode.summary_duration();
    let load_before = load_average();
    let started = Instant::now();
    let mut rows: Vec<Row> = [REPLY_QUEUE, MUTEX, UNLOCKED]
        .into_iter()
        .flat_map(|variant| {
            THREADS.into_iter().map(move |threads| Row {
                variant,
                threads,
                rates: Vec::new(),
                hist: latency_histogram(),
                failed: 0,
                hung: 0,
            })
        })
        .collect();
    for _ in 0..mode.summary_rounds() {
        for row in rows.iter_mut() {
            let m = measure(row.variant, row.threads, dur);
            row.rates.push(m.rate);
            row.hist.add(&m.hist).expect("same bounds");
            row.failed += m.failed;
            row.hung += u64::from(m.hung);
        }
    }
    let load_after = load_average();

    println!();
    println!(
        "## Reply-queue against the mutex and the unlocked front-end ({} ms per measurement, median of {} interleaved rounds; {:.0} s in all)",
        dur.as_millis(),
        mode.summary_rounds(),
        started.elapsed().as_secs_f64()
    );
    println!();
    println!(
        "Machine: {} cores; load average (1, 5, 15 min) {load_before} before, {load_after} after.",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!();
    println!(
        "| IOTLB updates with NEED_REPLY | threads | acknowledged requests/s (median) | rounds' middle half | p50 | p99 | failed requests | rounds hung |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    for r in &mut rows {
        println!(
            "| {} | {} | {} | {}–{} | {} | {} | {} | {} |",
            r.variant,
            r.threads,
            per_second(median(&mut r.rates.clone())),
            per_second(quantile(&r.rates, 0.25)),
            per_second(quantile(&r.rates, 0.75)),
            micros(r.hist.value_at_quantile(0.5)),
            micros(r.hist.value_at_quantile(0.99)),
            r.failed,
            r.hung,
        );
    }
    let row = |v: Variant, t: usize| {
        rows.iter().find(|r| r.variant == v && r.threads == t).expect("measured row")
    };
    let verdict = |ok: bool| if ok { "met" } else { "missed" };
    let one = paired_ratio(&row(REPLY_QUEUE, 1).rates, &row(MUTEX, 1).rates);
    let four = paired_ratio(&row(REPLY_QUEUE, 4).rates, &row(MUTEX, 4).rates);
    let rq4 = &row(REPLY_QUEUE, 4).hist;
    let tail = rq4.value_at_quantile(0.99) as f64 / rq4.value_at_quantile(0.5).max(1) as f64;
    println!();
    println!("Ratios are medians of per-round ratios (both sides measured in the same round).");
    println!();
    println!("| target | measured | |");
    println!("|---|---:|---|");
    println!(
        "| 1 thread: reply-queue within 3% of the mutex (reply-queue/mutex) | {one:.3}x | {} |",
        verdict(one >= 0.97)
    );
    println!(
        "| 4 threads: reply-queue at least 1.5x the mutex's throughput | {four:.2}x | {} |",
        verdict(four >= 1.5)
    );
    println!(
        "| 4 threads: reply-queue's p99 within 5x of its own p50 | {tail:.1}x | {} |",
        verdict(tail <= 5.0)
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mode = Mode::from_args(&args);
    if mode == Mode::List {
        println!("reply_queue: bench");
        return;
    }
    if !bench_support::filter_selects(&args, "reply_queue") {
        return;
    }
    table(mode);
}
