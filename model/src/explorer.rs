//! The model as stateright's Explorer shows it (`vhost-race explore`): the
//! bodies of the [`Model`] hooks `format_action`, `format_step` and
//! `as_svg` that `impl Model for ReplyRace` delegates to, and the deep link
//! that opens a counterexample of `trace` in the Explorer.
//!
//! Each page names the variant and the scenario (in the step text and at
//! the top of the SVG), describes the step taken as the CLI diagram does
//! (thread, op, bytes read, the QEMU line it logs; [`crate::trace`] writes
//! those texts), draws the path so far as the race diagram in SVG, and
//! marks the properties the state violates.
//!
//! Leaves out: the Explorer's own page (stateright's `ui/`: its header says
//! "Model: ReplyRace", from the Rust type name, which no hook changes), and
//! the Explorer's counterexamples, which come from its on-demand search and
//! are not the shortest: [`explore_fragment`] links to the shortest one.

use std::fmt::Write as _;

use protocol::scenario::ThreadRole;
use stateright::{Expectation, Model, Path};

use crate::trace::{self, Column};
use crate::{Action, ReplyRace, State, PROPERTIES};

/// `variant · scenario`: what the page is about.
pub fn title(model: &ReplyRace) -> String {
    format!("{} · {}", model.variant, model.scenario.describe())
}

/// An action without its state (the Explorer's lists of actions): who
/// moves and what kind of step it is. The step text with the bytes read is
/// in [`format_step`].
pub fn format_action(action: &Action) -> String {
    let who = trace::column(*action).title();
    match *action {
        Action::Step(_) => format!("{who}: next op"),
        Action::Read(_, n) => format!("{who}: read {n} bytes"),
        Action::LogReadError(_) => format!("{who}: error_report of the failed read check"),
        Action::ServeBackendChannel => format!("{who}: take BQL, read a back-end message"),
        Action::RunPostcopyBh => format!("{who}: take BQL, run the postcopy cleanup BH"),
        Action::BackendHandle => format!("{who}: handle the next request"),
        Action::BackendWritePayload => format!("{who}: write the reply's payload"),
        Action::BackendSendMiss => format!("{who}: send BACKEND_IOTLB_MSG miss"),
        Action::BackendReadMissReply => format!("{who}: read the reply to its miss"),
    }
}

/// How a state stands against one property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mark {
    /// The state satisfies it (or, for "every thread finishes", the path
    /// can still go on).
    Holds,
    /// The state breaks it.
    Violated,
}

/// Every property with its column title and how `s` stands against it.
/// An `eventually` property is violated only by a state where the path
/// ends (nothing can move) without its condition.
pub fn marks(model: &ReplyRace, s: &State) -> Vec<(&'static str, &'static str, Mark)> {
    let stuck = model.is_stuck(s);
    model
        .properties()
        .into_iter()
        .zip(PROPERTIES)
        .map(|(p, (name, title))| {
            let ok = (p.condition)(model, s);
            let violated = match p.expectation {
                Expectation::Always => !ok,
                Expectation::Eventually => !ok && stuck,
                Expectation::Sometimes => false,
            };
            (name, title, if violated { Mark::Violated } else { Mark::Holds })
        })
        .collect()
}

/// The names of the properties `s` violates, as "name (title)".
pub fn violated(model: &ReplyRace, s: &State) -> Vec<String> {
    marks(model, s)
        .into_iter()
        .filter(|m| m.2 == Mark::Violated)
        .map(|(name, title, _)| format!("{name} ({title})"))
        .collect()
}

fn holder(h: Option<ThreadRole>) -> &'static str {
    h.map_or("nobody", |r| r.name())
}

/// The text the Explorer shows for a step: the title, the step as the CLI
/// diagram says it, the QEMU lines it logs, the properties the state after
/// it violates, and the locks, streams and log of that state.
pub fn format_step(model: &ReplyRace, last: &State, action: Action) -> Option<String> {
    let next = model.next_state(last, action)?;
    let mut out = String::new();
    let _ = writeln!(out, "{}\n", title(model));
    let _ = writeln!(
        out,
        "step: {}: {}",
        trace::column(action).title(),
        trace::describe(model, last, action)
    );
    let logged = &trace::log_lines(&next)[last.log.len()..];
    for l in logged {
        let _ = writeln!(out, "  logs: {l}");
    }
    let bad = violated(model, &next);
    if bad.is_empty() {
        let _ = writeln!(out, "\nviolates nothing: every property holds in this state");
    } else {
        let _ = writeln!(out, "\nVIOLATES: {}", bad.join("; "));
    }
    for due in trace::pending_reports(&next) {
        let _ = writeln!(
            out,
            "next for {}: its failed read check is logged (whatever runs first)",
            trace::column(due).title()
        );
    }
    let _ =
        writeln!(out, "\nBQL: {}; request/reply mutex: {}", holder(next.bql), holder(next.mutex));
    let _ = writeln!(
        out,
        "main socket: {} bytes to the back-end, {} reply bytes waiting; back-end channel: {} bytes",
        next.to_backend.len(),
        next.to_frontend.len(),
        next.backend_channel.len() + next.backend_channel_replies.len()
    );
    if model.is_stuck(&next) {
        if next.all_done() {
            let _ = writeln!(out, "the path ends here: every thread is done");
        } else {
            let _ = writeln!(out, "stuck: nothing can move:");
            for b in trace::blocked_on(model, &next) {
                let _ = writeln!(out, "  {b}");
            }
        }
    }
    let log = trace::log_lines(&next);
    if log.is_empty() {
        let _ = writeln!(out, "\nQEMU has logged nothing so far.");
    } else {
        let _ = writeln!(out, "\nQEMU log so far:");
        for l in log {
            let _ = writeln!(out, "{l}");
        }
    }
    Some(out)
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The path so far as the race diagram (one column per thread, the steps
/// in order, logged lines in red under their step), titled with the variant
/// and the scenario, followed by the properties the last state violates and
/// QEMU's log.
pub fn as_svg(model: &ReplyRace, path: Path<State, Action>) -> Option<String> {
    const COL: usize = 262;
    const NUM: usize = 36;
    const LINE: usize = 16;
    const CHARS: usize = 34;
    let last = path.last_state().clone();
    let actions = path.into_actions();
    let steps = trace::steps(model, &actions);
    let mut columns: Vec<Column> = ThreadRole::ALL
        .into_iter()
        .filter(|r| model.scenario.threads(model.variant.policy).contains(r))
        .map(Column::Thread)
        .collect();
    columns.push(Column::Backend);
    let width = NUM + COL * columns.len() + 10;
    let mut body = String::new();
    let mut y = 24;
    let text = |body: &mut String, x: usize, y: usize, attrs: &str, s: &str| {
        let _ = writeln!(body, r#"<text x="{x}" y="{y}" {attrs}>{}</text>"#, esc(s));
    };
    text(&mut body, 8, y, r#"font-size="16" font-weight="bold""#, &model.variant.to_string());
    y += LINE + 2;
    text(&mut body, 8, y, "", &model.scenario.describe());
    y += LINE + 10;
    for (i, c) in columns.iter().enumerate() {
        text(&mut body, NUM + i * COL + 6, y, r#"font-weight="bold""#, c.title());
    }
    y += 6;
    let table_top = y;
    let _ =
        writeln!(body, r##"<line x1="4" y1="{y}" x2="{}" y2="{y}" stroke="#888"/>"##, width - 4);
    y += LINE;
    for (i, step) in steps.iter().enumerate() {
        let col = columns.iter().position(|&c| c == step.column).unwrap_or(0);
        let x = NUM + col * COL + 6;
        text(&mut body, 8, y, r##"fill="#666""##, &format!("{:>3}", i + 1));
        let mut lines = 0;
        for l in trace::wrap(&step.text, CHARS) {
            text(&mut body, x, y + lines * LINE, "", &l);
            lines += 1;
        }
        for logged in &step.logged {
            for l in trace::wrap(&format!("! {}", logged.error), CHARS) {
                text(&mut body, x, y + lines * LINE, r##"fill="#b00000""##, &l);
                lines += 1;
            }
        }
        y += lines * LINE + 4;
    }
    if steps.is_empty() {
        text(&mut body, NUM + 6, y, r##"fill="#666""##, "(initial state: no step yet)");
        y += LINE + 4;
    }
    for i in 0..=columns.len() {
        let x = NUM + i * COL;
        let _ = writeln!(
            body,
            r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#ccc"/>"##,
            table_top - LINE - 4,
            y - LINE + 4
        );
    }
    y += 8;
    let bad = violated(model, &last);
    if bad.is_empty() {
        text(&mut body, 8, y, r##"fill="#006000""##, "✓ this state violates no property");
        y += LINE;
    } else {
        for b in bad {
            text(
                &mut body,
                8,
                y,
                r##"fill="#b00000" font-weight="bold""##,
                &format!("✗ violates: {b}"),
            );
            y += LINE;
        }
    }
    y += 6;
    let log = trace::log_lines(&last);
    if log.is_empty() {
        text(&mut body, 8, y, "", "QEMU has logged nothing so far.");
        y += LINE;
    } else {
        text(&mut body, 8, y, r#"font-weight="bold""#, "QEMU log:");
        y += LINE;
        for l in log {
            text(&mut body, 8, y, r##"fill="#b00000""##, &l.to_string());
            y += LINE;
        }
    }
    let height = y + 8;
    Some(format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" font-size="12" xml:space="preserve"><rect width="100%" height="100%" fill="#fff"/>
{body}</svg>"##
    ))
}

/// The Explorer's fragment (`#/steps/0/…`: the init state's index, then
/// each action's index among the state's actions) that opens the path of
/// `actions` from the initial state; `None` if they are not a path.
pub fn explore_fragment(model: &ReplyRace, actions: &[Action]) -> Option<String> {
    let init = model.init_states().into_iter().next()?;
    let path = Path::from_actions(model, init, actions)?;
    Some(format!("#/steps/{}", path.encode(model)))
}

#[cfg(test)]
mod tests {
    use protocol::scenario::{LockPolicy, Scenario, Variant};
    use stateright::Checker;

    use super::*;
    use crate::Prop;

    /// The breadth-first checker's discovery of `name` (a shortest path).
    fn discovery(model: &ReplyRace, name: &'static str) -> Option<Vec<Action>> {
        let checker = model.clone().checker().spawn_bfs().join();
        checker.discovery(name).map(|p| p.into_actions())
    }

    /// Replays an Explorer fragment the way the Explorer does: each index
    /// picks among the actions enabled in the state reached so far.
    fn replay(model: &ReplyRace, fragment: &str) -> Vec<Action> {
        let mut idx = fragment.trim_start_matches("#/steps/").split('/');
        assert_eq!(idx.next(), Some("0"), "one initial state");
        let mut s = model.init_states().remove(0);
        let mut out = Vec::new();
        for i in idx {
            let mut enabled = Vec::new();
            model.actions(&s, &mut enabled);
            let a = enabled[i.parse::<usize>().unwrap()];
            s = model.next_state(&s, a).unwrap();
            out.push(a);
        }
        out
    }

    #[test]
    fn the_fragment_replays_to_the_counterexample() {
        let model = ReplyRace::new(Variant::new(LockPolicy::Qemu91), Scenario::default());
        let mut checked = 0;
        for (name, _) in PROPERTIES {
            let Some(ce) = discovery(&model, name) else { continue };
            checked += 1;
            let fragment = explore_fragment(&model, &ce).unwrap();
            assert_eq!(replay(&model, &fragment), ce, "{name}");
        }
        assert_eq!(checked, 5, "qemu-9.1 breaks five properties on the default scenario");
    }

    #[test]
    fn a_stuck_state_violates_both_the_deadlock_and_the_liveness_property() {
        let scenario = Scenario { miss_need_reply: true, ..Scenario::default() };
        let model = ReplyRace::new(Variant::new(LockPolicy::Mutex), scenario);
        let ce = discovery(&model, Prop::Deadlock.name()).expect("the mutex deadlocks here");
        let last = trace::final_state(&model, &ce);
        let bad = violated(&model, &last);
        assert!(bad.contains(&"no deadlock (deadlock)".to_string()), "{bad:?}");
        assert!(bad.contains(&"every thread finishes (finishes)".to_string()), "{bad:?}");
        // One step earlier something could still move: liveness is not yet broken.
        let before = trace::final_state(&model, &ce[..ce.len() - 1]);
        assert!(!violated(&model, &before).iter().any(|b| b.starts_with("every thread finishes")));
    }

    #[test]
    fn the_initial_state_violates_nothing_and_its_svg_names_the_variant() {
        let model = ReplyRace::new(Variant::new(LockPolicy::Qemu91), Scenario::default());
        let init = model.init_states().remove(0);
        assert!(violated(&model, &init).is_empty());
        let svg = as_svg(&model, Path::from_actions(&model, init, &[]).unwrap()).unwrap();
        assert!(svg.contains(">qemu-9.1</text>"), "{svg}");
        assert!(svg.contains("✓ this state violates no property"));
    }
}
