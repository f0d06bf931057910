//! The depth-first search the verdicts come from: every reachable state of
//! a [`ReplyRace`], each checked against every [`Prop`], keeping only a
//! 64-bit fingerprint per visited state and the states still to expand.
//!
//! It visits states in the order stateright's depth-first checker does
//! (successors pushed in action order, the last pushed expanded first, a
//! state counted when first generated), so its unique-state count and depth
//! are stateright's; `tests/model.rs` checks both searches agree on every
//! pinned row. What it does not do, and why it exists: it keeps no path per
//! pending state (stateright's keeps one, a copy per state), hashes with
//! aHash instead of SipHash, takes no lock per insert, and checks the state
//! bound exactly. [`depth_first_parallel`] runs the same search on several
//! threads (`--threads`).
//!
//! Properties: every `always` property is checked on every state; the one
//! `eventually` property ([`Prop::Finishes`]: every thread finishes) is
//! checked on terminal states. Its condition, [`State::all_done`], stays true
//! once true (a finished thread never runs again), so "it never held on the
//! path to a terminal state" is "it does not hold in that terminal state",
//! which needs no per-path bits.
//!
//! Leaves out: counterexample paths (a second, breadth-first pass finds the
//! shortest ones: [`crate::verdict::shortest_counterexamples`]).

use std::ops::ControlFlow;

use stateright::Model;

use crate::packed::ForVerdicts;
use crate::reduce::Reduction;
use crate::{Action, Prop, ReplyRace, State};

/// What a search found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Searched {
    /// Distinct states met (by fingerprint).
    pub unique_states: usize,
    /// States generated, duplicates and initial states included (what the
    /// state bound counts, as stateright counts it).
    pub generated_states: usize,
    /// The depth of the deepest state expanded (an initial state is at 1).
    pub max_depth: usize,
    /// Properties some reachable state breaks, in [`Prop::ALL`] order.
    pub violated: Vec<Prop>,
    /// Whether every reachable state was expanded (false: the bound or the
    /// callback stopped the search).
    pub complete: bool,
}

/// One step of every search here: a state's moves (those the reduction
/// keeps, with `reduce`), the properties it breaks, and its fingerprint.
struct Expander<'m> {
    model: &'m ReplyRace,
    reduction: Option<Reduction<'m>>,
}

impl<'m> Expander<'m> {
    fn new(model: &'m ReplyRace, reduce: bool) -> Self {
        Expander { model, reduction: reduce.then(|| Reduction::new(model)) }
    }

    /// Fills `actions` with the moves to take from `s` and returns the
    /// properties `s` breaks, one bit per [`Prop`] (`1 << p as u8`).
    fn expand(&self, s: &State, actions: &mut Vec<Action>) -> u8 {
        actions.clear();
        self.model.actions(s, actions);
        let stuck = actions.is_empty();
        let broken = Prop::ALL
            .into_iter()
            .filter(|&p| !self.model.holds(p, s, stuck))
            .fold(0u8, |b, p| b | 1 << p as u8);
        if let Some(r) = &self.reduction {
            r.ample(s, actions);
        }
        broken
    }

    /// The fingerprint the visited set keeps: with the reduction, what can
    /// no longer change a verdict left out ([`ForVerdicts`]).
    fn fingerprint(&self, s: &State) -> u64 {
        if self.reduction.is_some() {
            fingerprint_for_verdicts(self.model, s)
        } else {
            fingerprint(s)
        }
    }
}

/// The properties of a bit set from [`Expander::expand`], in [`Prop::ALL`] order.
fn props(bits: u8) -> Vec<Prop> {
    Prop::ALL.into_iter().filter(|&p| bits & (1 << p as u8) != 0).collect()
}

/// How often (in generated states) the search reports its progress.
const REPORT_EVERY: usize = 1 << 16;

/// Searches every state reachable in `model`, depth first (with `reduce`,
/// only those the partial-order reduction of [`crate::reduce`] keeps,
/// which decide the same verdicts), stopping once
/// `max_states` states have been generated. `on_progress` gets a snapshot
/// every 65 536 generated states; `Break` stops the search, which then
/// returns what it found with `complete: false`.
pub fn depth_first(
    model: &ReplyRace,
    reduce: bool,
    max_states: Option<usize>,
    mut on_progress: impl FnMut(&Searched) -> ControlFlow<()>,
) -> Searched {
    depth_first_dyn(model, reduce, max_states, &mut on_progress)
}

/// [`depth_first`] with its callback behind a pointer, so that the search
/// is compiled once, here, at this crate's optimisation, and not again in
/// each caller's crate for each callback type.
fn depth_first_dyn(
    model: &ReplyRace,
    reduce: bool,
    max_states: Option<usize>,
    on_progress: &mut dyn FnMut(&Searched) -> ControlFlow<()>,
) -> Searched {
    let bound = max_states.unwrap_or(usize::MAX);
    let ex = Expander::new(model, reduce);
    let mut seen = FingerprintSet::default();
    let mut pending: Vec<(State, u32)> = Vec::new();
    let mut out = Searched {
        unique_states: 0,
        generated_states: 0,
        max_depth: 0,
        violated: Vec::new(),
        complete: false,
    };
    for s in model.init_states() {
        out.generated_states += 1;
        if seen.insert(ex.fingerprint(&s)) {
            pending.push((s, 1));
        }
    }
    let mut violated = 0u8;
    let mut actions: Vec<Action> = Vec::new();
    let mut next_report = REPORT_EVERY;
    // The fingerprints of the successors of the state being expanded.
    let mut fps: Vec<u64> = Vec::new();
    while let Some((state, depth)) = pending.pop() {
        out.max_depth = out.max_depth.max(depth as usize);
        violated |= ex.expand(&state, &mut actions);
        // Every successor is built on top of the stack, in the order of its
        // move, and its slot in the set fetched before any is looked up, so
        // that the set's cache misses overlap.
        let base = pending.len();
        for &a in &actions {
            pending.push((state.clone(), depth + 1));
            let (next, _) = pending.last_mut().expect("just pushed");
            if model.apply(next, a).is_none() {
                pending.pop();
                continue;
            }
            let fp = ex.fingerprint(next);
            seen.prefetch(fp);
            fps.push(fp);
        }
        drop(state);
        out.generated_states += fps.len();
        // The new ones stay, in order; the others are moved past them and dropped.
        let mut kept = base;
        for (i, &fp) in fps.iter().enumerate() {
            if seen.insert(fp) {
                pending.swap(kept, base + i);
                kept += 1;
            }
        }
        pending.truncate(kept);
        fps.clear();
        if out.generated_states >= next_report || out.generated_states >= bound {
            next_report = out.generated_states + REPORT_EVERY;
            out.unique_states = seen.len();
            out.violated = props(violated);
            if out.generated_states >= bound || on_progress(&out).is_break() {
                return out;
            }
        }
    }
    out.unique_states = seen.len();
    out.violated = props(violated);
    out.complete = true;
    out
}

/// A path from an initial state to a state that breaks `p`, depth first
/// over the same states [`depth_first`] visits (with `reduce`, the reduced
/// search's: every move on the path is a move of the model, so the path
/// replays like any other), or `None` if no state within `max_states`
/// generated states breaks it. Not the shortest path: a fallback for when
/// the breadth-first search for that one stops at the state bound.
pub fn path_to_violation(
    model: &ReplyRace,
    p: Prop,
    reduce: bool,
    max_states: Option<usize>,
) -> Option<Vec<Action>> {
    let bound = max_states.unwrap_or(usize::MAX);
    let ex = Expander::new(model, reduce);
    let fingerprint = |s: &State| ex.fingerprint(s);
    // The moves of a state still to try; the path is the stack's moves.
    let expand = |s: &State| -> Result<Vec<Action>, ()> {
        let mut actions = Vec::new();
        if ex.expand(s, &mut actions) & (1 << p as u8) != 0 {
            return Err(());
        }
        Ok(actions)
    };
    let mut seen = FingerprintSet::default();
    let mut generated = 0usize;
    for init in model.init_states() {
        if !seen.insert(fingerprint(&init)) {
            continue;
        }
        let Ok(actions) = expand(&init) else { return Some(Vec::new()) };
        let mut stack: Vec<(State, Vec<Action>, usize)> = vec![(init, actions, 0)];
        let mut path: Vec<Action> = Vec::new();
        while let Some((state, actions, next)) = stack.last_mut() {
            let Some(&a) = actions.get(*next) else {
                stack.pop();
                path.pop();
                continue;
            };
            *next += 1;
            let Some(succ) = model.next_state(state, a) else { continue };
            generated += 1;
            if generated >= bound {
                return None;
            }
            if !seen.insert(fingerprint(&succ)) {
                continue;
            }
            path.push(a);
            match expand(&succ) {
                Err(()) => return Some(path),
                Ok(actions) => stack.push((succ, actions, 0)),
            }
        }
    }
    None
}

/// [`depth_first`] on `threads` threads (more than 1): each thread searches
/// depth first from states it takes from a shared pool, and gives half of
/// its own stack back to the pool when the pool runs low; the visited set
/// is shared, in 256 shards each behind its own lock. Every reachable state
/// (of the reduced graph, with `reduce`: which moves it keeps depends on the
/// state alone) is expanded exactly once, so the unique-state count and the
/// verdicts are [`depth_first`]'s; the depth is the deepest state expanded,
/// which depends on the schedule. The bound and the callback are looked at
/// every 65 536 generated states, as there.
pub fn depth_first_parallel(
    model: &ReplyRace,
    reduce: bool,
    max_states: Option<usize>,
    threads: usize,
    mut on_progress: impl FnMut(&Searched) -> ControlFlow<()>,
) -> Searched {
    depth_first_parallel_dyn(model, reduce, max_states, threads, &mut on_progress)
}

/// [`depth_first_parallel`], compiled once (see [`depth_first_dyn`]).
fn depth_first_parallel_dyn(
    model: &ReplyRace,
    reduce: bool,
    max_states: Option<usize>,
    threads: usize,
    on_progress: &mut dyn FnMut(&Searched) -> ControlFlow<()>,
) -> Searched {
    use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};
    use std::sync::{Condvar, Mutex};

    const SHARDS: usize = 256;
    /// States a thread takes from the pool at once, and the stack size past
    /// which it gives half back while the pool is low.
    const BATCH: usize = 32;

    let bound = max_states.unwrap_or(usize::MAX);
    let ex = Expander::new(model, reduce);
    let fingerprint = |s: &State| ex.fingerprint(s);
    let seen: Vec<Mutex<FingerprintSet>> =
        (0..SHARDS).map(|_| Mutex::new(FingerprintSet::default())).collect();
    let insert = |fp: u64| {
        let shard = (fp >> 56) as usize % SHARDS;
        seen[shard].lock().expect("no thread panics holding a shard").insert(fp)
    };
    // The pool, how many threads wait on it, and whether the search is over.
    struct Pool {
        states: Vec<(State, u32)>,
        idle: usize,
        over: bool,
    }
    let pool = Mutex::new(Pool { states: Vec::new(), idle: 0, over: false });
    let wake = Condvar::new();
    let generated = AtomicUsize::new(0);
    let max_depth = AtomicUsize::new(0);
    let violated = AtomicU8::new(0);
    let stop = AtomicBool::new(false);
    for s in model.init_states() {
        generated.fetch_add(1, Relaxed);
        if insert(fingerprint(&s)) {
            pool.lock().expect("unpoisoned").states.push((s, 1));
        }
    }
    let unique = || seen.iter().map(|m| m.lock().expect("unpoisoned").len()).sum::<usize>();
    let snapshot = |complete: bool| Searched {
        unique_states: unique(),
        generated_states: generated.load(Relaxed),
        max_depth: max_depth.load(Relaxed),
        violated: props(violated.load(Relaxed)),
        complete,
    };
    // Ends the search for every thread, waiting ones included.
    let halt = || {
        stop.store(true, Relaxed);
        let mut p = pool.lock().expect("unpoisoned");
        p.over = true;
        wake.notify_all();
    };
    let worker = || {
        let mut local: Vec<(State, u32)> = Vec::new();
        let mut actions: Vec<Action> = Vec::new();
        loop {
            if stop.load(Relaxed) {
                return halt();
            }
            if local.is_empty() {
                let mut p = pool.lock().expect("unpoisoned");
                loop {
                    if p.over || stop.load(Relaxed) {
                        p.over = true;
                        wake.notify_all();
                        return;
                    }
                    if !p.states.is_empty() {
                        let from = p.states.len().saturating_sub(BATCH);
                        local.extend(p.states.drain(from..));
                        break;
                    }
                    p.idle += 1;
                    if p.idle == threads {
                        p.over = true;
                        wake.notify_all();
                        return;
                    }
                    p = wake.wait(p).expect("unpoisoned");
                    p.idle -= 1;
                }
            }
            let (state, depth) = local.pop().expect("a state to expand");
            max_depth.fetch_max(depth as usize, Relaxed);
            let broken = ex.expand(&state, &mut actions);
            if broken != 0 {
                violated.fetch_or(broken, Relaxed);
            }
            let mut n = 0;
            for &a in &actions {
                let Some(next) = model.next_state(&state, a) else { continue };
                n += 1;
                if insert(fingerprint(&next)) {
                    local.push((next, depth + 1));
                }
            }
            if generated.fetch_add(n, Relaxed) + n >= bound {
                halt();
            }
            if local.len() > BATCH {
                let mut p = pool.lock().expect("unpoisoned");
                if p.idle > 0 || p.states.len() < BATCH {
                    // The oldest (shallowest) half: the most work to share.
                    let half = local.len() / 2;
                    p.states.extend(local.drain(..half));
                    wake.notify_all();
                }
            }
        }
    };
    let finished = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads).map(|_| scope.spawn(worker)).collect();
        let mut next_report = REPORT_EVERY;
        while !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(std::time::Duration::from_millis(5));
            let g = generated.load(Relaxed);
            if g >= next_report {
                next_report = g + REPORT_EVERY;
                if on_progress(&snapshot(false)).is_break() {
                    halt();
                }
            }
        }
        for h in handles {
            h.join().expect("a search thread panicked");
        }
        !stop.load(Relaxed)
    });
    snapshot(finished && generated.load(Relaxed) < bound)
}

/// A state's fingerprint: aHash with fixed keys ([`crate::stream::HASH_KEYS`]),
/// so that runs repeat; 64 bits, so that two of N states share one with
/// odds about N²/2⁶⁵: below one in a million up to 6 million states, about
/// one in a thousand at 150 million.
pub(crate) fn fingerprint(s: &State) -> u64 {
    crate::stream::HASH_KEYS.hash_one(s)
}

/// A state's fingerprint with what can no longer change a verdict left
/// out, its log's lines among it (`packed::ForVerdicts`).
pub(crate) fn fingerprint_for_verdicts(model: &ReplyRace, s: &State) -> u64 {
    crate::stream::HASH_KEYS.hash_one(ForVerdicts(model, s))
}

/// `n` empty slots. A large table is asked to sit on huge pages: each
/// insert touches a random slot, and with 4 KiB pages a table of hundreds
/// of megabytes misses the TLB on nearly every one (Linux's transparent
/// huge pages are often enabled on request only, `madvise`).
fn zeroed_slots(n: usize) -> Vec<u64> {
    let slots = vec![0u64; n];
    const HUGE: usize = 2 << 20;
    let bytes = n * std::mem::size_of::<u64>();
    if bytes >= 2 * HUGE {
        // The allocator maps a table this large fresh, its pages untouched:
        // advise the whole huge pages inside it before the first write.
        let start = (slots.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (slots.as_ptr() as usize + bytes) / HUGE * HUGE;
        if let Some(at) = std::ptr::NonNull::new(start as *mut std::ffi::c_void) {
            // SAFETY: [start, end) lies inside the live allocation `slots`;
            // the advice changes how its pages are backed, not its contents.
            // A kernel without huge pages refuses it, which changes nothing.
            let _ = unsafe {
                nix::sys::mman::madvise(at, end - start, nix::sys::mman::MmapAdvise::MADV_HUGEPAGE)
            };
        }
    }
    slots
}

/// The set of visited fingerprints: open addressing with linear probing in
/// one array of `u64`, so that an insert touches one cache line (the
/// standard library's set touches two: its control bytes and its slots;
/// on this machine that was a quarter of the search's time). Fingerprint 0
/// marks an empty slot, so 0 is stored as 1; the table doubles at 3/4 full.
#[derive(Clone, Debug)]
pub(crate) struct FingerprintSet {
    slots: Vec<u64>,
    len: usize,
}

impl Default for FingerprintSet {
    fn default() -> Self {
        FingerprintSet { slots: vec![0; 1 << 10], len: 0 }
    }
}

impl FingerprintSet {
    /// Adds `fp`; whether it was not there yet.
    pub(crate) fn insert(&mut self, fp: u64) -> bool {
        if (self.len + 1) * 4 > self.slots.len() * 3 {
            self.grow();
        }
        let fp = fp.max(1);
        if Self::place(&mut self.slots, fp) {
            self.len += 1;
            true
        } else {
            false
        }
    }

    /// Asks the processor to fetch the slot where `fp` would go, ahead of
    /// [`FingerprintSet::insert`] (a hint; nothing on other architectures).
    pub(crate) fn prefetch(&self, fp: u64) {
        #[cfg(target_arch = "x86_64")]
        {
            let slot = &self.slots[fp.max(1) as usize & (self.slots.len() - 1)];
            // SAFETY: a prefetch hint for the address of a live slot; it
            // neither reads nor writes memory as the program sees it.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                    (slot as *const u64).cast(),
                )
            };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = fp;
    }

    /// Number of fingerprints in the set.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Puts `fp` (not 0) into `slots`; whether it was not there yet.
    fn place(slots: &mut [u64], fp: u64) -> bool {
        let mask = slots.len() - 1;
        // Fingerprints are aHash outputs: their low bits are uniform.
        let mut i = fp as usize & mask;
        loop {
            match slots[i] {
                0 => {
                    slots[i] = fp;
                    return true;
                }
                x if x == fp => return false,
                _ => i = (i + 1) & mask,
            }
        }
    }

    fn grow(&mut self) {
        let mut bigger = zeroed_slots(self.slots.len() * 2);
        for &fp in self.slots.iter().filter(|&&fp| fp != 0) {
            Self::place(&mut bigger, fp);
        }
        self.slots = bigger;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fingerprint_set_keeps_each_fingerprint_once_across_growth() {
        let mut set = FingerprintSet::default();
        // 0 and 1 are one fingerprint (0 marks an empty slot).
        let fps: Vec<u64> = (0..5_000u64).map(|i| i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).collect();
        for &fp in &fps {
            assert!(set.insert(fp));
        }
        assert!(!set.insert(1), "0 was stored as 1");
        for &fp in &fps {
            assert!(!set.insert(fp));
        }
        assert_eq!(set.len(), fps.len());
        assert!(set.slots.len() >= fps.len() * 4 / 3);
    }
}
