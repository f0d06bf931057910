//! What a vhost-user device does with each request, apart from the wire: the
//! [`BackendReqHandler`] trait, which [`super::Backend`]'s dispatch loop
//! calls once it has read, validated and decoded a request, and
//! [`super::ReferenceDevice`] implements.
//!
//! Models: the split rust-vmm's `vhost` crate makes between its
//! `VhostUserBackendReqHandler` (the device's behaviour) and its
//! `BackendReqHandler` (the wire). The handler sees decoded values (a
//! feature word, a vring index and number, a memory table with its
//! descriptors, an IOTLB message), never a header, a flag or a byte count;
//! whether and how each call is answered (REPLY_ACK, NEED_REPLY, a body)
//! belongs to the dispatch loop alone.
//!
//! Leaves out: requests the reference does not implement (GET_CONFIG,
//! inflight descriptors, shared objects, ...): the dispatch loop answers
//! them with a failure ack without calling the handler.

use std::os::fd::OwnedFd;

use vm_memory::GuestAddress;

use super::BackendError;
use crate::wire::{IotlbMsg, IotlbPerm, MemoryRegion, ProtocolFeatures, VringAddr};

/// A vhost-user device's behaviour: features, memory table and dirty log,
/// vring state, IOTLB and postcopy. Each method is one request (named after
/// it) or a question the dispatch loop asks between requests. An `Err` ends
/// the connection; a refusal the front-end should be told about is a value
/// (see [`BackendReqHandler::iotlb_msg`]).
pub trait BackendReqHandler {
    /// GET_FEATURES: the virtio features offered.
    fn get_features(&mut self) -> u64;
    /// SET_FEATURES: the virtio features the front-end acks.
    fn set_features(&mut self, features: u64) -> Result<(), BackendError>;
    /// GET_PROTOCOL_FEATURES: the protocol features offered.
    fn get_protocol_features(&mut self) -> ProtocolFeatures;
    /// SET_PROTOCOL_FEATURES: the protocol features the front-end asks for.
    fn set_protocol_features(&mut self, features: ProtocolFeatures) -> Result<(), BackendError>;
    /// The protocol features in force (what the dispatch loop reads
    /// REPLY_ACK from).
    fn acked_protocol_features(&self) -> ProtocolFeatures;
    /// GET_QUEUE_NUM: the queue pairs the device has (with the MQ protocol
    /// feature).
    fn get_queue_num(&mut self) -> u64;
    /// SET_OWNER.
    fn set_owner(&mut self) -> Result<(), BackendError>;

    /// SET_MEM_TABLE: the regions and their descriptors (as many as
    /// arrived; the handler decides how many it needs). `Some(table)` asks
    /// the dispatch loop to answer with that table (postcopy: each region's
    /// address in the back-end's own mapping) instead of an ack.
    fn set_mem_table(
        &mut self,
        regions: Vec<MemoryRegion>,
        fds: Vec<OwnedFd>,
    ) -> Result<Option<Vec<MemoryRegion>>, BackendError>;
    /// SET_LOG_BASE: the dirty log's size and offset in `fd` (none without
    /// LOG_SHMFD).
    fn set_log_base(
        &mut self,
        size: u64,
        offset: u64,
        fd: Option<OwnedFd>,
    ) -> Result<(), BackendError>;

    /// SET_VRING_NUM.
    fn set_vring_num(&mut self, index: u32, num: u32) -> Result<(), BackendError>;
    /// SET_VRING_BASE.
    fn set_vring_base(&mut self, index: u32, base: u32) -> Result<(), BackendError>;
    /// SET_VRING_ADDR.
    fn set_vring_addr(&mut self, addr: VringAddr) -> Result<(), BackendError>;
    /// GET_VRING_BASE: stops the ring and returns its base.
    fn get_vring_base(&mut self, index: u32) -> Result<u32, BackendError>;
    /// SET_VRING_KICK: the kick eventfd (`None` with the no-fd flag).
    fn set_vring_kick(&mut self, index: u32, fd: Option<OwnedFd>) -> Result<(), BackendError>;
    /// SET_VRING_CALL: the call eventfd (`None` with the no-fd flag).
    fn set_vring_call(&mut self, index: u32, fd: Option<OwnedFd>) -> Result<(), BackendError>;
    /// SET_VRING_ERR: the error eventfd (`None` with the no-fd flag).
    fn set_vring_err(&mut self, index: u32, fd: Option<OwnedFd>) -> Result<(), BackendError>;
    /// SET_VRING_ENABLE.
    fn set_vring_enable(&mut self, index: u32, enable: bool) -> Result<(), BackendError>;

    /// IOTLB_MSG: whether the message was applied (a refused one is
    /// answered with a failure status and the connection goes on).
    fn iotlb_msg(&mut self, msg: &IotlbMsg) -> bool;
    /// Where `[iova, iova + len)` lands in guest physical memory with
    /// `perm`'s access, if the IOTLB and the memory table cover it.
    fn translate(&self, iova: u64, len: u64, perm: IotlbPerm) -> Option<GuestAddress>;
    /// The next BACKEND_IOTLB_MSG miss to send on the back-end channel, if
    /// any: the dispatch loop sends it before it reads the next request
    /// unless the channel's gate orders the request first.
    fn next_miss(&mut self) -> Option<IotlbMsg>;

    /// POSTCOPY_ADVISE: the userfaultfd to pass to the front-end.
    fn postcopy_advise(&mut self) -> Result<OwnedFd, BackendError>;
    /// POSTCOPY_LISTEN.
    fn postcopy_listen(&mut self) -> Result<(), BackendError>;
    /// POSTCOPY_END.
    fn postcopy_end(&mut self) -> Result<(), BackendError>;
}
