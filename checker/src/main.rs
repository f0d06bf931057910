//! `vhost-race`: model-checks the vhost-user reply race and answers with
//! evidence. With no arguments it checks every variant on the default
//! scenario and prints the verdict matrix, then each counterexample.
//!
//! Leaves out: anything that is not a front for the `model` and `reference`
//! crates; all logic lives there.

mod backend_cmd;
mod cli;
mod explain;
mod output;
mod progress;
mod qemu_matrix;
mod qemu_migrate;
mod qemu_miss;
mod qemu_peer;
mod qemu_replay;
mod scenarios;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // clap prints help and version to stdout with exit 0, errors to stderr with 2.
            let _ = e.print();
            return if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS };
        }
    };
    match cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
