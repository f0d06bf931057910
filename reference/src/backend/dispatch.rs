//! The back-end's dispatch loop: the wire side of a vhost-user back-end,
//! one request at a time over any [`Transport`], calling a
//! [`BackendReqHandler`] for what the device does.
//!
//! Models: reading a header and its payload (with descriptors) through a
//! receive buffer (one `recv` of whatever is there, framed into whole
//! requests served in order; descriptors go to the message that carries
//! them, see [`Transport::recv`]), QEMU's request check
//! ([`Header::validate_request`]), the payload size and the number of
//! descriptors each request takes, and the answer: REPLY_ACK as
//! rust-vmm's back-end applies it (an ack only when REPLY_ACK is negotiated
//! and the request has NEED_REPLY; GET_* requests, SET_LOG_BASE and
//! POSTCOPY_ADVISE always answer with their body; a failure ack for a
//! request code it does not know, when one is asked for, instead of a
//! disconnect). IOTLB_MSG is served with and without NEED_REPLY. Between
//! requests it sends the device's BACKEND_IOTLB_MSG misses on the back-end
//! channel (which it owns: preset, or from SET_BACKEND_REQ_FD) and, with
//! NEED_REPLY, reads their answer before it reads the main socket again.
//! Whether the next miss goes out before the next request is read is a
//! choice ([`Transport::goes_next`] on the channel): on real sockets the
//! miss goes first, as soon as the device has it; a gated in-memory channel
//! lets a scheduler send it after any number of requests, as a back-end
//! whose misses come from its datapath may (the model's
//! `Action::BackendSendMiss`).
//! Malformed input is a typed [`BackendError`]: the connection is shut
//! down, received descriptors are closed (they are [`OwnedFd`]s), nothing
//! panics.
//!
//! Also here, because they are about what goes on the wire and when: a
//! [`trace`] line per request and reply, the [`ReplyPlan`] that answers
//! IOTLB updates with chosen bytes, and [`FaultInjection`]'s held and
//! delayed IOTLB replies.
//!
//! Leaves out: what any request means to the device (the handler's part),
//! and the payload layouts of request codes not in [`Request`].
//!
//! [`trace`]: super::trace

use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use super::handler::BackendReqHandler;
use super::plan::{self, ReplyPlan};
use super::postcopy::{self, FaultInjection};
use super::trace::{Direction, TraceEvent};
use super::{BackendConfig, BackendError, ReferenceDevice};
use crate::transport::{read_all, GateOp, RecvBuffer, Transport, TransportError, UnixTransport};
use crate::wire::{
    self, Header, IotlbMsg, IotlbType, MemoryRegion, ProtocolFeatures, Request, VringAddr,
    WireError, HEADER_SIZE, VRING_IDX_MASK, VRING_NOFD_MASK,
};

/// The back-end of one connection: the dispatch loop around device `H`.
pub struct Backend<T: Transport, H: BackendReqHandler = ReferenceDevice> {
    main: T,
    channel: Option<Box<dyn Transport>>,
    handler: H,
    miss_need_reply: bool,
    requests_served: u64,
    iotlb_updates_acked: u64,
    postcopy_ended: bool,
    plan: ReplyPlan,
    iotlb_need_reply_seen: usize,
    trace: Option<(Box<dyn Write + Send>, Instant, u32)>,
    faults: FaultInjection,
    held: Option<(Vec<u8>, Instant)>,
    mem_table_ack_pending: bool,
    /// Bytes read from the main socket and not yet framed into requests.
    inbox: RecvBuffer,
    /// The device's next miss, taken from the handler and not yet sent.
    pending_miss: Option<IotlbMsg>,
    /// [`BackendConfig::split_replies`].
    split_replies: bool,
}

impl<T: Transport, H: BackendReqHandler> std::fmt::Debug for Backend<T, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("miss_need_reply", &self.miss_need_reply)
            .field("requests_served", &self.requests_served)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Backend<T> {
    /// The reference back-end on `main` ([`ReferenceDevice`] configured by
    /// `cfg`). `channel` is a preset back-end channel (for transports that
    /// carry no descriptors); over a Unix socket it comes with
    /// SET_BACKEND_REQ_FD instead.
    pub fn new(main: T, channel: Option<Box<dyn Transport>>, cfg: BackendConfig) -> Self {
        let mut b =
            Backend::with_handler(main, channel, cfg.miss_need_reply, ReferenceDevice::new(&cfg));
        b.split_replies = cfg.split_replies;
        b
    }

    /// See [`ReferenceDevice::set_misses_from_device_start`].
    pub fn set_misses_from_device_start(&mut self, on: bool) {
        self.handler.set_misses_from_device_start(on);
    }

    /// See [`ReferenceDevice::set_real_userfaultfd`].
    pub fn set_real_userfaultfd(&mut self, on: bool) {
        self.handler.set_real_userfaultfd(on);
    }

    /// See [`ReferenceDevice::set_max_queue_pairs`].
    pub fn set_max_queue_pairs(&mut self, n: u64) {
        self.handler.set_max_queue_pairs(n);
    }

    /// See [`ReferenceDevice::assume_negotiated`].
    pub fn assume_negotiated(&mut self) {
        self.handler.assume_negotiated();
    }
}

impl<T: Transport, H: BackendReqHandler> Backend<T, H> {
    /// A back-end on `main` serving `handler`; its misses carry NEED_REPLY
    /// when `miss_need_reply`.
    pub fn with_handler(
        main: T,
        channel: Option<Box<dyn Transport>>,
        miss_need_reply: bool,
        handler: H,
    ) -> Self {
        Backend {
            main,
            channel,
            handler,
            miss_need_reply,
            requests_served: 0,
            iotlb_updates_acked: 0,
            postcopy_ended: false,
            plan: ReplyPlan::default(),
            iotlb_need_reply_seen: 0,
            trace: None,
            faults: FaultInjection::default(),
            held: None,
            mem_table_ack_pending: false,
            inbox: RecvBuffer::default(),
            pending_miss: None,
            split_replies: false,
        }
    }

    /// The device.
    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// The device, to configure it before serving.
    pub fn handler_mut(&mut self) -> &mut H {
        &mut self.handler
    }

    /// Turns fault injection on (see [`FaultInjection`]).
    pub fn set_fault_injection(&mut self, f: FaultInjection) {
        self.faults = f;
    }

    /// Writes one [`TraceEvent`] line per request received and reply sent to
    /// `out`, times counted from `epoch`, tagged with connection `conn`.
    pub fn set_trace(&mut self, out: Box<dyn Write + Send>, epoch: Instant, conn: u32) {
        self.trace = Some((out, epoch, conn));
    }

    /// Answers IOTLB updates with NEED_REPLY as `plan` says (fault injection
    /// for the replay of a model counterexample on QEMU).
    pub fn set_reply_plan(&mut self, plan: ReplyPlan) {
        self.plan = plan;
    }

    /// Requests served so far.
    pub fn requests_served(&self) -> u64 {
        self.requests_served
    }

    /// IOTLB updates applied and acknowledged with success.
    pub fn iotlb_updates_acked(&self) -> u64 {
        self.iotlb_updates_acked
    }

    /// Whether POSTCOPY_END has been served.
    pub fn postcopy_ended(&self) -> bool {
        self.postcopy_ended
    }

    /// Serves requests until the front-end closes the connection (`Ok`) or
    /// sends something malformed (`Err`); either way the connection and the
    /// back-end channel are shut down on return.
    pub fn serve(&mut self) -> Result<(), BackendError> {
        let r = match self.serve_inner() {
            // The front-end shut the connection down while a reply or miss
            // was being sent: it closed, which ends serving normally.
            Err(BackendError::Transport(TransportError::Closed)) => Ok(()),
            r => r,
        };
        self.main.shutdown();
        // Descriptors of requests read ahead and never served close now.
        self.inbox = RecvBuffer::default();
        if let Some(c) = &self.channel {
            c.shutdown();
        }
        if let Some((out, _, _)) = &mut self.trace {
            let _ = out.flush();
        }
        r
    }

    fn serve_inner(&mut self) -> Result<(), BackendError> {
        loop {
            // A real run sends one miss before each request; a channel's
            // gate may order the request first, or several misses in a row
            // (the model's back-end sends its misses at any moment between
            // requests).
            let mut first = true;
            loop {
                if self.pending_miss.is_none() {
                    self.pending_miss = self.handler.next_miss();
                }
                let Some(miss) = self.pending_miss else { break };
                let send = GateOp::Send(wire::IOTLB_REQUEST_SIZE);
                if !self.channel.as_ref().map_or(first, |c| c.goes_next(send, first)) {
                    break;
                }
                self.pending_miss = None;
                self.send_miss(&miss)?;
                first = false;
            }
            if let Some((_, since)) = &self.held {
                let left = postcopy::HOLD_LIMIT.saturating_sub(since.elapsed());
                let ready = !self.inbox.available().is_empty();
                if left.is_zero() || !(ready || self.main.wait_readable(left)?) {
                    self.release_held("the hold's limit passed")?;
                }
            }
            // One `recv` of whatever is there serves every request it holds.
            if !self.inbox.fill(&self.main, HEADER_SIZE)? {
                return match self.inbox.available().len() {
                    0 => Ok(()),
                    got => Err(BackendError::EofMidMessage { got, expected: HEADER_SIZE }),
                };
            }
            let b: &[u8; HEADER_SIZE] =
                self.inbox.available()[..HEADER_SIZE].try_into().expect("12 bytes");
            let h = Header::from_bytes(b);
            h.validate_request()?;
            let len = HEADER_SIZE + h.size as usize;
            if !self.inbox.fill(&self.main, len)? {
                let got = self.inbox.available().len() - HEADER_SIZE;
                return Err(BackendError::EofMidMessage { got, expected: h.size as usize });
            }
            let payload = self.inbox.available()[HEADER_SIZE..len].to_vec();
            let fds = self.inbox.consume(len);
            self.trace_event(Direction::Received, &h, fds.len(), describe(&h, &payload));
            match Request::try_from(h.request) {
                Ok(request) => self.dispatch(h, request, &payload, fds)?,
                // Not implemented here: the specification's answer is a
                // failure ack when one is asked for; the descriptors close.
                Err(WireError::UnknownRequest(_)) => {
                    drop(fds);
                    self.ack(&h, 1)?;
                }
                Err(e) => return Err(e.into()),
            }
            self.requests_served += 1;
        }
    }

    fn trace_event(&mut self, dir: Direction, h: &Header, fds: usize, note: Option<String>) {
        if let Some((out, epoch, conn)) = &mut self.trace {
            let ev = TraceEvent::new(epoch.elapsed(), *conn, dir, h, fds, note);
            // A trace that cannot be written must not stop the back-end.
            let _ = ev.write_line(out.as_mut());
        }
    }

    fn trace_channel_event(&mut self, dir: Direction, h: &Header, note: String) {
        if let Some((out, epoch, conn)) = &mut self.trace {
            let mut ev = TraceEvent::new(epoch.elapsed(), *conn, dir, h, 0, Some(note));
            ev.request = wire::BackendRequest::IotlbMsg.c_name().to_string();
            let _ = ev.write_line(out.as_mut());
        }
    }

    /// Sends `bytes` on the main socket and traces it as the reply to `h`.
    fn send_reply(
        &mut self,
        h: &Header,
        bytes: &[u8],
        fds: &[std::os::fd::BorrowedFd<'_>],
        note: Option<String>,
    ) -> Result<(), BackendError> {
        if self.split_replies && bytes.len() > HEADER_SIZE {
            self.main.send(&bytes[..HEADER_SIZE], fds)?;
            self.main.send(&bytes[HEADER_SIZE..], &[])?;
        } else {
            self.main.send(bytes, fds)?;
        }
        let mut sent = *h;
        if bytes.len() >= HEADER_SIZE {
            sent = Header::from_bytes(bytes[..HEADER_SIZE].try_into().expect("12 bytes"));
        }
        self.trace_event(Direction::Sent, &sent, fds.len(), note);
        Ok(())
    }

    /// Sends one BACKEND_IOTLB_MSG miss on the back-end channel and, with
    /// NEED_REPLY, reads and checks its answer.
    fn send_miss(&mut self, miss: &IotlbMsg) -> Result<(), BackendError> {
        let need_reply = self.miss_need_reply;
        let Some(chan) = &self.channel else {
            return Err(BackendError::Protocol("miss to send but no back-end channel"));
        };
        chan.send(&wire::backend_iotlb_miss(miss, need_reply), &[])?;
        let sent =
            Header::request(wire::BackendRequest::IotlbMsg, wire::IOTLB_PAYLOAD_SIZE, need_reply);
        let note = format!("back-end channel: miss iova {:#x}", miss.iova);
        self.trace_channel_event(Direction::Sent, &sent, note);
        if !need_reply {
            return Ok(());
        }
        let chan = self.channel.as_ref().expect("checked above");
        let mut b = [0u8; wire::ACK_REPLY_SIZE];
        let mut fds = Vec::new();
        let n = read_all(chan.as_ref(), &mut b, &mut fds)?;
        if n == 0 {
            // The front-end closed the channel instead of answering.
            return Err(TransportError::Closed.into());
        }
        if n < b.len() {
            return Err(BackendError::EofMidMessage { got: n, expected: b.len() });
        }
        let h = Header::from_bytes(b[..HEADER_SIZE].try_into().expect("12 bytes"));
        h.validate_reply()?;
        if h.request != wire::BackendRequest::IotlbMsg as u32 || h.size != 8 {
            return Err(BackendError::Protocol("bad reply on the back-end channel"));
        }
        let status = wire::u64_from_bytes(&b[HEADER_SIZE..])?;
        let note = format!("back-end channel: answer to the miss, status {status}");
        self.trace_channel_event(Direction::Received, &h, note);
        Ok(())
    }

    /// Whether REPLY_ACK is negotiated.
    fn reply_ack(&self) -> bool {
        self.handler.acked_protocol_features().contains(ProtocolFeatures::REPLY_ACK)
    }

    /// Sends a REPLY_ACK status if negotiated and asked.
    fn ack(&mut self, h: &Header, status: u64) -> Result<(), BackendError> {
        if self.reply_ack() && h.need_reply() {
            self.send_reply(
                h,
                &wire::ack_reply(h.request, status),
                &[],
                Some(format!("ack {status}")),
            )?;
        }
        Ok(())
    }

    /// Acks a handler call that succeeded; its error ends the connection.
    fn ack_done(&mut self, h: &Header, done: Result<(), BackendError>) -> Result<(), BackendError> {
        done?;
        self.ack(h, 0)
    }

    fn reply_u64(&mut self, h: &Header, value: u64) -> Result<(), BackendError> {
        self.send_reply(h, &wire::ack_reply(h.request, value), &[], Some(format!("u64 {value:#x}")))
    }

    /// How many descriptors `request` takes with this payload (`None`: the
    /// request's own arm checks).
    fn fds_taken(&self, request: Request, payload: &[u8]) -> Option<usize> {
        match request {
            Request::SetBackendReqFd => Some(usize::from(self.channel.is_none())),
            Request::SetMemTable | Request::SetLogBase => None,
            Request::SetVringKick | Request::SetVringCall | Request::SetVringErr => {
                match wire::u64_from_bytes(payload) {
                    Ok(v) if v & VRING_NOFD_MASK != 0 => Some(0),
                    _ => Some(1),
                }
            }
            _ => Some(0),
        }
    }

    /// Checks one request's descriptors and payload, calls the handler, and
    /// answers as the request and the negotiated REPLY_ACK say.
    fn dispatch(
        &mut self,
        h: Header,
        request: Request,
        payload: &[u8],
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), BackendError> {
        if let Some(takes) = self.fds_taken(request, payload) {
            if fds.len() != takes {
                return Err(BackendError::UnexpectedFds { request, count: fds.len(), takes });
            }
        }
        let expect_size = |n: usize| {
            if payload.len() == n {
                Ok(())
            } else {
                Err(WireError::PayloadSize { got: payload.len(), expected: n })
            }
        };
        match request {
            Request::GetFeatures => {
                expect_size(0)?;
                let v = self.handler.get_features();
                self.reply_u64(&h, v)
            }
            Request::GetProtocolFeatures => {
                expect_size(0)?;
                let v = self.handler.get_protocol_features().bits();
                self.reply_u64(&h, v)
            }
            Request::GetQueueNum => {
                expect_size(0)?;
                let v = self.handler.get_queue_num();
                self.reply_u64(&h, v)
            }
            Request::SetFeatures => {
                let done = self.handler.set_features(wire::u64_from_bytes(payload)?);
                self.ack_done(&h, done)
            }
            Request::SetProtocolFeatures => {
                let asked = ProtocolFeatures::from_bits_retain(wire::u64_from_bytes(payload)?);
                let done = self.handler.set_protocol_features(asked);
                self.ack_done(&h, done)
            }
            Request::SetOwner => {
                expect_size(0)?;
                let done = self.handler.set_owner();
                self.ack_done(&h, done)
            }
            Request::SetBackendReqFd => {
                expect_size(0)?;
                if let Some(fd) = fds.pop() {
                    self.channel = Some(Box::new(UnixTransport::from_fd(fd)));
                }
                self.ack(&h, 0)
            }
            Request::SetMemTable if self.mem_table_ack_pending && payload.len() == 8 => {
                // The front-end's ack of the postcopy reply below: no answer.
                self.mem_table_ack_pending = false;
                Ok(())
            }
            Request::SetMemTable => {
                let regions = MemoryRegion::table_from_bytes(payload)?;
                match self.handler.set_mem_table(regions, fds)? {
                    // While postcopy listens, as the specification asks: the
                    // table with the back-end's own addresses, after which
                    // QEMU sends SET_MEM_TABLE again with a u64 0 as its ack.
                    Some(mapped) => {
                        let body = MemoryRegion::table_to_bytes(&mapped);
                        let bytes = wire::encode(Header::reply(h.request, body.len()), &body);
                        self.mem_table_ack_pending = true;
                        let note = Some("postcopy: our mapping addresses".into());
                        self.send_reply(&h, &bytes, &[], note)
                    }
                    None => self.ack(&h, 0),
                }
            }
            Request::SetLogBase => {
                // `VhostUserLog`: mmap_size u64, mmap_offset u64; with
                // LOG_SHMFD one descriptor, and QEMU waits for a u64 reply.
                expect_size(16)?;
                if fds.len() > 1 {
                    return Err(BackendError::UnexpectedFds {
                        request,
                        count: fds.len(),
                        takes: 1,
                    });
                }
                let size = wire::u64_from_bytes(&payload[..8])?;
                let offset = wire::u64_from_bytes(&payload[8..])?;
                self.handler.set_log_base(size, offset, fds.pop())?;
                self.reply_u64(&h, 0)
            }
            Request::SetVringNum | Request::SetVringBase => {
                let (index, num) = wire::vring_state_from_bytes(payload)?;
                let done = if request == Request::SetVringNum {
                    self.handler.set_vring_num(index, num)
                } else {
                    self.handler.set_vring_base(index, num)
                };
                self.ack_done(&h, done)
            }
            Request::SetVringAddr => {
                let done = self.handler.set_vring_addr(VringAddr::from_bytes(payload)?);
                self.ack_done(&h, done)
            }
            Request::SetVringKick | Request::SetVringCall | Request::SetVringErr => {
                let v = wire::u64_from_bytes(payload)?;
                let index = (v & VRING_IDX_MASK) as u32;
                let fd = fds.pop();
                let done = match request {
                    Request::SetVringKick => self.handler.set_vring_kick(index, fd),
                    Request::SetVringCall => self.handler.set_vring_call(index, fd),
                    _ => self.handler.set_vring_err(index, fd),
                };
                self.ack_done(&h, done)
            }
            Request::GetVringBase => {
                let (index, _) = wire::vring_state_from_bytes(payload)?;
                let base = self.handler.get_vring_base(index)?;
                let body = wire::vring_state_to_bytes(index, base);
                let bytes = wire::encode(Header::reply(h.request, body.len()), &body);
                self.send_reply(&h, &bytes, &[], Some(format!("vq {index} base {base}")))
            }
            Request::SetVringEnable => {
                let (index, enable) = wire::vring_state_from_bytes(payload)?;
                let done = self.handler.set_vring_enable(index, enable != 0);
                self.ack_done(&h, done)
            }
            Request::IotlbMsg => self.iotlb_msg(h, &IotlbMsg::from_bytes(payload)?),
            Request::PostcopyAdvise => {
                expect_size(0)?;
                let ufd = self.handler.postcopy_advise()?;
                let bytes = wire::encode(Header::reply(h.request, 0), &[]);
                self.send_reply(&h, &bytes, &[ufd.as_fd()], None)
            }
            Request::PostcopyListen => {
                expect_size(0)?;
                let done = self.handler.postcopy_listen();
                self.ack_done(&h, done)
            }
            Request::PostcopyEnd => {
                expect_size(0)?;
                self.handler.postcopy_end()?;
                self.postcopy_ended = true;
                if self.held.is_some() {
                    std::thread::sleep(postcopy::HELD_REPLY_PAUSE);
                    self.release_held("POSTCOPY_END arrived")?;
                }
                self.ack(&h, 0)
            }
        }
    }

    /// IOTLB_MSG, with or without NEED_REPLY: applied by the handler, then
    /// answered with an ack (status 1 when refused) unless fault injection
    /// holds the reply or the reply plan answers instead.
    fn iotlb_msg(&mut self, h: Header, m: &IotlbMsg) -> Result<(), BackendError> {
        let applied = self.handler.iotlb_msg(m);
        if !self.faults.iotlb_reply_delay.is_zero() {
            std::thread::sleep(self.faults.iotlb_reply_delay);
        }
        if h.need_reply()
            && self.faults.hold_first_iotlb_reply
            && self.iotlb_need_reply_seen == 0
            && !self.postcopy_ended
            && self.reply_ack()
        {
            self.iotlb_need_reply_seen += 1;
            self.iotlb_updates_acked += u64::from(applied);
            self.held = Some((wire::ack_reply(h.request, u64::from(!applied)), Instant::now()));
            let note = Some("reply held until POSTCOPY_END".to_string());
            self.trace_event(Direction::Held, &h, 0, note);
            return Ok(());
        }
        if h.need_reply() {
            let call = self.iotlb_need_reply_seen;
            self.iotlb_need_reply_seen += 1;
            if let Some(chunks) = self.plan.iotlb_reply(call) {
                let chunks = chunks.to_vec();
                return self.send_planned(&h, call, &chunks);
            }
        }
        if applied {
            self.iotlb_updates_acked += u64::from(h.need_reply());
        }
        if m.kind == IotlbType::Update {
            // Where the update points in the mapped guest memory, for the
            // trace: QEMU's used-ring updates must land in RAM.
            let gpa = self.handler.translate(m.iova, m.size.max(1), m.perm);
            let note = gpa.map_or("not in guest memory".into(), |g| format!("gpa {:#x}", g.0));
            self.trace_event(Direction::Translated, &h, 0, Some(note));
        }
        self.ack(&h, u64::from(!applied))
    }

    /// Sends the held IOTLB reply.
    fn release_held(&mut self, why: &str) -> Result<(), BackendError> {
        if let Some((held, _)) = self.held.take() {
            let note = Some(format!("held IOTLB reply released: {why}"));
            let iotlb = Header::reply(Request::IotlbMsg, wire::ACK_PAYLOAD_SIZE);
            self.send_reply(&iotlb, &held, &[], note)?;
        }
        Ok(())
    }

    /// Sends the plan's chunks for IOTLB call `call` instead of its ack, a
    /// pause between chunks so that the reader's `recv` sees them apart.
    fn send_planned(
        &mut self,
        h: &Header,
        call: usize,
        chunks: &[Vec<u8>],
    ) -> Result<(), BackendError> {
        for (i, c) in chunks.iter().enumerate() {
            if i > 0 {
                std::thread::sleep(plan::CHUNK_PAUSE);
            }
            self.main.send(c, &[])?;
            let note = Some(format!(
                "planned reply to IOTLB call {call}, chunk {i}: {}",
                wire::hex_words(c)
            ));
            let shown = if c.len() >= HEADER_SIZE {
                Header::from_bytes(c[..HEADER_SIZE].try_into().expect("12 bytes"))
            } else {
                *h
            };
            self.trace_event(Direction::Sent, &shown, 0, note);
        }
        Ok(())
    }
}

/// What a trace line says about a request beyond its header.
fn describe(h: &Header, payload: &[u8]) -> Option<String> {
    let request = Request::try_from(h.request).ok()?;
    match request {
        Request::IotlbMsg => IotlbMsg::from_bytes(payload).ok().map(|m| {
            format!(
                "{:?} iova {:#x} size {:#x} uaddr {:#x} perm {:?}",
                m.kind, m.iova, m.size, m.uaddr, m.perm
            )
        }),
        Request::SetVringKick | Request::SetVringCall | Request::SetVringErr => {
            let v = wire::u64_from_bytes(payload).ok()?;
            let nofd = if v & VRING_NOFD_MASK != 0 { " no fd" } else { "" };
            Some(format!("vq {}{nofd}", v & VRING_IDX_MASK))
        }
        Request::SetVringNum
        | Request::SetVringBase
        | Request::SetVringEnable
        | Request::GetVringBase => {
            let (i, n) = wire::vring_state_from_bytes(payload).ok()?;
            Some(format!("vq {i} {n}"))
        }
        Request::SetMemTable => {
            MemoryRegion::table_from_bytes(payload).ok().map(|r| format!("{} regions", r.len()))
        }
        Request::SetFeatures | Request::SetProtocolFeatures => {
            wire::u64_from_bytes(payload).ok().map(|v| format!("{v:#x}"))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{trace, BACKEND_FEATURES};
    use crate::frontend::{guest_ram_region, Frontend};
    use crate::scenario::Scenario;
    use crate::scenario::{LockPolicy, ThreadRole, Variant};
    use crate::sync::ParkingLot;
    use crate::wire::PROTOCOL_F_REPLY_ACK;
    use std::fs::File;

    /// Guest RAM as the front-end shares it (the harness's memfd).
    fn memfd() -> File {
        File::from(crate::harness::guest_ram_memfd().unwrap())
    }

    #[test]
    fn acks_only_with_reply_ack_and_need_reply() {
        let (fe, be) = UnixTransport::pair().unwrap();
        let mut b =
            Backend::new(be, None, BackendConfig { map_memory: false, ..Default::default() });
        let with = Header::request(Request::SetOwner, 0, true);
        b.dispatch(with, Request::SetOwner, &[], vec![]).unwrap();
        b.handler_mut().set_protocol_features(ProtocolFeatures::REPLY_ACK).unwrap();
        let without = Header::request(Request::SetOwner, 0, false);
        b.dispatch(without, Request::SetOwner, &[], vec![]).unwrap();
        b.dispatch(with, Request::SetOwner, &[], vec![]).unwrap();
        b.main.shutdown();
        let mut got = [0u8; 64];
        let n = read_all(&fe, &mut got, &mut Vec::new()).unwrap();
        assert_eq!(&got[..n], &wire::ack_reply(Request::SetOwner, 0)[..], "exactly one ack");
    }

    #[test]
    fn serves_the_reference_front_end_with_the_full_handshake() {
        let (fe_main, be_main) = UnixTransport::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut b = Backend::new(be_main, None, BackendConfig::default());
            b.serve().map(|()| b.requests_served())
        });
        let (chan_fe, chan_be) = UnixTransport::pair().unwrap();
        let mut fe = Frontend::<ParkingLot, _>::new(
            fe_main,
            Some(chan_fe),
            Variant::new(LockPolicy::Qemu91),
            Scenario::default(),
        );
        let ram = memfd();
        let ufd = fe.handshake(Some(chan_be.as_fd()), Some(ram.as_fd())).unwrap();
        assert!(ufd.is_some());
        assert_eq!(
            fe.vhost_user_get_features(ThreadRole::MainLoop).unwrap(),
            BACKEND_FEATURES,
            "GET_FEATURES as a plain request path"
        );
        fe.vhost_user_set_vring_num(ThreadRole::MainLoop, 0, 128).unwrap();
        fe.vhost_device_iotlb_miss(ThreadRole::DeviceStart, Scenario::iotlb_update(0).iova)
            .unwrap();
        fe.shutdown();
        let served = server.join().unwrap().unwrap();
        // 2 GET + SET_PROTOCOL + BACKEND_REQ_FD + OWNER + SET_FEATURES +
        // MEM_TABLE + 3 per virtqueue (2) + ADVISE + LISTEN + 3 more.
        assert_eq!(served, 2 + 5 + 6 + 2 + 3);
        assert!(fe.record().log_lines().is_empty());
    }

    /// A raw front-end on a socketpair: sends `msgs` (with descriptors) and
    /// returns every byte the back-end answered, and the back-end.
    fn exchange(
        msgs: Vec<(Vec<u8>, Vec<OwnedFd>)>,
        setup: impl FnOnce(&mut Backend<UnixTransport>) + Send + 'static,
    ) -> (Vec<u8>, Backend<UnixTransport>) {
        let (fe, be) = UnixTransport::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut b = Backend::new(be, None, BackendConfig::default());
            setup(&mut b);
            b.serve().unwrap();
            b
        });
        for (bytes, fds) in &msgs {
            let fds: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
            fe.send(bytes, &fds).unwrap();
        }
        nix::sys::socket::shutdown(
            std::os::fd::AsRawFd::as_raw_fd(&fe.as_fd()),
            nix::sys::socket::Shutdown::Write,
        )
        .unwrap();
        let mut got = vec![0u8; 4096];
        let n = read_all(&fe, &mut got, &mut Vec::new()).unwrap();
        got.truncate(n);
        (got, server.join().unwrap())
    }

    fn u64_request(r: Request, v: u64, need_reply: bool) -> Vec<u8> {
        wire::encode(Header::request(r, 8, need_reply), &v.to_le_bytes())
    }

    #[test]
    fn an_unknown_request_gets_a_failure_ack_and_the_connection_goes_on() {
        let reply_ack = u64_request(Request::SetProtocolFeatures, PROTOCOL_F_REPLY_ACK, false);
        let unknown = wire::encode(Header { request: 250, flags: 0x9, size: 4 }, &[1, 2, 3, 4]);
        let unknown_no_reply = wire::encode(Header { request: 251, flags: 0x1, size: 0 }, &[]);
        let owner = wire::encode(Header::request(Request::SetOwner, 0, true), &[]);
        let (got, b) = exchange(
            vec![
                (reply_ack, vec![]),
                (unknown, vec![memfd().into()]),
                (unknown_no_reply, vec![]),
                (owner, vec![]),
            ],
            |_| {},
        );
        let mut want = wire::ack_reply(250u32, 1);
        want.extend(wire::ack_reply(Request::SetOwner, 0));
        assert_eq!(got, want, "a failure ack for the unknown request, then SET_OWNER's ack");
        assert_eq!(b.requests_served(), 4);
    }

    #[test]
    fn vring_descriptors_are_kept_unless_the_no_fd_flag_is_set() {
        let eventfd = || -> OwnedFd { memfd().into() };
        let msgs = vec![
            (u64_request(Request::SetVringKick, 1, false), vec![eventfd()]),
            (u64_request(Request::SetVringCall, 1 | VRING_NOFD_MASK, false), vec![]),
            (u64_request(Request::SetVringErr, 0, false), vec![eventfd()]),
            (
                wire::encode(
                    Header::request(Request::SetVringEnable, 8, false),
                    &wire::vring_state_to_bytes(1, 1),
                ),
                vec![],
            ),
        ];
        let (got, b) = exchange(msgs, |_| {});
        assert!(got.is_empty(), "no reply without NEED_REPLY");
        let v1 = &b.handler().vrings()[&1];
        assert!(v1.kick.is_some() && v1.call.is_none() && v1.started && v1.enabled);
        assert!(b.handler().vrings()[&0].err.is_some());
        // A descriptor missing where the flag says one comes is malformed.
        let (fe, be) = UnixTransport::pair().unwrap();
        fe.send(&u64_request(Request::SetVringCall, 0, false), &[]).unwrap();
        let e = Backend::new(be, None, BackendConfig::default()).serve().unwrap_err();
        assert!(
            matches!(
                e,
                BackendError::UnexpectedFds { request: Request::SetVringCall, count: 0, takes: 1 }
            ),
            "{e:?}"
        );
    }

    #[test]
    fn get_vring_base_stops_the_ring_and_returns_its_base() {
        let state =
            |r, i, n| wire::encode(Header::request(r, 8, false), &wire::vring_state_to_bytes(i, n));
        let msgs = vec![
            (state(Request::SetVringBase, 1, 7), vec![]),
            (u64_request(Request::SetVringKick, 1, false), vec![memfd().into()]),
            (state(Request::GetVringBase, 1, 0), vec![]),
            (wire::encode(Header::request(Request::GetQueueNum, 0, false), &[]), vec![]),
        ];
        let (got, b) = exchange(msgs, |b| b.set_max_queue_pairs(2));
        let mut want = wire::encode(
            Header::reply(Request::GetVringBase, 8),
            &wire::vring_state_to_bytes(1, 7),
        );
        want.extend(wire::ack_reply(Request::GetQueueNum, 2));
        assert_eq!(got, want);
        assert!(!b.handler().vrings()[&1].started && b.handler().vrings()[&1].kick.is_none());
    }

    #[test]
    fn iotlb_updates_are_applied_with_and_without_need_reply_and_acked_only_with_it() {
        let reply_ack = u64_request(Request::SetProtocolFeatures, PROTOCOL_F_REPLY_ACK, false);
        let (u0, u1) = (Scenario::iotlb_update(0), Scenario::iotlb_update(1));
        let (got, b) = exchange(
            vec![
                (reply_ack, vec![]),
                (wire::iotlb_update_request(&u0, false), vec![]),
                (wire::iotlb_update_request(&u1, true), vec![]),
            ],
            |_| {},
        );
        assert_eq!(got, wire::ack_reply(Request::IotlbMsg, 0), "one ack, for the NEED_REPLY one");
        let iotlb = b.handler().iotlb();
        assert_eq!(iotlb.translate(u0.iova, 1, u0.perm), Some(u0.uaddr));
        assert_eq!(iotlb.translate(u1.iova, 1, u1.perm), Some(u1.uaddr));
        assert_eq!(b.iotlb_updates_acked(), 1);
    }

    #[test]
    fn a_reply_plan_answers_the_planned_iotlb_calls_and_acks_the_rest() {
        let reply_ack = u64_request(Request::SetProtocolFeatures, PROTOCOL_F_REPLY_ACK, false);
        let update = |vq| wire::iotlb_update_request(&Scenario::iotlb_update(vq), true);
        let swapped = wire::ack_reply(Request::PostcopyEnd, 0);
        let plan =
            ReplyPlan { iotlb_replies: vec![vec![swapped[..12].to_vec(), swapped[12..].to_vec()]] };
        let (got, b) = exchange(
            vec![(reply_ack, vec![]), (update(0), vec![]), (update(1), vec![])],
            move |b| b.set_reply_plan(plan),
        );
        let mut want = swapped.clone();
        want.extend(wire::ack_reply(Request::IotlbMsg, 0));
        assert_eq!(got, want, "call 0 as planned, call 1 acked");
        assert_eq!(b.iotlb_updates_acked(), 1);
    }

    #[test]
    fn the_trace_has_a_line_per_request_and_reply() {
        let out = trace::SharedTrace::default();
        let out2 = out.clone();
        let get = wire::encode(Header::request(Request::GetFeatures, 0, false), &[]);
        let unknown = wire::encode(Header { request: 250, flags: 0x1, size: 0 }, &[]);
        exchange(vec![(get, vec![]), (unknown, vec![])], move |b| {
            b.set_trace(Box::new(out2), Instant::now(), 3)
        });
        let ev = out.events();
        let text = format!("{ev:?}");
        assert_eq!(ev.len(), 3, "{text}");
        assert!(ev[0].received(Request::GetFeatures) && ev[0].conn == 3);
        assert_eq!(
            (ev[1].dir, ev[1].code, ev[1].flags, ev[1].size),
            (trace::Direction::Sent, 1, 5, 8)
        );
        assert_eq!((ev[2].request.as_str(), ev[2].code), ("unknown", 250));
    }

    #[test]
    fn a_held_iotlb_reply_goes_out_when_postcopy_end_arrives_before_its_ack() {
        let reply_ack = u64_request(Request::SetProtocolFeatures, PROTOCOL_F_REPLY_ACK, false);
        let update = wire::iotlb_update_request(&Scenario::iotlb_update(0), true);
        let faults = FaultInjection { hold_first_iotlb_reply: true, ..Default::default() };
        let (got, _) = exchange(
            vec![(reply_ack, vec![]), (update, vec![]), (wire::postcopy_end_request(), vec![])],
            move |b| b.set_fault_injection(faults),
        );
        let mut want = wire::ack_reply(Request::IotlbMsg, 0);
        want.extend(wire::ack_reply(Request::PostcopyEnd, 0));
        assert_eq!(got, want, "the held IOTLB ack, then POSTCOPY_END's");
    }

    #[test]
    fn a_held_iotlb_reply_goes_out_after_the_limit_without_postcopy_end() {
        let (fe, be) = UnixTransport::pair().unwrap();
        let server = std::thread::spawn(move || {
            let mut b = Backend::new(be, None, BackendConfig::default());
            b.set_fault_injection(FaultInjection {
                hold_first_iotlb_reply: true,
                ..Default::default()
            });
            b.serve()
        });
        fe.send(&u64_request(Request::SetProtocolFeatures, PROTOCOL_F_REPLY_ACK, false), &[])
            .unwrap();
        fe.send(&wire::iotlb_update_request(&Scenario::iotlb_update(0), true), &[]).unwrap();
        // No POSTCOPY_END: a front-end that serialises would wait here.
        let mut got = [0u8; wire::ACK_REPLY_SIZE];
        assert_eq!(read_all(&fe, &mut got, &mut Vec::new()).unwrap(), got.len());
        assert_eq!(&got[..], &wire::ack_reply(Request::IotlbMsg, 0)[..]);
        fe.shutdown();
        server.join().unwrap().unwrap();
    }

    #[test]
    fn set_mem_table_while_postcopy_listens_is_answered_with_our_mapping() {
        let ram = memfd();
        let region = guest_ram_region();
        let table = MemoryRegion::table_to_bytes(&[region]);
        let msgs = vec![
            (u64_request(Request::SetProtocolFeatures, PROTOCOL_F_REPLY_ACK, false), vec![]),
            (wire::encode(Header::request(Request::PostcopyListen, 0, true), &[]), vec![]),
            (
                wire::encode(Header::request(Request::SetMemTable, table.len(), false), &table),
                vec![OwnedFd::from(ram)],
            ),
            // QEMU's ack of our reply: a u64 0, answered with nothing.
            (u64_request(Request::SetMemTable, 0, false), vec![]),
            (wire::encode(Header::request(Request::SetOwner, 0, true), &[]), vec![]),
        ];
        let (got, b) = exchange(msgs, |_| {});
        assert!(b.handler().memory_mapped());
        let listen_ack = wire::ack_reply(Request::PostcopyListen, 0);
        assert_eq!(&got[..20], &listen_ack[..]);
        let h = Header::from_bytes(got[20..32].try_into().unwrap());
        assert_eq!((h.request, h.flags, h.size as usize), (5, 5, table.len()));
        let replied = MemoryRegion::table_from_bytes(&got[32..32 + table.len()]).unwrap();
        assert_eq!(replied[0].guest_phys_addr, region.guest_phys_addr);
        assert_ne!(replied[0].userspace_addr, region.userspace_addr, "our own mapping address");
        assert_eq!(&got[32 + table.len()..], &wire::ack_reply(Request::SetOwner, 0)[..]);
    }
}
