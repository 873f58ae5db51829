//! Programs for `cargo xtask bench` (never attached by portcullis itself):
//!
//! - `bench_pass` / `bench_drop`: empty XDP_PASS / XDP_DROP, the baselines;
//! - `bench_parse`: the real parser (`parse.rs`) and nothing else;
//! - `bench_floor` / `bench_floor_pass`: the floor every filter pays: read the
//!   source address (4 bytes for IPv4, 16 for IPv6), bump one per-CPU counter
//!   (`FLOOR`), XDP_DROP (or XDP_PASS, the baseline of floods that pass);
//! - `bench_gen`: a traffic generator for BPF_PROG_TEST_RUN with
//!   BPF_F_TEST_XDP_LIVE_FRAMES. Each run rewrites the template frame's IPv4
//!   source with a random address from a prefix in `GEN_PREFIXES`, fixes the
//!   IPv4 and UDP/TCP checksums incrementally and sends it out with XDP_TX;
//! - `bench_gen6`: the same for an IPv6/UDP template, sources from
//!   `GEN6_PREFIXES`, the UDP checksum fixed incrementally.
#![no_std]
#![no_main]

#[path = "../parse.rs"]
#[allow(dead_code)]
mod parse;

use aya_ebpf::{
    bindings::xdp_action,
    helpers::bpf_get_prandom_u32,
    macros::{map, xdp},
    maps::{Array, PerCpuArray},
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

/// `bench_gen6` settings (`GEN6_CONFIG[0]`), written by the bench runner.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Gen6Config {
    /// First prefix in use in `GEN6_PREFIXES`.
    pub first: u32,
    /// Prefixes in use from `first` on (≥ 1).
    pub prefixes: u32,
    /// One's-complement sum of pseudo header + UDP header + payload, without
    /// the checksum field and the source address.
    pub l4_sum: u32,
    pub _pad: u32,
}

/// An IPv6 prefix as four 32-bit words of the address, most significant
/// first, each in host byte order: network and host mask.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct GenPrefix6 {
    pub net: [u32; 4],
    pub hostmask: [u32; 4],
}

pub const GEN6_MAX_PREFIXES: u32 = 1 << 17;

#[map]
static GEN6_CONFIG: Array<Gen6Config> = Array::with_max_entries(1, 0);
#[map]
static GEN6_PREFIXES: Array<GenPrefix6> = Array::with_max_entries(GEN6_MAX_PREFIXES, 0);

/// The floor's counter: `[packets, xor of the sources read]`, per family
/// (0 IPv4, 1 IPv6, 2 anything else), so the runner can tell which family a
/// flood carried and the source read is never optimised away.
#[map]
static FLOOR: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(3, 0);

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
/// Ethernet + IPv6 + UDP.
const FRAME6_MIN: usize = ETH_IP + 40 + 8;
const IP6_SRC: usize = ETH_IP + 8;
const UDP6_CSUM: usize = ETH_IP + 40 + 6;

/// Reads the source address (the one read into the packet a filter cannot
/// avoid) and bumps one per-CPU counter.
#[inline(always)]
fn floor(ctx: &XdpContext) {
    let start = ctx.data();
    let end = ctx.data_end();
    let (family, folded) = if start + ETH_IP > end {
        (2, 0)
    } else {
        // SAFETY: the Ethernet header lies in the packet (checked above).
        let ethertype = unsafe { *((start + 12) as *const [u8; 2]) };
        if ethertype == [0x08, 0x00] && start + ETH_IP + 20 <= end {
            // SAFETY: the IPv4 header lies in the packet (checked).
            let src = unsafe { *((start + ETH_IP + 12) as *const [u8; 4]) };
            (0, u32::from_ne_bytes(src) as u64)
        } else if ethertype == [0x86, 0xdd] && start + ETH_IP + 40 <= end {
            // SAFETY: the IPv6 header lies in the packet (checked).
            let src = unsafe { *((start + IP6_SRC) as *const [u8; 16]) };
            let hi = u64::from_ne_bytes([
                src[0], src[1], src[2], src[3], src[4], src[5], src[6], src[7],
            ]);
            let lo = u64::from_ne_bytes([
                src[8], src[9], src[10], src[11], src[12], src[13], src[14], src[15],
            ]);
            (1, hi ^ lo)
        } else {
            (2, 0)
        }
    };
    if let Some(c) = FLOOR.get_ptr_mut(family) {
        // SAFETY: this CPU's slot; XDP does not preempt itself on one CPU.
        unsafe {
            (*c)[0] += 1;
            (*c)[1] ^= folded;
        }
    }
}

#[xdp]
pub fn bench_floor(ctx: XdpContext) -> u32 {
    floor(&ctx);
    xdp_action::XDP_DROP
}

#[xdp]
pub fn bench_floor_pass(ctx: XdpContext) -> u32 {
    floor(&ctx);
    xdp_action::XDP_PASS
}

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

#[xdp]
pub fn bench_gen6(ctx: XdpContext) -> u32 {
    let Some(cfg) = GEN6_CONFIG.get(0).copied() else {
        return xdp_action::XDP_ABORTED;
    };
    if cfg.prefixes == 0 {
        return xdp_action::XDP_ABORTED;
    }
    // SAFETY: helper without arguments.
    let r = unsafe { bpf_get_prandom_u32() };
    let Some(p) = GEN6_PREFIXES
        .get(cfg.first.wrapping_add(r % cfg.prefixes))
        .copied()
    else {
        return xdp_action::XDP_ABORTED;
    };
    let start = ctx.data();
    if start + FRAME6_MIN > ctx.data_end() {
        return xdp_action::XDP_ABORTED;
    }
    let mut sum = cfg.l4_sum;
    let mut src = [0u32; 4];
    for (w, (net, mask)) in src.iter_mut().zip(p.net.iter().zip(p.hostmask.iter())) {
        let bits = if *mask != 0 {
            // SAFETY: helper without arguments.
            unsafe { bpf_get_prandom_u32() }
        } else {
            0
        };
        *w = net | (bits & mask);
        sum += (*w >> 16) + (*w & 0xffff);
    }
    let mut csum = fold(sum);
    if csum == 0 {
        csum = 0xffff; // 0 means "no checksum", which IPv6 forbids for UDP
    }
    // SAFETY: all offsets are below FRAME6_MIN, checked against data_end above.
    unsafe {
        *((start + IP6_SRC) as *mut [u8; 4]) = src[0].to_be_bytes();
        *((start + IP6_SRC + 4) as *mut [u8; 4]) = src[1].to_be_bytes();
        *((start + IP6_SRC + 8) as *mut [u8; 4]) = src[2].to_be_bytes();
        *((start + IP6_SRC + 12) as *mut [u8; 4]) = src[3].to_be_bytes();
        *((start + UDP6_CSUM) as *mut [u8; 2]) = csum.to_be_bytes();
    }
    xdp_action::XDP_TX
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
