//! Rejecting zones (`action = "reject"`): the frame is rewritten in place into
//! the reply and sent back out of the interface it came in on (`XDP_TX`).
//!
//! The main program does not count a rejecting zone's refusal: it writes
//! the zone and its flags (`REPLY_PENDING`) and tail-calls
//! `portcullis_reply` (through the pinned `REPLY_PROG`, so rejecting zones
//! keep answering while no daemon runs), which decides:
//!
//! - the frame cannot be answered (layer-2 group address, a source that is
//!   not a unicast host, a multicast or broadcast destination, a fragment, a
//!   TCP RST, a reset that cannot be computed): dropped as `not_allowed`;
//! - this CPU's reply budget (`REPLY_STATE`, `Config::reject_*`) is spent:
//!   dropped as `reject_suppressed`;
//! - else counted `rejected` and answered.
//!
//! Replies (the contract: filter-common's `Reply`, `REPLY_*`; the exact bytes:
//! docs/policy.md, tests/src/model/reply.rs):
//!
//! - MAC addresses swapped, VLAN tags kept as they are, addresses swapped,
//!   TTL / hop limit 64, IPv4 ID 0.
//! - TCP reset (RFC 9293 §3.10.7.1): to a segment with ACK, `<SEQ=SEG.ACK>
//!   <CTL=RST>`; else `<SEQ=0><ACK=SEG.SEQ+SEG.LEN><CTL=RST,ACK>` (SYN and FIN
//!   count one each). 20-byte IPv4 header (DF) or 40-byte IPv6 header, a
//!   20-byte TCP header, window 0; written over the segment, which shrinks.
//! - ICMP / ICMPv6 destination unreachable: the offending IP packet (options
//!   and extension headers included, Ethernet padding not) stays where it is
//!   and becomes the quote; the head grows by the new IP + ICMP headers
//!   (`bpf_xdp_adjust_head`) and the tail is cut so the reply is at most 576
//!   (IPv4, RFC 1812) or 1280 (IPv6, RFC 4443) bytes from the IP header on.
//!
//! Checksums are computed here: the IPv4 header and TCP ones from registers,
//! the ICMP ones over the quote in a bounded loop.
use aya_ebpf::{
    bindings::xdp_action,
    helpers::{
        bpf_ktime_get_coarse_ns, bpf_xdp_adjust_head, bpf_xdp_adjust_tail, bpf_xdp_load_bytes,
    },
    macros::xdp,
    programs::XdpContext,
};
use filter_common::{
    counter_index, iface_counter_index, lazy_bucket_take, EventsConfig, Reason, Reply,
    ReplyPending, Verdict, ZoneInfo, IPPROTO_TCP, MAX_IFACE_SLOTS, REPLY_ICMP4_MAX,
    REPLY_ICMP4_TOS, REPLY_ICMP6_MAX, REPLY_TTL,
};

use crate::{
    decide::Decision,
    events::{self, Where},
    maps::{count, CONFIG, EVENTS_CFG, IFACES, REPLY_PENDING, REPLY_PROG, REPLY_STATE},
    parse::{self, bytes, Headers, Parsed, L4},
};

const TCP_FIN: u8 = 0x01;
const TCP_SYN: u8 = 0x02;
const TCP_RST: u8 = 0x04;
const TCP_ACK: u8 = 0x10;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
/// The deepest IP header a reply is built behind: Ethernet + 2 VLAN tags.
const MAX_L3: usize = 22;
/// Bound of every offset written or summed (the verifier needs one).
const MAX_OFF: usize = 0x4000;

/// In the main program (decide.rs): hands a rejecting zone's refusal to the
/// reply program. Returns only if there is none (the caller then drops it
/// as `not_allowed`).
#[inline(always)]
pub fn hand_off(ctx: &XdpContext, pending: ReplyPending) {
    let Some(p) = REPLY_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot, read by the tail-called program on this CPU;
    // the program array holds XDP programs only (the loader's).
    unsafe {
        *p = pending;
        REPLY_PROG.tail_call(ctx, 0);
    }
}

/// What the reply will be, read from the frame before anything is written.
#[derive(Clone, Copy)]
struct Plan {
    l3: usize,
    l4: usize,
    v6: bool,
    reply: Reply,
    /// The reset's sequence and acknowledgment numbers and flags.
    seq: u32,
    ack: u32,
    ctl: u8,
}

/// The reply program: counts, samples (before the rewrite, so the event
/// shows the offending packet) and answers. The zone and its reply are in
/// `REPLY_PENDING`; the frame is parsed again for its headers.
#[xdp]
pub fn portcullis_reply(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let iface = match IFACES.get(ctx.ingress_ifindex() as u32) {
        Some(slot) if *slot < MAX_IFACE_SLOTS => *slot,
        _ => 0,
    };
    let Some(pending) = REPLY_PENDING.get_ptr_mut(0) else {
        return xdp_action::XDP_DROP;
    };
    // The main program parsed it as a zone's packet with ports; parsed
    // again here, the headers go through the map (see `ReplyPending`).
    let parsed = parse::parse(&ctx);
    // SAFETY: per-CPU slot; XDP does not preempt itself on one CPU.
    unsafe {
        if let Parsed::Ip(ip) = parsed {
            (*pending).l3 = ip.at.l3;
            (*pending).l4 = ip.at.l4;
            (*pending).proto = ip.at.proto;
            (*pending).v6 = ip.at.v6 as u8;
            (*pending).first_fragment = ip.first_fragment as u8;
            (*pending).ports = matches!(ip.l4, L4::Ports { .. }) as u8;
        } else {
            (*pending).ports = 0;
        }
    }
    let Some(p) = REPLY_PENDING.get(0).copied() else {
        return xdp_action::XDP_DROP;
    };
    // Masked to what the parser can produce (l3 ≤ 22, l4 ≤ 16 KiB): read
    // from a map they are any u16, and the 6.1 verifier gives a packet
    // pointer with up to 64 KiB of variable offset no range at all.
    let at = Headers {
        l3: p.l3 & 0x1f,
        l4: p.l4 & 0x7fff,
        proto: p.proto,
        v6: p.v6 != 0,
    };
    let plan = if p.ports != 0 {
        let reply = ZoneInfo {
            flags: p.zone_flags,
        }
        .reply()
        .for_proto(p.proto);
        prepare(&ctx, &at, p.first_fragment != 0, reply)
    } else {
        None
    };
    let mut reason = match plan {
        None => Reason::NotAllowed,
        Some(_) if !take_token(p.slot) => Reason::RejectSuppressed,
        Some(_) => Reason::Rejected,
    };
    let d = Decision {
        verdict: Verdict::Drop,
        reason,
        rule: p.zone,
    };
    // Checked here: the call is for sampled decisions only.
    if EVENTS_CFG
        .get(0)
        .is_some_and(|c| c.flags & EventsConfig::class(d.verdict, d.reason) != 0)
    {
        events::emit_at(
            &ctx,
            &d,
            (p.ports != 0).then_some(Where { at, ports: true }),
        );
    }
    let mut action = xdp_action::XDP_DROP;
    if let (Reason::Rejected, Some(plan)) = (reason, plan) {
        if build(&ctx, &plan) {
            action = xdp_action::XDP_TX;
        } else {
            // No headroom, or a bound the frame did not meet: no reply went.
            reason = Reason::NotAllowed;
        }
    }
    let index = counter_index(p.zone, reason, Verdict::Drop);
    count(iface_counter_index(iface, index), bytes);
    action
}

/// One token of this CPU's reply budget (the budget of policy slot `slot`).
/// The clock is read only when the saved credit does not pay for it (see
/// `lazy_bucket_take`): a reply within the budget costs no helper call.
/// The coarse clock (a tick, 1–10 ms) is fine for a bucket refilled at most
/// a million times a second.
#[inline(always)]
fn take_token(slot: u32) -> bool {
    let (Some(cfg), Some(state)) = (CONFIG.get(slot), REPLY_STATE.get_ptr_mut(0)) else {
        return false;
    };
    // SAFETY: per-CPU slot; XDP does not preempt itself on one CPU.
    let state = unsafe { &mut *state };
    let (credit, last, taken) = lazy_bucket_take(
        state.credit_ns,
        state.last_ns,
        cfg.reject_cost_ns,
        cfg.reject_cap_ns,
        // SAFETY: a helper without arguments.
        || unsafe { bpf_ktime_get_coarse_ns() },
    );
    state.credit_ns = credit;
    state.last_ns = last;
    taken
}

/// The plan of the reply to the packet with headers `at`, or `None` if it
/// must not be answered.
#[inline(always)]
fn prepare(ctx: &XdpContext, at: &Headers, first_fragment: bool, reply: Reply) -> Option<Plan> {
    let (l3, l4, v6) = (at.l3 as usize, at.l4 as usize, at.v6);
    if first_fragment || l3 > MAX_L3 || l4 > MAX_OFF {
        return None;
    }
    // Group (broadcast, multicast) MAC addresses, either way.
    let eth = bytes::<7>(ctx, 0)?;
    if eth[0] & 1 != 0 || eth[6] & 1 != 0 {
        return None;
    }
    // The end of the IP packet (Ethernet padding excluded). One read of
    // the whole header: LLVM drops a second bounds check it can prove from
    // the first, which the verifier cannot.
    let end = if v6 {
        let h = bytes::<40>(ctx, l3)?;
        let (src, dst) = (&h[8..24], &h[24..]);
        let unspecified_or_loopback = src[..15].iter().all(|b| *b == 0) && src[15] <= 1;
        let mapped = src[..10].iter().all(|b| *b == 0) && src[10] == 0xff && src[11] == 0xff;
        if src[0] == 0xff || dst[0] == 0xff || unspecified_or_loopback || mapped {
            return None;
        }
        l3 + 40 + u16::from_be_bytes([h[4], h[5]]) as usize
    } else {
        let h = bytes::<20>(ctx, l3)?;
        // "this network", loopback, multicast, reserved and broadcast.
        let bad = |o: u8| o == 0 || o == 127 || o >= 224;
        if bad(h[12]) || bad(h[16]) {
            return None;
        }
        l3 + u16::from_be_bytes([h[2], h[3]]) as usize
    };
    let mut plan = Plan {
        l3,
        l4,
        v6,
        reply,
        seq: 0,
        ack: 0,
        ctl: 0,
    };
    if at.proto != IPPROTO_TCP {
        return (reply != Reply::TcpReset).then_some(plan);
    }
    let t = bytes::<20>(ctx, l4)?;
    let flags = t[13];
    if flags & TCP_RST != 0 {
        return None;
    }
    if reply != Reply::TcpReset {
        return Some(plan);
    }
    let doff = (t[12] >> 4) as usize * 4;
    if doff < 20 || l4 + doff > end {
        return None;
    }
    let seg_len =
        (end - l4 - doff) as u32 + (flags & TCP_SYN != 0) as u32 + (flags & TCP_FIN != 0) as u32;
    if flags & TCP_ACK != 0 {
        plan.seq = u32::from_be_bytes([t[8], t[9], t[10], t[11]]);
        plan.ctl = TCP_RST;
    } else {
        plan.ack = u32::from_be_bytes([t[4], t[5], t[6], t[7]]).wrapping_add(seg_len);
        plan.ctl = TCP_RST | TCP_ACK;
    }
    Some(plan)
}

/// Rewrites the frame into the reply; false if it could not be. Inlined,
/// as is all of the reply's path but sampling: where a `ret` goes through
/// the kernel's return thunk (SRSO "Safe RET" on this AMD machine), each
/// BPF-to-BPF call cost as much as the reset itself.
#[inline(always)]
fn build(ctx: &XdpContext, plan: &Plan) -> bool {
    match plan.reply.icmp(plan.v6) {
        Some((ty, code)) => icmp(ctx, plan, ty, code).is_some(),
        None => reset(ctx, plan).is_some(),
    }
}

/// A pointer to `N` bytes at `off` of the frame, checked to lie inside it.
#[inline(always)]
fn at<const N: usize>(ctx: &XdpContext, off: usize) -> Option<*mut u8> {
    if off > MAX_OFF {
        return None;
    }
    let (start, end) = (ctx.data(), ctx.data_end());
    if start + off + N > end {
        return None;
    }
    Some((start + off) as *mut u8)
}

// Big-endian reads and writes at constant offsets inside a window `at`
// checked; values stay in registers (the program's stack is small). Words
// are accessed as 16-bit units at even offsets: every header field written
// here lies at an even offset of a frame that starts at an even address
// (drivers, generic XDP and TEST_RUN all place it so, and the reply moves
// it by 28 or 48 bytes), and the architectures XDP runs on do not fault on
// an odd one anyway. Byte by byte, a reset took twice the instructions.
// SAFETY (all): the caller's window covers `p + i .. p + i + size`.
#[inline(always)]
unsafe fn r16(p: *mut u8, i: usize) -> u16 {
    unsafe { u16::from_be((p.add(i) as *const u16).read()) }
}
#[inline(always)]
unsafe fn r32(p: *mut u8, i: usize) -> u32 {
    unsafe { (r16(p, i) as u32) << 16 | r16(p, i + 2) as u32 }
}
#[inline(always)]
unsafe fn w16(p: *mut u8, i: usize, v: u16) {
    unsafe { (p.add(i) as *mut u16).write(v.to_be()) }
}
#[inline(always)]
unsafe fn w32(p: *mut u8, i: usize, v: u32) {
    unsafe {
        w16(p, i, (v >> 16) as u16);
        w16(p, i + 2, v as u16);
    }
}

/// The sum of a u32's two 16-bit words.
#[inline(always)]
fn words(v: u32) -> u64 {
    (v >> 16) as u64 + (v & 0xffff) as u64
}

#[inline(always)]
fn fold(mut s: u64) -> u16 {
    // Five steps take any u64 to 16 bits (no data-dependent loop).
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s = (s & 0xffff) + (s >> 16);
    s as u16
}

/// Writes an IPv4 header at `h` (checksum included): `tos`, total length
/// `total`, protocol `proto`, from `src` to `dst`, ID 0, flags `frag`.
///
/// SAFETY: `h` points at 20 writable frame bytes.
#[inline(always)]
unsafe fn ipv4_header(h: *mut u8, tos: u8, total: u16, frag: u16, proto: u8, src: u32, dst: u32) {
    let ver_tos = 0x4500 | tos as u16;
    let ttl_proto = (REPLY_TTL as u16) << 8 | proto as u16;
    let sum =
        ver_tos as u64 + total as u64 + frag as u64 + ttl_proto as u64 + words(src) + words(dst);
    unsafe {
        w16(h, 0, ver_tos);
        w16(h, 2, total);
        w32(h, 4, frag as u32);
        w16(h, 8, ttl_proto);
        w16(h, 10, !fold(sum));
        w32(h, 12, src);
        w32(h, 16, dst);
    }
}

/// Writes an IPv6 header at `h`: payload length `len`, next header `nh`,
/// and the addresses of the header at `orig` swapped (`orig` may be `h`).
/// Returns the sum of the addresses' words (for a pseudo header).
///
/// SAFETY: `h` and `orig` point at 40 frame bytes each.
#[inline(always)]
unsafe fn ipv6_header(h: *mut u8, orig: *mut u8, len: u16, nh: u8) -> u64 {
    let mut sum = 0u64;
    let mut i = 0;
    // Four words at a time each way: src (8..24) ⇄ dst (24..40).
    while i < 16 {
        unsafe {
            let s = r32(orig, 8 + i);
            let d = r32(orig, 24 + i);
            sum += words(s) + words(d);
            w32(h, 8 + i, d);
            w32(h, 24 + i, s);
        }
        i += 4;
    }
    unsafe {
        w32(h, 0, 0x6000_0000);
        w16(h, 4, len);
        w16(h, 6, (nh as u16) << 8 | REPLY_TTL as u16);
    }
    sum
}

/// Writes the Ethernet header at `dst` from the one at `src`, the MAC
/// addresses swapped (`src` may be `dst`), and copies the 10 bytes after
/// them (VLAN tags and the inner EtherType, or the start of the IP header,
/// which is written afterwards).
///
/// SAFETY: both point at 22 frame bytes.
#[inline(always)]
unsafe fn ethernet(dst: *mut u8, src: *mut u8) {
    unsafe {
        let (a, b, c) = (r32(src, 0), r32(src, 4), r32(src, 8));
        // a b c = D0D1D2D3 D4D5S0S1 S2S3S4S5 → S0..S5 D0..D5
        w32(dst, 0, (b & 0xffff) << 16 | c >> 16);
        w32(dst, 4, (c & 0xffff) << 16 | a >> 16);
        w32(dst, 8, (a & 0xffff) << 16 | b >> 16);
        let mut i = 12;
        while i < 22 {
            w16(dst, i, r16(src, i));
            i += 2;
        }
    }
}

/// Shrinks the frame from `cur` to `len` bytes (never grows it).
#[inline(always)]
fn cut_to(ctx: &XdpContext, cur: usize, len: usize) -> Option<()> {
    if len < cur {
        // SAFETY: the context pointer is the program's own.
        if unsafe { bpf_xdp_adjust_tail(ctx.ctx, len as i32 - cur as i32) } != 0 {
            return None;
        }
    }
    Some(())
}

/// The TCP reset, written over the segment.
#[inline(always)]
fn reset(ctx: &XdpContext, plan: &Plan) -> Option<()> {
    let (l3, cur) = (plan.l3, ctx.data_end() - ctx.data());
    let t = at::<4>(ctx, plan.l4)?;
    // SAFETY: `t` covers the 4 port bytes.
    let ports = unsafe { r32(t, 0) };
    let (sport, dport) = (ports >> 16, ports & 0xffff);
    let f = at::<22>(ctx, 0)?;
    // SAFETY: the frame starts with 22 bytes (it holds an IP header and more).
    unsafe { ethernet(f, f) };
    // Pseudo header: the protocol, the TCP length, the addresses (whose sum
    // does not depend on their order).
    let mut sum = IPPROTO_TCP as u64 + 20;
    let tcp_at = if plan.v6 {
        let h = at::<60>(ctx, l3)?;
        // SAFETY: the reset's 60 bytes lie in the segment it replaces.
        sum += unsafe { ipv6_header(h, h, 20, IPPROTO_TCP) };
        l3 + 40
    } else {
        let h = at::<40>(ctx, l3)?;
        // SAFETY: as above, 40 bytes.
        unsafe {
            let (src, dst) = (r32(h, 12), r32(h, 16));
            sum += words(src) + words(dst);
            ipv4_header(h, 0, 40, 0x4000, IPPROTO_TCP, dst, src);
        }
        l3 + 20
    };
    let t = at::<20>(ctx, tcp_at)?;
    let flags = (5u16 << 12) | plan.ctl as u16;
    sum += dport as u64 + sport as u64 + words(plan.seq) + words(plan.ack) + flags as u64;
    // SAFETY: `t` covers the 20 bytes of the TCP header.
    unsafe {
        w32(t, 0, dport << 16 | sport);
        w32(t, 4, plan.seq);
        w32(t, 8, plan.ack);
        w16(t, 12, flags);
        w16(t, 14, 0); // window
        w16(t, 16, !fold(sum));
        w16(t, 18, 0); // urgent pointer
    }
    cut_to(ctx, cur, tcp_at + 20)
}

/// The ICMP / ICMPv6 destination unreachable: new headers in front of the
/// offending IP packet, which becomes the quote.
#[inline(always)]
fn icmp(ctx: &XdpContext, plan: &Plan, ty: u8, code: u8) -> Option<()> {
    let (l3, v6) = (plan.l3, plan.v6);
    let cur = ctx.data_end() - ctx.data();
    let (hlen, max) = if v6 {
        (40, REPLY_ICMP6_MAX)
    } else {
        (20, REPLY_ICMP4_MAX)
    };
    let h = at::<20>(ctx, l3)?;
    // SAFETY: `h` covers the start of the IP header.
    let packet_len = unsafe {
        if v6 {
            40 + r16(h, 4) as usize
        } else {
            r16(h, 2) as usize
        }
    };
    let grow = hlen + 8;
    let quote = if packet_len > max - grow {
        max - grow
    } else {
        packet_len
    };
    let icmp_len = 8 + quote;

    // SAFETY: the context pointer is the program's own.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(grow as i32)) } != 0 {
        return None;
    }
    // The offending frame now starts at `grow`.
    let (to, from) = (at::<22>(ctx, 0)?, at::<22>(ctx, grow)?);
    // SAFETY: 22 bytes each, apart (grow ≥ 28).
    unsafe { ethernet(to, from) };
    let mut sum = 0u64;
    if v6 {
        let (h, orig) = (at::<40>(ctx, l3)?, at::<40>(ctx, l3 + grow)?);
        // SAFETY: 40 bytes each: the new header and the quoted one.
        sum = unsafe { ipv6_header(h, orig, icmp_len as u16, IPPROTO_ICMPV6) };
        // Pseudo header (RFC 8200 §8.1): addresses, length, next header.
        sum += icmp_len as u64 + IPPROTO_ICMPV6 as u64;
    } else {
        let (h, orig) = (at::<20>(ctx, l3)?, at::<20>(ctx, l3 + grow)?);
        // SAFETY: 20 bytes each: the new header and the quoted one.
        unsafe {
            let (src, dst) = (r32(orig, 12), r32(orig, 16));
            let total = (20 + icmp_len) as u16;
            ipv4_header(h, REPLY_ICMP4_TOS, total, 0, IPPROTO_ICMP, dst, src);
        }
    }
    let m = at::<8>(ctx, l3 + hlen)?;
    // SAFETY: the 8 bytes of the ICMP header (checksum 0 until summed).
    unsafe {
        w16(m, 0, (ty as u16) << 8 | code as u16);
        w16(m, 2, 0);
        w32(m, 4, 0);
    }
    cut_to(ctx, cur + grow, l3 + hlen + icmp_len)?;
    sum += sum_region(ctx, l3 + hlen, icmp_len)?;
    let m = at::<4>(ctx, l3 + hlen)?;
    // SAFETY: the checksum field.
    unsafe { w16(m, 2, !fold(sum)) };
    Some(())
}

/// The (unfolded) sum of the big-endian words of `len` frame bytes at
/// `start` (`len` ≤ 1536): 8 bytes at a time in a bounded loop, then 4,
/// then the last 0–3. (`bpf_csum_diff` in constant-size chunks did the same
/// at about 150 ns for a 54-byte ICMP error, most of the reply's cost.)
#[inline(always)]
fn sum_region(ctx: &XdpContext, start: usize, len: usize) -> Option<u64> {
    const MAX_WORDS: usize = 1536 / 8;
    let end = start + len;
    let mut off = start;
    // Little-endian loads: the sum of their 16-bit halves, folded and
    // byte-swapped, is the big-endian sum (RFC 1071 §2 (B)). See `r16`
    // for why the loads need no alignment.
    let mut native = 0u64;
    for _ in 0..MAX_WORDS {
        if off + 8 > end {
            break;
        }
        let p = at::<8>(ctx, off)?;
        // SAFETY: `at` checked the 8 bytes.
        let w = unsafe { (p as *const u64).read() };
        native += (w & 0xffff_ffff) + (w >> 32);
        off += 8;
    }
    if off + 4 <= end {
        let p = at::<4>(ctx, off)?;
        // SAFETY: `at` checked the 4 bytes.
        native += unsafe { (p as *const u32).read() } as u64;
        off += 4;
    }
    let left = end - off;
    let mut sum = fold(native).swap_bytes() as u64;
    // The last 1–3 bytes, copied as the region's last 4 (a region is at
    // least an ICMP header long) by the kernel: a bounds check LLVM folds
    // into the one before gives the verifier no range there. They start at
    // an offset of the region divisible by 4: the first is a high byte.
    if left > 0 {
        let mut b = [0u8; 4];
        // SAFETY: the kernel checks the offset; `b` holds the 4 bytes.
        let r = unsafe { bpf_xdp_load_bytes(ctx.ctx, (end - 4) as u32, b.as_mut_ptr().cast(), 4) };
        if r != 0 {
            return None;
        }
        sum += match left {
            1 => (b[3] as u64) << 8,
            2 => (b[2] as u64) << 8 | b[3] as u64,
            _ => ((b[1] as u64) << 8 | b[2] as u64) + ((b[3] as u64) << 8),
        };
    }
    Some(sum)
}
