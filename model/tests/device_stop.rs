//! Device stop at quit (`--device-stop`): GET_VRING_BASE per virtqueue once
//! the other threads are done, its reply checks and QEMU's
//! `vhost VQ %d ring restore failed` report; and the two logs QEMU 7.2
//! printed on the destination of a real postcopy migration
//! (`vhost-race qemu-migrate --hold-iotlb-reply`), each explained whole.

use model::explain::{self, explain, parse_log, Bound, Limits, MatchKind};
use model::trace::steps;
use model::verdict::{check, CheckOptions};
use model::{Action, ReplyRace};
use reference::qemu_log::QemuError;
use reference::scenario::{Scenario, ThreadRole, Variant};
use stateright::{Checker, Model};

const MISFRAMED: &str = include_str!("../../examples/logs/qemu-7.2-postcopy-misframed.log");
const SWAP: &str = include_str!("../../examples/logs/qemu-7.2-postcopy-swap.log");

fn variant(name: &str) -> Variant {
    name.parse().unwrap()
}

/// The QEMUs of `qemu-migrate`: two virtqueues, postcopy end, no back-end
/// miss, device stop at quit.
fn migrate_scenario() -> Scenario {
    Scenario { backend_misses: 0, device_stop: true, ..Scenario::default() }
}

fn opts() -> CheckOptions {
    CheckOptions { max_states: None, reduce: false, ..CheckOptions::default() }
}

/// Breadth-first and depth-first searches agree on the count, so the pin is
/// the size of the reachable space, not an artefact of one search order.
#[test]
fn device_stop_adds_states_and_the_verdicts_stay() {
    for (name, unique, all_hold) in [("qemu-9.1", 2462, false), ("mutex", 85, true)] {
        let v = check(variant(name), migrate_scenario(), &opts());
        assert!(v.complete);
        assert_eq!(v.unique_states, unique, "{name}");
        assert_eq!(v.all_hold(), all_hold, "{name}");
        let dfs = ReplyRace::new(variant(name), migrate_scenario()).checker().spawn_dfs().join();
        assert_eq!(dfs.unique_state_count(), unique, "{name}: BFS and DFS agree");
        let without =
            check(variant(name), Scenario { device_stop: false, ..migrate_scenario() }, &opts());
        assert!(without.unique_states < unique, "{name}: device stop adds states");
    }
}

/// With the mutex, device stop reads its own ring states: every run ends
/// with both GET_VRING_BASE replies read and nothing logged.
#[test]
fn with_the_mutex_device_stop_reads_its_own_ring_states() {
    let model = ReplyRace::new(variant("mutex"), migrate_scenario());
    let mut s = model.init_states().remove(0);
    let mut path: Vec<Action> = Vec::new();
    // Any run: always the first enabled action.
    loop {
        let mut a = Vec::new();
        model.actions(&s, &mut a);
        let Some(&first) = a.first() else { break };
        s = model.next_state(&s, first).unwrap();
        path.push(first);
    }
    assert!(s.all_done() && s.streams_empty() && s.log.is_empty());
    let texts: Vec<String> = steps(&model, &path).into_iter().map(|st| st.text).collect();
    for vq in 0..2 {
        assert!(texts.iter().any(|t| *t == format!("write GET_VRING_BASE vq {vq}")), "{texts:?}");
    }
    assert!(texts.iter().any(|t| t.starts_with("read header [b 5 8]")), "{texts:?}");
}

/// QEMU's misframed race after a real postcopy migration: the listen thread
/// reads `[0 0 1e]`, device start a non-zero "ack" and then `[0 0 16]`, and
/// device stop at quit `[5 8 0]` and `[0 b 5]`. Explained whole by qemu-9.1
/// in the scenario QEMU ran, ruled out for the mutex.
#[test]
fn the_misframed_postcopy_log_qemu_printed_is_a_whole_qemu_9_1_run() {
    let log = parse_log(MISFRAMED);
    assert_eq!((log.lines.len(), log.unrelated), (9, 1), "the RARP line is unrelated");
    assert!(explain::needs_device_stop(&log.lines));
    let bound = Bound { max_misses: 0, ..Bound::default() };
    let scenarios = explain::scenarios(migrate_scenario(), &log.lines, bound);
    assert!(scenarios.iter().all(|s| s.device_stop));
    let e = explain(&log.lines, variant("qemu-9.1"), &scenarios, Limits::default());
    let f = e.found.expect("explained");
    assert_eq!((f.kind, f.scenario), (MatchKind::Whole, migrate_scenario()));
    use ThreadRole::*;
    let roles: Vec<ThreadRole> = f.matched.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            PostcopyListen,
            PostcopyListen,
            DeviceStart,
            DeviceStart,
            DeviceStart,
            DeviceStart,
            DeviceStart,
            DeviceStart,
            DeviceStart
        ]
    );
    assert_eq!(f.matched[8].line.error, QemuError::RingRestoreFailed { vq: 1 });
    let mutex = explain(&log.lines, variant("mutex"), &scenarios, Limits::default());
    assert!(!mutex.explained() && mutex.decided());
}

#[test]
fn the_swap_postcopy_log_qemu_printed_is_a_whole_qemu_9_1_run() {
    let log = parse_log(SWAP);
    assert_eq!(log.lines.len(), 4);
    let bound = Bound { max_misses: 0, ..Bound::default() };
    let scenarios = explain::scenarios(migrate_scenario(), &log.lines, bound);
    let e = explain(&log.lines, variant("qemu-9.1"), &scenarios, Limits::default());
    assert_eq!(e.found.map(|f| f.kind), Some(MatchKind::Whole));
    for v in ["mutex", "bql-listen", "qemu-10.2"] {
        let r = explain(&log.lines, variant(v), &scenarios, Limits::default());
        assert!(!r.explained() && r.decided(), "{v}");
    }
}
