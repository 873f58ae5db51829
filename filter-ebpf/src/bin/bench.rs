//! Programs for `cargo xtask bench` (never attached by portcullis itself):
//!
//! - `bench_pass` / `bench_drop`: empty XDP_PASS / XDP_DROP, the baselines;
//! - `bench_parse`: the real parser (`parse.rs`) and nothing else;
//! - `bench_gen`: a traffic generator for BPF_PROG_TEST_RUN with
//!   BPF_F_TEST_XDP_LIVE_FRAMES. Each run rewrites the template frame's IPv4
//!   source with a random address from a prefix in `GEN_PREFIXES`, fixes the
//!   IPv4 and UDP/TCP checksums incrementally and sends it out with XDP_TX.
#![no_std]
#![no_main]

#[path = "../parse.rs"]
#[allow(dead_code)]
mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_prandom_u32,
    macros::{map, xdp},
    maps::Array,
    programs::XdpContext,
};

/// Generator settings (`GEN_CONFIG[0]`), written by the bench runner.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenConfig {
    /// First prefix in use in `GEN_PREFIXES`.
    pub first: u32,
    /// Prefixes in use from `first` on (≥ 1).
    pub prefixes: u32,
    /// One's-complement sum of the IPv4 header without checksum and source.
    pub ip_sum: u32,
    /// One's-complement sum of pseudo header + L4 header + payload, without
    /// the checksum field and the source address.
    pub l4_sum: u32,
    /// Offset of the L4 checksum in the frame (40 for UDP, 50 for TCP).
    pub l4_csum_off: u32,
}

/// (network, host mask) pairs in host byte order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenPrefix {
    pub net: u32,
    pub hostmask: u32,
}

pub const GEN_MAX_PREFIXES: u32 = 1 << 20;

#[map]
static GEN_CONFIG: Array<GenConfig> = Array::with_max_entries(1, 0);
#[map]
static GEN_PREFIXES: Array<GenPrefix> = Array::with_max_entries(GEN_MAX_PREFIXES, 0);

#[xdp]
pub fn bench_pass(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_PASS
}

#[xdp]
pub fn bench_drop(_ctx: XdpContext) -> u32 {
    xdp_action::XDP_DROP
}

#[xdp]
pub fn bench_parse(ctx: XdpContext) -> u32 {
    // Fold the parse result into the action so nothing is optimised away.
    let keep = match parse::parse(&ctx) {
        parse::Parsed::Ip(p) => {
            let src = match p.src {
                parse::Src::V4(a) => a[3],
                parse::Src::V6(a) => a[15],
            };
            let l4 = match p.l4 {
                parse::L4::Ports { proto_index, dport } => proto_index as u16 ^ dport,
                parse::L4::NoPorts => 1,
                parse::L4::NonFirstFragment => 2,
            };
            src as u16 ^ l4 ^ p.first_fragment as u16 != 0xffff
        }
        parse::Parsed::NonIp => true,
        parse::Parsed::Malformed => false,
    };
    if keep {
        xdp_action::XDP_PASS
    } else {
        xdp_action::XDP_DROP
    }
}

const ETH_IP: usize = 14;
const FRAME_MIN: usize = ETH_IP + 20 + 20;

#[inline(always)]
fn fold(mut sum: u32) -> u16 {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

#[xdp]
pub fn bench_gen(ctx: XdpContext) -> u32 {
    let Some(cfg) = GEN_CONFIG.get(0).copied() else {
        return xdp_action::XDP_ABORTED;
    };
    if cfg.prefixes == 0 {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: helper without arguments.
    let r1 = unsafe { bpf_get_prandom_u32() };
    // SAFETY: as above.
    let r2 = unsafe { bpf_get_prandom_u32() };
    let Some(p) = GEN_PREFIXES
        .get(cfg.first.wrapping_add(r1 % cfg.prefixes))
        .copied()
    else {
        return xdp_action::XDP_ABORTED;
    };
    let src = p.net | (r2 & p.hostmask);
    let start = ctx.data();
    if start + FRAME_MIN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let add = (src >> 16) + (src & 0xffff);
    let ip_csum = fold(cfg.ip_sum + add);
    let mut l4_csum = fold(cfg.l4_sum + add);
    let l4_off = if cfg.l4_csum_off == 50 { 50 } else { 40 };
    if l4_off == 40 && l4_csum == 0 {
        l4_csum = 0xffff; // UDP: 0 means "no checksum"
    }
    // SAFETY: all offsets are below FRAME_MIN, checked against data_end above.
    unsafe {
        *((start + ETH_IP + 12) as *mut [u8; 4]) = src.to_be_bytes();
        *((start + ETH_IP + 10) as *mut [u8; 2]) = ip_csum.to_be_bytes();
        *((start + l4_off) as *mut [u8; 2]) = l4_csum.to_be_bytes();
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
