//! Rate limits of zones (`rate = …` in a `[[zone]]`): the per-slot limit
//! settings, the buckets (outside the slots, so a reload keeps them) and the
//! GCRA arithmetic both sides share.
//!
//! A bucket is the GCRA ("generic cell rate algorithm") form of a token
//! bucket: one `u64`, the theoretical arrival time `tat` of the next packet.
//! A limit of `r` per second with burst `b` has interval `T = 1e9 / r` ns and
//! tolerance `τ = (b − 1)·T`; a packet at `now` is admitted iff
//! `max(tat, now) − now ≤ τ`, and then `tat = max(tat, now) + T`. That is
//! exactly a bucket of `b` tokens refilled one per `T`, in one word: updated
//! with one compare-and-swap, correct across CPUs, no division on the packet
//! path (the loader computes `T` and `τ`).

/// `RATES[zone_index(slot, zone)]`: the limits of a zone in a policy slot
/// ([`ZoneRates`]); absent (all zero) = no limit.
pub const MAP_RATES: &str = "RATES";
/// `RATE_KEYS`: a preallocated hash (not LRU: a flood must not evict steady
/// clients) of [`RateKey`] → [`RateBucket`], one entry per tracked source
/// (or aggregate) of a limit. Not per slot: a reload keeps the buckets.
pub const MAP_RATE_KEYS: &str = "RATE_KEYS";
/// `RATE_ZONE[rate_zone_index(zone, kind)]`: a limit's zone-wide state
/// ([`RateZone`]): the aggregate ceiling's bucket, the new-key budget and how
/// many keys the datapath inserted. Not per slot.
pub const MAP_RATE_ZONE: &str = "RATE_ZONE";
/// `RATE_REAPED[rate_zone_index(zone, kind)]`: how many of a limit's keys the
/// daemon deleted (a `u64` it alone writes; the datapath only reads it, so
/// `inserted − reaped` is the number tracked without a shared writer).
pub const MAP_RATE_REAPED: &str = "RATE_REAPED";

/// Entries of `RATE_KEYS` (all zones together): 65,536 × ~90 bytes ≈ 6 MiB,
/// preallocated. The policy's `tracked` numbers must add up to at most this.
pub const RATE_TABLE_MAX: u32 = 65_536;
/// Limit kinds: every packet, or new TCP connections (SYN without ACK).
pub const RATE_KIND_PACKETS: u32 = 0;
pub const RATE_KIND_CONNECTIONS: u32 = 1;
pub const RATE_KINDS: u32 = 2;
/// Entries of `RATE_ZONE` and `RATE_REAPED`: zone ids 0..=MAX_ZONES, two kinds.
pub const RATE_ZONE_LEN: u32 = (crate::MAX_ZONES + 1) * RATE_KINDS;

#[inline(always)]
pub const fn rate_zone_index(zone: u32, kind: u32) -> u32 {
    zone * RATE_KINDS + kind
}

/// One limit's settings. `interval_ns == 0`: no limit of this kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimit {
    /// Per key: nanoseconds per admitted packet and the tolerance (burst − 1
    /// intervals).
    pub interval_ns: u64,
    pub tolerance_ns: u64,
    /// The zone's aggregate ceiling: untracked sources are admitted only
    /// within it; tracked ones are charged to it (see `rate_charge`).
    pub ceiling_interval_ns: u64,
    pub ceiling_tolerance_ns: u64,
    /// The budget of new keys (insertions into `RATE_KEYS`).
    pub new_interval_ns: u64,
    pub new_tolerance_ns: u64,
    /// Keys this limit may hold in `RATE_KEYS`; 0 = none (`per = "zone"`:
    /// the ceiling is the one bucket).
    pub tracked: u32,
    /// Prefix lengths a source is masked to: IPv4 0..=32, IPv6 0..=128.
    pub v4_len: u8,
    pub v6_len: u8,
    pub _pad: [u8; 2],
}

/// `RATES` value: a zone's packet and connection limits.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ZoneRates {
    pub limits: [RateLimit; RATE_KINDS as usize],
}

/// `RATE_KEYS` key: a limit and a masked source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RateKey {
    pub zone: u8,
    pub kind: u8,
    /// 4 or 6.
    pub family: u8,
    /// The mask length, so a change of `per` never reads another mask's key.
    pub len: u8,
    /// The masked address (IPv4 in the first 4 bytes, rest zero).
    pub addr: [u8; 16],
}

/// `RATE_KEYS` value: the key's GCRA state, CLOCK_MONOTONIC ns
/// (`bpf_ktime_get_ns`). A `tat` at or before now is a full bucket, the
/// same as no entry: deleting such an entry loses nothing but the tracking.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateBucket {
    pub tat: u64,
}

/// `RATE_ZONE` value, written by the datapath only (atomics).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateZone {
    /// The aggregate ceiling's GCRA state.
    pub ceiling_tat: u64,
    /// The new-key budget's GCRA state.
    pub new_tat: u64,
    /// Keys inserted into `RATE_KEYS` so far (never decremented).
    pub inserted: u64,
}

/// GCRA: the new `tat` if a packet at `now` is admitted, else `None`.
#[inline(always)]
pub const fn rate_admit(tat: u64, now: u64, interval: u64, tolerance: u64) -> Option<u64> {
    let start = if tat > now { tat } else { now };
    if start - now > tolerance {
        None
    } else {
        Some(start + interval)
    }
}

/// Charges a tracked source's admitted packet to the zone's ceiling without
/// refusing it: `tat` advances by one interval but never beyond
/// `now + 2τ + T`, so tracked traffic can borrow up to one burst ahead and
/// untracked sources (admitted by [`rate_admit`] against the same `tat`)
/// get only what the tracked ones leave.
#[inline(always)]
pub const fn rate_charge(tat: u64, now: u64, interval: u64, tolerance: u64) -> u64 {
    let start = if tat > now { tat } else { now };
    let cap = now + 2 * tolerance + interval;
    let next = start + interval;
    if next > cap {
        cap
    } else {
        next
    }
}

/// `(interval, tolerance)` of `count` packets per `period_ns` with `burst`
/// (≥ 1): the interval rounded to the nearest nanosecond (a rate of 3/s is
/// 3.000000003/s), at least 1 ns.
pub const fn rate_params(count: u64, period_ns: u64, burst: u64) -> (u64, u64) {
    if count == 0 {
        return (0, 0);
    }
    let mut interval = (period_ns + count / 2) / count;
    if interval == 0 {
        interval = 1;
    }
    let b = if burst == 0 { 1 } else { burst };
    (interval, (b - 1) * interval)
}

/// The masked key of an IPv4 source.
#[inline(always)]
pub const fn rate_key4(zone: u32, kind: u32, len: u8, addr: [u8; 4]) -> RateKey {
    let a = u32::from_be_bytes(addr);
    let m = if len == 0 {
        0
    } else if len >= 32 {
        a
    } else {
        a & (u32::MAX << (32 - len as u32))
    };
    let b = m.to_be_bytes();
    RateKey {
        zone: zone as u8,
        kind: kind as u8,
        family: 4,
        len,
        addr: [b[0], b[1], b[2], b[3], 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
    }
}

/// Masks one big-endian u64 half to its top `bits` bits (0..=64).
#[inline(always)]
const fn mask64(v: u64, bits: u32) -> u64 {
    if bits == 0 {
        0
    } else if bits >= 64 {
        v
    } else {
        v & (u64::MAX << (64 - bits))
    }
}

/// The masked key of an IPv6 source.
#[inline(always)]
pub const fn rate_key6(zone: u32, kind: u32, len: u8, addr: [u8; 16]) -> RateKey {
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let lo = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    let l = len as u32;
    let hi = mask64(hi, if l > 64 { 64 } else { l });
    let lo = mask64(lo, l.saturating_sub(64));
    let h = hi.to_be_bytes();
    let o = lo.to_be_bytes();
    RateKey {
        zone: zone as u8,
        kind: kind as u8,
        family: 6,
        len,
        addr: [
            h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7], o[0], o[1], o[2], o[3], o[4], o[5],
            o[6], o[7],
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const NS: u64 = 1_000_000_000;

    #[test]
    fn a_burst_is_admitted_at_once_then_one_packet_per_interval() {
        let (t, tau) = rate_params(200, NS, 400);
        assert_eq!(t, 5_000_000);
        let now = 1_000_000_000;
        let mut tat = 0;
        let mut admitted = 0;
        for _ in 0..1000 {
            if let Some(n) = rate_admit(tat, now, t, tau) {
                tat = n;
                admitted += 1;
            }
        }
        assert_eq!(admitted, 400);
        // One interval later exactly one more.
        assert!(rate_admit(tat, now + t - 1, t, tau).is_none());
        assert!(rate_admit(tat, now + t, t, tau).is_some());
    }

    #[test]
    fn a_steady_sender_at_the_rate_is_never_refused() {
        let (t, tau) = rate_params(100, NS, 1);
        let mut tat = 0;
        for i in 0..10_000u64 {
            let now = 5_000_000_000 + i * t;
            tat = rate_admit(tat, now, t, tau).expect("at the rate");
        }
    }

    #[test]
    fn charging_borrows_at_most_one_burst_ahead() {
        let (t, tau) = rate_params(1000, NS, 10);
        let now = 1_000_000_000;
        let mut tat = 0;
        for _ in 0..1000 {
            tat = rate_charge(tat, now, t, tau);
        }
        assert_eq!(tat, now + 2 * tau + t);
        // Untracked sources get nothing until the debt is paid.
        assert!(rate_admit(tat, now + tau, t, tau).is_none());
        assert!(rate_admit(tat, now + tau + t, t, tau).is_some());
    }

    #[test]
    fn keys_are_masked_to_their_length() {
        let k = rate_key4(3, RATE_KIND_PACKETS, 24, [10, 1, 2, 3]);
        assert_eq!(&k.addr[..4], &[10, 1, 2, 0]);
        assert_eq!(rate_key4(3, 0, 32, [10, 1, 2, 3]).addr[3], 3);
        assert_eq!(rate_key4(3, 0, 0, [10, 1, 2, 3]).addr, [0; 16]);
        let a6 = [0x20, 1, 0xd, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12];
        let k6 = rate_key6(1, 1, 64, a6);
        assert_eq!(&k6.addr[..8], &a6[..8]);
        assert_eq!(&k6.addr[8..], &[0; 8]);
        assert_eq!(rate_key6(1, 1, 128, a6).addr, a6);
        let k56 = rate_key6(1, 1, 56, a6);
        assert_eq!(k56.addr[6], 3);
        assert_eq!(k56.addr[7], 0);
        let k72 = rate_key6(1, 1, 72, a6);
        assert_eq!(k72.addr[8], 5);
        assert_eq!(k72.addr[9], 0);
    }

    #[test]
    fn rate_params_round_the_interval() {
        assert_eq!(rate_params(3, NS, 1), (333_333_333, 0));
        assert_eq!(rate_params(2_000_000_000, NS, 5), (1, 4));
        assert_eq!(rate_params(0, NS, 5), (0, 0));
        assert_eq!(rate_params(10, 60 * NS, 1), (6 * NS, 0));
    }
}
