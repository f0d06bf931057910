//! The one parameterised test body (mountpoint-s3's pattern) and its
//! runners: [`check_scenario`] runs a scenario's front-end threads against
//! the back-end over the in-memory transport of any [`SyncFamily`] and
//! panics with a [`Violation`] if anything went wrong; [`std_check`],
//! [`loom_check`], [`shuttle_random`], [`shuttle_pct`] and [`shuttle_replay`]
//! run that same body on real threads, under loom, and under shuttle's
//! random, PCT and replay schedulers.
//!
//! Models: one QEMU process and one back-end after the handshake
//! (`harness::in_memory` with `negotiated`), the scenario's roles
//! (`Scenario::threads`), then shutdown and the back-end's join, exactly the
//! order `reference::harness` prescribes. What counts as wrong, in the order
//! it is reported: two replies swapped whole, a header read mid-message
//! (misframed), a whole reply to another request code (misdelivered), any
//! line QEMU would log, a front-end thread that failed or panicked, a
//! back-end that failed or served another number of requests than the
//! scenario sends. A deadlock is reported by loom and shuttle themselves.
//!
//! Leaves out: misdelivery between two requests of the same code (two IOTLB
//! updates get byte-identical replies; `reference::record` cannot tell them
//! apart either), and the handshake (it runs on one thread before the race).

use std::any::Any;
use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reference::harness::{in_memory, spawn_backend, spawn_roles};
use reference::record::{Delivery, DeliveryOutcome};
use reference::scenario::{Scenario, ThreadRole, Variant};
use reference::sync::{Join, ParkingLot, SyncFamily};
use shuttle::scheduler::{PctScheduler, RandomScheduler};

use crate::loom_family::Loom;
use crate::shuttle_family::Shuttle;

/// Every panic message of [`check_scenario`] starts with this.
pub const VIOLATION_PREFIX: &str = "reply race check failed: ";

/// The kind of thing that went wrong in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ViolationKind {
    /// Two threads each read the other's reply, whole.
    SwappedReplies,
    /// A thread read a header from the middle of a message (flags not 0x5).
    MisframedHeader,
    /// A thread read a whole reply to another request code.
    MisdeliveredReply,
    /// QEMU would have logged a line (and no delivery shows why).
    LoggedError,
    /// A front-end thread returned an error or panicked.
    ThreadFailed,
    /// The back-end failed or served another number of requests.
    BackendFailed,
}

impl ViolationKind {
    const ALL: [ViolationKind; 6] = [
        ViolationKind::SwappedReplies,
        ViolationKind::MisframedHeader,
        ViolationKind::MisdeliveredReply,
        ViolationKind::LoggedError,
        ViolationKind::ThreadFailed,
        ViolationKind::BackendFailed,
    ];

    /// The tag in the panic message.
    pub fn tag(self) -> &'static str {
        match self {
            ViolationKind::SwappedReplies => "swapped replies",
            ViolationKind::MisframedHeader => "misframed header",
            ViolationKind::MisdeliveredReply => "misdelivered reply",
            ViolationKind::LoggedError => "logged error",
            ViolationKind::ThreadFailed => "thread failed",
            ViolationKind::BackendFailed => "back-end failed",
        }
    }

    /// Whether this is the race itself: replies swapped, misframed or
    /// misdelivered (not merely a consequence such as a log line).
    pub fn is_race_symptom(self) -> bool {
        matches!(
            self,
            ViolationKind::SwappedReplies
                | ViolationKind::MisframedHeader
                | ViolationKind::MisdeliveredReply
        )
    }
}

/// What went wrong in one run, as [`check_scenario`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The kind.
    pub kind: ViolationKind,
    /// The details: deliveries, log lines, errors.
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{VIOLATION_PREFIX}{}: {}", self.kind.tag(), self.detail)
    }
}

impl Violation {
    /// Parses a panic payload of [`check_scenario`] (a `String` or `&str`
    /// starting with [`VIOLATION_PREFIX`]); `None` for any other panic.
    pub fn from_panic(payload: &(dyn Any + Send)) -> Option<Violation> {
        let text = panic_text(payload)?;
        let rest = text.strip_prefix(VIOLATION_PREFIX)?;
        ViolationKind::ALL.into_iter().find_map(|kind| {
            rest.strip_prefix(kind.tag())
                .and_then(|r| r.strip_prefix(": "))
                .map(|detail| Violation { kind, detail: detail.to_string() })
        })
    }
}

/// The text of a panic payload, if it is one.
pub fn panic_text(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
}

/// What one run left behind.
#[derive(Debug)]
pub struct Outcome {
    /// QEMU's log, as printed.
    pub log: Vec<String>,
    /// Every request/reply pair, in completion order.
    pub deliveries: Vec<Delivery>,
    /// Pairs of whole replies swapped between two threads.
    pub swapped: Vec<(Delivery, Delivery)>,
    /// Each role's result: `Err` holds the error or "panicked".
    pub threads: Vec<(ThreadRole, Result<(), String>)>,
    /// Requests the back-end served, or its error.
    pub backend: Result<u64, String>,
    /// Reply-queue: times the main loop borrowed the BQL from a holder
    /// waiting for a reply (`Frontend::bql_loans`; 0 for other policies).
    pub bql_loans: u64,
}

/// Requests the front-end sends in `scenario` when nothing fails: one IOTLB
/// update per virtqueue, POSTCOPY_END, one update per back-end miss.
pub fn expected_requests(scenario: &Scenario) -> u64 {
    let start = if scenario.device_start { u64::from(scenario.virtqueues) } else { 0 };
    start + u64::from(scenario.postcopy_end) + u64::from(scenario.backend_misses)
}

/// Runs `scenario` under `variant` once on family `F`'s threads and returns
/// what it left behind. Must run inside the family's checker (loom's model,
/// a shuttle runner) unless `F` is real threads.
pub fn run_scenario<F: SyncFamily>(variant: Variant, scenario: &Scenario) -> Outcome {
    let (fe, be) = in_memory::<F>(variant, scenario, true);
    let backend = spawn_backend::<F, _>(be);
    let fe = Arc::new(fe);
    let roles = spawn_roles(&fe, &scenario.threads(variant.policy));
    let threads = roles
        .into_iter()
        .map(|(role, h)| {
            let r = match Join::join(h) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(p) => Err(p.to_string()),
            };
            (role, r)
        })
        .collect();
    let record = Arc::clone(fe.record());
    let log = record.rendered();
    let deliveries = record.deliveries();
    let swapped = record.swapped_pairs();
    let bql_loans = fe.bql_loans();
    fe.shutdown();
    let backend = match Join::join(backend) {
        Ok(Ok(n)) => Ok(n),
        Ok(Err(e)) => Err(e.to_string()),
        Err(p) => Err(p.to_string()),
    };
    Outcome { log, deliveries, swapped, threads, backend, bql_loans }
}

/// The first thing wrong in `outcome` of `scenario`, if any (see the module
/// doc for the order).
pub fn violation(outcome: &Outcome, scenario: &Scenario) -> Option<Violation> {
    let v = |kind, detail: String| Some(Violation { kind, detail });
    let with_log = |what: String| format!("{what}; log: {:?}", outcome.log);
    if let Some((a, b)) = outcome.swapped.first() {
        return v(ViolationKind::SwappedReplies, with_log(format!("{a:?} and {b:?}")));
    }
    let first = |pick: fn(&DeliveryOutcome) -> bool| {
        outcome.deliveries.iter().find(|d| pick(&d.outcome)).copied()
    };
    if let Some(d) = first(|o| matches!(o, DeliveryOutcome::MisframedHeader { .. })) {
        return v(ViolationKind::MisframedHeader, with_log(format!("{d:?}")));
    }
    if let Some(d) = first(|o| matches!(o, DeliveryOutcome::Misdelivered { .. })) {
        return v(ViolationKind::MisdeliveredReply, with_log(format!("{d:?}")));
    }
    if !outcome.log.is_empty() {
        return v(ViolationKind::LoggedError, format!("{:?}", outcome.log));
    }
    if let Some((role, Err(e))) = outcome.threads.iter().find(|(_, r)| r.is_err()) {
        return v(ViolationKind::ThreadFailed, format!("{role:?}: {e}"));
    }
    let expected = expected_requests(scenario);
    match &outcome.backend {
        Ok(n) if *n == expected => None,
        Ok(n) => v(ViolationKind::BackendFailed, format!("served {n} of {expected} requests")),
        Err(e) => v(ViolationKind::BackendFailed, e.clone()),
    }
}

/// The test body: runs `scenario` under `variant` on family `F` and panics
/// with the [`Violation`] if anything went wrong.
pub fn check_scenario<F: SyncFamily>(variant: Variant, scenario: &Scenario) {
    check_scenario_outcome::<F>(variant, scenario);
}

/// [`check_scenario`], returning the outcome of a run that passed (for
/// tests that also look at what happened, such as BQL loans).
pub fn check_scenario_outcome<F: SyncFamily>(variant: Variant, scenario: &Scenario) -> Outcome {
    let outcome = run_scenario::<F>(variant, scenario);
    if let Some(v) = violation(&outcome, scenario) {
        panic!("{v}");
    }
    outcome
}

/// The body `iterations` times on real threads (parking_lot): no
/// exploration, the OS scheduler decides.
pub fn std_check(variant: Variant, scenario: Scenario, iterations: usize) {
    for _ in 0..iterations {
        check_scenario::<ParkingLot>(variant, &scenario);
    }
}

/// What one loom check explored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoomRun {
    /// Executions (interleavings) loom ran.
    pub executions: usize,
    /// The preemption bound they were explored within.
    pub preemption_bound: usize,
}

impl fmt::Display for LoomRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} executions (preemption bound {})", self.executions, self.preemption_bound)
    }
}

/// Lets one loom model run at a time in a process (the loom suite runs
/// each in a process of its own: [`in_own_process`]). Every loom execution maps
/// and unmaps a coroutine stack per thread; two models in one process
/// contend on its address space (the loom suite on 2 cores, measured: 16.4 s
/// wall and 16.0 s of system time with two at once, 12.2 s and 7.6 s one at
/// a time).
static LOOM_RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Set in a child process that [`in_own_process`] started: the child runs
/// the test's body itself.
const OWN_PROCESS: &str = "PROOFS_OWN_PROCESS";

/// Runs the calling test's `body` in a process of its own: the test binary
/// again, asked for this one test (libtest names a test's thread after the
/// test), with the body's output passed on. Two loom models in one process
/// contend on its address space ([`LOOM_RUNS`]); in two processes they run
/// side by side (the loom suite on 2 cores, measured: its two longest models
/// 7.2 s side by side in two processes, 11 s one after the other in one).
/// Fails the test if the child fails or did not run exactly that test.
/// Runs `body` here when the test's thread has no name to ask for.
pub fn in_own_process(body: impl FnOnce()) {
    let name = std::thread::current().name().map(str::to_owned);
    let (Some(name), None) = (name.filter(|n| n != "main"), std::env::var_os(OWN_PROCESS)) else {
        return body();
    };
    let exe = std::env::current_exe().expect("the test binary's path");
    let out = std::process::Command::new(exe)
        .args([name.as_str(), "--exact", "--nocapture", "--test-threads", "1"])
        .env(OWN_PROCESS, "1")
        .output()
        .expect("run the test binary for one test");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprint!("{stderr}");
    assert!(
        out.status.success() && stdout.contains("test result: ok. 1 passed"),
        "{name} in a process of its own ({}):\n{stdout}{stderr}",
        out.status
    );
}

/// The body under loom: every interleaving within the preemption bound
/// (`LOOM_MAX_PREEMPTIONS`, else [`crate::LOOM_PREEMPTION_BOUND`]).
pub fn loom_check(variant: Variant, scenario: Scenario) -> LoomRun {
    loom_check_observed(variant, scenario, |_| {})
}

/// [`loom_check`], calling `observe` with the outcome of every execution
/// (each one passed the check).
pub fn loom_check_observed(
    variant: Variant,
    scenario: Scenario,
    observe: impl Fn(&Outcome) + Send + Sync + 'static,
) -> LoomRun {
    loom_check_bounded(variant, scenario, crate::LOOM_PREEMPTION_BOUND, observe)
}

/// [`loom_check_observed`] with `default_bound` instead of
/// [`crate::LOOM_PREEMPTION_BOUND`] as the bound used when
/// `LOOM_MAX_PREEMPTIONS` is not set (for a test whose space at the crate's
/// default takes minutes; such a test says so).
pub fn loom_check_bounded(
    variant: Variant,
    scenario: Scenario,
    default_bound: usize,
    observe: impl Fn(&Outcome) + Send + Sync + 'static,
) -> LoomRun {
    let _one_at_a_time = LOOM_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let executions = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&executions);
    let mut builder = loom::model::Builder::new();
    let preemption_bound = *builder.preemption_bound.get_or_insert(default_bound);
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        observe(&check_scenario_outcome::<Loom>(variant, &scenario));
    });
    LoomRun { executions: executions.load(Ordering::Relaxed), preemption_bound }
}

/// Where shuttle writes the failing schedules [`expect_replayable_shuttle_violation`]
/// waits for: one directory per test process, so that every runner of the
/// process shares one configuration (shuttle's panic hook keeps the first one
/// it sees). It exists only while such a run is under way.
pub fn schedule_dir() -> PathBuf {
    std::env::temp_dir().join(format!("proofs-shuttle-schedules-{}", std::process::id()))
}

/// Every runner persists a failing schedule to [`schedule_dir`], the same
/// configuration for all of them, as shuttle's process-wide panic hook keeps
/// the first runner's. The directory exists only while a run expected to
/// fail is under way ([`expect_replayable_shuttle_violation`] creates it and
/// removes it); a run that fails at any other time finds no directory and
/// shuttle prints its schedule with the failure instead, so no test leaves
/// anything behind.
fn shuttle_config() -> shuttle::Config {
    let mut config = shuttle::Config::new();
    config.failure_persistence = shuttle::FailurePersistence::File(Some(schedule_dir()));
    config
}

/// The body under shuttle's random scheduler, seeded: `iterations`
/// schedules. Returns the number of schedules run.
pub fn shuttle_random(variant: Variant, scenario: Scenario, seed: u64, iterations: usize) -> usize {
    let scheduler = RandomScheduler::new_from_seed(seed, iterations);
    shuttle::Runner::new(scheduler, shuttle_config())
        .run(move || check_scenario::<Shuttle>(variant, &scenario))
}

/// The body under shuttle's PCT scheduler, seeded: `iterations` schedules
/// with at most `depth` priority change points. Returns the number of
/// schedules run.
pub fn shuttle_pct(
    variant: Variant,
    scenario: Scenario,
    seed: u64,
    depth: usize,
    iterations: usize,
) -> usize {
    let scheduler = PctScheduler::new_from_seed(seed, depth, iterations);
    shuttle::Runner::new(scheduler, shuttle_config())
        .run(move || check_scenario::<Shuttle>(variant, &scenario))
}

/// The body under `schedule`, a schedule as shuttle encodes it.
pub fn shuttle_replay(variant: Variant, scenario: Scenario, schedule: &str) {
    shuttle::replay(move || check_scenario::<Shuttle>(variant, &scenario), schedule);
}

/// Runs `check`, which must fail with a [`Violation`]; returns it. Panics
/// (failing the test) if `check` passes or fails with anything else (a
/// deadlock, loom's branch limit, a panic in a thread).
pub fn expect_violation<R>(check: impl FnOnce() -> R) -> Violation {
    match panic::catch_unwind(AssertUnwindSafe(check)) {
        Ok(_) => panic!("the check passed: no interleaving showed the race"),
        Err(payload) => Violation::from_panic(payload.as_ref()).unwrap_or_else(|| {
            panic!(
                "the check failed, but not with a reply race violation: {:?}",
                panic_text(payload.as_ref())
            )
        }),
    }
}

/// Runs `check`, which must fail with the checker's deadlock report (loom:
/// `deadlock; threads = ...`, shuttle: `deadlock! blocked tasks: ...`);
/// returns that report. Panics (failing the test) if `check` passes or fails
/// with anything else, a [`Violation`] included. Takes its turn with the
/// other runs that must fail, so that a schedule shuttle persists for the
/// deadlock never lands in another run's [`schedule_dir`].
pub fn expect_deadlock<R>(check: impl FnOnce() -> R) -> String {
    let _serial = FAILING_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    match panic::catch_unwind(AssertUnwindSafe(check)) {
        Ok(_) => panic!("the check passed: no interleaving deadlocked"),
        Err(payload) => {
            let text = panic_text(payload.as_ref()).unwrap_or("a panic without a message");
            assert!(text.contains("deadlock"), "the check failed, but not with a deadlock: {text}");
            text.to_string()
        }
    }
}

/// Serialises the runs that must fail (violations and deadlocks), so that
/// each run that reads back its schedule finds only its own file in
/// [`schedule_dir`].
static FAILING_RUNS: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Runs a shuttle `check` that must fail with a [`Violation`], reads back the
/// schedule shuttle persisted, and runs `replay` on it, which must fail too.
/// Returns both violations and the schedule. The schedule file and
/// [`schedule_dir`] are removed again; the lock held throughout keeps the
/// runs of one test process from seeing each other's files.
pub fn expect_replayable_shuttle_violation<R, Q>(
    check: impl FnOnce() -> R,
    replay: impl FnOnce(&str) -> Q,
) -> (Violation, Violation, String) {
    let _serial = FAILING_RUNS.lock().unwrap_or_else(|e| e.into_inner());
    let dir = schedule_dir();
    std::fs::create_dir_all(&dir).expect("create the schedule directory");
    let found = expect_violation(check);
    let files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    let schedule = match files.as_slice() {
        [path] => std::fs::read_to_string(path).expect("read the persisted schedule"),
        other => panic!("shuttle persisted {} schedule files, not one", other.len()),
    };
    let replayed = expect_violation(|| replay(&schedule));
    let _ = std::fs::remove_dir_all(&dir);
    (found, replayed, schedule)
}
