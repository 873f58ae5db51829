//! The reference model pinned by hand, rule by rule.

use super::*;
use std::net::Ipv6Addr;

use crate::packet::{ExtHeader, Frame, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_LLDP};
use crate::spec::Proto;
use crate::spec::{allow, nets, Defaults, RuleSpec, ZoneSpec};
use rand::{Rng, SeedableRng};

// ---- helpers ---------------------------------------------------------

fn v4(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn v6(s: &str) -> Ipv6Addr {
    s.parse().unwrap()
}
const HOST4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
fn host6() -> Ipv6Addr {
    v6("2001:db8:ffff::1")
}
fn from4(s: &str) -> Frame {
    Frame::ipv4(v4(s), HOST4)
}
fn from6(s: &str) -> Frame {
    Frame::ipv6(v6(s), host6())
}

/// The KEEP example: failsafe SSH from 10/8, blocklist, an open API zone, an
/// admin zone for 10.20/16 + fd20::/48, a metrics zone that audits.
fn keep() -> PolicySpec {
    PolicySpec {
        bans: Vec::new(),
        at: None,
        defaults: Defaults::default(),
        blocklist: nets(&["203.0.113.0/24", "10.66.0.0/16", "2001:db8:bad::/48"]),
        failsafe: vec![RuleSpec {
            ports: vec![(Proto::Tcp, 22, 22)],
            from: nets(&["10.0.0.0/8"]),
        }],
        zones: vec![
            ZoneSpec::new("api", vec![(Proto::Tcp, 8880, 8880)], vec![Allow::Any]),
            ZoneSpec::new(
                "admin",
                vec![(Proto::Tcp, 8889, 8889), (Proto::Udp, 9000, 9010)],
                vec![allow("10.20.0.0/16"), allow("fd20::/48")],
            ),
            ZoneSpec::new(
                "metrics",
                vec![(Proto::Tcp, 8890, 8890), (Proto::Sctp, 3868, 3868)],
                vec![allow("10.20.0.0/16")],
            )
            .audit(),
        ],
        reject_budget: None,
    }
}

fn with_defaults(f: impl FnOnce(&mut Defaults)) -> PolicySpec {
    let mut p = keep();
    f(&mut p.defaults);
    p
}

fn j(frame: Frame) -> Judgement {
    judge(&keep(), &frame.build())
}

fn reason(frame: Frame) -> Reason {
    j(frame).reason
}

fn g(verdict: Verdict, reason: Reason) -> Judgement {
    Judgement::new(verdict, reason, RULE_GLOBAL)
}

const ADMIN: u32 = 2;
const METRICS: u32 = 3;

// ---- layer 2 ---------------------------------------------------------

#[test]
fn frame_shorter_than_ethernet_is_malformed() {
    for n in 0..14 {
        assert_eq!(
            judge(&keep(), &vec![0; n]),
            g(Verdict::Drop, Reason::Malformed)
        );
    }
}

#[test]
fn arp_and_lldp_follow_non_ip_default() {
    let arp = Frame::arp_request(v4("10.0.0.1"), v4("10.0.0.2"));
    assert_eq!(j(arp.clone()), g(Verdict::Pass, Reason::NonIp));
    let p = with_defaults(|d| d.non_ip = Act::Drop);
    assert_eq!(judge(&p, &arp.build()), g(Verdict::Drop, Reason::NonIp));
    let lldp = Frame::raw_ethertype(ETH_P_LLDP, vec![0; 46]);
    assert_eq!(judge(&p, &lldp.build()), g(Verdict::Drop, Reason::NonIp));
}

#[test]
fn ethernet_header_alone_is_non_ip_unless_it_says_ip() {
    assert_eq!(reason(Frame::raw_ethertype(0x0806, vec![])), Reason::NonIp);
    assert_eq!(
        reason(Frame::raw_ethertype(ETH_P_IPV4, vec![])),
        Reason::Malformed
    );
}

#[test]
fn ieee_802_3_length_field_is_non_ip() {
    assert_eq!(
        reason(Frame::raw_ethertype(0x0040, vec![0; 64])),
        Reason::NonIp
    );
}

#[test]
fn two_vlan_tags_are_read() {
    let f = from4("10.20.1.1")
        .vlan(ETH_P_8021AD, 100)
        .vlan(ETH_P_8021Q, 200)
        .tcp(1000, 8889);
    assert_eq!(j(f), Judgement::new(Verdict::Pass, Reason::Allowed, ADMIN));
}

#[test]
fn third_vlan_tag_is_malformed() {
    let f = from4("10.20.1.1")
        .vlan(ETH_P_8021AD, 1)
        .vlan(ETH_P_8021Q, 2)
        .vlan(ETH_P_8021Q, 3)
        .tcp(1000, 8889);
    assert_eq!(j(f), g(Verdict::Drop, Reason::Malformed));
    // even when what follows is not IP
    let arp = Frame::arp_request(v4("1.1.1.1"), v4("1.1.1.2"))
        .vlan(ETH_P_8021Q, 1)
        .vlan(ETH_P_8021Q, 2)
        .vlan(ETH_P_8021AD, 3);
    assert_eq!(reason(arp), Reason::Malformed);
}

#[test]
fn vlan_tag_cut_short_is_malformed() {
    for cut in 15..18 {
        let f = from4("10.20.1.1")
            .vlan(ETH_P_8021Q, 5)
            .tcp(1, 8889)
            .truncate(cut);
        assert_eq!(reason(f), Reason::Malformed, "cut at {cut}");
    }
}

#[test]
fn non_ip_inside_vlan_is_non_ip() {
    let f = Frame::arp_request(v4("1.1.1.1"), v4("1.1.1.2")).vlan(ETH_P_8021Q, 7);
    assert_eq!(reason(f), Reason::NonIp);
}

// ---- IPv4 ------------------------------------------------------------

#[test]
fn ipv4_shorter_than_20_bytes_is_malformed() {
    let f = from4("1.2.3.4").tcp(1, 80).truncate(14 + 19);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn ipv4_wrong_version_is_malformed() {
    assert_eq!(
        reason(from4("1.2.3.4").tcp(1, 80).version(6)),
        Reason::Malformed
    );
    assert_eq!(
        reason(from4("1.2.3.4").tcp(1, 80).version(5)),
        Reason::Malformed
    );
}

#[test]
fn ipv4_ihl_below_5_is_malformed() {
    for ihl in 0..5 {
        assert_eq!(
            reason(from4("1.2.3.4").tcp(1, 80).ihl(ihl)),
            Reason::Malformed
        );
    }
}

#[test]
fn ipv4_options_are_skipped() {
    let f = from4("10.20.0.9")
        .ipv4_options([0x94, 0x04, 0x00, 0x00]) // router alert
        .tcp(1000, 8889);
    assert_eq!(j(f), Judgement::new(Verdict::Pass, Reason::Allowed, ADMIN));
    let f = from4("10.99.0.9").ipv4_options(vec![1; 40]).tcp(1000, 8889);
    assert_eq!(
        j(f),
        Judgement::new(Verdict::Drop, Reason::NotAllowed, ADMIN)
    );
}

#[test]
fn ipv4_options_beyond_the_frame_are_malformed() {
    // IHL 15 = 60 header bytes, but the frame ends after 20 + 8 bytes.
    let f = from4("1.2.3.4").udp(1, 9000).ihl(15).total_len(28);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn ihl_pointing_into_the_tcp_header_reads_ports_from_there() {
    // IHL 6: the layer 4 starts 4 bytes into the real TCP header, so the "dport"
    // the contract reads is the low half of the sequence number (0).
    let f = from4("1.2.3.4").tcp(1, 8880).payload(vec![0; 8]).ihl(6);
    assert_eq!(j(f), g(Verdict::Pass, Reason::Unmatched));
}

#[test]
fn total_length_below_header_is_malformed() {
    assert_eq!(
        reason(from4("1.2.3.4").tcp(1, 80).total_len(19)),
        Reason::Malformed
    );
    let f = from4("1.2.3.4")
        .ipv4_options([1, 1, 1, 1])
        .icmp()
        .total_len(20);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn total_length_beyond_the_frame_is_malformed() {
    assert_eq!(
        reason(from4("1.2.3.4").tcp(1, 80).total_len(41)),
        Reason::Malformed
    );
    assert_eq!(
        reason(from4("1.2.3.4").icmp().truncate(40)),
        Reason::Malformed
    );
}

#[test]
fn l4_header_in_ethernet_padding_is_malformed() {
    // The whole TCP header is in the frame, but total length claims only 10
    // bytes of it: the rest is Ethernet padding and must not be read.
    let f = from4("10.20.0.1").tcp(1000, 8889).total_len(30);
    assert_eq!(reason(f), Reason::Malformed);
    let f = from4("10.20.0.1").udp(1000, 9000).total_len(27);
    assert_eq!(reason(f), Reason::Malformed);
    let f = from4("10.20.0.1").sctp(1000, 3868).total_len(31);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn exact_minimal_l4_headers_are_enough() {
    let f = from4("10.20.0.1").udp(1000, 9000);
    assert_eq!(reason(f), Reason::Allowed); // 8 bytes exactly
    let f = from4("10.99.0.1").sctp(1000, 3868).payload(vec![]);
    assert_eq!(j(f), Judgement::new(Verdict::Pass, Reason::Audit, METRICS));
    let f = from4("1.1.1.1")
        .tcp(1, 8880)
        .total_len(40)
        .ethernet_padding(6);
    assert_eq!(reason(f), Reason::Allowed);
}

#[test]
fn ethernet_padding_after_a_valid_packet_is_ignored() {
    let f = from4("10.20.0.1").tcp(1, 8889).trailer([0xff; 30]);
    assert_eq!(reason(f), Reason::Allowed);
    let f = from6("fd20::1").udp(1, 9005).trailer([0x00, 0x16]);
    assert_eq!(reason(f), Reason::Allowed);
}

#[test]
fn icmp_follows_other_protocols_default() {
    assert_eq!(
        j(from4("1.2.3.4").icmp()),
        g(Verdict::Pass, Reason::OtherProtocol)
    );
    let p = with_defaults(|d| d.other_protocols = Act::Drop);
    assert_eq!(
        judge(&p, &from4("1.2.3.4").icmp().build()),
        g(Verdict::Drop, Reason::OtherProtocol)
    );
    assert_eq!(
        judge(&p, &from4("1.2.3.4").proto(47, vec![0; 4]).build()),
        g(Verdict::Drop, Reason::OtherProtocol)
    );
}

#[test]
fn short_icmp_is_fine_because_it_has_no_ports() {
    let f = from4("1.2.3.4").proto(1, vec![8]);
    assert_eq!(reason(f), Reason::OtherProtocol);
    let f = from4("1.2.3.4").proto(47, vec![]);
    assert_eq!(reason(f), Reason::OtherProtocol);
}

#[test]
fn dccp_and_udplite_have_no_ports() {
    assert_eq!(
        reason(from4("1.2.3.4").proto(33, vec![0x1f; 16])),
        Reason::OtherProtocol
    );
    assert_eq!(
        reason(from4("1.2.3.4").proto(136, vec![0x1f; 8])),
        Reason::OtherProtocol
    );
}

// ---- IPv4 fragments --------------------------------------------------

#[test]
fn tcp_offset_one_fragment_is_malformed() {
    let f = from4("1.2.3.4").tcp(1, 80).frag(1, true);
    assert_eq!(reason(f), Reason::Malformed);
    let f = from4("1.2.3.4").proto(6, vec![0; 12]).frag(1, false);
    assert_eq!(reason(f), Reason::Malformed);
    // offset 1 for other protocols is an ordinary non-first fragment
    let f = from4("1.2.3.4").udp(1, 80).frag(1, true);
    assert_eq!(j(f), g(Verdict::Pass, Reason::Fragment));
    // and offset 2 for TCP too
    let f = from4("1.2.3.4").proto(6, vec![0; 12]).frag(2, false);
    assert_eq!(j(f), g(Verdict::Pass, Reason::Fragment));
}

#[test]
fn non_first_fragment_to_closed_port_passes_under_filter_first() {
    // Its bytes look like a TCP header to the admin port from an outsider, but
    // a non-first fragment carries no ports.
    let f = from4("8.8.8.8").tcp(1, 8889).frag(185, false);
    assert_eq!(j(f), g(Verdict::Pass, Reason::Fragment));
}

#[test]
fn non_first_fragment_drops_under_fragments_drop() {
    let p = with_defaults(|d| d.fragments = Fragments::Drop);
    let f = from4("8.8.8.8").udp(1, 53).frag(3, true);
    assert_eq!(judge(&p, &f.build()), g(Verdict::Drop, Reason::Fragment));
}

#[test]
fn first_fragment_is_filtered_like_an_unfragmented_packet() {
    let f = from4("8.8.8.8").tcp(1, 8889).frag(0, true);
    assert_eq!(
        j(f),
        Judgement::new(Verdict::Drop, Reason::NotAllowed, ADMIN)
    );
    let f = from4("10.20.0.1").tcp(1, 8889).frag(0, true);
    assert_eq!(j(f), Judgement::new(Verdict::Pass, Reason::Allowed, ADMIN));
}

#[test]
fn first_fragment_without_full_l4_header_is_malformed() {
    let f = from4("8.8.8.8").proto(6, vec![0; 16]).frag(0, true);
    assert_eq!(reason(f), Reason::Malformed);
    let f = from4("8.8.8.8").proto(17, vec![0; 7]).frag(0, true);
    assert_eq!(reason(f), Reason::Malformed);
    let f = from4("8.8.8.8").proto(132, vec![0; 11]).frag(0, true);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn first_fragment_drops_under_fragments_drop_except_failsafe() {
    let p = with_defaults(|d| d.fragments = Fragments::Drop);
    let f = from4("10.20.0.1").tcp(1, 8889).frag(0, true);
    assert_eq!(judge(&p, &f.build()), g(Verdict::Drop, Reason::Fragment));
    let f = from4("10.1.2.3").tcp(1, 22).frag(0, true);
    assert_eq!(
        judge(&p, &f.build()),
        Judgement::new(Verdict::Pass, Reason::Failsafe, RULE_FAILSAFE)
    );
}

#[test]
fn first_fragment_icmp_drops_under_fragments_drop() {
    let p = with_defaults(|d| d.fragments = Fragments::Drop);
    let f = from4("1.1.1.1").icmp().frag(0, true);
    assert_eq!(judge(&p, &f.build()), g(Verdict::Drop, Reason::Fragment));
    assert_eq!(
        judge(&keep(), &f.build()),
        g(Verdict::Pass, Reason::OtherProtocol)
    );
}

#[test]
fn df_bit_and_reserved_bit_do_not_make_a_fragment() {
    let f = from4("8.8.8.8").tcp(1, 8889).frag_field(0xc000);
    assert_eq!(reason(f), Reason::NotAllowed);
}

#[test]
fn non_first_fragment_from_blocklisted_source_is_blocked() {
    let f = from4("203.0.113.9").udp(1, 1).frag(10, false);
    assert_eq!(j(f), g(Verdict::Drop, Reason::Blocklist));
}

#[test]
fn non_first_fragment_to_failsafe_port_gets_no_failsafe() {
    let p = with_defaults(|d| d.fragments = Fragments::Drop);
    let f = from4("10.1.2.3").tcp(1, 22).frag(100, true);
    assert_eq!(judge(&p, &f.build()), g(Verdict::Drop, Reason::Fragment));
}

#[test]
fn non_first_fragment_needs_no_l4_bytes() {
    let f = from4("8.8.8.8").proto(17, vec![]).frag(7, false);
    assert_eq!(reason(f), Reason::Fragment);
}

// ---- IPv6 ------------------------------------------------------------

#[test]
fn ipv6_tcp_is_filtered_by_ipv6_prefixes() {
    let f = from6("fd20::5").tcp(1, 8889);
    assert_eq!(j(f), Judgement::new(Verdict::Pass, Reason::Allowed, ADMIN));
    let f = from6("fd21::5").tcp(1, 8889);
    assert_eq!(
        j(f),
        Judgement::new(Verdict::Drop, Reason::NotAllowed, ADMIN)
    );
    let f = from6("2001:db8:bad:1::1").tcp(1, 8880);
    assert_eq!(j(f), g(Verdict::Drop, Reason::Blocklist));
}

#[test]
fn ipv6_shorter_than_40_bytes_is_malformed() {
    assert_eq!(
        reason(from6("::1").tcp(1, 2).truncate(14 + 39)),
        Reason::Malformed
    );
}

#[test]
fn ipv6_wrong_version_is_malformed() {
    assert_eq!(reason(from6("::1").tcp(1, 2).version(4)), Reason::Malformed);
}

#[test]
fn ipv6_payload_length_beyond_frame_is_malformed() {
    assert_eq!(
        reason(from6("::1").udp(1, 2).payload_len(9)),
        Reason::Malformed
    );
    assert_eq!(
        reason(from6("::1").tcp(1, 2).truncate(14 + 40 + 19)),
        Reason::Malformed
    );
}

#[test]
fn ipv6_l4_header_beyond_payload_length_is_malformed() {
    let f = from6("fd20::1").udp(1, 9000).payload_len(7);
    assert_eq!(reason(f), Reason::Malformed);
    let f = from6("fd20::1").tcp(1, 8889).payload_len(0);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn ipv6_payload_length_zero_with_no_next_header_is_fine() {
    let f = from6("fd20::1").proto(59, vec![1, 2, 3, 4]).payload_len(0);
    assert_eq!(reason(f), Reason::OtherProtocol);
}

#[test]
fn jumbogram_is_malformed() {
    // payload length 0 + a hop-by-hop header (where the jumbo option would be):
    // the header is outside the (empty) payload region.
    let f = from6("fd20::1")
        .ext(ExtHeader::HopByHop { len_units: 0 })
        .udp(1, 9000)
        .payload_len(0);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn ipv4_ah_has_no_ports() {
    let f = from4("10.20.0.1").proto(51, vec![6, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1]);
    assert_eq!(reason(f), Reason::OtherProtocol);
}

#[test]
fn esp_icmpv6_and_no_next_header_have_no_ports() {
    assert_eq!(reason(from6("::2").icmpv6()), Reason::OtherProtocol);
    assert_eq!(
        reason(from6("::2").proto(50, vec![0; 16])),
        Reason::OtherProtocol
    );
    assert_eq!(
        reason(from6("::2").proto(59, vec![])),
        Reason::OtherProtocol
    );
}

#[test]
fn full_extension_chain_of_each_kind_is_read() {
    let f = from6("fd20::1")
        .ext(ExtHeader::HopByHop { len_units: 0 })
        .ext(ExtHeader::DestOpts { len_units: 1 })
        .ext(ExtHeader::Routing { len_units: 2 })
        .ext(ExtHeader::Mobility { len_units: 0 })
        .ext(ExtHeader::Ah { len_field: 4 })
        .ext(ExtHeader::DestOpts { len_units: 0 })
        .tcp(1, 8889);
    assert_eq!(j(f), Judgement::new(Verdict::Pass, Reason::Allowed, ADMIN));
}

#[test]
fn hbh_after_routing_is_malformed() {
    let f = from6("fd20::1")
        .ext(ExtHeader::Routing { len_units: 0 })
        .ext(ExtHeader::HopByHop { len_units: 0 })
        .tcp(1, 8889);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn second_hbh_is_malformed() {
    let f = from6("fd20::1")
        .ext(ExtHeader::HopByHop { len_units: 0 })
        .ext(ExtHeader::HopByHop { len_units: 0 })
        .udp(1, 9000);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn ah_length_uses_len_plus_2_times_4() {
    // AH with len 1: (1+2)*4 = 12 bytes, not (1+1)*8 = 16. The TCP header starts
    // right after 12 bytes; a model using the wrong formula reads other bytes.
    let f = from6("fd20::1")
        .ext(ExtHeader::Ah { len_field: 1 })
        .tcp(1, 8889);
    let bytes = f.build();
    assert_eq!(bytes.len(), 14 + 40 + 12 + 20);
    assert_eq!(
        judge(&keep(), &bytes),
        Judgement::new(Verdict::Pass, Reason::Allowed, ADMIN)
    );
    // And with len 0: 8 bytes.
    let f = from6("fd21::1")
        .ext(ExtHeader::Ah { len_field: 0 })
        .udp(1, 9001);
    assert_eq!(
        j(f),
        Judgement::new(Verdict::Drop, Reason::NotAllowed, ADMIN)
    );
    // An AH whose (len+2)*4 overruns the payload region is malformed.
    let f = from6("fd20::1")
        .ext(ExtHeader::Ah { len_field: 4 })
        .tcp(1, 8889);
    let mut bytes = f.build();
    bytes[14 + 40 + 1] = 10; // (10+2)*4 = 48 > 24 + 20
    assert_eq!(judge(&keep(), &bytes).reason, Reason::Malformed);
}

#[test]
fn eight_extension_headers_are_accepted() {
    let mut f = from6("fd20::1").ext(ExtHeader::HopByHop { len_units: 0 });
    for _ in 0..7 {
        f = f.ext(ExtHeader::DestOpts { len_units: 0 });
    }
    assert_eq!(reason(f.tcp(1, 8889)), Reason::Allowed);
}

#[test]
fn ninth_extension_header_is_malformed() {
    let mut f = from6("fd20::1");
    for _ in 0..9 {
        f = f.ext(ExtHeader::DestOpts { len_units: 0 });
    }
    assert_eq!(reason(f.clone().tcp(1, 8889)), Reason::Malformed);
    // even if it is a non-first fragment header that would stop the walk
    let mut f = from6("fd20::1");
    for _ in 0..8 {
        f = f.ext(ExtHeader::Routing { len_units: 0 });
    }
    assert_eq!(
        reason(f.ext(ExtHeader::frag(5, true)).udp(1, 1)),
        Reason::Malformed
    );
}

#[test]
fn extension_header_overrunning_payload_is_malformed() {
    // DestOpts of 16 bytes with only 8 in the payload region (padding after).
    let f = from6("fd20::1")
        .ext(ExtHeader::DestOpts { len_units: 1 })
        .proto(59, vec![])
        .payload_len(8)
        .ethernet_padding(16);
    assert_eq!(reason(f), Reason::Malformed);
    // A single byte where an extension header should be.
    let f = from6("fd20::1")
        .ext(ExtHeader::Raw {
            next_header_value: 60,
            bytes: vec![59],
        })
        .proto(59, vec![]);
    assert_eq!(reason(f), Reason::Malformed);
    // Extension header that ends exactly at the payload end, then nothing (TCP)
    let f = from6("fd20::1")
        .ext(ExtHeader::DestOpts { len_units: 0 })
        .proto(6, vec![]);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn ipv6_non_first_fragment_stops_the_walk() {
    // Garbage after the fragment header is never read.
    let f = from6("2001:db8::1")
        .ext(ExtHeader::frag(100, false))
        .proto(6, vec![0xff; 3]);
    assert_eq!(j(f), g(Verdict::Pass, Reason::Fragment));
    let f = from6("2001:db8::1")
        .ext(ExtHeader::frag(100, false))
        .proto(0, vec![0xff; 3]); // "hop-by-hop" after a fragment: not read
    assert_eq!(reason(f), Reason::Fragment);
}

#[test]
fn ipv6_tcp_offset_one_fragment_is_malformed() {
    let f = from6("2001:db8::1")
        .ext(ExtHeader::frag(1, true))
        .tcp(1, 80);
    assert_eq!(reason(f), Reason::Malformed);
    let f = from6("2001:db8::1")
        .ext(ExtHeader::frag(1, true))
        .udp(1, 80);
    assert_eq!(reason(f), Reason::Fragment);
}

#[test]
fn second_fragment_header_is_malformed() {
    let f = from6("2001:db8::1")
        .ext(ExtHeader::frag(0, true))
        .ext(ExtHeader::frag(0, true))
        .udp(1, 80);
    assert_eq!(reason(f), Reason::Malformed);
    // but a non-first fragment stops before a second one is seen
    let f = from6("2001:db8::1")
        .ext(ExtHeader::frag(8, true))
        .ext(ExtHeader::frag(0, true))
        .udp(1, 80);
    assert_eq!(reason(f), Reason::Fragment);
}

#[test]
fn ipv6_first_fragment_must_carry_chain_and_l4_header() {
    let f = from6("fd20::1")
        .ext(ExtHeader::frag(0, true))
        .ext(ExtHeader::DestOpts { len_units: 0 })
        .tcp(1, 8889);
    assert_eq!(j(f), Judgement::new(Verdict::Pass, Reason::Allowed, ADMIN));
    let f = from6("fd20::1")
        .ext(ExtHeader::frag(0, true))
        .proto(17, vec![0; 6]);
    assert_eq!(reason(f), Reason::Malformed);
    let f = from6("fd20::1")
        .ext(ExtHeader::frag(0, true))
        .ext(ExtHeader::DestOpts { len_units: 3 })
        .proto(59, vec![])
        .payload_len(8 + 16);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn atomic_ipv6_fragment_is_judged_as_unfragmented() {
    // CONTRACT: see V6_ATOMIC_FRAGMENT_IS_FIRST.
    let p = with_defaults(|d| d.fragments = Fragments::Drop);
    let f = from6("fd20::1")
        .ext(ExtHeader::frag(0, false))
        .tcp(1, 8889)
        .build();
    assert_eq!(judge(&keep(), &f).reason, Reason::Allowed);
    let expected = if V6_ATOMIC_FRAGMENT_IS_FIRST {
        Reason::Fragment
    } else {
        Reason::Allowed
    };
    assert_eq!(judge(&p, &f).reason, expected);
}

#[test]
fn unknown_extension_like_protocols_end_the_walk_without_ports() {
    // 253 (experimental) is not in the walk table: no ports, not malformed.
    let f = from6("::9").proto(253, vec![6, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(reason(f), Reason::OtherProtocol);
}

// ---- sources ---------------------------------------------------------

#[test]
fn mapped_source_uses_ipv4_blocklist() {
    let f = from6("::ffff:203.0.113.7").tcp(1, 8880);
    assert_eq!(j(f), g(Verdict::Drop, Reason::Blocklist));
}

#[test]
fn mapped_source_uses_ipv4_allowlists_and_failsafe() {
    let f = from6("::ffff:10.20.3.4").tcp(1, 8889);
    assert_eq!(j(f), Judgement::new(Verdict::Pass, Reason::Allowed, ADMIN));
    let f = from6("::ffff:10.1.1.1").tcp(1, 22);
    assert_eq!(
        j(f),
        Judgement::new(Verdict::Pass, Reason::Failsafe, RULE_FAILSAFE)
    );
    let f = from6("::ffff:10.1.1.1").udp(1, 9000);
    assert_eq!(
        j(f),
        Judgement::new(Verdict::Drop, Reason::NotAllowed, ADMIN)
    );
}

#[test]
fn mapped_source_never_matches_ipv6_prefixes() {
    let mut p = keep();
    p.blocklist = nets(&["::/0"]);
    p.zones[1].allow = vec![allow("::ffff:0:0/96")];
    let f = from6("::ffff:10.20.3.4").tcp(1, 8889).build();
    assert_eq!(
        judge(&p, &f),
        Judgement::new(Verdict::Drop, Reason::NotAllowed, ADMIN)
    );
    // while a real IPv6 source is blocked by ::/0
    let f = from6("fd20::1").tcp(1, 8889).build();
    assert_eq!(judge(&p, &f).reason, Reason::Blocklist);
}

#[test]
fn ipv4_compatible_and_translated_sources_are_ipv6() {
    // ::10.20.3.4 (deprecated compatible) and ::ffff:0:a.b.c.d (SIIT) are not mapped.
    assert_eq!(
        reason(from6("::10.20.3.4").tcp(1, 8889)),
        Reason::NotAllowed
    );
    assert_eq!(
        reason(from6("::ffff:0:10.20.3.4").tcp(1, 8889)),
        Reason::NotAllowed
    );
}

#[test]
fn any_allows_both_families_and_mapped() {
    for f in [
        from4("8.8.8.8").tcp(1, 8880),
        from6("2606:4700::1").tcp(1, 8880),
        from6("::ffff:8.8.8.8").tcp(1, 8880),
    ] {
        assert_eq!(j(f), Judgement::new(Verdict::Pass, Reason::Allowed, 1));
    }
}

// ---- verdict order ---------------------------------------------------

#[test]
fn failsafe_beats_blocklist() {
    let mut p = keep();
    p.blocklist.push(net4("10.0.0.0/8"));
    let f = from4("10.5.5.5").tcp(1, 22).build();
    assert_eq!(
        judge(&p, &f),
        Judgement::new(Verdict::Pass, Reason::Failsafe, RULE_FAILSAFE)
    );
    // not on another port
    let f = from4("10.5.5.5").tcp(1, 23).build();
    assert_eq!(judge(&p, &f), g(Verdict::Drop, Reason::Blocklist));
}

fn net4(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn failsafe_needs_the_source_in_from() {
    let f = from4("11.0.0.1").tcp(1, 22);
    assert_eq!(j(f), g(Verdict::Pass, Reason::Unmatched));
    let f = from4("10.66.0.1").tcp(1, 22); // blocklisted, but in failsafe from
    assert_eq!(reason(f), Reason::Failsafe);
    let f = from4("10.66.0.1").udp(1, 22); // wrong protocol
    assert_eq!(reason(f), Reason::Blocklist);
}

#[test]
fn failsafe_covering_rules_union_their_sources() {
    let mut p = keep();
    p.failsafe = vec![
        RuleSpec {
            ports: vec![(Proto::Tcp, 20, 30)],
            from: nets(&["10.1.0.0/16"]),
        },
        RuleSpec {
            ports: vec![(Proto::Tcp, 22, 22), (Proto::Tcp, 8889, 8889)],
            from: nets(&["10.2.0.0/16", "fd20::/16"]),
        },
    ];
    let jd = |s: &str, port| judge(&p, &from4(s).tcp(1, port).build()).reason;
    assert_eq!(jd("10.1.0.1", 22), Reason::Failsafe);
    assert_eq!(jd("10.2.0.1", 22), Reason::Failsafe);
    assert_eq!(jd("10.2.0.1", 25), Reason::Unmatched);
    assert_eq!(jd("10.1.0.1", 8889), Reason::NotAllowed);
    assert_eq!(jd("10.2.0.1", 8889), Reason::Failsafe); // failsafe overlaps a zone
}

#[test]
fn failsafe_never_applies_to_port_less_packets() {
    let mut p = keep();
    p.blocklist.push(net4("10.0.0.0/8"));
    let f = from4("10.5.5.5").icmp().build();
    assert_eq!(judge(&p, &f).reason, Reason::Blocklist);
}

#[test]
fn blocklist_beats_allowlist() {
    let mut p = keep();
    p.blocklist.push(net4("10.20.30.0/24"));
    let f = from4("10.20.30.1").tcp(1, 8889).build();
    assert_eq!(judge(&p, &f), g(Verdict::Drop, Reason::Blocklist));
    let f = from4("10.20.31.1").tcp(1, 8889).build();
    assert_eq!(judge(&p, &f).reason, Reason::Allowed);
}

#[test]
fn blocklist_applies_to_port_less_and_fragments() {
    assert_eq!(reason(from4("203.0.113.1").icmp()), Reason::Blocklist);
    assert_eq!(reason(from6("2001:db8:bad::1").icmpv6()), Reason::Blocklist);
    assert_eq!(
        reason(
            from6("2001:db8:bad::1")
                .ext(ExtHeader::frag(9, false))
                .udp(1, 1)
        ),
        Reason::Blocklist
    );
}

#[test]
fn malformed_beats_failsafe() {
    let f = from4("10.1.1.1").tcp(1, 22).total_len(39);
    assert_eq!(reason(f), Reason::Malformed);
}

#[test]
fn zone_audit_passes_with_reason_audit() {
    let f = from4("8.8.8.8").tcp(1, 8890);
    assert_eq!(j(f), Judgement::new(Verdict::Pass, Reason::Audit, METRICS));
    let f = from4("10.20.8.8").tcp(1, 8890);
    assert_eq!(
        j(f),
        Judgement::new(Verdict::Pass, Reason::Allowed, METRICS)
    );
}

#[test]
fn zone_ports_are_per_protocol() {
    // 8889/udp belongs to no zone
    assert_eq!(
        j(from4("8.8.8.8").udp(1, 8889)),
        g(Verdict::Pass, Reason::Unmatched)
    );
    let p = with_defaults(|d| d.unmatched = Act::Drop);
    assert_eq!(
        judge(&p, &from4("8.8.8.8").sctp(1, 8889).build()),
        g(Verdict::Drop, Reason::Unmatched)
    );
}

#[test]
fn port_ranges_are_inclusive() {
    for (port, reason_) in [
        (8999, Reason::Unmatched),
        (9000, Reason::NotAllowed),
        (9010, Reason::NotAllowed),
        (9011, Reason::Unmatched),
    ] {
        assert_eq!(
            reason(from4("8.8.8.8").udp(1, port)),
            reason_,
            "port {port}"
        );
    }
}

#[test]
fn destination_port_not_source_port_decides() {
    assert_eq!(reason(from4("8.8.8.8").tcp(8889, 1234)), Reason::Unmatched);
}

#[test]
fn empty_policy_passes_everything_well_formed() {
    let p = PolicySpec::default();
    assert_eq!(
        judge(&p, &from4("1.1.1.1").tcp(1, 2).build()).reason,
        Reason::Unmatched
    );
    assert_eq!(
        judge(&p, &from4("1.1.1.1").tcp(1, 2).ihl(4).build()).reason,
        Reason::Malformed
    );
}

#[test]
fn prefix_contains_compares_bits() {
    let n: IpNet = "10.20.0.0/14".parse().unwrap();
    assert!(prefix_contains(&n, IpAddr::V4(v4("10.23.255.255"))));
    assert!(!prefix_contains(&n, IpAddr::V4(v4("10.24.0.0"))));
    let z: IpNet = "0.0.0.0/0".parse().unwrap();
    assert!(prefix_contains(&z, IpAddr::V4(v4("255.1.2.3"))));
    assert!(!prefix_contains(&z, IpAddr::V6(v6("::1"))));
    let h: IpNet = "2001:db8::1/128".parse().unwrap();
    assert!(prefix_contains(&h, IpAddr::V6(v6("2001:db8::1"))));
    assert!(!prefix_contains(&h, IpAddr::V6(v6("2001:db8::2"))));
}

// ---- robustness ------------------------------------------------------

#[test]
fn model_never_panics_on_random_bytes() {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
    let p = keep();
    for i in 0..20_000 {
        let len = rng.gen_range(0..200);
        let mut bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        // Give most of them an IP EtherType (and sometimes VLAN tags) so that the
        // IP parsers see random input too.
        if bytes.len() >= 14 && i % 4 != 0 {
            let et: u16 = [0x0800, 0x86dd, 0x8100, 0x88a8][rng.gen_range(0..4)];
            bytes[12..14].copy_from_slice(&et.to_be_bytes());
            if bytes.len() >= 15 && et == 0x0800 {
                bytes[14] = 0x40 | (bytes[14] & 0x0f);
            }
            if bytes.len() >= 15 && et == 0x86dd {
                bytes[14] = 0x60 | (bytes[14] & 0x0f);
            }
        }
        let _ = judge(&p, &bytes);
    }
}

#[test]
fn every_truncation_of_valid_frames_is_malformed_or_judged() {
    // Cutting a frame anywhere never panics, and cutting into the headers of
    // a TCP packet is always malformed.
    let frames = [
        from4("10.20.0.1")
            .vlan(ETH_P_8021Q, 3)
            .ipv4_options([1; 8])
            .tcp(1, 8889),
        from6("fd20::1")
            .ext(ExtHeader::HopByHop { len_units: 1 })
            .ext(ExtHeader::Ah { len_field: 3 })
            .ext(ExtHeader::frag(0, true))
            .tcp(1, 8889),
    ];
    for f in frames {
        let full = f.build();
        assert_eq!(judge(&keep(), &full).reason, Reason::Allowed);
        for cut in 0..full.len() {
            assert_eq!(
                judge(&keep(), &full[..cut]).reason,
                Reason::Malformed,
                "cut {cut}"
            );
        }
    }
}
