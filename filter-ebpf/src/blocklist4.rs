//! The IPv4 blocklist lookup (layout: `filter-common`, "IPv4 blocklist"):
//! the /24's bitmap word, and only for a partly listed /24 its group's base
//! and one host bitmap. No hash on the packet path.
use filter_common::{bl4_bits_index, bl4_word_index};

use crate::maps::{BL4_BASE, BL4_BITS, BL4_WORDS};

/// Is `addr` (host order) in slot `slot`'s IPv4 blocklist?
#[inline(always)]
pub fn blocklisted_v4(slot: u32, addr: u32) -> bool {
    let net24 = addr >> 8;
    let w = bl4_word_index(slot, net24);
    let Some(word) = BL4_WORDS.get(w) else {
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
    // Read only for partly listed /24s: a flood from unlisted or wholly
    // listed /24s costs one read.
    let Some(base) = BL4_BASE.get(w) else {
        return false;
    };
    let Some(hosts) = BL4_BITS.get(bl4_bits_index(*base, part, net24)) else {
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
