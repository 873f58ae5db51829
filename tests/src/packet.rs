//! A packet builder for test frames: realistic by default (valid IPv4 header
//! checksum, TCP/UDP/ICMP checksums with the pseudo header, SCTP CRC32c), and able to
//! break every rule of the parsing contract on request.
//!
//! ```
//! use portcullis_tests::packet::{Frame, ExtHeader};
//! use std::net::{Ipv4Addr, Ipv6Addr};
//! let syn = Frame::ipv4(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(192, 0, 2, 1))
//!     .vlan(0x8100, 10)
//!     .tcp(40000, 22)
//!     .build();
//! let frag = Frame::ipv6("2001:db8::1".parse().unwrap(), "2001:db8::2".parse().unwrap())
//!     .ext(ExtHeader::HopByHop { len_units: 0 })
//!     .ext(ExtHeader::frag(0, true))
//!     .udp(5000, 53)
//!     .build();
//! assert!(syn.len() > 14 && frag.len() > 14);
//! ```
//!
//! Everything the builder writes is derived at `build()` time, so knobs can be
//! applied in any order; overrides (`ihl`, `total_len`, `payload_len`, `version`)
//! replace the computed value but checksums are still computed over the bytes that
//! are actually emitted.

use std::net::{Ipv4Addr, Ipv6Addr};

/// Destination MAC of every built frame (locally administered, unicast).
pub const DST_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x02];
/// Source MAC of every built frame (locally administered, unicast).
pub const SRC_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x01];

pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
pub const ETH_P_LLDP: u16 = 0x88cc;
pub const ETH_P_MPLS: u16 = 0x8847;
pub const ETH_P_PPPOE: u16 = 0x8864;

pub const PROTO_HOPOPTS: u8 = 0;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_IPIP: u8 = 4;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
pub const PROTO_IPV6: u8 = 41;
pub const PROTO_ROUTING: u8 = 43;
pub const PROTO_FRAGMENT: u8 = 44;
pub const PROTO_GRE: u8 = 47;
pub const PROTO_ESP: u8 = 50;
pub const PROTO_AH: u8 = 51;
pub const PROTO_ICMPV6: u8 = 58;
pub const PROTO_NONE: u8 = 59;
pub const PROTO_DSTOPTS: u8 = 60;
pub const PROTO_SCTP: u8 = 132;
pub const PROTO_MOBILITY: u8 = 135;
pub const PROTO_UDPLITE: u8 = 136;

// ---------------------------------------------------------------------------
// Checksums
// ---------------------------------------------------------------------------

/// The folded 16-bit one's complement sum of `data` (odd length padded with a zero
/// byte), *not* inverted. A region that carries a correct Internet checksum sums to
/// 0xffff.
pub fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    for pair in data.chunks(2) {
        let word = if pair.len() == 2 {
            u16::from_be_bytes([pair[0], pair[1]])
        } else {
            u16::from_be_bytes([pair[0], 0])
        };
        sum += u64::from(word);
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// The Internet checksum (RFC 1071) of `data`.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data)
}

/// IPv4 pseudo header for TCP/UDP checksums.
pub fn pseudo_header_v4(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, l4_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(12);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.push(0);
    p.push(proto);
    p.extend_from_slice(&(l4_len as u16).to_be_bytes());
    p
}

/// IPv6 pseudo header (RFC 8200 §8.1) for TCP/UDP/ICMPv6 checksums.
pub fn pseudo_header_v6(src: Ipv6Addr, dst: Ipv6Addr, next_header: u8, l4_len: usize) -> Vec<u8> {
    let mut p = Vec::with_capacity(40);
    p.extend_from_slice(&src.octets());
    p.extend_from_slice(&dst.octets());
    p.extend_from_slice(&(l4_len as u32).to_be_bytes());
    p.extend_from_slice(&[0, 0, 0, next_header]);
    p
}

/// CRC32c (Castagnoli, reflected polynomial 0x82F63B78), as used by SCTP.
pub fn crc32c(data: &[u8]) -> u32 {
    let mut crc: u32 = !0;
    for &byte in data {
        crc ^= u32::from(byte);
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

// ---------------------------------------------------------------------------
// IPv6 extension headers
// ---------------------------------------------------------------------------

/// One IPv6 extension header. The Next Header fields are chained automatically at
/// build time (each header points at the next one, the last at the layer-4 protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ExtHeader {
    /// Hop-by-hop options (type 0), `(len_units + 1) * 8` bytes, filled with PadN.
    HopByHop { len_units: u8 },
    /// Routing header (43), `(len_units + 1) * 8` bytes, segments left 0.
    Routing { len_units: u8 },
    /// Destination options (60), `(len_units + 1) * 8` bytes, filled with PadN.
    DestOpts { len_units: u8 },
    /// Mobility header (135), `(len_units + 1) * 8` bytes.
    Mobility { len_units: u8 },
    /// Authentication header (51), `(len_field + 2) * 4` bytes.
    Ah { len_field: u8 },
    /// Fragment header (44), 8 bytes. `offset` in units of 8 bytes (13 bits).
    Fragment { offset: u16, more: bool, id: u32 },
    /// Any bytes, announced by the previous header as `next_header_value`. The bytes
    /// are emitted verbatim except byte 0, which (if present) is overwritten with the
    /// chained Next Header value like in every other extension header.
    Raw {
        next_header_value: u8,
        bytes: Vec<u8>,
    },
}

impl ExtHeader {
    /// A fragment header with a fixed identification.
    pub fn frag(offset: u16, more: bool) -> Self {
        ExtHeader::Fragment {
            offset,
            more,
            id: 0x0bad_cafe,
        }
    }

    /// The value a preceding header's Next Header field carries for this header.
    pub fn type_value(&self) -> u8 {
        match self {
            ExtHeader::HopByHop { .. } => PROTO_HOPOPTS,
            ExtHeader::Routing { .. } => PROTO_ROUTING,
            ExtHeader::DestOpts { .. } => PROTO_DSTOPTS,
            ExtHeader::Mobility { .. } => PROTO_MOBILITY,
            ExtHeader::Ah { .. } => PROTO_AH,
            ExtHeader::Fragment { .. } => PROTO_FRAGMENT,
            ExtHeader::Raw {
                next_header_value, ..
            } => *next_header_value,
        }
    }

    /// The number of bytes `encode` emits.
    pub fn encoded_len(&self) -> usize {
        self.encode(0).len()
    }

    /// The encoded header, with `next` as its Next Header.
    pub fn encode(&self, next: u8) -> Vec<u8> {
        match self {
            ExtHeader::HopByHop { len_units } | ExtHeader::DestOpts { len_units } => {
                let total = (usize::from(*len_units) + 1) * 8;
                let mut b = vec![next, *len_units];
                b.extend(padn(total - 2));
                b
            }
            ExtHeader::Routing { len_units } => {
                let total = (usize::from(*len_units) + 1) * 8;
                // routing type 0 (deprecated, harmless with segments left 0)
                let mut b = vec![next, *len_units, 0, 0];
                b.resize(total, 0);
                b
            }
            ExtHeader::Mobility { len_units } => {
                let total = (usize::from(*len_units) + 1) * 8;
                // MH type 0 (binding refresh request), reserved, checksum 0
                let mut b = vec![next, *len_units, 0, 0, 0, 0];
                b.resize(total, 0);
                b
            }
            ExtHeader::Ah { len_field } => {
                let total = (usize::from(*len_field) + 2) * 4;
                let mut b = vec![next, *len_field, 0, 0];
                b.extend_from_slice(&0x0000_1001u32.to_be_bytes()); // SPI
                b.extend_from_slice(&1u32.to_be_bytes()); // sequence number
                b.resize(total, 0xa5); // ICV
                b.truncate(total);
                b
            }
            ExtHeader::Fragment { offset, more, id } => {
                let field = ((offset & 0x1fff) << 3) | u16::from(*more);
                let mut b = vec![next, 0];
                b.extend_from_slice(&field.to_be_bytes());
                b.extend_from_slice(&id.to_be_bytes());
                b
            }
            ExtHeader::Raw { bytes, .. } => {
                let mut b = bytes.clone();
                if let Some(first) = b.first_mut() {
                    *first = next;
                }
                b
            }
        }
    }
}

/// Option padding of `n` bytes: Pad1 for one byte, else one PadN option.
fn padn(n: usize) -> Vec<u8> {
    match n {
        0 => vec![],
        1 => vec![0],
        _ => {
            let mut b = vec![1, (n - 2) as u8];
            b.resize(n, 0);
            b
        }
    }
}

// ---------------------------------------------------------------------------
// The frame builder
// ---------------------------------------------------------------------------

#[derive(Clone, Debug, PartialEq, Eq)]
enum L4 {
    /// No layer 4 at all (only a raw payload, protocol 59 / 255 by default).
    None,
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
        seq: u32,
        ack: u32,
        window: u16,
        /// Data offset in 32-bit words (the header emitted stays 20 bytes).
        doff: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
    },
    Icmp,
    Icmpv6,
    /// An ICMP (IPv4) or ICMPv6 error: type, code, 4 unused bytes, then the
    /// payload (the quote).
    IcmpError {
        ty: u8,
        code: u8,
    },
    /// Any protocol number, payload written verbatim.
    Raw {
        proto: u8,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Ip4 {
    src: Ipv4Addr,
    dst: Ipv4Addr,
    version: u8,
    ihl: Option<u8>,
    total_len: Option<u16>,
    /// Flags and fragment offset (bytes 6–7).
    frag_field: u16,
    options: Vec<u8>,
    ttl: u8,
    id: u16,
    tos: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Ip6 {
    src: Ipv6Addr,
    dst: Ipv6Addr,
    version: u8,
    payload_len: Option<u16>,
    exts: Vec<ExtHeader>,
    hop_limit: u8,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Net {
    V4(Ip4),
    V6(Ip6),
    Raw { ethertype: u16 },
}

/// A frame under construction. See the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// Destination and source MAC addresses.
    macs: ([u8; 6], [u8; 6]),
    /// (TPID, VID), outermost first.
    vlans: Vec<(u16, u16)>,
    net: Net,
    l4: L4,
    /// Bytes after the layer-4 header (or the raw network payload).
    payload: Option<Vec<u8>>,
    /// Bytes after the IP packet (Ethernet padding / trailer).
    trailer: Vec<u8>,
    truncate: Option<usize>,
}

impl Frame {
    fn with_net(net: Net) -> Self {
        Frame {
            macs: (DST_MAC, SRC_MAC),
            vlans: Vec::new(),
            net,
            l4: L4::None,
            payload: None,
            trailer: Vec::new(),
            truncate: None,
        }
    }

    /// An IPv4 packet (DF set, TTL 64); add a layer 4 with `.tcp()` etc.
    pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr) -> Self {
        Frame::with_net(Net::V4(Ip4 {
            src,
            dst,
            version: 4,
            ihl: None,
            total_len: None,
            frag_field: 0x4000,
            options: Vec::new(),
            ttl: 64,
            id: 0x1234,
            tos: 0,
        }))
    }

    /// An IPv6 packet (hop limit 64); add a layer 4 with `.tcp()` etc.
    pub fn ipv6(src: Ipv6Addr, dst: Ipv6Addr) -> Self {
        Frame::with_net(Net::V6(Ip6 {
            src,
            dst,
            version: 6,
            payload_len: None,
            exts: Vec::new(),
            hop_limit: 64,
        }))
    }

    /// A frame of any EtherType whose network payload is `payload`, verbatim.
    pub fn raw_ethertype(ethertype: u16, payload: impl Into<Vec<u8>>) -> Self {
        let mut f = Frame::with_net(Net::Raw { ethertype });
        f.payload = Some(payload.into());
        f
    }

    /// An ARP who-has request (28 bytes, padded to the 60-byte minimum frame).
    pub fn arp_request(sender: Ipv4Addr, target: Ipv4Addr) -> Self {
        let mut p = vec![0, 1, 8, 0, 6, 4, 0, 1];
        p.extend_from_slice(&SRC_MAC);
        p.extend_from_slice(&sender.octets());
        p.extend_from_slice(&[0; 6]);
        p.extend_from_slice(&target.octets());
        Frame::raw_ethertype(ETH_P_ARP, p).ethernet_padding(18)
    }

    /// Push a VLAN tag (call outermost first).
    pub fn vlan(mut self, tpid: u16, vid: u16) -> Self {
        self.vlans.push((tpid, vid));
        self
    }

    /// TCP with the SYN flag.
    pub fn tcp(self, sport: u16, dport: u16) -> Self {
        self.tcp_flags(sport, dport, 0x02)
    }

    /// TCP with the given flags byte (sequence number 0x10000000, ack 0,
    /// window 64240, no options).
    pub fn tcp_flags(mut self, sport: u16, dport: u16, flags: u8) -> Self {
        self.l4 = L4::Tcp {
            sport,
            dport,
            flags,
            seq: 0x1000_0000,
            ack: 0,
            window: 64240,
            doff: 5,
        };
        self
    }

    fn tcp_knob(&mut self, knob: &str) -> (&mut u32, &mut u32, &mut u16, &mut u8) {
        match &mut self.l4 {
            L4::Tcp {
                seq,
                ack,
                window,
                doff,
                ..
            } => (seq, ack, window, doff),
            _ => panic!("Frame::{knob} applies to TCP frames only (call .tcp() first)"),
        }
    }

    /// The TCP sequence and acknowledgment numbers.
    pub fn seq_ack(mut self, seq: u32, ack: u32) -> Self {
        let (s, a, _, _) = self.tcp_knob("seq_ack");
        (*s, *a) = (seq, ack);
        self
    }

    /// The TCP window.
    pub fn window(mut self, window: u16) -> Self {
        *self.tcp_knob("window").2 = window;
        self
    }

    /// Override the TCP data offset field (in 32-bit words).
    pub fn tcp_doff(mut self, words: u8) -> Self {
        *self.tcp_knob("tcp_doff").3 = words;
        self
    }

    /// An ICMP destination-unreachable-style error (IPv4: ICMP, IPv6:
    /// ICMPv6, by the frame's family) quoting `quote`.
    pub fn icmp_error(mut self, ty: u8, code: u8, quote: impl Into<Vec<u8>>) -> Self {
        self.l4 = L4::IcmpError { ty, code };
        self.payload = Some(quote.into());
        self
    }

    /// The destination and source MAC addresses.
    pub fn macs(mut self, dst: [u8; 6], src: [u8; 6]) -> Self {
        self.macs = (dst, src);
        self
    }

    /// The IPv4 TOS byte.
    pub fn tos(mut self, tos: u8) -> Self {
        self.v4("tos").tos = tos;
        self
    }

    /// The IPv4 identification.
    pub fn ip_id(mut self, id: u16) -> Self {
        self.v4("ip_id").id = id;
        self
    }

    pub fn udp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = L4::Udp { sport, dport };
        self
    }

    /// SCTP common header; the default payload is an INIT chunk.
    pub fn sctp(mut self, sport: u16, dport: u16) -> Self {
        self.l4 = L4::Sctp { sport, dport };
        self
    }

    /// ICMP echo request.
    pub fn icmp(mut self) -> Self {
        self.l4 = L4::Icmp;
        self
    }

    /// ICMPv6 echo request.
    pub fn icmpv6(mut self) -> Self {
        self.l4 = L4::Icmpv6;
        self
    }

    /// Any IP protocol (or IPv6 final Next Header) with a verbatim payload.
    pub fn proto(mut self, proto: u8, payload: impl Into<Vec<u8>>) -> Self {
        self.l4 = L4::Raw { proto };
        self.payload = Some(payload.into());
        self
    }

    /// Bytes after the layer-4 header (replaces the default payload).
    pub fn payload(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.payload = Some(bytes.into());
        self
    }

    fn v4(&mut self, knob: &str) -> &mut Ip4 {
        match &mut self.net {
            Net::V4(ip) => ip,
            _ => panic!("Frame::{knob} applies to IPv4 frames only"),
        }
    }

    fn v6(&mut self, knob: &str) -> &mut Ip6 {
        match &mut self.net {
            Net::V6(ip) => ip,
            _ => panic!("Frame::{knob} applies to IPv6 frames only"),
        }
    }

    /// IPv4 options, padded with zero (end of option list) to a multiple of 4.
    pub fn ipv4_options(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        let mut opts: Vec<u8> = bytes.into();
        while !opts.len().is_multiple_of(4) {
            opts.push(0);
        }
        self.v4("ipv4_options").options = opts;
        self
    }

    /// Override the IHL field (the header bytes emitted stay 20 + options).
    pub fn ihl(mut self, ihl: u8) -> Self {
        self.v4("ihl").ihl = Some(ihl);
        self
    }

    /// Override the total length field.
    pub fn total_len(mut self, len: u16) -> Self {
        self.v4("total_len").total_len = Some(len);
        self
    }

    /// Fragment: `offset` in units of 8 bytes, `more` = MF. Clears DF.
    pub fn frag(mut self, offset: u16, more: bool) -> Self {
        let field = (offset & 0x1fff) | if more { 0x2000 } else { 0 };
        self.v4("frag").frag_field = field;
        self
    }

    /// The raw flags + fragment offset field (bytes 6–7 of the IPv4 header).
    pub fn frag_field(mut self, field: u16) -> Self {
        self.v4("frag_field").frag_field = field;
        self
    }

    /// Override the IP version nibble (IPv4 or IPv6 frames).
    pub fn version(mut self, version: u8) -> Self {
        match &mut self.net {
            Net::V4(ip) => ip.version = version,
            Net::V6(ip) => ip.version = version,
            Net::Raw { .. } => panic!("Frame::version applies to IP frames only"),
        }
        self
    }

    /// Append an IPv6 extension header (in wire order).
    pub fn ext(mut self, header: ExtHeader) -> Self {
        self.v6("ext").exts.push(header);
        self
    }

    /// Override the IPv6 payload length field.
    pub fn payload_len(mut self, len: u16) -> Self {
        self.v6("payload_len").payload_len = Some(len);
        self
    }

    /// `n` zero bytes after the IP packet (not counted in any IP length).
    pub fn ethernet_padding(mut self, n: usize) -> Self {
        self.trailer.extend(std::iter::repeat_n(0, n));
        self
    }

    /// Arbitrary bytes after the IP packet (not counted in any IP length).
    pub fn trailer(mut self, bytes: impl AsRef<[u8]>) -> Self {
        self.trailer.extend_from_slice(bytes.as_ref());
        self
    }

    /// Cut the finished frame to at most `len` bytes in total.
    pub fn truncate(mut self, len: usize) -> Self {
        self.truncate = Some(len);
        self
    }

    /// The IP protocol / final IPv6 Next Header the layer 4 announces.
    fn l4_proto(&self) -> u8 {
        match self.l4 {
            L4::None => PROTO_NONE,
            L4::Tcp { .. } => PROTO_TCP,
            L4::Udp { .. } => PROTO_UDP,
            L4::Sctp { .. } => PROTO_SCTP,
            L4::Icmp => PROTO_ICMP,
            L4::Icmpv6 => PROTO_ICMPV6,
            L4::IcmpError { .. } => match self.net {
                Net::V6(_) => PROTO_ICMPV6,
                _ => PROTO_ICMP,
            },
            L4::Raw { proto } => proto,
        }
    }

    /// Layer-4 bytes (header + payload) with checksums over the pseudo header of the
    /// frame's IP family.
    fn l4_bytes(&self) -> Vec<u8> {
        let payload = self.payload.clone();
        let pseudo = |proto: u8, len: usize| -> Vec<u8> {
            match &self.net {
                Net::V4(ip) => pseudo_header_v4(ip.src, ip.dst, proto, len),
                Net::V6(ip) => pseudo_header_v6(ip.src, ip.dst, proto, len),
                Net::Raw { .. } => Vec::new(),
            }
        };
        match self.l4 {
            L4::None | L4::Raw { .. } => payload.unwrap_or_default(),
            L4::Tcp {
                sport,
                dport,
                flags,
                seq,
                ack,
                window,
                doff,
            } => {
                let mut b = Vec::with_capacity(20);
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&seq.to_be_bytes());
                b.extend_from_slice(&ack.to_be_bytes());
                b.push(doff << 4);
                b.push(flags);
                b.extend_from_slice(&window.to_be_bytes());
                b.extend_from_slice(&[0, 0]); // checksum
                b.extend_from_slice(&[0, 0]); // urgent pointer
                b.extend(payload.unwrap_or_default());
                let mut all = pseudo(PROTO_TCP, b.len());
                all.extend_from_slice(&b);
                let ck = internet_checksum(&all);
                b[16..18].copy_from_slice(&ck.to_be_bytes());
                b
            }
            L4::Udp { sport, dport } => {
                let payload = payload.unwrap_or_default();
                let len = 8 + payload.len();
                let mut b = Vec::with_capacity(len);
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                b.extend_from_slice(&(len as u16).to_be_bytes());
                b.extend_from_slice(&[0, 0]);
                b.extend(payload);
                let mut all = pseudo(PROTO_UDP, b.len());
                all.extend_from_slice(&b);
                let mut ck = internet_checksum(&all);
                if ck == 0 {
                    ck = 0xffff; // 0 means "no checksum" (forbidden over IPv6)
                }
                b[6..8].copy_from_slice(&ck.to_be_bytes());
                b
            }
            L4::Sctp { sport, dport } => {
                let mut b = Vec::with_capacity(32);
                b.extend_from_slice(&sport.to_be_bytes());
                b.extend_from_slice(&dport.to_be_bytes());
                let chunks = payload.unwrap_or_else(sctp_init_chunk);
                // INIT must carry verification tag 0; other chunks get a fixed tag.
                let vtag: u32 = if chunks.first() == Some(&1) {
                    0
                } else {
                    0x5c7f_0001
                };
                b.extend_from_slice(&vtag.to_be_bytes());
                b.extend_from_slice(&[0, 0, 0, 0]);
                b.extend(chunks);
                let crc = crc32c(&b);
                // RFC 9260 appendix A: the CRC is stored least significant byte first.
                b[8..12].copy_from_slice(&crc.to_le_bytes());
                b
            }
            L4::IcmpError { ty, code } => {
                let mut b = vec![ty, code, 0, 0, 0, 0, 0, 0];
                b.extend(payload.unwrap_or_default());
                let ck = match &self.net {
                    Net::V6(_) => {
                        let mut all = pseudo(PROTO_ICMPV6, b.len());
                        all.extend_from_slice(&b);
                        internet_checksum(&all)
                    }
                    _ => internet_checksum(&b),
                };
                b[2..4].copy_from_slice(&ck.to_be_bytes());
                b
            }
            L4::Icmp | L4::Icmpv6 => {
                let ty = if self.l4 == L4::Icmp { 8 } else { 128 };
                let mut b = vec![ty, 0, 0, 0, 0x4b, 0x1d, 0, 1];
                b.extend(payload.unwrap_or_else(|| b"portcullis-ping!".to_vec()));
                let ck = if self.l4 == L4::Icmpv6 {
                    let mut all = pseudo(PROTO_ICMPV6, b.len());
                    all.extend_from_slice(&b);
                    internet_checksum(&all)
                } else {
                    internet_checksum(&b)
                };
                b[2..4].copy_from_slice(&ck.to_be_bytes());
                b
            }
        }
    }

    /// The network-layer bytes (IP header(s) + layer 4, or the raw payload).
    fn net_bytes(&self) -> (u16, Vec<u8>) {
        match &self.net {
            Net::Raw { ethertype } => (*ethertype, self.payload.clone().unwrap_or_default()),
            Net::V4(ip) => {
                let l4 = self.l4_bytes();
                let hlen = 20 + ip.options.len();
                let ihl = ip.ihl.unwrap_or((hlen / 4) as u8);
                let total = ip.total_len.unwrap_or((hlen + l4.len()) as u16);
                let mut h = Vec::with_capacity(hlen + l4.len());
                h.push((ip.version << 4) | (ihl & 0x0f));
                h.push(ip.tos); // DSCP/ECN
                h.extend_from_slice(&total.to_be_bytes());
                h.extend_from_slice(&ip.id.to_be_bytes());
                h.extend_from_slice(&ip.frag_field.to_be_bytes());
                h.push(ip.ttl);
                h.push(self.l4_proto());
                h.extend_from_slice(&[0, 0]);
                h.extend_from_slice(&ip.src.octets());
                h.extend_from_slice(&ip.dst.octets());
                h.extend_from_slice(&ip.options);
                let ck = internet_checksum(&h);
                h[10..12].copy_from_slice(&ck.to_be_bytes());
                h.extend(l4);
                (ETH_P_IPV4, h)
            }
            Net::V6(ip) => {
                let l4 = self.l4_bytes();
                let mut exts = Vec::new();
                for (i, ext) in ip.exts.iter().enumerate() {
                    let next = match ip.exts.get(i + 1) {
                        Some(n) => n.type_value(),
                        None => self.l4_proto(),
                    };
                    exts.extend(ext.encode(next));
                }
                let first = match ip.exts.first() {
                    Some(e) => e.type_value(),
                    None => self.l4_proto(),
                };
                let plen = ip.payload_len.unwrap_or((exts.len() + l4.len()) as u16);
                let mut h = Vec::with_capacity(40 + exts.len() + l4.len());
                h.extend_from_slice(&(u32::from(ip.version) << 28).to_be_bytes());
                h.extend_from_slice(&plen.to_be_bytes());
                h.push(first);
                h.push(ip.hop_limit);
                h.extend_from_slice(&ip.src.octets());
                h.extend_from_slice(&ip.dst.octets());
                h.extend(exts);
                h.extend(l4);
                (ETH_P_IPV6, h)
            }
        }
    }

    /// The finished frame.
    pub fn build(&self) -> Vec<u8> {
        let (ethertype, net) = self.net_bytes();
        let mut f = Vec::with_capacity(14 + 4 * self.vlans.len() + net.len() + self.trailer.len());
        f.extend_from_slice(&self.macs.0);
        f.extend_from_slice(&self.macs.1);
        for &(tpid, vid) in &self.vlans {
            f.extend_from_slice(&tpid.to_be_bytes());
            // TCI: PCP 0, DEI 0, VID
            let tci = vid & 0x0fff;
            f.extend_from_slice(&tci.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend(net);
        f.extend_from_slice(&self.trailer);
        if let Some(n) = self.truncate {
            f.truncate(n);
        }
        f
    }

    /// Simpler variants of this frame (one knob removed each), for test-case
    /// minimisation. The result may behave differently; the caller decides.
    pub fn simplifications(&self) -> Vec<Frame> {
        let mut out = Vec::new();
        for i in 0..self.vlans.len() {
            let mut f = self.clone();
            f.vlans.remove(i);
            out.push(f);
        }
        if !self.trailer.is_empty() {
            let mut f = self.clone();
            f.trailer.clear();
            out.push(f);
        }
        if self.payload.as_ref().is_some_and(|p| !p.is_empty()) {
            let mut f = self.clone();
            f.payload = Some(Vec::new());
            out.push(f);
        }
        match &self.net {
            Net::V4(ip) => {
                if !ip.options.is_empty() {
                    let mut f = self.clone();
                    f.v4("simplify").options.clear();
                    out.push(f);
                }
            }
            Net::V6(ip) => {
                for i in 0..ip.exts.len() {
                    let mut f = self.clone();
                    f.v6("simplify").exts.remove(i);
                    out.push(f);
                }
            }
            Net::Raw { .. } => {}
        }
        if let Some(n) = self.truncate {
            // try cutting more
            for cut in [n / 2, n.saturating_sub(1)] {
                if cut < n {
                    let mut f = self.clone();
                    f.truncate = Some(cut);
                    out.push(f);
                }
            }
        }
        out
    }
}

/// A minimal SCTP INIT chunk (20 bytes).
fn sctp_init_chunk() -> Vec<u8> {
    let mut c = vec![1, 0];
    c.extend_from_slice(&20u16.to_be_bytes());
    c.extend_from_slice(&0x0102_0304u32.to_be_bytes()); // initiate tag
    c.extend_from_slice(&65535u32.to_be_bytes()); // a_rwnd
    c.extend_from_slice(&10u16.to_be_bytes()); // outbound streams
    c.extend_from_slice(&10u16.to_be_bytes()); // inbound streams
    c.extend_from_slice(&1u32.to_be_bytes()); // initial TSN
    c
}

/// Lowercase hex of `bytes`, no separators.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a4() -> (Ipv4Addr, Ipv4Addr) {
        (Ipv4Addr::new(10, 20, 30, 40), Ipv4Addr::new(192, 0, 2, 1))
    }

    fn a6() -> (Ipv6Addr, Ipv6Addr) {
        (
            "2001:db8:1::10".parse().unwrap(),
            "2001:db8:ffff::1".parse().unwrap(),
        )
    }

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    #[test]
    fn internet_checksum_matches_rfc1071_example() {
        // RFC 1071 §3: the sum of these words is 0xddf2 (before inversion).
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&data), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn ipv4_header_sums_to_ffff() {
        let (s, d) = a4();
        for f in [
            Frame::ipv4(s, d).tcp(1234, 22),
            Frame::ipv4(s, d)
                .ipv4_options([0x94, 0x04, 0, 0, 1])
                .udp(1, 2),
            Frame::ipv4(s, d).frag(100, true).icmp(),
        ] {
            let b = f.build();
            let ihl = usize::from(b[14] & 0x0f) * 4;
            assert_eq!(ones_complement_sum(&b[14..14 + ihl]), 0xffff);
        }
    }

    #[test]
    fn ipv4_layout_is_as_requested() {
        let (s, d) = a4();
        let b = Frame::ipv4(s, d)
            .vlan(ETH_P_8021AD, 100)
            .vlan(ETH_P_8021Q, 200)
            .ipv4_options([1, 1, 1])
            .tcp(40000, 8889)
            .payload(b"hello".to_vec())
            .ethernet_padding(7)
            .build();
        assert_eq!(&b[0..6], &DST_MAC);
        assert_eq!(&b[6..12], &SRC_MAC);
        assert_eq!(&b[12..14], &[0x88, 0xa8]);
        assert_eq!(&b[14..16], &100u16.to_be_bytes());
        assert_eq!(&b[16..18], &[0x81, 0x00]);
        assert_eq!(&b[20..22], &[0x08, 0x00]);
        let ip = &b[22..];
        assert_eq!(ip[0], 0x46); // version 4, IHL 6 (one options word)
        assert_eq!(u16::from_be_bytes([ip[2], ip[3]]), 24 + 20 + 5);
        assert_eq!(ip[9], PROTO_TCP);
        assert_eq!(&ip[24 + 2..24 + 4], &8889u16.to_be_bytes());
        assert_eq!(b.len(), 22 + 24 + 20 + 5 + 7);
    }

    #[test]
    fn tcp_and_udp_checksums_verify_with_the_v4_pseudo_header() {
        let (s, d) = a4();
        for (proto, f) in [
            (
                PROTO_TCP,
                Frame::ipv4(s, d).tcp(1000, 22).payload(vec![7; 13]),
            ),
            (
                PROTO_UDP,
                Frame::ipv4(s, d).udp(1000, 53).payload(vec![9; 3]),
            ),
        ] {
            let b = f.build();
            let l4 = &b[34..];
            let mut all = pseudo_header_v4(s, d, proto, l4.len());
            all.extend_from_slice(l4);
            assert_eq!(ones_complement_sum(&all), 0xffff, "proto {proto}");
        }
    }

    #[test]
    fn tcp_udp_icmpv6_checksums_verify_with_the_v6_pseudo_header() {
        let (s, d) = a6();
        for (proto, f) in [
            (PROTO_TCP, Frame::ipv6(s, d).tcp(1000, 22)),
            (
                PROTO_UDP,
                Frame::ipv6(s, d).udp(1000, 53).payload(vec![1, 2, 3]),
            ),
            (PROTO_ICMPV6, Frame::ipv6(s, d).icmpv6()),
        ] {
            let b = f.build();
            let l4 = &b[54..];
            let mut all = pseudo_header_v6(s, d, proto, l4.len());
            all.extend_from_slice(l4);
            assert_eq!(ones_complement_sum(&all), 0xffff, "proto {proto}");
        }
    }

    #[test]
    fn udp_over_ipv6_checksum_is_never_zero() {
        let (s, d) = a6();
        // Search payloads until the natural checksum would be 0: the builder must
        // then write 0xffff. Either way the field must be nonzero.
        for x in 0..=0xffffu32 {
            let b = Frame::ipv6(s, d)
                .udp(1, 2)
                .payload((x as u16).to_be_bytes().to_vec())
                .build();
            assert_ne!(&b[60..62], &[0, 0]);
        }
    }

    #[test]
    fn icmp_checksum_verifies() {
        let (s, d) = a4();
        let b = Frame::ipv4(s, d).icmp().build();
        assert_eq!(ones_complement_sum(&b[34..]), 0xffff);
    }

    #[test]
    fn sctp_crc32c_verifies() {
        let (s, d) = a4();
        let b = Frame::ipv4(s, d).sctp(5000, 3868).build();
        let mut l4 = b[34..].to_vec();
        let stored = u32::from_le_bytes([l4[8], l4[9], l4[10], l4[11]]);
        l4[8..12].copy_from_slice(&[0; 4]);
        assert_eq!(crc32c(&l4), stored);
        assert_eq!(l4.len(), 12 + 20); // common header + INIT chunk
    }

    #[test]
    fn ipv6_extension_chain_is_linked() {
        let (s, d) = a6();
        let b = Frame::ipv6(s, d)
            .ext(ExtHeader::HopByHop { len_units: 0 })
            .ext(ExtHeader::Routing { len_units: 1 })
            .ext(ExtHeader::Ah { len_field: 4 })
            .ext(ExtHeader::frag(0, true))
            .tcp(1, 443)
            .build();
        let ip = &b[14..];
        assert_eq!(ip[0] >> 4, 6);
        assert_eq!(ip[6], PROTO_HOPOPTS);
        let plen = u16::from_be_bytes([ip[4], ip[5]]) as usize;
        assert_eq!(plen, 8 + 16 + 24 + 8 + 20);
        assert_eq!(ip.len(), 40 + plen);
        let mut pos = 40;
        assert_eq!(ip[pos], PROTO_ROUTING);
        pos += 8;
        assert_eq!(ip[pos], PROTO_AH);
        pos += 16;
        assert_eq!(ip[pos], PROTO_FRAGMENT);
        assert_eq!(ip[pos + 1], 4);
        pos += 24;
        assert_eq!(ip[pos], PROTO_TCP);
        assert_eq!(&ip[pos + 2..pos + 4], &[0, 1]); // offset 0, M = 1
        pos += 8;
        assert_eq!(&ip[pos + 2..pos + 4], &443u16.to_be_bytes());
    }

    #[test]
    fn fragment_header_encodes_offset_and_more() {
        let e = ExtHeader::frag(0x1fff, true).encode(PROTO_UDP);
        assert_eq!(e[0], PROTO_UDP);
        assert_eq!(u16::from_be_bytes([e[2], e[3]]), 0xfff9);
        let e = ExtHeader::frag(1, false).encode(PROTO_TCP);
        assert_eq!(u16::from_be_bytes([e[2], e[3]]), 8);
    }

    #[test]
    fn overrides_and_truncation_apply() {
        let (s, d) = a4();
        let b = Frame::ipv4(s, d)
            .tcp(1, 2)
            .ihl(3)
            .total_len(9999)
            .version(5)
            .frag(1, false)
            .build();
        assert_eq!(b[14], 0x53);
        assert_eq!(&b[16..18], &9999u16.to_be_bytes());
        assert_eq!(&b[20..22], &1u16.to_be_bytes());
        assert_eq!(Frame::ipv4(s, d).tcp(1, 2).truncate(20).build().len(), 20);
        let (s6, d6) = a6();
        let b = Frame::ipv6(s6, d6)
            .udp(1, 2)
            .payload_len(3)
            .version(4)
            .build();
        assert_eq!(b[14] >> 4, 4);
        assert_eq!(&b[18..20], &[0, 3]);
    }

    #[test]
    fn raw_ext_header_gets_chained_next_header() {
        let (s, d) = a6();
        let b = Frame::ipv6(s, d)
            .ext(ExtHeader::Raw {
                next_header_value: 253,
                bytes: vec![0xee, 0, 1, 2, 3, 4, 5, 6],
            })
            .udp(1, 2)
            .build();
        assert_eq!(b[14 + 6], 253);
        assert_eq!(b[54], PROTO_UDP);
        assert_eq!(&b[55..62], &[0, 1, 2, 3, 4, 5, 6]);
    }
}
