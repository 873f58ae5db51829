//! Zone transfer quotas (docs/policy.md, "Transfer quotas"): bytes per
//! (zone, masked source, period) in `QUOTA_USAGE`, shared by every CPU and
//! by both programs: the XDP program counts upload and enforces, the egress
//! program (egress.rs) counts download. A past period's entry is restarted
//! by the first frame of the new one, so a rollover needs no daemon.
use aya_ebpf::bindings::BPF_NOEXIST;
use filter_common::{
    quota_key4, quota_key6, quota_period, zone_index, QuotaKey, QuotaUsage, ZoneQuota, QUOTA_UPLOAD,
};

use crate::{
    maps::{QUOTAS, QUOTA_USAGE},
    parse::Src,
    rate::{add, cas, load},
};

/// The key of `src` under quota `q`.
#[inline(always)]
pub fn key(q: &ZoneQuota, src: &Src) -> QuotaKey {
    match src {
        Src::V4(a) => quota_key4(q.zone_key, q.v4_len, *a),
        Src::V6(a) => quota_key6(q.zone_key, q.v6_len, *a),
    }
}

/// The current period of `q` by the kernel's TAI clock (clock.rs).
#[inline(always)]
pub fn period_now(q: &ZoneQuota) -> u64 {
    quota_period(q, crate::clock::tai_ns())
}

/// Adds `len` bytes to `key`'s usage in `period`, unless what it holds in
/// `period` is already at or over `refuse_at`: then `false`, nothing added.
/// (So usage ends at most one frame per CPU over the limit.) Races lose at
/// most a concurrent frame's bytes at a rollover, never a period's count.
#[inline(always)]
pub fn charge(key: &QuotaKey, period: u64, len: u64, refuse_at: u64) -> bool {
    let Some(u) = QUOTA_USAGE.get_ptr_mut(key) else {
        // A full table leaves the source uncounted (see QUOTA_TABLE_MAX).
        let _ = QUOTA_USAGE.insert(key, QuotaUsage { period, bytes: len }, BPF_NOEXIST as u64);
        return true;
    };
    // SAFETY: field pointers into the map value; only atomics and aligned
    // single-word stores touch them.
    let (pp, bp) = unsafe {
        (
            core::ptr::addr_of_mut!((*u).period),
            core::ptr::addr_of_mut!((*u).bytes),
        )
    };
    let seen = load(pp);
    if seen == period {
        if load(bp) >= refuse_at {
            return false;
        }
        if len != 0 {
            add(bp, len);
        }
        return true;
    }
    // A past period: the CPU that moves the period on restarts the count.
    if cas(pp, seen, period).1 {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(bp, len) };
    } else if len != 0 {
        add(bp, len);
    }
    true
}

/// Is an allowed source of quota zone `zone` within its quota? Counts the
/// frame's `len` bytes as upload when the zone counts upload. A BPF-to-BPF
/// call, like rate.rs, so the verifier joins its paths at the return.
#[inline(never)]
pub fn within(slot: u32, zone: u32, src: &Src, len: u64) -> bool {
    let Some(q) = QUOTAS.get(zone_index(slot, zone)) else {
        return true;
    };
    let period = period_now(q);
    let up = if q.directions & QUOTA_UPLOAD != 0 {
        len
    } else {
        0
    };
    charge(&key(q, src), period, up, q.limit_bytes)
}
