//! `vhost-race explain` as a user meets it: the example logs explained or
//! ruled out per variant, JSON, and bad input (one-line error, exit code 2,
//! never a panic).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

fn vhost_race(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vhost-race")).args(args).output().expect("binary runs")
}

fn example(name: &str) -> String {
    let p: PathBuf = [env!("CARGO_MANIFEST_DIR"), "..", "examples", "logs", name].iter().collect();
    p.to_str().unwrap().to_string()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A temporary file with `text`, named after the test; removed on drop.
fn temp_log(name: &str, text: &str) -> TempLog {
    let p = std::env::temp_dir().join(format!("vhost-race-explain-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    TempLog(p.to_str().unwrap().to_string())
}

/// A log file's path; the file goes when this does.
struct TempLog(String);

impl std::ops::Deref for TempLog {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Drop for TempLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[test]
fn the_facts_example_is_explained_by_qemu_9_1_and_not_by_the_mutex() {
    let o = vhost_race(&["explain", &example("facts-example.log")]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("4 vhost-user lines, 0 unrelated lines ignored"));
    assert!(out.contains("=== qemu-9.1: explained, the whole run (27 steps)"));
    assert!(out.contains("thread ids: device start = 4100, postcopy listen = 4133"));
    assert!(out.contains("  line   3 <- step 18 (postcopy listen): qemu-kvm: process_message_reply: 4100,4133: Received unexpected msg type. Expected 30 received 22"));
    assert!(out.contains("=== mutex: not explainable within the bound"));
    assert!(out.contains("Explained by: qemu-9.1, qemu-9.1+fail-start\n"));
    assert!(out.contains("Searched: 2..=8 virtqueues, 1..=3 back-end misses, 21 scenarios"));
}

#[test]
fn json_names_each_variants_verdict_and_the_matched_steps() {
    let o = vhost_race(&[
        "explain",
        "--json",
        &example("noisy-timestamps.log"),
        "--variant",
        "qemu-9.1",
        "--variant",
        "mutex",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["unrelated_lines"], 5);
    assert_eq!(v["line_numbers"], serde_json::json!([3, 4, 5, 7]));
    let variants = v["variants"].as_array().unwrap();
    assert_eq!(variants.len(), 2);
    assert_eq!(variants[0]["verdict"], "explained");
    assert_eq!(variants[0]["found"]["kind"], "Whole");
    let steps: Vec<u64> = variants[0]["found"]["matched"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, [12, 13, 18, 19]);
    assert_eq!(variants[1]["verdict"], "not explainable");
    // The shape scripts read: variants as on the command line, threads by
    // name, each matched line as QEMU printed it, the path's steps.
    assert_eq!(variants[0]["variant"], "qemu-9.1");
    assert_eq!(variants[1]["variant"], "mutex");
    let first = &variants[0]["found"]["matched"][0];
    assert_eq!(first["thread"], "device start");
    assert!(first["line"].as_str().unwrap().ends_with("Expected 22 received 30"), "{first}");
    assert_eq!(variants[0]["found"]["tids"][0]["thread"], "device start");
    assert!(variants[0]["found"]["tids"][0]["tid"].is_u64());
    let path = variants[0]["steps"].as_array().unwrap();
    assert_eq!(path.len(), variants[0]["found"]["actions"].as_array().unwrap().len());
    assert!(variants[1]["steps"].is_null(), "no path where nothing was found");
    assert_eq!(v["vhost_user_lines"].as_array().unwrap().len(), 4);
}

#[test]
fn a_log_no_variant_produces_exits_zero_and_says_so() {
    let log = temp_log(
        "unexplainable",
        "qemu-kvm: vhost_device_iotlb_miss: 4100,4100: Fail to update device iotlb\n\
         qemu-kvm: vhost_user_postcopy_end: 4100,4100: Failed to receive reply to postcopy_end\n",
    );
    let o = vhost_race(&["explain", &log]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Explained by: none\n"));
}

#[test]
fn the_cascade_grows_the_scenario() {
    let o = vhost_race(&["explain", &example("qemu-9.1-cascade.log"), "--variant", "qemu-9.1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("18 scenarios with at least 5 IOTLB calls"));
    assert!(out.contains("=== qemu-9.1: explained, the whole run"));
    assert!(out.contains("scenario: device start: 4 IOTLB updates"));
}

#[test]
fn bad_input_gets_a_one_line_error() {
    let no_vhost = temp_log("noise", "qemu-kvm: terminating on signal 15\nhello\n");
    let cases: [(Vec<&str>, &str); 5] = [
        (vec!["explain", "/nonexistent/qemu.log"], "error: cannot read /nonexistent/qemu.log"),
        (vec!["explain", &no_vhost], "no vhost-user error line in the log"),
        (vec!["explain", &no_vhost, "--variant", "qemu-9.0"], "unknown variant 'qemu-9.0'"),
        (vec!["explain", &no_vhost, "--max-virtqueues", "99"], "--max-virtqueues"),
        (vec!["explain"], "<LOG>"),
    ];
    for (args, want) in cases {
        let o = vhost_race(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(stdout(&o).is_empty(), "{args:?}");
    }
}

/// `vhost-race explain -` with `input` on standard input.
fn explain_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_vhost-race"))
        .arg("explain")
        .arg("-")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("binary runs");
    let mut stdin = child.stdin.take().unwrap();
    // The binary may refuse before reading everything: a broken pipe is fine.
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

#[test]
fn a_dash_reads_the_log_from_standard_input() {
    let log = std::fs::read(example("facts-example.log")).unwrap();
    let o = explain_stdin(&["--variant", "qemu-9.1"], &log);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.starts_with("standard input: 4 vhost-user lines"), "{out}");
    assert!(out.contains("=== qemu-9.1: explained, the whole run (27 steps)"), "{out}");
}

#[test]
fn an_input_over_the_size_limit_is_refused_after_reading_at_most_the_limit() {
    // 64 MiB + 1 byte of a valid line repeated: every byte is read, none kept.
    let line = b"qemu-kvm: vhost_device_iotlb_miss: 4100,4100: Fail to update device iotlb\n";
    let big: Vec<u8> = line.iter().copied().cycle().take((64 << 20) + 1).collect();
    let o = explain_stdin(&["--variant", "mutex"], &big);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("error: -: larger than 64 MiB"), "{}", stderr(&o));
    assert!(stdout(&o).is_empty());
    let o = vhost_race(&["explain", "/dev/zero"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("error: /dev/zero: larger than 64 MiB"), "{}", stderr(&o));
}

#[test]
fn numbers_that_overflow_are_counted_and_shown_as_unparsed() {
    let log = temp_log(
        "overflow",
        "qemu-kvm: process_message_reply: 4100,4100: Received unexpected msg type. Expected 22 received 30\n\
         qemu-kvm: vhost_user_read_header: 4100,4133: Failed to read msg header. Flags 0xffffffffffffffff instead of 0x5.\n\
         hello\n",
    );
    let o = vhost_race(&["explain", &log, "--variant", "qemu-9.1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains(": 1 vhost-user line, 1 unrelated line ignored, 1 unparsed line\n"),
        "{out}"
    );
    assert!(out.contains("unparsed (a vhost-user message whose numbers or form do not fit): line 2: qemu-kvm: vhost_user_read_header: 4100,4133: Failed to read msg header. Flags 0xffffffffffffffff"), "{out}");
    let o = vhost_race(&["explain", &log, "--variant", "qemu-9.1", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["unparsed_count"], 1);
    assert_eq!(v["unparsed_lines"][0][0], 2);
}

#[test]
fn a_log_that_needs_more_calls_than_the_bound_says_not_searched_and_what_to_raise() {
    let line = "qemu-kvm: vhost_device_iotlb_miss: 4100,4100: Fail to update device iotlb\n";
    // The default bound allows 8 virtqueues + 3 misses = 11 calls.
    let log = temp_log("twelve-failures", &line.repeat(12));
    let o = vhost_race(&["explain", &log, "--variant", "qemu-9.1", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["variants"][0]["verdict"], "not searched");
    assert_eq!(v["variants"][0]["nodes"], 0);
    let o = vhost_race(&["explain", &log, "--variant", "qemu-9.1", "--max-virtqueues", "2"]);
    let out = stdout(&o);
    assert!(out.contains("=== qemu-9.1: not searched: the log needs at least 12 IOTLB calls and the bound allows 5 (--max-virtqueues 2 + --max-misses 3); raise --max-virtqueues (up to 16) or --max-misses (up to 8)"), "{out}");
    assert!(out.contains("Not explainable by: none\nNot searched: qemu-9.1\n"), "{out}");
    let log = temp_log("thirty-failures", &line.repeat(30));
    let o = vhost_race(&["explain", &log, "--variant", "mutex"]);
    assert!(stdout(&o)
        .contains("more than the largest scenario the model takes (16 virtqueues + 8 misses)"));
}

#[test]
fn a_search_that_reaches_the_state_bound_is_undecided_and_exits_2() {
    let o = vhost_race(&[
        "explain",
        &example("facts-example.log"),
        "--variant",
        "mutex",
        "--max-states",
        "500",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err: Vec<String> =
        stderr(&o).lines().filter(|l| l.starts_with("error:")).map(String::from).collect();
    assert_eq!(err.len(), 1, "{err:?}");
    assert!(
        err[0].contains("search too large: mutex stopped at the state bound (--max-states 500"),
        "{err:?}"
    );
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["variants"][0]["verdict"], "undecided");
    // Each search stops at the bound: no search visits more than 500 nodes.
    for s in v["variants"][0]["searches"].as_array().unwrap() {
        assert!(s["nodes"].as_u64().unwrap() <= 500, "{s}");
    }
}

#[test]
fn a_run_found_past_the_breadth_first_bound_is_shown_and_said_not_shortest() {
    // 100 nodes are enough for the reduced depth-first search to find the
    // run, not for the breadth-first search of the shortest one (100 / 20).
    let o = vhost_race(&[
        "explain",
        &example("facts-example.log"),
        "--variant",
        "qemu-9.1",
        "--max-states",
        "100",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("=== qemu-9.1: explained, the whole run (27 steps; not the shortest: the breadth-first search for that one stopped at the state bound)"),
        "{out}"
    );
    assert!(out.contains("  line   4 <- step "), "{out}");
}
