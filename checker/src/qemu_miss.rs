//! `vhost-race qemu-miss`: the model's `--miss-need-reply` scenario on
//! QEMU's own binary. The back-end sends a BACKEND_IOTLB_MSG miss on the
//! back-end channel once device start's first IOTLB update is answered; with
//! `--need-reply` it then waits for QEMU's answer before it reads the main
//! socket again, as the specification allows.
//!
//! The model says every variant deadlocks there: device start holds the BQL
//! while it waits for the reply to its next update, which the back-end does
//! not read; the main loop needs the BQL to serve the back-end channel. On
//! QEMU the same cycle shows as a QMP monitor that stops answering (QMP is
//! served by the main loop under the BQL). Without `--need-reply` QEMU
//! answers the miss and nothing hangs.
//!
//! Leaves out: postcopy (the deadlock needs none), and any guest OS.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use model::{verdict, Prop};
use reference::backend::trace::Direction;
use reference::backend::BackendConfig;
use reference::qemu::{QemuBinary, Qmp};
use reference::scenario::{Scenario, Variant};
use reference::wire::Request;
use serde::Serialize;

use crate::qemu_peer::{catch_interrupts, model_check_options, wait_until, BackendPeer, WorkDir};

/// How long QEMU may take to boot iPXE and start the device.
const BOOT_TIMEOUT: Duration = Duration::from_secs(90);

/// The `qemu-miss` subcommand's flags.
#[derive(Args, Debug)]
pub struct QemuMissArgs {
    /// The miss carries NEED_REPLY: the back-end waits for the answer.
    #[arg(long)]
    need_reply: bool,
    /// Seconds QMP may stay silent before the run is called a hang.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    timeout_secs: u64,
    /// The variant the QEMU binary implements, for the model's verdict
    /// beside QEMU's behaviour (Debian's QEMU 7.2 is `qemu-9.1`).
    #[arg(long, default_value = "qemu-9.1")]
    variant: Variant,
    /// Keep QEMU's stderr, serial output and the back-end's trace here.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// What happened, beside what the model says.
#[derive(Debug, Clone, Serialize)]
pub struct MissReport {
    /// QEMU's `-version` line.
    pub qemu: String,
    /// The variant the model checked.
    pub variant: String,
    /// Whether the miss had NEED_REPLY.
    pub need_reply: bool,
    /// The model, on the same scenario: whether a deadlock is reachable.
    pub model_deadlocks: bool,
    /// QEMU answered the back-end's miss on the back-end channel or with an
    /// IOTLB update.
    pub miss_answered: bool,
    /// IOTLB updates device start sent that the back-end read.
    pub device_start_updates_read: usize,
    /// QMP `query-status` answered within the timeout after the miss.
    pub qmp_answered: bool,
    /// QEMU's verdict: `hang` or `no hang`.
    pub qemu_verdict: String,
    /// Who waits for whom, when it hangs.
    pub waits: Vec<String>,
}

impl MissReport {
    /// QEMU hung: QMP silent and the miss unanswered for the whole timeout.
    pub fn hung(&self) -> bool {
        !self.qmp_answered && !self.miss_answered
    }
}

/// Runs the subcommand.
pub fn run(args: QemuMissArgs) -> Result<ExitCode> {
    let qemu = QemuBinary::find()?;
    catch_interrupts()?;
    let dir = WorkDir::new(args.keep.as_deref(), "miss");
    let report = miss_run(&qemu, args.need_reply, args.timeout_secs, args.variant, dir.path());
    drop(dir);
    let report = report?;
    if args.json {
        crate::cli::emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
    } else {
        crate::cli::emit(&render(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One QEMU whose back-end sends a miss once device start's first update
/// is answered (`need_reply` as asked), in `dir`; QMP silent for
/// `timeout_secs` with the miss unanswered is a hang. `variant` is the
/// model's row to set beside it.
pub fn miss_run(
    qemu: &QemuBinary,
    need_reply: bool,
    timeout_secs: u64,
    variant: Variant,
    dir: &std::path::Path,
) -> Result<MissReport> {
    let scenario = Scenario {
        postcopy_end: false,
        backend_misses: 1,
        miss_need_reply: need_reply,
        ..Scenario::default()
    };
    let v = verdict::check(variant, scenario, &model_check_options());
    let model_deadlocks = !v.property(Prop::Deadlock.name()).expect("a property").holds;
    std::fs::create_dir_all(dir)?;
    let cfg = BackendConfig { misses: 1, miss_need_reply: need_reply, ..BackendConfig::default() };
    let peer = BackendPeer::start_with(&dir.join("vhost.sock"), BOOT_TIMEOUT, cfg, |b| {
        b.set_misses_from_device_start(true);
    })?;
    let qmp_path = dir.join("qmp.sock");
    let a = qemu.net_args(&dir.join("vhost.sock"), 1, &dir.join("serial.out"), Some(&qmp_path));
    let mut proc = qemu.spawn(&a, &dir.join("qemu.stderr"))?;
    let result = (|| -> Result<MissReport> {
        let mut qmp = Qmp::connect(&qmp_path, Duration::from_secs(30)).context("QMP")?;
        let miss_sent = |p: &BackendPeer| {
            p.events()
                .iter()
                .any(|e| e.dir == Direction::Sent && e.request.contains("BACKEND_IOTLB"))
        };
        if !wait_until(BOOT_TIMEOUT, || proc.exited() || miss_sent(&peer)) || proc.exited() {
            bail!("QEMU never started its device: {}", proc.stderr());
        }
        let after_miss = Instant::now();
        qmp.set_timeout(Duration::from_secs(timeout_secs))?;
        let qmp_answered = qmp.execute("query-status", None).is_ok();
        // Give QEMU the rest of the timeout to answer the miss.
        let rest = Duration::from_secs(timeout_secs).saturating_sub(after_miss.elapsed());
        let answered = |p: &BackendPeer| {
            p.events().iter().any(|e| {
                (e.dir == Direction::Received && e.request.contains("BACKEND_IOTLB"))
                    || (e.received(Request::IotlbMsg)
                        && e.note.as_deref().is_some_and(|n| n.contains("iova 0x80000")))
            })
        };
        wait_until(rest, || answered(&peer));
        let miss_answered = answered(&peer);
        let device_start_updates_read = peer
            .events()
            .iter()
            .filter(|e| {
                e.received(Request::IotlbMsg)
                    && !e.note.as_deref().is_some_and(|n| n.contains("iova 0x80000"))
            })
            .count();
        let mut report = MissReport {
            qemu: qemu.version.clone(),
            variant: variant.to_string(),
            need_reply,
            model_deadlocks,
            miss_answered,
            device_start_updates_read,
            qmp_answered,
            qemu_verdict: String::new(),
            waits: Vec::new(),
        };
        report.qemu_verdict = if report.hung() { "hang" } else { "no hang" }.into();
        if report.hung() {
            report.waits.push(format!(
                "back-end: waits on the back-end channel for the answer to its miss ({} s so far), \
                 and does not read the main socket",
                timeout_secs
            ));
            report.waits.push(format!(
                "device start (vCPU thread, BQL held): no reply comes to its next IOTLB update \
                 (the back-end read {device_start_updates_read} of them before the miss)"
            ));
            report.waits.push(format!(
                "main loop: needs the BQL to serve the back-end channel; QMP silent for {} s",
                timeout_secs
            ));
        }
        Ok(report)
    })();
    // A hung QEMU cannot process SIGTERM (its main loop, which handles it,
    // waits for the BQL), so it gets SIGKILL at once; one that answered gets
    // SIGTERM and a grace period.
    let hung = result.as_ref().is_ok_and(MissReport::hung);
    proc.terminate(if hung { Duration::ZERO } else { Duration::from_secs(2) });
    let _ = peer.join();
    result
}

fn render(r: &MissReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "QEMU: {}", r.qemu);
    let _ = writeln!(
        out,
        "back-end miss {} NEED_REPLY, sent after device start's first IOTLB update",
        if r.need_reply { "with" } else { "without" }
    );
    let _ = writeln!(
        out,
        "model ({}): {}",
        r.variant,
        if r.model_deadlocks { "deadlocks" } else { "no deadlock" }
    );
    let _ = writeln!(
        out,
        "QEMU: {} (miss answered: {}, QMP answered: {}, device start's updates read: {})",
        r.qemu_verdict, r.miss_answered, r.qmp_answered, r.device_start_updates_read
    );
    for w in &r.waits {
        let _ = writeln!(out, "  {w}");
    }
    out
}
