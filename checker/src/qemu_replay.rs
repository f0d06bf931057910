//! `vhost-race qemu-replay`: QEMU's own binary judges the model. For each
//! counterexample (and each log in `examples/logs/` that `qemu-9.1`
//! explains), the reference back-end answers QEMU's device start with the
//! bytes device start reads in the model's path ([`model::replay`]), and
//! QEMU's standard error must hold exactly the model's device-start lines,
//! in order, byte for byte after the program prefix.
//!
//! Leaves out: the other threads (QEMU runs device start alone; the back-end
//! stands in for what they did to the stream), counterexamples in which
//! device start reads nothing or never finishes its call (said per case, as
//! "skipped" with the reason), and paths with more IOTLB calls than QEMU
//! starts virtqueues (iPXE starts one queue pair: two calls).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use model::replay::{device_start_replay, DeviceStartReplay};
use model::verdict::{self, CheckOptions};
use model::{Action, ReplyRace, PROPERTIES};
use reference::backend::ReplyPlan;
use reference::qemu::{message_of, QemuBinary};
use reference::qemu_log::{LogLine, QemuError};
use reference::scenario::{Scenario, Variant};
use reference::wire::Request;
use serde::{Deserialize, Serialize};

use crate::qemu_peer::{
    catch_interrupts, interrupted, model_check_options, run_jobs, wait_until, BackendPeer, WorkDir,
};

/// IOTLB updates QEMU's device start sends with iPXE as the driver: one per
/// virtqueue of the first queue pair (measured; `queues=2` changes nothing).
pub const QEMU_IOTLB_CALLS: usize = 2;

/// How long QEMU may take to boot iPXE and start the device.
const START_TIMEOUT: Duration = Duration::from_secs(90);
/// How long QEMU may take to print its lines once the last update is answered.
const PRINT_GRACE: Duration = Duration::from_millis(500);

/// A model path to replay: where it comes from and the path itself.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Case {
    /// What the path is (variant, property or log, scenario).
    pub label: String,
    /// The variant whose model made the path.
    pub variant: String,
    /// Its scenario.
    pub scenario: Scenario,
    /// The path from the initial state.
    pub actions: Vec<Action>,
}

/// A `trace --json` document (the fields a replay needs).
#[derive(Debug, Deserialize)]
struct TraceDoc {
    variant: String,
    property: Option<String>,
    scenario: Option<Scenario>,
    actions: Option<Vec<Action>>,
}

fn case_from_trace_file(path: &Path) -> Result<Case> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let doc: TraceDoc = serde_json::from_str(&text).with_context(|| {
        format!("{} is not a `vhost-race trace --json` document", path.display())
    })?;
    let Some(scenario) = doc.scenario else {
        bail!("{} has no scenario: make it with this version's `trace --json`", path.display());
    };
    let Some(actions) = doc.actions else {
        bail!("{}: the property holds, there is no counterexample to replay", path.display());
    };
    Ok(Case {
        label: format!("{} {}", doc.variant, doc.property.unwrap_or_default()),
        variant: doc.variant,
        scenario,
        actions,
    })
}

fn replay_of(case: &Case) -> Result<Result<DeviceStartReplay, String>> {
    let variant: Variant = case.variant.parse().map_err(|e| anyhow::anyhow!("{e}"))?;
    case.scenario.validate().context("invalid scenario")?;
    let model = ReplyRace::new(variant, case.scenario);
    Ok(device_start_replay(&model, &case.actions).map_err(|e| e.to_string()))
}

/// The reply plan for the counterexample in a `trace --json` file (for
/// `backend --replay`).
pub fn plan_from_trace_file(path: &Path) -> Result<ReplyPlan> {
    let case = case_from_trace_file(path)?;
    match replay_of(&case)? {
        Ok(r) => Ok(r.plan),
        Err(why) => bail!("{}: cannot be replayed: {why}", path.display()),
    }
}

/// The scenarios whose counterexamples device start can show on its own.
fn scenarios_in_scope() -> Vec<Scenario> {
    let d = Scenario::default();
    vec![
        d,
        Scenario { device_start_holds_bql: false, ..d },
        Scenario { short_reads: true, ..d },
        Scenario { queued_reads: true, ..d },
        Scenario { split_replies: true, queued_reads: true, ..d },
        Scenario { backend_misses: 0, ..d },
        Scenario { postcopy_end: false, ..d },
    ]
}

/// Every counterexample of every variant on the scenarios in scope, and the
/// interleaving `qemu-9.1` finds for each log in `logs_dir`. A property of
/// final states has two shortest counterexamples of one length: the one
/// `check` prints, from the reduced graph, and the one of every
/// interleaving (`--full`); both are cases, once if they are one path.
pub fn cases_in_scope(logs_dir: Option<&Path>) -> Result<Vec<Case>> {
    let mut cases: Vec<Case> = Vec::new();
    for scenario in scenarios_in_scope() {
        let flags = match scenario.flags().join(" ") {
            f if f.is_empty() => "default".to_string(),
            f => f,
        };
        // Only QEMU's own variants have a binary to replay on.
        for variant in Variant::all().into_iter().filter(|v| v.policy.in_qemu()) {
            for reduce in [true, false] {
                let opts = CheckOptions { reduce, ..model_check_options() };
                let v = verdict::check(variant, scenario, &opts);
                for p in &v.properties {
                    let Some(actions) = &p.counterexample else { continue };
                    let variant_s = variant.to_string();
                    if cases.iter().any(|c| {
                        c.variant == variant_s && c.scenario == scenario && &c.actions == actions
                    }) {
                        continue;
                    }
                    let title = PROPERTIES
                        .iter()
                        .find(|(n, _)| *n == p.name)
                        .map_or(p.name.to_string(), |(_, t)| t.to_string());
                    let full = if reduce { "" } else { ", --full" };
                    cases.push(Case {
                        label: format!("{variant} \"{title}\" ({flags}{full})"),
                        variant: variant_s,
                        scenario,
                        actions: actions.clone(),
                    });
                }
            }
        }
    }
    if let Some(dir) = logs_dir {
        let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("cannot read {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        let variant: Variant = "qemu-9.1".parse().map_err(|e| anyhow::anyhow!("{e}"))?;
        for log in logs {
            let text = std::fs::read_to_string(&log)?;
            let parsed = model::explain::parse_log(&text);
            let base = Scenario::default();
            let bound =
                model::explain::Bound { max_virtqueues: QEMU_IOTLB_CALLS as u8, max_misses: 3 };
            let scenarios = model::explain::scenarios(base, &parsed.lines, bound);
            let e = model::explain::explain(&parsed.lines, variant, &scenarios, Default::default());
            if let Some(f) = e.found {
                cases.push(Case {
                    label: format!(
                        "{variant} explaining {}",
                        log.file_name().unwrap_or_default().to_string_lossy()
                    ),
                    variant: variant.to_string(),
                    scenario: f.scenario,
                    actions: f.actions,
                });
            }
        }
    }
    Ok(cases)
}

/// What happened to one case.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The case.
    pub label: String,
    /// `agree`, `disagree`, `skipped` or `qemu-failed`.
    pub verdict: &'static str,
    /// Why it was skipped or why QEMU failed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The chunks the back-end sent per IOTLB call, as hex words (a tail of
    /// fewer than 4 bytes as bytes: [`model::stream::hex`]).
    pub plan: Vec<Vec<String>>,
    /// Device start's lines in the model.
    pub model_lines: Vec<String>,
    /// QEMU's vhost-user lines (message text after the program prefix).
    pub qemu_lines: Vec<String>,
    /// QEMU's other stderr lines.
    pub other_lines: Vec<String>,
    /// Seconds QEMU ran.
    pub seconds: f64,
}

/// Messages QEMU prints on its own way out that say nothing about vhost-user.
fn is_shutdown_noise(msg: &str) -> bool {
    msg.starts_with("terminating on signal")
}

/// Runs QEMU once against an in-process back-end following `plan`; returns
/// QEMU's stderr and the seconds QEMU ran.
pub fn run_qemu_once(
    qemu: &QemuBinary,
    plan: ReplyPlan,
    work: &Path,
    wait_for_calls: usize,
) -> Result<(String, f64)> {
    std::fs::create_dir_all(work)?;
    let socket = work.join("vhost.sock");
    let peer = BackendPeer::start(&socket, START_TIMEOUT, move |b| b.set_reply_plan(plan))?;
    let args = qemu.net_args(&socket, 1, &work.join("serial.out"), None);
    let start = Instant::now();
    let mut proc = qemu.spawn(&args, &work.join("qemu.stderr"))?;
    let started = wait_until(START_TIMEOUT, || {
        proc.exited() || peer.received(Request::IotlbMsg) >= wait_for_calls
    });
    // Let QEMU print what it makes of the last reply.
    std::thread::sleep(PRINT_GRACE);
    let seconds = start.elapsed().as_secs_f64();
    let calls = peer.received(Request::IotlbMsg);
    proc.terminate(Duration::from_secs(10));
    let served = peer.join();
    let stderr = proc.stderr();
    let _ = std::fs::remove_file(&socket);
    if !started || calls < wait_for_calls {
        bail!("QEMU sent {calls} of {wait_for_calls} IOTLB updates within {START_TIMEOUT:?}: {stderr}");
    }
    served.context("the back-end failed")?;
    Ok((stderr, seconds))
}

/// Replays one case on QEMU.
pub fn replay_case(qemu: &QemuBinary, case: &Case, work: &Path) -> Result<Outcome> {
    let mut out = Outcome {
        label: case.label.clone(),
        verdict: "skipped",
        reason: None,
        plan: Vec::new(),
        model_lines: Vec::new(),
        qemu_lines: Vec::new(),
        other_lines: Vec::new(),
        seconds: 0.0,
    };
    let r = match replay_of(case)? {
        Ok(r) => r,
        Err(why) => {
            out.reason = Some(why);
            return Ok(out);
        }
    };
    out.plan = r
        .plan
        .iotlb_replies
        .iter()
        .map(|c| c.iter().map(|b| model::stream::hex(b)).collect())
        .collect();
    out.model_lines = r.lines.iter().map(QemuError::to_string).collect();
    if r.plan.iotlb_replies.len() > QEMU_IOTLB_CALLS {
        out.reason = Some(format!(
            "device start reads in {} IOTLB calls; QEMU with iPXE makes {QEMU_IOTLB_CALLS}",
            r.plan.iotlb_replies.len()
        ));
        return Ok(out);
    }
    match run_qemu_once(qemu, r.plan, work, QEMU_IOTLB_CALLS) {
        Err(e) => {
            out.verdict = "qemu-failed";
            out.reason = Some(format!("{e:#}"));
        }
        Ok((stderr, seconds)) => {
            out.seconds = seconds;
            for line in stderr.lines() {
                match message_of(line) {
                    Some(m) if LogLine::parse(line).is_some() => out.qemu_lines.push(m.to_string()),
                    Some(m) if is_shutdown_noise(m) => {}
                    _ if line.trim().is_empty() => {}
                    _ => out.other_lines.push(line.to_string()),
                }
            }
            out.verdict = if out.qemu_lines == out.model_lines && out.other_lines.is_empty() {
                "agree"
            } else {
                "disagree"
            };
        }
    }
    Ok(out)
}

/// Counts of a whole replay run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// QEMU's `-version` line.
    pub qemu: String,
    /// Cases considered.
    pub cases: usize,
    /// Distinct replays (cases with the same plan and lines run once).
    pub distinct: usize,
    /// Replayed on QEMU.
    pub replayed: usize,
    /// Of those, QEMU printed the model's lines.
    pub agree: usize,
    /// Skipped, with the reason.
    pub skipped: usize,
    /// Every distinct replay's outcome, with the labels of the cases it stands for.
    pub outcomes: Vec<(Outcome, Vec<String>)>,
}

/// The `qemu-replay` subcommand's flags.
#[derive(clap::Args, Debug)]
pub struct QemuReplayArgs {
    /// `vhost-race trace --json` files to replay; without any, every
    /// counterexample in scope and every log in `--logs`.
    files: Vec<PathBuf>,
    /// Directory of QEMU logs to explain with qemu-9.1 and replay (with no
    /// files given).
    #[arg(long, default_value = "examples/logs")]
    logs: PathBuf,
    /// Keep each QEMU run's stderr, serial output and socket directory here
    /// (default: a temporary directory, removed at the end).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    /// QEMUs replaying at once. A replay mostly waits (SeaBIOS and iPXE
    /// booting under TCG: about 2.9 s of wall time for 0.8 s of CPU on this
    /// machine), so a few at once finish sooner; each has its own back-end,
    /// socket and directory, and the outcomes keep the cases' order.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
}

/// Runs the subcommand: 0 when QEMU printed the model's lines for every
/// case replayed, 1 when it did not for some, 2 when nothing could run.
pub fn run(args: QemuReplayArgs) -> Result<std::process::ExitCode> {
    let qemu = QemuBinary::find()?;
    catch_interrupts()?;
    let cases = if args.files.is_empty() {
        let logs = args.logs.is_dir().then_some(args.logs.as_path());
        cases_in_scope(logs)?
    } else {
        args.files.iter().map(|f| case_from_trace_file(f)).collect::<Result<Vec<_>>>()?
    };
    let work = WorkDir::new(args.keep.as_deref(), "qemu-replay");
    let result = replay_all(&qemu, &cases, work.path(), usize::from(args.jobs));
    drop(work);
    let summary = result?;
    if args.json {
        crate::cli::emit(&format!("{}\n", serde_json::to_string_pretty(&summary)?))?;
    } else {
        crate::cli::emit(&render(&summary))?;
    }
    let all_agree = summary.agree == summary.replayed
        && summary.outcomes.iter().all(|(o, _)| o.verdict != "qemu-failed");
    if interrupted() {
        return Ok(std::process::ExitCode::from(130));
    }
    Ok(if all_agree { std::process::ExitCode::SUCCESS } else { std::process::ExitCode::from(1) })
}

/// Cases that give device start the same view: the plan and lines (or the
/// reason it cannot be replayed), and the cases.
type Group<'a> = (Option<(ReplyPlan, Vec<QemuError>)>, String, Vec<&'a Case>);

/// Replays every distinct case, `jobs` QEMUs at a time, with a progress line
/// each on stderr; the outcomes are in the cases' order whatever order the
/// replays finish in.
pub fn replay_all(
    qemu: &QemuBinary,
    cases: &[Case],
    work_root: &Path,
    jobs: usize,
) -> Result<Summary> {
    let mut summary =
        Summary { qemu: qemu.version.clone(), cases: cases.len(), ..Summary::default() };
    // Cases with the same device-start view need one QEMU run.
    let mut groups: Vec<Group<'_>> = Vec::new();
    for case in cases {
        let key = match replay_of(case)? {
            Ok(r) => (Some((r.plan, r.lines)), String::new()),
            Err(why) => (None, why),
        };
        match groups.iter_mut().find(|g| g.0 == key.0 && g.1 == key.1) {
            Some(g) => g.2.push(case),
            None => groups.push((key.0, key.1, vec![case])),
        }
    }
    summary.distinct = groups.len();
    let runs = groups.iter().filter(|g| g.0.is_some()).count();
    let started = AtomicUsize::new(0);
    let results = run_jobs(groups.len(), jobs, |i| {
        let (plan, _, members) = &groups[i];
        if plan.is_some() {
            let n = started.fetch_add(1, Ordering::SeqCst) + 1;
            eprintln!("[{n}/{runs}] replaying {} on QEMU ...", members[0].label);
        }
        replay_case(qemu, members[0], &work_root.join(format!("case-{i}")))
    });
    for ((_, _, members), result) in groups.iter().zip(results) {
        let Some(outcome) = result else {
            if interrupted() {
                eprintln!("interrupted: the summary covers the replays before it");
            }
            break;
        };
        let outcome = outcome?;
        match outcome.verdict {
            "skipped" => summary.skipped += members.len(),
            "agree" => {
                summary.replayed += 1;
                summary.agree += 1;
            }
            _ => summary.replayed += 1,
        }
        let labels = members.iter().map(|c| c.label.clone()).collect();
        summary.outcomes.push((outcome, labels));
    }
    Ok(summary)
}

fn render(s: &Summary) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "QEMU: {}", s.qemu);
    let _ = writeln!(out, "{} model paths, {} distinct device-start views\n", s.cases, s.distinct);
    for (o, labels) in &s.outcomes {
        if o.verdict == "skipped" {
            continue;
        }
        let _ = writeln!(out, "{:<9} {}", o.verdict, labels.join("; "));
        for (i, call) in o.plan.iter().enumerate() {
            let _ =
                writeln!(out, "          back-end answers IOTLB call {i} with {}", call.join(" "));
        }
        let show = |lines: &[String]| {
            if lines.is_empty() {
                "(nothing)".to_string()
            } else {
                lines.join(" | ")
            }
        };
        let _ = writeln!(out, "          model: {}", show(&o.model_lines));
        let _ = writeln!(out, "          QEMU:  {}", show(&o.qemu_lines));
        if !o.other_lines.is_empty() {
            let _ = writeln!(out, "          QEMU also printed: {}", o.other_lines.join(" | "));
        }
        if let Some(r) = &o.reason {
            let _ = writeln!(out, "          {r}");
        }
        let _ = writeln!(out, "          ({:.1} s)", o.seconds);
    }
    let mut reasons: Vec<(String, usize)> = Vec::new();
    for (o, labels) in &s.outcomes {
        if o.verdict != "skipped" {
            continue;
        }
        let r = o.reason.clone().unwrap_or_default();
        match reasons.iter_mut().find(|x| x.0 == r) {
            Some(x) => x.1 += labels.len(),
            None => reasons.push((r, labels.len())),
        }
    }
    let _ = writeln!(
        out,
        "\nreplayed {} on QEMU: {} agree, {} do not; {} model paths skipped",
        s.replayed,
        s.agree,
        s.replayed - s.agree,
        s.skipped
    );
    for (r, n) in reasons {
        let _ = writeln!(out, "  skipped {n}: {r}");
    }
    out
}
