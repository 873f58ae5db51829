//! `portcullis_egress`: the TC egress program that counts downloads for
//! transfer quotas. A frame the host sends *from* a quota zone's port is
//! charged to its *destination* (the client), in the active policy slot.
//! It never drops (ingress enforces: a download over quota stalls on its
//! dropped ACKs) and returns "continue" so other egress programs still run.
//!
//! Headers are read with `bpf_skb_load_bytes`, which also reads a GSO
//! frame's headers outside the linear area. Counted: IPv4 (first fragments
//! and unfragmented) and IPv6 whose first next header is TCP, UDP or SCTP —
//! what the host stack sends for a socket; no VLAN tag is in the frame at
//! a device's egress (the tag travels as metadata).
use aya_ebpf::{macros::classifier, programs::TcContext};
use filter_common::{
    port_index, proto_index, slot_of, zone_index, Config, ZoneInfo, QUOTA_DOWNLOAD,
};

use crate::{
    maps::{ACTIVE, CONFIG, PORTS, QUOTAS, ZONES},
    parse::Src,
    quota,
};

/// TC_ACT_UNSPEC / TCX_NEXT: let the next program (or the default) decide.
const NEXT: i32 = -1;
const ETH_HLEN: usize = 14;

#[classifier]
pub fn portcullis_egress(ctx: TcContext) -> i32 {
    count(&ctx);
    NEXT
}

/// Where an egress frame goes and from which (protocol, port).
struct Out {
    dst: Src,
    proto: u8,
    l4: usize,
}

#[inline(always)]
fn headers(ctx: &TcContext) -> Option<Out> {
    let ethertype = u16::from_be(ctx.load::<u16>(12).ok()?);
    match ethertype {
        0x0800 => {
            let vihl: u8 = ctx.load(ETH_HLEN).ok()?;
            if vihl >> 4 != 4 {
                return None;
            }
            let frag = u16::from_be(ctx.load::<u16>(ETH_HLEN + 6).ok()?);
            if frag & 0x1fff != 0 {
                return None;
            }
            let proto: u8 = ctx.load(ETH_HLEN + 9).ok()?;
            let dst: [u8; 4] = ctx.load(ETH_HLEN + 16).ok()?;
            Some(Out {
                dst: Src::V4(dst),
                proto,
                l4: ETH_HLEN + ((vihl & 0xf) as usize) * 4,
            })
        }
        0x86DD => {
            let proto: u8 = ctx.load(ETH_HLEN + 6).ok()?;
            let dst: [u8; 16] = ctx.load(ETH_HLEN + 24).ok()?;
            // IPv4-mapped destinations are IPv4 clients, as at ingress.
            let mapped = dst[..10] == [0; 10] && dst[10] == 0xff && dst[11] == 0xff;
            let dst = if mapped {
                Src::V4([dst[12], dst[13], dst[14], dst[15]])
            } else {
                Src::V6(dst)
            };
            Some(Out {
                dst,
                proto,
                l4: ETH_HLEN + 40,
            })
        }
        _ => None,
    }
}

#[inline(always)]
fn count(ctx: &TcContext) -> Option<()> {
    let generation = ACTIVE.get(0).copied().unwrap_or(0);
    let slot = slot_of(generation);
    if !CONFIG.get(slot)?.has(Config::VALID) {
        return None;
    }
    let out = headers(ctx)?;
    let pi = proto_index(out.proto)?;
    let sport = u16::from_be(ctx.load::<u16>(out.l4).ok()?);
    let zone = PORTS.get(port_index(slot, pi, sport))?.zone as u32;
    if zone == 0 {
        return None;
    }
    let flags = ZONES.get(zone_index(slot, zone))?.flags;
    if flags & ZoneInfo::QUOTA == 0 {
        return None;
    }
    let q = QUOTAS.get(zone_index(slot, zone))?;
    if q.directions & QUOTA_DOWNLOAD == 0 {
        return None;
    }
    let period = quota::period_now(q);
    quota::charge(&quota::key(q, &out.dst), period, ctx.len() as u64, u64::MAX);
    Some(())
}
