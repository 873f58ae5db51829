//! Rate-limit fixtures: sequences of frames under one policy, with the
//! verdict of each worked out by hand from docs/policy.md ("Rate limits"),
//! and checks that read the buckets back. `BPF_PROG_TEST_RUN` runs on the
//! kernel's real clock, so every rate here refills far slower than a
//! sequence runs (one token per 6 minutes or slower): only bursts, ceilings,
//! budgets and room decide. The model must agree with every expectation too.

use std::net::{IpAddr, Ipv4Addr};

use anyhow::{bail, Context, Result};
use filter_common::{rate_key4, rate_set, Reason as R, Verdict as V, RATE_KIND_PACKETS};
use filter_user::loader::monotonic_ns;

use crate::harness::{Harness, Observed};
use crate::model::{self, Sequence};
use crate::packet::Frame;
use crate::spec::{Allow, LimitSpec, PolicySpec, Proto, RejectWith, ZoneSpec};

const HOST4: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const PORT: u16 = 8080;
const ACK: u8 = 0x10;
const SYN: u8 = 0x02;

fn zone(limits: Vec<LimitSpec>) -> ZoneSpec {
    let mut z = ZoneSpec::new("api", vec![(Proto::Tcp, PORT, PORT)], vec![Allow::Any]);
    z.rate = limits;
    z
}

fn policy(z: ZoneSpec) -> PolicySpec {
    PolicySpec {
        zones: vec![z],
        ..PolicySpec::default()
    }
}

fn tcp(src: &str, flags: u8) -> Vec<u8> {
    Frame::ipv4(src.parse().expect("IPv4"), HOST4)
        .tcp_flags(40000, PORT, flags)
        .build()
}

const A: Observed = Observed {
    verdict: V::Pass,
    reason: R::Allowed,
    rule: 1,
};
const L: Observed = Observed {
    verdict: V::Drop,
    reason: R::RateLimited,
    rule: 1,
};
const AUDIT: Observed = Observed {
    verdict: V::Pass,
    reason: R::Audit,
    rule: 1,
};
const REJECTED: Observed = Observed {
    verdict: V::Drop,
    reason: R::Rejected,
    rule: 1,
};

struct Seq {
    name: &'static str,
    policy: PolicySpec,
    steps: Vec<(Vec<u8>, Observed)>,
}

fn packets(count: u64, burst: u64) -> LimitSpec {
    LimitSpec::packets(count, "h", burst)
}

fn sequences() -> Vec<Seq> {
    let per24 = LimitSpec {
        v4_len: 24,
        ..packets(10, 2)
    };
    let tracked_one = LimitSpec {
        tracked: Some(1),
        ceiling: Some((40, "h")),
        new_sources: Some((5, "h")),
        ..packets(100, 5)
    };
    let zone_wide = LimitSpec {
        zone: true,
        ..packets(10, 3)
    };
    let mut audit = zone(vec![packets(10, 1)]);
    audit.audit = true;
    let reject = zone(vec![packets(10, 1)]).reject(RejectWith::TcpReset);
    vec![
        Seq {
            name: "rate_burst_then_limited_and_a_polite_source_unaffected",
            policy: policy(zone(vec![packets(10, 3)])),
            steps: vec![
                (tcp("10.0.0.1", ACK), A),
                (tcp("10.0.0.1", ACK), A),
                (tcp("10.0.0.1", ACK), A),
                (tcp("10.0.0.1", ACK), L),
                (tcp("10.0.0.1", ACK), L),
                (tcp("10.0.0.2", ACK), A),
                (tcp("10.0.0.1", ACK), L),
            ],
        },
        Seq {
            name: "rate_per_24_shares_one_bucket_per_network",
            policy: policy(zone(vec![per24])),
            steps: vec![
                (tcp("10.1.2.3", ACK), A),
                (tcp("10.1.2.4", ACK), A),
                (tcp("10.1.2.5", ACK), L),
                (tcp("10.1.3.1", ACK), A),
            ],
        },
        Seq {
            name: "rate_connections_count_syn_without_ack_only",
            policy: policy(zone(vec![LimitSpec::connections(10, "h", 1)])),
            steps: vec![
                (tcp("10.0.0.1", SYN), A),
                (tcp("10.0.0.1", SYN), L),
                (tcp("10.0.0.1", SYN | ACK), A),
                (tcp("10.0.0.1", ACK), A),
                (tcp("10.0.0.1", SYN), L),
            ],
        },
        Seq {
            name: "rate_packet_and_connection_limits_on_one_zone",
            policy: policy(zone(vec![
                packets(10, 3),
                LimitSpec::connections(10, "h", 1),
            ])),
            steps: vec![
                (tcp("10.0.0.1", SYN), A),
                (tcp("10.0.0.1", SYN), L),
                (tcp("10.0.0.1", ACK), A),
                // Packet burst spent (3 packets): even non-SYNs are limited.
                (tcp("10.0.0.1", ACK), L),
            ],
        },
        Seq {
            name: "rate_zone_wide_bucket_is_shared_by_every_source",
            policy: policy(zone(vec![zone_wide])),
            steps: vec![
                (tcp("10.0.0.1", ACK), A),
                (tcp("10.0.0.2", ACK), A),
                (tcp("10.9.9.9", ACK), A),
                (tcp("10.0.0.3", ACK), L),
            ],
        },
        Seq {
            // Source 1 is tracked from its first packet (paid from the
            // ceiling: 2 tokens → 1), its next four come from its own
            // bucket and are charged to the ceiling (1 → 0 → −1, the floor);
            // source 2 finds the table full and the ceiling in debt.
            name: "rate_tracked_sources_have_priority_over_untracked_ones",
            policy: policy(zone(vec![tracked_one])),
            steps: vec![
                (tcp("10.0.0.1", ACK), A),
                (tcp("10.0.0.1", ACK), A),
                (tcp("10.0.0.1", ACK), A),
                (tcp("10.0.0.1", ACK), A),
                (tcp("10.0.0.1", ACK), A),
                (tcp("10.0.0.1", ACK), L),
                (tcp("10.0.0.2", ACK), L),
            ],
        },
        Seq {
            name: "rate_audit_zone_counts_would_limit_and_passes",
            policy: policy(audit),
            steps: vec![(tcp("10.0.0.1", ACK), A), (tcp("10.0.0.1", ACK), AUDIT)],
        },
        Seq {
            name: "rate_rejecting_zone_answers_over_the_limit",
            policy: PolicySpec {
                reject_budget: Some(crate::spec::UNLIMITED_REPLIES),
                ..policy(reject)
            },
            steps: vec![(tcp("10.0.0.1", SYN), A), (tcp("10.0.0.1", SYN), REJECTED)],
        },
    ]
}

/// Does some sequence expect a packet dropped `rate_limited`? (For the
/// fixtures' reason coverage.)
pub fn limits_some() -> bool {
    sequences()
        .iter()
        .any(|s| s.steps.iter().any(|(_, o)| o.reason == R::RateLimited))
}

/// Runs the sequences, then the read-back checks; (passed, failed).
pub fn run(h: &mut Harness) -> Result<(u64, u64)> {
    let (mut passed, mut failed) = (0, 0);
    for s in sequences() {
        h.apply(&s.policy)
            .with_context(|| format!("{}: policy rejected:\n{}", s.name, s.policy.to_toml()))?;
        let mut rates = Sequence::new();
        let mut ok = true;
        for (i, (frame, expect)) in s.steps.iter().enumerate() {
            let (m, _) = model::decide_with(&s.policy, frame, &mut rates);
            let model_says = Observed {
                verdict: m.verdict,
                reason: m.reason,
                rule: m.rule,
            };
            if model_says != *expect {
                println!(
                    "rate fixture {} step {i}: model says {model_says}, expected {expect}",
                    s.name
                );
                ok = false;
            }
            if let Some(got) = h.check(frame, *expect)? {
                println!(
                    "rate fixture {} step {i}: program did {got}, expected {expect}",
                    s.name
                );
                ok = false;
            }
        }
        println!(
            "rate fixture {}: {}",
            s.name,
            if ok { "ok" } else { "FAILED" }
        );
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    for (name, check) in [
        (
            "rate_bucket_reads_back_three_intervals_ahead_after_a_burst_of_three",
            bucket_reads_back as fn(&mut Harness) -> Result<()>,
        ),
        ("rate_reload_keeps_the_buckets", reload_keeps_buckets),
        (
            "rate_table_tracks_at_most_tracked_keys_of_a_flood",
            table_bounded,
        ),
        (
            "rate_a_full_set_leaves_the_fifth_source_untracked_and_keeps_the_four",
            full_set,
        ),
    ] {
        match check(h) {
            Ok(()) => {
                println!("rate check {name}: ok");
                passed += 1;
            }
            Err(e) => {
                println!("rate check {name}: FAILED: {e:#}");
                failed += 1;
            }
        }
    }
    cost(h)?;
    Ok((passed, failed))
}

/// Prints what a rate limit adds to an allowed zone packet (a tracked
/// source, a limit it never reaches) against the same zone without one:
/// medians of 5 interleaved rounds of 100,000 runs (the kernel reports the
/// mean per run). A ratio, not asserted.
fn cost(h: &mut Harness) -> Result<()> {
    let plain = policy(zone(Vec::new()));
    let limited = policy(zone(vec![LimitSpec::packets(10_000_000, "s", 10_000_000)]));
    let frame = tcp("10.0.0.1", ACK);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        h.apply(&plain)?;
        a.push(h.time(&frame, 100_000)?.as_nanos() as f64);
        h.apply(&limited)?;
        b.push(h.time(&frame, 100_000)?.as_nanos() as f64);
    }
    a.sort_by(f64::total_cmp);
    b.sort_by(f64::total_cmp);
    println!(
        "rate cost: zone packet {:.1} ns without a limit, {:.1} ns with one (ratio {:.2})",
        a[2],
        b[2],
        b[2] / a[2]
    );
    Ok(())
}

/// A burst of three at 10/h leaves the key's `tat` three intervals (360 s
/// each) after the first packet's clock: the datapath's arithmetic, read back.
fn bucket_reads_back(h: &mut Harness) -> Result<()> {
    h.apply(&policy(zone(vec![packets(10, 5)])))?;
    let before = monotonic_ns();
    for _ in 0..3 {
        if let Some(got) = h.check(&tcp("10.0.0.7", ACK), A)? {
            bail!("program did {got}");
        }
    }
    let after = monotonic_ns();
    let key = rate_key4(1, RATE_KIND_PACKETS, 32, [10, 0, 0, 7]);
    let entries = h.rates().entries()?;
    let Some((_, b)) = entries.iter().find(|(k, _)| *k == key) else {
        bail!("no bucket for 10.0.0.7 among {} entries", entries.len());
    };
    let t = 360_000_000_000u64;
    if b.tat < before + 3 * t || b.tat > after + 3 * t {
        bail!(
            "tat {} not within [{}, {}]",
            b.tat,
            before + 3 * t,
            after + 3 * t
        );
    }
    Ok(())
}

/// A reload (another zone added, the limit changed) keeps the spent bucket.
fn reload_keeps_buckets(h: &mut Harness) -> Result<()> {
    let first = policy(zone(vec![packets(10, 2)]));
    h.apply(&first)?;
    for expect in [A, A, L] {
        if let Some(got) = h.check(&tcp("10.0.0.1", ACK), expect)? {
            bail!("before the reload: program did {got}, expected {expect}");
        }
    }
    let mut second = policy(zone(vec![packets(10, 3)]));
    second.zones.push(ZoneSpec::new(
        "other",
        vec![(Proto::Udp, 53, 53)],
        vec![Allow::Any],
    ));
    h.apply_keeping_rates(&second)?;
    // Burst 3 now: the third token is there (tat − now ≤ 2 intervals).
    for expect in [A, L] {
        if let Some(got) = h.check(&tcp("10.0.0.1", ACK), expect)? {
            bail!("after the reload: program did {got}, expected {expect}");
        }
    }
    Ok(())
}

/// 500 distinct sources against `tracked = 8`, 8 new keys an hour: the
/// table holds 8 keys of the limit, the ninth source on shares the ceiling
/// (30 packets), the rest are limited, and the first 8 keep their buckets.
fn table_bounded(h: &mut Harness) -> Result<()> {
    let l = LimitSpec {
        tracked: Some(8),
        new_sources: Some((8, "h")),
        ceiling: Some((30, "h")),
        ..packets(10, 3)
    };
    let p = policy(zone(vec![l]));
    h.apply(&p)?;
    let mut rates = Sequence::new();
    let (mut admitted, mut limited) = (0, 0);
    for i in 0..500u32 {
        let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 50, 0, 0)) + i);
        let frame = tcp(&src.to_string(), ACK);
        let (m, _) = model::decide_with(&p, &frame, &mut rates);
        let expect = Observed {
            verdict: m.verdict,
            reason: m.reason,
            rule: m.rule,
        };
        if let Some(got) = h.check(&frame, expect)? {
            bail!("source {src}: program did {got}, model says {expect}");
        }
        if m.reason == R::Allowed {
            admitted += 1;
        } else {
            limited += 1;
        }
    }
    let keys = h.rates().entries()?.len();
    if keys != 8 {
        bail!("{keys} keys tracked, expected 8");
    }
    // Ceiling burst = 3 × 30/10 = 9 packets for the untracked.
    if admitted != 9 || limited != 491 {
        bail!("{admitted} admitted, {limited} limited; expected 9 and 491");
    }
    // A tracked source (the first) still has its own bucket: 2 tokens left.
    let first: IpAddr = "10.50.0.0".parse().expect("addr");
    for expect in [A, A, L] {
        let frame = tcp(&first.to_string(), ACK);
        if let Some(got) = h.check(&frame, expect)? {
            bail!("tracked source after the flood: program did {got}, expected {expect}");
        }
    }
    Ok(())
}

/// Five sources whose keys share one `RATE_SLOTS` set (four ways), with
/// room for 100 keys: the first four get a bucket each, the fifth none (a
/// taken way is never given away), so it shares the ceiling — more packets
/// than its own burst pass, from the ceiling's — while the four keep their
/// buckets (two tokens left each) and a source of another set is tracked.
/// Kernel only: the model has no sets (the differential test's few keys a
/// policy never fill one).
fn full_set(h: &mut Harness) -> Result<()> {
    let l = LimitSpec {
        tracked: Some(100),
        new_sources: Some((100, "h")),
        ceiling: Some((100, "h")),
        ..packets(10, 3)
    };
    h.apply(&policy(zone(vec![l])))?;
    let base = u32::from(Ipv4Addr::new(10, 60, 0, 0));
    let set =
        |a: u32| rate_set(&rate_key4(1, RATE_KIND_PACKETS, 32, Ipv4Addr::from(a).octets()).words());
    // The first set that five sources of 10.60/16 share (about 1 in 20 do).
    let mut by_set = std::collections::HashMap::<u32, Vec<u32>>::new();
    let five = (base..base + 65_536)
        .find_map(|a| {
            let v = by_set.entry(set(a)).or_default();
            v.push(a);
            (v.len() == 5).then(|| v.clone())
        })
        .context("no five sources of 10.60/16 share a set")?;
    let other = (base..base + 65_536)
        .find(|a| set(*a) != set(five[0]))
        .context("a source of another set")?;
    let src = |a: u32| Ipv4Addr::from(a).to_string();
    for &a in &five {
        if let Some(got) = h.check(&tcp(&src(a), ACK), A)? {
            bail!("first packet of {}: program did {got}", src(a));
        }
    }
    let keys: Vec<_> = h.rates().entries()?.into_iter().map(|(k, _)| k).collect();
    let key = |a: u32| rate_key4(1, RATE_KIND_PACKETS, 32, Ipv4Addr::from(a).octets());
    for &a in &five[..4] {
        if !keys.contains(&key(a)) {
            bail!("{} has no bucket; tracked: {}", src(a), keys.len());
        }
    }
    if keys.contains(&key(five[4])) {
        bail!("{} has a bucket in a full set", src(five[4]));
    }
    // Untracked: six more pass from the ceiling (burst 30), past its own 3.
    for i in 0..6 {
        if let Some(got) = h.check(&tcp(&src(five[4]), ACK), A)? {
            bail!(
                "untracked packet {i} of {}: program did {got}",
                src(five[4])
            );
        }
    }
    // Each of the four: two tokens left of its own burst of three.
    for &a in &five[..4] {
        for expect in [A, A, L] {
            if let Some(got) = h.check(&tcp(&src(a), ACK), expect)? {
                bail!("tracked {}: program did {got}, expected {expect}", src(a));
            }
        }
    }
    if let Some(got) = h.check(&tcp(&src(other), ACK), A)? {
        bail!("source of another set {}: program did {got}", src(other));
    }
    if !h.rates().entries()?.iter().any(|(k, _)| *k == key(other)) {
        bail!("{} (another set, room left) is not tracked", src(other));
    }
    Ok(())
}
