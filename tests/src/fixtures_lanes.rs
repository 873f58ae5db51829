//! Verdict fixtures for allowlist lanes (docs/architecture.md, "Allowlist
//! lanes"): four zones with country-sized IPv4 allowlists (over
//! `LANE_MIN_PREFIXES`), so the three largest are judged through their
//! lane's bitmap and the fourth through the trie. Expectations follow from
//! docs/parsing-contract.md's verdict order alone, lanes change none of them:
//! a host in a partly covered /24 and its unlisted neighbour, a wholly
//! covered /24 and the unlisted /24 beside it, overlapping prefixes, the
//! blocklist winning over a laned allowlist, failsafe first, IPv6 sources of
//! a laned zone still in the trie, an auditing laned zone.

use std::net::{IpAddr, Ipv4Addr};

use filter_common::{Reason as R, Verdict as V};
use ipnet::{IpNet, Ipv4Net};

use crate::case::{Case, Expect};
use crate::fixtures::case;
use crate::packet::Frame;
use crate::spec::{nets, Allow, PolicySpec, Proto, RuleSpec, ZoneSpec};

const HOST4: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);

/// Zone `z`'s (1..=4) port.
fn port(z: u32) -> u16 {
    8000 + z as u16
}

/// `n` /24s of zone `z`'s /8, every other one: (9 + z).(i / 128).(2 (i % 128)).0,
/// so merging keeps all `n`.
fn country(z: u32, n: u32) -> Vec<Allow> {
    (0..n)
        .map(|i| {
            let a = Ipv4Addr::new((9 + z) as u8, (i / 128) as u8, ((i % 128) * 2) as u8, 0);
            Allow::Net(IpNet::V4(Ipv4Net::new(a, 24).expect("a /24")))
        })
        .collect()
}

/// Sizes: the first three zones get lanes 1–3 (largest first), zone 4 stays
/// in the trie. Zone 1 also lists partly covered and overlapping prefixes in
/// 10.200.0.0/16 and an IPv6 /48; zone 3 audits.
pub fn policy() -> PolicySpec {
    let mut zones: Vec<ZoneSpec> = [(1, 1300), (2, 1200), (3, 1100), (4, 1050)]
        .into_iter()
        .map(|(z, n)| {
            let p = port(z);
            ZoneSpec::new(
                format!("country-{z}"),
                vec![(Proto::Tcp, p, p)],
                country(z, n),
            )
        })
        .collect();
    zones[0].allow.extend(
        nets(&[
            "10.200.1.128/25",
            "10.200.2.7/32",
            "10.200.2.0/30",
            "10.200.3.0/24",
            "10.200.3.64/26",
            "10.201.0.0/16",
            "10.201.5.0/24",
            "2001:db8:1::/48",
        ])
        .into_iter()
        .map(Allow::Net),
    );
    zones[2].audit = true;
    PolicySpec {
        blocklist: nets(&["10.0.2.0/24", "10.200.1.200/32"]),
        failsafe: vec![RuleSpec {
            ports: vec![(Proto::Tcp, port(1), port(1))],
            from: nets(&["203.0.113.0/24", "10.0.2.0/24"]),
        }],
        zones,
        ..PolicySpec::default()
    }
}

fn tcp(src: &str, dport: u16) -> Vec<u8> {
    match src.parse::<IpAddr>().expect("a source address") {
        IpAddr::V4(a) => Frame::ipv4(a, HOST4).tcp(40000, dport).build(),
        IpAddr::V6(a) => Frame::ipv6(a, crate::gen::HOST6).tcp(40000, dport).build(),
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
        case("lane_partly_covered_24_allows_its_host", "a /32 of a partly covered /24 in lane 1",
            p(), tcp("10.200.2.7", z1), allowed(1)),
        case("lane_partly_covered_24_refuses_the_neighbour", "the host after that /32, same /24",
            p(), tcp("10.200.2.8", z1), refused(1)),
        case("lane_overlapping_prefixes_in_one_24", "10.200.2.0/30 beside 10.200.2.7/32: .3 in, .4 out",
            p(), tcp("10.200.2.3", z1), allowed(1)),
        case("lane_overlapping_prefixes_in_one_24_edge", "10.200.2.4 is in neither",
            p(), tcp("10.200.2.4", z1), refused(1)),
        case("lane_slash_25_upper_half", "10.200.1.128/25: .129 in",
            p(), tcp("10.200.1.129", z1), allowed(1)),
        case("lane_slash_25_lower_half_refused", "10.200.1.127 is below the /25",
            p(), tcp("10.200.1.127", z1), refused(1)),
        case("lane_wholly_covered_24", "a listed /24 of the country list",
            p(), tcp("10.0.0.77", z1), allowed(1)),
        case("lane_unlisted_24_beside_a_listed_one", "the /24 between two listed ones",
            p(), tcp("10.0.1.77", z1), refused(1)),
        case("lane_24_with_a_contained_26", "10.200.3.64/26 inside the listed 10.200.3.0/24",
            p(), tcp("10.200.3.1", z1), allowed(1)),
        case("lane_16_with_a_contained_24", "10.201.0.0/16 covers 10.201.9.9",
            p(), tcp("10.201.9.9", z1), allowed(1)),
        case("lane_last_listed_24", "the last /24 of zone 1's 1,300",
            p(), tcp("10.10.38.255", z1), allowed(1)),
        case("lane_past_the_last_listed_24", "the /24 after it was never listed",
            p(), tcp("10.10.40.1", z1), refused(1)),
        case("lane_of_another_zone_does_not_leak", "zone 2's source to zone 1's port",
            p(), tcp("11.0.0.5", z1), refused(1)),
        case("lane_2_allows_its_own", "zone 2's /24 to zone 2's port",
            p(), tcp("11.0.0.5", z2), allowed(2)),
        case("lane_2_refuses_zone_1s", "zone 1's /24 to zone 2's port",
            p(), tcp("10.0.0.77", z2), refused(2)),
        case("lane_audit_zone_counts_a_miss", "lane 3 audits: a source outside passes as audit",
            p(), tcp("12.0.1.1", z3), Expect::zone(V::Pass, R::Audit, 3)),
        case("lane_audit_zone_allows_its_own", "lane 3's listed /24",
            p(), tcp("12.0.0.1", z3), allowed(3)),
        case("trie_zone_beside_lanes_allows", "zone 4 (fourth largest) is in the trie",
            p(), tcp("13.8.50.9", z4), allowed(4)),
        case("trie_zone_beside_lanes_refuses", "the unlisted /24 after it",
            p(), tcp("13.8.51.9", z4), refused(4)),
        case("lane_blocklist_wins_over_a_wholly_covered_24", "10.0.2.0/24: in zone 1's list and blocklisted (no failsafe port)",
            p(), tcp("10.0.2.5", z2), Expect::drop(R::Blocklist)),
        case("lane_blocklist_host_wins_inside_the_slash_25", "10.200.1.200/32 is blocklisted, the /25 allowed",
            p(), tcp("10.200.1.200", z1), Expect::drop(R::Blocklist)),
        case("lane_blocklist_neighbour_still_allowed", "10.200.1.201: the /25 allows it, not blocklisted",
            p(), tcp("10.200.1.201", z1), allowed(1)),
        case("lane_failsafe_before_the_lane", "failsafe 203.0.113.0/24 on zone 1's port, not in its list",
            p(), tcp("203.0.113.9", z1), Expect::failsafe()),
        case("lane_failsafe_beats_the_blocklist", "10.0.2.0/24: failsafe and blocklisted on zone 1's port",
            p(), tcp("10.0.2.5", z1), Expect::failsafe()),
        case("lane_zone_ipv6_source_in_the_trie", "zone 1's IPv6 /48 (IPv6 has no lanes)",
            p(), tcp("2001:db8:1::5", z1), allowed(1)),
        case("lane_zone_ipv6_source_outside", "an IPv6 source beside it",
            p(), tcp("2001:db8:2::5", z1), refused(1)),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use filter_user::loader::{ImageOptions, SlotImage};

    use super::*;
    use crate::case::{bad_names, duplicate_names, invalid_policies, model_disagreements};

    #[test]
    fn lane_fixtures_agree_with_the_model() {
        let f = fixtures();
        assert_eq!(model_disagreements(&f), Vec::<String>::new());
        assert_eq!(invalid_policies(&f), Vec::<String>::new());
        assert!(duplicate_names(&f).is_empty() && bad_names(&f).is_empty());
    }

    /// The fixtures test what they say: zones 1–3 in lanes 1–3, zone 4 and
    /// the failsafe group in the trie.
    #[test]
    fn the_three_largest_zones_get_lanes() {
        let compiled = filter_user::policy::compile_str(&policy().to_toml(), Path::new("l.toml"))
            .expect("compiles");
        let img = SlotImage::build(&compiled, ImageOptions::default()).expect("builds");
        for z in 1..=3u32 {
            assert_eq!(img.zones[&z].lane(), z, "zone {z}");
            assert!(!img.lane4[z as usize - 1].words.is_empty());
            assert!(
                !img.allow4.iter().any(|(s, _)| *s == z),
                "zone {z} in the trie"
            );
        }
        assert_eq!(img.zones[&4].lane(), 0);
        assert_eq!(img.allow4.iter().filter(|(s, _)| *s == 4).count(), 1050);
        assert!(img
            .allow4
            .iter()
            .any(|(s, _)| *s > filter_common::FAILSAFE_SET_BASE));
        // Zone 1's partly covered /24s: 10.200.1, .2 and .3 (.3 is whole).
        assert_eq!(img.lane4[0].hosts.len(), 2);
    }
}
