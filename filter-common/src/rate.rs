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
/// `RATE_KEYS` (layouts 5–7): a preallocated hash of [`RateKey`] →
/// [`RateBucket`]; replaced by [`MAP_RATE_SLOTS`] in layout 8, read only by
/// a migration from an earlier layout.
pub const MAP_RATE_KEYS: &str = "RATE_KEYS";
/// `RATE_SLOTS[rate_set(key) + way]`: the tracked sources' buckets
/// ([`RateSlot`]), a 4-way set-associative table (an array: the lookup is
/// inlined by the verifier and the key compared in registers, where a hash
/// map costs a hash, a bucket walk and a `memcmp` call). A slot is taken
/// only by an insert (never evicted by the datapath, so a flood cannot push
/// out steady clients) and freed by the daemon's reaper. Not per slot: a
/// reload keeps the buckets.
pub const MAP_RATE_SLOTS: &str = "RATE_SLOTS";
/// Ways of a set of `RATE_SLOTS`: a new key takes a free one of the four
/// slots its hash picks, or is untracked (it shares the ceiling).
pub const RATE_WAYS: u32 = 4;
/// Sets of `RATE_SLOTS` (a power of two).
pub const RATE_SETS: u32 = 32_768;
/// Entries of `RATE_SLOTS`: twice [`RATE_TABLE_MAX`], so a table at its
/// tracked maximum is half full (a new key then finds its set full ~14% of
/// the time; at a quarter, ~2%).
pub const RATE_SLOTS_LEN: u32 = RATE_SETS * RATE_WAYS;
/// `RATE_ZONE[rate_zone_index(zone, kind)]`: a limit's zone-wide state
/// ([`RateZone`]): the aggregate ceiling's bucket, the new-key budget and how
/// many keys the datapath inserted. Not per slot.
pub const MAP_RATE_ZONE: &str = "RATE_ZONE";
/// `RATE_REAPED[rate_zone_index(zone, kind)]`: how many of a limit's keys the
/// daemon deleted (a `u64` it alone writes; the datapath only reads it, so
/// `inserted − reaped` is the number tracked without a shared writer).
pub const MAP_RATE_REAPED: &str = "RATE_REAPED";

/// Keys tracked (all zones together). The policy's `tracked` numbers must
/// add up to at most this; `RATE_SLOTS` has twice as many slots (4 MiB).
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
    /// Keys this limit may hold in `RATE_SLOTS`; 0 = none (`per = "zone"`:
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

impl RateKey {
    /// The key as `RATE_SLOTS` stores it: its 20 bytes as little-endian
    /// words (the last one padded with zeros). A real key has `family` 4 or
    /// 6, so its first word is never 0, the mark of a free slot.
    pub const fn words(&self) -> [u64; 3] {
        let a = &self.addr;
        [
            u64::from_le_bytes([
                self.zone,
                self.kind,
                self.family,
                self.len,
                a[0],
                a[1],
                a[2],
                a[3],
            ]),
            u64::from_le_bytes([a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]]),
            u64::from_le_bytes([a[12], a[13], a[14], a[15], 0, 0, 0, 0]),
        ]
    }

    /// The key `words` stores (the inverse of [`RateKey::words`]).
    pub const fn from_words(w: &[u64; 3]) -> RateKey {
        let (b0, b1, b2) = (w[0].to_le_bytes(), w[1].to_le_bytes(), w[2].to_le_bytes());
        RateKey {
            zone: b0[0],
            kind: b0[1],
            family: b0[2],
            len: b0[3],
            addr: [
                b0[4], b0[5], b0[6], b0[7], b1[0], b1[1], b1[2], b1[3], b1[4], b1[5], b1[6], b1[7],
                b2[0], b2[1], b2[2], b2[3],
            ],
        }
    }
}

/// `RATE_SLOTS` value: a tracked key ([`RateKey::words`]; all zero = free)
/// and its GCRA word. The datapath claims a free slot with a
/// compare-and-swap on `key[0]`, then writes the rest; the daemon frees one
/// by writing zeros.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateSlot {
    pub key: [u64; 3],
    pub tat: u64,
}

impl RateSlot {
    pub const fn is_free(&self) -> bool {
        self.key[0] == 0
    }
}

/// The first word of a key: the limit's fields and the first 4 address
/// bytes (`addr` as a little-endian `u32`).
#[inline(always)]
const fn word0(zone: u32, kind: u32, family: u64, len: u8, addr: u32) -> u64 {
    (zone as u64 & 0xff)
        | (kind as u64 & 0xff) << 8
        | family << 16
        | (len as u64) << 24
        | (addr as u64) << 32
}

/// [`rate_key4`]`(..).words()`, computed in registers (the datapath's key).
#[inline(always)]
pub const fn rate_words4(zone: u32, kind: u32, len: u8, addr: [u8; 4]) -> [u64; 3] {
    let a = u32::from_be_bytes(addr);
    let m = if len == 0 {
        0
    } else if len >= 32 {
        a
    } else {
        a & (u32::MAX << (32 - len as u32))
    };
    // The masked bytes in order, read little-endian.
    [word0(zone, kind, 4, len, m.swap_bytes()), 0, 0]
}

/// [`rate_key6`]`(..).words()`, computed in registers.
#[inline(always)]
pub const fn rate_words6(zone: u32, kind: u32, len: u8, addr: [u8; 16]) -> [u64; 3] {
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let lo = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    let l = len as u32;
    // The masked halves as their bytes read little-endian.
    let h = mask64(hi, if l > 64 { 64 } else { l }).swap_bytes();
    let o = mask64(lo, l.saturating_sub(64)).swap_bytes();
    [
        word0(zone, kind, 6, len, h as u32),
        (h >> 32) | (o << 32),
        o >> 32,
    ]
}

/// The first `RATE_SLOTS` index of a key's set: a 64-bit mix of its words
/// (multiply and xor-shift, as splitmix64's finaliser), cut to a set.
#[inline(always)]
pub const fn rate_set(w: &[u64; 3]) -> u32 {
    let mut x =
        w[0] ^ w[1].wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ w[2].wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    x ^= x >> 31;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 29;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^= x >> 32;
    (x as u32 & (RATE_SETS - 1)) * RATE_WAYS
}

/// `RATE_KEYS` value (layouts 5–7), and how `RateState` reports a slot: the key's GCRA state, CLOCK_MONOTONIC ns
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
    /// Keys inserted into `RATE_SLOTS` so far (never decremented).
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

/// The longest step of the datapath's clock: buckets read
/// `bpf_ktime_get_coarse_ns` (CLOCK_MONOTONIC_COARSE, which moves once a
/// kernel tick: 10 ms at `HZ=100`, the slowest tick Linux builds), because
/// the precise clock costs as much as the rest of a limited packet (an
/// `rdtsc` in a VM). Within a step `now` stands still, so a bucket must hold
/// a step's worth of packets or it would admit at most one burst per tick.
pub const RATE_CLOCK_STEP_NS: u64 = 10_000_000;

/// `(interval, tolerance)` of `count` packets per `period_ns` with `burst`
/// (≥ 1): the interval rounded to the nearest nanosecond (a rate of 3/s is
/// 3.000000003/s), at least 1 ns. The tolerance is at least
/// [`RATE_CLOCK_STEP_NS`] − interval, so the long-run rate is exact on the
/// coarse clock: a burst smaller than 10 ms of the rate is raised to that
/// ([`rate_burst`]).
pub const fn rate_params(count: u64, period_ns: u64, burst: u64) -> (u64, u64) {
    if count == 0 {
        return (0, 0);
    }
    let mut interval = (period_ns + count / 2) / count;
    if interval == 0 {
        interval = 1;
    }
    let b = if burst == 0 { 1 } else { burst };
    let mut tolerance = (b - 1) * interval;
    if tolerance + interval < RATE_CLOCK_STEP_NS {
        tolerance = RATE_CLOCK_STEP_NS - interval;
    }
    (interval, tolerance)
}

/// The burst a limit really has: the packets its bucket admits at once,
/// `τ / T + 1` ([`rate_params`]; at least `burst`).
pub const fn rate_burst(count: u64, period_ns: u64, burst: u64) -> u64 {
    let (interval, tolerance) = rate_params(count, period_ns, burst);
    if interval == 0 {
        return 0;
    }
    tolerance / interval + 1
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
    fn the_datapath_words_are_the_keys_words() {
        let a6 = [0x20, 1, 0xd, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 0xfc];
        for len in [0u8, 1, 8, 24, 31, 32] {
            let k = rate_key4(7, 1, len, [10, 1, 2, 0xf3]);
            assert_eq!(
                rate_words4(7, 1, len, [10, 1, 2, 0xf3]),
                k.words(),
                "/{len}"
            );
            assert_eq!(RateKey::from_words(&k.words()), k);
        }
        for len in [0u8, 1, 32, 33, 48, 64, 65, 96, 127, 128] {
            let k = rate_key6(200, 0, len, a6);
            assert_eq!(rate_words6(200, 0, len, a6), k.words(), "/{len}");
            assert_eq!(RateKey::from_words(&k.words()), k);
            assert_ne!(k.words()[0], 0, "a key's first word is never the free mark");
        }
    }

    #[test]
    fn sets_spread_neighbouring_sources() {
        // The hosts of a /16 fill the sets evenly: no set gets more than
        // 2 × its fair share.
        let mut per_set = [0u32; RATE_SETS as usize];
        for i in 0..65_536u32 {
            let b = i.to_be_bytes();
            let s = rate_set(&rate_words4(1, 0, 32, [10, 1, b[2], b[3]]));
            assert_eq!(s % RATE_WAYS, 0);
            assert!(s < RATE_SLOTS_LEN);
            per_set[(s / RATE_WAYS) as usize] += 1;
        }
        // Two keys a set on average (Poisson): none with more than 12, and
        // about e^-2 of the sets empty.
        let fair = 65_536 / RATE_SETS;
        assert!(
            per_set.iter().all(|&n| n <= 6 * fair),
            "{:?}",
            per_set.iter().max()
        );
        let empty = per_set.iter().filter(|&&n| n == 0).count() as u32;
        assert!(empty < RATE_SETS / 5, "{empty} empty sets");
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
        assert_eq!(rate_params(0, NS, 5), (0, 0));
        assert_eq!(rate_params(10, 60 * NS, 1), (6 * NS, 0));
        assert_eq!(rate_params(100, NS, 2), (10_000_000, 10_000_000));
    }

    #[test]
    fn a_burst_below_one_clock_step_is_raised_to_it() {
        // 1000/s: a step of 10 ms holds 10 packets.
        assert_eq!(rate_params(1000, NS, 1), (1_000_000, 9_000_000));
        assert_eq!(rate_burst(1000, NS, 1), 10);
        assert_eq!(rate_burst(1000, NS, 40), 40);
        assert_eq!(rate_burst(200, NS, 1), 2);
        assert_eq!(rate_burst(100, NS, 1), 1);
        assert_eq!(
            rate_params(2_000_000_000, NS, 5),
            (1, RATE_CLOCK_STEP_NS - 1)
        );
    }

    #[test]
    fn on_a_clock_that_steps_the_long_run_rate_is_exact() {
        // 1000/s, burst 1, flooded; the clock moves 4 ms (HZ=250) or 10 ms
        // (HZ=100) at a time. Over 10 s: 10,000 admitted (+ one burst).
        for step in [4_000_000u64, 10_000_000] {
            let (t, tau) = rate_params(1000, NS, 1);
            let mut tat = 0;
            let mut admitted = 0u64;
            let mut now = NS;
            while now < 11 * NS {
                while let Some(n) = rate_admit(tat, now, t, tau) {
                    tat = n;
                    admitted += 1;
                }
                now += step;
            }
            assert!((10_000..=10_010).contains(&admitted), "{step}: {admitted}");
        }
    }
}
