//! Bans (layout: `filter-common`, "Bans"): the prefilter words, and only on a
//! hit the exact maps and the clock. Unlisted sources pay the prefilter reads
//! only; the clock is read only for a source some ban entry covers.
use aya_ebpf::{helpers::bpf_ktime_get_tai_ns, maps::lpm_trie::Key};
use filter_common::{
    ban_h32, ban_h48, ban_in_force, ban_v6_top16, BanNet4, BanNet6, BanValue, BAN_TOP4, BAN_TOP6,
    BAN_V4_16, BAN_V4_24, BAN_V6_16, BAN_V6_32, BAN_V6_48,
};

use crate::{
    maps::{BAN4, BAN4_NETS, BAN6, BAN6_NETS, BAN_BITS, BAN_COUNTERS},
    parse::Src,
};

#[inline(always)]
fn bit(region: u32, n: u32) -> bool {
    match BAN_BITS.get(region + (n >> 6)) {
        Some(w) => *w & (1u64 << (n & 63)) != 0,
        None => false,
    }
}

/// The entry that decides for `src`: the address's own, else the longest
/// covering prefix's.
#[inline(always)]
fn entry(src: &Src) -> Option<BanValue> {
    match src {
        Src::V4(a) => {
            let addr = u32::from_be_bytes(*a);
            if !bit(BAN_TOP4, addr >> 24)
                || (!bit(BAN_V4_24, addr >> 8) && !bit(BAN_V4_16, addr >> 16))
            {
                return None;
            }
            if let Some(v) = BAN4.get_ptr(a) {
                // SAFETY: a value of this map, read once while the program runs.
                return Some(unsafe { *v });
            }
            BAN4_NETS.get(Key::new(32, BanNet4 { addr: *a })).copied()
        }
        Src::V6(a) => {
            if !bit(BAN_TOP6, a[0] as u32)
                || (!bit(BAN_V6_48, ban_h48(a))
                    && !bit(BAN_V6_32, ban_h32(a))
                    && !bit(BAN_V6_16, ban_v6_top16(a)))
            {
                return None;
            }
            if let Some(v) = BAN6.get_ptr(a) {
                // SAFETY: as above.
                return Some(unsafe { *v });
            }
            BAN6_NETS.get(Key::new(128, BanNet6 { addr: *a })).copied()
        }
    }
}

/// The tag of the ban in force on `src` now, if any.
#[inline(always)]
pub fn ban_tag(src: &Src) -> Option<u32> {
    // A copy opaque to the optimiser: else LLVM folds the address bytes
    // into arithmetic on the packet pointer they came from (`pkt >> 16`),
    // which the verifier refuses.
    let src = core::hint::black_box(*src);
    let v = entry(&src)?;
    // SAFETY: a helper without arguments (Linux >= 6.1).
    let now = unsafe { bpf_ktime_get_tai_ns() };
    ban_in_force(&v, now).then_some(v.tag)
}

/// Counts a banned packet on its tag.
#[inline(always)]
pub fn count_tag(tag: u32, bytes: u64) {
    if let Some(c) = BAN_COUNTERS.get_ptr_mut(tag) {
        // SAFETY: per-CPU slot; XDP does not preempt itself on one CPU.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += bytes;
        }
    }
}
