//! The command line: subcommands, scenario flags shared by all of them, and
//! the dispatch to the model (check, trace, explore) and the reference (run,
//! backend).
//!
//! Leaves out: configuration files; every knob is a flag.

use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use model::verdict::{self, CheckOptions, Verdict};
use model::{ReplyRace, PROPERTIES};
use reference::scenario::{Scenario, Variant};

use crate::output;

/// Model-checks the vhost-user reply race between QEMU's device-start,
/// postcopy-listen and main-loop threads sharing one socket.
#[derive(Parser, Debug)]
#[command(name = "vhost-race", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Scenario of the default matrix run.
    #[command(flatten)]
    scenario: ScenarioArgs,
    /// Print JSON instead of text (for scripts).
    #[arg(long, global = true)]
    json: bool,
    /// Checker threads (1 gives shortest, reproducible counterexamples).
    #[arg(long, global = true, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
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
        /// Milliseconds to wait for the threads before calling a run a hang.
        #[arg(long, default_value_t = 2000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
        hang_timeout_ms: u64,
        #[command(flatten)]
        scenario: ScenarioArgs,
    },
    /// Run the reference vhost-user back-end as its own process on a socket path.
    Backend {
        /// Unix socket path to listen on (one front-end is served).
        #[arg(long)]
        socket: std::path::PathBuf,
        /// BACKEND_IOTLB_MSG misses to send after POSTCOPY_LISTEN.
        #[arg(long, default_value_t = 0)]
        misses: u8,
        /// Misses carry NEED_REPLY.
        #[arg(long)]
        miss_need_reply: bool,
    },
    /// Find the interleaving (and variant) that produces a QEMU log, or rule variants out.
    Explain(crate::explain::ExplainArgs),
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
    #[arg(long, default_value_t = 2)]
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
    #[arg(long, default_value_t = 1)]
    misses: u8,
    /// Misses carry NEED_REPLY and the back-end waits for the answer.
    #[arg(long)]
    miss_need_reply: bool,
    /// Reads may return fewer bytes than asked (read_all loops).
    #[arg(long)]
    short_reads: bool,
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
        };
        s.validate().context("invalid scenario")?;
        Ok(s)
    }
}

/// Generated states (duplicates included) past which a check is refused as too large for memory
/// (measured: ~1.3 KiB per unique state, ~2.5 generated per unique: ~16 GiB at the bound).
const MAX_STATES: usize = 30_000_000;

fn options(cli_threads: u16, progress: bool) -> CheckOptions {
    CheckOptions { threads: cli_threads as usize, progress, max_states: Some(MAX_STATES) }
}

fn checked(v: Verdict) -> Result<Verdict> {
    if !v.complete {
        bail!(
            "scenario too large: {} stopped after {} unique states (the bound for this machine's memory); \
             use fewer virtqueues or misses",
            v.variant,
            v.unique_states
        );
    }
    Ok(v)
}

/// Runs the command line; the exit code is 0 when the command did what it was asked
/// (a ✗ in the matrix is a finding, not a failure).
pub fn run(cli: Cli) -> Result<ExitCode> {
    let json = cli.json;
    match cli.command {
        None => {
            let scenario = cli.scenario.scenario()?;
            let mut rows = Vec::new();
            for variant in Variant::all() {
                eprintln!("checking {variant} ...");
                rows.push(checked(verdict::check(variant, scenario, &options(cli.threads, true)))?);
            }
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?;
            } else {
                emit(&output::matrix(&scenario, &rows))?;
                emit(&output::counterexamples(&rows))?;
            }
        }
        Some(Command::Check { variant, scenario }) => {
            let scenario = scenario.scenario()?;
            let row = checked(verdict::check(variant, scenario, &options(cli.threads, true)))?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&row)?))?;
            } else {
                let rows = [row];
                emit(&output::matrix(&scenario, &rows))?;
                emit(&output::counterexamples(&rows))?;
            }
        }
        Some(Command::Trace { variant, property, explore_link, scenario }) => {
            let scenario = scenario.scenario()?;
            let Some(&(name, _)) =
                PROPERTIES.iter().find(|(name, title)| *name == property || *title == property)
            else {
                let known: Vec<String> =
                    PROPERTIES.iter().map(|(n, t)| format!("'{n}' ({t})")).collect();
                bail!("unknown property '{property}'; known: {}", known.join(", "));
            };
            let row = checked(verdict::check(variant, scenario, &options(cli.threads, true)))?;
            let p = row.property(name).expect("every property has a verdict");
            let model = ReplyRace::new(variant, scenario);
            let link = p.counterexample.as_deref().filter(|_| explore_link).map(|a| {
                // With the reports already due, as the diagram shows the path.
                let due = model::trace::pending_reports(&model::trace::final_state(&model, a));
                let fragment = model::explorer::explore_fragment(&model, &[a, &due[..]].concat())
                    .expect("a counterexample is a path of the model");
                format!("http://{EXPLORE_ADDR}/{fragment}")
            });
            if json {
                let steps = p.counterexample.as_deref().map(|a| model::trace::steps(&model, a));
                let mut doc = serde_json::json!({
                    "variant": variant.to_string(),
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
                    None => emit(&format!(
                        "{variant}: \"{name}\" holds in all {} reachable states.\n",
                        row.unique_states
                    ))?,
                    Some(actions) => emit(&format!(
                        "{variant}: \"{name}\" fails; shortest counterexample:\n\n{}",
                        model::trace::render(&model, actions)
                    ))?,
                }
                if let Some(link) = &link {
                    let flags = model::explorer::scenario_flags(&scenario);
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
        }) => {
            let scenario = scenario.scenario()?;
            let opts = reference::run::RunOptions {
                widen_race_window,
                hang_timeout: std::time::Duration::from_millis(hang_timeout_ms),
                stop_at_first_failure,
            };
            eprintln!("running {variant} {iterations} times over a real socketpair ...");
            let report = reference::run::run_with(variant, &scenario, iterations, opts);
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                emit(&report.to_string())?;
            }
        }
        Some(Command::Backend { socket, misses, miss_need_reply }) => {
            let cfg =
                reference::backend::BackendConfig { map_memory: true, misses, miss_need_reply };
            eprintln!("vhost-user back-end listening on {}", socket.display());
            let served = reference::backend::serve_socket_path(&socket, cfg)
                .with_context(|| format!("back-end on {}", socket.display()))?;
            eprintln!("front-end closed the connection after {served} requests");
        }
        Some(Command::Explain(args)) => return crate::explain::run(args, json),
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
                model::explorer::describe_scenario(&scenario)
            );
            if server.join().is_err() {
                bail!("the Explorer's server stopped");
            }
        }
    }
    Ok(ExitCode::SUCCESS)
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
