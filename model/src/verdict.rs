//! Running the checker on a variant and turning its result into a verdict
//! row: one entry per property, holds or a shortest counterexample, with the
//! run's size and time. The checker, the tests and the benchmarks all use it.
//!
//! Every run explores the whole state space (stateright's default would stop
//! once every property has a discovery, which makes state counts
//! meaningless), so a ✓ always comes from a complete exhaustive run.
//!
//! Leaves out: symmetry reduction (the threads are not interchangeable) and
//! on-demand checking.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::time::{Duration, Instant};

use reference::scenario::{Scenario, Variant};
use stateright::{Checker, CheckerBuilder, HasDiscoveries, Model};

use crate::{Action, ReplyRace, PROPERTIES};

/// How to run a check.
#[derive(Clone, Debug)]
pub struct CheckOptions {
    /// Checker threads; 1 gives shortest counterexamples and a deterministic run.
    pub threads: usize,
    /// Print progress to standard error while checking.
    pub progress: bool,
    /// Stop after generating this many states, duplicates included (a bound
    /// on memory); the verdict is then incomplete and claims no ✓.
    pub max_states: Option<usize>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { threads: 1, progress: false, max_states: None }
    }
}

/// One property's verdict.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PropertyVerdict {
    /// The property, in plain words.
    pub name: &'static str,
    /// Whether it holds in every reachable state (or on every path).
    pub holds: bool,
    /// The counterexample's actions from the initial state, if it fails.
    pub counterexample: Option<Vec<Action>>,
}

/// A variant's row of the matrix.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Verdict {
    /// What was checked.
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
    /// Whether the whole state space was explored (false only when
    /// `max_states` stopped it, in which case no ✓ is claimed).
    pub complete: bool,
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

/// The checker every verdict (and the benchmarks) runs: `threads` threads,
/// never stopping at the first discoveries, so it explores everything.
pub fn exhaustive(model: ReplyRace, threads: usize) -> CheckerBuilder<ReplyRace> {
    model.checker().threads(threads.max(1)).finish_when(HasDiscoveries::AnyOf(BTreeSet::new()))
}

/// Checks `variant` on `scenario` exhaustively (breadth first).
pub fn check(variant: Variant, scenario: Scenario, opts: &CheckOptions) -> Verdict {
    let model = ReplyRace::new(variant, scenario);
    let start = Instant::now();
    let mut builder = exhaustive(model, opts.threads);
    if let Some(n) = opts.max_states {
        builder = builder.target_state_count(n);
    }
    let checker = builder.spawn_bfs();
    // Without progress, `join` waits; with it, poll and report once a second.
    let mut last_report = Instant::now();
    while opts.progress && !checker.is_done() {
        std::thread::sleep(Duration::from_millis(5));
        if last_report.elapsed() >= Duration::from_secs(1) {
            last_report = Instant::now();
            let _ = writeln!(
                std::io::stderr(),
                "  {variant}: {} unique states, depth {}, {:.1}s",
                checker.unique_state_count(),
                checker.max_depth(),
                start.elapsed().as_secs_f64()
            );
        }
    }
    let checker = checker.join();
    let unique_states = checker.unique_state_count();
    // stateright's target counts every generated state, duplicates included.
    let complete = opts.max_states.is_none_or(|n| checker.state_count() < n);
    let discoveries = checker.discoveries();
    let model = checker.model();
    let properties = PROPERTIES
        .iter()
        .map(|(name, _)| {
            // stateright keeps the last violating state it met, not the first;
            // a second breadth-first pass finds the shortest path.
            let counterexample =
                discoveries.get(name).map(|_| shortest_counterexample(model, name));
            PropertyVerdict { name, holds: counterexample.is_none() && complete, counterexample }
        })
        .collect();
    Verdict {
        variant,
        scenario,
        properties,
        unique_states,
        max_depth: checker.max_depth(),
        seconds: start.elapsed().as_secs_f64(),
        complete,
    }
}

/// The shortest path (fewest actions) to a state violating the property
/// `name`: for an `always` property, a state where it is false; for an
/// `eventually` property, a terminal state where it is false (its conditions
/// here only become true in terminal states, so this is a path on which it
/// never holds).
///
/// Panics if the property has no counterexample: call it for discoveries only.
pub fn shortest_counterexample(model: &ReplyRace, name: &'static str) -> Vec<Action> {
    use stateright::Expectation;
    use std::collections::{HashMap, VecDeque};

    let property = model.property(name);
    let violates = |s: &crate::State| match property.expectation {
        Expectation::Always => !(property.condition)(model, s),
        Expectation::Eventually => model.is_stuck(s) && !(property.condition)(model, s),
        Expectation::Sometimes => (property.condition)(model, s),
    };
    // (state, parent index, action from the parent)
    let mut nodes: Vec<(crate::State, usize, Option<Action>)> = Vec::new();
    let mut seen: HashMap<crate::State, ()> = HashMap::new();
    let mut queue = VecDeque::new();
    for s in model.init_states() {
        seen.insert(s.clone(), ());
        nodes.push((s, usize::MAX, None));
        queue.push_back(nodes.len() - 1);
    }
    let mut actions = Vec::new();
    while let Some(i) = queue.pop_front() {
        if violates(&nodes[i].0) {
            let mut path = Vec::new();
            let mut j = i;
            while let Some(a) = nodes[j].2 {
                path.push(a);
                j = nodes[j].1;
            }
            path.reverse();
            return path;
        }
        actions.clear();
        model.actions(&nodes[i].0, &mut actions);
        for &a in &actions {
            if let Some(next) = model.next_state(&nodes[i].0, a) {
                if seen.insert(next.clone(), ()).is_none() {
                    nodes.push((next, i, Some(a)));
                    queue.push_back(nodes.len() - 1);
                }
            }
        }
    }
    panic!("property {name:?} has no counterexample")
}
