//! Seeded random policies and frames for the differential test (reference model vs
//! the real XDP program), and a minimiser for failing cases.
//!
//! Prefixes come from a small pool of "interesting" networks, perturbed by a few
//! bits, and packet sources are drawn from the same pool and from the policy's own
//! prefixes (inside, or just outside), so random packets hit the rules often.
//! About 30 % of frames are broken in some way; the rest are well-formed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::model::{judge, parse};
use crate::packet::{
    hex, ExtHeader, Frame, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_IPV4, ETH_P_IPV6,
    ETH_P_LLDP, ETH_P_MPLS, ETH_P_PPPOE,
};
use crate::spec::{
    Act, Allow, Defaults, Fragments, PolicySpec, PortRange, Proto, RejectWith, RuleSpec, ZoneSpec,
    UNLIMITED_REPLIES,
};

/// The generator every test should use: deterministic for a seed.
pub fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

const POOL4: &[&str] = &[
    "10.0.0.0/8",
    "10.20.0.0/16",
    "10.20.30.0/24",
    "10.20.30.40/32",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "192.168.1.0/24",
    "100.64.0.0/10",
    "203.0.113.0/24",
    "198.51.100.128/25",
    "1.2.3.4/32",
    "8.8.8.0/24",
];

const POOL6: &[&str] = &[
    "2001:db8::/32",
    "2001:db8:bad::/48",
    "2001:db8:bad:1::/64",
    "2001:db8:0:1::/64",
    "fd20::/48",
    "fd20::1/128",
    "fe80::/10",
    "2606:4700::/32",
];

/// Ports that policies and packets like to use.
const PORTS: &[u16] = &[
    22, 53, 80, 123, 161, 443, 3306, 3868, 5432, 6443, 8080, 8880, 8889, 8890, 9000, 9010, 10250,
    65535, 1, 0,
];

/// The IP destination of every generated packet (the protected host).
pub const HOST4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
/// The IPv6 destination of every generated packet.
pub const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

fn pool_net<R: Rng + ?Sized>(rng: &mut R, v4: bool) -> IpNet {
    let s = if v4 {
        POOL4.choose(rng)
    } else {
        POOL6.choose(rng)
    };
    s.and_then(|s| s.parse().ok())
        .expect("pool entries are valid prefixes")
}

fn is_mapped_space(net: &IpNet) -> bool {
    match net {
        IpNet::V6(n) => {
            let mapped: Ipv6Net = "::ffff:0:0/96".parse().expect("valid");
            n.prefix_len() >= 96 && mapped.contains(&n.network())
        }
        IpNet::V4(_) => false,
    }
}

/// A prefix from the pool, its length moved by up to ±4 bits (new bits random),
/// host bits cleared. Never inside `::ffff:0:0/96`.
pub fn random_prefix<R: Rng + ?Sized>(rng: &mut R) -> IpNet {
    loop {
        let v4 = rng.gen_bool(0.6);
        let net = if rng.gen_bool(0.1) {
            // now and then a prefix from nowhere
            if v4 {
                let a = Ipv4Addr::from(rng.gen::<u32>());
                IpNet::V4(
                    Ipv4Net::new(a, rng.gen_range(8..=32))
                        .expect("len ok")
                        .trunc(),
                )
            } else {
                let a = Ipv6Addr::from(rng.gen::<u128>());
                IpNet::V6(
                    Ipv6Net::new(a, rng.gen_range(16..=128))
                        .expect("len ok")
                        .trunc(),
                )
            }
        } else {
            let base = pool_net(rng, v4);
            let delta: i32 = if rng.gen_bool(0.4) {
                0
            } else {
                rng.gen_range(-4..=4)
            };
            let (min, max) = if v4 { (4, 32) } else { (8, 128) };
            let len = (i32::from(base.prefix_len()) + delta).clamp(min, max) as u8;
            let addr = randomize_beyond(rng, base.addr(), base.prefix_len());
            IpNet::new(addr, len).expect("len ok").trunc()
        };
        if !is_mapped_space(&net) {
            return net;
        }
    }
}

/// `addr` with every bit after the first `keep` bits random.
fn randomize_beyond<R: Rng + ?Sized>(rng: &mut R, addr: IpAddr, keep: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let keep = u32::from(keep);
            let host_mask = if keep >= 32 { 0 } else { u32::MAX >> keep };
            let bits = (u32::from(a) & !host_mask) | (rng.gen::<u32>() & host_mask);
            IpAddr::V4(Ipv4Addr::from(bits))
        }
        IpAddr::V6(a) => {
            let keep = u32::from(keep);
            let host_mask = if keep >= 128 { 0 } else { u128::MAX >> keep };
            let bits = (u128::from(a) & !host_mask) | (rng.gen::<u128>() & host_mask);
            IpAddr::V6(Ipv6Addr::from(bits))
        }
    }
}

/// `addr` with one of the bits just before position `len` flipped: a sibling
/// network's address, just outside the prefix.
fn flip_near<R: Rng + ?Sized>(rng: &mut R, addr: IpAddr, len: u8) -> IpAddr {
    if len == 0 {
        return addr;
    }
    let back = rng.gen_range(1..=len.min(3));
    let bit = len - back; // 0 = most significant
    match addr {
        IpAddr::V4(a) => IpAddr::V4(Ipv4Addr::from(u32::from(a) ^ (1u32 << (31 - bit)))),
        IpAddr::V6(a) => IpAddr::V6(Ipv6Addr::from(u128::from(a) ^ (1u128 << (127 - bit)))),
    }
}

fn random_proto<R: Rng + ?Sized>(rng: &mut R) -> Proto {
    match rng.gen_range(0..10) {
        0..=5 => Proto::Tcp,
        6..=8 => Proto::Udp,
        _ => Proto::Sctp,
    }
}

fn random_port<R: Rng + ?Sized>(rng: &mut R) -> u16 {
    if rng.gen_bool(0.6) {
        *PORTS.choose(rng).expect("non-empty")
    } else {
        rng.gen()
    }
}

fn random_range<R: Rng + ?Sized>(rng: &mut R) -> PortRange {
    let proto = random_proto(rng);
    let lo = random_port(rng).max(1);
    let hi = match rng.gen_range(0..20) {
        0..=12 => lo,
        13..=18 => lo.saturating_add(rng.gen_range(1..64)),
        _ => 65535,
    };
    (proto, lo, hi)
}

fn overlaps(a: &PortRange, b: &PortRange) -> bool {
    a.0 == b.0 && a.1 <= b.2 && b.1 <= a.2
}

/// A random policy: both families, nested and overlapping prefixes, 0–6 zones with
/// distinct ports, 0–2 failsafe rules (which may overlap zones), random defaults.
pub fn random_policy<R: Rng + ?Sized>(rng: &mut R) -> PolicySpec {
    let act = |rng: &mut R, p_drop: f64| {
        if rng.gen_bool(p_drop) {
            Act::Drop
        } else {
            Act::Pass
        }
    };
    let defaults = Defaults {
        unmatched: act(rng, 0.4),
        non_ip: act(rng, 0.3),
        other_protocols: act(rng, 0.3),
        fragments: if rng.gen_bool(0.3) {
            Fragments::Drop
        } else {
            Fragments::FilterFirst
        },
    };
    let blocklist = (0..rng.gen_range(0..=6))
        .map(|_| random_prefix(rng))
        .collect();
    let failsafe = (0..rng.gen_range(0..=2))
        .map(|_| RuleSpec {
            ports: (0..rng.gen_range(1..=2))
                .map(|_| random_range(rng))
                .collect(),
            from: (0..rng.gen_range(1..=3))
                .map(|_| random_prefix(rng))
                .collect(),
        })
        .collect();
    let mut claimed: Vec<PortRange> = Vec::new();
    let mut zones = Vec::new();
    for i in 0..rng.gen_range(0..=6) {
        let mut ports = Vec::new();
        for _ in 0..rng.gen_range(1..=3) {
            for _attempt in 0..20 {
                let r = random_range(rng);
                if !claimed.iter().any(|c| overlaps(c, &r)) {
                    claimed.push(r);
                    ports.push(r);
                    break;
                }
            }
        }
        if ports.is_empty() {
            continue;
        }
        let allow = (0..rng.gen_range(1..=4))
            .map(|_| {
                if rng.gen_bool(0.12) {
                    Allow::Any
                } else {
                    Allow::Net(random_prefix(rng))
                }
            })
            .collect();
        let audit = rng.gen_bool(0.25);
        let reject = rng.gen_bool(0.35).then(|| {
            let tcp_only = ports.iter().all(|r| r.0 == Proto::Tcp);
            let menu: Vec<RejectWith> = RejectWith::ALL
                .into_iter()
                .filter(|w| tcp_only || *w != RejectWith::TcpReset)
                .collect();
            *menu.choose(rng).expect("non-empty")
        });
        zones.push(ZoneSpec {
            name: format!("zone-{}", i + 1),
            ports,
            allow,
            audit,
            reject,
            schedule: None,
            rate: Vec::new(),
            quota: None,
        });
    }
    // Now and then one zone gets a country-sized IPv4 allowlist, over the
    // lane threshold, so the allowlist lanes are judged too. One at most:
    // lane placement is then the same fresh or after any predecessor (the
    // loader checks compare read-back slots with fresh images).
    if !zones.is_empty() && rng.gen_bool(0.2) {
        let z = rng.gen_range(0..zones.len());
        zones[z].allow.retain(|a| !matches!(a, Allow::Any));
        zones[z]
            .allow
            .extend(country_list(rng).into_iter().map(Allow::Net));
    }
    // Likewise an IPv6 one, for the IPv6 allowlist lanes.
    if !zones.is_empty() && rng.gen_bool(0.2) {
        let z = rng.gen_range(0..zones.len());
        zones[z].allow.retain(|a| !matches!(a, Allow::Any));
        zones[z]
            .allow
            .extend(country_list6(rng).into_iter().map(Allow::Net));
    }
    // Replies are compared one by one: the budget must never run out.
    let reject_budget = zones
        .iter()
        .any(|z| z.reject.is_some())
        .then_some(UNLIMITED_REPLIES);
    let mut p = PolicySpec {
        bans: Vec::new(),
        defaults,
        blocklist,
        failsafe,
        zones,
        at: None,
        reject_budget,
    };
    crate::gen_schedule::add_schedules(rng, &mut p);
    crate::gen_rate::add_limits(rng, &mut p);
    // Before the bans: it may choose the instant their expiries follow.
    crate::gen_quota::add_quotas(rng, &mut p);
    add_bans(rng, &mut p);
    p
}

/// 1,300–1,800 IPv4 prefixes in one /10 of 10.0.0.0/8 (the pool's space):
/// mostly /25–/32 (partly covered /24s) and /21–/24, a few /19–/20 that
/// swallow others (overlapping prefixes, merged by the compiler). Enough
/// survive merging to stay over `LANE_MIN_PREFIXES`.
fn country_list<R: Rng + ?Sized>(rng: &mut R) -> Vec<IpNet> {
    let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) | (rng.gen_range(0..4u32) << 22);
    let n = rng.gen_range(1_300..=1_800);
    (0..n)
        .map(|_| {
            let len = match rng.gen_range(0..1000) {
                0..=2 => rng.gen_range(19..=20),
                3..=299 => rng.gen_range(21..=24),
                _ => rng.gen_range(25..=32),
            };
            let addr = Ipv4Addr::from(base | (rng.gen::<u32>() & 0x3f_ffff));
            IpNet::V4(Ipv4Net::new(addr, len).expect("len ok").trunc())
        })
        .collect()
}

/// 1,100–1,500 IPv6 prefixes in 2001::/16 (which holds the pool's
/// 2001:db8::/32): the lengths of real country lists (/29, /32, /36 … /64,
/// /96, /128) and now and then any length from /33 to /128, so there are
/// more distinct lengths than a lane probes (expansion). Enough survive
/// merging to stay over `LANE_MIN_PREFIXES`.
fn country_list6<R: Rng + ?Sized>(rng: &mut R) -> Vec<IpNet> {
    const LENGTHS: [u8; 10] = [29, 32, 36, 40, 44, 48, 56, 64, 96, 128];
    let n = rng.gen_range(1_100..=1_500);
    (0..n)
        .map(|_| {
            let len = if rng.gen_bool(0.01) {
                rng.gen_range(33..=128)
            } else {
                LENGTHS[rng.gen_range(0..LENGTHS.len())]
            };
            let addr = (0x2001u128 << 112) | (rng.gen::<u128>() >> 16);
            IpNet::V6(Ipv6Net::new(addr.into(), len).expect("len ok").trunc())
        })
        .collect()
}

/// Bans from the same pool as the lists (so generated sources hit them),
/// some without expiry, some in force, some expired: at least a minute from
/// the policy's instant either way, so the run's own duration cannot matter.
fn add_bans<R: Rng + ?Sized>(rng: &mut R, p: &mut PolicySpec) {
    if rng.gen_bool(0.5) {
        return;
    }
    let now = p.at.unwrap_or_else(jiff::Timestamp::now);
    p.bans = (0..rng.gen_range(1..=5))
        .map(|_| crate::spec::BanSpec {
            net: random_prefix(rng),
            until: match rng.gen_range(0..3) {
                0 => None,
                1 => Some(now + jiff::SignedDuration::from_secs(rng.gen_range(60..86_400))),
                _ => Some(now - jiff::SignedDuration::from_secs(rng.gen_range(60..86_400))),
            },
        })
        .filter(|b| b.net.prefix_len() > 0)
        .collect();
}

/// TCP flags: mostly the segments a rejecting zone sees (SYN, ACK, data,
/// FIN), and those it must not answer (RST), sometimes any byte.
fn random_tcp_flags<R: Rng + ?Sized>(rng: &mut R) -> u8 {
    const MENU: [u8; 9] = [0x02, 0x02, 0x02, 0x10, 0x18, 0x11, 0x01, 0x04, 0x14];
    if rng.gen_bool(0.1) {
        rng.gen()
    } else {
        *MENU.choose(rng).expect("non-empty")
    }
}

/// The destination of a generated packet: the host, now and then a group
/// address (which a rejecting zone must not answer; nothing else reads it).
fn random_destination<R: Rng + ?Sized>(rng: &mut R, v6: bool) -> IpAddr {
    if rng.gen_bool(0.95) {
        return if v6 {
            IpAddr::V6(HOST6)
        } else {
            IpAddr::V4(HOST4)
        };
    }
    if v6 {
        IpAddr::V6(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1))
    } else {
        let menu = [
            Ipv4Addr::BROADCAST,
            Ipv4Addr::new(224, 0, 0, 1),
            Ipv4Addr::new(239, 1, 2, 3),
            Ipv4Addr::new(127, 0, 0, 1),
        ];
        IpAddr::V4(*menu.choose(rng).expect("non-empty"))
    }
}

/// MAC addresses: mostly unicast, now and then a broadcast or multicast
/// destination or a group source.
fn random_macs<R: Rng + ?Sized>(rng: &mut R) -> Option<([u8; 6], [u8; 6])> {
    let unicast = crate::packet::DST_MAC;
    let src = crate::packet::SRC_MAC;
    match rng.gen_range(0..100) {
        0..=1 => Some(([0xff; 6], src)),
        2 => Some(([0x01, 0x00, 0x5e, 0x00, 0x00, 0x01], src)),
        3 => Some(([0x33, 0x33, 0x00, 0x00, 0x00, 0x01], src)),
        4 => Some((unicast, [0x03, 0, 0, 0, 0, 1])),
        _ => None,
    }
}

/// A source address: mostly inside (or just outside) the policy's prefixes or
/// the pool, sometimes anything.
pub fn random_source<R: Rng + ?Sized>(rng: &mut R, policy: &PolicySpec) -> IpAddr {
    // Rate limits need sources that come back: a few fixed ones per policy.
    let sticky = crate::gen_rate::sticky_sources(policy);
    if !sticky.is_empty() && rng.gen_bool(0.4) {
        return *sticky.choose(rng).expect("non-empty");
    }
    let prefixes = policy.all_prefixes();
    let roll = rng.gen_range(0..100);
    let net = if roll < 65 && !prefixes.is_empty() {
        *prefixes.choose(rng).expect("non-empty")
    } else if roll < 90 {
        let v4 = rng.gen_bool(0.6);
        pool_net(rng, v4)
    } else if rng.gen_bool(0.5) {
        return IpAddr::V4(Ipv4Addr::from(rng.gen::<u32>()));
    } else {
        return IpAddr::V6(Ipv6Addr::from(rng.gen::<u128>()));
    };
    let inside = randomize_beyond(rng, net.addr(), net.prefix_len());
    if rng.gen_bool(0.25) {
        flip_near(rng, inside, net.prefix_len())
    } else {
        inside
    }
}

/// A (protocol, destination port): mostly from the policy's ranges (inside, or one
/// past either end), sometimes anything.
pub fn random_dport<R: Rng + ?Sized>(rng: &mut R, policy: &PolicySpec) -> (Proto, u16) {
    let ranges = policy.all_ports();
    if !ranges.is_empty() && rng.gen_bool(0.7) {
        let &(proto, lo, hi) = ranges.choose(rng).expect("non-empty");
        let proto = if rng.gen_bool(0.85) {
            proto
        } else {
            random_proto(rng)
        };
        let port = match rng.gen_range(0..10) {
            0..=5 => rng.gen_range(lo..=hi),
            6 => lo,
            7 => hi,
            8 => lo.wrapping_sub(1),
            _ => hi.wrapping_add(1),
        };
        (proto, port)
    } else {
        (random_proto(rng), random_port(rng))
    }
}

fn random_bytes<R: Rng + ?Sized>(rng: &mut R, max: usize) -> Vec<u8> {
    let n = rng.gen_range(0..=max);
    (0..n).map(|_| rng.gen()).collect()
}

/// What sits on top of IP in a generated frame.
#[derive(Clone, Debug)]
enum Top {
    Ports(Proto, u16, u16),
    Icmp,
    Other(u8),
}

impl Top {
    fn ip_proto(&self, v6: bool) -> u8 {
        match self {
            Top::Ports(p, _, _) => p.number(),
            Top::Icmp if v6 => 58,
            Top::Icmp => 1,
            Top::Other(n) => *n,
        }
    }

    fn header_len(&self) -> usize {
        match self {
            Top::Ports(Proto::Tcp, _, _) => 20,
            Top::Ports(Proto::Udp, _, _) => 8,
            Top::Ports(Proto::Sctp, _, _) => 12,
            Top::Icmp => 8,
            Top::Other(_) => 0,
        }
    }
}

/// Protocols without ports that frames carry. None of them is an IPv6 extension
/// header type.
const OTHER_PROTOS: &[u8] = &[4, 33, 41, 47, 50, 59, 89, 103, 136, 253, 255];

/// The kinds of damage a broken frame can get.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Damage {
    ThirdVlan,
    VlanCutShort,
    Tiny,
    Truncate,
    Version,
    Ihl,
    TotalLen,
    L4InPadding,
    TcpOffsetOne,
    FirstFragmentShort,
    TooManyExt,
    HbhNotFirst,
    SecondFragment,
    ExtOverrun,
    PayloadLen,
}

const DAMAGE_V4: &[Damage] = &[
    Damage::ThirdVlan,
    Damage::VlanCutShort,
    Damage::Tiny,
    Damage::Truncate,
    Damage::Truncate,
    Damage::Version,
    Damage::Ihl,
    Damage::TotalLen,
    Damage::L4InPadding,
    Damage::TcpOffsetOne,
    Damage::FirstFragmentShort,
];

const DAMAGE_V6: &[Damage] = &[
    Damage::ThirdVlan,
    Damage::VlanCutShort,
    Damage::Tiny,
    Damage::Truncate,
    Damage::Truncate,
    Damage::Version,
    Damage::L4InPadding,
    Damage::TcpOffsetOne,
    Damage::FirstFragmentShort,
    Damage::TooManyExt,
    Damage::HbhNotFirst,
    Damage::SecondFragment,
    Damage::ExtOverrun,
    Damage::PayloadLen,
];

fn random_vlans<R: Rng + ?Sized>(rng: &mut R, n: usize) -> Vec<(u16, u16)> {
    (0..n)
        .map(|_| {
            let tpid = if rng.gen_bool(0.5) {
                ETH_P_8021Q
            } else {
                ETH_P_8021AD
            };
            (tpid, rng.gen_range(1..4095))
        })
        .collect()
}

fn clean_vlan_count<R: Rng + ?Sized>(rng: &mut R) -> usize {
    match rng.gen_range(0..100) {
        0..=79 => 0,
        80..=91 => 1,
        _ => 2,
    }
}

fn random_plain_ext<R: Rng + ?Sized>(rng: &mut R) -> ExtHeader {
    match rng.gen_range(0..4) {
        0 => ExtHeader::Routing {
            len_units: rng.gen_range(0..=3),
        },
        1 => ExtHeader::DestOpts {
            len_units: rng.gen_range(0..=3),
        },
        2 => ExtHeader::Mobility {
            len_units: rng.gen_range(0..=2),
        },
        _ => ExtHeader::Ah {
            len_field: rng.gen_range(0..=6),
        },
    }
}

/// A fragment header that keeps the frame well-formed for a layer 4 `proto`.
fn random_clean_frag<R: Rng + ?Sized>(rng: &mut R, proto: u8) -> (u16, bool) {
    match rng.gen_range(0..10) {
        0..=3 => (0, true),                                        // first fragment
        4 => (0, false),                                           // atomic / last-and-only
        _ if proto == 6 => (rng.gen_range(2..=0x1fff), rng.gen()), // non-first TCP
        5 => (1, rng.gen()),                                       // offset 1, not TCP: fine
        _ => (rng.gen_range(2..=0x1fff), rng.gen()),
    }
}

/// A well-formed IPv6 extension chain of 0..=8 headers (hop-by-hop only first, at
/// most one fragment header).
fn random_clean_chain<R: Rng + ?Sized>(rng: &mut R, proto: u8) -> Vec<ExtHeader> {
    let n = rng.gen_range(1..=8);
    let mut chain = Vec::with_capacity(n);
    let mut has_frag = false;
    for i in 0..n {
        let roll = rng.gen_range(0..10);
        if i == 0 && roll < 4 {
            chain.push(ExtHeader::HopByHop {
                len_units: rng.gen_range(0..=3),
            });
        } else if !has_frag && roll >= 8 {
            has_frag = true;
            let (offset, more) = random_clean_frag(rng, proto);
            chain.push(ExtHeader::frag(offset, more));
        } else {
            chain.push(random_plain_ext(rng));
        }
    }
    chain
}

/// A random frame (about 70 % well-formed, 30 % broken) as a builder, so that it
/// can be minimised; `.build()` gives the bytes.
pub fn random_frame_spec<R: Rng + ?Sized>(rng: &mut R, policy: &PolicySpec) -> Frame {
    // Quotas are crossed by sources that come back to their zone.
    if policy.zones.iter().any(|z| z.quota.is_some()) && rng.gen_bool(0.25) {
        if let Some(f) = crate::gen_quota::random_upload(rng, policy) {
            return f;
        }
    }
    let broken = rng.gen_bool(0.3);
    frame_recipe(rng, policy, broken)
}

/// A random frame's bytes.
pub fn random_frame<R: Rng + ?Sized>(rng: &mut R, policy: &PolicySpec) -> Vec<u8> {
    random_frame_spec(rng, policy).build()
}

/// A random frame that the contract accepts (never `malformed`).
pub fn random_well_formed_frame<R: Rng + ?Sized>(rng: &mut R, policy: &PolicySpec) -> Frame {
    frame_recipe(rng, policy, false)
}

fn frame_recipe<R: Rng + ?Sized>(rng: &mut R, policy: &PolicySpec, broken: bool) -> Frame {
    // Non-IP frames (a few of them broken by a third tag or a cut).
    if rng.gen_bool(0.07) {
        let ethertype = match rng.gen_range(0..7) {
            0 => ETH_P_ARP,
            1 => ETH_P_LLDP,
            2 => ETH_P_MPLS,
            3 => ETH_P_PPPOE,
            4 => rng.gen_range(0..0x0600), // 802.3 length field
            _ => loop {
                let e: u16 = rng.gen();
                if ![ETH_P_IPV4, ETH_P_IPV6, ETH_P_8021Q, ETH_P_8021AD].contains(&e) {
                    break e;
                }
            },
        };
        let mut f = Frame::raw_ethertype(ethertype, random_bytes(rng, 64));
        let tags = if broken {
            rng.gen_range(3..=4)
        } else {
            clean_vlan_count(rng)
        };
        for (tpid, vid) in random_vlans(rng, tags) {
            f = f.vlan(tpid, vid);
        }
        return f;
    }

    let src = random_source(rng, policy);
    let v6 = match src {
        IpAddr::V4(_) => rng.gen_bool(0.12), // IPv4-mapped source over IPv6
        IpAddr::V6(_) => true,
    };
    let top = match rng.gen_range(0..100) {
        0..=69 => {
            let (proto, dport) = random_dport(rng, policy);
            Top::Ports(proto, rng.gen_range(1024..=65535), dport)
        }
        70..=81 => Top::Icmp,
        _ => Top::Other(*OTHER_PROTOS.choose(rng).expect("non-empty")),
    };
    let payload = if rng.gen_bool(0.5) {
        Vec::new()
    } else {
        random_bytes(rng, 48)
    };

    // The damage, decided up front so the layers can be built around it.
    let damage: Vec<Damage> = if broken {
        let menu = if v6 { DAMAGE_V6 } else { DAMAGE_V4 };
        let n = if rng.gen_bool(0.2) { 2 } else { 1 };
        (0..n)
            .map(|_| *menu.choose(rng).expect("non-empty"))
            .collect()
    } else {
        Vec::new()
    };
    let has = |d: Damage| damage.contains(&d);

    // Layer 4 may be forced to TCP for the offset-1 case.
    let top = if has(Damage::TcpOffsetOne) {
        let (_, dport) = random_dport(rng, policy);
        Top::Ports(Proto::Tcp, rng.gen_range(1024..=65535), dport)
    } else {
        top
    };
    let proto = top.ip_proto(v6);

    let dst = random_destination(rng, v6);
    let mut f = match (src, dst) {
        (IpAddr::V4(a), IpAddr::V6(d)) => Frame::ipv6(a.to_ipv6_mapped(), d),
        (IpAddr::V6(a), IpAddr::V6(d)) => Frame::ipv6(a, d),
        (IpAddr::V4(a), IpAddr::V4(d)) => Frame::ipv4(a, d),
        (IpAddr::V6(_), IpAddr::V4(_)) => unreachable!("IPv6 sources always make IPv6 frames"),
    };
    if let Some((d, s)) = random_macs(rng) {
        f = f.macs(d, s);
    }

    // VLAN tags
    let tags = if has(Damage::ThirdVlan) {
        rng.gen_range(3..=4)
    } else if has(Damage::VlanCutShort) {
        rng.gen_range(1..=2)
    } else {
        clean_vlan_count(rng)
    };
    for (tpid, vid) in random_vlans(rng, tags) {
        f = f.vlan(tpid, vid);
    }

    // Layer 4
    f = match top {
        Top::Ports(Proto::Tcp, s, d) => {
            let f = f
                .tcp_flags(s, d, random_tcp_flags(rng))
                .seq_ack(rng.gen(), rng.gen());
            if rng.gen_bool(0.03) {
                f.tcp_doff(rng.gen_range(0..16))
            } else {
                f
            }
        }
        Top::Ports(Proto::Udp, s, d) => f.udp(s, d),
        Top::Ports(Proto::Sctp, s, d) => f.sctp(s, d),
        Top::Icmp if v6 => f.icmpv6(),
        Top::Icmp => f.icmp(),
        Top::Other(n) => f.proto(n, Vec::new()),
    };
    f = f.payload(payload.clone());
    let l4_len = top.header_len() + payload.len();
    let min_l4 = match top {
        Top::Ports(..) => top.header_len(),
        _ => 0,
    };

    // Network layer
    if v6 {
        let mut chain = if rng.gen_bool(0.3) {
            random_clean_chain(rng, proto)
        } else {
            Vec::new()
        };
        if has(Damage::TcpOffsetOne) {
            chain.retain(|e| !matches!(e, ExtHeader::Fragment { .. }));
            chain.push(ExtHeader::frag(1, rng.gen()));
            if chain.len() > 8 {
                chain.remove(0);
            }
        }
        if has(Damage::FirstFragmentShort) {
            chain.retain(|e| !matches!(e, ExtHeader::Fragment { .. }));
            let at = rng.gen_range(0..=chain.len());
            let at = if at == 0 && matches!(chain.first(), Some(ExtHeader::HopByHop { .. })) {
                1
            } else {
                at
            };
            chain.insert(at, ExtHeader::frag(0, true));
        }
        if has(Damage::TooManyExt) {
            while chain.len() < rng.gen_range(9..=10) {
                chain.push(random_plain_ext(rng));
            }
        }
        if has(Damage::HbhNotFirst) {
            if chain.is_empty() {
                chain.push(random_plain_ext(rng));
            }
            let at = rng.gen_range(1..=chain.len());
            chain.insert(at, ExtHeader::HopByHop { len_units: 0 });
        }
        if has(Damage::SecondFragment) {
            let (o1, m1) = (0, rng.gen());
            chain.push(ExtHeader::frag(o1, m1));
            let (o2, m2) = random_clean_frag(rng, proto);
            chain.push(ExtHeader::frag(o2, m2));
        }
        if has(Damage::ExtOverrun) {
            // A header whose length runs past the end of the payload.
            let kind = *[0u8, 43, 60, 135, 51].choose(rng).expect("non-empty");
            let kind = if kind == 0 && !chain.is_empty() {
                60
            } else {
                kind
            };
            let mut bytes = vec![0, rng.gen_range(16..=255)];
            bytes.extend(random_bytes(rng, 6));
            chain.push(ExtHeader::Raw {
                next_header_value: kind,
                bytes,
            });
        }
        let ext_len: usize = chain.iter().map(ExtHeader::encoded_len).sum();
        for e in chain {
            f = f.ext(e);
        }
        if has(Damage::FirstFragmentShort) || has(Damage::L4InPadding) {
            if min_l4 > 0 {
                let keep = rng.gen_range(0..min_l4);
                f = f.payload_len((ext_len + keep) as u16);
                // the rest of the layer 4 stays in the frame, as padding
            } else {
                f = f.payload_len(ext_len.saturating_sub(rng.gen_range(1..=8)) as u16);
            }
        }
        if has(Damage::PayloadLen) {
            let natural = ext_len + l4_len;
            let plen = match rng.gen_range(0..3) {
                0 => natural + rng.gen_range(1..=16),
                1 => rng.gen_range(0..=natural),
                _ => rng.gen::<u16>() as usize,
            };
            f = f.payload_len(plen as u16);
        }
        if has(Damage::Version) {
            f = f.version(*[0u8, 4, 5, 7, 15].choose(rng).expect("non-empty"));
        }
    } else {
        let mut ip_header_len = 20;
        if rng.gen_bool(0.12) {
            let opts = random_options(rng);
            ip_header_len += opts.len().div_ceil(4) * 4;
            f = f.ipv4_options(opts);
        }
        // fragments
        if has(Damage::TcpOffsetOne) {
            f = f.frag(1, rng.gen());
        } else if has(Damage::FirstFragmentShort) {
            f = f.frag(0, true);
            let keep = rng.gen_range(0..min_l4.max(1));
            f = f.total_len((ip_header_len + keep) as u16);
        } else if rng.gen_bool(0.15) {
            let (offset, more) = random_clean_frag(rng, proto);
            f = f.frag(offset, more);
        }
        if has(Damage::Ihl) {
            f = f.ihl(rng.gen_range(0..=15));
        }
        if has(Damage::TotalLen) {
            let natural = ip_header_len + l4_len;
            let total = match rng.gen_range(0..3) {
                0 => natural + rng.gen_range(1..=16),
                1 => rng.gen_range(0..ip_header_len),
                _ => rng.gen::<u16>() as usize,
            };
            f = f.total_len(total as u16);
        }
        if has(Damage::L4InPadding) {
            let keep = rng.gen_range(0..min_l4.max(1));
            f = f.total_len((ip_header_len + keep) as u16);
        }
        if has(Damage::Version) {
            f = f.version(*[0u8, 5, 6, 7, 15].choose(rng).expect("non-empty"));
        }
    }

    // Ethernet padding (sometimes looking like a TCP header to a closed port)
    if rng.gen_bool(0.12) {
        f = f.trailer(random_bytes(rng, 40));
    }

    // Cuts
    if has(Damage::Tiny) {
        f = f.truncate(rng.gen_range(0..14));
    } else if has(Damage::VlanCutShort) {
        f = f.truncate(14 + 4 * (tags - 1) + rng.gen_range(1..4));
    } else if has(Damage::Truncate) {
        let len = f.build().len();
        f = f.truncate(rng.gen_range(0..len));
    }
    f
}

/// IPv4 options: NOPs, router alert, random TLV-ish bytes; at most 40 bytes.
fn random_options<R: Rng + ?Sized>(rng: &mut R) -> Vec<u8> {
    match rng.gen_range(0..3) {
        0 => vec![0x94, 0x04, 0x00, 0x00],
        1 => vec![1; rng.gen_range(1..=40)],
        _ => random_bytes(rng, 40).into_iter().take(40).collect(),
    }
}

/// A (policy, frame) pair for one seed.
pub fn random_case(seed: u64) -> (PolicySpec, Frame) {
    let mut r = rng(seed);
    let policy = random_policy(&mut r);
    let frame = random_frame_spec(&mut r, &policy);
    (policy, frame)
}

// ---------------------------------------------------------------------------
// Minimisation
// ---------------------------------------------------------------------------

/// Every policy one step simpler than `p`.
pub fn policy_simplifications(p: &PolicySpec) -> Vec<PolicySpec> {
    let mut out = Vec::new();
    for i in 0..p.zones.len() {
        let mut q = p.clone();
        q.zones.remove(i);
        out.push(q);
    }
    for i in 0..p.failsafe.len() {
        let mut q = p.clone();
        q.failsafe.remove(i);
        out.push(q);
    }
    for i in 0..p.blocklist.len() {
        let mut q = p.clone();
        q.blocklist.remove(i);
        out.push(q);
    }
    for (zi, z) in p.zones.iter().enumerate() {
        if z.ports.len() > 1 {
            for j in 0..z.ports.len() {
                let mut q = p.clone();
                q.zones[zi].ports.remove(j);
                out.push(q);
            }
        }
        if z.allow.len() > 1 {
            for j in 0..z.allow.len() {
                let mut q = p.clone();
                q.zones[zi].allow.remove(j);
                out.push(q);
            }
        }
        if z.audit {
            let mut q = p.clone();
            q.zones[zi].audit = false;
            out.push(q);
        }
        if z.reject.is_some() {
            let mut q = p.clone();
            q.zones[zi].reject = None;
            out.push(q);
        }
    }
    for (ri, r) in p.failsafe.iter().enumerate() {
        if r.ports.len() > 1 {
            for j in 0..r.ports.len() {
                let mut q = p.clone();
                q.failsafe[ri].ports.remove(j);
                out.push(q);
            }
        }
        if r.from.len() > 1 {
            for j in 0..r.from.len() {
                let mut q = p.clone();
                q.failsafe[ri].from.remove(j);
                out.push(q);
            }
        }
    }
    let d = Defaults::default();
    let mut push_default = |set: &dyn Fn(&mut Defaults)| {
        let mut q = p.clone();
        set(&mut q.defaults);
        if q.defaults != p.defaults {
            out.push(q);
        }
    };
    push_default(&|x| x.unmatched = d.unmatched);
    push_default(&|x| x.non_ip = d.non_ip);
    push_default(&|x| x.other_protocols = d.other_protocols);
    push_default(&|x| x.fragments = d.fragments);
    out
}

/// Shrink only the policy while `still_fails(policy, frame)` holds.
pub fn minimize_policy<F>(policy: &PolicySpec, frame: &[u8], mut still_fails: F) -> PolicySpec
where
    F: FnMut(&PolicySpec, &[u8]) -> bool,
{
    let mut current = policy.clone();
    'outer: loop {
        for candidate in policy_simplifications(&current) {
            if still_fails(&candidate, frame) {
                current = candidate;
                continue 'outer;
            }
        }
        return current;
    }
}

/// Shrink the policy, then the frame bytes (by cutting bytes off its end), while
/// `still_fails(policy, frame)` holds. Greedy: take the first simplification that
/// still fails, until none does.
pub fn minimize<F>(policy: PolicySpec, frame: Vec<u8>, mut still_fails: F) -> (PolicySpec, Vec<u8>)
where
    F: FnMut(&PolicySpec, &[u8]) -> bool,
{
    let mut p = policy;
    let mut f = frame;
    'outer: loop {
        for candidate in policy_simplifications(&p) {
            if still_fails(&candidate, &f) {
                p = candidate;
                continue 'outer;
            }
        }
        let len = f.len();
        for cut in [len / 2, 16, 4, 1] {
            if cut == 0 || cut > len {
                continue;
            }
            let shorter = &f[..len - cut];
            if still_fails(&p, shorter) {
                f = shorter.to_vec();
                continue 'outer;
            }
        }
        return (p, f);
    }
}

/// As `minimize`, for a frame built with the builder: also drops VLAN tags,
/// extension headers, options, payload and padding one at a time.
pub fn minimize_frame<F>(
    policy: &PolicySpec,
    frame: &Frame,
    mut still_fails: F,
) -> (PolicySpec, Frame)
where
    F: FnMut(&PolicySpec, &[u8]) -> bool,
{
    let mut p = policy.clone();
    let mut f = frame.clone();
    'outer: loop {
        let bytes = f.build();
        for candidate in policy_simplifications(&p) {
            if still_fails(&candidate, &bytes) {
                p = candidate;
                continue 'outer;
            }
        }
        for candidate in f.simplifications() {
            if still_fails(&p, &candidate.build()) {
                f = candidate;
                continue 'outer;
            }
        }
        return (p, f);
    }
}

/// A human-readable reproducer: the policy file, the frame in hex, and what the
/// reference model thinks of it.
pub fn reproducer(policy: &PolicySpec, frame: &[u8]) -> String {
    format!(
        "---- policy.toml ----\n{}---- frame ({} bytes) ----\n{}\n---- model ----\n{} ({:?})\n",
        policy.to_toml(),
        frame.len(),
        hex(frame),
        judge(policy, frame),
        parse(frame),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Fragment, Parsed, Transport};
    use filter_common::Reason;
    use std::collections::BTreeMap;

    #[test]
    fn generated_policies_are_valid() {
        for seed in 0..3000 {
            let p = random_policy(&mut rng(seed));
            if let Err(e) = p.check() {
                panic!("seed {seed}: {e:?}\n{}", p.to_toml());
            }
            for n in p.all_prefixes() {
                assert!(!is_mapped_space(&n), "seed {seed}: mapped prefix {n}");
            }
            assert!(p.zones.len() <= 6 && p.failsafe.len() <= 2);
        }
    }

    /// About one policy in six has a zone in an allowlist lane, with partly
    /// covered /24s, and as many one in an IPv6 lane, with more prefix
    /// lengths than are probed: the differential test judges the lanes.
    #[test]
    fn some_generated_policies_put_a_zone_in_a_lane() {
        use filter_user::loader::{ImageOptions, SlotImage};
        let (mut laned, mut with_hosts, mut laned6, mut expanded) = (0, 0, 0, 0);
        for seed in 0..300 {
            let p = random_policy(&mut rng(seed));
            let c = filter_user::policy::compile_str(&p.to_toml(), std::path::Path::new("g.toml"))
                .expect("compiles");
            let img = SlotImage::build(&c, ImageOptions::default()).expect("builds");
            let lanes = img.zones.values().filter(|z| z.lane() != 0).count();
            assert!(lanes <= 1, "seed {seed}: {lanes} laned zones");
            laned += lanes;
            with_hosts += (!img.lane4[0].hosts.is_empty()) as usize;
            let lanes6 = img.zones.values().filter(|z| z.lane6() != 0).count();
            assert!(lanes6 <= 1, "seed {seed}: {lanes6} zones in IPv6 lanes");
            laned6 += lanes6;
            // More lengths than are probed: the lane's table is expanded.
            expanded += (img.lane6[0].info.count as usize == filter_common::BL6_MAX_LENS) as usize;
        }
        assert!((30..=90).contains(&laned), "{laned} of 300");
        assert_eq!(with_hosts, laned);
        assert!((30..=90).contains(&laned6), "{laned6} of 300 in IPv6 lanes");
        assert_eq!(expanded, laned6);
    }

    #[test]
    fn generation_is_deterministic() {
        let a = random_case(42);
        let b = random_case(42);
        assert_eq!(a.0, b.0);
        assert_eq!(a.1.build(), b.1.build());
    }

    #[test]
    fn well_formed_frames_are_never_malformed() {
        let mut r = rng(7);
        for i in 0..20_000 {
            let p = random_policy(&mut r);
            let f = random_well_formed_frame(&mut r, &p).build();
            if let Parsed::Malformed(why) = parse(&f) {
                panic!("frame {i} malformed ({why}):\n{}", reproducer(&p, &f));
            }
        }
    }

    #[test]
    fn random_frames_cover_every_reason_and_path() {
        let mut r = rng(1);
        let mut reasons: BTreeMap<Reason, usize> = BTreeMap::new();
        let (mut first, mut non_first, mut mapped, mut v6, mut tagged) = (0, 0, 0, 0, 0);
        let n = 50_000;
        // Frames come in runs per policy, as in the differential test: a
        // rate limit is reached only by a sequence sharing its buckets.
        let mut p = random_policy(&mut r);
        let mut rates = crate::model::Sequence::new();
        for i in 0..n {
            if i % 100 == 0 {
                p = random_policy(&mut r);
                rates = crate::model::Sequence::new();
            }
            let f = random_frame(&mut r, &p);
            let reason = crate::model::decide_with(&p, &f, &mut rates).0.reason;
            *reasons.entry(reason).or_default() += 1;
            if let Parsed::Ip(info) = parse(&f) {
                match info.fragment {
                    Fragment::First => first += 1,
                    Fragment::NonFirst => non_first += 1,
                    Fragment::No => {}
                }
                if let IpAddr::V6(a) = info.src {
                    v6 += 1;
                    if a.to_ipv4_mapped().is_some() {
                        mapped += 1;
                    }
                }
                let tagged_frame = f[12..14] != [0x08, 0x00] && f[12..14] != [0x86, 0xdd];
                if matches!(info.transport, Transport::Ports { .. }) && tagged_frame {
                    tagged += 1;
                }
            }
        }
        for reason in Reason::ALL {
            // No policy: never generated; the budget: not modelled.
            if matches!(reason, Reason::NoPolicy | Reason::RejectSuppressed) {
                continue;
            }
            let count = reasons.get(&reason).copied().unwrap_or(0);
            // A limit (or quota) is over only after its burst (its bytes):
            // rarer than the rest.
            let least = if matches!(reason, Reason::RateLimited | Reason::QuotaExceeded) {
                n / 2000
            } else {
                n / 200
            };
            assert!(count >= least, "{reason:?} only {count} times: {reasons:?}");
        }
        let malformed = reasons[&Reason::Malformed] as f64 / n as f64;
        assert!(
            (0.15..0.40).contains(&malformed),
            "malformed share {malformed}"
        );
        assert!(
            first > n / 100 && non_first > n / 100,
            "{first} {non_first}"
        );
        assert!(mapped > n / 100 && v6 > n / 5, "{mapped} {v6}");
        assert!(tagged > n / 50, "{tagged}");
    }

    #[test]
    fn every_damage_kind_is_malformed_sometimes() {
        // Broken frames are mostly malformed (some damage can be harmless, e.g. an
        // IHL overwritten with its own value).
        let mut r = rng(3);
        let mut malformed = 0;
        let n = 10_000;
        for _ in 0..n {
            let p = random_policy(&mut r);
            let f = frame_recipe(&mut r, &p, true).build();
            if judge(&p, &f).reason == Reason::Malformed {
                malformed += 1;
            }
        }
        assert!(
            malformed > n * 8 / 10,
            "only {malformed} of {n} broken frames malformed"
        );
    }

    #[test]
    fn minimize_shrinks_to_the_relevant_rule() {
        // Find a case judged by the blocklist with a busy policy, then minimise
        // with "still blocklisted" as the failure predicate.
        let mut r = rng(11);
        let (p, f) = loop {
            let p = random_policy(&mut r);
            let f = random_frame_spec(&mut r, &p);
            if p.zones.len() >= 3
                && p.blocklist.len() >= 2
                && judge(&p, &f.build()).reason == Reason::Blocklist
            {
                break (p, f);
            }
        };
        let pred = |p: &PolicySpec, b: &[u8]| judge(p, b).reason == Reason::Blocklist;
        let (mp, mf) = minimize_frame(&p, &f, pred);
        assert!(pred(&mp, &mf.build()));
        assert_eq!(mp.blocklist.len(), 1, "{}", mp.to_toml());
        assert!(mp.zones.is_empty() && mp.failsafe.is_empty());
        assert_eq!(mp.defaults, Defaults::default());
        let text = reproducer(&mp, &mf.build());
        assert!(text.contains("[blocklist]") && text.contains("blocklist rule 0"));

        let (bp, bf) = minimize(p.clone(), f.build(), pred);
        assert!(pred(&bp, &bf));
        assert_eq!(bp.blocklist.len(), 1);
        assert!(bf.len() <= f.build().len());

        let only_policy = minimize_policy(&p, &f.build(), pred);
        assert_eq!(only_policy.blocklist.len(), 1);
    }
}
