//! The `explain` subcommand: reads a QEMU log, asks [`model::explain`] for
//! each variant whether an interleaving produces it, and prints the answer
//! (the thread diagram and each log line's step) as text or JSON.
//!
//! Leaves out: the search itself (in `model::explain`) and parsing of single
//! lines (in `protocol::qemu_log`); this is glue. The JSON is the model's
//! types serialised, with the verdict, node count and steps beside them.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read};
use std::process::ExitCode;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use model::explain::{self, Bound, Explanation, Limits, MatchKind, ParsedLog};
use model::verdict::MEMORY_BUDGET;
use model::ReplyRace;
use reference::scenario::{Scenario, ThreadRole, Variant, MAX_BACKEND_MISSES, MAX_VIRTQUEUES};
use serde::Serialize;

use crate::cli::{emit, BoundArgs, ScenarioArgs};
use crate::progress::{Interrupt, Meter, INTERRUPTED_EXIT};

/// The largest log `explain` reads, in bytes (a QEMU log of an incident is
/// kilobytes; cut a larger one to the incident first).
pub const MAX_INPUT: u64 = 64 << 20;

/// The part of a line kept for parsing (a QEMU message is under 200 bytes;
/// the rest of a longer line is skipped, and the line is no message).
const MAX_LINE: usize = 64 << 10;

/// Arguments of `explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The QEMU log file to explain, or `-` for standard input (other lines
    /// in it are ignored; at most 64 MiB).
    pub log: String,
    /// Variant to try (repeatable); every variant if absent.
    #[arg(long = "variant", value_name = "VARIANT")]
    pub variants: Vec<Variant>,
    /// Largest virtqueue count the scenario grows to when the log needs more calls.
    #[arg(long, default_value_t = Bound::default().max_virtqueues,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_VIRTQUEUES)))]
    pub max_virtqueues: u8,
    /// Largest back-end miss count the scenario grows to.
    #[arg(long, default_value_t = Bound::default().max_misses,
          value_parser = clap::value_parser!(u8).range(0..=i64::from(MAX_BACKEND_MISSES)))]
    pub max_misses: u8,
    /// The state bound: search nodes one search (variant, scenario, whole or
    /// fragment) may visit before it stops with "undecided" (and exit code 2).
    #[command(flatten)]
    pub bound: BoundArgs,
    /// Explain the log as one thread's view: it holds only that thread's
    /// lines (e.g. QEMU running device start alone, as in `qemu-replay`);
    /// the model's lines of the other threads are not compared.
    #[arg(long, value_enum, value_name = "THREAD")]
    pub thread: Option<ThreadView>,
    /// The base scenario the search starts from (and grows from).
    #[command(flatten)]
    pub scenario: ScenarioArgs,
    /// Print JSON instead of text (for scripts).
    #[arg(long)]
    pub json: bool,
}

/// A thread whose view `explain --thread` takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ThreadView {
    /// `vhost_dev_start`'s IOTLB updates.
    DeviceStart,
    /// The postcopy listen thread's POSTCOPY_END.
    PostcopyListen,
    /// The main loop's answers to back-end misses.
    MainLoop,
}

impl ThreadView {
    fn role(self) -> ThreadRole {
        match self {
            ThreadView::DeviceStart => ThreadRole::DeviceStart,
            ThreadView::PostcopyListen => ThreadRole::PostcopyListen,
            ThreadView::MainLoop => ThreadRole::MainLoop,
        }
    }
}

/// Reads a log from `name` (`-`: standard input) line by line, keeping only
/// what [`ParsedLog`] keeps; refuses input over [`MAX_INPUT`] bytes.
pub fn read_log(name: &str) -> Result<ParsedLog> {
    let source: Box<dyn Read> = if name == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(name).with_context(|| format!("cannot read {name}"))?)
    };
    let mut reader = BufReader::with_capacity(64 << 10, source.take(MAX_INPUT + 1));
    let mut log = ParsedLog::default();
    let mut line = Vec::new();
    let mut total = 0u64;
    let mut number = 0usize;
    loop {
        line.clear();
        let n = read_line_capped(&mut reader, &mut line)
            .with_context(|| format!("cannot read {name}"))?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_INPUT {
            bail!(
                "{name}: larger than {} MiB, the most explain reads; cut the log to the incident first",
                MAX_INPUT >> 20
            );
        }
        number += 1;
        log.push_line(number, &String::from_utf8_lossy(&line));
    }
    Ok(log)
}

/// Reads one line (through its newline) and keeps its first [`MAX_LINE`]
/// bytes in `line`; returns the bytes consumed (0 at the end of input).
fn read_line_capped(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<usize> {
    let mut consumed = 0;
    loop {
        let buf = match reader.fill_buf() {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(consumed);
        }
        let (take, done) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = MAX_LINE.saturating_sub(line.len());
        let keep = if done { take - 1 } else { take };
        line.extend_from_slice(&buf[..keep.min(room)]);
        reader.consume(take);
        consumed += take;
        if done {
            return Ok(consumed);
        }
    }
}

/// Runs `explain`: exit 0 whether or not the log is explained, 2 when a
/// search stopped at the state bound, 130 after Ctrl-C.
pub fn run(args: ExplainArgs) -> Result<ExitCode> {
    let log = read_log(&args.log)?;
    let name = if args.log == "-" { "standard input" } else { args.log.as_str() };
    if log.lines.is_empty() {
        if log.set_aside.is_empty() && log.unparsed_count == 0 {
            bail!("{name}: no vhost-user error line in the log");
        }
        bail!(
            "{name}: no vhost-user line the model can produce ({} EOF/short-read line{}, {} unparsed line{}{})",
            log.set_aside.len(),
            if log.set_aside.len() == 1 { "" } else { "s" },
            log.unparsed_count,
            if log.unparsed_count == 1 { "" } else { "s" },
            log.unparsed.first().map(|(n, l)| format!(", e.g. line {n}: {l}")).unwrap_or_default()
        );
    }
    let base = args.scenario.scenario()?;
    let bound = Bound { max_virtqueues: args.max_virtqueues, max_misses: args.max_misses };
    let limits = Limits { max_nodes: args.bound.max_states as usize, ..Limits::default() };
    let mut variants = if args.variants.is_empty() { Variant::all() } else { args.variants };
    let mut seen = Vec::new();
    variants.retain(|v| {
        let new = !seen.contains(v);
        seen.push(*v);
        new
    });
    let scenarios = explain::scenarios(base, &log.lines, bound);
    let view = args.thread.map(ThreadView::role);
    if let Some(v) = view {
        eprintln!("explaining the log as {}'s lines only", v.name());
    }
    let interrupt = Interrupt::install()?;
    let (results, interrupted) = explain_all(&log, &variants, &scenarios, limits, view, &interrupt);
    let bound_text = describe_bound(base, bound, &scenarios, &log);
    if args.json {
        let doc = ExplainReport {
            log: name,
            parsed: &log,
            bound: bound_text,
            scenarios: &scenarios,
            limits,
            variants: results.iter().map(VariantReport::new).collect(),
            interrupted: interrupted.map(|v| v.to_string()),
        };
        emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        let needed = explain::iotlb_calls_needed(&log.lines, base.postcopy_end);
        let mut text = text_report(name, &log, &bound_text, bound, needed, &results);
        if let Some(v) = interrupted {
            let _ = writeln!(
                text,
                "\ninterrupted while explaining with {v}: {} of {} variants finished (above)",
                results.len(),
                variants.len()
            );
        }
        emit(&text)?;
    }
    if interrupted.is_some() {
        return Ok(ExitCode::from(INTERRUPTED_EXIT));
    }
    let undecided: Vec<String> =
        results.iter().filter(|e| !e.decided()).map(|e| e.variant.to_string()).collect();
    if !undecided.is_empty() {
        bail!(
            "search too large: {} stopped at the state bound (--max-states {}, the default of {} \
             keeps a search under {}); lower --max-virtqueues or --max-misses, or raise --max-states",
            undecided.join(", "),
            limits.max_nodes,
            model::verdict::DEFAULT_MAX_STATES,
            MEMORY_BUDGET
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Explains the log with each variant in turn on a worker thread, with a
/// progress meter; returns the finished answers and, if SIGINT stopped it,
/// the variant that was being searched.
fn explain_all(
    log: &ParsedLog,
    variants: &[Variant],
    scenarios: &[Scenario],
    limits: Limits,
    view: Option<ThreadRole>,
    interrupt: &Interrupt,
) -> (Vec<Explanation>, Option<Variant>) {
    let (tx, rx) = mpsc::channel();
    let lines = log.lines.clone();
    let todo = variants.to_vec();
    let scenarios = scenarios.to_vec();
    // Not joined: after an interruption it is left to the process's exit.
    std::thread::spawn(move || {
        for v in todo {
            if tx.send(explain::explain_view(&lines, v, &scenarios, limits, view)).is_err() {
                return;
            }
        }
    });
    let mut meter = Meter::new(Some(variants.len() as u64));
    let mut results = Vec::new();
    let mut announced = usize::MAX;
    while results.len() < variants.len() {
        let current = variants[results.len()];
        if announced != results.len() {
            announced = results.len();
            meter.println(&format!("explaining with {current} ..."));
        }
        meter.update(Some(results.len() as u64), || format!("explaining with {current}"));
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(e) => results.push(e),
            Err(mpsc::RecvTimeoutError::Timeout) if interrupt.raised() => {
                meter.finish();
                return (results, Some(current));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    meter.finish();
    (results, None)
}

/// "virtqueues 2..=4, misses 1..=3 (…)": the scenarios searched, in words.
fn describe_bound(base: Scenario, bound: Bound, scenarios: &[Scenario], log: &ParsedLog) -> String {
    let needed = explain::iotlb_calls_needed(&log.lines, base.postcopy_end);
    let range = |lo: u8, hi: u8| if lo >= hi { lo.to_string() } else { format!("{lo}..={hi}") };
    let vqs = if base.device_start {
        format!("{} virtqueues", range(base.virtqueues, bound.max_virtqueues.max(base.virtqueues)))
    } else {
        "no device start".to_string()
    };
    let misses = range(base.backend_misses, bound.max_misses.max(base.backend_misses));
    let mut s = format!(
        "{vqs}, {misses} back-end misses, {} scenario{} with at least {needed} IOTLB call{} (the log's lower bound)",
        scenarios.len(),
        if scenarios.len() == 1 { "" } else { "s" },
        if needed == 1 { "" } else { "s" },
    );
    if base.short_reads {
        s.push_str(", short reads");
    }
    if base.queued_reads {
        s.push_str(", queued reads");
    }
    if base.split_replies {
        s.push_str(", split replies");
    }
    if base.miss_need_reply {
        s.push_str(", misses with NEED_REPLY");
    }
    if !base.device_start_holds_bql {
        s.push_str(", device start without the BQL");
    }
    if !base.postcopy_end {
        s.push_str(", no postcopy end");
    }
    s
}

fn kind_text(f: &explain::Found) -> String {
    match f.kind {
        MatchKind::Whole => "the whole run".to_string(),
        MatchKind::Fragment => {
            let start = if f.lines_before == 0 {
                "starts with the run's first logged line".to_string()
            } else {
                format!(
                    "starts mid-run, after {} logged line{}",
                    f.lines_before,
                    if f.lines_before == 1 { "" } else { "s" }
                )
            };
            let end = if f.run_ended { "the run ends with it" } else { "the run goes on after it" };
            format!("a fragment: {start}; {end}")
        }
    }
}

/// Why a variant was not searched: no scenario within the bound has the
/// IOTLB calls the log needs; names the flag to raise.
fn not_searched_text(bound: Bound, needed: usize) -> String {
    let most = usize::from(MAX_VIRTQUEUES) + usize::from(MAX_BACKEND_MISSES);
    let within = usize::from(bound.max_virtqueues) + usize::from(bound.max_misses);
    if needed > most {
        format!(
            "not searched: the log needs at least {needed} IOTLB calls, more than the largest \
             scenario the model takes ({MAX_VIRTQUEUES} virtqueues + {MAX_BACKEND_MISSES} misses)"
        )
    } else {
        format!(
            "not searched: the log needs at least {needed} IOTLB calls and the bound allows {within} \
             (--max-virtqueues {} + --max-misses {}); raise --max-virtqueues (up to {MAX_VIRTQUEUES}) \
             or --max-misses (up to {MAX_BACKEND_MISSES})",
            bound.max_virtqueues, bound.max_misses
        )
    }
}

fn text_report(
    name: &str,
    log: &ParsedLog,
    bound_text: &str,
    bound: Bound,
    needed: usize,
    results: &[Explanation],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{name}: {} vhost-user line{}, {} unrelated line{} ignored{}",
        log.lines.len(),
        if log.lines.len() == 1 { "" } else { "s" },
        log.unrelated,
        if log.unrelated == 1 { "" } else { "s" },
        match log.unparsed_count {
            0 => String::new(),
            1 => ", 1 unparsed line".to_string(),
            n => format!(", {n} unparsed lines"),
        }
    );
    for (n, l) in &log.set_aside {
        let _ = writeln!(out, "  set aside (the model never logs it): line {n}: {l}");
    }
    for (n, l) in &log.unparsed {
        let _ = writeln!(
            out,
            "  unparsed (a vhost-user message whose numbers or form do not fit): line {n}: {l}"
        );
    }
    if log.unparsed_count > log.unparsed.len() {
        let _ =
            writeln!(out, "  ... and {} more unparsed", log.unparsed_count - log.unparsed.len());
    }
    let bound_line = bound_text;
    let _ = writeln!(out, "Searched: {bound_line}.");
    for e in results {
        let _ = writeln!(out);
        match &e.found {
            Some(f) => {
                let model = ReplyRace::new(e.variant, f.scenario);
                let _ = writeln!(
                    out,
                    "=== {}: explained, {} ({} steps{})\nscenario: {}",
                    e.variant,
                    kind_text(f),
                    f.actions.len(),
                    if f.shortest { "" } else { crate::output::NOT_SHORTEST },
                    f.scenario.describe()
                );
                if !f.tids.is_empty() {
                    let tids: Vec<String> =
                        f.tids.iter().map(|(r, t)| format!("{} = {t}", r.name())).collect();
                    let _ = writeln!(out, "thread ids: {}", tids.join(", "));
                }
                let _ = writeln!(out);
                out.push_str(&model::trace::render(&model, &f.actions));
                let _ = writeln!(out, "\nThe log's lines, matched to the steps above (the diagram's own log uses the model's thread ids):");
                for (m, n) in f.matched.iter().zip(&log.line_numbers) {
                    let _ = writeln!(
                        out,
                        "  line {n:>3} <- step {:>2} ({}): {}",
                        m.step,
                        m.role.name(),
                        m.line
                    );
                }
            }
            None if e.searches.is_empty() => {
                let _ = writeln!(out, "=== {}: {}", e.variant, not_searched_text(bound, needed));
            }
            None if verdict_of(e) == "not searched" => {
                let raise = if bound.max_misses < MAX_BACKEND_MISSES {
                    format!(
                        "; raise --max-misses (now {}, up to {MAX_BACKEND_MISSES}) to search",
                        bound.max_misses
                    )
                } else {
                    String::new()
                };
                let _ = writeln!(
                    out,
                    "=== {}: not searched: fail-start stops device start at its first failed \
                     update, so no scenario within the bound has as many IOTLB calls that can \
                     fail as the log reports{raise}",
                    e.variant
                );
            }
            None if e.decided() => {
                let counted = e.searches.iter().filter(|s| s.ruled_out_by_count).count();
                let how = if counted == 0 {
                    "every scenario searched whole and as a fragment".to_string()
                } else {
                    format!(
                        "{} of {} searches ruled out by counting the IOTLB calls that can fail, \
                         the rest searched whole and as a fragment",
                        counted,
                        e.searches.len()
                    )
                };
                let _ = writeln!(
                    out,
                    "=== {}: not explainable within the bound ({} search nodes, {how})",
                    e.variant,
                    e.nodes()
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "=== {}: undecided: a search stopped at the state bound ({} nodes); raise --max-states",
                    e.variant,
                    e.nodes()
                );
            }
        }
    }
    let names = |verdict: &str| {
        let v: Vec<String> = results
            .iter()
            .filter(|e| verdict_of(e) == verdict)
            .map(|e| e.variant.to_string())
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(out, "\nExplained by: {}", names("explained"));
    let _ = writeln!(out, "Not explainable by: {}", names("not explainable"));
    for (verdict, title) in [("not searched", "Not searched"), ("undecided", "Undecided")] {
        if results.iter().any(|e| verdict_of(e) == verdict) {
            let _ = writeln!(out, "{title}: {}", names(verdict));
        }
    }
    out
}

/// "explained", "not explainable" (a complete search or a count rules it
/// out), "not searched" (no scenario within the bound, or counting alone
/// under fail-start) or "undecided" (a search stopped at the state bound).
fn verdict_of(e: &Explanation) -> &'static str {
    if e.explained() {
        "explained"
    } else if e.searches.is_empty() || e.searches.iter().all(|s| s.ruled_out_by_count) {
        "not searched"
    } else if e.decided() {
        "not explainable"
    } else {
        "undecided"
    }
}

/// `explain --json`: the parsed log's fields ([`ParsedLog`]) beside what
/// was searched and each variant's answer.
#[derive(Serialize)]
struct ExplainReport<'a> {
    /// The log's path, or "standard input".
    log: &'a str,
    #[serde(flatten)]
    parsed: &'a ParsedLog,
    /// The scenario bound, as the text report words it.
    bound: String,
    scenarios: &'a [Scenario],
    limits: Limits,
    variants: Vec<VariantReport<'a>>,
    /// The variant being searched when SIGINT arrived.
    interrupted: Option<String>,
}

/// One variant's [`Explanation`] with its verdict, the nodes its searches
/// visited, and the found path's steps (`null` when nothing was found).
#[derive(Serialize)]
struct VariantReport<'a> {
    #[serde(flatten)]
    explanation: &'a Explanation,
    verdict: &'static str,
    nodes: usize,
    steps: Option<Vec<model::trace::Step>>,
}

impl<'a> VariantReport<'a> {
    fn new(e: &'a Explanation) -> Self {
        let steps = e
            .found
            .as_ref()
            .map(|f| model::trace::steps(&ReplyRace::new(e.variant, f.scenario), &f.actions));
        VariantReport { explanation: e, verdict: verdict_of(e), nodes: e.nodes(), steps }
    }
}
