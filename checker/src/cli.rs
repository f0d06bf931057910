//! The command line: subcommands, scenario flags shared by all of them, and
//! the dispatch to the model (check, trace, explore) and the reference (run,
//! backend).
//!
//! Leaves out: configuration files; every knob is a flag.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;

use std::ops::ControlFlow;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use model::verdict::{self, CheckOptions, Verdict};
use model::{Prop, ReplyRace, PROPERTIES};
use reference::scenario::{Scenario, Variant, MAX_BACKEND_MISSES, MAX_VIRTQUEUES};

use crate::output;
use crate::progress::{Interrupt, Meter, INTERRUPTED_EXIT};

/// Model-checks the vhost-user reply race between QEMU's device-start,
/// postcopy-listen and main-loop threads sharing one socket.
#[derive(Parser, Debug)]
#[command(name = "vhost-race", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Scenario of the default matrix run.
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// How the default matrix run checks.
    #[command(flatten)]
    check: CheckArgs,
}

/// Flags of the commands that run the model checker (the matrix, check, trace).
#[derive(Args, Debug, Clone)]
pub struct CheckArgs {
    /// Print JSON instead of text (for scripts).
    #[arg(long)]
    pub json: bool,
    /// Search every interleaving, without the partial-order reduction (same
    /// verdicts, more states: the state counts the tests pin).
    #[arg(long)]
    pub full: bool,
    /// Search threads (the same states and verdicts; with 1 the depth
    /// column is reproducible).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub threads: u16,
    #[command(flatten)]
    pub bound: BoundArgs,
}

/// The one memory bound of every search.
#[derive(Args, Debug, Clone)]
pub struct BoundArgs {
    /// States a search may generate before it is refused as too large (the
    /// default keeps a search under 1 GB of memory).
    #[arg(long, default_value_t = verdict::DEFAULT_MAX_STATES as u64,
          value_parser = clap::value_parser!(u64).range(1..=4_000_000_000))]
    pub max_states: u64,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Check one variant exhaustively and print its row and counterexamples.
    Check {
        /// Variant, e.g. qemu-9.1, mutex, bql-listen+fail-start.
        #[arg(long)]
        variant: Variant,
        #[command(flatten)]
        scenario: ScenarioArgs,
        #[command(flatten)]
        check: CheckArgs,
    },
    /// Print the shortest counterexample of one property for one variant.
    Trace {
        /// Variant.
        #[arg(long)]
        variant: Variant,
        /// Property name (as in the matrix) or its column title.
        #[arg(long)]
        property: String,
        /// Also print the Explorer link that opens this counterexample
        /// (with `explore` running on the default address).
        #[arg(long)]
        explore_link: bool,
        #[command(flatten)]
        scenario: ScenarioArgs,
        #[command(flatten)]
        check: CheckArgs,
    },
    /// Run the threads of a variant against the reference back-end over a
    /// real socketpair, N times, and report the logs seen.
    Run {
        /// Variant.
        #[arg(long)]
        variant: Variant,
        /// How many runs.
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
        iterations: u64,
        /// Yield between each reply's header and payload read, so that the
        /// race shows within seconds (not QEMU's behaviour; off by default).
        #[arg(long)]
        widen_race_window: bool,
        /// Stop at the first run that logs an error or hangs.
        #[arg(long)]
        stop_at_first_failure: bool,
        /// Milliseconds to wait for the threads before calling a run a hang
        /// (a warning says when it is below what a healthy run takes here).
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        hang_timeout_ms: u64,
        #[command(flatten)]
        scenario: ScenarioArgs,
        /// Print JSON instead of text (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Run the reference vhost-user back-end as its own process on a socket
    /// path (QEMU's binary can use it).
    Backend(crate::backend_cmd::BackendArgs),
    /// Replay the model's counterexamples on QEMU's own binary and compare
    /// the lines QEMU prints with the model's.
    QemuReplay(crate::qemu_replay::QemuReplayArgs),
    /// Run real postcopy migrations between two QEMUs, each with a
    /// vhost-user-net device on a reference back-end, and explain the
    /// destination's logs.
    QemuMigrate(crate::qemu_migrate::QemuMigrateArgs),
    /// The model's --miss-need-reply on QEMU's binary: a back-end miss during
    /// device start, and whether QEMU hangs.
    QemuMiss(crate::qemu_miss::QemuMissArgs),
    /// The matrix held against QEMU binaries, one per variant: postcopy
    /// races and the miss hang, beside the model's verdicts.
    QemuMatrix(crate::qemu_matrix::QemuMatrixArgs),
    /// Find the interleaving (and variant) that produces a QEMU log, or rule variants out.
    Explain(crate::explain::ExplainArgs),
    /// Every variant on every combination of the scenario flags: which design holds everywhere.
    Scenarios(crate::scenarios::ScenariosArgs),
    /// Serve stateright's Explorer web UI on a loopback address.
    Explore {
        /// Variant.
        #[arg(long)]
        variant: Variant,
        /// Address to listen on, HOST:PORT (a loopback address or a name
        /// that resolves only to loopback, e.g. localhost:3000; port 0 picks one).
        #[arg(long, default_value = EXPLORE_ADDR)]
        addr: String,
        #[command(flatten)]
        scenario: ScenarioArgs,
    },
}

/// Where `explore` listens unless told otherwise.
const EXPLORE_ADDR: &str = "127.0.0.1:3000";

/// The address `explore` serves on: `addr` resolved, every address it
/// names a loopback one, and one of them free (bound here and released, so
/// that a port in use is a one-line error rather than a panic inside the
/// Explorer; with port 0 the port the system picked).
fn explore_addr(addr: &str) -> Result<SocketAddr> {
    let resolved: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .with_context(|| format!("--addr {addr}: not a HOST:PORT that resolves"))?
        .collect();
    if resolved.is_empty() {
        bail!("--addr {addr}: the name resolves to no address");
    }
    if let Some(a) = resolved.iter().find(|a| !a.ip().is_loopback()) {
        bail!("the Explorer serves on loopback addresses only; --addr {addr} names {}", a.ip());
    }
    let mut last_err = None;
    for a in &resolved {
        match TcpListener::bind(a) {
            Ok(l) => return Ok(l.local_addr()?),
            Err(e) => last_err = Some(e),
        }
    }
    let e = last_err.expect("at least one address was tried");
    bail!("cannot listen on {addr}: {e}")
}

/// The scenario knobs, one flag each.
#[derive(Args, Debug, Clone)]
pub struct ScenarioArgs {
    /// IOTLB updates device start sends (one per virtqueue).
    #[arg(long, default_value_t = 2,
          value_parser = clap::value_parser!(u8).range(0..=i64::from(MAX_VIRTQUEUES)))]
    virtqueues: u8,
    /// Leave the device-start thread out.
    #[arg(long)]
    no_device_start: bool,
    /// Device start runs without the BQL (e.g. a path outside the main loop).
    #[arg(long)]
    device_start_without_bql: bool,
    /// Leave postcopy end (POSTCOPY_END) out.
    #[arg(long)]
    no_postcopy_end: bool,
    /// BACKEND_IOTLB_MSG misses the back-end sends.
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u8).range(0..=i64::from(MAX_BACKEND_MISSES)))]
    misses: u8,
    /// Misses carry NEED_REPLY and the back-end waits for the answer.
    #[arg(long)]
    miss_need_reply: bool,
    /// Reads may return fewer bytes than asked, ending at any 4-byte step
    /// (read_all loops): a peer that delivers a message in pieces.
    #[arg(long, conflicts_with = "queued_reads")]
    short_reads: bool,
    /// Reads return what is queued, up to what they ask (read_all loops):
    /// Linux's Unix sockets with a back-end that writes each message at once.
    #[arg(long)]
    queued_reads: bool,
    /// The back-end writes a reply's header, then its payload, in two
    /// writes (libvhost-user's vu_message_write).
    #[arg(long)]
    split_replies: bool,
    /// QEMU quits at the end: device stop sends GET_VRING_BASE per
    /// virtqueue, under the BQL, once the other threads are done.
    #[arg(long)]
    device_stop: bool,
}

impl ScenarioArgs {
    /// The scenario these flags describe, validated.
    pub fn scenario(&self) -> Result<Scenario> {
        let s = Scenario {
            device_start: !self.no_device_start,
            virtqueues: self.virtqueues,
            device_start_holds_bql: !self.device_start_without_bql,
            postcopy_end: !self.no_postcopy_end,
            backend_misses: self.misses,
            miss_need_reply: self.miss_need_reply,
            short_reads: self.short_reads,
            queued_reads: self.queued_reads,
            split_replies: self.split_replies,
            device_stop: self.device_stop,
        };
        s.validate().context("invalid scenario")?;
        Ok(s)
    }
}

impl CheckArgs {
    fn options(&self) -> CheckOptions {
        CheckOptions {
            threads: usize::from(self.threads),
            progress: false,
            max_states: Some(self.bound.max_states as usize),
            reduce: !self.full,
            shortest: true,
        }
    }
}

/// The one-line refusal of a check stopped at the state bound.
fn too_large(v: &Verdict) -> anyhow::Error {
    anyhow::anyhow!(
        "scenario too large: {} stopped at the state bound ({} states generated, {} unique; \
         --max-states {}, the default of {} keeps a search under {}); use fewer virtqueues or \
         misses, or raise --max-states",
        v.variant,
        v.generated_states,
        v.unique_states,
        v.max_states.unwrap_or(0),
        verdict::DEFAULT_MAX_STATES,
        verdict::MEMORY_BUDGET
    )
}

/// How a check ended, for the commands that run one.
enum Checked {
    Done(Verdict),
    Interrupted(verdict::Interrupted),
}

/// Checks one variant with a progress meter, stopping at SIGINT; refuses a
/// check that reached the state bound.
fn check_one(
    variant: Variant,
    scenario: Scenario,
    args: &CheckArgs,
    interrupt: &Interrupt,
) -> Result<Checked> {
    let mut meter = Meter::new(None);
    let result = verdict::check_with(variant, scenario, &args.options(), |p| {
        meter.update(None, || verdict::describe_progress(p));
        if interrupt.raised() {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    meter.finish();
    match result {
        Ok(v) if !v.complete => Err(too_large(&v)),
        Ok(v) => Ok(Checked::Done(v)),
        Err(i) => Ok(Checked::Interrupted(i)),
    }
}

/// What an interrupted check had found, in words.
fn interrupted_text(i: &verdict::Interrupted) -> String {
    let phase = match i.phase {
        verdict::Phase::Checking => "while checking",
        verdict::Phase::Counterexamples => {
            "after the check, while finding shortest counterexamples"
        }
    };
    let failing = if i.failing.is_empty() {
        "none so far".to_string()
    } else {
        format!("\"{}\"", i.failing.join("\", \""))
    };
    format!(
        "interrupted {phase}: {} after {} unique states, depth {}, {:.1} s; no ✓ is claimed.\n\
         properties with a violation found: {failing}\n",
        i.variant, i.unique_states, i.max_depth, i.seconds
    )
}

/// Prints an interrupted check's partial report and gives the exit code.
fn report_interrupted(
    json: bool,
    i: &verdict::Interrupted,
    done: &[Verdict],
    scenario: &Scenario,
) -> Result<ExitCode> {
    if json {
        let doc = serde_json::json!({ "finished": done, "interrupted": i });
        emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
    } else {
        if !done.is_empty() {
            emit(&output::matrix(scenario, done))?;
            emit("\n")?;
        }
        emit(&interrupted_text(i))?;
    }
    Ok(ExitCode::from(INTERRUPTED_EXIT))
}

/// Runs the command line; the exit code is 0 when the command did what it was asked
/// (a ✗ in the matrix is a finding, not a failure), 2 on a refusal, 130 after Ctrl-C.
pub fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        None => {
            let scenario = cli.scenario.scenario()?;
            let interrupt = Interrupt::install()?;
            let mut rows = Vec::new();
            for variant in Variant::all() {
                eprintln!("checking {variant} ...");
                match check_one(variant, scenario, &cli.check, &interrupt)? {
                    Checked::Done(v) => rows.push(v),
                    Checked::Interrupted(i) => {
                        return report_interrupted(cli.check.json, &i, &rows, &scenario)
                    }
                }
            }
            if cli.check.json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?;
            } else {
                emit(&output::matrix(&scenario, &rows))?;
                emit(&output::counterexamples(&rows))?;
            }
        }
        Some(Command::Check { variant, scenario, check }) => {
            let scenario = scenario.scenario()?;
            let interrupt = Interrupt::install()?;
            let row = match check_one(variant, scenario, &check, &interrupt)? {
                Checked::Done(v) => v,
                Checked::Interrupted(i) => {
                    return report_interrupted(check.json, &i, &[], &scenario)
                }
            };
            if check.json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&row)?))?;
            } else {
                let rows = [row];
                emit(&output::matrix(&scenario, &rows))?;
                emit(&output::counterexamples(&rows))?;
            }
        }
        Some(Command::Trace { variant, property, explore_link, scenario, check }) => {
            let scenario = scenario.scenario()?;
            let by_column = |p: &Prop| output::column(p.title()) == property;
            let Some(name) = Prop::find(&property)
                .or_else(|| Prop::ALL.into_iter().find(by_column))
                .map(Prop::name)
            else {
                let known: Vec<String> = PROPERTIES
                    .iter()
                    .map(|(n, t)| format!("'{n}' ({})", output::column(t)))
                    .collect();
                bail!("unknown property '{property}'; known: {}", known.join(", "));
            };
            let interrupt = Interrupt::install()?;
            let row = match check_one(variant, scenario, &check, &interrupt)? {
                Checked::Done(v) => v,
                Checked::Interrupted(i) => {
                    return report_interrupted(check.json, &i, &[], &scenario)
                }
            };
            let p = row.property(name).expect("every property has a verdict");
            let model = ReplyRace::new(variant, scenario);
            let link = p.counterexample.as_deref().filter(|_| explore_link).map(|a| {
                // With the reports already due, as the diagram shows the path.
                let due = model::trace::pending_reports(&model::trace::final_state(&model, a));
                let fragment = model::explorer::explore_fragment(&model, &[a, &due[..]].concat())
                    .expect("a counterexample is a path of the model");
                format!("http://{EXPLORE_ADDR}/{fragment}")
            });
            if check.json {
                let steps = p.counterexample.as_deref().map(|a| model::trace::steps(&model, a));
                let mut doc = serde_json::json!({
                    "variant": variant.to_string(),
                    "scenario": scenario,
                    "property": name,
                    "holds": p.holds,
                    "actions": p.counterexample,
                    "steps": steps,
                });
                if let Some(link) = &link {
                    doc["explore_link"] = serde_json::json!(link);
                }
                emit(&format!("{}\n", serde_json::to_string_pretty(&doc)?))?;
            } else {
                match &p.counterexample {
                    None if row.reduced => emit(&format!(
                        "{variant}: \"{name}\" holds in every reachable state (the \
                         partial-order-reduced search visited {}; --full visits every one).\n",
                        row.unique_states
                    ))?,
                    None => emit(&format!(
                        "{variant}: \"{name}\" holds in all {} reachable states.\n",
                        row.unique_states
                    ))?,
                    Some(actions) => emit(&format!(
                        "{variant}: \"{name}\" fails; {}:\n\n{}",
                        if p.shortest {
                            "shortest counterexample".to_string()
                        } else {
                            format!(
                                "counterexample ({} steps{})",
                                actions.len(),
                                output::NOT_SHORTEST
                            )
                        },
                        model::trace::render(&model, actions)
                    ))?,
                }
                if let Some(link) = &link {
                    let flags = scenario.flags().join(" ");
                    let sep = if flags.is_empty() { "" } else { " " };
                    emit(&format!(
                        "\nIn the Explorer: start `vhost-race explore --variant {variant}{sep}{flags}`, then open\n{link}\n"
                    ))?;
                }
            }
        }
        Some(Command::Run {
            variant,
            iterations,
            widen_race_window,
            stop_at_first_failure,
            hang_timeout_ms,
            scenario,
            json,
        }) => {
            let scenario = scenario.scenario()?;
            if scenario.device_stop {
                bail!(
                    "--device-stop: the reference's threads have no device stop (the model has it, \
                     and `qemu-migrate` runs it on QEMU's binary)"
                );
            }
            let hang_timeout = std::time::Duration::from_millis(hang_timeout_ms);
            warn_short_hang_timeout(&scenario, hang_timeout);
            let opts = reference::run::RunOptions {
                widen_race_window,
                hang_timeout,
                stop_at_first_failure,
            };
            let interrupt = Interrupt::install()?;
            eprintln!("running {variant} {iterations} times over a real socketpair ...");
            let mut meter = Meter::new(Some(iterations));
            let report = reference::run::run_observed(variant, &scenario, iterations, opts, |t| {
                meter.update(Some(t.done), || {
                    format!(
                        "{variant}: {}/{} runs, {} with errors, {} hangs",
                        t.done, t.of, t.runs_with_errors, t.hangs
                    )
                });
                if interrupt.raised() {
                    ControlFlow::Break(())
                } else {
                    ControlFlow::Continue(())
                }
            });
            meter.finish();
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                emit(&report.to_string())?;
            }
            if report.interrupted {
                return Ok(ExitCode::from(INTERRUPTED_EXIT));
            }
        }
        Some(Command::Backend(args)) => return crate::backend_cmd::run(args),
        Some(Command::QemuReplay(args)) => return crate::qemu_replay::run(args),
        Some(Command::QemuMigrate(args)) => return crate::qemu_migrate::run(args),
        Some(Command::QemuMiss(args)) => return crate::qemu_miss::run(args),
        Some(Command::QemuMatrix(args)) => return crate::qemu_matrix::run(args),
        Some(Command::Explain(args)) => return crate::explain::run(args),
        Some(Command::Scenarios(args)) => return crate::scenarios::run(args),
        Some(Command::Explore { variant, addr, scenario }) => {
            let scenario = scenario.scenario()?;
            let addr = explore_addr(&addr)?;
            use stateright::Model as _;
            let checker = ReplyRace::new(variant, scenario).checker();
            let server = std::thread::spawn(move || {
                checker.serve(addr);
            });
            // Say where only once the server accepts; if another process
            // took the port since `explore_addr` freed it, stateright's
            // server thread ends (with its panic message) and this is the error.
            while TcpStream::connect(addr).is_err() {
                if server.is_finished() {
                    bail!("cannot listen on {addr}: the port was taken by another process");
                }
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            eprintln!(
                "Explorer for {variant} ({}) on http://{addr}/ (Ctrl-C to stop)",
                scenario.describe()
            );
            if server.join().is_err() {
                bail!("the Explorer's server stopped");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Healthy runs sampled before `run` to judge `--hang-timeout-ms`.
const HEALTHY_SAMPLES: u32 = 20;

/// Warns on standard error when the hang timeout is below the slowest of
/// [`HEALTHY_SAMPLES`] healthy runs of the scenario on this machine (then
/// runs that are merely slow are counted as hangs).
fn warn_short_hang_timeout(scenario: &Scenario, hang_timeout: Duration) {
    let healthy = reference::run::healthy_run_time(scenario, HEALTHY_SAMPLES);
    if let Some(w) = healthy.and_then(|h| hang_timeout_warning(hang_timeout, h)) {
        eprintln!("{w}");
    }
}

/// The warning for a hang timeout below a healthy run's `healthy` time, if it is.
fn hang_timeout_warning(hang_timeout: Duration, healthy: Duration) -> Option<String> {
    (hang_timeout < healthy).then(|| {
        format!(
            "warning: --hang-timeout-ms {} is below what a healthy run of this scenario \
             takes here (the slowest of {HEALTHY_SAMPLES} mutex runs: {:.1} ms); \
             runs that are only slow will be counted as hangs",
            hang_timeout.as_millis(),
            healthy.as_secs_f64() * 1e3
        )
    })
}

/// Writes to standard output; a reader that went away (`| head`) ends the
/// output quietly instead of panicking.
pub fn emit(text: &str) -> Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        r => Ok(r?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scenario_flags_are_spelled_as_everything_prints_them() {
        use clap::{Args as _, CommandFactory as _};
        let longs = |c: &clap::Command| -> Vec<String> {
            c.get_arguments().filter_map(|a| a.get_long()).map(|l| format!("--{l}")).collect()
        };
        let own = longs(&ScenarioArgs::augment_args(clap::Command::new("scenario")));
        assert_eq!(own, reference::scenario::flag::ALL, "in --help order");
        let cli = Cli::command();
        let check = cli.find_subcommand("check").expect("a check subcommand");
        for f in reference::scenario::flag::ALL {
            assert!(longs(&cli).iter().any(|l| l == f), "{f} on the matrix");
            assert!(longs(check).iter().any(|l| l == f), "{f} on check");
        }
        let s =
            Scenario { virtqueues: 8, short_reads: true, device_stop: true, ..Scenario::default() };
        assert_eq!(s.flags().join(" "), "--virtqueues 8 --short-reads --device-stop");
        assert!(Scenario::default().flags().is_empty());
    }

    #[test]
    fn a_hang_timeout_below_a_healthy_run_is_warned_about_and_one_above_is_not() {
        let healthy = Duration::from_micros(5_500);
        let w = hang_timeout_warning(Duration::from_millis(1), healthy).expect("a warning");
        assert!(w.starts_with("warning: --hang-timeout-ms 1 is below"), "{w}");
        assert!(w.contains("20 mutex runs: 5.5 ms"), "{w}");
        assert_eq!(hang_timeout_warning(Duration::from_millis(2000), healthy), None);
    }

    #[test]
    fn a_healthy_run_is_measured_on_this_machine() {
        let s = Scenario::default();
        let t = reference::run::healthy_run_time(&s, 3).expect("a socketpair can be set up");
        assert!(t > Duration::ZERO);
    }
}
