//! Running the checker on a variant and turning its result into a verdict
//! row: one entry per property, holds or a shortest counterexample, with the
//! run's size and time. The checker, the tests and the benchmarks all use it.
//!
//! Every run explores the whole state space (reduced or not, see
//! [`crate::search`] and [`crate::reduce`]: it never stops at the first
//! violations, which would make state counts meaningless), so a ✓ always
//! comes from a complete exhaustive run; the shortest counterexamples come
//! from a breadth-first pass that stops at them: over every interleaving
//! for the properties that break before the end, over the reduced graph for
//! those of final states (which has the same shortest paths to them, see
//! [`shortest_counterexamples`]), with the states [`crate::search`] merges
//! for the verdicts merged.
//!
//! Leaves out: symmetry reduction (the threads are not interchangeable) and
//! on-demand checking.

use std::collections::{BTreeSet, VecDeque};
use std::io::Write as _;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use protocol::scenario::{Scenario, Variant};
use stateright::{CheckerBuilder, HasDiscoveries, Model};

use crate::{Action, Prop, ReplyRace, State, PROPERTIES};

/// The peak memory [`DEFAULT_MAX_STATES`] keeps one search under, in the
/// words every refusal uses.
pub const MEMORY_BUDGET: &str = "1 GB";

/// States a search may generate (duplicates included, as stateright counts
/// them) before it stops: the one bound of the check, of the
/// shortest-counterexample search and of `explain`'s search. At this bound
/// the largest scenario the CLI accepts (16 virtqueues, 8 misses, qemu-9.1)
/// peaks under [`MEMORY_BUDGET`] of resident memory (measured with
/// `/usr/bin/time -v`; the README gives the figures).
pub const DEFAULT_MAX_STATES: usize = 30_000_000;

/// How to run a check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Threads of the depth-first search ([`crate::search`]): 1 visits
    /// states in a fixed order (the pinned depths); more share the work
    /// (the same states and verdicts; the depth depends on the schedule).
    pub threads: usize,
    /// Print progress to standard error while checking (plain lines, once a
    /// second); [`check_with`] takes a callback instead.
    pub progress: bool,
    /// Stop after generating this many states, duplicates included (a bound
    /// on memory); the verdict is then incomplete and claims no ✓. `None`
    /// means no bound at all.
    pub max_states: Option<usize>,
    /// Take the verdicts from the partial-order-reduced search
    /// ([`crate::reduce`]): fewer states, the same verdicts; the state
    /// count is then the reduced search's.
    pub reduce: bool,
    /// Search the shortest counterexample of each failing property (a
    /// second breadth-first pass); off, the verdicts carry none.
    pub shortest: bool,
}

impl Default for CheckOptions {
    /// One thread, no progress, the [`DEFAULT_MAX_STATES`] bound, the
    /// reduced search, shortest counterexamples.
    fn default() -> Self {
        CheckOptions {
            threads: 1,
            progress: false,
            max_states: Some(DEFAULT_MAX_STATES),
            reduce: true,
            shortest: true,
        }
    }
}

/// Which part of a check is running.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum Phase {
    /// The exhaustive depth-first search the verdicts come from.
    Checking,
    /// The second breadth-first pass that finds each failing property's
    /// shortest counterexample.
    Counterexamples,
}

/// A snapshot of a running check, handed to [`check_with`]'s callback.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// The variant being checked.
    pub variant: Variant,
    /// Which pass.
    pub phase: Phase,
    /// States generated so far in this pass, duplicates included.
    pub states: usize,
    /// Unique states so far in this pass.
    pub unique_states: usize,
    /// Deepest path so far in this pass.
    pub depth: usize,
    /// The bound on `states`, if any.
    pub max_states: Option<usize>,
    /// Time since the check started.
    pub elapsed: Duration,
}

/// What a check had found when it was stopped by its caller.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Interrupted {
    /// The variant.
    #[serde(serialize_with = "cli_name")]
    pub variant: Variant,
    /// The pass that was running.
    pub phase: Phase,
    /// Unique states explored by the exhaustive check so far.
    pub unique_states: usize,
    /// Deepest path so far.
    pub max_depth: usize,
    /// Properties with a violation found so far (their counterexamples were
    /// not, or not all, computed).
    pub failing: Vec<&'static str>,
    /// Time until the interruption.
    pub seconds: f64,
}

/// A variant as the CLI spells it (`qemu-9.1+fail-start`), in every JSON output.
pub fn cli_name<S: serde::Serializer>(v: &Variant, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// One property's verdict.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PropertyVerdict {
    /// The property, in plain words.
    pub name: &'static str,
    /// Whether it holds in every reachable state (or on every path).
    pub holds: bool,
    /// Whether the search met a state (or path) that breaks it: proven
    /// broken even when the search stopped at its bound.
    pub violated: bool,
    /// The counterexample's actions from the initial state, if it fails.
    pub counterexample: Option<Vec<Action>>,
    /// Whether `counterexample` is a shortest one (false when the
    /// breadth-first search for it stopped at the state bound and the
    /// depth-first search gave one instead).
    pub shortest: bool,
}

/// A variant's row of the matrix.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verdict {
    /// What was checked.
    #[serde(serialize_with = "cli_name")]
    pub variant: Variant,
    /// On which scenario.
    pub scenario: Scenario,
    /// Per property, in [`PROPERTIES`] order.
    pub properties: Vec<PropertyVerdict>,
    /// Unique states explored.
    pub unique_states: usize,
    /// Longest path explored.
    pub max_depth: usize,
    /// Wall-clock time of the run.
    pub seconds: f64,
    /// Of which the search the verdicts come from (the rest is the search
    /// for shortest counterexamples).
    pub search_seconds: f64,
    /// Whether the whole state space was explored (false only when
    /// `max_states` stopped it, in which case no ✓ is claimed and no
    /// counterexample is computed).
    pub complete: bool,
    /// States generated, duplicates included (what `max_states` bounds).
    pub generated_states: usize,
    /// The bound the check ran under.
    pub max_states: Option<usize>,
    /// Whether the states are the partial-order-reduced search's
    /// ([`crate::reduce`]); else every interleaving's.
    pub reduced: bool,
}

impl Verdict {
    /// The verdict of one property by name.
    pub fn property(&self, name: &str) -> Option<&PropertyVerdict> {
        self.properties.iter().find(|p| p.name == name)
    }

    /// Whether every property holds.
    pub fn all_hold(&self) -> bool {
        self.properties.iter().all(|p| p.holds)
    }
}

/// stateright's own checker on the model, as the benchmarks and the tests
/// run it beside ours: `threads` threads, never stopping at the first
/// discoveries, so it explores everything, and stopping at
/// [`DEFAULT_MAX_STATES`] generated states so that no caller can exhaust
/// memory.
pub fn exhaustive(model: ReplyRace, threads: usize) -> CheckerBuilder<ReplyRace> {
    model
        .checker()
        .threads(threads.max(1))
        .finish_when(HasDiscoveries::AnyOf(BTreeSet::new()))
        .target_state_count(DEFAULT_MAX_STATES)
}

/// Checks `variant` on `scenario` exhaustively (depth first, then breadth
/// first for the shortest counterexamples); with `opts.progress`, a plain
/// line on standard error once a second.
pub fn check(variant: Variant, scenario: Scenario, opts: &CheckOptions) -> Verdict {
    let mut last = Instant::now();
    let print = |p: &Progress| {
        if opts.progress && last.elapsed() >= Duration::from_secs(1) {
            last = Instant::now();
            let _ = writeln!(std::io::stderr(), "  {}", describe_progress(p));
        }
        ControlFlow::Continue(())
    };
    match check_with(variant, scenario, opts, print) {
        Ok(v) => v,
        Err(_) => unreachable!("the callback never stops the check"),
    }
}

/// One line saying where a check is: "qemu-9.1: checking, 1234 unique states, depth 30, 1.0s".
pub fn describe_progress(p: &Progress) -> String {
    let what = match p.phase {
        Phase::Checking => "checking",
        Phase::Counterexamples => "shortest counterexamples",
    };
    format!(
        "{}: {what}, {} unique states, depth {}, {:.1}s",
        p.variant,
        p.unique_states,
        p.depth,
        p.elapsed.as_secs_f64()
    )
}

/// [`check`] with a callback, called every 65 536 generated states with the
/// progress of each pass; returning `Break` stops the check (every search
/// thread included) and returns what it had found.
pub fn check_with(
    variant: Variant,
    scenario: Scenario,
    opts: &CheckOptions,
    mut on_progress: impl FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Verdict, Interrupted> {
    check_with_dyn(variant, scenario, opts, &mut on_progress)
}

/// [`check_with`] with its callback behind a pointer, so that the check is
/// compiled once, here, at this crate's optimisation, not again in each
/// caller's crate.
fn check_with_dyn(
    variant: Variant,
    scenario: Scenario,
    opts: &CheckOptions,
    on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Verdict, Interrupted> {
    let model = ReplyRace::new(variant, scenario);
    let start = Instant::now();
    // The verdicts come from a depth-first pass, which keeps only the
    // visited fingerprints and the states still to expand (a breadth-first
    // one keeps its whole frontier: ten times the memory); the shortest
    // counterexamples from a breadth-first pass below that stops at them.
    let explored = explore_depth_first(&model, variant, opts, start, on_progress)?;
    let search_seconds = start.elapsed().as_secs_f64();
    let Explored { unique_states, generated_states, max_depth, failing } = explored;
    // The bound counts every generated state, duplicates included.
    let complete = opts.max_states.is_none_or(|n| generated_states < n);
    // The depth-first pass keeps no paths; a second, breadth-first pass
    // finds the shortest ones. An incomplete check is refused by its
    // callers, so it is not spent on.
    let mut counterexamples: Vec<(&'static str, Vec<Action>)> = Vec::new();
    let mut not_shortest: Vec<&'static str> = Vec::new();
    if opts.shortest && complete && !failing.is_empty() {
        let mut report = |states: usize, unique_states: usize, depth: usize| {
            on_progress(&Progress {
                variant,
                phase: Phase::Counterexamples,
                states,
                unique_states,
                depth,
                max_states: opts.max_states,
                elapsed: start.elapsed(),
            })
        };
        match shortest_counterexamples(&model, &failing, opts.max_states, opts.reduce, &mut report)
        {
            Ok(found) => counterexamples = found,
            Err(Stopped { at_bound: true, found }) => {
                // Too many states at the counterexamples' depth: the ones
                // still missing come from a depth-first search, not shortest.
                counterexamples = found;
                for name in &failing {
                    if counterexamples.iter().any(|(n, _)| n == name) {
                        continue;
                    }
                    let p = Prop::find(name).expect("a property of the model");
                    if let Some(path) =
                        crate::search::path_to_violation(&model, p, opts.reduce, opts.max_states)
                    {
                        not_shortest.push(name);
                        counterexamples.push((name, path));
                    }
                }
            }
            Err(Stopped { at_bound: false, .. }) => {
                return Err(Interrupted {
                    variant,
                    phase: Phase::Counterexamples,
                    unique_states,
                    max_depth,
                    failing: failing.clone(),
                    seconds: start.elapsed().as_secs_f64(),
                })
            }
        }
    }
    let properties = PROPERTIES
        .iter()
        .map(|(name, _)| {
            let counterexample =
                counterexamples.iter().find(|(n, _)| n == name).map(|(_, a)| a.clone());
            PropertyVerdict {
                name,
                holds: complete && !failing.contains(name),
                violated: failing.contains(name),
                shortest: counterexample.is_some() && !not_shortest.contains(name),
                counterexample,
            }
        })
        .collect();
    Ok(Verdict {
        variant,
        scenario,
        properties,
        unique_states,
        max_depth,
        seconds: start.elapsed().as_secs_f64(),
        search_seconds,
        complete,
        generated_states,
        max_states: opts.max_states,
        reduced: opts.reduce,
    })
}

/// What one exhaustive pass found.
struct Explored {
    unique_states: usize,
    generated_states: usize,
    max_depth: usize,
    failing: Vec<&'static str>,
}

/// The depth-first pass ([`crate::search::depth_first`], or
/// [`crate::search::depth_first_parallel`] on more than one thread).
fn explore_depth_first(
    model: &ReplyRace,
    variant: Variant,
    opts: &CheckOptions,
    start: Instant,
    on_progress: &mut dyn FnMut(&Progress) -> ControlFlow<()>,
) -> Result<Explored, Interrupted> {
    let mut interrupted = false;
    let report = |p: &crate::search::Searched| {
        let r = on_progress(&Progress {
            variant,
            phase: Phase::Checking,
            states: p.generated_states,
            unique_states: p.unique_states,
            depth: p.max_depth,
            max_states: opts.max_states,
            elapsed: start.elapsed(),
        });
        interrupted = r.is_break();
        r
    };
    let searched = if opts.threads > 1 {
        crate::search::depth_first_parallel(
            model,
            opts.reduce,
            opts.max_states,
            opts.threads,
            report,
        )
    } else {
        crate::search::depth_first(model, opts.reduce, opts.max_states, report)
    };
    let failing: Vec<&'static str> = searched.violated.iter().map(|p| p.name()).collect();
    if interrupted {
        return Err(Interrupted {
            variant,
            phase: Phase::Checking,
            unique_states: searched.unique_states,
            max_depth: searched.max_depth,
            failing,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    Ok(Explored {
        unique_states: searched.unique_states,
        generated_states: searched.generated_states,
        max_depth: searched.max_depth,
        failing,
    })
}

/// Why [`shortest_counterexamples`] stopped early, with what it had found.
#[derive(Clone, Debug)]
pub struct Stopped {
    /// Whether it stopped at the state bound (else the callback stopped it).
    pub at_bound: bool,
    /// The counterexamples found before it stopped.
    pub found: Vec<(&'static str, Vec<Action>)>,
}

/// The shortest path (fewest actions) to a state violating the property
/// `name`: for an `always` property, a state where it is false; for an
/// `eventually` property, a terminal state where it is false (its conditions
/// here only become true in terminal states, so this is a path on which it
/// never holds).
///
/// Panics if the property has no counterexample within
/// [`DEFAULT_MAX_STATES`]: call it for discoveries only.
pub fn shortest_counterexample(model: &ReplyRace, name: &'static str) -> Vec<Action> {
    let found =
        shortest_counterexamples(model, &[name], Some(DEFAULT_MAX_STATES), false, |_, _, _| {
            ControlFlow::Continue(())
        });
    match found {
        Ok(mut v) if !v.is_empty() => v.remove(0).1,
        _ => panic!("property {name:?} has no counterexample within the bound"),
    }
}

/// One breadth-first pass that finds the shortest counterexample of each of
/// `names` (those without one are left out of the answer), stopping once
/// every one is found, at `max_states` generated states, or when
/// `on_progress(states, unique_states, depth)` (called every 65 536 states)
/// says `Break`.
///
/// Memory: a visited state is kept as a 64-bit fingerprint and a parent link
/// (about 30 bytes); only the breadth-first frontier holds whole states.
///
/// With `reduce`, the properties of final states ([`Prop::of_final_states`])
/// are searched in a second pass over the partial-order-reduced graph
/// ([`crate::reduce`]), which has the same shortest paths to final states:
/// each path of the full graph to a final state has a path of the reduced
/// graph to the same state made of the same moves in another order
/// (Godefroid 1996, the proof of theorem 4.3), so of the same length, and
/// every path of the reduced graph is one of the full graph. The other
/// properties break at states that are not final, whose shortest paths the
/// reduction does not keep: they are searched over every interleaving.
pub fn shortest_counterexamples(
    model: &ReplyRace,
    names: &[&'static str],
    max_states: Option<usize>,
    reduce: bool,
    mut on_progress: impl FnMut(usize, usize, usize) -> ControlFlow<()>,
) -> Result<Vec<(&'static str, Vec<Action>)>, Stopped> {
    let (last, first): (Vec<&'static str>, Vec<&'static str>) = names
        .iter()
        .partition(|n| reduce && Prop::find(n).expect("a property of the model").of_final_states());
    let mut found = Vec::new();
    let mut at_bound = false;
    // Each pass under the bound: one stopped there does not stop the next.
    for (pass, reduce) in [(first, false), (last, true)] {
        if pass.is_empty() {
            continue;
        }
        match shortest_counterexamples_dyn(model, &pass, max_states, reduce, &mut on_progress) {
            Ok(f) => found.extend(f),
            Err(Stopped { at_bound: true, found: mut f }) => {
                found.append(&mut f);
                at_bound = true;
            }
            Err(Stopped { at_bound: false, found: mut f }) => {
                found.append(&mut f);
                return Err(Stopped { at_bound: false, found });
            }
        }
    }
    // In `names` order.
    found.sort_by_key(|(n, _)| names.iter().position(|m| m == n));
    if at_bound {
        return Err(Stopped { at_bound, found });
    }
    Ok(found)
}

/// One pass of [`shortest_counterexamples`] (over the reduced graph with
/// `reduce`), compiled once (see [`check_with_dyn`]).
fn shortest_counterexamples_dyn(
    model: &ReplyRace,
    names: &[&'static str],
    max_states: Option<usize>,
    reduce: bool,
    on_progress: &mut dyn FnMut(usize, usize, usize) -> ControlFlow<()>,
) -> Result<Vec<(&'static str, Vec<Action>)>, Stopped> {
    let reduction = reduce.then(|| crate::reduce::Reduction::new(model));
    let properties: Vec<Prop> =
        names.iter().map(|n| Prop::find(n).expect("a property of the model")).collect();
    // Parent index and the action from the parent, per visited state.
    let mut nodes: Vec<(u32, Option<Action>)> = Vec::new();
    let mut seen = crate::search::FingerprintSet::default();
    // (node index, depth, state): the frontier.
    let mut queue: VecDeque<(u32, u32, State)> = VecDeque::new();
    let mut found: Vec<(&'static str, Vec<Action>)> = Vec::new();
    let mut generated = 0usize;
    let mut depth = 0u32;
    for s in model.init_states() {
        generated += 1;
        if seen.insert(crate::search::fingerprint_for_verdicts(model, &s)) {
            nodes.push((u32::MAX, None));
            queue.push_back((nodes.len() as u32 - 1, 0, s));
        }
    }
    let path_to = |nodes: &[(u32, Option<Action>)], mut i: u32| {
        let mut path = Vec::new();
        while let (parent, Some(a)) = nodes[i as usize] {
            path.push(a);
            i = parent;
        }
        path.reverse();
        path
    };
    let mut actions = Vec::new();
    let mut next_report = 1usize << 16;
    while let Some((i, d, state)) = queue.pop_front() {
        depth = depth.max(d);
        // The moves first: whether the state is stuck decides the
        // properties about final states (`ReplyRace::holds`).
        actions.clear();
        model.actions(&state, &mut actions);
        let stuck = actions.is_empty();
        for (name, &p) in names.iter().zip(&properties) {
            if !found.iter().any(|(n, _)| n == name) && !model.holds(p, &state, stuck) {
                found.push((name, path_to(&nodes, i)));
            }
        }
        if found.len() == names.len() {
            break;
        }
        if let Some(r) = &reduction {
            r.ample(&state, &mut actions);
        }
        for &a in &actions {
            let Some(next) = model.next_state(&state, a) else { continue };
            generated += 1;
            if seen.insert(crate::search::fingerprint_for_verdicts(model, &next)) {
                nodes.push((i, Some(a)));
                queue.push_back((nodes.len() as u32 - 1, d + 1, next));
            }
        }
        if max_states.is_some_and(|n| generated >= n) {
            return Err(Stopped { at_bound: true, found });
        }
        if generated >= next_report {
            next_report = generated + (1 << 16);
            if on_progress(generated, nodes.len(), depth as usize).is_break() {
                return Err(Stopped { at_bound: false, found });
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn largest() -> Scenario {
        Scenario { virtqueues: 16, backend_misses: 8, short_reads: true, ..Scenario::default() }
    }

    #[test]
    fn a_check_stops_at_the_state_bound_and_claims_nothing() {
        let opts = CheckOptions { max_states: Some(50_000), ..CheckOptions::default() };
        let v = check("qemu-9.1".parse().unwrap(), largest(), &opts);
        assert!(!v.complete);
        // The search looks at the bound after each state it expands (fewer
        // than 100 moves each).
        assert!((50_000..50_000 + 100).contains(&v.generated_states), "{}", v.generated_states);
        assert!(v.properties.iter().all(|p| !p.holds && p.counterexample.is_none()));
    }

    #[test]
    fn the_default_options_carry_the_default_bound() {
        assert_eq!(CheckOptions::default().max_states, Some(DEFAULT_MAX_STATES));
    }

    #[test]
    fn the_counterexample_search_stops_at_its_bound() {
        let model = ReplyRace::new("qemu-9.1".parse().unwrap(), largest());
        // The channel property fails only once every thread is done, far deeper than 10 000 states.
        let r = shortest_counterexamples(
            &model,
            &["the channel is usable afterwards"],
            Some(10_000),
            false,
            |_, _, _| ControlFlow::Continue(()),
        );
        assert!(matches!(r, Err(Stopped { at_bound: true, .. })), "{r:?}");
    }

    #[test]
    fn one_pass_finds_the_same_shortest_counterexamples_as_one_pass_each() {
        let model = ReplyRace::new("qemu-9.1".parse().unwrap(), Scenario::default());
        let names: Vec<&'static str> = PROPERTIES.iter().map(|(n, _)| *n).collect();
        let together = shortest_counterexamples(&model, &names, None, false, |_, _, _| {
            ControlFlow::Continue(())
        })
        .unwrap();
        assert!(together.len() >= 4, "{together:?}");
        for (name, path) in &together {
            let alone = shortest_counterexamples(&model, &[name], None, false, |_, _, _| {
                ControlFlow::Continue(())
            })
            .unwrap();
            assert_eq!(&alone[0].1, path, "{name}");
        }
        let reply = together.iter().find(|(n, _)| *n == "every reply reaches its requester");
        assert_eq!(reply.map(|(_, p)| p.len()), Some(6));
    }

    #[test]
    fn interrupting_a_check_returns_what_it_had() {
        let opts = CheckOptions { max_states: Some(100_000), ..CheckOptions::default() };
        let r =
            check_with("qemu-9.1".parse().unwrap(), largest(), &opts, |_| ControlFlow::Break(()));
        let i = r.expect_err("the callback stops it");
        assert_eq!(i.phase, Phase::Checking);
        assert_eq!(i.variant.to_string(), "qemu-9.1");
    }
}
