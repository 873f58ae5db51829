//! The compact form of a slot image: what the writer keeps as its shadow of
//! each slot. Sorted vectors instead of hash maps, and the IPv4 blocklist as
//! its (sorted, disjoint) prefix list rather than expanded bitmap words and
//! host bitmaps; the words a change touches are recomputed from the two lists
//! on demand (`word`). For 1M IPv4 + 100k IPv6 prefixes this is ~7 MB per
//! slot instead of ~100 MB of hash maps, and a one-line change touches one
//! word instead of rebuilding and diffing every entry.
use std::collections::{BTreeMap, BTreeSet, HashMap};

use filter_common::{
    Bl4Hosts, Bl4Word, Config, PortEntry, Sched, ZoneInfo, ZoneQuota, ZoneRates, ALLOW4_LANES,
    ALLOW6_LANES, BL6_GEOMETRY, FAILSAFE_SET_BASE, LANE6_GEOMETRY, MAX_FAILSAFE_GROUPS, MAX_ZONES,
    PROTO_INDEX_SCTP, PROTO_INDEX_TCP, PROTO_INDEX_UDP,
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{
    bl6::{self, Bl6Image, Set6},
    image::{BitmapImage, ImageOptions, SlotImage},
    lanes::{self, Placement},
    LoaderError,
};
use crate::policy::{Action, CompiledPolicy, FragmentMode, PortRange, Proto, ZoneAction};

/// Everything one slot holds, compactly. Keys are slot-relative.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Compact {
    pub config: Config,
    /// `proto_index * 65536 + port` → entry, sorted by key; no all-zero entries.
    pub ports: Vec<(u32, PortEntry)>,
    /// zone id → info, sorted.
    pub zones: Vec<(u32, ZoneInfo)>,
    /// zone id → transitions of each scheduled zone, sorted.
    pub sched: Vec<(u32, Sched)>,
    /// zone id → limits of each rate-limited zone, sorted.
    pub rates: Vec<(u32, ZoneRates)>,
    /// zone id → quota of each zone with a transfer quota (its period as
    /// of the build's clock), sorted.
    pub quotas: Vec<(u32, ZoneQuota)>,
    /// (allow set id, prefix), sorted, no duplicates.
    pub allow4: Vec<(u32, Ipv4Net)>,
    pub allow6: Vec<(u32, Ipv6Net)>,
    /// The IPv4 blocklist: sorted, pairwise disjoint prefixes.
    pub bl4: Vec<Ipv4Net>,
    /// `lane4[l - 1]`: the IPv4 allow set of the zone in allowlist lane `l`
    /// (sorted, disjoint; empty for a free lane). Those zones' IPv4 prefixes
    /// are not in `allow4`.
    pub lane4: [Vec<Ipv4Net>; ALLOW4_LANES as usize],
    /// `lane6[l - 1]`: the IPv6 allow set of the zone in IPv6 lane `l`
    /// (empty for a free lane), laid out for a lane's table. Those zones'
    /// IPv6 prefixes are not in `allow6`.
    pub lane6: [Set6; ALLOW6_LANES as usize],
    /// The zone (by name) in each lane of each family, for the next build's
    /// placement.
    pub lane_zones: Placement,
    /// The IPv6 blocklist: sorted, pairwise disjoint prefixes, laid out for
    /// the blocklist's table.
    pub bl6: Set6,
}

/// Entries a slot occupies in the maps both slots share (LPM tries, and
/// `BL4_BITS`, where each slot has its own region): what the capacity check
/// before a write adds up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SharedEntries {
    pub allow4: usize,
    pub allow6: usize,
    pub bl4_hosts: usize,
}

fn proto_index(p: Proto) -> u32 {
    match p {
        Proto::Tcp => PROTO_INDEX_TCP,
        Proto::Udp => PROTO_INDEX_UDP,
        Proto::Sctp => PROTO_INDEX_SCTP,
    }
}

fn port_keys(r: &PortRange) -> impl Iterator<Item = u32> {
    let base = proto_index(r.proto) * 65536;
    (r.first as u32..=r.last as u32).map(move |p| base + p)
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort_unstable();
    v.dedup();
    v
}

/// `nets` as a sorted list of disjoint prefixes covering the same addresses.
/// Compiled policies are merged already: then this is a copy.
fn disjoint_v4(nets: &[Ipv4Net]) -> Vec<Ipv4Net> {
    let ok = nets
        .windows(2)
        .all(|w| u32::from(w[0].broadcast()) < u32::from(w[1].network()));
    let trunc = nets.iter().all(|n| n.network() == n.addr());
    if ok && trunc {
        nets.to_vec()
    } else {
        Ipv4Net::aggregate(&nets.iter().map(|n| n.trunc()).collect::<Vec<_>>())
    }
}

impl Compact {
    /// The slot for `policy`, its allowlist lanes placed afresh.
    pub fn build(policy: &CompiledPolicy, opts: ImageOptions) -> Result<Self, LoaderError> {
        Self::build_after(policy, opts, &Placement::default())
    }

    /// The slot for `policy`, zones keeping the lanes `prev` gave them while
    /// they stay eligible (`lanes::place`).
    pub(crate) fn build_after(
        policy: &CompiledPolicy,
        opts: ImageOptions,
        prev: &Placement,
    ) -> Result<Self, LoaderError> {
        if policy.zones.len() > MAX_ZONES as usize {
            return Err(LoaderError::TooManyZones(policy.zones.len()));
        }
        let mut config = config(policy, opts);
        let mut ports: HashMap<u32, PortEntry> = HashMap::new();
        let mut zones = Vec::new();
        let mut sched = Vec::new();
        let mut rates = Vec::new();
        let mut quotas = Vec::new();
        let mut allow4 = Vec::new();
        let mut allow6 = Vec::new();
        for zone in &policy.zones {
            let id = zone.id as u32;
            let mut flags = ZoneInfo::PRESENT | if zone.audit { ZoneInfo::AUDIT } else { 0 };
            if let Some(s) = &zone.schedule {
                flags |= ZoneInfo::SCHEDULED;
                sched.push((id, s.sched_entry(&opts.clock).0));
            }
            if let Some(l) = &zone.limits {
                flags |= ZoneInfo::LIMITED;
                rates.push((id, l.zone_rates()));
            }
            if let Some(q) = &zone.quota {
                flags |= ZoneInfo::QUOTA;
                quotas.push((id, q.zone_quota(&zone.name, &opts.clock)));
            }
            if let ZoneAction::Reject(with) = zone.action {
                flags |= ZoneInfo::reject_flags(with.reply());
            }
            zones.push((id, ZoneInfo { flags }));
            for r in &zone.ports {
                for key in port_keys(r) {
                    let e = ports.entry(key).or_default();
                    if e.zone != 0 && e.zone as u32 != id {
                        return Err(LoaderError::PortClaimedTwice {
                            port: key & 0xffff,
                            zones: (e.zone, zone.id),
                        });
                    }
                    e.zone = zone.id;
                }
            }
        }

        // IPv4 allow sets: the eligible largest in lanes, the rest in the trie.
        let lists: Vec<(u32, Vec<Ipv4Net>)> = policy
            .zones
            .iter()
            .map(|z| (z.id as u32, disjoint_v4(&z.allow_v4)))
            .collect();
        let eligible: Vec<(String, usize)> = policy
            .zones
            .iter()
            .zip(&lists)
            .filter(|(_, (_, nets))| lanes::eligible(nets))
            .map(|(z, (_, nets))| (z.name.clone(), nets.len()))
            .collect();
        let v4 = lanes::place(&eligible, &prev.v4);
        let mut lane4: [Vec<Ipv4Net>; ALLOW4_LANES as usize] = Default::default();
        for (zone, (id, nets)) in policy.zones.iter().zip(lists) {
            match v4.iter().position(|z| z.as_deref() == Some(&zone.name)) {
                Some(l) => {
                    let info = &mut zones.iter_mut().find(|(z, _)| *z == id).expect("pushed").1;
                    info.flags |= (l as u32 + 1) << ZoneInfo::LANE_SHIFT;
                    lane4[l] = nets;
                }
                None => allow4.extend(zone.allow_v4.iter().map(|n| (id, *n))),
            }
        }
        // IPv6 allow sets likewise, in the IPv6 lanes.
        let mut sets6: Vec<(&str, u32, Vec<Ipv6Net>, Option<Set6>)> = policy
            .zones
            .iter()
            .map(|z| {
                let nets = bl6::disjoint(&z.allow_v6);
                let set = lanes::eligible6(&nets);
                (z.name.as_str(), z.id as u32, nets, set)
            })
            .collect();
        let eligible6: Vec<(String, usize)> = sets6
            .iter()
            .filter(|(.., set)| set.is_some())
            .map(|(name, _, nets, _)| (name.to_string(), nets.len()))
            .collect();
        let v6 = lanes::place(&eligible6, &prev.v6);
        let mut lane6: [Set6; ALLOW6_LANES as usize] = Default::default();
        for (name, id, nets, set) in &mut sets6 {
            match v6.iter().position(|z| z.as_deref() == Some(*name)) {
                Some(l) => {
                    let info = &mut zones.iter_mut().find(|(z, _)| z == id).expect("pushed").1;
                    info.flags |= (l as u32 + 1) << ZoneInfo::LANE6_SHIFT;
                    lane6[l] = set.take().expect("placed zones are eligible");
                }
                None => allow6.extend(nets.iter().map(|n| (*id, *n))),
            }
        }
        let lane_zones = Placement { v4, v6 };

        // Failsafe: each port covered by failsafe rules gets the group of
        // exactly those rules; the group's allow set is the union of their
        // `from` lists. Ordered, so group ids are a function of the policy
        // alone (no churn on reload).
        let mut covering: BTreeMap<u32, BTreeSet<usize>> = BTreeMap::new();
        for (i, rule) in policy.failsafe.iter().enumerate() {
            for r in &rule.ports {
                for key in port_keys(r) {
                    covering.entry(key).or_default().insert(i);
                }
            }
        }
        let mut groups: BTreeMap<BTreeSet<usize>, u16> = BTreeMap::new();
        for (key, rules) in covering {
            let next = groups.len() as u32 + 1;
            if next > MAX_FAILSAFE_GROUPS {
                return Err(LoaderError::TooManyFailsafeGroups);
            }
            let group = *groups.entry(rules).or_insert(next as u16);
            ports.entry(key).or_default().failsafe = group;
        }
        for (rules, group) in groups {
            let set = FAILSAFE_SET_BASE + group as u32;
            for i in rules {
                let rule = &policy.failsafe[i];
                allow4.extend(rule.from_v4.iter().map(|n| (set, *n)));
                allow6.extend(rule.from_v6.iter().map(|n| (set, *n)));
            }
        }
        if !policy.failsafe.is_empty() {
            config.flags |= Config::HAS_FAILSAFE;
        }

        let bl4 = disjoint_v4(&policy.blocklist_v4);
        let bl6 = Set6::of(BL6_GEOMETRY, bl6::disjoint(&policy.blocklist_v6))?;
        if !bl4.is_empty() {
            config.flags |= Config::HAS_BL4;
        }
        if !bl6.nets.is_empty() {
            config.flags |= Config::HAS_BL6;
        }
        let mut ports: Vec<(u32, PortEntry)> = ports.into_iter().collect();
        ports.sort_unstable_by_key(|(k, _)| *k);
        zones.sort_unstable_by_key(|(k, _)| *k);
        zones.dedup_by_key(|(k, _)| *k);
        sched.sort_unstable_by_key(|(k, _)| *k);
        rates.sort_unstable_by_key(|(k, _)| *k);
        quotas.sort_unstable_by_key(|(k, _)| *k);
        Ok(Compact {
            config,
            ports,
            zones,
            sched,
            rates,
            quotas,
            allow4: sorted(allow4),
            allow6: sorted(allow6),
            bl4,
            lane4,
            lane6,
            lane_zones,
            bl6,
        })
    }

    /// Which zone holds which allowlist lane.
    pub(crate) fn lanes(&self) -> Placement {
        self.lane_zones.clone()
    }

    /// What this slot occupies in the shared maps. `bl4` is sorted and
    /// disjoint, so the /24s holding a host bitmap come in ascending runs.
    pub(crate) fn shared_entries(&self) -> SharedEntries {
        let mut hosts = 0;
        let mut last = None;
        for n in self.bl4.iter().filter(|n| n.prefix_len() > 24) {
            let net24 = u32::from(n.network()) >> 8;
            if last != Some(net24) {
                hosts += 1;
                last = Some(net24);
            }
        }
        SharedEntries {
            allow4: self.allow4.len(),
            allow6: self.allow6.len(),
            bl4_hosts: hosts,
        }
    }

    /// The expanded image (every map entry), for checks and for writing
    /// against a slot read back from the kernel.
    pub fn expand(&self) -> SlotImage {
        let mut img = SlotImage {
            config: self.config,
            ports: self.ports.iter().copied().collect(),
            zones: self.zones.iter().copied().collect(),
            sched: self.sched.iter().copied().collect(),
            rates: self.rates.iter().copied().collect(),
            quotas: self.quotas.iter().copied().collect(),
            allow4: self.allow4.iter().copied().collect(),
            allow6: self.allow6.iter().copied().collect(),
            bl6: Bl6Image::build(BL6_GEOMETRY, &self.bl6.nets, &self.bl6.info),
            lane6: std::array::from_fn(|l| {
                let set = &self.lane6[l];
                Bl6Image::build(LANE6_GEOMETRY, &set.nets, &set.info)
            }),
            ..SlotImage::default()
        };
        let bl4 = BitmapImage::of(&self.bl4);
        img.bl4_words = bl4.words;
        img.bl4_hosts = bl4.hosts;
        for (lane, nets) in img.lane4.iter_mut().zip(&self.lane4) {
            *lane = BitmapImage::of(nets);
        }
        img
    }

    #[cfg(test)]
    /// The compact form of an expanded image (as read back from the kernel).
    /// Exact for consistent images (every `part` bit has its host bitmap and
    /// no /24 is both full and partial); the writer never relies on it for
    /// slots read back from the kernel (it diffs expanded images there).
    pub fn from_image(img: &SlotImage) -> Compact {
        let nets = nets_of(&img.bl4_words, &img.bl4_hosts);
        let mut ports: Vec<_> = img.ports.iter().map(|(k, v)| (*k, *v)).collect();
        ports.sort_unstable_by_key(|(k, _)| *k);
        Compact {
            config: img.config,
            ports,
            zones: img.zones.iter().map(|(k, v)| (*k, *v)).collect(),
            sched: img.sched.iter().map(|(k, v)| (*k, *v)).collect(),
            rates: img.rates.iter().map(|(k, v)| (*k, *v)).collect(),
            quotas: img.quotas.iter().map(|(k, v)| (*k, *v)).collect(),
            allow4: sorted(img.allow4.iter().copied().collect()),
            allow6: sorted(img.allow6.iter().copied().collect()),
            bl4: nets,
            lane4: std::array::from_fn(|l| nets_of(&img.lane4[l].words, &img.lane4[l].hosts)),
            lane6: std::array::from_fn(|l| set6_of(LANE6_GEOMETRY, &img.lane6[l])),
            // Not in the maps (names are in META): placement starts afresh.
            lane_zones: Placement::default(),
            bl6: set6_of(BL6_GEOMETRY, &img.bl6),
        }
    }
}

/// The set an expanded image holds, with the image's own info.
#[cfg(test)]
fn set6_of(g: filter_common::Bl6Geometry, img: &Bl6Image) -> Set6 {
    let nets = img.prefixes();
    let homes = bl6::homes(g, &nets, &img.info);
    Set6 {
        nets,
        info: img.info,
        homes,
    }
}

/// The prefix list (sorted, disjoint) an expanded bitmap holds: exact for
/// consistent images (every `part` bit has its host bitmap, no /24 both
/// full and partial).
#[cfg(test)]
fn nets_of(words: &HashMap<u32, Bl4Word>, hosts: &HashMap<u32, Bl4Hosts>) -> Vec<Ipv4Net> {
    let mut nets = Vec::new();
    for (w, word) in words {
        for b in 0..64 {
            if word.full & (1 << b) != 0 {
                let net24 = (w << 6) | b;
                nets.push(Ipv4Net::new((net24 << 8).into(), 24).expect("valid /24"));
            }
        }
    }
    for (net24, hosts) in hosts {
        for h in 0..256u32 {
            if hosts.bits[(h >> 6) as usize] & (1 << (h & 63)) != 0 {
                nets.push(Ipv4Net::new(((net24 << 8) | h).into(), 32).expect("valid /32"));
            }
        }
    }
    Ipv4Net::aggregate(&nets)
}

/// Word index (64 /24s, 2^14 addresses) of an address.
#[inline]
fn word_of(addr: u32) -> u32 {
    addr >> 14
}

/// The bitmap words the prefixes touch, ascending and without duplicates,
/// for prefixes given in ascending order of network address.
pub(super) fn touched_words<'a, I>(nets: I) -> impl Iterator<Item = u32> + 'a
where
    I: Iterator<Item = &'a Ipv4Net> + 'a,
{
    let mut next = 0u64; // first word not yet emitted
    nets.flat_map(move |n| {
        let lo = (word_of(u32::from(n.network())) as u64).max(next);
        let hi = word_of(u32::from(n.broadcast())) as u64;
        next = next.max(hi + 1);
        (lo..=hi).map(|w| w as u32)
    })
}

/// Bits lo..=hi of a u64 set.
pub(super) fn bit_range(lo: u32, hi: u32) -> u64 {
    let upper = if hi == 63 {
        u64::MAX
    } else {
        (1u64 << (hi + 1)) - 1
    };
    upper & !((1u64 << lo) - 1)
}

/// Word `w` of the bitmap of `bl4` (sorted, disjoint); the host bitmaps of its
/// partly listed /24s are appended to `hosts` in ascending /24 order. Prefixes
/// up to /24 set `full` bits; longer ones set the /24's `part` bit and host
/// bits.
pub(super) fn word(bl4: &[Ipv4Net], w: u32, hosts: &mut Vec<(u32, Bl4Hosts)>) -> Bl4Word {
    let lo = w << 14;
    let hi = lo | 0x3fff;
    let start = bl4.partition_point(|n| u32::from(n.broadcast()) < lo);
    let mut word = Bl4Word::default();
    for n in &bl4[start..] {
        let first = u32::from(n.network());
        if first > hi {
            break;
        }
        let last = u32::from(n.broadcast());
        if n.prefix_len() <= 24 {
            let a = (first.max(lo) >> 8) & 63;
            let b = (last.min(hi) >> 8) & 63;
            word.full |= bit_range(a, b);
        } else {
            let net24 = first >> 8;
            word.part |= 1 << (net24 & 63);
            let fresh = !matches!(hosts.last(), Some((k, _)) if *k == net24);
            if fresh {
                hosts.push((net24, Bl4Hosts::default()));
            }
            let bits = &mut hosts.last_mut().expect("just pushed").1.bits;
            for h in (first & 0xff)..=(last & 0xff) {
                bits[(h >> 6) as usize] |= 1 << (h & 63);
            }
        }
    }
    word
}

/// Elements only in `old` (removed) and only in `new` (added), both sorted.
pub(super) fn sorted_diff<'a, T: Ord>(old: &'a [T], new: &'a [T]) -> (Vec<&'a T>, Vec<&'a T>) {
    let (mut i, mut j) = (0, 0);
    let (mut gone, mut added) = (Vec::new(), Vec::new());
    while i < old.len() && j < new.len() {
        match old[i].cmp(&new[j]) {
            std::cmp::Ordering::Less => {
                gone.push(&old[i]);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                added.push(&new[j]);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                i += 1;
                j += 1;
            }
        }
    }
    gone.extend(&old[i..]);
    added.extend(&new[j..]);
    (gone, added)
}

/// Keyed entries that differ: (keys only in `old`, entries of `new` that are
/// new or changed). Both sorted by key.
pub(super) fn keyed_diff<V: PartialEq + Copy>(
    old: &[(u32, V)],
    new: &[(u32, V)],
) -> (Vec<u32>, Vec<(u32, V)>) {
    let (mut i, mut j) = (0, 0);
    let (mut gone, mut set) = (Vec::new(), Vec::new());
    while i < old.len() || j < new.len() {
        let ko = old.get(i).map(|e| e.0);
        let kn = new.get(j).map(|e| e.0);
        match (ko, kn) {
            (Some(a), Some(b)) if a == b => {
                if old[i].1 != new[j].1 {
                    set.push(new[j]);
                }
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                gone.push(a);
                i += 1;
            }
            (Some(a), None) => {
                gone.push(a);
                i += 1;
            }
            _ => {
                set.push(new[j]);
                j += 1;
            }
        }
    }
    (gone, set)
}

fn config(policy: &CompiledPolicy, _opts: ImageOptions) -> Config {
    let d = &policy.defaults;
    let mut flags = Config::VALID;
    let mut set = |cond: bool, flag: u32| {
        if cond {
            flags |= flag;
        }
    };
    set(d.non_ip == Action::Drop, Config::NON_IP_DROP);
    set(d.unmatched == Action::Drop, Config::UNMATCHED_DROP);
    set(d.other_protocols == Action::Drop, Config::OTHER_DROP);
    set(d.fragments == FragmentMode::Drop, Config::FRAGMENTS_DROP);
    // The reply budget as the datapath's bucket takes it: no division there.
    let rate = u64::from(d.reject_rate.max(1));
    let reject_cost_ns = 1_000_000_000 / rate;
    Config {
        flags,
        _pad: 0,
        reject_cost_ns,
        reject_cap_ns: reject_cost_ns * u64::from(d.reject_burst.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nets(s: &[&str]) -> Vec<Ipv4Net> {
        s.iter().map(|n| n.parse().unwrap()).collect()
    }

    #[test]
    fn touched_words_are_ascending_and_unique() {
        let l = nets(&["1.0.0.0/8", "1.2.3.4/32", "2.0.0.0/23", "2.0.2.0/24"]);
        let w: Vec<u32> = touched_words(l.iter()).collect();
        assert_eq!(w.len(), 1024 + 1);
        assert!(w.windows(2).all(|p| p[0] < p[1]));
    }

    #[test]
    fn expand_then_compact_round_trips() {
        let l = nets(&[
            "10.0.0.0/8",
            "192.0.2.0/25",
            "192.0.2.129/32",
            "198.51.100.0/22",
        ]);
        let c = Compact {
            bl4: l.clone(),
            ..Compact::default()
        };
        let back = Compact::from_image(&c.expand());
        assert_eq!(back.bl4, l);
    }

    /// Random disjoint prefix lists clustered in a few /16s, so lists share
    /// words, /24s and prefixes.
    fn random_list(seed: &mut u64, n: usize) -> Vec<Ipv4Net> {
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let nets: Vec<Ipv4Net> = (0..n)
            .map(|_| {
                let r = next();
                let base = [0x0a00_0000u32, 0xc000_0000, 0x6440_0000][(r % 3) as usize];
                let addr = base | ((r >> 8) as u32 & 0x3_ffff);
                let len = [16, 22, 24, 25, 30, 32, 32, 32][((r >> 40) % 8) as usize];
                Ipv4Net::new(addr.into(), len).unwrap().trunc()
            })
            .collect();
        Ipv4Net::aggregate(&nets)
    }

    /// Updating only the words touched by prefixes in one list but not the
    /// other turns the expansion of `old` into the expansion of `new`: the
    /// writer's incremental diff misses nothing.
    #[test]
    fn touched_words_cover_every_difference() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for round in 0..40 {
            let old = random_list(&mut seed, 50 + round * 5);
            let mut new = old.clone();
            // Drop some, add some.
            new.retain(|n| u32::from(n.network()) % 7 != 0);
            new.extend(random_list(&mut seed, 10));
            let new = Ipv4Net::aggregate(&new);
            let a = Compact {
                bl4: old.clone(),
                ..Compact::default()
            }
            .expand();
            let b = Compact {
                bl4: new.clone(),
                ..Compact::default()
            }
            .expand();
            let (gone, added) = sorted_diff(&old, &new);
            let mut words: Vec<u32> = touched_words(gone.into_iter()).collect();
            words.extend(touched_words(added.into_iter()));
            let mut words_img = a.bl4_words.clone();
            let mut hosts_img = a.bl4_hosts.clone();
            for w in words {
                let mut hosts = Vec::new();
                let word = word(&new, w, &mut hosts);
                if word == Bl4Word::default() {
                    words_img.remove(&w);
                } else {
                    words_img.insert(w, word);
                }
                hosts_img.retain(|net24, _| net24 >> 6 != w);
                hosts_img.extend(hosts);
            }
            words_img.retain(|_, v| *v != Bl4Word::default());
            let mut want_words = b.bl4_words.clone();
            want_words.retain(|_, v| *v != Bl4Word::default());
            assert_eq!(words_img, want_words, "round {round}");
            assert_eq!(hosts_img, b.bl4_hosts, "round {round}");
        }
    }

    #[test]
    fn keyed_diff_finds_removed_changed_and_added() {
        let old = [(1, 1u8), (2, 2), (4, 4)];
        let new = [(2, 2), (3, 3), (4, 5)];
        assert_eq!(keyed_diff(&old, &new), (vec![1], vec![(3, 3), (4, 5)]));
    }
}
