//! Progress on long work and Ctrl-C: a progress bar on standard error when
//! it is a terminal (indicatif), plain lines at most once a second when it is
//! not (a log file, a pipe, a test), and a flag that SIGINT raises so that a
//! command can print what it finished before it exits.
//!
//! Leaves out: signals other than SIGINT and SIGTERM (they end the process
//! as usual), and progress on standard output, which carries only results.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// The exit code after an interruption (128 + SIGINT, as shells report it).
pub const INTERRUPTED_EXIT: u8 = 130;

/// Raised by the first SIGINT or SIGTERM; a second one ends the process at
/// once.
#[derive(Clone)]
pub struct Interrupt(Arc<AtomicBool>);

impl Interrupt {
    /// Installs the handlers (the commands that report partial work call it
    /// before they start).
    pub fn install() -> anyhow::Result<Interrupt> {
        use signal_hook::consts::{SIGINT, SIGTERM};
        let flag = Arc::new(AtomicBool::new(false));
        for sig in [SIGINT, SIGTERM] {
            // Registered first, so it sees the flag as the earlier signal left it.
            signal_hook::flag::register_conditional_shutdown(
                sig,
                i32::from(INTERRUPTED_EXIT),
                Arc::clone(&flag),
            )?;
            signal_hook::flag::register(sig, Arc::clone(&flag))?;
        }
        Ok(Interrupt(flag))
    }

    /// Whether SIGINT has arrived.
    pub fn raised(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Progress of one piece of long work on standard error.
pub struct Meter {
    bar: Option<ProgressBar>,
    last_line: Instant,
}

/// How often a plain progress line is printed when stderr is not a terminal.
const LINE_PERIOD: Duration = Duration::from_secs(1);

impl Meter {
    /// A bar of `len` steps, or a spinner without `len`, when standard error
    /// is a terminal; plain lines otherwise.
    pub fn new(len: Option<u64>) -> Meter {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = match len {
                Some(n) => ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr())
                    .with_style(
                        ProgressStyle::with_template(
                            "{bar:30} {pos}/{len} {elapsed_precise} (eta {eta}) {msg}",
                        )
                        .expect("valid template"),
                    ),
                None => ProgressBar::new_spinner().with_style(
                    ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}")
                        .expect("valid template"),
                ),
            };
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        Meter { bar, last_line: Instant::now() }
    }

    /// Moves to `pos` (bars only) and shows `message`; without a terminal,
    /// prints `message` as a line at most once a second.
    pub fn update(&mut self, pos: Option<u64>, message: impl FnOnce() -> String) {
        match &self.bar {
            Some(bar) => {
                if let Some(p) = pos {
                    bar.set_position(p);
                }
                bar.set_message(message());
            }
            None if self.last_line.elapsed() >= LINE_PERIOD => {
                self.last_line = Instant::now();
                eprintln!("  {}", message());
            }
            None => {}
        }
    }

    /// Prints a line above the bar (or as a plain line).
    pub fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    /// Removes the bar.
    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
