//! Verdict fixtures for IPv6 allowlist lanes (docs/architecture.md, "IPv6
//! allowlist lanes"): four zones with country-sized IPv6 allowlists (over
//! `LANE_MIN_PREFIXES`) of twelve prefix lengths, more than a lane probes,
//! so the three largest are judged through their lane's expanded table and
//! the fourth through the trie. Expectations follow from
//! docs/parsing-contract.md's verdict order alone: the first and last
//! address of a prefix and the one past it, for lengths that are expanded
//! and lengths that are not; a /20 and a /24 (bitmap bits, no table entry);
//! the unlisted /32 between two listed ones; the blocklist winning over a
//! laned allowlist; failsafe first; IPv4 sources of a laned zone in the
//! trie; an auditing laned zone.

use std::net::{IpAddr, Ipv6Addr};

use filter_common::{Reason as R, Verdict as V};
use ipnet::{IpNet, Ipv6Net};

use crate::case::{Case, Expect};
use crate::fixtures::case;
use crate::packet::Frame;
use crate::spec::{nets, Allow, PolicySpec, Proto, RuleSpec, ZoneSpec};

/// Zone `z`'s (1..=4) port.
fn port(z: u32) -> u16 {
    8100 + z as u16
}

/// The lengths of zone lists, by prefix number modulo 12.
const LENGTHS: [u8; 12] = [32, 33, 36, 40, 44, 48, 52, 56, 60, 64, 96, 128];

/// `n` prefixes of zone `z`: prefix i is `2a0z:(2i)::/LENGTHS[i % 12]`, each
/// in its own /32 with an unlisted /32 after it, so merging keeps all `n`.
fn country(z: u32, n: u32) -> Vec<Allow> {
    (0..n)
        .map(|i| {
            let a = (0x2a00 + z as u128) << 112 | ((2 * i) as u128) << 96;
            let len = LENGTHS[i as usize % LENGTHS.len()];
            Allow::Net(IpNet::V6(
                Ipv6Net::new(Ipv6Addr::from(a), len).expect("a prefix"),
            ))
        })
        .collect()
}

/// Sizes: the first three zones get IPv6 lanes 1–3 (largest first), zone 4
/// stays in the trie. Zone 1 also lists a /20, a /24, a /48 holding a
/// listed /64 (merged into it) and an IPv4 /24; zone 3 audits.
pub fn policy() -> PolicySpec {
    let mut zones: Vec<ZoneSpec> = [(1, 1300), (2, 1200), (3, 1100), (4, 1050)]
        .into_iter()
        .map(|(z, n)| {
            let p = port(z);
            ZoneSpec::new(
                format!("country6-{z}"),
                vec![(Proto::Tcp, p, p)],
                country(z, n),
            )
        })
        .collect();
    zones[0].allow.extend(
        nets(&[
            "2a10::/20",
            "2a20:ab00::/24",
            "2a30:1::/48",
            "2a30:1:0:5::/64",
            "198.51.100.0/24",
        ])
        .into_iter()
        .map(Allow::Net),
    );
    zones[2].audit = true;
    PolicySpec {
        blocklist: nets(&["2a01:a::/32", "2a01:6:0:1::7/128"]),
        failsafe: vec![RuleSpec {
            ports: vec![(Proto::Tcp, port(1), port(1))],
            from: nets(&["2001:db8:f00::/48", "2a01:a::/48"]),
        }],
        zones,
        ..PolicySpec::default()
    }
}

fn tcp(src: &str, dport: u16) -> Vec<u8> {
    match src.parse::<IpAddr>().expect("a source address") {
        IpAddr::V6(a) => Frame::ipv6(a, crate::gen::HOST6).tcp(40000, dport).build(),
        IpAddr::V4(a) => Frame::ipv4(a, std::net::Ipv4Addr::new(192, 168, 100, 1))
            .tcp(40000, dport)
            .build(),
    }
}

const fn allowed(z: u32) -> Expect {
    Expect::zone(V::Pass, R::Allowed, z)
}

const fn refused(z: u32) -> Expect {
    Expect::zone(V::Drop, R::NotAllowed, z)
}

#[rustfmt::skip]
pub fn fixtures() -> Vec<Case> {
    let p = policy;
    let (z1, z2, z3, z4) = (port(1), port(2), port(3), port(4));
    vec![
        case("lane6_slash_32_inside", "prefix 0, 2a01:0::/32",
            p(), tcp("2a01:0:ffff::1", z1), allowed(1)),
        case("lane6_unlisted_32_after_a_listed_one", "2a01:1::/32 was never listed",
            p(), tcp("2a01:1::1", z1), refused(1)),
        case("lane6_expanded_33_first_address", "prefix 1, 2a01:2::/33, its first address",
            p(), tcp("2a01:2::", z1), allowed(1)),
        case("lane6_expanded_33_last_address", "the last address of 2a01:2::/33",
            p(), tcp("2a01:2:7fff:ffff:ffff:ffff:ffff:ffff", z1), allowed(1)),
        case("lane6_expanded_33_one_past", "2a01:2:8000:: is the other half of the /32",
            p(), tcp("2a01:2:8000::", z1), refused(1)),
        case("lane6_slash_40_last_address", "prefix 3, 2a01:6::/40",
            p(), tcp("2a01:6:ff:ffff:ffff:ffff:ffff:ffff", z1), allowed(1)),
        case("lane6_slash_40_one_past", "2a01:6:100:: is past the /40",
            p(), tcp("2a01:6:100::", z1), refused(1)),
        case("lane6_slash_64_inside", "prefix 9, 2a01:12::/64",
            p(), tcp("2a01:12::abcd", z1), allowed(1)),
        case("lane6_slash_64_next_64", "2a01:12:0:1:: is the next /64",
            p(), tcp("2a01:12:0:1::", z1), refused(1)),
        case("lane6_slash_96_last_address", "prefix 10, 2a01:14::/96",
            p(), tcp("2a01:14::ffff:ffff", z1), allowed(1)),
        case("lane6_slash_96_one_past", "2a01:14::1:0:0 is past the /96",
            p(), tcp("2a01:14::1:0:0", z1), refused(1)),
        case("lane6_slash_128_exact", "prefix 11, 2a01:16::/128",
            p(), tcp("2a01:16::", z1), allowed(1)),
        case("lane6_slash_128_neighbour", "2a01:16::1 is not listed",
            p(), tcp("2a01:16::1", z1), refused(1)),
        case("lane6_last_listed_prefix", "prefix 1299 (/64 at 2a01:a26::)",
            p(), tcp("2a01:a26::9", z1), allowed(1)),
        case("lane6_past_the_last_prefix", "2a01:a28:: was never listed",
            p(), tcp("2a01:a28::9", z1), refused(1)),
        case("lane6_slash_20_inside", "2a10::/20 sets whole /24s of the bitmap",
            p(), tcp("2a10:fff::1", z1), allowed(1)),
        case("lane6_slash_20_one_past", "2a10:1000:: is past the /20",
            p(), tcp("2a10:1000::", z1), refused(1)),
        case("lane6_slash_24_inside", "2a20:ab00::/24",
            p(), tcp("2a20:abff:1::1", z1), allowed(1)),
        case("lane6_contained_64_in_a_48", "2a30:1:0:5::/64 merged into 2a30:1::/48",
            p(), tcp("2a30:1:0:ffff::1", z1), allowed(1)),
        case("lane6_of_another_zone_does_not_leak", "zone 2's source to zone 1's port",
            p(), tcp("2a02::1", z1), refused(1)),
        case("lane6_2_allows_its_own", "zone 2's /32 to zone 2's port",
            p(), tcp("2a02::1", z2), allowed(2)),
        case("lane6_2_refuses_zone_1s", "zone 1's /32 to zone 2's port",
            p(), tcp("2a01::1", z2), refused(2)),
        case("lane6_audit_zone_counts_a_miss", "lane 3 audits: a source outside passes as audit",
            p(), tcp("2a03:1::1", z3), Expect::zone(V::Pass, R::Audit, 3)),
        case("lane6_audit_zone_allows_its_own", "lane 3's listed /32",
            p(), tcp("2a03::1", z3), allowed(3)),
        case("trie6_zone_beside_lanes_allows", "zone 4 (fourth largest) is in the trie",
            p(), tcp("2a04:6:1::", z4), allowed(4)),
        case("trie6_zone_beside_lanes_refuses", "2a04:6:100:: is past its /40",
            p(), tcp("2a04:6:100::", z4), refused(4)),
        case("lane6_blocklist_wins_over_a_listed_32", "2a01:a::/32: zone 1's prefix 5 and blocklisted, on zone 2's port",
            p(), tcp("2a01:a::5", z2), Expect::drop(R::Blocklist)),
        case("lane6_blocklist_host_inside_a_listed_40", "2a01:6:0:1::7 is blocklisted inside 2a01:6::/40",
            p(), tcp("2a01:6:0:1::7", z1), Expect::drop(R::Blocklist)),
        case("lane6_blocklist_neighbour_still_allowed", "2a01:6:0:1::8: the /40 allows it",
            p(), tcp("2a01:6:0:1::8", z1), allowed(1)),
        case("lane6_failsafe_before_the_lane", "failsafe 2001:db8:f00::/48 on zone 1's port",
            p(), tcp("2001:db8:f00::9", z1), Expect::failsafe()),
        case("lane6_failsafe_beats_the_blocklist", "2a01:a::/48: failsafe and blocklisted on zone 1's port",
            p(), tcp("2a01:a::5", z1), Expect::failsafe()),
        case("lane6_zone_ipv4_source_in_the_trie", "zone 1's IPv4 /24 (small: the trie)",
            p(), tcp("198.51.100.7", z1), allowed(1)),
        case("lane6_zone_ipv4_source_outside", "an IPv4 source beside it",
            p(), tcp("198.51.101.7", z1), refused(1)),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use filter_user::loader::{ImageOptions, SlotImage};

    use super::*;
    use crate::case::{bad_names, duplicate_names, invalid_policies, model_disagreements};

    #[test]
    fn lane6_fixtures_agree_with_the_model() {
        let f = fixtures();
        assert_eq!(model_disagreements(&f), Vec::<String>::new());
        assert_eq!(invalid_policies(&f), Vec::<String>::new());
        assert!(duplicate_names(&f).is_empty() && bad_names(&f).is_empty());
    }

    /// The fixtures test what they say: zones 1–3 in IPv6 lanes 1–3 with
    /// expanded tables, zone 4 and the failsafe group in the trie.
    #[test]
    fn the_three_largest_ipv6_lists_get_lanes() {
        let compiled = filter_user::policy::compile_str(&policy().to_toml(), Path::new("l.toml"))
            .expect("compiles");
        let img = SlotImage::build(&compiled, ImageOptions::default()).expect("builds");
        for z in 1..=3u32 {
            assert_eq!(img.zones[&z].lane6(), z, "zone {z}");
            assert_eq!(img.zones[&z].lane(), 0, "zone {z} has no IPv4 lane");
            let lane = &img.lane6[z as usize - 1];
            assert_eq!(
                lane.info.count as usize,
                filter_common::BL6_MAX_LENS,
                "zone {z}"
            );
            assert!(
                !img.allow6.iter().any(|(s, _)| *s == z),
                "zone {z} in the trie"
            );
        }
        assert_eq!(img.zones[&4].lane6(), 0);
        assert_eq!(img.allow6.iter().filter(|(s, _)| *s == 4).count(), 1050);
        assert!(img.allow4.iter().any(|(s, _)| *s == 1));
        assert!(img
            .allow6
            .iter()
            .any(|(s, _)| *s > filter_common::FAILSAFE_SET_BASE));
        // The /20 and the /24 are bitmap bits: 16 + 1 full /24s.
        let full: u32 = img.lane6[0]
            .words
            .values()
            .map(|w| w.full.count_ones())
            .sum();
        assert_eq!(full, 17);
    }
}
