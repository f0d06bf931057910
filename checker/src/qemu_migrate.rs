//! `vhost-race qemu-migrate`: the race on QEMU's own binary. Two QEMUs (a
//! source and a destination with `-incoming`), each with a vhost-user-net
//! device served by an in-process reference back-end, do a real postcopy
//! migration over QMP, N times; the destination's log is kept, and each
//! distinct log is handed to `explain`.
//!
//! On the destination QEMU 7.2's device start sends its IOTLB updates while
//! the postcopy listen thread (without the BQL) later sends POSTCOPY_END on
//! the same socket. By themselves the two do not overlap on this machine;
//! `--hold-iotlb-reply` (fault injection in the destination's back-end, see
//! [`reference::backend::FaultInjection`]) holds the first IOTLB reply until
//! POSTCOPY_END has arrived, so that both threads wait for a reply at once.
//!
//! Leaves out: a guest OS (iPXE brings the device up on the source before
//! the migration starts), KVM, and migrations other than postcopy.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use model::explain::{self, Bound, Limits};
use reference::backend::FaultInjection;
use reference::qemu::{QemuBinary, QemuProcess, Qmp};
use reference::scenario::{Scenario, Variant};
use reference::wire::Request;
use serde::Serialize;
use serde_json::json;

use crate::qemu_peer::{catch_interrupts, interrupted, run_jobs, wait_until, BackendPeer, WorkDir};

/// How long a QEMU may take to boot iPXE and start the device (TCG).
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a migration may take once started (it takes well under 1 s).
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(60);

/// The `qemu-migrate` subcommand's flags.
#[derive(Args, Debug)]
pub struct QemuMigrateArgs {
    /// Migrations to run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=1000))]
    runs: u32,
    /// Fault injection: the destination's back-end holds its reply to the
    /// first IOTLB update until POSTCOPY_END has arrived.
    #[arg(long)]
    hold_iotlb_reply: bool,
    /// Fault injection: the destination's back-end waits this long before
    /// each IOTLB reply.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=10_000))]
    reply_delay_ms: u64,
    /// Seconds to wait after the source's device start before migrating
    /// (iPXE resets the device about 18 s after starting it).
    #[arg(long, default_value_t = 1.0)]
    settle_secs: f64,
    /// Migrations at once, each a pair of QEMUs with back-ends of its own (a
    /// migration mostly waits: boot under TCG, the settle time, the hold).
    /// The README's figures were measured one at a time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Keep every run's QEMU logs, serial output and back-end traces here
    /// (default: a temporary directory, removed at the end).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One migration.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// 1-based.
    pub run: u32,
    /// The source reported `completed`.
    pub completed: bool,
    /// The source's final migration status.
    pub status: String,
    /// The destination's run state after the migration.
    pub destination: String,
    /// Seconds from `migrate` to `completed`.
    pub migrate_secs: f64,
    /// The destination's stderr, exactly as QEMU printed it.
    pub destination_stderr: String,
    /// The vhost-user messages in it, in order (torn lines split, program
    /// prefix and timestamps cut).
    pub race_lines: Vec<String>,
    /// With the hold: the held reply went out at the hold's limit, not on
    /// POSTCOPY_END, i.e. the front-end sent no POSTCOPY_END while device
    /// start waited (its locks serialise the two).
    pub hold_hit_limit: bool,
    /// Why the run could not be done, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// A distinct destination log and what `explain` says of it.
#[derive(Debug, Clone, Serialize)]
pub struct Sequence {
    /// The vhost-user messages, in order.
    pub lines: Vec<String>,
    /// Whether QEMU's threads tore some of its lines (two prefixes on one
    /// line, a message on a line of its own) in the first run that printed it.
    pub torn: bool,
    /// Runs that printed it.
    pub runs: Vec<u32>,
    /// Per variant: `explained (...)`, `not explainable` or `undecided`.
    pub explain: Vec<(String, String)>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// QEMU's `-version` line.
    pub qemu: String,
    /// Whether the hold was on.
    pub hold_iotlb_reply: bool,
    /// The reply delay.
    pub reply_delay_ms: u64,
    /// Every run.
    pub runs: Vec<RunRecord>,
    /// Distinct destination logs with race lines.
    pub sequences: Vec<Sequence>,
}

/// The vhost-user messages of a QEMU log, as `explain` reads them.
fn race_messages(stderr: &str) -> Vec<String> {
    explain::parse_log(stderr).lines.iter().map(|l| l.error.to_string()).collect()
}

/// Whether some line holds two program prefixes, or a message without one.
fn torn(stderr: &str) -> bool {
    stderr.lines().any(|l| {
        let prefixes = l.matches("qemu-system-x86_64:").count();
        prefixes > 1 || (prefixes == 0 && reference::qemu_log::LogLine::parse(l).is_some())
    })
}

/// Runs one migration in `dir`: two QEMUs and their back-ends, all stopped
/// and cleaned up before it returns.
pub fn migrate_once(
    qemu: &QemuBinary,
    dir: &Path,
    run: u32,
    faults: FaultInjection,
    settle: Duration,
) -> Result<RunRecord> {
    std::fs::create_dir_all(dir)?;
    let p = |n: &str| dir.join(n);
    let src_peer = BackendPeer::start(&p("src.sock"), BOOT_TIMEOUT, |b| {
        b.set_real_userfaultfd(true);
    })?;
    let dst_peer = BackendPeer::start(&p("dst.sock"), BOOT_TIMEOUT, move |b| {
        b.set_real_userfaultfd(true);
        b.set_fault_injection(faults);
    })?;
    let mut src_args = qemu.net_args(&p("src.sock"), 1, &p("src.serial"), Some(&p("src.qmp")));
    src_args.extend(["-msg".into(), "timestamp=on".into()]);
    let mut dst_args = qemu.net_args(&p("dst.sock"), 1, &p("dst.serial"), Some(&p("dst.qmp")));
    dst_args.extend(["-msg".into(), "timestamp=on".into()]);
    dst_args.extend(["-incoming".into(), format!("unix:{}", p("mig.sock").display())]);
    let mut src = qemu.spawn(&src_args, &p("src.stderr"))?;
    let mut dst = qemu.spawn(&dst_args, &p("dst.stderr"))?;
    let result = drive(&mut src, &mut dst, &src_peer, &dst_peer, dir, settle);
    // Quit both whatever happened; QEMU stops its devices on the way out.
    for (proc, qmp) in [(&mut src, p("src.qmp")), (&mut dst, p("dst.qmp"))] {
        if let Ok(mut q) = Qmp::connect(&qmp, Duration::from_secs(2)) {
            let _ = q.execute("quit", None);
        }
        if !wait_until(Duration::from_secs(10), || proc.exited()) {
            proc.terminate(Duration::from_secs(5));
        }
    }
    let (src_trace, dst_trace) = (src_peer.trace(), dst_peer.trace());
    let _ = src_peer.join();
    let _ = dst_peer.join();
    save_trace(&p("src.trace.jsonl"), &src_trace.events())?;
    save_trace(&p("dst.trace.jsonl"), &dst_trace.events())?;
    let hold_hit_limit = dst_trace
        .events()
        .iter()
        .any(|e| e.note.as_deref().is_some_and(|n| n.contains("the hold's limit passed")));
    let destination_stderr = dst.stderr();
    let race_lines = race_messages(&destination_stderr);
    let (completed, status, destination, migrate_secs, error) = match result {
        Ok((status, destination, secs)) => (status == "completed", status, destination, secs, None),
        Err(e) => (false, "error".into(), "?".into(), 0.0, Some(format!("{e:#}"))),
    };
    Ok(RunRecord {
        run,
        completed,
        status,
        destination,
        migrate_secs,
        destination_stderr,
        race_lines,
        hold_hit_limit,
        error,
    })
}

/// Writes a back-end's trace as JSON lines, as `backend --trace` would.
fn save_trace(path: &Path, events: &[reference::backend::trace::TraceEvent]) -> Result<()> {
    let mut f = std::fs::File::create(path)?;
    for e in events {
        e.write_line(&mut f)?;
    }
    Ok(())
}

/// The QMP part of a run: postcopy on both, wait for the source's device,
/// migrate, switch to postcopy, wait for completion and for the
/// destination's POSTCOPY_END. Returns the final status, the destination's
/// run state and the migration's seconds.
fn drive(
    src: &mut QemuProcess,
    dst: &mut QemuProcess,
    src_peer: &BackendPeer,
    dst_peer: &BackendPeer,
    dir: &Path,
    settle: Duration,
) -> Result<(String, String, f64)> {
    let mut sq =
        Qmp::connect(&dir.join("src.qmp"), Duration::from_secs(30)).context("source QMP")?;
    let mut dq =
        Qmp::connect(&dir.join("dst.qmp"), Duration::from_secs(30)).context("destination QMP")?;
    let caps = json!({ "capabilities": [{ "capability": "postcopy-ram", "state": true }] });
    sq.execute("migrate-set-capabilities", Some(caps.clone()))?;
    dq.execute("migrate-set-capabilities", Some(caps))?;
    if !wait_until(BOOT_TIMEOUT, || src.exited() || src_peer.received(Request::IotlbMsg) > 0) {
        bail!("the source never started its vhost-user device");
    }
    if src.exited() || dst.exited() {
        bail!("a QEMU exited before the migration: {}", dst.stderr());
    }
    std::thread::sleep(settle);
    let uri = format!("unix:{}", dir.join("mig.sock").display());
    let start = Instant::now();
    sq.execute("migrate", Some(json!({ "uri": uri })))?;
    sq.execute("migrate-start-postcopy", None)?;
    let mut status = String::new();
    let deadline = Instant::now() + MIGRATE_TIMEOUT;
    while Instant::now() < deadline {
        let r = sq.execute("query-migrate", None)?;
        status = r["status"].as_str().unwrap_or("?").to_string();
        if matches!(status.as_str(), "completed" | "failed" | "cancelled") {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = start.elapsed().as_secs_f64();
    // The destination's listen thread sends POSTCOPY_END at the very end.
    wait_until(Duration::from_secs(10), || dst_peer.received(Request::PostcopyEnd) > 0);
    std::thread::sleep(Duration::from_millis(500));
    let destination =
        dq.execute("query-status", None)?["status"].as_str().unwrap_or("?").to_string();
    Ok((status, destination, secs))
}

/// The model's scenario for what the QEMUs here run: two virtqueues,
/// postcopy end, no back-end miss (the back-end sends none), device stop at
/// quit.
pub fn migrate_scenario() -> Scenario {
    Scenario { backend_misses: 0, device_stop: true, ..Scenario::default() }
}

/// Explains a destination log, as QEMU printed it, with each variant.
fn explain_log(stderr: &str, variants: &[Variant]) -> Vec<(String, String)> {
    let log = explain::parse_log(stderr);
    let base = migrate_scenario();
    let bound = Bound { max_misses: 0, ..Bound::default() };
    let scenarios = explain::scenarios(base, &log.lines, bound);
    variants
        .iter()
        .map(|&v| {
            let e = explain::explain(&log.lines, v, &scenarios, Limits::default());
            let answer = match &e.found {
                Some(f) => format!("explained ({:?}, {} steps)", f.kind, f.actions.len()),
                None if e.decided() => "not explainable".to_string(),
                None => "undecided".to_string(),
            };
            (v.to_string(), answer)
        })
        .collect()
}

/// Runs the subcommand.
pub fn run(args: QemuMigrateArgs) -> Result<ExitCode> {
    let qemu = QemuBinary::find()?;
    catch_interrupts()?;
    let faults = FaultInjection {
        hold_first_iotlb_reply: args.hold_iotlb_reply,
        iotlb_reply_delay: Duration::from_millis(args.reply_delay_ms),
    };
    let work = WorkDir::new(args.keep.as_deref(), "migrate");
    let settle = Duration::from_secs_f64(args.settle_secs.clamp(0.0, 15.0));
    let runs = migrations(&qemu, args.runs, faults, settle, work.path(), usize::from(args.jobs));
    drop(work);
    let runs = runs?;
    let variants: Vec<Variant> =
        ["qemu-9.1", "mutex"].iter().map(|v| v.parse().expect("known variant")).collect();
    let report = Report {
        qemu: qemu.version.clone(),
        hold_iotlb_reply: args.hold_iotlb_reply,
        reply_delay_ms: args.reply_delay_ms,
        sequences: sequences(&runs, &variants),
        runs,
    };
    if args.json {
        crate::cli::emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        crate::cli::emit(&render(&report))?;
    }
    Ok(if interrupted() { ExitCode::from(130) } else { ExitCode::SUCCESS })
}

/// Runs `count` migrations with `qemu` in `work/run-N`, `jobs` at a time
/// (each pair of QEMUs with its own back-ends, sockets and directory), a
/// progress line each on stderr as it ends; stops early on SIGINT or
/// SIGTERM with the runs that finished, in run order.
pub fn migrations(
    qemu: &QemuBinary,
    count: u32,
    faults: FaultInjection,
    settle: Duration,
    work: &Path,
    jobs: usize,
) -> Result<Vec<RunRecord>> {
    let results = run_jobs(count as usize, jobs, |i| {
        let run = i as u32 + 1;
        let r = migrate_once(qemu, &work.join(format!("run-{run}")), run, faults, settle)?;
        eprintln!(
            "run {run}/{count}: {} in {:.2} s, destination {}, {}",
            r.status,
            r.migrate_secs,
            r.destination,
            if r.race_lines.is_empty() { "no race lines" } else { "race lines" }
        );
        Ok(r)
    });
    if interrupted() {
        eprintln!(
            "interrupted: the processes of the runs under way are stopped; the report covers \
             the runs that finished"
        );
    }
    results.into_iter().flatten().collect()
}

/// The distinct destination logs with race lines, each explained with `variants`.
pub fn sequences(runs: &[RunRecord], variants: &[Variant]) -> Vec<Sequence> {
    let mut sequences: Vec<Sequence> = Vec::new();
    for r in runs.iter().filter(|r| !r.race_lines.is_empty()) {
        match sequences.iter_mut().find(|s| s.lines == r.race_lines) {
            Some(s) => s.runs.push(r.run),
            None => sequences.push(Sequence {
                lines: r.race_lines.clone(),
                torn: torn(&r.destination_stderr),
                runs: vec![r.run],
                explain: explain_log(&r.destination_stderr, variants),
            }),
        }
    }
    sequences
}

fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let n = r.runs.len();
    let completed = r.runs.iter().filter(|x| x.completed).count();
    let raced = r.runs.iter().filter(|x| !x.race_lines.is_empty()).count();
    let _ = writeln!(out, "QEMU: {}", r.qemu);
    let _ = writeln!(
        out,
        "fault injection: {}",
        match (r.hold_iotlb_reply, r.reply_delay_ms) {
            (false, 0) => "none".to_string(),
            (true, 0) => "first IOTLB reply held until POSTCOPY_END".to_string(),
            (false, d) => format!("IOTLB replies delayed {d} ms"),
            (true, d) => format!("first IOTLB reply held, others delayed {d} ms"),
        }
    );
    let _ = writeln!(
        out,
        "runs {n}, migrations completed {completed}, runs with race lines {raced}, distinct race logs {}",
        r.sequences.len()
    );
    for x in r.runs.iter().filter(|x| x.error.is_some()) {
        let _ = writeln!(out, "run {}: {}", x.run, x.error.as_deref().unwrap_or_default());
    }
    for (i, s) in r.sequences.iter().enumerate() {
        let torn = if s.torn { ", QEMU's lines torn" } else { "" };
        let _ = writeln!(out, "\nlog {} ({} runs: {:?}{torn}):", i + 1, s.runs.len(), s.runs);
        for l in &s.lines {
            let _ = writeln!(out, "    {l}");
        }
        for (v, a) in &s.explain {
            let _ = writeln!(out, "  {v:<10} {a}");
        }
    }
    out
}
