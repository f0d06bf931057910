//! The CLI as a user meets it: the default matrix, JSON, traces, and bad
//! arguments (one-line error, exit code 2, never a panic).

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
    assert!(row("mutex").contains(" 288 "));
    assert!(out.contains("=== qemu-9.1: counterexample to"));
    assert!(out.contains(
        "qemu-kvm: vhost_user_read_header: 4100,4133: Failed to read msg header. Flags 0x0 instead of 0x5."
    ));
    assert!(stderr(&o).contains("checking qemu-10.2+fail-start"), "progress goes to stderr");
}

#[test]
fn json_check_is_machine_readable() {
    let o = vhost_race(&["--json", "check", "--variant", "mutex"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["unique_states"], 288);
    assert_eq!(v["complete"], true);
    assert!(v["properties"].as_array().unwrap().iter().all(|p| p["holds"] == true));
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
    let o = vhost_race(&["trace", "--variant", "qemu-10.2", "--property", "reply"]);
    assert!(o.status.success());
    assert!(stdout(&o).contains("holds in all 221 reachable states"));
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
    assert_refused(&["check", "--variant", "mutex", "--virtqueues", "17"], "too large");
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
    let o = vhost_race(&["--json", "run", "--variant", "mutex", "--iterations", "300"]);
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
