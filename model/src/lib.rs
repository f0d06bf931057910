//! A stateright model of the vhost-user request/reply race during postcopy
//! migration: QEMU's front-end threads sharing one socket, the socket, and a
//! back-end.
//!
//! Source: hw/virtio/vhost-user.c and hw/virtio/vhost.c of mid-2024, the
//! July–September 2024 qemu-devel review thread, and the facts page
//! (shared/vhost-user-facts.md).
//!
//! What is modelled:
//! - Threads, each a program counter over a fixed list of [`Op`]s built from
//!   the [`Variant`] and the [`Scenario`]: *device start* (one IOTLB update
//!   with NEED_REPLY per virtqueue, optionally under the BQL, optionally
//!   failing the start on a failed update as QEMU 9.2 does); *postcopy listen*
//!   (fault-thread join, then POSTCOPY_END with NEED_REPLY and its reply, or in
//!   QEMU 10.2 scheduling a main-loop bottom half that does it); *main loop*
//!   (under the BQL: answers each back-end IOTLB miss with an update and its
//!   reply read, replying on the back-end channel if the miss asked; runs the
//!   10.2 bottom half).
//! - The socket as byte streams ([`stream::Stream`]) built with
//!   [`protocol::wire`]: front-end to back-end, back-end to front-end, and
//!   the back-end channel both ways. A write appends a whole message at
//!   once. A front-end read takes exactly the bytes QEMU's `read_all` asks
//!   for, at whatever offset the stream is (12 header bytes, then the
//!   header's `size` bytes, so a misframed size of 30 reads 30 bytes and the
//!   next header starts where that read ended), and blocks until they are
//!   there. With [`Scenario::queued_reads`] a `recv` returns what is
//!   queued, up to what it asks, as Linux's Unix stream sockets do, and
//!   `read_all` loops. With [`Scenario::short_reads`] a `recv` may also
//!   return less than is queued (a peer that delivers in pieces); to keep
//!   the state space small such a read returns a multiple of 4 bytes: see
//!   [`ReplyRace::read_sizes`]. A header whose
//!   flags are not 0x5 is rejected without reading the payload, as in
//!   `vhost_user_read_header`.
//! - Ghost data per byte (which thread's request it answers, whether
//!   a message starts there) so that properties can say who got whose reply.
//! - The back-end: one request at a time (read and reply are one step;
//!   with [`Scenario::split_replies`] the reply's payload is written in a
//!   step of its own after its header, as libvhost-user writes it),
//!   REPLY_ACK replies, and `backend_misses` BACKEND_IOTLB_MSG misses sent at
//!   any moment between requests; with NEED_REPLY it waits for the answer
//!   before reading the main socket again.
//! - The BQL and the per-connection request/reply mutex as state.
//! - Every QEMU error message, logged into the state by the step that would
//!   log it. A failed check of a read (`vhost_user_read_header`,
//!   `process_message_reply`) logs in a step of its own after the read, as
//!   in QEMU, where other threads run between `read_all` and `error_report`.
//!
//! What is left out (see CONFORMANCE.md): the postcopy fault thread (no
//! socket traffic; its join is a step without effect), rollback requests after
//! a failed start, requests before and after the race (handshake, vring
//! setup), back-end failures (every ack is 0), short reads of other than a
//! multiple of 4 bytes or all that can be read, and timing.
//!
//! The smallest scenario (one IOTLB update, nothing else, `qemu-9.1`) has
//! exactly these reachable states, which `tests/model.rs` pins:
//! 1. device start before its write;
//! 2. the request on the socket;
//! 3. the back-end has replied;
//! 4. device start has read the header;
//! 5. device start has read the payload and finished.

use protocol::qemu_log::QemuError;
use protocol::scenario::{LockPolicy, Scenario, ThreadRole, Variant};
use protocol::wire::{self, BackendRequest, Header, Request};
use stateright::{Model, Property};

pub mod explain;
pub mod explorer;
mod packed;
pub mod reduce;
pub mod replay;
pub mod search;
pub mod stream;
pub mod sweep;
pub mod trace;
pub mod verdict;

pub use stream::{Run, Stream};

/// One step of a thread's program.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// `bql_lock()`: blocks while another thread holds the BQL.
    AcquireBql,
    /// `bql_unlock()`.
    ReleaseBql,
    /// Take the request/reply mutex (the July 2024 patch).
    AcquireMutex,
    /// Release the request/reply mutex.
    ReleaseMutex,
    /// `vhost_user_write` of an IOTLB update for virtqueue `vq`
    /// (`vhost_device_iotlb_miss` on the used ring, from `vhost_dev_start`).
    WriteIotlbUpdate(u8),
    /// `vhost_user_write` of the update answering the current back-end miss.
    WriteMissAnswer,
    /// `vhost_user_write` of POSTCOPY_END (`vhost_user_postcopy_end`).
    WritePostcopyEnd,
    /// `vhost_user_read_header`: 12 bytes, flags must be 0x5.
    ReadHeader,
    /// `vhost_user_read` payload part, then `process_message_reply`'s checks.
    ReadPayload,
    /// The caller logs the failure of the call just made (skipped on success).
    Report(QemuError),
    /// QEMU 9.2: a failed update fails device start; jump to `target`.
    AbortIfFailed(u8),
    /// `backend_read` replies on the back-end channel if the miss asked.
    ReplyMiss,
    /// `postcopy_ram_incoming_cleanup` joins the fault thread (no socket traffic).
    JoinFaultThread,
    /// QEMU 10.2: schedule the postcopy cleanup bottom half on the main loop.
    ScheduleBh,
    /// Device stop at quit: waits until every other thread is done; with
    /// QEMU 9.2's fail-start a start that failed was rolled back and is not
    /// stopped again, so it jumps to `end`.
    AwaitQuit(u8),
    /// `vhost_user_write` of GET_VRING_BASE for virtqueue `vq`
    /// (`vhost_virtqueue_stop` from `vhost_dev_stop`); its reply is always read.
    WriteGetVringBase(u8),
    /// Reply queue: wait until a whole reply has been handed to this thread
    /// (reading whole replies for the queue's head while no other thread
    /// reads, [`Action::Read`]), then `process_message_reply`'s checks.
    AwaitReply,
}

/// What a thread is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Routine {
    /// The thread is not part of the scenario.
    Absent,
    /// Main loop only: waiting in poll for a back-end message or a bottom half.
    Idle,
    /// Running this program of [`ReplyRace::programs`].
    Running(Program),
    /// The thread has finished its work.
    Done,
}

/// One front-end thread.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadState {
    /// What it runs.
    pub routine: Routine,
    /// Index of the next op of its program.
    pub pc: u8,
    /// Bytes of the read in progress (header or payload); with the reply
    /// queue, the whole reply handed to this thread.
    pub buf: Stream,
    /// The header read, while its payload is read.
    pub hdr: Option<Header>,
    /// Request code of the call in flight (what `process_message_reply` expects).
    pub expect: u32,
    /// Whether the call in flight has failed.
    pub call_failed: bool,
    /// Device start: whether any update failed.
    pub start_failed: bool,
    /// Device start: updates acknowledged (ack 0) by a reply that was theirs.
    pub own_acks: u8,
    /// Main loop: back-end messages taken so far.
    pub misses_taken: u8,
    /// Main loop: whether the miss being handled asked for a reply.
    pub miss_need_reply: bool,
    /// Main loop: whether the postcopy bottom half has run.
    pub bh_done: bool,
    /// Device start: what it reported when it finished (`Some(true)` = success).
    pub reported_success: Option<bool>,
    /// Whether the reply being read so far is this thread's own, from its start.
    pub reply_is_own: bool,
    /// A check of the read just completed failed and its `error_report` has
    /// not run yet: in QEMU other threads run between `read_all` returning
    /// and the message, so a thread can log after others that read later.
    pub pending_log: Option<QemuError>,
}

impl ThreadState {
    /// Reply queue, at `Op::AwaitReply`: whether a whole reply has been
    /// handed to this thread (into `buf`, which a queue reader never fills
    /// partly: it reads into `State::reader_buf`).
    pub fn reply_handed(&self) -> bool {
        !self.buf.is_empty()
    }

    fn new(routine: Routine) -> Self {
        ThreadState {
            routine,
            pc: 0,
            buf: Stream::new(),
            hdr: None,
            expect: 0,
            call_failed: false,
            start_failed: false,
            own_acks: 0,
            misses_taken: 0,
            miss_need_reply: false,
            bh_done: false,
            reported_success: None,
            reply_is_own: false,
            pending_log: None,
        }
    }
}

/// The back-end's own state.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct BackendState {
    /// Misses sent on the back-end channel so far.
    pub misses_sent: u8,
    /// Whether it waits for the answer to a miss sent with NEED_REPLY.
    pub awaiting_miss_reply: bool,
    /// With [`Scenario::split_replies`]: the payload of the reply whose
    /// header it has written, not yet written (empty otherwise).
    pub unsent: Stream,
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct State {
    /// Front-end threads, indexed by [`ThreadRole`] order.
    pub threads: [ThreadState; 3],
    /// The back-end.
    pub backend: BackendState,
    /// Main socket, front-end to back-end.
    pub to_backend: Stream,
    /// Main socket, back-end to front-end: the replies.
    pub to_frontend: Stream,
    /// Back-end channel, back-end to front-end: the misses.
    pub backend_channel: Stream,
    /// Back-end channel, front-end to back-end: answers to misses.
    pub backend_channel_replies: Stream,
    /// Holder of the BQL.
    pub bql: Option<ThreadRole>,
    /// Holder of the request/reply mutex.
    pub mutex: Option<ThreadRole>,
    /// QEMU 10.2: the postcopy bottom half is scheduled and not yet run.
    pub bh_pending: bool,
    /// What QEMU has logged, in order, with the thread that logged it.
    pub log: Log,
    /// Ghost: some thread consumed bytes of another thread's reply.
    pub stolen: bool,
    /// Ghost: some header read began in the middle of a message.
    pub misframed: bool,
    /// Reply queue: requesters waiting for a reply, in the order their
    /// requests are on the socket.
    pub reply_queue: Vec<ThreadRole>,
    /// Reply queue: the thread reading a reply for the queue's head, while
    /// the reply is not whole yet.
    pub reader: Option<ThreadRole>,
    /// Reply queue: the bytes of the reply being read.
    pub reader_buf: Stream,
    /// Reply queue: the BQL's holder, while it lends the BQL to the main
    /// loop's back-end channel handler.
    pub bql_lent_by: Option<ThreadRole>,
}

/// What QEMU has logged, in order, with the thread that logged each line;
/// shared between copies of a state until one logs (most transitions log
/// nothing, and the checker copies every state it expands), with a digest
/// of its lines kept in step, so that hashing a log is one word however
/// long it is (the full search hashes every state it generates).
#[derive(Clone, Debug, Default)]
pub struct Log {
    lines: std::sync::Arc<Vec<(ThreadRole, QemuError)>>,
    /// A hash chained over the lines; 0 for no line.
    digest: u64,
}

impl Log {
    /// Appends a line.
    pub fn push(&mut self, line: (ThreadRole, QemuError)) {
        self.digest = stream::HASH_KEYS.hash_one((self.digest, line));
        std::sync::Arc::make_mut(&mut self.lines).push(line);
    }

    /// Empties the log.
    pub fn clear(&mut self) {
        *self = Log::default();
    }
}

impl PartialEq for Log {
    fn eq(&self, other: &Self) -> bool {
        self.digest == other.digest && self.lines == other.lines
    }
}

impl Eq for Log {}

impl std::hash::Hash for Log {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(self.digest);
    }
}

impl std::ops::Deref for Log {
    type Target = [(ThreadRole, QemuError)];
    fn deref(&self) -> &Self::Target {
        &self.lines
    }
}

impl From<Vec<(ThreadRole, QemuError)>> for Log {
    fn from(lines: Vec<(ThreadRole, QemuError)>) -> Self {
        let mut log = Log::default();
        for line in lines {
            log.push(line);
        }
        log
    }
}

impl State {
    /// The thread of `role`.
    pub fn thread(&self, role: ThreadRole) -> &ThreadState {
        &self.threads[role as usize]
    }

    fn thread_mut(&mut self, role: ThreadRole) -> &mut ThreadState {
        &mut self.threads[role as usize]
    }

    /// Whether every front-end thread of the scenario has finished.
    pub fn all_done(&self) -> bool {
        self.threads.iter().all(|t| matches!(t.routine, Routine::Done | Routine::Absent))
    }

    /// Whether every stream is empty.
    pub fn streams_empty(&self) -> bool {
        self.to_backend.is_empty()
            && self.to_frontend.is_empty()
            && self.backend_channel.is_empty()
            && self.backend_channel_replies.is_empty()
    }
}

/// A transition: who moves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Action {
    /// The thread executes its next op that is not a read.
    Step(ThreadRole),
    /// The thread's read takes this many bytes from the socket.
    Read(ThreadRole, u16),
    /// The thread's `error_report` for the check its last read failed.
    LogReadError(ThreadRole),
    /// Main loop: takes the BQL and reads a back-end channel message.
    ServeBackendChannel,
    /// Main loop: takes the BQL and runs the postcopy bottom half.
    RunPostcopyBh,
    /// Back-end: reads one request and writes its reply if asked (with
    /// [`Scenario::split_replies`], the reply's header only).
    BackendHandle,
    /// Back-end: writes the payload of the reply whose header it wrote
    /// ([`Scenario::split_replies`]).
    BackendWritePayload,
    /// Back-end: sends a BACKEND_IOTLB_MSG miss.
    BackendSendMiss,
    /// Back-end: reads the answer to its miss on the back-end channel.
    BackendReadMissReply,
}

/// The programs a thread runs, each an index into [`ReplyRace::programs`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Program {
    /// `vhost_dev_start`'s IOTLB updates (and, with `--device-stop`,
    /// `vhost_dev_stop` at quit).
    DeviceStart,
    /// `postcopy_ram_listen_thread`'s end: the fault-thread join and
    /// POSTCOPY_END (or, in QEMU 10.2, scheduling the bottom half).
    Listen,
    /// The main loop's `backend_read` of one BACKEND_IOTLB_MSG miss.
    Miss,
    /// The main loop's postcopy cleanup bottom half (QEMU 10.2).
    Bh,
}

/// The model: a variant on a scenario.
#[derive(Clone, Debug)]
pub struct ReplyRace {
    /// Lock placement and fail-start.
    pub variant: Variant,
    /// Threads and workload.
    pub scenario: Scenario,
    /// The ops of each [`Program`], indexed by it.
    pub programs: [Vec<Op>; 4],
    /// Per op index of device start's program (and one past its end), the
    /// IOTLB updates finished before it ([`ReplyRace::updates_finished`],
    /// asked for by every fingerprint of the reduced search).
    updates_before: Vec<u8>,
}

/// Ops of one request/reply call, with the mutex around it if the policy has one.
fn call(policy: LockPolicy, write: Op, report: QemuError) -> Vec<Op> {
    if policy.reply_queue() {
        return vec![write, Op::AwaitReply, Op::Report(report)];
    }
    let mut ops = Vec::new();
    let mutex = policy.request_reply_mutex();
    if mutex {
        ops.push(Op::AcquireMutex);
    }
    ops.extend([write, Op::ReadHeader, Op::ReadPayload]);
    if mutex {
        ops.push(Op::ReleaseMutex);
    }
    ops.push(Op::Report(report));
    ops
}

impl ReplyRace {
    /// Builds the thread programs for `variant` on `scenario`.
    pub fn new(variant: Variant, scenario: Scenario) -> Self {
        let policy = variant.policy;

        let mut device_start = Vec::new();
        if scenario.device_start_holds_bql {
            device_start.push(Op::AcquireBql);
        }
        let mut abort_sites = Vec::new();
        for vq in 0..scenario.virtqueues {
            device_start.extend(call(
                policy,
                Op::WriteIotlbUpdate(vq),
                QemuError::IotlbUpdateFailed,
            ));
            if variant.fail_start {
                abort_sites.push(device_start.len());
                device_start.push(Op::AbortIfFailed(0));
            }
        }
        let tail = pc(device_start.len());
        for i in abort_sites {
            device_start[i] = Op::AbortIfFailed(tail);
        }
        if scenario.device_start_holds_bql {
            device_start.push(Op::ReleaseBql);
        }
        if scenario.device_stop && scenario.device_start {
            // vhost_dev_stop at quit, on the main thread under the BQL.
            let await_quit = device_start.len();
            device_start.extend([Op::AwaitQuit(0), Op::AcquireBql]);
            for vq in 0..scenario.virtqueues {
                device_start.extend(call(
                    policy,
                    Op::WriteGetVringBase(vq),
                    QemuError::RingRestoreFailed { vq: u32::from(vq) },
                ));
            }
            device_start.push(Op::ReleaseBql);
            device_start[await_quit] = Op::AwaitQuit(pc(device_start.len()));
        }

        let mut listen = Vec::new();
        if policy.listen_cleanup_under_bql() {
            listen.push(Op::AcquireBql);
        }
        listen.push(Op::JoinFaultThread);
        if policy.postcopy_end_in_main_loop() {
            listen.push(Op::ScheduleBh);
        } else {
            if policy.postcopy_end_under_bql() {
                listen.push(Op::AcquireBql);
            }
            listen.extend(call(policy, Op::WritePostcopyEnd, QemuError::PostcopyEndFailed));
            if policy.postcopy_end_under_bql() || policy.listen_cleanup_under_bql() {
                listen.push(Op::ReleaseBql);
            }
        }

        // The main loop took the BQL when it dispatched the handler. The
        // reply queue answers a miss without NEED_REPLY, so nothing is read.
        let mut miss = if policy.reply_queue() {
            vec![Op::WriteMissAnswer]
        } else {
            call(policy, Op::WriteMissAnswer, QemuError::IotlbUpdateFailed)
        };
        miss.extend([Op::ReplyMiss, Op::ReleaseBql]);
        let mut bh = call(policy, Op::WritePostcopyEnd, QemuError::PostcopyEndFailed);
        bh.push(Op::ReleaseBql);

        // Each update's call ends with its `Report`.
        let mut done = 0u8;
        let mut updates_before = vec![done];
        for op in &device_start {
            done += u8::from(*op == Op::Report(QemuError::IotlbUpdateFailed));
            updates_before.push(done);
        }
        ReplyRace { variant, scenario, programs: [device_start, listen, miss, bh], updates_before }
    }

    /// The ops of `program`.
    pub fn program(&self, program: Program) -> &[Op] {
        &self.programs[program as usize]
    }

    /// Whether the main loop has a postcopy bottom half to run in this scenario.
    pub(crate) fn main_loop_runs_bh(&self) -> bool {
        self.scenario.postcopy_end && self.variant.policy.postcopy_end_in_main_loop()
    }

    /// Takes `action` in `s`, in place ([`Model::next_state`] on a copy):
    /// `None` if it is not a move of `s`, which is then left as it was.
    /// The search builds each successor where it keeps it, so that a state
    /// is copied once per move.
    pub(crate) fn apply(&self, s: &mut State, action: Action) -> Option<()> {
        match action {
            Action::Step(role) => {
                let op = self.current_op(s.thread(role))?;
                if op == Op::AwaitReply {
                    self.exec_await_reply(s, role);
                } else {
                    self.exec_step(s, role, op);
                    self.settle(s, role);
                }
            }
            Action::Read(role, n) => {
                let op = self.current_op(s.thread(role))?;
                if op == Op::AwaitReply {
                    self.exec_queue_read(s, role, usize::from(n));
                } else {
                    self.exec_read(s, role, op, usize::from(n));
                }
            }
            Action::LogReadError(role) => {
                let e = s.thread_mut(role).pending_log.take()?;
                s.log.push((role, e));
            }
            Action::ServeBackendChannel => {
                let hdr = s.backend_channel.take(wire::IOTLB_REQUEST_SIZE).header();
                if s.bql.is_some() {
                    // Reply queue: borrowed from a holder that waits for a reply.
                    s.bql_lent_by = s.bql;
                }
                s.bql = Some(ThreadRole::MainLoop);
                let t = s.thread_mut(ThreadRole::MainLoop);
                t.miss_need_reply = hdr.need_reply();
                t.misses_taken += 1;
                t.routine = Routine::Running(Program::Miss);
                t.pc = 0;
                self.settle(s, ThreadRole::MainLoop);
            }
            Action::RunPostcopyBh => {
                s.bql = Some(ThreadRole::MainLoop);
                s.bh_pending = false;
                let t = s.thread_mut(ThreadRole::MainLoop);
                t.bh_done = true;
                t.routine = Routine::Running(Program::Bh);
                t.pc = 0;
                self.settle(s, ThreadRole::MainLoop);
            }
            Action::BackendHandle => self.backend_handle(s),
            Action::BackendWritePayload => {
                let payload = s.backend.unsent.take_all();
                s.to_frontend.append(payload);
            }
            Action::BackendSendMiss => {
                let n = s.backend.misses_sent;
                let need_reply = self.scenario.miss_need_reply;
                let bytes = wire::backend_iotlb_miss(&Scenario::backend_miss(n), need_reply);
                s.backend_channel.push_message(ThreadRole::MainLoop, &bytes);
                s.backend.misses_sent += 1;
                s.backend.awaiting_miss_reply = need_reply;
            }
            Action::BackendReadMissReply => {
                s.backend_channel_replies.take(wire::ACK_REPLY_SIZE);
                s.backend.awaiting_miss_reply = false;
            }
        }
        Some(())
    }

    /// IOTLB updates device start has finished, whether acknowledged or
    /// failed, when its next op is at `pc` (each update's call ends with
    /// its `Report`; a fail-start abort jumps past them all).
    pub(crate) fn updates_finished(&self, pc: usize) -> u8 {
        self.updates_before[pc.min(self.updates_before.len() - 1)]
    }

    /// The op a thread is at, if it is running a program.
    pub fn current_op(&self, t: &ThreadState) -> Option<Op> {
        match t.routine {
            Routine::Running(p) => self.program(p).get(usize::from(t.pc)).copied(),
            _ => None,
        }
    }

    /// Bytes a read still needs, for a thread at `ReadHeader` or
    /// `ReadPayload`: what `read_all` was asked for (12, or the header's
    /// `size`) less what it has.
    pub fn bytes_wanted(&self, t: &ThreadState, op: Op) -> usize {
        let total = match op {
            Op::ReadHeader => wire::HEADER_SIZE,
            Op::ReadPayload => t.hdr.expect("payload read follows a header").size as usize,
            _ => unreachable!("not a read"),
        };
        total - t.buf.len()
    }

    /// Reply queue: bytes the reader still needs for the reply it reads: a
    /// header, then the payload the header announces (none if the header
    /// fails QEMU's check, which then ends the read).
    pub fn queue_bytes_wanted(&self, s: &State) -> usize {
        let have = s.reader_buf.len();
        if have < wire::HEADER_SIZE {
            return wire::HEADER_SIZE - have;
        }
        let hdr = s.reader_buf.header();
        if hdr.validate_reply().is_err() {
            return 0;
        }
        wire::HEADER_SIZE + hdr.size as usize - have
    }

    /// The byte counts a read that still wants `want` bytes may take when
    /// the stream holds `have`, pushed as [`Action::Read`]s of `role`.
    /// Without short or queued reads: all it wants, once it is there. With
    /// queued reads (Linux's `recv` on a Unix stream socket): everything it
    /// can, all it wants or all there is. With short reads (`recv` returns
    /// less and `read_all` loops): also any multiple of 4 bytes below that.
    /// Short reads of other sizes are left out to keep the state space
    /// small; every size QEMU's `read_all` asks for is still read exactly.
    pub fn read_sizes(
        &self,
        role: ThreadRole,
        want: usize,
        have: usize,
        actions: &mut Vec<Action>,
    ) {
        let read = |n: usize| Action::Read(role, u16::try_from(n).expect("a read under 64 KiB"));
        if !self.scenario.partial_reads() {
            if have >= want && want > 0 {
                actions.push(read(want));
            }
            return;
        }
        let most = want.min(have);
        if self.scenario.short_reads {
            actions.extend((4..most).step_by(4).map(read));
        }
        if most > 0 {
            actions.push(read(most));
        }
    }

    /// Reply queue: whether the main loop may borrow the BQL now, because
    /// its holder waits for a reply.
    fn bql_lendable(&self, s: &State) -> bool {
        self.variant.policy.reply_queue()
            && s.bql_lent_by.is_none()
            && s.bql.is_some_and(|h| {
                h != ThreadRole::MainLoop
                    && self.current_op(s.thread(h)) == Some(Op::AwaitReply)
                    && s.thread(h).pending_log.is_none()
            })
    }

    /// Whether a thread's current op (not a read) can run now.
    fn step_enabled(&self, s: &State, op: Op) -> bool {
        match op {
            Op::AcquireBql => s.bql.is_none(),
            Op::AcquireMutex => s.mutex.is_none(),
            Op::AwaitQuit(_) => [ThreadRole::PostcopyListen, ThreadRole::MainLoop]
                .iter()
                .all(|&r| matches!(s.thread(r).routine, Routine::Done | Routine::Absent)),
            _ => true,
        }
    }

    /// Moves past ops that do nothing in this state (a report after a
    /// successful call, an abort check that does not abort), ends programs.
    fn settle(&self, s: &mut State, role: ThreadRole) {
        loop {
            let t = s.thread(role);
            let Routine::Running(p) = t.routine else { return };
            match self.program(p).get(usize::from(t.pc)) {
                Some(Op::Report(_)) if !t.call_failed => s.thread_mut(role).pc += 1,
                Some(Op::AbortIfFailed(target)) => {
                    let target = *target;
                    let t = s.thread_mut(role);
                    t.pc = if t.call_failed { target } else { t.pc + 1 };
                }
                Some(_) => return,
                None => {
                    let main_loop = role == ThreadRole::MainLoop;
                    let t = s.thread_mut(role);
                    t.pc = 0;
                    if role == ThreadRole::DeviceStart {
                        // Until 9.2 the start ignored failed updates.
                        t.reported_success = Some(!(self.variant.fail_start && t.start_failed));
                    }
                    t.routine = if main_loop { Routine::Idle } else { Routine::Done };
                    if main_loop {
                        self.settle_main_loop(s);
                    }
                    return;
                }
            }
        }
    }

    /// The main loop is done once it has taken every miss and run its bottom half.
    fn settle_main_loop(&self, s: &mut State) {
        let runs_bh = self.main_loop_runs_bh();
        let t = s.thread_mut(ThreadRole::MainLoop);
        if t.routine == Routine::Idle
            && t.misses_taken == self.scenario.backend_misses
            && (t.bh_done || !runs_bh)
        {
            t.routine = Routine::Done;
        }
    }

    /// A request whose reply is awaited: on the socket, and (reply queue) in
    /// the queue, in one step.
    fn write(&self, s: &mut State, role: ThreadRole, bytes: &[u8]) {
        if self.variant.policy.reply_queue() {
            s.reply_queue.push(role);
        }
        Self::write_no_reply(s, role, bytes);
    }

    fn write_no_reply(s: &mut State, role: ThreadRole, bytes: &[u8]) {
        s.to_backend.push_message(role, bytes);
    }

    /// Executes a non-read op.
    fn exec_step(&self, s: &mut State, role: ThreadRole, op: Op) {
        match op {
            Op::AcquireBql => s.bql = Some(role),
            // A lent BQL goes back to the thread that lent it.
            Op::ReleaseBql => s.bql = s.bql_lent_by.take(),
            Op::AcquireMutex => s.mutex = Some(role),
            Op::ReleaseMutex => s.mutex = None,
            Op::WriteIotlbUpdate(vq) => {
                Self::start_call(s, role, Request::IotlbMsg);
                self.write(s, role, &wire::iotlb_update_request(&Scenario::iotlb_update(vq), true));
            }
            Op::WriteMissAnswer => {
                let n = s.thread(role).misses_taken - 1;
                Self::start_call(s, role, Request::IotlbMsg);
                let need_reply = !self.variant.policy.reply_queue();
                let update = wire::iotlb_update_request(&Scenario::miss_answer(n), need_reply);
                if need_reply {
                    self.write(s, role, &update);
                } else {
                    Self::write_no_reply(s, role, &update);
                }
            }
            Op::WritePostcopyEnd => {
                Self::start_call(s, role, Request::PostcopyEnd);
                self.write(s, role, &wire::postcopy_end_request());
            }
            Op::Report(e) => s.log.push((role, e)),
            Op::ReplyMiss => {
                let t = s.thread(role);
                if t.miss_need_reply {
                    let status = u64::from(t.call_failed);
                    let reply = wire::ack_reply(BackendRequest::IotlbMsg, status);
                    s.backend_channel_replies.push_message(role, &reply);
                }
            }
            Op::JoinFaultThread => {}
            Op::ScheduleBh => s.bh_pending = true,
            Op::AwaitQuit(end) => {
                let t = s.thread_mut(role);
                if self.variant.fail_start && t.start_failed {
                    t.pc = end;
                    return;
                }
            }
            Op::WriteGetVringBase(vq) => {
                Self::start_call(s, role, Request::GetVringBase);
                let body = wire::vring_state_to_bytes(u32::from(vq), 0);
                let h = Header::request(Request::GetVringBase, body.len(), false);
                self.write(s, role, &wire::encode(h, &body));
            }
            Op::ReadHeader | Op::ReadPayload | Op::AbortIfFailed(_) | Op::AwaitReply => {
                unreachable!("not a step: {op:?}")
            }
        }
        s.thread_mut(role).pc += 1;
    }

    fn start_call(s: &mut State, role: ThreadRole, req: Request) {
        let t = s.thread_mut(role);
        t.expect = req as u32;
        t.call_failed = false;
    }

    /// Reply queue: `role` reads `n` bytes of the reply at the front of the
    /// socket; once it is whole, it is handed to the queue's head.
    fn exec_queue_read(&self, s: &mut State, role: ThreadRole, n: usize) {
        let taken = s.to_frontend.take(n);
        if s.reader_buf.is_empty() && !taken.starts_message() {
            s.misframed = true;
        }
        s.reader = Some(role);
        s.reader_buf.append(taken);
        if self.queue_bytes_wanted(s) > 0 {
            return; // read_all loops for the rest
        }
        s.reader = None;
        let reply = s.reader_buf.take_all();
        if s.reply_queue.is_empty() {
            // A reply nobody asked for: the stream is no longer in step.
            s.stolen = true;
            return;
        }
        let head = s.reply_queue.remove(0);
        if !reply.all_owned_by(head) {
            s.stolen = true;
        }
        // A handed reply is never empty: a non-empty `buf` at `AwaitReply`
        // is the hand-off.
        s.thread_mut(head).buf = reply;
    }

    /// Reply queue: the reply handed to `role` goes through the same checks
    /// as a read one (`vhost_user_read_header`, then `process_message_reply`).
    fn exec_await_reply(&self, s: &mut State, role: ThreadRole) {
        let t = s.thread_mut(role);
        let reply = t.buf.take_all();
        let hdr = reply.header();
        t.reply_is_own = reply.all_owned_by(role) && reply.starts_message();
        if let Err(e) = reply_check_error(&hdr) {
            fail_call(t, role);
            t.pc += 1;
            t.pending_log = Some(e);
            self.settle(s, role);
            return;
        }
        t.hdr = Some(hdr);
        self.process_message_reply(s, role, &reply.bytes()[wire::HEADER_SIZE..]);
    }

    /// Takes `n` bytes of a read; when the read is complete, applies QEMU's checks.
    fn exec_read(&self, s: &mut State, role: ThreadRole, op: Op, n: usize) {
        let taken = s.to_frontend.take(n);
        if !taken.all_owned_by(role) {
            s.stolen = true;
        }
        if op == Op::ReadHeader && s.thread(role).buf.is_empty() && !taken.starts_message() {
            s.misframed = true;
        }
        s.thread_mut(role).buf.append(taken);
        if self.bytes_wanted(s.thread(role), op) > 0 {
            return; // read_all loops for the rest
        }
        let t = s.thread_mut(role);
        let read = t.buf.take_all();
        let own = read.all_owned_by(role) && (op == Op::ReadPayload || read.starts_message());
        match op {
            Op::ReadHeader => {
                let hdr = read.header();
                t.reply_is_own = own;
                if let Err(e) = reply_check_error(&hdr) {
                    // vhost_user_read fails without reading the payload.
                    fail_call(t, role);
                    t.pc += 2;
                    t.pending_log = Some(e);
                    self.settle(s, role);
                    return;
                }
                t.hdr = Some(hdr);
                t.pc += 1;
                if hdr.size == 0 {
                    self.process_message_reply(s, role, &[]);
                }
            }
            Op::ReadPayload => {
                t.reply_is_own &= own;
                self.process_message_reply(s, role, &read.bytes());
            }
            _ => unreachable!("not a read"),
        }
    }

    /// `process_message_reply` once the whole reply is in: request code, then ack.
    fn process_message_reply(&self, s: &mut State, role: ThreadRole, payload: &[u8]) {
        let t = s.thread_mut(role);
        if t.expect == Request::GetVringBase as u32 {
            return self.get_vring_base_reply(s, role);
        }
        let hdr = t.hdr.take().expect("a reply header was read");
        t.pc += 1; // past ReadPayload
        if hdr.request != t.expect {
            fail_call(t, role);
            t.pending_log =
                Some(QemuError::UnexpectedMsgType { expected: t.expect, received: hdr.request });
        } else {
            if wire::reply_status(payload) != 0 {
                fail_call(t, role);
            } else if role == ThreadRole::DeviceStart && t.reply_is_own {
                t.own_acks += 1;
            }
        }
        self.settle(s, role);
    }

    /// `vhost_user_get_vring_base`'s checks once the reply is in: the
    /// request code, then the size of a `vhost_vring_state`; no status word.
    fn get_vring_base_reply(&self, s: &mut State, role: ThreadRole) {
        let t = s.thread_mut(role);
        let hdr = t.hdr.take().expect("a reply header was read");
        t.pc += 1; // past ReadPayload
        let expected = Request::GetVringBase as u32;
        if hdr.request != expected {
            t.call_failed = true;
            t.pending_log = Some(QemuError::UnexpectedMsgType { expected, received: hdr.request });
        } else if hdr.size as usize != wire::VRING_STATE_SIZE {
            t.call_failed = true;
            t.pending_log = Some(QemuError::BadMsgSize);
        }
        self.settle(s, role);
    }

    /// The back-end handles the request at the head of the main socket.
    fn backend_handle(&self, s: &mut State) {
        let hdr = s.to_backend.header();
        let request = s.to_backend.take(wire::HEADER_SIZE + hdr.size as usize);
        let owner = request.first_owner().expect("a request has bytes");
        let reply = if hdr.request == Request::GetVringBase as u32 {
            // Always answered, with the ring's state (index, base 0).
            let payload = &request.bytes()[wire::HEADER_SIZE..];
            let vq = payload.get(..4).map_or(0, |b| u32::from_le_bytes(b.try_into().expect("4")));
            let body = wire::vring_state_to_bytes(vq, 0);
            wire::encode(Header::reply(Request::GetVringBase, body.len()), &body)
        } else if hdr.need_reply() {
            // REPLY_ACK: IOTLB_MSG and POSTCOPY_END are both acknowledged with 0.
            wire::ack_reply(hdr.request, 0)
        } else {
            return;
        };
        if self.scenario.split_replies && reply.len() > wire::HEADER_SIZE {
            let mut whole = Stream::message(owner, &reply);
            s.to_frontend.append(whole.take(wire::HEADER_SIZE));
            s.backend.unsent = whole;
        } else {
            s.to_frontend.push_message(owner, &reply);
        }
    }

    /// Whether a whole message of the back-end channel is there (a miss is
    /// one IOTLB request).
    fn backend_message_ready(s: &State) -> bool {
        s.backend_channel.len() >= wire::IOTLB_REQUEST_SIZE
    }
}

/// A program counter for an op index.
fn pc(index: usize) -> u8 {
    u8::try_from(index).expect("programs have fewer than 256 ops")
}

/// The line `vhost_user_read` logs when a reply header fails its check.
fn reply_check_error(hdr: &Header) -> Result<(), QemuError> {
    match hdr.validate_reply() {
        Ok(()) => Ok(()),
        Err(wire::WireError::BadFlags { got, .. }) => {
            Err(QemuError::ReadHeaderFlags { flags: got })
        }
        Err(wire::WireError::PayloadTooLarge(size)) => Err(QemuError::ReadHeaderSize { size }),
        Err(e) => unreachable!("reply validation gives flags or size errors: {e}"),
    }
}

/// The call in flight of thread `role` has failed: any failed check of
/// `vhost_user_read` (header flags, size) or of `process_message_reply`
/// (request code, non-zero ack) makes `vhost_device_iotlb_miss` fail, and on
/// device start that is a failed update (which QEMU 9.2's `vhost_dev_start`
/// turns into a failed start).
fn fail_call(t: &mut ThreadState, role: ThreadRole) {
    t.call_failed = true;
    // Device stop's GET_VRING_BASE runs on the same thread after the start
    // is over: its failures do not fail the start.
    if role == ThreadRole::DeviceStart && t.expect == Request::IotlbMsg as u32 {
        t.start_failed = true;
    }
}

/// The model's properties, in matrix column order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Prop {
    /// No thread consumes bytes of another thread's reply.
    Reply,
    /// Every header read starts where a message starts.
    Framing,
    /// QEMU logs nothing.
    NoLog,
    /// Device start reports success only if each of its updates was
    /// acknowledged by its own reply.
    StartOk,
    /// No reachable state has nothing enabled while a thread is unfinished.
    Deadlock,
    /// Every path ends with every thread finished (liveness).
    Finishes,
    /// Once every thread is done, no byte is left on a stream.
    Channel,
}

impl Prop {
    /// Every property, in matrix column order.
    pub const ALL: [Prop; 7] = [
        Prop::Reply,
        Prop::Framing,
        Prop::NoLog,
        Prop::StartOk,
        Prop::Deadlock,
        Prop::Finishes,
        Prop::Channel,
    ];

    /// Whether the property is about final states only (those where
    /// nothing can move): it can break only there.
    pub const fn of_final_states(self) -> bool {
        matches!(self, Prop::Deadlock | Prop::Finishes | Prop::Channel)
    }

    /// The property's name, as stateright and the reports give it.
    pub const fn name(self) -> &'static str {
        match self {
            Prop::Reply => "every reply reaches its requester",
            Prop::Framing => "no header is read mid-message",
            Prop::NoLog => "no error is logged",
            Prop::StartOk => "device start succeeds only on its own acks",
            Prop::Deadlock => "no deadlock",
            Prop::Finishes => "every thread finishes",
            Prop::Channel => "the channel is usable afterwards",
        }
    }

    /// The property's short matrix column title.
    pub const fn title(self) -> &'static str {
        match self {
            Prop::Reply => "reply",
            Prop::Framing => "framing",
            Prop::NoLog => "no log",
            Prop::StartOk => "start ok",
            Prop::Deadlock => "deadlock",
            Prop::Finishes => "finishes",
            Prop::Channel => "channel",
        }
    }

    /// The property of a name or a column title.
    pub fn find(name_or_title: &str) -> Option<Prop> {
        Prop::ALL.into_iter().find(|p| p.name() == name_or_title || p.title() == name_or_title)
    }
}

/// Every property, in matrix column order, as (name, column title).
pub const PROPERTIES: [(&str, &str); 7] = {
    let mut out = [("", ""); 7];
    let mut i = 0;
    while i < Prop::ALL.len() {
        out[i] = (Prop::ALL[i].name(), Prop::ALL[i].title());
        i += 1;
    }
    out
};

impl Model for ReplyRace {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let present = self.scenario.threads(self.variant.policy);
        let mk = |role: ThreadRole| {
            if !present.contains(&role) {
                return ThreadState::new(Routine::Absent);
            }
            ThreadState::new(match role {
                ThreadRole::DeviceStart => Routine::Running(Program::DeviceStart),
                ThreadRole::PostcopyListen => Routine::Running(Program::Listen),
                ThreadRole::MainLoop => Routine::Idle,
            })
        };
        vec![State {
            threads: ThreadRole::ALL.map(mk),
            backend: BackendState {
                misses_sent: 0,
                awaiting_miss_reply: false,
                unsent: Stream::new(),
            },
            to_backend: Stream::new(),
            to_frontend: Stream::new(),
            backend_channel: Stream::new(),
            backend_channel_replies: Stream::new(),
            bql: None,
            mutex: None,
            bh_pending: false,
            log: Log::default(),
            stolen: false,
            misframed: false,
            reply_queue: Vec::new(),
            reader: None,
            reader_buf: Stream::new(),
            bql_lent_by: None,
        }]
    }

    fn actions(&self, s: &State, actions: &mut Vec<Action>) {
        for role in ThreadRole::ALL {
            let t = s.thread(role);
            match t.routine {
                Routine::Running(_) if t.pending_log.is_some() => {
                    actions.push(Action::LogReadError(role));
                }
                Routine::Running(_) => {
                    let op = self.current_op(t).expect("settled threads are at an op");
                    if op == Op::AwaitReply {
                        if t.reply_handed() {
                            if s.bql_lent_by != Some(role) {
                                actions.push(Action::Step(role));
                            }
                        } else if s.reader.is_none() || s.reader == Some(role) {
                            let want = self.queue_bytes_wanted(s);
                            self.read_sizes(role, want, s.to_frontend.len(), actions);
                        }
                    } else if matches!(op, Op::ReadHeader | Op::ReadPayload) {
                        let want = self.bytes_wanted(t, op);
                        self.read_sizes(role, want, s.to_frontend.len(), actions);
                    } else if self.step_enabled(s, op) {
                        actions.push(Action::Step(role));
                    }
                }
                Routine::Idle => {
                    if Self::backend_message_ready(s) && (s.bql.is_none() || self.bql_lendable(s)) {
                        actions.push(Action::ServeBackendChannel);
                    }
                    if s.bql.is_none() && s.bh_pending {
                        actions.push(Action::RunPostcopyBh);
                    }
                }
                Routine::Absent | Routine::Done => {}
            }
        }
        let b = &s.backend;
        if !b.unsent.is_empty() {
            // Inside `vu_message_write`: the payload's write comes next.
            actions.push(Action::BackendWritePayload);
        } else if b.awaiting_miss_reply {
            if s.backend_channel_replies.len() >= wire::ACK_REPLY_SIZE {
                actions.push(Action::BackendReadMissReply);
            }
        } else {
            if !s.to_backend.is_empty() {
                actions.push(Action::BackendHandle);
            }
            if b.misses_sent < self.scenario.backend_misses {
                actions.push(Action::BackendSendMiss);
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut s = last.clone();
        self.apply(&mut s, action)?;
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        Prop::ALL
            .into_iter()
            .map(|p| {
                // Function pointers, not closures: one per property.
                let cond: fn(&ReplyRace, &State) -> bool = match p {
                    Prop::Reply => |m, s| m.holds(Prop::Reply, s, false),
                    Prop::Framing => |m, s| m.holds(Prop::Framing, s, false),
                    Prop::NoLog => |m, s| m.holds(Prop::NoLog, s, false),
                    Prop::StartOk => |m, s| m.holds(Prop::StartOk, s, false),
                    Prop::Deadlock => |m, s| m.holds(Prop::Deadlock, s, m.is_stuck(s)),
                    Prop::Finishes => |_, s| s.all_done(),
                    Prop::Channel => |m, s| m.holds(Prop::Channel, s, m.is_stuck(s)),
                };
                if p == Prop::Finishes {
                    Property::eventually(p.name(), cond)
                } else {
                    Property::always(p.name(), cond)
                }
            })
            .collect()
    }

    fn format_action(&self, action: &Action) -> String {
        explorer::format_action(action)
    }

    fn format_step(&self, last: &State, action: Action) -> Option<String> {
        explorer::format_step(self, last, action)
    }

    fn as_svg(&self, path: stateright::Path<State, Action>) -> Option<String> {
        explorer::as_svg(self, path)
    }
}

impl ReplyRace {
    /// Whether `p` holds in `s`, where `stuck` says whether nothing can move
    /// in `s` ([`ReplyRace::is_stuck`]). For [`Prop::Finishes`], an
    /// `eventually` property, this is whether a path ending in `s` is fine:
    /// `s` is not terminal, or every thread has finished in it (which, once
    /// true, stays true, so it is the same as "held somewhere on the path").
    pub fn holds(&self, p: Prop, s: &State, stuck: bool) -> bool {
        match p {
            Prop::Reply => !s.stolen,
            Prop::Framing => !s.misframed,
            Prop::NoLog => s.log.is_empty(),
            Prop::StartOk => {
                let t = s.thread(ThreadRole::DeviceStart);
                t.reported_success != Some(true) || t.own_acks == self.scenario.virtqueues
            }
            Prop::Deadlock | Prop::Finishes => s.all_done() || !stuck,
            Prop::Channel => !(s.all_done() && stuck) || s.streams_empty(),
        }
    }

    /// Whether nothing can move in `s`.
    pub fn is_stuck(&self, s: &State) -> bool {
        let mut a = Vec::new();
        self.actions(s, &mut a);
        a.is_empty()
    }
}
