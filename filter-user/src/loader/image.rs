//! A compiled policy turned into the exact map entries of one slot. Pure data:
//! building it touches no kernel state, so it is unit-tested without BPF, and the
//! writer can diff two images to touch only what changed.
use std::collections::{BTreeMap, HashMap, HashSet};

use filter_common::{
    Bl4Hosts, Bl4Word, Config, PortEntry, Sched, ZoneInfo, ZoneQuota, ZoneRates, ALLOW4_LANES,
    ALLOW6_LANES, QUOTA_MONTHS,
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{
    bl6::Bl6Image,
    compact::{touched_words, word, Compact},
    LoaderError,
};
use crate::policy::CompiledPolicy;

/// Everything one slot holds. Keys are slot-relative; the writer adds the slot.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SlotImage {
    pub config: Config,
    /// `proto_index * 65536 + port` → entry; absent = all zero.
    pub ports: HashMap<u32, PortEntry>,
    /// zone id → info; absent = not present.
    pub zones: BTreeMap<u32, ZoneInfo>,
    /// zone id → transitions of a scheduled zone; absent = all zero.
    pub sched: BTreeMap<u32, Sched>,
    /// zone id → limits of a rate-limited zone; absent = all zero.
    pub rates: BTreeMap<u32, ZoneRates>,
    /// zone id → quota of a zone with a transfer quota; absent = all zero
    /// ([`NO_QUOTA`]).
    pub quotas: BTreeMap<u32, ZoneQuota>,
    /// (allow set id, prefix).
    pub allow4: HashSet<(u32, Ipv4Net)>,
    pub allow6: HashSet<(u32, Ipv6Net)>,
    /// word index within the slot → word; absent = all zero.
    pub bl4_words: HashMap<u32, Bl4Word>,
    /// /24 number → host bitmap.
    pub bl4_hosts: HashMap<u32, Bl4Hosts>,
    /// `lane4[l - 1]`: allowlist lane `l`, expanded like the blocklist.
    pub lane4: [BitmapImage; ALLOW4_LANES as usize],
    /// The IPv6 blocklist's words, probed lengths and hash table.
    pub bl6: Bl6Image,
    /// `lane6[l - 1]`: IPv6 allowlist lane `l`, in the same layout.
    pub lane6: [Bl6Image; ALLOW6_LANES as usize],
}

/// A `QUOTAS` entry of a zone without a quota: all zero, as the kernel
/// creates it (not `ZoneQuota::default()`, whose month starts are
/// `u64::MAX`). The datapath never reads it (the zone lacks
/// `ZoneInfo::QUOTA`).
pub const NO_QUOTA: ZoneQuota = ZoneQuota {
    limit_bytes: 0,
    first: 0,
    start_ns: 0,
    len_ns: 0,
    next: [0; QUOTA_MONTHS],
    zone_key: 0,
    directions: 0,
    v4_len: 0,
    v6_len: 0,
    _pad: 0,
};

/// An IPv4 set in the blocklist's layout (the blocklist, or a lane),
/// expanded: what the datapath reads.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BitmapImage {
    /// word index within the space → word; absent = all zero.
    pub words: HashMap<u32, Bl4Word>,
    /// /24 number → host bitmap.
    pub hosts: HashMap<u32, Bl4Hosts>,
}

impl BitmapImage {
    /// The expansion of a sorted, disjoint prefix list.
    pub fn of(nets: &[Ipv4Net]) -> BitmapImage {
        let mut img = BitmapImage::default();
        let mut hosts = Vec::new();
        for w in touched_words(nets.iter()) {
            img.words.insert(w, word(nets, w, &mut hosts));
        }
        img.hosts.extend(hosts);
        img
    }
}

/// Options that change the image but are not part of the policy file: the
/// clock scheduled zones' transitions and quota zones' periods are computed
/// from.
#[derive(Debug, Clone, Copy)]
pub struct ImageOptions {
    pub clock: crate::policy::schedule::SchedClock,
}

impl Default for ImageOptions {
    /// Now, on this host's clocks.
    fn default() -> Self {
        ImageOptions {
            clock: crate::policy::schedule::SchedClock::system(),
        }
    }
}

impl SlotImage {
    /// Every map entry of `policy`'s slot. Built through the compact form the
    /// writer uses (`compact.rs`), so the two cannot disagree.
    pub fn build(policy: &CompiledPolicy, opts: ImageOptions) -> Result<Self, LoaderError> {
        Ok(Compact::build(policy, opts)?.expand())
    }
}

#[cfg(test)]
mod tests {
    use super::super::compact::bit_range;
    use super::*;
    use crate::policy::compile_str;
    use filter_common::FAILSAFE_SET_BASE;
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

    #[test]
    fn a_scheduled_zone_gets_its_flag_and_transitions_on_the_kernel_clock() {
        let p = compile_str(
            "version = 1\n[[zone]]\nname = \"a\"\nports = [\"80/tcp\"]\nallow = [\"any\"]\n\
             schedule = [{ days = \"daily\", hours = \"08:00-09:00\" }]\n",
            Path::new("test.toml"),
        )
        .unwrap();
        let now: jiff::Timestamp = "2026-12-02T08:30:00Z".parse().unwrap();
        let clock = crate::policy::schedule::SchedClock {
            now,
            kernel_offset_ns: 37_000_000_000,
        };
        let img = SlotImage::build(&p, ImageOptions { clock }).unwrap();
        assert_eq!(img.zones[&1].flags, ZoneInfo::PRESENT | ZoneInfo::SCHEDULED);
        let s = img.sched[&1];
        assert_eq!(s.open_first, 1);
        let close: jiff::Timestamp = "2026-12-02T09:00:00Z".parse().unwrap();
        assert_eq!(s.t[0] as i128, close.as_nanosecond() + 37_000_000_000);
        // Open and close for 15 days from a close: odd, ends with a close.
        assert_eq!(s.count % 2, 1);
        assert!(s.t[..s.count as usize].windows(2).all(|w| w[0] < w[1]));
        assert!(!filter_common::sched_is_open(&s, s.t[0]));
        assert!(filter_common::sched_is_open(&s, s.t[0] - 1));
        // The same policy at the same clock builds the same image; a zone
        // without hours has no entry.
        assert_eq!(SlotImage::build(&p, ImageOptions { clock }).unwrap(), img);
        assert!(
            image("version = 1\n[[zone]]\nname = \"a\"\nports = [\"80/tcp\"]\nallow = []\n")
                .sched
                .is_empty()
        );
    }

    #[test]
    fn a_quota_zone_gets_its_flag_and_its_period_on_the_kernel_clock() {
        let p = compile_str(
            "version = 1\n[[zone]]\nname = \"a\"\nports = [\"80/tcp\"]\nallow = [\"any\"]\n\
             [[zone]]\nname = \"dl\"\nports = [\"81/tcp\"]\nallow = [\"any\"]\n\
             quota = { bytes = \"10 GB\", period = \"day\", direction = \"download\" }\n",
            Path::new("test.toml"),
        )
        .unwrap();
        let now: jiff::Timestamp = "2026-12-02T08:30:00Z".parse().unwrap();
        let clock = crate::policy::schedule::SchedClock {
            now,
            kernel_offset_ns: 37_000_000_000,
        };
        let img = SlotImage::build(&p, ImageOptions { clock }).unwrap();
        assert_eq!(img.zones[&1].flags, ZoneInfo::PRESENT);
        assert_eq!(img.zones[&2].flags, ZoneInfo::PRESENT | ZoneInfo::QUOTA);
        assert_eq!(img.quotas.keys().collect::<Vec<_>>(), [&2]);
        let q = img.quotas[&2];
        let midnight: jiff::Timestamp = "2026-12-02T00:00:00Z".parse().unwrap();
        assert_eq!(
            q.start_ns as i128,
            midnight.as_nanosecond() + 37_000_000_000
        );
        assert_eq!(
            q.first,
            filter_common::quota_tag(filter_common::QUOTA_DAY, 20_789)
        );
        assert_eq!(q.zone_key, filter_common::quota_zone_key(b"dl"));
        assert_eq!(q.directions, filter_common::QUOTA_DOWNLOAD);
        assert_ne!(q, NO_QUOTA);
        // Rebuilt at the same clock: the same image (the writer's diff is empty).
        assert_eq!(SlotImage::build(&p, ImageOptions { clock }).unwrap(), img);
    }

    #[test]
    fn reject_zones_carry_their_reply_and_the_budget_lands_in_config() {
        let img = image(
            "version = 1\n[defaults]\nreject_rate = 50\nreject_burst = 4\n\
             [[zone]]\nname = \"a\"\nports = [\"1/tcp\"]\nallow = []\naction = \"reject\"\n\
             [[zone]]\nname = \"b\"\nports = [\"2/udp\"]\nallow = []\naction = \"reject\"\n\
             reject_with = \"icmp-host-unreachable\"\n\
             [[zone]]\nname = \"c\"\nports = [\"3/udp\"]\nallow = []\n",
        );
        let a = img.zones[&1];
        assert_eq!(a.flags & ZoneInfo::REJECT, ZoneInfo::REJECT);
        assert_eq!(a.reply(), filter_common::Reply::ByProtocol);
        assert_eq!(img.zones[&2].reply(), filter_common::Reply::HostUnreachable);
        assert_eq!(img.zones[&3].flags, ZoneInfo::PRESENT);
        assert_eq!(img.config.reject_cost_ns, 20_000_000);
        assert_eq!(img.config.reject_cap_ns, 80_000_000);
    }
}
