//! Replays every counterexample the checker prints on the reference: the
//! reference's own front-end threads and back-end, over the in-memory
//! transport, with a [`Gate`] on every end that releases each socket
//! operation in the model's order.
//!
//! What it proves, per counterexample (the default matrix and every pinned
//! scenario flag): each socket operation of the path is made by the same
//! thread on the same end, and moves exactly the bytes the model's streams
//! hold (so each reader got the same reply, or the same pieces of one); the
//! QEMU lines logged by the time the path is over are the model's (as a
//! multiset: device start and the main loop share a thread id); and device
//! start's result, when the path finishes it, is the model's
//! `reported_success`.
//!
//! Lock acquisitions (the BQL, the request/reply mutex: the reference's
//! `Monitor<()>`s) are scheduled too, through [`Replay`]'s sync family, and
//! so are the back-end's misses (`Action::BackendSendMiss` is a send on the
//! back-end channel's back-end end, `Action::BackendReadMissReply` a receive
//! there). The two choices a real run leaves to timing are the gate's
//! ([`Gate::goes_next`]): whether the back-end sends its next miss or reads
//! its next request first, and whether the main loop reads the back-end
//! channel or runs the postcopy bottom half first. Every counterexample is
//! replayed, none skipped: 10 of the default matrix, 40 of
//! `--device-start-without-bql`, 14 of `--short-reads` and 30 of
//! `--miss-need-reply`.
//!
//! What it leaves out: lock releases (free), the listen thread's scheduling
//! of the bottom half (it moves no byte; the main loop waits for the bottom
//! half when the gate chooses it, and its BQL acquisition is what the
//! schedule orders), and the order of log lines between threads.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use model::verdict::{check, CheckOptions};
use model::{Action, Op, ReplyRace, Routine, State};
use reference::backend::{Backend, BackendConfig};
use reference::frontend::Frontend;
use reference::qemu_log::LogLine;
use reference::scenario::{Scenario, ThreadRole, Variant};
use reference::sync::{Monitor, ParkingLot, PlMonitor, SyncFamily};
use reference::transport::{Gate, GateOp, MemoryTransport, TransportError};
use stateright::Model;
use std::any::TypeId;

const BACKEND: &str = "backend";
/// The end name of a lock acquisition in the schedule.
const LOCK: &str = "lock";
/// How long the replay waits for the next scheduled operation before it
/// reports the schedule as stuck (a failure, not a timing measurement).
const STALL: Duration = Duration::from_secs(20);

/// One socket operation of the model's path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    thread: &'static str,
    end: &'static str,
    send: bool,
    bytes: Vec<u8>,
}

/// The socket operations of `action` taken in `last`.
fn events(model: &ReplyRace, last: &State, next: &State, action: Action) -> Vec<Event> {
    let ev = |thread, end, send, bytes| Event { thread, end, send, bytes };
    match action {
        Action::Step(role) => match model.current_op(last.thread(role)) {
            Some(Op::AcquireBql | Op::AcquireMutex) => vec![ev(role.name(), LOCK, true, vec![])],
            Some(Op::WriteIotlbUpdate(_) | Op::WriteMissAnswer | Op::WritePostcopyEnd) => {
                let sent = &next.to_backend.bytes()[last.to_backend.len()..];
                vec![ev(role.name(), "fe-main", true, sent.to_vec())]
            }
            Some(Op::ReplyMiss)
                if next.backend_channel_replies.len() > last.backend_channel_replies.len() =>
            {
                let k = last.backend_channel_replies.len();
                let sent = &next.backend_channel_replies.bytes()[k..];
                vec![ev(role.name(), "fe-chan", true, sent.to_vec())]
            }
            _ => vec![],
        },
        Action::Read(role, n) => {
            let read = last.to_frontend.peek(usize::from(n));
            vec![ev(role.name(), "fe-main", false, read.bytes().to_vec())]
        }
        Action::ServeBackendChannel => {
            let msg = &last.backend_channel.bytes()[..reference::wire::IOTLB_REQUEST_SIZE];
            vec![
                ev(ThreadRole::MainLoop.name(), "fe-chan", false, msg[..12].to_vec()),
                ev(ThreadRole::MainLoop.name(), "fe-chan", false, msg[12..].to_vec()),
                ev(ThreadRole::MainLoop.name(), LOCK, true, vec![]),
            ]
        }
        Action::RunPostcopyBh => vec![ev(ThreadRole::MainLoop.name(), LOCK, true, vec![])],
        Action::BackendHandle => {
            let taken = last.to_backend.len() - next.to_backend.len();
            let req = &last.to_backend.bytes()[..taken];
            let mut out = vec![ev(BACKEND, "be-main", false, req[..12].to_vec())];
            if req.len() > 12 {
                out.push(ev(BACKEND, "be-main", false, req[12..].to_vec()));
            }
            if next.to_frontend.len() > last.to_frontend.len() {
                let k = last.to_frontend.len();
                out.push(ev(BACKEND, "be-main", true, next.to_frontend.bytes()[k..].to_vec()));
            }
            out
        }
        Action::BackendWritePayload => {
            let k = last.to_frontend.len();
            vec![ev(BACKEND, "be-main", true, next.to_frontend.bytes()[k..].to_vec())]
        }
        Action::BackendSendMiss => {
            let sent = &next.backend_channel.bytes()[last.backend_channel.len()..];
            vec![ev(BACKEND, "be-chan", true, sent.to_vec())]
        }
        Action::BackendReadMissReply => {
            let reply = &last.backend_channel_replies.bytes()[..reference::wire::ACK_REPLY_SIZE];
            vec![ev(BACKEND, "be-chan", false, reply.to_vec())]
        }
        Action::LogReadError(_) => vec![],
    }
}

/// Whether `action` moves no bytes on a socket the replay schedules.
fn silent(model: &ReplyRace, s: &State, action: Action) -> bool {
    match action {
        Action::LogReadError(_) => true,
        Action::Step(role) => match model.current_op(s.thread(role)) {
            Some(Op::AcquireBql | Op::AcquireMutex) => false,
            Some(Op::WriteIotlbUpdate(_) | Op::WriteMissAnswer | Op::WritePostcopyEnd) => false,
            Some(Op::ReplyMiss) => !s.thread(role).miss_need_reply,
            _ => true,
        },
        _ => false,
    }
}

/// The state after every step that moves no scheduled bytes has run: what
/// the reference's threads reach on their own once the path's last socket
/// operation is done.
fn settle(model: &ReplyRace, mut s: State) -> State {
    loop {
        let mut actions = Vec::new();
        model.actions(&s, &mut actions);
        let Some(a) = actions.into_iter().find(|&a| silent(model, &s, a)) else { return s };
        s = model.next_state(&s, a).expect("enabled");
    }
}

#[derive(Default)]
struct Schedule {
    events: Vec<Event>,
    next: usize,
    busy: bool,
    closed: bool,
    /// What each thread that arrived waits for: an operation, or its turn
    /// to choose.
    waiting: BTreeMap<String, String>,
    mismatches: Vec<String>,
}

/// Releases socket operations in the order of `events`.
#[derive(Default)]
struct Replay {
    s: Mutex<Schedule>,
    c: Condvar,
}

impl Gate for Replay {
    fn before(&self, end: &'static str, op: GateOp) -> Result<usize, TransportError> {
        let me = std::thread::current().name().unwrap_or("?").to_string();
        let send = matches!(op, GateOp::Send(_));
        let mut s = self.s.lock().unwrap();
        loop {
            if s.closed {
                return Err(TransportError::Closed);
            }
            if !s.busy {
                if let Some(e) = s.events.get(s.next) {
                    if e.thread == me && e.end == end && e.send == send {
                        let cap = e.bytes.len();
                        s.busy = true;
                        s.waiting.remove(&me);
                        return Ok(cap);
                    }
                }
            }
            s.waiting.insert(me.clone(), format!("{op:?} on {end}"));
            s = self.c.wait(s).unwrap();
        }
    }

    /// Waits until the schedule's next operation is the calling thread's,
    /// and says whether it is `op` on `end` (the back-end's miss or its next
    /// request, the main loop's back-end channel or bottom half); no
    /// opinion once the schedule is over.
    fn goes_next(&self, end: &'static str, op: GateOp) -> Option<bool> {
        let me = std::thread::current().name().unwrap_or("?").to_string();
        let send = matches!(op, GateOp::Send(_));
        let mut s = self.s.lock().unwrap();
        loop {
            if s.closed {
                return None;
            }
            if !s.busy {
                match s.events.get(s.next) {
                    None => return None,
                    Some(e) if e.thread == me => {
                        let mine = e.end == end && e.send == send;
                        s.waiting.remove(&me);
                        return Some(mine);
                    }
                    Some(_) => {}
                }
            }
            s.waiting.insert(me.clone(), format!("its turn to choose ({op:?} on {end} or not)"));
            s = self.c.wait(s).unwrap();
        }
    }

    fn after(&self, end: &'static str, op: GateOp, bytes: &[u8]) {
        let mut s = self.s.lock().unwrap();
        let i = s.next;
        let e = s.events[i].clone();
        if e.bytes != bytes {
            s.mismatches.push(format!(
                "operation {i} ({} {} on {end}, {op:?}): model {:02x?}, reference {bytes:02x?}",
                e.thread,
                if e.send { "send" } else { "recv" },
                e.bytes
            ));
        }
        s.next += 1;
        s.busy = false;
        self.c.notify_all();
    }
}

/// The replay in progress: the sync family's locks ask it for their turn.
static CURRENT: Mutex<Option<Arc<Replay>>> = Mutex::new(None);
/// One replay at a time (the family's gate is process-wide).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Real threads whose plain locks (`Monitor<()>`: the BQL and the
/// request/reply mutex) are acquired in the schedule's order.
struct ReplayFamily;

/// [`ReplayFamily`]'s monitor: parking_lot's, gated when it is a plain lock.
struct ReplayMonitor<T>(PlMonitor<T>);

impl<T: Send + 'static> Monitor<T> for ReplayMonitor<T> {
    fn new(value: T) -> Self {
        ReplayMonitor(PlMonitor::new(value))
    }

    fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        if TypeId::of::<T>() != TypeId::of::<()>() {
            return self.0.with(f);
        }
        let gate = CURRENT.lock().unwrap().clone().expect("a replay is running");
        if gate.before(LOCK, GateOp::Send(0)).is_err() {
            // The replay is over: take the lock without a turn.
            return self.0.with(f);
        }
        self.0.with(|v| {
            gate.after(LOCK, GateOp::Send(0), &[]);
            f(v)
        })
    }

    fn with_notify<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        self.0.with_notify(f)
    }

    fn wait_until<R>(&self, ready: impl FnMut(&mut T) -> Option<R>) -> R {
        self.0.wait_until(ready)
    }
}

impl SyncFamily for ReplayFamily {
    type Monitor<T: Send + 'static> = ReplayMonitor<T>;
    type JoinHandle<R: Send + 'static> = std::thread::JoinHandle<R>;

    fn spawn<R: Send + 'static>(
        name: &str,
        f: impl FnOnce() -> R + Send + 'static,
    ) -> Self::JoinHandle<R> {
        ParkingLot::spawn(name, f)
    }

    fn yield_now() {
        ParkingLot::yield_now();
    }
}

/// Replays `actions` of `variant` on `scenario`; returns what differs.
fn replay(variant: Variant, scenario: Scenario, actions: &[Action]) -> Vec<String> {
    let model = ReplyRace::new(variant, scenario);
    let mut s = model.init_states().remove(0);
    let mut schedule = Vec::new();
    for &a in actions {
        let next = model.next_state(&s, a).expect("the path's actions are enabled");
        schedule.extend(events(&model, &s, &next, a));
        s = next;
    }
    let end = settle(&model, s);

    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let gate = Arc::new(Replay::default());
    gate.s.lock().unwrap().events = schedule.clone();
    *CURRENT.lock().unwrap() = Some(Arc::clone(&gate));
    let g = || Arc::clone(&gate) as Arc<dyn Gate>;
    let (fe_main, be_main) = MemoryTransport::<ReplayFamily>::pair();
    let (fe_chan, be_chan) = MemoryTransport::<ReplayFamily>::pair();
    let fe = Arc::new(Frontend::<ReplayFamily, _>::new(
        fe_main.with_gate(g(), "fe-main"),
        Some(fe_chan.with_gate(g(), "fe-chan")),
        variant,
        scenario,
    ));
    let cfg = BackendConfig {
        map_memory: false,
        misses: scenario.backend_misses,
        miss_need_reply: scenario.miss_need_reply,
        split_replies: scenario.split_replies,
    };
    let be_chan = Box::new(be_chan.with_gate(g(), "be-chan"));
    let mut backend = Backend::new(be_main.with_gate(g(), "be-main"), Some(be_chan), cfg);
    backend.assume_negotiated();
    let be = std::thread::Builder::new()
        .name(BACKEND.into())
        .spawn(move || backend.serve().map(|_| ()))
        .unwrap();
    let roles: Vec<_> = scenario
        .threads(variant.policy)
        .into_iter()
        .map(|role| {
            let fe = Arc::clone(&fe);
            let h = std::thread::Builder::new()
                .name(role.name().into())
                .spawn(move || fe.run_role(role))
                .unwrap();
            (role, h)
        })
        .collect();

    let mut diffs = Vec::new();
    // Wait for the whole schedule, then for the log to reach the model's.
    let deadline = Instant::now() + STALL;
    {
        let mut st = gate.s.lock().unwrap();
        while st.next < st.events.len() && Instant::now() < deadline {
            st = gate.c.wait_timeout(st, Duration::from_millis(50)).unwrap().0;
        }
        if st.next < st.events.len() {
            diffs.push(format!(
                "stuck at operation {} of {}: {:?}; waiting: {:?}",
                st.next,
                st.events.len(),
                st.events[st.next],
                st.waiting
            ));
        }
    }
    let want: Vec<String> = {
        let mut v: Vec<String> =
            model::trace::log_lines(&end).iter().map(LogLine::to_string).collect();
        v.sort();
        v
    };
    while fe.record().log_lines().len() < want.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut got = fe.record().rendered();
    got.sort();
    if got != want {
        diffs.push(format!("log: model {want:#?}, reference {got:#?}"));
    }
    {
        let mut st = gate.s.lock().unwrap();
        diffs.append(&mut st.mismatches);
        st.closed = true;
        gate.c.notify_all();
    }
    fe.shutdown();
    for (role, h) in roles {
        let r = h.join().expect("no panic");
        let t = end.thread(role);
        if role == ThreadRole::DeviceStart && t.routine == Routine::Done {
            let ok = t.reported_success == Some(true);
            if r.is_ok() != ok {
                diffs.push(format!("device start: model success {ok}, reference {r:?}"));
            }
        }
    }
    let _ = be.join().expect("no panic");
    diffs
}

/// Replays every counterexample of `scenario`; returns how many.
fn replay_all(scenario: Scenario) -> usize {
    let mut replayed = 0;
    let mut failures = Vec::new();
    for variant in Variant::all() {
        let v = check(variant, scenario, &CheckOptions::default());
        for p in &v.properties {
            let Some(actions) = &p.counterexample else { continue };
            replayed += 1;
            let diffs = replay(variant, scenario, actions);
            if !diffs.is_empty() {
                failures.push(format!("{variant} \"{}\": {diffs:#?}", p.name));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    replayed
}

#[test]
fn every_default_counterexample_replays_on_the_reference() {
    assert_eq!(replay_all(Scenario::default()), 10);
}

#[test]
fn every_device_start_without_bql_counterexample_replays_on_the_reference() {
    let scenario = Scenario { device_start_holds_bql: false, ..Scenario::default() };
    assert_eq!(replay_all(scenario), 40);
}

#[test]
fn every_short_reads_counterexample_replays_on_the_reference() {
    assert_eq!(replay_all(Scenario { short_reads: true, ..Scenario::default() }), 14);
}

#[test]
fn every_queued_reads_counterexample_replays_on_the_reference() {
    assert_eq!(replay_all(Scenario { queued_reads: true, ..Scenario::default() }), 10);
}

#[test]
fn every_split_replies_queued_reads_counterexample_replays_on_the_reference() {
    let scenario = Scenario { split_replies: true, queued_reads: true, ..Scenario::default() };
    assert_eq!(replay_all(scenario), 10);
}

#[test]
fn every_miss_need_reply_counterexample_replays_on_the_reference() {
    assert_eq!(replay_all(Scenario { miss_need_reply: true, ..Scenario::default() }), 30);
}

#[test]
fn every_counterexample_of_a_larger_short_reads_scenario_replays_on_the_reference() {
    // 4 updates, 3 misses: counterexamples found over merged states, those
    // of final states over the reduced graph (verdict::shortest_counterexamples).
    let scenario =
        Scenario { virtqueues: 4, backend_misses: 3, short_reads: true, ..Scenario::default() };
    assert_eq!(replay_all(scenario), 14);
}

#[test]
fn a_misframed_size_of_30_reads_30_bytes_on_the_reference_too() {
    // Device start assembles `[16 5 1e]` from two replies and reads a
    // 30-byte payload: the reference's `read_all` of `size` bytes takes the
    // same 16 + 14 bytes, and the main loop's next header read the 6 left.
    use Action::*;
    use ThreadRole::*;
    let scenario = Scenario {
        virtqueues: 1,
        device_start_holds_bql: false,
        short_reads: true,
        ..Scenario::default()
    };
    let path = [
        Step(DeviceStart),
        Step(PostcopyListen),
        Step(PostcopyListen),
        BackendHandle,
        Read(DeviceStart, 8),
        Read(PostcopyListen, 12),
        LogReadError(PostcopyListen),
        Step(PostcopyListen),
        BackendHandle,
        Read(DeviceStart, 4),
        Read(DeviceStart, 16),
        BackendSendMiss,
        ServeBackendChannel,
        Step(MainLoop),
        BackendHandle,
        Read(DeviceStart, 14),
        Step(DeviceStart),
        Read(MainLoop, 6),
    ];
    let diffs = replay("qemu-9.1".parse().unwrap(), scenario, &path);
    assert!(diffs.is_empty(), "{diffs:#?}");
}
