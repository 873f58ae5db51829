//! The evasion corpus: one named case per rule of `docs/parsing-contract.md`
//! (layer 2, IPv4, IPv6 extension headers, layer 4, fragments, tunnels and
//! port-less transports, sources), each with the verdict, reason and rule the
//! contract gives it. The table at the end of the contract is generated from this
//! list (`markdown_table`) and a test keeps the two identical. The cases of the
//! 16 KiB offset bound need frames too large for BPF_PROG_TEST_RUN; they are in
//! [`large_frames`], checked against the model only, with their own table.
//!
//! All cases run under one policy, [`probe`], chosen so that a misparse shows in
//! the reason: the only zone port is 8889 (tcp, udp, sctp) and unmatched ports and
//! port-less protocols are dropped, so a port read from the wrong offset gives
//! `unmatched`, a lost header chain gives `other_protocol` or `malformed`, and only
//! a correct parse gives `allowed` / `not_allowed`.
//!
//! Not testable: a frame shorter than an Ethernet header (14 bytes) is malformed by
//! the contract, but BPF_PROG_TEST_RUN refuses frames shorter than 14 bytes, so the
//! datapath can never see one and the corpus has no such case.

use std::net::{Ipv4Addr, Ipv6Addr};

use filter_common::{Reason as R, Verdict as V};

use crate::case::{Case, Expect};
use crate::packet::{
    ExtHeader, Frame, ETH_P_8021AD, ETH_P_8021Q, ETH_P_IPV4, ETH_P_IPV6, PROTO_AH, PROTO_ESP,
    PROTO_GRE, PROTO_IPIP, PROTO_IPV6, PROTO_NONE, PROTO_TCP, PROTO_UDPLITE,
};
use crate::spec::{allow, nets, Act, Defaults, Fragments, PolicySpec, Proto, RuleSpec, ZoneSpec};

/// The zone port of the probe policy.
const ZP: u16 = 8889;
const SPORT: u16 = 40000;
const HOST4: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
/// Inside the zone's allowlist.
const IN4: &str = "10.20.1.1";
const IN6: &str = "fd20::7";
/// Outside every list.
const OUT4: &str = "198.18.0.1";
const OUT6: &str = "2001:db8:99::1";
/// Blocklisted.
const BAD4: &str = "203.0.113.7";
const BAD6: &str = "2001:db8:bad::7";
/// Ethernet header length.
const ETH: usize = 14;

/// The policy every evasion case runs under: zone 1 "admin" claims 8889 on tcp,
/// udp and sctp for 10.20.0.0/16 and fd20::/48; failsafe 22/tcp from 10.0.0.0/8;
/// blocklist 203.0.113.0/24 and 2001:db8:bad::/48; unmatched and other_protocols
/// drop, non_ip pass, fragments filter-first.
pub fn probe() -> PolicySpec {
    PolicySpec {
        bans: Vec::new(),
        at: None,
        defaults: Defaults {
            unmatched: Act::Drop,
            non_ip: Act::Pass,
            other_protocols: Act::Drop,
            fragments: Fragments::FilterFirst,
        },
        blocklist: nets(&["203.0.113.0/24", "2001:db8:bad::/48"]),
        failsafe: vec![RuleSpec {
            ports: vec![(Proto::Tcp, 22, 22)],
            from: nets(&["10.0.0.0/8"]),
        }],
        zones: vec![ZoneSpec::new(
            "admin",
            vec![
                (Proto::Tcp, ZP, ZP),
                (Proto::Udp, ZP, ZP),
                (Proto::Sctp, ZP, ZP),
            ],
            vec![allow("10.20.0.0/16"), allow("fd20::/48")],
        )],
        reject_budget: None,
    }
}

fn f4(src: &str) -> Frame {
    Frame::ipv4(src.parse().expect("IPv4 source"), HOST4)
}

fn f6(src: &str) -> Frame {
    Frame::ipv6(src.parse().expect("IPv6 source"), HOST6)
}

fn allowed() -> Expect {
    Expect::zone(V::Pass, R::Allowed, 1)
}

fn not_allowed() -> Expect {
    Expect::zone(V::Drop, R::NotAllowed, 1)
}

fn malformed() -> Expect {
    Expect::drop(R::Malformed)
}

fn fragment() -> Expect {
    Expect::pass(R::Fragment)
}

fn blocklist() -> Expect {
    Expect::drop(R::Blocklist)
}

fn other() -> Expect {
    Expect::drop(R::OtherProtocol)
}

fn unmatched() -> Expect {
    Expect::drop(R::Unmatched)
}

/// DCCP's IP protocol number (no constant in `packet`: nothing else sends it).
const PROTO_DCCP: u8 = 33;
/// VXLAN's IANA UDP port; no zone of the probe policy claims it.
const VXLAN_PORT: u16 = 4789;

/// The IP packet of `frame` (its Ethernet header cut off), to wrap in a tunnel.
fn ip_packet(frame: Frame) -> Vec<u8> {
    frame.build()[ETH..].to_vec()
}

/// A GRE header (RFC 2784: no checksum, key or sequence) carrying `inner` of
/// EtherType `ethertype`.
fn gre(ethertype: u16, inner: Vec<u8>) -> Vec<u8> {
    let mut b = vec![0, 0];
    b.extend_from_slice(&ethertype.to_be_bytes());
    b.extend(inner);
    b
}

/// A VXLAN header (RFC 7348: I flag, VNI 100) carrying the Ethernet frame `inner`.
fn vxlan(inner: Frame) -> Vec<u8> {
    let mut b = vec![0x08, 0, 0, 0, 0, 0, 100, 0];
    b.extend(inner.build());
    b
}

/// A DCCP-Request (RFC 4340: 16-byte generic header with 48-bit sequence
/// numbers, then the service code) from `sport` to `dport`.
fn dccp_request(sport: u16, dport: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(20);
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b.extend_from_slice(&[5, 0, 0, 0]); // data offset 5 words, CCVal/CsCov, checksum
    b.extend_from_slice(&[0x01, 0]); // type 0 (Request), X = 1; reserved
    b.extend_from_slice(&[0, 0, 0, 0, 0, 1]); // sequence number
    b.extend_from_slice(&[0, 0, 0, 0]); // service code
    b
}

/// A UDP-Lite header (RFC 3828: checksum coverage 8, the header only) and 8 bytes
/// of data, from `sport` to `dport`.
fn udplite(sport: u16, dport: u16) -> Vec<u8> {
    let mut b = Vec::with_capacity(16);
    b.extend_from_slice(&sport.to_be_bytes());
    b.extend_from_slice(&dport.to_be_bytes());
    b.extend_from_slice(&[0, 8, 0, 0]); // coverage, checksum (never verified)
    b.extend_from_slice(b"udp-lite");
    b
}

/// IPv4 AH in transport mode (RFC 4302, 24 bytes) followed by the TCP header of
/// `tcp` (an IPv4 TCP frame).
fn ah4_then(tcp: Frame) -> Vec<u8> {
    let mut b = ExtHeader::Ah { len_field: 4 }.encode(PROTO_TCP);
    b.extend_from_slice(&tcp.build()[ETH + 20..]);
    b
}

fn c(name: &'static str, what: &'static str, frame: Frame, expect: Expect) -> Case {
    Case {
        name,
        what,
        policy: probe(),
        frame: frame.build(),
        expect,
    }
}

/// The evasion corpus, in the order of the contract.
#[rustfmt::skip]
pub fn corpus() -> Vec<Case> {
    use ExtHeader as X;
    let hbh = X::HopByHop { len_units: 0 };
    let dst = X::DestOpts { len_units: 0 };
    let rt = X::Routing { len_units: 1 };
    let mob = X::Mobility { len_units: 0 };
    let ah = X::Ah { len_field: 4 };
    let esp = vec![0, 0, 0x10, 0x01, 0, 0, 0, 1, 0xa5, 0xa5, 0xa5, 0xa5];
    // An AH announcing (200 + 2) * 4 = 808 bytes, of which 12 are present.
    let long_ah = X::Raw { next_header_value: PROTO_AH, bytes: vec![0, 200, 0, 0, 0, 0, 0x10, 0x01, 0, 0, 0, 1] };
    let arp = Frame::arp_request("192.168.100.7".parse().unwrap(), HOST4);
    vec![
        // --- layer 2 ---------------------------------------------------------
        c("vlan_one_tag", "one 802.1Q tag, TCP to the zone port from inside", f4(IN4).vlan(ETH_P_8021Q, 10).tcp(SPORT, ZP), allowed()),
        c("vlan_qinq_two_tags", "QinQ: 0x88a8 outer + 0x8100 inner tag", f4(IN4).vlan(ETH_P_8021AD, 100).vlan(ETH_P_8021Q, 200).tcp(SPORT, ZP), allowed()),
        c("vlan_two_8021q_tags", "two 0x8100 tags", f4(IN4).vlan(ETH_P_8021Q, 100).vlan(ETH_P_8021Q, 200).tcp(SPORT, ZP), allowed()),
        c("vlan_qinq_ipv6_outsider", "QinQ-tagged IPv6 from outside the allowlist", f6(OUT6).vlan(ETH_P_8021AD, 100).vlan(ETH_P_8021Q, 200).tcp(SPORT, ZP), not_allowed()),
        c("vlan_three_tags", "a third VLAN tag", f4(IN4).vlan(ETH_P_8021AD, 1).vlan(ETH_P_8021Q, 2).vlan(ETH_P_8021Q, 3).tcp(SPORT, ZP), malformed()),
        c("vlan_tag_cut_short", "a VLAN tag cut by the end of the frame (16 bytes)", f4(IN4).vlan(ETH_P_8021Q, 10).tcp(SPORT, ZP).truncate(ETH + 2), malformed()),
        c("vlan_second_tag_cut_short", "the inner tag of a QinQ pair cut by the end of the frame", f4(IN4).vlan(ETH_P_8021AD, 1).vlan(ETH_P_8021Q, 2).tcp(SPORT, ZP).truncate(ETH + 4 + 2), malformed()),
        c("vlan_tagged_arp_is_non_ip", "ARP inside a VLAN tag is not IP (non_ip = pass)", arp.vlan(ETH_P_8021Q, 10), Expect::pass(R::NonIp)),

        // --- IPv4 header -----------------------------------------------------
        c("ipv4_shorter_than_20_bytes", "19 bytes after the Ethernet header", f4(IN4).tcp(SPORT, ZP).truncate(ETH + 19), malformed()),
        c("ipv4_ihl_4", "IHL 4", f4(IN4).ihl(4).tcp(SPORT, ZP), malformed()),
        c("ipv4_ihl_0", "IHL 0", f4(IN4).ihl(0).tcp(SPORT, ZP), malformed()),
        c("ipv4_version_5", "version 5 under EtherType 0x0800", f4(IN4).version(5).tcp(SPORT, ZP), malformed()),
        c("ipv4_version_6", "version 6 under EtherType 0x0800", f4(IN4).version(6).tcp(SPORT, ZP), malformed()),
        c("ipv4_options_ihl_6_port_after_options", "IHL 6 (router alert): the port is read after the options", f4(IN4).ipv4_options([0x94, 0x04, 0, 0]).tcp(SPORT, ZP), allowed()),
        c("ipv4_options_ihl_15_port_after_options", "IHL 15 (40 bytes of NOP options): the port is read after them", f4(OUT4).ipv4_options([1; 40]).tcp(SPORT, ZP), not_allowed()),
        c("ipv4_options_ihl_8_udp", "IHL 8, UDP to the zone port", f4(IN4).ipv4_options([1; 12]).udp(SPORT, ZP), allowed()),
        c("ipv4_options_past_frame", "IHL 15 but only 40 bytes of IPv4 packet in the frame", f4(IN4).ihl(15).tcp(SPORT, ZP), malformed()),
        c("ipv4_total_length_below_20", "total length 19 < IHL × 4", f4(IN4).tcp(SPORT, ZP).total_len(19), malformed()),
        c("ipv4_total_length_inside_options", "IHL 7 with total length 24", f4(IN4).ipv4_options([1; 8]).tcp(SPORT, ZP).total_len(24), malformed()),
        c("ipv4_total_length_beyond_frame", "total length one byte more than the frame holds", f4(IN4).tcp(SPORT, ZP).total_len(41), malformed()),
        c("ipv4_truncated_by_frame", "a 40-byte packet cut to 30 bytes", f4(IN4).tcp(SPORT, ZP).truncate(ETH + 30), malformed()),
        c("ipv4_l4_header_in_padding", "total length 20: the TCP header that follows is Ethernet padding", f4(IN4).tcp(SPORT, ZP).total_len(20), malformed()),
        c("ipv4_l4_header_half_in_padding", "total length 30: half the TCP header is Ethernet padding", f4(IN4).tcp(SPORT, ZP).total_len(30), malformed()),
        c("ipv4_padding_after_complete_packet", "UDP padded to the 60-byte minimum frame", f4(IN4).udp(SPORT, ZP).ethernet_padding(18), allowed()),

        // --- layer 4 ---------------------------------------------------------
        c("ipv4_tcp_header_19_bytes", "TCP header truncated to 19 bytes (total length 39)", f4(IN4).tcp(SPORT, ZP).total_len(39).truncate(ETH + 39), malformed()),
        c("ipv4_udp_header_7_bytes", "UDP header truncated to 7 bytes", f4(IN4).udp(SPORT, ZP).total_len(27).truncate(ETH + 27), malformed()),
        c("ipv4_sctp_header_11_bytes", "SCTP common header truncated to 11 bytes", f4(IN4).sctp(SPORT, ZP).payload(vec![]).total_len(31).truncate(ETH + 31), malformed()),
        c("ipv4_sctp_bare_12_byte_header", "SCTP common header alone (12 bytes) is enough", f4(IN4).sctp(SPORT, ZP).payload(vec![]), allowed()),
        c("ipv4_ipip_no_ports", "IP-in-IP (4): the inner packet is not read", f4(IN4).proto(PROTO_IPIP, f4(IN4).tcp(SPORT, ZP).build()[ETH..].to_vec()), other()),

        // --- IPv4 fragments --------------------------------------------------
        c("ipv4_first_fragment_8_bytes_of_tcp", "TCP first fragment (MF) carrying only 8 bytes of TCP", f4(IN4).frag(0, true).tcp(SPORT, ZP).total_len(28).truncate(ETH + 28), malformed()),
        c("ipv4_first_fragment_full_udp_header", "UDP first fragment with exactly the 8-byte header", f4(IN4).frag(0, true).udp(SPORT, ZP), allowed()),
        c("ipv4_first_fragment_judged_by_ports", "TCP first fragment from outside to the zone port", f4(OUT4).frag(0, true).tcp(SPORT, ZP), not_allowed()),
        c("ipv4_tcp_fragment_offset_1", "TCP fragment at offset 1 (RFC 1858 overlap)", f4(IN4).frag(1, false).tcp(SPORT, ZP), malformed()),
        c("ipv4_tcp_fragment_offset_1_more", "TCP fragment at offset 1 with MF", f4(IN4).frag(1, true).tcp(SPORT, ZP), malformed()),
        c("ipv4_udp_fragment_offset_1", "UDP fragment at offset 1 is a plain non-first fragment", f4(OUT4).frag(1, false).udp(SPORT, ZP), fragment()),
        c("ipv4_non_first_fragment_zone_port_bytes", "non-first TCP fragment whose bytes look like the zone port", f4(OUT4).frag(185, false).tcp(SPORT, ZP), fragment()),
        c("ipv4_non_first_fragment_closed_port_bytes", "non-first fragment whose bytes look like a closed port", f4(OUT4).frag(185, true).udp(SPORT, 9999), fragment()),
        c("ipv4_non_first_fragment_from_blocklist", "non-first fragment from a blocklisted source", f4(BAD4).frag(185, false).udp(SPORT, ZP), blocklist()),

        // --- IPv6 header -----------------------------------------------------
        c("ipv6_shorter_than_40_bytes", "39 bytes after the Ethernet header", f6(IN6).tcp(SPORT, ZP).truncate(ETH + 39), malformed()),
        c("ipv6_version_4", "version 4 under EtherType 0x86DD", f6(IN6).version(4).tcp(SPORT, ZP), malformed()),
        c("ipv6_payload_length_beyond_frame", "payload length 100 on a 48-byte packet", f6(IN6).udp(SPORT, ZP).payload_len(100), malformed()),
        c("ipv6_l4_header_in_padding", "payload length 0: the TCP header that follows is padding", f6(IN6).tcp(SPORT, ZP).payload_len(0), malformed()),
        c("ipv6_padding_after_complete_packet", "UDP followed by Ethernet padding", f6(IN6).udp(SPORT, ZP).ethernet_padding(8), allowed()),
        c("ipv6_tcp_header_19_bytes", "TCP header truncated to 19 bytes", f6(IN6).tcp(SPORT, ZP).payload_len(19).truncate(ETH + 40 + 19), malformed()),
        c("ipv6_udp_header_7_bytes", "UDP header truncated to 7 bytes", f6(IN6).udp(SPORT, ZP).payload_len(7).truncate(ETH + 40 + 7), malformed()),

        // --- IPv6 extension headers ------------------------------------------
        c("ipv6_ext_hop_by_hop", "hop-by-hop options (8 bytes) before TCP", f6(IN6).ext(hbh.clone()).tcp(SPORT, ZP), allowed()),
        c("ipv6_ext_routing", "routing header (16 bytes) before TCP", f6(IN6).ext(rt.clone()).tcp(SPORT, ZP), allowed()),
        c("ipv6_ext_destination_options", "destination options (24 bytes) before TCP", f6(IN6).ext(X::DestOpts { len_units: 2 }).tcp(SPORT, ZP), allowed()),
        c("ipv6_ext_mobility", "mobility header (8 bytes) before TCP", f6(IN6).ext(mob.clone()).tcp(SPORT, ZP), allowed()),
        c("ipv6_ext_ah_len_4_is_24_bytes", "AH with length field 4 = (4 + 2) × 4 = 24 bytes before TCP", f6(IN6).ext(ah.clone()).tcp(SPORT, ZP), allowed()),
        c("ipv6_ext_fragment_first", "first fragment (offset 0, M) before TCP, judged by ports", f6(OUT6).ext(X::frag(0, true)).tcp(SPORT, ZP), not_allowed()),
        c("ipv6_ext_chain_then_udp", "hop-by-hop, routing, destination options, then UDP", f6(IN6).ext(hbh.clone()).ext(rt.clone()).ext(dst.clone()).udp(SPORT, ZP), allowed()),
        c("ipv6_hop_by_hop_not_first", "hop-by-hop after destination options", f6(IN6).ext(dst.clone()).ext(hbh.clone()).tcp(SPORT, ZP), malformed()),
        c("ipv6_ah_overruns_payload", "AH announcing 808 bytes in a 32-byte payload", f6(IN6).ext(long_ah).tcp(SPORT, ZP), malformed()),
        c("ipv6_eight_extension_headers", "8 extension headers, then TCP", f6(IN6).ext(hbh.clone()).ext(dst.clone()).ext(rt.clone()).ext(ah.clone()).ext(dst.clone()).ext(rt.clone()).ext(mob.clone()).ext(dst.clone()).tcp(SPORT, ZP), allowed()),
        c("ipv6_nine_extension_headers", "9 extension headers, then TCP", f6(IN6).ext(hbh).ext(dst.clone()).ext(rt.clone()).ext(ah.clone()).ext(dst.clone()).ext(rt).ext(mob).ext(dst.clone()).ext(dst.clone()).tcp(SPORT, ZP), malformed()),
        c("ipv6_ext_header_cut_by_frame", "destination options (40 bytes) cut by the end of the frame", f6(IN6).ext(X::DestOpts { len_units: 4 }).tcp(SPORT, ZP).truncate(ETH + 40 + 16), malformed()),
        c("ipv6_ext_header_overruns_payload_length", "destination options (40 bytes) past payload length 16, bytes present as padding", f6(IN6).ext(X::DestOpts { len_units: 4 }).tcp(SPORT, ZP).payload_len(16), malformed()),
        c("ipv6_esp_no_ports", "ESP (50): no ports", f6(IN6).proto(PROTO_ESP, esp.clone()), other()),
        c("ipv6_esp_after_destination_options", "destination options, then ESP", f6(IN6).ext(dst.clone()).proto(PROTO_ESP, esp), other()),
        c("ipv6_no_next_header", "no next header (59)", f6(IN6).ext(dst).proto(PROTO_NONE, vec![]), other()),
        c("ipv6_unknown_next_header_253", "unknown next header 253 ends the walk without ports", f6(IN6).proto(253, vec![0; 16]), other()),
        c("ipv6_icmpv6_no_ports", "ICMPv6 (58): no ports", f6(IN6).icmpv6(), other()),

        // --- IPv6 fragments --------------------------------------------------
        c("ipv6_second_fragment_header", "two fragment headers", f6(IN6).ext(X::frag(0, true)).ext(X::frag(0, false)).tcp(SPORT, ZP), malformed()),
        c("ipv6_tcp_fragment_offset_1", "TCP fragment at offset 1", f6(IN6).ext(X::frag(1, true)).tcp(SPORT, ZP), malformed()),
        c("ipv6_udp_fragment_offset_1", "UDP fragment at offset 1 is a plain non-first fragment", f6(OUT6).ext(X::frag(1, false)).udp(SPORT, ZP), fragment()),
        c("ipv6_non_first_fragment_zone_port_bytes", "non-first TCP fragment whose bytes look like the zone port", f6(OUT6).ext(X::frag(200, true)).tcp(SPORT, ZP), fragment()),
        c("ipv6_non_first_fragment_from_blocklist", "non-first fragment from a blocklisted source", f6(BAD6).ext(X::frag(200, false)).udp(SPORT, ZP), blocklist()),
        c("ipv6_atomic_fragment_judged_by_ports", "atomic fragment (offset 0, M = 0) from outside, judged by ports", f6(OUT6).ext(X::frag(0, false)).tcp(SPORT, ZP), not_allowed()),
        c("ipv6_first_fragment_8_bytes_of_tcp", "first fragment carrying only 8 bytes of TCP (RFC 7112)", f6(IN6).ext(X::frag(0, true)).tcp(SPORT, ZP).payload_len(8 + 8).truncate(ETH + 40 + 16), malformed()),
        c("ipv6_first_fragment_chain_cut", "first fragment whose header chain continues past its payload", f6(IN6).ext(X::frag(0, true)).ext(X::DestOpts { len_units: 1 }).tcp(SPORT, ZP).payload_len(8 + 8).truncate(ETH + 40 + 16), malformed()),

        // --- tunnels, IPsec and port-less transports: the outer header only ---
        c("ipv4_gre_inner_tcp_not_read", "GRE (47) around TCP to the zone port from inside: no ports, the inner packet is not read", f4(IN4).proto(PROTO_GRE, gre(ETH_P_IPV4, ip_packet(f4(IN4).tcp(SPORT, ZP)))), other()),
        c("ipv4_gre_inner_closed_port_not_read", "GRE around TCP to a closed port from outside: judged by the outer header alone", f4(OUT4).proto(PROTO_GRE, gre(ETH_P_IPV4, ip_packet(f4(OUT4).tcp(SPORT, 9999)))), other()),
        c("ipv4_6in4_inner_not_read", "IPv6-in-IPv4 (41) around TCP to the zone port from inside: no ports", f4(IN4).proto(PROTO_IPV6, ip_packet(f6(IN6).tcp(SPORT, ZP))), other()),
        c("ipv6_gre_inner_tcp_not_read", "GRE as IPv6 Next Header around TCP to the zone port: no ports", f6(IN6).proto(PROTO_GRE, gre(ETH_P_IPV6, ip_packet(f6(IN6).tcp(SPORT, ZP)))), other()),
        c("ipv6_ipip_inner_not_read", "IPv4-in-IPv6 (Next Header 4) around TCP to the zone port: no ports", f6(IN6).proto(PROTO_IPIP, ip_packet(f4(IN4).tcp(SPORT, ZP))), other()),
        c("ipv6_ipv6_in_ipv6_inner_not_read", "IPv6-in-IPv6 (Next Header 41) after destination options: no ports", f6(IN6).ext(X::DestOpts { len_units: 0 }).proto(PROTO_IPV6, ip_packet(f6(IN6).tcp(SPORT, ZP))), other()),
        c("ipv4_vxlan_judged_by_outer_udp_port", "VXLAN (UDP 4789, no zone) around TCP to the zone port from inside: unmatched", f4(IN4).udp(SPORT, VXLAN_PORT).payload(vxlan(f4(IN4).tcp(SPORT, ZP))), unmatched()),
        c("ipv4_vxlan_on_zone_port_judged_by_outer_source", "VXLAN on the zone's UDP port from inside around TCP from outside to 9999: the outer zone decides", f4(IN4).udp(SPORT, ZP).payload(vxlan(f4(OUT4).tcp(SPORT, 9999))), allowed()),
        c("ipv6_vxlan_judged_by_outer_udp_port", "VXLAN over IPv6 (UDP 4789) around IPv6 TCP to the zone port: unmatched", f6(IN6).udp(SPORT, VXLAN_PORT).payload(vxlan(f6(IN6).tcp(SPORT, ZP))), unmatched()),
        c("ipv4_ah_not_walked", "IPv4 AH (51) before TCP to the zone port from inside: IPv4 walks no AH, no ports", f4(IN4).proto(PROTO_AH, ah4_then(f4(IN4).tcp(SPORT, ZP))), other()),
        c("ipv4_ah_hides_failsafe_port", "IPv4 AH before TCP to 22 from the failsafe network: no ports, so no failsafe", f4("10.1.2.3").proto(PROTO_AH, ah4_then(f4("10.1.2.3").tcp(SPORT, 22))), other()),
        c("ipv4_udplite_to_zone_port_no_ports", "UDP-Lite (136) to the zone's UDP port from inside: no ports for zones", f4(IN4).proto(PROTO_UDPLITE, udplite(SPORT, ZP)), other()),
        c("ipv6_udplite_to_zone_port_no_ports", "UDP-Lite over IPv6 to the zone's UDP port: no ports", f6(IN6).proto(PROTO_UDPLITE, udplite(SPORT, ZP)), other()),
        c("ipv4_dccp_to_zone_port_no_ports", "DCCP (33) Request to the zone port from inside: no ports for zones", f4(IN4).proto(PROTO_DCCP, dccp_request(SPORT, ZP)), other()),
        c("ipv6_dccp_to_zone_port_no_ports", "DCCP over IPv6 to the zone port: no ports", f6(IN6).proto(PROTO_DCCP, dccp_request(SPORT, ZP)), other()),

        // --- sources ---------------------------------------------------------
        c("ipv6_mapped_source_blocklisted", "::ffff:203.0.113.7 is blocklisted by the IPv4 list", f6("::ffff:203.0.113.7").tcp(SPORT, ZP), blocklist()),
        c("ipv6_mapped_source_allowed_by_v4_zone", "::ffff:10.20.1.1 is allowed by the IPv4 allowlist", f6("::ffff:10.20.1.1").tcp(SPORT, ZP), allowed()),
        c("ipv6_mapped_source_outside_v4_zone", "::ffff:198.18.0.1 is outside the IPv4 allowlist", f6("::ffff:198.18.0.1").tcp(SPORT, ZP), not_allowed()),
        c("ipv6_mapped_source_failsafe", "::ffff:10.1.2.3 to 22/tcp matches the IPv4 failsafe rule", f6("::ffff:10.1.2.3").tcp(SPORT, 22), Expect::failsafe()),
    ]
}

/// An IPv6 frame whose extension-header chain (8 destination options headers,
/// the last of `(last_units + 1) * 8` bytes) ends `vlan_tags * 4 + 54 + 14,336 +
/// (last_units + 1) * 8` bytes into the frame.
fn long_chain(src: &str, vlan_tags: usize, last_units: u8) -> Frame {
    let mut f = f6(src);
    for vid in 0..vlan_tags {
        f = f.vlan(ETH_P_8021Q, 10 + vid as u16);
    }
    for _ in 0..7 {
        f = f.ext(ExtHeader::DestOpts { len_units: 255 });
    }
    f.ext(ExtHeader::DestOpts {
        len_units: last_units,
    })
}

/// Cases of the 16 KiB offset bound: frames above 16 KiB, which
/// BPF_PROG_TEST_RUN cannot hand the program in one buffer on 4 KiB pages (it
/// cuts the linear part at about 3,500 bytes), so the verdict suite cannot run
/// them; they are checked against the reference model only (`cargo test`) and
/// listed in their own table of the contract. IPv6 headers are multiples of 8
/// bytes, so the layer-4 offsets around the bound are 16,382 and 16,390 (16,386
/// with one VLAN tag).
#[rustfmt::skip]
pub fn large_frames() -> Vec<Case> {
    vec![
        c("ipv6_tcp_at_offset_16382_is_read", "TCP starting 16,382 bytes into the frame (8 destination options headers) is read", long_chain(IN6, 0, 248).tcp(SPORT, ZP), allowed()),
        c("ipv6_tcp_at_offset_16390_is_malformed", "TCP starting 16,390 bytes into the frame, past the 16 KiB bound", long_chain(IN6, 0, 249).tcp(SPORT, ZP), malformed()),
        c("ipv6_udp_at_offset_16390_is_malformed", "UDP starting past the 16 KiB bound", long_chain(IN6, 0, 249).udp(SPORT, ZP), malformed()),
        c("vlan_ipv6_tcp_at_offset_16386_is_malformed", "one VLAN tag: TCP starting 16,386 bytes into the frame (the bound counts from the frame's first byte)", long_chain(IN6, 1, 248).tcp(SPORT, ZP), malformed()),
        c("ipv6_no_next_header_at_offset_16390", "no next header (59) past the bound: nothing to read, no ports", long_chain(IN6, 0, 249).proto(PROTO_NONE, vec![]), other()),
    ]
}

/// Escape a table cell.
fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The evasion table of `docs/parsing-contract.md`: a header and one row per case,
/// each line ending in a newline.
pub fn markdown_table(cases: &[Case]) -> String {
    let mut out = String::from("| case | what | verdict | reason |\n|---|---|---|---|\n");
    for c in cases {
        out.push_str(&format!(
            "| `{}` | {} | {} | `{}` |\n",
            c.name,
            cell(c.what),
            c.expect.verdict.as_str(),
            c.expect.reason.as_str()
        ));
    }
    out
}

/// The marker line in the contract after which the table stands.
pub const TABLE_MARKER: &str = "<!-- evasion-table -->";

/// The marker line in the contract after which the table of [`large_frames`]
/// stands (up to the next blank line).
pub const LARGE_TABLE_MARKER: &str = "<!-- evasion-table-large-frames -->";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{bad_names, duplicate_names, invalid_policies, model_disagreements};
    use crate::harness::MAX_FRAME;

    #[test]
    fn evasion_corpus_agrees_with_reference_model() {
        let bad = model_disagreements(&corpus());
        assert!(
            bad.is_empty(),
            "{} evasion case(s) disagree with the reference model:\n{}",
            bad.len(),
            bad.join("\n")
        );
    }

    #[test]
    fn large_frame_cases_agree_with_reference_model() {
        let bad = model_disagreements(&large_frames());
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn evasion_names_are_unique_snake_case() {
        let mut c = corpus();
        c.extend(large_frames());
        assert_eq!(duplicate_names(&c), Vec::<&str>::new());
        assert_eq!(bad_names(&c), Vec::<&str>::new());
    }

    #[test]
    fn evasion_corpus_meets_the_minimum_count() {
        let n = corpus().len();
        assert!(n >= 40, "only {n} evasion cases");
    }

    #[test]
    fn evasion_policy_is_valid() {
        assert_eq!(invalid_policies(&corpus()), Vec::<String>::new());
        assert_eq!(invalid_policies(&large_frames()), Vec::<String>::new());
    }

    #[test]
    fn evasion_frames_are_testable() {
        // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header, and the
        // harness frames longer than it can hand the program in one buffer.
        for c in corpus() {
            assert!(
                (ETH..=MAX_FRAME).contains(&c.frame.len()),
                "{}: {} bytes",
                c.name,
                c.frame.len()
            );
        }
    }

    #[test]
    fn large_frame_cases_are_longer_than_16_kib() {
        // Else they belong in `corpus()`, where the verdict suite runs them.
        for c in large_frames() {
            assert!(
                c.frame.len() > 16 * 1024,
                "{}: {} bytes",
                c.name,
                c.frame.len()
            );
        }
    }

    fn contract_path() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/parsing-contract.md")
    }

    #[test]
    fn parsing_contract_doc_lists_every_evasion_case() {
        let doc = std::fs::read_to_string(contract_path()).expect("read parsing-contract.md");
        let marker = format!("{TABLE_MARKER}\n");
        let (_, after) = doc
            .split_once(&marker)
            .expect("parsing-contract.md has no evasion-table marker line");
        let table = markdown_table(&corpus());
        assert!(
            after == table,
            "the evasion table in docs/parsing-contract.md is stale; regenerate it with\n  \
             cargo test -p portcullis-tests print_evasion_table -- --ignored --nocapture\n\
             and paste the output after the marker line"
        );
    }

    #[test]
    fn parsing_contract_doc_lists_every_large_frame_case() {
        let doc = std::fs::read_to_string(contract_path()).expect("read parsing-contract.md");
        let marker = format!("{LARGE_TABLE_MARKER}\n");
        let (_, after) = doc
            .split_once(&marker)
            .expect("parsing-contract.md has no evasion-table-large-frames marker line");
        let listed = after.split_once("\n\n").map_or(after, |(t, _)| t);
        let table = markdown_table(&large_frames());
        assert!(
            format!("{listed}\n") == table,
            "the large-frame table in docs/parsing-contract.md is stale; regenerate it with\n  \
             cargo test -p portcullis-tests print_evasion_table -- --ignored --nocapture\n\
             and paste the second table after its marker line"
        );
    }

    /// Prints the tables for the contract (`-- --ignored --nocapture`).
    #[test]
    #[ignore]
    fn print_evasion_table() {
        print!("{}", markdown_table(&corpus()));
        println!();
        print!("{}", markdown_table(&large_frames()));
    }
}
