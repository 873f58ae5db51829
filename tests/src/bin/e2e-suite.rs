//! The end-to-end suite: real TCP/UDP probes between network namespaces
//! against `portcullis run` in a "host" namespace (see `portcullis_tests::e2e`).
//! Needs root. Prints one line per scenario and `e2e: N passed, M failed`;
//! exits non-zero on any failure. Everything it creates is removed on exit,
//! on panic and on SIGINT/SIGTERM.
use std::{path::PathBuf, process::ExitCode, time::Instant};

use anyhow::Result;
use clap::Parser;
use portcullis_tests::e2e::{daemon::Sandbox, policies, scenarios};

#[derive(Parser)]
struct Args {
    /// The `portcullis` binary (default: next to this one).
    #[arg(long)]
    portcullis: Option<PathBuf>,
    /// deploy/examples (keep.toml and its lists).
    #[arg(long)]
    examples: Option<PathBuf>,
    /// Run only scenarios whose name contains this (repeatable).
    #[arg(long)]
    only: Vec<String>,
    /// Only the scenarios that prove the harness itself (no daemon needed).
    #[arg(long)]
    harness_only: bool,
    /// Reloads in the flip scenario (default 100; 10 with --vm-subset).
    #[arg(long)]
    flips: Option<usize>,
    /// The subset for the kernel matrix's VMs (`cargo xtask vm-test`): the
    /// scenarios whose behaviour depends on the kernel (native XDP on veth,
    /// pins, adoption, kill -9, reloads, detach), without the VLAN path, with
    /// waiting limits scaled for QEMU TCG (see --slowdown).
    #[arg(long)]
    vm_subset: bool,
    /// Build no VLAN path (its scenario and probes are skipped). Without this
    /// it is built, unless tcx attach fails (Linux < 6.6): then skipped too.
    #[arg(long)]
    no_vlan: bool,
    /// Scale the harness's waiting limits (READY=1, SIGTERM, CLI calls, polls)
    /// by this factor (default 1; 4 with --vm-subset). Probe timeouts stay.
    #[arg(long)]
    slowdown: Option<u32>,
    /// Echo the daemons' logs.
    #[arg(long, short)]
    verbose: bool,
    /// An earlier release's binary for the upgrade scenarios, as NAME=PATH
    /// (repeatable; `cargo xtask releases` builds them).
    #[arg(long = "release", value_name = "NAME=PATH")]
    releases: Vec<String>,
    /// List the scenarios and exit.
    #[arg(long)]
    list: bool,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("e2e-suite: {e:#}");
            println!("e2e: 0 passed, 1 failed");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<bool> {
    let all = scenarios::all();
    if args.list {
        for s in &all {
            println!(
                "{}{}{}",
                s.name,
                if s.harness_only { " (harness)" } else { "" },
                if s.vm { " (vm-subset)" } else { "" }
            );
        }
        return Ok(true);
    }
    let bin = portcullis_tests::e2e::prepare("e2e suite", args.portcullis.as_deref())?;
    let mut releases = Vec::new();
    for r in &args.releases {
        let (name, path) = r
            .split_once('=')
            .ok_or_else(|| anyhow::anyhow!("--release {r}: expected NAME=PATH"))?;
        releases.push((name.to_string(), PathBuf::from(path)));
    }
    portcullis_tests::e2e::upgrade::set_releases(releases);
    portcullis_tests::e2e::set_slowdown(args.slowdown.unwrap_or(if args.vm_subset {
        4
    } else {
        1
    }));
    let flips = args.flips.unwrap_or(if args.vm_subset { 10 } else { 100 });
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    eprintln!(
        "e2e: kernel {}{}",
        release.trim(),
        if args.vm_subset { ", VM subset" } else { "" }
    );
    let selected: Vec<_> = all
        .into_iter()
        .filter(|s| !args.vm_subset || s.vm)
        .filter(|s| !args.harness_only || s.harness_only)
        .filter(|s| args.only.is_empty() || args.only.iter().any(|o| s.name.contains(o.as_str())))
        .collect();
    let started = Instant::now();
    let vlan = !(args.vm_subset || args.no_vlan);
    let sb = if args.harness_only {
        // The harness scenarios never start the daemon: any file will do.
        Sandbox::new(&std::env::current_exe()?, args.verbose, vlan)?
    } else {
        Sandbox::new(&bin, args.verbose, vlan)?
    };
    if let Some(why) = &sb.topo.vlan_skipped {
        eprintln!("e2e: {why}");
    }
    eprintln!(
        "e2e: sandbox {} ready in {:.2} s (daemon: {})",
        sb.topo.prefix,
        started.elapsed().as_secs_f64(),
        bin.display()
    );
    let examples = args.examples.clone().unwrap_or_else(policies::examples_dir);
    let keep = policies::install_keep(&examples, &sb.dir)?;
    let (passed, failed, skipped) = scenarios::run_all(&sb, &selected, flips, keep);
    drop(sb);
    println!("e2e: {:.1} s in all", started.elapsed().as_secs_f64());
    if skipped > 0 {
        println!("e2e: {passed} passed, {failed} failed, {skipped} skipped");
    } else {
        println!("e2e: {passed} passed, {failed} failed");
    }
    Ok(failed == 0)
}
