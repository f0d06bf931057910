//! Shared helpers of the benchmarks (the `benches` package's
//! `benches/reply_path.rs`, `benches/reply_queue.rs` and
//! `benches/summary.rs`), a package of their own so that `cargo test` runs
//! their unit tests without building criterion: the set-ups
//! each group measures, a pool of requesting threads, latency recording and
//! the summary table.
//!
//! Measures nothing by itself. Set-ups:
//! - [`PingPong`]: the ceiling. A raw `SOCK_STREAM` socketpair and an echo
//!   thread exchanging the IOTLB_MSG byte sizes (44-byte request, 20-byte
//!   reply) with plain `read`/`write`: no parsing, no lock, no allocation.
//!   Optionally with header and payload read separately on both sides, as
//!   QEMU's front-end reads (the reference back-end receives into a buffer
//!   since the reply-queue work, so the split attributes the front-end's part).
//! - [`reference_channel`]: the reference front-end over a real socketpair
//!   against the reference back-end, handshaken as QEMU does
//!   ([`reference::harness::over_socketpair`]), for IOTLB updates
//!   ([`update`], or [`try_update`] where the policy may race).
//! - [`RustVmmPeer`] and [`ReferencePeer`]: rust-vmm's `vhost` `Frontend` and
//!   the reference front-end, each over its own socketpair against the same
//!   reference back-end with the same minimal negotiation (features, protocol
//!   features with REPLY_ACK), for SET_VRING_NUM with NEED_REPLY and
//!   GET_FEATURES.
//! - [`explore`]: one exhaustive breadth-first run of the model.
//!
//! Leaves out: guest memory traffic, the back-end channel (no misses are
//! sent), the race itself (the unlocked policy is driven by one thread,
//! except in the `reply_queue` target, which counts its failed requests
//! with [`try_update`]) and any request that is not on the measured path.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use model::verdict::exhaustive;
use model::ReplyRace;
use reference::backend::{Backend, BackendConfig, BackendError};
use reference::frontend::{Frontend, FrontendError};
use reference::harness::{over_socketpair, BackendThread, SocketFrontend};
use reference::scenario::{LockPolicy, Scenario, ThreadRole, Variant};
use reference::sync::{with_lock_if, Lock, Monitor, ParkingLot};
use reference::transport::UnixTransport;
use reference::wire::{ProtocolFeatures, Request, ACK_REPLY_SIZE, HEADER_SIZE, IOTLB_PAYLOAD_SIZE};
use stateright::Checker;
use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::VhostUserFrontend;
use vhost::VhostBackend;

/// Size of an IOTLB_MSG request with its payload: 12 + 32.
pub const REQUEST_SIZE: usize = HEADER_SIZE + IOTLB_PAYLOAD_SIZE;
/// Size of a REPLY_ACK reply: 12 + 8.
pub const REPLY_SIZE: usize = ACK_REPLY_SIZE;

/// The ring size SET_VRING_NUM sends.
pub const VRING_NUM: u16 = 256;

/// How the benchmark binary was invoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `cargo bench`: full measurement.
    Full,
    /// `cargo bench -- --quick`: short passes.
    Quick,
    /// `cargo test --benches` (no `--bench` flag): one smoke pass each.
    Test,
    /// `--list`: nothing is run.
    List,
}

impl Mode {
    /// From the arguments cargo gives a `harness = false` bench target (the
    /// program name left out): `--list`, then whether `--bench` is there
    /// (cargo passes it to `cargo bench` runs, not to `cargo test
    /// --benches`), then `--quick`.
    pub fn from_args(args: &[String]) -> Mode {
        let has = |f: &str| args.iter().any(|a| a == f);
        if has("--list") {
            Mode::List
        } else if !has("--bench") {
            Mode::Test
        } else if has("--quick") {
            Mode::Quick
        } else {
            Mode::Full
        }
    }

    /// How long each summary measurement runs.
    pub fn summary_duration(self) -> Duration {
        match self {
            Mode::Full => Duration::from_millis(300),
            Mode::Quick => Duration::from_millis(100),
            Mode::Test | Mode::List => Duration::from_millis(10),
        }
    }

    /// How many interleaved rounds the summary takes of the request
    /// set-ups (the median is kept, ratios are paired within a round).
    pub fn summary_rounds(self) -> usize {
        match self {
            Mode::Full => 15,
            Mode::Quick => 3,
            Mode::Test | Mode::List => 1,
        }
    }

    /// How many rounds of each model run the summary takes.
    pub fn model_rounds(self) -> usize {
        match self {
            Mode::Full => 3,
            Mode::Quick | Mode::Test | Mode::List => 1,
        }
    }
}

/// Whether a bench target named `name` runs under `args`: yes when no
/// free argument (one not starting with `-`) is given, else when one of
/// them is a substring of `name`. A value of a flag (`--sample-size 10`)
/// counts as a free argument here and usually deselects: name the target
/// with `--bench` instead of combining criterion's options with this table.
pub fn filter_selects(args: &[String], name: &str) -> bool {
    let mut free = args.iter().filter(|a| !a.starts_with('-')).peekable();
    free.peek().is_none() || free.any(|f| name.contains(f.as_str()))
}

// ----- the ceiling -----------------------------------------------------------

/// A raw socketpair with an echo thread answering every 44-byte request with
/// a 20-byte reply.
pub struct PingPong {
    stream: UnixStream,
    split_reads: bool,
    echo: Option<JoinHandle<()>>,
    request: [u8; REQUEST_SIZE],
}

/// Reads exactly `buf.len()` bytes; false at end of stream.
fn read_exact_or_eof(s: &mut UnixStream, buf: &mut [u8]) -> bool {
    s.read_exact(buf).is_ok()
}

impl PingPong {
    /// A connected pair and its echo thread. With `split_reads`, both sides
    /// read the 12-byte header and the payload as two reads (QEMU's
    /// front-end's pattern); without, one read per message.
    pub fn new(split_reads: bool) -> PingPong {
        let (stream, mut peer) = UnixStream::pair().expect("socketpair");
        let echo = std::thread::Builder::new()
            .name("pingpong-echo".into())
            .spawn(move || {
                let mut req = [0u8; REQUEST_SIZE];
                let reply = [0u8; REPLY_SIZE];
                loop {
                    let ok = if split_reads {
                        let (h, p) = req.split_at_mut(HEADER_SIZE);
                        read_exact_or_eof(&mut peer, h) && read_exact_or_eof(&mut peer, p)
                    } else {
                        read_exact_or_eof(&mut peer, &mut req)
                    };
                    if !ok || peer.write_all(&reply).is_err() {
                        return;
                    }
                }
            })
            .expect("spawn the echo thread");
        PingPong { stream, split_reads, echo: Some(echo), request: [0u8; REQUEST_SIZE] }
    }

    /// One request and its reply.
    pub fn round_trip(&mut self) {
        self.stream.write_all(&self.request).expect("write the request");
        let mut reply = [0u8; REPLY_SIZE];
        let ok = if self.split_reads {
            let (h, p) = reply.split_at_mut(HEADER_SIZE);
            read_exact_or_eof(&mut self.stream, h) && read_exact_or_eof(&mut self.stream, p)
        } else {
            read_exact_or_eof(&mut self.stream, &mut reply)
        };
        assert!(ok, "the echo thread closed the socket");
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        if let Some(h) = self.echo.take() {
            let _ = h.join();
        }
    }
}

/// The request/reply mutex alone: one uncontended take and release of the
/// reference's lock type ([`reference::sync::Lock`] of [`ParkingLot`]),
/// through `with_lock_if` exactly as the front-end takes it.
pub struct LockOnly {
    lock: Lock<ParkingLot>,
}

impl Default for LockOnly {
    fn default() -> Self {
        LockOnly { lock: <Lock<ParkingLot> as Monitor<()>>::new(()) }
    }
}

impl LockOnly {
    /// Takes and releases the lock once.
    pub fn take(&self) {
        with_lock_if::<ParkingLot, _>(&self.lock, true, || std::hint::black_box(()));
    }

    /// Nanoseconds per take and release, over `iters` of them.
    pub fn ns_per_take(&self, iters: u32) -> f64 {
        let t = Instant::now();
        for _ in 0..iters {
            self.take();
        }
        t.elapsed().as_nanos() as f64 / f64::from(iters)
    }
}

// ----- the reference channel ------------------------------------------------

/// The scenario the reference set-ups use: the default one without back-end
/// misses (nothing is sent on the back-end channel while measuring).
pub fn bench_scenario() -> Scenario {
    Scenario { backend_misses: 0, ..Scenario::default() }
}

/// The unlocked policy (QEMU up to 9.1).
pub const UNLOCKED: Variant = Variant::new(LockPolicy::Qemu91);
/// The request/reply mutex policy (July 2024 patch).
pub const MUTEX: Variant = Variant::new(LockPolicy::Mutex);
/// The reply-queue policy (this project's design: no lock across a round
/// trip, replies handed to the FIFO's head).
pub const REPLY_QUEUE: Variant = Variant::new(LockPolicy::ReplyQueue);

/// A handshaken reference front-end over a socketpair and its back-end.
pub struct ReferenceChannel {
    /// The front-end, shared by the requesting threads.
    pub frontend: Arc<SocketFrontend>,
    backend: Option<BackendThread>,
}

/// Connects and handshakes a reference front-end with `variant`'s locks.
pub fn reference_channel(variant: Variant) -> ReferenceChannel {
    let (fe, backend) = over_socketpair(variant, &bench_scenario()).expect("handshake");
    ReferenceChannel { frontend: Arc::new(fe), backend: Some(backend) }
}

impl ReferenceChannel {
    /// One IOTLB update with NEED_REPLY for virtqueue `vq`'s used ring and
    /// its REPLY_ACK (`vhost_user_send_device_iotlb_msg`).
    pub fn update(&self, vq: u8) {
        update(&self.frontend, vq);
    }
}

/// One IOTLB update with NEED_REPLY on `fe` and its reply.
pub fn update(fe: &SocketFrontend, vq: u8) {
    fe.vhost_user_send_device_iotlb_msg(ThreadRole::DeviceStart, &Scenario::iotlb_update(vq))
        .expect("IOTLB update acknowledged");
}

/// One IOTLB update with NEED_REPLY on `fe`; whether it was acknowledged.
/// `false` when the front-end failed it (the unlocked policy, driven by
/// several threads, races: a thread reads another's reply or a header
/// mid-message, and the channel stays out of alignment).
pub fn try_update(fe: &SocketFrontend, vq: u8) -> bool {
    fe.vhost_user_send_device_iotlb_msg(ThreadRole::DeviceStart, &Scenario::iotlb_update(vq))
        .is_ok()
}

impl Drop for ReferenceChannel {
    fn drop(&mut self) {
        self.frontend.shutdown();
        if let Some(b) = self.backend.take() {
            let _ = b.join();
        }
    }
}

// ----- requesting threads ---------------------------------------------------

/// What a worker runs once per request: its index, then nothing.
pub type Op = Arc<dyn Fn(usize) + Send + Sync>;

enum Job {
    Run { n: u64, record: bool },
}

/// A pool of requesting threads, each running an [`Op`] on command.
pub struct Workers {
    jobs: Vec<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Option<Histogram<u64>>>,
    handles: Vec<JoinHandle<()>>,
}

/// A histogram for per-request latencies in nanoseconds (1 ns to 10 s).
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds")
}

impl Workers {
    /// `threads` workers running `op`.
    pub fn new(threads: usize, op: Op) -> Workers {
        let (done_tx, done) = mpsc::channel();
        let mut jobs = Vec::new();
        let mut handles = Vec::new();
        for i in 0..threads {
            let (tx, rx) = mpsc::channel::<Job>();
            let op = Arc::clone(&op);
            let done_tx = done_tx.clone();
            let h = std::thread::Builder::new()
                .name(format!("requester-{i}"))
                .spawn(move || {
                    while let Ok(Job::Run { n, record }) = rx.recv() {
                        let hist = if record {
                            let mut h = latency_histogram();
                            for _ in 0..n {
                                let t = Instant::now();
                                op(i);
                                h.saturating_record(t.elapsed().as_nanos() as u64);
                            }
                            Some(h)
                        } else {
                            for _ in 0..n {
                                op(i);
                            }
                            None
                        };
                        if done_tx.send(hist).is_err() {
                            return;
                        }
                    }
                })
                .expect("spawn a requester");
            jobs.push(tx);
            handles.push(h);
        }
        Workers { jobs, done, handles }
    }

    /// Runs `total` requests split over the workers; the wall time from the
    /// start to the last one done.
    pub fn run(&self, total: u64) -> Duration {
        self.dispatch(total, false).0
    }

    /// Runs `per_thread` requests on each worker, recording each request's
    /// latency; the wall time and the merged histogram.
    pub fn run_recorded(&self, per_thread: u64) -> (Duration, Histogram<u64>) {
        self.dispatch(per_thread * self.jobs.len() as u64, true)
    }

    fn dispatch(&self, total: u64, record: bool) -> (Duration, Histogram<u64>) {
        let n = self.jobs.len() as u64;
        let start = Instant::now();
        for (i, tx) in self.jobs.iter().enumerate() {
            let share = total / n + u64::from((i as u64) < total % n);
            tx.send(Job::Run { n: share, record }).expect("worker alive");
        }
        let mut merged = latency_histogram();
        for _ in 0..n {
            if let Some(h) = self.done.recv().expect("worker finished") {
                merged.add(&h).expect("same bounds");
            }
        }
        (start.elapsed(), merged)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs.clear();
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

// ----- the peer comparison ---------------------------------------------------

/// The reference back-end serving one raw socketpair end, no memory mapping,
/// no misses.
fn spawn_reference_backend(stream: UnixStream) -> JoinHandle<Result<(), BackendError>> {
    let cfg = BackendConfig { map_memory: false, ..BackendConfig::default() };
    std::thread::Builder::new()
        .name("vhost-user-backend".into())
        .spawn(move || Backend::new(UnixTransport::from_stream(stream), None, cfg).serve())
        .expect("spawn the back-end")
}

/// rust-vmm's `vhost::vhost_user::Frontend` against the reference back-end.
pub struct RustVmmPeer {
    frontend: Option<vhost::vhost_user::Frontend>,
    backend: Option<JoinHandle<Result<(), BackendError>>>,
}

impl RustVmmPeer {
    /// Connects and negotiates: SET_OWNER, GET_FEATURES, SET_FEATURES,
    /// GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES with REPLY_ACK.
    pub fn new() -> RustVmmPeer {
        let (fe_sock, be_sock) = UnixStream::pair().expect("socketpair");
        let backend = spawn_reference_backend(be_sock);
        let mut fe = vhost::vhost_user::Frontend::from_stream(fe_sock, 1);
        fe.set_owner().expect("SET_OWNER");
        let features = fe.get_features().expect("GET_FEATURES");
        fe.set_features(features).expect("SET_FEATURES");
        let offered = fe.get_protocol_features().expect("GET_PROTOCOL_FEATURES");
        assert!(offered.contains(VhostUserProtocolFeatures::REPLY_ACK));
        fe.set_protocol_features(VhostUserProtocolFeatures::REPLY_ACK)
            .expect("SET_PROTOCOL_FEATURES");
        RustVmmPeer { frontend: Some(fe), backend: Some(backend) }
    }

    fn fe(&self) -> &vhost::vhost_user::Frontend {
        self.frontend.as_ref().expect("connected")
    }

    /// SET_VRING_NUM with NEED_REPLY (rust-vmm sets it from the header flags
    /// given to `set_hdr_flags`, and waits for the ack since REPLY_ACK is
    /// negotiated) and its REPLY_ACK.
    pub fn set_vring_num(&self) {
        self.fe().set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
        self.fe().set_vring_num(0, VRING_NUM).expect("SET_VRING_NUM acknowledged");
    }

    /// GET_FEATURES (no NEED_REPLY, as QEMU sends it) and its u64 reply.
    pub fn get_features(&self) -> u64 {
        self.fe().set_hdr_flags(VhostUserHeaderFlag::empty());
        self.fe().get_features().expect("GET_FEATURES")
    }
}

impl Default for RustVmmPeer {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for RustVmmPeer {
    fn drop(&mut self) {
        // Closing the front-end's socket ends the back-end's serve loop.
        drop(self.frontend.take());
        if let Some(b) = self.backend.take() {
            let _ = b.join();
        }
    }
}

/// The reference front-end against the reference back-end, negotiated as
/// [`RustVmmPeer`] is.
pub struct ReferencePeer {
    frontend: Frontend<ParkingLot, UnixTransport>,
    backend: Option<JoinHandle<Result<(), BackendError>>>,
}

impl ReferencePeer {
    /// Connects with `variant`'s locks and negotiates: GET_FEATURES,
    /// GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES (REPLY_ACK, BACKEND_REQ,
    /// PAGEFAULT as QEMU asks; only REPLY_ACK matters here).
    pub fn new(variant: Variant) -> Result<ReferencePeer, FrontendError> {
        let (fe_sock, be_sock) = UnixStream::pair().expect("socketpair");
        let backend = spawn_reference_backend(be_sock);
        let fe =
            Frontend::new(UnixTransport::from_stream(fe_sock), None, variant, bench_scenario());
        let role = ThreadRole::MainLoop;
        fe.vhost_user_get_features(role)?;
        let offered = fe.vhost_user_get_u64(role, Request::GetProtocolFeatures)?;
        let wanted = ProtocolFeatures::IOMMU_POSTCOPY.bits();
        fe.vhost_user_set_u64(role, Request::SetProtocolFeatures, offered & wanted, false)?;
        Ok(ReferencePeer { frontend: fe, backend: Some(backend) })
    }

    /// SET_VRING_NUM with NEED_REPLY and its REPLY_ACK. The reference's
    /// `vhost_user_set_vring_num` sends no NEED_REPLY (as QEMU); its
    /// `vhost_user_set_u64` with `wait_for_reply` sends the same 20 bytes
    /// (`struct vhost_vring_state` is index and num, two little-endian u32,
    /// i.e. the u64 `index | num << 32`) with NEED_REPLY, under the variant's
    /// request/reply mutex.
    pub fn set_vring_num(&self) {
        let value = u64::from(VRING_NUM) << 32;
        self.frontend
            .vhost_user_set_u64(ThreadRole::MainLoop, Request::SetVringNum, value, true)
            .expect("SET_VRING_NUM acknowledged");
    }

    /// GET_FEATURES and its u64 reply (`vhost_user_get_features`).
    pub fn get_features(&self) -> u64 {
        self.frontend.vhost_user_get_features(ThreadRole::MainLoop).expect("GET_FEATURES")
    }
}

impl Drop for ReferencePeer {
    fn drop(&mut self) {
        self.frontend.shutdown();
        if let Some(b) = self.backend.take() {
            let _ = b.join();
        }
    }
}

// ----- the model -----------------------------------------------------------

/// The larger model scenario: 8 virtqueues, 3 back-end misses, every thread
/// (device start, postcopy end, main loop).
pub fn large_scenario() -> Scenario {
    Scenario { virtqueues: 8, backend_misses: 3, ..Scenario::default() }
}

/// One exhaustive breadth-first run of the model of `variant` on
/// `scenario` with `threads` checker threads, as `model::verdict::check`
/// explores, without the counterexample search that follows it there.
/// Returns the unique states and the wall time.
pub fn explore(variant: Variant, scenario: Scenario, threads: usize) -> (usize, Duration) {
    let start = Instant::now();
    let checker = exhaustive(ReplyRace::new(variant, scenario), threads).spawn_bfs().join();
    (checker.unique_state_count(), start.elapsed())
}

/// The scenario of the search benchmarks: `qemu-9.1`'s device start with 4
/// updates and postcopy end, no misses, short reads (the scenario issue 12
/// holds against SPIN, at a size that runs in a fraction of a second).
pub fn short_reads_scenario() -> Scenario {
    Scenario { virtqueues: 4, backend_misses: 0, short_reads: true, ..Scenario::default() }
}

/// One run of the depth-first search the verdicts come from
/// (`model::search::depth_first`), reduced or over every interleaving,
/// without the counterexample search; unique states and wall time.
pub fn search(variant: Variant, scenario: Scenario, reduce: bool) -> (usize, Duration) {
    let model = ReplyRace::new(variant, scenario);
    let start = Instant::now();
    let r =
        model::search::depth_first(&model, reduce, None, |_| std::ops::ControlFlow::Continue(()));
    assert!(r.complete);
    (r.unique_states, start.elapsed())
}

/// [`explore`] over every variant in turn; total unique states and time.
pub fn explore_all(scenario: Scenario, threads: usize) -> (usize, Duration) {
    Variant::all().into_iter().fold((0, Duration::ZERO), |(n, t), v| {
        let (n1, t1) = explore(v, scenario, threads);
        (n + n1, t + t1)
    })
}

// ----- reporting -------------------------------------------------------------

/// Significant decimal digits [`quantile`] keeps: hdrhistogram's maximum,
/// so a rate below 100 000 per second is held exactly and a larger one to
/// within 1 in 100 000.
const QUANTILE_DIGITS: u8 = 5;

/// Fixed-point scale of [`paired_ratio`]'s ratios in the histogram (ratios
/// are near 1).
const RATIO_SCALE: f64 = 1e6;

/// The `q` quantile (0 to 1) of `xs`, scaled by `scale` and read from an
/// hdrhistogram (its `value_at_quantile`: the smallest recorded value with
/// at least `q` of the values at or below it); 0 when empty. Negative and
/// non-finite values count as 0.
fn scaled_quantile(xs: &[f64], q: f64, scale: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut h = Histogram::<u64>::new(QUANTILE_DIGITS).expect("histogram precision");
    for x in xs {
        let v = x * scale;
        h.record(if v.is_finite() && v > 0.0 { v.round() as u64 } else { 0 })
            .expect("an auto-resizing histogram records any u64");
    }
    h.value_at_quantile(q) as f64 / scale
}

/// The median of `xs`, from an hdrhistogram (see [`quantile`]); 0 when
/// empty. `xs` is left as it was (the `&mut` is for the callers' sake).
pub fn median(xs: &mut [f64]) -> f64 {
    quantile(xs, 0.5)
}

/// The `q` quantile (0 to 1) of `xs` (rates per second, recorded as whole
/// numbers), from an hdrhistogram's `value_at_quantile`, as the latency
/// quantiles are; 0 when empty.
pub fn quantile(xs: &[f64], q: f64) -> f64 {
    scaled_quantile(xs, q, 1.0)
}

/// The median of the element-wise ratios `a[i] / b[i]` (pairs measured in
/// the same round, so that slow drift of the machine cancels), from an
/// hdrhistogram of the ratios in fixed point (1 in a million).
pub fn paired_ratio(a: &[f64], b: &[f64]) -> f64 {
    let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    scaled_quantile(&r, 0.5, RATIO_SCALE)
}

/// The 1-minute load average, from `/proc/loadavg`.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// Formats a rate with thousands separators.
pub fn per_second(rate: f64) -> String {
    let n = rate.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats nanoseconds as microseconds.
pub fn micros(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_front_ends_send_the_same_set_vring_num_bytes() {
        // What each front-end writes for SET_VRING_NUM with NEED_REPLY,
        // captured by a fake back-end that acks.
        fn capture(send: impl FnOnce(UnixStream) + Send + 'static) -> Vec<u8> {
            let (fe, mut be) = UnixStream::pair().unwrap();
            let h = std::thread::spawn(move || send(fe));
            let mut req = [0u8; 20];
            be.read_exact(&mut req).unwrap();
            // rust-vmm without REPLY_ACK negotiated may be gone already.
            let _ = be.write_all(&reference::wire::ack_reply(Request::SetVringNum, 0));
            h.join().unwrap();
            req.to_vec()
        }
        let vmm = capture(|s| {
            let fe = vhost::vhost_user::Frontend::from_stream(s, 1);
            fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            // REPLY_ACK is not negotiated on this bare stream, so rust-vmm
            // does not wait; the header flag still goes out.
            fe.set_vring_num(0, VRING_NUM).unwrap();
        });
        let reference = capture(|s| {
            let fe = Frontend::<ParkingLot, _>::new(
                UnixTransport::from_stream(s),
                None,
                MUTEX,
                bench_scenario(),
            );
            let value = u64::from(VRING_NUM) << 32;
            fe.vhost_user_set_u64(ThreadRole::MainLoop, Request::SetVringNum, value, true).unwrap();
        });
        assert_eq!(vmm, reference);
        assert_eq!(&reference[4..8], &0x9u32.to_le_bytes(), "version | NEED_REPLY");
    }

    #[test]
    fn every_set_up_completes_a_request() {
        PingPong::new(false).round_trip();
        PingPong::new(true).round_trip();
        reference_channel(UNLOCKED).update(0);
        let w = Workers::new(2, {
            let ch = reference_channel(MUTEX);
            Arc::new(move |i| ch.update(i as u8))
        });
        let (_, h) = w.run_recorded(3);
        assert_eq!(h.len(), 6);
        let vmm = RustVmmPeer::new();
        vmm.set_vring_num();
        assert_eq!(vmm.get_features(), reference::backend::BACKEND_FEATURES);
        let r = ReferencePeer::new(MUTEX).unwrap();
        r.set_vring_num();
        assert_eq!(r.get_features(), reference::backend::BACKEND_FEATURES);
    }

    #[test]
    fn a_free_argument_filters_by_substring() {
        let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(filter_selects(&args(&["--bench", "--quick"]), "summary"));
        assert!(filter_selects(&args(&["--bench", "summ"]), "summary"));
        assert!(!filter_selects(&args(&["--bench", "limit"]), "summary"));
        assert_eq!(Mode::from_args(&args(&["--bench", "--quick"])), Mode::Quick);
        assert_eq!(Mode::from_args(&args(&["--bench"])), Mode::Full);
        assert_eq!(Mode::from_args(&args(&[])), Mode::Test);
        assert_eq!(Mode::from_args(&args(&["--bench", "--list"])), Mode::List);
    }

    #[test]
    fn quantiles_come_from_the_recorded_values() {
        let rates = [400.0, 100.0, 300.0, 200.0, 500.0];
        assert_eq!(median(&mut rates.clone()), 300.0);
        assert_eq!(quantile(&rates, 0.25), 200.0);
        assert_eq!(quantile(&rates, 0.75), 400.0);
        assert_eq!(quantile(&rates, 1.0), 500.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
        // Above 100 000 the histogram keeps 5 significant digits.
        let big = quantile(&[1_234_567.0], 0.5);
        assert!((big - 1_234_567.0).abs() / 1_234_567.0 < 1e-5, "{big}");
        let ratio = paired_ratio(&[2.0, 3.0, 9.0], &[1.0, 2.0, 3.0]);
        assert!((ratio - 2.0).abs() < 1e-5, "{ratio}");
    }

    #[test]
    fn per_second_groups_thousands() {
        assert_eq!(per_second(1_234_567.4), "1,234,567");
        assert_eq!(per_second(999.0), "999");
    }
}
