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

/// Runs `task(i)` for every `i` in `0..count`, at most `jobs` at a time on
/// scoped threads, `task(i)` started in the order of `i`. A QEMU run mostly
/// waits (SeaBIOS and iPXE booting under TCG, QMP, the back-end's hold), so
/// a few at once finish sooner; each task keeps its own directory, sockets
/// and back-end. Once a task has failed or SIGINT/SIGTERM came, no further
/// task starts; a task that was running when the signal came has had its
/// processes stopped, and its result is dropped. Returns the results in
/// the order of `i`, `None` for a task not run or dropped.
pub fn run_jobs<T: Send>(
    count: usize,
    jobs: usize,
    task: impl Fn(usize) -> Result<T> + Sync,
) -> Vec<Option<Result<T>>> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Mutex;
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<T>>>> = (0..count).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.clamp(1, count.max(1)) {
            scope.spawn(|| loop {
                if stop.load(Ordering::SeqCst) || interrupted() {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= count {
                    break;
                }
                let r = task(i);
                if interrupted() {
                    break;
                }
                if r.is_err() {
                    stop.store(true, Ordering::SeqCst);
                }
                *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
            });
        }
    });
    results.into_iter().map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every task runs once, no more than `jobs` at a time, and the results
    /// come back in the tasks' order whatever order they finish in.
    #[test]
    fn run_jobs_runs_each_task_once_within_the_limit_in_order() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let out = run_jobs(7, 3, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            // Later tasks finish first.
            std::thread::sleep(Duration::from_millis(5 * (7 - i as u64)));
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(i * 10)
        });
        let got: Vec<usize> = out.into_iter().map(|r| r.expect("run").expect("ok")).collect();
        assert_eq!(got, vec![0, 10, 20, 30, 40, 50, 60]);
        assert!(peak.load(Ordering::SeqCst) <= 3, "at most 3 at once");
    }

    /// After a task fails, no task starts that had not started yet.
    #[test]
    fn run_jobs_starts_nothing_after_a_failure() {
        let out = run_jobs(5, 1, |i| if i == 1 { bail!("task {i} failed") } else { Ok(i) });
        assert!(matches!(out[0], Some(Ok(0))));
        assert!(matches!(out[1], Some(Err(_))));
        assert!(out[2..].iter().all(Option::is_none), "nothing ran after the failure");
    }
}
