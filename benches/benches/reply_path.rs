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
//! - `model`: exhaustive BFS of the model on the default scenario, all ten
//!   variants in turn (`default-all-variants/{1,2}`, 1 and 2 checker
//!   threads); elements = unique states, so the throughput is states per
//!   second.
//!
//! The large model scenario (8 virtqueues, 3 misses: ~13 s an exploration)
//! is too long for criterion's samples (its `--quick` mode takes a single
//! one and its plotting then fails) and is measured by the `summary` bench
//! target in whole rounds, with the README table; that target runs after
//! this one (`cargo bench -p benches` runs both, `--bench reply_path` only
//! this one). Filters are criterion's own (a regex on the names).
//!
//! Leaves out: guest memory traffic, the back-end channel, the race (the
//! unlocked front-end is only driven by one thread), and process boundaries
//! (the back-end is a thread of the same process).

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bench_support::{
    explore_all, reference_channel, search, short_reads_scenario, update, LockOnly, PingPong,
    ReferencePeer, RustVmmPeer, Workers, MUTEX, UNLOCKED,
};
use criterion::{BenchmarkId, Criterion, Throughput};
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

fn model(c: &mut Criterion) {
    let mut g = c.benchmark_group("model");
    g.sample_size(10);
    // Counting the states takes one exploration of ~40 ms per variant set.
    let states = explore_all(Scenario::default(), 1).0 as u64;
    g.throughput(Throughput::Elements(states));
    for threads in [1, 2] {
        g.bench_function(BenchmarkId::new("default-all-variants", threads), |b| {
            b.iter_custom(|n| (0..n).map(|_| explore_all(Scenario::default(), threads).1).sum())
        });
    }
    g.finish();
    // The verdicts' own search, every interleaving and reduced.
    let mut g = c.benchmark_group("search");
    g.sample_size(10);
    let qemu91 = Variant::new(LockPolicy::Qemu91);
    for (name, reduce) in [("every-interleaving", false), ("reduced", true)] {
        let states = search(qemu91, short_reads_scenario(), reduce).0 as u64;
        g.throughput(Throughput::Elements(states));
        g.bench_function(BenchmarkId::new("qemu-9.1-4vq-short-reads", name), |b| {
            b.iter_custom(|n| {
                (0..n).map(|_| search(qemu91, short_reads_scenario(), reduce).1).sum()
            })
        });
    }
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .configure_from_args();
    limit(&mut c);
    reference(&mut c);
    peer(&mut c);
    model(&mut c);
    c.final_summary();
}
