//! A vhost-user back-end, split by role as rust-vmm's `vhost` crate splits
//! it: [`dispatch`] is the loop that knows only the wire (one request at a
//! time, single-threaded, over any [`Transport`]: read, check, call the
//! handler, answer per REPLY_ACK and NEED_REPLY, send misses on the back-end
//! channel); [`handler`] is the device-behaviour trait it calls
//! ([`BackendReqHandler`]: features, memory table and dirty log, vrings,
//! IOTLB, postcopy); [`device`] is the reference device that implements it
//! for QEMU's binary (7.2, vhost-user-net) and for the race's scenario.
//! [`Backend::new`] puts the two together with a [`BackendConfig`].
//!
//! Also here: the features the reference offers, the configuration, the
//! error type both halves share, [`postcopy`] (userfaultfd, dirty log, fault
//! injection) and the [`trace`] format.
//!
//! Leaves out: serving a socket path (the CLI's `vhost-race backend` does
//! that, in `checker/src/backend_cmd.rs`), and what each half's own module
//! doc says it leaves out.
//!
//! [`Transport`]: crate::transport::Transport

use crate::scenario::Scenario;
use crate::transport::TransportError;
use crate::wire::{
    ProtocolFeatures, Request, WireError, VHOST_F_LOG_ALL, VHOST_USER_F_PROTOCOL_FEATURES,
    VIRTIO_F_IOMMU_PLATFORM, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MQ,
};

pub use protocol::plan;
pub mod device;
pub mod dispatch;
pub mod handler;
pub mod postcopy;
pub mod trace;

pub use device::{Iotlb, IotlbEntry, ReferenceDevice, Vring};
pub use dispatch::Backend;
pub use handler::BackendReqHandler;
pub use plan::ReplyPlan;
pub use postcopy::FaultInjection;

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
    /// Write a reply's header and payload in two sends, as libvhost-user's
    /// `vu_message_write` does ([`crate::scenario::Scenario::split_replies`]).
    pub split_replies: bool,
}

impl BackendConfig {
    /// The back-end of `scenario` over a real socket (memory mapped).
    pub fn for_scenario(scenario: &Scenario) -> Self {
        BackendConfig {
            map_memory: true,
            misses: scenario.backend_misses,
            miss_need_reply: scenario.miss_need_reply,
            split_replies: scenario.split_replies,
        }
    }
}

impl Default for BackendConfig {
    /// Maps memory, sends no misses.
    fn default() -> Self {
        BackendConfig { map_memory: true, misses: 0, miss_need_reply: false, split_replies: false }
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
