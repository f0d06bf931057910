//! The same front-end, threads and back-end over the in-memory transport with
//! the parking_lot family: the handshake, the scenario for every variant
//! (short reads included), and scripted interleavings whose outcome is known
//! exactly (misframed header, swapped replies) with the ghost record telling
//! them apart.
//!
//! Leaves out: exploring interleavings (the `proofs` crate does, with loom and
//! shuttle families over this same transport).

use std::sync::Arc;

use reference::frontend::Frontend;
use reference::harness::{in_memory, spawn_backend, spawn_roles};
use reference::qemu_log::QemuError;
use reference::record::DeliveryOutcome;
use reference::scenario::{LockPolicy, Scenario, ThreadRole, Variant};
use reference::sync::{Join, ParkingLot};
use reference::transport::MemoryTransport;
use reference::wire::{self, Header, Request};

type MemFe = Frontend<ParkingLot, MemoryTransport<ParkingLot>>;

/// One run of `scenario` under `variant`; returns the log.
fn run_once(variant: Variant, scenario: &Scenario, handshake: bool) -> Vec<String> {
    let (mut fe, be) = in_memory::<ParkingLot>(variant, scenario, !handshake);
    let backend = spawn_backend::<ParkingLot, _>(be);
    if handshake {
        let ufd = fe.handshake(None, None).expect("handshake over memory");
        assert!(ufd.is_some(), "POSTCOPY_ADVISE's reply carries a descriptor");
    }
    let fe = Arc::new(fe);
    for (role, h) in spawn_roles(&fe, &scenario.threads(variant.policy)) {
        Join::join(h).unwrap_or_else(|_| panic!("{role:?} panicked")).ok();
    }
    let log = fe.record().rendered();
    fe.shutdown();
    let served = Join::join(backend).expect("no panic").expect("back-end served cleanly");
    assert!(served > 0);
    log
}

#[test]
fn handshake_and_scenario_run_over_memory() {
    let log = run_once(Variant::new(LockPolicy::Mutex), &Scenario::default(), true);
    assert!(log.is_empty(), "{log:?}");
}

#[test]
fn the_variants_the_model_finds_clean_log_nothing_over_memory() {
    for short_reads in [false, true] {
        let scenario = Scenario { short_reads, ..Scenario::default() };
        for policy in [
            LockPolicy::Mutex,
            LockPolicy::BqlListen,
            LockPolicy::BqlPostcopyEnd,
            LockPolicy::Qemu102,
        ] {
            for fail_start in [false, true] {
                let v = Variant { policy, fail_start };
                for _ in 0..200 {
                    let log = run_once(v, &scenario, false);
                    assert!(log.is_empty(), "{v} short_reads={short_reads}: {log:?}");
                }
            }
        }
    }
}

#[test]
fn qemu_9_1_runs_to_completion_over_memory() {
    // Whether the race shows depends on the OS scheduler here; what must
    // hold is that every run ends and logs only QEMU's messages.
    for _ in 0..500 {
        for line in run_once(Variant::new(LockPolicy::Qemu91), &Scenario::default(), false) {
            assert!(reference::qemu_log::LogLine::parse(&line).is_some(), "{line}");
        }
    }
}

/// A front-end and a serving back-end with no threads of the scenario.
fn pair() -> (Arc<MemFe>, ParkingLotJoin) {
    let scenario = Scenario { backend_misses: 0, ..Scenario::default() };
    let (fe, be) = in_memory::<ParkingLot>(Variant::new(LockPolicy::Qemu91), &scenario, true);
    (Arc::new(fe), spawn_backend::<ParkingLot, _>(be))
}

type ParkingLotJoin = std::thread::JoinHandle<Result<u64, reference::backend::BackendError>>;

fn write_both(fe: &MemFe) -> (Header, Header) {
    let iotlb = Header::request(Request::IotlbMsg, wire::IOTLB_PAYLOAD_SIZE, true);
    let end = Header::request(Request::PostcopyEnd, 0, true);
    fe.vhost_user_write(iotlb, &Scenario::iotlb_update(0).to_bytes(), &[]).unwrap();
    fe.vhost_user_write(end, &[], &[]).unwrap();
    (iotlb, end)
}

#[test]
fn whole_replies_swapped_are_logged_and_recorded_as_a_swap() {
    let (fe, backend) = pair();
    let (iotlb, end) = write_both(&fe);
    // The listen thread reads first and gets device start's reply, then
    // device start gets the listen thread's: the facts page's example.
    assert!(fe.process_message_reply(ThreadRole::PostcopyListen, &end).is_err());
    assert!(fe.process_message_reply(ThreadRole::DeviceStart, &iotlb).is_err());
    let log: Vec<QemuError> = fe.record().log_lines().iter().map(|l| l.error).collect();
    assert_eq!(
        log,
        [
            QemuError::UnexpectedMsgType { expected: 30, received: 22 },
            QemuError::UnexpectedMsgType { expected: 22, received: 30 },
        ]
    );
    assert_eq!(fe.record().swapped_pairs().len(), 1);
    fe.shutdown();
    Join::join(backend).unwrap().unwrap();
}

#[test]
fn a_header_read_mid_message_is_misframed_and_the_payload_is_left() {
    let (fe, backend) = pair();
    let (iotlb, end) = write_both(&fe);
    // Device start has read its header; the listen thread reads next and
    // gets device start's u64 and the first word of its own reply.
    let mut fds = Vec::new();
    let h = fe.vhost_user_read_header(ThreadRole::DeviceStart, iotlb.request, &mut fds).unwrap();
    assert_eq!(h, Header::reply(Request::IotlbMsg, 8));
    assert!(fe.process_message_reply(ThreadRole::PostcopyListen, &end).is_err());
    let d = fe.record().deliveries();
    assert_eq!(d.len(), 1);
    assert_eq!(d[0].outcome, DeliveryOutcome::MisframedHeader { flags: 0 });
    assert_eq!(d[0].received.map(|h| h.size), Some(30), "the next reply's code read as a size");
    // process_message_reply logs only the header line (postcopy_end's own
    // line comes from vhost_user_postcopy_end, not called here).
    assert_eq!(
        fe.record().rendered(),
        ["qemu-kvm: vhost_user_read_header: 4100,4133: Failed to read msg header. Flags 0x0 instead of 0x5."]
    );
    // No payload was read: device start's payload read now gets the rest of
    // the listen thread's header (flags 0x5, size 8) as its u64 status.
    let mut rest = [0u8; 8];
    let n = reference::transport::read_all(fe.main_transport(), &mut rest, &mut fds).unwrap();
    assert_eq!(n, 8);
    assert_eq!(rest, [5, 0, 0, 0, 8, 0, 0, 0]);
    fe.shutdown();
    Join::join(backend).unwrap().unwrap();
}

#[test]
fn a_main_loop_waiting_for_its_bottom_half_stops_at_shutdown() {
    // QEMU 10.2 with no listen thread started: the bottom half never comes.
    let scenario = Scenario { backend_misses: 0, ..Scenario::default() };
    let (fe, be) = in_memory::<ParkingLot>(Variant::new(LockPolicy::Qemu102), &scenario, true);
    let backend = spawn_backend::<ParkingLot, _>(be);
    let fe = Arc::new(fe);
    let handles = spawn_roles(&fe, &[ThreadRole::MainLoop]);
    fe.shutdown();
    for (_, h) in handles {
        assert!(Join::join(h).unwrap().is_err(), "the main loop gave up, not ran the half");
    }
    assert_eq!(Join::join(backend).unwrap().unwrap(), 0);
}

/// Under reply-queue the handshake's replies go through the buffered reader:
/// POSTCOPY_ADVISE's descriptor still reaches its reply, with whole reads
/// and with short ones, and the scenario then runs clean.
#[test]
fn reply_queue_handshake_gets_postcopy_advises_descriptor_through_the_buffered_reader() {
    for short_reads in [false, true] {
        let scenario = Scenario { short_reads, ..Scenario::default() };
        let log = run_once(Variant::new(LockPolicy::ReplyQueue), &scenario, true);
        assert!(log.is_empty(), "short reads {short_reads}: {log:?}");
    }
}
