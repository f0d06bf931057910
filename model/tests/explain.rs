//! `explain` on logs whose answer is known: the model's own counterexamples
//! and runs fed back, the facts page's example, a fragment, a noisy log with
//! timestamps, and logs no variant can produce.

use model::explain::{self, explain, parse_log, Bound, Explanation, Limits, MatchKind};
use model::trace::{final_state, log_lines, steps};
use model::verdict::{check, CheckOptions};
use model::{Action, ReplyRace};
use reference::qemu_log::{LogLine, QemuError};
use reference::scenario::{Scenario, ThreadRole, Variant};
use stateright::Model;

const FACTS_EXAMPLE: &str = include_str!("../../examples/logs/facts-example.log");
const NOISY: &str = include_str!("../../examples/logs/noisy-timestamps.log");
const CASCADE: &str = include_str!("../../examples/logs/qemu-9.1-cascade.log");
const LATE_REPORT: &str = include_str!("../../examples/logs/qemu-9.1-late-report.log");

fn variant(name: &str) -> Variant {
    name.parse().unwrap()
}

/// Every variant's answer on the default bound, from the default scenario.
fn explain_all(target: &[LogLine]) -> Vec<Explanation> {
    let scenarios = explain::scenarios(Scenario::default(), target, Bound::default());
    Variant::all().into_iter().map(|v| explain(target, v, &scenarios, Limits::default())).collect()
}

fn explained_by(all: &[Explanation]) -> Vec<String> {
    all.iter().filter(|e| e.explained()).map(|e| e.variant.to_string()).collect()
}

/// The lines the found path logs, with the model's own thread ids.
fn replayed_lines(e: &Explanation) -> Vec<LogLine> {
    let f = e.found.as_ref().unwrap();
    let model = ReplyRace::new(e.variant, f.scenario);
    steps(&model, &f.actions).into_iter().flat_map(|s| s.logged).collect()
}

#[test]
fn the_facts_example_is_explained_by_qemu_9_1_only() {
    let log = parse_log(FACTS_EXAMPLE);
    assert_eq!(log.lines.len(), 4);
    let all = explain_all(&log.lines);
    assert_eq!(explained_by(&all), ["qemu-9.1", "qemu-9.1+fail-start"]);
    assert!(all.iter().all(Explanation::decided));
    let e = &all[0];
    let f = e.found.as_ref().unwrap();
    assert_eq!(f.kind, MatchKind::Whole);
    assert!(f.run_ended);
    assert_eq!(f.scenario, Scenario::default());
    // Two whole replies swapped: device start reads the POSTCOPY_END reply,
    // the listen thread the IOTLB reply.
    let steps: Vec<(usize, ThreadRole)> = f.matched.iter().map(|m| (m.step, m.role)).collect();
    use ThreadRole::*;
    assert_eq!(
        steps,
        [(12, DeviceStart), (13, DeviceStart), (18, PostcopyListen), (19, PostcopyListen)]
    );
    assert_eq!(f.tids, [(DeviceStart, 4100), (PostcopyListen, 4133)]);
    assert_eq!(replayed_lines(e), log.lines, "the run logs exactly the log");
}

#[test]
fn the_mutex_cannot_produce_what_qemu_9_1_does() {
    let log = parse_log(FACTS_EXAMPLE);
    let scenarios = explain::scenarios(Scenario::default(), &log.lines, Bound::default());
    let mutex = explain(&log.lines, variant("mutex"), &scenarios, Limits::default());
    assert!(!mutex.explained());
    assert!(mutex.decided(), "every search ran to the end: a proof within the bound");
    assert_eq!(mutex.searches.len(), 2 * scenarios.len());
    let unlocked = explain(&log.lines, variant("qemu-9.1"), &scenarios, Limits::default());
    assert!(unlocked.explained());
}

#[test]
fn qemu_9_1_counterexample_logs_are_explained_by_qemu_9_1() {
    let v = variant("qemu-9.1");
    let verdict = check(v, Scenario::default(), &CheckOptions::default());
    let model = ReplyRace::new(v, Scenario::default());
    let mut fed_back = 0;
    for p in &verdict.properties {
        let Some(actions) = &p.counterexample else { continue };
        let target = log_lines(&final_state(&model, actions));
        if target.is_empty() {
            continue;
        }
        fed_back += 1;
        let e = explain(&target, v, &[Scenario::default()], Limits::default());
        let f = e.found.as_ref().unwrap_or_else(|| panic!("{}: {target:?}", p.name));
        assert_eq!(f.matched.iter().map(|m| m.line).collect::<Vec<_>>(), target);
        let replayed = replayed_lines(&e);
        assert_eq!(&replayed[f.lines_before..f.lines_before + target.len()], &target[..]);
    }
    assert!(fed_back >= 3, "the qemu-9.1 row has logged counterexamples");
}

/// A log the reference printed on a real socket is a whole run of the
/// model, in which the listen thread reads its misframed header first and
/// logs it last: a failed check's log line is a step of its own, after
/// which other threads may read and log before it.
#[test]
fn a_read_error_can_be_logged_after_later_reads_of_other_threads() {
    use ThreadRole::*;
    let log = parse_log(LATE_REPORT);
    assert_eq!(log.lines.len(), 8);
    let e = explain(&log.lines, variant("qemu-9.1"), &[Scenario::default()], Limits::default());
    let f = e.found.as_ref().expect("qemu-9.1 produces the late report");
    assert_eq!(f.kind, MatchKind::Whole);
    assert_eq!(replayed_lines(&e), log.lines);
    let listen_read = f
        .actions
        .iter()
        .position(|a| matches!(a, Action::Read(PostcopyListen, _)))
        .expect("the listen thread reads");
    let first_line = f.matched[0].step - 1;
    let listen_line = f.matched[6].step - 1;
    assert_eq!(f.matched[6].role, PostcopyListen);
    assert!(listen_read < first_line, "the listen thread read before device start logged");
    assert!(first_line < listen_line, "and logged after device start's lines");
    assert_eq!(f.actions[listen_line], Action::LogReadError(PostcopyListen));
}

#[test]
fn a_fragment_is_found_where_no_whole_run_fits() {
    // The facts example's last two lines: the listen thread's half of the swap.
    let log = parse_log(FACTS_EXAMPLE);
    let tail = &log.lines[2..];
    let e = explain(tail, variant("qemu-9.1"), &[Scenario::default()], Limits::default());
    let f = e.found.as_ref().unwrap();
    assert_eq!(f.kind, MatchKind::Fragment);
    assert!(!f.run_ended, "device start still has the POSTCOPY_END reply to read");
    // The whole-run search came first and failed.
    assert!(!e.searches[0].found && e.searches[0].kind == MatchKind::Whole);
    let replayed = replayed_lines(&e);
    assert_eq!(&replayed[f.lines_before..], tail);
}

#[test]
fn the_noisy_log_is_the_facts_example_with_timestamps_and_plain_lines() {
    let log = parse_log(NOISY);
    assert_eq!(log.lines.len(), 4);
    assert_eq!(log.unrelated, 5);
    assert_eq!(log.set_aside.len(), 1, "the EOF at shutdown is not modelled");
    let errors: Vec<QemuError> = log.lines.iter().map(|l| l.error).collect();
    let facts: Vec<QemuError> = parse_log(FACTS_EXAMPLE).lines.iter().map(|l| l.error).collect();
    assert_eq!(errors, facts);
    assert_eq!(log.lines[1].ids, None, "a plain error_report line");
    let all = explain_all(&log.lines);
    assert_eq!(explained_by(&all), ["qemu-9.1", "qemu-9.1+fail-start"]);
    // Another process's ids: the mapping binds whatever tids the log has.
    let f = all[0].found.as_ref().unwrap();
    assert_eq!(f.tids, [(ThreadRole::DeviceStart, 31337), (ThreadRole::PostcopyListen, 31342)]);
}

#[test]
fn the_cascade_log_needs_a_larger_scenario() {
    let log = parse_log(CASCADE);
    assert_eq!(log.lines.len(), 12);
    assert!(
        explain::iotlb_calls_needed(&log.lines, true) > 3,
        "more than the default scenario has"
    );
    let scenarios = explain::scenarios(Scenario::default(), &log.lines, Bound::default());
    let e = explain(&log.lines, variant("qemu-9.1"), &scenarios, Limits::default());
    let f = e.found.as_ref().expect("qemu-9.1 produces the cascade");
    assert!(f.scenario.virtqueues + f.scenario.backend_misses > 3);
    assert_eq!(&replayed_lines(&e)[f.lines_before..][..12], &log.lines[..]);
    let mutex = explain(&log.lines, variant("mutex"), &scenarios, Limits::default());
    assert!(!mutex.explained() && mutex.decided());
}

#[test]
fn fail_start_is_ruled_out_of_the_cascade_by_counting_and_the_count_is_tight() {
    let log = parse_log(CASCADE);
    let v = variant("qemu-9.1+fail-start");
    // Five failed IOTLB calls; fail-start lets device start fail only once,
    // so three misses are one too few.
    let scenarios = explain::scenarios(Scenario::default(), &log.lines, Bound::default());
    let e = explain(&log.lines, v, &scenarios, Limits::default());
    assert!(!e.explained() && e.decided());
    assert!(e.searches.iter().all(|s| s.ruled_out_by_count && s.nodes == 0));
    // With a fourth miss the search runs and finds it: counting pruned
    // nothing the model can produce.
    let bound = Bound { max_misses: 4, ..Bound::default() };
    let scenarios = explain::scenarios(Scenario::default(), &log.lines, bound);
    let e = explain(&log.lines, v, &scenarios, Limits::default());
    let f = e.found.as_ref().expect("fail-start produces the cascade with 4 misses");
    assert_eq!(f.scenario.backend_misses, 4);
    assert_eq!(&replayed_lines(&e)[f.lines_before..][..12], &log.lines[..]);
}

#[test]
fn a_flags_value_no_stream_holds_is_explained_by_nothing() {
    let mut lines = parse_log(FACTS_EXAMPLE).lines;
    lines.insert(0, LogLine::from_thread(4133, QemuError::ReadHeaderFlags { flags: 0x1234 }));
    let all = explain_all(&lines);
    assert_eq!(explained_by(&all), Vec::<String>::new());
    assert!(all.iter().all(Explanation::decided));
}

#[test]
fn postcopy_end_failing_on_the_device_start_thread_is_explained_by_nothing() {
    let lines = [
        LogLine::from_thread(4100, QemuError::IotlbUpdateFailed),
        LogLine::from_thread(4100, QemuError::PostcopyEndFailed),
    ];
    let all = explain_all(&lines);
    assert_eq!(explained_by(&all), Vec::<String>::new());
    assert!(all.iter().all(Explanation::decided));
    // Without ids the same messages are explained: the tid is what rules them out.
    let plain: Vec<LogLine> = lines.iter().map(|l| LogLine { ids: None, ..*l }).collect();
    assert!(explained_by(&explain_all(&plain)).contains(&"qemu-9.1".to_string()));
}

/// A deterministic pseudo-random walk to the end of a run.
fn random_run(model: &ReplyRace, mut seed: u64) -> Vec<Action> {
    let mut s = model.init_states().remove(0);
    let mut path = Vec::new();
    let mut actions = Vec::new();
    loop {
        actions.clear();
        model.actions(&s, &mut actions);
        if actions.is_empty() {
            return path;
        }
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let a = actions[(seed >> 33) as usize % actions.len()];
        s = model.next_state(&s, a).unwrap();
        path.push(a);
    }
}

#[test]
fn random_qemu_9_1_runs_are_explained_by_their_own_variant() {
    let v = variant("qemu-9.1");
    let scenario = Scenario { virtqueues: 3, backend_misses: 2, ..Scenario::default() };
    let model = ReplyRace::new(v, scenario);
    let mut longest = 0;
    for seed in 0..20 {
        let target = log_lines(&final_state(&model, &random_run(&model, seed)));
        longest = longest.max(target.len());
        let e = explain(&target, v, &[scenario], Limits::default());
        let f = e.found.as_ref().unwrap_or_else(|| panic!("seed {seed}: {target:?}"));
        assert_eq!(f.kind, MatchKind::Whole, "seed {seed}: a whole run's log is a whole match");
        assert_eq!(replayed_lines(&e), target, "seed {seed}");
    }
    assert!(longest >= 6, "some runs go out of alignment and log a cascade");
}

#[test]
fn the_reduced_search_explains_every_example_log_as_the_full_one_does() {
    // The partial-order reduction keeps every sequence of logged lines, so
    // it finds a run wherever the full search does (and the path shown
    // comes from the full search in that scenario). Checked on every log in
    // examples/logs/, every variant, every scenario up to 4 virtqueues and
    // 3 misses, and on the one-thread view of a replay.
    let logs = [
        FACTS_EXAMPLE,
        NOISY,
        CASCADE,
        LATE_REPORT,
        include_str!("../../examples/logs/qemu-7.2-postcopy-misframed.log"),
        include_str!("../../examples/logs/qemu-7.2-postcopy-swap.log"),
        include_str!("../../examples/logs/qemu-7.2-replay-flags-0x8.log"),
        include_str!("../../examples/logs/qemu-7.2-replay-swap-then-misframed.log"),
    ];
    let bound = Bound { max_virtqueues: 4, max_misses: 3 };
    let full = Limits { reduce: false, ..Limits::default() };
    let mut explained = 0;
    for text in logs {
        let target = parse_log(text).lines;
        let scenarios = explain::scenarios(Scenario::default(), &target, bound);
        for v in Variant::all() {
            for view in [None, Some(ThreadRole::DeviceStart)] {
                let target: Vec<LogLine> = match view {
                    None => target.clone(),
                    Some(_) => target
                        .iter()
                        .copied()
                        .filter(|l| l.ids.is_some_and(|(_, t)| t == 4100))
                        .collect(),
                };
                let a = explain::explain_view(&target, v, &scenarios, Limits::default(), view);
                let b = explain::explain_view(&target, v, &scenarios, full, view);
                assert!(a.decided() && b.decided(), "{v}");
                let key = |e: &Explanation| {
                    e.found.as_ref().map(|f| (f.scenario, f.kind, f.actions.clone()))
                };
                assert_eq!(key(&a), key(&b), "{v} {view:?}: {text}");
                explained += usize::from(a.explained());
            }
        }
    }
    assert!(explained >= 16, "the comparison covers logs that are explained: {explained}");
}
