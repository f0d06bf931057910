//! QEMU's own binary as a front-end peer: finding it, the command line that
//! makes it run `vhost_dev_start` with an IOMMU and no guest OS, and running
//! it bounded, its standard error kept.
//!
//! The command line is the one of the facts page (QEMU 7.2 under TCG): q35
//! with an Intel IOMMU and device IOTLB, guest RAM in a shared memfd, a
//! vhost-user virtio-net device with `iommu_platform=on,ats=on` and iPXE's
//! `efi-virtio.rom` as its option ROM; booting from the network makes iPXE's
//! virtio driver bring the device up, and QEMU sends one IOTLB update with
//! NEED_REPLY per started virtqueue. iPXE starts the first queue pair only.
//!
//! Leaves out: KVM (TCG is enough and always there), a guest OS, and every
//! QEMU option the race does not need.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The program QEMU prints before each message (`qemu-system-x86_64: ...`).
pub const QEMU_PROGRAM: &str = "qemu-system-x86_64";
/// Environment variable naming another QEMU binary to use.
pub const QEMU_ENV: &str = "VHOST_RACE_QEMU";
/// What to install where QEMU is missing (Debian's package brings iPXE).
pub const INSTALL_HINT: &str = "apt-get install qemu-system-x86";
/// The option ROM whose virtio driver starts the device.
pub const VIRTIO_ROM: &str = "efi-virtio.rom";
/// Where Debian keeps QEMU's firmware and iPXE's ROMs.
const FIRMWARE_DIRS: [&str; 3] = ["/usr/share/qemu", "/usr/lib/ipxe/qemu", "/usr/share/seabios"];

/// A QEMU binary found on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuBinary {
    /// The executable.
    pub path: PathBuf,
    /// Its `-version` first line, e.g. `QEMU emulator version 7.2.22 (Debian ...)`.
    pub version: String,
}

/// Why QEMU cannot be used here.
#[derive(Debug, thiserror::Error)]
pub enum QemuMissing {
    /// No binary.
    #[error("{QEMU_PROGRAM} not found (set {QEMU_ENV} or install it: {INSTALL_HINT})")]
    Binary,
    /// The binary does not run.
    #[error("{path} does not run: {why}")]
    Broken {
        /// The binary.
        path: PathBuf,
        /// What failed.
        why: String,
    },
    /// No iPXE virtio ROM in the firmware directories.
    #[error("{VIRTIO_ROM} not found in {FIRMWARE_DIRS:?} (install it: {INSTALL_HINT})")]
    Rom,
}

impl QemuBinary {
    /// `$VHOST_RACE_QEMU`, else `qemu-system-x86_64` on `PATH`; checked by
    /// running `-version`, and the iPXE ROM must be installed.
    pub fn find() -> Result<QemuBinary, QemuMissing> {
        let path = match std::env::var_os(QEMU_ENV) {
            Some(p) => PathBuf::from(p),
            None => std::env::var_os("PATH")
                .into_iter()
                .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
                .map(|d| d.join(QEMU_PROGRAM))
                .find(|p| p.is_file())
                .ok_or(QemuMissing::Binary)?,
        };
        QemuBinary::at(&path)
    }

    /// The binary at `path` (e.g. one built with a variant's patch), checked
    /// as [`QemuBinary::find`] checks it.
    pub fn at(path: &Path) -> Result<QemuBinary, QemuMissing> {
        let path = path.to_path_buf();
        let out = Command::new(&path)
            .arg("-version")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| QemuMissing::Broken { path: path.clone(), why: e.to_string() })?;
        if !out.status.success() {
            return Err(QemuMissing::Broken { path, why: format!("-version: {}", out.status) });
        }
        let version =
            String::from_utf8_lossy(&out.stdout).lines().next().unwrap_or_default().to_string();
        if !FIRMWARE_DIRS.iter().any(|d| Path::new(d).join(VIRTIO_ROM).is_file()) {
            return Err(QemuMissing::Rom);
        }
        Ok(QemuBinary { path, version })
    }

    /// The arguments of a QEMU whose vhost-user-net device talks to the
    /// back-end on `socket`, with `queues` queue pairs (more than one needs
    /// a back-end that offers MQ), serial output to `serial`, and a QMP
    /// socket at `qmp` if given.
    pub fn net_args(
        &self,
        socket: &Path,
        queues: u16,
        serial: &Path,
        qmp: Option<&Path>,
    ) -> Vec<String> {
        let mut a: Vec<String> = [
            "-machine",
            "q35,accel=tcg,kernel-irqchip=split",
            "-m",
            "128M",
            "-object",
            "memory-backend-memfd,id=mem,size=128M,share=on",
            "-numa",
            "node,memdev=mem",
            "-device",
            "intel-iommu,intremap=on,device-iotlb=on",
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        a.push("-chardev".into());
        a.push(format!("socket,id=c0,path={}", socket.display()));
        a.push("-netdev".into());
        let q = if queues > 1 { format!(",queues={queues}") } else { String::new() };
        a.push(format!("type=vhost-user,id=n0,chardev=c0{q}"));
        a.push("-device".into());
        let mq =
            if queues > 1 { format!(",mq=on,vectors={}", 2 * queues + 2) } else { String::new() };
        a.push(format!(
            "virtio-net-pci,netdev=n0,iommu_platform=on,ats=on,disable-legacy=on,romfile={VIRTIO_ROM}{mq}"
        ));
        for s in ["-boot", "n", "-display", "none", "-monitor", "none"] {
            a.push(s.into());
        }
        a.push("-serial".into());
        a.push(format!("file:{}", serial.display()));
        if let Some(q) = qmp {
            a.push("-qmp".into());
            a.push(format!("unix:{},server=on,wait=off", q.display()));
        }
        a
    }

    /// Starts QEMU with `args`, its standard error to `stderr_file`. QEMU is
    /// killed if the thread that started it dies first (no orphan QEMU after
    /// a Ctrl-C or a failed test).
    pub fn spawn(&self, args: &[String], stderr_file: &Path) -> std::io::Result<QemuProcess> {
        use std::os::unix::process::CommandExt;
        let err = std::fs::File::create(stderr_file)?;
        let mut cmd = Command::new(&self.path);
        cmd.args(args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        // SAFETY: between fork and exec only prctl(2) runs, which is
        // async-signal-safe and touches no memory of the parent. QEMU then
        // dies with the thread that started it, even if that is killed.
        unsafe {
            cmd.pre_exec(|| {
                nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                    .map_err(std::io::Error::from)
            });
        }
        let child = cmd.spawn()?;
        Ok(QemuProcess { child: Some(child), stderr_file: stderr_file.to_path_buf() })
    }
}

/// A running QEMU; killed and reaped on drop if still running.
#[derive(Debug)]
pub struct QemuProcess {
    child: Option<Child>,
    stderr_file: PathBuf,
}

impl QemuProcess {
    /// Whether it has exited (reaping it if so).
    pub fn exited(&mut self) -> bool {
        match &mut self.child {
            Some(c) => c.try_wait().ok().flatten().is_some(),
            None => true,
        }
    }

    /// Sends SIGTERM (QEMU stops the device and quits) and waits up to
    /// `grace`; then SIGKILL. Returns whether it quit by itself in time.
    pub fn terminate(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else { return true };
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// What QEMU has written to standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read(&self.stderr_file)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }
}

impl Drop for QemuProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The message of a line QEMU printed, without its program prefix (and
/// without a `-msg timestamp=on` timestamp), if it has that prefix.
pub fn message_of(line: &str) -> Option<&str> {
    let at = line.find(&format!("{QEMU_PROGRAM}: "))?;
    Some(&line[at + QEMU_PROGRAM.len() + 2..])
}

/// A QMP connection (QEMU's JSON machine protocol on a Unix socket): one
/// command at a time, events skipped.
#[derive(Debug)]
pub struct Qmp {
    reader: std::io::BufReader<std::os::unix::net::UnixStream>,
    writer: std::os::unix::net::UnixStream,
}

/// A QMP command that failed, or a connection that did.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// The socket failed or timed out.
    #[error("QMP: {0}")]
    Io(#[from] std::io::Error),
    /// QEMU answered with something that is not QMP.
    #[error("QMP: unexpected answer {0}")]
    Protocol(String),
    /// QEMU refused the command.
    #[error("QMP {command}: {desc}")]
    Refused {
        /// The command.
        command: String,
        /// QEMU's error description.
        desc: String,
    },
}

impl Qmp {
    /// Connects to `path` (retrying until `timeout` while QEMU creates it),
    /// reads the greeting (skipping events before it) and leaves capability
    /// negotiation.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp, QmpError> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(e.into()),
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let writer = stream.try_clone()?;
        let mut qmp = Qmp { reader: std::io::BufReader::new(stream), writer };
        // QEMU 7.2 can write an event ahead of the greeting: a destination
        // started with `-incoming` was seen to send its MIGRATION `setup`
        // event first. Events are skipped here as in `execute`.
        let greeting = loop {
            let m = qmp.read_message()?;
            if m.get("event").is_none() {
                break m;
            }
        };
        if greeting.get("QMP").is_none() {
            return Err(QmpError::Protocol(greeting.to_string()));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    /// How long to wait for an answer (30 s unless set).
    pub fn set_timeout(&mut self, d: Duration) -> Result<(), QmpError> {
        self.writer.set_read_timeout(Some(d))?;
        Ok(())
    }

    fn read_message(&mut self) -> Result<serde_json::Value, QmpError> {
        use std::io::BufRead;
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(QmpError::Protocol("connection closed".into()));
        }
        serde_json::from_str(&line).map_err(|_| QmpError::Protocol(line.trim().to_string()))
    }

    /// Runs `command` with `arguments` and returns its `return` value.
    pub fn execute(
        &mut self,
        command: &str,
        arguments: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, QmpError> {
        use std::io::Write;
        let mut msg = serde_json::json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        writeln!(self.writer, "{msg}")?;
        loop {
            let m = self.read_message()?;
            if let Some(r) = m.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = m.get("error") {
                let desc = e.get("desc").and_then(|d| d.as_str()).unwrap_or("?").to_string();
                return Err(QmpError::Refused { command: command.to_string(), desc });
            }
            // An asynchronous event: not the answer.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::os::unix::net::UnixListener;

    /// A QMP peer that writes an event before its greeting, as QEMU 7.2's
    /// `-incoming` destination was seen to, and another one before the
    /// answer to `qmp_capabilities`: `connect` skips both and succeeds, and
    /// the next command gets its own answer.
    #[test]
    fn connect_skips_events_sent_before_the_greeting() {
        let dir = std::env::temp_dir().join(format!("qmp-event-first-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("qmp.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let event = r#"{"timestamp": {"seconds": 1, "microseconds": 2}, "event": "MIGRATION", "data": {"status": "setup"}}"#;
        let peer = std::thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut w = stream.try_clone().unwrap();
            let mut r = BufReader::new(stream);
            writeln!(w, "{event}").unwrap();
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"), "{line}");
            writeln!(w, "{event}").unwrap();
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("query-status"), "{line}");
            writeln!(w, r#"{{"return": {{"status": "inmigrate"}}}}"#).unwrap();
        });
        let mut qmp = Qmp::connect(&path, Duration::from_secs(5)).expect("connect past the event");
        let status = qmp.execute("query-status", None).unwrap();
        assert_eq!(status["status"], "inmigrate");
        peer.join().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
