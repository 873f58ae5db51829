//! A compiled policy turned into the exact map entries of one slot. Pure data:
//! building it touches no kernel state, so it is unit-tested without BPF, and the
//! writer can diff two images to touch only what changed.
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use filter_common::{
    Bl4Hosts, Bl4Word, Config, PortEntry, ZoneInfo, FAILSAFE_SET_BASE, MAX_FAILSAFE_GROUPS,
    MAX_ZONES, PROTO_INDEX_SCTP, PROTO_INDEX_TCP, PROTO_INDEX_UDP,
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::LoaderError;
use crate::policy::{Action, CompiledPolicy, FragmentMode, PortRange, Proto};

/// Everything one slot holds. Keys are slot-relative; the writer adds the slot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SlotImage {
    pub config: Config,
    /// `proto_index * 65536 + port` → entry; absent = all zero.
    pub ports: HashMap<u32, PortEntry>,
    /// zone id → info; absent = not present.
    pub zones: BTreeMap<u32, ZoneInfo>,
    /// (allow set id, prefix).
    pub allow4: HashSet<(u32, Ipv4Net)>,
    pub allow6: HashSet<(u32, Ipv6Net)>,
    /// word index within the slot → word; absent = all zero.
    pub bl4_words: HashMap<u32, Bl4Word>,
    /// /24 number → host bitmap.
    pub bl4_hosts: HashMap<u32, Bl4Hosts>,
    pub bl6: HashSet<Ipv6Net>,
}

/// Options that change the image but are not part of the policy file.
#[derive(Debug, Default, Clone, Copy)]
pub struct ImageOptions {
    pub log_packets: bool,
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

impl SlotImage {
    pub fn build(policy: &CompiledPolicy, opts: ImageOptions) -> Result<Self, LoaderError> {
        let mut img = SlotImage {
            config: config(policy, opts),
            ..SlotImage::default()
        };

        if policy.zones.len() > MAX_ZONES as usize {
            return Err(LoaderError::TooManyZones(policy.zones.len()));
        }
        for zone in &policy.zones {
            let id = zone.id as u32;
            let flags = ZoneInfo::PRESENT | if zone.audit { ZoneInfo::AUDIT } else { 0 };
            img.zones.insert(id, ZoneInfo { flags });
            for r in &zone.ports {
                for key in port_keys(r) {
                    let e = img.ports.entry(key).or_default();
                    if e.zone != 0 && e.zone as u32 != id {
                        return Err(LoaderError::PortClaimedTwice {
                            port: key & 0xffff,
                            zones: (e.zone, zone.id),
                        });
                    }
                    e.zone = zone.id;
                }
            }
            img.allow4.extend(zone.allow_v4.iter().map(|n| (id, *n)));
            img.allow6.extend(zone.allow_v6.iter().map(|n| (id, *n)));
        }

        img.add_failsafe(policy)?;
        for net in &policy.blocklist_v4 {
            img.add_bl4(*net);
        }
        img.bl6.extend(policy.blocklist_v6.iter().copied());
        if !img.bl4_words.is_empty() {
            img.config.flags |= Config::HAS_BL4;
        }
        if !img.bl6.is_empty() {
            img.config.flags |= Config::HAS_BL6;
        }
        Ok(img)
    }

    /// Each port covered by failsafe rules gets the group of exactly those rules;
    /// the group's allow set is the union of their `from` lists.
    fn add_failsafe(&mut self, policy: &CompiledPolicy) -> Result<(), LoaderError> {
        // Ordered, so group ids are a function of the policy alone: the same
        // policy always yields the same image (no churn on reload).
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
            self.ports.entry(key).or_default().failsafe = group;
        }
        for (rules, group) in groups {
            let set = FAILSAFE_SET_BASE + group as u32;
            for i in rules {
                let rule = &policy.failsafe[i];
                self.allow4.extend(rule.from_v4.iter().map(|n| (set, *n)));
                self.allow6.extend(rule.from_v6.iter().map(|n| (set, *n)));
            }
        }
        if !policy.failsafe.is_empty() {
            self.config.flags |= Config::HAS_FAILSAFE;
        }
        Ok(())
    }

    /// Prefixes up to /24 set whole-/24 bits; longer ones set host bits.
    fn add_bl4(&mut self, net: Ipv4Net) {
        let first = u32::from(net.network());
        if net.prefix_len() <= 24 {
            let lo = first >> 8;
            let hi = u32::from(net.broadcast()) >> 8;
            for w in (lo >> 6)..=(hi >> 6) {
                let wlo = (w << 6).max(lo);
                let whi = ((w << 6) | 63).min(hi);
                let mask = bit_range(wlo & 63, whi & 63);
                self.bl4_words.entry(w).or_default().full |= mask;
            }
        } else {
            let net24 = first >> 8;
            let lo = first & 0xff;
            let hi = u32::from(net.broadcast()) & 0xff;
            let hosts = self.bl4_hosts.entry(net24).or_default();
            for h in lo..=hi {
                hosts.bits[(h >> 6) as usize] |= 1 << (h & 63);
            }
            self.bl4_words.entry(net24 >> 6).or_default().part |= 1 << (net24 & 63);
        }
    }
}

/// Bits lo..=hi of a u64 set.
fn bit_range(lo: u32, hi: u32) -> u64 {
    let upper = if hi == 63 {
        u64::MAX
    } else {
        (1u64 << (hi + 1)) - 1
    };
    upper & !((1u64 << lo) - 1)
}

fn config(policy: &CompiledPolicy, opts: ImageOptions) -> Config {
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
    set(opts.log_packets, Config::LOG_PACKETS);
    Config { flags }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile_str;
    use std::path::Path;

    fn image(toml: &str) -> SlotImage {
        let p = compile_str(toml, Path::new("test.toml")).expect("policy compiles");
        SlotImage::build(&p, ImageOptions::default()).expect("image builds")
    }

    #[test]
    fn bit_range_covers_inclusive_bounds() {
        assert_eq!(bit_range(0, 63), u64::MAX);
        assert_eq!(bit_range(0, 0), 1);
        assert_eq!(bit_range(63, 63), 1 << 63);
        assert_eq!(bit_range(2, 4), 0b11100);
    }

    #[test]
    fn slash_8_sets_1024_full_words() {
        let img = image("version = 1\n[blocklist]\ncidrs = [\"10.0.0.0/8\"]\n");
        assert_eq!(img.bl4_words.len(), 1024);
        assert!(img
            .bl4_words
            .values()
            .all(|w| w.full == u64::MAX && w.part == 0));
        assert!(img.bl4_hosts.is_empty());
        assert!(img.config.has(Config::HAS_BL4));
    }

    #[test]
    fn slash_22_sets_four_bits() {
        let img = image("version = 1\n[blocklist]\ncidrs = [\"192.0.4.0/22\"]\n");
        let net24 = u32::from(std::net::Ipv4Addr::new(192, 0, 4, 0)) >> 8;
        let w = img.bl4_words[&(net24 >> 6)];
        assert_eq!(w.full, 0b1111 << (net24 & 63));
    }

    #[test]
    fn slash_30_sets_four_host_bits_and_the_part_bit() {
        let img = image("version = 1\n[blocklist]\ncidrs = [\"198.51.100.64/30\"]\n");
        let net24 = u32::from(std::net::Ipv4Addr::new(198, 51, 100, 0)) >> 8;
        assert_eq!(img.bl4_hosts[&net24].bits, [0, 0b1111, 0, 0]);
        assert_eq!(img.bl4_words[&(net24 >> 6)].part, 1 << (net24 & 63));
    }

    #[test]
    fn failsafe_rules_sharing_a_port_get_a_group_with_both_sources() {
        let img = image(
            "version = 1\n[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"10.0.0.0/8\"]\n\
             [[failsafe]]\nports = [\"22/tcp\", \"2222/tcp\"]\nfrom = [\"192.168.0.0/16\"]\n",
        );
        let g22 = img.ports[&22].failsafe as u32;
        let g2222 = img.ports[&2222].failsafe as u32;
        assert_ne!(g22, g2222);
        let set22: Vec<_> = img
            .allow4
            .iter()
            .filter(|(s, _)| *s == FAILSAFE_SET_BASE + g22)
            .collect();
        assert_eq!(set22.len(), 2);
        assert!(img.config.has(Config::HAS_FAILSAFE));
    }

    #[test]
    fn same_policy_builds_identical_images() {
        let toml = "version = 1\n[[failsafe]]\nports = [\"22/tcp\", \"80-90/udp\"]\nfrom = [\"10.0.0.0/8\"]\n\
                    [[failsafe]]\nports = [\"22/tcp\", \"85-99/udp\"]\nfrom = [\"192.168.0.0/16\"]\n";
        let first = image(toml);
        for _ in 0..20 {
            assert_eq!(image(toml), first);
        }
    }

    #[test]
    fn zone_ports_and_audit_flag_land_in_the_image() {
        let img = image(
            "version = 1\n[[zone]]\nname = \"a\"\nports = [\"9000-9002/udp\"]\nallow = [\"any\"]\naudit = true\n",
        );
        for p in 9000..=9002 {
            assert_eq!(img.ports[&(65536 + p)].zone, 1);
        }
        assert_eq!(img.ports.len(), 3);
        assert_eq!(img.zones[&1].flags, ZoneInfo::PRESENT | ZoneInfo::AUDIT);
        assert!(img.allow4.contains(&(1, "0.0.0.0/0".parse().unwrap())));
        assert!(img.allow6.contains(&(1, "::/0".parse().unwrap())));
    }
}
