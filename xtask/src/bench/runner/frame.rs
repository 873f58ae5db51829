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

#[cfg(test)]
mod tests {
    use super::*;

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
        }
    }
}
