//! `vhost-race explain` as a user meets it: the example logs explained or
//! ruled out per variant, JSON, and bad input (one-line error, exit code 2,
//! never a panic).

use std::path::PathBuf;
use std::process::{Command, Output};

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

/// A temporary file with `text`, named after the test.
fn temp_log(name: &str, text: &str) -> String {
    let p = std::env::temp_dir().join(format!("vhost-race-explain-{}-{name}", std::process::id()));
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
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
    assert!(out.contains("Searched: 2..=4 virtqueues, 1..=3 back-end misses, 9 scenarios"));
}

#[test]
fn json_names_each_variants_verdict_and_the_matched_steps() {
    let o = vhost_race(&[
        "--json",
        "explain",
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
    assert!(out.contains("6 scenarios with at least 5 IOTLB calls"));
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
