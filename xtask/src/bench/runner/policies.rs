//! The synthetic policies: N IPv4 blocklist prefixes (90% /32 hosts spread over
//! the whole address space, 10% /24 networks; none merge, so the compiled
//! policy holds exactly N), 100k IPv6 /48s, 32 zones (a TCP and a UDP port
//! each, allowlists of a /16 + 4 /24s and an IPv6 /32) and one failsafe rule.
//! Every size takes the first N of the same sequences, so the probe sources
//! are listed at every size.
//!
//! The veth floods run on one more policy ([`VethSet`]): the largest IPv4
//! list, 1M random IPv6 /48s and two more zones whose allowlists are
//! country-sized (100k prefixes /16–/24) and small (1k).
use std::{
    collections::HashSet,
    fmt::Write as _,
    io::Write as _,
    net::{Ipv4Addr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};
use rand::{rngs::SmallRng, Rng, SeedableRng};

use crate::Plan;

pub struct Zone {
    pub id: u32,
    pub tcp: u16,
    pub udp: u16,
    pub allow4: Vec<Ipv4Net>,
    pub allow6: Vec<Ipv6Net>,
}

pub struct PolicySet {
    pub dir: PathBuf,
    /// Even /32 hosts (outside 10/8, 40/6, 100/8, 127/8, 172/8, 192/8, 224/3).
    pub hosts: Vec<u32>,
    /// /24 networks: every other /24 from 40.0.0.0.
    pub nets: Vec<u32>,
    pub v6: Vec<Ipv6Net>,
    pub zones: Vec<Zone>,
    pub failsafe_from: Ipv4Net,
}

const NETS_BASE: u32 = 40 << 24;

fn excluded(top: u32) -> bool {
    matches!(top, 0 | 10 | 40..=43 | 100 | 127 | 172 | 192 | 198) || top >= 224
}

impl PolicySet {
    pub fn generate(plan: &Plan, dir: &Path) -> Result<PolicySet> {
        let max = plan.sizes.iter().copied().max().unwrap_or(0);
        let mut rng = SmallRng::seed_from_u64(0xbe9c4);
        let n_hosts = max - max / 10;
        let mut seen = HashSet::with_capacity(n_hosts);
        let mut hosts = Vec::with_capacity(n_hosts);
        while hosts.len() < n_hosts {
            let a = rng.gen::<u32>() & !1;
            if !excluded(a >> 24) && seen.insert(a) {
                hosts.push(a);
            }
        }
        let nets = (0..(max / 10) as u32)
            .map(|i| NETS_BASE + (i << 9))
            .collect();
        let v6 = (0..plan.v6_prefixes as u128)
            .map(|i| {
                let addr = Ipv6Addr::from((0x2001_0db8_0000u128 + 2 * i) << 80);
                Ipv6Net::new(addr, 48).expect("valid /48")
            })
            .collect();
        let zones = (1..=plan.zones)
            .map(|id| {
                let mut allow4 = vec![Ipv4Net::new(Ipv4Addr::new(10, id as u8, 0, 0), 16).unwrap()];
                for k in 0..4u32 {
                    let n = id * 4 + k;
                    let a = Ipv4Addr::new(172, 16 + (n >> 8) as u8, n as u8, 0);
                    allow4.push(Ipv4Net::new(a, 24).unwrap());
                }
                let a6 = Ipv6Addr::new(0xfd00, id as u16, 0, 0, 0, 0, 0, 0);
                Zone {
                    id,
                    tcp: 10_000 + id as u16,
                    udp: 20_000 + id as u16,
                    allow4,
                    allow6: vec![Ipv6Net::new(a6, 32).unwrap()],
                }
            })
            .collect();
        let set = PolicySet {
            dir: dir.to_path_buf(),
            hosts,
            nets,
            v6,
            zones,
            failsafe_from: "10.250.0.0/16".parse().unwrap(),
        };
        for &n in &plan.sizes {
            set.write(n, None)?;
        }
        set.write(max, Some(one_line_extra()))?;
        Ok(set)
    }

    /// The IPv4 blocklist of size `n`.
    pub fn v4(&self, n: usize) -> Vec<Ipv4Net> {
        let nets = n / 10;
        self.hosts[..n - nets]
            .iter()
            .map(|a| Ipv4Net::new(Ipv4Addr::from(*a), 32).unwrap())
            .chain(
                self.nets[..nets]
                    .iter()
                    .map(|a| Ipv4Net::new(Ipv4Addr::from(*a), 24).unwrap()),
            )
            .collect()
    }

    pub fn policy_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("policy-{n}.toml"))
    }

    /// The `n` policy with one more line in its list file.
    pub fn changed_policy_path(&self, n: usize) -> PathBuf {
        self.dir.join(format!("policy-{n}-changed.toml"))
    }

    fn zones_toml(&self) -> String {
        let mut toml = String::new();
        for z in &self.zones {
            let allow: Vec<String> = z
                .allow4
                .iter()
                .map(|n| format!("\"{n}\""))
                .chain(z.allow6.iter().map(|n| format!("\"{n}\"")))
                .collect();
            let _ = writeln!(
                toml,
                "[[zone]]\nname = \"z{}\"\nports = [\"{}/tcp\", \"{}/udp\"]\nallow = [{}]\n",
                z.id,
                z.tcp,
                z.udp,
                allow.join(", ")
            );
        }
        toml
    }

    fn write(&self, n: usize, extra: Option<Ipv4Net>) -> Result<()> {
        let tag = if extra.is_some() {
            format!("{n}-changed")
        } else {
            n.to_string()
        };
        let list = self.dir.join(format!("list-{tag}.netset"));
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&list).with_context(|| list.display().to_string())?,
        );
        writeln!(
            out,
            "# synthetic blocklist: {n} IPv4 + {} IPv6",
            self.v6.len()
        )?;
        for net in self.v4(n) {
            writeln!(out, "{net}")?;
        }
        for net in &self.v6 {
            writeln!(out, "{net}")?;
        }
        if let Some(e) = extra {
            writeln!(out, "{e}")?;
        }
        out.flush()?;
        let mut toml = String::from(
            "version = 1\n\n[defaults]\nunmatched = \"pass\"\n\n[metrics]\nlisten = \"127.0.0.1:19190\"\n\n",
        );
        let _ = writeln!(
            toml,
            "[blocklist]\nfiles = [\"list-{tag}.netset\"]\n\n[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"{}\"]\n",
            self.failsafe_from
        );
        toml.push_str(&self.zones_toml());
        let path = if extra.is_some() {
            self.changed_policy_path(n)
        } else {
            self.policy_path(n)
        };
        std::fs::write(&path, toml).with_context(|| path.display().to_string())
    }
}

/// The line the "one-line change" adds: a /32 no list contains (odd, in a
/// range the hosts avoid).
pub fn one_line_extra() -> Ipv4Net {
    "198.51.100.7/32".parse().unwrap()
}

/// The policy of the veth floods: the IPv4 list of size `n`, `v6` random
/// IPv6 /48s, the 32 zones, and two allowlist zones (UDP ports
/// [`ALLOW_BIG_PORT`], [`ALLOW_SMALL_PORT`]).
pub struct VethSet {
    pub path: PathBuf,
    /// Random /48s in 2000::/3 (distinct; none inside another).
    pub v6: Vec<Ipv6Net>,
    /// Disjoint prefixes /16–/24 no two of which merge; the big zone allows
    /// all of them, the small zone the first [`VethSet::small`].
    pub allow: Vec<Ipv4Net>,
    /// The sibling of each `allow` prefix (the other half of its parent):
    /// in no allowlist, the blocklist's /24 nets or any excluded range, so
    /// its sources walk the allowlist trie as deep as the listed ones, and
    /// miss.
    pub allow_misses: Vec<Ipv4Net>,
    pub small: usize,
    /// IPv6 country-sized allowlist (zone `allow6-big`): /29–/48 prefixes,
    /// one per /24 of 2000::/3, and each one's sibling (the miss flood).
    pub allow6: Vec<Ipv6Net>,
    pub allow6_misses: Vec<Ipv6Net>,
}

/// UDP ports of the two allowlist zones.
pub const ALLOW_BIG_PORT: u16 = 30_100;
pub const ALLOW_SMALL_PORT: u16 = 30_101;
pub const ALLOW6_PORT: u16 = 30_102;
/// The rate-limited zone (`ratio_spoofed_limited`): open to every IPv4
/// source, 100 packets/s per source, so a flood of random sources is
/// refused by its ceiling (10× the per-source rate) and new-source budget.
pub const LIMITED_PORT: u16 = 30_103;

/// Prefix lengths of the IPv6 allowlist, percent (registry allocations are
/// mostly /32 and /29, end sites /48).
const ALLOW6_LENGTHS: [(u8, u32); 6] = [(32, 50), (48, 25), (29, 10), (36, 5), (40, 5), (44, 5)];

/// `n` IPv6 allowlist prefixes, at most one per /24 of 2000::/3 (so none
/// overlap or merge), and their siblings (the other half of the parent, in
/// the same /24: unlisted, as deep in the trie).
fn allowlist6(rng: &mut SmallRng, n: usize) -> Result<(Vec<Ipv6Net>, Vec<Ipv6Net>)> {
    let mut used = HashSet::with_capacity(n);
    let (mut allow, mut misses) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut attempts = 0usize;
    while allow.len() < n {
        attempts += 1;
        anyhow::ensure!(
            attempts <= 4 * n + 1000,
            "IPv6 allowlist generation: too many repeats"
        );
        // 2000::/3 and 21 random bits: a /24 block.
        let block = (1u32 << 21) | (rng.gen::<u32>() & ((1 << 21) - 1));
        if !used.insert(block) {
            continue;
        }
        let len = weighted_len(rng, &ALLOW6_LENGTHS);
        let inside: u128 = rng.gen::<u128>() & ((1u128 << 104) - 1);
        let addr = (u128::from(block) << 104) | inside;
        let mask = !((1u128 << (128 - len)) - 1);
        let net = addr & mask;
        let sibling = net ^ (1u128 << (128 - len));
        let v6 = |a: u128| Ipv6Net::new(Ipv6Addr::from(a), len).expect("valid prefix");
        allow.push(v6(net));
        misses.push(v6(sibling));
    }
    Ok((allow, misses))
}

/// Prefix lengths of the country-sized allowlist, percent (country lists are
/// mostly /22–/24 with a tail of large blocks).
const ALLOW_LENGTHS: [(u8, u32); 9] = [
    (24, 40),
    (23, 15),
    (22, 15),
    (21, 10),
    (20, 8),
    (19, 5),
    (18, 3),
    (17, 2),
    (16, 2),
];

/// A prefix length drawn from `table` (length, percent; the percents add up
/// to 100, so the first entry's length is never the fallback in practice).
fn weighted_len(rng: &mut SmallRng, table: &[(u8, u32)]) -> u8 {
    let mut pick = rng.gen_range(0..100u32);
    table
        .iter()
        .find(|(_, pct)| {
            let hit = pick < *pct;
            pick = pick.saturating_sub(*pct);
            hit
        })
        .map_or(table[0].0, |(l, _)| *l)
}

/// One bit per IPv4 /24.
struct Bits24(Vec<u64>);

impl Bits24 {
    fn new() -> Bits24 {
        Bits24(vec![0; 1 << 18])
    }
    fn any(&self, first: u32, span: u32) -> bool {
        (first..first + span).any(|i| self.0[(i >> 6) as usize] & (1 << (i & 63)) != 0)
    }
    fn set(&mut self, first: u32, span: u32) {
        for i in first..first + span {
            self.0[(i >> 6) as usize] |= 1 << (i & 63);
        }
    }
}

/// `n` allowlist prefixes and their siblings (see [`VethSet::allow`]).
fn allowlist(rng: &mut SmallRng, n: usize) -> Result<(Vec<Ipv4Net>, Vec<Ipv4Net>)> {
    let (mut taken, mut reserved) = (Bits24::new(), Bits24::new());
    let (mut allow, mut misses) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut attempts = 0usize;
    while allow.len() < n {
        attempts += 1;
        if attempts > 50 * n.max(1000) {
            anyhow::bail!(
                "allowlist generation: {} of {n} prefixes after {attempts} attempts",
                allow.len()
            );
        }
        let len = weighted_len(rng, &ALLOW_LENGTHS);
        let span = 1u32 << (24 - len);
        let first = (rng.gen::<u32>() >> 8) & !(span - 1);
        let sibling = first ^ span;
        // Both halves lie in one /8 (len ≥ 9).
        if excluded(first >> 16)
            || taken.any(first, span)
            || reserved.any(first, span)
            || taken.any(sibling, span)
        {
            continue;
        }
        taken.set(first, span);
        reserved.set(sibling, span);
        let net = |i: u32| Ipv4Net::new(Ipv4Addr::from(i << 8), len).expect("valid prefix");
        allow.push(net(first));
        misses.push(net(sibling));
    }
    Ok((allow, misses))
}

/// A `[[zone]]` on `port`/udp allowing `nets`.
fn allow_zone<N: std::fmt::Display>(toml: &mut String, name: &str, port: u16, nets: &[N]) {
    let _ = write!(
        toml,
        "[[zone]]\nname = \"{name}\"\nports = [\"{port}/udp\"]\nallow = ["
    );
    for (i, net) in nets.iter().enumerate() {
        let _ = write!(toml, "{}\"{net}\"", if i == 0 { "" } else { ", " });
    }
    toml.push_str("]\n\n");
}

impl VethSet {
    pub fn generate(
        set: &PolicySet,
        n: usize,
        n6: usize,
        big: usize,
        small: usize,
        big6: usize,
    ) -> Result<VethSet> {
        let mut rng = SmallRng::seed_from_u64(0x7e7b);
        let mut seen = HashSet::with_capacity(n6);
        let mut v6 = Vec::with_capacity(n6);
        let mut attempts = 0usize;
        while v6.len() < n6 {
            attempts += 1;
            anyhow::ensure!(
                attempts <= 2 * n6 + 1000,
                "IPv6 /48 generation: too many repeats"
            );
            // 2000::/3 and 45 random bits: a /48.
            let top = (1u64 << 45) | (rng.gen::<u64>() & ((1 << 45) - 1));
            if seen.insert(top) {
                let addr = Ipv6Addr::from(u128::from(top) << 80);
                v6.push(Ipv6Net::new(addr, 48).expect("valid /48"));
            }
        }
        drop(seen);
        let (allow, allow_misses) = allowlist(&mut rng, big)?;
        let (allow6, allow6_misses) = allowlist6(&mut rng, big6)?;
        let veth = VethSet {
            path: set.dir.join("policy-veth.toml"),
            v6,
            allow,
            allow_misses,
            small: small.min(big),
            allow6,
            allow6_misses,
        };
        veth.write(set, n)?;
        Ok(veth)
    }

    fn write(&self, set: &PolicySet, n: usize) -> Result<()> {
        let list = set.dir.join("list-veth.netset");
        let mut out = std::io::BufWriter::new(
            std::fs::File::create(&list).with_context(|| list.display().to_string())?,
        );
        writeln!(
            out,
            "# synthetic blocklist of the veth floods: {n} IPv4 + {} IPv6 /48",
            self.v6.len()
        )?;
        for net in set.v4(n) {
            writeln!(out, "{net}")?;
        }
        for net in &self.v6 {
            writeln!(out, "{net}")?;
        }
        out.flush()?;
        let mut toml = String::from(
            "version = 1\n\n[defaults]\nunmatched = \"pass\"\n\n[metrics]\nlisten = \"127.0.0.1:19190\"\n\n",
        );
        let _ = writeln!(
            toml,
            "[blocklist]\nfiles = [\"list-veth.netset\"]\n\n[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"{}\"]\n",
            set.failsafe_from
        );
        toml.push_str(&set.zones_toml());
        allow_zone(&mut toml, "allow-big", ALLOW_BIG_PORT, &self.allow);
        allow_zone(
            &mut toml,
            "allow-small",
            ALLOW_SMALL_PORT,
            &self.allow[..self.small],
        );
        allow_zone(&mut toml, "allow6-big", ALLOW6_PORT, &self.allow6);
        let _ = writeln!(
            toml,
            "[[zone]]\nname = \"limited\"\nports = [\"{LIMITED_PORT}/udp\"]\nallow = [\"0.0.0.0/0\"]\n\
             rate = {{ packets = \"100/s\", burst = 200 }}\n"
        );
        std::fs::write(&self.path, toml).with_context(|| self.path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The allowlist is what the zone flood assumes: exact prefix lengths
    /// /16–/24, no two overlapping or merging (the compiled list keeps every
    /// one), and no sibling (the miss flood's sources) inside any of them.
    #[test]
    fn allowlist_prefixes_are_disjoint_and_their_siblings_unlisted() {
        let mut rng = SmallRng::seed_from_u64(1);
        let (allow, misses) = allowlist(&mut rng, 20_000).unwrap();
        assert_eq!(allow.len(), 20_000);
        let mut lens = HashSet::new();
        for n in &allow {
            assert!((16..=24).contains(&n.prefix_len()), "{n}");
            lens.insert(n.prefix_len());
        }
        assert_eq!(lens.len(), 9, "every length /16–/24 occurs");
        let merged = Ipv4Net::aggregate(&allow);
        assert_eq!(merged.len(), allow.len(), "no two prefixes merge");
        let mut listed = Bits24::new();
        let span = |n: &Ipv4Net| (u32::from(n.network()) >> 8, 1u32 << (24 - n.prefix_len()));
        for a in &allow {
            let (first, n) = span(a);
            listed.set(first, n);
        }
        assert_eq!(misses.len(), allow.len());
        for m in &misses {
            let (first, n) = span(m);
            assert!(!listed.any(first, n), "{m} overlaps the allowlist");
            assert!(!excluded(first >> 16), "{m}");
        }
    }

    /// The IPv6 allowlist: the lengths of the table, no two prefixes
    /// overlapping or merging, and every sibling outside all of them.
    #[test]
    fn ipv6_allowlist_prefixes_are_disjoint_and_their_siblings_unlisted() {
        let mut rng = SmallRng::seed_from_u64(2);
        let (allow, misses) = allowlist6(&mut rng, 20_000).unwrap();
        assert_eq!((allow.len(), misses.len()), (20_000, 20_000));
        let lens: HashSet<u8> = allow.iter().map(|n| n.prefix_len()).collect();
        assert_eq!(lens.len(), ALLOW6_LENGTHS.len(), "every length occurs");
        assert_eq!(
            Ipv6Net::aggregate(&allow).len(),
            allow.len(),
            "no two prefixes merge"
        );
        let blocks: HashSet<u128> = allow
            .iter()
            .map(|n| u128::from(n.network()) >> 104)
            .collect();
        assert_eq!(blocks.len(), allow.len(), "one prefix per /24");
        for (a, m) in allow.iter().zip(&misses) {
            assert!(!a.contains(m) && !m.contains(a), "{a} {m}");
            assert_eq!(
                u128::from(a.network()) >> 104,
                u128::from(m.network()) >> 104
            );
            assert!(a.prefix_len() == m.prefix_len());
        }
    }
}
