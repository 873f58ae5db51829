//! The contract's parse (docs/parsing-contract.md, "Layer 2" to "Layer 4"),
//! table row by table row: what a frame is, and where its headers lie.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::spec::Proto;

/// What the frame is, as far as the verdict is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Parsed {
    /// Not IPv4/IPv6 (`defaults.non_ip`).
    NonIp {
        ethertype: u16,
    },
    /// Violates the contract; the string says which rule (for humans only).
    Malformed(&'static str),
    Ip(IpInfo),
}

/// A well-formed IP packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IpInfo {
    /// The source address exactly as on the wire.
    pub src: IpAddr,
    pub fragment: Fragment,
    pub transport: Transport,
    /// Where the IP header starts in the frame.
    pub l3: usize,
    /// Where the layer-4 header starts in the frame (0 for a non-first
    /// fragment, which has none).
    pub l4: usize,
    /// Where the IP packet ends in the frame, by its length field (Ethernet
    /// padding may follow).
    pub end: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fragment {
    /// Not a fragment.
    No,
    /// Offset 0 and more fragments follow (IPv4: MF; IPv6: any fragment header with
    /// offset 0, see `V6_ATOMIC_FRAGMENT_IS_FIRST`).
    First,
    /// Offset ≠ 0: carries no ports.
    NonFirst,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// TCP/UDP/SCTP with its minimal header present.
    Ports { proto: Proto, dport: u16 },
    /// Any other protocol, or a non-first fragment. `protocol` is the IP protocol /
    /// final Next Header (informational).
    NoPorts { protocol: u8 },
}

// CONTRACT: the IPv6 section says "offset = 0 (with or without M) → the walk
// continues: the first fragment must carry the whole header chain …". Read
// literally, a fragment header with offset 0 and M = 0 (an RFC 6946 "atomic
// fragment") makes the packet a *first fragment*, which matters only under
// `fragments = "drop"` (step 5 drops first fragments). IPv4 has no such case (offset
// 0 without MF is simply not a fragment). Decided: RFC 6946 says atomic fragments
// are processed as unfragmented packets, and the contract now says so.
pub const V6_ATOMIC_FRAGMENT_IS_FIRST: bool = false;

/// At most this many IPv6 extension headers; the next one is malformed.
pub const MAX_EXT_HEADERS: usize = 8;
/// At most this many VLAN tags; the next one is malformed.
pub const MAX_VLAN_TAGS: usize = 2;
/// A header starting more than this many bytes into the frame is malformed.
// CONTRACT: only a layer-4 header can start that far in (the 8th IPv6 extension
// header starts at most 8 + 54 + 7 × 2,048 = 14,398 bytes in; IPv4's layer 4 at
// most 82), and only one with ports is read, so that is the one place it is checked.
pub const MAX_HEADER_OFFSET: usize = 16 * 1024;

type Parse<T> = Result<T, &'static str>;

fn byte_at(b: &[u8], at: usize, what: &'static str) -> Parse<u8> {
    b.get(at).copied().ok_or(what)
}

fn be16_at(b: &[u8], at: usize, what: &'static str) -> Parse<u16> {
    let hi = byte_at(b, at, what)?;
    let lo = byte_at(b, at + 1, what)?;
    Ok(u16::from_be_bytes([hi, lo]))
}

fn slice_at<'a>(b: &'a [u8], from: usize, to: usize, what: &'static str) -> Parse<&'a [u8]> {
    b.get(from..to).ok_or(what)
}

/// Read a frame as the contract prescribes.
pub fn parse(frame: &[u8]) -> Parsed {
    match parse_frame(frame) {
        Ok(p) => p,
        Err(why) => Parsed::Malformed(why),
    }
}

fn parse_frame(frame: &[u8]) -> Parse<Parsed> {
    // Layer 2: fewer than 14 bytes → malformed.
    if frame.len() < 14 {
        return Err("frame shorter than an Ethernet header");
    }
    let mut ethertype = be16_at(frame, 12, "frame shorter than an Ethernet header")?;
    let mut offset = 14;
    let mut tags = 0;
    while ethertype == 0x8100 || ethertype == 0x88a8 {
        if tags == MAX_VLAN_TAGS {
            return Err("third VLAN tag");
        }
        // A tag is 4 bytes: TCI, then the inner EtherType.
        if frame.len() < offset + 4 {
            return Err("VLAN tag cut short");
        }
        ethertype = be16_at(frame, offset + 2, "VLAN tag cut short")?;
        offset += 4;
        tags += 1;
    }
    let l3 = slice_at(frame, offset, frame.len(), "no bytes after layer 2")?;
    match ethertype {
        0x0800 => parse_ipv4(l3, offset).map(Parsed::Ip),
        0x86dd => parse_ipv6(l3, offset).map(Parsed::Ip),
        other => Ok(Parsed::NonIp { ethertype: other }),
    }
}

/// `p` is the frame from the IPv4 header on, which starts `l3` bytes in.
fn parse_ipv4(p: &[u8], l3: usize) -> Parse<IpInfo> {
    if p.len() < 20 {
        return Err("IPv4: fewer than 20 bytes");
    }
    let b0 = byte_at(p, 0, "IPv4: fewer than 20 bytes")?;
    let version = b0 >> 4;
    if version != 4 {
        return Err("IPv4: version is not 4");
    }
    let ihl = usize::from(b0 & 0x0f);
    if ihl < 5 {
        return Err("IPv4: IHL < 5");
    }
    let header_len = ihl * 4;
    if header_len > p.len() {
        return Err("IPv4: header (with options) not inside the frame");
    }
    let total_len = usize::from(be16_at(p, 2, "IPv4: fewer than 20 bytes")?);
    if total_len < header_len {
        return Err("IPv4: total length < IHL × 4");
    }
    if total_len > p.len() {
        return Err("IPv4: total length beyond the frame (truncated)");
    }
    // CONTRACT: only the offset and MF are read from the flags/offset field; DF
    // and the reserved ("evil") bit are ignored, as is the header checksum.
    let frag_field = be16_at(p, 6, "IPv4: fewer than 20 bytes")?;
    let offset = frag_field & 0x1fff;
    let more_fragments = frag_field & 0x2000 != 0;
    let protocol = byte_at(p, 9, "IPv4: fewer than 20 bytes")?;
    let src_bytes = slice_at(p, 12, 16, "IPv4: fewer than 20 bytes")?;
    let src = Ipv4Addr::new(src_bytes[0], src_bytes[1], src_bytes[2], src_bytes[3]);

    // The layer-4 region: [IHL × 4, total length). Ethernet padding is not in it.
    let l4_region = slice_at(p, header_len, total_len, "IPv4: bad layer-4 region")?;

    if offset != 0 {
        if protocol == 6 && offset == 1 {
            return Err("IPv4: TCP fragment with offset 1");
        }
        return Ok(IpInfo {
            src: IpAddr::V4(src),
            fragment: Fragment::NonFirst,
            transport: Transport::NoPorts { protocol },
            l3,
            l4: 0,
            end: l3 + total_len,
        });
    }
    let fragment = if more_fragments {
        Fragment::First
    } else {
        Fragment::No
    };
    let transport = read_transport(protocol, l4_region, l3 + header_len)?;
    Ok(IpInfo {
        src: IpAddr::V4(src),
        fragment,
        transport,
        l3,
        l4: l3 + header_len,
        end: l3 + total_len,
    })
}

/// `p` is the frame from the IPv6 header on, which starts `l3` bytes in.
fn parse_ipv6(p: &[u8], l3: usize) -> Parse<IpInfo> {
    if p.len() < 40 {
        return Err("IPv6: fewer than 40 bytes");
    }
    let b0 = byte_at(p, 0, "IPv6: fewer than 40 bytes")?;
    if b0 >> 4 != 6 {
        return Err("IPv6: version is not 6");
    }
    let payload_len = usize::from(be16_at(p, 4, "IPv6: fewer than 40 bytes")?);
    if 40 + payload_len > p.len() {
        return Err("IPv6: payload length beyond the frame (truncated)");
    }
    let mut next_header = byte_at(p, 6, "IPv6: fewer than 40 bytes")?;
    let src_bytes = slice_at(p, 8, 24, "IPv6: fewer than 40 bytes")?;
    let mut src_octets = [0u8; 16];
    src_octets.copy_from_slice(src_bytes);
    let src = IpAddr::V6(Ipv6Addr::from(src_octets));

    // The payload region: [40, 40 + payload length); positions below are relative
    // to its start.
    let region = slice_at(p, 40, 40 + payload_len, "IPv6: bad payload region")?;
    let mut pos = 0usize;
    let mut headers_seen = 0usize;
    let mut seen_fragment_header = false;
    let mut fragment = Fragment::No;

    loop {
        let is_extension = matches!(next_header, 0 | 43 | 60 | 135 | 51 | 44);
        if !is_extension {
            break;
        }
        headers_seen += 1;
        if headers_seen > MAX_EXT_HEADERS {
            return Err("IPv6: more than 8 extension headers");
        }
        match next_header {
            0 if headers_seen != 1 => {
                return Err("IPv6: hop-by-hop not directly after the fixed header");
            }
            44 => {
                if seen_fragment_header {
                    return Err("IPv6: second fragment header");
                }
                seen_fragment_header = true;
                if pos + 8 > region.len() {
                    return Err("IPv6: fragment header overruns the payload region");
                }
                let inner = byte_at(region, pos, "IPv6: fragment header overruns")?;
                let field = be16_at(region, pos + 2, "IPv6: fragment header overruns")?;
                let offset = field >> 3;
                let more = field & 1 != 0;
                if offset != 0 {
                    if inner == 6 && offset == 1 {
                        return Err("IPv6: TCP fragment with offset 1");
                    }
                    // The walk stops: a non-first fragment has no ports.
                    return Ok(IpInfo {
                        src,
                        fragment: Fragment::NonFirst,
                        transport: Transport::NoPorts { protocol: inner },
                        l3,
                        l4: 0,
                        end: l3 + 40 + payload_len,
                    });
                }
                if more || V6_ATOMIC_FRAGMENT_IS_FIRST {
                    fragment = Fragment::First;
                }
                next_header = inner;
                pos += 8;
            }
            _ => {
                // hop-by-hop (first), routing, destination options, mobility, AH:
                // Next Header and length are the first two bytes.
                if pos + 2 > region.len() {
                    return Err("IPv6: extension header overruns the payload region");
                }
                let inner = byte_at(region, pos, "IPv6: extension header overruns")?;
                let len = usize::from(byte_at(region, pos + 1, "IPv6: ext overruns")?);
                let size = if next_header == 51 {
                    (len + 2) * 4
                } else {
                    (len + 1) * 8
                };
                if pos + size > region.len() {
                    return Err("IPv6: extension header overruns the payload region");
                }
                next_header = inner;
                pos += size;
            }
        }
    }

    let l4_region = slice_at(region, pos, region.len(), "IPv6: bad layer-4 region")?;
    let transport = read_transport(next_header, l4_region, l3 + 40 + pos)?;
    Ok(IpInfo {
        src,
        fragment,
        transport,
        l3,
        l4: l3 + 40 + pos,
        end: l3 + 40 + payload_len,
    })
}

/// Layer 4 of an unfragmented packet or a first fragment; its header starts
/// `at` bytes into the frame.
///
/// CONTRACT: the minimal-header rule exists only for TCP, UDP and SCTP; a first
/// fragment (or unfragmented packet) of any other protocol — ICMP with 2 bytes, an
/// empty GRE — is not malformed. Over IPv4 every protocol number other than these
/// three has no ports, including IPv6 extension-header numbers such as 51 (AH):
/// IPv4 walks no extension headers.
fn read_transport(protocol: u8, l4_region: &[u8], at: usize) -> Parse<Transport> {
    let (proto, min_header) = match protocol {
        6 => (Proto::Tcp, 20),
        17 => (Proto::Udp, 8),
        132 => (Proto::Sctp, 12),
        _ => return Ok(Transport::NoPorts { protocol }),
    };
    if at > MAX_HEADER_OFFSET {
        return Err("layer-4 header starts beyond the 16 KiB bound");
    }
    if l4_region.len() < min_header {
        return Err("layer-4 header not inside the layer-4 region");
    }
    // CONTRACT: only the minimal length is checked; TCP data offset, UDP length and
    // checksums are not validated (the contract names none of them).
    let dport = be16_at(l4_region, 2, "layer-4 header not inside the layer-4 region")?;
    Ok(Transport::Ports { proto, dport })
}
