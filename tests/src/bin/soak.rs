//! The soak: the e2e sandbox under a flood, reloads every second (some
//! invalid), `kill -9` and restart every minute, /metrics scraped in a loop and
//! hostile clients on the metrics port, with probes judged all along (see
//! `portcullis_tests::soak`). Needs root. Prints a summary with figures and
//! `soak: PASSED` or `soak: FAILED`; exits non-zero on any failure. Everything
//! it creates is removed on exit, on panic and on SIGINT/SIGTERM.
use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use portcullis_tests::soak;

#[derive(Parser)]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 30.0)]
    minutes: f64,
    /// The `portcullis` binary (default: next to this one).
    #[arg(long)]
    portcullis: Option<PathBuf>,
    /// Cap of the raw-frame flood into the host's inet0 (frames per second).
    #[arg(long, default_value_t = 10_000)]
    flood_pps: u64,
    /// Seconds between two `kill -9`s of the daemon.
    #[arg(long, default_value_t = 60)]
    kill_every: u64,
    /// Build no VLAN path (its probe is left out).
    #[arg(long)]
    no_vlan: bool,
    /// Write every fd/RSS sample of the daemons to this CSV file.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Echo the daemons' logs.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let run = || -> anyhow::Result<bool> {
        let bin = portcullis_tests::e2e::prepare("soak", args.portcullis.as_deref())?;
        let o = soak::Options {
            minutes: args.minutes,
            flood_pps: args.flood_pps,
            kill_every: Duration::from_secs(args.kill_every.max(10)),
            verbose: args.verbose,
            vlan: !args.no_vlan,
            samples: args.samples.clone(),
            ..soak::Options::default()
        };
        soak::run(&bin, &o)
    };
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e:#}");
            println!("soak: FAILED");
            ExitCode::FAILURE
        }
    }
}
