//! Pins the model's findings: every variant's verdict row (with its exact
//! unique-state count and depth) on the default scenario and on the scenarios
//! that change the answer, and every counterexample of the default matrix,
//! replayed with stateright's `assert_discovery`. A change in the model shows
//! up here first.

use model::verdict::{check, shortest_counterexamples, CheckOptions, Verdict};
use model::Action::{self, *};
use model::{BackendState, Program, Prop, ReplyRace, Routine, State, Stream, ThreadState};
use reference::scenario::{flag, Scenario, ThreadRole::*, Variant};
use reference::wire::{self, Header, Request};
use stateright::{Checker, HasDiscoveries, Model};
use std::collections::BTreeSet;

/// The full search's verdict (every interleaving): the state counts pinned here.
fn verdict(variant: &str, scenario: Scenario) -> Verdict {
    let opts = CheckOptions { reduce: false, ..CheckOptions::default() };
    check(variant.parse().unwrap(), scenario, &opts)
}

/// One pinned verdict row: the scenario (as the checker's flags), the
/// variant, the properties that fail (by their matrix column title; every
/// other property holds), and the exact unique-state count and depth of the
/// complete depth-first search of every interleaving.
struct Row {
    flags: &'static str,
    variant: &'static str,
    fails: &'static [&'static str],
    states: usize,
    /// Unique states of the partial-order-reduced search ([`model::reduce`]).
    reduced: usize,
    depth: usize,
}

/// Every pinned row, as `cargo run --release -- <flags>` prints it.
#[rustfmt::skip]
const ROWS: &[Row] = &[
    Row { flags: "", variant: "qemu-9.1", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 7_157, reduced: 657, depth: 30 },
    Row { flags: "", variant: "qemu-9.1+fail-start", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 3_353, reduced: 442, depth: 29 },
    Row { flags: "", variant: "mutex", fails: &[], states: 288, reduced: 136, depth: 32 },
    Row { flags: "", variant: "mutex+fail-start", fails: &[], states: 288, reduced: 136, depth: 32 },
    Row { flags: "", variant: "bql-listen", fails: &[], states: 126, reduced: 93, depth: 26 },
    Row { flags: "", variant: "bql-listen+fail-start", fails: &[], states: 126, reduced: 93, depth: 26 },
    Row { flags: "", variant: "bql-postcopy-end", fails: &[], states: 165, reduced: 90, depth: 26 },
    Row { flags: "", variant: "bql-postcopy-end+fail-start", fails: &[], states: 165, reduced: 90, depth: 26 },
    Row { flags: "", variant: "qemu-10.2", fails: &[], states: 221, reduced: 102, depth: 27 },
    Row { flags: "", variant: "qemu-10.2+fail-start", fails: &[], states: 221, reduced: 102, depth: 27 },
    Row { flags: "", variant: "reply-queue", fails: &[], states: 827, reduced: 321, depth: 25 },
    Row { flags: "", variant: "reply-queue+fail-start", fails: &[], states: 827, reduced: 321, depth: 25 },
    Row { flags: "--miss-need-reply", variant: "qemu-9.1", fails: &["reply", "framing", "no log", "start ok", "deadlock", "finishes", "channel"], states: 3_583, reduced: 555, depth: 31 },
    Row { flags: "--miss-need-reply", variant: "qemu-9.1+fail-start", fails: &["reply", "framing", "no log", "start ok", "deadlock", "finishes", "channel"], states: 1_235, reduced: 375, depth: 29 },
    Row { flags: "--miss-need-reply", variant: "mutex", fails: &["deadlock", "finishes"], states: 168, reduced: 122, depth: 26 },
    Row { flags: "--miss-need-reply", variant: "mutex+fail-start", fails: &["deadlock", "finishes"], states: 168, reduced: 122, depth: 26 },
    Row { flags: "--miss-need-reply", variant: "bql-listen", fails: &["deadlock", "finishes"], states: 76, reduced: 76, depth: 21 },
    Row { flags: "--miss-need-reply", variant: "bql-listen+fail-start", fails: &["deadlock", "finishes"], states: 76, reduced: 76, depth: 21 },
    Row { flags: "--miss-need-reply", variant: "bql-postcopy-end", fails: &["deadlock", "finishes"], states: 98, reduced: 73, depth: 21 },
    Row { flags: "--miss-need-reply", variant: "bql-postcopy-end+fail-start", fails: &["deadlock", "finishes"], states: 98, reduced: 73, depth: 21 },
    Row { flags: "--miss-need-reply", variant: "qemu-10.2", fails: &["deadlock", "finishes"], states: 124, reduced: 71, depth: 22 },
    Row { flags: "--miss-need-reply", variant: "qemu-10.2+fail-start", fails: &["deadlock", "finishes"], states: 124, reduced: 71, depth: 22 },
    Row { flags: "--miss-need-reply", variant: "reply-queue", fails: &[], states: 993, reduced: 540, depth: 26 },
    Row { flags: "--miss-need-reply", variant: "reply-queue+fail-start", fails: &[], states: 993, reduced: 540, depth: 26 },
    Row { flags: "--device-start-without-bql", variant: "qemu-9.1", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 434_755, reduced: 1_798, depth: 28 },
    Row { flags: "--device-start-without-bql", variant: "qemu-9.1+fail-start", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 66_747, reduced: 1_396, depth: 27 },
    Row { flags: "--device-start-without-bql", variant: "mutex", fails: &[], states: 369, reduced: 133, depth: 30 },
    Row { flags: "--device-start-without-bql", variant: "mutex+fail-start", fails: &[], states: 369, reduced: 133, depth: 30 },
    Row { flags: "--device-start-without-bql", variant: "bql-listen", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 18_770, reduced: 879, depth: 30 },
    Row { flags: "--device-start-without-bql", variant: "bql-listen+fail-start", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 3_867, reduced: 605, depth: 29 },
    Row { flags: "--device-start-without-bql", variant: "bql-postcopy-end", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 19_221, reduced: 854, depth: 30 },
    Row { flags: "--device-start-without-bql", variant: "bql-postcopy-end+fail-start", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 4_139, reduced: 583, depth: 29 },
    Row { flags: "--device-start-without-bql", variant: "qemu-10.2", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 19_763, reduced: 824, depth: 31 },
    Row { flags: "--device-start-without-bql", variant: "qemu-10.2+fail-start", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 4_486, reduced: 570, depth: 30 },
    Row { flags: "--device-start-without-bql", variant: "reply-queue", fails: &[], states: 882, reduced: 288, depth: 23 },
    Row { flags: "--device-start-without-bql", variant: "reply-queue+fail-start", fails: &[], states: 882, reduced: 288, depth: 23 },
    Row { flags: "--short-reads", variant: "qemu-9.1", fails: &["reply", "framing", "no log", "start ok", "deadlock", "finishes", "channel"], states: 170_988, reduced: 16_643, depth: 38 },
    Row { flags: "--short-reads", variant: "qemu-9.1+fail-start", fails: &["reply", "framing", "no log", "start ok", "deadlock", "finishes", "channel"], states: 50_950, reduced: 6_366, depth: 34 },
    Row { flags: "--short-reads", variant: "mutex", fails: &[], states: 423, reduced: 196, depth: 32 },
    Row { flags: "--short-reads", variant: "mutex+fail-start", fails: &[], states: 423, reduced: 196, depth: 32 },
    Row { flags: "--short-reads", variant: "bql-listen", fails: &[], states: 192, reduced: 141, depth: 26 },
    Row { flags: "--short-reads", variant: "bql-listen+fail-start", fails: &[], states: 192, reduced: 141, depth: 26 },
    Row { flags: "--short-reads", variant: "bql-postcopy-end", fails: &[], states: 255, reduced: 138, depth: 26 },
    Row { flags: "--short-reads", variant: "bql-postcopy-end+fail-start", fails: &[], states: 255, reduced: 138, depth: 26 },
    Row { flags: "--short-reads", variant: "qemu-10.2", fails: &[], states: 341, reduced: 156, depth: 27 },
    Row { flags: "--short-reads", variant: "qemu-10.2+fail-start", fails: &[], states: 341, reduced: 156, depth: 27 },
    Row { flags: "--short-reads", variant: "reply-queue", fails: &[], states: 1_643, reduced: 871, depth: 25 },
    Row { flags: "--short-reads", variant: "reply-queue+fail-start", fails: &[], states: 1_643, reduced: 871, depth: 25 },
    Row { flags: "--queued-reads", variant: "qemu-9.1", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 8_345, reduced: 1_203, depth: 30 },
    Row { flags: "--queued-reads", variant: "qemu-9.1+fail-start", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 3_869, reduced: 750, depth: 29 },
    Row { flags: "--queued-reads", variant: "mutex", fails: &[], states: 288, reduced: 136, depth: 32 },
    Row { flags: "--queued-reads", variant: "mutex+fail-start", fails: &[], states: 288, reduced: 136, depth: 32 },
    Row { flags: "--queued-reads", variant: "bql-listen", fails: &[], states: 126, reduced: 93, depth: 26 },
    Row { flags: "--queued-reads", variant: "bql-listen+fail-start", fails: &[], states: 126, reduced: 93, depth: 26 },
    Row { flags: "--queued-reads", variant: "bql-postcopy-end", fails: &[], states: 165, reduced: 90, depth: 26 },
    Row { flags: "--queued-reads", variant: "bql-postcopy-end+fail-start", fails: &[], states: 165, reduced: 90, depth: 26 },
    Row { flags: "--queued-reads", variant: "qemu-10.2", fails: &[], states: 221, reduced: 102, depth: 27 },
    Row { flags: "--queued-reads", variant: "qemu-10.2+fail-start", fails: &[], states: 221, reduced: 102, depth: 27 },
    Row { flags: "--queued-reads", variant: "reply-queue", fails: &[], states: 827, reduced: 403, depth: 25 },
    Row { flags: "--queued-reads", variant: "reply-queue+fail-start", fails: &[], states: 827, reduced: 403, depth: 25 },
    Row { flags: "--split-replies --queued-reads", variant: "qemu-9.1", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 15_625, reduced: 2_217, depth: 34 },
    Row { flags: "--split-replies --queued-reads", variant: "qemu-9.1+fail-start", fails: &["reply", "framing", "no log", "start ok", "channel"], states: 7_134, reduced: 1_334, depth: 33 },
    Row { flags: "--split-replies --queued-reads", variant: "mutex", fails: &[], states: 378, reduced: 172, depth: 36 },
    Row { flags: "--split-replies --queued-reads", variant: "mutex+fail-start", fails: &[], states: 378, reduced: 172, depth: 36 },
    Row { flags: "--split-replies --queued-reads", variant: "bql-listen", fails: &[], states: 170, reduced: 121, depth: 30 },
    Row { flags: "--split-replies --queued-reads", variant: "bql-listen+fail-start", fails: &[], states: 170, reduced: 121, depth: 30 },
    Row { flags: "--split-replies --queued-reads", variant: "bql-postcopy-end", fails: &[], states: 225, reduced: 118, depth: 30 },
    Row { flags: "--split-replies --queued-reads", variant: "bql-postcopy-end+fail-start", fails: &[], states: 225, reduced: 118, depth: 30 },
    Row { flags: "--split-replies --queued-reads", variant: "qemu-10.2", fails: &[], states: 301, reduced: 130, depth: 31 },
    Row { flags: "--split-replies --queued-reads", variant: "qemu-10.2+fail-start", fails: &[], states: 301, reduced: 130, depth: 31 },
    Row { flags: "--split-replies --queued-reads", variant: "reply-queue", fails: &[], states: 1_239, reduced: 674, depth: 28 },
    Row { flags: "--split-replies --queued-reads", variant: "reply-queue+fail-start", fails: &[], states: 1_239, reduced: 674, depth: 28 },
];

/// The scenario of a row's flags.
fn scenario(flags: &str) -> Scenario {
    let mut s = Scenario::default();
    for flag in flags.split_whitespace() {
        match flag {
            flag::MISS_NEED_REPLY => s.miss_need_reply = true,
            flag::WITHOUT_BQL => s.device_start_holds_bql = false,
            flag::SHORT_READS => s.short_reads = true,
            flag::QUEUED_READS => s.queued_reads = true,
            flag::SPLIT_REPLIES => s.split_replies = true,
            _ => panic!("unknown flag {flag}"),
        }
    }
    s
}

/// The property named by a matrix column title.
fn property(title: &str) -> &'static str {
    Prop::find(title).unwrap_or_else(|| panic!("no column {title}")).name()
}

/// Asserts a whole row: which properties hold, unique states, depth.
fn assert_row(variant: &str, scenario: Scenario, holds: [bool; 7], states: usize, depth: usize) {
    let v = verdict(variant, scenario);
    assert!(v.complete);
    let got: Vec<bool> = v.properties.iter().map(|p| p.holds).collect();
    assert_eq!(got, holds, "{variant}: verdicts in Prop::ALL order");
    assert_eq!(v.unique_states, states, "{variant}: unique states");
    assert_eq!(v.max_depth, depth, "{variant}: depth");
}

#[test]
fn every_pinned_row_is_what_the_checker_finds() {
    for r in ROWS {
        let holds = Prop::ALL.map(|p| !r.fails.contains(&p.title()));
        let v = verdict(r.variant, scenario(r.flags));
        let what = format!("{} {}", r.variant, r.flags);
        assert!(v.complete, "{what}: complete");
        for (p, want) in v.properties.iter().zip(holds) {
            assert_eq!(p.holds, want, "{what}: {}", p.name);
        }
        assert_eq!(v.unique_states, r.states, "{what}: unique states");
        assert_eq!(v.max_depth, r.depth, "{what}: depth");
    }
}

#[test]
fn stateright_finds_every_pinned_state_count_and_depth() {
    // Independent counts: stateright's own checkers run on the model. Its
    // depth-first checker visits the states in the order the verdicts'
    // search (model::search) does, so depth agrees too; its breadth-first
    // checker reaches the same states in another order. Both run to the end
    // (no stop on the first discoveries).
    for r in ROWS {
        let model = ReplyRace::new(r.variant.parse().unwrap(), scenario(r.flags));
        let finish = || HasDiscoveries::AnyOf(BTreeSet::new());
        let dfs = model.clone().checker().finish_when(finish()).spawn_dfs().join();
        assert_eq!(dfs.unique_state_count(), r.states, "{} {}: DFS", r.variant, r.flags);
        assert_eq!(dfs.max_depth(), r.depth, "{} {}: DFS depth", r.variant, r.flags);
        let bfs = model.checker().finish_when(finish()).spawn_bfs().join();
        assert_eq!(bfs.unique_state_count(), r.states, "{} {}: BFS", r.variant, r.flags);
    }
}

#[test]
fn the_reduced_search_gives_every_pinned_verdict_with_no_more_states() {
    // The partial-order reduction's soundness, on every pinned scenario:
    // the same verdict for every property (holds, and broken), from fewer
    // states, and its own count pinned.
    for r in ROWS {
        let what = format!("{} {}", r.variant, r.flags);
        let full = verdict(r.variant, scenario(r.flags));
        let opts = CheckOptions { shortest: false, ..CheckOptions::default() };
        let reduced = check(r.variant.parse().unwrap(), scenario(r.flags), &opts);
        assert!(reduced.complete && reduced.reduced && !full.reduced, "{what}");
        for (f, red) in full.properties.iter().zip(&reduced.properties) {
            assert_eq!((f.holds, f.violated), (red.holds, red.violated), "{what}: {}", f.name);
        }
        assert!(reduced.unique_states <= full.unique_states, "{what}");
        assert_eq!(reduced.unique_states, r.reduced, "{what}: reduced states");
    }
}

#[test]
fn the_reduced_graph_has_the_shortest_counterexamples_of_final_states() {
    // verdict::shortest_counterexamples searches the properties of final
    // states over the reduced graph: on every pinned row, each one found
    // there has the length of the one found over every interleaving, and
    // ends in a final state that breaks the property.
    let mut compared = 0;
    for r in ROWS {
        let what = format!("{} {}", r.variant, r.flags);
        let model = ReplyRace::new(r.variant.parse().unwrap(), scenario(r.flags));
        let names: Vec<&'static str> = Prop::ALL
            .into_iter()
            .filter(|p| p.of_final_states() && r.fails.contains(&p.title()))
            .map(Prop::name)
            .collect();
        let search = |reduce| {
            shortest_counterexamples(&model, &names, None, reduce, |_, _, _| {
                std::ops::ControlFlow::Continue(())
            })
            .unwrap()
        };
        let (full, reduced) = (search(false), search(true));
        assert_eq!(full.len(), names.len(), "{what}");
        for ((name, f), (n, red)) in full.iter().zip(&reduced) {
            assert_eq!((name, f.len()), (n, red.len()), "{what}");
            let mut s = model.init_states().remove(0);
            for &a in red {
                s = model.next_state(&s, a).unwrap_or_else(|| panic!("{what}: {a:?}"));
            }
            let p = Prop::find(name).unwrap();
            assert!(!model.holds(p, &s, model.is_stuck(&s)), "{what}: {name}");
            compared += 1;
        }
    }
    assert!(compared >= 40, "{compared}");
}

/// Asserts that `actions` is the shortest counterexample the checker reports
/// for `property`, and that stateright accepts it as a discovery.
fn assert_counterexample(
    variant: &str,
    scenario: Scenario,
    property: &'static str,
    actions: Vec<Action>,
) {
    let v = verdict(variant, scenario);
    let p = v.property(property).unwrap();
    assert!(!p.holds);
    assert_eq!(p.counterexample.as_ref(), Some(&actions), "{variant}: {property}");
    let model = ReplyRace::new(variant.parse::<Variant>().unwrap(), scenario);
    let checker = model.checker().spawn_bfs().join();
    checker.assert_discovery(property, actions);
}

#[test]
fn counterexample_default_qemu_9_1_every_reply_reaches_its_requester() {
    assert_counterexample(
        "qemu-9.1",
        Scenario::default(),
        "every reply reaches its requester",
        vec![
            Step(DeviceStart),
            Step(DeviceStart),
            Step(PostcopyListen),
            Step(PostcopyListen),
            BackendHandle,
            Read(PostcopyListen, 12),
        ],
    );
}

#[test]
fn counterexample_default_qemu_9_1_no_header_is_read_mid_message() {
    assert_counterexample(
        "qemu-9.1",
        Scenario::default(),
        "no header is read mid-message",
        vec![
            Step(DeviceStart),
            Step(DeviceStart),
            Step(PostcopyListen),
            Step(PostcopyListen),
            BackendHandle,
            Read(DeviceStart, 12),
            BackendHandle,
            Read(PostcopyListen, 12),
        ],
    );
}

#[test]
fn counterexample_default_qemu_9_1_no_error_is_logged() {
    assert_counterexample(
        "qemu-9.1",
        Scenario::default(),
        "no error is logged",
        vec![
            Step(DeviceStart),
            Step(DeviceStart),
            Step(PostcopyListen),
            Step(PostcopyListen),
            BackendHandle,
            Read(PostcopyListen, 12),
            Read(PostcopyListen, 8),
            LogReadError(PostcopyListen),
        ],
    );
}

#[test]
fn counterexample_default_qemu_9_1_device_start_succeeds_only_on_its_own_acks() {
    assert_counterexample(
        "qemu-9.1",
        Scenario::default(),
        "device start succeeds only on its own acks",
        vec![
            Step(DeviceStart),
            Step(DeviceStart),
            Step(PostcopyListen),
            Step(PostcopyListen),
            BackendHandle,
            Read(DeviceStart, 12),
            Read(DeviceStart, 8),
            Step(DeviceStart),
            BackendHandle,
            Read(DeviceStart, 12),
            Read(DeviceStart, 8),
            LogReadError(DeviceStart),
            Step(DeviceStart),
            Step(DeviceStart),
        ],
    );
}

#[test]
fn counterexample_default_qemu_9_1_the_channel_is_usable_afterwards() {
    assert_counterexample(
        "qemu-9.1",
        Scenario::default(),
        "the channel is usable afterwards",
        vec![
            Step(DeviceStart),
            Step(DeviceStart),
            Step(PostcopyListen),
            BackendHandle,
            Read(DeviceStart, 12),
            Read(DeviceStart, 8),
            Step(DeviceStart),
            Step(PostcopyListen),
            BackendHandle,
            Read(DeviceStart, 12),
            Read(DeviceStart, 8),
            Step(DeviceStart),
            BackendHandle,
            Read(PostcopyListen, 12),
            BackendSendMiss,
            ServeBackendChannel,
            Step(MainLoop),
            BackendHandle,
            Read(MainLoop, 12),
            Read(PostcopyListen, 8),
            Step(PostcopyListen),
            LogReadError(MainLoop),
            Step(MainLoop),
            Step(MainLoop),
            Step(MainLoop),
        ],
    );
}

#[test]
fn counterexample_default_qemu_9_1_fail_start_every_reply_reaches_its_requester() {
    assert_counterexample(
        "qemu-9.1+fail-start",
        Scenario::default(),
        "every reply reaches its requester",
        vec![
            Step(DeviceStart),
            Step(DeviceStart),
            Step(PostcopyListen),
            Step(PostcopyListen),
            BackendHandle,
            Read(PostcopyListen, 12),
        ],
    );
}

#[test]
fn counterexample_default_qemu_9_1_fail_start_no_header_is_read_mid_message() {
    assert_counterexample(
        "qemu-9.1+fail-start",
        Scenario::default(),
        "no header is read mid-message",
        vec![
            Step(DeviceStart),
            Step(DeviceStart),
            Step(PostcopyListen),
            Step(PostcopyListen),
            BackendHandle,
            Read(DeviceStart, 12),
            BackendHandle,
            Read(PostcopyListen, 12),
        ],
    );
}

#[test]
fn counterexample_default_qemu_9_1_fail_start_no_error_is_logged() {
    assert_counterexample(
        "qemu-9.1+fail-start",
        Scenario::default(),
        "no error is logged",
        vec![
            Step(DeviceStart),
            Step(DeviceStart),
            Step(PostcopyListen),
            Step(PostcopyListen),
            BackendHandle,
            Read(PostcopyListen, 12),
            Read(PostcopyListen, 8),
            LogReadError(PostcopyListen),
        ],
    );
}

#[test]
fn counterexample_default_qemu_9_1_fail_start_device_start_succeeds_only_on_its_own_acks() {
    assert_counterexample(
        "qemu-9.1+fail-start",
        Scenario::default(),
        "device start succeeds only on its own acks",
        fail_start_silent_swap(),
    );
}

/// The shortest `start ok` counterexample of `qemu-9.1+fail-start`: the main
/// loop takes POSTCOPY_END's reply, device start takes the main loop's
/// IOTLB_MSG reply for vq 0 and its own vq 0 reply for vq 1.
fn fail_start_silent_swap() -> Vec<Action> {
    vec![
        Step(PostcopyListen),
        Step(PostcopyListen),
        BackendHandle,
        BackendSendMiss,
        ServeBackendChannel,
        Step(MainLoop),
        Read(MainLoop, 12),
        Read(MainLoop, 8),
        LogReadError(MainLoop),
        Step(MainLoop),
        Step(MainLoop),
        Step(MainLoop),
        Step(DeviceStart),
        Step(DeviceStart),
        BackendHandle,
        Read(DeviceStart, 12),
        Read(DeviceStart, 8),
        Step(DeviceStart),
        BackendHandle,
        Read(DeviceStart, 12),
        Read(DeviceStart, 8),
        Step(DeviceStart),
    ]
}

#[test]
fn the_fail_start_start_ok_counterexample_is_a_silent_swap() {
    // Device start reports success, no update of it failed, it logged
    // nothing, and yet one of its two acks was not its own.
    let model = ReplyRace::new("qemu-9.1+fail-start".parse().unwrap(), Scenario::default());
    let s = model::trace::final_state(&model, &fail_start_silent_swap());
    let t = s.thread(DeviceStart);
    assert_eq!(t.reported_success, Some(true));
    assert!(!t.start_failed);
    assert_eq!(t.own_acks, 1);
    assert!(s.log.iter().all(|(role, _)| *role != DeviceStart));
}

#[test]
fn a_failed_header_check_fails_a_fail_start_device_start() {
    // Device start reads the ack and the next reply's first word as a header
    // (flags 0x0): vhost_user_read fails, so QEMU 9.2's vhost_dev_start fails.
    let model = ReplyRace::new("qemu-9.1+fail-start".parse().unwrap(), Scenario::default());
    let actions = vec![
        Step(DeviceStart),
        Step(DeviceStart),
        Step(PostcopyListen),
        Step(PostcopyListen),
        BackendHandle,
        Read(PostcopyListen, 12),
        BackendHandle,
        Read(DeviceStart, 12),
        LogReadError(DeviceStart),
        Step(DeviceStart),
        Step(DeviceStart),
    ];
    let s = model::trace::final_state(&model, &actions);
    let t = s.thread(DeviceStart);
    assert!(t.start_failed);
    assert_eq!(t.reported_success, Some(false));
    // Without fail-start (QEMU 9.1) the same path logs the same lines and
    // device start goes on to vq 1's update.
    let plain = ReplyRace::new("qemu-9.1".parse().unwrap(), Scenario::default());
    let s91 = model::trace::final_state(&plain, &actions[..10]);
    assert_eq!(s91.log, s.log);
    assert_eq!(plain.current_op(s91.thread(DeviceStart)), Some(model::Op::WriteIotlbUpdate(1)));
}

#[test]
fn counterexample_default_qemu_9_1_fail_start_the_channel_is_usable_afterwards() {
    assert_counterexample(
        "qemu-9.1+fail-start",
        Scenario::default(),
        "the channel is usable afterwards",
        vec![
            Step(PostcopyListen),
            BackendSendMiss,
            ServeBackendChannel,
            Step(MainLoop),
            Step(PostcopyListen),
            BackendHandle,
            Read(MainLoop, 12),
            Read(MainLoop, 8),
            Step(MainLoop),
            Step(MainLoop),
            Step(DeviceStart),
            Step(DeviceStart),
            BackendHandle,
            Read(PostcopyListen, 12),
            BackendHandle,
            Read(DeviceStart, 12),
            LogReadError(DeviceStart),
            Step(DeviceStart),
            Step(DeviceStart),
            Read(PostcopyListen, 8),
            Step(PostcopyListen),
        ],
    );
}

#[test]
fn counterexample_need_reply_mutex_no_deadlock() {
    assert_counterexample(
        "mutex",
        Scenario { miss_need_reply: true, ..Scenario::default() },
        "no deadlock",
        vec![
            Step(DeviceStart),
            Step(DeviceStart),
            Step(DeviceStart),
            Step(PostcopyListen),
            BackendSendMiss,
        ],
    );
}

#[test]
fn counterexample_no_bql_bql_postcopy_end_no_header_is_read_mid_message() {
    assert_counterexample(
        "bql-postcopy-end",
        Scenario { device_start_holds_bql: false, ..Scenario::default() },
        "no header is read mid-message",
        vec![
            Step(DeviceStart),
            Step(PostcopyListen),
            Step(PostcopyListen),
            Step(PostcopyListen),
            BackendHandle,
            Read(DeviceStart, 12),
            BackendHandle,
            Read(PostcopyListen, 12),
        ],
    );
}

#[test]
fn counterexample_short_qemu_9_1_no_deadlock() {
    assert_counterexample(
        "qemu-9.1",
        Scenario { short_reads: true, ..Scenario::default() },
        "no deadlock",
        vec![
            Step(DeviceStart),
            Step(DeviceStart),
            Step(PostcopyListen),
            Step(PostcopyListen),
            BackendHandle,
            Read(DeviceStart, 8),
            Read(PostcopyListen, 12),
            LogReadError(PostcopyListen),
            Step(PostcopyListen),
            BackendHandle,
            Read(DeviceStart, 4),
            Read(DeviceStart, 16),
            BackendSendMiss,
        ],
    );
}

/// The smallest scenario: one IOTLB update, no other thread, no BQL.
fn smallest() -> Scenario {
    Scenario {
        virtqueues: 1,
        device_start_holds_bql: false,
        postcopy_end: false,
        backend_misses: 0,
        ..Scenario::default()
    }
}

/// `bytes` as the model keeps one message of device start on a stream.
fn device_start_message(bytes: &[u8]) -> Stream {
    Stream::message(DeviceStart, bytes)
}

/// The five states of the module doc, written out as values.
fn smallest_states() -> Vec<State> {
    let idle = |routine| ThreadState {
        routine,
        pc: 0,
        buf: Stream::new(),
        hdr: None,
        expect: 0,
        call_failed: false,
        start_failed: false,
        own_acks: 0,
        misses_taken: 0,
        miss_need_reply: false,
        bh_done: false,
        reported_success: None,
        reply_is_own: false,
        pending_log: None,
    };
    let start = State {
        threads: [
            idle(Routine::Running(Program::DeviceStart)),
            idle(Routine::Absent),
            idle(Routine::Absent),
        ],
        backend: BackendState { misses_sent: 0, awaiting_miss_reply: false, unsent: Stream::new() },
        to_backend: Stream::new(),
        to_frontend: Stream::new(),
        backend_channel: Stream::new(),
        backend_channel_replies: Stream::new(),
        bql: None,
        mutex: None,
        bh_pending: false,
        log: model::Log::default(),
        stolen: false,
        misframed: false,
        reply_queue: Vec::new(),
        reader: None,
        reader_buf: Stream::new(),
        bql_lent_by: None,
    };
    let iotlb = Request::IotlbMsg as u32;
    // 2. device start has written its update.
    let mut written = start.clone();
    written.threads[0].pc = 1;
    written.threads[0].expect = iotlb;
    written.to_backend =
        device_start_message(&wire::iotlb_update_request(&Scenario::iotlb_update(0), true));
    // 3. the back-end has read it and replied.
    let mut replied = written.clone();
    replied.to_backend = Stream::new();
    replied.to_frontend = device_start_message(&wire::ack_reply(Request::IotlbMsg, 0));
    // 4. device start has read the 12-byte header [16 5 8].
    let mut header = replied.clone();
    header.to_frontend.take(12);
    header.threads[0].pc = 2;
    header.threads[0].hdr = Some(Header::reply(Request::IotlbMsg, 8));
    header.threads[0].reply_is_own = true;
    // 5. device start has read its ack 0 and finished, reporting success.
    let mut done = header.clone();
    done.to_frontend = Stream::new();
    done.threads[0].routine = Routine::Done;
    done.threads[0].pc = 0;
    done.threads[0].hdr = None;
    done.threads[0].own_acks = 1;
    done.threads[0].reported_success = Some(true);
    vec![start, written, replied, header, done]
}

#[test]
fn the_smallest_scenario_has_the_five_states_the_module_doc_lists() {
    let model = ReplyRace::new("qemu-9.1".parse().unwrap(), smallest());
    // Every reachable state, by a plain search over the model's own actions.
    let mut seen = model.init_states();
    let mut next = 0;
    while next < seen.len() {
        let mut actions = Vec::new();
        model.actions(&seen[next], &mut actions);
        for a in actions {
            let s = model.next_state(&seen[next], a).unwrap();
            if !seen.contains(&s) {
                seen.push(s);
            }
        }
        next += 1;
    }
    assert_eq!(seen, smallest_states());
    assert_row("qemu-9.1", smallest(), [true; 7], 5, 5);
}

#[test]
fn qemu_9_1_misframes_and_logs_flags_0x0() {
    let v = verdict("qemu-9.1", Scenario::default());
    let mut actions = v.property(property("framing")).unwrap().counterexample.clone().unwrap();
    // The path ends at the misframed read; its error_report is the next step.
    actions.push(LogReadError(PostcopyListen));
    let model = ReplyRace::new(v.variant, v.scenario);
    let log: Vec<String> = model::trace::log_lines(&model::trace::final_state(&model, &actions))
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert_eq!(
        log,
        ["qemu-kvm: vhost_user_read_header: 4100,4133: Failed to read msg header. Flags 0x0 instead of 0x5."]
    );
}

#[test]
fn qemu_9_1_swaps_whole_replies_as_on_the_facts_page() {
    // Both readers take the other's whole reply: the facts page's example log.
    let model = ReplyRace::new("qemu-9.1".parse().unwrap(), Scenario::default());
    let actions = vec![
        Step(DeviceStart),    // take BQL
        Step(PostcopyListen), // join fault thread
        Step(PostcopyListen), // write POSTCOPY_END
        Step(DeviceStart),    // write IOTLB_MSG vq 0
        BackendHandle,
        BackendHandle,
        Read(DeviceStart, 12),
        Read(DeviceStart, 8),
        LogReadError(DeviceStart),
        Step(DeviceStart),
        Read(PostcopyListen, 12),
        Read(PostcopyListen, 8),
        LogReadError(PostcopyListen),
        Step(PostcopyListen),
    ];
    let log: Vec<String> = model::trace::log_lines(&model::trace::final_state(&model, &actions))
        .iter()
        .map(|l| l.to_string())
        .collect();
    assert_eq!(
        log,
        [
            "qemu-kvm: process_message_reply: 4100,4100: Received unexpected msg type. Expected 22 received 30",
            "qemu-kvm: vhost_device_iotlb_miss: 4100,4100: Fail to update device iotlb",
            "qemu-kvm: process_message_reply: 4100,4133: Received unexpected msg type. Expected 30 received 22",
            "qemu-kvm: vhost_user_postcopy_end: 4100,4133: Failed to receive reply to postcopy_end",
        ]
    );
}

#[test]
fn the_mutex_holds_everything_on_the_default_scenario_with_288_states() {
    let v = verdict("mutex", Scenario::default());
    assert!(v.all_hold());
    assert_eq!(v.unique_states, 288);
}

/// The reply queue's four rules are each exercised, not vacuous: on
/// `--miss-need-reply --short-reads` some reachable state has the BQL lent
/// by its waiting holder to the miss handler (rule 3), some read is made by
/// a thread for another thread at the queue's head (rule 2), a short read
/// leaves a reply half read while its reader stays the reader, and the miss
/// handler writes its update with no reply awaited (rule 4: the back-end
/// reads its miss reply while the update has no queue entry).
#[test]
fn reply_queue_exercises_each_of_its_rules() {
    let scenario = Scenario { miss_need_reply: true, short_reads: true, ..Scenario::default() };
    let model = ReplyRace::new("reply-queue".parse().unwrap(), scenario);
    let (mut lent, mut read_for_other, mut half_read, mut miss_answered_unqueued) =
        (false, false, false, false);
    let mut seen = std::collections::HashSet::new();
    let mut todo = model.init_states();
    while let Some(s) = todo.pop() {
        if !seen.insert(s.clone()) {
            continue;
        }
        lent |= s.bql_lent_by == Some(DeviceStart) && s.bql == Some(MainLoop);
        half_read |= s.reader.is_some() && !s.reader_buf.is_empty();
        let mut actions = Vec::new();
        model.actions(&s, &mut actions);
        for a in actions {
            if let Read(role, _) = a {
                read_for_other |= s.reply_queue.first().is_some_and(|&head| head != role);
            }
            if a == BackendReadMissReply {
                // The miss handler answered: its update is on the socket or
                // already read, and nobody waits for a reply to it.
                miss_answered_unqueued |= !s.reply_queue.contains(&MainLoop);
            }
            todo.push(model.next_state(&s, a).unwrap());
        }
    }
    assert!(lent, "the BQL is lent to the miss handler while device start waits");
    assert!(read_for_other, "a waiter reads a reply for the queue's head");
    assert!(half_read, "a short read leaves a reply half read by its reader");
    assert!(miss_answered_unqueued, "the miss is answered with no reply awaited");
}

/// The reply queue holds every property on every combination of the
/// scenario flags (the sweep `vhost-race scenarios` prints), exhaustively,
/// at the default bounds and at 3 virtqueues and 2 misses; the mutex, the
/// shipped fix's comparison point, does not.
#[test]
fn reply_queue_is_safe_on_every_flag_combination() {
    use model::sweep::{cell, flag_combinations, Outcome};
    for base in
        [Scenario::default(), Scenario { virtqueues: 3, backend_misses: 2, ..Scenario::default() }]
    {
        for flags in flag_combinations(base) {
            for v in ["reply-queue", "reply-queue+fail-start"] {
                let c = cell(v.parse().unwrap(), flags.scenario, None);
                assert_eq!(
                    c.outcome,
                    Outcome::SAFE,
                    "{v} on {}: {:?}",
                    flags.describe(),
                    c.failing
                );
            }
        }
    }
    let mutex = cell("mutex".parse().unwrap(), scenario("--miss-need-reply"), None);
    assert_eq!(mutex.outcome, Outcome { races: Some(false), hangs: Some(true) });
}

/// `--short-reads --device-start-without-bql --virtqueues 1`: the scenario
/// of [`a_misframed_size_of_30_reads_30_bytes`].
fn short_reads_one_update_without_bql() -> Scenario {
    Scenario {
        virtqueues: 1,
        device_start_holds_bql: false,
        short_reads: true,
        ..Scenario::default()
    }
}

/// Device start assembles the header `[16 5 1e]` from its own reply and
/// POSTCOPY_END's, then waits for a 30-byte payload: the rest of
/// POSTCOPY_END's reply (16 bytes) and 14 bytes of the main loop's reply.
fn misframed_size_30_path() -> Vec<Action> {
    vec![
        Step(DeviceStart),    // write IOTLB_MSG vq 0
        Step(PostcopyListen), // join fault thread
        Step(PostcopyListen), // write POSTCOPY_END
        BackendHandle,        // device start's ack [16 5 8 0 0]
        Read(DeviceStart, 8), // header [16 5] (short)
        Read(PostcopyListen, 12),
        LogReadError(PostcopyListen),
        Step(PostcopyListen), // vhost_user_postcopy_end reports the failure
        BackendHandle,        // POSTCOPY_END's ack [1e 5 8 0 0]
        Read(DeviceStart, 4), // header [16 5 1e]: size 30
        Read(DeviceStart, 16),
        BackendSendMiss,
        ServeBackendChannel,
        Step(MainLoop), // write IOTLB_MSG answer to miss
        BackendHandle,  // the main loop's ack [16 5 8 0 0]
        Read(DeviceStart, 14),
    ]
}

#[test]
fn a_misframed_size_of_30_reads_30_bytes() {
    let model = ReplyRace::new("qemu-9.1".parse().unwrap(), short_reads_one_update_without_bql());
    let path = misframed_size_30_path();
    let before = model::trace::final_state(&model, &path[..path.len() - 1]);
    let t = before.thread(DeviceStart);
    assert_eq!(t.hdr, Some(Header { request: 22, flags: 5, size: 30 }));
    assert_eq!(model.bytes_wanted(t, model::Op::ReadPayload), 14, "30 bytes less the 16 read");
    assert_eq!(before.to_frontend.len(), 20, "the main loop's whole ack");

    let s = model::trace::final_state(&model, &path);
    // The payload read ended 14 bytes into the main loop's 20-byte ack: 6
    // bytes are left, and the next header read starts there, 2 bytes into
    // the ack's status word (a word model would have read 32 and left 4).
    let ack = wire::ack_reply(Request::IotlbMsg, 0);
    assert_eq!(s.to_frontend.bytes(), &ack[14..]);
    assert!(!s.to_frontend.starts_message());
    // The 30 bytes decode as request 22 (the expected one) and a status of
    // 0x0000_0008_0000_0005 (POSTCOPY_END's `5 8`): the update fails
    // silently and vhost_device_iotlb_miss reports it.
    assert!(s.thread(DeviceStart).call_failed);
    assert_eq!(
        model.current_op(s.thread(DeviceStart)),
        Some(model::Op::Report(reference::qemu_log::QemuError::IotlbUpdateFailed))
    );

    // The main loop reads the 6 bytes left (everything there is) and waits
    // for 6 more that never come, holding the BQL.
    let mut actions = Vec::new();
    model.actions(&s, &mut actions);
    assert!(actions.contains(&Read(MainLoop, 4)) && actions.contains(&Read(MainLoop, 6)));
    let mut hang = path.clone();
    hang.extend([Step(DeviceStart), Read(MainLoop, 6)]);
    let end = model::trace::final_state(&model, &hang);
    assert!(model.is_stuck(&end) && !end.all_done());
    assert_eq!(model.bytes_wanted(end.thread(MainLoop), model::Op::ReadHeader), 6);
    assert!(end.to_frontend.is_empty());
}

#[test]
fn the_qemu_replay_of_a_misframed_size_of_30_sends_the_30_bytes_as_read() {
    // What QEMU's device start is sent for its one IOTLB call: the chunks
    // the model's device start read, byte for byte (12 header bytes in two
    // reads, then 16 + 14 payload bytes).
    let model = ReplyRace::new("qemu-9.1".parse().unwrap(), short_reads_one_update_without_bql());
    let r = model::replay::device_start_replay(&model, &misframed_size_30_path()).unwrap();
    let ack = wire::ack_reply(Request::IotlbMsg, 0);
    let end = wire::ack_reply(Request::PostcopyEnd, 0);
    let chunks = &r.plan.iotlb_replies;
    assert_eq!(chunks.len(), 1);
    assert_eq!(
        chunks[0],
        vec![ack[..8].to_vec(), end[..4].to_vec(), end[4..].to_vec(), ack[..14].to_vec()]
    );
    assert_eq!(chunks[0][2..].concat().len(), 30);
    assert_eq!(r.lines, [reference::qemu_log::QemuError::IotlbUpdateFailed]);
}

#[test]
fn a_queued_read_takes_all_there_is_up_to_what_it_asks() {
    let scenario = Scenario { queued_reads: true, ..Scenario::default() };
    let model = ReplyRace::new("qemu-9.1".parse().unwrap(), scenario);
    let sizes = |want: usize, have: usize| {
        let mut actions = Vec::new();
        model.read_sizes(DeviceStart, want, have, &mut actions);
        actions
    };
    assert_eq!(sizes(12, 20), [Read(DeviceStart, 12)], "all it asks");
    assert_eq!(sizes(12, 6), [Read(DeviceStart, 6)], "all there is");
    assert_eq!(sizes(12, 0), [], "nothing there: blocked");
}

/// The `--short-reads` hang (the main loop waiting for bytes nobody sends)
/// needs a read that ends before the queued bytes do: with queued reads,
/// as on Linux with a back-end that writes each message at once or (with
/// `--split-replies`) its header and payload apart, qemu-9.1 races on the
/// same scenarios and never hangs unless a miss needs a reply.
#[test]
fn queued_reads_race_but_hang_only_on_a_miss_that_needs_a_reply() {
    // The reduced search, verdicts only: the same as the full one's (pinned rows).
    let hangs = |s: Scenario| {
        let opts = CheckOptions { shortest: false, ..CheckOptions::default() };
        let v = check("qemu-9.1".parse().unwrap(), s, &opts);
        assert!(!v.property(Prop::Reply.name()).unwrap().holds, "{s:?}: races");
        !v.property(Prop::Deadlock.name()).unwrap().holds
    };
    let queued = Scenario { queued_reads: true, ..Scenario::default() };
    assert!(hangs(Scenario { short_reads: true, ..Scenario::default() }));
    assert!(!hangs(queued));
    assert!(!hangs(Scenario { device_start_holds_bql: false, ..queued }));
    assert!(!hangs(Scenario { device_stop: true, ..queued }));
    assert!(!hangs(Scenario { virtqueues: 4, backend_misses: 3, ..queued }));
    assert!(hangs(Scenario { miss_need_reply: true, ..queued }));
    // A back-end that writes a reply's header and payload apart
    // (libvhost-user) lets a read find a header alone: still no hang.
    let split = Scenario { split_replies: true, ..queued };
    assert!(!hangs(split));
    assert!(!hangs(Scenario { device_start_holds_bql: false, ..split }));
    assert!(!hangs(Scenario { virtqueues: 4, backend_misses: 3, ..split }));
    assert!(hangs(Scenario { miss_need_reply: true, ..split }));
}

#[test]
fn a_short_read_takes_a_multiple_of_4_bytes_or_all_it_can() {
    let sizes = |short_reads: bool, want: usize, have: usize| -> Vec<u16> {
        let scenario = Scenario { short_reads, ..Scenario::default() };
        let model = ReplyRace::new("qemu-9.1".parse().unwrap(), scenario);
        let mut actions = Vec::new();
        model.read_sizes(DeviceStart, want, have, &mut actions);
        actions
            .into_iter()
            .map(|a| match a {
                Read(DeviceStart, n) => n,
                other => panic!("not a read of device start: {other:?}"),
            })
            .collect()
    };
    assert_eq!(sizes(true, 12, 20), [4, 8, 12], "a header: whole words, all it asks");
    assert_eq!(sizes(true, 30, 16), [4, 8, 12, 16], "all there is");
    assert_eq!(sizes(true, 14, 20), [4, 8, 12, 14], "the rest of a 30-byte payload");
    assert_eq!(sizes(true, 12, 6), [4, 6], "a 6-byte remnant: 4, or all 6");
    assert_eq!(sizes(true, 12, 0), [] as [u16; 0], "nothing there: blocked");
    assert_eq!(sizes(false, 30, 16), [] as [u16; 0], "whole reads wait for all 30");
    assert_eq!(sizes(false, 30, 30), [30]);
}

#[test]
fn two_search_threads_find_the_same_states_and_verdicts() {
    // The parallel search expands every state of the same graph once: the
    // counts and verdicts of one thread, whatever the schedule.
    for r in ROWS {
        for reduce in [false, true] {
            let what = format!("{} {} reduce={reduce}", r.variant, r.flags);
            let opts = |threads| CheckOptions {
                threads,
                reduce,
                shortest: false,
                ..CheckOptions::default()
            };
            let one = check(r.variant.parse().unwrap(), scenario(r.flags), &opts(1));
            let two = check(r.variant.parse().unwrap(), scenario(r.flags), &opts(2));
            assert!(one.complete && two.complete, "{what}");
            assert_eq!(one.unique_states, two.unique_states, "{what}");
            assert_eq!(one.unique_states, if reduce { r.reduced } else { r.states }, "{what}");
            let verdicts = |v: &Verdict| {
                v.properties.iter().map(|p| (p.holds, p.violated)).collect::<Vec<_>>()
            };
            assert_eq!(verdicts(&one), verdicts(&two), "{what}");
        }
    }
}
