//! The runnable scenario: N times, a fresh front-end and back-end over real
//! Unix socketpairs, the handshake, then the scenario's front-end threads
//! against the back-end thread, and a report of what QEMU would have logged.
//!
//! Models: one QEMU process and one back-end process per iteration, with the
//! variant's locks ([`crate::threads`]); memory passed as a memfd and the
//! back-end channel as a socket descriptor, as QEMU does. A run in which a
//! front-end thread is still blocked after [`RunOptions::hang_timeout`] is
//! recorded as a *hang*: its log is cut at that moment, then both sockets are
//! shut down so that every thread returns and the run goes on.
//!
//! Leaves out: timing as a result (the hang timeout only bounds a run; no
//! figure here depends on it unless a run really blocks), guest memory
//! contents, and processes (threads stand in for them).

use std::collections::BTreeMap;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::harness::over_socketpair;
use crate::scenario::{Scenario, Variant};
use crate::sync::{Join, ParkingLot, SyncFamily};

/// Knobs of [`run_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RunOptions {
    /// Yield between each reply's header and payload read (not QEMU's
    /// behaviour; see [`crate::frontend::Frontend::widen_race_window`]).
    pub widen_race_window: bool,
    /// How long to wait for the front-end threads before calling the run a hang.
    pub hang_timeout: Duration,
    /// Stop at the first run that logs an error or hangs.
    pub stop_at_first_failure: bool,
}

impl Default for RunOptions {
    /// QEMU's behaviour, a 2 s hang timeout, all iterations.
    fn default() -> Self {
        RunOptions {
            widen_race_window: false,
            hang_timeout: Duration::from_secs(2),
            stop_at_first_failure: false,
        }
    }
}

/// A distinct log sequence and how many runs logged exactly it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogSequence {
    /// The lines, as QEMU prints them.
    pub lines: Vec<String>,
    /// Runs that logged it.
    pub count: u64,
}

/// The first run that logged an error or hung.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedRun {
    /// Its index, from 0.
    pub iteration: u64,
    /// Whether it hung.
    pub hung: bool,
    /// Its log.
    pub log: Vec<String>,
}

/// What [`run`] saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunReport {
    /// The variant run, spelled as on the command line.
    #[serde(serialize_with = "cli_name")]
    pub variant: Variant,
    /// The scenario run.
    pub scenario: Scenario,
    /// Whether the race window was widened.
    pub widen_race_window: bool,
    /// Iterations completed.
    pub iterations: u64,
    /// Iterations asked for.
    pub iterations_requested: u64,
    /// Whether the caller stopped the run before it finished (the report
    /// covers the iterations completed).
    pub interrupted: bool,
    /// Runs that logged at least one line.
    pub runs_with_errors: u64,
    /// Runs in which a front-end thread was still blocked at the timeout.
    pub hangs: u64,
    /// Runs whose set-up (socketpair, memfd, handshake) failed; not counted
    /// as logged errors.
    pub setup_failures: u64,
    /// Runs whose back-end stopped with an error.
    pub backend_errors: u64,
    /// Every distinct log sequence (the empty one included), most frequent first.
    pub sequences: Vec<LogSequence>,
    /// The first run that logged or hung.
    pub first_failure: Option<FailedRun>,
    /// Wall-clock time of the whole run, in milliseconds (information only).
    pub elapsed_ms: u64,
}

/// A variant as the CLI spells it (`qemu-9.1+fail-start`).
fn cli_name<S: serde::Serializer>(v: &Variant, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Counts so far, handed to [`run_observed`]'s callback after each iteration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Iterations completed.
    pub done: u64,
    /// Iterations asked for.
    pub of: u64,
    /// Runs that logged at least one line so far.
    pub runs_with_errors: u64,
    /// Hangs so far.
    pub hangs: u64,
}

impl RunReport {
    /// Runs that logged nothing and did not hang.
    pub fn clean_runs(&self) -> u64 {
        self.sequences.iter().find(|s| s.lines.is_empty()).map_or(0, |s| s.count)
    }

    /// Whether any run logged a line containing `text`.
    pub fn logged(&self, text: &str) -> bool {
        self.sequences.iter().any(|s| s.lines.iter().any(|l| l.contains(text)))
    }
}

impl fmt::Display for RunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "variant {} over a Unix socketpair, {} iterations{}",
            self.variant,
            self.iterations,
            if self.widen_race_window { " (race window widened)" } else { "" }
        )?;
        if self.interrupted {
            writeln!(
                f,
                "interrupted: {} of {} iterations completed; the counts below cover those",
                self.iterations, self.iterations_requested
            )?;
        }
        writeln!(f, "scenario: {}", self.scenario.describe())?;
        writeln!(
            f,
            "runs with errors: {}   hangs: {}   set-up failures: {}   back-end errors: {}   ({} ms)",
            self.runs_with_errors,
            self.hangs,
            self.setup_failures,
            self.backend_errors,
            self.elapsed_ms
        )?;
        writeln!(f, "distinct log sequences: {}", self.sequences.len())?;
        for s in &self.sequences {
            if s.lines.is_empty() {
                writeln!(f, "  {:>8} x (nothing logged)", s.count)?;
                continue;
            }
            writeln!(f, "  {:>8} x", s.count)?;
            for l in &s.lines {
                writeln!(f, "             {l}")?;
            }
        }
        if let Some(ff) = &self.first_failure {
            writeln!(
                f,
                "first failing run: #{}{}",
                ff.iteration,
                if ff.hung { " (hung)" } else { "" }
            )?;
            for l in &ff.log {
                writeln!(f, "  {l}")?;
            }
        }
        Ok(())
    }
}

/// Runs `variant` on `scenario` `iterations` times over real sockets with
/// the default options (QEMU's read path unless `widen_race_window`).
pub fn run(
    variant: Variant,
    scenario: &Scenario,
    iterations: u64,
    widen_race_window: bool,
) -> RunReport {
    run_with(variant, scenario, iterations, RunOptions { widen_race_window, ..Default::default() })
}

/// [`run`] with every knob.
pub fn run_with(
    variant: Variant,
    scenario: &Scenario,
    iterations: u64,
    opts: RunOptions,
) -> RunReport {
    run_observed(variant, scenario, iterations, opts, |_| ControlFlow::Continue(()))
}

/// [`run_with`], calling `observe` after each iteration; `Break` ends the
/// run there and the report (marked `interrupted`) covers the iterations
/// completed.
pub fn run_observed(
    variant: Variant,
    scenario: &Scenario,
    iterations: u64,
    opts: RunOptions,
    mut observe: impl FnMut(&Tally) -> ControlFlow<()>,
) -> RunReport {
    let start = Instant::now();
    let mut report = RunReport {
        variant,
        scenario: *scenario,
        widen_race_window: opts.widen_race_window,
        iterations: 0,
        iterations_requested: iterations,
        interrupted: false,
        runs_with_errors: 0,
        hangs: 0,
        setup_failures: 0,
        backend_errors: 0,
        sequences: Vec::new(),
        first_failure: None,
        elapsed_ms: 0,
    };
    let mut seqs: BTreeMap<Vec<String>, u64> = BTreeMap::new();
    for i in 0..iterations {
        let tally = Tally {
            done: report.iterations,
            of: iterations,
            runs_with_errors: report.runs_with_errors,
            hangs: report.hangs,
        };
        if observe(&tally).is_break() {
            report.interrupted = true;
            break;
        }
        report.iterations += 1;
        let Some(one) = run_once(variant, scenario, &opts) else {
            report.setup_failures += 1;
            continue;
        };
        if one.backend_error {
            report.backend_errors += 1;
        }
        if one.hung {
            report.hangs += 1;
        }
        if !one.log.is_empty() {
            report.runs_with_errors += 1;
        }
        let failed = one.hung || !one.log.is_empty();
        if failed && report.first_failure.is_none() {
            report.first_failure =
                Some(FailedRun { iteration: i, hung: one.hung, log: one.log.clone() });
        }
        *seqs.entry(one.log).or_default() += 1;
        if failed && opts.stop_at_first_failure {
            break;
        }
    }
    let mut sequences: Vec<LogSequence> =
        seqs.into_iter().map(|(lines, count)| LogSequence { lines, count }).collect();
    sequences.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.lines.cmp(&b.lines)));
    report.sequences = sequences;
    report.elapsed_ms = start.elapsed().as_millis() as u64;
    report
}

struct OneRun {
    log: Vec<String>,
    hung: bool,
    backend_error: bool,
    /// From the threads' start until all finished (or the hang timeout).
    threads_time: Duration,
}

/// The slowest of `samples` healthy runs of `scenario`'s threads: the
/// mutex variant (which neither races nor, without `NEED_REPLY` misses,
/// deadlocks), its misses without `NEED_REPLY`, each with a 10 s timeout.
/// A hang timeout below it calls runs that are merely slow hangs. `None` if
/// no run could be set up.
pub fn healthy_run_time(scenario: &Scenario, samples: u32) -> Option<Duration> {
    let healthy = Scenario { miss_need_reply: false, ..*scenario };
    let variant = Variant::new(crate::scenario::LockPolicy::Mutex);
    let opts = RunOptions { hang_timeout: Duration::from_secs(10), ..RunOptions::default() };
    (0..samples).filter_map(|_| run_once(variant, &healthy, &opts)).map(|r| r.threads_time).max()
}

/// Counts finished front-end threads, with a bounded wait for all of them.
#[derive(Default)]
struct Finished {
    count: parking_lot::Mutex<usize>,
    cond: parking_lot::Condvar,
}

fn run_once(variant: Variant, scenario: &Scenario, opts: &RunOptions) -> Option<OneRun> {
    let (fe, backend) = over_socketpair(variant, scenario).ok()?;
    let fe = fe.widen_race_window(opts.widen_race_window);
    let fe = Arc::new(fe);
    let roles = scenario.threads(variant.policy);
    let finished = Arc::new(Finished::default());
    let handles: Vec<_> = roles
        .iter()
        .map(|&role| {
            let fe = Arc::clone(&fe);
            let finished = Arc::clone(&finished);
            ParkingLot::spawn(role.name(), move || {
                let _ = fe.run_role(role);
                *finished.count.lock() += 1;
                finished.cond.notify_all();
            })
        })
        .collect();
    let started = Instant::now();
    let deadline = started + opts.hang_timeout;
    let mut hung = false;
    {
        let mut n = finished.count.lock();
        while *n < roles.len() {
            if finished.cond.wait_until(&mut n, deadline).timed_out() && *n < roles.len() {
                hung = true;
                break;
            }
        }
    }
    // Snapshot before the shutdown: lines logged after it are the
    // shutdown's, not the race's.
    let threads_time = started.elapsed();
    let log = fe.record().rendered();
    fe.shutdown();
    for h in handles {
        let _ = Join::join(h);
    }
    let backend_error = !matches!(backend.join(), Ok(Ok(())));
    Some(OneRun { log, hung, backend_error, threads_time })
}
