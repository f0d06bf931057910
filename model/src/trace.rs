//! Counterexamples as people read them: one column per thread, each step in
//! its thread's column in order (the two-thread race diagram of a bug
//! report), followed by the log the interleaving makes QEMU print. Bytes
//! read are shown as little-endian 4-byte words in hex, counted from the
//! read's first byte, with a tail of 1 to 3 bytes after `|`
//! ([`crate::stream::hex`]): `[16 5 1e]` is the header QEMU decodes.
//!
//! Leaves out: states between steps (the Explorer shows those) and colour.

use std::fmt::Write as _;

use protocol::qemu_log::LogLine;
use protocol::scenario::ThreadRole;
use protocol::wire::{self, Request};
use stateright::Model;

use crate::stream::hex;
use crate::{Action, Op, ReplyRace, State};

/// A column of the diagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
pub enum Column {
    /// A front-end thread.
    Thread(ThreadRole),
    /// The vhost-user back-end.
    Backend,
}

impl Column {
    /// Title of the column.
    pub fn title(self) -> &'static str {
        match self {
            Column::Thread(r) => r.name(),
            Column::Backend => "back-end",
        }
    }
}

/// One step of a counterexample.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Step {
    /// Who moved.
    pub column: Column,
    /// What it did.
    pub text: String,
    /// The lines QEMU logged in this step.
    pub logged: Vec<LogLine>,
}

/// Who moves in `action`.
pub fn column(action: Action) -> Column {
    match action {
        Action::Step(r) | Action::Read(r, _) | Action::LogReadError(r) => Column::Thread(r),
        Action::ServeBackendChannel | Action::RunPostcopyBh => Column::Thread(ThreadRole::MainLoop),
        Action::BackendHandle
        | Action::BackendWritePayload
        | Action::BackendSendMiss
        | Action::BackendReadMissReply => Column::Backend,
    }
}

fn request_name(code: u32) -> String {
    match Request::try_from(code) {
        Ok(r) => r.c_name().trim_start_matches("VHOST_USER_").to_string(),
        Err(_) => format!("request {code}"),
    }
}

/// The log lines of `state`, as QEMU prints them.
pub fn log_lines(state: &State) -> Vec<LogLine> {
    state.log.iter().map(|&(role, e)| LogLine::from_thread(role.tid(), e)).collect()
}

/// A one-line description of `action` taken in `last`.
pub fn describe(model: &ReplyRace, last: &State, action: Action) -> String {
    match action {
        Action::Step(role) => {
            let op = model.current_op(last.thread(role)).expect("a step has an op");
            match op {
                Op::AcquireBql => "take BQL".into(),
                Op::ReleaseBql => "release BQL".into(),
                Op::AcquireMutex => "take request/reply mutex".into(),
                Op::ReleaseMutex => "release request/reply mutex".into(),
                Op::WriteIotlbUpdate(vq) => format!("write IOTLB_MSG update vq {vq}"),
                Op::WriteMissAnswer => "write IOTLB_MSG answer to miss".into(),
                Op::WritePostcopyEnd => "write POSTCOPY_END".into(),
                Op::Report(e) => format!("{} reports the failure", e.function()),
                Op::ReplyMiss => "reply on back-end channel".into(),
                Op::JoinFaultThread => "join fault thread".into(),
                Op::ScheduleBh => "schedule postcopy cleanup BH".into(),
                Op::AwaitQuit(_) => "QEMU quits: vhost_dev_stop".into(),
                Op::WriteGetVringBase(vq) => format!("write GET_VRING_BASE vq {vq}"),
                Op::AwaitReply => {
                    let t = last.thread(role);
                    let mut s = format!("takes the reply handed to it {}", hex(&t.buf.bytes()));
                    if let Some(other) = t.buf.foreign_owner(role) {
                        let _ = write!(s, " <- {}'s", other.name());
                    }
                    s
                }
                Op::ReadHeader | Op::ReadPayload | Op::AbortIfFailed(_) => format!("{op:?}"),
            }
        }
        Action::Read(role, n) => {
            let t = last.thread(role);
            let op = model.current_op(t).expect("a read has an op");
            if op == Op::AwaitReply {
                return describe_queue_read(model, last, role, n as usize);
            }
            let n = usize::from(n);
            let taken = last.to_frontend.peek(n);
            let what = if op == Op::ReadHeader { "header" } else { "payload" };
            let foreign = taken.foreign_owner(role);
            let mut all = t.buf.clone();
            all.append(taken);
            let mut s = format!("read {what} {}", hex(&all.bytes()));
            if op == Op::ReadHeader && model.bytes_wanted(t, op) == n {
                let h = all.header();
                if h.flags == wire::REPLY_FLAGS {
                    let _ = write!(s, " = {} reply", request_name(h.request));
                } else {
                    let _ = write!(s, " flags 0x{:x}", h.flags);
                }
            } else if model.bytes_wanted(t, op) > n {
                let _ = write!(s, " (short read)");
            }
            if let Some(first) = foreign {
                let _ = write!(s, " <- {}'s", first.name());
            }
            s
        }
        Action::LogReadError(role) => {
            let e = last.thread(role).pending_log.expect("a pending error");
            format!("{} logs the failed check", e.function())
        }
        Action::ServeBackendChannel => {
            let need = last.backend_channel.header().need_reply();
            format!(
                "take BQL, read BACKEND_IOTLB_MSG miss{}",
                if need { " (NEED_REPLY)" } else { "" }
            )
        }
        Action::RunPostcopyBh => "take BQL, run postcopy cleanup BH".into(),
        Action::BackendHandle => {
            let h = last.to_backend.header();
            let name = request_name(h.request);
            let from = last.to_backend.first_owner().map_or("?", ThreadRole::name);
            let split = if model.scenario.split_replies { " (header)" } else { "" };
            if h.request == Request::GetVringBase as u32 {
                format!("handle {name} from {from}, reply ring state{split}")
            } else if h.need_reply() {
                format!("handle {name} from {from}, reply ack 0{split}")
            } else {
                format!("handle {name}")
            }
        }
        Action::BackendWritePayload => {
            format!("write the reply's payload ({} bytes)", last.backend.unsent.len())
        }
        Action::BackendSendMiss => format!(
            "send BACKEND_IOTLB_MSG miss{}",
            if model.scenario.miss_need_reply { " (NEED_REPLY), wait" } else { "" }
        ),
        Action::BackendReadMissReply => "read reply to miss".into(),
    }
}

/// The steps of a path given as its actions from the initial state.
pub fn steps(model: &ReplyRace, actions: &[Action]) -> Vec<Step> {
    let mut state = model.init_states().remove(0);
    let mut out = Vec::with_capacity(actions.len());
    for &a in actions {
        let text = describe(model, &state, a);
        let next = model.next_state(&state, a).expect("actions of a path are enabled");
        let logged = log_lines(&next)[state.log.len()..].to_vec();
        out.push(Step { column: column(a), text, logged });
        state = next;
    }
    out
}

/// The final state of a path.
pub fn final_state(model: &ReplyRace, actions: &[Action]) -> State {
    let mut state = model.init_states().remove(0);
    for &a in actions {
        state = model.next_state(&state, a).expect("actions of a path are enabled");
    }
    state
}

/// A reply-queue read: `role` reads for the queue's head.
fn describe_queue_read(model: &ReplyRace, last: &State, role: ThreadRole, n: usize) -> String {
    let taken = last.to_frontend.peek(n);
    let header_done = last.reader_buf.len() >= wire::HEADER_SIZE;
    let head = last.reply_queue.first().copied();
    // Reading for another thread is the design; a byte that is not the
    // head's is a misdelivery.
    let foreign = taken.runs().iter().map(|r| r.owner).find(|&o| Some(o) != head);
    let mut all = last.reader_buf.clone();
    all.append(taken);
    let what = if header_done { "payload" } else { "header" };
    let mut s = format!("read {what} {}", hex(&all.bytes()));
    if model.queue_bytes_wanted(last) > n {
        let _ = write!(s, " (short read)");
    } else if let Some(&head) = last.reply_queue.first() {
        let whose = if head == role { "its own".to_string() } else { format!("{}'s", head.name()) };
        let _ = write!(s, ", whole: handed to the queue's head ({whose})");
    }
    if let Some(first) = foreign {
        let _ = write!(s, " <- {}'s", first.name());
    }
    s
}

/// What each unfinished thread waits for in a stuck state.
pub fn blocked_on(model: &ReplyRace, s: &State) -> Vec<String> {
    let mut out = Vec::new();
    for role in ThreadRole::ALL {
        let t = s.thread(role);
        let why = match t.routine {
            crate::Routine::Running(_) => match model.current_op(t) {
                Some(Op::AcquireBql) => format!("waits for the BQL held by {}", holder(s.bql)),
                Some(Op::AcquireMutex) => {
                    format!("waits for the request/reply mutex held by {}", holder(s.mutex))
                }
                Some(Op::AwaitReply) => match s.reader {
                    Some(r) if r != role => format!("waits for its reply; {} is reading", r.name()),
                    _ => format!(
                        "waits for its reply: wants {} more bytes, the socket has {}",
                        model.queue_bytes_wanted(s),
                        s.to_frontend.len()
                    ),
                },
                Some(op @ (Op::ReadHeader | Op::ReadPayload)) => format!(
                    "blocked in read_all: wants {} more bytes, the socket has {}",
                    model.bytes_wanted(t, op),
                    s.to_frontend.len()
                ),
                Some(op) => format!("at {op:?}"),
                None => continue,
            },
            crate::Routine::Idle => {
                let mut w = String::from("idle in the main loop");
                if s.bql.is_some() && (!s.backend_channel.is_empty() || s.bh_pending) {
                    let _ = write!(w, ", its work waits for the BQL held by {}", holder(s.bql));
                } else {
                    let _ = write!(w, ", waiting for a back-end message");
                }
                w
            }
            _ => continue,
        };
        out.push(format!("{}: {why}", role.name()));
    }
    if s.backend.awaiting_miss_reply {
        out.push("back-end: waits for the answer to its miss on the back-end channel".into());
    }
    out
}

fn holder(h: Option<ThreadRole>) -> &'static str {
    h.map_or("nobody", |r| r.name())
}

/// The `error_report` steps that are already due at the end of a path: a
/// thread whose read check failed logs next, whatever else runs first.
pub fn pending_reports(state: &State) -> Vec<Action> {
    ThreadRole::ALL
        .into_iter()
        .filter(|&r| state.thread(r).pending_log.is_some())
        .map(Action::LogReadError)
        .collect()
}

/// The diagram: one column per thread that moves, steps in order, then the log.
/// A path that ends at a failed read check is shown with the report that
/// check makes next, marked as following the path.
pub fn render(model: &ReplyRace, actions: &[Action]) -> String {
    const WIDTH: usize = 30;
    let due = pending_reports(&final_state(model, actions));
    let path_len = actions.len();
    let actions = &[actions, &due[..]].concat()[..];
    let steps = steps(model, actions);
    let mut columns: Vec<Column> = ThreadRole::ALL
        .into_iter()
        .filter(|r| model.scenario.threads(model.variant.policy).contains(r))
        .map(Column::Thread)
        .collect();
    columns.push(Column::Backend);
    let mut out = String::new();
    let _ = write!(out, "     ");
    for c in &columns {
        let _ = write!(out, "| {:<WIDTH$}", c.title());
    }
    out.push('\n');
    let _ = writeln!(out, "-----{}", format!("+{}", "-".repeat(WIDTH + 1)).repeat(columns.len()));
    for (i, step) in steps.iter().enumerate() {
        if i == path_len {
            let _ =
                writeln!(out, "     (the path ends here; what its failed read checks log next:)");
        }
        let col = columns.iter().position(|&c| c == step.column).unwrap_or(0);
        let mut lines = wrap(&step.text, WIDTH);
        for l in &step.logged {
            lines.extend(wrap(&format!("! {}", l.error), WIDTH));
        }
        for (j, line) in lines.iter().enumerate() {
            if j == 0 {
                let _ = write!(out, "{:>4} ", i + 1);
            } else {
                let _ = write!(out, "     ");
            }
            for k in 0..columns.len() {
                let cell = if k == col { line.as_str() } else { "" };
                let _ = write!(out, "| {cell:<WIDTH$}");
            }
            out.push('\n');
        }
    }
    let last = final_state(model, actions);
    if model.is_stuck(&last) && !last.all_done() {
        let _ = writeln!(out, "\nstuck: nothing can move:");
        for b in blocked_on(model, &last) {
            let _ = writeln!(out, "  {b}");
        }
    } else if last.all_done() && !last.streams_empty() {
        let _ = writeln!(
            out,
            "\nall threads done; left on the socket: {} reply bytes (the stream is out of alignment)",
            last.to_frontend.len()
        );
    }
    let log = log_lines(&last);
    if log.is_empty() {
        let _ = writeln!(out, "\nQEMU logs nothing.");
    } else {
        let _ = writeln!(out, "\nQEMU log:");
        for l in log {
            let _ = writeln!(out, "{l}");
        }
    }
    out
}

/// `text` cut at spaces into lines of at most `width` characters (a word
/// longer than `width` gets a line of its own).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut cur = String::new();
    for word in text.split(' ') {
        if !cur.is_empty() && cur.len() + 1 + word.len() > width {
            lines.push(std::mem::take(&mut cur));
        }
        if !cur.is_empty() {
            cur.push(' ');
        }
        cur.push_str(word);
    }
    lines.push(cur);
    lines
}
