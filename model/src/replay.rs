//! What device start reads in a model path, as bytes a back-end can send to
//! QEMU's own binary: the replay of a counterexample on QEMU.
//!
//! QEMU's device start, run alone against a back-end, reads whatever the
//! back-end puts on the socket after each IOTLB update. If the back-end sends
//! exactly the bytes device start read in a model path, call by call and in
//! the same read sizes, QEMU's real read path decodes them and prints what it
//! prints; the model says what device start logs for those reads. The two
//! must agree, line for line.
//!
//! A path may end in the middle of a call (a counterexample stops at the
//! first violating state). The replay then extends it by the shortest
//! continuation (any thread may move) after which device start has finished
//! the call in flight and logged what it logs for it, so that QEMU is never
//! left waiting for bytes the path does not name.
//!
//! Leaves out: the other threads (QEMU's replay runs device start only; the
//! back-end stands in for the replies they would have sent or stolen),
//! paths in which device start never finishes its call (a deadlock cannot be
//! replayed by choosing bytes), and device start's calls after the path
//! (the back-end acks them, so QEMU prints nothing for them).

use std::collections::{HashSet, VecDeque};

use protocol::plan::ReplyPlan;
use protocol::qemu_log::QemuError;
use protocol::scenario::ThreadRole;
#[cfg(test)]
use protocol::wire;
use stateright::Model;

use crate::{Action, Op, ReplyRace, Routine, State};

/// States the continuation search may visit before it gives up.
const CONTINUATION_NODES: usize = 200_000;

/// Device start's part of a model path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceStartReplay {
    /// The path the replay follows: the given one and its continuation.
    pub actions: Vec<Action>,
    /// How many of [`DeviceStartReplay::actions`] the continuation added.
    pub continuation: usize,
    /// What the back-end sends for each of device start's IOTLB calls.
    pub plan: ReplyPlan,
    /// The lines device start logs along the path, in order.
    pub lines: Vec<QemuError>,
}

/// Why a path cannot be replayed on QEMU.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// An action is not enabled where the path takes it.
    #[error("action {index} ({action:?}) is not enabled there: not a path of this model")]
    NotAPath {
        /// Its index in the path.
        index: usize,
        /// The action.
        action: Action,
    },
    /// Device start cannot finish its call in flight from the path's end.
    #[error(
        "device start never finishes its call in flight after this path (it is blocked for good)"
    )]
    DeviceStartBlocked,
    /// Device start reads nothing in the path: there is nothing to replay.
    #[error("device start reads nothing in this path")]
    NoDeviceStartReads,
}

/// Device start's reads and lines in `actions` (extended as the module doc says).
pub fn device_start_replay(
    model: &ReplyRace,
    actions: &[Action],
) -> Result<DeviceStartReplay, ReplayError> {
    let mut state = model.init_states().remove(0);
    for (index, &action) in actions.iter().enumerate() {
        state = step(model, &state, action).ok_or(ReplayError::NotAPath { index, action })?;
    }
    let more = continuation(model, &state)?;
    let mut path = actions.to_vec();
    let continuation = more.len();
    path.extend(more);

    let mut state = model.init_states().remove(0);
    let mut calls: Vec<Vec<Vec<u8>>> = Vec::new();
    for &a in &path {
        let t = state.thread(ThreadRole::DeviceStart);
        match a {
            Action::Step(ThreadRole::DeviceStart)
                if matches!(model.current_op(t), Some(Op::WriteIotlbUpdate(_))) =>
            {
                calls.push(Vec::new());
            }
            Action::Read(ThreadRole::DeviceStart, n) => {
                let bytes = state.to_frontend.peek(usize::from(n)).bytes().to_vec();
                let call = calls.last_mut().expect("a read follows its call's write");
                call.push(bytes);
            }
            _ => {}
        }
        state = model.next_state(&state, a).expect("checked above");
    }
    while calls.last().is_some_and(Vec::is_empty) {
        calls.pop();
    }
    if calls.is_empty() {
        return Err(ReplayError::NoDeviceStartReads);
    }
    let lines = state
        .log
        .iter()
        .filter(|(role, _)| *role == ThreadRole::DeviceStart)
        .map(|&(_, e)| e)
        .collect();
    Ok(DeviceStartReplay {
        actions: path,
        continuation,
        plan: ReplyPlan { iotlb_replies: calls },
        lines,
    })
}

fn step(model: &ReplyRace, s: &State, a: Action) -> Option<State> {
    let mut enabled = Vec::new();
    model.actions(s, &mut enabled);
    if !enabled.contains(&a) {
        return None;
    }
    model.next_state(s, a)
}

/// Whether device start has no call half done: it is between calls (or
/// finished, or not running) and has nothing left to log.
fn between_calls(model: &ReplyRace, s: &State) -> bool {
    let t = s.thread(ThreadRole::DeviceStart);
    if t.pending_log.is_some() {
        return false;
    }
    match t.routine {
        Routine::Running(_) => matches!(
            model.current_op(t),
            Some(Op::AcquireBql | Op::ReleaseBql | Op::AcquireMutex | Op::WriteIotlbUpdate(_))
        ),
        _ => true,
    }
}

/// The shortest continuation from `s` after which device start is between calls.
fn continuation(model: &ReplyRace, s: &State) -> Result<Vec<Action>, ReplayError> {
    if between_calls(model, s) {
        return Ok(Vec::new());
    }
    let mut seen = HashSet::from([s.clone()]);
    let mut queue = VecDeque::from([(s.clone(), Vec::new())]);
    while let Some((s, path)) = queue.pop_front() {
        if seen.len() > CONTINUATION_NODES {
            break;
        }
        let mut actions = Vec::new();
        model.actions(&s, &mut actions);
        for a in actions {
            let Some(next) = model.next_state(&s, a) else { continue };
            if !seen.insert(next.clone()) {
                continue;
            }
            let mut p: Vec<Action> = path.clone();
            p.push(a);
            if between_calls(model, &next) {
                return Ok(p);
            }
            queue.push_back((next, p));
        }
    }
    Err(ReplayError::DeviceStartBlocked)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::scenario::{LockPolicy, Scenario, Variant};

    fn model() -> ReplyRace {
        ReplyRace::new(Variant::new(LockPolicy::Qemu91), Scenario::default())
    }

    /// The swap of the facts page seen from device start: it reads the
    /// POSTCOPY_END reply whole for its first update.
    #[test]
    fn a_swap_replays_as_the_postcopy_reply_for_the_first_update() {
        use Action::*;
        use ThreadRole::*;
        let m = model();
        let path = [
            Step(DeviceStart),
            Step(DeviceStart),
            Step(PostcopyListen),
            Step(PostcopyListen),
            BackendHandle,
            Read(PostcopyListen, 12),
            Read(PostcopyListen, 8),
            BackendHandle,
            Read(DeviceStart, 12),
        ];
        let r = device_start_replay(&m, &path).unwrap();
        let reply = wire::ack_reply(protocol::wire::Request::PostcopyEnd, 0);
        assert_eq!(r.plan.iotlb_replies, vec![vec![reply[..12].to_vec(), reply[12..].to_vec()]]);
        assert_eq!(
            r.lines,
            vec![
                QemuError::UnexpectedMsgType { expected: 22, received: 30 },
                QemuError::IotlbUpdateFailed
            ]
        );
        assert_eq!(&r.actions[..path.len()], &path, "the path, then its continuation");
        assert!(r.continuation >= 2, "payload read and the reports follow");
    }

    #[test]
    fn a_path_without_device_start_reads_has_nothing_to_replay() {
        let m = model();
        let e = device_start_replay(&m, &[Action::Step(ThreadRole::PostcopyListen)]).unwrap_err();
        assert_eq!(e, ReplayError::NoDeviceStartReads);
    }

    #[test]
    fn an_action_that_is_not_enabled_is_refused() {
        let m = model();
        let e = device_start_replay(&m, &[Action::BackendHandle]).unwrap_err();
        assert!(matches!(e, ReplayError::NotAPath { index: 0, .. }), "{e:?}");
    }
}
