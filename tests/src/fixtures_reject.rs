//! Rejecting zones: frames and the exact reply each must get, by hand from
//! docs/policy.md (`action = "reject"`), RFC 9293 §3.10.7.1, RFC 792/1812
//! and RFC 4443. The expected replies are built with the packet builder
//! (`packet.rs`: its own checksum code) or written out byte by byte, never
//! by the reference model, which must agree with them; every reply also
//! passes this module's own checksum verifier. Run on the real object by
//! the verdict suite (action `XDP_TX` and the bytes it leaves), and
//! against the model by `cargo test`.

use std::net::{Ipv4Addr, Ipv6Addr};

use filter_common::{Reason as R, Verdict as V, RULE_FAILSAFE};

use crate::case::{Case, Expect};
use crate::fixtures::{ip4, ip6};
use crate::packet::{
    ones_complement_sum, pseudo_header_v4, pseudo_header_v6, ExtHeader, Frame, DST_MAC,
    ETH_P_8021AD, ETH_P_8021Q, SRC_MAC,
};
use crate::spec::{
    allow, nets, PolicySpec, Proto, RejectWith as W, RuleSpec, ZoneSpec, UNLIMITED_REPLIES,
};

/// The protected host and the client it answers.
const HOST4: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const CLIENT4: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
const CLIENT6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 1, 0, 0, 0, 0, 2);
const SPORT: u16 = 40000;
const SEQ: u32 = 0x1000_0000;
const ACK_NO: u32 = 0x2000_0000;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// Zone ids of [`policy`].
const Z_RST: u32 = 1;
const Z_DNS: u32 = 2;
const Z_ADMIN: u32 = 3;
const Z_HOST: u32 = 4;
const Z_RESET: u32 = 5;
const Z_PORT: u32 = 6;
const Z_AUDIT: u32 = 7;
const Z_DROP: u32 = 8;

fn tcp(p: u16) -> (Proto, u16, u16) {
    (Proto::Tcp, p, p)
}

fn udp(p: u16) -> (Proto, u16, u16) {
    (Proto::Udp, p, p)
}

/// One zone per reply kind, an auditing rejecting zone, a dropping one;
/// a blocklist and a failsafe rule to show the verdict order still holds.
pub fn policy() -> PolicySpec {
    let zone = |name: &str, ports, with| {
        ZoneSpec::new(name, ports, vec![allow("10.20.0.0/16"), allow("fd20::/48")]).reject(with)
    };
    PolicySpec {
        blocklist: nets(&["203.0.113.0/24", "2001:db8:bad::/48"]),
        failsafe: vec![RuleSpec {
            ports: vec![tcp(22)],
            from: nets(&["10.99.0.0/16"]),
        }],
        zones: vec![
            zone("ssh", vec![tcp(22), tcp(2222)], W::ByProtocol),
            zone(
                "dns",
                vec![udp(53), (Proto::Sctp, 3868, 3868)],
                W::ByProtocol,
            ),
            zone("admin", vec![tcp(8443), udp(8443)], W::AdminProhibited),
            zone("host", vec![tcp(9000), udp(9000)], W::HostUnreachable),
            zone("reset", vec![tcp(7000)], W::TcpReset),
            zone("port", vec![tcp(7001)], W::PortUnreachable),
            zone("audit", vec![tcp(8000)], W::ByProtocol).audit(),
            ZoneSpec::new("drop", vec![tcp(8001)], vec![]),
        ],
        reject_budget: Some(UNLIMITED_REPLIES),
        ..PolicySpec::default()
    }
}

/// A frame from the client to the host.
fn f4() -> Frame {
    Frame::ipv4(CLIENT4, HOST4)
}
fn f6() -> Frame {
    Frame::ipv6(CLIENT6, HOST6)
}

/// The reply's frame: host to client, MAC addresses swapped, IPv4 ID 0.
fn r4() -> Frame {
    Frame::ipv4(HOST4, CLIENT4).macs(SRC_MAC, DST_MAC).ip_id(0)
}
fn r6() -> Frame {
    Frame::ipv6(HOST6, CLIENT6).macs(SRC_MAC, DST_MAC)
}

/// The reset to a segment to `port`: RFC 9293's <SEQ=seq><ACK=ack><CTL=ctl>,
/// window 0, no options; DF set.
fn rst(r: Frame, port: u16, seq: u32, ack: u32, ctl: u8) -> Frame {
    r.tcp_flags(port, SPORT, ctl)
        .seq_ack(seq, ack)
        .window(0)
        .payload(Vec::new())
}

/// ICMP destination unreachable (type 3) with `code`, quoting `quote`:
/// TOS 0xc0, no DF.
fn icmp4(code: u8, quote: &[u8]) -> Frame {
    r4().tos(0xc0)
        .frag_field(0)
        .icmp_error(3, code, quote.to_vec())
}

/// ICMPv6 destination unreachable (type 1) with `code`, quoting `quote`.
fn icmp6(code: u8, quote: &[u8]) -> Frame {
    r6().icmp_error(1, code, quote.to_vec())
}

/// A named case with the reply it must get (`None`: no reply, the frame is
/// dropped or passed).
pub struct ReplyCase {
    pub case: Case,
    pub reply: Option<Vec<u8>>,
}

fn answered(
    name: &'static str,
    what: &'static str,
    zone: u32,
    frame: Frame,
    reply: Frame,
) -> ReplyCase {
    answered_bytes(name, what, zone, frame.build(), reply.build())
}

fn answered_bytes(
    name: &'static str,
    what: &'static str,
    zone: u32,
    frame: Vec<u8>,
    reply: Vec<u8>,
) -> ReplyCase {
    ReplyCase {
        case: Case {
            name,
            what,
            policy: policy(),
            frame,
            expect: Expect::zone(V::Drop, R::Rejected, zone),
        },
        reply: Some(reply),
    }
}

fn unanswered(name: &'static str, what: &'static str, frame: Frame, expect: Expect) -> ReplyCase {
    ReplyCase {
        case: Case {
            name,
            what,
            policy: policy(),
            frame: frame.build(),
            expect,
        },
        reply: None,
    }
}

fn silent(zone: u32) -> Expect {
    Expect::zone(V::Drop, R::NotAllowed, zone)
}

/// The IP packet of a built frame, from `l3` on (the quote of an ICMP error).
fn ip_packet(frame: &Frame, l3: usize) -> Vec<u8> {
    frame.build()[l3..].to_vec()
}

pub fn cases() -> Vec<ReplyCase> {
    let mut v = Vec::new();

    // ---- TCP resets (RFC 9293 §3.10.7.1) ------------------------------
    // Written out: a SYN from 198.18.0.2:40000 to 192.168.100.1:22 with
    // sequence number 0x10000000 gets <SEQ=0><ACK=0x10000001><CTL=RST,ACK>.
    #[rustfmt::skip]
    let syn_rst: Vec<u8> = vec![
        0x02, 0x00, 0x5e, 0x00, 0x00, 0x01, // to the client's MAC
        0x02, 0x00, 0x5e, 0x00, 0x00, 0x02, // from the host's
        0x08, 0x00,
        0x45, 0x00, 0x00, 0x28,             // IPv4, 40 bytes
        0x00, 0x00, 0x40, 0x00,             // ID 0, DF
        0x40, 0x06, 0x50, 0x12,             // TTL 64, TCP, header checksum
        192, 168, 100, 1,                   // from the host
        198, 18, 0, 2,                      // to the client
        0x00, 0x16, 0x9c, 0x40,             // 22 → 40000
        0x00, 0x00, 0x00, 0x00,             // SEQ 0
        0x10, 0x00, 0x00, 0x01,             // ACK = SEG.SEQ + 1 (the SYN)
        0x50, 0x14,                         // 20 bytes, RST ACK
        0x00, 0x00,                         // window 0
        0x18, 0xbb,                         // checksum
        0x00, 0x00,                         // urgent pointer
    ];
    v.push(answered_bytes(
        "syn_gets_rst_ack_with_ack_seq_plus_one",
        "SYN (no ACK): <SEQ=0><ACK=SEG.SEQ+1><CTL=RST,ACK>, byte by byte",
        Z_RST,
        f4().tcp(SPORT, 22).build(),
        syn_rst,
    ));
    v.push(answered(
        "syn_with_data_counts_data_and_syn",
        "SYN carrying 10 bytes: ACK = SEG.SEQ + 10 + 1",
        Z_RST,
        f4().tcp(SPORT, 2222).payload(vec![7; 10]),
        rst(r4(), 2222, 0, SEQ + 11, RST | ACK),
    ));
    v.push(answered(
        "ack_segment_gets_rst_at_its_ack",
        "a bare ACK: <SEQ=SEG.ACK><CTL=RST>, no ACK bit",
        Z_RST,
        f4().tcp_flags(SPORT, 22, ACK).seq_ack(SEQ, ACK_NO),
        rst(r4(), 22, ACK_NO, 0, RST),
    ));
    v.push(answered(
        "data_segment_with_ack_gets_rst_at_its_ack",
        "PSH ACK with 100 bytes: <SEQ=SEG.ACK><CTL=RST>",
        Z_RST,
        f4().tcp_flags(SPORT, 22, PSH | ACK)
            .seq_ack(SEQ, ACK_NO)
            .payload(vec![0x61; 100]),
        rst(r4(), 22, ACK_NO, 0, RST),
    ));
    v.push(answered(
        "data_segment_without_ack_counts_its_data",
        "PSH without ACK, 100 bytes: ACK = SEG.SEQ + 100",
        Z_RST,
        f4().tcp_flags(SPORT, 22, PSH).payload(vec![0x61; 100]),
        rst(r4(), 22, 0, SEQ + 100, RST | ACK),
    ));
    v.push(answered(
        "fin_ack_gets_rst_at_its_ack",
        "FIN ACK: <SEQ=SEG.ACK><CTL=RST>",
        Z_RST,
        f4().tcp_flags(SPORT, 22, FIN | ACK).seq_ack(SEQ, ACK_NO),
        rst(r4(), 22, ACK_NO, 0, RST),
    ));
    v.push(answered(
        "fin_without_ack_counts_one",
        "FIN without ACK and no data: ACK = SEG.SEQ + 1",
        Z_RST,
        f4().tcp_flags(SPORT, 22, FIN),
        rst(r4(), 22, 0, SEQ + 1, RST | ACK),
    ));
    v.push(answered(
        "syn_ack_gets_rst_at_its_ack",
        "a stray SYN ACK: ACK is on, so <SEQ=SEG.ACK><CTL=RST>",
        Z_RST,
        f4().tcp_flags(SPORT, 22, SYN | ACK).seq_ack(SEQ, ACK_NO),
        rst(r4(), 22, ACK_NO, 0, RST),
    ));
    v.push(answered(
        "sequence_numbers_wrap",
        "SYN at 0xffffffff: ACK wraps to 0",
        Z_RST,
        f4().tcp(SPORT, 22).seq_ack(0xffff_ffff, 0),
        rst(r4(), 22, 0, 0, RST | ACK),
    ));
    v.push(answered(
        "ipv6_syn_gets_rst_ack",
        "IPv6 SYN: 40-byte IPv6 header and the reset",
        Z_RST,
        f6().tcp(SPORT, 22),
        rst(r6(), 22, 0, SEQ + 1, RST | ACK),
    ));
    v.push(answered(
        "ipv4_options_are_not_sent_back",
        "SYN with 8 bytes of IPv4 options: the reset has a 20-byte header",
        Z_RST,
        f4().ipv4_options([0x94, 0x04, 0, 0, 1, 1, 1, 1])
            .tcp(SPORT, 22),
        rst(r4(), 22, 0, SEQ + 1, RST | ACK),
    ));
    v.push(answered(
        "ipv6_extension_headers_are_not_sent_back",
        "SYN behind hop-by-hop and destination options: the reset has none",
        Z_RST,
        f6().ext(ExtHeader::HopByHop { len_units: 0 })
            .ext(ExtHeader::DestOpts { len_units: 1 })
            .tcp(SPORT, 22)
            .seq_ack(SEQ, 0),
        rst(r6(), 22, 0, SEQ + 1, RST | ACK),
    ));
    v.push(answered(
        "vlan_tag_is_kept_on_a_reset",
        "802.1Q-tagged SYN: the reset carries the same tag",
        Z_RST,
        f4().vlan(ETH_P_8021Q, 100).tcp(SPORT, 22),
        rst(r4().vlan(ETH_P_8021Q, 100), 22, 0, SEQ + 1, RST | ACK),
    ));
    v.push(answered(
        "qinq_tags_are_kept_on_a_reset",
        "QinQ-tagged IPv6 SYN: both tags, outer first",
        Z_RST,
        f6().vlan(ETH_P_8021AD, 20)
            .vlan(ETH_P_8021Q, 300)
            .tcp(SPORT, 22),
        rst(
            r6().vlan(ETH_P_8021AD, 20).vlan(ETH_P_8021Q, 300),
            22,
            0,
            SEQ + 1,
            RST | ACK,
        ),
    ));
    v.push(answered(
        "reset_ignores_ethernet_padding",
        "a 54-byte ACK padded to 60: SEG.LEN is 0, not 6",
        Z_RST,
        f4().tcp_flags(SPORT, 22, 0).ethernet_padding(6),
        rst(r4(), 22, 0, SEQ, RST | ACK),
    ));

    // ---- ICMP port unreachable: UDP and SCTP by default ----------------
    let q = f4().udp(SPORT, 53).payload(b"query".to_vec());
    v.push(answered(
        "udp_gets_icmp_port_unreachable_quoting_the_packet",
        "UDP: ICMP 3/3 quoting the whole IP packet (it fits in 576 bytes)",
        Z_DNS,
        q.clone(),
        icmp4(3, &ip_packet(&q, 14)),
    ));
    let q = f6().udp(SPORT, 53).payload(b"query".to_vec());
    v.push(answered(
        "ipv6_udp_gets_icmpv6_port_unreachable",
        "UDP over IPv6: ICMPv6 1/4 quoting the whole packet",
        Z_DNS,
        q.clone(),
        icmp6(4, &ip_packet(&q, 14)),
    ));
    let q = f4().sctp(SPORT, 3868);
    v.push(answered(
        "sctp_gets_icmp_port_unreachable",
        "SCTP INIT: ICMP 3/3",
        Z_DNS,
        q.clone(),
        icmp4(3, &ip_packet(&q, 14)),
    ));
    let q = f6().sctp(SPORT, 3868);
    v.push(answered(
        "ipv6_sctp_gets_icmpv6_port_unreachable",
        "SCTP INIT over IPv6: ICMPv6 1/4",
        Z_DNS,
        q.clone(),
        icmp6(4, &ip_packet(&q, 14)),
    ));
    let q = f4().ipv4_options([0x94, 0x04, 0, 0]).udp(SPORT, 53);
    v.push(answered(
        "icmp_quotes_ipv4_options",
        "UDP with a router-alert option: the quote holds the option",
        Z_DNS,
        q.clone(),
        icmp4(3, &ip_packet(&q, 14)),
    ));
    let q = f6()
        .ext(ExtHeader::HopByHop { len_units: 0 })
        .ext(ExtHeader::Routing { len_units: 1 })
        .udp(SPORT, 53);
    v.push(answered(
        "icmpv6_quotes_extension_headers",
        "UDP behind hop-by-hop and routing headers: quoted with them",
        Z_DNS,
        q.clone(),
        icmp6(4, &ip_packet(&q, 14)),
    ));
    let q = f4().udp(SPORT, 53).payload(vec![1; 4]);
    v.push(answered(
        "icmp_quote_leaves_out_ethernet_padding",
        "a 46-byte frame padded to 60: the quote ends with the IP packet",
        Z_DNS,
        q.clone().ethernet_padding(14),
        icmp4(3, &ip_packet(&q, 14)),
    ));
    let q = f4().vlan(ETH_P_8021Q, 7).udp(SPORT, 53);
    v.push(answered(
        "vlan_tag_is_kept_on_an_icmp_error",
        "802.1Q-tagged UDP: the ICMP error carries the tag",
        Z_DNS,
        q.clone(),
        icmp4(3, &ip_packet(&q, 18)).vlan(ETH_P_8021Q, 7),
    ));
    let q = f4()
        .vlan(ETH_P_8021AD, 20)
        .vlan(ETH_P_8021Q, 300)
        .udp(SPORT, 53);
    v.push(answered(
        "qinq_tags_are_kept_on_an_icmp_error",
        "QinQ-tagged UDP: both tags on the ICMP error",
        Z_DNS,
        q.clone(),
        icmp4(3, &ip_packet(&q, 22))
            .vlan(ETH_P_8021AD, 20)
            .vlan(ETH_P_8021Q, 300),
    ));
    let q = f4().udp(SPORT, 53).payload(vec![0x5a; 1000]);
    v.push(answered(
        "icmp_quote_is_cut_at_576_bytes",
        "UDP of 1028 bytes: the quote is its first 548 bytes (RFC 1812)",
        Z_DNS,
        q.clone(),
        icmp4(3, &ip_packet(&q, 14)[..548]),
    ));
    let q = f6().udp(SPORT, 53).payload(vec![0x5a; 1400]);
    v.push(answered(
        "icmpv6_quote_is_cut_at_1280_bytes",
        "UDP of 1448 bytes over IPv6: the quote is its first 1232 bytes (RFC 4443)",
        Z_DNS,
        q.clone(),
        icmp6(4, &ip_packet(&q, 14)[..1232]),
    ));
    let q = f6().udp(SPORT, 53).payload(vec![0x3c; 1184]);
    v.push(answered(
        "icmpv6_quote_of_exactly_1232_bytes_is_whole",
        "UDP of 1232 bytes over IPv6: quoted whole, the reply is 1280 bytes",
        Z_DNS,
        q.clone(),
        icmp6(4, &ip_packet(&q, 14)),
    ));
    let q = f4().udp(SPORT, 53).payload(vec![0x11; 3]);
    v.push(answered(
        "icmp_quote_of_odd_length_is_summed_right",
        "UDP of 31 bytes: an odd quote, its last byte summed as a high byte",
        Z_DNS,
        q.clone(),
        icmp4(3, &ip_packet(&q, 14)),
    ));

    // ---- reject_with -------------------------------------------------
    let q = f4().tcp(SPORT, 8443);
    v.push(answered(
        "admin_prohibited_answers_tcp_with_icmp",
        "reject_with = icmp-admin-prohibited on a TCP SYN: ICMP 3/13",
        Z_ADMIN,
        q.clone(),
        icmp4(13, &ip_packet(&q, 14)),
    ));
    let q = f6().udp(SPORT, 8443);
    v.push(answered(
        "ipv6_admin_prohibited_is_code_1",
        "icmp-admin-prohibited over IPv6: ICMPv6 1/1",
        Z_ADMIN,
        q.clone(),
        icmp6(1, &ip_packet(&q, 14)),
    ));
    let q = f4().udp(SPORT, 9000);
    v.push(answered(
        "host_unreachable_is_code_1",
        "reject_with = icmp-host-unreachable: ICMP 3/1",
        Z_HOST,
        q.clone(),
        icmp4(1, &ip_packet(&q, 14)),
    ));
    let q = f6().tcp(SPORT, 9000);
    v.push(answered(
        "ipv6_host_unreachable_is_address_unreachable",
        "icmp-host-unreachable over IPv6: ICMPv6 1/3 (address unreachable)",
        Z_HOST,
        q.clone(),
        icmp6(3, &ip_packet(&q, 14)),
    ));
    v.push(answered(
        "tcp_reset_zone_resets",
        "reject_with = tcp-reset: the reset",
        Z_RESET,
        f4().tcp(SPORT, 7000),
        rst(r4(), 7000, 0, SEQ + 1, RST | ACK),
    ));
    let q = f4().tcp(SPORT, 7001);
    v.push(answered(
        "port_unreachable_answers_tcp_with_icmp",
        "reject_with = icmp-port-unreachable on TCP: ICMP 3/3, no reset",
        Z_PORT,
        q.clone(),
        icmp4(3, &ip_packet(&q, 14)),
    ));
    let q = f4().tcp(SPORT, 7001).tcp_doff(3);
    v.push(answered(
        "icmp_answers_a_segment_a_reset_could_not",
        "data offset 3: no SEG.LEN, but an ICMP reply needs none",
        Z_PORT,
        q.clone(),
        icmp4(3, &ip_packet(&q, 14)),
    ));

    // ---- never answered: dropped as a dropping zone would ---------------
    let bcast = [0xff; 6];
    let mcast = [0x01, 0x00, 0x5e, 0x00, 0x00, 0xfb];
    let cases: Vec<(&'static str, &'static str, Frame, u32)> = vec![
        (
            "broadcast_mac_is_not_answered",
            "to ff:ff:ff:ff:ff:ff",
            f4().macs(bcast, SRC_MAC).udp(SPORT, 53),
            Z_DNS,
        ),
        (
            "multicast_mac_is_not_answered",
            "to 01:00:5e:00:00:fb",
            f4().macs(mcast, SRC_MAC).tcp(SPORT, 22),
            Z_RST,
        ),
        (
            "group_source_mac_is_not_answered",
            "from a MAC address with the group bit",
            f4().macs(DST_MAC, [0x03, 0, 0, 0, 0, 1]).tcp(SPORT, 22),
            Z_RST,
        ),
        (
            "ipv4_broadcast_destination_is_not_answered",
            "to 255.255.255.255",
            Frame::ipv4(CLIENT4, Ipv4Addr::BROADCAST).udp(SPORT, 53),
            Z_DNS,
        ),
        (
            "ipv4_multicast_destination_is_not_answered",
            "to 224.0.0.251",
            Frame::ipv4(CLIENT4, ip4("224.0.0.251")).udp(SPORT, 53),
            Z_DNS,
        ),
        (
            "ipv6_multicast_destination_is_not_answered",
            "to ff02::fb",
            Frame::ipv6(CLIENT6, ip6("ff02::fb")).udp(SPORT, 53),
            Z_DNS,
        ),
        (
            "ipv4_multicast_source_is_not_answered",
            "from 224.1.2.3",
            Frame::ipv4(ip4("224.1.2.3"), HOST4).tcp(SPORT, 22),
            Z_RST,
        ),
        (
            "ipv4_loopback_source_is_not_answered",
            "from 127.0.0.1",
            Frame::ipv4(ip4("127.0.0.1"), HOST4).udp(SPORT, 53),
            Z_DNS,
        ),
        (
            "ipv4_unspecified_source_is_not_answered",
            "from 0.0.0.0",
            Frame::ipv4(ip4("0.0.0.0"), HOST4).udp(SPORT, 53),
            Z_DNS,
        ),
        (
            "ipv6_unspecified_source_is_not_answered",
            "from ::",
            Frame::ipv6(ip6("::"), HOST6).tcp(SPORT, 22),
            Z_RST,
        ),
        (
            "ipv6_multicast_source_is_not_answered",
            "from ff0e::1",
            Frame::ipv6(ip6("ff0e::1"), HOST6).udp(SPORT, 53),
            Z_DNS,
        ),
        (
            "ipv4_mapped_source_is_not_answered",
            "IPv6 from ::ffff:198.18.0.2",
            Frame::ipv6(ip6("::ffff:198.18.0.2"), HOST6).tcp(SPORT, 22),
            Z_RST,
        ),
        (
            "rst_is_not_answered",
            "an RST (RFC 9293: never answer a reset)",
            f4().tcp_flags(SPORT, 22, RST),
            Z_RST,
        ),
        (
            "rst_ack_is_not_answered",
            "an RST ACK",
            f4().tcp_flags(SPORT, 22, RST | ACK).seq_ack(SEQ, ACK_NO),
            Z_RST,
        ),
        (
            "rst_is_not_answered_with_icmp_either",
            "an RST to a zone answering with ICMP",
            f4().tcp_flags(SPORT, 8443, RST),
            Z_ADMIN,
        ),
        (
            "ipv4_first_fragment_is_not_answered",
            "a first fragment (MF): its datagram's length is unknown",
            f4().frag(0, true).udp(SPORT, 53),
            Z_DNS,
        ),
        (
            "ipv6_first_fragment_is_not_answered",
            "an IPv6 first fragment",
            f6().ext(ExtHeader::frag(0, true)).tcp(SPORT, 22),
            Z_RST,
        ),
        (
            "reset_without_a_data_offset_is_not_sent",
            "data offset 4 (< 5 words): SEG.LEN is unknown",
            f4().tcp(SPORT, 22).tcp_doff(4),
            Z_RST,
        ),
        (
            "reset_with_data_offset_past_the_segment_is_not_sent",
            "data offset 15 on a 20-byte segment",
            f4().tcp(SPORT, 22).tcp_doff(15),
            Z_RST,
        ),
        (
            "dropping_zone_sends_nothing",
            "a zone without action reject",
            f4().tcp(SPORT, 8001),
            Z_DROP,
        ),
    ];
    for (name, what, frame, zone) in cases {
        v.push(unanswered(name, what, frame, silent(zone)));
    }

    // ---- the verdict order comes first -------------------------------
    v.push(unanswered(
        "allowed_source_passes_a_rejecting_zone",
        "from inside allow: passed",
        Frame::ipv4(ip4("10.20.1.1"), HOST4).tcp(SPORT, 22),
        Expect::zone(V::Pass, R::Allowed, Z_RST),
    ));
    v.push(unanswered(
        "auditing_rejecting_zone_counts_and_passes",
        "audit = true with action reject: audit, passed, no reply",
        f4().tcp(SPORT, 8000),
        Expect::zone(V::Pass, R::Audit, Z_AUDIT),
    ));
    v.push(unanswered(
        "blocklisted_source_is_dropped_not_answered",
        "from the blocklist to a rejecting zone: blocklist drop",
        Frame::ipv4(ip4("203.0.113.9"), HOST4).tcp(SPORT, 22),
        Expect::drop(R::Blocklist),
    ));
    v.push(unanswered(
        "blocklisted_ipv6_source_is_dropped_not_answered",
        "from the IPv6 blocklist",
        Frame::ipv6(ip6("2001:db8:bad::9"), HOST6).udp(SPORT, 53),
        Expect::drop(R::Blocklist),
    ));
    v.push(unanswered(
        "failsafe_source_passes_a_rejecting_zone",
        "22/tcp from the failsafe network",
        Frame::ipv4(ip4("10.99.0.7"), HOST4).tcp(SPORT, 22),
        Expect {
            verdict: V::Pass,
            reason: R::Failsafe,
            rule: RULE_FAILSAFE,
        },
    ));
    v.push(unanswered(
        "icmp_is_never_answered",
        "an ICMP echo: no ports, never a zone's",
        f4().icmp(),
        Expect::pass(R::OtherProtocol),
    ));
    v.push(unanswered(
        "non_first_fragment_is_never_answered",
        "a later fragment: no ports, never a zone's",
        f4().frag(10, false).udp(SPORT, 53),
        Expect::pass(R::Fragment),
    ));
    v
}

/// The reply budget (`reject_rate` 10/s, `reject_burst` 3): on one CPU, a
/// bucket refilled after a pause answers three SYNs, then
/// `reject_suppressed` drops the rest until it refills. (The bucket is per CPU, so the thread is pinned; it
/// outlives policies, so it is emptied and left to fill first.)
pub fn budget(h: &mut crate::harness::Harness) -> Result<(), String> {
    const TX: u32 = 3;
    const DROP: u32 = 1;
    let e = |e: &dyn std::fmt::Display| e.to_string();
    let mut p = policy();
    p.reject_budget = Some((10, 3));
    h.apply(&p).map_err(|x| e(&x))?;
    let _pinned = PinnedToOneCpu::new()?;
    let frame = f4().tcp(SPORT, 22).build();
    let f = h.filter();
    // Empty it: the saved credit (cut to the cap: 3) and one refill (at
    // most 3 more), then suppression.
    let mut spent = false;
    for _ in 0..10 {
        if f.test_run(&frame).map_err(|x| e(&x))? == DROP {
            spent = true;
            break;
        }
    }
    if !spent {
        return Err("10 SYNs within a burst of 3 were never suppressed".into());
    }
    // 350 ms at 10/s refill it to its cap of 3 (300 ms of credit); six SYNs
    // then take well under the 100 ms one more token needs.
    std::thread::sleep(std::time::Duration::from_millis(350));
    let count = |r: R| f.counter(Z_RST, r, V::Drop).map(|c| c.packets);
    let before = (
        count(R::Rejected).map_err(|x| e(&x))?,
        count(R::RejectSuppressed).map_err(|x| e(&x))?,
    );
    let mut actions = Vec::new();
    for _ in 0..6 {
        actions.push(f.test_run(&frame).map_err(|x| e(&x))?);
    }
    let after = (
        count(R::Rejected).map_err(|x| e(&x))?,
        count(R::RejectSuppressed).map_err(|x| e(&x))?,
    );
    let counted = (after.0 - before.0, after.1 - before.1);
    if actions != [TX, TX, TX, DROP, DROP, DROP] || counted != (3, 3) {
        return Err(format!(
            "six SYNs after a refill: actions {actions:?} (want 3 × XDP_TX, 3 × XDP_DROP), \
             counted (rejected, reject_suppressed) {counted:?} (want (3, 3))"
        ));
    }
    Ok(())
}

/// Pins the calling thread to the CPU it runs on, until dropped.
struct PinnedToOneCpu {
    before: libc::cpu_set_t,
}

impl PinnedToOneCpu {
    fn new() -> Result<Self, String> {
        // SAFETY: plain syscalls on this thread's affinity, with a zeroed
        // set of the size the kernel expects.
        unsafe {
            let mut before: libc::cpu_set_t = std::mem::zeroed();
            let size = std::mem::size_of::<libc::cpu_set_t>();
            if libc::sched_getaffinity(0, size, &mut before) != 0 {
                return Err(format!(
                    "sched_getaffinity: {}",
                    std::io::Error::last_os_error()
                ));
            }
            let cpu = libc::sched_getcpu();
            if cpu < 0 {
                return Err("sched_getcpu failed".into());
            }
            let mut one: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu as usize, &mut one);
            if libc::sched_setaffinity(0, size, &one) != 0 {
                return Err(format!(
                    "sched_setaffinity: {}",
                    std::io::Error::last_os_error()
                ));
            }
            Ok(PinnedToOneCpu { before })
        }
    }
}

impl Drop for PinnedToOneCpu {
    fn drop(&mut self) {
        // SAFETY: restores the set read in `new`.
        unsafe {
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &self.before);
        }
    }
}

/// Checks the checksums and lengths of a reply as a receiver would: the
/// IPv4 header, TCP (with its pseudo header), ICMP, ICMPv6 (with its
/// pseudo header); the IP length fields; the 576- and 1280-byte limits.
pub fn verify_reply(frame: &[u8]) -> Result<(), String> {
    let mut l3 = 14;
    let mut ethertype = u16::from_be_bytes([frame[12], frame[13]]);
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        ethertype = u16::from_be_bytes([frame[l3 + 2], frame[l3 + 3]]);
        l3 += 4;
    }
    let ip = &frame[l3..];
    let sums_to_ffff = |what: &str, bytes: &[u8]| {
        let s = ones_complement_sum(bytes);
        if s == 0xffff {
            Ok(())
        } else {
            Err(format!("{what} checksum wrong (sum {s:#06x})"))
        }
    };
    match ethertype {
        0x0800 => {
            if ip[0] != 0x45 {
                return Err(format!("IPv4 header byte 0 is {:#04x}", ip[0]));
            }
            sums_to_ffff("IPv4 header", &ip[..20])?;
            let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
            if total != ip.len() {
                return Err(format!("total length {total}, {} bytes", ip.len()));
            }
            if total > 576 {
                return Err(format!("{total} bytes: more than RFC 1812's 576"));
            }
            let src = Ipv4Addr::new(ip[12], ip[13], ip[14], ip[15]);
            let dst = Ipv4Addr::new(ip[16], ip[17], ip[18], ip[19]);
            match ip[9] {
                6 => {
                    let mut all = pseudo_header_v4(src, dst, 6, total - 20);
                    all.extend_from_slice(&ip[20..]);
                    sums_to_ffff("TCP", &all)
                }
                1 => sums_to_ffff("ICMP", &ip[20..]),
                p => Err(format!("IPv4 protocol {p}")),
            }
        }
        0x86dd => {
            let plen = usize::from(u16::from_be_bytes([ip[4], ip[5]]));
            if 40 + plen != ip.len() {
                return Err(format!("payload length {plen}, {} bytes", ip.len() - 40));
            }
            if ip.len() > 1280 {
                return Err(format!("{} bytes: more than RFC 4443's 1280", ip.len()));
            }
            let addr = |at: usize| {
                let mut o = [0u8; 16];
                o.copy_from_slice(&ip[at..at + 16]);
                Ipv6Addr::from(o)
            };
            let nh = ip[6];
            if nh != 6 && nh != 58 {
                return Err(format!("IPv6 next header {nh}"));
            }
            let mut all = pseudo_header_v6(addr(8), addr(24), nh, plen);
            all.extend_from_slice(&ip[40..]);
            sums_to_ffff(if nh == 6 { "TCP" } else { "ICMPv6" }, &all)
        }
        e => Err(format!("EtherType {e:#06x}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{bad_names, duplicate_names};
    use crate::model;

    #[test]
    fn every_expected_reply_passes_the_checksum_verifier() {
        for c in cases() {
            if let Some(r) = &c.reply {
                if let Err(e) = verify_reply(r) {
                    panic!("{}: {e}", c.case.name);
                }
            }
        }
    }

    #[test]
    fn the_verifier_catches_a_flipped_bit() {
        let c = &cases()[0];
        let good = c.reply.clone().unwrap();
        for at in [14 + 10, 14 + 20 + 4, 14 + 20 + 16] {
            let mut bad = good.clone();
            bad[at] ^= 0x01;
            assert!(verify_reply(&bad).is_err(), "byte {at}");
        }
    }

    #[test]
    fn the_model_sends_exactly_these_replies() {
        let mut bad = Vec::new();
        for c in cases() {
            let (j, reply) = model::decide(&c.case.policy, &c.case.frame);
            let got = Expect {
                verdict: j.verdict,
                reason: j.reason,
                rule: j.rule,
            };
            if got != c.case.expect || reply != c.reply {
                bad.push(format!(
                    "{}: expected {} {:?}, model {} {:?}",
                    c.case.name,
                    c.case.expect.label(),
                    c.reply.as_deref().map(crate::packet::hex),
                    got.label(),
                    reply.as_deref().map(crate::packet::hex)
                ));
            }
        }
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn names_are_unique_snake_case_and_the_policy_valid() {
        let all: Vec<Case> = cases().into_iter().map(|c| c.case).collect();
        assert_eq!(duplicate_names(&all), Vec::<&str>::new());
        assert_eq!(bad_names(&all), Vec::<&str>::new());
        assert!(policy().check().is_ok());
        assert!(all.len() >= 50, "{}", all.len());
    }
}
