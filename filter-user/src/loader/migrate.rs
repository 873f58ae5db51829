//! Upgrades across map layouts without a filtering gap.
//!
//! A build that finds an older layout pinned does not reuse those maps: it
//! creates every map of its own object fresh, pinned in `<root>/next/`, and
//! carries over the state the policy cannot rebuild (the generation, the META
//! record, the counters, the run-time events settings, from layout 5 on the
//! bans and the rate limits' buckets, from layout 7 on the transfer quotas'
//! usage: [`state`]). The daemon then writes
//! the policy into the new slots and replaces the program in each pinned link
//! with one `bpf_link_update`: until that returns the old program filters
//! with the old maps, after it the new one with the new maps. Last,
//! [`Migration::finish`] adds the counts (and rate-limit charges) the old
//! program made meanwhile and swaps the directories (`maps/` → `retired/`,
//! `next/` → `maps/`, `retired/` removed).
//!
//! A daemon killed part-way leaves one of two states, both handled by
//! [`recover`] at the next start: `next/` beside `maps/` (the swap had not
//! begun: `next/` is dropped and the migration runs again from `maps/`), or
//! `retired/` (the swap had begun: it is completed).
use std::{fs, path::Path, thread, time::Duration};

mod state;

use aya::maps::{Array, Map, MapData, MapInfo, PerCpuArray};
use filter_common::{
    counter_index, counter_layout, iface_counter_index, layout1, layout2, Counter, CounterLayout,
    EventsConfig, EventsState, MapShape, MetaBlob, Reason, Verdict, LAYOUT_VERSION, MAP_ACTIVE,
    MAP_COUNTERS, MAP_EVENTS_CFG, MAP_EVENTS_STATE, MAP_LAYOUT, MAP_META, MAX_IFACE_SLOTS,
    NUM_RULES,
};

use super::{maps::Maps, meta::Meta, pins::PinRoot, LoaderError};

/// How long after the last link update the old program may still be running
/// on a packet that entered it before (XDP runs in microseconds).
const OLD_PROGRAM_QUIESCE: Duration = Duration::from_millis(20);

/// The layout pinned under `root`: `None` for an empty root, 1 for maps
/// without a `LAYOUT` map (v0.1.0), else what `LAYOUT[0]` says. A `LAYOUT`
/// map holding 0 was created by a start that died before writing it: only
/// builds with this map create it, so it is taken as this build's.
pub(crate) fn pinned_layout(root: &PinRoot) -> Result<Option<u32>, LoaderError> {
    if !root.has_maps() {
        return Ok(None);
    }
    let path = root.map(MAP_LAYOUT);
    if !path.exists() {
        return Ok(Some(1));
    }
    let data = MapData::from_pin(&path).map_err(LoaderError::map(MAP_LAYOUT))?;
    let map: Array<MapData, u32> = Map::from_map_data(data)
        .and_then(Array::try_from)
        .map_err(LoaderError::map(MAP_LAYOUT))?;
    let v = map.get(&0, 0).map_err(LoaderError::map(MAP_LAYOUT))?;
    Ok(Some(if v == 0 { LAYOUT_VERSION } else { v }))
}

/// Completes or drops what an interrupted migration left (see the module
/// docs). Returns what it did, for the log.
pub(crate) fn recover(root: &PinRoot) -> Result<Option<&'static str>, LoaderError> {
    let (maps, next, retired) = (root.maps_dir(), root.next_dir(), root.retired_dir());
    if retired.exists() {
        if !maps.exists() && next.exists() {
            rename(&next, &maps)?;
        }
        remove_dir(&retired)?;
        return Ok(Some(
            "completed an interrupted layout migration (old maps removed)",
        ));
    }
    if next.exists() {
        remove_dir(&next)?;
        return Ok(Some(
            "dropped the maps of an interrupted layout migration; migrating again",
        ));
    }
    Ok(None)
}

/// A migration in progress: the old layout's maps, still pinned in `maps/`,
/// and what was carried from them into the new ones.
pub(crate) struct Migration {
    pub(crate) from: u32,
    geometry: CounterLayout,
    old_counters: PerCpuArray<MapData, Counter>,
    /// Old counter sums as carried, by old index.
    carried: Vec<Counter>,
    /// Bans and rate-limit state (from layout 5 on).
    state: Option<state::State>,
}

/// What `carry_counters` did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Carried {
    pub cells: usize,
    pub packets: u64,
    pub dropped: usize,
}

impl Migration {
    /// Opens the layout-`from` maps in `maps/` and carries their state into
    /// the fresh `new` maps (which nothing runs on yet). Returns the
    /// migration and the generation carried.
    pub(crate) fn start(
        root: &PinRoot,
        from: u32,
        new: &mut Maps,
    ) -> Result<(Migration, Carried), LoaderError> {
        let geometry = counter_layout(from).ok_or_else(|| {
            LoaderError::Layout(format!(
                "pinned maps of layout {from}: this build migrates layouts 1 to {} only; \
                 upgrade through a release of layout {}",
                LAYOUT_VERSION - 1,
                LAYOUT_VERSION - 1
            ))
        })?;
        let old = |name| root.map(name);
        let old_active: Array<MapData, u32> = open(&old(MAP_ACTIVE), from, array(4, 1))?;
        let old_meta: Array<MapData, MetaBlob> = open(
            &old(MAP_META),
            from,
            array(layout1::META_VALUE_SIZE as u32, 1),
        )?;
        let old_counters: PerCpuArray<MapData, Counter> = open(
            &old(MAP_COUNTERS),
            from,
            array(std::mem::size_of::<Counter>() as u32, geometry.len()),
        )?;
        if from >= 2 {
            carry_events(root, from)?;
        }
        let state = match state::State::start(root, from)? {
            Some((state, c)) => {
                tracing::info!(
                    "carried from layout {from}: {} banned addresses and {} banned prefixes \
                     ({} prefilter words, {} ban drops counted), {} rate-limit buckets{}",
                    c.ban_hosts,
                    c.ban_nets,
                    c.ban_words,
                    c.ban_drops,
                    c.rate_keys,
                    usage(c.quota_usage)
                );
                Some(state)
            }
            None => None,
        };

        let generation = old_active
            .get(&0, 0)
            .map_err(LoaderError::map(MAP_ACTIVE))?;
        let blob = old_meta.get(&0, 0).map_err(LoaderError::map(MAP_META))?;
        // A record that does not parse is not carried: zone ids restart, which
        // only renumbers per-zone counters.
        match Meta::decode(&blob) {
            Ok(meta) => {
                new.set_meta_blob(blob)?;
                for iface in &meta.interfaces {
                    new.set_iface_slot(iface.ifindex, iface.slot)?;
                }
            }
            Err(e) => tracing::warn!("layout {from} META record not carried over: {e}"),
        }
        new.set_active(generation)?;
        let mut m = Migration {
            from,
            geometry,
            old_counters,
            carried: vec![Counter::default(); geometry.len() as usize],
            state,
        };
        let carried = m.carry_counters(new)?;
        Ok((m, carried))
    }

    /// Adds to `new` what the old counters gained since the last carry.
    fn carry_counters(&mut self, new: &mut Maps) -> Result<Carried, LoaderError> {
        let mut done = Carried::default();
        for index in 0..self.geometry.len() {
            let now = super::pins::read_counter(&self.old_counters, index)?;
            let before = self.carried[index as usize];
            let delta = Counter {
                packets: now.packets.saturating_sub(before.packets),
                bytes: now.bytes.saturating_sub(before.bytes),
            };
            if delta == Counter::default() {
                continue;
            }
            self.carried[index as usize] = now;
            match new_index(&self.geometry, index) {
                Some(to) => {
                    new.add_counter(to, delta)?;
                    done.cells += 1;
                    done.packets += delta.packets;
                }
                None => done.dropped += 1,
            }
        }
        Ok(done)
    }

    /// After every pinned link runs the new program: carries the counts the
    /// old program made since [`Migration::start`], then makes the new maps
    /// the pinned ones and removes the old.
    pub(crate) fn finish(mut self, root: &PinRoot, new: &mut Maps) -> Result<Carried, LoaderError> {
        thread::sleep(OLD_PROGRAM_QUIESCE);
        let late = self.carry_counters(new)?;
        // The links run the new program already: a late merge that fails
        // costs only what the old program did in these last moments, not
        // the swap.
        match self.state.take().map(state::State::finish) {
            Some(Ok(s)) if (s.ban_drops, s.rate_keys, s.quota_usage.unwrap_or(0)) != (0, 0, 0) => {
                tracing::info!(
                    "carried what the layout {} program did meanwhile: {} ban drops, {} \
                     rate-limit buckets it created{}",
                    self.from,
                    s.ban_drops,
                    s.rate_keys,
                    usage(s.quota_usage)
                )
            }
            Some(Err(e)) => tracing::warn!(
                "the layout {} program's last ban drops and rate-limit charges were not \
                 carried: {e}",
                self.from
            ),
            _ => {}
        }
        drop(self.old_counters);
        rename(&root.maps_dir(), &root.retired_dir())?;
        rename(&root.next_dir(), &root.maps_dir())?;
        remove_dir(&root.retired_dir())?;
        Ok(late)
    }

    /// A start that failed before any link ran the new program: the old
    /// filter was never touched; only the new maps' pins go.
    pub(crate) fn abandon(self, root: &PinRoot) -> Result<(), LoaderError> {
        remove_dir(&root.next_dir())
    }
}

/// ", N quota usage entries" for the log, from layout 7 on.
fn usage(entries: Option<usize>) -> String {
    entries.map_or(String::new(), |n| format!(", {n} quota usage entries"))
}

/// Where an old layout's counter lives in this layout, if it still exists.
pub(crate) fn new_index(old_layout: &CounterLayout, old: u32) -> Option<u32> {
    let (iface, rule, label, drop) = old_layout.decode(old);
    let reason = Reason::ALL.into_iter().find(|r| r.as_str() == label)?;
    if rule >= NUM_RULES || iface >= MAX_IFACE_SLOTS {
        return None;
    }
    let verdict = if drop { Verdict::Drop } else { Verdict::Pass };
    Some(iface_counter_index(
        iface,
        counter_index(rule, reason, verdict),
    ))
}

/// Copies the run-time events settings (`portcullis sampling`,
/// `log-packets`) and the per-CPU emitted/suppressed/lost totals from the
/// old maps into the new ones in `next/`, so neither resets on upgrade.
fn carry_events(root: &PinRoot, from: u32) -> Result<(), LoaderError> {
    let (old, new) = (root.maps_dir(), root.next_dir());
    let cfg = array(layout2::EVENTS_CFG_VALUE_SIZE as u32, 1);
    let old_cfg: Array<MapData, EventsConfig> = open(&old.join(MAP_EVENTS_CFG), from, cfg)?;
    let mut new_cfg: Array<MapData, EventsConfig> =
        open(&new.join(MAP_EVENTS_CFG), LAYOUT_VERSION, cfg)?;
    let cfg = old_cfg
        .get(&0, 0)
        .map_err(LoaderError::map(MAP_EVENTS_CFG))?;
    new_cfg
        .set(0, cfg, 0)
        .map_err(LoaderError::map(MAP_EVENTS_CFG))?;

    let st = array(layout2::EVENTS_STATE_VALUE_SIZE as u32, 1);
    let old_state: PerCpuArray<MapData, EventsState> = open(&old.join(MAP_EVENTS_STATE), from, st)?;
    let mut new_state: PerCpuArray<MapData, EventsState> =
        open(&new.join(MAP_EVENTS_STATE), LAYOUT_VERSION, st)?;
    let cells = old_state
        .get(&0, 0)
        .map_err(LoaderError::map(MAP_EVENTS_STATE))?;
    new_state
        .set(0, cells, 0)
        .map_err(LoaderError::map(MAP_EVENTS_STATE))
}

/// The shape of an array map (u32 keys).
const fn array(value: u32, entries: u32) -> MapShape {
    MapShape::new(4, value, entries)
}

/// Opens a pinned map after checking its shape (key size, value size,
/// entries) is the one expected of layout `layout`.
fn open<T>(path: &Path, layout: u32, want: MapShape) -> Result<T, LoaderError>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    let name = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    if !path.exists() {
        return Err(LoaderError::Layout(format!(
            "{} is missing: the pins do not look like layout {layout}; run `portcullis \
             detach` to remove the old filter",
            path.display()
        )));
    }
    let info = MapInfo::from_pin(path).map_err(LoaderError::map_named(name))?;
    let found = MapShape::new(info.key_size(), info.value_size(), info.max_entries());
    if found != want {
        return Err(LoaderError::Layout(format!(
            "{} does not look like layout {layout} (key size {}, value size {}, {} entries; \
             expected {}, {}, {}); run `portcullis detach` to remove the old filter",
            path.display(),
            found.key,
            found.value,
            found.entries,
            want.key,
            want.value,
            want.entries
        )));
    }
    let data = MapData::from_pin(path).map_err(LoaderError::map_named(name))?;
    Map::from_map_data(data)
        .and_then(T::try_from)
        .map_err(LoaderError::map_named(name))
}

fn rename(from: &Path, to: &Path) -> Result<(), LoaderError> {
    fs::rename(from, to).map_err(|source| LoaderError::Io {
        path: from.to_path_buf(),
        source,
    })
}

/// Removes a directory of pins (bpffs has no recursive unlink of its own).
fn remove_dir(dir: &Path) -> Result<(), LoaderError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| LoaderError::Io { path, source }
    };
    for e in fs::read_dir(dir).map_err(io(dir))?.flatten() {
        fs::remove_file(e.path()).map_err(io(&e.path()))?;
    }
    fs::remove_dir(dir).map_err(io(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_earlier_counter_has_a_place_in_this_layout() {
        for version in 1..LAYOUT_VERSION {
            let geometry = counter_layout(version).expect("migratable");
            for old in 0..geometry.len() {
                let (iface, rule, label, drop) = geometry.decode(old);
                let new = new_index(&geometry, old).expect("carried");
                let (r, reason, verdict) =
                    filter_common::decode_counter_index(new % filter_common::NUM_COUNTERS)
                        .expect("an earlier reason has a number here");
                assert_eq!(
                    (
                        new / filter_common::NUM_COUNTERS,
                        r,
                        reason.as_str(),
                        verdict == Verdict::Drop
                    ),
                    (iface, rule, label, drop),
                    "layout {version} counter {old}"
                );
            }
        }
    }
}
