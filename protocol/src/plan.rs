//! Fault injection for the back-end: a plan of what to send instead of the
//! acks of IOTLB updates. Its one use is replaying a model counterexample on
//! QEMU: the back-end answers device start's updates with exactly the words
//! device start reads in the counterexample, in the same read sizes, so that
//! QEMU's own read path decodes them and prints what it prints.
//!
//! This is not how any back-end behaves; it stands in for the other threads
//! of the race, whose replies device start would have read. Leaves out:
//! plans for any request other than IOTLB_MSG with NEED_REPLY.

use std::time::Duration;

/// Pause between two chunks of one planned reply, so that the reader's
/// `recv` returns them apart as the model's short reads did.
pub const CHUNK_PAUSE: Duration = Duration::from_millis(5);

/// For the n-th IOTLB update with NEED_REPLY on a connection, the chunks of
/// bytes to send instead of its ack; calls past the plan get the ack.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReplyPlan {
    /// `iotlb_replies[n]`: the chunks for call `n`, sent in order.
    pub iotlb_replies: Vec<Vec<Vec<u8>>>,
}

impl ReplyPlan {
    /// The chunks planned for IOTLB call `n`, if any.
    pub fn iotlb_reply(&self, n: usize) -> Option<&[Vec<u8>]> {
        self.iotlb_replies.get(n).map(Vec::as_slice)
    }
}
