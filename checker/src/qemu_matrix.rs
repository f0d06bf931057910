//! `vhost-race qemu-matrix`: the matrix held against QEMU's binaries. For
//! each variant, given as a QEMU binary that implements it (Debian's 7.2 is
//! `qemu-9.1`; `qemu/build-variants.sh` builds the others from Debian's
//! source with our patches), two scenarios QEMU can show, the model's
//! verdict beside what the binary did:
//!
//! - postcopy: real migrations between two QEMUs with the destination's
//!   first IOTLB reply held until POSTCOPY_END (`qemu-migrate
//!   --hold-iotlb-reply`); the model on the same scenario (two virtqueues,
//!   postcopy end, no back-end miss, device stop at quit) says "races" or
//!   "safe";
//! - a back-end miss with NEED_REPLY during device start (`qemu-miss
//!   --need-reply`); the model says "deadlocks" or not.
//!
//! A cell agrees when QEMU raced in at least one migration exactly where
//! the model says "races", and hung exactly where it says "deadlocks".
//!
//! Leaves out: building the binaries (the script does it), and the model's
//! other scenario flags (QEMU cannot be made to run device start without
//! the BQL from outside).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use model::{verdict, Prop};
use reference::backend::FaultInjection;
use reference::qemu::QemuBinary;
use reference::scenario::Variant;
use serde::Serialize;

use crate::qemu_peer::{catch_interrupts, interrupted, model_check_options, run_jobs, WorkDir};

/// The `qemu-matrix` subcommand's flags.
#[derive(Args, Debug)]
pub struct QemuMatrixArgs {
    /// A variant and the QEMU binary that implements it, as VARIANT=PATH
    /// (repeatable); without any, the QEMU on PATH as qemu-9.1.
    #[arg(long = "binary", value_name = "VARIANT=PATH")]
    binaries: Vec<String>,
    /// Take every variant `qemu/build-variants.sh` built into this cache
    /// (its `bin/<variant>-<patch hash>/` directories; the newest build of a
    /// variant wins), e.g. /var/cache/vhost-race-qemu.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// With --cache: only these variants (repeatable).
    #[arg(long = "variant", value_name = "VARIANT")]
    variants: Vec<Variant>,
    /// With --cache: first build (or find cached) the variants with this
    /// checkout's `qemu/build-variants.sh` into the cache, so that one
    /// command gives the table from nothing.
    #[arg(long, requires = "cache")]
    build: bool,
    /// Migrations per variant.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// Seconds QMP may stay silent before the miss run is called a hang.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=120))]
    timeout_secs: u64,
    /// QEMU runs at once (a migration's two QEMUs or a miss run's one, each
    /// with back-ends of their own): a run mostly waits (boot under TCG, the
    /// hold, the miss's timeout). The README's table was measured one at a
    /// time.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=64))]
    jobs: u16,
    /// Keep every run's files here.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// One variant's row.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// The variant.
    pub variant: String,
    /// The binary and its version line.
    pub binary: String,
    /// QEMU's `-version` line.
    pub version: String,
    /// The model on the postcopy scenario: `races` or `safe`.
    pub model_postcopy: String,
    /// Migrations that completed.
    pub migrations: usize,
    /// Of those, how many printed the race's lines.
    pub raced: usize,
    /// Of those, in how many the held reply went out only at the hold's
    /// limit: POSTCOPY_END did not come while device start waited.
    pub serialised: usize,
    /// The model on the miss scenario: `deadlocks` or `no deadlock`.
    pub model_miss: String,
    /// QEMU on the miss scenario: `hang` or `no hang`.
    pub qemu_miss: String,
    /// Whether both cells agree with the model.
    pub agree: bool,
}

/// Runs this checkout's `qemu/build-variants.sh` for `variants` (all when
/// empty) with `cache` as its cache; its progress goes to stderr (stdout is the table).
fn build_variants(cache: &std::path::Path, variants: &[Variant]) -> Result<()> {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../qemu/build-variants.sh");
    if !script.is_file() {
        bail!("{} not found: --build needs the checkout it was built from", script.display());
    }
    // The script names QEMU 9.2's patch alone.
    let names: Vec<String> = variants
        .iter()
        .map(|v| v.to_string())
        .map(|v| if v == "qemu-9.1+fail-start" { "fail-start".to_string() } else { v })
        .collect();
    let status = std::process::Command::new("bash")
        .arg(&script)
        .args(&names)
        .env("VHOST_RACE_QEMU_CACHE", cache)
        .stdout(std::process::Stdio::from(std::io::stderr()))
        .status()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status})", script.display());
    }
    Ok(())
}

/// What one QEMU run of the matrix gave.
enum Outcome {
    /// The miss run with NEED_REPLY.
    Miss(crate::qemu_miss::MissReport),
    /// One held postcopy migration.
    Migration(crate::qemu_migrate::RunRecord),
}

/// The binaries `qemu/build-variants.sh` left in `cache`, newest per variant.
pub fn cached_binaries(cache: &std::path::Path) -> Result<Vec<(Variant, PathBuf)>> {
    let bin = cache.join("bin");
    let mut found: Vec<(Variant, PathBuf, std::time::SystemTime)> = Vec::new();
    for e in std::fs::read_dir(&bin).with_context(|| format!("cannot read {}", bin.display()))? {
        let dir = e?.path();
        let wrapper = dir.join("qemu-system-x86_64-wrapped");
        let Some(name) = dir.file_name().and_then(|n| n.to_str()) else { continue };
        let Some((variant, _hash)) = name.rsplit_once('-') else { continue };
        // The script names QEMU 9.2's patch alone; the model's row is
        // qemu-9.1 with it.
        let variant = if variant == "fail-start" { "qemu-9.1+fail-start" } else { variant };
        let (Ok(variant), Ok(meta)) = (variant.parse::<Variant>(), std::fs::metadata(&wrapper))
        else {
            continue;
        };
        let built = meta.modified()?;
        match found.iter_mut().find(|f| f.0 == variant) {
            Some(f) if f.2 >= built => {}
            Some(f) => *f = (variant, wrapper, built),
            None => found.push((variant, wrapper, built)),
        }
    }
    found.sort_by_key(|f| f.0);
    Ok(found.into_iter().map(|(v, p, _)| (v, p)).collect())
}

fn parse_binary(s: &str) -> Result<(Variant, PathBuf)> {
    let Some((v, p)) = s.split_once('=') else {
        bail!("--binary {s}: expected VARIANT=PATH");
    };
    let variant: Variant = v.parse().map_err(|e| anyhow::anyhow!("--binary {s}: {e}"))?;
    Ok((variant, PathBuf::from(p)))
}

/// The model's answer on the postcopy scenario QEMU runs.
fn model_postcopy(variant: Variant) -> String {
    let v =
        verdict::check(variant, crate::qemu_migrate::migrate_scenario(), &model_check_options());
    let races = [Prop::Reply, Prop::Framing, Prop::NoLog]
        .iter()
        .any(|p| !v.property(p.name()).expect("a property").holds);
    if races { "races" } else { "safe" }.to_string()
}

/// Runs the subcommand: 0 when every cell agrees with the model, 1 when one
/// does not (a finding to explain), 2 when nothing could run.
pub fn run(args: QemuMatrixArgs) -> Result<ExitCode> {
    catch_interrupts()?;
    if let Some(v) = args.variants.iter().find(|v| !v.policy.in_qemu()) {
        bail!(
            "{v} is this project's design, not a QEMU patch: there is no binary to build; \
             its evidence is the model (vhost-race scenarios) and the reference \
             (vhost-race run --variant {v})"
        );
    }
    if let (true, Some(cache)) = (args.build, &args.cache) {
        build_variants(cache, &args.variants)?;
    }
    let mut binaries: Vec<(Variant, PathBuf)> = if let Some(cache) = &args.cache {
        let mut b = cached_binaries(cache)?;
        b.extend(args.binaries.iter().map(|b| parse_binary(b)).collect::<Result<Vec<_>>>()?);
        b
    } else if args.binaries.is_empty() {
        let q = QemuBinary::find()?;
        vec![("qemu-9.1".parse().map_err(|e| anyhow::anyhow!("{e}"))?, q.path)]
    } else {
        args.binaries.iter().map(|b| parse_binary(b)).collect::<Result<_>>()?
    };
    if !args.variants.is_empty() {
        binaries.retain(|(v, _)| args.variants.contains(v));
    }
    if binaries.is_empty() {
        bail!("no QEMU binary for the variants asked (build them: bash qemu/build-variants.sh)");
    }
    let work = WorkDir::new(args.keep.as_deref(), "matrix");
    let mut qemus = Vec::new();
    for (variant, path) in &binaries {
        let qemu = QemuBinary::at(path).with_context(|| format!("{variant}"))?;
        eprintln!("{variant}: {} ({})", path.display(), qemu.version);
        qemus.push(qemu);
    }
    // Every QEMU run of every variant is one task: the miss runs first (a
    // hang lasts the whole timeout), then the migrations.
    let runs = args.runs as usize;
    let tasks: Vec<(usize, Option<u32>)> = (0..binaries.len())
        .map(|b| (b, None))
        .chain((0..binaries.len()).flat_map(|b| (1..=args.runs).map(move |r| (b, Some(r)))))
        .collect();
    let faults = FaultInjection { hold_first_iotlb_reply: true, ..Default::default() };
    let results = run_jobs(tasks.len(), usize::from(args.jobs), |i| {
        let (b, run) = tasks[i];
        let (variant, _) = &binaries[b];
        let dir = work.path().join(variant.to_string());
        Ok(match run {
            None => {
                let miss = crate::qemu_miss::miss_run(
                    &qemus[b],
                    true,
                    args.timeout_secs,
                    *variant,
                    &dir.join("miss"),
                )?;
                eprintln!("{variant}: miss with NEED_REPLY: {}", miss.qemu_verdict);
                Outcome::Miss(miss)
            }
            Some(run) => {
                let dir = dir.join("migrate").join(format!("run-{run}"));
                let r = crate::qemu_migrate::migrate_once(
                    &qemus[b],
                    &dir,
                    run,
                    faults,
                    Duration::from_secs(1),
                )?;
                eprintln!(
                    "{variant}: run {run}/{runs}: {}, {}",
                    r.status,
                    if r.race_lines.is_empty() { "no race lines" } else { "race lines" }
                );
                Outcome::Migration(r)
            }
        })
    });
    let mut misses: Vec<Option<crate::qemu_miss::MissReport>> = vec![None; binaries.len()];
    let mut migrations: Vec<Vec<crate::qemu_migrate::RunRecord>> = vec![Vec::new(); binaries.len()];
    for (&(b, _), result) in tasks.iter().zip(results) {
        match result.transpose()? {
            Some(Outcome::Miss(m)) => misses[b] = Some(m),
            Some(Outcome::Migration(r)) => migrations[b].push(r),
            None => {}
        }
    }
    let mut rows = Vec::new();
    for (b, (variant, path)) in binaries.iter().enumerate() {
        // A variant with a run left out by an interrupt gets no row.
        let (Some(miss), true) = (misses[b].take(), migrations[b].len() == runs) else {
            continue;
        };
        let runs = &migrations[b];
        let model_postcopy = model_postcopy(*variant);
        let raced = runs.iter().filter(|r| !r.race_lines.is_empty()).count();
        let migrations = runs.iter().filter(|r| r.completed).count();
        let serialised = runs.iter().filter(|r| r.hold_hit_limit).count();
        let model_miss = if miss.model_deadlocks { "deadlocks" } else { "no deadlock" }.to_string();
        let agree =
            (model_postcopy == "races") == (raced > 0) && miss.model_deadlocks == miss.hung();
        rows.push(Row {
            variant: variant.to_string(),
            binary: path.display().to_string(),
            version: qemus[b].version.clone(),
            model_postcopy,
            migrations,
            raced,
            serialised,
            model_miss,
            qemu_miss: miss.qemu_verdict,
            agree,
        });
    }
    drop(work);
    if args.json {
        crate::cli::emit(&format!("{}\n", serde_json::to_string_pretty(&rows)?))?;
    } else {
        crate::cli::emit(&render(&rows))?;
    }
    Ok(if interrupted() {
        ExitCode::from(130)
    } else if rows.iter().all(|r| r.agree) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn render(rows: &[Row]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<22} {:>16} {:>12} {:>12} {:>14} {:>12} {:>6}",
        "variant",
        "model: postcopy",
        "QEMU: raced",
        "serialised",
        "model: miss",
        "QEMU: miss",
        "agree"
    );
    for r in rows {
        let _ = writeln!(
            out,
            "{:<22} {:>16} {:>12} {:>12} {:>14} {:>12} {:>6}",
            r.variant,
            r.model_postcopy,
            format!("{} of {}", r.raced, r.migrations),
            format!("{} of {}", r.serialised, r.migrations),
            r.model_miss,
            r.qemu_miss,
            if r.agree { "yes" } else { "NO" }
        );
    }
    let _ = writeln!(
        out,
        "\nraced: migrations whose destination printed the race's lines, the first IOTLB reply held \
         until POSTCOPY_END;\nserialised: the held reply went out at the hold's 3 s limit, since \
         the variant sent no POSTCOPY_END while device start waited;\nmiss: a back-end miss with \
         NEED_REPLY during device start; hang = QMP silent and the miss unanswered.\n"
    );
    for r in rows {
        let _ = writeln!(out, "{}: {} ({})", r.variant, r.binary, r.version);
    }
    out
}
