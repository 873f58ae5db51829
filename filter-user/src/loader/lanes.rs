//! Which zones' allow sets go into the allowlist lanes (layout:
//! `filter-common`, "Allowlist lanes" and "IPv6 allowlist lanes"), and which
//! stay in the `ALLOW4` and `ALLOW6` tries. Each family has its own lanes,
//! placed the same way.
//!
//! A zone is *eligible* when its merged allow set of that family has at
//! least `LANE_MIN_PREFIXES` prefixes and fits one lane: for IPv4 its partly
//! covered /24s fit a lane's region of host bitmaps, for IPv6 its table
//! entries (after expansion) fit a lane's table. Placement is sticky: a zone that held a lane in
//! the slot's previous content keeps it while it stays eligible, so a
//! one-line change to a country list is a diff of that lane (O(changed
//! entries)), not a move. Free lanes go to the largest eligible zones; a zone
//! is evicted only by one at least `EVICT_FACTOR` times its size (no
//! ping-pong between two zones of similar size). Failsafe groups never get a
//! lane: they stay exact and simple in the trie.
use filter_common::{ALLOW4_LANES, ALLOW6_LANES, LANE4_REGION, LANE6_GEOMETRY, LANE_MIN_PREFIXES};
use ipnet::{Ipv4Net, Ipv6Net};

use super::bl6::Set6;

/// Lanes of one slot and family: `lanes[l - 1]` = the zone in lane `l`, if
/// any, by name (zone ids are positions in the file: removing a zone
/// renumbers the ones after it, but they keep their lanes).
pub(crate) type Lanes = [Option<String>; ALLOW4_LANES as usize];
/// The IPv6 lanes of one slot, as [`Lanes`].
pub(crate) type Lanes6 = [Option<String>; ALLOW6_LANES as usize];

/// Both families' lanes of one slot: what the next build's placement starts
/// from.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    pub v4: Lanes,
    pub v6: Lanes6,
}

/// An eligible zone evicts a placed one only when it is this many times
/// larger.
const EVICT_FACTOR: usize = 2;

/// Partly covered /24s (host bitmaps) of a sorted, disjoint list.
pub(super) fn partial_nets24(nets: &[Ipv4Net]) -> usize {
    let mut count = 0;
    let mut last = None;
    for n in nets.iter().filter(|n| n.prefix_len() > 24) {
        let net24 = u32::from(n.network()) >> 8;
        if last != Some(net24) {
            count += 1;
            last = Some(net24);
        }
    }
    count
}

/// Whether a zone's (sorted, disjoint) IPv4 allow set may take a lane.
pub(super) fn eligible(nets: &[Ipv4Net]) -> bool {
    nets.len() >= LANE_MIN_PREFIXES && partial_nets24(nets) <= LANE4_REGION as usize
}

/// A zone's (sorted, disjoint) IPv6 allow set laid out for a lane, if it
/// may take one.
pub(super) fn eligible6(nets: &[Ipv6Net]) -> Option<Set6> {
    if nets.len() < LANE_MIN_PREFIXES {
        return None;
    }
    Set6::of(LANE6_GEOMETRY, nets.to_vec()).ok()
}

/// The `N` lanes for `zones` ((zone, prefixes) of the eligible zones, in
/// file order), given the slot's previous lanes.
pub(super) fn place<K: Clone + PartialEq, const N: usize>(
    zones: &[(K, usize)],
    prev: &[Option<K>; N],
) -> [Option<K>; N] {
    let size = |z: &K| zones.iter().find(|(k, _)| k == z).map(|(_, n)| *n);
    let mut lanes: [Option<K>; N] = std::array::from_fn(|_| None);
    for (l, z) in prev.iter().enumerate() {
        lanes[l] = z.clone().filter(|z| size(z).is_some());
    }
    // The rest, largest first (ties: file order), for free lanes and
    // evictions.
    let mut rest: Vec<&(K, usize)> = zones
        .iter()
        .filter(|(k, _)| !lanes.iter().any(|l| l.as_ref() == Some(k)))
        .collect();
    rest.sort_by_key(|z| std::cmp::Reverse(z.1));
    for (k, n) in rest {
        if let Some(free) = lanes.iter_mut().find(|l| l.is_none()) {
            *free = Some(k.clone());
            continue;
        }
        // The smallest placed zone (the last lane of equals), evicted if
        // this one dwarfs it.
        let (l, small) = lanes
            .iter()
            .enumerate()
            .filter_map(|(l, z)| Some((l, size(z.as_ref()?)?)))
            .min_by_key(|(l, n)| (*n, usize::MAX - *l))
            .expect("every lane is taken");
        if *n >= EVICT_FACTOR * small {
            lanes[l] = Some(k.clone());
        } else {
            break; // the rest are no larger
        }
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fresh_placement_takes_the_largest_zones_in_order() {
        let z = [(1, 2000), (2, 5000), (3, 1500), (4, 100_000)];
        assert_eq!(place(&z, &[None; 3]), [Some(4), Some(2), Some(1)]);
    }

    #[test]
    fn a_placed_zone_keeps_its_lane_while_eligible() {
        let z = [(1, 2000), (2, 5000), (3, 1500), (4, 2999)];
        let prev = [Some(3), None, Some(1)];
        // Zone 3 is the smallest but stays (zone 4 is not twice its size);
        // the free lane goes to zone 2.
        assert_eq!(place(&z, &prev), [Some(3), Some(2), Some(1)]);
    }

    #[test]
    fn a_zone_that_shrank_below_the_threshold_frees_its_lane() {
        // Zone 3 is no longer listed (not eligible): zone 5 gets its lane.
        let z = [(1, 2000), (2, 5000), (5, 1100)];
        let prev = [Some(3), Some(2), Some(1)];
        assert_eq!(place(&z, &prev), [Some(5), Some(2), Some(1)]);
    }

    #[test]
    fn a_much_larger_zone_evicts_the_smallest_placed_one() {
        let prev = [Some(1), Some(2), Some(3)];
        // Not twice the smallest (2000): nothing moves.
        let z = [(1, 2000), (2, 5000), (3, 8000), (4, 3999)];
        assert_eq!(place(&z, &prev), prev);
        let z = [(1, 2000), (2, 5000), (3, 8000), (4, 100_000)];
        assert_eq!(place(&z, &prev), [Some(4), Some(2), Some(3)]);
    }

    #[test]
    fn eligibility_needs_the_threshold_and_room_for_host_bitmaps() {
        let list = |n: u32, len: u8| -> Vec<Ipv4Net> {
            (0..n)
                .map(|i| Ipv4Net::new((0x0a00_0000 + (i << 8)).into(), len).unwrap())
                .collect()
        };
        assert!(!eligible(&list(LANE_MIN_PREFIXES as u32 - 1, 24)));
        assert!(eligible(&list(LANE_MIN_PREFIXES as u32, 24)));
        assert!(eligible(&list(LANE4_REGION, 32)));
        assert!(!eligible(&list(LANE4_REGION + 1, 32)));
    }
}

/// Lanes through `Compact::build_after`, as reloads use them.
#[cfg(test)]
mod reload_tests {
    use std::path::Path;

    use filter_common::ZoneInfo;
    use ipnet::Ipv4Net;

    use filter_common::BL6_MAX_DISP;

    use super::super::{
        bl4::{write_lists, Layout, Writes},
        bl6::changed_buckets_local,
        compact::{sorted_diff, Compact},
        image::ImageOptions,
        LoaderError,
    };
    use super::{Lanes, Placement};
    use crate::policy::{compile_str, CompiledPolicy};

    /// `n` prefixes for zone number `z`: /24s, /23s, and a quarter /28s
    /// and /32s (partly covered /24s), each in its own /22 so merging keeps
    /// them all.
    fn list(z: u32, n: u32, skip: Option<u32>) -> Vec<String> {
        (0..n)
            .filter(|i| Some(*i) != skip)
            .map(|i| {
                let base = (z << 24) + (i << 10);
                match i % 8 {
                    2 => format!("{}/28", std::net::Ipv4Addr::from(base | 0x40)),
                    3 => format!("{}/32", std::net::Ipv4Addr::from(base | 0x81)),
                    0 | 4 | 6 => format!("{}/24", std::net::Ipv4Addr::from(base)),
                    _ => format!("{}/23", std::net::Ipv4Addr::from(base)),
                }
            })
            .collect()
    }

    fn policy(zones: &[(u32, Vec<String>)]) -> CompiledPolicy {
        let mut toml = String::from("version = 1\n");
        for (z, allow) in zones {
            let allow: Vec<String> = allow.iter().map(|a| format!("\"{a}\"")).collect();
            toml += &format!(
                "[[zone]]\nname = \"z{z}\"\nports = [\"{}/tcp\"]\nallow = [{}]\n",
                1000 + z,
                allow.join(", ")
            );
        }
        toml += "[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"192.0.2.0/24\"]\n";
        compile_str(&toml, Path::new("lanes.toml")).expect("policy compiles")
    }

    fn names(v: [Option<u32>; 3]) -> Lanes {
        v.map(|z| z.map(|z| format!("z{z}")))
    }

    fn build(p: &CompiledPolicy, prev: &Lanes) -> Compact {
        let prev = Placement {
            v4: prev.clone(),
            ..Placement::default()
        };
        Compact::build_after(p, ImageOptions::default(), &prev).expect("builds")
    }

    /// Every zone's IPv4 allow set is exactly in its lane or exactly in the
    /// trie, never split; the failsafe group is in the trie.
    fn check_split(p: &CompiledPolicy, c: &Compact) {
        let lanes = c.lanes().v4;
        for z in &p.zones {
            let id = z.id as u32;
            let in_trie: Vec<Ipv4Net> = c
                .allow4
                .iter()
                .filter(|(s, _)| *s == id)
                .map(|(_, n)| *n)
                .collect();
            match lanes.iter().position(|l| l.as_deref() == Some(&z.name)) {
                Some(l) => {
                    assert!(in_trie.is_empty(), "zone {id} also in the trie");
                    assert_eq!(c.lane4[l], z.allow_v4, "zone {id}'s lane");
                }
                None => assert_eq!(in_trie, z.allow_v4, "zone {id} in the trie"),
            }
        }
        for (l, nets) in c.lane4.iter().enumerate() {
            assert_eq!(nets.is_empty(), lanes[l].is_none(), "lane {}", l + 1);
        }
        assert!(c
            .allow4
            .iter()
            .any(|(s, _)| *s > filter_common::FAILSAFE_SET_BASE));
    }

    #[test]
    fn small_zones_and_failsafe_stay_in_the_trie() {
        let p = policy(&[(1, list(1, 1023, None)), (2, list(2, 10, None))]);
        let c = build(&p, &Lanes::default());
        assert_eq!(c.lanes().v4, names([None; 3]));
        check_split(&p, &c);
    }

    #[test]
    fn lanes_follow_zones_that_grow_shrink_and_appear() {
        let big = |z, n| (z, list(z, n, None));
        let steps = [
            vec![big(1, 2000), big(2, 1500), big(3, 100)],
            // Zone 3 grows: the free lane.
            vec![big(1, 2000), big(2, 1500), big(3, 1100)],
            // Zone 4 appears larger than zone 3 (not twice): no move.
            vec![big(1, 2000), big(2, 1500), big(3, 1100), big(4, 2100)],
            // Zone 2 shrinks below the threshold: zone 4 takes its lane.
            vec![big(1, 2000), big(2, 900), big(3, 1100), big(4, 2100)],
            // Zone 5, ten times zone 3: evicts it.
            vec![big(1, 2000), big(3, 1100), big(4, 2100), big(5, 11_000)],
        ];
        let want: [[Option<u32>; 3]; 5] = [
            [Some(1), Some(2), None],
            [Some(1), Some(2), Some(3)],
            [Some(1), Some(2), Some(3)],
            [Some(1), Some(4), Some(3)],
            [Some(1), Some(4), Some(5)],
        ];
        let mut prev = Lanes::default();
        for (i, (zones, want)) in steps.iter().zip(want).enumerate() {
            let p = policy(zones);
            let c = build(&p, &prev);
            assert_eq!(c.lanes().v4, names(want), "step {i}");
            check_split(&p, &c);
            // The zone's flags carry the lane the datapath reads (zone ids
            // are positions: step 4 renumbers the zones after z2).
            for (l, z) in want.iter().enumerate() {
                if let Some(z) = z {
                    let id = p
                        .zones
                        .iter()
                        .find(|x| x.name == format!("z{z}"))
                        .unwrap()
                        .id;
                    let info = c.zones.iter().find(|(i, _)| *i == id as u32).unwrap().1;
                    assert_eq!(info.lane(), l as u32 + 1);
                    assert_eq!(info.flags & ZoneInfo::PRESENT, ZoneInfo::PRESENT);
                }
            }
            prev = c.lanes().v4;
        }
    }

    /// A one-prefix change to a 100k-prefix country list keeps its lane,
    /// and the lane's diff writes O(1) entries.
    #[test]
    fn one_prefix_change_in_a_100k_lane_writes_o1_entries() {
        let a = policy(&[
            (20, list(20, 16_000, None)),
            (100, list(100, 100_000, None)),
        ]);
        let b = policy(&[
            (20, list(20, 16_000, None)),
            (100, list(100, 100_000, Some(50_002))),
        ]);
        let ca = build(&a, &Lanes::default());
        let cb = build(&b, &ca.lanes().v4);
        assert_eq!(ca.lanes(), cb.lanes());
        let l = cb
            .lanes()
            .v4
            .iter()
            .position(|z| z.as_deref() == Some("z100"))
            .unwrap();
        assert_eq!(sorted_diff(&ca.lane4[l], &cb.lane4[l]).0.len(), 1);
        // Written as the writer does: the first write lays out the lane,
        // the reload diffs it.
        let region = filter_common::LANE4_REGION;
        let space = filter_common::lane4_space(1, l as u32 + 1);
        let mut layout = Some(Layout::new(region));
        let mut count = 0u64;
        let mut flush = |w: &Writes| -> Result<(), LoaderError> {
            count += (w.bits.len() + w.base.len() + w.words.len()) as u64;
            let words = space * filter_common::BL4_WORDS_PER_SLOT
                ..(space + 1) * filter_common::BL4_WORDS_PER_SLOT;
            assert!(w.words.iter().chain(&w.base).all(|i| words.contains(i)));
            let bits = space * region..(space + 1) * region;
            assert!(w.bits.iter().chain(&w.base_v).all(|i| bits.contains(i)));
            Ok(())
        };
        let first = write_lists(
            &mut layout,
            region,
            space,
            "t",
            &[],
            &ca.lane4[l],
            &mut flush,
        )
        .expect("fits");
        // 100k prefixes, one per /22: 6,250 words and bases, 25,000 host
        // bitmaps.
        assert_eq!(first.entries, 6_250 * 2 + 25_000, "{first:?}");
        // The removed prefix is a /28: its /24 loses its host bitmap, so its
        // group's block moves (≤ 64 bitmaps), plus a base and a word.
        let out = write_lists(
            &mut layout,
            region,
            space,
            "t",
            &ca.lane4[l],
            &cb.lane4[l],
            &mut flush,
        )
        .expect("fits");
        assert!(!out.rewritten);
        assert!((1..=66).contains(&out.entries), "{out:?}");
        // And a /24 coming back: one word.
        let out = write_lists(
            &mut layout,
            region,
            space,
            "t",
            &cb.lane4[l],
            &ca.lane4[l],
            &mut flush,
        )
        .expect("fits");
        assert!(!out.rewritten && out.entries <= 66, "{out:?}");
    }

    /// `n` IPv6 prefixes for zone number `z`: /48s with a gap between each
    /// (so merging keeps them all), every fourth a /64 instead.
    fn list6(z: u32, n: u32, skip: Option<u32>) -> Vec<String> {
        (0..n)
            .filter(|i| Some(*i) != skip)
            .map(|i| {
                let (a, b) = (i / 30_000, (i % 30_000) * 2);
                match i % 4 {
                    3 => format!("2a{z:02x}:{a:x}:{b:x}:1::/64"),
                    _ => format!("2a{z:02x}:{a:x}:{b:x}::/48"),
                }
            })
            .collect()
    }

    fn with6(zones: &[(u32, Vec<String>, Vec<String>)]) -> CompiledPolicy {
        let both: Vec<(u32, Vec<String>)> = zones
            .iter()
            .map(|(z, v4, v6)| (*z, v4.iter().chain(v6).cloned().collect()))
            .collect();
        policy(&both)
    }

    /// A country-sized IPv6 list takes an IPv6 lane of its own, beside the
    /// zone's IPv4 lane: its prefixes leave the trie, its flags name the
    /// lane. A small one, and the failsafe group, stay in the trie.
    #[test]
    fn large_ipv6_allow_sets_take_ipv6_lanes() {
        let p = with6(&[
            (1, list(1, 1500, None), list6(1, 5000, None)),
            (2, list(2, 10, None), list6(2, 1023, None)),
            (3, list(3, 10, None), list6(3, 1024, None)),
        ]);
        let c = build(&p, &Lanes::default());
        let names6 = |v: [Option<u32>; 3]| v.map(|z| z.map(|z| format!("z{z}")));
        assert_eq!(c.lanes().v6, names6([Some(1), Some(3), None]));
        assert_eq!(c.lanes().v4, names([Some(1), None, None]));
        for (z, lane) in [(1u32, 1u32), (2, 0), (3, 2)] {
            let zone = p.zones.iter().find(|x| x.name == format!("z{z}")).unwrap();
            let id = zone.id as u32;
            let info = c.zones.iter().find(|(i, _)| *i == id).unwrap().1;
            assert_eq!(info.lane6(), lane, "zone {z}");
            let in_trie: Vec<_> = c.allow6.iter().filter(|(s, _)| *s == id).collect();
            if lane == 0 {
                assert_eq!(in_trie.len(), zone.allow_v6.len(), "zone {z}");
            } else {
                assert!(in_trie.is_empty(), "zone {z} also in the trie");
                assert_eq!(c.lane6[lane as usize - 1].nets, zone.allow_v6, "zone {z}");
            }
        }
        assert!(c.lane6[2].nets.is_empty());
        assert!(c
            .allow6
            .iter()
            .all(|(s, _)| *s <= 2 || *s > filter_common::FAILSAFE_SET_BASE));
    }

    /// A list whose table entries do not fit a lane's table stays in the
    /// trie (and still loads).
    #[test]
    fn an_ipv6_list_too_large_for_a_lane_stays_in_the_trie() {
        let n = filter_common::LANE6_TABLE_MAX as u32 + 1;
        let p = with6(&[(1, vec![], list6(1, n, None))]);
        let c = build(&p, &Lanes::default());
        assert_eq!(c.lanes().v6, [None, None, None]);
        assert_eq!(c.allow6.iter().filter(|(s, _)| *s == 1).count(), n as usize);
    }

    /// A one-prefix change to a 60k-prefix IPv6 list keeps its lane, its
    /// probed lengths and seed, and changes O(1) buckets of its table.
    #[test]
    fn one_prefix_change_in_a_60k_ipv6_lane_changes_few_buckets() {
        let a = with6(&[(7, vec![], list6(7, 60_000, None))]);
        let b = with6(&[(7, vec![], list6(7, 60_000, Some(31_337)))]);
        let ca = build(&a, &Lanes::default());
        let prev = Placement {
            v6: ca.lanes().v6,
            ..Placement::default()
        };
        let cb = Compact::build_after(&b, ImageOptions::default(), &prev).expect("builds");
        assert_eq!(ca.lanes(), cb.lanes());
        let (old, new) = (&ca.lane6[0], &cb.lane6[0]);
        assert_eq!(old.info, new.info);
        let (gone, added) = sorted_diff(&old.nets, &new.nets);
        assert_eq!((gone.len(), added.len()), (1, 0));
        let g = filter_common::LANE6_GEOMETRY;
        let changed = changed_buckets_local(g, old.side(), new.side(), &gone, &added);
        assert!(
            (1..=BL6_MAX_DISP as usize + 1).contains(&changed.len()),
            "{}",
            changed.len()
        );
    }
}
