//! Transfer quotas of zones (`quota = …` in a `[[zone]]`): the per-slot
//! settings, the usage table (outside the slots, keyed by a hash of the zone
//! *name*, so neither a reload nor a renumbering of zones resets it) and the
//! period arithmetic both sides share.
//!
//! Upload is counted by the XDP program (frames admitted to the zone), download
//! by the TC egress program `portcullis_egress` (frames the host sends *from*
//! the zone's port). Both count whole frames (Ethernet header included) into
//! one `bytes` per (zone, masked source, period). Enforcement is at ingress
//! only: a source over quota has its packets to the zone refused, which
//! stalls a download (its ACKs are dropped) and refuses new connections.
//!
//! Periods are aligned to UTC: minute, hour and day periods are fixed lengths
//! from the Unix epoch (leap seconds ignored); calendar months come from the
//! daemon, which stores the next [`QUOTA_MONTHS`] month starts. All instants
//! are CLOCK_TAI ns (`bpf_ktime_get_tai_ns`), like schedules.

/// `QUOTAS[zone_index(slot, zone)]`: a zone's quota in a policy slot
/// ([`ZoneQuota`]); read only for zones with `ZoneInfo::QUOTA`.
pub const MAP_QUOTAS: &str = "QUOTAS";
/// `QUOTA_USAGE`: a preallocated hash (not LRU: evicting a heavy user would
/// reset their quota) of [`QuotaKey`] → [`QuotaUsage`]. Not per slot.
pub const MAP_QUOTA_USAGE: &str = "QUOTA_USAGE";
/// Name of the TC egress program in the object (download counting).
pub const EGRESS_PROGRAM_NAME: &str = "portcullis_egress";

/// Entries of `QUOTA_USAGE`, all zones together: 65,536 × ~100 bytes ≈
/// 6.5 MiB preallocated. A source that finds the table full is not counted
/// (quotas account, rate limits defend); the daemon deletes entries of past
/// periods, so the table recovers at each rollover.
pub const QUOTA_TABLE_MAX: u32 = 65_536;
/// Month starts a slot holds ahead: 16 months without a reload.
pub const QUOTA_MONTHS: usize = 16;

/// `ZoneQuota::directions` bits.
pub const QUOTA_UPLOAD: u8 = 1;
pub const QUOTA_DOWNLOAD: u8 = 2;

/// Period kinds, tagged into the top byte of a period number so that a
/// change of `period` never reads another kind's count.
pub const QUOTA_MINUTE: u64 = 1;
pub const QUOTA_HOUR: u64 = 2;
pub const QUOTA_DAY: u64 = 3;
pub const QUOTA_MONTH: u64 = 4;
pub const QUOTA_KIND_SHIFT: u32 = 56;

/// A period number tagged with its kind.
#[inline(always)]
pub const fn quota_tag(kind: u64, number: u64) -> u64 {
    (kind << QUOTA_KIND_SHIFT) | (number & ((1 << QUOTA_KIND_SHIFT) - 1))
}

/// `QUOTAS` value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ZoneQuota {
    /// A source is over quota once its period's `bytes` reach this.
    pub limit_bytes: u64,
    /// The tagged period number ([`quota_tag`]) that begins at `start_ns`.
    pub first: u64,
    /// CLOCK_TAI ns at which period `first` began (at or before the apply).
    pub start_ns: u64,
    /// Length of a fixed period (minute, hour, day); 0 = calendar months.
    pub len_ns: u64,
    /// Months: CLOCK_TAI ns of the starts of periods `first + 1 ..`,
    /// ascending, `u64::MAX` past the last; unused for fixed periods.
    pub next: [u64; QUOTA_MONTHS],
    /// [`quota_zone_key`] of the zone's name.
    pub zone_key: u32,
    /// [`QUOTA_UPLOAD`] | [`QUOTA_DOWNLOAD`].
    pub directions: u8,
    /// Prefix lengths a source is masked to (`per`): IPv4 0..=32, IPv6 0..=128.
    pub v4_len: u8,
    pub v6_len: u8,
    pub _pad: u8,
}

impl Default for ZoneQuota {
    fn default() -> Self {
        ZoneQuota {
            limit_bytes: 0,
            first: 0,
            start_ns: 0,
            len_ns: 0,
            next: [u64::MAX; QUOTA_MONTHS],
            zone_key: 0,
            directions: 0,
            v4_len: 0,
            v6_len: 0,
            _pad: 0,
        }
    }
}

/// The tagged period `now` (CLOCK_TAI ns) falls in. Before `start_ns` (a
/// clock stepped back) it is `first`; past the last stored month start it
/// stays at the last month (the daemon re-applies long before).
#[inline(always)]
pub fn quota_period(q: &ZoneQuota, now: u64) -> u64 {
    if let Some(n) = now.saturating_sub(q.start_ns).checked_div(q.len_ns) {
        return q.first + n;
    }
    let mut n = 0;
    while n < QUOTA_MONTHS {
        if q.next[n] > now {
            break;
        }
        n += 1;
    }
    q.first + n as u64
}

/// `QUOTA_USAGE` key: a zone (by name) and a masked source.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QuotaKey {
    pub zone_key: u32,
    /// 4 or 6; 0 for a mask length of 0 (`per = "zone"`: one count for
    /// the zone, whatever the family).
    pub family: u8,
    /// The mask length: a change of `per` never reads another mask's key.
    pub len: u8,
    pub _pad: [u8; 2],
    /// The masked address (IPv4 in the first 4 bytes, rest zero).
    pub addr: [u8; 16],
}

/// `QUOTA_USAGE` value. A `period` other than the zone's current one is a
/// past period: it reads as 0 bytes and the next counted frame restarts it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    pub period: u64,
    pub bytes: u64,
}

/// The bytes a usage entry holds for period `period`.
#[inline(always)]
pub const fn quota_used(u: &QuotaUsage, period: u64) -> u64 {
    if u.period == period {
        u.bytes
    } else {
        0
    }
}

/// A stable 32-bit key for a zone name (FNV-1a): the usage of zone "api"
/// stays its usage when zones before it are added or removed. Never 0.
pub const fn quota_zone_key(name: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    let mut i = 0;
    while i < name.len() {
        h ^= name[i] as u32;
        h = h.wrapping_mul(0x0100_0193);
        i += 1;
    }
    if h == 0 {
        1
    } else {
        h
    }
}

/// The masked key of an IPv4 source.
#[inline(always)]
pub const fn quota_key4(zone_key: u32, len: u8, addr: [u8; 4]) -> QuotaKey {
    let k = crate::rate_key4(0, 0, len, addr);
    QuotaKey {
        zone_key,
        family: if len == 0 { 0 } else { 4 },
        len,
        _pad: [0; 2],
        addr: k.addr,
    }
}

/// The masked key of an IPv6 source.
#[inline(always)]
pub const fn quota_key6(zone_key: u32, len: u8, addr: [u8; 16]) -> QuotaKey {
    let k = crate::rate_key6(0, 0, len, addr);
    QuotaKey {
        zone_key,
        family: if len == 0 { 0 } else { 6 },
        len,
        _pad: [0; 2],
        addr: k.addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    const MIN: u64 = 60_000_000_000;

    #[test]
    fn fixed_periods_count_from_their_start() {
        let q = ZoneQuota {
            first: quota_tag(QUOTA_MINUTE, 100),
            start_ns: 10 * MIN,
            len_ns: MIN,
            ..ZoneQuota::default()
        };
        assert_eq!(quota_period(&q, 10 * MIN), quota_tag(QUOTA_MINUTE, 100));
        assert_eq!(quota_period(&q, 11 * MIN - 1), quota_tag(QUOTA_MINUTE, 100));
        assert_eq!(quota_period(&q, 11 * MIN), quota_tag(QUOTA_MINUTE, 101));
        // A clock stepped back stays in the first period.
        assert_eq!(quota_period(&q, 0), quota_tag(QUOTA_MINUTE, 100));
    }

    #[test]
    fn months_count_the_starts_passed() {
        let mut q = ZoneQuota {
            first: quota_tag(QUOTA_MONTH, 683),
            start_ns: 0,
            ..ZoneQuota::default()
        };
        q.next[0] = 100;
        q.next[1] = 200;
        assert_eq!(quota_period(&q, 99), quota_tag(QUOTA_MONTH, 683));
        assert_eq!(quota_period(&q, 100), quota_tag(QUOTA_MONTH, 684));
        assert_eq!(quota_period(&q, 250), quota_tag(QUOTA_MONTH, 685));
        assert_eq!(quota_period(&q, u64::MAX - 1), quota_tag(QUOTA_MONTH, 685));
    }

    #[test]
    fn a_past_period_reads_as_nothing_used() {
        let u = QuotaUsage {
            period: 7,
            bytes: 500,
        };
        assert_eq!(quota_used(&u, 7), 500);
        assert_eq!(quota_used(&u, 8), 0);
    }

    #[test]
    fn zone_keys_are_stable_and_masked_keys_mask() {
        assert_eq!(quota_zone_key(b"api"), quota_zone_key(b"api"));
        assert_ne!(quota_zone_key(b"api"), quota_zone_key(b"apj"));
        assert_ne!(quota_zone_key(b""), 0);
        let k = quota_key4(9, 24, [10, 1, 2, 3]);
        assert_eq!((k.family, k.len, &k.addr[..4]), (4, 24, &[10, 1, 2, 0][..]));
        let k6 = quota_key6(
            9,
            64,
            [0x20, 1, 0xd, 0xb8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
        );
        assert_eq!(&k6.addr[8..], &[0; 8]);
        // per = "zone": one key for both families.
        assert_eq!(
            quota_key4(9, 0, [10, 1, 2, 3]),
            quota_key6(9, 0, [0x20; 16])
        );
    }
}
