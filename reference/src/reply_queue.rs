//! The state of the reply-queue design ([`crate::scenario::LockPolicy::ReplyQueue`]):
//! one per connection, kept in one monitor of the front-end's
//! [`crate::sync::SyncFamily`], as plain data with the transitions the
//! front-end takes on it. The front-end ([`crate::frontend`]) does the
//! socket I/O around them.
//!
//! Models the design's four rules as state:
//! 1. a FIFO of pending requesters ([`Pending`]: a ticket, the thread's role
//!    and the request code), appended to by [`ReplyQueue::enqueue`] in the
//!    same critical section of the connection's write lock as the send (the
//!    front-end's, held for one enqueue and one send, never across a round
//!    trip; this monitor is taken inside it for the enqueue only), so that
//!    the FIFO is in wire order;
//! 2. one reader at a time ([`ReplyQueue::next_step`] makes a waiter the
//!    reader when nobody is reading, and lends it the connection's
//!    [`RecvBuffer`] for its turn); the reader frames every whole reply the
//!    buffer holds (receiving, with one `recv` of what is there, only while
//!    the head's reply is not whole), and [`ReplyQueue::hand`] pops one head
//!    per reply and gives it its reply, in order (or, after a read error,
//!    fails every pending entry: the stream's framing is lost); handing two
//!    replies in one turn is the same as the same reader taking two turns in
//!    a row; the reader keeps reading while its own reply has not come, and
//!    a partial reply stays in the buffer for the next reader;
//! 3. the BQL as a token in the same state ([`LendableBql`]): a holder that
//!    waits for a reply lends it ([`ReplyQueue::lend`]), the main loop's
//!    back-end channel handler borrows it ([`ReplyQueue::bql_borrow`]) and
//!    gives it back, and the holder leaves its wait only with the BQL back;
//! 4. (no state) the miss handler's update goes out without NEED_REPLY, so
//!    it never enters the FIFO.
//!
//! Wake-ups are targeted: a requester that must wait registers its own
//! wake-up handle ([`ReplyQueue::next_step_or_sleep`]), and each transition
//! returns the handles to signal: a hand-off its recipient, the end of a
//! reader's turn the new head (who reads next), a returned BQL its holder.
//! Only BQL waiters sleep on the monitor itself ([`ReplyQueue::wait_step`]
//! counts them, so that nobody is notified when nobody sleeps).
//!
//! Leaves out: the I/O itself (reads and writes are the front-end's),
//! request ids (the specification has none; the FIFO position is the only
//! link between a request and its reply), a send that blocks on a full
//! socket buffer while holding the write lock (the scenarios have at most a
//! few small messages in flight), and nested lending (a borrower that itself
//! waits for a reply does not lend the BQL on; on the reference's paths the
//! borrower, the miss handler, never waits for a reply).

use std::collections::VecDeque;
use std::os::fd::OwnedFd;

use crate::frontend::FrontendError;
use crate::scenario::ThreadRole;
use crate::transport::RecvBuffer;
use crate::wire::Header;

/// One whole reply as the reader read it for a requester (header, payload,
/// descriptors), or the read's error with the header if one was read: what
/// [`crate::frontend::Frontend::vhost_user_read`] returns.
pub type RawReply = Result<(Header, Vec<u8>, Vec<OwnedFd>), (FrontendError, Option<Header>)>;

/// A requester waiting for its reply: the request's place in the FIFO.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Unique per connection; the requester waits on it.
    pub ticket: u64,
    /// The requesting thread (its log lines and deliveries carry it).
    pub role: ThreadRole,
    /// The request code whose reply is awaited.
    pub request: u32,
}

/// The BQL of the reply-queue design: who holds it, whether the holder is
/// waiting for a reply (and so lends it), and whether it is lent out now.
/// One thread per role: the holder is named by its role.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LendableBql {
    /// The thread that took the BQL, if any (it stays the holder while lent).
    pub holder: Option<ThreadRole>,
    /// The holder is inside a reply wait: the BQL may be borrowed.
    pub lending: bool,
    /// The back-end channel handler has it now.
    pub borrowed: bool,
}

/// What [`ReplyQueue::bql_borrow`] got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BqlGrant {
    /// The BQL was free and is now the caller's.
    Taken,
    /// The holder lends it while it waits; give it back with
    /// [`ReplyQueue::bql_give_back`].
    Borrowed,
}

/// A reader's turn ([`Step::Read`]): the head of the FIFO whose reply it
/// reads first, how many requests are pending (it may frame as many
/// replies), and the connection's buffer, lent for the turn.
#[derive(Debug)]
pub struct Turn {
    /// The FIFO's head: the next reply is its.
    pub head: Pending,
    /// Pending requests now, the head included: the most replies to frame.
    pub pending: usize,
    /// The connection's receive buffer, given back with [`ReplyQueue::hand`].
    pub buffer: RecvBuffer,
}

/// What a waiting requester does next ([`ReplyQueue::next_step`],
/// [`ReplyQueue::hand`]).
#[derive(Debug)]
pub enum Step {
    /// Its reply (or error) has been handed to it and it has the BQL back
    /// if it lent it: return this.
    Done(RawReply),
    /// It is the reader: read the whole reply of this turn's head, and any
    /// more whole replies already received, in FIFO order.
    Read(Turn),
}

/// Why [`ReplyQueue::enqueue`] refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failed;

/// The per-connection state of the reply-queue design. `W` is a waiter's
/// wake-up handle (the front-end's per-request slot; `()` in unit tests):
/// a requester that must wait registers it, and the transitions return the
/// handles to signal, so that a hand-off wakes its recipient only (and the
/// end of a reader's turn the new head only), not every waiter.
#[derive(Debug)]
pub struct ReplyQueue<W = ()> {
    pending: VecDeque<Pending>,
    handed: Vec<(u64, RawReply)>,
    asleep: Vec<(u64, W)>,
    reader: Option<u64>,
    /// The receive buffer while nobody reads (`None` during a turn).
    buffer: Option<RecvBuffer>,
    next_ticket: u64,
    failed: bool,
    /// The BQL, when the policy is reply-queue.
    pub bql: LendableBql,
    /// How many times the handler borrowed the BQL from a waiting holder
    /// (a ghost counter for tests: it shows rule 3 was exercised).
    pub bql_loans: u64,
    /// Threads asleep on the monitor right now (kept by
    /// [`ReplyQueue::wait_step`]): a change nobody sleeps on needs no notify.
    pub sleepers: u32,
}

impl<W> Default for ReplyQueue<W> {
    fn default() -> Self {
        ReplyQueue {
            pending: VecDeque::new(),
            handed: Vec::new(),
            asleep: Vec::new(),
            reader: None,
            buffer: Some(RecvBuffer::default()),
            next_ticket: 0,
            failed: false,
            bql: LendableBql::default(),
            bql_loans: 0,
            sleepers: 0,
        }
    }
}

impl<W: Clone> ReplyQueue<W> {
    /// An empty queue, no reader, the BQL free.
    pub fn new() -> Self {
        Self::default()
    }

    /// [`ReplyQueue::next_step`]; if it says wait, registers `waker` as
    /// `ticket`'s, to be signalled when there is something for it to do.
    pub fn next_step_or_sleep(&mut self, role: ThreadRole, ticket: u64, waker: &W) -> Option<Step> {
        let step = self.next_step(role, ticket);
        if step.is_none() && !self.asleep.iter().any(|(t, _)| *t == ticket) {
            self.asleep.push((ticket, waker.clone()));
        }
        step
    }

    /// Takes `ticket`'s registered waker, if it sleeps.
    fn wake(&mut self, ticket: u64, out: &mut Vec<W>) {
        if let Some(i) = self.asleep.iter().position(|(t, _)| *t == ticket) {
            out.push(self.asleep.swap_remove(i).1);
        }
    }

    /// One check of a wait on the monitor, with the sleeper count kept:
    /// `slept` is the waiter's own flag (false on its first check), set
    /// when `ready` says wait. For `Monitor::wait_until`'s closure.
    pub fn wait_step<R>(
        &mut self,
        slept: &mut bool,
        ready: impl FnOnce(&mut Self) -> Option<R>,
    ) -> Option<R> {
        if std::mem::take(slept) {
            self.sleepers -= 1;
        }
        let r = ready(self);
        if r.is_none() {
            self.sleepers += 1;
            *slept = true;
        }
        r
    }

    /// Whether a change made now must wake the monitor's sleepers.
    pub fn anyone_asleep(&self) -> bool {
        self.sleepers > 0
    }

    /// Rule 1: appends a requester to the FIFO and returns its ticket. The
    /// caller holds the write lock and sends the request before releasing
    /// it. Refused once a read has failed (the stream's framing is lost:
    /// any later reply read would start mid-message).
    pub fn enqueue(&mut self, role: ThreadRole, request: u32) -> Result<u64, Failed> {
        if self.failed {
            return Err(Failed);
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        self.pending.push_back(Pending { ticket, role, request });
        Ok(ticket)
    }

    /// Takes back `ticket` whose send failed (under the write lock, so it is
    /// the last entry, and no reply for it can have been read).
    pub fn withdraw(&mut self, ticket: u64) {
        if self.pending.back().is_some_and(|p| p.ticket == ticket) {
            self.pending.pop_back();
        }
    }

    /// Pending requesters, head first.
    pub fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.pending.iter()
    }

    /// Whether a read has failed and every request is refused since.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// The ticket of the thread reading now, if any.
    pub fn reader(&self) -> Option<u64> {
        self.reader
    }

    /// Rule 3: `role`, about to wait for a reply, lends the BQL if it holds
    /// it. True if it started lending now: the caller must then wake the
    /// threads waiting on the monitor (the handler may wait to borrow).
    pub fn lend(&mut self, role: ThreadRole) -> bool {
        if self.bql.holder == Some(role) && !self.bql.lending {
            self.bql.lending = true;
            true
        } else {
            false
        }
    }

    /// Rules 2 and 3 for the requester `role` waiting for `ticket`, checked
    /// under the monitor: `None` means wait (someone else reads, or the
    /// reply is there but the lent BQL is not back yet).
    pub fn next_step(&mut self, role: ThreadRole, ticket: u64) -> Option<Step> {
        if let Some(i) = self.handed.iter().position(|(t, _)| *t == ticket) {
            return self.take_handed(role, i);
        }
        if self.reader.is_some() {
            debug_assert_ne!(self.reader, Some(ticket), "a reader's turn goes on through `hand`");
            return None;
        }
        let turn = self.turn()?;
        self.reader = Some(ticket);
        Some(Step::Read(turn))
    }

    /// A reader's turn for the FIFO's head, with the buffer lent out; `None`
    /// when nothing is pending.
    fn turn(&mut self) -> Option<Turn> {
        let head = self.pending.front().copied()?;
        let buffer = self.buffer.take().expect("the buffer is lent to one reader at a time");
        Some(Turn { head, pending: self.pending.len(), buffer })
    }

    /// The handed reply at `i` for `role`, unless `role` lent the BQL and
    /// it is still out; ends the lending.
    fn take_handed(&mut self, role: ThreadRole, i: usize) -> Option<Step> {
        let holds_bql = self.bql.holder == Some(role);
        if holds_bql && self.bql.borrowed {
            return None;
        }
        if holds_bql {
            self.bql.lending = false;
        }
        Some(Step::Done(self.handed.swap_remove(i).1))
    }

    /// Rule 2, after the reader (`ticket`, thread `role`) read `replies`
    /// (in stream order, at most the turn's pending count): pops one head
    /// per reply and hands it the reply; after a failed read, fails every
    /// pending entry too. Takes the buffer back. The reader stays the reader
    /// (with a new turn) while its own reply has not come. Returns the
    /// reader's next step (`None`: wait, its reply is there but the lent BQL
    /// is not back) and the wakers to signal (every other thread handed a
    /// reply, and the new head's when the reader's turn ends with requests
    /// still pending).
    pub fn hand(
        &mut self,
        role: ThreadRole,
        ticket: u64,
        replies: Vec<RawReply>,
        buffer: RecvBuffer,
    ) -> (Option<Step>, Vec<W>) {
        let mut wake = Vec::new();
        self.buffer = Some(buffer);
        for reply in replies {
            let failed = reply.is_err();
            if let Some(head) = self.pending.pop_front() {
                self.handed.push((head.ticket, reply));
                if head.ticket != ticket {
                    self.wake(head.ticket, &mut wake);
                }
            }
            if failed {
                self.failed = true;
                for p in self.pending.drain(..) {
                    self.handed.push((p.ticket, Err((FrontendError::ReplyChannelFailed, None))));
                }
                wake.extend(self.asleep.drain(..).map(|(_, w)| w));
                break;
            }
        }
        let Some(i) = self.handed.iter().position(|(t, _)| *t == ticket) else {
            return (self.turn().map(Step::Read), wake);
        };
        // The reader's turn ends: the new head's requester reads next.
        self.reader = None;
        if let Some(next) = self.pending.front().map(|p| p.ticket) {
            self.wake(next, &mut wake);
        }
        (self.take_handed(role, i), wake)
    }

    /// Takes the BQL for `role` if it is free (not held, not lent out).
    pub fn bql_try_lock(&mut self, role: ThreadRole) -> bool {
        if self.bql.holder.is_none() && !self.bql.borrowed {
            self.bql.holder = Some(role);
            true
        } else {
            false
        }
    }

    /// Releases the BQL `role` holds (the caller notifies).
    pub fn bql_unlock(&mut self, role: ThreadRole) {
        debug_assert_eq!(self.bql.holder, Some(role));
        self.bql = LendableBql::default();
    }

    /// Rule 3, for the main loop's back-end channel handler: takes the BQL
    /// if it is free, or borrows it from a holder that is waiting for a
    /// reply and has not lent it out already; `None` means wait.
    pub fn bql_borrow(&mut self, role: ThreadRole) -> Option<BqlGrant> {
        if self.bql_try_lock(role) {
            return Some(BqlGrant::Taken);
        }
        if self.bql.lending && !self.bql.borrowed && self.bql.holder != Some(role) {
            self.bql.borrowed = true;
            self.bql_loans += 1;
            return Some(BqlGrant::Borrowed);
        }
        None
    }

    /// Gives back what [`ReplyQueue::bql_borrow`] granted (the caller
    /// notifies the monitor's sleepers and signals the returned wakers: a
    /// holder whose reply came while its BQL was out waits for it).
    pub fn bql_give_back(&mut self, role: ThreadRole, grant: BqlGrant) -> Vec<W> {
        match grant {
            BqlGrant::Taken => {
                self.bql_unlock(role);
                Vec::new()
            }
            BqlGrant::Borrowed => {
                self.bql.borrowed = false;
                let mut wake = Vec::new();
                let handed: Vec<u64> = self.handed.iter().map(|(t, _)| *t).collect();
                for t in handed {
                    self.wake(t, &mut wake);
                }
                wake
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Request;

    const DS: ThreadRole = ThreadRole::DeviceStart;
    const PL: ThreadRole = ThreadRole::PostcopyListen;
    const ML: ThreadRole = ThreadRole::MainLoop;

    fn ack(request: Request) -> RawReply {
        Ok((Header::reply(request, 8), vec![0; 8], Vec::new()))
    }

    fn one(r: RawReply) -> Vec<RawReply> {
        vec![r]
    }

    fn code(r: &RawReply) -> Option<u32> {
        r.as_ref().ok().map(|(h, _, _)| h.request)
    }

    #[test]
    fn one_thread_is_write_then_read_without_hand_off() {
        let mut q = ReplyQueue::<()>::new();
        let t = q.enqueue(DS, Request::IotlbMsg as u32).unwrap();
        let Some(Step::Read(turn)) = q.next_step(DS, t) else { panic!("becomes the reader") };
        assert_eq!(turn.head.ticket, t);
        let (Some(Step::Done(got)), wake) = q.hand(DS, t, one(ack(Request::IotlbMsg)), turn.buffer)
        else {
            panic!("its own reply at once")
        };
        assert!(wake.is_empty(), "nobody else to wake");
        assert_eq!(code(&got), Some(Request::IotlbMsg as u32));
        assert_eq!(q.reader(), None);
        assert_eq!(q.pending().count(), 0);
    }

    #[test]
    fn the_reader_hands_the_head_its_reply_and_keeps_reading_for_its_own() {
        let mut q = ReplyQueue::<()>::new();
        let a = q.enqueue(DS, Request::IotlbMsg as u32).unwrap();
        let b = q.enqueue(PL, Request::PostcopyEnd as u32).unwrap();
        // b waits first and becomes the reader; the head is a's request.
        let Some(Step::Read(turn)) = q.next_step(PL, b) else { panic!("b reads") };
        assert_eq!((turn.head.ticket, turn.pending), (a, 2));
        assert!(q.next_step_or_sleep(DS, a, &()).is_none(), "a sleeps: b is reading");
        let (Some(Step::Read(turn)), wake) =
            q.hand(PL, b, one(ack(Request::IotlbMsg)), turn.buffer)
        else {
            panic!("not b's reply: b reads on")
        };
        assert_eq!(wake.len(), 1, "a, and only a, is woken");
        assert_eq!(turn.head.ticket, b);
        assert_eq!(q.reader(), Some(b), "b keeps reading");
        let Some(Step::Done(r)) = q.next_step(DS, a) else { panic!("a has its reply") };
        assert_eq!(code(&r), Some(Request::IotlbMsg as u32));
        let (Some(Step::Done(r)), wake) =
            q.hand(PL, b, one(ack(Request::PostcopyEnd)), turn.buffer)
        else {
            panic!("b's own reply")
        };
        assert!(wake.is_empty(), "nobody left to wake");
        assert_eq!(code(&r), Some(Request::PostcopyEnd as u32));
    }

    #[test]
    fn a_failed_read_fails_every_pending_entry_and_later_requests() {
        let mut q = ReplyQueue::<()>::new();
        let a = q.enqueue(DS, Request::IotlbMsg as u32).unwrap();
        let b = q.enqueue(PL, Request::PostcopyEnd as u32).unwrap();
        let Some(Step::Read(turn)) = q.next_step(DS, a) else { panic!("a reads") };
        assert!(q.next_step_or_sleep(PL, b, &()).is_none(), "b sleeps");
        let err = Err((FrontendError::Protocol("end of stream"), None));
        let (Some(Step::Done(Err(_))), wake) = q.hand(DS, a, one(err), turn.buffer) else {
            panic!("a gets the read error")
        };
        assert_eq!(wake.len(), 1, "b is woken");
        let Some(Step::Done(r)) = q.next_step(PL, b) else { panic!("b is failed, not left") };
        assert!(matches!(r, Err((FrontendError::ReplyChannelFailed, None))));
        assert_eq!(q.enqueue(ML, Request::IotlbMsg as u32), Err(Failed));
    }

    #[test]
    fn one_turn_hands_several_replies_in_fifo_order_and_keeps_the_partial_tail() {
        let mut q = ReplyQueue::<()>::new();
        let a = q.enqueue(DS, Request::IotlbMsg as u32).unwrap();
        let b = q.enqueue(PL, Request::PostcopyEnd as u32).unwrap();
        let c = q.enqueue(ML, Request::IotlbMsg as u32).unwrap();
        let Some(Step::Read(mut turn)) = q.next_step(DS, a) else { panic!("a reads") };
        assert_eq!(turn.pending, 3);
        assert!(q.next_step_or_sleep(PL, b, &()).is_none());
        assert!(q.next_step_or_sleep(ML, c, &()).is_none());
        let spare = turn.buffer.spare();
        spare[..5].copy_from_slice(b"tail!");
        turn.buffer.received(5, Vec::new());
        let replies = vec![ack(Request::IotlbMsg), ack(Request::PostcopyEnd)];
        let (Some(Step::Done(r)), wake) = q.hand(DS, a, replies, turn.buffer) else {
            panic!("a's reply came first")
        };
        assert_eq!(code(&r), Some(Request::IotlbMsg as u32));
        assert_eq!(wake.len(), 2, "b (its reply) and c (the new head, who reads next)");
        let Some(Step::Done(r)) = q.next_step(PL, b) else { panic!("b has its reply") };
        assert_eq!(code(&r), Some(Request::PostcopyEnd as u32));
        let Some(Step::Read(turn)) = q.next_step(ML, c) else { panic!("c reads next") };
        assert_eq!((turn.head.ticket, turn.pending), (c, 1));
        assert_eq!(turn.buffer.available(), b"tail!", "the partial reply waits in the buffer");
    }

    #[test]
    fn the_sleeper_count_follows_the_waiters_checks() {
        let mut q = ReplyQueue::<()>::new();
        let mut slept = false;
        assert_eq!(q.wait_step(&mut slept, |_| None::<()>), None);
        assert!(q.anyone_asleep() && slept);
        assert_eq!(q.wait_step(&mut slept, |_| Some(())), Some(()));
        assert!(!q.anyone_asleep() && !slept);
    }

    #[test]
    fn a_withdrawn_ticket_leaves_no_entry() {
        let mut q = ReplyQueue::<()>::new();
        let a = q.enqueue(DS, Request::IotlbMsg as u32).unwrap();
        let b = q.enqueue(PL, Request::PostcopyEnd as u32).unwrap();
        q.withdraw(b);
        assert_eq!(q.pending().map(|p| p.ticket).collect::<Vec<_>>(), vec![a]);
    }

    #[test]
    fn a_bql_holder_lends_while_waiting_and_returns_only_with_it_back() {
        let mut q = ReplyQueue::<()>::new();
        assert!(q.bql_try_lock(DS));
        assert_eq!(q.bql_borrow(ML), None, "not lent before the holder waits");
        let t = q.enqueue(DS, Request::IotlbMsg as u32).unwrap();
        assert!(q.lend(DS), "starts lending: the caller wakes the handler");
        assert!(!q.lend(DS), "lent once per wait");
        assert!(!q.bql_try_lock(PL), "lent only to the back-end channel handler");
        assert_eq!(q.bql_borrow(ML), Some(BqlGrant::Borrowed));
        assert_eq!(q.bql_borrow(ML), None, "lent once at a time");
        let Some(Step::Read(turn)) = q.next_step(DS, t) else { panic!("the holder reads") };
        let (None, _) = q.hand(DS, t, one(ack(Request::IotlbMsg)), turn.buffer) else {
            panic!("BQL still borrowed: wait")
        };
        assert!(q.next_step_or_sleep(DS, t, &()).is_none(), "waits for the BQL");
        assert_eq!(q.bql_give_back(ML, BqlGrant::Borrowed).len(), 1, "the holder is woken");
        let Some(Step::Done(r)) = q.next_step(DS, t) else { panic!("reply and BQL back") };
        assert!(r.is_ok());
        assert_eq!(q.bql, LendableBql { holder: Some(DS), lending: false, borrowed: false });
        q.bql_unlock(DS);
        assert_eq!(q.bql_borrow(ML), Some(BqlGrant::Taken));
    }
}
