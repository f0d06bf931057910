//! The `explain` subcommand (being written).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::Args;

/// Arguments of `explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The QEMU log file to explain.
    pub log: PathBuf,
}

/// Runs `explain`.
pub fn run(args: ExplainArgs, _json: bool) -> Result<ExitCode> {
    anyhow::bail!("explain is not implemented yet ({})", args.log.display())
}
