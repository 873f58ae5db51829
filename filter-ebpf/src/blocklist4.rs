//! IPv4 prefix sets in the blocklist's layout (`filter-common`, "IPv4
//! blocklist" and "Allowlist lanes"): the blocklist (lane 0, `BL4_*`) and the
//! allowlist lanes of large zones (`LANE4_*`). The /24's bitmap word, and only
//! for a partly covered /24 its group's base and one host bitmap. No hash on
//! the packet path.
use aya_ebpf::maps::Array;
use filter_common::{bl4_bits_index, bl4_word_index, lane4_word_index, Bl4Hosts, Bl4Word};

use crate::maps::{BL4_BASE, BL4_BITS, BL4_WORDS, LANE4_BASE, LANE4_BITS, LANE4_WORDS};

/// Is `addr` (host order) in slot `slot`'s IPv4 blocklist?
#[inline(always)]
pub fn blocklisted_v4(slot: u32, addr: u32) -> bool {
    let w = bl4_word_index(slot, addr >> 8);
    in_bitmap(&BL4_WORDS, &BL4_BASE, &BL4_BITS, w, addr)
}

/// Is `addr` (host order) in lane `lane` (1..=`ALLOW4_LANES`) of `slot`?
#[inline(always)]
pub fn in_lane_v4(slot: u32, lane: u32, addr: u32) -> bool {
    let w = lane4_word_index(slot, lane, addr >> 8);
    in_bitmap(&LANE4_WORDS, &LANE4_BASE, &LANE4_BITS, w, addr)
}

/// `addr` in the set whose group word is `words[w]`.
#[inline(always)]
fn in_bitmap(
    words: &Array<Bl4Word>,
    bases: &Array<u32>,
    bits: &Array<Bl4Hosts>,
    w: u32,
    addr: u32,
) -> bool {
    let net24 = addr >> 8;
    let Some(word) = words.get(w) else {
        return false;
    };
    let bit = 1u64 << (net24 & 63);
    if word.full & bit != 0 {
        return true;
    }
    let part = word.part;
    if part & bit == 0 {
        return false;
    }
    // Read only for partly covered /24s: a flood from unlisted or wholly
    // listed /24s costs one read.
    let Some(base) = bases.get(w) else {
        return false;
    };
    let Some(hosts) = bits.get(bl4_bits_index(*base, part, net24)) else {
        return false;
    };
    let host = addr & 0xff;
    let bits = match host >> 6 {
        0 => hosts.bits[0],
        1 => hosts.bits[1],
        2 => hosts.bits[2],
        _ => hosts.bits[3],
    };
    bits & (1u64 << (host & 63)) != 0
}
