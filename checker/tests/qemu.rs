//! QEMU's own binary (Debian's `qemu-system-x86_64`, 7.2) as the peer:
//! its vhost-user-net device against `vhost-race backend`, and the replay of
//! every counterexample in scope (`vhost-race qemu-replay`), in which QEMU's
//! read path must print the model's device-start lines.
//!
//! Each QEMU test skips, with one line on standard error saying what to
//! install, where QEMU or iPXE's ROM is missing; `.ci/run` installs them, so
//! there they run.
//!
//! The tests that wait on QEMU (migrations, the miss runs, the built
//! variants) run their QEMUs several at once, each with its own back-end,
//! sockets and directory.
//!
//! Leaves out: a guest OS (iPXE starts the device), KVM, and the variants
//! not built by `qemu/build-variants.sh` in CI (the unlocked and mutex
//! builds are).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use reference::backend::trace::{Direction, TraceEvent};
use reference::qemu::{QemuBinary, QemuProcess};
use reference::wire::{Request, PROTOCOL_F_BACKEND_REQ, PROTOCOL_F_REPLY_ACK};

use crate::common::BackendProcess;

const BIN: &str = env!("CARGO_BIN_EXE_vhost-race");

/// QEMU, or a skip line on the real standard error (not captured by the
/// test harness, so that it shows in `cargo test`'s output).
fn qemu_or_skip(test: &str) -> Option<QemuBinary> {
    match QemuBinary::find() {
        Ok(q) => Some(q),
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "skipped {test}: {e}");
            None
        }
    }
}

fn workdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("vhost-race-test-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start_backend(socket: &Path, trace: &Path, extra: &[&str]) -> BackendProcess {
    let mut args = vec!["--once", "--trace", trace.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    BackendProcess::spawn(socket, &args)
}

fn events(trace: &Path) -> Vec<TraceEvent> {
    let text = std::fs::read_to_string(trace).unwrap_or_default();
    let whole = text.rfind('\n').map_or("", |i| &text[..=i]);
    TraceEvent::parse_all(whole).expect("the trace is JSON lines")
}

fn iotlb_updates(ev: &[TraceEvent]) -> usize {
    ev.iter().filter(|e| e.received(Request::IotlbMsg)).count()
}

/// Runs QEMU with `queues` queue pairs against the back-end process until it
/// has sent `updates` IOTLB updates (bounded), stops it, and returns the
/// back-end's trace, QEMU's stderr and the back-end's stderr.
fn run_device_start(
    qemu: &QemuBinary,
    name: &str,
    queues: u16,
    updates: usize,
) -> (Vec<TraceEvent>, String, String) {
    run_device_start_with(qemu, &workdir(name), queues, updates, &[])
}

/// [`run_device_start`] in `dir`, the back-end run with `backend_args` too.
fn run_device_start_with(
    qemu: &QemuBinary,
    dir: &Path,
    queues: u16,
    updates: usize,
    backend_args: &[&str],
) -> (Vec<TraceEvent>, String, String) {
    let socket = dir.join("vhost.sock");
    let trace = dir.join("trace.jsonl");
    let mut args = vec!["--queue-pairs", "4"];
    args.extend_from_slice(backend_args);
    let mut backend = start_backend(&socket, &trace, &args);
    let args = qemu.net_args(&socket, queues, &dir.join("serial.out"), None);
    let mut proc: QemuProcess = qemu.spawn(&args, &dir.join("qemu.stderr")).expect("start QEMU");
    let deadline = Instant::now() + Duration::from_secs(90);
    while iotlb_updates(&events(&trace)) < updates {
        assert!(!proc.exited(), "QEMU exited early: {}", proc.stderr());
        assert!(Instant::now() < deadline, "no {updates} IOTLB updates in 90 s: {}", proc.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    // Let QEMU print anything it has to say about the replies, then stop it.
    std::thread::sleep(Duration::from_millis(500));
    assert!(proc.terminate(Duration::from_secs(10)), "QEMU quits on SIGTERM");
    let out = backend.0.take().unwrap().wait_with_output().expect("the back-end exits");
    let be_err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "back-end: {be_err}");
    assert!(!socket.exists(), "the back-end removed its socket");
    let ev = events(&trace);
    let qemu_err = proc.stderr();
    let _ = std::fs::remove_dir_all(dir);
    (ev, qemu_err, be_err)
}

/// QEMU's lines other than its own "terminating on signal" at the end.
fn qemu_complaints(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.contains("terminating on signal") && !l.is_empty()).collect()
}

#[test]
fn qemu_starts_its_vhost_user_net_device_with_one_acked_iotlb_update_per_virtqueue() {
    let Some(qemu) = qemu_or_skip(
        "qemu_starts_its_vhost_user_net_device_with_one_acked_iotlb_update_per_virtqueue",
    ) else {
        return;
    };
    let (ev, qemu_err, be_err) = run_device_start(&qemu, "handshake", 1, 2);
    assert!(qemu_complaints(&qemu_err).is_empty(), "QEMU logged: {qemu_err}");
    assert!(be_err.contains("front-end 1 closed the connection"), "{be_err}");

    let received: Vec<&TraceEvent> = ev.iter().filter(|e| e.dir == Direction::Received).collect();
    let names: Vec<&str> = received.iter().map(|e| e.request.as_str()).collect();
    // The handshake, in QEMU 7.2's order.
    let start = [
        "VHOST_USER_GET_FEATURES",
        "VHOST_USER_GET_PROTOCOL_FEATURES",
        "VHOST_USER_SET_PROTOCOL_FEATURES",
        "VHOST_USER_GET_QUEUE_NUM",
        "VHOST_USER_SET_BACKEND_REQ_FD",
        "VHOST_USER_SET_OWNER",
    ];
    assert_eq!(&names[..start.len()], &start, "{names:?}");
    let set_proto = received[2].note.as_deref().unwrap();
    let proto = u64::from_str_radix(set_proto.trim_start_matches("0x"), 16).unwrap();
    assert_eq!(
        proto & (PROTOCOL_F_REPLY_ACK | PROTOCOL_F_BACKEND_REQ),
        PROTOCOL_F_REPLY_ACK | PROTOCOL_F_BACKEND_REQ
    );
    assert_eq!(
        (received[4].flags, received[4].fds),
        (0x9, 1),
        "the back-end channel's fd, NEED_REPLY"
    );
    assert!(names.contains(&"VHOST_USER_SET_VRING_ERR"), "{names:?}");

    // Guest memory: SET_MEM_TABLE with one fd per region, mapped and acked.
    let i = ev.iter().position(|e| e.received(Request::SetMemTable)).expect("SET_MEM_TABLE");
    assert_eq!(ev[i].flags, 0x9);
    assert!(ev[i].fds >= 1);
    assert_eq!(ev[i + 1].dir, Direction::Sent);
    assert_eq!(ev[i + 1].note.as_deref(), Some("ack 0"), "mapped with vm-memory, acked");

    // Each started ring: num, base, addr, kick (with its eventfd), call.
    for vq in 0..2 {
        let kick = ev.iter().find(|e| {
            e.received(Request::SetVringKick) && e.note.as_deref() == Some(&*format!("vq {vq}"))
        });
        assert_eq!(kick.map(|e| e.fds), Some(1), "vq {vq} kicked with an eventfd");
    }

    // Device start: one IOTLB update with NEED_REPLY per virtqueue, each
    // translated into guest memory and acked 0.
    let updates: Vec<usize> = ev
        .iter()
        .enumerate()
        .filter(|(_, e)| e.received(Request::IotlbMsg))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(updates.len(), 2, "iPXE starts one queue pair: two updates");
    for &u in &updates {
        assert_eq!((ev[u].flags, ev[u].size), (0x9, 32));
        assert!(ev[u].note.as_deref().unwrap().starts_with("Update iova"));
        assert_eq!(ev[u + 1].dir, Direction::Translated);
        assert!(ev[u + 1].note.as_deref().unwrap().starts_with("gpa 0x"), "{:?}", ev[u + 1]);
        assert_eq!((ev[u + 2].dir, ev[u + 2].note.as_deref()), (Direction::Sent, Some("ack 0")));
    }
    // Device stop at quit: GET_VRING_BASE per ring, answered.
    assert_eq!(ev.iter().filter(|e| e.received(Request::GetVringBase)).count(), 2);
}

/// A header device start assembles from two replies announces 30 bytes
/// (`[16 5 1e]`, model path `a_misframed_size_of_30_reads_30_bytes` of
/// `model/tests/model.rs`): QEMU reads exactly 30, as the model does, and
/// fails the update silently on the status those bytes hold (`5 8`), so it
/// prints only `Fail to update device iotlb` and goes on to its next
/// update. Had it read 32 (the size rounded up to words) it would wait for
/// 2 bytes the back-end never sends and make no second update.
#[test]
fn qemu_reads_a_misframed_size_of_30_as_30_bytes_as_the_model_does() {
    let Some(qemu) =
        qemu_or_skip("qemu_reads_a_misframed_size_of_30_as_30_bytes_as_the_model_does")
    else {
        return;
    };
    let dir = workdir("size-30");
    let read = |who: &str, n: u16| serde_json::json!({ "Read": [who, n] });
    let step = |who: &str| serde_json::json!({ "Step": who });
    let doc = serde_json::json!({
        "variant": "qemu-9.1",
        "property": "a misframed size of 30",
        "scenario": {
            "backend_misses": 1, "device_start": true, "device_start_holds_bql": false,
            "device_stop": false, "miss_need_reply": false, "postcopy_end": true,
            "short_reads": true, "virtqueues": 1
        },
        "actions": [
            step("DeviceStart"), step("PostcopyListen"), step("PostcopyListen"),
            "BackendHandle", read("DeviceStart", 8), read("PostcopyListen", 12),
            { "LogReadError": "PostcopyListen" }, step("PostcopyListen"), "BackendHandle",
            read("DeviceStart", 4), read("DeviceStart", 16), "BackendSendMiss",
            "ServeBackendChannel", step("MainLoop"), "BackendHandle", read("DeviceStart", 14)
        ]
    });
    let json = dir.join("path.json");
    std::fs::write(&json, doc.to_string()).unwrap();
    let (ev, qemu_err, be_err) =
        run_device_start_with(&qemu, &dir, 1, 2, &["--replay", json.to_str().unwrap()]);
    assert_eq!(iotlb_updates(&ev), 2, "{be_err}");
    let complaints = qemu_complaints(&qemu_err);
    assert_eq!(complaints.len(), 1, "{qemu_err}");
    assert!(complaints[0].ends_with("Fail to update device iotlb"), "{qemu_err}");
}

#[test]
fn with_two_queue_pairs_ipxe_still_starts_only_the_first() {
    let Some(qemu) = qemu_or_skip("with_two_queue_pairs_ipxe_still_starts_only_the_first") else {
        return;
    };
    let (ev, qemu_err, _) = run_device_start(&qemu, "mq", 2, 2);
    assert!(qemu_complaints(&qemu_err).is_empty(), "QEMU logged: {qemu_err}");
    let qn = ev.iter().position(|e| e.received(Request::GetQueueNum)).expect("GET_QUEUE_NUM");
    assert_eq!(ev[qn + 1].note.as_deref(), Some("u64 0x4"), "answered with --queue-pairs 4");
    // Both queue pairs are set up (their call fds), only the first starts.
    assert!(ev
        .iter()
        .any(|e| e.received(Request::SetVringCall) && e.note.as_deref() == Some("vq 3")));
    let updates = iotlb_updates(&ev);
    assert_eq!(updates, 2, "two IOTLB updates: iPXE drives queue pair 0 only");
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

#[test]
fn qemu_prints_the_models_device_start_lines_for_every_counterexample_in_scope() {
    let Some(_) =
        qemu_or_skip("qemu_prints_the_models_device_start_lines_for_every_counterexample_in_scope")
    else {
        return;
    };
    // 8 QEMUs at a time (the replays are independent; 19 of 19 agreed (20 of 20 since --queued-reads joined) in
    // each of five runs at 8, two of them side by side).
    let out = Command::new(BIN)
        .args(["qemu-replay", "--json", "--jobs", "8"])
        .current_dir(workspace_root())
        .output()
        .expect("run qemu-replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    let n = |k: &str| doc[k].as_u64().unwrap();
    let _ = writeln!(
        std::io::stderr(),
        "qemu-replay: {} model paths, {} replayed on {}, {} agree, {} skipped",
        n("cases"),
        n("replayed"),
        doc["qemu"],
        n("agree"),
        n("skipped")
    );
    let disagreements: Vec<&serde_json::Value> = doc["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| !matches!(o[0]["verdict"].as_str(), Some("agree" | "skipped")))
        .collect();
    assert!(disagreements.is_empty(), "QEMU and the model disagree: {disagreements:#?}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(n("replayed") >= 10, "the default matrix alone has more device-start views");
    assert_eq!(n("agree"), n("replayed"));
    // Every symptom of QEMU's read path is among the lines QEMU printed.
    let printed: String = doc["outcomes"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|o| {
            o[0]["qemu_lines"].as_array().unwrap().iter().map(|l| l.as_str().unwrap().to_string())
        })
        .collect::<Vec<_>>()
        .join("\n");
    for line in [
        "Received unexpected msg type. Expected 22 received 30",
        "Failed to read msg header. Flags 0x0 instead of 0x5.",
        "Failed to read msg header. Flags 0x8 instead of 0x5.",
        "Fail to update device iotlb",
    ] {
        assert!(printed.contains(line), "QEMU printed {line:?} in some replay");
    }
}

/// A log exactly as QEMU 7.2 printed it in a replay (no function, no thread
/// id, its own "terminating" line): explained as device start's view by
/// qemu-9.1, ruled out for mutex. Needs no QEMU.
#[test]
fn explain_takes_a_log_as_qemu_printed_it_in_device_starts_view() {
    let log = workspace_root().join("examples/logs/qemu-7.2-replay-swap-then-misframed.log");
    let out = Command::new(BIN)
        .arg("explain")
        .arg(&log)
        .args(["--thread", "device-start", "--variant", "qemu-9.1", "--variant", "mutex"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("4 vhost-user lines, 1 unrelated line ignored"), "{stdout}");
    assert!(stdout.contains("=== qemu-9.1: explained, the whole run"), "{stdout}");
    assert!(stdout.contains("Explained by: qemu-9.1\n"), "{stdout}");
    assert!(stdout.contains("Not explainable by: mutex\n"), "{stdout}");
}

/// The race on QEMU's binary: real postcopy migrations between two QEMUs,
/// the destination's back-end holding its first IOTLB reply until
/// POSTCOPY_END. At least one run prints the race's lines; every log QEMU
/// printed is a whole run of qemu-9.1 and no run of the mutex.
#[test]
fn real_postcopy_migrations_show_the_race_and_explain_rules_out_the_mutex() {
    let Some(_) =
        qemu_or_skip("real_postcopy_migrations_show_the_race_and_explain_rules_out_the_mutex")
    else {
        return;
    };
    let out = Command::new(BIN)
        .args(["qemu-migrate", "--runs", "5", "--jobs", "3", "--hold-iotlb-reply", "--json"])
        .output()
        .expect("run qemu-migrate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let doc: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    let runs = doc["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 5);
    for r in runs {
        assert_eq!(r["status"], "completed", "{r}");
        assert_eq!(r["destination"], "running", "{r}");
    }
    let raced = runs.iter().filter(|r| !r["race_lines"].as_array().unwrap().is_empty()).count();
    let _ = writeln!(std::io::stderr(), "qemu-migrate: {raced} of 5 migrations raced");
    assert!(raced >= 1, "no race in 5 held migrations: {stderr}");
    for s in doc["sequences"].as_array().unwrap() {
        let answers: std::collections::BTreeMap<String, String> = s["explain"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_str().unwrap().to_string(), p[1].as_str().unwrap().to_string()))
            .collect();
        assert!(answers["qemu-9.1"].starts_with("explained (Whole"), "{s}");
        assert_eq!(answers["mutex"], "not explainable", "{s}");
    }
}

/// The model's `--miss-need-reply` deadlock on QEMU: a back-end miss with
/// NEED_REPLY during device start hangs QEMU (QMP silent, the miss never
/// answered), as the model says; without NEED_REPLY QEMU answers it.
#[test]
fn a_miss_with_need_reply_during_device_start_hangs_qemu_as_the_model_says() {
    let Some(_) =
        qemu_or_skip("a_miss_with_need_reply_during_device_start_hangs_qemu_as_the_model_says")
    else {
        return;
    };
    // Both runs at once, each its own QEMU and back-end.
    let runs = [(false, false), (true, true)].map(|(need_reply, hang)| {
        let mut cmd = Command::new(BIN);
        cmd.args(["qemu-miss", "--json", "--timeout-secs", "3"]);
        if need_reply {
            cmd.arg("--need-reply");
        }
        (hang, std::thread::spawn(move || cmd.output().expect("run qemu-miss")))
    });
    for (hang, run) in runs {
        let out = run.join().expect("the qemu-miss thread");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let r: serde_json::Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(r["model_deadlocks"], hang, "{r}");
        assert_eq!(r["qemu_verdict"], if hang { "hang" } else { "no hang" }, "{r}");
        assert_eq!(r["miss_answered"], !hang, "{r}");
        assert_eq!(r["qmp_answered"], !hang, "{r}");
    }
}

/// The matrix held against QEMU built with each locking scheme: for the
/// unlocked build and the mutex build (`qemu/build-variants.sh`, which
/// `.ci/run` runs), QEMU races exactly where the model says "races" and
/// hangs on a miss with NEED_REPLY exactly where it says "deadlocks".
#[test]
fn the_built_variants_behave_as_the_matrix_says() {
    let cache = std::env::var_os("VHOST_RACE_QEMU_CACHE")
        .map_or_else(|| PathBuf::from("/var/cache/vhost-race-qemu"), PathBuf::from);
    let have = |v: &str| {
        std::fs::read_dir(cache.join("bin")).is_ok_and(|d| {
            d.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.rsplit_once('-').is_some_and(|(name, _)| name == v)
                    && e.path().join("qemu-system-x86_64-wrapped").is_file()
            })
        })
    };
    if qemu_or_skip("the_built_variants_behave_as_the_matrix_says").is_none() {
        return;
    }
    if !(have("qemu-9.1") && have("mutex")) {
        let _ = writeln!(
            std::io::stderr(),
            "skipped the_built_variants_behave_as_the_matrix_says: no QEMU built per variant in {} \
             (build them: bash qemu/build-variants.sh qemu-9.1 mutex)",
            cache.display()
        );
        return;
    }
    let out = Command::new(BIN)
        .arg("qemu-matrix")
        .arg("--cache")
        .arg(&cache)
        .args(["--variant", "qemu-9.1", "--variant", "mutex", "--runs", "2", "--jobs", "6"])
        // As in the qemu-miss test: a healthy QEMU answers QMP in milliseconds.
        .args(["--timeout-secs", "3"])
        .arg("--json")
        .output()
        .expect("run qemu-matrix");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let rows: serde_json::Value =
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout} {stderr}"));
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{stdout}");
    for r in rows {
        let _ = writeln!(
            std::io::stderr(),
            "qemu-matrix: {} raced {} of {}, serialised {}, miss: {}",
            r["variant"],
            r["raced"],
            r["migrations"],
            r["serialised"],
            r["qemu_miss"]
        );
        assert_eq!(r["agree"], true, "{r}");
        assert_eq!(r["migrations"], 2, "{r}");
    }
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}
