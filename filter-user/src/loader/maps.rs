//! Typed handles on the program's maps, and the slot writer/reader.
use std::{collections::HashSet, hash::Hash};

use aya::{
    maps::{lpm_trie::Key, Array, IterableMap, LpmTrie, MapData, MapError, PerCpuArray},
    sys::SyscallError,
    Ebpf, Pod,
};
use filter_common::{
    bl4_bits_region, lane4_space, lane6_space, port_index, set_tag, zone_index, Bl4Hosts, Bl4Word,
    Bl6Geometry, Config, Counter, MetaBlob, PortEntry, Sched, Tagged4, Tagged6, ZoneInfo,
    ZoneQuota, ZoneRates, ALLOW4_LANES, BL4_WORDS_PER_SLOT, BL6_GEOMETRY, LANE4_SPACES,
    LANE6_GEOMETRY, MAP_ACTIVE, MAP_ALLOW4, MAP_ALLOW6, MAP_BL4_BASE, MAP_BL4_BITS, MAP_BL4_WORDS,
    MAP_BL6_INFO, MAP_BL6_TABLE, MAP_BL6_WORDS, MAP_CONFIG, MAP_COUNTERS, MAP_IFACES,
    MAP_LANE4_BASE, MAP_LANE4_BITS, MAP_LANE4_WORDS, MAP_LANE6_INFO, MAP_LANE6_TABLE,
    MAP_LANE6_WORDS, MAP_LAYOUT, MAP_META, MAP_PORTS, MAP_QUOTAS, MAP_RATES, MAP_SCHED, MAP_ZONES,
    NUM_PORT_PROTOS, SET_TAG_BITS, ZONE_SLOTS,
};
use ipnet::{Ipv4Net, Ipv6Net};

use super::{
    batch::{self, BATCH},
    bl4::{self, Layout},
    bl6::Bl6Arrays,
    compact::{keyed_diff, sorted_diff, Compact, SharedEntries},
    fault::Faults,
    image::{BitmapImage, SlotImage, NO_QUOTA},
    meta::Meta,
    pins::{read_counter, read_counters},
    LoaderError,
};

pub struct Maps {
    active: Array<MapData, u32>,
    layout: Array<MapData, u32>,
    config: Array<MapData, Config>,
    counters: PerCpuArray<MapData, Counter>,
    ports: Array<MapData, PortEntry>,
    zones: Array<MapData, ZoneInfo>,
    sched: Array<MapData, Sched>,
    rates: Array<MapData, ZoneRates>,
    /// A slot's quota settings (not the usage: `QUOTA_USAGE` is no slot's
    /// and no apply touches it).
    quotas: Array<MapData, ZoneQuota>,
    allow4: LpmTrie<MapData, Tagged4, u8>,
    allow6: LpmTrie<MapData, Tagged6, u8>,
    bl4_words: Array<MapData, Bl4Word>,
    bl4_base: Array<MapData, u32>,
    bl4_bits: Array<MapData, Bl4Hosts>,
    /// Entries of `BL4_BITS` each slot owns.
    bl4_region: u32,
    /// Where each slot's host bitmaps lie; `None` = unknown (the next write
    /// of that slot lays them out afresh).
    bl4_layout: [Option<Layout>; 2],
    /// The allowlist lanes: the same three maps, a space per (slot, lane).
    lane4: Bitmap4,
    /// Per slot and lane, as `bl4_layout`.
    lane4_layout: [[Option<Layout>; ALLOW4_LANES as usize]; 2],
    /// The IPv6 blocklist: a space per slot.
    bl6: Bl6Arrays,
    /// The IPv6 allowlist lanes: a space per (slot, lane).
    lane6: Bl6Arrays,
    ifaces: Array<MapData, u32>,
    meta: Array<MapData, MetaBlob>,
    pub(crate) faults: Faults,
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, LoaderError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(LoaderError::Missing(name))?;
    T::try_from(map).map_err(LoaderError::map(name))
}

fn key4(set: u32, slot: u32, net: &Ipv4Net) -> Key<Tagged4> {
    Key::new(
        SET_TAG_BITS + net.prefix_len() as u32,
        Tagged4 {
            tag: set_tag(slot, set),
            addr: net.network().octets(),
        },
    )
}

fn key6(set: u32, slot: u32, net: &Ipv6Net) -> Key<Tagged6> {
    Key::new(
        SET_TAG_BITS + net.prefix_len() as u32,
        Tagged6 {
            tag: set_tag(slot, set),
            addr: net.network().octets(),
        },
    )
}

/// Applies the difference between two sets to an LPM trie.
fn sync_lpm<T: Eq + Hash, K: Pod>(
    map: &mut LpmTrie<MapData, K, u8>,
    name: &'static str,
    faults: &Faults,
    old: &HashSet<T>,
    new: &HashSet<T>,
    key: impl Fn(&T) -> Key<K>,
) -> Result<(), LoaderError> {
    for gone in old.difference(new) {
        faults.step(name)?;
        map.remove(&key(gone)).map_err(LoaderError::map(name))?;
    }
    for added in new.difference(old) {
        faults.step(name)?;
        map.insert(&key(added), 1, 0)
            .map_err(LoaderError::map(name))?;
    }
    Ok(())
}

/// Applies the difference between two sparse images of an array (absent = zero).
fn sync_array<V: Pod + Default + PartialEq>(
    map: &mut Array<MapData, V>,
    name: &'static str,
    faults: &Faults,
    old: &std::collections::HashMap<u32, V>,
    new: &std::collections::HashMap<u32, V>,
    index: impl Fn(u32) -> u32,
) -> Result<(), LoaderError> {
    sync_array_to(map, name, faults, old, new, index, V::default())
}

/// [`sync_array`] for values whose absence is `empty` (not their default).
fn sync_array_to<V: Pod + PartialEq>(
    map: &mut Array<MapData, V>,
    name: &'static str,
    faults: &Faults,
    old: &std::collections::HashMap<u32, V>,
    new: &std::collections::HashMap<u32, V>,
    index: impl Fn(u32) -> u32,
    empty: V,
) -> Result<(), LoaderError> {
    for k in old.keys().filter(|k| !new.contains_key(k)) {
        faults.step(name)?;
        map.set(index(*k), empty, 0)
            .map_err(LoaderError::map(name))?;
    }
    for (k, v) in new {
        if old.get(k) != Some(v) {
            faults.step(name)?;
            map.set(index(*k), *v, 0).map_err(LoaderError::map(name))?;
        }
    }
    Ok(())
}

fn batch_error(name: &'static str, call: &'static str, io_error: std::io::Error) -> LoaderError {
    LoaderError::Map {
        map: name,
        source: MapError::SyscallError(SyscallError { call, io_error }),
    }
}

/// Writes `keys[i] → values[i]`, `BATCH` entries per syscall; one per entry
/// where the map has no batch support (map type or kernel). Needs only a
/// shared reference, so disjoint ranges can be written from several threads.
pub(super) fn put_all<K: Pod, V: Pod>(
    map: &MapData,
    name: &'static str,
    faults: &Faults,
    keys: &[K],
    values: &[V],
) -> Result<(), LoaderError> {
    for (ks, vs) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        faults.step_n(name, ks.len())?;
        let done = batch::update(map, ks, vs);
        if done.error.is_none() {
            continue;
        }
        if !done.unsupported() {
            let e = done.into_error("bpf_map_update_batch");
            return Err(batch_error(name, e.call, e.io_error));
        }
        for (k, v) in ks.iter().zip(vs).skip(done.processed) {
            batch::update_one(map, k, v)
                .map_err(|e| batch_error(name, "bpf_map_update_elem", e))?;
        }
    }
    Ok(())
}

/// Deletes `keys`, `BATCH` per syscall (one per entry without batch support).
fn del_all<K: Pod>(
    map: &MapData,
    name: &'static str,
    faults: &Faults,
    keys: &[K],
) -> Result<(), LoaderError> {
    for ks in keys.chunks(BATCH) {
        faults.step_n(name, ks.len())?;
        let done = batch::delete(map, ks);
        if done.error.is_none() {
            continue;
        }
        if !done.unsupported() {
            let e = done.into_error("bpf_map_delete_batch");
            return Err(batch_error(name, e.call, e.io_error));
        }
        for k in ks.iter().skip(done.processed) {
            batch::delete_one(map, k).map_err(|e| batch_error(name, "bpf_map_delete_elem", e))?;
        }
    }
    Ok(())
}

/// Brings an LPM trie from the sorted set `old` to the sorted set `new`.
fn sync_lpm_sorted<T: Ord, K: Pod>(
    map: &LpmTrie<MapData, K, u8>,
    name: &'static str,
    faults: &Faults,
    old: &[T],
    new: &[T],
    key: impl Fn(&T) -> Key<K>,
) -> Result<(), LoaderError> {
    let (gone, added) = sorted_diff(old, new);
    let gone: Vec<Key<K>> = gone.into_iter().map(&key).collect();
    del_all(map.map(), name, faults, &gone)?;
    drop(gone);
    let added: Vec<Key<K>> = added.into_iter().map(&key).collect();
    put_all(map.map(), name, faults, &added, &vec![1u8; added.len()])
}

/// The IPv4 blocklist's maps, or the lanes', for `bl4`'s batches.
struct Bl4Maps<'a> {
    words: &'a MapData,
    base: &'a MapData,
    bits: &'a MapData,
    names: [&'static str; 3],
    faults: &'a Faults,
}

impl Bl4Maps<'_> {
    /// Bitmaps first, then bases, then words.
    fn flush(&self, w: &bl4::Writes) -> Result<(), LoaderError> {
        let [words, base, bits] = self.names;
        put_all(self.bits, bits, self.faults, &w.bits, &w.bits_v)?;
        put_all(self.base, base, self.faults, &w.base, &w.base_v)?;
        put_all(self.words, words, self.faults, &w.words, &w.words_v)
    }
}

/// The three maps of the allowlist lanes.
struct Bitmap4 {
    words: Array<MapData, Bl4Word>,
    base: Array<MapData, u32>,
    bits: Array<MapData, Bl4Hosts>,
    /// Entries of `LANE4_BITS` each space owns.
    region: u32,
}

const LANE4_NAMES: [&str; 3] = [MAP_LANE4_WORDS, MAP_LANE4_BASE, MAP_LANE4_BITS];
const BL4_NAMES: [&str; 3] = [MAP_BL4_WORDS, MAP_BL4_BASE, MAP_BL4_BITS];
const BL6_NAMES: [&str; 3] = [MAP_BL6_WORDS, MAP_BL6_INFO, MAP_BL6_TABLE];
const LANE6_NAMES: [&str; 3] = [MAP_LANE6_WORDS, MAP_LANE6_INFO, MAP_LANE6_TABLE];

/// The three maps (words, info, table) of a set of IPv6 spaces.
fn take_bl6(
    ebpf: &mut Ebpf,
    names: [&'static str; 3],
    g: Bl6Geometry,
) -> Result<Bl6Arrays, LoaderError> {
    let [words, info, table] = names;
    Ok(Bl6Arrays {
        words: take(ebpf, words)?,
        info: take(ebpf, info)?,
        table: take(ebpf, table)?,
        names,
        g,
    })
}

impl Bitmap4 {
    fn maps<'a>(&'a self, faults: &'a Faults) -> Bl4Maps<'a> {
        Bl4Maps {
            words: self.words.map(),
            base: self.base.map(),
            bits: self.bits.map(),
            names: LANE4_NAMES,
            faults,
        }
    }
}

impl Maps {
    pub fn take(ebpf: &mut Ebpf) -> Result<Maps, LoaderError> {
        let bl4_bits: Array<MapData, Bl4Hosts> = take(ebpf, MAP_BL4_BITS)?;
        let bits_max = bl4_bits
            .map()
            .info()
            .map_err(LoaderError::map(MAP_BL4_BITS))?
            .max_entries();
        Ok(Maps {
            active: take(ebpf, MAP_ACTIVE)?,
            layout: take(ebpf, MAP_LAYOUT)?,
            config: take(ebpf, MAP_CONFIG)?,
            counters: take(ebpf, MAP_COUNTERS)?,
            ports: take(ebpf, MAP_PORTS)?,
            zones: take(ebpf, MAP_ZONES)?,
            sched: take(ebpf, MAP_SCHED)?,
            rates: take(ebpf, MAP_RATES)?,
            quotas: take(ebpf, MAP_QUOTAS)?,
            allow4: take(ebpf, MAP_ALLOW4)?,
            allow6: take(ebpf, MAP_ALLOW6)?,
            bl4_words: take(ebpf, MAP_BL4_WORDS)?,
            bl4_base: take(ebpf, MAP_BL4_BASE)?,
            bl4_bits,
            bl4_region: bl4_bits_region(bits_max),
            bl4_layout: [None, None],
            lane4: {
                let bits: Array<MapData, Bl4Hosts> = take(ebpf, MAP_LANE4_BITS)?;
                let max = bits
                    .map()
                    .info()
                    .map_err(LoaderError::map(MAP_LANE4_BITS))?
                    .max_entries();
                Bitmap4 {
                    words: take(ebpf, MAP_LANE4_WORDS)?,
                    base: take(ebpf, MAP_LANE4_BASE)?,
                    bits,
                    region: max / LANE4_SPACES,
                }
            },
            lane4_layout: Default::default(),
            bl6: take_bl6(ebpf, BL6_NAMES, BL6_GEOMETRY)?,
            lane6: take_bl6(ebpf, LANE6_NAMES, LANE6_GEOMETRY)?,
            ifaces: take(ebpf, MAP_IFACES)?,
            meta: take(ebpf, MAP_META)?,
            faults: Faults::default(),
        })
    }

    /// Capacities of the maps both slots share, as the kernel created them.
    pub(crate) fn shared_capacity(&self) -> Result<SharedEntries, LoaderError> {
        let max = |m: &MapData, name: &'static str| -> Result<usize, LoaderError> {
            Ok(m.info().map_err(LoaderError::map(name))?.max_entries() as usize)
        };
        Ok(SharedEntries {
            allow4: max(self.allow4.map(), MAP_ALLOW4)?,
            allow6: max(self.allow6.map(), MAP_ALLOW6)?,
            bl4_hosts: self.bl4_region as usize,
        })
    }

    /// Frames arriving on `ifindex` count in counter slot `slot`. Interfaces
    /// with ifindex >= IFACES_LEN keep counting in slot 0.
    pub fn set_iface_slot(&mut self, ifindex: u32, slot: u32) -> Result<(), LoaderError> {
        if ifindex >= filter_common::IFACES_LEN {
            tracing::warn!(
                "ifindex {ifindex} is beyond the counter table; its frames count as interface \"other\""
            );
            return Ok(());
        }
        self.ifaces
            .set(ifindex, slot, 0)
            .map_err(LoaderError::map(MAP_IFACES))
    }

    pub fn meta(&self) -> Result<Meta, LoaderError> {
        Meta::decode(&self.meta_blob()?)
    }

    pub fn meta_blob(&self) -> Result<MetaBlob, LoaderError> {
        self.meta.get(&0, 0).map_err(LoaderError::map(MAP_META))
    }

    pub fn set_meta(&mut self, meta: &Meta) -> Result<(), LoaderError> {
        self.set_meta_blob(meta.encode()?)
    }

    /// One 64 KiB array write: the kernel replaces the record whole.
    pub fn set_meta_blob(&mut self, blob: MetaBlob) -> Result<(), LoaderError> {
        self.faults.step(MAP_META)?;
        self.meta
            .set(0, blob, 0)
            .map_err(LoaderError::map(MAP_META))
    }

    pub fn counters(&self, iface_slot: u32) -> Result<Vec<Counter>, LoaderError> {
        read_counters(&self.counters, iface_slot)
    }

    pub fn active_generation(&self) -> Result<u32, LoaderError> {
        self.active.get(&0, 0).map_err(LoaderError::map(MAP_ACTIVE))
    }

    pub fn set_active(&mut self, generation: u32) -> Result<(), LoaderError> {
        self.faults.step(MAP_ACTIVE)?;
        self.active
            .set(0, generation, 0)
            .map_err(LoaderError::map(MAP_ACTIVE))
    }

    pub fn counter(&self, index: u32) -> Result<Counter, LoaderError> {
        read_counter(&self.counters, index)
    }

    /// Records which layout created these maps (see `migrate`).
    pub fn set_layout(&mut self, version: u32) -> Result<(), LoaderError> {
        self.layout
            .set(0, version, 0)
            .map_err(LoaderError::map(MAP_LAYOUT))
    }

    /// Adds `by` to counter `index` (on the first CPU's cell: readers sum
    /// over CPUs). A per-CPU write replaces every CPU's cell, so an increment
    /// the datapath makes between this read and write is lost; migrations
    /// call this on maps no program runs on, and once more right after the
    /// switch for the few cells the old program moved meanwhile.
    pub fn add_counter(&mut self, index: u32, by: Counter) -> Result<(), LoaderError> {
        let mut cells: Vec<Counter> = self
            .counters
            .get(&index, 0)
            .map_err(LoaderError::map(MAP_COUNTERS))?
            .iter()
            .copied()
            .collect();
        if let Some(first) = cells.first_mut() {
            first.packets += by.packets;
            first.bytes += by.bytes;
        }
        let values = aya::maps::PerCpuValues::try_from(cells).map_err(|e| LoaderError::Map {
            map: MAP_COUNTERS,
            source: MapError::IoError(e),
        })?;
        self.counters
            .set(index, values, 0)
            .map_err(LoaderError::map(MAP_COUNTERS))
    }

    /// Turns `slot` from `old` into `new`, touching only differing entries. The
    /// config is written last: a slot is marked valid only once complete.
    pub fn write_slot(
        &mut self,
        slot: u32,
        old: &SlotImage,
        new: &SlotImage,
    ) -> Result<(), LoaderError> {
        let faults = self.faults.clone();
        let f = &faults;
        if old.config.has(Config::VALID) {
            self.set_config(slot, Config::default())?;
        }
        sync_array(&mut self.ports, MAP_PORTS, f, &old.ports, &new.ports, |k| {
            port_index(slot, k >> 16, k as u16)
        })?;
        let old_zones = old.zones.iter().map(|(k, v)| (*k, *v)).collect();
        let new_zones = new.zones.iter().map(|(k, v)| (*k, *v)).collect();
        sync_array(&mut self.zones, MAP_ZONES, f, &old_zones, &new_zones, |z| {
            zone_index(slot, z)
        })?;
        let old_sched = old.sched.iter().map(|(k, v)| (*k, *v)).collect();
        let new_sched = new.sched.iter().map(|(k, v)| (*k, *v)).collect();
        sync_array(&mut self.sched, MAP_SCHED, f, &old_sched, &new_sched, |z| {
            zone_index(slot, z)
        })?;
        let old_rates = old.rates.iter().map(|(k, v)| (*k, *v)).collect();
        let new_rates = new.rates.iter().map(|(k, v)| (*k, *v)).collect();
        sync_array(&mut self.rates, MAP_RATES, f, &old_rates, &new_rates, |z| {
            zone_index(slot, z)
        })?;
        let old_quotas = old.quotas.iter().map(|(k, v)| (*k, *v)).collect();
        let new_quotas = new.quotas.iter().map(|(k, v)| (*k, *v)).collect();
        sync_array_to(
            &mut self.quotas,
            MAP_QUOTAS,
            f,
            &old_quotas,
            &new_quotas,
            |z| zone_index(slot, z),
            NO_QUOTA,
        )?;
        sync_lpm(
            &mut self.allow4,
            MAP_ALLOW4,
            f,
            &old.allow4,
            &new.allow4,
            |(s, n)| key4(*s, slot, n),
        )?;
        sync_lpm(
            &mut self.allow6,
            MAP_ALLOW6,
            f,
            &old.allow6,
            &new.allow6,
            |(s, n)| key6(*s, slot, n),
        )?;
        let bl4 = Bl4Maps {
            words: self.bl4_words.map(),
            base: self.bl4_base.map(),
            bits: self.bl4_bits.map(),
            names: BL4_NAMES,
            faults: f,
        };
        let layout = &mut self.bl4_layout[slot as usize];
        bl4::write_images(layout, self.bl4_region, slot, old, new, |w| bl4.flush(w))?;
        let lanes = self.lane4.maps(f);
        for (l, layout) in self.lane4_layout[slot as usize].iter_mut().enumerate() {
            let space = lane4_space(slot, l as u32 + 1);
            let (old, new) = (&old.lane4[l], &new.lane4[l]);
            bl4::write_images(layout, self.lane4.region, space, old, new, |w| {
                lanes.flush(w)
            })?;
        }
        let lanes6 = self.lane6.maps(f);
        for (l, (old, new)) in old.lane6.iter().zip(&new.lane6).enumerate() {
            lanes6.write_image(lane6_space(slot, l as u32 + 1), old, new)?;
        }
        self.bl6.maps(f).write_image(slot, &old.bl6, &new.bl6)?;
        self.set_config(slot, new.config)
    }

    /// Writes one slot's config: the first write of a slot rewrite marks it
    /// invalid, the last one valid.
    fn set_config(&mut self, slot: u32, config: Config) -> Result<(), LoaderError> {
        self.faults.step(MAP_CONFIG)?;
        self.config
            .set(slot, config, 0)
            .map_err(LoaderError::map(MAP_CONFIG))
    }

    /// Turns `slot` from `old` into `new` (both compact), touching only what
    /// differs, in batches. The config is written last.
    pub(crate) fn write_compact(
        &mut self,
        slot: u32,
        old: &Compact,
        new: &Compact,
    ) -> Result<(), LoaderError> {
        let faults = self.faults.clone();
        let f = &faults;
        if old.config.has(Config::VALID) {
            self.set_config(slot, Config::default())?;
        }
        let (gone, set) = keyed_diff(&old.ports, &new.ports);
        let (keys, values): (Vec<u32>, Vec<PortEntry>) = gone
            .into_iter()
            .map(|k| (k, PortEntry::default()))
            .chain(set)
            .map(|(k, v)| (port_index(slot, k >> 16, k as u16), v))
            .unzip();
        put_all(self.ports.map(), MAP_PORTS, f, &keys, &values)?;
        let (gone, set) = keyed_diff(&old.zones, &new.zones);
        let (keys, values): (Vec<u32>, Vec<ZoneInfo>) = gone
            .into_iter()
            .map(|k| (k, ZoneInfo::default()))
            .chain(set)
            .map(|(k, v)| (zone_index(slot, k), v))
            .unzip();
        put_all(self.zones.map(), MAP_ZONES, f, &keys, &values)?;
        let (gone, set) = keyed_diff(&old.sched, &new.sched);
        let (keys, values): (Vec<u32>, Vec<Sched>) = gone
            .into_iter()
            .map(|k| (k, Sched::default()))
            .chain(set)
            .map(|(k, v)| (zone_index(slot, k), v))
            .unzip();
        put_all(self.sched.map(), MAP_SCHED, f, &keys, &values)?;
        let (gone, set) = keyed_diff(&old.rates, &new.rates);
        let (keys, values): (Vec<u32>, Vec<ZoneRates>) = gone
            .into_iter()
            .map(|k| (k, ZoneRates::default()))
            .chain(set)
            .map(|(k, v)| (zone_index(slot, k), v))
            .unzip();
        put_all(self.rates.map(), MAP_RATES, f, &keys, &values)?;
        let (gone, set) = keyed_diff(&old.quotas, &new.quotas);
        let (keys, values): (Vec<u32>, Vec<ZoneQuota>) = gone
            .into_iter()
            .map(|k| (k, NO_QUOTA))
            .chain(set)
            .map(|(k, v)| (zone_index(slot, k), v))
            .unzip();
        put_all(self.quotas.map(), MAP_QUOTAS, f, &keys, &values)?;
        sync_lpm_sorted(
            &self.allow4,
            MAP_ALLOW4,
            f,
            &old.allow4,
            &new.allow4,
            |(s, n)| key4(*s, slot, n),
        )?;
        sync_lpm_sorted(
            &self.allow6,
            MAP_ALLOW6,
            f,
            &old.allow6,
            &new.allow6,
            |(s, n)| key6(*s, slot, n),
        )?;
        // The IPv4 bitmap here, IPv6 beside it on another thread.
        let bl4 = Bl4Maps {
            words: self.bl4_words.map(),
            base: self.bl4_base.map(),
            bits: self.bl4_bits.map(),
            names: BL4_NAMES,
            faults: f,
        };
        // The lanes first: each is a diff of its zone's list (or, after a
        // lane changed hands, of two zones' lists).
        let lanes = self.lane4.maps(f);
        for (l, layout) in self.lane4_layout[slot as usize].iter_mut().enumerate() {
            let lane = l as u32 + 1;
            let what = format!("allowlist lane {lane}, slot {slot}");
            let (old, new) = (&old.lane4[l], &new.lane4[l]);
            let space = lane4_space(slot, lane);
            bl4::write_lists(layout, self.lane4.region, space, &what, old, new, |w| {
                lanes.flush(w)
            })?;
        }
        let lanes6 = self.lane6.maps(f);
        for (l, (old, new)) in old.lane6.iter().zip(&new.lane6).enumerate() {
            lanes6.write_diff(lane6_space(slot, l as u32 + 1), old.side(), new.side())?;
        }
        let bl6 = self.bl6.maps(f);
        let layout = &mut self.bl4_layout[slot as usize];
        let region = self.bl4_region;
        std::thread::scope(|s| -> Result<(), LoaderError> {
            let other = s.spawn(|| -> Result<(), LoaderError> {
                bl6.write_diff(slot, old.bl6.side(), new.bl6.side())
            });
            let what = format!("IPv4 blocklist, slot {slot}");
            let mine = bl4::write_lists(layout, region, slot, &what, &old.bl4, &new.bl4, |w| {
                bl4.flush(w)
            });
            other
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))?;
            mine.map(|_| ())
        })?;
        self.set_config(slot, new.config)
    }

    /// Reads everything `slot` holds back from the kernel.
    pub fn read_slot(&self, slot: u32) -> Result<SlotImage, LoaderError> {
        let mut img = SlotImage {
            config: self
                .config
                .get(&slot, 0)
                .map_err(LoaderError::map(MAP_CONFIG))?,
            ..SlotImage::default()
        };
        let ports = read_range(
            &self.ports,
            MAP_PORTS,
            port_index(slot, 0, 0),
            NUM_PORT_PROTOS * 65536,
        )?;
        for (k, e) in (0u32..).zip(ports) {
            if e != PortEntry::default() {
                img.ports.insert(k, e);
            }
        }
        for z in 0..ZONE_SLOTS {
            let info = self
                .zones
                .get(&zone_index(slot, z), 0)
                .map_err(LoaderError::map(MAP_ZONES))?;
            if info != ZoneInfo::default() {
                img.zones.insert(z, info);
            }
            let sched = self
                .sched
                .get(&zone_index(slot, z), 0)
                .map_err(LoaderError::map(MAP_SCHED))?;
            if sched != Sched::default() {
                img.sched.insert(z, sched);
            }
            let rates = self
                .rates
                .get(&zone_index(slot, z), 0)
                .map_err(LoaderError::map(MAP_RATES))?;
            if rates != ZoneRates::default() {
                img.rates.insert(z, rates);
            }
            let quota = self
                .quotas
                .get(&zone_index(slot, z), 0)
                .map_err(LoaderError::map(MAP_QUOTAS))?;
            if quota != NO_QUOTA {
                img.quotas.insert(z, quota);
            }
        }
        let bl4 = read_bitmap(
            (&self.bl4_words, &self.bl4_base),
            &self.bl4_bits,
            BL4_NAMES,
            slot,
            self.bl4_region,
        )?;
        (img.bl4_words, img.bl4_hosts) = (bl4.words, bl4.hosts);
        for (l, lane) in img.lane4.iter_mut().enumerate() {
            *lane = read_bitmap(
                (&self.lane4.words, &self.lane4.base),
                &self.lane4.bits,
                LANE4_NAMES,
                lane4_space(slot, l as u32 + 1),
                self.lane4.region,
            )?;
        }
        for key in self.allow4.keys() {
            let key = key.map_err(LoaderError::map(MAP_ALLOW4))?;
            if let Some((set, net)) = untag4(&key, slot) {
                img.allow4.insert((set, net));
            }
        }
        for key in self.allow6.keys() {
            let key = key.map_err(LoaderError::map(MAP_ALLOW6))?;
            if let Some((set, net)) = untag6(&key, slot) {
                img.allow6.insert((set, net));
            }
        }
        img.bl6 = self.bl6.read(slot)?;
        for (l, lane) in img.lane6.iter_mut().enumerate() {
            *lane = self.lane6.read(lane6_space(slot, l as u32 + 1))?;
        }
        Ok(img)
    }
}

/// Entries `start..start + n` of an array map in batches; `None` when the
/// map or kernel cannot read in batches.
fn read_batched<V: Pod + Default>(
    map: &Array<MapData, V>,
    name: &'static str,
    start: u32,
    n: u32,
) -> Result<Option<Vec<V>>, LoaderError> {
    let mut out = vec![V::default(); n as usize];
    match batch::lookup_array(map.map(), start, &mut out) {
        Ok(true) => Ok(Some(out)),
        Ok(false) => Ok(None),
        Err(e) => Err(batch_error(name, "bpf_map_lookup_batch", e)),
    }
}

/// Entries `start..start + n` of an array map: in batches, else one by one.
pub(crate) fn read_range<V: Pod + Default>(
    map: &Array<MapData, V>,
    name: &'static str,
    start: u32,
    n: u32,
) -> Result<Vec<V>, LoaderError> {
    if let Some(v) = read_batched(map, name, start, n)? {
        return Ok(v);
    }
    (start..start + n)
        .map(|i| map.get(&i, 0).map_err(LoaderError::map(name)))
        .collect()
}

/// The IPv4 set of space `space` (a slot's blocklist, or a lane) as the
/// datapath sees it: each word, and for each partly covered /24 the bitmap
/// its base and rank point to. Pointers outside the space's region (a
/// half-written slot) are skipped.
fn read_bitmap(
    (words_map, base_map): (&Array<MapData, Bl4Word>, &Array<MapData, u32>),
    bits: &Array<MapData, Bl4Hosts>,
    [words_name, base_name, bits_name]: [&'static str; 3],
    space: u32,
    region_len: u32,
) -> Result<BitmapImage, LoaderError> {
    let mut img = BitmapImage::default();
    let region = space * region_len..(space + 1) * region_len;
    let first = space * BL4_WORDS_PER_SLOT;
    let words = read_range(words_map, words_name, first, BL4_WORDS_PER_SLOT)?;
    let bases = read_range(base_map, base_name, first, BL4_WORDS_PER_SLOT)?;
    // (bitmap index, /24) of every partly covered /24, by index.
    let mut wanted = Vec::new();
    for (w, (word, base)) in (0u32..).zip(words.iter().zip(&bases)) {
        if *word == Bl4Word::default() {
            continue;
        }
        img.words.insert(w, *word);
        for b in 0..64u32 {
            if word.part & (1 << b) == 0 {
                continue;
            }
            let rank = (word.part & ((1 << b) - 1)).count_ones();
            if let Some(at) = base.checked_add(rank).filter(|i| region.contains(i)) {
                wanted.push((at, (w << 6) | b));
            }
        }
    }
    drop((words, bases));
    wanted.sort_unstable();
    let mut i = 0;
    while i < wanted.len() {
        let start = wanted[i].0;
        let n = (BATCH as u32).min(region.end - start);
        let Some(chunk) = read_batched(bits, bits_name, start, n)? else {
            // No batch lookups: only what is wanted, one by one.
            for (at, net24) in &wanted[i..] {
                let hosts = bits.get(at, 0).map_err(LoaderError::map(bits_name))?;
                img.hosts.insert(*net24, hosts);
            }
            break;
        };
        while let Some((at, net24)) = wanted.get(i).filter(|(at, _)| *at < start + n) {
            img.hosts.insert(*net24, chunk[(at - start) as usize]);
            i += 1;
        }
    }
    Ok(img)
}

/// (set id, prefix) of an LPM key, if it belongs to `slot`.
fn untag(tag: [u8; 4], slot: u32) -> Option<u32> {
    let t = u32::from_be_bytes(tag);
    (t >> 16 == slot).then_some(t & 0xffff)
}

fn untag4(key: &Key<Tagged4>, slot: u32) -> Option<(u32, Ipv4Net)> {
    let data = key.data();
    let set = untag(data.tag, slot)?;
    let len = key.prefix_len().checked_sub(SET_TAG_BITS)? as u8;
    Some((set, Ipv4Net::new(data.addr.into(), len).ok()?))
}

fn untag6(key: &Key<Tagged6>, slot: u32) -> Option<(u32, Ipv6Net)> {
    let data = key.data();
    let set = untag(data.tag, slot)?;
    let len = key.prefix_len().checked_sub(SET_TAG_BITS)? as u8;
    Some((set, Ipv6Net::new(data.addr.into(), len).ok()?))
}
