//! Minimal frame builder (Ethernet + IPv4/IPv6 + UDP/TCP, valid checksums) and
//! the checksum sums the generator program needs.
use std::net::{Ipv4Addr, Ipv6Addr};

pub const MAC_TX: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const MAC_RX: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];
/// The receiver's address in the bench namespace.
pub const RX_ADDR: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 2);
pub const PAYLOAD: usize = 18; // 64-byte frames for UDP over IPv4 (without FCS: 60)

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum L4 {
    Udp,
    /// Built by the tests; the floods use UDP (see veth.rs).
    #[allow(dead_code)]
    Tcp,
}

fn sum16(data: &[u8]) -> u32 {
    data.chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
        .sum()
}

fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

fn eth(ethertype: u16) -> Vec<u8> {
    let mut f = Vec::with_capacity(80);
    f.extend_from_slice(&MAC_RX);
    f.extend_from_slice(&MAC_TX);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

fn l4_header(l4: L4, sport: u16, dport: u16, len: usize) -> Vec<u8> {
    match l4 {
        L4::Udp => {
            let mut h = Vec::with_capacity(8);
            h.extend_from_slice(&sport.to_be_bytes());
            h.extend_from_slice(&dport.to_be_bytes());
            h.extend_from_slice(&(len as u16).to_be_bytes());
            h.extend_from_slice(&[0, 0]);
            h
        }
        L4::Tcp => {
            let mut h = vec![0u8; 20];
            h[0..2].copy_from_slice(&sport.to_be_bytes());
            h[2..4].copy_from_slice(&dport.to_be_bytes());
            h[4..8].copy_from_slice(&1u32.to_be_bytes());
            h[12] = 5 << 4;
            h[13] = 0x02; // SYN
            h[14..16].copy_from_slice(&64240u16.to_be_bytes());
            h
        }
    }
}

fn proto(l4: L4) -> u8 {
    match l4 {
        L4::Udp => 17,
        L4::Tcp => 6,
    }
}

fn csum_off(l4: L4) -> usize {
    match l4 {
        L4::Udp => 6,
        L4::Tcp => 16,
    }
}

/// An IPv4 frame with valid checksums.
pub fn ipv4(src: Ipv4Addr, dst: Ipv4Addr, l4: L4, sport: u16, dport: u16) -> Vec<u8> {
    let hdr_len = match l4 {
        L4::Udp => 8,
        L4::Tcp => 20,
    };
    let payload = if l4 == L4::Udp { PAYLOAD } else { 6 };
    let l4_len = hdr_len + payload;
    let mut ip = vec![0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&((20 + l4_len) as u16).to_be_bytes());
    ip[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
    ip[6] = 0x40; // DF
    ip[8] = 64;
    ip[9] = proto(l4);
    ip[12..16].copy_from_slice(&src.octets());
    ip[16..20].copy_from_slice(&dst.octets());
    let c = fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut seg = l4_header(l4, sport, dport, l4_len);
    seg.extend(std::iter::repeat_n(0xab, payload));
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto(l4)]);
    pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
    let mut c = fold(sum16(&pseudo) + sum16(&seg));
    if c == 0 && l4 == L4::Udp {
        c = 0xffff;
    }
    let o = csum_off(l4);
    seg[o..o + 2].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(0x0800);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&seg);
    f
}

/// An IPv6 UDP frame with a valid checksum.
pub fn ipv6_udp(src: Ipv6Addr, dst: Ipv6Addr, sport: u16, dport: u16) -> Vec<u8> {
    let l4_len = 8 + PAYLOAD;
    let mut ip = vec![0u8; 40];
    ip[0] = 0x60;
    ip[4..6].copy_from_slice(&(l4_len as u16).to_be_bytes());
    ip[6] = 17;
    ip[7] = 64;
    ip[8..24].copy_from_slice(&src.octets());
    ip[24..40].copy_from_slice(&dst.octets());
    let mut seg = l4_header(L4::Udp, sport, dport, l4_len);
    seg.extend(std::iter::repeat_n(0xab, PAYLOAD));
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&(l4_len as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    let mut c = fold(sum16(&pseudo) + sum16(&seg));
    if c == 0 {
        c = 0xffff;
    }
    seg[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(0x86dd);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&seg);
    f
}

/// What the generator needs for a template built by [`ipv4`]: the frame with
/// source 0.0.0.0, and the one's-complement sums of the IPv4 header and of the
/// L4 checksum's coverage, both without the checksum fields and the source.
pub struct GenTemplate {
    pub frame: Vec<u8>,
    pub ip_sum: u32,
    pub l4_sum: u32,
    pub l4_csum_off: u32,
}

pub fn gen_template(l4: L4, dport: u16) -> GenTemplate {
    let mut frame = ipv4(Ipv4Addr::UNSPECIFIED, RX_ADDR, l4, 40000, dport);
    frame[24..26].fill(0);
    let ip_sum = sum16(&frame[14..34]);
    let o = 34 + csum_off(l4);
    frame[o..o + 2].fill(0);
    let l4_len = frame.len() - 34;
    let mut pseudo = Vec::with_capacity(12);
    pseudo.extend_from_slice(&[0, 0, 0, 0]);
    pseudo.extend_from_slice(&frame[30..34]);
    pseudo.extend_from_slice(&[0, proto(l4)]);
    pseudo.extend_from_slice(&(l4_len as u16).to_be_bytes());
    let l4_sum = sum16(&pseudo) + sum16(&frame[34..]);
    GenTemplate {
        frame,
        ip_sum,
        l4_sum,
        l4_csum_off: o as u32,
    }
}

/// The receiver's IPv6 address (destination of the IPv6 floods; nothing
/// listens, and the floods drop before the stack).
pub const RX_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 2);
/// Offset of the IPv6 source address and of the UDP checksum in the frame.
pub const IP6_SRC_OFF: usize = 22;
pub const UDP6_CSUM_OFF: usize = 60;

/// What `bench_gen6` needs for a template built by [`ipv6_udp`]: the frame
/// with source `::` and checksum 0, and the one's-complement sum of the UDP
/// checksum's coverage without the checksum field and the source.
pub struct GenTemplate6 {
    pub frame: Vec<u8>,
    pub l4_sum: u32,
}

pub fn gen_template6(dport: u16) -> GenTemplate6 {
    let mut frame = ipv6_udp(Ipv6Addr::UNSPECIFIED, RX_ADDR6, 40000, dport);
    frame[UDP6_CSUM_OFF..UDP6_CSUM_OFF + 2].fill(0);
    let l4_len = frame.len() - 54;
    let mut pseudo = Vec::with_capacity(40);
    pseudo.extend_from_slice(&RX_ADDR6.octets());
    pseudo.extend_from_slice(&(l4_len as u32).to_be_bytes());
    pseudo.extend_from_slice(&[0, 0, 0, 17]);
    let l4_sum = sum16(&pseudo) + sum16(&frame[54..]);
    GenTemplate6 { frame, l4_sum }
}

/// Do a frame's IPv4 header and UDP/TCP checksums verify (IPv4), or its UDP
/// checksum (IPv6)? For the generator's self-check on its output.
pub fn checksums_ok(f: &[u8]) -> bool {
    if f.len() < 14 {
        return false;
    }
    let verifies = |s: u32| fold(s) == 0;
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0800 if f.len() >= 34 => {
            let total = u16::from_be_bytes([f[16], f[17]]) as usize;
            if f.len() < 14 + total || total < 20 {
                return false;
            }
            let seg = &f[34..14 + total];
            let mut pseudo = f[26..34].to_vec();
            pseudo.extend_from_slice(&[0, f[23]]);
            pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
            verifies(sum16(&f[14..34])) && verifies(sum16(&pseudo) + sum16(seg))
        }
        0x86dd if f.len() >= 62 => {
            let len = u16::from_be_bytes([f[18], f[19]]) as usize;
            if f.len() < 54 + len || f[20] != 17 {
                return false;
            }
            let seg = &f[54..54 + len];
            let mut pseudo = f[22..54].to_vec();
            pseudo.extend_from_slice(&(len as u32).to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, 17]);
            verifies(sum16(&pseudo) + sum16(seg))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The generator's incremental IPv6 UDP checksum for source `src`, as
    /// `bench_gen6` computes it (words of the address added to the template sum).
    fn gen6_checksum(t: &GenTemplate6, src: Ipv6Addr) -> u16 {
        let sum = t.l4_sum + sum16(&src.octets());
        match fold(sum) {
            0 => 0xffff,
            c => c,
        }
    }

    /// The generator's incremental checksums equal a full rebuild.
    #[test]
    fn template_sums_match_full_checksums() {
        for l4 in [L4::Udp, L4::Tcp] {
            let t = gen_template(l4, 20001);
            let src = Ipv4Addr::new(203, 0, 113, 77);
            let s = u32::from(src);
            let add = (s >> 16) + (s & 0xffff);
            let full = ipv4(src, RX_ADDR, l4, 40000, 20001);
            let ip = fold(t.ip_sum + add);
            assert_eq!(ip.to_be_bytes(), full[24..26]);
            let c = fold(t.l4_sum + add);
            let o = t.l4_csum_off as usize;
            assert_eq!(c.to_be_bytes(), full[o..o + 2]);
            assert!(checksums_ok(&full));
        }
    }

    /// The IPv6 generator's incremental UDP checksum equals a full rebuild,
    /// for sources that exercise the carries (all-ones words, a checksum
    /// that folds to 0).
    #[test]
    fn template6_sums_match_full_checksums() {
        let t = gen_template6(20001);
        for src in [
            "2a01:4f8:c0c:1234::1",
            "2001:db8:bad:1:ffff:ffff:ffff:ffff",
            "3fff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "2000::",
        ] {
            let src: Ipv6Addr = src.parse().unwrap();
            let full = ipv6_udp(src, RX_ADDR6, 40000, 20001);
            let c = gen6_checksum(&t, src);
            assert_eq!(c.to_be_bytes(), full[UDP6_CSUM_OFF..UDP6_CSUM_OFF + 2]);
            let mut rewritten = t.frame.clone();
            rewritten[IP6_SRC_OFF..IP6_SRC_OFF + 16].copy_from_slice(&src.octets());
            rewritten[UDP6_CSUM_OFF..UDP6_CSUM_OFF + 2].copy_from_slice(&c.to_be_bytes());
            assert_eq!(rewritten, full);
            assert!(checksums_ok(&full));
        }
    }

    /// The self-check rejects a frame whose source changed without its
    /// checksums (what a broken generator would send).
    #[test]
    fn checksums_ok_rejects_a_stale_checksum() {
        let mut v4 = ipv4(Ipv4Addr::new(198, 51, 100, 1), RX_ADDR, L4::Udp, 1, 2);
        v4[29] ^= 1;
        assert!(!checksums_ok(&v4));
        let mut v6 = ipv6_udp("2001:db8::1".parse().unwrap(), RX_ADDR6, 1, 2);
        v6[IP6_SRC_OFF + 15] ^= 1;
        assert!(!checksums_ok(&v6));
    }
}
