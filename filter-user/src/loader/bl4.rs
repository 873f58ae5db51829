//! The IPv4 blocklist's host bitmaps in `BL4_BITS` (layout: `filter-common`,
//! "IPv4 blocklist"): where each group's block lies in its slot's region (the
//! [`Layout`], with its allocator), and how a slot is brought from one
//! blocklist to another. The allowlist lanes (`LANE4_*`, "Allowlist lanes")
//! have the same layout with one *space* per (slot, lane) instead of one per
//! slot; everything here takes the space (for the blocklist: the slot).
//!
//! A group is the 64 /24s of one `BL4_WORDS` word; its block holds the host
//! bitmaps of its partly listed /24s, contiguous, in /24 order. The writer:
//!
//! - **diff** (the shadow and the layout of the slot are known): only groups a
//!   changed prefix touches are visited. A group whose number of partly listed
//!   /24s stays the same is rewritten in place (only the bitmaps that differ);
//!   one whose number changes gets a new block (from the free list of its size,
//!   the never-used tail of the region, or by splitting a larger free block),
//!   its old block goes to the free list of its size. Writes: bitmaps, then
//!   bases, then words, so a one-line change writes O(1) entries.
//! - **rewrite** (layout unknown, e.g. after a slot was read back from the
//!   kernel, or the region too fragmented for a diff): every block is laid out
//!   afresh from the start of the region, in group order (O(partly listed
//!   /24s) writes; logged when it is the fragmentation fallback).
//!
//! Only the inactive slot is ever written, and nothing reads it meanwhile (its
//! `CONFIG` is invalid), so blocks are freely rewritten and reused within one
//! write. The logic is pure: it hands batches of entries to a `flush` callback
//! (the map writer, or an in-memory model in the tests).
use std::collections::HashMap;

use filter_common::{Bl4Hosts, Bl4Word, BL4_WORDS_PER_SLOT};
use ipnet::Ipv4Net;

use super::{
    batch::BATCH,
    compact::{sorted_diff, touched_words, word},
    image::{BitmapImage, SlotImage},
    LoaderError,
};

/// Largest block: a group has 64 /24s.
const MAX_BLOCK: u32 = 64;

/// Where the blocks of one slot lie in its region of `BL4_BITS` (indices
/// relative to the region), and the region's free space.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    /// Entries in the slot's region.
    region: u32,
    /// Per group: start of its block; meaningful where `len > 0`. Empty
    /// until the first block is placed.
    start: Vec<u32>,
    /// Per group: entries in its block (= partly listed /24s), 0 = none.
    len: Vec<u8>,
    /// `free[k]`: starts of free blocks of `k` entries (1..=64).
    free: Vec<Vec<u32>>,
    /// First entry never handed out; everything from here on is free.
    bump: u32,
}

impl Layout {
    pub(crate) fn new(region: u32) -> Layout {
        Layout {
            region,
            start: Vec::new(),
            len: Vec::new(),
            free: vec![Vec::new(); MAX_BLOCK as usize + 1],
            bump: 0,
        }
    }

    /// (start, len) of group `g`'s block, if it has one.
    fn block(&self, g: u32) -> Option<(u32, u32)> {
        match self.len.get(g as usize) {
            Some(&n) if n > 0 => Some((self.start[g as usize], n as u32)),
            _ => None,
        }
    }

    fn set_block(&mut self, g: u32, start: u32, len: u32) {
        if self.start.is_empty() {
            self.start = vec![0; BL4_WORDS_PER_SLOT as usize];
            self.len = vec![0; BL4_WORDS_PER_SLOT as usize];
        }
        self.start[g as usize] = start;
        self.len[g as usize] = len as u8;
    }

    /// A free block of `k` entries: from its size's free list, else the
    /// never-used tail, else split from the smallest larger free block.
    fn alloc(&mut self, k: u32) -> Option<u32> {
        debug_assert!((1..=MAX_BLOCK).contains(&k));
        if let Some(s) = self.free[k as usize].pop() {
            return Some(s);
        }
        if self.region - self.bump >= k {
            self.bump += k;
            return Some(self.bump - k);
        }
        let j = (k + 1..=MAX_BLOCK).find(|j| !self.free[*j as usize].is_empty())?;
        let s = self.free[j as usize].pop()?;
        self.free[(j - k) as usize].push(s + k);
        Some(s)
    }

    fn release(&mut self, start: u32, len: u32) {
        self.free[len as usize].push(start);
    }

    /// Entries held by blocks.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.len.iter().map(|n| *n as u64).sum()
    }
}

/// The content of groups, from either a prefix list or an expanded image.
pub(super) trait Groups {
    /// Word `w`; the host bitmaps of its partly listed /24s are appended to
    /// `hosts` in ascending /24 order (one per `part` bit).
    fn group(&self, w: u32, hosts: &mut Vec<(u32, Bl4Hosts)>) -> Bl4Word;
}

/// A sorted, disjoint prefix list (the compact shadow).
impl Groups for [Ipv4Net] {
    fn group(&self, w: u32, hosts: &mut Vec<(u32, Bl4Hosts)>) -> Bl4Word {
        word(self, w, hosts)
    }
}

/// An expanded bitmap: a `part` bit without a host bitmap (possible in an
/// image read back from a half-written slot) reads as an empty bitmap.
fn expanded_group(
    words: &HashMap<u32, Bl4Word>,
    bits: &HashMap<u32, Bl4Hosts>,
    w: u32,
    hosts: &mut Vec<(u32, Bl4Hosts)>,
) -> Bl4Word {
    let word = words.get(&w).copied().unwrap_or_default();
    for b in 0..64 {
        if word.part & (1 << b) != 0 {
            let net24 = (w << 6) | b;
            hosts.push((net24, bits.get(&net24).copied().unwrap_or_default()));
        }
    }
    word
}

/// An expanded set, with the words it holds.
pub(super) trait Expanded: Groups {
    fn word_keys(&self) -> impl Iterator<Item = u32> + '_;
}

/// A slot image's blocklist.
impl Groups for SlotImage {
    fn group(&self, w: u32, hosts: &mut Vec<(u32, Bl4Hosts)>) -> Bl4Word {
        expanded_group(&self.bl4_words, &self.bl4_hosts, w, hosts)
    }
}

impl Expanded for SlotImage {
    fn word_keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.bl4_words.keys().copied()
    }
}

/// A lane.
impl Groups for BitmapImage {
    fn group(&self, w: u32, hosts: &mut Vec<(u32, Bl4Hosts)>) -> Bl4Word {
        expanded_group(&self.words, &self.hosts, w, hosts)
    }
}

impl Expanded for BitmapImage {
    fn word_keys(&self) -> impl Iterator<Item = u32> + '_ {
        self.words.keys().copied()
    }
}

/// One batch of entries for the three maps, absolute indices. Flushed
/// in this order: bitmaps, bases, words (a word never announces a block
/// before it is written).
#[derive(Debug, Default)]
pub(super) struct Writes {
    pub bits: Vec<u32>,
    pub bits_v: Vec<Bl4Hosts>,
    pub base: Vec<u32>,
    pub base_v: Vec<u32>,
    pub words: Vec<u32>,
    pub words_v: Vec<Bl4Word>,
}

impl Writes {
    fn full(&self) -> bool {
        self.bits.len() >= BATCH || self.base.len() >= BATCH || self.words.len() >= BATCH
    }

    fn clear(&mut self) {
        self.bits.clear();
        self.bits_v.clear();
        self.base.clear();
        self.base_v.clear();
        self.words.clear();
        self.words_v.clear();
    }

    fn is_empty(&self) -> bool {
        self.bits.is_empty() && self.base.is_empty() && self.words.is_empty()
    }
}

/// Why a diff gave up (nothing is wrong with the slot: rewrite it).
#[derive(Debug)]
enum Fallback {
    /// No free block of `need` entries.
    Fragmented { need: u32 },
    /// The layout does not match the old content (a bug, or a stale layout).
    Inconsistent { group: u32 },
}

/// How a write went, for logs and tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    /// The slot was laid out afresh (layout unknown, or fragmented).
    pub rewritten: bool,
    /// Entries handed to `flush` (all three maps).
    pub entries: u64,
}

/// Where a group's bitmaps go and what a pass writes.
struct Pass<'a, F> {
    /// The slot (blocklist) or `lane4_space` (lane) written.
    space: u32,
    layout: &'a mut Layout,
    writes: Writes,
    flush: &'a mut F,
    entries: u64,
}

impl<F: FnMut(&Writes) -> Result<(), LoaderError>> Pass<'_, F> {
    fn word(&mut self, w: u32, v: Bl4Word) {
        self.writes.words.push(self.space * BL4_WORDS_PER_SLOT + w);
        self.writes.words_v.push(v);
    }

    fn base(&mut self, w: u32, start: u32) {
        self.writes.base.push(self.space * BL4_WORDS_PER_SLOT + w);
        self.writes
            .base_v
            .push(self.space * self.layout.region + start);
    }

    fn bits(&mut self, at: u32, v: Bl4Hosts) {
        self.writes.bits.push(self.space * self.layout.region + at);
        self.writes.bits_v.push(v);
    }

    /// Places `hosts` in a new block of group `w` and points its base there.
    fn place(&mut self, w: u32, hosts: &[(u32, Bl4Hosts)]) -> Result<(), Fallback> {
        let n = hosts.len() as u32;
        let start = self
            .layout
            .alloc(n)
            .ok_or(Fallback::Fragmented { need: n })?;
        self.layout.set_block(w, start, n);
        for (i, (_, h)) in hosts.iter().enumerate() {
            self.bits(start + i as u32, *h);
        }
        self.base(w, start);
        Ok(())
    }

    fn maybe_flush(&mut self, force: bool) -> Result<(), LoaderError> {
        if (force || self.writes.full()) && !self.writes.is_empty() {
            self.entries +=
                (self.writes.bits.len() + self.writes.base.len() + self.writes.words.len()) as u64;
            (self.flush)(&self.writes)?;
            self.writes.clear();
        }
        Ok(())
    }
}

/// The diff pass over `words` (ascending: every word whose content may
/// differ). `Ok(Err(_))`: the diff gave up part-way; what it wrote is
/// harmless to a rewrite (which writes every block, base and changed word).
fn diff_pass<F>(
    pass: &mut Pass<'_, F>,
    words: &[u32],
    old: &(impl Groups + ?Sized),
    new: &(impl Groups + ?Sized),
) -> Result<Result<(), Fallback>, LoaderError>
where
    F: FnMut(&Writes) -> Result<(), LoaderError>,
{
    let (mut oh, mut nh) = (Vec::new(), Vec::new());
    for &w in words {
        oh.clear();
        nh.clear();
        let ow = old.group(w, &mut oh);
        let nw = new.group(w, &mut nh);
        let block = pass.layout.block(w);
        if block.map_or(0, |b| b.1) != oh.len() as u32 {
            return Ok(Err(Fallback::Inconsistent { group: w }));
        }
        match block {
            // Same number of partly listed /24s: in place, what differs.
            Some((start, n)) if n == nh.len() as u32 => {
                for (i, (o, h)) in oh.iter().zip(&nh).enumerate() {
                    if o.1 != h.1 {
                        pass.bits(start + i as u32, h.1);
                    }
                }
            }
            _ => {
                if let Some((start, n)) = block {
                    pass.layout.release(start, n);
                    pass.layout.set_block(w, 0, 0);
                }
                if !nh.is_empty() {
                    if let Err(f) = pass.place(w, &nh) {
                        return Ok(Err(f));
                    }
                }
            }
        }
        if ow != nw {
            pass.word(w, nw);
        }
        pass.maybe_flush(false)?;
    }
    pass.maybe_flush(true)?;
    Ok(Ok(()))
}

/// The rewrite pass: a fresh layout, every block of `new` written; `words`
/// (ascending) must hold every word with a partly listed /24 in `new` and
/// every word whose content differs between `old` and `new`.
fn rewrite_pass<F>(
    pass: &mut Pass<'_, F>,
    words: &[u32],
    old: &(impl Groups + ?Sized),
    new: &(impl Groups + ?Sized),
) -> Result<(), LoaderError>
where
    F: FnMut(&Writes) -> Result<(), LoaderError>,
{
    *pass.layout = Layout::new(pass.layout.region);
    let (mut oh, mut nh) = (Vec::new(), Vec::new());
    for &w in words {
        oh.clear();
        nh.clear();
        let ow = old.group(w, &mut oh);
        let nw = new.group(w, &mut nh);
        if !nh.is_empty() && pass.place(w, &nh).is_err() {
            return Err(LoaderError::Bl4Capacity {
                need: partial_count(words, new),
                max: pass.layout.region as usize,
            });
        }
        if ow != nw {
            pass.word(w, nw);
        }
        pass.maybe_flush(false)?;
    }
    pass.maybe_flush(true)
}

/// Partly listed /24s in `words` of `new`.
fn partial_count(words: &[u32], new: &(impl Groups + ?Sized)) -> usize {
    let mut hosts = Vec::new();
    words
        .iter()
        .map(|w| new.group(*w, &mut hosts).part.count_ones() as usize)
        .sum()
}

/// Merges two ascending, duplicate-free lists.
pub(super) fn union_sorted(a: Vec<u32>, b: Vec<u32>) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        let x = match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x == y => {
                i += 1;
                j += 1;
                *x
            }
            (Some(x), Some(y)) if x < y => {
                i += 1;
                *x
            }
            (Some(x), None) => {
                i += 1;
                *x
            }
            (_, Some(y)) => {
                j += 1;
                *y
            }
            (None, None) => unreachable!(),
        };
        out.push(x);
    }
    out
}

/// Words with a partly listed /24 in `bl4` (sorted, disjoint), ascending.
fn partial_words(bl4: &[Ipv4Net]) -> Vec<u32> {
    let mut words: Vec<u32> = bl4
        .iter()
        .filter(|n| n.prefix_len() > 24)
        .map(|n| u32::from(n.network()) >> 14)
        .collect();
    words.dedup();
    words
}

/// Brings space `space` (a slot's blocklist, or a lane) from prefix list
/// `old` (what it holds) to `new`. `layout` is the space's layout (`None` =
/// unknown: rewrite); on success it describes the space, on error it is
/// `None`. `what` names the set in logs.
pub(super) fn write_lists<F>(
    layout: &mut Option<Layout>,
    region: u32,
    space: u32,
    what: &str,
    old: &[Ipv4Net],
    new: &[Ipv4Net],
    mut flush: F,
) -> Result<Outcome, LoaderError>
where
    F: FnMut(&Writes) -> Result<(), LoaderError>,
{
    let (gone, added) = sorted_diff(old, new);
    let words = union_sorted(
        touched_words(gone.into_iter()).collect(),
        touched_words(added.into_iter()).collect(),
    );
    let mut current = layout.take().filter(|l| l.region == region);
    let fresh = current.is_none();
    let mut l = current.take().unwrap_or_else(|| Layout::new(region));
    let mut pass = Pass {
        space,
        layout: &mut l,
        writes: Writes::default(),
        flush: &mut flush,
        entries: 0,
    };
    let mut rewritten = false;
    if fresh && !old.is_empty() {
        rewritten = true;
    } else {
        match diff_pass(&mut pass, &words, old, new)? {
            Ok(()) => {}
            Err(why) => {
                tracing::info!(
                    "{what}: {}; rewriting its host bitmaps compactly",
                    match why {
                        Fallback::Fragmented { need } => format!(
                            "no free block of {need} host bitmaps in its region of {region}"
                        ),
                        Fallback::Inconsistent { group } =>
                            format!("layout out of step with group {group}"),
                    }
                );
                rewritten = true;
                pass.writes.clear();
            }
        }
    }
    if rewritten {
        let all = union_sorted(words, partial_words(new));
        rewrite_pass(&mut pass, &all, old, new)?;
    }
    let entries = pass.entries;
    *layout = Some(l);
    Ok(Outcome { rewritten, entries })
}

/// Brings space `space` from `old` (read back from the kernel, possibly
/// inconsistent) to `new`: always a rewrite, the read-back layout is not
/// trusted. On success `layout` describes the space.
pub(super) fn write_images<F, E: Expanded>(
    layout: &mut Option<Layout>,
    region: u32,
    space: u32,
    old: &E,
    new: &E,
    mut flush: F,
) -> Result<Outcome, LoaderError>
where
    F: FnMut(&Writes) -> Result<(), LoaderError>,
{
    *layout = None;
    let mut words: Vec<u32> = old.word_keys().chain(new.word_keys()).collect();
    words.sort_unstable();
    words.dedup();
    let mut l = Layout::new(region);
    let mut pass = Pass {
        space,
        layout: &mut l,
        writes: Writes::default(),
        flush: &mut flush,
        entries: 0,
    };
    rewrite_pass(&mut pass, &words, old, new)?;
    let entries = pass.entries;
    *layout = Some(l);
    Ok(Outcome {
        rewritten: true,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use filter_common::bl4_bits_index;

    use super::*;
    use crate::loader::{compact::Compact, lanes::partial_nets24};

    /// The three maps of both slots in memory, as the kernel holds them.
    struct Kernel {
        region: u32,
        /// The slot being written: its writes must stay in its region.
        slot: u32,
        words: HashMap<u32, Bl4Word>,
        base: HashMap<u32, u32>,
        bits: Vec<Bl4Hosts>,
        /// Entries written, and fail the write of entry number `fail_at`.
        written: u64,
        fail_at: Option<u64>,
    }

    impl Kernel {
        fn new(slot: u32, region: u32) -> Kernel {
            Kernel {
                region,
                slot,
                words: HashMap::new(),
                base: HashMap::new(),
                bits: vec![Bl4Hosts::default(); 2 * region as usize],
                written: 0,
                fail_at: None,
            }
        }

        fn apply(&mut self, w: &Writes) -> Result<(), LoaderError> {
            let n = (w.bits.len() + w.base.len() + w.words.len()) as u64;
            if let Some(at) = self.fail_at {
                if (self.written..self.written + n).contains(&at) {
                    return Err(LoaderError::Injected("test kernel"));
                }
            }
            self.written += n;
            let (lo, hi) = (self.slot * self.region, (self.slot + 1) * self.region);
            assert!(
                w.bits.iter().all(|k| (lo..hi).contains(k)),
                "write outside the region"
            );
            assert!(
                w.base_v.iter().all(|b| (lo..hi).contains(b)),
                "base outside the region"
            );
            let words = self.slot * BL4_WORDS_PER_SLOT..(self.slot + 1) * BL4_WORDS_PER_SLOT;
            assert!(w.words.iter().chain(&w.base).all(|k| words.contains(k)));
            for (k, v) in w.bits.iter().zip(&w.bits_v) {
                self.bits[*k as usize] = *v;
            }
            for (k, v) in w.base.iter().zip(&w.base_v) {
                self.base.insert(*k, *v);
            }
            for (k, v) in w.words.iter().zip(&w.words_v) {
                self.words.insert(*k, *v);
            }
            Ok(())
        }

        /// What the datapath sees in `slot`, as an expanded image (words
        /// and host bitmaps only), checking every base lies in the region.
        fn expand(&self, slot: u32) -> SlotImage {
            self.read(slot, true)
        }

        /// As the loader reads a possibly half-written slot back: bitmaps
        /// outside the region (or never written bases) are left out.
        fn expand_lenient(&self, slot: u32) -> SlotImage {
            self.read(slot, false)
        }

        fn read(&self, slot: u32, strict: bool) -> SlotImage {
            let mut img = SlotImage::default();
            for (k, word) in &self.words {
                if k / BL4_WORDS_PER_SLOT != slot || *word == Bl4Word::default() {
                    continue;
                }
                let w = k % BL4_WORDS_PER_SLOT;
                img.bl4_words.insert(w, *word);
                for b in 0..64 {
                    if word.part & (1 << b) == 0 {
                        continue;
                    }
                    let net24 = (w << 6) | b;
                    let Some(&base) = self.base.get(k) else {
                        assert!(!strict, "slot {slot}: word {w} has no base");
                        continue;
                    };
                    let i = bl4_bits_index(base, word.part, net24);
                    let inside = (slot * self.region..(slot + 1) * self.region).contains(&i);
                    assert!(
                        inside || !strict,
                        "slot {slot} reads entry {i} outside its region"
                    );
                    if inside {
                        img.bl4_hosts.insert(net24, self.bits[i as usize]);
                    }
                }
            }
            img
        }
    }

    fn image_of(bl4: &[Ipv4Net]) -> SlotImage {
        let mut img = Compact {
            bl4: bl4.to_vec(),
            ..Compact::default()
        }
        .expand();
        img.bl4_words.retain(|_, v| *v != Bl4Word::default());
        img
    }

    fn xorshift(seed: &mut u64) -> u64 {
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        *seed
    }

    /// Random prefixes packed into a few groups (so groups gain and lose
    /// partly listed /24s, and blocks change size), plus whole /24s and
    /// shorter prefixes.
    fn random_list(seed: &mut u64, n: usize, groups: u32) -> Vec<Ipv4Net> {
        let nets: Vec<Ipv4Net> = (0..n)
            .map(|_| {
                let r = xorshift(seed);
                let group = 0x0a00_0000u32 + ((r as u32 % groups) << 14);
                let addr = group | ((r >> 20) as u32 & 0x3fff);
                let len = [20, 24, 25, 28, 31, 32, 32, 32, 32, 32][((r >> 40) % 10) as usize];
                Ipv4Net::new(addr.into(), len).unwrap().trunc()
            })
            .collect();
        Ipv4Net::aggregate(&nets)
    }

    fn mutate(seed: &mut u64, list: &[Ipv4Net], groups: u32) -> Vec<Ipv4Net> {
        let drop = xorshift(seed) % 5 + 1;
        let mut new: Vec<Ipv4Net> = list
            .iter()
            .filter(|_| !xorshift(seed).is_multiple_of(drop * 3))
            .copied()
            .collect();
        let n = (xorshift(seed) % 40) as usize;
        new.extend(random_list(seed, n, groups));
        Ipv4Net::aggregate(&new)
    }

    /// Drives one slot through a sequence of lists with the diff writer.
    struct Slot {
        slot: u32,
        kernel: Kernel,
        layout: Option<Layout>,
        held: Vec<Ipv4Net>,
    }

    impl Slot {
        fn new(slot: u32, region: u32) -> Slot {
            Slot {
                slot,
                kernel: Kernel::new(slot, region),
                layout: Some(Layout::new(region)),
                held: Vec::new(),
            }
        }

        fn write(&mut self, new: &[Ipv4Net]) -> Result<Outcome, LoaderError> {
            let k = &mut self.kernel;
            let out = write_lists(
                &mut self.layout,
                k.region,
                self.slot,
                "test",
                &self.held,
                new,
                |w| k.apply(w),
            );
            if out.is_ok() {
                self.held = new.to_vec();
            }
            out
        }

        /// What the loader does with a slot of unknown content: read it
        /// back (here: as the datapath sees it) and rewrite it from there.
        fn recover(&mut self, new: &[Ipv4Net]) {
            let k = &mut self.kernel;
            let back = k.expand_lenient(self.slot);
            let out = write_images(
                &mut self.layout,
                k.region,
                self.slot,
                &back,
                &image_of(new),
                |w| k.apply(w),
            )
            .expect("rewrite");
            assert!(out.rewritten);
            self.held = new.to_vec();
        }

        fn check(&self, what: &str) {
            let got = self.kernel.expand(self.slot);
            let want = image_of(&self.held);
            assert_eq!(got.bl4_words, want.bl4_words, "{what}: words");
            assert_eq!(got.bl4_hosts, want.bl4_hosts, "{what}: host bitmaps");
            let l = self.layout.as_ref().expect("layout known after a write");
            assert_eq!(l.used() as usize, partial_nets24(&self.held), "{what}");
        }
    }

    /// After every diff of a random sequence the slot reads exactly as a
    /// fresh build of its list, in both slots.
    #[test]
    fn diffs_of_random_lists_read_as_fresh_builds() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for slot in 0..2 {
            let mut s = Slot::new(slot, 4096);
            let mut list = Vec::new();
            let mut rewrites = 0;
            for round in 0..300 {
                list = if round % 50 == 0 {
                    random_list(&mut seed, 400, 24)
                } else {
                    mutate(&mut seed, &list, 24)
                };
                rewrites += s.write(&list).expect("fits").rewritten as u32;
                s.check(&format!("slot {slot} round {round}"));
            }
            assert!(rewrites < 10, "{rewrites} rewrites in a roomy region");
        }
    }

    /// A region barely larger than the list fragments: the writer falls back
    /// to a compact rewrite, and the slot still reads right afterwards.
    #[test]
    fn fragmented_region_falls_back_to_a_rewrite_and_stays_correct() {
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut list = random_list(&mut seed, 600, 12);
        let region = partial_nets24(&list) as u32 + 40;
        let mut s = Slot::new(1, region);
        let mut rewrites = 0;
        for round in 0..200 {
            let next = mutate(&mut seed, &list, 12);
            if partial_nets24(&next) as u32 > region {
                continue; // the loader's capacity check refuses these
            }
            list = next;
            let out = s.write(&list).expect("fits");
            rewrites += out.rewritten as u32;
            s.check(&format!("round {round}"));
        }
        assert!(rewrites > 0, "the tight region never fragmented");
    }

    /// A list larger than the region is refused with the capacity error, and
    /// the next write (from the slot read back) rewrites it correctly.
    #[test]
    fn list_larger_than_the_region_is_refused() {
        let mut seed = 7u64;
        let list = random_list(&mut seed, 300, 16);
        let need = partial_nets24(&list);
        let mut s = Slot::new(0, need as u32 - 1);
        match s.write(&list) {
            Err(LoaderError::Bl4Capacity { need: n, max }) => {
                assert_eq!((n, max), (need, need - 1));
            }
            other => panic!("expected a capacity error, got {other:?}"),
        }
        assert!(s.layout.is_none());
        let smaller: Vec<Ipv4Net> = list.iter().step_by(2).copied().collect();
        s.recover(&smaller);
        s.check("after the refused write");
    }

    /// A write that fails part-way leaves the layout unknown; the retry
    /// (from the list the slot was meant to hold before) rewrites and reads
    /// right.
    #[test]
    fn failed_write_is_recovered_by_a_rewrite() {
        let mut seed = 99u64;
        let a = random_list(&mut seed, 500, 20);
        let b = mutate(&mut seed, &a, 20);
        for fail_at in [0, 1, 5, 17, 40] {
            let mut s = Slot::new(0, 2048);
            s.write(&a).expect("fits");
            s.kernel.fail_at = Some(s.kernel.written + fail_at);
            if s.write(&b).is_ok() {
                continue; // the diff wrote fewer entries than `fail_at`
            }
            assert!(s.layout.is_none(), "a failed write kept its layout");
            s.kernel.fail_at = None;
            s.recover(&b);
            s.check(&format!("fail at {fail_at}"));
            // And a diff from there on works again.
            let c = mutate(&mut seed, &b, 20);
            assert!(!s.write(&c).expect("fits").rewritten);
            s.check(&format!("diff after recovery {fail_at}"));
        }
    }

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    /// 64 partly listed /24s in one group, /32s at both edges of each /24,
    /// and neighbours across the group boundaries.
    #[test]
    fn full_group_of_partial_nets_and_group_edges() {
        let mut list = Vec::new();
        // The group of /24s 10.0.64.0 .. 10.0.127.0.
        for i in 64..128u32 {
            list.push(net(&format!("10.0.{i}.0/32")));
            list.push(net(&format!("10.0.{i}.255/32")));
        }
        list.push(net("10.0.63.255/32")); // last /24 of the group before
        list.push(net("10.0.128.0/32")); // first of the group after
        list.sort();
        let mut s = Slot::new(1, 256);
        s.write(&list).expect("fits");
        s.check("full group");
        let g = u32::from(std::net::Ipv4Addr::new(10, 0, 64, 0)) >> 14;
        // After the one bitmap of the group before.
        assert_eq!(s.layout.as_ref().unwrap().block(g), Some((1, 64)));
        // Drop the middle /24's hosts: the block shrinks to 63.
        list.retain(|n| !n.to_string().starts_with("10.0.100."));
        s.write(&list).expect("fits");
        s.check("63 of 64");
        // One more host in an existing /24: in place, one entry.
        list.push(net("10.0.127.128/32"));
        list.sort();
        let out = s.write(&list).expect("fits");
        assert_eq!(out.entries, 1);
        s.check("in place");
        // The middle /24 whole: a `full` bit; the block stays.
        list.push(net("10.0.100.0/24"));
        list.sort();
        s.write(&list).expect("fits");
        s.check("full /24 in the group");
    }

    /// The bench-sized case: a one-prefix change to a list of 1M /32s in
    /// ~1M /24s writes a handful of entries, not the array.
    #[test]
    fn one_prefix_change_at_1m_writes_o1_entries() {
        let mut seed = 0xb10cu64;
        let mut addrs: Vec<u32> = (0..1_000_000)
            .map(|_| (xorshift(&mut seed) as u32) & !1)
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        let list: Vec<Ipv4Net> = addrs
            .iter()
            .map(|a| Ipv4Net::new((*a).into(), 32).unwrap())
            .collect();
        let region = 1 << 20;
        let mut layout = Some(Layout::new(region));
        let mut written = 0u64;
        let mut bits_max = 0usize;
        let mut flush = |w: &Writes| -> Result<(), LoaderError> {
            written += (w.bits.len() + w.base.len() + w.words.len()) as u64;
            bits_max = bits_max.max(w.bits.iter().map(|i| *i as usize).max().unwrap_or(0));
            Ok(())
        };
        let first = write_lists(&mut layout, region, 0, "test", &[], &list, &mut flush).unwrap();
        assert!(!first.rewritten);
        let parts = partial_nets24(&list) as u64;
        assert!(parts > 900_000, "{parts}");
        // Blocks + bases + words.
        assert!(first.entries >= parts && first.entries < parts + 2 * (1 << 18));

        // A new /32 in a /24 already partly listed: one bitmap in place.
        let mut one = list.clone();
        let a = addrs[500_000] + 1;
        one.insert(500_001, Ipv4Net::new(a.into(), 32).unwrap());
        let out = write_lists(&mut layout, region, 0, "test", &list, &one, &mut flush).unwrap();
        assert_eq!((out.rewritten, out.entries), (false, 1));
        // A new /32 in a fresh /24: a new block of its group (≤ 64), its
        // base and its word.
        let gap = (1000..)
            .find(|i| addrs[i + 1] >> 8 > (addrs[*i] >> 8) + 1)
            .unwrap();
        let fresh = ((addrs[gap] >> 8) + 1) << 8;
        let mut two = one.clone();
        two.push(Ipv4Net::new(fresh.into(), 32).unwrap());
        two.sort();
        let out = write_lists(&mut layout, region, 0, "test", &one, &two, &mut flush).unwrap();
        assert!(!out.rewritten);
        assert!((3..=66).contains(&out.entries), "{}", out.entries);
        // And back: removing it moves the group again.
        let out = write_lists(&mut layout, region, 0, "test", &two, &one, &mut flush).unwrap();
        assert!(!out.rewritten && out.entries <= 66, "{out:?}");
    }

    #[test]
    fn allocator_splits_larger_free_blocks_when_the_tail_is_used() {
        let mut l = Layout::new(10);
        let a = l.alloc(6).unwrap();
        let b = l.alloc(4).unwrap();
        assert_eq!((a, b), (0, 6));
        assert_eq!(l.alloc(1), None);
        l.release(a, 6);
        assert_eq!(l.alloc(2), Some(0));
        assert_eq!(l.alloc(4), Some(2));
        assert_eq!(l.alloc(1), None);
        l.release(b, 4);
        assert_eq!(l.alloc(4), Some(6));
    }
}
