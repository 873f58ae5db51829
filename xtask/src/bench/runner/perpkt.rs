//! Per-packet cost through BPF_PROG_TEST_RUN: the kernel runs one frame
//! `repeat` times and reports the mean; we take the median of `runs` such runs
//! and average over several probe sources of the same kind.
use std::{
    net::{Ipv4Addr, Ipv6Addr},
    time::Duration,
};

use anyhow::{Context, Result};
use aya::{
    programs::{TestRun, TestRunOptions, Xdp},
    Ebpf,
};
use filter_user::{
    loader::{Filter, LoadOptions},
    policy,
};

use crate::{
    frame::{self, L4, RX_ADDR},
    policies::PolicySet,
    report::Results,
    sys::median,
    Args, Plan,
};

/// Probe kinds: (key, description, IPv4?).
pub const KINDS: [(&str, &str, bool); 6] = [
    (
        "v4_listed_host",
        "IPv4 listed /32 (bitmap + hash): drop",
        true,
    ),
    ("v4_listed_net", "IPv4 in a listed /24 (bitmap): drop", true),
    (
        "v4_unlisted_partial",
        "IPv4 unlisted, /24 partly listed, zone port, not allowed: drop",
        true,
    ),
    (
        "v4_allowed",
        "IPv4 unlisted, zone port, allowlisted: pass",
        true,
    ),
    ("v6_listed", "IPv6 listed /48 (bitmap + table): drop", false),
    (
        "v6_allowed",
        "IPv6 unlisted, zone port, allowlisted: pass",
        false,
    ),
];

fn probes(set: &PolicySet, kind: &str, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|k| {
            let z = &set.zones[k % set.zones.len()];
            let v4 = |src: u32, dport: u16| {
                frame::ipv4(Ipv4Addr::from(src), RX_ADDR, L4::Udp, 5353, dport)
            };
            let v6 = |src: Ipv6Addr, dport: u16| {
                frame::ipv6_udp(src, "2001:db8:ffff::2".parse().unwrap(), 5353, dport)
            };
            match kind {
                "v4_listed_host" => v4(set.hosts[k * 7919 % 900], 53),
                "v4_listed_net" => v4(set.nets[k * 13 % 100] + 7, 53),
                "v4_unlisted_partial" => v4(set.hosts[k * 7919 % 900] + 1, z.udp),
                "v4_allowed" => v4(u32::from(Ipv4Addr::new(10, z.id as u8, 1, k as u8)), z.udp),
                "v6_listed" => v6(
                    Ipv6Addr::from(u128::from(set.v6[k * 101 % 1000].network()) | 0x1234),
                    53,
                ),
                _ => v6(
                    Ipv6Addr::new(0xfd00, z.id as u16, 0, 0, 0, 0, 0, k as u16 + 1),
                    z.udp,
                ),
            }
        })
        .collect()
}

fn time(run: &dyn Fn(&[u8], u32) -> Result<Duration>, frame: &[u8], plan: &Plan) -> Result<f64> {
    let runs = (0..plan.runs)
        .map(|_| run(frame, plan.repeat).map(|d| d.as_nanos() as f64))
        .collect::<Result<Vec<_>>>()?;
    Ok(median(runs))
}

fn xdp_time(prog: &Xdp, frame: &[u8], repeat: u32) -> Result<Duration> {
    let opts = TestRunOptions {
        data_in: Some(frame),
        repeat,
        ..Default::default()
    };
    Ok(prog.test_run(opts)?.duration)
}

pub fn run(plan: &Plan, args: &Args, set: &PolicySet, results: &mut Results) -> Result<()> {
    // Baselines from the bench object.
    let mut bench = Ebpf::load_file(&args.bench_object)
        .with_context(|| format!("loading {}", args.bench_object.display()))?;
    let base_frame = &probes(set, "v4_allowed", 1)[0];
    let mut baseline = |name: &str| -> Result<f64> {
        let prog: &mut Xdp = bench
            .program_mut(name)
            .with_context(|| format!("program {name}"))?
            .try_into()?;
        prog.load()?;
        let prog: &Xdp = prog;
        time(&|f, r| xdp_time(prog, f, r), base_frame, plan)
    };
    let empty = baseline("bench_pass")?;
    let parse = baseline("bench_parse")?;
    let floor = baseline("bench_floor_pass")?;
    results.set_num("empty_pass_ns", empty);
    results.set_num("parse_only_ns", parse);
    results.set_num("floor_ns", floor);
    eprintln!("  empty XDP_PASS {empty:.1} ns, parse-only {parse:.1} ns, floor {floor:.1} ns");

    let mut filter = Filter::load(LoadOptions {
        quiesce: Duration::ZERO,
        ..LoadOptions::default()
    })?;
    let frames: Vec<Vec<Vec<u8>>> = KINDS
        .iter()
        .map(|(k, _, _)| probes(set, k, plan.probes_per_kind))
        .collect();
    let mut table: Vec<Vec<f64>> = vec![Vec::new(); KINDS.len()];
    for &n in &plan.sizes {
        let compiled = policy::load(&set.policy_path(n))?;
        filter.apply(&compiled)?;
        for (i, fs) in frames.iter().enumerate() {
            let per = fs
                .iter()
                .map(|f| time(&|f, r| Ok(filter.time_run(f, r)?), f, plan))
                .collect::<Result<Vec<_>>>()?;
            let mean = per.iter().sum::<f64>() / per.len() as f64;
            table[i].push(mean);
        }
        eprintln!(
            "  {n:>8} prefixes: {}",
            KINDS
                .iter()
                .zip(&table)
                .map(|((k, _, _), v)| format!("{k} {:.1}", v.last().unwrap()))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    schedule_cost(plan, &mut filter, results)?;
    rate_cost(plan, &mut filter, results)?;
    quota_cost(plan, &mut filter, results)?;
    // Leave small maps behind for the other parts.
    let empty_policy = policy::compile_str("version = 1\n", std::path::Path::new("empty.toml"))?;
    filter.apply(&empty_policy)?;
    filter.apply(&empty_policy)?;
    results.set_per_packet(&plan.sizes, &table, empty, parse);
    Ok(())
}

/// What a rate limit adds to a zone packet: the same allowed frame to the
/// same zone with and without `rate` (a limit it never reaches, so both
/// pass as `allowed`), in interleaved rounds. The source is tracked after
/// its first packet: the limited path reads `RATES`, the clock, its
/// `RATE_SLOTS` set (an inlined array lookup) and does two compare-and-swaps (its
/// bucket, the ceiling). Printed as a ratio; the target is ≤ 1.3. Beside
/// it the same limit `per = "zone"` (the clock and one compare-and-swap, no
/// hash), which splits the cost between the clock and atomics every limit
/// pays and the per-source bucket.
fn rate_cost(plan: &Plan, filter: &mut Filter, results: &mut Results) -> Result<()> {
    let zone = |rate: &str| {
        format!(
            "version = 1\n[[zone]]\nname = \"bench\"\nports = [\"9999/udp\"]\nallow = [\"10.0.0.0/8\"]\n{rate}"
        )
    };
    let plain = policy::compile_str(&zone(""), std::path::Path::new("plain.toml"))?;
    let limited = policy::compile_str(
        &zone("rate = { packets = \"10000000/s\", burst = 10000000 }\n"),
        std::path::Path::new("rate.toml"),
    )?;
    // What the per-source bucket costs: the same limit on one zone-wide
    // bucket (no `RATE_SLOTS` lookup; the clock cache and one compare-and-swap).
    let zone_wide = policy::compile_str(
        &zone("rate = { packets = \"10000000/s\", burst = 10000000, per = \"zone\" }\n"),
        std::path::Path::new("rate-zone.toml"),
    )?;
    let frame = frame::ipv4(Ipv4Addr::new(10, 1, 2, 3), RX_ADDR, L4::Udp, 5353, 9999);
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..5 {
        filter.apply(&plain)?;
        a.push(time(&|f, r| Ok(filter.time_run(f, r)?), &frame, plan)?);
        filter.apply(&limited)?;
        b.push(time(&|f, r| Ok(filter.time_run(f, r)?), &frame, plan)?);
        filter.apply(&zone_wide)?;
        c.push(time(&|f, r| Ok(filter.time_run(f, r)?), &frame, plan)?);
    }
    let (plain_ns, rate_ns, zone_ns) = (median(a), median(b), median(c));
    results.set_num("zone_rate_limited_ns", rate_ns);
    results.set_num("rate_check_ns", rate_ns - plain_ns);
    results.set_num("rate_ratio", rate_ns / plain_ns);
    results.set_num("rate_zone_wide_ratio", zone_ns / plain_ns);
    results.set_num("rate_per_source_bucket_ns", rate_ns - zone_ns);
    eprintln!(
        "  zone packet: {plain_ns:.1} ns without a rate limit, {rate_ns:.1} ns with one: \
         rate_check_ns {:.1} (ratio {:.3}, target <= 1.3); per = \"zone\" {zone_ns:.1} ns \
         (ratio {:.3}): the per-source bucket costs {:.1} ns",
        rate_ns - plain_ns,
        rate_ns / plain_ns,
        zone_ns / plain_ns,
        rate_ns - zone_ns
    );
    Ok(())
}

/// What a transfer quota adds to a zone packet: the same allowed frame to
/// the same zone with and without `quota` (an upload quota it never
/// reaches), in interleaved rounds. The quota path reads `QUOTAS`, the TAI
/// clock, divides once for the period, looks its `QUOTA_USAGE` entry up (a
/// hash) and adds the frame with one atomic add. No target in the issue;
/// printed as a ratio beside the rate limit's.
fn quota_cost(plan: &Plan, filter: &mut Filter, results: &mut Results) -> Result<()> {
    let zone = |quota: &str| {
        format!(
            "version = 1\n[[zone]]\nname = \"bench\"\nports = [\"9999/udp\"]\nallow = [\"10.0.0.0/8\"]\n{quota}"
        )
    };
    let plain = policy::compile_str(&zone(""), std::path::Path::new("plain.toml"))?;
    let quota = policy::compile_str(
        &zone("quota = { bytes = \"1000 TB\", period = \"month\", direction = \"upload\" }\n"),
        std::path::Path::new("quota.toml"),
    )?;
    let frame = frame::ipv4(Ipv4Addr::new(10, 1, 2, 3), RX_ADDR, L4::Udp, 5353, 9999);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        filter.apply(&plain)?;
        a.push(time(&|f, r| Ok(filter.time_run(f, r)?), &frame, plan)?);
        filter.apply(&quota)?;
        b.push(time(&|f, r| Ok(filter.time_run(f, r)?), &frame, plan)?);
    }
    let (plain_ns, quota_ns) = (median(a), median(b));
    results.set_num("quota_check_ns", quota_ns - plain_ns);
    results.set_num("quota_ratio", quota_ns / plain_ns);
    eprintln!(
        "  zone packet: {plain_ns:.1} ns without a quota, {quota_ns:.1} ns with one: \
         quota_check_ns {:.1} (ratio {:.3})",
        quota_ns - plain_ns,
        quota_ns / plain_ns
    );
    Ok(())
}

/// What a schedule adds to a zone packet: the same allowed frame to the same
/// zone with and without hours (open now, so both pass as `allowed`), in
/// interleaved rounds. The scheduled zone reads `SCHED`, the TAI clock
/// (`bpf_ktime_get_tai_ns`) and scans its transitions (the first is ahead).
fn schedule_cost(plan: &Plan, filter: &mut Filter, results: &mut Results) -> Result<()> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    let hms = |s: u64| {
        let d = s % 86_400;
        format!("{:02}:{:02}:{:02}", d / 3600, d / 60 % 60, d % 60)
    };
    let zone = |hours: &str| {
        format!(
            "version = 1\n[[zone]]\nname = \"bench\"\nports = [\"9999/udp\"]\nallow = [\"10.0.0.0/8\"]\n{hours}"
        )
    };
    let plain = policy::compile_str(&zone(""), std::path::Path::new("plain.toml"))?;
    let window = format!(
        "schedule = [{{ days = \"daily\", hours = \"{}-{}\" }}]\n",
        hms(now - 3600),
        hms(now + 22 * 3600)
    );
    let scheduled = policy::compile_str(&zone(&window), std::path::Path::new("sched.toml"))?;
    let frame = frame::ipv4(Ipv4Addr::new(10, 1, 2, 3), RX_ADDR, L4::Udp, 5353, 9999);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        filter.apply(&plain)?;
        a.push(time(&|f, r| Ok(filter.time_run(f, r)?), &frame, plan)?);
        filter.apply(&scheduled)?;
        b.push(time(&|f, r| Ok(filter.time_run(f, r)?), &frame, plan)?);
    }
    let (plain_ns, sched_ns) = (median(a), median(b));
    results.set_num("zone_plain_ns", plain_ns);
    results.set_num("zone_scheduled_ns", sched_ns);
    results.set_num("schedule_check_ns", sched_ns - plain_ns);
    results.set_num("schedule_ratio", sched_ns / plain_ns);
    eprintln!(
        "  zone packet: {plain_ns:.1} ns without a schedule, {sched_ns:.1} ns with one: \
         schedule_check_ns {:.1} (ratio {:.3})",
        sched_ns - plain_ns,
        sched_ns / plain_ns
    );
    Ok(())
}
