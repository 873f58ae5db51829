//! What a rejecting zone sends back, from docs/policy.md ("`action =
//! "reject"`"), written a second time and plainly: the rules for what is
//! never answered, then the reply as a byte vector built front to back.
//!
//! The frame reaches here only as a well-formed TCP, UDP or SCTP packet (an
//! unfragmented one or a first fragment) from a source outside the zone's
//! `allow`: the verdict order has already ruled out everything else (ICMP,
//! non-first fragments, blocklisted sources never reach a zone).

use std::net::IpAddr;

use super::parse::{Fragment, IpInfo};
use crate::spec::{Proto, RejectWith};

/// Why a frame is not answered (for messages; the verdict is `not_allowed`).
pub type NoReply = &'static str;

const TTL: u8 = 64;
const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const ACK: u8 = 0x10;

/// The reply to `frame` (parsed as `info`, layer 4 `proto`) of a zone
/// rejecting `with`, or why there is none.
pub fn reply(
    frame: &[u8],
    info: &IpInfo,
    with: RejectWith,
    proto: Proto,
) -> Result<Vec<u8>, NoReply> {
    if info.fragment == Fragment::First {
        return Err("a fragment: SEG.LEN and the rest of the datagram are unknown");
    }
    // Bit 0 of the first byte of a MAC address: a group (multicast or
    // broadcast) address.
    if frame[0] & 1 == 1 {
        return Err("sent to a layer-2 group address");
    }
    if frame[6] & 1 == 1 {
        return Err("from a layer-2 group address");
    }
    let v6 = matches!(info.src, IpAddr::V6(_));
    let (src, dst) = addresses(frame, info.l3, v6);
    if !answerable_source(&src, v6) {
        return Err("the source is no unicast host");
    }
    if is_multicast_or_broadcast(&dst, v6) {
        return Err("sent to a multicast or broadcast address");
    }
    let with = match (with, proto) {
        (RejectWith::ByProtocol, Proto::Tcp) => RejectWith::TcpReset,
        (RejectWith::ByProtocol, _) => RejectWith::PortUnreachable,
        (w, _) => w,
    };
    let tcp = &frame[info.l4..info.end];
    if proto == Proto::Tcp && tcp[13] & RST != 0 {
        return Err("a TCP RST is never answered (RFC 9293)");
    }
    let code = match (with, v6) {
        (RejectWith::TcpReset, _) if proto != Proto::Tcp => {
            return Err("a TCP reset cannot answer UDP or SCTP");
        }
        (RejectWith::TcpReset, _) => return reset(frame, info, v6, &src, &dst, tcp),
        (RejectWith::PortUnreachable, false) => 3,
        (RejectWith::AdminProhibited, false) => 13,
        (RejectWith::HostUnreachable, false) => 1,
        (RejectWith::PortUnreachable, true) => 4,
        (RejectWith::AdminProhibited, true) => 1,
        (RejectWith::HostUnreachable, true) => 3,
        (RejectWith::ByProtocol, _) => unreachable!("resolved above"),
    };
    Ok(unreachable(frame, info, v6, &src, &dst, code))
}

/// (source, destination) address bytes of the IP header at `l3`.
fn addresses(frame: &[u8], l3: usize, v6: bool) -> (Vec<u8>, Vec<u8>) {
    if v6 {
        (
            frame[l3 + 8..l3 + 24].to_vec(),
            frame[l3 + 24..l3 + 40].to_vec(),
        )
    } else {
        (
            frame[l3 + 12..l3 + 16].to_vec(),
            frame[l3 + 16..l3 + 20].to_vec(),
        )
    }
}

/// A source a reply may go to: IPv4 not in 0/8, 127/8, 224/3; IPv6 not
/// `::`, `::1`, multicast, or IPv4-mapped.
fn answerable_source(a: &[u8], v6: bool) -> bool {
    if !v6 {
        return !(a[0] == 0 || a[0] == 127 || a[0] >= 224);
    }
    let zero_until = |n: usize| a[..n].iter().all(|&b| b == 0);
    let unspecified = zero_until(16);
    let loopback = zero_until(15) && a[15] == 1;
    let mapped = zero_until(10) && a[10] == 0xff && a[11] == 0xff;
    !(a[0] == 0xff || unspecified || loopback || mapped)
}

/// IPv4 224/3 (multicast, reserved, the limited broadcast), 0/8, 127/8;
/// IPv6 ff00::/8.
fn is_multicast_or_broadcast(a: &[u8], v6: bool) -> bool {
    if v6 {
        a[0] == 0xff
    } else {
        a[0] == 0 || a[0] == 127 || a[0] >= 224
    }
}

/// Ethernet header with the MAC addresses swapped and the VLAN tags (and
/// inner EtherType) as they came.
fn layer2(frame: &[u8], l3: usize) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&frame[6..12]);
    out.extend_from_slice(&frame[0..6]);
    out.extend_from_slice(&frame[12..l3]);
    out
}

/// The one's complement of the one's complement sum of 16-bit words
/// (RFC 1071), over the concatenation of `parts`.
fn internet_checksum(parts: &[&[u8]]) -> [u8; 2] {
    let all: Vec<u8> = parts.concat();
    let mut sum: u32 = 0;
    for pair in all.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        let lo = pair.get(1).map_or(0, |&b| u32::from(b));
        sum += hi | lo;
    }
    while sum > 0xffff {
        sum = (sum >> 16) + (sum & 0xffff);
    }
    (!(sum as u16)).to_be_bytes()
}

/// The IP header of a reply carrying `payload_len` bytes of `proto`, from
/// `from` to `to`.
fn ip_header(
    v6: bool,
    proto: u8,
    tos: u8,
    df: bool,
    from: &[u8],
    to: &[u8],
    payload_len: usize,
) -> Vec<u8> {
    if v6 {
        let mut h = vec![0x60, 0, 0, 0];
        h.extend_from_slice(&(payload_len as u16).to_be_bytes());
        h.push(proto);
        h.push(TTL);
        h.extend_from_slice(from);
        h.extend_from_slice(to);
        return h;
    }
    let mut h = vec![0x45, tos];
    h.extend_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 0]); // identification
    h.extend_from_slice(if df { &[0x40, 0] } else { &[0, 0] });
    h.push(TTL);
    h.push(proto);
    h.extend_from_slice(&[0, 0]);
    h.extend_from_slice(from);
    h.extend_from_slice(to);
    let c = internet_checksum(&[&h]);
    h[10..12].copy_from_slice(&c);
    h
}

/// The pseudo header of an upper-layer checksum (RFC 768/793 for IPv4,
/// RFC 8200 §8.1 for IPv6).
fn pseudo(v6: bool, from: &[u8], to: &[u8], proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(from);
    p.extend_from_slice(to);
    if v6 {
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
    } else {
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
    }
    p
}

/// RFC 9293 §3.10.7.1 (state CLOSED): "If the ACK bit is off, sequence
/// number zero is used, <SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>. If the
/// ACK bit is on, <SEQ=SEG.ACK><CTL=RST>." SEG.LEN counts the data and one
/// each for SYN and FIN.
fn reset(
    frame: &[u8],
    info: &IpInfo,
    v6: bool,
    src: &[u8],
    dst: &[u8],
    tcp: &[u8],
) -> Result<Vec<u8>, NoReply> {
    let data_offset = usize::from(tcp[12] >> 4) * 4;
    if data_offset < 20 || data_offset > tcp.len() {
        return Err("the TCP data offset is not inside the segment: SEG.LEN is unknown");
    }
    let flags = tcp[13];
    let seg_seq = u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]);
    let seg_ack = u32::from_be_bytes([tcp[8], tcp[9], tcp[10], tcp[11]]);
    let mut seg_len = (tcp.len() - data_offset) as u32;
    if flags & SYN != 0 {
        seg_len += 1;
    }
    if flags & FIN != 0 {
        seg_len += 1;
    }
    let (seq, ack, ctl) = if flags & ACK != 0 {
        (seg_ack, 0, RST)
    } else {
        (0, seg_seq.wrapping_add(seg_len), RST | ACK)
    };
    let mut t = Vec::new();
    t.extend_from_slice(&tcp[2..4]); // their destination port is our source
    t.extend_from_slice(&tcp[0..2]);
    t.extend_from_slice(&seq.to_be_bytes());
    t.extend_from_slice(&ack.to_be_bytes());
    t.push(5 << 4);
    t.push(ctl);
    t.extend_from_slice(&[0, 0]); // window
    t.extend_from_slice(&[0, 0]); // checksum
    t.extend_from_slice(&[0, 0]); // urgent pointer
    let c = internet_checksum(&[&pseudo(v6, dst, src, 6, 20), &t]);
    t[16..18].copy_from_slice(&c);
    let mut out = layer2(frame, info.l3);
    out.extend(ip_header(v6, 6, 0, true, dst, src, 20));
    out.extend(t);
    Ok(out)
}

/// ICMP type 3 (IPv4) or ICMPv6 type 1 with `code`, quoting the offending
/// IP packet (header, options or extension headers, data; not the Ethernet
/// padding) as far as the reply stays within 576 bytes (IPv4, RFC 1812
/// §4.3.2.3) or 1280 bytes (IPv6, RFC 4443 §2.4 (c)) from its IP header on.
fn unreachable(frame: &[u8], info: &IpInfo, v6: bool, src: &[u8], dst: &[u8], code: u8) -> Vec<u8> {
    let (ty, header, limit, proto, tos) = if v6 {
        (1, 40, 1280, 58, 0)
    } else {
        (3, 20, 576, 1, 0xc0)
    };
    let room = limit - header - 8;
    let packet = &frame[info.l3..info.end];
    let quote = &packet[..packet.len().min(room)];
    let mut m = vec![ty, code, 0, 0, 0, 0, 0, 0];
    m.extend_from_slice(quote);
    let c = if v6 {
        internet_checksum(&[&pseudo(true, dst, src, 58, m.len()), &m])
    } else {
        internet_checksum(&[&m])
    };
    m[2..4].copy_from_slice(&c);
    let mut out = layer2(frame, info.l3);
    out.extend(ip_header(v6, proto, tos, false, dst, src, m.len()));
    out.extend(m);
    out
}
