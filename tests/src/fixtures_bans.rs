//! Hand-written fixtures for bans: each policy carries a ban list with
//! expiries relative to a fixed instant (`PolicySpec::at`; the harness
//! shifts them so the datapath's real clock stands for it). Expectations are
//! worked out from docs/operations.md ("Bans"), not by the model: a ban drops
//! its sources on every port but failsafe ones, before the blocklist, while
//! any ban covering the source is in force.

use std::net::{Ipv4Addr, Ipv6Addr};

use filter_common::{Reason as R, Verdict as V};
use jiff::{SignedDuration, Timestamp};

use crate::case::{Case, Expect};
use crate::fixtures::case;
use crate::packet::Frame;
use crate::spec::{net, nets, Allow, BanSpec, PolicySpec, Proto, RuleSpec, ZoneSpec};

const HOST4: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
const WEB: u16 = 8880;
const SSH: u16 = 22;
const AT: &str = "2027-03-03T11:00:00Z";

fn at() -> Timestamp {
    AT.parse().expect("an RFC 3339 instant")
}

fn tcp4(src: &str, dport: u16) -> Vec<u8> {
    Frame::ipv4(src.parse().expect("IPv4 source"), HOST4)
        .tcp(40000, dport)
        .build()
}

fn tcp6(src: &str, dport: u16) -> Vec<u8> {
    Frame::ipv6(src.parse().expect("IPv6 source"), HOST6)
        .tcp(40000, dport)
        .build()
}

/// A ban of `prefix` for `secs` seconds from `AT` (negative: expired; `None`:
/// no expiry).
fn ban(prefix: &str, secs: Option<i64>) -> BanSpec {
    BanSpec {
        net: net(prefix),
        until: secs.map(|s| at() + SignedDuration::from_secs(s)),
    }
}

/// Zone 1 "web": 8880/tcp from anyone; failsafe 22/tcp from 198.51.100.0/24
/// and 2001:db8:5::/48; blocklist 203.0.113.0/24; and `bans`.
fn banned(bans: Vec<BanSpec>) -> PolicySpec {
    PolicySpec {
        at: Some(at()),
        blocklist: nets(&["203.0.113.0/24"]),
        failsafe: vec![RuleSpec {
            ports: vec![(Proto::Tcp, SSH, SSH)],
            from: nets(&["198.51.100.0/24", "2001:db8:5::/48"]),
        }],
        zones: vec![ZoneSpec::new(
            "web",
            vec![(Proto::Tcp, WEB, WEB)],
            vec![Allow::Any],
        )],
        bans,
        ..PolicySpec::default()
    }
}

fn many() -> Vec<BanSpec> {
    vec![
        ban("198.51.100.7", Some(3600)),
        ban("198.51.100.8", Some(-60)),
        ban("192.0.2.0/24", None),
        // A longer ban that ends first inside a prefix ban that lasts.
        ban("192.0.2.9", Some(-5)),
        ban("100.64.0.0/10", Some(600)),
        ban("100.64.1.0/24", Some(-600)),
        ban("203.0.113.5", Some(3600)),
        ban("2001:db8:5::7", Some(3600)),
        ban("2001:db8:6::/48", Some(60)),
        ban("2001:db9::/32", Some(-1)),
        ban("2001:1000::/20", None),
    ]
}

const BANNED: Expect = Expect::drop(R::Banned);
const WEB_OPEN: Expect = Expect::zone(V::Pass, R::Allowed, 1);

pub fn fixtures() -> Vec<Case> {
    vec![
        case(
            "ban_readded_with_a_past_expiry_replaces_the_live_one",
            "198.51.100.7 banned for an hour, then again with an end a minute ago: the \
             second add replaces the first, 8880 allowed",
            banned(vec![
                ban("198.51.100.7", Some(3600)),
                ban("198.51.100.7", Some(-60)),
            ]),
            tcp4("198.51.100.7", WEB),
            WEB_OPEN,
        ),
        case(
            "ban_readded_for_an_hour_replaces_the_expired_one",
            "198.51.100.7's ban ended a minute ago, then it is banned for an hour: dropped",
            banned(vec![
                ban("198.51.100.7", Some(-60)),
                ban("198.51.100.7", Some(3600)),
            ]),
            tcp4("198.51.100.7", WEB),
            BANNED,
        ),
        case(
            "ban_drops_a_banned_host_on_a_zone_port",
            "198.51.100.7 banned for an hour: 8880 dropped as banned",
            banned(many()),
            tcp4("198.51.100.7", WEB),
            BANNED,
        ),
        case(
            "ban_failsafe_still_passes_a_banned_host",
            "198.51.100.7 banned, but 22/tcp is failsafe for it: passed",
            banned(many()),
            tcp4("198.51.100.7", SSH),
            Expect::failsafe(),
        ),
        case(
            "ban_expired_host_is_admitted",
            "198.51.100.8's ban ended a minute ago: 8880 allowed",
            banned(many()),
            tcp4("198.51.100.8", WEB),
            WEB_OPEN,
        ),
        case(
            "ban_prefix_drops_every_host_in_it",
            "192.0.2.0/24 banned without expiry: 192.0.2.200 dropped",
            banned(many()),
            tcp4("192.0.2.200", WEB),
            BANNED,
        ),
        case(
            "ban_expired_host_inside_a_banned_prefix_stays_dropped",
            "192.0.2.9's own ban ended, 192.0.2.0/24's did not: dropped",
            banned(many()),
            tcp4("192.0.2.9", WEB),
            BANNED,
        ),
        case(
            "ban_short_prefix_drops_far_inside_it",
            "100.64.0.0/10 banned: 100.127.255.254 dropped",
            banned(many()),
            tcp4("100.127.255.254", WEB),
            BANNED,
        ),
        case(
            "ban_expired_longer_prefix_inside_a_live_short_one_drops",
            "100.64.1.0/24 ended, 100.64.0.0/10 did not: dropped",
            banned(many()),
            tcp4("100.64.1.1", WEB),
            BANNED,
        ),
        case(
            "ban_neighbour_of_a_banned_host_is_admitted",
            "198.51.100.6 shares a /24 with bans, none covers it: allowed",
            banned(many()),
            tcp4("198.51.100.6", WEB),
            WEB_OPEN,
        ),
        case(
            "ban_comes_before_the_blocklist",
            "203.0.113.5 banned and blocklisted: counted as banned",
            banned(many()),
            tcp4("203.0.113.5", WEB),
            BANNED,
        ),
        case(
            "ban_blocklist_still_drops_the_unbanned",
            "203.0.113.6 blocklisted, not banned: blocklist",
            banned(many()),
            tcp4("203.0.113.6", WEB),
            Expect::drop(R::Blocklist),
        ),
        case(
            "ban_drops_portless_and_unmatched_ports",
            "198.51.100.7 banned: ICMP dropped as banned",
            banned(many()),
            Frame::ipv4("198.51.100.7".parse().unwrap(), HOST4)
                .icmp()
                .build(),
            BANNED,
        ),
        case(
            "ban_ipv6_host",
            "2001:db8:5::7 banned: 8880 dropped",
            banned(many()),
            tcp6("2001:db8:5::7", WEB),
            BANNED,
        ),
        case(
            "ban_ipv6_failsafe_still_passes",
            "2001:db8:5::7 banned, 22/tcp failsafe for 2001:db8:5::/48: passed",
            banned(many()),
            tcp6("2001:db8:5::7", SSH),
            Expect::failsafe(),
        ),
        case(
            "ban_ipv6_prefix",
            "2001:db8:6::/48 banned for a minute: 2001:db8:6:1::9 dropped",
            banned(many()),
            tcp6("2001:db8:6:1::9", WEB),
            BANNED,
        ),
        case(
            "ban_ipv6_expired_prefix_is_admitted",
            "2001:db9::/32 ended a second ago: allowed",
            banned(many()),
            tcp6("2001:db9:1::9", WEB),
            WEB_OPEN,
        ),
        case(
            "ban_ipv6_short_prefix",
            "2001:1000::/20 banned: 2001:1fff::1 dropped",
            banned(many()),
            tcp6("2001:1fff::1", WEB),
            BANNED,
        ),
        case(
            "ban_ipv4_mapped_ipv6_source_is_judged_as_ipv4",
            "::ffff:198.51.100.7 is 198.51.100.7: dropped",
            banned(many()),
            tcp6("::ffff:198.51.100.7", WEB),
            BANNED,
        ),
        case(
            "ban_list_empty_admits",
            "no bans: 198.51.100.7 allowed",
            banned(Vec::new()),
            tcp4("198.51.100.7", WEB),
            WEB_OPEN,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{bad_names, duplicate_names, invalid_policies, model_disagreements};

    #[test]
    fn model_agrees_with_every_ban_fixture() {
        let bad = model_disagreements(&fixtures());
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn ban_fixture_names_are_unique_snake_case_and_policies_valid() {
        assert_eq!(duplicate_names(&fixtures()), Vec::<&str>::new());
        assert_eq!(bad_names(&fixtures()), Vec::<&str>::new());
        assert_eq!(invalid_policies(&fixtures()), Vec::<String>::new());
    }
}
