//! `cargo xtask fuzz`: builds the libFuzzer targets in fuzz/ with nightly
//! cargo-fuzz and runs each for a fixed time, one at a time (one core each).
//! Corpus: fuzz/corpus/<target>, seeded from fuzz/seeds/<target> and
//! fuzz/regressions/<target>; crash inputs land in fuzz/artifacts/<target>.
use std::{
    io::{BufRead, BufReader, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{bail, Context, Result};

use crate::{bootstrap, clean_cargo, exec};

/// Per-target time of `cargo xtask fuzz` without `--seconds`.
pub const DEFAULT_SECONDS: u64 = 600;
/// Per-target time of the short pass in `cargo xtask test` (4 × 12 s).
pub const TEST_SECONDS: u64 = 12;
/// One input running longer than this is reported as a hang.
const INPUT_TIMEOUT_SECS: u64 = 10;

/// What libFuzzer reported for one target.
#[derive(Default)]
struct Outcome {
    execs: Option<u64>,
    execs_per_sec: Option<u64>,
    /// The last status line (`#N DONE cov: … ft: … corp: …`).
    last_status: Option<String>,
    reproducer: Option<PathBuf>,
    failed: bool,
}

/// The targets: fuzz/fuzz_targets/*.rs, by name.
fn known_targets(fuzz: &Path) -> Result<Vec<String>> {
    let dir = fuzz.join("fuzz_targets");
    let mut names = Vec::new();
    for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = e?.path();
        if path.extension().is_some_and(|x| x == "rs") {
            if let Some(stem) = path.file_stem().and_then(|s| s.to_str()) {
                names.push(stem.to_string());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// Runs `targets` (all when empty) for `seconds` each; fails if any crashed.
pub fn run(root: &Path, seconds: u64, targets: &[String]) -> Result<()> {
    let fuzz = root.join("fuzz");
    let known = known_targets(&fuzz)?;
    for t in targets {
        if !known.contains(t) {
            bail!("unknown fuzz target `{t}` (known: {})", known.join(", "));
        }
    }
    let selected: Vec<&str> = known
        .iter()
        .filter(|t| targets.is_empty() || targets.contains(t))
        .map(String::as_str)
        .collect();
    bootstrap::cargo_fuzz()?;
    // Release with debug assertions and overflow checks, address sanitizer.
    exec(
        clean_cargo(Some("nightly"))
            .current_dir(&fuzz)
            .args(["fuzz", "build", "-O", "-a"]),
    )?;
    let bin_dir = fuzz.join("target/x86_64-unknown-linux-gnu/release");
    let mut report = Vec::new();
    for t in &selected {
        let outcome = run_target(&fuzz, &bin_dir, t, seconds)?;
        report.push((*t, outcome));
    }
    eprintln!("\nfuzz summary ({seconds} s per target):");
    let mut crashed = Vec::new();
    for (t, o) in &report {
        eprintln!(
            "  {t:<8} execs {:>10}  exec/s {:>7}  {}",
            o.execs.map_or("?".into(), |n| n.to_string()),
            o.execs_per_sec.map_or("?".into(), |n| n.to_string()),
            o.last_status.as_deref().unwrap_or("(no status line)")
        );
        if o.failed {
            crashed.push(match &o.reproducer {
                Some(p) => format!(
                    "{t}: {} — replay: cd fuzz && cargo +nightly fuzz run {t} {}; once fixed, \
                     keep it in fuzz/regressions/{t}/",
                    p.display(),
                    p.display()
                ),
                None => format!("{t}: libFuzzer failed without writing an input (see its log)"),
            });
        }
    }
    if !crashed.is_empty() {
        for c in &crashed {
            eprintln!("CRASH {c}");
        }
        bail!("{} fuzz target(s) found a crash", crashed.len());
    }
    Ok(())
}

/// Copies the seeds into the corpus directory (files it lacks, by name).
fn seed_corpus(seeds: &Path, corpus: &Path) -> Result<()> {
    std::fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    let Ok(entries) = std::fs::read_dir(seeds) else {
        return Ok(());
    };
    for e in entries {
        let e = e?;
        let to = corpus.join(e.file_name());
        if e.file_type()?.is_file() && !to.exists() {
            std::fs::copy(e.path(), &to)
                .with_context(|| format!("copying seed {}", e.path().display()))?;
        }
    }
    Ok(())
}

fn run_target(fuzz: &Path, bin_dir: &Path, target: &str, seconds: u64) -> Result<Outcome> {
    let corpus = fuzz.join("corpus").join(target);
    let artifacts = fuzz.join("artifacts").join(target);
    let regressions = fuzz.join("regressions").join(target);
    seed_corpus(&fuzz.join("seeds").join(target), &corpus)?;
    std::fs::create_dir_all(&artifacts)?;
    std::fs::create_dir_all(&regressions)?;
    let log_path = artifacts.join("last-run.log");
    let mut log = std::fs::File::create(&log_path)?;

    let mut cmd = Command::new(bin_dir.join(target));
    if std::env::var_os("ASAN_OPTIONS").is_none() {
        // What `cargo fuzz run` sets: Rust's std trips ASan's ODR check.
        cmd.env("ASAN_OPTIONS", "detect_odr_violation=0");
    }
    cmd.current_dir(fuzz)
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg(format!("-max_total_time={seconds}"))
        .arg(format!("-timeout={INPUT_TIMEOUT_SECS}"))
        .arg("-print_final_stats=1")
        .arg(&corpus)
        // Read-only: its inputs are replayed first and never rewritten.
        .arg(&regressions)
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    eprintln!("+ {cmd:?}");
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting fuzz target {target} (built?)"))?;
    let mut out = Outcome::default();
    let stderr = child.stderr.take().context("libFuzzer stderr")?;
    for line in BufReader::new(stderr).lines() {
        let line = line?;
        writeln!(log, "{line}")?;
        // libFuzzer prints a line per corpus change; show progress, not those.
        let kind = line.split_whitespace().nth(1).unwrap_or_default();
        let quiet = (line.starts_with('#') && matches!(kind, "NEW" | "REDUCE"))
            || line.contains("NEW_FUNC")
            || line.starts_with("INFO: ")
            || line.contains("# Uses: ");
        if !quiet {
            eprintln!("[{target}] {line}");
        }
        if line.starts_with('#') && line.contains(" cov: ") {
            out.last_status = Some(line.clone());
        }
        if let Some(v) = stat(&line, "stat::number_of_executed_units:") {
            out.execs = Some(v);
        }
        if let Some(v) = stat(&line, "stat::average_exec_per_sec:") {
            out.execs_per_sec = Some(v);
        }
        if let Some(path) = line
            .split_once("Test unit written to ")
            .map(|(_, p)| p.trim())
        {
            out.reproducer = Some(PathBuf::from(path));
        }
    }
    let status = child.wait()?;
    out.failed = !status.success();
    eprintln!(
        "[{target}] finished in {:.0} s ({status}); log: {}",
        started.elapsed().as_secs_f64(),
        log_path.display()
    );
    Ok(out)
}

fn stat(line: &str, key: &str) -> Option<u64> {
    line.strip_prefix(key)?.trim().parse().ok()
}
