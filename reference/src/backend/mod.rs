//! A vhost-user back-end: one request at a time, single-threaded, over any
//! [`Transport`], answering the handshake, the vring set-up, IOTLB_MSG and
//! postcopy, and sending BACKEND_IOTLB_MSG misses on the back-end channel.
//!
//! Models: REPLY_ACK as rust-vmm's back-end applies it (an ack only when
//! REPLY_ACK is negotiated and the request has NEED_REPLY; GET_* requests and
//! POSTCOPY_ADVISE always answer with their body); SET_MEM_TABLE with memfd
//! regions mapped through vm-memory's [`GuestMemoryMmap`] (or, for the
//! in-memory transport, which carries no descriptors here, a configuration
//! that skips mapping); an IOTLB of IOVA ranges with permissions and the
//! translation IOVA → front-end address → guest physical address in that
//! mapping; POSTCOPY_ADVISE/LISTEN/END; and the scenario's misses: once
//! POSTCOPY_LISTEN has been answered, before each read of the main socket it
//! sends the next [`Scenario::backend_miss`] whose IOVA the IOTLB cannot
//! translate, and with NEED_REPLY waits for the answer on the back-end
//! channel before it reads the main socket again. Malformed input from the
//! front-end is a typed [`BackendError`]: the connection is shut down,
//! received descriptors are closed (they are [`OwnedFd`]s), nothing panics.
//!
//! It also serves QEMU's own binary (7.2, vhost-user-net): the vring
//! descriptors of SET_VRING_KICK/CALL/ERR (kept, or the no-fd flag),
//! SET_VRING_ENABLE, GET_VRING_BASE (which stops the ring), GET_QUEUE_NUM
//! with the MQ protocol feature, SET_LOG_BASE's descriptor, and a failure
//! ack for any request code it does not know (when the request asks for a
//! reply), as the specification asks, instead of a disconnect. Optional: a
//! [`trace`] line per request and reply, and a [`ReplyPlan`] that answers
//! device start's IOTLB updates with chosen bytes (to replay a model
//! counterexample on QEMU).
//!
//! Leaves out: virtqueue processing (no descriptor is ever read), a real
//! userfaultfd (POSTCOPY_ADVISE answers with a memfd standing in for it, so
//! that the reference needs no privileges), dirty logging (the log's
//! descriptor is kept, never written), and the payload layouts of request
//! codes not in [`Request`].
//!
//! [`Scenario::backend_miss`]: crate::scenario::Scenario::backend_miss

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Instant;

use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap, MmapRegion,
};

use crate::scenario::Scenario;
use crate::transport::{read_all, Transport, TransportError, UnixTransport};
use crate::wire::{
    self, Header, IotlbMsg, IotlbPerm, IotlbType, MemoryRegion, ProtocolFeatures, Request,
    VringAddr, WireError, HEADER_SIZE, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES,
    VIRTIO_F_IOMMU_PLATFORM, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MQ, VRING_IDX_MASK, VRING_NOFD_MASK,
};

pub use protocol::plan;
pub mod postcopy;
pub mod trace;

pub use plan::ReplyPlan;
pub use postcopy::FaultInjection;
use trace::{Direction, TraceEvent};

/// The virtio features this back-end offers: the ones that make QEMU take
/// the IOMMU path (VERSION_1, PROTOCOL_FEATURES, ACCESS_PLATFORM) and
/// virtio-net's MQ, so that QEMU may ask for several queue pairs, and
/// LOG_ALL, without which QEMU refuses to migrate ("vhost lacks
/// VHOST_F_LOG_ALL feature").
pub const BACKEND_FEATURES: u64 = VHOST_USER_F_PROTOCOL_FEATURES
    | VIRTIO_F_IOMMU_PLATFORM
    | VIRTIO_F_VERSION_1
    | VIRTIO_NET_F_MQ
    | VHOST_F_LOG_ALL;
/// The protocol features this back-end offers. QEMU refuses an IOMMU device
/// without REPLY_ACK and BACKEND_REQ; PAGEFAULT is postcopy; MQ makes QEMU
/// ask GET_QUEUE_NUM; LOG_SHMFD passes the dirty log as shared memory.
pub const BACKEND_PROTOCOL_FEATURES: ProtocolFeatures =
    ProtocolFeatures::IOMMU_POSTCOPY.union(ProtocolFeatures::MQ).union(ProtocolFeatures::LOG_SHMFD);
/// Queue pairs announced by GET_QUEUE_NUM unless set otherwise.
pub const DEFAULT_MAX_QUEUE_PAIRS: u64 = 16;

/// How the back-end behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackendConfig {
    /// Map SET_MEM_TABLE regions (needs their descriptors); off for the
    /// in-memory transport, where regions are recorded but not mapped.
    pub map_memory: bool,
    /// BACKEND_IOTLB_MSG misses to send after POSTCOPY_LISTEN.
    pub misses: u8,
    /// Whether the misses carry NEED_REPLY.
    pub miss_need_reply: bool,
}

impl BackendConfig {
    /// The back-end of `scenario` over a real socket (memory mapped).
    pub fn for_scenario(scenario: &Scenario) -> Self {
        BackendConfig {
            map_memory: true,
            misses: scenario.backend_misses,
            miss_need_reply: scenario.miss_need_reply,
        }
    }
}

impl Default for BackendConfig {
    /// Maps memory, sends no misses.
    fn default() -> Self {
        BackendConfig { map_memory: true, misses: 0, miss_need_reply: false }
    }
}

/// Why the back-end stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// A malformed header or payload (bad flags, size over 4096, unknown
    /// request code, wrong payload size).
    #[error("malformed message: {0}")]
    Wire(WireError),
    /// The stream ended inside a message.
    #[error("end of stream after {got} of {expected} bytes of a message")]
    EofMidMessage {
        /// Bytes read.
        got: usize,
        /// Bytes the header or payload needed.
        expected: usize,
    },
    /// File descriptors with a request that takes none, or the wrong number.
    #[error("{count} file descriptors with {request:?}, which takes {takes}")]
    UnexpectedFds {
        /// The request.
        request: Request,
        /// How many arrived (all closed).
        count: usize,
        /// How many it takes.
        takes: usize,
    },
    /// The socket failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// Mapping guest memory failed.
    #[error("cannot map guest memory: {0}")]
    Memory(String),
    /// The front-end broke the protocol (e.g. a BACKEND_IOTLB_MSG reply
    /// that is not one).
    #[error("protocol error: {0}")]
    Protocol(&'static str),
}

/// By hand, not `#[from]`: the message already carries the wire error, and a
/// `source` too would print it twice in an error chain.
impl From<WireError> for BackendError {
    fn from(e: WireError) -> Self {
        BackendError::Wire(e)
    }
}

/// One IOTLB entry: an IOVA range and where it points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IotlbEntry {
    /// First IOVA.
    pub iova: u64,
    /// Length in bytes.
    pub size: u64,
    /// Front-end address of `iova`.
    pub uaddr: u64,
    /// Allowed access.
    pub perm: IotlbPerm,
}

/// The back-end's IOTLB.
#[derive(Debug, Clone, Default)]
pub struct Iotlb {
    entries: Vec<IotlbEntry>,
}

impl Iotlb {
    /// Applies an update (replacing any entry at the same IOVA) or an
    /// invalidation; other types are errors.
    pub fn apply(&mut self, m: &IotlbMsg) -> Result<(), BackendError> {
        match m.kind {
            IotlbType::Update => {
                self.entries.retain(|e| e.iova != m.iova);
                self.entries.push(IotlbEntry {
                    iova: m.iova,
                    size: m.size,
                    uaddr: m.uaddr,
                    perm: m.perm,
                });
                Ok(())
            }
            IotlbType::Invalidate => {
                let end = m.iova.saturating_add(m.size);
                self.entries.retain(|e| e.iova + e.size <= m.iova || e.iova >= end);
                Ok(())
            }
            _ => Err(BackendError::Protocol("IOTLB_MSG of a type the front-end does not send")),
        }
    }

    /// The front-end address of `[iova, iova + len)` if one entry covers it
    /// with `perm`'s access.
    pub fn translate(&self, iova: u64, len: u64, perm: IotlbPerm) -> Option<u64> {
        let allows = |have: IotlbPerm| (have as u8) & (perm as u8) == perm as u8;
        self.entries
            .iter()
            .find(|e| {
                e.iova <= iova && iova.saturating_add(len) <= e.iova + e.size && allows(e.perm)
            })
            .map(|e| e.uaddr + (iova - e.iova))
    }
}

/// One virtqueue as the front-end has set it up.
#[derive(Debug, Default)]
pub struct Vring {
    /// SET_VRING_NUM.
    pub num: u32,
    /// SET_VRING_BASE (what GET_VRING_BASE returns).
    pub base: u32,
    /// SET_VRING_ADDR.
    pub addr: Option<VringAddr>,
    /// SET_VRING_KICK's eventfd (`None` also when the no-fd flag was set).
    pub kick: Option<OwnedFd>,
    /// SET_VRING_CALL's eventfd.
    pub call: Option<OwnedFd>,
    /// SET_VRING_ERR's eventfd.
    pub err: Option<OwnedFd>,
    /// SET_VRING_ENABLE.
    pub enabled: bool,
    /// Started by SET_VRING_KICK, stopped by GET_VRING_BASE.
    pub started: bool,
}

/// The back-end of one connection.
pub struct Backend<T: Transport> {
    main: T,
    channel: Option<Box<dyn Transport>>,
    cfg: BackendConfig,
    max_queue_pairs: u64,
    features: u64,
    protocol_features: ProtocolFeatures,
    owner: bool,
    regions: Vec<MemoryRegion>,
    memory: Option<GuestMemoryMmap>,
    vrings: BTreeMap<u32, Vring>,
    log: Option<MmapRegion>,
    iotlb: Iotlb,
    listening: bool,
    postcopy_ended: bool,
    misses_sent: u8,
    requests_served: u64,
    iotlb_updates_acked: u64,
    plan: ReplyPlan,
    iotlb_need_reply_seen: usize,
    trace: Option<(Box<dyn Write + Send>, Instant, u32)>,
    real_userfaultfd: bool,
    faults: FaultInjection,
    held: Option<(Vec<u8>, Instant)>,
    mem_table_ack_pending: bool,
    misses_from_device_start: bool,
    misses_armed: bool,
}

impl<T: Transport> std::fmt::Debug for Backend<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backend")
            .field("cfg", &self.cfg)
            .field("requests_served", &self.requests_served)
            .finish_non_exhaustive()
    }
}

impl<T: Transport> Backend<T> {
    /// A back-end on `main`. `channel` is a preset back-end channel (for
    /// transports that carry no descriptors); over a Unix socket it comes
    /// with SET_BACKEND_REQ_FD instead.
    pub fn new(main: T, channel: Option<Box<dyn Transport>>, cfg: BackendConfig) -> Self {
        Backend {
            main,
            channel,
            cfg,
            max_queue_pairs: DEFAULT_MAX_QUEUE_PAIRS,
            features: 0,
            protocol_features: ProtocolFeatures::empty(),
            owner: false,
            regions: Vec::new(),
            memory: None,
            vrings: BTreeMap::new(),
            log: None,
            iotlb: Iotlb::default(),
            listening: false,
            postcopy_ended: false,
            misses_sent: 0,
            requests_served: 0,
            iotlb_updates_acked: 0,
            plan: ReplyPlan::default(),
            iotlb_need_reply_seen: 0,
            trace: None,
            real_userfaultfd: false,
            faults: FaultInjection::default(),
            held: None,
            mem_table_ack_pending: false,
            misses_from_device_start: false,
            misses_armed: false,
        }
    }

    /// Sends the configured misses once device start's first IOTLB update
    /// has been answered, instead of after POSTCOPY_LISTEN: the model's
    /// `--miss-need-reply` scenario on a QEMU that is not migrating.
    pub fn set_misses_from_device_start(&mut self, on: bool) {
        self.misses_from_device_start = on;
    }

    /// Answers POSTCOPY_ADVISE with a real userfaultfd (QEMU's binary needs
    /// one) instead of a memfd standing in for it (which needs no privilege).
    pub fn set_real_userfaultfd(&mut self, on: bool) {
        self.real_userfaultfd = on;
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

    /// The queue pairs GET_QUEUE_NUM announces.
    pub fn set_max_queue_pairs(&mut self, n: u64) {
        self.max_queue_pairs = n;
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
            self.send_pending_miss()?;
            if let Some((_, since)) = &self.held {
                let left = postcopy::HOLD_LIMIT.saturating_sub(since.elapsed());
                if left.is_zero() || !self.main.wait_readable(left)? {
                    self.release_held("the hold's limit passed")?;
                }
            }
            let mut fds = Vec::new();
            let mut b = [0u8; HEADER_SIZE];
            let n = read_all(&self.main, &mut b, &mut fds)?;
            if n == 0 {
                return Ok(());
            }
            if n < HEADER_SIZE {
                return Err(BackendError::EofMidMessage { got: n, expected: HEADER_SIZE });
            }
            let h = Header::from_bytes(&b);
            h.validate_request()?;
            let mut payload = vec![0u8; h.size as usize];
            let n = read_all(&self.main, &mut payload, &mut fds)?;
            if n < payload.len() {
                return Err(BackendError::EofMidMessage { got: n, expected: payload.len() });
            }
            self.trace_event(Direction::Received, &h, fds.len(), describe(&h, &payload));
            match Request::try_from(h.request) {
                Ok(request) => self.handle(h, request, &payload, fds)?,
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
        self.main.send(bytes, fds)?;
        let mut sent = *h;
        if bytes.len() >= HEADER_SIZE {
            sent = Header::from_bytes(bytes[..HEADER_SIZE].try_into().expect("12 bytes"));
        }
        self.trace_event(Direction::Sent, &sent, fds.len(), note);
        Ok(())
    }

    /// Puts the back-end in the state QEMU's handshake and POSTCOPY_ADVISE /
    /// POSTCOPY_LISTEN leave it in (for runners that skip them).
    pub fn assume_negotiated(&mut self) {
        self.features = BACKEND_FEATURES;
        self.protocol_features = BACKEND_PROTOCOL_FEATURES;
        self.owner = true;
        self.listening = true;
    }

    /// Requests served so far.
    pub fn requests_served(&self) -> u64 {
        self.requests_served
    }

    /// IOTLB updates applied and acknowledged with success.
    pub fn iotlb_updates_acked(&self) -> u64 {
        self.iotlb_updates_acked
    }

    /// The negotiated virtio features.
    pub fn acked_features(&self) -> u64 {
        self.features
    }

    /// The IOTLB.
    pub fn iotlb(&self) -> &Iotlb {
        &self.iotlb
    }

    /// The virtqueues set up so far, by index.
    pub fn vrings(&self) -> &BTreeMap<u32, Vring> {
        &self.vrings
    }

    /// Whether guest memory is mapped (SET_MEM_TABLE with descriptors).
    pub fn memory_mapped(&self) -> bool {
        self.memory.is_some()
    }

    /// Whether POSTCOPY_END has been served.
    pub fn postcopy_ended(&self) -> bool {
        self.postcopy_ended
    }

    /// Translates an IOVA range through the IOTLB and the memory table into
    /// a guest physical address (checked against the vm-memory mapping when
    /// memory is mapped).
    pub fn translate(&self, iova: u64, len: u64, perm: IotlbPerm) -> Option<GuestAddress> {
        let uaddr = self.iotlb.translate(iova, len, perm)?;
        let r = self.regions.iter().find(|r| {
            r.userspace_addr <= uaddr
                && uaddr.saturating_add(len) <= r.userspace_addr + r.memory_size
        })?;
        let gpa = GuestAddress(r.guest_phys_addr + (uaddr - r.userspace_addr));
        match &self.memory {
            Some(m) if !m.address_in_range(gpa) => None,
            _ => Some(gpa),
        }
    }

    /// Reads guest memory at an IOVA (through [`Backend::translate`]).
    pub fn read_iova(&self, iova: u64, buf: &mut [u8]) -> Option<()> {
        use vm_memory::Bytes;
        let gpa = self.translate(iova, buf.len() as u64, IotlbPerm::Ro)?;
        self.memory.as_ref()?.read_slice(buf, gpa).ok()
    }

    fn send_pending_miss(&mut self) -> Result<(), BackendError> {
        while (self.listening || self.misses_armed) && self.misses_sent < self.cfg.misses {
            let miss = Scenario::backend_miss(self.misses_sent);
            self.misses_sent += 1;
            if self.iotlb.translate(miss.iova, 1, miss.perm).is_some() {
                continue;
            }
            let Some(chan) = &self.channel else {
                return Err(BackendError::Protocol("miss to send but no back-end channel"));
            };
            chan.send(&wire::backend_iotlb_miss(&miss, self.cfg.miss_need_reply), &[])?;
            let sent = Header::request(
                wire::BackendRequest::IotlbMsg,
                wire::IOTLB_PAYLOAD_SIZE,
                self.cfg.miss_need_reply,
            );
            let note = format!("back-end channel: miss iova {:#x}", miss.iova);
            self.trace_channel_event(Direction::Sent, &sent, note);
            if self.cfg.miss_need_reply {
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
            }
            return Ok(());
        }
        Ok(())
    }

    /// Sends a REPLY_ACK status if negotiated and asked.
    fn ack(&mut self, h: &Header, status: u64) -> Result<(), BackendError> {
        if self.protocol_features.contains(ProtocolFeatures::REPLY_ACK) && h.need_reply() {
            self.send_reply(
                h,
                &wire::ack_reply(h.request, status),
                &[],
                Some(format!("ack {status}")),
            )?;
        }
        Ok(())
    }

    fn reply_u64(&mut self, h: &Header, value: u64) -> Result<(), BackendError> {
        self.send_reply(h, &wire::ack_reply(h.request, value), &[], Some(format!("u64 {value:#x}")))
    }

    /// How many descriptors `request` takes with this payload.
    fn fds_taken(&self, request: Request, payload: &[u8]) -> usize {
        match request {
            Request::SetBackendReqFd => usize::from(self.channel.is_none()),
            Request::SetMemTable => usize::MAX,
            Request::SetLogBase => usize::MAX,
            Request::SetVringKick | Request::SetVringCall | Request::SetVringErr => {
                match wire::u64_from_bytes(payload) {
                    Ok(v) if v & VRING_NOFD_MASK != 0 => 0,
                    _ => 1,
                }
            }
            _ => 0,
        }
    }

    fn handle(
        &mut self,
        h: Header,
        request: Request,
        payload: &[u8],
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), BackendError> {
        let takes = self.fds_taken(request, payload);
        if takes != usize::MAX && fds.len() != takes {
            return Err(BackendError::UnexpectedFds { request, count: fds.len(), takes });
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
                self.reply_u64(&h, BACKEND_FEATURES)
            }
            Request::GetProtocolFeatures => {
                expect_size(0)?;
                self.reply_u64(&h, BACKEND_PROTOCOL_FEATURES.bits())
            }
            Request::GetQueueNum => {
                expect_size(0)?;
                self.reply_u64(&h, self.max_queue_pairs)
            }
            Request::SetFeatures => {
                self.features = wire::u64_from_bytes(payload)? & BACKEND_FEATURES;
                self.ack(&h, 0)
            }
            Request::SetProtocolFeatures => {
                let asked = ProtocolFeatures::from_bits_retain(wire::u64_from_bytes(payload)?);
                self.protocol_features = asked & BACKEND_PROTOCOL_FEATURES;
                self.ack(&h, 0)
            }
            Request::SetOwner => {
                expect_size(0)?;
                self.owner = true;
                self.ack(&h, 0)
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
                if self.cfg.map_memory {
                    if fds.len() != regions.len() {
                        return Err(BackendError::UnexpectedFds {
                            request,
                            count: fds.len(),
                            takes: regions.len(),
                        });
                    }
                    self.memory = Some(map_regions(&regions, fds)?);
                } else if !fds.is_empty() {
                    return Err(BackendError::UnexpectedFds {
                        request,
                        count: fds.len(),
                        takes: 0,
                    });
                }
                self.regions = regions;
                if self.listening && self.memory.is_some() {
                    return self.reply_postcopy_mem_table(&h);
                }
                self.ack(&h, 0)
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
                if let Some(fd) = fds.pop() {
                    let size = wire::u64_from_bytes(&payload[..8])?;
                    let offset = wire::u64_from_bytes(&payload[8..])?;
                    let log = postcopy::map_log(fd, size, offset)
                        .map_err(|e| BackendError::Memory(format!("dirty log: {e}")))?;
                    self.log = Some(log);
                }
                self.reply_u64(&h, 0)
            }
            Request::SetVringNum | Request::SetVringBase => {
                let (index, num) = wire::vring_state_from_bytes(payload)?;
                let v = self.vrings.entry(index).or_default();
                if request == Request::SetVringNum {
                    v.num = num;
                } else {
                    v.base = num;
                }
                self.ack(&h, 0)
            }
            Request::SetVringAddr => {
                let a = VringAddr::from_bytes(payload)?;
                self.vrings.entry(a.index).or_default().addr = Some(a);
                self.ack(&h, 0)
            }
            Request::SetVringKick | Request::SetVringCall | Request::SetVringErr => {
                let v = wire::u64_from_bytes(payload)?;
                let index = (v & VRING_IDX_MASK) as u32;
                let fd = fds.pop();
                let ring = self.vrings.entry(index).or_default();
                match request {
                    Request::SetVringKick => {
                        ring.kick = fd;
                        ring.started = true;
                    }
                    Request::SetVringCall => ring.call = fd,
                    _ => ring.err = fd,
                }
                self.ack(&h, 0)
            }
            Request::GetVringBase => {
                let (index, _) = wire::vring_state_from_bytes(payload)?;
                let ring = self.vrings.entry(index).or_default();
                ring.started = false;
                ring.kick = None;
                let body = wire::vring_state_to_bytes(index, ring.base);
                let bytes = wire::encode(Header::reply(h.request, body.len()), &body);
                self.send_reply(
                    &h,
                    &bytes,
                    &[],
                    Some(format!("vq {index} base {}", self.vrings[&index].base)),
                )
            }
            Request::SetVringEnable => {
                let (index, enable) = wire::vring_state_from_bytes(payload)?;
                self.vrings.entry(index).or_default().enabled = enable != 0;
                self.ack(&h, 0)
            }
            Request::IotlbMsg => {
                let m = IotlbMsg::from_bytes(payload)?;
                let applied = self.iotlb.apply(&m).is_ok();
                if !self.faults.iotlb_reply_delay.is_zero() {
                    std::thread::sleep(self.faults.iotlb_reply_delay);
                }
                if h.need_reply()
                    && self.faults.hold_first_iotlb_reply
                    && self.iotlb_need_reply_seen == 0
                    && !self.postcopy_ended
                    && self.protocol_features.contains(ProtocolFeatures::REPLY_ACK)
                {
                    self.iotlb_need_reply_seen += 1;
                    self.iotlb_updates_acked += u64::from(applied);
                    self.held =
                        Some((wire::ack_reply(h.request, u64::from(!applied)), Instant::now()));
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
                self.misses_armed |= self.misses_from_device_start;
                if m.kind == IotlbType::Update {
                    // Where the update points in the mapped guest memory, for
                    // the trace: QEMU's used-ring updates must land in RAM.
                    let gpa = self.translate(m.iova, m.size.max(1), m.perm);
                    let note =
                        gpa.map_or("not in guest memory".into(), |g| format!("gpa {:#x}", g.0));
                    self.trace_event(Direction::Translated, &h, 0, Some(note));
                }
                self.ack(&h, u64::from(!applied))
            }
            Request::PostcopyAdvise => {
                expect_size(0)?;
                let ufd = if self.real_userfaultfd {
                    postcopy::open_userfaultfd()
                        .map_err(|e| BackendError::Memory(format!("userfaultfd: {e}")))?
                } else {
                    // Stand-in for the userfaultfd (see the module doc).
                    nix::sys::memfd::memfd_create(
                        c"vhost-user-ufd",
                        nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
                    )
                    .map_err(|e| BackendError::Transport(std::io::Error::from(e).into()))?
                };
                let bytes = wire::encode(Header::reply(h.request, 0), &[]);
                self.send_reply(&h, &bytes, &[ufd.as_fd()], None)
            }
            Request::PostcopyListen => {
                expect_size(0)?;
                self.listening = true;
                self.ack(&h, 0)
            }
            Request::PostcopyEnd => {
                expect_size(0)?;
                self.postcopy_ended = true;
                if self.held.is_some() {
                    std::thread::sleep(postcopy::HELD_REPLY_PAUSE);
                    self.release_held("POSTCOPY_END arrived")?;
                }
                self.ack(&h, 0)
            }
        }
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

    /// Answers SET_MEM_TABLE while postcopy listens, as the specification
    /// asks: the same table with each region's `userspace_addr` replaced by
    /// where this back-end mapped it (QEMU uses them to translate faults),
    /// after which QEMU sends SET_MEM_TABLE again with a u64 0 as its ack.
    fn reply_postcopy_mem_table(&mut self, h: &Header) -> Result<(), BackendError> {
        let memory = self.memory.as_ref().expect("mapped");
        let mut mapped = self.regions.clone();
        for r in &mut mapped {
            let region = memory
                .find_region(GuestAddress(r.guest_phys_addr))
                .ok_or(BackendError::Protocol("a region vanished from the mapping"))?;
            r.userspace_addr = region.as_ptr() as u64;
        }
        let body = MemoryRegion::table_to_bytes(&mapped);
        let bytes = wire::encode(Header::reply(h.request, body.len()), &body);
        self.mem_table_ack_pending = true;
        self.send_reply(h, &bytes, &[], Some("postcopy: our mapping addresses".into()))
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

/// Maps each region from its descriptor with vm-memory.
fn map_regions(
    regions: &[MemoryRegion],
    fds: Vec<OwnedFd>,
) -> Result<GuestMemoryMmap, BackendError> {
    let mut mapped = Vec::with_capacity(regions.len());
    for (r, fd) in regions.iter().zip(fds) {
        let size =
            usize::try_from(r.memory_size).map_err(|e| BackendError::Memory(e.to_string()))?;
        let file = File::from(fd);
        let m = MmapRegion::from_file(FileOffset::new(file, r.mmap_offset), size)
            .map_err(|e| BackendError::Memory(e.to_string()))?;
        let g = GuestRegionMmap::new(m, GuestAddress(r.guest_phys_addr))
            .ok_or(BackendError::Memory("region overflows the address space".into()))?;
        mapped.push(g);
    }
    mapped.sort_by_key(vm_memory::GuestMemoryRegion::start_addr);
    GuestMemoryMmap::from_regions(mapped).map_err(|e| BackendError::Memory(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::{guest_ram_region, Frontend, GUEST_RAM_SIZE, GUEST_RAM_UADDR};
    use crate::scenario::{LockPolicy, ThreadRole, Variant};
    use crate::sync::ParkingLot;
    use crate::wire::PROTOCOL_F_REPLY_ACK;
    use std::os::unix::fs::FileExt;

    fn memfd() -> File {
        let fd =
            nix::sys::memfd::memfd_create(c"ram", nix::sys::memfd::MFdFlags::MFD_CLOEXEC).unwrap();
        let f = File::from(fd);
        f.set_len(GUEST_RAM_SIZE).unwrap();
        f
    }

    #[test]
    fn iotlb_updates_translate_into_the_mapped_guest_memory() {
        let ram = memfd();
        let region = guest_ram_region();
        let mut b = Backend::new(UnixTransport::pair().unwrap().0, None, BackendConfig::default());
        b.regions = vec![region];
        b.memory = Some(map_regions(&[region], vec![ram.try_clone().unwrap().into()]).unwrap());
        let u = Scenario::iotlb_update(3);
        assert_eq!(b.translate(u.iova, 8, IotlbPerm::Ro), None, "a miss before the update");
        b.iotlb.apply(&u).unwrap();
        // The front-end writes at the update's uaddr; the back-end reads it
        // through IOVA -> uaddr -> guest physical -> its own mapping.
        ram.write_all_at(b"vhost!", u.uaddr - GUEST_RAM_UADDR).unwrap();
        let mut got = [0u8; 6];
        b.read_iova(u.iova, &mut got).unwrap();
        assert_eq!(&got, b"vhost!");
        assert_eq!(b.translate(u.iova + u.size - 4, 8, IotlbPerm::Ro), None, "past the entry");
        let inv = IotlbMsg { kind: IotlbType::Invalidate, ..u };
        b.iotlb.apply(&inv).unwrap();
        assert_eq!(b.translate(u.iova, 8, IotlbPerm::Ro), None, "invalidated");
        let ro = IotlbMsg { perm: IotlbPerm::Ro, ..u };
        b.iotlb.apply(&ro).unwrap();
        assert_eq!(b.translate(u.iova, 8, IotlbPerm::Wo), None, "read-only entry");
    }

    #[test]
    fn acks_only_with_reply_ack_and_need_reply() {
        let (fe, be) = UnixTransport::pair().unwrap();
        let mut b =
            Backend::new(be, None, BackendConfig { map_memory: false, ..Default::default() });
        let with = Header::request(Request::SetOwner, 0, true);
        b.handle(with, Request::SetOwner, &[], vec![]).unwrap();
        b.protocol_features = ProtocolFeatures::REPLY_ACK;
        let without = Header::request(Request::SetOwner, 0, false);
        b.handle(without, Request::SetOwner, &[], vec![]).unwrap();
        b.handle(with, Request::SetOwner, &[], vec![]).unwrap();
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
        let v1 = &b.vrings()[&1];
        assert!(v1.kick.is_some() && v1.call.is_none() && v1.started && v1.enabled);
        assert!(b.vrings()[&0].err.is_some());
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
        assert!(!b.vrings()[&1].started && b.vrings()[&1].kick.is_none());
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
        assert!(b.memory_mapped());
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
