//! Hand-written verdict fixtures: packet × policy cases whose expected verdict,
//! reason and counter rule are derived by hand from `docs/parsing-contract.md`
//! (verdict order), not computed by the reference model. They pin every step of
//! the verdict order, with both outcomes where a step has two, and the KEEP host
//! policy of the design.
//!
//! Zone ids are 1-based in policy order; `RULE_FAILSAFE` and `RULE_GLOBAL` are the
//! other counter rules.

use std::net::{Ipv4Addr, Ipv6Addr};

use filter_common::{Reason as R, Verdict as V};

use crate::case::{Case, Expect};
use crate::packet::{
    ExtHeader, Frame, ETH_P_8021AD, ETH_P_8021Q, ETH_P_ARP, ETH_P_LLDP, ETH_P_MPLS, ETH_P_PPPOE,
};
use crate::spec::{
    allow, nets, Act, Allow, Defaults, Fragments, PolicySpec, Proto, RuleSpec, ZoneSpec,
};

// ---------------------------------------------------------------------------
// Addresses and frames
// ---------------------------------------------------------------------------

/// The protected host (destination of every frame).
const HOST4: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
const SPORT: u16 = 40000;

pub(crate) fn ip4(s: &str) -> Ipv4Addr {
    s.parse()
        .unwrap_or_else(|_| panic!("not an IPv4 address: {s}"))
}

pub(crate) fn ip6(s: &str) -> Ipv6Addr {
    s.parse()
        .unwrap_or_else(|_| panic!("not an IPv6 address: {s}"))
}

/// An IPv4 frame builder from `src` to the host.
fn f4(src: &str) -> Frame {
    Frame::ipv4(ip4(src), HOST4)
}

/// An IPv6 frame builder from `src` to the host.
fn f6(src: &str) -> Frame {
    Frame::ipv6(ip6(src), HOST6)
}

fn tcp4(src: &str, dport: u16) -> Vec<u8> {
    f4(src).tcp(SPORT, dport).build()
}

fn udp4(src: &str, dport: u16) -> Vec<u8> {
    f4(src).udp(SPORT, dport).build()
}

fn sctp4(src: &str, dport: u16) -> Vec<u8> {
    f4(src).sctp(SPORT, dport).build()
}

fn tcp6(src: &str, dport: u16) -> Vec<u8> {
    f6(src).tcp(SPORT, dport).build()
}

// ---------------------------------------------------------------------------
// Expectations
// ---------------------------------------------------------------------------

fn allowed(zone: u32) -> Expect {
    Expect::zone(V::Pass, R::Allowed, zone)
}

fn not_allowed(zone: u32) -> Expect {
    Expect::zone(V::Drop, R::NotAllowed, zone)
}

fn audit(zone: u32) -> Expect {
    Expect::zone(V::Pass, R::Audit, zone)
}

fn failsafe() -> Expect {
    Expect::failsafe()
}

fn pass(reason: R) -> Expect {
    Expect::pass(reason)
}

fn drop(reason: R) -> Expect {
    Expect::drop(reason)
}

// ---------------------------------------------------------------------------
// Policies
// ---------------------------------------------------------------------------

fn tcp(port: u16) -> (Proto, u16, u16) {
    (Proto::Tcp, port, port)
}

fn with_defaults(d: Defaults) -> PolicySpec {
    PolicySpec {
        at: None,
        defaults: d,
        ..PolicySpec::default()
    }
}

/// The KEEP host of the design: 8880/tcp open to `any` (zone 1); 8889/tcp and
/// 8890/tcp only from 10.20.0.0/16 and fd20::/48 (zone 2); failsafe 22/tcp from
/// 10.0.0.0/8; blocklist 203.0.113.0/24 and 2001:db8:bad::/48; unmatched ports
/// dropped, everything else at its default.
pub fn keep() -> PolicySpec {
    PolicySpec {
        bans: Vec::new(),
        at: None,
        defaults: Defaults {
            unmatched: Act::Drop,
            ..Defaults::default()
        },
        blocklist: nets(&["203.0.113.0/24", "2001:db8:bad::/48"]),
        failsafe: vec![RuleSpec {
            ports: vec![tcp(22)],
            from: nets(&["10.0.0.0/8"]),
        }],
        zones: vec![
            ZoneSpec::new("keep-api", vec![tcp(8880)], vec![Allow::Any]),
            ZoneSpec::new(
                "keep-admin",
                vec![tcp(8889), tcp(8890)],
                vec![allow("10.20.0.0/16"), allow("fd20::/48")],
            ),
        ],
        reject_budget: None,
    }
}

/// KEEP with `fragments = "drop"`.
fn keep_frag_drop() -> PolicySpec {
    let mut p = keep();
    p.defaults.fragments = Fragments::Drop;
    p
}

fn non_ip_drop() -> PolicySpec {
    with_defaults(Defaults {
        non_ip: Act::Drop,
        ..Defaults::default()
    })
}

fn other_drop() -> PolicySpec {
    with_defaults(Defaults {
        other_protocols: Act::Drop,
        ..Defaults::default()
    })
}

/// Two failsafe rules on 22/tcp with different `from` (10.0.0.0/8;
/// 192.168.50.0/24 and 2001:db8:ad::/48), a blocklist overlapping the first one
/// (10.66.0.0/16), unmatched dropped.
fn two_failsafe() -> PolicySpec {
    PolicySpec {
        bans: Vec::new(),
        at: None,
        defaults: Defaults {
            unmatched: Act::Drop,
            ..Defaults::default()
        },
        blocklist: nets(&["10.66.0.0/16"]),
        failsafe: vec![
            RuleSpec {
                ports: vec![tcp(22)],
                from: nets(&["10.0.0.0/8"]),
            },
            RuleSpec {
                ports: vec![tcp(22)],
                from: nets(&["192.168.50.0/24", "2001:db8:ad::/48"]),
            },
        ],
        zones: vec![],
        reject_budget: None,
    }
}

/// 22/tcp is both a failsafe port (from 10.0.0.0/8) and claimed by zone 1 "ssh"
/// (allow 192.168.0.0/16): failsafe sources pass first, the zone judges the rest.
fn failsafe_and_zone_share_port() -> PolicySpec {
    PolicySpec {
        bans: Vec::new(),
        at: None,
        defaults: Defaults::default(),
        blocklist: nets(&["10.66.0.0/16", "192.168.66.0/24"]),
        failsafe: vec![RuleSpec {
            ports: vec![tcp(22)],
            from: nets(&["10.0.0.0/8"]),
        }],
        zones: vec![ZoneSpec::new(
            "ssh",
            vec![tcp(22)],
            vec![allow("192.168.0.0/16")],
        )],
        reject_budget: None,
    }
}

/// Blocklist of every shape (v4 /32, /8, /25; v6 /48, /128) in front of a zone
/// open to `any` on 443/tcp (zone 1).
fn blocklist() -> PolicySpec {
    PolicySpec {
        bans: Vec::new(),
        at: None,
        defaults: Defaults::default(),
        blocklist: nets(&[
            "198.51.100.7/32",
            "45.0.0.0/8",
            "192.0.2.128/25",
            "2001:db8:bad::/48",
            "2001:db8:1::66/128",
        ]),
        failsafe: vec![],
        zones: vec![ZoneSpec::new("web", vec![tcp(443)], vec![Allow::Any])],
        reject_budget: None,
    }
}

/// Zone shapes, unmatched passing: 1 "api" 8880/tcp any; 2 "range" 9000-9010/tcp
/// from 10.30.0.0/16 (the `10.30.*.*` wildcard); 3 "audited" 7000/tcp from
/// 10.40.0.0/16, audit; 4/5/6 port 5000 on tcp/udp/sctp from 10.1/16, 10.2/16,
/// 10.3/16.
fn zones() -> PolicySpec {
    PolicySpec {
        bans: Vec::new(),
        at: None,
        defaults: Defaults::default(),
        blocklist: vec![],
        failsafe: vec![],
        zones: vec![
            ZoneSpec::new("api", vec![tcp(8880)], vec![Allow::Any]),
            ZoneSpec::new(
                "range",
                vec![(Proto::Tcp, 9000, 9010)],
                vec![allow("10.30.0.0/16")],
            ),
            ZoneSpec::new("audited", vec![tcp(7000)], vec![allow("10.40.0.0/16")]).audit(),
            ZoneSpec::new("t5000", vec![tcp(5000)], vec![allow("10.1.0.0/16")]),
            ZoneSpec::new(
                "u5000",
                vec![(Proto::Udp, 5000, 5000)],
                vec![allow("10.2.0.0/16")],
            ),
            ZoneSpec::new(
                "s5000",
                vec![(Proto::Sctp, 5000, 5000)],
                vec![allow("10.3.0.0/16")],
            ),
        ],
        reject_budget: None,
    }
}

/// A zone allowing 10.0.0.0/8 (zone 1, 8443/tcp) and a blocklisted 10.66.0.0/16
/// nested inside it.
fn nested() -> PolicySpec {
    PolicySpec {
        bans: Vec::new(),
        at: None,
        defaults: Defaults::default(),
        blocklist: nets(&["10.66.0.0/16"]),
        failsafe: vec![],
        zones: vec![ZoneSpec::new(
            "inner",
            vec![tcp(8443)],
            vec![allow("10.0.0.0/8")],
        )],
        reject_budget: None,
    }
}

pub(crate) fn case(
    name: &'static str,
    what: &'static str,
    policy: PolicySpec,
    frame: Vec<u8>,
    expect: Expect,
) -> Case {
    Case {
        name,
        what,
        policy,
        frame,
        expect,
    }
}

/// The hand-written fixtures.
#[rustfmt::skip]
pub fn fixtures() -> Vec<Case> {
    let lldp = || Frame::raw_ethertype(ETH_P_LLDP, vec![0x02, 0x07, 0x04, 0, 0, 0, 0, 0, 1]);
    let arp = || Frame::arp_request(ip4("192.168.100.7"), HOST4);
    let unknown_et = || Frame::raw_ethertype(0x88b5, vec![0xde, 0xad, 0xbe, 0xef]);
    let gre = vec![0x00, 0x00, 0x08, 0x00, 0x45, 0, 0, 20];
    let esp = vec![0, 0, 0x10, 0x01, 0, 0, 0, 1, 0xa5, 0xa5, 0xa5, 0xa5];
    vec![
        // --- KEEP host policy ------------------------------------------------
        case("keep_api_open_to_any_v4", "KEEP: 8880/tcp from an internet IPv4 source is allowed by `any`",
            keep(), tcp4("198.18.7.7", 8880), allowed(1)),
        case("keep_api_open_to_any_v6", "KEEP: 8880/tcp from an internet IPv6 source is allowed by `any`",
            keep(), tcp6("2001:db8:99::1", 8880), allowed(1)),
        case("keep_admin_from_mgmt_v4_allowed", "KEEP: 8889/tcp from 10.20.1.1 (in 10.20.0.0/16) is allowed",
            keep(), tcp4("10.20.1.1", 8889), allowed(2)),
        case("keep_metrics_from_mgmt_v6_allowed", "KEEP: 8890/tcp from fd20::5 (in fd20::/48) is allowed",
            keep(), tcp6("fd20::5", 8890), allowed(2)),
        case("keep_metrics_from_mgmt_v4_last_address_allowed", "KEEP: 8890/tcp from 10.20.255.255, last address of the /16",
            keep(), tcp4("10.20.255.255", 8890), allowed(2)),
        case("keep_admin_from_mgmt_v6_last_address_allowed", "KEEP: 8889/tcp from the last address of fd20::/48",
            keep(), tcp6("fd20:0:0:ffff:ffff:ffff:ffff:ffff", 8889), allowed(2)),
        case("keep_admin_from_internet_v4_not_allowed", "KEEP: 8889/tcp from an internet IPv4 source is dropped by the zone",
            keep(), tcp4("198.18.7.7", 8889), not_allowed(2)),
        case("keep_metrics_from_internet_v6_not_allowed", "KEEP: 8890/tcp from an internet IPv6 source is dropped by the zone",
            keep(), tcp6("2001:db8:99::1", 8890), not_allowed(2)),
        case("keep_admin_from_neighbour_v4_16_not_allowed", "KEEP: 8889/tcp from 10.21.0.0, just past 10.20.0.0/16",
            keep(), tcp4("10.21.0.0", 8889), not_allowed(2)),
        case("keep_admin_from_neighbour_v6_48_not_allowed", "KEEP: 8889/tcp from fd20:0:1::, just past fd20::/48",
            keep(), tcp6("fd20:0:1::", 8889), not_allowed(2)),
        case("keep_ssh_failsafe_v4", "KEEP: 22/tcp from 10.9.9.9 matches the failsafe rule",
            keep(), tcp4("10.9.9.9", 22), failsafe()),
        case("keep_ssh_from_internet_unmatched_drop", "KEEP: 22/tcp from outside the failsafe `from` falls through to unmatched = drop",
            keep(), tcp4("198.18.7.7", 22), drop(R::Unmatched)),
        case("keep_ssh_udp_is_not_failsafe", "KEEP: 22/udp from a failsafe source is not the failsafe port (tcp only)",
            keep(), udp4("10.9.9.9", 22), drop(R::Unmatched)),
        case("keep_failsafe_source_on_admin_port_not_failsafe", "KEEP: a failsafe source (10.1.1.1) on 8889/tcp is judged by the zone, not failsafe",
            keep(), tcp4("10.1.1.1", 8889), not_allowed(2)),
        case("keep_unmatched_port_dropped", "KEEP: 443/tcp is claimed by no zone: unmatched = drop",
            keep(), tcp4("10.20.1.1", 443), drop(R::Unmatched)),
        case("keep_blocklist_v4_beats_zone_any", "KEEP: 203.0.113.9 to 8880/tcp (open to any) is blocklisted",
            keep(), tcp4("203.0.113.9", 8880), drop(R::Blocklist)),
        case("keep_blocklist_v6_beats_zone_any", "KEEP: 2001:db8:bad:1::9 to 8880/tcp (open to any) is blocklisted",
            keep(), tcp6("2001:db8:bad:1::9", 8880), drop(R::Blocklist)),
        case("keep_icmp_other_protocol_pass", "KEEP: ICMP echo has no ports: other_protocols = pass",
            keep(), f4("198.18.7.7").icmp().build(), pass(R::OtherProtocol)),
        case("keep_icmp_from_blocklist_dropped", "KEEP: ICMP echo from 203.0.113.9 is blocklisted before other_protocols",
            keep(), f4("203.0.113.9").icmp().build(), drop(R::Blocklist)),
        case("keep_arp_non_ip_pass", "KEEP: ARP is not IP: non_ip = pass",
            keep(), arp().build(), pass(R::NonIp)),
        case("keep_mapped_v4_source_allowed_by_v4_zone", "KEEP: ::ffff:10.20.1.1 to 8889/tcp is judged by 10.20.0.0/16",
            keep(), tcp6("::ffff:10.20.1.1", 8889), allowed(2)),
        case("keep_mapped_v4_source_outside_v4_zone", "KEEP: ::ffff:198.18.7.7 to 8889/tcp is not in the IPv4 allowlist",
            keep(), tcp6("::ffff:198.18.7.7", 8889), not_allowed(2)),
        case("keep_mapped_v4_source_blocklisted_by_v4_list", "KEEP: ::ffff:203.0.113.7 is blocklisted by 203.0.113.0/24",
            keep(), tcp6("::ffff:203.0.113.7", 8880), drop(R::Blocklist)),
        case("keep_mapped_v4_source_failsafe", "KEEP: ::ffff:10.1.2.3 to 22/tcp matches the IPv4 failsafe rule",
            keep(), tcp6("::ffff:10.1.2.3", 22), failsafe()),
        case("keep_non_first_fragment_to_admin_port_passes", "KEEP (filter-first): a non-first fragment from the internet passes, its bytes are not ports",
            keep(), f4("198.18.7.7").frag(185, false).tcp(SPORT, 8889).build(), pass(R::Fragment)),
        case("keep_first_fragment_from_internet_judged_by_port", "KEEP (filter-first): a first fragment to 8889/tcp from the internet is dropped by the zone",
            keep(), f4("198.18.7.7").frag(0, true).tcp(SPORT, 8889).build(), not_allowed(2)),
        case("keep_first_fragment_from_mgmt_allowed", "KEEP (filter-first): a first fragment to 8889/tcp from 10.20.1.1 is allowed",
            keep(), f4("10.20.1.1").frag(0, true).tcp(SPORT, 8889).build(), allowed(2)),
        case("keep_non_first_fragment_from_blocklist_dropped", "KEEP: a non-first fragment from 203.0.113.9 is blocklisted",
            keep(), f4("203.0.113.9").frag(185, false).udp(SPORT, 8880).build(), drop(R::Blocklist)),
        case("keep_v6_non_first_fragment_passes", "KEEP (filter-first): an IPv6 non-first fragment (offset 100, M) passes",
            keep(), f6("2001:db8:99::1").ext(ExtHeader::frag(100, true)).tcp(SPORT, 8889).build(), pass(R::Fragment)),
        case("keep_vlan_tagged_admin_from_internet_not_allowed", "KEEP: an 802.1Q-tagged frame is judged like an untagged one",
            keep(), f4("198.18.7.7").vlan(ETH_P_8021Q, 10).tcp(SPORT, 8889).build(), not_allowed(2)),
        case("keep_qinq_tagged_v6_admin_allowed", "KEEP: a QinQ-tagged IPv6 frame from fd20::5 is allowed like an untagged one",
            keep(), f6("fd20::5").vlan(ETH_P_8021AD, 100).vlan(ETH_P_8021Q, 200).tcp(SPORT, 8890).build(), allowed(2)),

        // --- fragments = drop ------------------------------------------------
        case("frag_drop_non_first_fragment_dropped", "fragments = drop: a non-first fragment is dropped",
            keep_frag_drop(), f4("198.18.7.7").frag(185, false).udp(SPORT, 8880).build(), drop(R::Fragment)),
        case("frag_drop_first_fragment_dropped", "fragments = drop: a first fragment that the zone would allow is dropped",
            keep_frag_drop(), f4("10.20.1.1").frag(0, true).tcp(SPORT, 8889).build(), drop(R::Fragment)),
        case("frag_drop_failsafe_first_fragment_passes", "fragments = drop: a failsafe first fragment (10.1.2.3 to 22/tcp) still passes",
            keep_frag_drop(), f4("10.1.2.3").frag(0, true).tcp(SPORT, 22).build(), failsafe()),
        case("frag_drop_non_first_fragment_from_failsafe_source_dropped", "fragments = drop: a non-first fragment carries no port, so it is never failsafe",
            keep_frag_drop(), f4("10.1.2.3").frag(185, false).tcp(SPORT, 22).build(), drop(R::Fragment)),
        case("frag_drop_v6_non_first_fragment_dropped", "fragments = drop: an IPv6 non-first fragment is dropped",
            keep_frag_drop(), f6("2001:db8:99::1").ext(ExtHeader::frag(100, false)).udp(SPORT, 8880).build(), drop(R::Fragment)),
        case("frag_drop_v6_first_fragment_dropped", "fragments = drop: an IPv6 first fragment (offset 0, M) is dropped",
            keep_frag_drop(), f6("fd20::5").ext(ExtHeader::frag(0, true)).tcp(SPORT, 8889).build(), drop(R::Fragment)),
        case("frag_drop_v6_atomic_fragment_judged_unfragmented", "fragments = drop: an IPv6 atomic fragment (offset 0, no M) is judged as unfragmented (RFC 6946)",
            keep_frag_drop(), f6("fd20::5").ext(ExtHeader::frag(0, false)).tcp(SPORT, 8889).build(), allowed(2)),
        case("frag_drop_v6_atomic_fragment_from_internet_not_allowed", "fragments = drop: an IPv6 atomic fragment from outside is dropped by the zone, not as a fragment",
            keep_frag_drop(), f6("2001:db8:99::1").ext(ExtHeader::frag(0, false)).tcp(SPORT, 8889).build(), not_allowed(2)),
        case("frag_drop_unfragmented_unaffected", "fragments = drop: an unfragmented (DF) packet is judged by its zone",
            keep_frag_drop(), tcp4("10.20.1.1", 8889), allowed(2)),
        case("frag_drop_blocklist_before_fragment", "fragments = drop: a non-first fragment from the blocklist counts as blocklist",
            keep_frag_drop(), f4("203.0.113.9").frag(185, false).udp(SPORT, 53).build(), drop(R::Blocklist)),

        // --- non_ip ----------------------------------------------------------
        case("lldp_non_ip_pass", "LLDP (0x88cc) under non_ip = pass",
            PolicySpec::default(), lldp().build(), pass(R::NonIp)),
        case("lldp_non_ip_drop", "LLDP (0x88cc) under non_ip = drop",
            non_ip_drop(), lldp().build(), drop(R::NonIp)),
        case("arp_non_ip_drop", "ARP under non_ip = drop",
            non_ip_drop(), arp().build(), drop(R::NonIp)),
        case("unknown_ethertype_non_ip_pass", "EtherType 0x88b5 (local experimental) under non_ip = pass",
            PolicySpec::default(), unknown_et().build(), pass(R::NonIp)),
        case("unknown_ethertype_non_ip_drop", "EtherType 0x88b5 (local experimental) under non_ip = drop",
            non_ip_drop(), unknown_et().build(), drop(R::NonIp)),
        case("vlan_tagged_arp_non_ip_drop", "ARP inside an 802.1Q tag is still not IP",
            non_ip_drop(), Frame::raw_ethertype(ETH_P_ARP, arp_body()).vlan(ETH_P_8021Q, 5).build(), drop(R::NonIp)),
        case("ieee_802_3_length_field_non_ip_drop", "an 802.3 frame (length 38 in the EtherType field, LLC/STP) is not IP",
            non_ip_drop(), Frame::raw_ethertype(38, vec![0x42, 0x42, 0x03, 0, 0, 0, 0, 0]).build(), drop(R::NonIp)),
        case("mpls_wrapped_ipv4_non_ip_drop", "IPv4 inside an MPLS label (0x8847) is not read: non_ip",
            non_ip_drop(), Frame::raw_ethertype(ETH_P_MPLS, mpls_wrapped_syn()).build(), drop(R::NonIp)),
        case("pppoe_session_non_ip_pass", "a PPPoE session frame (0x8864) under non_ip = pass",
            PolicySpec::default(), Frame::raw_ethertype(ETH_P_PPPOE, vec![0x11, 0, 0, 1, 0, 2, 0xc0, 0x21]).build(), pass(R::NonIp)),
        case("non_ip_drop_leaves_ip_alone", "non_ip = drop does not touch IPv4: unmatched = pass",
            non_ip_drop(), udp4("198.18.7.7", 53), pass(R::Unmatched)),

        // --- malformed -------------------------------------------------------
        case("malformed_ipv4_ihl_4_on_open_port", "IHL 4 to a port open to any is malformed",
            keep(), f4("198.18.7.7").ihl(4).tcp(SPORT, 8880).build(), drop(R::Malformed)),
        case("malformed_ipv4_truncated_under_pass_all", "an IPv4 packet cut by the frame is malformed even when everything passes",
            PolicySpec::default(), f4("198.18.7.7").tcp(SPORT, 80).truncate(14 + 30).build(), drop(R::Malformed)),
        case("malformed_ipv6_payload_length_beyond_frame", "IPv6 payload length larger than the frame is malformed",
            keep(), f6("2001:db8:99::1").udp(SPORT, 8880).payload_len(200).build(), drop(R::Malformed)),
        case("malformed_three_vlan_tags", "three VLAN tags are malformed",
            keep(), f4("10.20.1.1").vlan(ETH_P_8021AD, 1).vlan(ETH_P_8021Q, 2).vlan(ETH_P_8021Q, 3).tcp(SPORT, 8889).build(), drop(R::Malformed)),
        case("malformed_before_failsafe", "a failsafe source with a truncated TCP header is malformed (step 2 before 3)",
            keep(), f4("10.1.1.1").tcp(SPORT, 22).total_len(39).truncate(14 + 39).build(), drop(R::Malformed)),
        case("malformed_before_blocklist", "a malformed packet from the blocklist counts as malformed",
            keep(), f4("203.0.113.9").ihl(3).tcp(SPORT, 8880).build(), drop(R::Malformed)),

        // --- failsafe --------------------------------------------------------
        case("failsafe_first_rule_v4", "22/tcp covered by two failsafe rules: source in the first rule's from",
            two_failsafe(), tcp4("10.1.1.1", 22), failsafe()),
        case("failsafe_second_rule_v4", "22/tcp covered by two failsafe rules: source in the second rule's from",
            two_failsafe(), tcp4("192.168.50.7", 22), failsafe()),
        case("failsafe_second_rule_v6", "22/tcp covered by two failsafe rules: IPv6 source in the second rule's from",
            two_failsafe(), tcp6("2001:db8:ad::5", 22), failsafe()),
        case("failsafe_port_source_in_neither_rule", "22/tcp from 192.168.51.1 (in neither from): unmatched = drop",
            two_failsafe(), tcp4("192.168.51.1", 22), drop(R::Unmatched)),
        case("failsafe_port_v6_source_in_neither_rule", "22/tcp from 2001:db8:ae::1 (in neither from): unmatched = drop",
            two_failsafe(), tcp6("2001:db8:ae::1", 22), drop(R::Unmatched)),
        case("failsafe_beats_blocklist", "10.66.0.5 is blocklisted and in failsafe from: 22/tcp passes as failsafe",
            two_failsafe(), tcp4("10.66.0.5", 22), failsafe()),
        case("failsafe_source_blocklisted_on_other_port", "10.66.0.5 to 8080/tcp (not failsafe) is blocklisted",
            two_failsafe(), tcp4("10.66.0.5", 8080), drop(R::Blocklist)),
        case("failsafe_source_icmp_blocklisted", "ICMP from blocklisted failsafe source 10.66.0.5 has no port: blocklist",
            two_failsafe(), f4("10.66.0.5").icmp().build(), drop(R::Blocklist)),

        case("failsafe_and_zone_port_failsafe_source_passes_as_failsafe", "22/tcp is failsafe (10/8) and zone ssh (192.168/16): 10.1.1.1 passes as failsafe",
            failsafe_and_zone_share_port(), tcp4("10.1.1.1", 22), failsafe()),
        case("failsafe_and_zone_port_zone_source_allowed", "22/tcp is failsafe and zone ssh: 192.168.1.1 is judged by the zone and allowed",
            failsafe_and_zone_share_port(), tcp4("192.168.1.1", 22), allowed(1)),
        case("failsafe_and_zone_port_other_source_not_allowed", "22/tcp is failsafe and zone ssh: 203.0.113.9 is in neither and dropped by the zone",
            failsafe_and_zone_share_port(), tcp4("203.0.113.9", 22), not_allowed(1)),
        case("failsafe_and_zone_port_blocklisted_zone_source_dropped", "22/tcp is failsafe and zone ssh: blocklisted 192.168.66.1 loses its zone allow",
            failsafe_and_zone_share_port(), tcp4("192.168.66.1", 22), drop(R::Blocklist)),
        case("failsafe_and_zone_port_blocklisted_failsafe_source_passes", "22/tcp is failsafe and zone ssh: blocklisted 10.66.0.1 still passes as failsafe",
            failsafe_and_zone_share_port(), tcp4("10.66.0.1", 22), failsafe()),

        // --- blocklist -------------------------------------------------------
        case("blocklist_v4_host_32", "198.51.100.7/32 blocklisted",
            blocklist(), tcp4("198.51.100.7", 443), drop(R::Blocklist)),
        case("blocklist_v4_host_32_neighbour_passes", "198.51.100.8, next to a blocklisted /32, is allowed by its zone",
            blocklist(), tcp4("198.51.100.8", 443), allowed(1)),
        case("blocklist_v4_inside_slash_8", "45.200.3.4 inside blocklisted 45.0.0.0/8",
            blocklist(), tcp4("45.200.3.4", 443), drop(R::Blocklist)),
        case("blocklist_v4_slash_8_last_address", "45.255.255.255, last address of blocklisted 45.0.0.0/8",
            blocklist(), tcp4("45.255.255.255", 443), drop(R::Blocklist)),
        case("blocklist_v4_slash_8_next_address_passes", "46.0.0.0, just past blocklisted 45.0.0.0/8",
            blocklist(), tcp4("46.0.0.0", 443), allowed(1)),
        case("blocklist_v4_slash_25_first_host", "192.0.2.128, first address of blocklisted 192.0.2.128/25",
            blocklist(), tcp4("192.0.2.128", 443), drop(R::Blocklist)),
        case("blocklist_v4_slash_25_last_host", "192.0.2.255, last address of blocklisted 192.0.2.128/25",
            blocklist(), tcp4("192.0.2.255", 443), drop(R::Blocklist)),
        case("blocklist_v4_slash_25_just_below_passes", "192.0.2.127, just below blocklisted 192.0.2.128/25 (same /24)",
            blocklist(), tcp4("192.0.2.127", 443), allowed(1)),
        case("blocklist_v4_slash_25_just_above_passes", "192.0.3.0, just above blocklisted 192.0.2.128/25",
            blocklist(), tcp4("192.0.3.0", 443), allowed(1)),
        case("blocklist_v6_slash_48", "2001:db8:bad:ffff::1 inside blocklisted 2001:db8:bad::/48",
            blocklist(), tcp6("2001:db8:bad:ffff::1", 443), drop(R::Blocklist)),
        case("blocklist_v6_slash_48_neighbour_passes", "2001:db8:bae::1, just past blocklisted 2001:db8:bad::/48",
            blocklist(), tcp6("2001:db8:bae::1", 443), allowed(1)),
        case("blocklist_v6_host_128", "2001:db8:1::66/128 blocklisted",
            blocklist(), tcp6("2001:db8:1::66", 443), drop(R::Blocklist)),
        case("blocklist_v6_host_128_neighbour_passes", "2001:db8:1::67, next to a blocklisted /128",
            blocklist(), tcp6("2001:db8:1::67", 443), allowed(1)),
        case("blocklist_applies_to_icmpv6", "ICMPv6 from blocklisted 2001:db8:bad::1",
            blocklist(), f6("2001:db8:bad::1").icmpv6().build(), drop(R::Blocklist)),
        case("blocklist_applies_to_unmatched_port", "45.1.1.1 to an unclaimed port (unmatched = pass) is blocklisted",
            blocklist(), udp4("45.1.1.1", 9999), drop(R::Blocklist)),
        case("blocklist_applies_to_v6_non_first_fragment", "an IPv6 non-first fragment from 2001:db8:1::66 is blocklisted",
            blocklist(), f6("2001:db8:1::66").ext(ExtHeader::frag(50, false)).udp(SPORT, 443).build(), drop(R::Blocklist)),

        // --- other protocols -------------------------------------------------
        case("icmp_other_protocol_drop", "ICMP under other_protocols = drop",
            other_drop(), f4("198.18.7.7").icmp().build(), drop(R::OtherProtocol)),
        case("icmpv6_other_protocol_pass", "ICMPv6 under other_protocols = pass",
            PolicySpec::default(), f6("2001:db8:99::1").icmpv6().build(), pass(R::OtherProtocol)),
        case("icmpv6_other_protocol_drop", "ICMPv6 under other_protocols = drop",
            other_drop(), f6("2001:db8:99::1").icmpv6().build(), drop(R::OtherProtocol)),
        case("gre_other_protocol_pass", "GRE (47) under other_protocols = pass",
            PolicySpec::default(), f4("198.18.7.7").proto(47, gre.clone()).build(), pass(R::OtherProtocol)),
        case("gre_other_protocol_drop", "GRE (47) under other_protocols = drop",
            other_drop(), f4("198.18.7.7").proto(47, gre).build(), drop(R::OtherProtocol)),
        case("esp_v4_other_protocol_drop", "ESP (50) over IPv4 under other_protocols = drop",
            other_drop(), f4("198.18.7.7").proto(50, esp.clone()).build(), drop(R::OtherProtocol)),
        case("esp_v6_other_protocol_pass", "ESP (50) over IPv6 under other_protocols = pass",
            PolicySpec::default(), f6("2001:db8:99::1").proto(50, esp).build(), pass(R::OtherProtocol)),

        // --- zones -----------------------------------------------------------
        case("zone_any_allows_v6", "a zone allowing `any` allows an IPv6 source",
            zones(), tcp6("2001:db8:77::1", 8880), allowed(1)),
        case("zone_range_first_port_allowed", "9000/tcp, first port of 9000-9010, from inside 10.30.*.*",
            zones(), tcp4("10.30.0.1", 9000), allowed(2)),
        case("zone_range_last_port_allowed", "9010/tcp, last port of 9000-9010, from 10.30.255.255",
            zones(), tcp4("10.30.255.255", 9010), allowed(2)),
        case("zone_range_first_port_not_allowed", "9000/tcp from outside the allowlist",
            zones(), tcp4("198.18.0.1", 9000), not_allowed(2)),
        case("zone_range_last_port_not_allowed", "9010/tcp from 10.31.0.0, just past 10.30.*.*",
            zones(), tcp4("10.31.0.0", 9010), not_allowed(2)),
        case("zone_range_port_after_last_unmatched", "9011/tcp, one past the range: unmatched = pass",
            zones(), tcp4("198.18.0.1", 9011), pass(R::Unmatched)),
        case("zone_range_port_before_first_unmatched", "8999/tcp, one before the range: unmatched = pass",
            zones(), tcp4("198.18.0.1", 8999), pass(R::Unmatched)),
        case("zone_range_udp_same_numbers_unmatched", "9005/udp: the zone claims 9000-9010/tcp only",
            zones(), udp4("198.18.0.1", 9005), pass(R::Unmatched)),
        case("zone_audit_outsider_passes", "an audited zone passes an outside source as audit",
            zones(), tcp4("198.18.0.1", 7000), audit(3)),
        case("zone_audit_allowed_source_allowed", "an audited zone still counts its own sources as allowed",
            zones(), tcp4("10.40.1.1", 7000), allowed(3)),
        case("zone_port_5000_tcp_zone", "5000/tcp belongs to zone t5000 (10.1/16): 10.2.0.5 not allowed",
            zones(), tcp4("10.2.0.5", 5000), not_allowed(4)),
        case("zone_port_5000_udp_zone", "5000/udp belongs to zone u5000 (10.2/16): 10.2.0.5 allowed",
            zones(), udp4("10.2.0.5", 5000), allowed(5)),
        case("zone_port_5000_sctp_zone", "5000/sctp belongs to zone s5000 (10.3/16): 10.2.0.5 not allowed",
            zones(), sctp4("10.2.0.5", 5000), not_allowed(6)),
        case("zone_port_5000_sctp_allowed", "5000/sctp from 10.3.0.9 allowed by zone s5000",
            zones(), sctp4("10.3.0.9", 5000), allowed(6)),
        case("zone_vlan_tagged_allowed", "an 802.1Q-tagged frame from 10.30.1.1 to 9005/tcp is allowed",
            zones(), f4("10.30.1.1").vlan(ETH_P_8021Q, 10).tcp(SPORT, 9005).build(), allowed(2)),
        case("zone_qinq_tagged_not_allowed", "a QinQ-tagged frame from outside to 9005/tcp is dropped by the zone",
            zones(), f4("198.18.0.1").vlan(ETH_P_8021AD, 100).vlan(ETH_P_8021Q, 200).tcp(SPORT, 9005).build(), not_allowed(2)),
        case("zone_qinq_tagged_allowed", "a QinQ-tagged frame from 10.30.1.1 to 9005/tcp is allowed",
            zones(), f4("10.30.1.1").vlan(ETH_P_8021AD, 100).vlan(ETH_P_8021Q, 200).tcp(SPORT, 9005).build(), allowed(2)),
        case("unmatched_pass", "a port no zone claims under unmatched = pass",
            zones(), udp4("198.18.0.1", 53), pass(R::Unmatched)),

        // --- nested prefixes -------------------------------------------------
        case("nested_allowed_below_blocked_subnet", "10.65.255.255: in the zone's 10.0.0.0/8, below blocklisted 10.66.0.0/16",
            nested(), tcp4("10.65.255.255", 8443), allowed(1)),
        case("nested_blocked_subnet_first_address", "10.66.0.0: blocklisted /16 nested in the zone's /8",
            nested(), tcp4("10.66.0.0", 8443), drop(R::Blocklist)),
        case("nested_blocked_subnet_last_address", "10.66.255.255: blocklisted /16 nested in the zone's /8",
            nested(), tcp4("10.66.255.255", 8443), drop(R::Blocklist)),
        case("nested_allowed_above_blocked_subnet", "10.67.0.0: in the zone's /8, above the blocklisted /16",
            nested(), tcp4("10.67.0.0", 8443), allowed(1)),
        case("nested_outside_zone_not_allowed", "11.0.0.0: outside the zone's 10.0.0.0/8",
            nested(), tcp4("11.0.0.0", 8443), not_allowed(1)),
    ]
}

/// One MPLS label (bottom of stack) followed by a TCP SYN to 22 from 10.1.1.1.
fn mpls_wrapped_syn() -> Vec<u8> {
    let mut p = vec![0x00, 0x01, 0x01, 0x40];
    p.extend_from_slice(&tcp4("10.1.1.1", 22)[14..]);
    p
}

/// An ARP request body (28 bytes) for frames built by hand.
fn arp_body() -> Vec<u8> {
    let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
    p.extend_from_slice(&crate::packet::SRC_MAC);
    p.extend_from_slice(&[192, 168, 100, 7]);
    p.extend_from_slice(&[0; 6]);
    p.extend_from_slice(&HOST4.octets());
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{bad_names, duplicate_names, invalid_policies, model_disagreements};

    #[test]
    fn fixtures_agree_with_reference_model() {
        let bad = model_disagreements(&fixtures());
        assert!(
            bad.is_empty(),
            "{} fixture(s) disagree with the reference model:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }

    #[test]
    fn fixture_names_are_unique_snake_case() {
        let f = fixtures();
        assert_eq!(duplicate_names(&f), Vec::<&str>::new());
        assert_eq!(bad_names(&f), Vec::<&str>::new());
    }

    #[test]
    fn fixtures_meet_the_minimum_count() {
        let n = fixtures().len();
        assert!(n >= 60, "only {n} fixtures");
    }

    #[test]
    fn fixture_policies_are_valid() {
        assert_eq!(invalid_policies(&fixtures()), Vec::<String>::new());
    }

    #[test]
    fn fixtures_cover_every_reason_but_no_policy() {
        // `reject_suppressed` needs a spent budget: the reply fixtures'
        // budget check (`fixtures_reject::budget`) pins it.
        let mut f = fixtures();
        f.extend(crate::fixtures_reject::cases().into_iter().map(|c| c.case));
        f.extend(crate::fixtures_schedule::fixtures());
        f.extend(crate::fixtures_bans::fixtures());
        f.extend(crate::fixtures_lanes::fixtures());
        f.extend(crate::fixtures_lanes6::fixtures());
        for r in R::ALL {
            // Rate limits and quotas are pinned by sequences
            // (`fixtures_rate`, `fixtures_quota`, which must count some
            // `rate_limited`, `quota_exceeded`).
            let seen = f.iter().any(|c| c.expect.reason == r)
                || (r == R::RateLimited && crate::fixtures_rate::limits_some())
                || (r == R::QuotaExceeded && crate::fixtures_quota::exceeds_some());
            let expected = !matches!(r, R::NoPolicy | R::RejectSuppressed);
            assert_eq!(seen, expected, "reason {}", r.as_str());
        }
    }
}
