//! From a QEMU error log back to the interleaving that produced it: a search
//! of the model for a path whose logged lines are the log's lines, in order,
//! under some consistent mapping of the log's thread ids to model threads.
//!
//! Models: the question an engineer asks after an incident, "which
//! interleaving of which threads, under which variant, prints exactly this?".
//! The search runs over nodes (model state, log lines matched so far,
//! thread ids bound so far): depth first on the partial-order-reduced graph
//! to decide whether any run logs the target, then, where one does,
//! breadth first on the full graph, so that an explanation is a shortest one
//! (unless that search reaches its bound: [`Found::shortest`]). A
//! node whose log has diverged from the target is not expanded, which keeps
//! the search small: only interleavings that log nothing, or log a prefix of
//! the target, are explored. The model's `log` is write-only (no transition
//! reads it), so it is cleared in every search node and two paths that reach
//! the same state with the same matching progress are searched once.
//!
//! Two kinds of match, tried in this order for each variant:
//! - *whole*: the target is the whole log of a run, from its first logged line
//!   to a final state (one where nothing can move);
//! - *fragment*: the target is a contiguous run of the model's log; lines
//!   before it are skipped (the log starts mid-run) and the run may go on
//!   after it (the log ends mid-run).
//!
//! Thread ids: a line with `pid,tid` binds the model thread that emits it to
//! that tid, and every later line of that thread must carry the same one (the
//! mapping from model thread to tid is a function). Two model threads may
//! share a tid when they run on one QEMU thread ([`may_share_tid`], from
//! [`ThreadRole::tid`]); otherwise their tids differ. All lines of one log
//! come from one process (one pid). A line without ids matches by message
//! only.
//!
//! Leaves out: messages the model never emits (EOF and short payloads at
//! shutdown, [`model_can_emit`]): [`parse_log`] sets them aside; scenario
//! knobs other than virtqueues and misses (the caller's base scenario keeps
//! them); and exactness of the seen-set: nodes are remembered by a 64-bit
//! fingerprint, as stateright does, so a collision could in principle prune
//! an explanation (at the node counts here, odds below one in a billion).

use std::collections::VecDeque;

use protocol::qemu_log::{LogLine, QemuError};
use protocol::scenario::{Scenario, ThreadRole, Variant};
use serde::{Serialize, Serializer};
use stateright::Model;

use crate::trace::{self, Column};
use crate::{Action, ReplyRace, State};

/// Whether the model has a step that logs `error` (it never logs the EOF
/// and short-payload failures, which need a closed socket).
pub fn model_can_emit(error: &QemuError) -> bool {
    !matches!(error, QemuError::ReadHeaderShort { .. } | QemuError::ReadPayloadShort { .. })
}

/// A log file read with [`LogLine::parse`], split by what `explain` does with
/// each line.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ParsedLog {
    /// The vhost-user lines the model can emit: the search target, in order.
    #[serde(rename = "vhost_user_lines")]
    pub lines: Vec<LogLine>,
    /// The 1-based line number in the file of each of `lines`.
    pub line_numbers: Vec<usize>,
    /// vhost-user lines the model cannot emit, with their line numbers; left
    /// out of the target.
    pub set_aside: Vec<(usize, LogLine)>,
    /// Lines that are no vhost-user message at all (ignored, counted).
    #[serde(rename = "unrelated_lines")]
    pub unrelated: usize,
    /// Lines that carry a vhost-user message's text but do not parse (a
    /// number too large for its field, say), with their line numbers: the
    /// first [`ParsedLog::UNPARSED_KEPT`], each cut to 200 characters.
    #[serde(rename = "unparsed_lines")]
    pub unparsed: Vec<(usize, String)>,
    /// How many such lines there were in all.
    pub unparsed_count: usize,
}

impl ParsedLog {
    /// Unparsed lines kept for showing (all are counted).
    pub const UNPARSED_KEPT: usize = 100;

    /// Adds line `number` (1-based) of a log, read with
    /// [`LogLine::parse_torn`]: threads printing at once tear lines, and
    /// every message in one counts.
    pub fn push_line(&mut self, number: usize, raw: &str) {
        let found = LogLine::parse_torn(raw);
        if found.is_empty() {
            if raw.trim().is_empty() {
            } else if LogLine::is_unparsed_message(raw) {
                self.unparsed_count += 1;
                if self.unparsed.len() < Self::UNPARSED_KEPT {
                    self.unparsed.push((number, raw.trim().chars().take(200).collect()));
                }
            } else {
                self.unrelated += 1;
            }
            return;
        }
        for line in found {
            if model_can_emit(&line.error) {
                self.lines.push(line);
                self.line_numbers.push(number);
            } else {
                self.set_aside.push((number, line));
            }
        }
    }
}

/// Reads a log's text: every line through [`ParsedLog::push_line`].
pub fn parse_log(text: &str) -> ParsedLog {
    let mut log = ParsedLog::default();
    for (i, raw) in text.lines().enumerate() {
        log.push_line(i + 1, raw);
    }
    log
}

/// How far the scenario may grow when the base scenario is too small.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Bound {
    /// Largest virtqueue count tried (IOTLB updates at device start).
    pub max_virtqueues: u8,
    /// Largest back-end miss count tried.
    pub max_misses: u8,
}

impl Default for Bound {
    /// 8 virtqueues (a multiqueue NIC's first queue pairs), 3 misses; with
    /// the reduced search every log in `examples/logs/` is answered in well
    /// under a second (the README gives the figures).
    fn default() -> Self {
        Bound { max_virtqueues: 8, max_misses: 3 }
    }
}

/// A lower bound on the IOTLB request/reply calls (device-start updates plus
/// answers to misses) a run needs to log `target`, whole or as a fragment:
/// each failed IOTLB call logs one `Fail to update device iotlb`, and each
/// failed call of any kind at most one read error before it; at most one call
/// is a POSTCOPY_END.
pub fn iotlb_calls_needed(target: &[LogLine], postcopy_end: bool) -> usize {
    let count = |f: fn(&QemuError) -> bool| target.iter().filter(|l| f(&l.error)).count();
    let reports = count(|e| *e == QemuError::IotlbUpdateFailed);
    // Each failed GET_VRING_BASE at device stop reports once and may have
    // logged one read error before: those are not IOTLB calls.
    let stops = count(|e| matches!(e, QemuError::RingRestoreFailed { .. }));
    let read_errors = count(|e| {
        !matches!(
            e,
            QemuError::IotlbUpdateFailed
                | QemuError::PostcopyEndFailed
                | QemuError::RingRestoreFailed { .. }
        )
    });
    reports.max(read_errors.saturating_sub(usize::from(postcopy_end) + stops))
}

/// Whether a log has lines only device stop prints (its report, its size
/// check, or a reply check that expected GET_VRING_BASE's code 11).
pub fn needs_device_stop(target: &[LogLine]) -> bool {
    target.iter().any(|l| match l.error {
        QemuError::RingRestoreFailed { .. } | QemuError::BadMsgSize => true,
        QemuError::UnexpectedMsgType { expected, .. } => {
            expected == protocol::wire::Request::GetVringBase as u32
        }
        _ => false,
    })
}

/// How many IOTLB calls of `scenario` can fail: every answer to a miss, and
/// every device-start update, except that with QEMU 9.2's `fail_start`
/// device start stops at its first failed update.
pub fn failing_iotlb_calls_possible(fail_start: bool, scenario: &Scenario) -> usize {
    let device_start = match (scenario.device_start, fail_start) {
        (false, _) => 0,
        (true, false) => usize::from(scenario.virtqueues),
        (true, true) => usize::from(scenario.virtqueues.min(1)),
    };
    usize::from(scenario.backend_misses) + device_start
}

/// The scenarios to search, smallest first: `base`, then `base` with more
/// virtqueues (if device start runs) and more misses, up to `bound`, keeping
/// only those with at least [`iotlb_calls_needed`] IOTLB calls, with device
/// stop at quit if the log has its lines. The bound never shrinks below `base`.
pub fn scenarios(base: Scenario, target: &[LogLine], bound: Bound) -> Vec<Scenario> {
    let base = Scenario { device_stop: base.device_stop || needs_device_stop(target), ..base };
    let needed = iotlb_calls_needed(target, base.postcopy_end);
    let vqs: Vec<u8> = if base.device_start {
        (base.virtqueues..=bound.max_virtqueues.max(base.virtqueues)).collect()
    } else {
        vec![base.virtqueues]
    };
    let mut out = Vec::new();
    for misses in base.backend_misses..=bound.max_misses.max(base.backend_misses) {
        for &virtqueues in &vqs {
            let s = Scenario { virtqueues, backend_misses: misses, ..base };
            // Without fail-start: the most calls any variant can fail.
            if failing_iotlb_calls_possible(false, &s) >= needed && s.validate().is_ok() {
                out.push(s);
            }
        }
    }
    out.sort_by_key(|s| (u16::from(s.virtqueues) + u16::from(s.backend_misses), s.backend_misses));
    out
}

/// Limits of one search.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Limits {
    /// Search nodes one (variant, scenario, kind) search may visit; past it
    /// the search stops and the answer is "undecided", never "not explainable".
    pub max_nodes: usize,
    /// Whether to decide with the partial-order-reduced search first
    /// ([`crate::reduce::Reduction::keeping_logs`]), running the full one
    /// only to find a shortest path once the reduced one has found a path.
    pub reduce: bool,
}

impl Default for Limits {
    /// Two million nodes: a few hundred MiB at most, well above what the
    /// default [`Bound`] needs (the largest qemu-9.1 fragment search visits
    /// fewer than 200,000); reduced.
    fn default() -> Self {
        Limits { max_nodes: 2_000_000, reduce: true }
    }
}

/// Whether the target must be a run's whole log or may be a piece of it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub enum MatchKind {
    /// From the run's first logged line to a final state.
    Whole,
    /// A contiguous run of the model's log.
    Fragment,
}

/// One search of one scenario.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SearchRecord {
    /// The scenario searched.
    pub scenario: Scenario,
    /// Whole or fragment.
    pub kind: MatchKind,
    /// Search nodes visited.
    pub nodes: usize,
    /// Whether every node was expanded (false: stopped at [`Limits::max_nodes`]).
    pub complete: bool,
    /// Whether it found an explanation.
    pub found: bool,
    /// Whether counting alone ruled it out (fewer IOTLB calls can fail under
    /// the variant than the log reports), so no node was visited.
    pub ruled_out_by_count: bool,
}

/// A line of the target and the model step that emits it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct MatchedLine {
    /// The log's line (in JSON, as QEMU printed it).
    #[serde(serialize_with = "as_display")]
    pub line: LogLine,
    /// The step (1-based, as numbered by [`trace::render`]) that logs it.
    pub step: usize,
    /// The model thread that logs it (in JSON, `thread`, by its name).
    #[serde(rename = "thread", serialize_with = "role_name")]
    pub role: ThreadRole,
}

/// An interleaving that produces the target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Found {
    /// The scenario it runs in.
    pub scenario: Scenario,
    /// Whole run or fragment.
    pub kind: MatchKind,
    /// Lines the model logs before the target's first (fragment only).
    pub lines_before: usize,
    /// Whether the run has ended (nothing can move) where the path ends.
    pub run_ended: bool,
    /// The path from the initial state (replay with [`trace::render`]).
    pub actions: Vec<Action>,
    /// Whether `actions` is a shortest such path (false when the
    /// breadth-first search for one stopped at the bound and the depth-first
    /// search's path is shown instead).
    pub shortest: bool,
    /// Each target line with the step that emits it.
    pub matched: Vec<MatchedLine>,
    /// The thread id each model thread's lines carry in the log (threads
    /// whose lines carry none, or that log nothing, are left out). In JSON,
    /// `{"thread": name, "tid": tid}` objects.
    #[serde(serialize_with = "tids_by_thread")]
    pub tids: Vec<(ThreadRole, u32)>,
}

/// Serializes a value as its `Display` text (a variant as on the command
/// line, a log line as QEMU printed it).
fn as_display<T: std::fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// Serializes a thread by its name ("device start").
fn role_name<S: Serializer>(role: &ThreadRole, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(role.name())
}

/// Serializes [`Found::tids`] as `{"thread": name, "tid": tid}` objects.
fn tids_by_thread<S: Serializer>(tids: &[(ThreadRole, u32)], s: S) -> Result<S::Ok, S::Error> {
    #[derive(Serialize)]
    struct ThreadTid {
        thread: &'static str,
        tid: u32,
    }
    s.collect_seq(tids.iter().map(|&(r, tid)| ThreadTid { thread: r.name(), tid }))
}

/// The answer for one variant.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The variant searched (in JSON, spelled as on the command line).
    #[serde(serialize_with = "as_display")]
    pub variant: Variant,
    /// The first explanation found (whole runs first, smallest scenario first).
    pub found: Option<Found>,
    /// Every search made, in order.
    pub searches: Vec<SearchRecord>,
}

impl Explanation {
    /// Whether an interleaving produces the log.
    pub fn explained(&self) -> bool {
        self.found.is_some()
    }

    /// Whether the answer is final: explained, or every search ran to the end
    /// (so "not explainable" is a proof within the scenarios searched).
    pub fn decided(&self) -> bool {
        self.found.is_some() || self.searches.iter().all(|s| s.complete)
    }

    /// Search nodes visited over all searches.
    pub fn nodes(&self) -> usize {
        self.searches.iter().map(|s| s.nodes).sum()
    }
}

/// Searches `variant` for an interleaving that logs `target`: a whole run in
/// each of `scenarios` in turn, then a fragment in each. Returns at the first
/// explanation.
pub fn explain(
    target: &[LogLine],
    variant: Variant,
    scenarios: &[Scenario],
    limits: Limits,
) -> Explanation {
    explain_view(target, variant, scenarios, limits, None)
}

/// [`explain`] from one thread's point of view: with `view` set, the target
/// holds only that thread's lines (as QEMU prints when the other threads do
/// not run, e.g. device start alone in a replay), and the model's lines of
/// other threads are left out of the comparison.
pub fn explain_view(
    target: &[LogLine],
    variant: Variant,
    scenarios: &[Scenario],
    limits: Limits,
    view: Option<ThreadRole>,
) -> Explanation {
    let mut searches = Vec::new();
    for kind in [MatchKind::Whole, MatchKind::Fragment] {
        for &scenario in scenarios {
            let needed = iotlb_calls_needed(target, scenario.postcopy_end);
            if failing_iotlb_calls_possible(variant.fail_start, &scenario) < needed {
                searches.push(SearchRecord {
                    scenario,
                    kind,
                    nodes: 0,
                    complete: true,
                    found: false,
                    ruled_out_by_count: true,
                });
                continue;
            }
            let model = ReplyRace::new(variant, scenario);
            // Whether some run logs the target: the reduced depth-first
            // search answers as the full one would, from fewer nodes and
            // keeping no whole states but its path; when it finds one, the
            // full breadth-first search finds a shortest one.
            let result = if limits.reduce {
                search_depth_first(&model, target, kind, limits.max_nodes, view)
            } else {
                search(&model, target, kind, limits.max_nodes, view)
            };
            let mut nodes = result.nodes;
            let path = result.path.map(|path| {
                if !limits.reduce {
                    return (path, true);
                }
                let full = search(&model, target, kind, limits.max_nodes / BFS_NODE_COST, view);
                nodes += full.nodes;
                match full.path {
                    Some(shortest) => (shortest, true),
                    None => (path, false),
                }
            });
            searches.push(SearchRecord {
                scenario,
                kind,
                nodes,
                complete: result.complete,
                found: path.is_some(),
                ruled_out_by_count: false,
            });
            if let Some(actions) = path {
                let found = Some(found(&model, target, kind, actions, view));
                return Explanation { variant, found, searches };
            }
        }
    }
    Explanation { variant, found: None, searches }
}

/// The thread ids bound so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
struct Ids {
    pid: Option<u32>,
    tids: [Option<u32>; 3],
}

/// Whether two model threads may log with the same tid: those that run on
/// one QEMU thread, as [`ThreadRole::tid`] assigns them.
pub fn may_share_tid(a: ThreadRole, b: ThreadRole) -> bool {
    a.tid() == b.tid()
}

impl Ids {
    /// The ids after `role` logs `line`, if consistent with those bound.
    fn bind(self, role: ThreadRole, line: &LogLine) -> Option<Ids> {
        let Some((pid, tid)) = line.ids else { return Some(self) };
        let mut next = self;
        if next.pid.is_some_and(|p| p != pid) {
            return None;
        }
        next.pid = Some(pid);
        match next.tids[role as usize] {
            Some(bound) => (bound == tid).then_some(next),
            None => {
                let clash = ThreadRole::ALL.into_iter().any(|other| {
                    !may_share_tid(role, other) && next.tids[other as usize] == Some(tid)
                });
                if clash {
                    return None;
                }
                next.tids[role as usize] = Some(tid);
                Some(next)
            }
        }
    }
}

/// The matching progress after the model logs `logged`, from `(k, ids)`:
/// none if the log diverged, two if a fragment search may either skip the
/// line or start matching at it.
fn advance(
    target: &[LogLine],
    kind: MatchKind,
    from: (usize, Ids),
    logged: &[(ThreadRole, QemuError)],
    view: Option<ThreadRole>,
) -> Vec<(usize, Ids)> {
    let mut progress = vec![from];
    for &(role, error) in logged {
        if view.is_some_and(|v| v != role) {
            continue; // another thread's line: not in a one-thread log
        }
        let mut next = Vec::with_capacity(2);
        for (k, ids) in progress {
            if kind == MatchKind::Fragment && k == 0 {
                next.push((0, ids)); // not started yet: skip this line
            }
            if k == target.len() {
                if kind == MatchKind::Fragment {
                    next.push((k, ids)); // the run goes on after the log ends
                }
                continue;
            }
            let line = &target[k];
            if line.error == error {
                if let Some(ids) = ids.bind(role, line) {
                    next.push((k + 1, ids));
                }
            }
        }
        next.dedup();
        progress = next;
    }
    progress
}

/// A node's fingerprint, keyed as the checker's ([`crate::search`]).
fn fingerprint(state: &State, k: usize, ids: &Ids) -> u64 {
    crate::stream::HASH_KEYS.hash_one((state, k, ids))
}

/// What one search returns.
struct SearchResult {
    path: Option<Vec<Action>>,
    nodes: usize,
    complete: bool,
}

/// How many depth-first nodes one breadth-first node costs in memory, about:
/// a breadth-first node waits in the queue as a whole state (some 400
/// bytes), a depth-first one is a 64-bit fingerprint in the visited set. The
/// breadth-first search stops at the bound divided by this, so that both
/// stay under the bound's memory.
const BFS_NODE_COST: usize = 20;

/// Breadth-first search of `model` (every interleaving) for a shortest path
/// logging `target` as `kind`.
fn search(
    model: &ReplyRace,
    target: &[LogLine],
    kind: MatchKind,
    max_nodes: usize,
    view: Option<ThreadRole>,
) -> SearchResult {
    let n = target.len();
    // Parent index and the action from it, per node.
    let mut nodes: Vec<(usize, Option<Action>)> = Vec::new();
    let mut seen = crate::search::FingerprintSet::default();
    let mut queue: VecDeque<(usize, State, usize, Ids)> = VecDeque::new();
    let path_to = |nodes: &[(usize, Option<Action>)], mut i: usize| {
        let mut path = Vec::new();
        while let (parent, Some(a)) = nodes[i] {
            path.push(a);
            i = parent;
        }
        path.reverse();
        path
    };
    for mut s in model.init_states() {
        s.log.clear();
        if kind == MatchKind::Fragment && n == 0 {
            return SearchResult { path: Some(Vec::new()), nodes: 1, complete: true };
        }
        if seen.insert(fingerprint(&s, 0, &Ids::default())) {
            nodes.push((usize::MAX, None));
            queue.push_back((nodes.len() - 1, s, 0, Ids::default()));
        }
    }
    let mut complete = true;
    let mut actions = Vec::new();
    while let Some((i, state, k, ids)) = queue.pop_front() {
        actions.clear();
        model.actions(&state, &mut actions);
        if actions.is_empty() && kind == MatchKind::Whole && k == n {
            return SearchResult { path: Some(path_to(&nodes, i)), nodes: nodes.len(), complete };
        }
        for &a in &actions {
            let Some(mut next) = model.next_state(&state, a) else { continue };
            let logged = std::mem::take(&mut next.log);
            for (k2, ids2) in advance(target, kind, (k, ids), &logged, view) {
                if kind == MatchKind::Fragment && k2 == n {
                    nodes.push((i, Some(a)));
                    let path = path_to(&nodes, nodes.len() - 1);
                    return SearchResult { path: Some(path), nodes: nodes.len(), complete };
                }
                if !seen.insert(fingerprint(&next, k2, &ids2)) {
                    continue;
                }
                if nodes.len() >= max_nodes {
                    complete = false;
                    continue;
                }
                nodes.push((i, Some(a)));
                queue.push_back((nodes.len() - 1, next.clone(), k2, ids2));
            }
        }
    }
    SearchResult { path: None, nodes: nodes.len(), complete }
}

/// A search node's successors: (move, state with its log cleared, lines
/// matched, ids bound), or the path's end if the target is matched.
enum Expanded {
    Successors(Vec<Option<(Action, State, usize, Ids)>>),
    /// Matched: the moves to append to the path (none for a whole run
    /// matched in a final state, the matching move for a fragment).
    Matched(Vec<Action>),
}

/// Depth-first search of the partial-order-reduced graph
/// ([`crate::reduce::Reduction::keeping_logs`]) for a path logging `target`
/// as `kind`: the same answer as [`search`], keeping only fingerprints and
/// the current path's nodes; the path found is not a shortest one.
fn search_depth_first(
    model: &ReplyRace,
    target: &[LogLine],
    kind: MatchKind,
    max_nodes: usize,
    view: Option<ThreadRole>,
) -> SearchResult {
    let n = target.len();
    let reduction = crate::reduce::Reduction::keeping_logs(model);
    let mut actions = Vec::new();
    let mut expand = |state: &State, k: usize, ids: Ids| -> Expanded {
        actions.clear();
        model.actions(state, &mut actions);
        if actions.is_empty() && kind == MatchKind::Whole && k == n {
            return Expanded::Matched(Vec::new());
        }
        reduction.ample(state, &mut actions);
        let mut succ = Vec::new();
        for &a in &actions {
            let Some(mut next) = model.next_state(state, a) else { continue };
            let logged = std::mem::take(&mut next.log);
            for (k2, ids2) in advance(target, kind, (k, ids), &logged, view) {
                if kind == MatchKind::Fragment && k2 == n {
                    return Expanded::Matched(vec![a]);
                }
                succ.push(Some((a, next.clone(), k2, ids2)));
            }
        }
        Expanded::Successors(succ)
    };
    let mut seen = crate::search::FingerprintSet::default();
    let mut nodes = 0usize;
    let mut complete = true;
    for mut s in model.init_states() {
        s.log.clear();
        if kind == MatchKind::Fragment && n == 0 {
            return SearchResult { path: Some(Vec::new()), nodes: 1, complete: true };
        }
        if !seen.insert(fingerprint(&s, 0, &Ids::default())) {
            continue;
        }
        nodes += 1;
        // Each frame: a node's successors still to try; the path holds the
        // move into each frame but the first.
        let mut stack = match expand(&s, 0, Ids::default()) {
            Expanded::Matched(tail) => return SearchResult { path: Some(tail), nodes, complete },
            Expanded::Successors(succ) => vec![(succ, 0usize)],
        };
        let mut path: Vec<Action> = Vec::new();
        while let Some((succ, next)) = stack.last_mut() {
            let Some(slot) = succ.get_mut(*next) else {
                stack.pop();
                path.pop();
                continue;
            };
            *next += 1;
            let (a, state, k, ids) = slot.take().expect("each successor is tried once");
            if !seen.insert(fingerprint(&state, k, &ids)) {
                continue;
            }
            if nodes >= max_nodes {
                complete = false;
                continue;
            }
            nodes += 1;
            path.push(a);
            match expand(&state, k, ids) {
                Expanded::Matched(tail) => {
                    path.extend(tail);
                    return SearchResult { path: Some(path), nodes, complete };
                }
                Expanded::Successors(succ) => stack.push((succ, 0)),
            }
        }
    }
    SearchResult { path: None, nodes, complete }
}

/// Replays a found path and lines the target up with the steps that log it.
fn found(
    model: &ReplyRace,
    target: &[LogLine],
    kind: MatchKind,
    (actions, shortest): (Vec<Action>, bool),
    view: Option<ThreadRole>,
) -> Found {
    let steps = trace::steps(model, &actions);
    let emitted: Vec<(usize, ThreadRole)> = steps
        .iter()
        .enumerate()
        .flat_map(|(i, step)| {
            let role = match step.column {
                Column::Thread(role) => Some(role),
                Column::Backend => None, // the back-end logs nothing
            };
            step.logged.iter().filter_map(move |_| role.map(|r| (i + 1, r)))
        })
        .filter(|&(_, r)| view.is_none_or(|v| v == r))
        .collect();
    // The path ends where the last target line is matched (fragment) or at a
    // final state with nothing more logged (whole), so the target is the tail.
    let lines_before = emitted.len() - target.len();
    let matched: Vec<MatchedLine> = target
        .iter()
        .zip(&emitted[lines_before..])
        .map(|(&line, &(step, role))| MatchedLine { line, step, role })
        .collect();
    let mut tids: Vec<(ThreadRole, u32)> = Vec::new();
    for m in &matched {
        if let Some((_, tid)) = m.line.ids {
            if !tids.iter().any(|(r, _)| *r == m.role) {
                tids.push((m.role, tid));
            }
        }
    }
    tids.sort();
    let end = trace::final_state(model, &actions);
    Found {
        scenario: model.scenario,
        kind,
        lines_before,
        run_ended: model.is_stuck(&end),
        actions,
        shortest,
        matched,
        tids,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::scenario::LockPolicy;
    use ThreadRole::*;

    fn line(tid: Option<u32>, error: QemuError) -> LogLine {
        LogLine { ids: tid.map(|t| (4100, t)), error }
    }

    #[test]
    fn the_listen_thread_has_a_tid_of_its_own() {
        let ids = Ids::default();
        let a = ids.bind(DeviceStart, &line(Some(1), QemuError::IotlbUpdateFailed)).unwrap();
        // The main loop may share device start's tid ...
        assert!(a.bind(MainLoop, &line(Some(1), QemuError::IotlbUpdateFailed)).is_some());
        // ... the listen thread may not ...
        assert!(a.bind(PostcopyListen, &line(Some(1), QemuError::PostcopyEndFailed)).is_none());
        // ... and a bound thread keeps its tid.
        assert!(a.bind(DeviceStart, &line(Some(2), QemuError::IotlbUpdateFailed)).is_none());
        // Lines without ids bind nothing.
        assert_eq!(a.bind(PostcopyListen, &line(None, QemuError::PostcopyEndFailed)), Some(a));
        // One process: another pid is another QEMU.
        let other_pid = LogLine { ids: Some((9, 1)), error: QemuError::IotlbUpdateFailed };
        assert!(a.bind(DeviceStart, &other_pid).is_none());
    }

    #[test]
    fn fragments_may_skip_before_and_continue_after() {
        let target = [line(None, QemuError::PostcopyEndFailed)];
        let iotlb = [(DeviceStart, QemuError::IotlbUpdateFailed)];
        let end = [(PostcopyListen, QemuError::PostcopyEndFailed)];
        let start = (0, Ids::default());
        assert_eq!(advance(&target, MatchKind::Whole, start, &iotlb, None), vec![]);
        assert_eq!(advance(&target, MatchKind::Fragment, start, &iotlb, None), vec![start]);
        let both = advance(&target, MatchKind::Fragment, start, &end, None);
        assert_eq!(both.iter().map(|p| p.0).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(advance(&target, MatchKind::Whole, (1, Ids::default()), &iotlb, None), vec![]);
        assert_eq!(
            advance(&target, MatchKind::Fragment, (1, Ids::default()), &iotlb, None).len(),
            1
        );
    }

    #[test]
    fn scenarios_grow_from_the_base_past_the_lower_bound() {
        let fails = vec![line(None, QemuError::IotlbUpdateFailed); 4];
        assert_eq!(iotlb_calls_needed(&fails, true), 4);
        let bound = Bound { max_virtqueues: 4, max_misses: 3 };
        let got: Vec<(u8, u8)> = scenarios(Scenario::default(), &fails, bound)
            .iter()
            .map(|s| (s.virtqueues, s.backend_misses))
            .collect();
        assert_eq!(got, [(3, 1), (2, 2), (4, 1), (3, 2), (2, 3), (4, 2), (3, 3), (4, 3)]);
        assert!(scenarios(Scenario::default(), &fails, Bound { max_virtqueues: 2, max_misses: 1 })
            .is_empty());
    }

    #[test]
    fn fail_start_lets_device_start_fail_once() {
        let s = Scenario { virtqueues: 4, backend_misses: 2, ..Scenario::default() };
        assert_eq!(failing_iotlb_calls_possible(false, &s), 6);
        assert_eq!(failing_iotlb_calls_possible(true, &s), 3);
        let no_start = Scenario { device_start: false, ..s };
        assert_eq!(failing_iotlb_calls_possible(true, &no_start), 2);
    }

    #[test]
    fn a_silent_run_explains_an_empty_log_and_nothing_explains_two_postcopy_ends() {
        let s = Scenario { backend_misses: 0, virtqueues: 1, ..Scenario::default() };
        let v = Variant::new(LockPolicy::Qemu91);
        let e = explain(&[], v, &[s], Limits::default());
        assert_eq!(e.found.as_ref().map(|f| f.kind), Some(MatchKind::Whole));
        let two =
            [line(None, QemuError::PostcopyEndFailed), line(None, QemuError::PostcopyEndFailed)];
        let e = explain(&two, v, &[s], Limits::default());
        assert!(!e.explained() && e.decided());
        assert_eq!(e.searches.len(), 2);
    }

    #[test]
    fn a_search_stopped_by_the_node_limit_is_undecided() {
        let two =
            [line(None, QemuError::PostcopyEndFailed), line(None, QemuError::PostcopyEndFailed)];
        let e = explain(
            &two,
            Variant::new(LockPolicy::Qemu91),
            &[Scenario::default()],
            Limits { max_nodes: 10, ..Limits::default() },
        );
        assert!(!e.explained());
        assert!(!e.decided());
    }
}
