//! Ctrl-C on long work: `run`, `check` and `explain` are started as a user
//! would start them, sent SIGINT once they report progress, and must print
//! the partial report of what they finished and exit with 130.
//!
//! Leaves out: the progress bar on a terminal (stderr is a pipe here, so
//! progress comes as plain lines) and a second SIGINT (which ends the
//! process at once).

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// Starts `vhost-race args`, waits until a stderr line contains `ready`,
/// sends SIGINT, and returns (exit code, stdout, all of stderr).
fn interrupt_when(args: &[&str], ready: &str) -> (Option<i32>, String, String) {
    let mut child: Child = Command::new(env!("CARGO_BIN_EXE_vhost-race"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        if err.read_line(&mut line).unwrap() == 0 {
            panic!("{args:?} ended before {ready:?}: {seen}");
        }
        seen.push_str(&line);
        if line.contains(ready) {
            break;
        }
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    err.read_to_string(&mut seen).unwrap();
    let code = child.wait().unwrap().code();
    (code, out, seen)
}

#[test]
fn an_interrupted_run_reports_the_iterations_it_finished() {
    let (code, out, err) = interrupt_when(
        &["run", "--variant", "mutex", "--iterations", "10000000"],
        "runs, 0 with errors",
    );
    assert_eq!(code, Some(130), "{err}");
    assert!(out.contains("interrupted: "), "{out}");
    assert!(out.contains(" of 10000000 iterations completed"), "{out}");
    assert!(out.contains("runs with errors: 0"), "{out}");
}

#[test]
fn an_interrupted_check_reports_how_far_it_got() {
    let (code, out, err) = interrupt_when(
        &["check", "--variant", "qemu-9.1", "--virtqueues", "16", "--misses", "8", "--short-reads"],
        "qemu-9.1: checking, ",
    );
    assert_eq!(code, Some(130), "{err}");
    assert!(out.starts_with("interrupted while checking: qemu-9.1 after "), "{out}");
    assert!(out.contains("no ✓ is claimed"), "{out}");
    assert!(out.contains("properties with a violation found: "), "{out}");
}

#[test]
fn an_interrupted_matrix_prints_the_rows_it_finished() {
    let (code, out, err) = interrupt_when(
        &["--virtqueues", "16", "--misses", "8", "--short-reads", "--json"],
        "qemu-9.1: checking, ",
    );
    assert_eq!(code, Some(130), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["finished"], serde_json::json!([]));
    assert_eq!(v["interrupted"]["variant"], "qemu-9.1");
}

#[test]
fn an_interrupted_explain_reports_the_variants_it_finished() {
    let log = std::env::temp_dir().join(format!("vhost-race-interrupt-{}", std::process::id()));
    // Ten failed IOTLB calls: more than fail-start lets fail within the
    // bound (one update and 8 misses), so qemu-9.1+fail-start is answered
    // by counting at once; qemu-9.1 then searches many large scenarios.
    let line = "qemu-kvm: vhost_device_iotlb_miss: 4100,4100: Fail to update device iotlb\n";
    std::fs::write(&log, line.repeat(10)).unwrap();
    let (code, out, err) = interrupt_when(
        &[
            "explain",
            log.to_str().unwrap(),
            "--variant",
            "qemu-9.1+fail-start",
            "--variant",
            "qemu-9.1",
            "--short-reads",
            "--device-start-without-bql",
            "--max-virtqueues",
            "16",
            "--max-misses",
            "8",
        ],
        "explaining with qemu-9.1 ...",
    );
    let _ = std::fs::remove_file(&log);
    assert_eq!(code, Some(130), "{err}");
    assert!(out.contains("=== qemu-9.1+fail-start: not searched"), "{out}");
    assert!(
        out.contains("interrupted while explaining with qemu-9.1: 1 of 2 variants finished"),
        "{out}"
    );
}
