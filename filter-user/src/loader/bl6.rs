//! The IPv6 blocklist's maps, computed from its merged prefix list (layout:
//! `filter-common`; design: docs/architecture.md "Blocklist layout"), and
//! the IPv6 allowlist lanes', which are the same layout with a smaller
//! table: each is a *space* of its maps under a `Bl6Geometry`.
//!
//! - `BL6_WORDS`: a bitmap over the top 24 bits of the address. Prefixes up to
//!   /24 set `full` bits, longer ones the `part` bit of their /24.
//! - `BL6_TABLE`: every prefix longer than /24 as a (masked address, length)
//!   entry in an open-addressing hash table of 64-byte buckets (3 entries).
//!   The layout is a function of the entry set alone: entries sorted by (home
//!   bucket, key) are placed at the first free position at or after their
//!   home (linear probing in sorted order). So a fresh build and any sequence
//!   of diffs give the same table, and a diff writes only the buckets whose
//!   content changed (a one-prefix change: its bucket, plus the few a spill
//!   run shifts).
//! - `BL6_INFO`: the hash seed and the prefix lengths the datapath probes.
//!   With more than `BL6_MAX_LENS` distinct lengths above /24, the shorter
//!   ones are expanded to longer ones (controlled prefix expansion, the
//!   cheapest choice by dynamic programming) within `EXPANSION_BUDGET`.
//!
//! The loader keeps only the merged prefix list per slot (its compact shadow)
//! and the small `Bl6Info`; words and buckets are recomputed from the lists
//! on demand, O(prefixes + buckets) per apply, writing O(changes).
use std::collections::{HashMap, VecDeque};

use aya::{
    maps::{Array, IterableMap, MapData, MapError},
    sys::SyscallError,
    Pod,
};
use filter_common::{
    Bl6Bucket, Bl6Geometry, Bl6Info, Bl6Word, BL6_BUCKET_ENTRIES, BL6_MAX_DISP, BL6_MAX_LENS,
    BL6_WORDS_PER_SLOT,
};
use ipnet::Ipv6Net;

use super::{
    batch::{self, BATCH},
    compact::sorted_diff,
    fault::Faults,
    maps::put_all,
    LoaderError,
};

/// Extra table entries controlled prefix expansion may add to a slot.
pub const EXPANSION_BUDGET: usize = 1 << 18;
/// Seeds tried before giving up on a table whose spill runs are too long.
const SEEDS: u32 = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Bl6Error {
    #[error(
        "the IPv6 blocklist holds {lengths} distinct prefix lengths longer than /24 \
         ({list}); the filter probes at most {max} per packet, and expanding the others \
         into longer prefixes would need {extra} more entries (budget {budget}); \
         merge or drop prefixes of the rarer lengths (or list them as their /24s)",
        max = BL6_MAX_LENS, budget = EXPANSION_BUDGET
    )]
    TooManyLengths {
        lengths: usize,
        list: String,
        extra: u128,
    },
    #[error(
        "the IPv6 blocklist needs {need} table entries (prefixes longer than /24, after \
         expansion); one policy slot holds at most {max}; merge prefixes or drop some \
         (prefixes up to /24 cost no entry)"
    )]
    TooManyEntries { need: usize, max: usize },
    #[error(
        "the IPv6 blocklist's {need} long prefixes crowd the hash table under every one \
         of {SEEDS} seeds (a run longer than {BL6_MAX_DISP} buckets); drop some prefixes"
    )]
    Crowded { need: usize },
}

/// Top 24 bits of an address.
#[inline]
fn top24(a: u128) -> u32 {
    (a >> 104) as u32
}

/// (hi, lo) halves of an address.
#[inline]
fn halves(a: u128) -> (u64, u64) {
    ((a >> 64) as u64, a as u64)
}

/// `nets` as a sorted list of disjoint prefixes covering the same addresses.
/// Compiled policies are merged already: then this is a copy.
pub fn disjoint(nets: &[Ipv6Net]) -> Vec<Ipv6Net> {
    // (first, last, host bits clear) without ipnet's address round trips.
    let bounds = |n: &Ipv6Net| {
        let a = u128::from(n.addr());
        let host = u128::MAX.checked_shr(n.prefix_len() as u32).unwrap_or(0);
        (a & !host, a | host, a & host == 0)
    };
    let ok = nets.windows(2).all(|w| bounds(&w[0]).1 < bounds(&w[1]).0);
    let trunc = nets.iter().all(|n| bounds(n).2);
    if ok && trunc {
        nets.to_vec()
    } else {
        Ipv6Net::aggregate(&nets.iter().map(|n| n.trunc()).collect::<Vec<_>>())
    }
}

/// Number of prefixes of each length 0..=128.
fn length_counts(nets: &[Ipv6Net]) -> [u64; 129] {
    let mut counts = [0u64; 129];
    for n in nets {
        counts[n.prefix_len() as usize] += 1;
    }
    counts
}

/// `count` prefixes of length `from` expanded to length `to`: entries made.
fn expanded(count: u64, from: u8, to: u8) -> u128 {
    let shift = (to - from) as u32;
    if shift >= 64 {
        return if count == 0 { 0 } else { u128::MAX };
    }
    (count as u128).saturating_mul(1u128 << shift)
}

/// The target lengths (ascending) that cost the fewest table entries when each
/// length in `present` (ascending, > 24) is expanded to the smallest target
/// at or above it; at most `max` targets, always including the longest. Returns
/// (targets, entries).
fn choose_targets(present: &[(u8, u64)], max: usize) -> (Vec<u8>, u128) {
    let m = present.len();
    if m <= max {
        let total = present.iter().map(|(_, c)| *c as u128).sum();
        return (present.iter().map(|(l, _)| *l).collect(), total);
    }
    // cost(j, i): lengths j..=i all expanded to length present[i].
    let cost = |j: usize, i: usize| -> u128 {
        present[j..=i].iter().fold(0u128, |acc, (l, c)| {
            acc.saturating_add(expanded(*c, *l, present[i].0))
        })
    };
    // best[k][i]: fewest entries covering present[0..=i] with k+1 targets, the
    // last being present[i]; from[k][i]: the previous target.
    let mut best = vec![vec![u128::MAX; m]; max];
    let mut from = vec![vec![usize::MAX; m]; max];
    for (i, b) in best[0].iter_mut().enumerate() {
        *b = cost(0, i);
    }
    for k in 1..max {
        for i in k..m {
            for j in (k - 1)..i {
                if best[k - 1][j] == u128::MAX {
                    continue;
                }
                let c = best[k - 1][j].saturating_add(cost(j + 1, i));
                if c < best[k][i] {
                    best[k][i] = c;
                    from[k][i] = j;
                }
            }
        }
    }
    let (mut k, total) = (0..max)
        .map(|k| (k, best[k][m - 1]))
        .min_by_key(|(_, c)| *c)
        .expect("max > 0");
    let mut targets = vec![present[m - 1].0];
    let mut i = m - 1;
    while k > 0 {
        i = from[k][i];
        k -= 1;
        targets.push(present[i].0);
    }
    targets.reverse();
    (targets, total)
}

/// The length a prefix of length `len` (> 24) is stored at under `info`: the
/// shortest probed length at or above it.
fn target(info: &Bl6Info, len: u8) -> u8 {
    info.lens[..info.count as usize]
        .iter()
        .copied()
        .filter(|t| *t >= len)
        .min()
        .expect("the longest length is always probed")
}

/// One table entry: a masked address, its (probed) length and home bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Entry {
    home: u32,
    hi: u64,
    lo: u64,
    len: u8,
}

/// The table entries of `nets` (sorted, disjoint) under `info`, sorted by
/// (home, key): the order they are placed in.
pub(super) fn entries(g: Bl6Geometry, nets: &[Ipv6Net], info: &Bl6Info) -> Vec<Entry> {
    let mut out = Vec::new();
    for n in nets.iter().filter(|n| n.prefix_len() > 24) {
        let t = target(info, n.prefix_len());
        let base = u128::from(n.network());
        let step_shift = 128 - t as u32;
        for k in 0..(1u128 << (t - n.prefix_len())) {
            let a = base | k.checked_shl(step_shift).unwrap_or(0);
            let (hi, lo) = halves(a);
            out.push(Entry {
                home: g.home(info.seed, hi, lo, t as u32),
                hi,
                lo,
                len: t,
            });
        }
    }
    out.sort_unstable();
    out
}

/// True when entries with these homes, placed in order, all land within
/// `BL6_MAX_DISP` buckets of their home.
fn fits(g: Bl6Geometry, homes: &[u32]) -> bool {
    let mut counts = vec![0u32; g.buckets() as usize];
    for h in homes {
        counts[*h as usize] += 1;
    }
    let per = BL6_BUCKET_ENTRIES as u64;
    let mut p = 0u64; // next free position
    for (h, c) in counts.iter().enumerate() {
        if *c == 0 {
            continue;
        }
        p = p.max(h as u64 * per) + *c as u64;
        if (p - 1) / per - h as u64 > BL6_MAX_DISP as u64 {
            return false;
        }
    }
    true
}

/// The probed lengths and hash seed for `nets` (sorted, disjoint), and the home
/// bucket of each table entry in list order ([`homes`]): checks that a space
/// of geometry `g` can hold it.
pub fn info_for(g: Bl6Geometry, nets: &[Ipv6Net]) -> Result<(Bl6Info, Vec<u32>), Bl6Error> {
    let counts = length_counts(nets);
    let present: Vec<(u8, u64)> = (25..=128u8)
        .filter(|l| counts[*l as usize] > 0)
        .map(|l| (l, counts[l as usize]))
        .collect();
    let original: u64 = present.iter().map(|(_, c)| *c).sum();
    let (targets, total) = choose_targets(&present, BL6_MAX_LENS);
    let extra = total.saturating_sub(original as u128);
    if extra > EXPANSION_BUDGET as u128 {
        let list = present
            .iter()
            .map(|(l, c)| format!("/{l} ×{c}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(Bl6Error::TooManyLengths {
            lengths: present.len(),
            list,
            extra,
        });
    }
    let need = total as usize;
    if need > g.table_max {
        return Err(Bl6Error::TooManyEntries {
            need,
            max: g.table_max,
        });
    }
    let mut info = Bl6Info {
        seed: 0,
        count: targets.len() as u32,
        lens: [0; BL6_MAX_LENS],
    };
    for (i, t) in targets.iter().rev().enumerate() {
        info.lens[i] = *t;
    }
    if need == 0 {
        return Ok((info, Vec::new()));
    }
    for seed in 0..SEEDS {
        info.seed = seed;
        let homes = homes(g, nets, &info);
        if fits(g, &homes) {
            return Ok((info, homes));
        }
    }
    Err(Bl6Error::Crowded { need })
}

/// The home bucket of every table entry of `nets` under `info`, in list
/// order (expansions in ascending order). The loader keeps these with each
/// slot's shadow (4 bytes per entry), so a diff hashes only what changed.
pub fn homes(g: Bl6Geometry, nets: &[Ipv6Net], info: &Bl6Info) -> Vec<u32> {
    let mut out = Vec::with_capacity(nets.len());
    for_each_entry(nets, info, |hi, lo, len| {
        out.push(g.home(info.seed, hi, lo, len as u32));
    });
    out
}

/// The non-empty buckets of a table holding `entries` (sorted by
/// [`entries`]), ascending by bucket index within the slot's region.
pub(super) struct Buckets<'a> {
    entries: &'a [Entry],
    next: usize,
    /// Next free position (bucket * 3 + entry).
    pos: u64,
    /// Buckets that may still change, contiguous, ascending.
    open: VecDeque<(u32, Bl6Bucket)>,
}

impl<'a> Buckets<'a> {
    pub(super) fn new(entries: &'a [Entry]) -> Self {
        Buckets {
            entries,
            next: 0,
            pos: 0,
            open: VecDeque::new(),
        }
    }
}

impl Iterator for Buckets<'_> {
    type Item = (u32, Bl6Bucket);

    fn next(&mut self) -> Option<(u32, Bl6Bucket)> {
        let per = BL6_BUCKET_ENTRIES as u64;
        loop {
            let Some(e) = self.entries.get(self.next).copied() else {
                return self.open.pop_front();
            };
            let at = self.pos.max(e.home as u64 * per);
            let bucket = (at / per) as u32;
            // The front is final once no later entry can land in it or is
            // homed there.
            if let Some((front, _)) = self.open.front() {
                if *front < e.home && *front < bucket {
                    return self.open.pop_front();
                }
            }
            if self.open.back().is_none_or(|(b, _)| *b < bucket) {
                self.open.push_back((bucket, Bl6Bucket::default()));
            }
            let first = self.open.front().expect("just pushed").0;
            let slot = &mut self.open[(bucket - first) as usize].1;
            let i = (at % per) as usize;
            slot.hi[i] = e.hi;
            slot.lo[i] = e.lo;
            slot.lens[i] = e.len;
            // Entries homed at e.home fill a contiguous run from it.
            let home = &mut self.open[(e.home - first) as usize].1;
            home.more = (bucket - e.home) as u8;
            self.pos = at + 1;
            self.next += 1;
        }
    }
}

/// Bitmap word index (64 /24s) of an address.
#[inline]
fn word_of(a: u128) -> u32 {
    top24(a) >> 6
}

/// The bitmap words the prefixes touch, ascending and without duplicates,
/// for prefixes in ascending order of network address.
pub(super) fn touched_words<'a, I>(nets: I) -> impl Iterator<Item = u32> + 'a
where
    I: Iterator<Item = &'a Ipv6Net> + 'a,
{
    let mut next = 0u64;
    nets.flat_map(move |n| {
        let lo = (word_of(u128::from(n.network())) as u64).max(next);
        let hi = word_of(u128::from(n.broadcast())) as u64;
        next = next.max(hi + 1);
        (lo..=hi).map(|w| w as u32)
    })
}

/// Bits lo..=hi of a u64 set.
fn bit_range(lo: u32, hi: u32) -> u64 {
    let upper = if hi == 63 {
        u64::MAX
    } else {
        (1u64 << (hi + 1)) - 1
    };
    upper & !((1u64 << lo) - 1)
}

/// Word `w` of the bitmap of `nets` (sorted, disjoint).
pub(super) fn word(nets: &[Ipv6Net], w: u32) -> Bl6Word {
    let lo = w << 6;
    let hi = lo | 63;
    let start = nets.partition_point(|n| top24(u128::from(n.broadcast())) < lo);
    let mut word = Bl6Word::default();
    for n in &nets[start..] {
        let first = top24(u128::from(n.network()));
        if first > hi {
            break;
        }
        if n.prefix_len() <= 24 {
            let last = top24(u128::from(n.broadcast()));
            word.full |= bit_range(first.max(lo) & 63, last.min(hi) & 63);
        } else {
            word.part |= 1 << (first & 63);
        }
    }
    word
}

/// The expanded maps of one slot: what `read_slot` reads back.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Bl6Image {
    pub info: Bl6Info,
    /// Word index within the slot → word; absent = zero.
    pub words: HashMap<u32, Bl6Word>,
    /// Bucket index within the slot's region → bucket; absent = empty.
    pub table: HashMap<u32, Bl6Bucket>,
}

impl Bl6Image {
    pub(super) fn build(g: Bl6Geometry, nets: &[Ipv6Net], info: &Bl6Info) -> Bl6Image {
        let mut words = HashMap::new();
        for w in touched_words(nets.iter()) {
            let word = word(nets, w);
            if word != Bl6Word::default() {
                words.insert(w, word);
            }
        }
        let entries = entries(g, nets, info);
        Bl6Image {
            info: *info,
            words,
            table: Buckets::new(&entries).collect(),
        }
    }

    /// The prefixes the image blocks, aggregated: bitmap `full` bits as /24s
    /// and table entries as they are (for checks).
    pub fn prefixes(&self) -> Vec<Ipv6Net> {
        let mut nets = Vec::new();
        for (w, word) in &self.words {
            for b in 0..64 {
                if word.full & (1 << b) != 0 {
                    let a = (((*w as u128) << 6) | b) << 104;
                    nets.push(Ipv6Net::new(a.into(), 24).expect("valid /24"));
                }
            }
        }
        for bucket in self.table.values() {
            for i in 0..BL6_BUCKET_ENTRIES {
                if bucket.lens[i] != 0 {
                    let a = (bucket.hi[i] as u128) << 64 | bucket.lo[i] as u128;
                    nets.push(Ipv6Net::new(a.into(), bucket.lens[i]).expect("valid length"));
                }
            }
        }
        Ipv6Net::aggregate(&nets)
    }
}

/// The buckets (index within the region) whose content differs between two
/// tables, with their new content (empty = cleared), ascending.
pub(super) fn changed_buckets(old: &[Entry], new: &[Entry]) -> Vec<(u32, Bl6Bucket)> {
    let mut a = Buckets::new(old).peekable();
    let mut b = Buckets::new(new).peekable();
    let mut out = Vec::new();
    loop {
        match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some((i, x)), Some((j, y))) if i == j => {
                if x != y {
                    out.push((*j, *y));
                }
                a.next();
                b.next();
            }
            (Some((i, _)), Some((j, _))) if i < j => {
                out.push((*i, Bl6Bucket::default()));
                a.next();
            }
            (Some((i, _)), None) => {
                out.push((*i, Bl6Bucket::default()));
                a.next();
            }
            (_, Some(y)) => {
                out.push(*y);
                b.next();
            }
        }
    }
    out
}

/// Calls `f(entry)` for every table entry of `nets` under `info`, in list
/// order (homes not computed).
fn for_each_entry(nets: &[Ipv6Net], info: &Bl6Info, mut f: impl FnMut(u64, u64, u8)) {
    for n in nets.iter().filter(|n| n.prefix_len() > 24) {
        let t = target(info, n.prefix_len());
        let base = u128::from(n.network());
        for k in 0..(1u128 << (t - n.prefix_len())) {
            let (hi, lo) = halves(base | k.checked_shl(128 - t as u32).unwrap_or(0));
            f(hi, lo, t);
        }
    }
}

/// Carry into each bucket (entries homed earlier that spill into it) of a
/// table with these home counts; `g.region() + 1` values.
fn carries(g: Bl6Geometry, counts: &[i64]) -> Vec<i64> {
    let per = BL6_BUCKET_ENTRIES as i64;
    let mut c = vec![0i64; g.region() as usize + 1];
    for b in 0..g.region() as usize {
        let here = c[b] + counts.get(b).copied().unwrap_or(0);
        c[b + 1] = (here - per).max(0);
    }
    c
}

/// One space's set as the loader keeps it ([`Set6`]), borrowed.
#[derive(Clone, Copy)]
pub(super) struct Side<'a> {
    pub nets: &'a [Ipv6Net],
    pub info: &'a Bl6Info,
    pub homes: &'a [u32],
}

/// One space's IPv6 set as the loader keeps it: the sorted, disjoint list,
/// its info and the homes of its table entries ([`info_for`]).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Set6 {
    pub nets: Vec<Ipv6Net>,
    pub info: Bl6Info,
    pub homes: Vec<u32>,
}

impl Set6 {
    /// `nets` (sorted, disjoint) laid out for a space of geometry `g`.
    pub fn of(g: Bl6Geometry, nets: Vec<Ipv6Net>) -> Result<Set6, Bl6Error> {
        let (info, homes) = info_for(g, &nets)?;
        Ok(Set6 { nets, info, homes })
    }

    pub(super) fn side(&self) -> Side<'_> {
        Side {
            nets: &self.nets,
            info: &self.info,
            homes: &self.homes,
        }
    }
}

/// Home counts per bucket.
fn histogram(g: Bl6Geometry, homes: &[u32]) -> Vec<i64> {
    let mut counts = vec![0i64; g.buckets() as usize];
    for h in homes {
        counts[*h as usize] += 1;
    }
    counts
}

/// The entries of `side` homed where `mask` is set, sorted.
fn entries_in(side: Side, mask: &[bool]) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut i = 0;
    for_each_entry(side.nets, side.info, |hi, lo, len| {
        let home = side.homes[i];
        i += 1;
        if mask[home as usize] {
            out.push(Entry { home, hi, lo, len });
        }
    });
    out.sort_unstable();
    out
}

/// As [`changed_buckets`] for two lists under the same info that differ by
/// the prefixes `gone` and `added`, without laying out the whole table: only
/// the runs of buckets around each changed entry's home, between two points
/// no entry spills across in either table, are laid out. Uses the homes kept
/// with each side: no hashing but of the changed prefixes, no sort of the list.
pub(super) fn changed_buckets_local(
    g: Bl6Geometry,
    old: Side,
    new: Side,
    gone: &[&Ipv6Net],
    added: &[&Ipv6Net],
) -> Vec<(u32, Bl6Bucket)> {
    let changed: Vec<Ipv6Net> = gone.iter().chain(added).map(|n| **n).collect();
    let (c_old, c_new) = (
        carries(g, &histogram(g, old.homes)),
        carries(g, &histogram(g, new.homes)),
    );
    let quiet = |b: usize| c_old[b] == 0 && c_new[b] == 0;
    let mut mask = vec![false; g.buckets() as usize];
    for_each_entry(&changed, new.info, |hi, lo, len| {
        let h = g.home(new.info.seed, hi, lo, len as u32) as usize;
        if mask[h] {
            return;
        }
        let mut s = h;
        while !quiet(s) {
            s -= 1;
        }
        let mut end = h + 1;
        while !quiet(end) {
            end += 1;
        }
        for w in &mut mask[s..end.min(g.buckets() as usize)] {
            *w = true;
        }
    });
    changed_buckets(&entries_in(old, &mask), &entries_in(new, &mask))
}

/// The three maps of a set of spaces in this layout (the blocklist's, or
/// the IPv6 lanes'), their names (words, info, table) and geometry.
pub(super) struct Bl6Maps<'a> {
    pub words: &'a MapData,
    pub info: &'a MapData,
    pub table: &'a MapData,
    pub names: [&'static str; 3],
    pub g: Bl6Geometry,
    pub faults: &'a Faults,
}

impl Bl6Maps<'_> {
    /// Key of bucket `b` of `space` in the table.
    fn bucket_key(&self, space: u32, b: u32) -> u32 {
        space * self.g.region() + b
    }

    /// Turns `space` from (`old`, `old_info`) into (`new`, `new_info`), both
    /// sorted and disjoint, writing only words and buckets that differ.
    pub(super) fn write_diff(&self, space: u32, o: Side, n: Side) -> Result<(), LoaderError> {
        let [words_name, info_name, _] = self.names;
        let (old, old_info, new, new_info) = (o.nets, o.info, n.nets, n.info);
        let (gone, added) = sorted_diff(old, new);
        if gone.is_empty() && added.is_empty() && old_info == new_info {
            return Ok(());
        }
        let mut words: Vec<u32> = touched_words(gone.iter().copied()).collect();
        words.extend(touched_words(added.iter().copied()));
        words.sort_unstable();
        words.dedup();
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for w in words {
            let after = word(new, w);
            if word(old, w) != after {
                keys.push(space * BL6_WORDS_PER_SLOT + w);
                values.push(after);
            }
        }
        put_all(self.words, words_name, self.faults, &keys, &values)?;
        // A change of the probed lengths or seed moves most entries: lay out
        // both tables. Otherwise only the runs around changed entries.
        let g = self.g;
        let buckets = if old_info == new_info && gone.len() + added.len() <= old.len() / 8 {
            changed_buckets_local(g, o, n, &gone, &added)
        } else {
            changed_buckets(&entries(g, old, old_info), &entries(g, new, new_info))
        };
        self.put_buckets(space, buckets)?;
        if old_info != new_info {
            put_all(self.info, info_name, self.faults, &[space], &[*new_info])?;
        }
        Ok(())
    }

    /// Turns `space` from `old` (as read back) into `new`, entry by entry.
    pub(super) fn write_image(
        &self,
        space: u32,
        old: &Bl6Image,
        new: &Bl6Image,
    ) -> Result<(), LoaderError> {
        let [words_name, info_name, _] = self.names;
        let (mut keys, mut values) = (Vec::new(), Vec::new());
        for w in old.words.keys().filter(|w| !new.words.contains_key(w)) {
            keys.push(space * BL6_WORDS_PER_SLOT + w);
            values.push(Bl6Word::default());
        }
        for (w, word) in &new.words {
            if old.words.get(w) != Some(word) {
                keys.push(space * BL6_WORDS_PER_SLOT + w);
                values.push(*word);
            }
        }
        put_all(self.words, words_name, self.faults, &keys, &values)?;
        let mut buckets: Vec<(u32, Bl6Bucket)> = old
            .table
            .keys()
            .filter(|b| !new.table.contains_key(b))
            .map(|b| (*b, Bl6Bucket::default()))
            .collect();
        buckets.extend(
            new.table
                .iter()
                .filter(|(b, v)| old.table.get(b) != Some(v))
                .map(|(b, v)| (*b, *v)),
        );
        self.put_buckets(space, buckets)?;
        if old.info != new.info {
            put_all(self.info, info_name, self.faults, &[space], &[new.info])?;
        }
        Ok(())
    }

    fn put_buckets(&self, space: u32, buckets: Vec<(u32, Bl6Bucket)>) -> Result<(), LoaderError> {
        let (keys, values): (Vec<u32>, Vec<Bl6Bucket>) = buckets
            .into_iter()
            .map(|(b, v)| (self.bucket_key(space, b), v))
            .unzip();
        put_all(self.table, self.names[2], self.faults, &keys, &values)
    }
}

/// The entries `i` in `0..n` of an array from `start` that differ from the
/// default, as (i, value): read `BATCH` at a time into one buffer where the
/// kernel can batch, else one by one (no copy of the whole region).
fn read_nonzero<V: Pod + Default + PartialEq>(
    map: &Array<MapData, V>,
    name: &'static str,
    start: u32,
    n: u32,
) -> Result<HashMap<u32, V>, LoaderError> {
    let mut out = HashMap::new();
    let mut buf: Vec<V> = (0..BATCH.min(n as usize)).map(|_| V::default()).collect();
    let mut done = 0u32;
    while done < n {
        let len = (n - done).min(BATCH as u32);
        let chunk = &mut buf[..len as usize];
        let batched = batch::lookup_array(map.map(), start + done, chunk).map_err(|io_error| {
            LoaderError::Map {
                map: name,
                source: MapError::SyscallError(SyscallError {
                    call: "bpf_map_lookup_batch",
                    io_error,
                }),
            }
        })?;
        if !batched {
            for (i, v) in chunk.iter_mut().enumerate() {
                *v = map
                    .get(&(start + done + i as u32), 0)
                    .map_err(LoaderError::map(name))?;
            }
        }
        for (i, v) in chunk.iter().enumerate() {
            if *v != V::default() {
                out.insert(done + i as u32, *v);
            }
        }
        done += len;
    }
    Ok(out)
}

/// The typed maps of a set of spaces, for reading back.
pub(super) struct Bl6Arrays {
    pub words: Array<MapData, Bl6Word>,
    pub info: Array<MapData, Bl6Info>,
    pub table: Array<MapData, Bl6Bucket>,
    pub names: [&'static str; 3],
    pub g: Bl6Geometry,
}

impl Bl6Arrays {
    pub(super) fn maps<'a>(&'a self, faults: &'a Faults) -> Bl6Maps<'a> {
        Bl6Maps {
            words: self.words.map(),
            info: self.info.map(),
            table: self.table.map(),
            names: self.names,
            g: self.g,
            faults,
        }
    }

    /// Reads `space` back.
    pub(super) fn read(&self, space: u32) -> Result<Bl6Image, LoaderError> {
        let [words_name, info_name, table_name] = self.names;
        let region = self.g.region();
        Ok(Bl6Image {
            info: self
                .info
                .get(&space, 0)
                .map_err(LoaderError::map(info_name))?,
            words: read_nonzero(
                &self.words,
                words_name,
                space * BL6_WORDS_PER_SLOT,
                BL6_WORDS_PER_SLOT,
            )?,
            table: read_nonzero(&self.table, table_name, space * region, region)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::{BL6_GEOMETRY, BL6_TABLE_MAX, LANE6_GEOMETRY};
    use std::collections::HashSet;

    const G: Bl6Geometry = BL6_GEOMETRY;

    fn nets(s: &[&str]) -> Vec<Ipv6Net> {
        disjoint(&s.iter().map(|n| n.parse().unwrap()).collect::<Vec<_>>())
    }

    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Does the image block `a`? The datapath's lookup, on the image.
    fn blocks(g: Bl6Geometry, img: &Bl6Image, a: u128) -> bool {
        let t = top24(a);
        let word = img.words.get(&(t >> 6)).copied().unwrap_or_default();
        let bit = 1u64 << (t & 63);
        if word.full & bit != 0 {
            return true;
        }
        if word.part & bit == 0 {
            return false;
        }
        let (hi, lo) = halves(a);
        let info = &img.info;
        for i in 0..info.count as usize {
            let len = info.lens[i] as u32;
            let (h, l) = if len > 64 {
                (hi, lo & filter_common::mask64(len - 64))
            } else {
                (hi & filter_common::mask64(len), 0)
            };
            let home = g.home(info.seed, h, l, len);
            let first = img.table.get(&home).copied().unwrap_or_default();
            for d in 0..=first.more as u32 {
                let b = img.table.get(&(home + d)).copied().unwrap_or_default();
                for e in 0..BL6_BUCKET_ENTRIES {
                    if b.lens[e] as u32 == len && b.hi[e] == h && b.lo[e] == l {
                        return true;
                    }
                }
            }
        }
        false
    }

    fn contains(list: &[Ipv6Net], a: u128) -> bool {
        list.iter()
            .any(|n| n.contains(&std::net::Ipv6Addr::from(a)))
    }

    /// Addresses at both edges of each prefix and just outside.
    fn edges(list: &[Ipv6Net]) -> Vec<u128> {
        let mut out = Vec::new();
        for n in list {
            let lo = u128::from(n.network());
            let hi = u128::from(n.broadcast());
            out.extend([lo, hi, lo.wrapping_sub(1), hi.wrapping_add(1)]);
            out.push(lo + (hi - lo) / 2);
        }
        out
    }

    /// Random disjoint lists over many lengths (more than are probed),
    /// clustered in 64 /24s so prefixes share /24s, words and buckets, plus
    /// a few prefixes up to /24 elsewhere.
    fn random_list(rng: &mut Rng, n: usize, lengths: &[u8]) -> Vec<Ipv6Net> {
        let mut list: Vec<Ipv6Net> = (0..n)
            .map(|_| {
                let top = 0x2a_0000u128 + rng.below(64) as u128 * 3;
                let low = (rng.next() as u128) << 64 | rng.next() as u128;
                let a = top << 104 | (low >> 24);
                let len = lengths[rng.below(lengths.len() as u64) as usize];
                Ipv6Net::new(a.into(), len).unwrap().trunc()
            })
            .collect();
        for len in [19u8, 22, 24] {
            if rng.below(2) == 0 {
                let top = 0x3e_0000u128 + rng.below(1 << 12) as u128 * 64;
                list.push(Ipv6Net::new((top << 104).into(), len).unwrap().trunc());
            }
        }
        Ipv6Net::aggregate(&list)
    }

    const MANY: [u8; 15] = [
        25, 26, 27, 29, 32, 33, 40, 47, 48, 56, 63, 64, 100, 127, 128,
    ];

    #[test]
    fn few_lengths_are_probed_as_they_are_longest_first() {
        let l = nets(&[
            "2001:db8::/32",
            "2001:dba:1::/48",
            "2a00::/19",
            "2001:db9::1/128",
        ]);
        let l = disjoint(&l);
        let info = info_for(G, &l).unwrap().0;
        assert_eq!(&info.lens[..info.count as usize], &[128, 48, 32]);
    }

    #[test]
    fn expansion_picks_the_cheapest_targets() {
        // Lengths 25..=34 (10 > 8): expanding /25 to /26 and /27 to /28 costs
        // one extra entry each (one prefix of each).
        let present: Vec<(u8, u64)> = (25..=34).map(|l| (l, 1)).collect();
        let (targets, total) = choose_targets(&present, 8);
        assert_eq!(targets.len(), 8);
        assert_eq!(total, 12);
        assert_eq!(*targets.last().unwrap(), 34);
        // A single prefix of a rare length next to a crowded one is expanded, not
        // the crowded one.
        let present = [(30, 1000), (31, 1), (32, 1000)];
        let (targets, total) = choose_targets(&present, 2);
        assert_eq!(targets, vec![30, 32]);
        assert_eq!(total, 2002);
    }

    /// The expanded table blocks exactly the addresses the original list
    /// does: every edge of every prefix, and just outside, for random sets
    /// with more distinct lengths than are probed.
    #[test]
    fn expanded_set_blocks_exactly_the_original_addresses() {
        expanded_set_is_exact(G);
    }

    /// The same in an IPv6 allowlist lane's smaller table.
    #[test]
    fn lane_table_holds_exactly_the_original_addresses() {
        expanded_set_is_exact(LANE6_GEOMETRY);
    }

    fn expanded_set_is_exact(g: Bl6Geometry) {
        let mut rng = Rng(0x6b6c_3601);
        for round in 0..30 {
            let list = random_list(&mut rng, 40 + round * 7, &MANY);
            let info = info_for(g, &list).unwrap().0;
            assert!(info.count as usize <= BL6_MAX_LENS);
            let img = Bl6Image::build(g, &list, &info);
            assert_eq!(img.prefixes(), list, "round {round}");
            assert!(img.table.keys().all(|b| *b < g.region()), "round {round}");
            let mut probes = edges(&list);
            probes.extend((0..200).map(|_| (rng.next() as u128) << 64 | rng.next() as u128));
            for a in probes {
                assert_eq!(
                    blocks(g, &img, a),
                    contains(&list, a),
                    "round {round}: {}",
                    std::net::Ipv6Addr::from(a)
                );
            }
        }
    }

    #[test]
    fn too_many_lengths_beyond_the_budget_are_refused_with_the_lengths() {
        // 9 lengths, each with enough prefixes that any expansion costs more
        // than the budget.
        // (each prefix in its own /24, so none merge).
        let mut list = Vec::new();
        for (i, len) in [26u8, 36, 46, 56, 66, 76, 86, 96, 106].iter().enumerate() {
            for k in 0..400u128 {
                let a = (0x20_0000u128 + ((i as u128) << 12) + k) << 104;
                list.push(Ipv6Net::new(a.into(), *len).unwrap());
            }
        }
        let list = disjoint(&list);
        let e = info_for(G, &list).unwrap_err();
        assert!(
            matches!(e, Bl6Error::TooManyLengths { lengths: 9, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("/26 ×400"), "{e}");
    }

    #[test]
    fn too_many_entries_are_refused() {
        let list: Vec<Ipv6Net> = (0..BL6_TABLE_MAX as u128 + 1)
            .map(|i| Ipv6Net::new(((0x2001_0d00u128 << 96) | i << 80).into(), 48).unwrap())
            .collect();
        assert_eq!(
            info_for(G, &list),
            Err(Bl6Error::TooManyEntries {
                need: BL6_TABLE_MAX + 1,
                max: BL6_TABLE_MAX
            })
        );
    }

    /// Every entry sits within `more` buckets of its home; the placement is
    /// the same as a plain dense linear-probing fill in sorted order.
    #[test]
    fn buckets_stream_matches_a_dense_fill() {
        let mut rng = Rng(0x1234_5678);
        // Force collisions: many entries, few homes (mask the home).
        let mut entries: Vec<Entry> = (0..5000)
            .map(|_| Entry {
                home: (rng.below(64) * 7) as u32,
                hi: rng.next(),
                lo: rng.next(),
                len: 128,
            })
            .collect();
        entries.sort_unstable();
        entries.dedup();
        let streamed: Vec<(u32, Bl6Bucket)> = Buckets::new(&entries).collect();
        let mut dense: HashMap<u32, Bl6Bucket> = HashMap::new();
        let mut p = 0u64;
        for e in &entries {
            p = p.max(e.home as u64 * 3);
            let b = dense.entry((p / 3) as u32).or_default();
            let i = (p % 3) as usize;
            (b.hi[i], b.lo[i], b.lens[i]) = (e.hi, e.lo, e.len);
            let more = (p / 3) as u32 - e.home;
            dense.entry(e.home).or_default().more = more as u8;
            p += 1;
        }
        assert!(streamed.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(streamed.into_iter().collect::<HashMap<_, _>>(), dense);
    }

    /// A one-prefix change rewrites one bucket (plus a spill run's) and at
    /// most one word, and the result equals a fresh build.
    #[test]
    fn diffs_of_random_lists_equal_fresh_builds() {
        let mut rng = Rng(0xd1ff);
        let mut old = random_list(&mut rng, 300, &MANY);
        for round in 0..40 {
            let mut new: Vec<Ipv6Net> =
                old.iter().filter(|_| rng.below(10) != 0).copied().collect();
            let n = 1 + rng.below(30) as usize;
            new.extend(random_list(&mut rng, n, &MANY));
            let new = disjoint(&new);
            let (io, inew) = (info_for(G, &old).unwrap().0, info_for(G, &new).unwrap().0);
            let mut img = Bl6Image::build(G, &old, &io);
            // Apply the diff the writer computes.
            let (gone, added) = sorted_diff(&old, &new);
            let mut words: Vec<u32> = touched_words(gone.into_iter()).collect();
            words.extend(touched_words(added.into_iter()));
            for w in words {
                let word = word(&new, w);
                if word == Bl6Word::default() {
                    img.words.remove(&w);
                } else {
                    img.words.insert(w, word);
                }
            }
            for (b, bucket) in changed_buckets(&entries(G, &old, &io), &entries(G, &new, &inew)) {
                if bucket == Bl6Bucket::default() {
                    img.table.remove(&b);
                } else {
                    img.table.insert(b, bucket);
                }
            }
            img.info = inew;
            assert_eq!(img, Bl6Image::build(G, &new, &inew), "round {round}");
            old = new;
        }
    }

    /// The local diff finds exactly the buckets the full layout diff finds,
    /// on crowded tables (long spill runs) too.
    #[test]
    fn local_diff_equals_full_diff() {
        let mut rng = Rng(0x10ca1);
        for round in 0..6 {
            let n = [2_000usize, 300_000, 1_000_000][round % 3];
            let list: Vec<Ipv6Net> = (0..n as u128)
                .map(|i| {
                    let a = (0x2001_0d00u128 << 96) | (3 * i + round as u128) << 76;
                    Ipv6Net::new(a.into(), 52).unwrap()
                })
                .collect();
            let info = info_for(G, &list).unwrap().0;
            let mut new: Vec<Ipv6Net> = list
                .iter()
                .filter(|_| rng.below(n as u64 / 4) != 0)
                .copied()
                .collect();
            for _ in 0..1 + rng.below(5) {
                let a = (0x2a00_1450u128 << 96) | (rng.next() as u128) << 40;
                new.push(Ipv6Net::new(a.into(), 88).unwrap().trunc());
            }
            let new = disjoint(&new);
            let mut info_new = info_for(G, &new).unwrap().0;
            if info_new.count != info.count {
                // The /88s added a length: not the local case.
                info_new = info;
                let mut lens = info.lens;
                lens[..2].copy_from_slice(&[88, 52]);
                info_new.lens = lens;
                info_new.count = 2;
            }
            let (gone, added) = sorted_diff(&list, &new);
            let full = changed_buckets(&entries(G, &list, &info_new), &entries(G, &new, &info_new));
            let (ho, hn) = (homes(G, &list, &info_new), homes(G, &new, &info_new));
            let side = |nets, homes| Side {
                nets,
                info: &info_new,
                homes,
            };
            let local = changed_buckets_local(G, side(&list, &ho), side(&new, &hn), &gone, &added);
            assert_eq!(local, full, "round {round}");
        }
    }

    #[test]
    fn one_prefix_change_touches_few_buckets() {
        let list: Vec<Ipv6Net> = (0..200_000u128)
            .map(|i| Ipv6Net::new(((0x2001_0d00u128 << 96) | (2 * i) << 80).into(), 48).unwrap())
            .collect();
        let info = info_for(G, &list).unwrap().0;
        let mut changed = list.clone();
        changed.remove(777);
        changed.push(Ipv6Net::new((0x2a00_1450u128 << 96).into(), 48).unwrap());
        let changed = disjoint(&changed);
        assert_eq!(info_for(G, &changed).unwrap().0, info);
        let buckets = changed_buckets(&entries(G, &list, &info), &entries(G, &changed, &info));
        assert!(
            (1..=2 * (BL6_MAX_DISP as usize + 1)).contains(&buckets.len()),
            "{} buckets",
            buckets.len()
        );
        let set: HashSet<u32> = buckets.iter().map(|(b, _)| *b).collect();
        assert_eq!(set.len(), buckets.len());
    }
}
