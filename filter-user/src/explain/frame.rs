//! The one frame `explain` sends: Ethernet (+ one 802.1Q tag), IPv4 or IPv6,
//! TCP (SYN), UDP or SCTP, optionally as a first or a later fragment. Checksums
//! are valid, so the frame is what a real client would send; the datapath reads
//! none of them (docs/parsing-contract.md), the kernel would.
use std::net::IpAddr;

use crate::policy::Proto;

/// Which piece of a fragmented packet to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Fragment {
    /// Offset 0 with more fragments to follow: carries the ports.
    First,
    /// A last fragment at offset 1480: no ports.
    Later,
}

/// What to put on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameSpec {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: Proto,
    pub sport: u16,
    pub dport: u16,
    pub vlan: Option<u16>,
    pub fragment: Option<Fragment>,
}

/// Source port of the frame (an ephemeral one; zones judge destinations only).
pub const SOURCE_PORT: u16 = 49152;
/// Offset of a later fragment, in 8-byte units (a full first fragment of a
/// 1500-byte MTU carries 1480 bytes; offset 1 with TCP would be malformed).
const LATER_OFFSET: u16 = 185;
const SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
const DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// The frame's bytes. `src` and `dst` must be of one family.
pub fn build(spec: &FrameSpec) -> Vec<u8> {
    let l4 = transport(spec);
    let mut frame = Vec::with_capacity(18 + 48 + l4.len());
    frame.extend_from_slice(&DST_MAC);
    frame.extend_from_slice(&SRC_MAC);
    if let Some(vid) = spec.vlan {
        frame.extend_from_slice(&0x8100u16.to_be_bytes());
        frame.extend_from_slice(&(vid & 0x0fff).to_be_bytes());
    }
    match (spec.src, spec.dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            frame.extend_from_slice(&0x0800u16.to_be_bytes());
            let frag_field = match spec.fragment {
                None => 0,
                Some(Fragment::First) => 0x2000,
                Some(Fragment::Later) => LATER_OFFSET,
            };
            let total = (20 + l4.len()) as u16;
            let mut ip = [0u8; 20];
            ip[0] = 0x45;
            ip[2..4].copy_from_slice(&total.to_be_bytes());
            ip[4..6].copy_from_slice(&0x5043u16.to_be_bytes()); // identification
            ip[6..8].copy_from_slice(&frag_field.to_be_bytes());
            ip[8] = 64;
            ip[9] = spec.proto.ip_proto();
            ip[12..16].copy_from_slice(&s.octets());
            ip[16..20].copy_from_slice(&d.octets());
            let sum = checksum(&[&ip]);
            ip[10..12].copy_from_slice(&sum.to_be_bytes());
            frame.extend_from_slice(&ip);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            frame.extend_from_slice(&0x86ddu16.to_be_bytes());
            let frag = spec.fragment.map(|f| {
                let (offset, more) = match f {
                    Fragment::First => (0u16, 1u16),
                    Fragment::Later => (LATER_OFFSET, 0),
                };
                let mut h = [0u8; 8];
                h[0] = spec.proto.ip_proto();
                h[2..4].copy_from_slice(&((offset << 3) | more).to_be_bytes());
                h[4..8].copy_from_slice(&0x5043_4c53u32.to_be_bytes());
                h
            });
            let payload = (l4.len() + frag.map_or(0, |h| h.len())) as u16;
            frame.extend_from_slice(&0x6000_0000u32.to_be_bytes());
            frame.extend_from_slice(&payload.to_be_bytes());
            frame.push(if frag.is_some() {
                44
            } else {
                spec.proto.ip_proto()
            });
            frame.push(64);
            frame.extend_from_slice(&s.octets());
            frame.extend_from_slice(&d.octets());
            if let Some(h) = frag {
                frame.extend_from_slice(&h);
            }
        }
        _ => unreachable!("explain checks that source and destination share a family"),
    }
    frame.extend_from_slice(&l4);
    frame
}

/// The layer-4 bytes: a whole header, or for a later fragment 8 bytes of the
/// middle of the payload (no header).
fn transport(spec: &FrameSpec) -> Vec<u8> {
    if spec.fragment == Some(Fragment::Later) {
        return b"portcull".to_vec();
    }
    let mut l4 = match spec.proto {
        Proto::Tcp => {
            let mut h = vec![0u8; 20];
            h[12] = 5 << 4; // data offset
            h[13] = 0x02; // SYN
            h[14..16].copy_from_slice(&64240u16.to_be_bytes());
            h
        }
        Proto::Udp => {
            let mut h = vec![0u8; 8];
            h[4..6].copy_from_slice(&8u16.to_be_bytes());
            h
        }
        Proto::Sctp => {
            let mut h = vec![0u8; 12];
            h[4..8].copy_from_slice(&0x5043_4c53u32.to_be_bytes()); // verification tag
            h
        }
    };
    l4[0..2].copy_from_slice(&spec.sport.to_be_bytes());
    l4[2..4].copy_from_slice(&spec.dport.to_be_bytes());
    // A first fragment's checksum covers the whole datagram, which does not
    // exist here; only unfragmented frames get one.
    if spec.fragment.is_some() {
        return l4;
    }
    match spec.proto {
        Proto::Sctp => {
            let crc = crc32c(&l4);
            l4[8..12].copy_from_slice(&crc.to_le_bytes());
        }
        Proto::Tcp | Proto::Udp => {
            let pseudo = pseudo_header(spec.src, spec.dst, spec.proto.ip_proto(), l4.len());
            let mut sum = checksum(&[&pseudo, &l4]);
            if spec.proto == Proto::Udp && sum == 0 {
                sum = 0xffff;
            }
            let at = if spec.proto == Proto::Tcp { 16 } else { 6 };
            l4[at..at + 2].copy_from_slice(&sum.to_be_bytes());
        }
    }
    l4
}

fn pseudo_header(src: IpAddr, dst: IpAddr, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            p.extend_from_slice(&s.octets());
            p.extend_from_slice(&d.octets());
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        }
        _ => {}
    }
    p
}

/// The Internet checksum (RFC 1071) over the concatenation of `parts`, each of
/// even length but the last.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    for part in parts {
        for pair in part.chunks(2) {
            let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
            sum += u32::from(word);
        }
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// CRC-32C (Castagnoli), as SCTP uses (RFC 9260 appendix A), bit by bit.
fn crc32c(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82f6_3b78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(src: &str, dst: &str, proto: Proto) -> FrameSpec {
        FrameSpec {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto,
            sport: SOURCE_PORT,
            dport: 8889,
            vlan: None,
            fragment: None,
        }
    }

    #[test]
    fn ipv4_header_checksum_verifies_to_zero() {
        let f = build(&spec("198.51.100.7", "192.0.2.1", Proto::Tcp));
        assert_eq!(checksum(&[&f[14..34]]), 0);
    }

    #[test]
    fn tcp_checksum_verifies_with_the_pseudo_header() {
        for (s, d, at) in [
            ("198.51.100.7", "192.0.2.1", 34),
            ("2001:db8::7", "2001:db8::1", 54),
        ] {
            let sp = spec(s, d, Proto::Tcp);
            let f = build(&sp);
            let pseudo = pseudo_header(sp.src, sp.dst, 6, 20);
            assert_eq!(checksum(&[&pseudo, &f[at..]]), 0, "{s}");
        }
    }

    #[test]
    fn crc32c_matches_the_rfc_3720_check_value() {
        // RFC 3720 B.4: 32 bytes of zeros.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn vlan_tag_sits_before_the_ethertype() {
        let mut sp = spec("198.51.100.7", "192.0.2.1", Proto::Udp);
        sp.vlan = Some(100);
        let f = build(&sp);
        assert_eq!(&f[12..18], &[0x81, 0x00, 0, 100, 0x08, 0x00]);
    }
}
