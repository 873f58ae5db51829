//! The state of a layout-5-or-later filter that no policy rebuilds, carried
//! into the new maps of a migration: the bans (`BAN_BITS`, the `BAN4`/`BAN6`
//! hashes, the `BAN4_NETS`/`BAN6_NETS` tries, the per-tag `BAN_COUNTERS`)
//! and the rate limits' buckets (`RATE_KEYS`, `RATE_ZONE`, `RATE_REAPED`).
//!
//! [`State::start`] copies everything before any link runs the new program,
//! so the bans keep dropping (and `Bans::start`, which adopts the kernel's
//! bans when the daemon's store is missing, finds them in the new maps) and
//! a limited source's bucket is where the old program left it.
//! [`State::finish`], after the links switched, adds what the old program
//! did meanwhile: the ban drops it counted, and the buckets it charged or
//! created (merged: the later `tat` wins; a key only the old map has is
//! added and counted as inserted).
//!
//! From layout 7 on, the transfer quotas' usage (`QUOTA_USAGE`) is carried
//! too: it lives a period (up to a calendar month), so an upgrade must not
//! hand every source a fresh quota. `QUOTAS` is not: every apply rewrites
//! it. (This build is layout 7, so that path first runs in the build after
//! it; a migration from layout 5 or 6 starts with no usage, as there was
//! none.)
use std::{collections::HashMap as StdHashMap, path::Path};

use aya::maps::{
    lpm_trie::Key as LpmKey, Array, HashMap, IterableMap, LpmTrie, MapData, MapError, PerCpuArray,
    PerCpuValues,
};
use filter_common::{
    layout5, layout7, layout8, rate_zone_index, BanNet4, BanNet6, BanValue, Counter, MapShape,
    QuotaKey, QuotaUsage, RateBucket, RateKey, RateSlot, RateZone, MAP_BAN4, MAP_BAN4_NETS,
    MAP_BAN6, MAP_BAN6_NETS, MAP_BAN_BITS, MAP_BAN_COUNTERS, MAP_QUOTA_USAGE, MAP_RATE_KEYS,
    MAP_RATE_REAPED, MAP_RATE_SLOTS, MAP_RATE_ZONE, QUOTA_KIND_SHIFT, RATE_WAYS,
};

use super::{open, LoaderError, PinRoot};
use crate::loader::{
    batch::{self, BATCH},
    rate::{set_of, way_for},
};

/// The carried ban and rate-limit maps and the shape each had in layout 5:
/// the key, value and entries checked before the map is read. Layouts 6 and
/// 7 have the same (`filter_common::layout6` and `layout7` re-export
/// layout 5's).
pub(crate) const LAYOUT5_STATE: [(&str, MapShape); 9] = [
    (MAP_BAN_BITS, layout5::BAN_BITS),
    (MAP_BAN4, layout5::BAN4),
    (MAP_BAN6, layout5::BAN6),
    (MAP_BAN4_NETS, layout5::BAN4_NETS),
    (MAP_BAN6_NETS, layout5::BAN6_NETS),
    (MAP_BAN_COUNTERS, layout5::BAN_COUNTERS),
    (MAP_RATE_KEYS, layout5::RATE_KEYS),
    (MAP_RATE_ZONE, layout5::RATE_ZONE),
    (MAP_RATE_REAPED, layout5::RATE_REAPED),
];

/// The shapes of the carried ban and rate-limit maps in pinned layout
/// `from`; `None` before layout 5 (no bans, no rate limits). Each later
/// layout whose maps differ adds its own table (and a conversion); this
/// build's maps have layout 5's shapes (asserted in `filter_common`) but
/// for `RATE_KEYS`, whose buckets go to `RATE_SLOTS` (layout 8).
pub(crate) fn shapes(from: u32) -> Option<&'static [(&'static str, MapShape)]> {
    (from >= 5).then_some(&LAYOUT5_STATE[..])
}

/// The shape of `QUOTA_USAGE` in pinned layout `from`; `None` before layout
/// 7 (no quotas: the usage starts empty). A later layout that changes
/// `QuotaKey` or `QuotaUsage` adds its shape here and a conversion.
pub(crate) fn quota_shape(from: u32) -> Option<MapShape> {
    (from >= 7).then_some(layout7::QUOTA_USAGE)
}

fn shape(shapes: &[(&str, MapShape)], name: &str) -> MapShape {
    shapes
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
        .expect("every carried map has a shape")
}

/// What was carried, for the log.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StateCarried {
    pub ban_hosts: usize,
    pub ban_nets: usize,
    pub ban_words: usize,
    pub ban_drops: u64,
    pub rate_keys: usize,
    /// `QUOTA_USAGE` entries (from layout 7 on; `None` before).
    pub quota_usage: Option<usize>,
}

/// The old and new handles of the carried maps, open until `finish`.
pub(crate) struct State {
    old_ban_counters: PerCpuArray<MapData, Counter>,
    new_ban_counters: PerCpuArray<MapData, Counter>,
    /// Old `BAN_COUNTERS` sums as carried, by tag id.
    ban_carried: Vec<Counter>,
    /// Layouts 5–7's hash, and this layout's slots (`RATE_SLOTS`).
    old_keys: HashMap<MapData, RateKey, RateBucket>,
    new_slots: Array<MapData, RateSlot>,
    old_zone: Array<MapData, RateZone>,
    new_zone: Array<MapData, RateZone>,
    keys_max: u32,
    /// From layout 7 on.
    quota: Option<QuotaState>,
}

/// `QUOTA_USAGE` old and new, and what `start` copied.
struct QuotaState {
    old: HashMap<MapData, QuotaKey, QuotaUsage>,
    new: HashMap<MapData, QuotaKey, QuotaUsage>,
    carried: StdHashMap<QuotaKey, QuotaUsage>,
    max: u32,
}

fn io_err(map: &'static str) -> impl FnOnce(std::io::Error) -> LoaderError {
    move |e| LoaderError::Map {
        map,
        source: MapError::IoError(e),
    }
}

/// Opens `name` in `old` (pinned by layout `from`) and in `new` (this
/// build's), both checked against `shape`.
fn pair<T>(
    old: &Path,
    new: &Path,
    name: &str,
    from: u32,
    shapes: &[(&str, MapShape)],
) -> Result<(T, T), LoaderError>
where
    T: TryFrom<aya::maps::Map, Error = MapError>,
{
    let s = shape(shapes, name);
    Ok((
        open(&old.join(name), from, s)?,
        open(&new.join(name), filter_common::LAYOUT_VERSION, s)?,
    ))
}

/// Every entry of a hash or trie, at most `max` (a map the datapath changes
/// meanwhile cannot make the walk run on: the kernel restarts a walk whose
/// key was deleted).
fn entries<K, V>(
    walk: impl Iterator<Item = Result<(K, V), MapError>>,
    name: &'static str,
    max: u32,
) -> Result<Vec<(K, V)>, LoaderError> {
    walk.take(max as usize)
        .collect::<Result<Vec<_>, _>>()
        .map_err(LoaderError::map(name))
}

/// Writes `keys → values`, in batches where the map and kernel have them.
fn put_all<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    name: &'static str,
    keys: &[K],
    values: &[V],
) -> Result<(), LoaderError> {
    for (ks, vs) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        let done = batch::update(map, ks, vs);
        let Some(e) = done.error.as_ref() else {
            continue;
        };
        if !done.unsupported() {
            let e = std::io::Error::new(e.kind(), e.to_string());
            return Err(io_err(name)(e));
        }
        for (k, v) in ks.iter().zip(vs).skip(done.processed) {
            batch::update_one(map, k, v).map_err(io_err(name))?;
        }
    }
    Ok(())
}

fn copy_hash<K: aya::Pod, V: aya::Pod>(
    old: &Path,
    new: &Path,
    name: &'static str,
    from: u32,
    shapes: &[(&str, MapShape)],
) -> Result<usize, LoaderError> {
    let (o, n): (HashMap<MapData, K, V>, HashMap<MapData, K, V>) =
        pair(old, new, name, from, shapes)?;
    let all = entries(o.iter(), name, shape(shapes, name).entries)?;
    let (keys, values): (Vec<K>, Vec<V>) = all.into_iter().unzip();
    put_all(n.map(), name, &keys, &values)?;
    Ok(keys.len())
}

fn copy_trie<K: aya::Pod>(
    old: &Path,
    new: &Path,
    name: &'static str,
    from: u32,
    shapes: &[(&str, MapShape)],
) -> Result<usize, LoaderError> {
    let (o, mut n): (LpmTrie<MapData, K, BanValue>, LpmTrie<MapData, K, BanValue>) =
        pair(old, new, name, from, shapes)?;
    let all: Vec<(LpmKey<K>, BanValue)> = entries(o.iter(), name, shape(shapes, name).entries)?;
    for (k, v) in &all {
        n.insert(k, *v, 0).map_err(LoaderError::map(name))?;
    }
    Ok(all.len())
}

fn sum(cells: &PerCpuValues<Counter>) -> Counter {
    cells.iter().fold(Counter::default(), |a, c| Counter {
        packets: a.packets + c.packets,
        bytes: a.bytes + c.bytes,
    })
}

impl State {
    /// Copies the carried maps from `maps/` (layout `from`) into `next/`.
    /// Nothing runs on the new maps yet; the old daemon is gone, so only the
    /// old datapath writes the old maps meanwhile (counters and buckets).
    pub(crate) fn start(
        root: &PinRoot,
        from: u32,
    ) -> Result<Option<(State, StateCarried)>, LoaderError> {
        let Some(shapes) = shapes(from) else {
            return Ok(None);
        };
        let (old, new) = (root.maps_dir(), root.next_dir());
        let mut done = StateCarried::default();

        // The entries first, then the prefilter words that lead to them.
        done.ban_hosts += copy_hash::<[u8; 4], BanValue>(&old, &new, MAP_BAN4, from, shapes)?;
        done.ban_hosts += copy_hash::<[u8; 16], BanValue>(&old, &new, MAP_BAN6, from, shapes)?;
        done.ban_nets += copy_trie::<BanNet4>(&old, &new, MAP_BAN4_NETS, from, shapes)?;
        done.ban_nets += copy_trie::<BanNet6>(&old, &new, MAP_BAN6_NETS, from, shapes)?;
        let (o, n): (Array<MapData, u64>, Array<MapData, u64>) =
            pair(&old, &new, MAP_BAN_BITS, from, shapes)?;
        let len = shape(shapes, MAP_BAN_BITS).entries;
        let mut words = vec![0u64; len as usize];
        if !batch::lookup_array(o.map(), 0, &mut words).map_err(io_err(MAP_BAN_BITS))? {
            for (i, w) in words.iter_mut().enumerate() {
                *w = o
                    .get(&(i as u32), 0)
                    .map_err(LoaderError::map(MAP_BAN_BITS))?;
            }
        }
        // The new array is all zero: only the words in use are written.
        let (wk, wv): (Vec<u32>, Vec<u64>) = words
            .iter()
            .enumerate()
            .filter(|(_, w)| **w != 0)
            .map(|(i, w)| (i as u32, *w))
            .unzip();
        put_all(n.map(), MAP_BAN_BITS, &wk, &wv)?;
        done.ban_words = wk.len();

        // Per-tag drops, per CPU as they are (the new map is unused).
        let (old_bc, mut new_bc): (PerCpuArray<MapData, Counter>, PerCpuArray<MapData, Counter>) =
            pair(&old, &new, MAP_BAN_COUNTERS, from, shapes)?;
        let tags = shape(shapes, MAP_BAN_COUNTERS).entries;
        let mut ban_carried = vec![Counter::default(); tags as usize];
        for tag in 0..tags {
            let cells = old_bc
                .get(&tag, 0)
                .map_err(LoaderError::map(MAP_BAN_COUNTERS))?;
            let s = sum(&cells);
            if s == Counter::default() {
                continue;
            }
            ban_carried[tag as usize] = s;
            done.ban_drops += s.packets;
            new_bc
                .set(tag, cells, 0)
                .map_err(LoaderError::map(MAP_BAN_COUNTERS))?;
        }

        // The rate limits: buckets, zone-wide state, the reaped counts
        // (`inserted − reaped` is what a limit tracks: both are carried with
        // the keys they count).
        // Each bucket goes to its set's first free way, as the datapath
        // places keys; one whose set is full (more than four keys of the old
        // hash in one set, rare below the tracked maximum) is dropped and
        // counted as reaped, so `inserted − reaped` stays the number tracked.
        let keys_max = shape(shapes, MAP_RATE_KEYS).entries;
        let old_keys: HashMap<MapData, RateKey, RateBucket> =
            open(&old.join(MAP_RATE_KEYS), from, shape(shapes, MAP_RATE_KEYS))?;
        let new_slots: Array<MapData, RateSlot> = open(
            &new.join(MAP_RATE_SLOTS),
            filter_common::LAYOUT_VERSION,
            layout8::RATE_SLOTS,
        )?;
        let buckets = entries(old_keys.iter(), MAP_RATE_KEYS, keys_max)?;
        let mut table = vec![RateSlot::default(); layout8::RATE_SLOTS.entries as usize];
        let mut dropped: StdHashMap<u32, u64> = StdHashMap::new();
        for (k, b) in &buckets {
            let set = set_of(k);
            let ways = &mut table[set as usize..(set + RATE_WAYS) as usize];
            match way_for(ways, k) {
                Some((w, _)) => {
                    ways[w as usize] = RateSlot {
                        key: k.words(),
                        tat: b.tat,
                    }
                }
                None => {
                    *dropped
                        .entry(rate_zone_index(u32::from(k.zone), u32::from(k.kind)))
                        .or_default() += 1
                }
            }
        }
        let (sk, sv): (Vec<u32>, Vec<RateSlot>) = table
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_free())
            .map(|(i, s)| (i as u32, *s))
            .unzip();
        put_all(new_slots.map(), MAP_RATE_SLOTS, &sk, &sv)?;
        done.rate_keys = sk.len();
        let (old_zone, mut new_zone): (Array<MapData, RateZone>, Array<MapData, RateZone>) =
            pair(&old, &new, MAP_RATE_ZONE, from, shapes)?;
        let (old_reaped, mut new_reaped): (Array<MapData, u64>, Array<MapData, u64>) =
            pair(&old, &new, MAP_RATE_REAPED, from, shapes)?;
        for i in 0..shape(shapes, MAP_RATE_ZONE).entries {
            let z = old_zone
                .get(&i, 0)
                .map_err(LoaderError::map(MAP_RATE_ZONE))?;
            if z != RateZone::default() {
                new_zone
                    .set(i, z, 0)
                    .map_err(LoaderError::map(MAP_RATE_ZONE))?;
            }
        }
        for i in 0..shape(shapes, MAP_RATE_REAPED).entries {
            let r = old_reaped
                .get(&i, 0)
                .map_err(LoaderError::map(MAP_RATE_REAPED))?
                + dropped.get(&i).copied().unwrap_or(0);
            if r != 0 {
                new_reaped
                    .set(i, r, 0)
                    .map_err(LoaderError::map(MAP_RATE_REAPED))?;
            }
        }
        let quota = match quota_shape(from) {
            Some(s) => {
                let q = QuotaState::start(&old, &new, from, s)?;
                done.quota_usage = Some(q.carried.len());
                Some(q)
            }
            None => None,
        };
        Ok(Some((
            State {
                old_ban_counters: old_bc,
                new_ban_counters: new_bc,
                ban_carried,
                old_keys,
                new_slots,
                old_zone,
                new_zone,
                keys_max,
                quota,
            },
            done,
        )))
    }

    /// After every link runs the new program: adds the ban drops the old one
    /// counted since `start` (to CPU 0's cell, as counters are carried), and
    /// merges the buckets it charged or created meanwhile. The new datapath
    /// runs during this; a packet's update racing one write here is lost,
    /// which costs at most that packet's charge. Returns the drops and keys
    /// added.
    pub(crate) fn finish(mut self) -> Result<StateCarried, LoaderError> {
        let mut done = StateCarried::default();
        for tag in 0..self.ban_carried.len() as u32 {
            let now = sum(&self
                .old_ban_counters
                .get(&tag, 0)
                .map_err(LoaderError::map(MAP_BAN_COUNTERS))?);
            let before = self.ban_carried[tag as usize];
            let delta = Counter {
                packets: now.packets.saturating_sub(before.packets),
                bytes: now.bytes.saturating_sub(before.bytes),
            };
            if delta == Counter::default() {
                continue;
            }
            let mut cells: Vec<Counter> = self
                .new_ban_counters
                .get(&tag, 0)
                .map_err(LoaderError::map(MAP_BAN_COUNTERS))?
                .iter()
                .copied()
                .collect();
            if let Some(first) = cells.first_mut() {
                first.packets += delta.packets;
                first.bytes += delta.bytes;
            }
            let values = PerCpuValues::try_from(cells).map_err(io_err(MAP_BAN_COUNTERS))?;
            self.new_ban_counters
                .set(tag, values, 0)
                .map_err(LoaderError::map(MAP_BAN_COUNTERS))?;
            done.ban_drops += delta.packets;
        }

        let mut added: StdHashMap<u32, u64> = StdHashMap::new();
        for (k, old) in entries(self.old_keys.iter(), MAP_RATE_KEYS, self.keys_max)? {
            let set = set_of(&k);
            let ways = (set..set + RATE_WAYS)
                .map(|i| self.new_slots.get(&i, 0))
                .collect::<Result<Vec<_>, _>>()
                .map_err(LoaderError::map(MAP_RATE_SLOTS))?;
            let Some((w, held)) = way_for(&ways, &k) else {
                continue;
            };
            if held && ways[w as usize].tat >= old.tat {
                continue;
            }
            // The old program charged it later (its `tat` wins), or created
            // it after `start`: then it takes a free way. The new datapath
            // may claim that way meanwhile; this write then replaces its key
            // (one key's tracking lost, counted once in `inserted`).
            self.new_slots
                .set(
                    set + w,
                    RateSlot {
                        key: k.words(),
                        tat: old.tat,
                    },
                    0,
                )
                .map_err(LoaderError::map(MAP_RATE_SLOTS))?;
            if !held {
                *added
                    .entry(rate_zone_index(u32::from(k.zone), u32::from(k.kind)))
                    .or_default() += 1;
                done.rate_keys += 1;
            }
        }
        for i in 0..self.new_zone.len() {
            let old = self
                .old_zone
                .get(&i, 0)
                .map_err(LoaderError::map(MAP_RATE_ZONE))?;
            let new = self
                .new_zone
                .get(&i, 0)
                .map_err(LoaderError::map(MAP_RATE_ZONE))?;
            let merged = RateZone {
                ceiling_tat: new.ceiling_tat.max(old.ceiling_tat),
                new_tat: new.new_tat.max(old.new_tat),
                inserted: new.inserted + added.get(&i).copied().unwrap_or(0),
            };
            if merged != new {
                self.new_zone
                    .set(i, merged, 0)
                    .map_err(LoaderError::map(MAP_RATE_ZONE))?;
            }
        }
        if let Some(q) = self.quota.take() {
            done.quota_usage = Some(q.finish()?);
        }
        Ok(done)
    }
}

impl QuotaState {
    /// Copies every usage entry of the old `QUOTA_USAGE` into the new one
    /// and remembers them, for `finish`.
    fn start(
        old: &Path,
        new: &Path,
        from: u32,
        shape: MapShape,
    ) -> Result<QuotaState, LoaderError> {
        let shapes = [(MAP_QUOTA_USAGE, shape)];
        let (o, n): (HashMap<MapData, QuotaKey, QuotaUsage>, _) =
            pair(old, new, MAP_QUOTA_USAGE, from, &shapes)?;
        let all = entries(o.iter(), MAP_QUOTA_USAGE, shape.entries)?;
        let (keys, values): (Vec<QuotaKey>, Vec<QuotaUsage>) = all.iter().copied().unzip();
        put_all(n.map(), MAP_QUOTA_USAGE, &keys, &values)?;
        Ok(QuotaState {
            old: o,
            new: n,
            carried: all.into_iter().collect(),
            max: shape.entries,
        })
    }

    /// Adds the bytes the old programs counted since `start` (see
    /// [`merge_usage`]). Returns the entries written.
    fn finish(mut self) -> Result<usize, LoaderError> {
        let mut written = 0;
        for (k, old) in entries(self.old.iter(), MAP_QUOTA_USAGE, self.max)? {
            let new = match self.new.get(&k, 0) {
                Ok(n) => Some(n),
                Err(MapError::KeyNotFound) => None,
                Err(e) => return Err(LoaderError::map(MAP_QUOTA_USAGE)(e)),
            };
            let Some(merged) = merge_usage(self.carried.get(&k).copied(), old, new) else {
                continue;
            };
            // BPF_NOEXIST for a key the new map lacks: if the new datapath
            // inserted it meanwhile, its entry stands (the old program's last
            // bytes are lost, not counted twice).
            let flags = if new.is_some() { 0 } else { 1 };
            if self.new.insert(k, merged, flags).is_ok() {
                written += 1;
            }
        }
        Ok(written)
    }
}

/// The `QUOTA_USAGE` value to write in the new map after the old program
/// counted on: `carried` is what `start` copied for the key, `old` the old
/// entry now, `new` the new map's entry now. `None`: nothing to write.
///
/// What the old program counted since the copy is the growth of its entry
/// in the same period, or all of it in a later period it started. That is
/// added to the new entry of the same period, or replaces a new entry of an
/// earlier period of the same kind (the new program has not counted the
/// later one yet). Bytes of a period the new entry is already past, or of
/// another kind of period (the policy changed `period`), are not counted.
/// A write here can race one packet's count by the new program: that
/// packet's bytes are lost, as with the rate buckets.
pub(crate) fn merge_usage(
    carried: Option<QuotaUsage>,
    old: QuotaUsage,
    new: Option<QuotaUsage>,
) -> Option<QuotaUsage> {
    let late = match carried {
        Some(c) if c.period == old.period => QuotaUsage {
            period: old.period,
            bytes: old.bytes.saturating_sub(c.bytes),
        },
        _ => old,
    };
    if late.bytes == 0 {
        return None;
    }
    let kind = |p: u64| p >> QUOTA_KIND_SHIFT;
    match new {
        None => Some(late),
        Some(n) if n.period == late.period => Some(QuotaUsage {
            period: n.period,
            bytes: n.bytes.saturating_add(late.bytes),
        }),
        Some(n) if kind(n.period) == kind(late.period) && n.period < late.period => Some(late),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_carried_map_is_a_map_of_this_build_and_has_one_shape() {
        for (name, _) in LAYOUT5_STATE {
            // `RATE_KEYS` is read only: layout 8 re-places it in `RATE_SLOTS`.
            let this = if name == MAP_RATE_KEYS {
                MAP_RATE_SLOTS
            } else {
                name
            };
            assert!(filter_common::ALL_MAPS.contains(&this), "{name}");
            assert_eq!(
                LAYOUT5_STATE.iter().filter(|(n, _)| *n == name).count(),
                1,
                "{name}"
            );
        }
    }

    #[test]
    fn usage_is_carried_from_layout_7_on() {
        for from in 1..7 {
            assert!(quota_shape(from).is_none(), "layout {from}");
        }
        let s = quota_shape(7).expect("layout 7 has quotas");
        assert!(filter_common::ALL_MAPS.contains(&MAP_QUOTA_USAGE));
        assert_eq!(
            (s.key as usize, s.value as usize, s.entries),
            (
                std::mem::size_of::<QuotaKey>(),
                std::mem::size_of::<QuotaUsage>(),
                filter_common::QUOTA_TABLE_MAX
            )
        );
    }

    #[test]
    fn late_usage_is_added_once_in_its_period() {
        use filter_common::{quota_tag, QUOTA_DAY, QUOTA_MONTH};
        let u = |period, bytes| QuotaUsage { period, bytes };
        let (m5, m6) = (quota_tag(QUOTA_MONTH, 5), quota_tag(QUOTA_MONTH, 6));
        // Unchanged since the copy: nothing to write.
        assert_eq!(
            merge_usage(Some(u(m5, 100)), u(m5, 100), Some(u(m5, 130))),
            None
        );
        // The old program counted 50 more; the new one 30 since the switch.
        assert_eq!(
            merge_usage(Some(u(m5, 100)), u(m5, 150), Some(u(m5, 130))),
            Some(u(m5, 180))
        );
        // A source first seen by the old program after the copy.
        assert_eq!(merge_usage(None, u(m5, 40), None), Some(u(m5, 40)));
        assert_eq!(
            merge_usage(None, u(m5, 40), Some(u(m5, 7))),
            Some(u(m5, 47))
        );
        // The old program rolled into month 6 after the copy: all its month-6
        // bytes are late, and replace the new map's month-5 entry.
        assert_eq!(
            merge_usage(Some(u(m5, 100)), u(m6, 20), Some(u(m5, 100))),
            Some(u(m6, 20))
        );
        assert_eq!(
            merge_usage(Some(u(m5, 100)), u(m6, 20), Some(u(m6, 5))),
            Some(u(m6, 25))
        );
        // The new program is past the old one's period: its entry stands.
        assert_eq!(
            merge_usage(Some(u(m5, 100)), u(m5, 150), Some(u(m6, 1))),
            None
        );
        // Another kind of period (the policy changed it): not mixed.
        let d = quota_tag(QUOTA_DAY, 20_000);
        assert_eq!(merge_usage(Some(u(m5, 1)), u(m5, 9), Some(u(d, 1))), None);
        // The daemon pruned the copied entry from the new map: what is late.
        assert_eq!(
            merge_usage(Some(u(m5, 100)), u(m5, 150), None),
            Some(u(m5, 50))
        );
    }

    #[test]
    fn layouts_before_5_carry_no_bans_or_rate_state() {
        for from in 1..5 {
            assert!(shapes(from).is_none(), "layout {from}");
        }
        for from in 5..filter_common::LAYOUT_VERSION {
            assert_eq!(shapes(from).map(<[_]>::len), Some(9), "layout {from}");
        }
    }
}
