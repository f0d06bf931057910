//! The vhost-user front-end channel, one Rust function per QEMU function of
//! hw/virtio/vhost-user.c and hw/virtio/vhost.c (mid-2024) on the race's
//! path, over any [`Transport`] and any [`SyncFamily`].
//!
//! Models: `vhost_user_write` (one send per message), `vhost_user_read_header`
//! (12 bytes; flags must be 0x5, else QEMU's message and *no* payload read),
//! `vhost_user_read` (size check, then the payload as a second read),
//! `process_message_reply` (request-code check, u64 status),
//! `vhost_user_send_device_iotlb_msg`, `vhost_device_iotlb_miss`,
//! `vhost_user_postcopy_end`, `vhost_user_get_u64` / `vhost_user_set_u64`
//! (GET/SET_FEATURES, GET/SET_PROTOCOL_FEATURES), `vhost_user_set_vring_num`
//! and the handshake QEMU runs before a device can start. Every failure QEMU
//! reports is logged into the [`Record`] as QEMU's exact line, with the
//! calling thread's id. The lock policy is applied where the variant puts it:
//! the request/reply mutex around write-and-reply on every request path
//! ([`crate::scenario::LockPolicy::Mutex`]) and the BQL inside
//! `vhost_user_postcopy_end` ([`crate::scenario::LockPolicy::BqlPostcopyEnd`]).
//! Under [`crate::scenario::LockPolicy::ReplyQueue`] (this project's design,
//! not QEMU's) every request goes through a short write lock (held for the
//! send only) and, if it wants a reply, the per-connection FIFO of
//! [`crate::reply_queue`]: the
//! waiter that finds nobody reading reads the head's whole reply (one
//! `recv` of whatever is there into the connection's buffer) with the same
//! `vhost_user_read` checks and log lines, hands it to the FIFO's head, and
//! hands on, in order and with the same checks, every further reply already
//! whole in the buffer;
//! the BQL is then a token in the same monitor, lent by a holder while it
//! waits ([`Frontend::with_bql`], [`Frontend::with_bql_borrowed`]); and the
//! back-end channel's miss is answered by
//! [`Frontend::vhost_device_iotlb_miss_without_reply`].
//! The threads that call these functions are in [`crate::threads`].
//!
//! Leaves out: the nested GMainLoop QEMU runs while reading a reply (reads
//! block here; under reply-queue the BQL loan to the main loop's handler
//! stands for the back-end channel that nested loop would serve), `error_setg` chaining, the memory-region lookup of
//! `vhost_device_iotlb_miss` (replaced by a fixed guest IOMMU,
//! [`guest_iommu_translate`]), its "Fail to lookup the translated address"
//! message, and every request not on these paths.

use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::Arc;

use crate::qemu_log::QemuError;
use crate::record::{Delivery, Record};
use crate::reply_queue::{BqlGrant, RawReply, ReplyQueue, Step, Turn};
use crate::scenario::{Scenario, ThreadRole, Variant, MAX_BACKEND_MISSES, MAX_VIRTQUEUES};
use crate::sync::{with_lock_if, Lock, Monitor, SyncFamily};
use crate::transport::{read_all, RecvBuffer, Transport, TransportError};
use crate::wire::{
    self, Header, IotlbMsg, MemoryRegion, ProtocolFeatures, Request, VringAddr, WireError,
    HEADER_SIZE, PROTOCOL_F_REPLY_ACK, VHOST_USER_F_PROTOCOL_FEATURES,
};

/// Why a front-end call failed.
#[derive(Debug, thiserror::Error)]
pub enum FrontendError {
    /// A reply could not be read or did not match; QEMU logged this line.
    #[error("{0}")]
    Logged(QemuError),
    /// The back-end answered with a non-zero REPLY_ACK status (QEMU fails
    /// silently: `-EIO`).
    #[error("back-end answered status {0}")]
    Nack(u64),
    /// The socket failed or was shut down while writing.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// A malformed message where the front-end decodes one (back-end channel
    /// requests, reply payloads of the wrong size).
    #[error(transparent)]
    Wire(#[from] wire::WireError),
    /// A reply or back-end request carried file descriptors it may not
    /// carry; they were closed.
    #[error("{count} unexpected file descriptors with request {request}")]
    UnexpectedFds {
        /// The request code.
        request: u32,
        /// How many descriptors were closed.
        count: usize,
    },
    /// The guest IOMMU has no translation for this IOVA.
    #[error("no guest IOMMU translation for iova {0:#x}")]
    NoTranslation(u64),
    /// The back-end lacks a protocol feature QEMU requires for an IOMMU device.
    #[error("back-end lacks protocol features {0:#x}")]
    MissingFeatures(u64),
    /// A call QEMU would fail before the socket (for example an unexpected
    /// back-end channel message type).
    #[error("{0}")]
    Protocol(&'static str),
    /// Reply-queue only: another thread's reply read failed while this
    /// request was queued (or before it was sent), so its reply can no longer
    /// be found in the stream.
    #[error("the reply stream failed before this request's reply was read")]
    ReplyChannelFailed,
}

/// The guest IOMMU of the scenario: the IOTLB update that answers a miss on
/// `iova` (a virtqueue's used ring, [`Scenario::iotlb_update`], or a back-end
/// miss, [`Scenario::miss_answer`]). Stands for
/// `address_space_get_iotlb_entry` plus `vhost_memory_region_lookup`.
pub fn guest_iommu_translate(iova: u64) -> Option<IotlbMsg> {
    (0..MAX_VIRTQUEUES).map(Scenario::iotlb_update).find(|u| u.iova == iova).or_else(|| {
        (0..MAX_BACKEND_MISSES)
            .find(|&n| Scenario::backend_miss(n).iova == iova)
            .map(Scenario::miss_answer)
    })
}

/// The guest RAM the front-end shares with the back-end (QEMU's RAM block).
pub const GUEST_RAM_SIZE: u64 = 1 << 20;
/// Where the front-end "has" guest RAM mapped: the `userspace_addr` of its
/// one memory region, which every IOTLB `uaddr` of the scenario falls in.
pub const GUEST_RAM_UADDR: u64 = 0x7f00_0000_0000;

/// The one memory region the handshake sends (guest physical 0, 1 MiB).
pub fn guest_ram_region() -> MemoryRegion {
    MemoryRegion {
        guest_phys_addr: 0,
        memory_size: GUEST_RAM_SIZE,
        userspace_addr: GUEST_RAM_UADDR,
        mmap_offset: 0,
    }
}

/// Reply-queue: a waiting requester's own wake-up slot (set and notified
/// by the thread that has something for it: its reply, the reader's turn,
/// or its lent BQL back), so that a hand-off wakes one thread, not all.
pub(crate) type Waker<F> = Arc<<F as SyncFamily>::Monitor<bool>>;

/// Sets and notifies each of `wakers` (outside the reply-queue monitor).
fn signal<F: SyncFamily>(wakers: Vec<Waker<F>>) {
    for w in wakers {
        w.with_notify(|woken| *woken = true);
    }
}

/// Main-loop bottom halves pending (QEMU 10.2 schedules the postcopy cleanup).
#[derive(Debug, Default)]
pub(crate) struct BottomHalves {
    pub(crate) postcopy_end: bool,
    /// Set by [`Frontend::shutdown`]: the main loop stops waiting.
    pub(crate) shut_down: bool,
}

/// A QEMU front-end's vhost-user device: the main socket, the back-end
/// channel, the locks of the variant and the log.
pub struct Frontend<F: SyncFamily, T: Transport> {
    pub(crate) main: T,
    pub(crate) backend_channel: Option<T>,
    pub(crate) variant: Variant,
    pub(crate) scenario: Scenario,
    /// The per-connection request/reply mutex (July 2024 patch).
    pub(crate) request_reply: Lock<F>,
    /// The Big QEMU Lock, process-wide (every policy but reply-queue).
    pub(crate) bql: Lock<F>,
    /// Reply-queue: the FIFO of pending requesters, the reader, the receive
    /// buffer and the lendable BQL, in one monitor so that a BQL holder's
    /// wait and the handler's borrow see each other.
    reply_queue: F::Monitor<ReplyQueue<Waker<F>>>,
    /// Reply-queue: the connection's write lock, held for one enqueue and
    /// send, never across a round trip.
    write_lock: Lock<F>,
    pub(crate) bh: F::Monitor<BottomHalves>,
    pub(crate) record: Arc<Record<F>>,
    protocol_features: u64,
    widen_race_window: bool,
}

impl<F: SyncFamily, T: Transport> std::fmt::Debug for Frontend<F, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Frontend").field("variant", &self.variant).finish_non_exhaustive()
    }
}

impl<F: SyncFamily, T: Transport> Frontend<F, T> {
    /// A front-end on `main`, serving back-end requests from `backend_channel`
    /// (the front-end's end of the channel whose other end it hands over with
    /// SET_BACKEND_REQ_FD), with `variant`'s locks. Protocol features start
    /// as "REPLY_ACK negotiated", so that a front-end used without
    /// [`Frontend::handshake`] behaves as after one.
    pub fn new(main: T, backend_channel: Option<T>, variant: Variant, scenario: Scenario) -> Self {
        Frontend {
            main,
            backend_channel,
            variant,
            scenario,
            request_reply: Lock::<F>::new(()),
            bql: Lock::<F>::new(()),
            reply_queue: F::Monitor::new(ReplyQueue::new()),
            write_lock: Lock::<F>::new(()),
            bh: F::Monitor::new(BottomHalves::default()),
            record: Arc::new(Record::new()),
            protocol_features: ProtocolFeatures::IOMMU_POSTCOPY.bits(),
            widen_race_window: false,
        }
    }

    /// Opt-in: yield between the header read and the payload read of every
    /// reply (`F::yield_now`). Not QEMU's behaviour; it widens the window in
    /// which another thread can read in between, so that the race shows in
    /// fewer iterations on a real socket.
    pub fn widen_race_window(mut self, on: bool) -> Self {
        self.widen_race_window = on;
        self
    }

    /// The log and delivery record.
    pub fn record(&self) -> &Arc<Record<F>> {
        &self.record
    }

    /// The main socket.
    pub fn main_transport(&self) -> &T {
        &self.main
    }

    /// The front-end's end of the back-end channel.
    pub fn backend_channel(&self) -> Option<&T> {
        self.backend_channel.as_ref()
    }

    /// Reply-queue: how many times the back-end channel handler borrowed the
    /// BQL from a holder waiting for a reply (0 for every other policy).
    pub fn bql_loans(&self) -> u64 {
        self.reply_queue.with(|q| q.bql_loans)
    }

    /// The variant whose locks this front-end takes.
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// Shuts the main socket and the back-end channel down: every blocked
    /// read, here and in the back-end, returns end of stream; a main loop
    /// waiting for a bottom half stops waiting.
    pub fn shutdown(&self) {
        self.bh.with_notify(|b| b.shut_down = true);
        self.main.shutdown();
        if let Some(c) = &self.backend_channel {
            c.shutdown();
        }
    }

    fn reply_ack(&self) -> bool {
        self.protocol_features & PROTOCOL_F_REPLY_ACK != 0
    }

    /// `vhost_user_write`: the header and payload (and descriptors) in one send.
    pub fn vhost_user_write(
        &self,
        header: Header,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), FrontendError> {
        self.main.send(&wire::encode(header, payload), fds)?;
        Ok(())
    }

    /// `vhost_user_read_header`'s flags check: not 0x5 logs `Flags 0x%x
    /// instead of 0x5.` and fails the read.
    fn check_reply_flags(
        &self,
        role: ThreadRole,
        h: Header,
    ) -> Result<(), (FrontendError, Option<Header>)> {
        if let Err(WireError::BadFlags { got, .. }) = h.validate_reply_flags() {
            let e = QemuError::ReadHeaderFlags { flags: got };
            self.record.log(role, e);
            return Err((FrontendError::Logged(e), Some(h)));
        }
        Ok(())
    }

    /// `vhost_user_read`'s size check: over the maximum logs `Size %d
    /// exceeds the maximum` and fails the read before the payload.
    fn check_reply_size(
        &self,
        role: ThreadRole,
        h: Header,
    ) -> Result<(), (FrontendError, Option<Header>)> {
        if let Err(WireError::PayloadTooLarge(size)) = h.validate_size() {
            let e = QemuError::ReadHeaderSize { size };
            self.record.log(role, e);
            return Err((FrontendError::Logged(e), Some(h)));
        }
        Ok(())
    }

    /// `vhost_user_read_header`: reads exactly 12 bytes; if fewer, logs
    /// `Read %d instead of 12`; if the flags are not 0x5 logs `Flags 0x%x
    /// instead of 0x5.` and fails without reading the payload. `request` is
    /// the request whose reply is awaited (for the message only).
    pub fn vhost_user_read_header(
        &self,
        role: ThreadRole,
        request: u32,
        fds: &mut Vec<OwnedFd>,
    ) -> Result<Header, (FrontendError, Option<Header>)> {
        let mut b = [0u8; HEADER_SIZE];
        let read = match read_all(&self.main, &mut b, fds) {
            Ok(n) => n as i32,
            Err(_) => -1,
        };
        if read != HEADER_SIZE as i32 {
            let e = QemuError::ReadHeaderShort { read, request };
            self.record.log(role, e);
            return Err((FrontendError::Logged(e), None));
        }
        let h = Header::from_bytes(&b);
        self.check_reply_flags(role, h)?;
        Ok(h)
    }

    /// `vhost_user_read`: the header, then the size check, then the payload
    /// as a second read. Returns the header, payload and any descriptors.
    #[allow(clippy::type_complexity)]
    pub fn vhost_user_read(
        &self,
        role: ThreadRole,
        request: u32,
    ) -> Result<(Header, Vec<u8>, Vec<OwnedFd>), (FrontendError, Option<Header>)> {
        let mut fds = Vec::new();
        let h = self.vhost_user_read_header(role, request, &mut fds)?;
        self.check_reply_size(role, h)?;
        if self.widen_race_window {
            F::yield_now();
        }
        let mut payload = vec![0u8; h.size as usize];
        if h.size > 0 {
            let read = match read_all(&self.main, &mut payload, &mut fds) {
                Ok(n) => n as i32,
                Err(_) => -1,
            };
            if read != h.size as i32 {
                let e = QemuError::ReadPayloadShort { read, size: h.size };
                self.record.log(role, e);
                return Err((FrontendError::Logged(e), Some(h)));
            }
        }
        Ok((h, payload, fds))
    }

    /// Reads a reply for `request` and checks its code (the common part of
    /// `process_message_reply` and `vhost_user_get_u64`), recording the
    /// delivery. Descriptors are refused unless `takes_fd`.
    fn read_reply(
        &self,
        role: ThreadRole,
        request: u32,
        takes_fd: bool,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), FrontendError> {
        self.check_reply(role, request, self.vhost_user_read(role, request), takes_fd)
    }

    /// The requester's part of [`Frontend::read_reply`] on a reply read by
    /// itself or (reply-queue) handed to it: records the delivery, checks
    /// the request code (logging `Received unexpected msg type`) and the
    /// descriptors.
    fn check_reply(
        &self,
        role: ThreadRole,
        request: u32,
        raw: RawReply,
        takes_fd: bool,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), FrontendError> {
        let (h, payload, fds) = match raw {
            Ok(r) => r,
            Err((e, h)) => {
                self.record.deliver(Delivery::classify(role, request, h));
                return Err(e);
            }
        };
        let delivery = Delivery::classify(role, request, Some(h));
        if h.request != request {
            self.record.deliver(delivery);
            let e = QemuError::UnexpectedMsgType { expected: request, received: h.request };
            self.record.log(role, e);
            return Err(FrontendError::Logged(e));
        }
        if !takes_fd && !fds.is_empty() {
            let count = fds.len();
            drop(fds);
            self.record.deliver(Delivery {
                outcome: crate::record::DeliveryOutcome::UnexpectedFds,
                ..delivery
            });
            return Err(FrontendError::UnexpectedFds { request, count });
        }
        self.record.deliver(delivery);
        Ok((payload, fds))
    }

    /// `process_message_reply`: nothing if the request had no NEED_REPLY;
    /// else read the reply, log `Received unexpected msg type` if its code
    /// is not the request's, and fail (silently) on a non-zero u64 status.
    pub fn process_message_reply(
        &self,
        role: ThreadRole,
        msg: &Header,
    ) -> Result<(), FrontendError> {
        if !msg.need_reply() {
            return Ok(());
        }
        let (payload, _) = self.read_reply(role, msg.request, false)?;
        ack_status(&payload)
    }

    // ----- reply-queue (LockPolicy::ReplyQueue) ---------------------------

    /// Reply-queue, rule 1: sends one message under the write lock; if
    /// `expects_reply`, enqueues its requester first, in the same critical
    /// section of the write lock, so that the FIFO is in wire order. The
    /// reply-queue monitor is not held during the send (readers hand replies
    /// over meanwhile): the entry is enqueued under it just before the send,
    /// and just after it, still under the write lock, this thread lends the
    /// BQL if it holds it and becomes the reader if nobody reads (or finds
    /// its reply already handed). Returns the ticket to wait on and the
    /// first step (`None`: wait). A failed send takes its entry back (the
    /// last one, as the write lock is held; a reader may have counted it but
    /// has no reply for it).
    #[allow(clippy::type_complexity)]
    fn rq_write(
        &self,
        role: ThreadRole,
        header: Header,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        expects_reply: Option<&Waker<F>>,
    ) -> Result<Option<(u64, Option<Step>)>, FrontendError> {
        self.write_lock.with(|_| {
            let Some(waker) = expects_reply else {
                return self.vhost_user_write(header, payload, fds).map(|_| None);
            };
            let ticket = self
                .reply_queue
                .with(|q| q.enqueue(role, header.request))
                .map_err(|_| FrontendError::ReplyChannelFailed)?;
            let sent = self.vhost_user_write(header, payload, fds);
            self.reply_queue.with_notify_if(|q| {
                if let Err(e) = sent {
                    q.withdraw(ticket);
                    return (Err(e), false);
                }
                // The handler may be waiting to borrow the BQL lent now.
                let lent = q.lend(role);
                let step = q.next_step_or_sleep(role, ticket, waker);
                (Ok(Some((ticket, step))), lent && q.anyone_asleep())
            })
        })
    }

    /// Reply-queue, rules 2 and 3: waits for `ticket`'s reply, starting
    /// with `step`. As the reader, this thread reads the whole reply of the
    /// FIFO's head and every further whole reply already received
    /// ([`Frontend::rq_read_turn`], logging as this thread), hands them over
    /// in order, and reads on until its own reply has come. A BQL holder
    /// lends the BQL for the whole wait (reading included: the read blocks
    /// outside the monitor, so the handler can borrow meanwhile) and returns
    /// only once it is back.
    fn rq_await(
        &self,
        role: ThreadRole,
        ticket: u64,
        waker: &Waker<F>,
        mut step: Option<Step>,
    ) -> RawReply {
        // Whether `waker` is registered for the current wait: `rq_write` and
        // `next_step_or_sleep` register it when they say wait, `hand` does not.
        let mut registered = step.is_none();
        loop {
            match step.take() {
                Some(Step::Done(reply)) => return reply,
                Some(Step::Read(mut turn)) => {
                    let replies = self.rq_read_turn(role, &mut turn);
                    let (next, wake) =
                        self.reply_queue.with(|q| q.hand(role, ticket, replies, turn.buffer));
                    signal::<F>(wake);
                    step = next;
                    registered = false;
                }
                None => {
                    if registered {
                        waker.wait_until(|woken| std::mem::take(woken).then_some(()));
                    }
                    step = self.reply_queue.with(|q| q.next_step_or_sleep(role, ticket, waker));
                    registered = true;
                }
            }
        }
    }

    /// Reply-queue, rule 2: one reader's turn. Reads the head's whole reply
    /// with `vhost_user_read`'s checks and log lines (receiving into the
    /// connection's buffer, one `recv` of whatever is there, until the reply
    /// is whole or the stream ends), then frames, with the same checks,
    /// every further reply that is already whole in the buffer, up to the
    /// turn's pending count; stops after a failed reply. A partial reply
    /// stays in the buffer.
    fn rq_read_turn(&self, role: ThreadRole, turn: &mut Turn) -> Vec<RawReply> {
        let mut replies = Vec::new();
        while replies.len() < turn.pending {
            let first = replies.is_empty();
            if !first && !whole_message(turn.buffer.available()) {
                break;
            }
            let reply = self.rq_frame_reply(role, turn.head.request, &mut turn.buffer);
            let failed = reply.is_err();
            replies.push(reply);
            if failed {
                break;
            }
        }
        replies
    }

    /// `vhost_user_read` on the reply-queue's buffer: the header (logging
    /// `Read %d instead of 12` if the stream ends or fails first, `Flags 0x%x
    /// instead of 0x5.` without framing the payload), the size check, then
    /// the payload (`Read %d instead of %d`). `request` is the request whose
    /// reply is read first (for the messages only: later replies of a turn
    /// are whole in the buffer, so only their flags and size can fail).
    fn rq_frame_reply(&self, role: ThreadRole, request: u32, buf: &mut RecvBuffer) -> RawReply {
        if let Err(read) = self.rq_fill(buf, HEADER_SIZE) {
            let e = QemuError::ReadHeaderShort { read, request };
            self.record.log(role, e);
            return Err((FrontendError::Logged(e), None));
        }
        let b: &[u8; HEADER_SIZE] = buf.available()[..HEADER_SIZE].try_into().expect("12 bytes");
        let h = Header::from_bytes(b);
        self.check_reply_flags(role, h)?;
        self.check_reply_size(role, h)?;
        if self.widen_race_window {
            F::yield_now();
        }
        let len = HEADER_SIZE + h.size as usize;
        if let Err(read) = self.rq_fill(buf, len) {
            let read = if read < 0 { read } else { read - HEADER_SIZE as i32 };
            let e = QemuError::ReadPayloadShort { read, size: h.size };
            self.record.log(role, e);
            return Err((FrontendError::Logged(e), Some(h)));
        }
        let payload = buf.available()[HEADER_SIZE..len].to_vec();
        let fds = buf.consume(len);
        Ok((h, payload, fds))
    }

    /// Receives into `buf` until it holds `len` unframed bytes; at the end of
    /// the stream, `Err` with how many it holds (`-1` on a socket error, as
    /// `vhost_user_read` reports a failed read).
    fn rq_fill(&self, buf: &mut RecvBuffer, len: usize) -> Result<(), i32> {
        match buf.fill(&self.main, len) {
            Ok(true) => Ok(()),
            Ok(false) => Err(buf.available().len() as i32),
            Err(_) => Err(-1),
        }
    }

    /// Reply-queue: one request and its reply through the FIFO, checked as
    /// [`Frontend::read_reply`] checks it.
    fn rq_round_trip(
        &self,
        role: ThreadRole,
        header: Header,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
        takes_fd: bool,
    ) -> Result<(Vec<u8>, Vec<OwnedFd>), FrontendError> {
        let waker: Waker<F> = Arc::new(F::Monitor::new(false));
        let queued = self.rq_write(role, header, payload, fds, Some(&waker))?;
        let (ticket, step) = queued.ok_or(FrontendError::Protocol("no FIFO entry for a reply"))?;
        let raw = self.rq_await(role, ticket, &waker, step);
        self.check_reply(role, header.request, raw, takes_fd)
    }

    /// Runs `f` holding the BQL if `take`: the plain lock for every policy
    /// but reply-queue; for reply-queue, the token in the reply-queue
    /// monitor, which this thread lends while it waits for a reply inside `f`.
    pub fn with_bql<R>(&self, role: ThreadRole, take: bool, f: impl FnOnce() -> R) -> R {
        if !self.variant.policy.reply_queue() {
            return with_lock_if::<F, _>(&self.bql, take, f);
        }
        if !take {
            return f();
        }
        self.rq_wait(|q| q.bql_try_lock(role).then_some(()));
        let r = f();
        self.reply_queue.with_notify_if(|q| (q.bql_unlock(role), q.anyone_asleep()));
        r
    }

    /// The main loop's back-end channel handler under the BQL: the plain
    /// lock for every policy but reply-queue; for reply-queue, the BQL if it
    /// is free, or borrowed from a holder that is waiting for a reply (and
    /// given back after `f`), so that the handler runs while device start
    /// waits with the BQL.
    pub fn with_bql_borrowed<R>(&self, role: ThreadRole, f: impl FnOnce() -> R) -> R {
        if !self.variant.policy.reply_queue() {
            return self.bql.with(|_| f());
        }
        let grant: BqlGrant = self.rq_wait(|q| q.bql_borrow(role));
        let r = f();
        let wake =
            self.reply_queue.with_notify_if(|q| (q.bql_give_back(role, grant), q.anyone_asleep()));
        signal::<F>(wake);
        r
    }

    /// Waits on the reply-queue monitor until `ready` says go, counted as a
    /// sleeper while asleep, so that changes nobody waits for skip the
    /// notify (under loom, one scheduling point less each).
    fn rq_wait<R>(&self, mut ready: impl FnMut(&mut ReplyQueue<Waker<F>>) -> Option<R>) -> R {
        let mut slept = false;
        self.reply_queue.wait_until(|q| q.wait_step(&mut slept, &mut ready))
    }

    /// Reply-queue, rule 4: `vhost_device_iotlb_miss` as the back-end channel
    /// handler calls it: the update goes out *without* NEED_REPLY (no FIFO
    /// entry, no reply read), so the handler never waits on the main socket,
    /// which a back-end waiting for the miss's answer does not serve. On a
    /// failed send logs `Fail to update device iotlb`.
    pub fn vhost_device_iotlb_miss_without_reply(
        &self,
        role: ThreadRole,
        iova: u64,
    ) -> Result<(), FrontendError> {
        self.iotlb_miss(role, iova, false)
    }
}

/// Whether `bytes` begin with a whole message (header and announced payload).
fn whole_message(bytes: &[u8]) -> bool {
    bytes.len() >= HEADER_SIZE && {
        let h = Header::from_bytes(bytes[..HEADER_SIZE].try_into().expect("12 bytes"));
        bytes.len() >= HEADER_SIZE + h.size as usize
    }
}

/// `process_message_reply`'s status: the reply's u64, 0 for success.
fn ack_status(payload: &[u8]) -> Result<(), FrontendError> {
    match wire::reply_status(payload) {
        0 => Ok(()),
        status => Err(FrontendError::Nack(status)),
    }
}

impl<F: SyncFamily, T: Transport> Frontend<F, T> {
    /// A request with NEED_REPLY as asked, under the request/reply mutex when
    /// the variant has it: write, then `process_message_reply`. Under
    /// reply-queue the reply (if NEED_REPLY) comes through the FIFO.
    fn request_with_ack(
        &self,
        role: ThreadRole,
        header: Header,
        payload: &[u8],
        fds: &[BorrowedFd<'_>],
    ) -> Result<(), FrontendError> {
        if self.variant.policy.reply_queue() {
            if !header.need_reply() {
                return self.rq_write(role, header, payload, fds, None).map(|_| ());
            }
            let (payload, _) = self.rq_round_trip(role, header, payload, fds, false)?;
            return ack_status(&payload);
        }
        with_lock_if::<F, _>(&self.request_reply, self.variant.policy.request_reply_mutex(), || {
            self.vhost_user_write(header, payload, fds)?;
            self.process_message_reply(role, &header)
        })
    }

    /// `vhost_user_send_device_iotlb_msg`: IOTLB_MSG with NEED_REPLY, then
    /// `process_message_reply`.
    pub fn vhost_user_send_device_iotlb_msg(
        &self,
        role: ThreadRole,
        msg: &IotlbMsg,
    ) -> Result<(), FrontendError> {
        self.send_device_iotlb_msg(role, msg, true)
    }

    /// IOTLB_MSG with NEED_REPLY as asked, then `process_message_reply`
    /// (nothing to read without NEED_REPLY).
    fn send_device_iotlb_msg(
        &self,
        role: ThreadRole,
        msg: &IotlbMsg,
        need_reply: bool,
    ) -> Result<(), FrontendError> {
        let h = Header::request(Request::IotlbMsg, wire::IOTLB_PAYLOAD_SIZE, need_reply);
        self.request_with_ack(role, h, &msg.to_bytes(), &[])
    }

    /// `vhost_device_iotlb_miss`: translate `iova` through the guest IOMMU and
    /// send the update (`vhost_backend_update_device_iotlb`); on failure log
    /// `Fail to update device iotlb`.
    pub fn vhost_device_iotlb_miss(
        &self,
        role: ThreadRole,
        iova: u64,
    ) -> Result<(), FrontendError> {
        self.iotlb_miss(role, iova, true)
    }

    /// `vhost_device_iotlb_miss` with the update's NEED_REPLY as asked.
    fn iotlb_miss(
        &self,
        role: ThreadRole,
        iova: u64,
        need_reply: bool,
    ) -> Result<(), FrontendError> {
        let update = guest_iommu_translate(iova).ok_or(FrontendError::NoTranslation(iova))?;
        let r = self.send_device_iotlb_msg(role, &update, need_reply);
        if r.is_err() {
            self.record.log(role, QemuError::IotlbUpdateFailed);
        }
        r
    }

    /// `vhost_user_postcopy_end`: POSTCOPY_END with NEED_REPLY and its reply;
    /// on a failed reply logs `Failed to receive reply to postcopy_end`.
    /// Takes the BQL around it all under
    /// [`crate::scenario::LockPolicy::BqlPostcopyEnd`].
    pub fn vhost_user_postcopy_end(&self, role: ThreadRole) -> Result<(), FrontendError> {
        with_lock_if::<F, _>(&self.bql, self.variant.policy.postcopy_end_under_bql(), || {
            let h = Header::request(Request::PostcopyEnd, 0, true);
            let r = self.request_with_ack(role, h, &[], &[]);
            if matches!(r, Err(FrontendError::Logged(_) | FrontendError::Nack(_))) {
                self.record.log(role, QemuError::PostcopyEndFailed);
            }
            r
        })
    }

    /// `vhost_dev_start`'s IOTLB loop: `vhost_device_iotlb_miss` on the used
    /// ring of each of `virtqueues` virtqueues. Before QEMU 9.2 a failure is
    /// ignored and the loop goes on; with `fail_start` (9.2) device start
    /// fails at the first failure (the rollback requests are left out).
    pub fn vhost_dev_start(&self, role: ThreadRole, virtqueues: u8) -> Result<(), FrontendError> {
        for vq in 0..virtqueues {
            let r = self.vhost_device_iotlb_miss(role, Scenario::iotlb_update(vq).iova);
            if let Err(e) = r {
                if self.variant.fail_start {
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// `vhost_user_get_u64`: a request without payload whose reply carries a
    /// u64 (GET_FEATURES, GET_PROTOCOL_FEATURES), under the request/reply
    /// mutex when the variant has it.
    pub fn vhost_user_get_u64(
        &self,
        role: ThreadRole,
        request: Request,
    ) -> Result<u64, FrontendError> {
        if self.variant.policy.reply_queue() {
            let h = Header::request(request, 0, false);
            let (payload, _) = self.rq_round_trip(role, h, &[], &[], false)?;
            return Ok(wire::u64_from_bytes(&payload)?);
        }
        with_lock_if::<F, _>(&self.request_reply, self.variant.policy.request_reply_mutex(), || {
            self.vhost_user_write(Header::request(request, 0, false), &[], &[])?;
            let (payload, _) = self.read_reply(role, request as u32, false)?;
            Ok(wire::u64_from_bytes(&payload)?)
        })
    }

    /// `vhost_user_get_features`: GET_FEATURES.
    pub fn vhost_user_get_features(&self, role: ThreadRole) -> Result<u64, FrontendError> {
        self.vhost_user_get_u64(role, Request::GetFeatures)
    }

    /// `vhost_user_set_u64`: SET_FEATURES / SET_PROTOCOL_FEATURES, with
    /// NEED_REPLY when `wait_for_reply` and REPLY_ACK is negotiated.
    pub fn vhost_user_set_u64(
        &self,
        role: ThreadRole,
        request: Request,
        value: u64,
        wait_for_reply: bool,
    ) -> Result<(), FrontendError> {
        let need = wait_for_reply && self.reply_ack();
        self.request_with_ack(role, Header::request(request, 8, need), &value.to_le_bytes(), &[])
    }

    /// `vhost_user_set_vring_num`: SET_VRING_NUM (no reply asked, as QEMU).
    pub fn vhost_user_set_vring_num(
        &self,
        role: ThreadRole,
        index: u32,
        num: u32,
    ) -> Result<(), FrontendError> {
        let h = Header::request(Request::SetVringNum, wire::VRING_STATE_SIZE, false);
        self.request_with_ack(role, h, &wire::vring_state_to_bytes(index, num), &[])
    }

    /// The handshake of `vhost_user_backend_init`, `vhost_dev_init` and the
    /// start of `vhost_dev_start` before the IOTLB loop: GET_FEATURES,
    /// GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES (REPLY_ACK | BACKEND_REQ
    /// | PAGEFAULT, all required), SET_BACKEND_REQ_FD (passing
    /// `backend_req_fd` if given), SET_OWNER, SET_FEATURES, SET_MEM_TABLE
    /// (one region, `mem_fd` if given, NEED_REPLY), and SET_VRING_NUM /
    /// SET_VRING_BASE / SET_VRING_ADDR for each of the scenario's
    /// virtqueues. Then POSTCOPY_ADVISE (whose reply carries the back-end's
    /// userfaultfd, returned) and POSTCOPY_LISTEN: the state in which the
    /// race's threads start. Runs on the main-loop thread.
    pub fn handshake(
        &mut self,
        backend_req_fd: Option<BorrowedFd<'_>>,
        mem_fd: Option<BorrowedFd<'_>>,
    ) -> Result<Option<OwnedFd>, FrontendError> {
        let role = ThreadRole::MainLoop;
        let features = self.vhost_user_get_features(role)?;
        if features & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
            return Err(FrontendError::Protocol("back-end lacks VHOST_USER_F_PROTOCOL_FEATURES"));
        }
        let offered = self.vhost_user_get_u64(role, Request::GetProtocolFeatures)?;
        let wanted = ProtocolFeatures::IOMMU_POSTCOPY.bits();
        if offered & wanted != wanted {
            return Err(FrontendError::MissingFeatures(wanted & !offered));
        }
        self.protocol_features = offered & wanted;
        self.vhost_user_set_u64(role, Request::SetProtocolFeatures, self.protocol_features, false)?;
        let fds: Vec<BorrowedFd<'_>> = backend_req_fd.into_iter().collect();
        self.request_with_ack(role, Header::request(Request::SetBackendReqFd, 0, true), &[], &fds)?;
        self.request_with_ack(role, Header::request(Request::SetOwner, 0, false), &[], &[])?;
        self.vhost_user_set_u64(role, Request::SetFeatures, features, true)?;
        let table = MemoryRegion::table_to_bytes(&[guest_ram_region()]);
        let fds: Vec<BorrowedFd<'_>> = mem_fd.into_iter().collect();
        let h = Header::request(Request::SetMemTable, table.len(), true);
        self.request_with_ack(role, h, &table, &fds)?;
        for vq in 0..self.scenario.virtqueues.max(1) {
            let index = u32::from(vq);
            self.vhost_user_set_vring_num(role, index, 256)?;
            let h = Header::request(Request::SetVringBase, wire::VRING_STATE_SIZE, false);
            self.request_with_ack(role, h, &wire::vring_state_to_bytes(index, 0), &[])?;
            let u = Scenario::iotlb_update(vq);
            let addr =
                VringAddr { index, flags: 0, desc: u.iova, used: u.iova, avail: u.iova, log: 0 };
            let h = Header::request(Request::SetVringAddr, wire::VRING_ADDR_SIZE, false);
            self.request_with_ack(role, h, &addr.to_bytes(), &[])?;
        }
        let advise = Header::request(Request::PostcopyAdvise, 0, false);
        let ufd = if self.variant.policy.reply_queue() {
            let (payload, mut fds) = self.rq_round_trip(role, advise, &[], &[], true)?;
            if !payload.is_empty() {
                return Err(FrontendError::Protocol("Received bad msg size."));
            }
            fds.pop()
        } else {
            with_lock_if::<F, _>(
                &self.request_reply,
                self.variant.policy.request_reply_mutex(),
                || {
                    self.vhost_user_write(
                        Header::request(Request::PostcopyAdvise, 0, false),
                        &[],
                        &[],
                    )?;
                    let (payload, mut fds) =
                        self.read_reply(role, Request::PostcopyAdvise as u32, true)?;
                    if !payload.is_empty() {
                        return Err(FrontendError::Protocol("Received bad msg size."));
                    }
                    Ok(fds.pop())
                },
            )?
        };
        self.request_with_ack(role, Header::request(Request::PostcopyListen, 0, true), &[], &[])?;
        Ok(ufd)
    }
}
