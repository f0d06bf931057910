//! The vhost-user wire format, once, for the model, the reference channel, the
//! back-end, the checker and the tests.
//!
//! Models: the 12-byte header (`request`, `flags`, `size`, native byte order,
//! little-endian here), the flag bits, the request codes this project uses, the
//! IOTLB payload (`struct vhost_iotlb_msg`, 32 bytes with padding) and the
//! REPLY_ACK u64 payload, with encoding and validating decoding.
//!
//! Leaves out: request codes that neither the race nor QEMU 7.2's
//! vhost-user-net life cycle involves (they decode as
//! [`WireError::UnknownRequest`]; the back-end answers them with a failure
//! ack), the payload layouts of requests the back-end only acknowledges, and
//! big-endian hosts.

use thiserror::Error;

/// Size of a message header on the wire.
pub const HEADER_SIZE: usize = 12;
/// Largest payload a peer may announce (QEMU's `VHOST_USER_PAYLOAD_SIZE` bound
/// used by the protocol's maximum, 4096 bytes).
pub const MAX_PAYLOAD: u32 = 4096;
/// Size of `struct vhost_iotlb_msg` on the wire (not packed, 6 bytes padding).
pub const IOTLB_PAYLOAD_SIZE: usize = 32;
/// Size of the REPLY_ACK payload.
pub const ACK_PAYLOAD_SIZE: usize = 8;
/// An IOTLB_MSG request: header plus IOTLB payload (44 bytes).
pub const IOTLB_REQUEST_SIZE: usize = HEADER_SIZE + IOTLB_PAYLOAD_SIZE;
/// A REPLY_ACK reply: header plus u64 (20 bytes).
pub const ACK_REPLY_SIZE: usize = HEADER_SIZE + ACK_PAYLOAD_SIZE;
/// Most file descriptors one message may carry (QEMU's `VHOST_MEMORY_BASELINE_NREGIONS`).
pub const MAX_FDS: usize = 8;

bitflags::bitflags! {
    /// The flag bits of a header's `flags` word (QEMU's `VHOST_USER_VERSION`,
    /// `VHOST_USER_REPLY_MASK`, `VHOST_USER_NEED_REPLY_MASK`). Bit 1, the
    /// upper half of the two version bits, is not a flag: a word with it set
    /// has an unknown bit for [`HeaderFlags::from_bits`].
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct HeaderFlags: u32 {
        /// Version 1, the only version (the low bit of the version field).
        const VERSION = 0x1;
        /// The message is a reply.
        const REPLY = 0x4;
        /// The sender asks for a reply (REPLY_ACK).
        const NEED_REPLY = 0x8;
    }
}

impl HeaderFlags {
    /// The only flags a correct reply header carries: version | REPLY (0x5).
    pub const REPLY_HEADER: HeaderFlags = HeaderFlags::VERSION.union(HeaderFlags::REPLY);
}

/// Version bits of `flags` (always 0x1), as a raw word.
pub const VERSION: u32 = HeaderFlags::VERSION.bits();
/// The REPLY bit, as a raw word.
pub const REPLY_MASK: u32 = HeaderFlags::REPLY.bits();
/// The NEED_REPLY bit, as a raw word.
pub const NEED_REPLY_MASK: u32 = HeaderFlags::NEED_REPLY.bits();
/// The only flags a correct reply header carries, as a raw word (0x5).
pub const REPLY_FLAGS: u32 = HeaderFlags::REPLY_HEADER.bits();

bitflags::bitflags! {
    /// The protocol features this project negotiates (QEMU's
    /// `VHOST_USER_PROTOCOL_F_*`, as bits of the GET/SET_PROTOCOL_FEATURES
    /// u64).
    #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
    pub struct ProtocolFeatures: u64 {
        /// MQ: the back-end answers GET_QUEUE_NUM.
        const MQ = 1 << 0;
        /// LOG_SHMFD: SET_LOG_BASE carries the dirty log's descriptor.
        const LOG_SHMFD = 1 << 1;
        /// REPLY_ACK: a request with NEED_REPLY gets a u64 status reply.
        const REPLY_ACK = 1 << 3;
        /// BACKEND_REQ: the back-end channel.
        const BACKEND_REQ = 1 << 5;
        /// PAGEFAULT: postcopy.
        const PAGEFAULT = 1 << 8;
    }
}

impl ProtocolFeatures {
    /// What the front-end asks for and requires: REPLY_ACK and BACKEND_REQ
    /// (QEMU's `vhost_user_backend_init` refuses an IOMMU device without
    /// them) and PAGEFAULT (postcopy).
    pub const IOMMU_POSTCOPY: ProtocolFeatures = ProtocolFeatures::REPLY_ACK
        .union(ProtocolFeatures::BACKEND_REQ)
        .union(ProtocolFeatures::PAGEFAULT);
}

/// Protocol feature bit: MQ (the back-end answers GET_QUEUE_NUM).
pub const PROTOCOL_F_MQ: u64 = ProtocolFeatures::MQ.bits();
/// Protocol feature bit: LOG_SHMFD (SET_LOG_BASE carries the dirty log's fd).
pub const PROTOCOL_F_LOG_SHMFD: u64 = ProtocolFeatures::LOG_SHMFD.bits();
/// Protocol feature bit: REPLY_ACK.
pub const PROTOCOL_F_REPLY_ACK: u64 = ProtocolFeatures::REPLY_ACK.bits();
/// Protocol feature bit: BACKEND_REQ (the back-end channel).
pub const PROTOCOL_F_BACKEND_REQ: u64 = ProtocolFeatures::BACKEND_REQ.bits();
/// Protocol feature bit: PAGEFAULT (postcopy).
pub const PROTOCOL_F_PAGEFAULT: u64 = ProtocolFeatures::PAGEFAULT.bits();
/// Virtio feature bit that says protocol features may be negotiated.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// Virtio feature bit for an IOMMU platform (`VIRTIO_F_IOMMU_PLATFORM`,
/// `VIRTIO_F_ACCESS_PLATFORM` in the virtio 1.1 names).
pub const VIRTIO_F_IOMMU_PLATFORM: u64 = 1 << 33;
/// Virtio feature bit `VIRTIO_F_VERSION_1`.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// Virtio-net feature bit `VIRTIO_NET_F_MQ` (several queue pairs).
pub const VIRTIO_NET_F_MQ: u64 = 1 << 22;
/// Vhost feature bit `VHOST_F_LOG_ALL` (dirty logging, needed to migrate).
pub const VHOST_F_LOG_ALL: u64 = 1 << 26;
/// In a SET_VRING_KICK/CALL/ERR u64: the virtqueue index.
pub const VRING_IDX_MASK: u64 = 0xff;
/// In a SET_VRING_KICK/CALL/ERR u64: no descriptor comes with the message
/// (polling instead of an eventfd).
pub const VRING_NOFD_MASK: u64 = 0x100;

macro_rules! request_codes {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $var:ident = $code:expr => $c:literal,)* }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[repr(u32)]
        pub enum $name { $($(#[$vm])* $var = $code,)* }

        impl $name {
            /// Every code of this channel, in code order.
            pub const ALL: &'static [$name] = &[$($name::$var,)*];

            /// The C name of the request, as in the specification.
            pub fn c_name(self) -> &'static str {
                match self { $($name::$var => $c,)* }
            }
        }

        impl TryFrom<u32> for $name {
            type Error = WireError;
            fn try_from(code: u32) -> Result<Self, WireError> {
                match code {
                    $($code => Ok($name::$var),)*
                    other => Err(WireError::UnknownRequest(other)),
                }
            }
        }

        impl From<$name> for u32 {
            fn from(r: $name) -> u32 { r as u32 }
        }
    };
}

request_codes! {
    /// Front-end request codes (front-end to back-end on the main socket).
    Request {
        /// `VHOST_USER_GET_FEATURES`
        GetFeatures = 1 => "VHOST_USER_GET_FEATURES",
        /// `VHOST_USER_SET_FEATURES`
        SetFeatures = 2 => "VHOST_USER_SET_FEATURES",
        /// `VHOST_USER_SET_OWNER`
        SetOwner = 3 => "VHOST_USER_SET_OWNER",
        /// `VHOST_USER_SET_MEM_TABLE`
        SetMemTable = 5 => "VHOST_USER_SET_MEM_TABLE",
        /// `VHOST_USER_SET_LOG_BASE`
        SetLogBase = 6 => "VHOST_USER_SET_LOG_BASE",
        /// `VHOST_USER_SET_VRING_NUM`
        SetVringNum = 8 => "VHOST_USER_SET_VRING_NUM",
        /// `VHOST_USER_SET_VRING_ADDR`
        SetVringAddr = 9 => "VHOST_USER_SET_VRING_ADDR",
        /// `VHOST_USER_SET_VRING_BASE`
        SetVringBase = 10 => "VHOST_USER_SET_VRING_BASE",
        /// `VHOST_USER_GET_VRING_BASE`
        GetVringBase = 11 => "VHOST_USER_GET_VRING_BASE",
        /// `VHOST_USER_SET_VRING_KICK`
        SetVringKick = 12 => "VHOST_USER_SET_VRING_KICK",
        /// `VHOST_USER_SET_VRING_CALL`
        SetVringCall = 13 => "VHOST_USER_SET_VRING_CALL",
        /// `VHOST_USER_SET_VRING_ERR`
        SetVringErr = 14 => "VHOST_USER_SET_VRING_ERR",
        /// `VHOST_USER_GET_PROTOCOL_FEATURES`
        GetProtocolFeatures = 15 => "VHOST_USER_GET_PROTOCOL_FEATURES",
        /// `VHOST_USER_SET_PROTOCOL_FEATURES`
        SetProtocolFeatures = 16 => "VHOST_USER_SET_PROTOCOL_FEATURES",
        /// `VHOST_USER_GET_QUEUE_NUM`
        GetQueueNum = 17 => "VHOST_USER_GET_QUEUE_NUM",
        /// `VHOST_USER_SET_VRING_ENABLE`
        SetVringEnable = 18 => "VHOST_USER_SET_VRING_ENABLE",
        /// `VHOST_USER_SET_BACKEND_REQ_FD`
        SetBackendReqFd = 21 => "VHOST_USER_SET_BACKEND_REQ_FD",
        /// `VHOST_USER_IOTLB_MSG`
        IotlbMsg = 22 => "VHOST_USER_IOTLB_MSG",
        /// `VHOST_USER_POSTCOPY_ADVISE`
        PostcopyAdvise = 28 => "VHOST_USER_POSTCOPY_ADVISE",
        /// `VHOST_USER_POSTCOPY_LISTEN`
        PostcopyListen = 29 => "VHOST_USER_POSTCOPY_LISTEN",
        /// `VHOST_USER_POSTCOPY_END`
        PostcopyEnd = 30 => "VHOST_USER_POSTCOPY_END",
    }
}

request_codes! {
    /// Back-end channel request codes (back-end to front-end).
    BackendRequest {
        /// `VHOST_USER_BACKEND_IOTLB_MSG`
        IotlbMsg = 1 => "VHOST_USER_BACKEND_IOTLB_MSG",
    }
}

/// A malformed message, as a typed error.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum WireError {
    /// The header's flags are not what the reader requires (QEMU: `flags != 0x5`).
    #[error("bad flags 0x{got:x}, expected 0x{expected:x}")]
    BadFlags {
        /// Flags found.
        got: u32,
        /// Flags required.
        expected: u32,
    },
    /// The header announces a payload larger than [`MAX_PAYLOAD`].
    #[error("payload size {0} exceeds the maximum {MAX_PAYLOAD}")]
    PayloadTooLarge(u32),
    /// The payload does not have the size its request requires.
    #[error("payload of {got} bytes where {expected} were expected")]
    PayloadSize {
        /// Bytes found.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// Fewer bytes than a header or payload needs.
    #[error("short message: {got} bytes where {expected} were expected")]
    Short {
        /// Bytes found.
        got: usize,
        /// Bytes expected.
        expected: usize,
    },
    /// A request code this project does not know.
    #[error("unknown request code {0}")]
    UnknownRequest(u32),
    /// A well-formed reply to another request than the one awaited (QEMU:
    /// `Received unexpected msg type`).
    #[error("reply to request {received} where {expected} was awaited")]
    UnexpectedRequest {
        /// The request whose reply was awaited.
        expected: u32,
        /// The request code of the reply read.
        received: u32,
    },
    /// An IOTLB payload with a permission or type outside the specification.
    #[error("invalid IOTLB {field} {value}")]
    BadIotlb {
        /// Which field.
        field: &'static str,
        /// The value found.
        value: u8,
    },
}

/// The 12-byte message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub struct Header {
    /// Request code (front-end or back-end channel, by context).
    pub request: u32,
    /// Flag bits: version, REPLY, NEED_REPLY.
    pub flags: u32,
    /// Payload length in bytes.
    pub size: u32,
}

impl Header {
    /// A request header: version bits set, NEED_REPLY if asked.
    pub fn request(request: impl Into<u32>, size: usize, need_reply: bool) -> Self {
        let mut flags = HeaderFlags::VERSION;
        flags.set(HeaderFlags::NEED_REPLY, need_reply);
        Header { request: request.into(), flags: flags.bits(), size: size as u32 }
    }

    /// A reply header: flags exactly 0x5.
    pub fn reply(request: impl Into<u32>, size: usize) -> Self {
        Header { request: request.into(), flags: REPLY_FLAGS, size: size as u32 }
    }

    /// The `flags` word as flag bits, unknown bits kept.
    pub fn flag_bits(&self) -> HeaderFlags {
        HeaderFlags::from_bits_retain(self.flags)
    }

    /// Whether the sender asked for a reply.
    pub fn need_reply(&self) -> bool {
        self.flag_bits().contains(HeaderFlags::NEED_REPLY)
    }

    /// Whether the REPLY bit is set.
    pub fn is_reply(&self) -> bool {
        self.flag_bits().contains(HeaderFlags::REPLY)
    }

    /// The header's 12 bytes.
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(&self.request.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        b[8..12].copy_from_slice(&self.size.to_le_bytes());
        b
    }

    /// Reads the three fields without any validation: what QEMU has in hand
    /// after `read_all` of 12 bytes, whatever those bytes were.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Self {
        let word = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        Header { request: word(0), flags: word(4), size: word(8) }
    }

    /// QEMU's reply check, the one place it is written: the checks of
    /// `vhost_user_read_header` ([`Header::validate_reply_flags`]) and then of
    /// `vhost_user_read` ([`Header::validate_size`]). The request code is
    /// checked after the payload is read ([`Header::validate_reply_for`]).
    pub fn validate_reply(&self) -> Result<(), WireError> {
        self.validate_reply_flags()?;
        self.validate_size()
    }

    /// `vhost_user_read_header`'s check: the flags of a reply must be exactly
    /// 0x5 (version | REPLY); otherwise QEMU reads no payload.
    pub fn validate_reply_flags(&self) -> Result<(), WireError> {
        if self.flags != REPLY_FLAGS {
            return Err(WireError::BadFlags { got: self.flags, expected: REPLY_FLAGS });
        }
        Ok(())
    }

    /// The whole check of a reply awaited for `request`, in QEMU's order:
    /// [`Header::validate_reply`], then `process_message_reply`'s (and
    /// `vhost_user_get_u64`'s) request-code check.
    pub fn validate_reply_for(&self, request: u32) -> Result<(), WireError> {
        self.validate_reply()?;
        if self.request != request {
            return Err(WireError::UnexpectedRequest { expected: request, received: self.request });
        }
        Ok(())
    }

    /// The checks a back-end makes on a request: version bits 0x1, REPLY clear,
    /// no unknown flag bits, size within [`MAX_PAYLOAD`].
    pub fn validate_request(&self) -> Result<(), WireError> {
        let known = HeaderFlags::from_bits(self.flags);
        if !known
            .is_some_and(|f| f.contains(HeaderFlags::VERSION) && !f.contains(HeaderFlags::REPLY))
        {
            return Err(WireError::BadFlags { got: self.flags, expected: VERSION });
        }
        self.validate_size()
    }

    /// `vhost_user_read`'s size check (also a back-end's on a request): the
    /// announced payload must not exceed [`MAX_PAYLOAD`].
    pub fn validate_size(&self) -> Result<(), WireError> {
        if self.size > MAX_PAYLOAD {
            return Err(WireError::PayloadTooLarge(self.size));
        }
        Ok(())
    }
}

/// IOTLB access permission (`VHOST_ACCESS_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum IotlbPerm {
    /// No access.
    None = 0,
    /// Read only.
    Ro = 1,
    /// Write only.
    Wo = 2,
    /// Read and write.
    Rw = 3,
}

/// IOTLB message type (`VHOST_IOTLB_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[repr(u8)]
pub enum IotlbType {
    /// The back-end misses a translation.
    Miss = 1,
    /// The front-end adds a translation.
    Update = 2,
    /// The front-end removes a translation.
    Invalidate = 3,
    /// The back-end reports an access failure.
    AccessFail = 4,
}

/// `struct vhost_iotlb_msg`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct IotlbMsg {
    /// I/O virtual address.
    pub iova: u64,
    /// Length of the range in bytes.
    pub size: u64,
    /// Front-end virtual address the range maps to.
    pub uaddr: u64,
    /// Access permission.
    pub perm: IotlbPerm,
    /// Message type.
    pub kind: IotlbType,
}

impl IotlbMsg {
    /// The 32 payload bytes (padding zeroed).
    pub fn to_bytes(&self) -> [u8; IOTLB_PAYLOAD_SIZE] {
        let mut b = [0u8; IOTLB_PAYLOAD_SIZE];
        b[0..8].copy_from_slice(&self.iova.to_le_bytes());
        b[8..16].copy_from_slice(&self.size.to_le_bytes());
        b[16..24].copy_from_slice(&self.uaddr.to_le_bytes());
        b[24] = self.perm as u8;
        b[25] = self.kind as u8;
        b
    }

    /// Decodes and validates a payload: exactly 32 bytes, known perm and type.
    pub fn from_bytes(b: &[u8]) -> Result<Self, WireError> {
        if b.len() != IOTLB_PAYLOAD_SIZE {
            return Err(WireError::PayloadSize { got: b.len(), expected: IOTLB_PAYLOAD_SIZE });
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let perm = match b[24] {
            0 => IotlbPerm::None,
            1 => IotlbPerm::Ro,
            2 => IotlbPerm::Wo,
            3 => IotlbPerm::Rw,
            v => return Err(WireError::BadIotlb { field: "perm", value: v }),
        };
        let kind = match b[25] {
            1 => IotlbType::Miss,
            2 => IotlbType::Update,
            3 => IotlbType::Invalidate,
            4 => IotlbType::AccessFail,
            v => return Err(WireError::BadIotlb { field: "type", value: v }),
        };
        Ok(IotlbMsg { iova: u64_at(0), size: u64_at(8), uaddr: u64_at(16), perm, kind })
    }
}

/// Decodes a u64 payload (REPLY_ACK status, feature bits, vring state words).
pub fn u64_from_bytes(b: &[u8]) -> Result<u64, WireError> {
    let arr: [u8; 8] = b
        .try_into()
        .map_err(|_| WireError::PayloadSize { got: b.len(), expected: ACK_PAYLOAD_SIZE })?;
    Ok(u64::from_le_bytes(arr))
}

/// The REPLY_ACK status as `process_message_reply` reads it: QEMU reads
/// `msg.payload.u64` whatever the size the header announced, so a short
/// payload leaves the rest of its buffer (zeroed here) and a longer one is
/// read from its first 8 bytes.
pub fn reply_status(payload: &[u8]) -> u64 {
    let mut b = [0u8; ACK_PAYLOAD_SIZE];
    let n = payload.len().min(ACK_PAYLOAD_SIZE);
    b[..n].copy_from_slice(&payload[..n]);
    u64::from_le_bytes(b)
}

/// A whole message as bytes: header then payload.
pub fn encode(header: Header, payload: &[u8]) -> Vec<u8> {
    debug_assert_eq!(header.size as usize, payload.len());
    let mut v = Vec::with_capacity(HEADER_SIZE + payload.len());
    v.extend_from_slice(&header.to_bytes());
    v.extend_from_slice(payload);
    v
}

/// An IOTLB_MSG update request (44 bytes) with NEED_REPLY as asked.
pub fn iotlb_update_request(msg: &IotlbMsg, need_reply: bool) -> Vec<u8> {
    encode(Header::request(Request::IotlbMsg, IOTLB_PAYLOAD_SIZE, need_reply), &msg.to_bytes())
}

/// A POSTCOPY_END request (12 bytes, no payload); QEMU always sets NEED_REPLY.
pub fn postcopy_end_request() -> Vec<u8> {
    encode(Header::request(Request::PostcopyEnd, 0, true), &[])
}

/// A BACKEND_IOTLB_MSG miss on the back-end channel (44 bytes).
pub fn backend_iotlb_miss(msg: &IotlbMsg, need_reply: bool) -> Vec<u8> {
    encode(
        Header::request(BackendRequest::IotlbMsg, IOTLB_PAYLOAD_SIZE, need_reply),
        &msg.to_bytes(),
    )
}

/// A REPLY_ACK reply (20 bytes): `request, 0x5, 8, status`.
pub fn ack_reply(request: impl Into<u32>, status: u64) -> Vec<u8> {
    encode(Header::reply(request, ACK_PAYLOAD_SIZE), &status.to_le_bytes())
}

/// The stream as 4-byte little-endian words (all messages here are
/// word-multiples); the model's socket granularity.
pub fn to_words(bytes: &[u8]) -> Vec<u32> {
    assert!(bytes.len().is_multiple_of(4), "vhost-user messages here are whole words");
    bytes.chunks_exact(4).map(|c| u32::from_le_bytes(c.try_into().expect("4 bytes"))).collect()
}

/// Bytes as the model shows words: little-endian u32s in hex, `[16 5 8]`; a
/// tail shorter than a word is zero-padded.
pub fn hex_words(bytes: &[u8]) -> String {
    let words: Vec<String> = bytes
        .chunks(4)
        .map(|c| {
            let mut w = [0u8; 4];
            w[..c.len()].copy_from_slice(c);
            format!("{:x}", u32::from_le_bytes(w))
        })
        .collect();
    format!("[{}]", words.join(" "))
}

/// Words back to bytes, as a reader would see them.
pub fn from_words(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Size of one `VhostUserMemoryRegion` on the wire.
pub const MEM_REGION_SIZE: usize = 32;
/// Size of `struct vhost_vring_state` (index u32, num u32).
pub const VRING_STATE_SIZE: usize = 8;
/// Size of `struct vhost_vring_addr` (index, flags u32; desc, used, avail, log u64).
pub const VRING_ADDR_SIZE: usize = 40;

/// One region of a SET_MEM_TABLE payload (`VhostUserMemoryRegion`); its
/// memory arrives as the message's file descriptor of the same index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemoryRegion {
    /// Guest physical address of the region.
    pub guest_phys_addr: u64,
    /// Length in bytes.
    pub memory_size: u64,
    /// Where the front-end has it mapped (what IOTLB `uaddr`s point into).
    pub userspace_addr: u64,
    /// Offset of the region in its file descriptor.
    pub mmap_offset: u64,
}

impl MemoryRegion {
    /// The SET_MEM_TABLE payload (`VhostUserMemory`): `nregions` u32, padding
    /// u32, then the regions.
    pub fn table_to_bytes(regions: &[MemoryRegion]) -> Vec<u8> {
        let mut b = Vec::with_capacity(8 + regions.len() * MEM_REGION_SIZE);
        b.extend_from_slice(&(regions.len() as u32).to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        for r in regions {
            for v in [r.guest_phys_addr, r.memory_size, r.userspace_addr, r.mmap_offset] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        b
    }

    /// Decodes and size-checks a SET_MEM_TABLE payload.
    pub fn table_from_bytes(b: &[u8]) -> Result<Vec<MemoryRegion>, WireError> {
        if b.len() < 8 {
            return Err(WireError::PayloadSize { got: b.len(), expected: 8 });
        }
        let n = u32::from_le_bytes(b[0..4].try_into().expect("4 bytes")) as usize;
        let expected = 8 + n.min(MAX_FDS + 1) * MEM_REGION_SIZE;
        if n > MAX_FDS || b.len() != expected {
            return Err(WireError::PayloadSize { got: b.len(), expected });
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok((0..n)
            .map(|i| {
                let o = 8 + i * MEM_REGION_SIZE;
                MemoryRegion {
                    guest_phys_addr: u64_at(o),
                    memory_size: u64_at(o + 8),
                    userspace_addr: u64_at(o + 16),
                    mmap_offset: u64_at(o + 24),
                }
            })
            .collect())
    }
}

/// `struct vhost_vring_state` bytes (SET_VRING_NUM, SET_VRING_BASE).
pub fn vring_state_to_bytes(index: u32, num: u32) -> [u8; VRING_STATE_SIZE] {
    let mut b = [0u8; VRING_STATE_SIZE];
    b[0..4].copy_from_slice(&index.to_le_bytes());
    b[4..8].copy_from_slice(&num.to_le_bytes());
    b
}

/// Decodes `struct vhost_vring_state` into `(index, num)`.
pub fn vring_state_from_bytes(b: &[u8]) -> Result<(u32, u32), WireError> {
    if b.len() != VRING_STATE_SIZE {
        return Err(WireError::PayloadSize { got: b.len(), expected: VRING_STATE_SIZE });
    }
    let w = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
    Ok((w(0), w(4)))
}

/// `struct vhost_vring_addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VringAddr {
    /// Virtqueue index.
    pub index: u32,
    /// `VHOST_VRING_F_LOG` or 0.
    pub flags: u32,
    /// Descriptor table address (an IOVA when the device has an IOMMU).
    pub desc: u64,
    /// Used ring address.
    pub used: u64,
    /// Available ring address.
    pub avail: u64,
    /// Log address.
    pub log: u64,
}

impl VringAddr {
    /// The 40 payload bytes.
    pub fn to_bytes(&self) -> [u8; VRING_ADDR_SIZE] {
        let mut b = [0u8; VRING_ADDR_SIZE];
        b[0..4].copy_from_slice(&self.index.to_le_bytes());
        b[4..8].copy_from_slice(&self.flags.to_le_bytes());
        for (i, v) in [self.desc, self.used, self.avail, self.log].into_iter().enumerate() {
            b[8 + 8 * i..16 + 8 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    /// Decodes the 40 payload bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Self, WireError> {
        if b.len() != VRING_ADDR_SIZE {
            return Err(WireError::PayloadSize { got: b.len(), expected: VRING_ADDR_SIZE });
        }
        let w = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        let d = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(VringAddr {
            index: w(0),
            flags: w(4),
            desc: d(8),
            used: d(16),
            avail: d(24),
            log: d(32),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(vq: u64) -> IotlbMsg {
        IotlbMsg {
            iova: 0x1000 * vq,
            size: 0x1000,
            uaddr: 0x7f00_0000_0000 + 0x1000 * vq,
            perm: IotlbPerm::Rw,
            kind: IotlbType::Update,
        }
    }

    #[test]
    fn sizes_match_the_facts() {
        assert_eq!(iotlb_update_request(&update(0), true).len(), 44);
        assert_eq!(ack_reply(Request::IotlbMsg, 0).len(), 20);
        assert_eq!(postcopy_end_request().len(), 12);
        assert_eq!(backend_iotlb_miss(&update(0), false).len(), 44);
    }

    #[test]
    fn request_header_flags() {
        let h = Header::request(Request::PostcopyEnd, 0, true);
        assert_eq!(h.flags, 0x9);
        assert!(h.need_reply());
        assert_eq!(Header::reply(Request::IotlbMsg, 8).flags, 0x5);
        assert_eq!(Header::request(Request::IotlbMsg, 32, false).flags, 0x1);
    }

    #[test]
    fn header_round_trip_and_reply_validation() {
        let h = Header::reply(Request::IotlbMsg, 8);
        assert_eq!(Header::from_bytes(&h.to_bytes()), h);
        assert_eq!(h.validate_reply(), Ok(()));
        let misframed = Header { request: 0, flags: 0, size: 30 };
        assert_eq!(misframed.validate_reply(), Err(WireError::BadFlags { got: 0, expected: 5 }));
        let huge = Header { request: 22, flags: 5, size: 4097 };
        assert_eq!(huge.validate_reply(), Err(WireError::PayloadTooLarge(4097)));
    }

    #[test]
    fn flag_and_feature_bits_match_the_specification() {
        assert_eq!((VERSION, REPLY_MASK, NEED_REPLY_MASK, REPLY_FLAGS), (0x1, 0x4, 0x8, 0x5));
        let asked = HeaderFlags::VERSION | HeaderFlags::NEED_REPLY;
        assert_eq!(Header::request(Request::IotlbMsg, 32, true).flag_bits(), asked);
        // REPLY_ACK is bit 3, BACKEND_REQ bit 5, PAGEFAULT bit 8.
        assert_eq!(ProtocolFeatures::IOMMU_POSTCOPY.bits(), 0x128);
        assert_eq!(PROTOCOL_F_MQ | PROTOCOL_F_LOG_SHMFD, 0x3);
        // A misframed word keeps its unknown bits.
        assert_eq!(Header { request: 0, flags: 0x1e, size: 0 }.flag_bits().bits(), 0x1e);
    }

    #[test]
    fn reply_check_in_qemu_order() {
        let ok = Header::reply(Request::IotlbMsg, 8);
        assert_eq!(ok.validate_reply_for(Request::IotlbMsg as u32), Ok(()));
        assert_eq!(
            ok.validate_reply_for(Request::PostcopyEnd as u32),
            Err(WireError::UnexpectedRequest { expected: 30, received: 22 })
        );
        // Flags before size before request code, as QEMU reads them.
        let all_wrong = Header { request: 30, flags: 0x1, size: 4097 };
        assert_eq!(
            all_wrong.validate_reply_for(22),
            Err(WireError::BadFlags { got: 1, expected: 5 })
        );
        let big = Header { request: 30, flags: 0x5, size: 4097 };
        assert_eq!(big.validate_reply_flags(), Ok(()));
        assert_eq!(big.validate_reply_for(22), Err(WireError::PayloadTooLarge(4097)));
    }

    #[test]
    fn reply_status_reads_a_short_payload_as_zero_filled() {
        assert_eq!(reply_status(&7u64.to_le_bytes()), 7);
        assert_eq!(reply_status(&[]), 0);
        assert_eq!(reply_status(&[1, 2]), 0x0201);
        let mut long = 9u64.to_le_bytes().to_vec();
        long.extend([0xff; 4]);
        assert_eq!(reply_status(&long), 9);
    }

    #[test]
    fn request_validation_rejects_replies_and_unknown_bits() {
        assert!(Header::request(Request::IotlbMsg, 32, true).validate_request().is_ok());
        assert!(Header::reply(Request::IotlbMsg, 8).validate_request().is_err());
        assert!(Header { request: 22, flags: 0x11, size: 0 }.validate_request().is_err());
        assert!(Header { request: 22, flags: 0x2, size: 0 }.validate_request().is_err());
        assert!(Header { request: 22, flags: 0x3, size: 0 }.validate_request().is_err());
        assert!(Header { request: 22, flags: 0x8, size: 0 }.validate_request().is_err());
    }

    #[test]
    fn iotlb_round_trip_and_errors() {
        let m = update(3);
        assert_eq!(IotlbMsg::from_bytes(&m.to_bytes()), Ok(m));
        let mut b = m.to_bytes();
        b[24] = 9;
        assert_eq!(IotlbMsg::from_bytes(&b), Err(WireError::BadIotlb { field: "perm", value: 9 }));
        assert!(matches!(IotlbMsg::from_bytes(&b[..20]), Err(WireError::PayloadSize { .. })));
    }

    #[test]
    fn request_codes_convert_both_ways() {
        for r in Request::ALL {
            assert_eq!(Request::try_from(u32::from(*r)), Ok(*r));
        }
        assert_eq!(Request::try_from(4), Err(WireError::UnknownRequest(4)));
        assert_eq!(Request::PostcopyEnd as u32, 30);
        assert_eq!(BackendRequest::try_from(1), Ok(BackendRequest::IotlbMsg));
    }

    #[test]
    fn a_reply_read_one_word_late_has_the_flags_qemu_reports() {
        // Two replies back to back, read from word 3 on: the header QEMU
        // decodes is [ack lo, ack hi, next request] -> flags 0x0.
        let mut s = ack_reply(Request::IotlbMsg, 0);
        s.extend(ack_reply(Request::PostcopyEnd, 0));
        let w = to_words(&s);
        let h = Header::from_bytes(&from_words(&w[3..6]).try_into().unwrap());
        assert_eq!(h.flags, 0);
        assert_eq!(h.size, 30);
    }
}
