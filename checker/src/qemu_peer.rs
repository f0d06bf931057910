//! The reference back-end as an in-process peer of a QEMU process: bound on
//! a socket path in a work directory, serving the one connection QEMU makes,
//! its trace readable while it runs. Used by `qemu-replay` and
//! `qemu-migrate`.
//!
//! Leaves out: reconnects (QEMU connects once per run here) and the
//! terminal-facing guarantees of `vhost-race backend` (the work directory
//! is ours).

use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use reference::backend::trace::{SharedTrace, TraceEvent};
use reference::backend::{Backend, BackendConfig};
use reference::transport::UnixTransport;
use reference::wire::Request;

use crate::progress::Interrupt;

/// A QEMU command's work directory: the one `--keep` names (left in
/// place), or a temporary one removed when this is dropped, on every path
/// out of the command.
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl WorkDir {
    /// `keep` if given, else `$TMPDIR/vhost-race-<name>-<pid>`.
    pub fn new(keep: Option<&Path>, name: &str) -> WorkDir {
        match keep {
            Some(d) => WorkDir { path: d.to_path_buf(), keep: true },
            None => WorkDir {
                path: std::env::temp_dir()
                    .join(format!("vhost-race-{name}-{}", std::process::id())),
                keep: false,
            },
        }
    }

    /// Where the runs' files go.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// The checker's options for the model's verdict set beside a QEMU run:
/// one thread, no progress, at most 5 million states (the scenarios QEMU
/// can run have a few thousand).
pub fn model_check_options() -> model::verdict::CheckOptions {
    model::verdict::CheckOptions { max_states: Some(5_000_000), ..Default::default() }
}

/// Raised by SIGINT or SIGTERM once [`catch_interrupts`] ran.
static INTERRUPTED: OnceLock<Interrupt> = OnceLock::new();

/// From now on SIGINT and SIGTERM only raise a flag: the QEMU commands then
/// stop waiting, clean their processes and sockets up and report what they
/// finished.
pub fn catch_interrupts() -> Result<()> {
    if INTERRUPTED.get().is_none() {
        let _ = INTERRUPTED.set(Interrupt::install()?);
    }
    Ok(())
}

/// Whether SIGINT or SIGTERM came.
pub fn interrupted() -> bool {
    INTERRUPTED.get().is_some_and(Interrupt::raised)
}

/// A back-end thread serving one QEMU.
pub struct BackendPeer {
    thread: JoinHandle<Result<u64>>,
    trace: SharedTrace,
}

impl BackendPeer {
    /// Binds `socket` and serves the first front-end that connects within
    /// `timeout`; `configure` sets the back-end up before it serves.
    pub fn start(
        socket: &Path,
        timeout: Duration,
        configure: impl FnOnce(&mut Backend<UnixTransport>) + Send + 'static,
    ) -> Result<BackendPeer> {
        Self::start_with(socket, timeout, BackendConfig::default(), configure)
    }

    /// [`BackendPeer::start`] with a back-end configuration of its own.
    pub fn start_with(
        socket: &Path,
        timeout: Duration,
        cfg: BackendConfig,
        configure: impl FnOnce(&mut Backend<UnixTransport>) + Send + 'static,
    ) -> Result<BackendPeer> {
        let _ = std::fs::remove_file(socket);
        let listener = UnixListener::bind(socket)
            .with_context(|| format!("cannot bind {}", socket.display()))?;
        listener.set_nonblocking(true)?;
        let trace = SharedTrace::default();
        let t = trace.clone();
        let deadline = Instant::now() + timeout;
        let thread = std::thread::spawn(move || -> Result<u64> {
            let stream = loop {
                match listener.accept() {
                    Ok((s, _)) => break s,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if interrupted() {
                            bail!("interrupted");
                        }
                        if Instant::now() > deadline {
                            bail!("QEMU never connected");
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    Err(e) => return Err(e.into()),
                }
            };
            stream.set_nonblocking(false)?;
            let mut b = Backend::new(UnixTransport::from_stream(stream), None, cfg);
            b.set_trace(Box::new(t), Instant::now(), 1);
            configure(&mut b);
            b.serve()?;
            Ok(b.requests_served())
        });
        Ok(BackendPeer { thread, trace })
    }

    /// The trace so far.
    pub fn events(&self) -> Vec<TraceEvent> {
        self.trace.events()
    }

    /// A handle on the trace that outlives [`BackendPeer::join`].
    pub fn trace(&self) -> SharedTrace {
        self.trace.clone()
    }

    /// How many requests of `r` it has received so far.
    pub fn received(&self, r: Request) -> usize {
        self.events().iter().filter(|e| e.received(r)).count()
    }

    /// Waits for the thread (QEMU has gone): requests served, or why it failed.
    pub fn join(self) -> Result<u64> {
        self.thread.join().map_err(|_| anyhow::anyhow!("back-end thread panicked"))?
    }
}

/// Polls `done` every 20 ms until it holds, `timeout` passes or a signal
/// interrupts.
pub fn wait_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline && !interrupted() {
        if done() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    done()
}
