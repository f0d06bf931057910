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
//! Leaves out: virtqueue processing (no descriptor is ever read), a real
//! userfaultfd (POSTCOPY_ADVISE answers with a memfd standing in for it, so
//! that the reference needs no privileges), dirty logging, multiple queues'
//! enable state, and every request code not in [`Request`].
//!
//! [`Scenario::backend_miss`]: crate::scenario::Scenario::backend_miss

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::Path;

use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap, MmapRegion,
};

use crate::scenario::Scenario;
use crate::transport::{read_all, Transport, TransportError, UnixTransport};
use crate::wire::{
    self, Header, IotlbMsg, IotlbPerm, IotlbType, MemoryRegion, Request, VringAddr, WireError,
    HEADER_SIZE, PROTOCOL_F_BACKEND_REQ, PROTOCOL_F_PAGEFAULT, PROTOCOL_F_REPLY_ACK,
    VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_IOMMU_PLATFORM,
};

/// `VIRTIO_F_VERSION_1`.
const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// The virtio features this back-end offers.
pub const BACKEND_FEATURES: u64 =
    VHOST_USER_F_PROTOCOL_FEATURES | VIRTIO_F_IOMMU_PLATFORM | VIRTIO_F_VERSION_1;
/// The protocol features this back-end offers.
pub const BACKEND_PROTOCOL_FEATURES: u64 =
    PROTOCOL_F_REPLY_ACK | PROTOCOL_F_BACKEND_REQ | PROTOCOL_F_PAGEFAULT;

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

/// The back-end of one connection.
pub struct Backend<T: Transport> {
    main: T,
    channel: Option<Box<dyn Transport>>,
    cfg: BackendConfig,
    features: u64,
    protocol_features: u64,
    owner: bool,
    regions: Vec<MemoryRegion>,
    memory: Option<GuestMemoryMmap>,
    vrings: Vec<(u32, u32, VringAddr)>,
    iotlb: Iotlb,
    listening: bool,
    postcopy_ended: bool,
    misses_sent: u8,
    requests_served: u64,
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
            features: 0,
            protocol_features: 0,
            owner: false,
            regions: Vec::new(),
            memory: None,
            vrings: Vec::new(),
            iotlb: Iotlb::default(),
            listening: false,
            postcopy_ended: false,
            misses_sent: 0,
            requests_served: 0,
        }
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
        r
    }

    fn serve_inner(&mut self) -> Result<(), BackendError> {
        loop {
            self.send_pending_miss()?;
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
            let request = Request::try_from(h.request)?;
            let mut payload = vec![0u8; h.size as usize];
            let n = read_all(&self.main, &mut payload, &mut fds)?;
            if n < payload.len() {
                return Err(BackendError::EofMidMessage { got: n, expected: payload.len() });
            }
            self.handle(h, request, &payload, fds)?;
            self.requests_served += 1;
        }
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

    /// The negotiated virtio features.
    pub fn acked_features(&self) -> u64 {
        self.features
    }

    /// The IOTLB.
    pub fn iotlb(&self) -> &Iotlb {
        &self.iotlb
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
        while self.listening && self.misses_sent < self.cfg.misses {
            let miss = Scenario::backend_miss(self.misses_sent);
            self.misses_sent += 1;
            if self.iotlb.translate(miss.iova, 1, miss.perm).is_some() {
                continue;
            }
            let Some(chan) = &self.channel else {
                return Err(BackendError::Protocol("miss to send but no back-end channel"));
            };
            chan.send(&wire::backend_iotlb_miss(&miss, self.cfg.miss_need_reply), &[])?;
            if self.cfg.miss_need_reply {
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
            }
            return Ok(());
        }
        Ok(())
    }

    /// Sends a REPLY_ACK status if negotiated and asked.
    fn ack(&self, h: &Header, status: u64) -> Result<(), BackendError> {
        if self.protocol_features & PROTOCOL_F_REPLY_ACK != 0 && h.need_reply() {
            self.main.send(&wire::ack_reply(h.request, status), &[])?;
        }
        Ok(())
    }

    fn reply_u64(&self, h: &Header, value: u64) -> Result<(), BackendError> {
        self.main.send(&wire::ack_reply(h.request, value), &[])?;
        Ok(())
    }

    fn handle(
        &mut self,
        h: Header,
        request: Request,
        payload: &[u8],
        mut fds: Vec<OwnedFd>,
    ) -> Result<(), BackendError> {
        let takes = match request {
            Request::SetBackendReqFd => usize::from(self.channel.is_none()),
            Request::SetMemTable => usize::MAX,
            _ => 0,
        };
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
                self.reply_u64(&h, BACKEND_PROTOCOL_FEATURES)
            }
            Request::SetFeatures => {
                self.features = wire::u64_from_bytes(payload)? & BACKEND_FEATURES;
                self.ack(&h, 0)
            }
            Request::SetProtocolFeatures => {
                self.protocol_features = wire::u64_from_bytes(payload)? & BACKEND_PROTOCOL_FEATURES;
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
                self.ack(&h, 0)
            }
            Request::SetVringNum | Request::SetVringBase => {
                let (index, num) = wire::vring_state_from_bytes(payload)?;
                let v = self.vring(index);
                if request == Request::SetVringNum {
                    v.0 = num;
                } else {
                    v.1 = num;
                }
                self.ack(&h, 0)
            }
            Request::SetVringAddr => {
                let a = VringAddr::from_bytes(payload)?;
                self.vring(a.index).2 = a;
                self.ack(&h, 0)
            }
            Request::GetVringBase => {
                let (index, _) = wire::vring_state_from_bytes(payload)?;
                let base = self.vring(index).1;
                let body = wire::vring_state_to_bytes(index, base);
                self.main.send(&wire::encode(Header::reply(h.request, body.len()), &body), &[])?;
                Ok(())
            }
            Request::SetVringEnable => {
                wire::vring_state_from_bytes(payload)?;
                self.ack(&h, 0)
            }
            Request::IotlbMsg => {
                let m = IotlbMsg::from_bytes(payload)?;
                let status = u64::from(self.iotlb.apply(&m).is_err());
                self.ack(&h, status)
            }
            Request::PostcopyAdvise => {
                expect_size(0)?;
                // Stand-in for the userfaultfd (see the module doc).
                let ufd = nix::sys::memfd::memfd_create(
                    c"vhost-user-ufd",
                    nix::sys::memfd::MFdFlags::MFD_CLOEXEC,
                )
                .map_err(|e| BackendError::Transport(std::io::Error::from(e).into()))?;
                self.main.send(&wire::encode(Header::reply(h.request, 0), &[]), &[ufd.as_fd()])?;
                Ok(())
            }
            Request::PostcopyListen => {
                expect_size(0)?;
                self.listening = true;
                self.ack(&h, 0)
            }
            Request::PostcopyEnd => {
                expect_size(0)?;
                self.postcopy_ended = true;
                self.ack(&h, 0)
            }
        }
    }

    fn vring(&mut self, index: u32) -> &mut (u32, u32, VringAddr) {
        let i = match self.vrings.iter().position(|v| v.2.index == index) {
            Some(i) => i,
            None => {
                self.vrings.push((0, 0, VringAddr { index, ..VringAddr::default() }));
                self.vrings.len() - 1
            }
        };
        &mut self.vrings[i]
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

/// Runs the back-end as its own process would: listens on `path`, accepts
/// one front-end, serves it until it closes the connection, removes the
/// socket file. The `backend --socket PATH` subcommand calls this.
pub fn serve_socket_path(path: impl AsRef<Path>, cfg: BackendConfig) -> Result<u64, BackendError> {
    let path = path.as_ref();
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(TransportError::from)?;
    let accepted = listener.accept().map_err(TransportError::from);
    let _ = std::fs::remove_file(path);
    let (stream, _) = accepted?;
    let mut b = Backend::new(UnixTransport::from_stream(stream), None, cfg);
    b.serve()?;
    Ok(b.requests_served())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::{guest_ram_region, Frontend, GUEST_RAM_SIZE, GUEST_RAM_UADDR};
    use crate::scenario::{LockPolicy, ThreadRole, Variant};
    use crate::sync::ParkingLot;
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
        b.protocol_features = PROTOCOL_F_REPLY_ACK;
        let without = Header::request(Request::SetOwner, 0, false);
        b.handle(without, Request::SetOwner, &[], vec![]).unwrap();
        b.handle(with, Request::SetOwner, &[], vec![]).unwrap();
        b.main.shutdown();
        let mut got = [0u8; 64];
        let n = read_all(&fe, &mut got, &mut Vec::new()).unwrap();
        assert_eq!(&got[..n], &wire::ack_reply(Request::SetOwner, 0)[..], "exactly one ack");
    }

    #[test]
    fn serves_a_front_end_on_a_socket_path_with_the_full_handshake() {
        let path = std::env::temp_dir().join(format!("vhost-user-ref-{}.sock", std::process::id()));
        let p2 = path.clone();
        let server = std::thread::spawn(move || serve_socket_path(&p2, BackendConfig::default()));
        let stream = loop {
            match std::os::unix::net::UnixStream::connect(&path) {
                Ok(s) => break s,
                Err(_) => std::thread::yield_now(),
            }
        };
        let (chan_fe, chan_be) = UnixTransport::pair().unwrap();
        let mut fe = Frontend::<ParkingLot, _>::new(
            UnixTransport::from_stream(stream),
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
        assert!(!path.exists(), "the socket file is removed");
    }
}
