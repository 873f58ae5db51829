//! `portcullis-bench`: the measurements behind `cargo xtask bench` (which builds
//! and starts this binary as root; see xtask/src/bench/mod.rs).
//!
//! 1. per-packet cost through BPF_PROG_TEST_RUN (`perpkt`);
//! 2. control plane: load, one-line reload, free stall (`control`);
//! 3. throughput on veth pairs driven by a live-frames XDP_TX generator
//!    (`gen`): empty XDP_DROP, the floor (read the source, count, drop) and
//!    every portcullis flood in interleaved rounds, then nftables and
//!    iptables + ipset (`veth`), with the daemon's RSS;
//! 4. a table on stdout, `bench/results.json` and `bench/results.svg` (`report`).
mod bans;
mod control;
mod frame;
mod gen;
mod nft;
mod perpkt;
mod policies;
mod report;
mod sys;
mod veth;

use std::{path::PathBuf, time::Instant};

use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser, Debug, Clone)]
#[command(about = "portcullis benchmarks (run through `cargo xtask bench`)")]
pub struct Args {
    /// Smaller counts and fewer repeats (finishes within minutes).
    #[arg(long)]
    pub quick: bool,
    /// Output directory for results.json and results.svg.
    #[arg(long)]
    pub out: PathBuf,
    /// The bench eBPF object (baselines and generator).
    #[arg(long)]
    pub bench_object: PathBuf,
    /// The portcullis binary (for the daemon RSS and the veth runs).
    #[arg(long)]
    pub portcullis: PathBuf,
    /// Skip parts (for development): perpkt, bans, control, veth. Keys of skipped
    /// parts are missing from results.json and the run fails at the end.
    #[arg(long, value_delimiter = ',')]
    pub skip: Vec<String>,
    /// IPv6 /48s in the flood policy's blocklist (the figure is 1M;
    /// fewer for layouts that cannot hold them).
    #[arg(long, default_value_t = 1_000_000)]
    pub v6_flood_prefixes: usize,
    /// Interleaved rounds of the veth floods (default: 5, `--quick` 2).
    #[arg(long)]
    pub rounds: Option<usize>,
}

/// Counts and durations of one run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub quick: bool,
    pub sizes: Vec<usize>,
    pub v6_prefixes: usize,
    pub zones: u32,
    pub repeat: u32,
    pub runs: usize,
    pub probes_per_kind: usize,
    /// Sizes for which `nft -f` is timed in the control-plane part (the 1M
    /// set is timed when the veth part loads it).
    pub nft_sizes: Vec<usize>,
    /// Interleaved rounds (every row once per round).
    pub veth_rounds: usize,
    /// Windows per nftables / iptables flood (not interleaved).
    pub veth_trials: usize,
    pub veth_window_ms: u64,
    /// Generator running before each window starts.
    pub veth_warmup_ms: u64,
    pub v6_flood_prefixes: usize,
}

/// Allowlist sizes of the zone floods (`ratio_vs_floor_allow_100k`, `_1k`).
pub const ALLOW_BIG: usize = 100_000;
/// The IPv6 allowlist zone's size (`ratio_vs_floor_allow6_60k_miss`): a
/// large country's IPv6 list; the policy file's 4 MiB cap holds it beside
/// the 100k IPv4 one.
pub const ALLOW6_BIG: usize = 60_000;
pub const ALLOW_SMALL: usize = 1_000;

impl Plan {
    fn new(args: &Args) -> Plan {
        let quick = args.quick;
        let mut plan = Plan::base(quick);
        plan.v6_flood_prefixes = args.v6_flood_prefixes;
        if let Some(r) = args.rounds {
            plan.veth_rounds = r.max(1);
        }
        plan
    }

    fn base(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                sizes: vec![1_000, 10_000, 100_000, 1_000_000],
                v6_prefixes: 100_000,
                zones: 32,
                repeat: 200_000,
                runs: 3,
                probes_per_kind: 3,
                nft_sizes: vec![1_000, 10_000, 100_000],
                veth_rounds: 2,
                veth_trials: 1,
                veth_window_ms: 400,
                veth_warmup_ms: 200,
                v6_flood_prefixes: 1_000_000,
            }
        } else {
            Plan {
                quick,
                sizes: vec![1_000, 10_000, 100_000, 1_000_000],
                v6_prefixes: 100_000,
                zones: 32,
                repeat: 1_000_000,
                runs: 5,
                probes_per_kind: 8,
                nft_sizes: vec![1_000, 10_000, 100_000],
                veth_rounds: 5,
                veth_trials: 3,
                veth_window_ms: 1_000,
                veth_warmup_ms: 300,
                v6_flood_prefixes: 1_000_000,
            }
        }
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let plan = Plan::new(&args);
    let started = Instant::now();
    std::fs::create_dir_all(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let work = sys::TempDir::new("portcullis-bench")?;
    let mut results = report::Results::new(&plan);

    eprintln!("[bench] generating policies {:?}", plan.sizes);
    let set = policies::PolicySet::generate(&plan, work.path())?;
    let max = *plan.sizes.iter().max().expect("sizes");

    let skip = |part: &str| {
        let s = args.skip.iter().any(|p| p == part);
        if s {
            eprintln!("[bench] {part} skipped (--skip)");
        }
        s
    };
    if !skip("perpkt") {
        eprintln!("[bench] per-packet cost (BPF_PROG_TEST_RUN)");
        perpkt::run(&plan, &args, &set, &mut results)?;
    }

    if !skip("bans") {
        eprintln!("[bench] bans (BPF_PROG_TEST_RUN, 1M bans)");
        bans::run(&plan, work.path(), &mut results)?;
    }

    // The daemon pins under /sys/fs/bpf (a bpffs on most hosts, not all).
    sys::sh(
        None,
        "mountpoint -q /sys/fs/bpf || mount -t bpf bpf /sys/fs/bpf",
    )?;
    // The namespace and veth pair (nft -f runs there too); removed on drop.
    let _env = veth::Env::create()?;

    if !skip("control") {
        eprintln!("[bench] control plane");
        control::run(&plan, &set, veth::NETNS, &mut results)?;
    }
    if !skip("veth") {
        eprintln!("[bench] veth throughput");
        eprintln!(
            "[bench] flood policy: {max} IPv4 + {} IPv6 /48s, allowlists of {ALLOW_BIG} and {ALLOW_SMALL}",
            plan.v6_flood_prefixes
        );
        let veth = policies::VethSet::generate(
            &set,
            max,
            plan.v6_flood_prefixes,
            ALLOW_BIG,
            ALLOW_SMALL,
            ALLOW6_BIG,
        )?;
        veth::run(&plan, &args, &set, &veth, work.path(), &mut results)?;
    }

    results.set_num("duration_s", started.elapsed().as_secs_f64());
    report::print_table(&results);
    report::write(&args.out, &results)
}
