//! Random rate limits for the differential test. `BPF_PROG_TEST_RUN` runs on
//! the kernel's real clock, which cannot be faked, so every generated rate
//! refills slower than a policy's frames take to run (at most 100 per hour:
//! a token every 36 s or more) and the model judges with a frozen clock: the
//! buckets only drain, and the model and the datapath must agree on exactly
//! which packets of each source (or aggregate) fit the burst, the ceiling,
//! the new-key budget and the table's room.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;
use rand::{seq::SliceRandom, Rng};

use crate::spec::{LimitSpec, PolicySpec};

const SLOW_UNITS: [&str; 2] = ["h", "day"];

fn slow<R: Rng + ?Sized>(rng: &mut R, max: u64) -> (u64, &'static str) {
    (
        rng.gen_range(1..=max),
        *SLOW_UNITS.choose(rng).expect("units"),
    )
}

fn limit<R: Rng + ?Sized>(rng: &mut R, connections: bool) -> LimitSpec {
    let (count, unit) = slow(rng, 100);
    let mut l = if connections {
        LimitSpec::connections(count, unit, 1)
    } else {
        LimitSpec::packets(count, unit, 1)
    };
    l.burst = match rng.gen_range(0..4) {
        0 => None,
        _ => Some(rng.gen_range(1..=6)),
    };
    match rng.gen_range(0..5) {
        0 => l.zone = true,
        1 => l.v4_len = [8, 16, 24].choose(rng).copied().expect("lengths"),
        2 => l.v6_len = [48, 56, 64].choose(rng).copied().expect("lengths"),
        3 => {
            l.v4_len = 8;
            l.v6_len = 48;
        }
        _ => {}
    }
    if !l.zone {
        if rng.gen_bool(0.6) {
            l.ceiling = Some(slow(rng, 200));
        }
        // Always slow: the default (100/s) would refill during the run.
        l.new_sources = Some(slow(rng, 8));
        if rng.gen_bool(0.5) {
            l.tracked = Some(rng.gen_range(1..=4));
        }
    }
    l
}

/// Gives some zones a packet limit, a connection limit or both.
pub fn add_limits<R: Rng + ?Sized>(rng: &mut R, p: &mut PolicySpec) {
    if !rng.gen_bool(0.5) {
        return;
    }
    for z in &mut p.zones {
        if !rng.gen_bool(0.5) {
            continue;
        }
        match rng.gen_range(0..3) {
            0 => z.rate.push(limit(rng, false)),
            1 => z.rate.push(limit(rng, true)),
            _ => {
                z.rate.push(limit(rng, false));
                z.rate.push(limit(rng, true));
            }
        }
    }
}

/// Sources the frames of a policy with limits or quotas come from again and
/// again: the first addresses of each limited (or quota) zone's first allow
/// prefixes, their
/// neighbours one /24 (IPv6: one /64) away, and two addresses outside them.
/// A function of the policy, so every frame of it draws the same ones.
pub fn sticky_sources(p: &PolicySpec) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for z in p
        .zones
        .iter()
        .filter(|z| !z.rate.is_empty() || z.quota.is_some())
    {
        for a in z.allow.iter().take(2) {
            let net = match a {
                crate::spec::Allow::Any => IpNet::V4("10.0.0.0/8".parse().expect("net")),
                crate::spec::Allow::Net(n) => *n,
            };
            match net {
                IpNet::V4(n) => {
                    let base = u32::from(n.network());
                    for off in [1u32, 2, 256 + 1] {
                        let a = base.wrapping_add(off);
                        if n.contains(&Ipv4Addr::from(a)) {
                            out.push(IpAddr::V4(Ipv4Addr::from(a)));
                        }
                    }
                }
                IpNet::V6(n) => {
                    let base = u128::from(n.network());
                    for off in [1u128, 2, (1 << 64) + 1] {
                        let a = base.wrapping_add(off);
                        if n.contains(&Ipv6Addr::from(a)) {
                            out.push(IpAddr::V6(Ipv6Addr::from(a)));
                        }
                    }
                }
            }
        }
    }
    out.sort();
    out.dedup();
    out
}
