//! Malformed input from either peer: each case of the wire's error list gives
//! a typed error, the connection is shut down, no descriptor leaks (the
//! process's `/proc/self/fd` count is the same before and after) and no
//! thread stays blocked (every thread is joined within a bound).
//!
//! Leaves out: malformed input the wire cannot express (partial words in
//! flags are just other flags).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::time::Duration;

use reference::backend::{Backend, BackendConfig, BackendError};
use reference::frontend::{Frontend, FrontendError};
use reference::qemu_log::QemuError;
use reference::scenario::{LockPolicy, Scenario, ThreadRole, Variant};
use reference::sync::ParkingLot;
use reference::transport::{read_all, Transport, TransportError, UnixTransport};
use reference::wire::{self, Header, Request, WireError, MAX_FDS};

/// Tests in this file count the process's descriptors: one at a time.
static SERIAL: parking_lot::Mutex<()> = parking_lot::Mutex::new(());

/// A bound on how long any thread here may take; reaching it fails the test
/// as "left blocked" (it is not a timing assertion on the code under test).
const BLOCKED: Duration = Duration::from_secs(20);

fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("procfs").count()
}

fn memfd() -> OwnedFd {
    nix::sys::memfd::memfd_create(c"test", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap()
}

/// Runs `f` on a thread and waits for it at most [`BLOCKED`].
fn joined<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    let h = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    let r = rx.recv_timeout(BLOCKED).expect("a thread was left blocked");
    h.join().expect("no panic");
    r
}

/// Sends `bytes` (and `fds`) from a raw front-end to a back-end, shuts the
/// raw end's writing down if `then_eof`, and returns the back-end's result.
fn backend_gets(bytes: &[u8], fds: &[BorrowedFd<'_>], then_eof: bool) -> Result<(), BackendError> {
    let (fe, be) = UnixTransport::pair().unwrap();
    let server =
        std::thread::spawn(move || Backend::new(be, None, BackendConfig::default()).serve());
    fe.send(bytes, fds).unwrap();
    if then_eof {
        nix::sys::socket::shutdown(fe.as_fd().as_raw_fd(), nix::sys::socket::Shutdown::Write)
            .unwrap();
    }
    let r = joined(move || server.join().expect("back-end did not panic"));
    // Shut down cleanly: the raw front-end sees end of stream, not a hang.
    let mut b = [0u8; 64];
    let n = joined(move || read_all(&fe, &mut b, &mut Vec::new()).unwrap());
    assert!(n < 64, "the back-end closed the connection");
    r
}

fn check_backend(
    bytes: Vec<u8>,
    with_fd: bool,
    then_eof: bool,
    expect: impl Fn(&BackendError) -> bool,
) {
    let _serial = SERIAL.lock();
    let before = fd_count();
    {
        let fd = memfd();
        let fds: Vec<BorrowedFd<'_>> = if with_fd { vec![fd.as_fd()] } else { vec![] };
        let r = backend_gets(&bytes, &fds, then_eof);
        let e = r.expect_err("malformed input is an error");
        assert!(expect(&e), "unexpected error {e:?}");
    }
    assert_eq!(fd_count(), before, "no descriptor leaked");
}

#[test]
fn backend_rejects_bad_flags() {
    let h = Header { request: Request::GetFeatures as u32, flags: 0x5, size: 0 };
    check_backend(wire::encode(h, &[]), false, false, |e| {
        matches!(e, BackendError::Wire(WireError::BadFlags { got: 0x5, .. }))
    });
}

#[test]
fn backend_rejects_payload_over_4096() {
    let h = Header::request(Request::SetMemTable, 0, true);
    let h = Header { size: 4097, ..h };
    check_backend(h.to_bytes().to_vec(), false, false, |e| {
        matches!(e, BackendError::Wire(WireError::PayloadTooLarge(4097)))
    });
}

#[test]
fn backend_rejects_eof_mid_header() {
    let bytes = Header::request(Request::GetFeatures, 0, false).to_bytes()[..6].to_vec();
    check_backend(bytes, false, true, |e| {
        matches!(e, BackendError::EofMidMessage { got: 6, expected: 12 })
    });
}

#[test]
fn backend_rejects_eof_mid_payload() {
    let mut bytes = wire::iotlb_update_request(&Scenario::iotlb_update(0), true);
    bytes.truncate(wire::HEADER_SIZE + 10);
    check_backend(bytes, false, true, |e| {
        matches!(e, BackendError::EofMidMessage { got: 10, expected: 32 })
    });
}

#[test]
fn backend_rejects_short_payload() {
    let payload = [0u8; 20];
    let bytes = wire::encode(Header::request(Request::IotlbMsg, 20, true), &payload);
    check_backend(bytes, false, false, |e| {
        matches!(e, BackendError::Wire(WireError::PayloadSize { got: 20, expected: 32 }))
    });
}

#[test]
fn backend_rejects_and_closes_unexpected_fds() {
    let bytes = wire::encode(Header::request(Request::GetFeatures, 0, false), &[]);
    check_backend(bytes, true, false, |e| {
        matches!(e, BackendError::UnexpectedFds { request: Request::GetFeatures, count: 1, .. })
    });
}

#[test]
fn backend_rejects_and_closes_too_many_fds() {
    let _serial = SERIAL.lock();
    let before = fd_count();
    {
        let (fe, be) = UnixTransport::pair().unwrap();
        let server =
            std::thread::spawn(move || Backend::new(be, None, BackendConfig::default()).serve());
        let fds: Vec<OwnedFd> = (0..MAX_FDS + 1).map(|_| memfd()).collect();
        let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let bytes = wire::encode(Header::request(Request::SetMemTable, 0, true), &[]);
        // The transport refuses to send so many; go around it.
        nix::sys::socket::sendmsg::<()>(
            fe.as_fd().as_raw_fd(),
            &[std::io::IoSlice::new(&bytes)],
            &[nix::sys::socket::ControlMessage::ScmRights(&raw)],
            nix::sys::socket::MsgFlags::empty(),
            None,
        )
        .unwrap();
        let r = joined(move || server.join().expect("no panic"));
        assert!(matches!(r, Err(BackendError::Transport(TransportError::TooManyFds(9)))), "{r:?}");
    }
    assert_eq!(fd_count(), before, "no descriptor leaked");
}

// ---- malformed replies and back-end requests, seen by the front-end ----

type Fe = Frontend<ParkingLot, UnixTransport>;

/// A front-end whose peer is a raw script: `script` gets the raw back-end
/// end (main socket, back-end channel) and runs while `call` runs on the
/// front-end. Returns `call`'s result and the log.
fn frontend_against<R: Send + 'static>(
    script: impl FnOnce(UnixTransport, UnixTransport) + Send + 'static,
    call: impl FnOnce(&Fe) -> R + Send + 'static,
) -> (R, Vec<QemuError>, Vec<u8>) {
    let (fe_main, be_main) = UnixTransport::pair().unwrap();
    let (fe_chan, be_chan) = UnixTransport::pair().unwrap();
    let fe = std::sync::Arc::new(Fe::new(
        fe_main,
        Some(fe_chan),
        Variant::new(LockPolicy::Qemu91),
        Scenario::default(),
    ));
    let peer = std::thread::spawn(move || script(be_main, be_chan));
    let fe2 = std::sync::Arc::clone(&fe);
    let r = joined(move || call(&fe2));
    // What is left unread on the main socket once the peer is done.
    joined(move || peer.join().expect("script did not panic"));
    let mut rest = vec![0u8; 64];
    let fe3 = std::sync::Arc::clone(&fe);
    let n = joined(move || {
        fe3.shutdown();
        read_all(fe3.main_transport(), &mut rest, &mut Vec::new()).map(|n| {
            rest.truncate(n);
            rest
        })
    });
    let log = fe.record().log_lines().into_iter().map(|l| l.error).collect();
    (r, log, n.unwrap())
}

/// Reads the 44-byte IOTLB request, then sends `reply` (and `fd`), then
/// closes if `then_eof`.
fn reply_with(
    reply: Vec<u8>,
    with_fd: bool,
    then_eof: bool,
) -> impl FnOnce(UnixTransport, UnixTransport) + Send {
    move |be, _chan| {
        let mut req = [0u8; wire::IOTLB_REQUEST_SIZE];
        assert_eq!(read_all(&be, &mut req, &mut Vec::new()).unwrap(), req.len());
        let fd = memfd();
        let fds: Vec<BorrowedFd<'_>> = if with_fd { vec![fd.as_fd()] } else { vec![] };
        be.send(&reply, &fds).unwrap();
        if then_eof {
            be.shutdown();
        }
    }
}

fn iotlb_call(fe: &Fe) -> Result<(), FrontendError> {
    fe.vhost_user_send_device_iotlb_msg(ThreadRole::DeviceStart, &Scenario::iotlb_update(0))
}

fn check_frontend(
    reply: Vec<u8>,
    with_fd: bool,
    then_eof: bool,
    expect_err: impl Fn(&FrontendError) -> bool,
    expect_log: &[QemuError],
) -> Vec<u8> {
    let _serial = SERIAL.lock();
    let before = fd_count();
    let rest;
    {
        let (r, log, left) = frontend_against(reply_with(reply, with_fd, then_eof), iotlb_call);
        let e = r.expect_err("malformed reply is an error");
        assert!(expect_err(&e), "unexpected error {e:?}");
        assert_eq!(log, expect_log);
        rest = left;
    }
    assert_eq!(fd_count(), before, "no descriptor leaked");
    rest
}

#[test]
fn frontend_bad_flags_logs_qemus_line_and_reads_no_payload() {
    let reply = wire::encode(Header { request: 22, flags: 0x1, size: 8 }, &[0xab; 8]);
    let e = QemuError::ReadHeaderFlags { flags: 1 };
    let rest = check_frontend(
        reply,
        false,
        false,
        |x| matches!(x, FrontendError::Logged(QemuError::ReadHeaderFlags { flags: 1 })),
        &[e],
    );
    assert_eq!(e.to_string(), "Failed to read msg header. Flags 0x1 instead of 0x5.");
    assert_eq!(rest, vec![0xab; 8], "the payload is left on the socket");
}

#[test]
fn frontend_rejects_payload_over_4096() {
    let reply = Header { request: 22, flags: 0x5, size: 5000 }.to_bytes().to_vec();
    check_frontend(
        reply,
        false,
        false,
        |x| matches!(x, FrontendError::Logged(QemuError::ReadHeaderSize { size: 5000 })),
        &[QemuError::ReadHeaderSize { size: 5000 }],
    );
}

#[test]
fn frontend_reports_eof_mid_header() {
    let reply = wire::ack_reply(Request::IotlbMsg, 0)[..6].to_vec();
    let e = QemuError::ReadHeaderShort { read: 6, request: 22 };
    check_frontend(reply, false, true, |x| matches!(x, FrontendError::Logged(_)), &[e]);
}

#[test]
fn frontend_reports_eof_mid_payload() {
    let reply = wire::ack_reply(Request::IotlbMsg, 0)[..15].to_vec();
    let e = QemuError::ReadPayloadShort { read: 3, size: 8 };
    check_frontend(reply, false, true, |x| matches!(x, FrontendError::Logged(_)), &[e]);
}

#[test]
fn frontend_reports_a_reply_to_another_request() {
    let reply = wire::ack_reply(Request::PostcopyEnd, 0);
    let e = QemuError::UnexpectedMsgType { expected: 22, received: 30 };
    check_frontend(reply, false, false, |x| matches!(x, FrontendError::Logged(_)), &[e]);
}

#[test]
fn frontend_rejects_and_closes_unexpected_fds() {
    let reply = wire::ack_reply(Request::IotlbMsg, 0);
    check_frontend(
        reply,
        true,
        false,
        |x| matches!(x, FrontendError::UnexpectedFds { request: 22, count: 1 }),
        &[],
    );
}

fn main_loop_gets(msg: Vec<u8>) -> FrontendError {
    let _serial = SERIAL.lock();
    let before = fd_count();
    let e;
    {
        let (r, log, _) = frontend_against(
            move |_be, chan| {
                chan.send(&msg, &[]).unwrap();
            },
            |fe: &Fe| fe.main_loop_thread(),
        );
        e = r.expect_err("malformed back-end request is an error");
        assert!(log.is_empty(), "QEMU logs none of these through vhost_user_read: {log:?}");
    }
    assert_eq!(fd_count(), before, "no descriptor leaked");
    e
}

#[test]
fn main_loop_rejects_unknown_backend_request() {
    let e = main_loop_gets(wire::encode(Header { request: 99, flags: 0x9, size: 0 }, &[]));
    assert!(matches!(e, FrontendError::Wire(WireError::UnknownRequest(99))), "{e:?}");
}

#[test]
fn main_loop_rejects_backend_request_with_bad_flags() {
    let e = main_loop_gets(wire::encode(Header { request: 1, flags: 0x5, size: 0 }, &[]));
    assert!(matches!(e, FrontendError::Wire(WireError::BadFlags { .. })), "{e:?}");
}

#[test]
fn main_loop_rejects_backend_request_over_4096() {
    let e = main_loop_gets(Header { request: 1, flags: 0x1, size: 4097 }.to_bytes().to_vec());
    assert!(matches!(e, FrontendError::Wire(WireError::PayloadTooLarge(4097))), "{e:?}");
}
