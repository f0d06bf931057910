//! `vhost-race scenarios`: every variant on every combination of the
//! scenario flags ([`model::sweep`]), as one table: a row per scenario, a
//! column per variant, each cell safe (✓), races (R), deadlocks (D) or
//! both (RD). The question it answers: which design holds everywhere?
//!
//! Leaves out: counterexamples (each failing cell's `check` command prints
//! them) and the shortest-counterexample search, which the table does not need.

use std::fmt::Write as _;
use std::ops::ControlFlow;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Result;
use clap::Args;
use model::sweep::{self, Cell, Outcome, Row};
use model::verdict;
use reference::scenario::{LockPolicy, Scenario, Variant, MAX_BACKEND_MISSES, MAX_VIRTQUEUES};

use crate::cli::BoundArgs;
use crate::progress::{Interrupt, Meter, INTERRUPTED_EXIT};

/// Arguments of `scenarios`.
#[derive(Args, Debug)]
pub struct ScenariosArgs {
    /// Variants to check (repeat the flag); all twelve if none.
    #[arg(long = "variant")]
    variants: Vec<Variant>,
    /// IOTLB updates device start sends, in every scenario.
    #[arg(long, default_value_t = 2,
          value_parser = clap::value_parser!(u8).range(1..=i64::from(MAX_VIRTQUEUES)))]
    virtqueues: u8,
    /// Back-end misses, in every scenario.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(0..=i64::from(MAX_BACKEND_MISSES)))]
    misses: u8,
    /// Print a Markdown table (for the README) instead of text.
    #[arg(long, conflicts_with = "json")]
    markdown: bool,
    /// Print JSON instead of text (for scripts).
    #[arg(long)]
    json: bool,
    /// Search every interleaving, without the partial-order reduction.
    #[arg(long)]
    full: bool,
    #[command(flatten)]
    bound: BoundArgs,
}

/// A variant's short column title: `9.1`, `mutex+fs`, `rq`.
fn short(v: Variant) -> String {
    let base = match v.policy {
        LockPolicy::Qemu91 => "9.1",
        LockPolicy::Mutex => "mutex",
        LockPolicy::BqlListen => "bql-l",
        LockPolicy::BqlPostcopyEnd => "bql-pe",
        LockPolicy::Qemu102 => "10.2",
        LockPolicy::ReplyQueue => "rq",
    };
    if v.fail_start {
        format!("{base}+fs")
    } else {
        base.to_string()
    }
}

/// Runs `scenarios`.
pub fn run(args: ScenariosArgs) -> Result<ExitCode> {
    let variants = if args.variants.is_empty() { Variant::all() } else { args.variants.clone() };
    let base = Scenario {
        virtqueues: args.virtqueues,
        backend_misses: args.misses,
        ..Scenario::default()
    };
    let combos = sweep::flag_combinations(base);
    let total = (combos.len() * variants.len()) as u64;
    let interrupt = Interrupt::install()?;
    let opts = sweep::options(Some(args.bound.max_states as usize), !args.full);
    let start = Instant::now();
    let mut meter = Meter::new(Some(total));
    let mut rows: Vec<Row> = Vec::new();
    let mut done = 0u64;
    let mut bounded = 0u64;
    for flags in combos {
        let mut cells = Vec::new();
        for &variant in &variants {
            let result = verdict::check_with(variant, flags.scenario, &opts, |p| {
                meter.update(Some(done), || {
                    format!("{} on {}", verdict::describe_progress(p), flags.describe())
                });
                if interrupt.raised() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            let Ok(v) = result else {
                meter.finish();
                if !rows.is_empty() {
                    print!("{}", table(&variants, &rows, args.markdown));
                }
                eprintln!("interrupted after {done} of {total} checks");
                return Ok(ExitCode::from(INTERRUPTED_EXIT));
            };
            if !v.complete {
                bounded += 1;
            }
            cells.push(Cell::of(&v));
            done += 1;
        }
        rows.push(Row { flags, cells });
    }
    meter.finish();
    if args.json {
        let doc = serde_json::json!({
            "base": base,
            "seconds": start.elapsed().as_secs_f64(),
            "stopped_at_bound": bounded,
            "rows": rows,
        });
        println!("{}", serde_json::to_string_pretty(&doc)?);
    } else {
        println!("Base scenario: {}", base.describe());
        println!(
            "Every combination of the boolean scenario flags on it ({} scenarios).\n",
            rows.len()
        );
        print!("{}", table(&variants, &rows, args.markdown));
        println!("\n{}", legend(&variants));
        let safe: Vec<String> = variants
            .iter()
            .enumerate()
            .filter(|&(i, _)| rows.iter().all(|r| r.cells[i].outcome == Outcome::SAFE))
            .map(|(_, v)| v.to_string())
            .collect();
        println!(
            "Safe on every scenario: {}. {} checks in {:.1} s; {} stopped at the state bound \
             (--max-states {}, depth first).",
            if safe.is_empty() { "none".to_string() } else { safe.join(", ") },
            done,
            start.elapsed().as_secs_f64(),
            bounded,
            args.bound.max_states
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The table: a row per scenario, a column per variant.
fn table(variants: &[Variant], rows: &[Row], markdown: bool) -> String {
    let mut out = String::new();
    let heads: Vec<String> = variants.iter().map(|&v| short(v)).collect();
    let width = rows.iter().map(|r| r.flags.describe().len()).max().unwrap_or(8).max(8);
    if markdown {
        let _ = writeln!(out, "| flags | {} |", heads.join(" | "));
        let _ = writeln!(out, "|---|{}", "---|".repeat(heads.len()));
        for r in rows {
            let cells: Vec<String> = r.cells.iter().map(|c| c.outcome.cell()).collect();
            let _ = writeln!(out, "| `{}` | {} |", r.flags.describe(), cells.join(" | "));
        }
        return out;
    }
    let _ = write!(out, "{:<width$}", "flags");
    for h in &heads {
        let _ = write!(out, " {h:>8}");
    }
    out.push('\n');
    for r in rows {
        let _ = write!(out, "{:<width$}", r.flags.describe());
        for c in &r.cells {
            let _ = write!(out, " {:>8}", c.outcome.cell());
        }
        out.push('\n');
    }
    out
}

/// What the cells and column titles mean.
fn legend(variants: &[Variant]) -> String {
    let names: Vec<String> = variants.iter().map(|&v| format!("{} = {v}", short(v))).collect();
    format!(
        "✓ every property holds (exhaustive); R a reply race (a reply, framing, log, start or \
         channel property fails); D a hang (no deadlock or every thread finishes fails); RD \
         both; ? not ruled out: the search stopped at the state bound first. \
         `vhost-race check --variant V FLAGS` prints the counterexamples.\nColumns: {}.",
        names.join(", ")
    )
}
