//! Header parsing, exactly as docs/parsing-contract.md publishes it. Anything the
//! contract does not accept is `Malformed`; nothing is guessed.
use aya_ebpf::programs::XdpContext;
use filter_common::proto_index;

const ETH_HLEN: usize = 14;
const ETH_P_IPV4: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;
const MAX_VLAN_TAGS: usize = 2;

const IPV6_HLEN: usize = 40;
const MAX_EXT_HEADERS: usize = 8;
const NH_HOP_BY_HOP: u8 = 0;
const NH_ROUTING: u8 = 43;
const NH_FRAGMENT: u8 = 44;
const NH_AH: u8 = 51;
const NH_DEST_OPTS: u8 = 60;
const NH_MOBILITY: u8 = 135;
const IPPROTO_TCP: u8 = 6;

/// Offsets beyond this are no valid single-buffer XDP frame; the bound also lets
/// the verifier prove every variable packet offset below.
const MAX_OFFSET: usize = 0x4000;

/// Where a packet comes from, as the rules judge it (IPv4-mapped IPv6 → V4).
#[derive(Clone, Copy)]
pub enum Src {
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Clone, Copy)]
pub enum L4 {
    /// TCP/UDP/SCTP with a readable header.
    Ports { proto_index: u32, dport: u16 },
    /// A protocol without ports (ICMP, ESP, no next header, …).
    NoPorts,
    /// A fragment with offset ≠ 0: no ports, never read as if it had them.
    NonFirstFragment,
}

#[derive(Clone, Copy)]
pub struct IpPacket {
    pub src: Src,
    pub l4: L4,
    /// Offset 0 with more fragments to come (IPv4 MF, IPv6 M flag).
    pub first_fragment: bool,
    /// Where the headers are, for a sampled event (events.rs reads the
    /// destination and source port from there, only when it emits).
    pub at: Headers,
}

/// Offsets and the protocol of an IP packet's headers, as parsed.
#[derive(Clone, Copy)]
pub struct Headers {
    /// Offset of the IP header.
    pub l3: u16,
    /// Offset of the layer-4 header; 0 for a non-first fragment.
    pub l4: u16,
    /// IP protocol (the last next header for IPv6).
    pub proto: u8,
    /// The IP header is IPv6 (also for IPv4-mapped sources).
    pub v6: bool,
}

#[derive(Clone, Copy)]
pub enum Parsed {
    NonIp,
    Malformed,
    Ip(IpPacket),
}

/// The one pointer-access helper: a copy of `N` bytes at `off`, if they lie
/// inside the frame.
#[inline(always)]
pub fn bytes<const N: usize>(ctx: &XdpContext, off: usize) -> Option<[u8; N]> {
    if off > MAX_OFFSET {
        return None;
    }
    let start = ctx.data();
    let end = ctx.data_end();
    if start + off + N > end {
        return None;
    }
    // SAFETY: the N bytes at start+off were just checked to lie in the packet.
    Some(unsafe { *((start + off) as *const [u8; N]) })
}

#[inline(always)]
fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

#[inline(always)]
pub fn parse(ctx: &XdpContext) -> Parsed {
    let Some(eth) = bytes::<ETH_HLEN>(ctx, 0) else {
        return Parsed::Malformed;
    };
    let mut ethertype = be16([eth[12], eth[13]]);
    let mut off = ETH_HLEN;
    let mut tags = 0;
    while ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD {
        if tags == MAX_VLAN_TAGS {
            return Parsed::Malformed;
        }
        let Some(tag) = bytes::<4>(ctx, off) else {
            return Parsed::Malformed;
        };
        ethertype = be16([tag[2], tag[3]]);
        off += 4;
        tags += 1;
    }
    match ethertype {
        ETH_P_IPV4 => parse_ipv4(ctx, off),
        ETH_P_IPV6 => parse_ipv6(ctx, off),
        _ => Parsed::NonIp,
    }
}

#[inline(always)]
fn parse_ipv4(ctx: &XdpContext, l3: usize) -> Parsed {
    let Some(h) = bytes::<20>(ctx, l3) else {
        return Parsed::Malformed;
    };
    if h[0] >> 4 != 4 {
        return Parsed::Malformed;
    }
    let hlen = ((h[0] & 0x0f) as usize) * 4;
    if hlen < 20 {
        return Parsed::Malformed;
    }
    let total = be16([h[2], h[3]]) as usize;
    let present = ctx.data_end() - ctx.data() - l3;
    if total < hlen || total > present {
        return Parsed::Malformed;
    }
    let frag = be16([h[6], h[7]]);
    let offset = frag & 0x1fff;
    let more = frag & 0x2000 != 0;
    let proto = h[9];
    let src = Src::V4([h[12], h[13], h[14], h[15]]);
    let at = |l4: usize| Headers {
        l3: l3 as u16,
        l4: l4 as u16,
        proto,
        v6: false,
    };
    if offset != 0 {
        if proto == IPPROTO_TCP && offset == 1 {
            return Parsed::Malformed;
        }
        return ip(src, L4::NonFirstFragment, false, at(0));
    }
    match l4(ctx, proto, l3 + hlen, l3 + total) {
        Some(l4) => ip(src, l4, more, at(l3 + hlen)),
        None => Parsed::Malformed,
    }
}

#[inline(always)]
fn parse_ipv6(ctx: &XdpContext, l3: usize) -> Parsed {
    let Some(h) = bytes::<IPV6_HLEN>(ctx, l3) else {
        return Parsed::Malformed;
    };
    if h[0] >> 4 != 6 {
        return Parsed::Malformed;
    }
    let end = l3 + IPV6_HLEN + be16([h[4], h[5]]) as usize;
    if end > ctx.data_end() - ctx.data() {
        return Parsed::Malformed;
    }
    let mut src = [0u8; 16];
    src.copy_from_slice(&h[8..24]);
    let src = source_v6(src);

    let mut nh = h[6];
    let mut off = l3 + IPV6_HLEN;
    let mut first_fragment = false;
    let mut seen_fragment = false;
    for i in 0..=MAX_EXT_HEADERS {
        let (len, e) = match nh {
            NH_HOP_BY_HOP | NH_ROUTING | NH_DEST_OPTS | NH_MOBILITY | NH_AH | NH_FRAGMENT => {
                if i == MAX_EXT_HEADERS || (nh == NH_HOP_BY_HOP && i != 0) {
                    return Parsed::Malformed;
                }
                // Four bytes, though the length is in the first two: every
                // extension header is at least 8 bytes (shorter is cut off
                // below anyway), and the fragment header's offset is in
                // bytes 2-3. One check the verifier sees for all of them
                // (LLVM may drop a second one it can prove from `end`).
                let Some(e) = bytes::<4>(ctx, off) else {
                    return Parsed::Malformed;
                };
                let len = match nh {
                    NH_AH => (e[1] as usize + 2) * 4,
                    NH_FRAGMENT => 8,
                    _ => (e[1] as usize + 1) * 8,
                };
                (len, e)
            }
            _ => break,
        };
        if off + len > end {
            return Parsed::Malformed;
        }
        if nh == NH_FRAGMENT {
            if seen_fragment {
                return Parsed::Malformed;
            }
            seen_fragment = true;
            let f = e;
            let field = be16([f[2], f[3]]);
            let offset = field >> 3;
            if offset != 0 {
                if f[0] == IPPROTO_TCP && offset == 1 {
                    return Parsed::Malformed;
                }
                let at = Headers {
                    l3: l3 as u16,
                    l4: 0,
                    proto: f[0],
                    v6: true,
                };
                return ip(src, L4::NonFirstFragment, false, at);
            }
            first_fragment = field & 1 != 0;
        }
        nh = e[0];
        off += len;
    }
    let at = Headers {
        l3: l3 as u16,
        l4: off as u16,
        proto: nh,
        v6: true,
    };
    match l4(ctx, nh, off, end) {
        Some(l4) => ip(src, l4, first_fragment, at),
        None => Parsed::Malformed,
    }
}

/// IPv4-mapped IPv6 sources are judged as IPv4.
#[inline(always)]
fn source_v6(a: [u8; 16]) -> Src {
    let mapped = a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff;
    if mapped {
        Src::V4([a[12], a[13], a[14], a[15]])
    } else {
        Src::V6(a)
    }
}

/// Layer 4 in `[off, end)`. `None` = malformed (ports protocol, header cut short).
#[inline(always)]
fn l4(ctx: &XdpContext, proto: u8, off: usize, end: usize) -> Option<L4> {
    let Some(pi) = proto_index(proto) else {
        return Some(L4::NoPorts);
    };
    let need = match proto {
        IPPROTO_TCP => 20,
        17 => 8,
        _ => 12,
    };
    if off + need > end {
        return None;
    }
    let p = bytes::<4>(ctx, off)?;
    Some(L4::Ports {
        proto_index: pi,
        dport: be16([p[2], p[3]]),
    })
}

#[inline(always)]
fn ip(src: Src, l4: L4, first_fragment: bool, at: Headers) -> Parsed {
    Parsed::Ip(IpPacket {
        src,
        l4,
        first_fragment,
        at,
    })
}
