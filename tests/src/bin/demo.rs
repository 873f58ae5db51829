//! `cargo xtask demo`: portcullis enforcing deploy/examples/keep.toml in a
//! network-namespace sandbox, with a table of admitted and dropped probes and
//! the counters that moved. Needs root; removes everything it creates.
use std::{path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::Parser;
use portcullis_tests::e2e::{demo, policies};

#[derive(Parser)]
struct Args {
    /// The `portcullis` binary (default: next to this one).
    #[arg(long)]
    portcullis: Option<PathBuf>,
    /// The policy to enforce (default: deploy/examples/keep.toml).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Echo the daemon's log.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool> {
    let bin = portcullis_tests::e2e::prepare("demo", args.portcullis.as_deref())?;
    let policy = args
        .policy
        .clone()
        .unwrap_or_else(|| policies::examples_dir().join("keep.toml"));
    let policy = policy
        .canonicalize()
        .with_context(|| format!("policy {}", policy.display()))?;
    demo::run(&bin, &policy, args.verbose)
}
