//! IPv6 prefix sets in the blocklist's layout (`filter-common`, "IPv6
//! blocklist" and "IPv6 allowlist lanes"): the blocklist (`BL6_*`, a space
//! per slot) and the allowlist lanes of large zones (`LANE6_*`). One bitmap
//! word for the source's /24; only for /24s that hold longer prefixes, one
//! hash-table probe per prefix length the space holds (at most
//! `BL6_MAX_LENS`), longest first, each normally one 64-byte bucket read.
use aya_ebpf::maps::Array;
use filter_common::{
    bl6_word_index, mask64, Bl6Bucket, Bl6Geometry, Bl6Info, Bl6Word, BL6_BUCKET_ENTRIES,
    BL6_GEOMETRY, BL6_MAX_DISP, BL6_MAX_LENS, LANE6_GEOMETRY,
};

use crate::maps::{BL6_INFO, BL6_TABLE, BL6_WORDS, LANE6_INFO, LANE6_TABLE, LANE6_WORDS};

/// Not inlined: a BPF-to-BPF call keeps this loop out of the parser's
/// optimisation (inlined, LLVM dropped a packet bounds check in the IPv6
/// extension-header walk that the verifier then refused).
#[inline(never)]
pub fn blocklisted_v6(slot: u32, addr: &[u8; 16]) -> bool {
    in_space(&BL6_WORDS, &BL6_INFO, &BL6_TABLE, BL6_GEOMETRY, slot, addr)
}

/// Is `addr` in IPv6 lane space `space` (`lane6_space`)? Not inlined, as
/// above, and so the zone step carries one call, not a second copy of the
/// probe loops.
#[inline(never)]
pub fn in_lane_v6(space: u32, addr: &[u8; 16]) -> bool {
    in_space(
        &LANE6_WORDS,
        &LANE6_INFO,
        &LANE6_TABLE,
        LANE6_GEOMETRY,
        space,
        addr,
    )
}

#[inline(always)]
fn in_space(
    words: &Array<Bl6Word>,
    infos: &Array<Bl6Info>,
    table: &Array<Bl6Bucket>,
    g: Bl6Geometry,
    space: u32,
    addr: &[u8; 16],
) -> bool {
    let top24 = (addr[0] as u32) << 16 | (addr[1] as u32) << 8 | addr[2] as u32;
    let Some(word) = words.get(bl6_word_index(space, top24)) else {
        return false;
    };
    let bit = 1u64 << (top24 & 63);
    if word.full & bit != 0 {
        return true;
    }
    if word.part & bit == 0 {
        return false;
    }
    let Some(info) = infos.get(space) else {
        return false;
    };
    let hi = u64::from_be_bytes([
        addr[0], addr[1], addr[2], addr[3], addr[4], addr[5], addr[6], addr[7],
    ]);
    let lo = u64::from_be_bytes([
        addr[8], addr[9], addr[10], addr[11], addr[12], addr[13], addr[14], addr[15],
    ]);
    let base = space * g.region();
    for i in 0..BL6_MAX_LENS {
        if i as u32 >= info.count {
            break;
        }
        let len = info.lens[i] as u32;
        let (h, l) = if len > 64 {
            (hi, lo & mask64(len - 64))
        } else {
            (hi & mask64(len), 0)
        };
        if probe(table, base + g.home(info.seed, h, l, len), h, l, len as u8) {
            return true;
        }
    }
    false
}

/// Looks for (h, l, len) in its home bucket and the `more` buckets after it.
#[inline(always)]
fn probe(table: &Array<Bl6Bucket>, home: u32, h: u64, l: u64, len: u8) -> bool {
    let Some(first) = table.get(home) else {
        return false;
    };
    if holds(first, h, l, len) {
        return true;
    }
    let more = first.more as u32;
    for d in 1..=BL6_MAX_DISP {
        if d > more {
            break;
        }
        let Some(b) = table.get(home + d) else {
            return false;
        };
        if holds(b, h, l, len) {
            return true;
        }
    }
    false
}

/// Is (h, l, len) one of the bucket's entries? Bitwise: one test per
/// entry, no branch per field (fewer paths for the verifier).
#[inline(always)]
fn holds(b: &Bl6Bucket, h: u64, l: u64, len: u8) -> bool {
    let mut hit = false;
    for e in 0..BL6_BUCKET_ENTRIES {
        let diff = (b.hi[e] ^ h) | (b.lo[e] ^ l) | (b.lens[e] ^ len) as u64;
        hit |= diff == 0;
    }
    hit
}
