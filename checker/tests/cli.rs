//! The CLI as a user meets it: the default matrix, JSON, traces, and bad
//! arguments (one-line error, exit code 2, never a panic).

use reference::scenario::{Scenario, ScenarioError};
use std::process::{Command, Output};

fn vhost_race(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vhost-race")).args(args).output().expect("binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn no_arguments_prints_the_matrix_and_counterexamples() {
    let o = vhost_race(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    let row = |v: &str| out.lines().find(|l| l.split_whitespace().next() == Some(v)).unwrap();
    assert!(row("qemu-9.1").contains('✗'));
    assert!(!row("mutex").contains('✗'));
    assert!(row("mutex").contains(" 136 "), "the reduced search's states");
    assert!(out.contains("=== qemu-9.1: counterexample to"));
    assert!(out.contains(
        "qemu-kvm: vhost_user_read_header: 4100,4133: Failed to read msg header. Flags 0x0 instead of 0x5."
    ));
    assert!(stderr(&o).contains("checking qemu-10.2+fail-start"), "progress goes to stderr");
}

#[test]
fn json_check_is_machine_readable() {
    for (full, states) in [(false, 136), (true, 288)] {
        let args = ["check", "--variant", "mutex", "--json", "--full"];
        let o = vhost_race(&args[..if full { 5 } else { 4 }]);
        assert!(o.status.success(), "{}", stderr(&o));
        let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
        assert_eq!(v["unique_states"], states);
        assert_eq!(v["reduced"], !full);
        assert_eq!(v["complete"], true);
        assert!(v["properties"].as_array().unwrap().iter().all(|p| p["holds"] == true));
    }
}

#[test]
fn trace_by_column_title_shows_the_deadlock_with_the_mutex() {
    let o =
        vhost_race(&["trace", "--variant", "mutex", "--property", "deadlock", "--miss-need-reply"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("stuck: nothing can move"));
    assert!(out.contains("back-end: waits for the answer to its miss on the back-end channel"));
}

#[test]
fn a_property_that_holds_says_so() {
    let o = vhost_race(&["trace", "--variant", "qemu-10.2", "--property", "reply", "--full"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("holds in all 221 reachable states"));
    let o = vhost_race(&["trace", "--variant", "qemu-10.2", "--property", "reply"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains(
        "holds in every reachable state (the partial-order-reduced search visited 102; \
         --full visits every one)"
    ));
}

fn assert_refused(args: &[&str], needle: &str) {
    let o = vhost_race(args);
    assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains(needle), "{args:?}: {err}");
    assert!(!err.contains("panicked"), "{args:?}: {err}");
}

#[test]
fn bad_arguments_get_a_clear_error_and_exit_2() {
    assert_refused(&["check", "--variant", "qemu-9.0"], "unknown variant 'qemu-9.0'");
    assert_refused(&["--virtqueues", "0"], "device start needs at least one virtqueue");
    assert_refused(&["check", "--variant", "mutex", "--virtqueues", "17"], "17 is not in 0..=16");
    assert_refused(&["check", "--variant", "mutex", "--misses", "300"], "misses");
    assert_refused(
        &["trace", "--variant", "mutex", "--property", "nope"],
        "unknown property 'nope'",
    );
    assert_refused(&["explore", "--variant", "mutex", "--addr", "192.0.2.1:3000"], "loopback");
    assert_refused(&["--threads", "0"], "threads");
    assert_refused(&["frobnicate"], "frobnicate");
}

#[test]
fn run_reproduces_the_race_on_a_real_socket_and_the_mutex_does_not() {
    let o = vhost_race(&[
        "run",
        "--variant",
        "qemu-9.1",
        "--iterations",
        "5000",
        "--stop-at-first-failure",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("qemu-kvm: "), "{}", stdout(&o));
    let o = vhost_race(&["run", "--variant", "mutex", "--iterations", "300", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["iterations"], 300);
    assert_eq!(v["runs_with_errors"], 0);
    assert_eq!(v["hangs"], 0);
}

#[test]
fn run_and_backend_refuse_bad_arguments() {
    assert_refused(&["run", "--variant", "mutex", "--iterations", "0"], "iterations");
    assert_refused(
        &["backend", "--socket", "/nonexistent-dir/x.sock"],
        "cannot bind /nonexistent-dir/x.sock: No such file or directory",
    );
}

/// The one line of a refusal: stderr holds exactly one line, starting with "error:".
fn one_line_refusal(o: &Output) -> String {
    assert_eq!(o.status.code(), Some(2), "{}", stderr(o));
    let err = stderr(o);
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "{err}");
    errors[0].to_string()
}

/// The number after `before` in `text`, e.g. the count in "(123 states generated".
fn number_after(text: &str, before: &str) -> usize {
    let rest =
        &text[text.find(before).unwrap_or_else(|| panic!("{before:?} in {text}")) + before.len()..];
    rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().unwrap()
}

#[test]
fn every_check_stops_at_the_state_bound_with_a_one_line_refusal() {
    let large = ["--virtqueues", "16", "--misses", "8", "--short-reads", "--max-states", "100000"];
    let runs: [Vec<&str>; 3] = [
        [&["check", "--variant", "qemu-9.1"][..], &large].concat(),
        [&["trace", "--variant", "qemu-9.1", "--property", "reply"][..], &large].concat(),
        large.to_vec(),
    ];
    for args in runs {
        let o = vhost_race(&args);
        let line = one_line_refusal(&o);
        assert!(line.contains("scenario too large: qemu-9.1 stopped at the state bound"), "{line}");
        assert!(line.contains("keeps a search under 1 GB"), "{line}");
        // The search looks at the bound after each state it expands (a
        // state has fewer than 100 moves).
        let generated = number_after(&line, "(");
        assert!((100_000..100_000 + 100).contains(&generated), "{args:?}: {line}");
        assert!(stdout(&o).is_empty(), "{args:?}: a refused check claims nothing");
    }
}

#[test]
fn virtqueue_and_miss_ranges_are_said_one_way() {
    for n in ["17", "100000"] {
        assert_refused(
            &["check", "--variant", "mutex", "--virtqueues", n],
            &format!("invalid value '{n}' for '--virtqueues <VIRTQUEUES>': {n} is not in 0..=16"),
        );
    }
    for n in ["9", "300"] {
        assert_refused(&["--misses", n], &format!("{n} is not in 0..=8"));
    }
}

/// `--short-reads` and `--queued-reads` are two models of one read: a
/// command given both is refused, and a scenario built with both (a trace
/// file, a library caller) fails validation.
#[test]
fn two_read_models_are_refused() {
    for cmd in ["check", "trace", "run", "explain"] {
        let mut args = vec![cmd, "--short-reads", "--queued-reads"];
        if cmd == "explain" {
            args.push("-");
        }
        assert_refused(&args, "'--short-reads' cannot be used with '--queued-reads'");
    }
    let both = Scenario { short_reads: true, queued_reads: true, ..Scenario::default() };
    assert_eq!(both.validate(), Err(ScenarioError::TwoReadModels));
}

#[test]
fn json_and_threads_are_taken_only_where_they_act() {
    assert_refused(&["run", "--variant", "mutex", "--threads", "2"], "--threads");
    assert_refused(&["backend", "--socket", "/tmp/x.sock", "--json"], "--json");
    assert_refused(&["explain", "-", "--threads", "2"], "--threads");
    assert_refused(&["--json", "check", "--variant", "mutex"], "cannot be used with");
    for (cmd, threads) in [("check", true), ("trace", true), ("run", false), ("backend", false)] {
        let help = stdout(&vhost_race(&[cmd, "--help"]));
        assert_eq!(help.contains("--threads"), threads, "{cmd}: {help}");
        assert_eq!(help.contains("--json"), cmd != "backend", "{cmd}: {help}");
    }
}

#[test]
fn every_json_output_spells_a_variant_as_the_cli_does() {
    let o = vhost_race(&["check", "--variant", "qemu-9.1+fail-start", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["variant"], "qemu-9.1+fail-start");
    let o = vhost_race(&["--json"]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let names: Vec<&str> =
        rows.as_array().unwrap().iter().map(|r| r["variant"].as_str().unwrap()).collect();
    assert_eq!(names[..2], ["qemu-9.1", "qemu-9.1+fail-start"]);
    let o =
        vhost_race(&["run", "--variant", "bql-listen+fail-start", "--iterations", "2", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["variant"], "bql-listen+fail-start");
    let o =
        vhost_race(&["trace", "--variant", "mutex+fail-start", "--property", "reply", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["variant"], "mutex+fail-start");
}

#[test]
fn the_deadlock_column_says_what_its_tick_means() {
    let o = vhost_race(&["check", "--variant", "mutex"]);
    let out = stdout(&o);
    let header = out.lines().find(|l| l.starts_with("variant")).unwrap();
    assert!(header.contains(" no deadlock "), "{header}");
    let o = vhost_race(&[
        "trace",
        "--variant",
        "mutex",
        "--property",
        "no deadlock",
        "--miss-need-reply",
    ]);
    assert!(stdout(&o).contains("\"no deadlock\" fails"), "{}", stderr(&o));
}

/// `scenarios` checks every flag combination: the reply queue is safe on
/// all 60, the mutex hangs exactly where a miss asks for a reply, and the
/// text table names the variant that is safe everywhere.
#[test]
fn scenarios_finds_the_reply_queue_safe_and_the_mutex_hanging_on_need_reply_misses() {
    let o = vhost_race(&["scenarios", "--variant", "reply-queue", "--variant", "mutex", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 60);
    for row in rows {
        let flags: Vec<&str> =
            row["flags"]["flags"].as_array().unwrap().iter().map(|f| f.as_str().unwrap()).collect();
        let cells = row["cells"].as_array().unwrap();
        assert_eq!(cells[0]["variant"], "reply-queue");
        assert_eq!(cells[0]["outcome"]["races"], false, "{flags:?}");
        assert_eq!(cells[0]["outcome"]["hangs"], false, "{flags:?}");
        assert_eq!(cells[1]["variant"], "mutex");
        assert_eq!(cells[1]["outcome"]["races"], false, "{flags:?}");
        let need_reply = flags.contains(&"--miss-need-reply");
        assert_eq!(cells[1]["outcome"]["hangs"], need_reply, "{flags:?}");
    }
    let text = vhost_race(&["scenarios", "--variant", "reply-queue", "--variant", "mutex"]);
    assert!(stdout(&text).contains("Safe on every scenario: reply-queue."), "{}", stdout(&text));
}

/// `qemu-matrix` refuses the reply queue, built or cached: no QEMU binary
/// implements it, and the refusal says where its evidence is instead.
#[test]
fn qemu_matrix_refuses_the_reply_queue_with_one_line() {
    for extra in [&[][..], &["--build"][..]] {
        let args =
            [&["qemu-matrix", "--cache", "/nonexistent", "--variant", "reply-queue"][..], extra]
                .concat();
        let o = vhost_race(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains("reply-queue is this project's design, not a QEMU patch"), "{err}");
    }
}
