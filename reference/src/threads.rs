//! The front-end threads of the race, as bodies a runner starts on its
//! family's threads: device start, the postcopy listen thread and the main
//! loop's back-end channel handler, with the variant's BQL placement.
//!
//! Models: `vhost_dev_start` (under the BQL when
//! [`crate::scenario::Scenario::device_start_holds_bql`]); `postcopy_ram_listen_thread`'s
//! cleanup (fault-thread join, then `vhost_user_postcopy_end`, under the BQL
//! for [`LockPolicy::BqlListen`], or scheduled as a main-loop bottom half for
//! [`LockPolicy::Qemu102`]); the main loop running that bottom half under the
//! BQL and serving the back-end channel: `backend_read` →
//! `vhost_backend_handle_iotlb_msg` → `vhost_device_iotlb_miss`, replying on
//! the back-end channel when the back-end set NEED_REPLY, under the BQL.
//! Under [`LockPolicy::ReplyQueue`] the BQL is the lendable token of
//! [`crate::reply_queue`]: the handler borrows it from a holder that is
//! waiting for a reply (device start waiting for an update's ack), and the
//! miss's update goes out without NEED_REPLY, so the back-end channel is
//! answered without waiting on the main socket.
//!
//! Leaves out: the fault thread itself (no socket traffic; its join is a
//! no-op), QEMU's poll: the main loop reads the back-end channel message
//! before taking the BQL (only the main loop reads that channel, so this
//! equals "poll said readable, then handle under the BQL"). Which of its two
//! sources it dispatches next, when both are still to come, is QEMU's race
//! between the bottom half's scheduling and the miss's arrival: on real
//! threads it runs a pending bottom half first, else blocks on the next
//! back-end message; the choice goes through the back-end channel's
//! [`Transport::goes_next`], so that a gated in-memory channel lets a
//! scheduler take either order (the model's `Action::RunPostcopyBh` and
//! `Action::ServeBackendChannel`), waiting for the bottom half when it is
//! chosen before it is scheduled. The main loop handles exactly
//! [`crate::scenario::Scenario::backend_misses`] messages and stops.

use crate::frontend::{Frontend, FrontendError};
use crate::scenario::{LockPolicy, ThreadRole};
use crate::sync::{Monitor, SyncFamily};
use crate::transport::{read_all, GateOp, Transport};
use crate::wire::{self, BackendRequest, Header, IotlbMsg, IotlbType, HEADER_SIZE};

/// Why a thread body stopped early.
pub type ThreadResult = Result<(), FrontendError>;

impl<F: SyncFamily, T: Transport> Frontend<F, T> {
    /// The body of `role` for this front-end's variant and scenario.
    pub fn run_role(&self, role: ThreadRole) -> ThreadResult {
        match role {
            ThreadRole::DeviceStart => self.device_start_thread(),
            ThreadRole::PostcopyListen => self.postcopy_listen_thread(),
            ThreadRole::MainLoop => self.main_loop_thread(),
        }
    }

    /// Device start: `vhost_dev_start` over the scenario's virtqueues, holding
    /// the BQL if the scenario says so.
    pub fn device_start_thread(&self) -> ThreadResult {
        let role = ThreadRole::DeviceStart;
        self.with_bql(role, self.scenario.device_start_holds_bql, || {
            self.vhost_dev_start(role, self.scenario.virtqueues)
        })
    }

    /// The postcopy listen thread's cleanup at the end of postcopy.
    pub fn postcopy_listen_thread(&self) -> ThreadResult {
        let role = ThreadRole::PostcopyListen;
        let policy = self.variant.policy;
        self.with_bql(role, policy.listen_cleanup_under_bql(), || {
            join_fault_thread();
            if policy == LockPolicy::Qemu102 {
                // migration_incoming_postcopy_cleanup as a bottom half.
                self.bh.with_notify(|b| b.postcopy_end = true);
                Ok(())
            } else {
                self.vhost_user_postcopy_end(role)
            }
        })
    }

    /// The main loop: bottom halves and back-end channel messages, each
    /// handled under the BQL.
    pub fn main_loop_thread(&self) -> ThreadResult {
        let role = ThreadRole::MainLoop;
        let mut misses_left = self.scenario.backend_misses;
        let mut bh_left =
            self.scenario.postcopy_end && self.variant.policy.postcopy_end_in_main_loop();
        let mut result = Ok(());
        while misses_left > 0 || bh_left {
            let mut bh_taken = false;
            let read_channel = misses_left > 0
                && (!bh_left || {
                    bh_taken = self.bh.with(|b| std::mem::take(&mut b.postcopy_end));
                    let chan = self.backend_channel.as_ref();
                    let read =
                        chan.is_none_or(|c| c.goes_next(GateOp::Recv(HEADER_SIZE), !bh_taken));
                    if read && bh_taken {
                        // A scheduler put the miss first: the bottom half
                        // stays pending.
                        self.bh.with(|b| b.postcopy_end = true);
                        bh_taken = false;
                    }
                    read
                });
            if !read_channel {
                let run = bh_taken
                    || self.bh.wait_until(|b| {
                        if b.shut_down {
                            Some(false)
                        } else {
                            std::mem::take(&mut b.postcopy_end).then_some(true)
                        }
                    });
                if !run {
                    return Err(FrontendError::Protocol("shut down before the bottom half"));
                }
                bh_left = false;
                let r = self.bql.with(|_| self.vhost_user_postcopy_end(role));
                result = result.and(r);
                continue;
            }
            misses_left -= 1;
            let msg = self.backend_channel_read()?;
            let r = self.with_bql_borrowed(role, || self.backend_read(role, msg));
            result = result.and(r);
        }
        result
    }

    /// Reads one whole back-end channel message (the first part of
    /// `backend_read`, before the BQL).
    fn backend_channel_read(&self) -> Result<(Header, Vec<u8>), FrontendError> {
        let chan =
            self.backend_channel.as_ref().ok_or(FrontendError::Protocol("no back-end channel"))?;
        let mut fds = Vec::new();
        let mut b = [0u8; HEADER_SIZE];
        let n = read_all(chan, &mut b, &mut fds)?;
        if n != HEADER_SIZE {
            return Err(wire::WireError::Short { got: n, expected: HEADER_SIZE }.into());
        }
        let h = Header::from_bytes(&b);
        h.validate_request()?;
        let mut payload = vec![0u8; h.size as usize];
        let n = read_all(chan, &mut payload, &mut fds)?;
        if n != payload.len() {
            return Err(wire::WireError::Short { got: n, expected: payload.len() }.into());
        }
        if !fds.is_empty() {
            return Err(FrontendError::UnexpectedFds { request: h.request, count: fds.len() });
        }
        Ok((h, payload))
    }

    /// `backend_read` after the message is in: dispatch
    /// (`vhost_backend_handle_iotlb_msg` for BACKEND_IOTLB_MSG), then reply
    /// on the back-end channel if NEED_REPLY (u64 0 on success, 1 on failure).
    pub fn backend_read(&self, role: ThreadRole, msg: (Header, Vec<u8>)) -> ThreadResult {
        let (h, payload) = msg;
        let request = BackendRequest::try_from(h.request)?;
        let r = match request {
            BackendRequest::IotlbMsg => IotlbMsg::from_bytes(&payload)
                .map_err(FrontendError::from)
                .and_then(|m| self.vhost_backend_handle_iotlb_msg(role, &m)),
        };
        if h.need_reply() {
            let chan = self
                .backend_channel
                .as_ref()
                .ok_or(FrontendError::Protocol("no back-end channel"))?;
            chan.send(&wire::ack_reply(h.request, u64::from(r.is_err())), &[])?;
        }
        r
    }

    /// `vhost_backend_handle_iotlb_msg`: a miss makes
    /// `vhost_device_iotlb_miss` (under reply-queue, its update without
    /// NEED_REPLY); other types are not expected from a back-end.
    pub fn vhost_backend_handle_iotlb_msg(&self, role: ThreadRole, m: &IotlbMsg) -> ThreadResult {
        match m.kind {
            // Reply-queue, rule 4: answered without waiting on the main socket.
            IotlbType::Miss if self.variant.policy.reply_queue() => {
                self.vhost_device_iotlb_miss_without_reply(role, m.iova)
            }
            IotlbType::Miss => self.vhost_device_iotlb_miss(role, m.iova),
            _ => Err(FrontendError::Protocol("Unexpected IOTLB message type")),
        }
    }
}

/// `postcopy_ram_incoming_cleanup` joins the fault thread: no socket traffic.
fn join_fault_thread() {}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::harness::over_socketpair;
    use crate::scenario::{Scenario, Variant};
    use crate::sync::{Join, ParkingLot};
    use std::sync::Arc;

    /// Reply-queue over a real socketpair, misses with NEED_REPLY: device
    /// start takes the BQL *before* the main loop starts, so the main loop
    /// can only answer the back-end's miss (which the back-end sends before
    /// it reads device start's first update) by borrowing the BQL from
    /// device start while device start waits for its reply. Device start
    /// completes with every update acknowledged, the loan is counted, and
    /// nothing is logged.
    #[test]
    fn reply_queue_device_start_holding_the_bql_lends_it_to_the_miss_handler() {
        let scenario = Scenario {
            miss_need_reply: true,
            backend_misses: 2,
            postcopy_end: false,
            ..Scenario::default()
        };
        let (fe, backend) =
            over_socketpair(Variant::new(LockPolicy::ReplyQueue), &scenario).expect("handshake");
        let fe = Arc::new(fe);
        let started = fe.with_bql(ThreadRole::DeviceStart, true, || {
            let main_loop = {
                let fe = Arc::clone(&fe);
                ParkingLot::spawn("main loop", move || fe.main_loop_thread())
            };
            let r = fe.vhost_dev_start(ThreadRole::DeviceStart, scenario.virtqueues);
            (r, main_loop)
        });
        let (r, main_loop) = started;
        assert!(r.is_ok(), "device start: {r:?}");
        assert!(Join::join(main_loop).expect("no panic").is_ok());
        assert!(fe.bql_loans() >= 1, "the main loop borrowed the BQL");
        assert!(fe.record().rendered().is_empty(), "{:?}", fe.record().rendered());
        fe.shutdown();
        assert!(matches!(backend.join(), Ok(Ok(()))));
    }
}
