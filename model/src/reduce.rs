//! A partial-order reduction for the verdicts: in each state, when one
//! process's moves cannot conflict with anything the other processes can do
//! before them, only that process moves. Interleavings that differ only in
//! the order of independent moves lead to the same states, so one order is
//! enough.
//!
//! Why the verdicts survive it:
//! - Every property is decided by the terminal states (those where nothing
//!   can move). The `always` properties only ever go from true to false
//!   along a path (`stolen`, `misframed` and a non-empty log stay set;
//!   device start reports once, at its end), so a state that breaks one
//!   leads to terminal states that break it; "no deadlock", "every thread
//!   finishes" and "the channel is usable afterwards" are about terminal
//!   states by definition.
//! - The state graph is finite and acyclic: every move advances a program,
//!   consumes bytes, or spends one of a bounded number of misses.
//! - On a finite acyclic graph, a search that expands in each state a
//!   non-empty set of enabled moves that no move outside it can conflict
//!   with, on any path from that state that stays outside it (an *ample* or
//!   persistent set), reaches every terminal state of the full graph
//!   (Godefroid, *Partial-Order Methods for the Verification of Concurrent
//!   Systems*, 1996, theorem 4.3; Clarke, Grumberg, Peled, *Model Checking*,
//!   ch. 10, conditions C0 and C1).
//! - States are taken as one when they differ only in what can no longer
//!   change a verdict, the lines of their QEMU log among it
//!   (`packed::ForVerdicts`); then two threads' log steps commute.
//!
//! When a process's moves are taken alone (each case is the conflict
//! argument for that move; "others" are the other front-end threads, whose
//! remaining programs say what they can still do):
//! - log steps (not when the log is followed line by line, as `explain`
//!   does: [`Reduction::keeping_logs`]), the fault-thread join, scheduling the bottom half, device
//!   stop's wait, replying to a miss on the back-end channel, releasing a
//!   lock: they touch the thread's own state, or a lock nobody else can
//!   take while it is held, or a channel whose reader cannot read before
//!   them;
//! - taking the BQL or the mutex, when no other thread will take it again;
//! - writing a request, when no other thread will write one again (the
//!   back-end's read of the oldest request commutes with an append);
//! - reading replies, when no other thread will read one again and, with
//!   short reads, when every byte the read wants is there already (a short
//!   read of what is there is no longer offered once more arrives, so an
//!   append by the back-end would conflict with it);
//! - the main loop's dispatch of a miss or of the bottom half, when no other
//!   thread will take the BQL again and every dispatch it will ever make
//!   is already possible;
//! - the back-end's sending of a miss without NEED_REPLY: it only appends
//!   to the back-end channel, which nothing reads before a whole message is
//!   there;
//! - the back-end, when its moves cannot grow (it is already able to read a
//!   request, or nobody will write one) and, with short reads, nobody will
//!   read a reply again or no reply byte is there (only the back-end adds
//!   reply bytes, so nobody can read one before it moves).
//!
//! The reply queue: a request joins the queue with its write, and a reply
//! is handed to the queue's head, which a later write (at the tail) does
//! not change, since a reply only exists for a request already queued. Its
//! lending of the BQL is why taking the BQL and the main loop's dispatch
//! are never taken alone under it, and why a reply handed over is checked
//! alone only when the main loop cannot borrow the BQL from that thread.
//! Its reads (one reader at a time, for the queue's head) are never taken
//! alone.
//!
//! Leaves out: nothing else of the model; rules are missing only where they
//! would not pay (every case not listed takes every process's moves).
//! Counterexamples do not come from this depth-first search: the shortest
//! ones come from a breadth-first search, over this reduction's graph for
//! the properties of final states (whose shortest paths it keeps) and over
//! every interleaving for the others
//! ([`crate::verdict::shortest_counterexamples`]).

use protocol::scenario::ThreadRole;

use crate::{Action, Op, Program, ReplyRace, Routine, State};

/// The thread may still write a request.
const WRITE: u8 = 1;
/// The thread may still read a reply.
const READ: u8 = 2;
/// The thread may still take the BQL.
const BQL: u8 = 4;
/// The thread may still take the request/reply mutex.
const MUTEX: u8 = 8;

fn op_mask(op: Op) -> u8 {
    match op {
        Op::WriteIotlbUpdate(_)
        | Op::WriteMissAnswer
        | Op::WritePostcopyEnd
        | Op::WriteGetVringBase(_) => WRITE,
        Op::ReadHeader | Op::ReadPayload | Op::AwaitReply => READ,
        Op::AcquireBql => BQL,
        Op::AcquireMutex => MUTEX,
        _ => 0,
    }
}

/// Which process an action moves: a front-end thread, or the back-end (`None`).
fn process(a: &Action) -> Option<ThreadRole> {
    match *a {
        Action::Step(r) | Action::Read(r, _) | Action::LogReadError(r) => Some(r),
        Action::ServeBackendChannel | Action::RunPostcopyBh => Some(ThreadRole::MainLoop),
        Action::BackendHandle
        | Action::BackendWritePayload
        | Action::BackendSendMiss
        | Action::BackendReadMissReply => None,
    }
}

/// The reduction for one model: what each program may still do from each
/// of its ops.
pub struct Reduction<'m> {
    model: &'m ReplyRace,
    /// Whether a step that logs a line is visible (the explain search
    /// follows the log line by line), so never taken alone.
    logs_visible: bool,
    /// Per program, per op index (and one past the end), what the ops from
    /// there on may do.
    suffix: [Vec<u8>; 4],
    /// What the main loop may do when it dispatches a miss or the bottom half.
    dispatch: [u8; 2],
}

impl<'m> Reduction<'m> {
    /// The reduction for `model`'s verdicts: a log step is taken alone.
    pub fn new(model: &'m ReplyRace) -> Self {
        Self::with_logs(model, false)
    }

    /// The reduction for a search that follows the QEMU log line by line
    /// (`explain`): a step that logs is visible, so it is never taken alone
    /// and the reduced search keeps every sequence of logged lines of the
    /// full one, every final state included (Clarke, Grumberg, Peled,
    /// condition C2).
    pub fn keeping_logs(model: &'m ReplyRace) -> Self {
        Self::with_logs(model, true)
    }

    fn with_logs(model: &'m ReplyRace, logs_visible: bool) -> Self {
        let suffix = [Program::DeviceStart, Program::Listen, Program::Miss, Program::Bh].map(|p| {
            let ops = model.program(p);
            let mut masks = vec![0u8; ops.len() + 1];
            for i in (0..ops.len()).rev() {
                masks[i] = masks[i + 1] | op_mask(ops[i]);
            }
            masks
        });
        // Dispatching takes the BQL.
        let dispatch =
            [suffix[Program::Miss as usize][0] | BQL, suffix[Program::Bh as usize][0] | BQL];
        Reduction { model, logs_visible, suffix, dispatch }
    }

    /// What thread `role` may still do from `s`, its current op included.
    fn future(&self, s: &State, role: ThreadRole) -> u8 {
        let t = s.thread(role);
        let mut m = match t.routine {
            Routine::Running(p) => {
                self.suffix[p as usize].get(usize::from(t.pc)).copied().unwrap_or(0)
            }
            Routine::Idle | Routine::Absent | Routine::Done => 0,
        };
        if role == ThreadRole::MainLoop && matches!(t.routine, Routine::Idle | Routine::Running(_))
        {
            let sc = &self.model.scenario;
            if t.misses_taken < sc.backend_misses {
                m |= self.dispatch[0];
            }
            if self.model.main_loop_runs_bh() && !t.bh_done {
                m |= self.dispatch[1];
            }
        }
        m
    }

    /// What the front-end threads other than `role` may still do.
    fn others(&self, s: &State, role: Option<ThreadRole>) -> u8 {
        ThreadRole::ALL
            .into_iter()
            .filter(|&r| Some(r) != role)
            .fold(0, |m, r| m | self.future(s, r))
    }

    /// Whether the enabled moves of thread `role` (those of `actions`, the
    /// moves enabled in `s`) can be taken alone; false if it has none.
    fn thread_alone(&self, s: &State, role: ThreadRole, actions: &[Action]) -> bool {
        let mut mine = actions.iter().filter(|a| process(a) == Some(role)).peekable();
        if mine.peek().is_none() {
            return false;
        }
        let others = self.others(s, Some(role));
        let queue = self.model.variant.policy.reply_queue();
        mine.all(|a| match *a {
            Action::LogReadError(_) => !self.logs_visible,
            Action::Step(_) => match self.model.current_op(s.thread(role)) {
                Some(Op::Report(_)) => !self.logs_visible,
                // The reply queue: a reply handed over is checked by its
                // thread alone, unless the main loop may still borrow the
                // BQL that thread holds (which stops it until given back).
                Some(Op::AwaitReply) => {
                    s.bql != Some(role) || self.future(s, ThreadRole::MainLoop) & BQL == 0
                }
                Some(
                    Op::JoinFaultThread
                    | Op::ScheduleBh
                    | Op::AwaitQuit(_)
                    | Op::ReplyMiss
                    | Op::ReleaseMutex
                    | Op::ReleaseBql,
                ) => true,
                Some(Op::AcquireBql) => others & BQL == 0 && !queue,
                Some(Op::AcquireMutex) => others & MUTEX == 0,
                Some(op) if op_mask(op) == WRITE => others & WRITE == 0,
                _ => false,
            },
            Action::Read(_, _) => {
                let t = s.thread(role);
                match self.model.current_op(t) {
                    Some(op @ (Op::ReadHeader | Op::ReadPayload)) => {
                        others & READ == 0
                            && (!self.model.scenario.partial_reads()
                                || s.to_frontend.len() >= self.model.bytes_wanted(t, op))
                    }
                    _ => false,
                }
            }
            Action::ServeBackendChannel | Action::RunPostcopyBh => {
                others & BQL == 0 && !queue && self.main_loop_dispatch_complete(s, actions)
            }
            Action::BackendHandle
            | Action::BackendWritePayload
            | Action::BackendSendMiss
            | Action::BackendReadMissReply => false,
        })
    }

    /// Whether the main loop, idle, can dispatch everything it ever will
    /// from its idle state already (its moves cannot grow: a miss that
    /// arrives later, or a bottom half scheduled later, would be a new move
    /// that conflicts with these over the BQL). `mine`: the moves enabled.
    fn main_loop_dispatch_complete(&self, s: &State, mine: &[Action]) -> bool {
        let t = s.thread(ThreadRole::MainLoop);
        let sc = &self.model.scenario;
        (mine.contains(&Action::ServeBackendChannel) || t.misses_taken == sc.backend_misses)
            && (mine.contains(&Action::RunPostcopyBh)
                || !self.model.main_loop_runs_bh()
                || t.bh_done)
    }

    /// Whether the back-end's enabled moves (those of `actions`) can be
    /// taken alone; false if it has none.
    fn backend_alone(&self, s: &State, actions: &[Action]) -> bool {
        if !actions.iter().any(|a| process(a).is_none()) {
            return false;
        }
        if s.backend.awaiting_miss_reply {
            // Reading the answer to its miss is all it can do.
            return true;
        }
        let all = self.others(s, None);
        if !s.backend.unsent.is_empty() {
            // Writing the payload is all it can do; it conflicts only with a
            // read that takes what is there (its header is).
            return !self.model.scenario.partial_reads() || all & READ == 0;
        }
        let handles = actions.contains(&Action::BackendHandle);
        // Only the back-end adds reply bytes: while it does not, nobody can
        // read any if there are none.
        (handles || all & WRITE == 0)
            && (!self.model.scenario.partial_reads() || all & READ == 0 || s.to_frontend.is_empty())
    }

    /// Keeps in `actions` (every move enabled in `s`) an ample set: the
    /// moves of the first process whose moves can be taken alone, or all of
    /// them.
    pub fn ample(&self, s: &State, actions: &mut Vec<Action>) {
        if actions.len() <= 1 {
            return;
        }
        // A miss without NEED_REPLY touches only the back-end channel, which
        // the main loop reads only once a whole message is there: it
        // commutes with every other move, the back-end's own included.
        if !self.model.scenario.miss_need_reply && actions.contains(&Action::BackendSendMiss) {
            actions.retain(|a| *a == Action::BackendSendMiss);
            return;
        }
        let mut chosen: Option<Option<ThreadRole>> =
            ThreadRole::ALL.into_iter().find(|&r| self.thread_alone(s, r, actions)).map(Some);
        if chosen.is_none() && self.backend_alone(s, actions) {
            chosen = Some(None);
        }
        if let Some(p) = chosen {
            actions.retain(|a| process(a) == p);
        }
    }
}
