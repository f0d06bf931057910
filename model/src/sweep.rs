//! The scenario-wide sweep: every combination of the scenario flags on top
//! of a base scenario, and each variant's verdict on each, summarised as
//! safe / races / deadlocks. Answers "which design holds on *every*
//! scenario?" in one table; the CLI's `scenarios` prints it and the tests pin
//! it.
//!
//! The flags are the CLI's boolean scenario flags. `--short-reads` and
//! `--queued-reads` are two models of a read, never set together.
//! Combinations that describe the same scenario are listed once: without
//! device start, `--device-start-without-bql` and `--device-stop` change
//! nothing, so 60 scenarios remain of the 96 combinations. The numeric
//! bounds (virtqueues, misses) come from the base scenario.
//!
//! Leaves out: counterexamples (a failing cell names the `check` command
//! that prints them) and combinations the tools refuse (no thread at all).

use protocol::scenario::flag::*;
use protocol::scenario::{Scenario, Variant};
use serde::Serialize;

use crate::verdict::{self, CheckOptions, Verdict};
use crate::{Prop, PROPERTIES};

/// One combination of the boolean flags, and the scenario it makes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlagSet {
    /// The flags set, as typed on the command line, in a fixed order.
    pub flags: Vec<&'static str>,
    /// The scenario: the base with these flags applied.
    pub scenario: Scenario,
}

impl FlagSet {
    /// The flags as one command-line fragment ("(none)" for the base).
    pub fn describe(&self) -> String {
        if self.flags.is_empty() {
            "(none)".to_string()
        } else {
            self.flags.join(" ")
        }
    }
}

/// Every distinct scenario the boolean flags make on top of `base` (whose
/// own boolean flags are ignored), the base first. Combinations that leave
/// no thread using the socket are left out.
pub fn flag_combinations(base: Scenario) -> Vec<FlagSet> {
    let names = [
        WITHOUT_BQL,
        SHORT_READS,
        MISS_NEED_REPLY,
        NO_DEVICE_START,
        NO_POSTCOPY_END,
        DEVICE_STOP,
        QUEUED_READS,
    ];
    let mut out: Vec<FlagSet> = Vec::new();
    for bits in 0u32..1 << names.len() {
        let on = |i: usize| bits & (1 << i) != 0;
        let device_start = !on(3);
        // Without device start these two flags describe the same scenario.
        if !device_start && (on(0) || on(5)) {
            continue;
        }
        let scenario = Scenario {
            device_start,
            device_start_holds_bql: !on(0),
            short_reads: on(1),
            miss_need_reply: on(2),
            postcopy_end: !on(4),
            device_stop: on(5),
            queued_reads: on(6),
            ..base
        };
        // No thread at all, or two models of a read at once.
        if scenario.validate().is_err() {
            continue;
        }
        let flags = names.iter().enumerate().filter(|&(i, _)| on(i)).map(|(_, &n)| n).collect();
        out.push(FlagSet { flags, scenario });
    }
    out
}

/// What a variant does on one scenario, from its verdict: whether it races
/// and whether it hangs, each proven (a violation found), ruled out (the
/// search was complete and found none) or unknown (the search stopped at its
/// bound before finding one).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Outcome {
    /// A reply, framing, log, start or channel property fails.
    pub races: Option<bool>,
    /// A thread can hang: no deadlock or every thread finishes fails.
    pub hangs: Option<bool>,
}

impl Outcome {
    /// Every property holds.
    pub const SAFE: Outcome = Outcome { races: Some(false), hangs: Some(false) };

    /// The outcome of a verdict.
    pub fn of(v: &Verdict) -> Outcome {
        let hang_names = [Prop::Deadlock.name(), Prop::Finishes.name()];
        let class = |hang: bool| {
            let found =
                v.properties.iter().any(|p| p.violated && hang_names.contains(&p.name) == hang);
            if found {
                Some(true)
            } else if v.complete {
                Some(false)
            } else {
                None
            }
        };
        Outcome { races: class(false), hangs: class(true) }
    }

    /// The table cell: ✓ safe, R races, D hangs, RD both; `?` after a
    /// letter (or alone) where the bound left the other unknown.
    pub fn cell(self) -> String {
        let mut c = String::new();
        if self.races == Some(true) {
            c.push('R');
        }
        if self.hangs == Some(true) {
            c.push('D');
        }
        if self.races.is_none() || self.hangs.is_none() {
            c.push('?');
        }
        if c.is_empty() {
            c.push('✓');
        }
        c
    }
}

/// One cell of the sweep.
#[derive(Clone, Debug, Serialize)]
pub struct Cell {
    /// The variant, as the CLI spells it.
    #[serde(serialize_with = "verdict::cli_name")]
    pub variant: Variant,
    /// Its outcome.
    pub outcome: Outcome,
    /// The properties that fail.
    pub failing: Vec<&'static str>,
    /// Unique states explored.
    pub unique_states: usize,
}

/// One row of the sweep: a scenario and every variant's outcome on it.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    /// The flag combination.
    pub flags: FlagSet,
    /// One cell per variant, in the order asked.
    pub cells: Vec<Cell>,
}

/// The options of a sweep check: verdicts only, no shortest-counterexample
/// search, under `max_states`, reduced ([`crate::reduce`]) or not.
pub fn options(max_states: Option<usize>, reduce: bool) -> CheckOptions {
    CheckOptions { shortest: false, max_states, reduce, ..CheckOptions::default() }
}

impl Cell {
    /// The cell of a verdict.
    pub fn of(v: &Verdict) -> Cell {
        Cell {
            variant: v.variant,
            outcome: Outcome::of(v),
            failing: PROPERTIES
                .iter()
                .map(|(n, _)| *n)
                .filter(|n| v.property(n).is_some_and(|p| p.violated))
                .collect(),
            unique_states: v.unique_states,
        }
    }
}

/// Checks `variant` on `scenario` for the sweep (reduced).
pub fn cell(variant: Variant, scenario: Scenario, max_states: Option<usize>) -> Cell {
    Cell::of(&verdict::check(variant, scenario, &options(max_states, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixty_distinct_scenarios_base_first() {
        let all = flag_combinations(Scenario::default());
        assert_eq!(all.len(), 60);
        assert_eq!(all[0].scenario, Scenario::default());
        assert!(all[0].flags.is_empty());
        let mut scenarios: Vec<String> = all.iter().map(|f| f.scenario.describe()).collect();
        scenarios.sort();
        scenarios.dedup();
        assert_eq!(scenarios.len(), 60, "each combination is a distinct scenario");
    }

    #[test]
    fn no_thread_combinations_are_left_out() {
        let base = Scenario { backend_misses: 0, ..Scenario::default() };
        // --no-device-start --no-postcopy-end with no miss has no thread
        // (with any of the three read models, with or without NEED_REPLY).
        let all = flag_combinations(base);
        assert!(all.iter().all(|f| f.scenario.validate().is_ok()));
        assert_eq!(all.len(), 54);
    }
}
