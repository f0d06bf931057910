//! The back-end as its own process, driven by a front-end from another code
//! base: rust-vmm's `vhost` `Frontend` connects to `vhost-race backend
//! --socket PATH`, negotiates REPLY_ACK, passes guest memory as a memfd
//! (SCM_RIGHTS between processes; the back-end maps it with vm-memory) and
//! sends requests with NEED_REPLY, each of which the back-end acknowledges.
//! When the front-end closes the socket the back-end says how many requests
//! it served and exits 0.
//!
//! Leaves out: IOTLB messages and postcopy (rust-vmm's `Frontend` sends
//! neither; the reference's own front-end covers them on a socketpair).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use reference::frontend::guest_ram_region;
use reference::harness::guest_ram_memfd;
use vhost::vhost_user::message::{VhostUserHeaderFlag, VhostUserProtocolFeatures};
use vhost::vhost_user::{Frontend, VhostUserFrontend};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo};

use crate::common::{socket_path, BackendProcess};

#[test]
fn rust_vmm_frontend_drives_the_backend_process() {
    use std::os::fd::AsRawFd;

    let path = socket_path("rust-vmm");
    let backend = BackendProcess::start(&path);

    let mut fe = Frontend::connect(&path, 1).expect("connect");
    let mut sent = 0;
    fe.set_owner().expect("SET_OWNER");
    let features = fe.get_features().expect("GET_FEATURES");
    fe.set_features(features).expect("SET_FEATURES");
    let offered = fe.get_protocol_features().expect("GET_PROTOCOL_FEATURES");
    assert!(offered.contains(VhostUserProtocolFeatures::REPLY_ACK));
    fe.set_protocol_features(VhostUserProtocolFeatures::REPLY_ACK).expect("SET_PROTOCOL_FEATURES");
    sent += 5;

    // From here every request carries NEED_REPLY; rust-vmm waits for each ack.
    fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    // The guest RAM the reference's own front-end passes, same region.
    let ram = guest_ram_memfd().expect("guest RAM memfd");
    let r = guest_ram_region();
    let region = VhostUserMemoryRegionInfo {
        guest_phys_addr: r.guest_phys_addr,
        memory_size: r.memory_size,
        userspace_addr: r.userspace_addr,
        mmap_offset: r.mmap_offset,
        mmap_handle: ram.as_raw_fd(),
    };
    fe.set_mem_table(&[region]).expect("SET_MEM_TABLE acknowledged (memfd mapped)");
    fe.set_vring_num(0, 256).expect("SET_VRING_NUM acknowledged");
    fe.set_vring_base(0, 0).expect("SET_VRING_BASE acknowledged");
    sent += 3;
    fe.set_hdr_flags(VhostUserHeaderFlag::empty());
    assert_eq!(fe.get_features().expect("GET_FEATURES"), features);
    sent += 1;
    drop(fe);

    let (code, stderr) = backend.wait();
    assert_eq!(code, Some(0), "back-end failed: {stderr}");
    assert!(
        stderr.contains(&format!("front-end 1 closed the connection after {sent} requests")),
        "{stderr}"
    );
    assert!(!path.exists(), "the back-end removes its socket file");
}

/// Bytes from a broken peer: a header whose flags are not a front-end
/// request's. The back-end process reports the typed error on one line,
/// exits with the CLI's error code 2, and leaves no socket file behind.
#[test]
fn a_malformed_header_from_the_peer_ends_the_backend_process_cleanly() {
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    let path = socket_path("malformed");
    let backend = BackendProcess::start(&path);
    let mut peer = UnixStream::connect(&path).expect("connect");
    // GET_FEATURES (1) with flags 0x0: the version bits say no protocol.
    let header: Vec<u8> = [1u32, 0, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
    peer.write_all(&header).expect("write");
    let (code, stderr) = backend.wait();
    assert_eq!(code, Some(2), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(last.starts_with("error: back-end on "), "{stderr}");
    assert!(
        last.ends_with(": malformed message: bad flags 0x0, expected 0x1"),
        "the error names the bad flags, once: {last}"
    );
    assert!(!path.exists(), "the back-end removes its socket file");
}

fn run_backend_expecting_refusal(path: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_vhost-race"))
        .args(["backend", "--socket"])
        .arg(path)
        .output()
        .expect("run the back-end");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(stderr.lines().count(), 1, "one line, and no \"listening\": {stderr}");
    stderr
}

#[test]
fn a_regular_file_at_the_socket_path_is_refused_and_kept() {
    let path = socket_path("regular-file");
    std::fs::write(&path, "notes\n").unwrap();
    let stderr = run_backend_expecting_refusal(&path);
    assert!(stderr.contains("exists and is not a socket; not removing it"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "notes\n", "the file is untouched");
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_live_back_end_keeps_its_socket_and_a_stale_socket_is_reused() {
    let path = socket_path("live");
    let mut first = BackendProcess::start(&path);
    let stderr = run_backend_expecting_refusal(&path);
    assert!(stderr.contains("a back-end is already listening on"), "{stderr}");
    assert!(std::os::unix::net::UnixStream::connect(&path).is_ok(), "the first still serves");
    // A socket file nobody accepts on (its back-end was killed) is reused.
    let mut c = first.0.take().unwrap();
    c.kill().unwrap();
    c.wait().unwrap();
    assert!(path.exists(), "SIGKILL leaves the socket file behind");
    let second = BackendProcess::start_when_listening(&path);
    // Killed like the first, it too leaves its socket file behind.
    drop(second);
    let _ = std::fs::remove_file(&path);
}

/// The default back-end serves front-ends one after another, and SIGTERM
/// ends it cleanly: exit 0, socket file removed, said on stderr.
#[test]
fn the_back_end_serves_a_reconnecting_front_end_and_cleans_up_on_sigterm() {
    use std::io::{Read, Write};
    let path = socket_path("reconnect");
    let mut backend = BackendProcess::start_serving(&path);
    let get_features: Vec<u8> = [1u32, 1, 0].iter().flat_map(|w| w.to_le_bytes()).collect();
    for _ in 0..2 {
        let mut fe = std::os::unix::net::UnixStream::connect(&path).unwrap();
        fe.write_all(&get_features).unwrap();
        let mut reply = [0u8; 20];
        fe.read_exact(&mut reply).unwrap();
        assert_eq!(&reply[..8], &[1, 0, 0, 0, 5, 0, 0, 0], "GET_FEATURES answered");
    }
    // A third front-end is connected when the signal comes.
    let _fe = std::os::unix::net::UnixStream::connect(&path).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let child = backend.0.take().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("front-end 2 closed the connection after 1 requests"), "{stderr}");
    assert!(stderr.contains("stopped by SIGTERM after 3 front-end(s); socket removed"), "{stderr}");
    assert!(!path.exists(), "the socket file is removed");
}

/// `backend --replay` answers the first IOTLB update with the words device
/// start reads in a `trace --json` counterexample.
#[test]
fn backend_replay_answers_with_the_counterexamples_words() {
    use std::io::{Read, Write};
    let dir = std::env::temp_dir().join(format!("vhost-race-replay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trace = dir.join("trace.json");
    let out = Command::new(env!("CARGO_BIN_EXE_vhost-race"))
        .args(["trace", "--variant", "qemu-9.1", "--property", "no log", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success());
    std::fs::write(&trace, &out.stdout).unwrap();
    let path = dir.join("vhost.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_vhost-race"))
        .args(["backend", "--once", "--replay"])
        .arg(&trace)
        .arg("--socket")
        .arg(&path)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let backend = BackendProcess::wait_bound(child, &path);
    let mut fe = std::os::unix::net::UnixStream::connect(&path).unwrap();
    let words = |w: &[u32]| -> Vec<u8> { w.iter().flat_map(|w| w.to_le_bytes()).collect() };
    // REPLY_ACK, then one IOTLB update with NEED_REPLY.
    fe.write_all(&words(&[16, 1, 8, 1 << 3, 0])).unwrap();
    let mut update = words(&[22, 9, 32]);
    update.extend(words(&[0x1000, 0, 0x1000, 0, 0x1000, 0, 0x0203, 0]));
    fe.write_all(&update).unwrap();
    let mut got = [0u8; 20];
    fe.read_exact(&mut got).unwrap();
    // The swap of the "no log" counterexample: POSTCOPY_END's reply (30 = 0x1e).
    assert_eq!(&got[..], &words(&[0x1e, 5, 8, 0, 0])[..]);
    drop(fe);
    let (code, stderr) = backend.wait();
    assert_eq!(code, Some(0), "{stderr}");
    let _ = std::fs::remove_dir_all(&dir);
}
