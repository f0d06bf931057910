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
//! - The socket as streams of 4-byte words built with [`protocol::wire`]:
//!   front-end to back-end, back-end to front-end, and the back-end channel
//!   both ways. A write appends a whole message at once. A front-end read
//!   takes exactly what QEMU's `read_all` asks for (3 header words, then the
//!   payload) and blocks until it is there; with
//!   [`Scenario::short_reads`] a read may take fewer words and loop. A header
//!   whose flags are not 0x5 is rejected without reading the payload, as in
//!   `vhost_user_read_header`.
//! - Ghost data on every word (which thread's request it answers, whether a
//!   message starts there) so that properties can say who got whose reply.
//! - The back-end: one request at a time (read and reply are one step),
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
//! setup), back-end failures (every ack is 0), partial words, and timing.
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
pub mod replay;
pub mod sweep;
pub mod trace;
pub mod verdict;

/// A 4-byte word on a stream, with ghost data the properties read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Word {
    /// The bytes as a little-endian u32.
    pub value: u32,
    /// Whose request this word belongs to (or answers).
    pub owner: ThreadRole,
    /// Whether a message starts at this word.
    pub start: bool,
}

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
    /// Running program `id` of [`ReplyRace::programs`].
    Running(u8),
    /// The thread has finished its work.
    Done,
}

/// One front-end thread.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ThreadState {
    /// What it runs.
    pub routine: Routine,
    /// Index of the next op of its program.
    pub pc: u8,
    /// Words of the read in progress (header or payload).
    pub buf: Vec<Word>,
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
    /// Reply queue: a whole reply has been handed to this thread (in `buf`).
    pub reply_handed: bool,
}

impl ThreadState {
    fn new(routine: Routine) -> Self {
        ThreadState {
            routine,
            pc: 0,
            buf: Vec::new(),
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
            reply_handed: false,
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
}

/// The whole system.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct State {
    /// Front-end threads, indexed by [`ThreadRole`] order.
    pub threads: [ThreadState; 3],
    /// The back-end.
    pub backend: BackendState,
    /// Main socket, front-end to back-end.
    pub to_backend: Vec<Word>,
    /// Main socket, back-end to front-end: the replies.
    pub to_frontend: Vec<Word>,
    /// Back-end channel, back-end to front-end: the misses.
    pub backend_channel: Vec<Word>,
    /// Back-end channel, front-end to back-end: answers to misses.
    pub backend_channel_replies: Vec<Word>,
    /// Holder of the BQL.
    pub bql: Option<ThreadRole>,
    /// Holder of the request/reply mutex.
    pub mutex: Option<ThreadRole>,
    /// QEMU 10.2: the postcopy bottom half is scheduled and not yet run.
    pub bh_pending: bool,
    /// What QEMU has logged, in order, with the thread that logged it.
    pub log: Vec<(ThreadRole, QemuError)>,
    /// Ghost: some thread consumed words of another thread's reply.
    pub stolen: bool,
    /// Ghost: some header read began in the middle of a message.
    pub misframed: bool,
    /// Reply queue: requesters waiting for a reply, in the order their
    /// requests are on the socket.
    pub reply_queue: Vec<ThreadRole>,
    /// Reply queue: the thread reading a reply for the queue's head, while
    /// the reply is not whole yet.
    pub reader: Option<ThreadRole>,
    /// Reply queue: the words of the reply being read.
    pub reader_buf: Vec<Word>,
    /// Reply queue: the BQL's holder, while it lends the BQL to the main
    /// loop's back-end channel handler.
    pub bql_lent_by: Option<ThreadRole>,
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
    /// The thread's read takes this many words from the socket.
    Read(ThreadRole, u8),
    /// The thread's `error_report` for the check its last read failed.
    LogReadError(ThreadRole),
    /// Main loop: takes the BQL and reads a back-end channel message.
    ServeBackendChannel,
    /// Main loop: takes the BQL and runs the postcopy bottom half.
    RunPostcopyBh,
    /// Back-end: reads one request and writes its reply if asked.
    BackendHandle,
    /// Back-end: sends a BACKEND_IOTLB_MSG miss.
    BackendSendMiss,
    /// Back-end: reads the answer to its miss on the back-end channel.
    BackendReadMissReply,
}

/// Program ids in [`ReplyRace::programs`].
const PROG_DEVICE_START: u8 = 0;
const PROG_LISTEN: u8 = 1;
const PROG_MISS: u8 = 2;
const PROG_BH: u8 = 3;

/// The model: a variant on a scenario.
#[derive(Clone, Debug)]
pub struct ReplyRace {
    /// Lock placement and fail-start.
    pub variant: Variant,
    /// Threads and workload.
    pub scenario: Scenario,
    /// Programs: device start, postcopy listen, main-loop miss handler,
    /// main-loop postcopy bottom half.
    pub programs: [Vec<Op>; 4],
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
        let tail = device_start.len() as u8;
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
            device_start[await_quit] = Op::AwaitQuit(device_start.len() as u8);
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

        ReplyRace { variant, scenario, programs: [device_start, listen, miss, bh] }
    }

    /// Whether the main loop has a postcopy bottom half to run in this scenario.
    fn main_loop_runs_bh(&self) -> bool {
        self.scenario.postcopy_end && self.variant.policy.postcopy_end_in_main_loop()
    }

    /// The op a thread is at, if it is running a program.
    pub fn current_op(&self, t: &ThreadState) -> Option<Op> {
        match t.routine {
            Routine::Running(p) => self.programs[p as usize].get(t.pc as usize).copied(),
            _ => None,
        }
    }

    /// Words a read still needs, for a thread at `ReadHeader` or `ReadPayload`.
    fn words_wanted(&self, t: &ThreadState, op: Op) -> usize {
        let total = match op {
            Op::ReadHeader => wire::HEADER_SIZE / 4,
            Op::ReadPayload => {
                (t.hdr.expect("payload read follows a header").size as usize).div_ceil(4)
            }
            _ => unreachable!("not a read"),
        };
        total - t.buf.len()
    }

    /// Reply queue: words the reader still needs for the reply it reads: a
    /// header, then the payload the header announces (none if the header
    /// fails QEMU's check, which then ends the read).
    pub fn queue_words_wanted(&self, s: &State) -> usize {
        let have = s.reader_buf.len();
        let hdr_words = wire::HEADER_SIZE / 4;
        if have < hdr_words {
            return hdr_words - have;
        }
        let hdr = words_header(&s.reader_buf[..hdr_words]);
        if hdr.validate_reply().is_err() {
            return 0;
        }
        hdr_words + (hdr.size as usize).div_ceil(4) - have
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
            let prog = &self.programs[p as usize];
            match prog.get(t.pc as usize) {
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
        let words = wire::to_words(bytes);
        s.to_backend.extend(words.iter().enumerate().map(|(i, &value)| Word {
            value,
            owner: role,
            start: i == 0,
        }));
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
                    let words = wire::to_words(&wire::ack_reply(BackendRequest::IotlbMsg, status));
                    s.backend_channel_replies.extend(
                        words.iter().enumerate().map(|(i, &value)| Word {
                            value,
                            owner: role,
                            start: i == 0,
                        }),
                    );
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

    /// Reply queue: `role` reads `n` words of the reply at the front of the
    /// socket; once it is whole, it is handed to the queue's head.
    fn exec_queue_read(&self, s: &mut State, role: ThreadRole, n: usize) {
        let taken: Vec<Word> = s.to_frontend.drain(..n).collect();
        if s.reader_buf.is_empty() && !taken[0].start {
            s.misframed = true;
        }
        s.reader = Some(role);
        s.reader_buf.extend(taken);
        if self.queue_words_wanted(s) > 0 {
            return; // read_all loops for the rest
        }
        s.reader = None;
        let reply = std::mem::take(&mut s.reader_buf);
        if s.reply_queue.is_empty() {
            // A reply nobody asked for: the stream is no longer in step.
            s.stolen = true;
            return;
        }
        let head = s.reply_queue.remove(0);
        if reply.iter().any(|w| w.owner != head) {
            s.stolen = true;
        }
        let t = s.thread_mut(head);
        t.buf = reply;
        t.reply_handed = true;
    }

    /// Reply queue: the reply handed to `role` goes through the same checks
    /// as a read one (`vhost_user_read_header`, then `process_message_reply`).
    fn exec_await_reply(&self, s: &mut State, role: ThreadRole) {
        let hdr_words = wire::HEADER_SIZE / 4;
        let t = s.thread_mut(role);
        t.reply_handed = false;
        let reply = std::mem::take(&mut t.buf);
        let hdr = words_header(&reply[..hdr_words]);
        t.reply_is_own = reply.iter().all(|w| w.owner == role) && reply[0].start;
        if let Err(e) = reply_check_error(&hdr) {
            fail_call(t, role);
            t.pc += 1;
            t.pending_log = Some(e);
            self.settle(s, role);
            return;
        }
        t.hdr = Some(hdr);
        let payload =
            wire::from_words(&reply[hdr_words..].iter().map(|w| w.value).collect::<Vec<_>>());
        self.process_message_reply(s, role, &payload[..(hdr.size as usize).min(payload.len())]);
    }

    /// Takes `n` words of a read; when the read is complete, applies QEMU's checks.
    fn exec_read(&self, s: &mut State, role: ThreadRole, op: Op, n: usize) {
        let taken: Vec<Word> = s.to_frontend.drain(..n).collect();
        if taken.iter().any(|w| w.owner != role) {
            s.stolen = true;
        }
        if op == Op::ReadHeader && s.thread(role).buf.is_empty() && !taken[0].start {
            s.misframed = true;
        }
        s.thread_mut(role).buf.extend(taken);
        if self.words_wanted(s.thread(role), op) > 0 {
            return; // read_all loops for the rest
        }
        let t = s.thread_mut(role);
        let own =
            t.buf.iter().all(|w| w.owner == role) && (op == Op::ReadPayload || t.buf[0].start);
        let bytes = wire::from_words(&t.buf.iter().map(|w| w.value).collect::<Vec<_>>());
        t.buf.clear();
        match op {
            Op::ReadHeader => {
                let hdr = Header::from_bytes(&bytes.try_into().expect("12 header bytes"));
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
                self.process_message_reply(s, role, &bytes);
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
    fn backend_handle(s: &mut State) {
        let hdr_bytes =
            wire::from_words(&s.to_backend[..3].iter().map(|w| w.value).collect::<Vec<_>>());
        let hdr = Header::from_bytes(&hdr_bytes.try_into().expect("12 bytes"));
        let len = 3 + (hdr.size as usize).div_ceil(4);
        let owner = s.to_backend[0].owner;
        let first_payload_word = s.to_backend.get(3).map(|w| w.value);
        s.to_backend.drain(..len);
        if hdr.request == Request::GetVringBase as u32 {
            // Always answered, with the ring's state (index, base 0).
            let vq = first_payload_word.unwrap_or(0);
            let body = wire::vring_state_to_bytes(vq, 0);
            let bytes = wire::encode(Header::reply(Request::GetVringBase, body.len()), &body);
            let words = wire::to_words(&bytes);
            s.to_frontend.extend(words.iter().enumerate().map(|(i, &value)| Word {
                value,
                owner,
                start: i == 0,
            }));
        } else if hdr.need_reply() {
            // REPLY_ACK: IOTLB_MSG and POSTCOPY_END are both acknowledged with 0.
            let words = wire::to_words(&wire::ack_reply(hdr.request, 0));
            s.to_frontend.extend(words.iter().enumerate().map(|(i, &value)| Word {
                value,
                owner,
                start: i == 0,
            }));
        }
    }

    /// Whether a whole message of the back-end channel is there (misses are 11 words).
    fn backend_message_ready(s: &State) -> bool {
        s.backend_channel.len() >= wire::IOTLB_REQUEST_SIZE / 4
    }
}

/// The header of a reply from its three words.
fn words_header(words: &[Word]) -> Header {
    let bytes = wire::from_words(&words.iter().map(|w| w.value).collect::<Vec<_>>());
    Header::from_bytes(&bytes.try_into().expect("12 header bytes"))
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

/// Every property, in matrix column order, with its short column title.
pub const PROPERTIES: [(&str, &str); 7] = [
    ("every reply reaches its requester", "reply"),
    ("no header is read mid-message", "framing"),
    ("no error is logged", "no log"),
    ("device start succeeds only on its own acks", "start ok"),
    ("no deadlock", "deadlock"),
    ("every thread finishes", "finishes"),
    ("the channel is usable afterwards", "channel"),
];

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
                ThreadRole::DeviceStart => Routine::Running(PROG_DEVICE_START),
                ThreadRole::PostcopyListen => Routine::Running(PROG_LISTEN),
                ThreadRole::MainLoop => Routine::Idle,
            })
        };
        vec![State {
            threads: ThreadRole::ALL.map(mk),
            backend: BackendState { misses_sent: 0, awaiting_miss_reply: false },
            to_backend: Vec::new(),
            to_frontend: Vec::new(),
            backend_channel: Vec::new(),
            backend_channel_replies: Vec::new(),
            bql: None,
            mutex: None,
            bh_pending: false,
            log: Vec::new(),
            stolen: false,
            misframed: false,
            reply_queue: Vec::new(),
            reader: None,
            reader_buf: Vec::new(),
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
                        if t.reply_handed {
                            if s.bql_lent_by != Some(role) {
                                actions.push(Action::Step(role));
                            }
                        } else if s.reader.is_none() || s.reader == Some(role) {
                            let want = self.queue_words_wanted(s);
                            let have = s.to_frontend.len();
                            if self.scenario.short_reads {
                                for n in 1..=want.min(have) {
                                    actions.push(Action::Read(role, n as u8));
                                }
                            } else if have >= want {
                                actions.push(Action::Read(role, want as u8));
                            }
                        }
                    } else if matches!(op, Op::ReadHeader | Op::ReadPayload) {
                        let want = self.words_wanted(t, op);
                        let have = s.to_frontend.len();
                        if self.scenario.short_reads {
                            for n in 1..=want.min(have) {
                                actions.push(Action::Read(role, n as u8));
                            }
                        } else if have >= want {
                            actions.push(Action::Read(role, want as u8));
                        }
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
        if b.awaiting_miss_reply {
            if s.backend_channel_replies.len() >= wire::ACK_REPLY_SIZE / 4 {
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
        match action {
            Action::Step(role) => {
                let op = self.current_op(s.thread(role))?;
                if op == Op::AwaitReply {
                    self.exec_await_reply(&mut s, role);
                } else {
                    self.exec_step(&mut s, role, op);
                    self.settle(&mut s, role);
                }
            }
            Action::Read(role, n) => {
                let op = self.current_op(s.thread(role))?;
                if op == Op::AwaitReply {
                    self.exec_queue_read(&mut s, role, n as usize);
                } else {
                    self.exec_read(&mut s, role, op, n as usize);
                }
            }
            Action::LogReadError(role) => {
                let e = s.thread_mut(role).pending_log.take()?;
                s.log.push((role, e));
            }
            Action::ServeBackendChannel => {
                let len = wire::IOTLB_REQUEST_SIZE / 4;
                let words: Vec<Word> = s.backend_channel.drain(..len).collect();
                let bytes = wire::from_words(&words.iter().map(|w| w.value).collect::<Vec<_>>());
                let hdr = Header::from_bytes(&bytes[..12].try_into().expect("12 bytes"));
                if s.bql.is_some() {
                    // Reply queue: borrowed from a holder that waits for a reply.
                    s.bql_lent_by = s.bql;
                }
                s.bql = Some(ThreadRole::MainLoop);
                let t = s.thread_mut(ThreadRole::MainLoop);
                t.miss_need_reply = hdr.need_reply();
                t.misses_taken += 1;
                t.routine = Routine::Running(PROG_MISS);
                t.pc = 0;
                self.settle(&mut s, ThreadRole::MainLoop);
            }
            Action::RunPostcopyBh => {
                s.bql = Some(ThreadRole::MainLoop);
                s.bh_pending = false;
                let t = s.thread_mut(ThreadRole::MainLoop);
                t.bh_done = true;
                t.routine = Routine::Running(PROG_BH);
                t.pc = 0;
                self.settle(&mut s, ThreadRole::MainLoop);
            }
            Action::BackendHandle => Self::backend_handle(&mut s),
            Action::BackendSendMiss => {
                let n = s.backend.misses_sent;
                let need_reply = self.scenario.miss_need_reply;
                let bytes = wire::backend_iotlb_miss(&Scenario::backend_miss(n), need_reply);
                s.backend_channel.extend(
                    wire::to_words(&bytes).iter().enumerate().map(|(i, &value)| Word {
                        value,
                        owner: ThreadRole::MainLoop,
                        start: i == 0,
                    }),
                );
                s.backend.misses_sent += 1;
                s.backend.awaiting_miss_reply = need_reply;
            }
            Action::BackendReadMissReply => {
                s.backend_channel_replies.drain(..wire::ACK_REPLY_SIZE / 4);
                s.backend.awaiting_miss_reply = false;
            }
        }
        Some(s)
    }

    fn properties(&self) -> Vec<Property<Self>> {
        vec![
            Property::always(PROPERTIES[0].0, |_: &ReplyRace, s: &State| !s.stolen),
            Property::always(PROPERTIES[1].0, |_: &ReplyRace, s: &State| !s.misframed),
            Property::always(PROPERTIES[2].0, |_: &ReplyRace, s: &State| s.log.is_empty()),
            Property::always(PROPERTIES[3].0, |m: &ReplyRace, s: &State| {
                let t = s.thread(ThreadRole::DeviceStart);
                t.reported_success != Some(true) || t.own_acks == m.scenario.virtqueues
            }),
            Property::always(PROPERTIES[4].0, |m: &ReplyRace, s: &State| {
                s.all_done() || !m.is_stuck(s)
            }),
            Property::eventually(PROPERTIES[5].0, |_: &ReplyRace, s: &State| s.all_done()),
            Property::always(PROPERTIES[6].0, |m: &ReplyRace, s: &State| {
                !(s.all_done() && m.is_stuck(s)) || s.streams_empty()
            }),
        ]
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
    /// Whether nothing can move in `s`.
    pub fn is_stuck(&self, s: &State) -> bool {
        let mut a = Vec::new();
        self.actions(s, &mut a);
        a.is_empty()
    }
}
