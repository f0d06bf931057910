//! Text output: the verdict matrix (variants as rows, properties as
//! columns) and the counterexample diagrams under it.
//!
//! Leaves out: JSON, which is the verdicts serialised as they are.

use std::fmt::Write as _;

use model::verdict::Verdict;
use model::{ReplyRace, PROPERTIES};
use reference::scenario::Scenario;

/// A property's column header in the matrix: its title, phrased so that ✓
/// reads as the good outcome ("deadlock" becomes "no deadlock").
pub fn column(title: &str) -> String {
    match title {
        "deadlock" => "no deadlock".to_string(),
        t => t.to_string(),
    }
}

/// The matrix, with a legend of the column titles.
pub fn matrix(scenario: &Scenario, rows: &[Verdict]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "Scenario: {}\n", scenario.describe());
    let _ = write!(out, "{:<28}", "variant");
    let headers: Vec<String> = PROPERTIES.iter().map(|(_, t)| column(t)).collect();
    let width = |h: &String| h.chars().count().max(8);
    for h in &headers {
        let _ = write!(out, " {h:>w$}", w = width(h));
    }
    let _ = writeln!(out, " {:>10} {:>6} {:>8}", "states", "depth", "seconds");
    for row in rows {
        let _ = write!(out, "{:<28}", row.variant.to_string());
        for (p, h) in row.properties.iter().zip(&headers) {
            let _ = write!(out, " {:>w$}", if p.holds { "✓" } else { "✗" }, w = width(h));
        }
        let _ =
            writeln!(out, " {:>10} {:>6} {:>8.2}", row.unique_states, row.max_depth, row.seconds);
    }
    let _ = writeln!(out, "\nColumns:");
    for (name, title) in PROPERTIES {
        let _ = writeln!(out, "  {:>11}  {name}", column(title));
    }
    if rows.iter().any(|r| r.reduced) {
        let _ = writeln!(
            out,
            "  {:>11}  distinct states of the partial-order-reduced search (the same verdicts \
             as every interleaving; --full searches every interleaving)",
            "states"
        );
    } else {
        let _ = writeln!(out, "  {:>11}  distinct states, every interleaving", "states");
    }
    out
}

/// What a counterexample's heading adds when it is not a shortest one.
pub const NOT_SHORTEST: &str =
    "; not the shortest: the breadth-first search for that one stopped at the state bound";

/// Every ✗'s shortest counterexample, each diagram printed once per variant
/// with the list of properties it breaks.
pub fn counterexamples(rows: &[Verdict]) -> String {
    let mut out = String::new();
    for row in rows {
        let model = ReplyRace::new(row.variant, row.scenario);
        let mut shown: Vec<(&Vec<model::Action>, Vec<&str>, bool)> = Vec::new();
        for p in &row.properties {
            if let Some(ce) = &p.counterexample {
                match shown.iter_mut().find(|(a, _, _)| *a == ce) {
                    Some((_, names, _)) => names.push(p.name),
                    None => shown.push((ce, vec![p.name], p.shortest)),
                }
            }
        }
        for (actions, names, shortest) in shown {
            let _ = writeln!(
                out,
                "\n=== {}: counterexample to \"{}\" ({} steps{})\n",
                row.variant,
                names.join("\", \""),
                actions.len(),
                if shortest { "" } else { NOT_SHORTEST }
            );
            out.push_str(&model::trace::render(&model, actions));
        }
    }
    out
}
