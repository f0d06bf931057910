//! The `vhost-race backend` process as the tests start it: bounded waits for
//! its socket, killed on drop if a test fails first.
//!
//! Leaves out: anything a single test file needs alone.

#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the back-end if the test fails before it exits by itself.
pub struct BackendProcess(pub Option<Child>);

impl Drop for BackendProcess {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn socket_path(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("vhost-race-{name}-{}.sock", std::process::id()))
}

impl BackendProcess {
    /// Starts `vhost-race backend --once --socket path` and waits (bounded)
    /// until it has bound the socket.
    pub fn start(path: &Path) -> BackendProcess {
        Self::spawn(path, &["--once"])
    }

    /// Starts a back-end that serves front-ends one after another.
    pub fn start_serving(path: &Path) -> BackendProcess {
        Self::spawn(path, &[])
    }

    /// Starts one on a path where a stale socket file exists, and waits until
    /// it says it listens (the file exists before it binds).
    pub fn start_when_listening(path: &Path) -> BackendProcess {
        let b = Self::spawn(path, &["--once"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::os::unix::net::UnixStream::connect(path).is_err() {
            assert!(Instant::now() < deadline, "the back-end never listened");
            std::thread::sleep(Duration::from_millis(10));
        }
        b
    }

    pub fn spawn(path: &Path, extra: &[&str]) -> BackendProcess {
        let child = Command::new(env!("CARGO_BIN_EXE_vhost-race"))
            .arg("backend")
            .args(extra)
            .arg("--socket")
            .arg(path)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start the back-end");
        Self::wait_bound(child, path)
    }

    pub fn wait_bound(child: Child, path: &Path) -> BackendProcess {
        let mut backend = BackendProcess(Some(child));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !path.exists() {
            let child = backend.0.as_mut().expect("running");
            assert!(child.try_wait().unwrap().is_none(), "the back-end exited before binding");
            assert!(Instant::now() < deadline, "the back-end never bound {}", path.display());
            std::thread::sleep(Duration::from_millis(10));
        }
        backend
    }

    /// Waits for the back-end to exit by itself; its exit status and stderr.
    pub fn wait(mut self) -> (Option<i32>, String) {
        let out = self.0.take().expect("running").wait_with_output().expect("back-end exits");
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    }
}
