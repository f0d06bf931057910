//! `vhost-race backend`: the reference back-end as its own process on a Unix
//! socket path, for QEMU's binary or any other front-end.
//!
//! What it guarantees at the terminal: it never removes anything at the path
//! but a stale socket (a regular file is refused, and so is a socket some
//! back-end still accepts connections on); it says "listening" only once it
//! is bound; it serves front-ends one after another (QEMU reconnects), or
//! just one with `--once`; SIGINT and SIGTERM end it cleanly, socket file
//! removed, whatever it was doing.
//!
//! Leaves out: serving two front-ends at once (a second one waits in the
//! listen backlog until the first has gone, and is told so on stderr when it
//! is accepted).

use std::fs::File;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use reference::backend::{Backend, BackendConfig, ReplyPlan};
use reference::transport::UnixTransport;
use signal_hook::consts::{SIGINT, SIGTERM};

/// The `backend` subcommand's flags.
#[derive(Args, Debug)]
pub struct BackendArgs {
    /// Unix socket path to listen on.
    #[arg(long)]
    socket: PathBuf,
    /// Serve one front-end, then exit (0 when it closed the connection, 2 on
    /// malformed input; a connection that sends nothing does not count);
    /// without it, serve front-ends one after another until SIGINT or SIGTERM.
    #[arg(long)]
    once: bool,
    /// Append one JSON line per message received and sent to FILE
    /// (`-` for standard error).
    #[arg(long, value_name = "FILE")]
    trace: Option<PathBuf>,
    /// Fault injection: answer device start's IOTLB updates with the bytes
    /// device start reads in a model counterexample (the JSON that `trace`
    /// prints), to replay it on QEMU. Not how any back-end behaves.
    #[arg(long, value_name = "TRACE_JSON")]
    replay: Option<PathBuf>,
    /// Queue pairs announced in answer to GET_QUEUE_NUM.
    #[arg(long, default_value_t = reference::backend::DEFAULT_MAX_QUEUE_PAIRS,
          value_parser = clap::value_parser!(u64).range(1..=256))]
    queue_pairs: u64,
    /// BACKEND_IOTLB_MSG misses to send after POSTCOPY_LISTEN.
    #[arg(long, default_value_t = 0)]
    misses: u8,
    /// Misses carry NEED_REPLY.
    #[arg(long)]
    miss_need_reply: bool,
}

/// The socket file this process bound, removed on drop if it is still the
/// same file (same inode), so that a later back-end's socket is never removed.
struct BoundSocket {
    path: PathBuf,
    ino: u64,
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes the path free for a bind without removing anything that matters:
/// nothing there, or a socket nobody accepts on (left by a killed back-end).
fn claim_path(path: &Path) -> Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", path.display())),
        Ok(m) => m,
    };
    if !meta.file_type().is_socket() {
        bail!("{} exists and is not a socket; not removing it", path.display());
    }
    match UnixStream::connect(path) {
        Ok(_) => bail!("a back-end is already listening on {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            std::fs::remove_file(path)
                .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
            Ok(())
        }
        Err(e) => Err(e).with_context(|| format!("cannot check the socket {}", path.display())),
    }
}

/// What the signal thread shuts down to wake the serving thread.
#[derive(Default)]
struct Wakers {
    stop: AtomicBool,
    signal: Mutex<Option<i32>>,
    listener: Mutex<Option<UnixListener>>,
    conn: Mutex<Option<UnixStream>>,
}

fn shutdown_fd(fd: &impl std::os::fd::AsRawFd) {
    let _ = nix::sys::socket::shutdown(fd.as_raw_fd(), nix::sys::socket::Shutdown::Both);
}

/// Runs the subcommand.
pub fn run(args: BackendArgs) -> Result<ExitCode> {
    let plan = match &args.replay {
        Some(p) => crate::qemu_replay::plan_from_trace_file(p)?,
        None => ReplyPlan::default(),
    };
    let mut trace_out: Option<File> = match &args.trace {
        Some(p) if p.as_os_str() == "-" => None,
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open the trace file {}", p.display()))?,
        ),
        None => None,
    };
    let trace_stderr = args.trace.as_ref().is_some_and(|p| p.as_os_str() == "-");

    claim_path(&args.socket)?;
    let listener = UnixListener::bind(&args.socket)
        .with_context(|| format!("cannot bind {}", args.socket.display()))?;
    let ino = std::fs::symlink_metadata(&args.socket)
        .with_context(|| format!("cannot inspect {}", args.socket.display()))?
        .ino();
    let _bound = BoundSocket { path: args.socket.clone(), ino };
    eprintln!("vhost-user back-end listening on {}", args.socket.display());

    let wakers = Arc::new(Wakers::default());
    *wakers.listener.lock().expect("not poisoned") = Some(listener.try_clone()?);
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM])
        .context("cannot install signal handlers")?;
    let handle = signals.handle();
    let w = Arc::clone(&wakers);
    let signal_thread = std::thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            *w.signal.lock().expect("not poisoned") = Some(sig);
            w.stop.store(true, Ordering::SeqCst);
            if let Some(l) = w.listener.lock().expect("not poisoned").as_ref() {
                shutdown_fd(l);
            }
            if let Some(c) = w.conn.lock().expect("not poisoned").as_ref() {
                shutdown_fd(c);
            }
        }
    });

    let cfg = BackendConfig {
        map_memory: true,
        misses: args.misses,
        miss_need_reply: args.miss_need_reply,
        split_replies: false,
    };
    let epoch = Instant::now();
    let mut conn = 0u32;
    let mut code = ExitCode::SUCCESS;
    let mut failure = None;
    while !wakers.stop.load(Ordering::SeqCst) {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if wakers.stop.load(Ordering::SeqCst) => break,
            Err(e) => {
                failure = Some(anyhow::Error::from(e).context("accept failed"));
                code = ExitCode::from(2);
                break;
            }
        };
        conn += 1;
        eprintln!("front-end {conn} connected");
        *wakers.conn.lock().expect("not poisoned") = Some(stream.try_clone()?);
        if wakers.stop.load(Ordering::SeqCst) {
            shutdown_fd(&stream);
        }
        let mut b = Backend::new(UnixTransport::from_stream(stream), None, cfg);
        b.set_max_queue_pairs(args.queue_pairs);
        b.set_reply_plan(plan.clone());
        if let Some(f) = &mut trace_out {
            b.set_trace(Box::new(f.try_clone()?), epoch, conn);
        } else if trace_stderr {
            b.set_trace(Box::new(std::io::stderr()), epoch, conn);
        }
        let r = b.serve();
        *wakers.conn.lock().expect("not poisoned") = None;
        match r {
            Ok(()) => eprintln!(
                "front-end {conn} closed the connection after {} requests",
                b.requests_served()
            ),
            Err(e) if args.once => {
                failure = Some(anyhow::Error::from(e));
                code = ExitCode::from(2);
            }
            Err(e) => eprintln!("front-end {conn}: {e} (after {} requests)", b.requests_served()),
        }
        // A connection that sent nothing (another back-end probing whether
        // this one is alive) does not use up `--once`'s one front-end.
        if args.once && (b.requests_served() > 0 || failure.is_some()) {
            break;
        }
    }
    handle.close();
    let _ = signal_thread.join();
    if let Some(sig) = *wakers.signal.lock().expect("not poisoned") {
        let name = if sig == SIGINT { "SIGINT" } else { "SIGTERM" };
        eprintln!("stopped by {name} after {conn} front-end(s); socket removed");
    }
    if let Some(e) = failure {
        return Err(e.context(format!("back-end on {}", args.socket.display())));
    }
    Ok(code)
}
