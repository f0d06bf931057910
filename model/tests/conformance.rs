//! Conformance: the reference on a real Unix socketpair does only what the
//! model says it can. Every distinct log sequence that `reference::run`
//! records in its runs of a variant must be the log of a whole run of the
//! model of the same variant and scenario, found by `explain`.
//!
//! The model is taken with queued reads when the default does not give the
//! log: a real `recv` returns what is queued, up to what it asks, so a
//! thread that asks for more than the stream holds (a header read that
//! starts 8 bytes before a reply's end) gets less, and QEMU's `read_all`
//! then loops, as the model does with `--queued-reads` (Linux's Unix
//! sockets; `--short-reads` also lets a read end anywhere, which a socket
//! fed whole messages never does). The test prints how many sequences need
//! it (none in 60 000 runs since a failed check logs in a step of its own;
//! CONFORMANCE.md has the history).
//!
//! Leaves out: how often each sequence occurs (the model has no
//! probabilities) and scenarios other than the default (the run takes the
//! same flags; the default is where the matrix is pinned).

use model::explain::{explain, parse_log, Limits, MatchKind};
use reference::run::run;
use reference::scenario::{LockPolicy, Scenario, Variant};

/// Runs per variant: enough for qemu-9.1 to log dozens of distinct
/// sequences on 2 cores (about one run in four logs an error). A deeper
/// sweep sets `VHOST_RACE_CONFORMANCE_RUNS`.
const ITERATIONS: u64 = 1_000;

fn iterations() -> u64 {
    match std::env::var("VHOST_RACE_CONFORMANCE_RUNS") {
        Ok(v) => v.parse().unwrap_or_else(|_| {
            panic!("VHOST_RACE_CONFORMANCE_RUNS must be a number of runs, got {v:?}")
        }),
        Err(_) => ITERATIONS,
    }
}

/// Runs `variant` on `scenario` over real sockets and checks each
/// distinct log against the model; returns (distinct non-empty sequences,
/// those that need queued reads).
fn socket_logs_are_model_runs(variant: Variant, scenario: Scenario) -> (usize, usize) {
    let report = run(variant, &scenario, iterations(), false);
    assert_eq!(report.setup_failures, 0, "{variant}: set-up failed");
    assert_eq!(report.backend_errors, 0, "{variant}: the back-end saw an error");
    let with_queued_reads = Scenario { queued_reads: true, ..scenario };
    let (mut logged, mut needs_queued_reads) = (0, 0);
    for seq in &report.sequences {
        let log = parse_log(&seq.lines.join("\n"));
        assert_eq!(log.lines.len(), seq.lines.len(), "every line the reference logs parses");
        let whole_run = |s: Scenario| {
            let e = explain(&log.lines, variant, &[s], Limits::default());
            e.found.is_some_and(|f| f.kind == MatchKind::Whole)
        };
        // Queued reads only add paths (a read may still wait until all it
        // asks for is there, by being scheduled later), so the model without
        // them is asked first and the other only if needed.
        if !whole_run(scenario) {
            assert!(
                whole_run(with_queued_reads),
                "{variant}: the socket logged a sequence ({} runs) that is no whole run of \
                 the model:\n{}",
                seq.count,
                seq.lines.join("\n")
            );
            needs_queued_reads += 1;
        }
        if !seq.lines.is_empty() {
            logged += 1;
        }
    }
    eprintln!(
        "{variant}: {} runs, {} with errors, {} hangs, {logged} distinct error logs, \
         {needs_queued_reads} of them need queued reads; all are model runs",
        report.iterations, report.runs_with_errors, report.hangs
    );
    (logged, needs_queued_reads)
}

/// An unlocked variant's socket logs are model runs, and there were some:
/// a sweep in which the race never showed would compare nothing.
fn unlocked_socket_logs_are_model_runs(name: &str, scenario: Scenario) {
    let (logged, _) = socket_logs_are_model_runs(name.parse().unwrap(), scenario);
    assert!(
        logged > 0,
        "no error in {} unlocked runs: the check saw nothing to compare",
        iterations()
    );
}

#[test]
fn qemu_9_1_socket_logs_are_runs_of_the_model() {
    unlocked_socket_logs_are_model_runs("qemu-9.1", Scenario::default());
}

#[test]
fn qemu_9_1_fail_start_socket_logs_are_runs_of_the_model() {
    unlocked_socket_logs_are_model_runs("qemu-9.1+fail-start", Scenario::default());
}

/// A back-end that writes each reply's header and payload in two sends
/// (libvhost-user's way): every socket log is a run of the model with
/// `--split-replies` (and queued reads where needed).
#[test]
fn qemu_9_1_split_replies_socket_logs_are_runs_of_the_model() {
    let scenario = Scenario { split_replies: true, ..Scenario::default() };
    unlocked_socket_logs_are_model_runs("qemu-9.1", scenario);
}

/// The variants the matrix calls safe log nothing on the socket either (the
/// model's only whole-run log for them is the empty one). The variants run
/// side by side, each on its own sockets and threads (a run mostly waits on
/// socket wake-ups).
#[test]
fn locked_variants_log_nothing_on_the_socket_as_the_model_says() {
    let variants: Vec<Variant> =
        Variant::all().into_iter().filter(|v| v.policy != LockPolicy::Qemu91).collect();
    let results: Vec<(Variant, std::thread::Result<(usize, usize)>)> = std::thread::scope(|s| {
        let runs: Vec<_> = variants
            .iter()
            .map(|&v| (v, s.spawn(move || socket_logs_are_model_runs(v, Scenario::default()))))
            .collect();
        runs.into_iter().map(|(v, h)| (v, h.join())).collect()
    });
    for (variant, result) in results {
        match result {
            Ok(counts) => assert_eq!(counts, (0, 0), "{variant}"),
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }
}
