//! Zone rate limits (docs/policy.md, "Rate limits"): per-key GCRA buckets in
//! `RATE_SLOTS` (4-way sets), a zone-wide ceiling and new-key budget in `RATE_ZONE`. All
//! state is shared by every CPU and updated with compare-and-swap, so the
//! limit holds whatever CPU a packet lands on.
use core::intrinsics::{atomic_cxchg, atomic_xadd, AtomicOrdering::Relaxed};

use aya_ebpf::programs::XdpContext;
use filter_common::{
    rate_admit, rate_charge, rate_set, rate_words4, rate_words6, rate_zone_index, zone_index,
    RateLimit, IPPROTO_TCP, RATE_KIND_CONNECTIONS, RATE_KIND_PACKETS, RATE_WAYS,
};

use crate::{
    clock,
    maps::{RATES, RATE_REAPED, RATE_SLOTS, RATE_ZONE},
    parse::{bytes, IpPacket, Src},
};

/// Tries a compare-and-swap makes before it gives up (and refuses): another
/// CPU changed the bucket in between each time, i.e. it is being hammered.
const CAS_TRIES: usize = 3;

// The bpfel target has no `AtomicU64::compare_exchange` (core marks it
// without CAS); the intrinsics lower to BPF_ATOMIC (BPF_CMPXCHG, BPF_ADD).
// SAFETY (all three): `p` points into a map value, 8-byte aligned; every
// writer of it uses atomics.
/// An aligned 8-byte load is one instruction (the BPF backend cannot select
/// an atomic load on this target's CPU model).
#[inline(always)]
pub(crate) fn load(p: *mut u64) -> u64 {
    unsafe { core::ptr::read_volatile(p) }
}

#[inline(always)]
pub(crate) fn cas(p: *mut u64, old: u64, new: u64) -> (u64, bool) {
    unsafe { atomic_cxchg::<u64, { Relaxed }, { Relaxed }>(p, old, new) }
}

#[inline(always)]
pub(crate) fn add(p: *mut u64, n: u64) {
    unsafe { atomic_xadd::<u64, u64, { Relaxed }>(p, n) };
}

/// GCRA on the shared word at `p`: admits (and advances it) or refuses.
#[inline(always)]
fn admit(p: *mut u64, now: u64, interval: u64, tolerance: u64) -> bool {
    let mut tat = load(p);
    for _ in 0..CAS_TRIES {
        let Some(next) = rate_admit(tat, now, interval, tolerance) else {
            return false;
        };
        match cas(p, tat, next) {
            (_, true) => return true,
            (seen, false) => tat = seen,
        }
    }
    false
}

/// Charges an admitted tracked packet to the ceiling at `p` (never refuses;
/// a lost race loses one charge, which only favours untracked sources by
/// one packet).
#[inline(always)]
fn charge(p: *mut u64, now: u64, interval: u64, tolerance: u64) {
    let tat = load(p);
    let _ = cas(p, tat, rate_charge(tat, now, interval, tolerance));
}

/// Is the packet within the limits of rate-limited zone `zone`? Only for an
/// allowed source of a zone whose flags have `LIMITED`. A BPF-to-BPF call,
/// not inlined: the verifier then joins every path through the buckets at
/// the return (a bool), instead of walking the rest of the program once per
/// path (inlined, it passed 1M instructions).
#[inline(never)]
pub fn within(ctx: &XdpContext, slot: u32, zone: u32, p: &IpPacket) -> bool {
    let Some(rates) = RATES.get(zone_index(slot, zone)) else {
        return true;
    };
    // At most a tick behind CLOCK_MONOTONIC (`RATE_CLOCK_STEP_NS`).
    let now = clock::mono_ns();
    if !within_one(
        zone,
        RATE_KIND_PACKETS,
        &rates.limits[RATE_KIND_PACKETS as usize],
        now,
        p,
    ) {
        return false;
    }
    let conn = &rates.limits[RATE_KIND_CONNECTIONS as usize];
    if conn.interval_ns == 0 || p.at.proto != IPPROTO_TCP {
        return true;
    }
    // TCP flags at byte 13 of the header: a SYN without ACK opens a
    // connection. (The parser checked the 20-byte header is there.)
    let off = (p.at.l4 as usize & 0x3fff) + 13;
    match bytes::<1>(ctx, off) {
        Some([f]) if f & 0x12 == 0x02 => within_one(zone, RATE_KIND_CONNECTIONS, conn, now, p),
        _ => true,
    }
}

#[inline(always)]
fn within_one(zone: u32, kind: u32, l: &RateLimit, now: u64, p: &IpPacket) -> bool {
    if l.interval_ns == 0 {
        return true;
    }
    let zi = rate_zone_index(zone, kind);
    let Some(z) = RATE_ZONE.get_ptr_mut(zi) else {
        return true;
    };
    // SAFETY: field pointers into the map value; only atomics touch them.
    let (ceiling, newk, inserted) = unsafe {
        (
            core::ptr::addr_of_mut!((*z).ceiling_tat),
            core::ptr::addr_of_mut!((*z).new_tat),
            core::ptr::addr_of_mut!((*z).inserted),
        )
    };
    // Untracked (`per = "zone"`): within the zone's ceiling only.
    if l.tracked == 0 {
        return admit(ceiling, now, l.ceiling_interval_ns, l.ceiling_tolerance_ns);
    }
    let w = match p.src {
        Src::V4(a) => rate_words4(zone, kind, l.v4_len, a),
        Src::V6(a) => rate_words6(zone, kind, l.v6_len, a),
    };
    let set = rate_set(&w);
    let mut free: Option<*mut u64> = None;
    for way in 0..RATE_WAYS {
        let Some(s) = RATE_SLOTS.get_ptr_mut(set + way) else {
            return true;
        };
        // SAFETY: field pointers into the map value. The key words are
        // written by one insert (after its compare-and-swap won the slot)
        // or the daemon's reaper; a read racing either sees a key that
        // matches nothing, and the packet goes the untracked way.
        let (k, tat) = unsafe {
            (
                core::ptr::addr_of_mut!((*s).key) as *mut u64,
                core::ptr::addr_of_mut!((*s).tat),
            )
        };
        let k0 = load(k);
        if k0 == w[0] && unsafe { load(k.add(1)) == w[1] && load(k.add(2)) == w[2] } {
            if !admit(tat, now, l.interval_ns, l.tolerance_ns) {
                return false;
            }
            charge(ceiling, now, l.ceiling_interval_ns, l.ceiling_tolerance_ns);
            return true;
        }
        if k0 == 0 && free.is_none() {
            free = Some(k);
        }
    }
    // Untracked: within the zone's ceiling only.
    if !admit(ceiling, now, l.ceiling_interval_ns, l.ceiling_tolerance_ns) {
        return false;
    }
    // A free way in the key's set, room for one more key and the budget for
    // it: track the source. Its first packet was paid from the ceiling.
    let Some(k) = free else {
        return true;
    };
    let reaped = RATE_REAPED.get(zi).copied().unwrap_or(0);
    if load(inserted).wrapping_sub(reaped) >= l.tracked as u64 {
        return true;
    }
    if !admit(newk, now, l.new_interval_ns, l.new_tolerance_ns) {
        return true;
    }
    if let (_, true) = cas(k, 0, w[0]) {
        // SAFETY: the slot is this CPU's since the swap; `tat` follows the
        // key words (`RateSlot`).
        unsafe {
            core::ptr::write_volatile(k.add(1), w[1]);
            core::ptr::write_volatile(k.add(2), w[2]);
            core::ptr::write_volatile(k.add(3), now + l.interval_ns);
        }
        add(inserted, 1);
    }
    true
}
