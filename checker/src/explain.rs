//! The `explain` subcommand: reads a QEMU log, asks [`model::explain`] for
//! each variant whether an interleaving produces it, and prints the answer
//! (the thread diagram and each log line's step) as text or JSON.
//!
//! Leaves out: the search itself (in `model::explain`) and parsing of single
//! lines (in `reference::qemu_log`); this is glue.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use model::explain::{self, Bound, Explanation, Limits, MatchKind, ParsedLog};
use model::ReplyRace;
use reference::scenario::{Scenario, ThreadRole, Variant, MAX_BACKEND_MISSES, MAX_VIRTQUEUES};

use crate::cli::{emit, ScenarioArgs};
use crate::output::describe_scenario;

/// Arguments of `explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The QEMU log file to explain (other lines in it are ignored).
    pub log: PathBuf,
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
    /// Search nodes one search (variant, scenario, whole or fragment) may visit
    /// before it stops with "undecided".
    #[arg(long, default_value_t = Limits::default().max_nodes as u32,
          value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub max_nodes: u32,
    /// Explain the log as one thread's view: it holds only that thread's
    /// lines (e.g. QEMU running device start alone, as in `qemu-replay`);
    /// the model's lines of the other threads are not compared.
    #[arg(long, value_enum, value_name = "THREAD")]
    pub thread: Option<ThreadView>,
    /// The base scenario the search starts from (and grows from).
    #[command(flatten)]
    pub scenario: ScenarioArgs,
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

/// Runs `explain`: exit 0 whether or not the log is explained.
pub fn run(args: ExplainArgs, json: bool) -> Result<ExitCode> {
    let bytes =
        std::fs::read(&args.log).with_context(|| format!("cannot read {}", args.log.display()))?;
    let text = String::from_utf8_lossy(&bytes);
    let log = explain::parse_log(&text);
    if log.lines.is_empty() {
        if log.set_aside.is_empty() {
            bail!("{}: no vhost-user error line in the log", args.log.display());
        }
        bail!(
            "{}: no vhost-user line the model can produce ({} EOF/short-read lines only)",
            args.log.display(),
            log.set_aside.len()
        );
    }
    let base = args.scenario.scenario()?;
    let bound = Bound { max_virtqueues: args.max_virtqueues, max_misses: args.max_misses };
    let limits = Limits { max_nodes: args.max_nodes as usize };
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
    let results: Vec<Explanation> = variants
        .iter()
        .map(|&v| {
            eprintln!("explaining with {v} ...");
            explain::explain_view(&log.lines, v, &scenarios, limits, view)
        })
        .collect();
    let bound_text = describe_bound(base, bound, &scenarios, &log);
    if json {
        let doc = serde_json::json!({
            "log": args.log.display().to_string(),
            "vhost_user_lines": log.lines,
            "line_numbers": log.line_numbers,
            "set_aside": log.set_aside,
            "unrelated_lines": log.unrelated,
            "bound": bound_text,
            "scenarios": scenarios,
            "limits": limits,
            "variants": results.iter().map(|e| json_variant(e, &log)).collect::<Vec<_>>(),
        });
        emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        emit(&text_report(&args.log, &log, &bound_text, &results))?;
    }
    Ok(ExitCode::SUCCESS)
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

fn text_report(
    path: &std::path::Path,
    log: &ParsedLog,
    bound: &str,
    results: &[Explanation],
) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} vhost-user line{}, {} unrelated line{} ignored",
        path.display(),
        log.lines.len(),
        if log.lines.len() == 1 { "" } else { "s" },
        log.unrelated,
        if log.unrelated == 1 { "" } else { "s" }
    );
    for (n, l) in &log.set_aside {
        let _ = writeln!(out, "  set aside (the model never logs it): line {n}: {l}");
    }
    let _ = writeln!(out, "Searched: {bound}.");
    for e in results {
        let _ = writeln!(out);
        match &e.found {
            Some(f) => {
                let model = ReplyRace::new(e.variant, f.scenario);
                let _ = writeln!(
                    out,
                    "=== {}: explained, {} ({} steps)\nscenario: {}",
                    e.variant,
                    kind_text(f),
                    f.actions.len(),
                    describe_scenario(&f.scenario)
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
            None if e.decided() => {
                let counted = e.searches.iter().filter(|s| s.ruled_out_by_count).count();
                let how = if counted == 0 {
                    "every scenario searched whole and as a fragment".to_string()
                } else if counted == e.searches.len() {
                    "fail-start stops device start at its first failed update: no scenario \
                     within the bound has enough IOTLB calls that can fail"
                        .to_string()
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
                    "=== {}: undecided: a search stopped at the node limit ({} nodes); raise --max-nodes",
                    e.variant,
                    e.nodes()
                );
            }
        }
    }
    let names = |explained: bool| {
        let v: Vec<String> = results
            .iter()
            .filter(|e| e.explained() == explained && (explained || e.decided()))
            .map(|e| e.variant.to_string())
            .collect();
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let _ = writeln!(out, "\nExplained by: {}", names(true));
    let _ = writeln!(out, "Not explainable by: {}", names(false));
    out
}

fn json_variant(e: &Explanation, log: &ParsedLog) -> serde_json::Value {
    let verdict = if e.explained() {
        "explained"
    } else if e.decided() {
        "not explainable"
    } else {
        "undecided"
    };
    let found = e.found.as_ref().map(|f| {
        let model = ReplyRace::new(e.variant, f.scenario);
        let matched: Vec<serde_json::Value> = f
            .matched
            .iter()
            .zip(&log.line_numbers)
            .map(|(m, n)| {
                serde_json::json!({
                    "line_number": n,
                    "line": m.line.to_string(),
                    "step": m.step,
                    "thread": m.role.name(),
                })
            })
            .collect();
        serde_json::json!({
            "scenario": f.scenario,
            "kind": f.kind,
            "lines_before": f.lines_before,
            "run_ended": f.run_ended,
            "tids": f.tids.iter().map(|(r, t)| serde_json::json!({"thread": r.name(), "tid": t})).collect::<Vec<_>>(),
            "actions": f.actions,
            "steps": model::trace::steps(&model, &f.actions),
            "matched": matched,
        })
    });
    serde_json::json!({
        "variant": e.variant.to_string(),
        "verdict": verdict,
        "nodes": e.nodes(),
        "searches": e.searches,
        "found": found,
    })
}
