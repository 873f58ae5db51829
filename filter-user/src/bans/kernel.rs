//! The ban maps (pinned beside the policy maps, outside the slots): written
//! only from a [`BanSet`]'s [`Op`]s, in batches where the map type allows.
use std::collections::HashMap as StdHashMap;
use std::net::IpAddr;

use aya::maps::{
    lpm_trie::Key as LpmKey, Array, HashMap, IterableMap, LpmTrie, MapData, PerCpuArray,
    PerCpuValues,
};
use filter_common::{
    BanNet4, BanNet6, BanValue, Counter, BAN_BITS_LEN, BAN_TAGS, MAP_BAN4, MAP_BAN4_NETS, MAP_BAN6,
    MAP_BAN6_NETS, MAP_BAN_BITS, MAP_BAN_COUNTERS,
};
use ipnet::IpNet;

use super::{
    set::{BanSet, Key, Op},
    BanError,
};
use crate::loader::{
    batch::{self, BATCH},
    Filter,
};

pub struct BanMaps {
    bits: Array<MapData, u64>,
    h4: HashMap<MapData, [u8; 4], BanValue>,
    h6: HashMap<MapData, [u8; 16], BanValue>,
    n4: LpmTrie<MapData, BanNet4, BanValue>,
    n6: LpmTrie<MapData, BanNet6, BanValue>,
    counters: PerCpuArray<MapData, Counter>,
}

fn take<T>(filter: &mut Filter, name: &'static str) -> Result<T, BanError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = filter.take_map(name).ok_or(BanError::NoMap(name))?;
    T::try_from(map).map_err(|e| BanError::Map(name, e.to_string()))
}

fn err(name: &'static str) -> impl Fn(std::io::Error) -> BanError {
    move |e| BanError::Map(name, e.to_string())
}

fn merr(name: &'static str) -> impl Fn(aya::maps::MapError) -> BanError {
    move |e| BanError::Map(name, e.to_string())
}

fn octets4(k: &Key) -> [u8; 4] {
    (k.start as u32).to_be_bytes()
}

fn octets6(k: &Key) -> [u8; 16] {
    k.start.to_be_bytes()
}

/// Writes `keys → values` in batches, one by one where the kernel has no batch.
fn put_all<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    name: &'static str,
    keys: &[K],
    values: &[V],
) -> Result<(), BanError> {
    for (ks, vs) in keys.chunks(BATCH).zip(values.chunks(BATCH)) {
        let done = batch::update(map, ks, vs);
        let Some(e) = done.error.as_ref() else {
            continue;
        };
        if !done.unsupported() {
            return Err(BanError::Map(name, e.to_string()));
        }
        for (k, v) in ks.iter().zip(vs).skip(done.processed) {
            batch::update_one(map, k, v).map_err(err(name))?;
        }
    }
    Ok(())
}

fn delete_all<K: aya::Pod>(map: &MapData, name: &'static str, keys: &[K]) -> Result<(), BanError> {
    for ks in keys.chunks(BATCH) {
        let done = batch::delete(map, ks);
        if done.error.is_none() {
            continue;
        }
        // One by one from where it stopped: an entry already gone is fine.
        for k in ks.iter().skip(done.processed) {
            match batch::delete_one(map, k) {
                Ok(()) => {}
                Err(e) if e.raw_os_error() == Some(nix::libc::ENOENT) => {}
                Err(e) => return Err(BanError::Map(name, e.to_string())),
            }
        }
    }
    Ok(())
}

impl BanMaps {
    /// Takes the ban maps out of a loaded filter (pinned with it, if it is).
    pub fn take(filter: &mut Filter) -> Result<BanMaps, BanError> {
        Ok(BanMaps {
            bits: take(filter, MAP_BAN_BITS)?,
            h4: take(filter, MAP_BAN4)?,
            h6: take(filter, MAP_BAN6)?,
            n4: take(filter, MAP_BAN4_NETS)?,
            n6: take(filter, MAP_BAN6_NETS)?,
            counters: take(filter, MAP_BAN_COUNTERS)?,
        })
    }

    /// Makes the kernel follow `ops` (the final value per entry wins; entries
    /// first, then the prefilter words).
    pub fn apply(&mut self, ops: Vec<Op>) -> Result<(), BanError> {
        let mut last: StdHashMap<Key, Option<BanValue>> = StdHashMap::new();
        let mut words: StdHashMap<u32, u64> = StdHashMap::new();
        let mut order = Vec::new();
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    if last.insert(k, Some(v)).is_none() {
                        order.push(k);
                    }
                }
                Op::Del(k) => {
                    if last.insert(k, None).is_none() {
                        order.push(k);
                    }
                }
                Op::Word(i, w) => {
                    words.insert(i, w);
                }
                Op::ZeroTag(t) => self.zero_tag(t)?,
            }
        }
        let (mut p4k, mut p4v, mut p6k, mut p6v) = (vec![], vec![], vec![], vec![]);
        let (mut d4, mut d6) = (vec![], vec![]);
        for k in order {
            let v = last[&k];
            match (k.is_host(), k.v6, v) {
                (true, false, Some(v)) => {
                    p4k.push(octets4(&k));
                    p4v.push(v);
                }
                (true, true, Some(v)) => {
                    p6k.push(octets6(&k));
                    p6v.push(v);
                }
                (true, false, None) => d4.push(octets4(&k)),
                (true, true, None) => d6.push(octets6(&k)),
                (false, false, Some(v)) => {
                    let key = LpmKey::new(k.len as u32, BanNet4 { addr: octets4(&k) });
                    self.n4.insert(&key, v, 0).map_err(merr(MAP_BAN4_NETS))?;
                }
                (false, true, Some(v)) => {
                    let key = LpmKey::new(k.len as u32, BanNet6 { addr: octets6(&k) });
                    self.n6.insert(&key, v, 0).map_err(merr(MAP_BAN6_NETS))?;
                }
                (false, false, None) => {
                    let key = LpmKey::new(k.len as u32, BanNet4 { addr: octets4(&k) });
                    let _ = self.n4.remove(&key);
                }
                (false, true, None) => {
                    let key = LpmKey::new(k.len as u32, BanNet6 { addr: octets6(&k) });
                    let _ = self.n6.remove(&key);
                }
            }
        }
        put_all(self.h4.map(), MAP_BAN4, &p4k, &p4v)?;
        put_all(self.h6.map(), MAP_BAN6, &p6k, &p6v)?;
        delete_all(self.h4.map(), MAP_BAN4, &d4)?;
        delete_all(self.h6.map(), MAP_BAN6, &d6)?;
        let mut wk: Vec<u32> = words.keys().copied().collect();
        wk.sort_unstable();
        let wv: Vec<u64> = wk.iter().map(|k| words[k]).collect();
        put_all(self.bits.map(), MAP_BAN_BITS, &wk, &wv)
    }

    fn zero_tag(&mut self, tag: u32) -> Result<(), BanError> {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| err(MAP_BAN_COUNTERS)(e))?;
        let zeros = PerCpuValues::try_from(vec![Counter::default(); cpus])
            .map_err(|e| BanError::Map(MAP_BAN_COUNTERS, e.to_string()))?;
        self.counters
            .set(tag, zeros, 0)
            .map_err(merr(MAP_BAN_COUNTERS))
    }

    /// Packets and bytes dropped per tag id, summed over CPUs.
    pub fn tag_counters(&self) -> Vec<Counter> {
        (0..BAN_TAGS)
            .map(|t| {
                self.counters
                    .get(&t, 0)
                    .map(|per_cpu| {
                        per_cpu.iter().fold(Counter::default(), |a, c| Counter {
                            packets: a.packets + c.packets,
                            bytes: a.bytes + c.bytes,
                        })
                    })
                    .unwrap_or_default()
            })
            .collect()
    }

    /// Makes the kernel hold exactly `set` (at start: the maps may hold a
    /// previous run's entries, with other tag ids). New values first, then
    /// the words, then the entries `set` no longer has.
    pub fn rewrite(&mut self, set: &BanSet) -> Result<(), BanError> {
        let mut ops: Vec<Op> = set.kernel_entries().map(|(k, v)| Op::Put(k, v)).collect();
        let mut kernel = vec![0u64; BAN_BITS_LEN as usize];
        let batched =
            batch::lookup_array(self.bits.map(), 0, &mut kernel).map_err(err(MAP_BAN_BITS))?;
        if !batched {
            for (i, w) in kernel.iter_mut().enumerate() {
                *w = self.bits.get(&(i as u32), 0).map_err(merr(MAP_BAN_BITS))?;
            }
        }
        for (i, (have, want)) in kernel.iter().zip(set.words()).enumerate() {
            if have != want {
                ops.push(Op::Word(i as u32, *want));
            }
        }
        for net in self.kernel_nets()? {
            if !set.contains(&net) {
                ops.push(Op::Del(Key::of(&net)));
            }
        }
        self.apply(ops)
    }

    /// Every entry the kernel maps hold, with its value.
    pub fn kernel_bans(&self) -> Result<Vec<(IpNet, BanValue)>, BanError> {
        let mut out = Vec::new();
        for e in self.h4.iter() {
            let (k, v) = e.map_err(merr(MAP_BAN4))?;
            out.push((IpNet::from(IpAddr::from(k)), v));
        }
        for e in self.h6.iter() {
            let (k, v) = e.map_err(merr(MAP_BAN6))?;
            out.push((IpNet::from(IpAddr::from(k)), v));
        }
        for e in self.n4.iter() {
            let (k, v) = e.map_err(merr(MAP_BAN4_NETS))?;
            if let Ok(n) = IpNet::new(IpAddr::from(k.data().addr), k.prefix_len() as u8) {
                out.push((n, v));
            }
        }
        for e in self.n6.iter() {
            let (k, v) = e.map_err(merr(MAP_BAN6_NETS))?;
            if let Ok(n) = IpNet::new(IpAddr::from(k.data().addr), k.prefix_len() as u8) {
                out.push((n, v));
            }
        }
        Ok(out)
    }

    /// Every prefix the kernel maps hold.
    pub fn kernel_nets(&self) -> Result<Vec<IpNet>, BanError> {
        let mut out = Vec::new();
        for k in self.h4.keys() {
            let k = k.map_err(merr(MAP_BAN4))?;
            out.push(IpNet::from(IpAddr::from(k)));
        }
        for k in self.h6.keys() {
            let k = k.map_err(merr(MAP_BAN6))?;
            out.push(IpNet::from(IpAddr::from(k)));
        }
        for k in self.n4.keys() {
            let k = k.map_err(merr(MAP_BAN4_NETS))?;
            let a = IpAddr::from(k.data().addr);
            out.extend(IpNet::new(a, k.prefix_len() as u8).ok());
        }
        for k in self.n6.keys() {
            let k = k.map_err(merr(MAP_BAN6_NETS))?;
            let a = IpAddr::from(k.data().addr);
            out.extend(IpNet::new(a, k.prefix_len() as u8).ok());
        }
        Ok(out)
    }
}
