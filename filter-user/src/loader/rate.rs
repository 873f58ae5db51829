//! The rate limits' state (`RATE_SLOTS`, `RATE_ZONE`, `RATE_REAPED`): not
//! part of any policy slot, so applying a policy never touches it. The
//! daemon reaps idle keys from here; tests reset it and read buckets back.
use aya::maps::{Array, Map, MapData};
use filter_common::{
    rate_set, rate_zone_index, RateBucket, RateKey, RateSlot, RateZone, MAP_RATE_REAPED,
    MAP_RATE_SLOTS, MAP_RATE_ZONE, MAX_ZONES, RATE_KINDS, RATE_SLOTS_LEN,
};

use super::{maps, LoaderError, PinRoot};

pub struct RateState {
    slots: Array<MapData, RateSlot>,
    zone: Array<MapData, RateZone>,
    reaped: Array<MapData, u64>,
}

/// What one reap did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Reaped {
    /// Keys deleted (their bucket was full for at least the idle time).
    pub deleted: u64,
    /// Keys left.
    pub kept: u64,
}

/// Tracked keys of one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitUse {
    pub zone: u32,
    pub kind: u32,
    pub tracked: u64,
}

impl RateState {
    /// From the maps themselves (a loaded object's `take_map`).
    pub fn from_maps(slots: Map, zone: Map, reaped: Map) -> Result<Self, LoaderError> {
        Ok(RateState {
            slots: Array::try_from(slots).map_err(LoaderError::map(MAP_RATE_SLOTS))?,
            zone: Array::try_from(zone).map_err(LoaderError::map(MAP_RATE_ZONE))?,
            reaped: Array::try_from(reaped).map_err(LoaderError::map(MAP_RATE_REAPED))?,
        })
    }

    /// From the pins of the enforced filter; `None` if they have no rate
    /// maps (an older layout).
    pub fn open(root: &PinRoot) -> Result<Option<Self>, LoaderError> {
        if !root.map(MAP_RATE_SLOTS).exists() {
            return Ok(None);
        }
        let open = |name: &'static str| -> Result<Map, LoaderError> {
            let data = MapData::from_pin(root.map(name)).map_err(LoaderError::map(name))?;
            Map::from_map_data(data).map_err(LoaderError::map(name))
        };
        Self::from_maps(
            open(MAP_RATE_SLOTS)?,
            open(MAP_RATE_ZONE)?,
            open(MAP_RATE_REAPED)?,
        )
        .map(Some)
    }

    /// Every slot, in index order (one copy of the mapped array).
    fn slots(&self) -> Result<Vec<RateSlot>, LoaderError> {
        maps::read_range(&self.slots, MAP_RATE_SLOTS, 0, RATE_SLOTS_LEN)
    }

    /// Every tracked key and its bucket.
    pub fn entries(&self) -> Result<Vec<(RateKey, RateBucket)>, LoaderError> {
        Ok(self
            .slots()?
            .into_iter()
            .filter(|s| !s.is_free())
            .map(|s| (RateKey::from_words(&s.key), RateBucket { tat: s.tat }))
            .collect())
    }

    /// Frees slot `i` (all zeros). A packet of its key admitted meanwhile is
    /// lost with it; the key's next packet tracks it again.
    fn free(&mut self, i: u32) -> Result<(), LoaderError> {
        self.slots
            .set(i, RateSlot::default(), 0)
            .map_err(LoaderError::map(MAP_RATE_SLOTS))
    }

    /// Forgets every bucket (tests, between policies that must not share
    /// state). Not used by the daemon: keeping buckets is the point.
    pub fn reset(&mut self) -> Result<(), LoaderError> {
        for (i, s) in self.slots()?.into_iter().enumerate() {
            if !s.is_free() {
                self.free(i as u32)?;
            }
        }
        for i in 0..self.zone.len() {
            self.zone
                .set(i, RateZone::default(), 0)
                .map_err(LoaderError::map(MAP_RATE_ZONE))?;
            self.reaped
                .set(i, 0, 0)
                .map_err(LoaderError::map(MAP_RATE_REAPED))?;
        }
        Ok(())
    }

    /// Frees the slots whose bucket has been full for `idle_ns` at
    /// CLOCK_MONOTONIC `now_ns` (`tat + idle ≤ now`): a full bucket is the
    /// same as no entry, so this loses only the tracking. Counts each
    /// one freed in `RATE_REAPED`, which only this writes.
    pub fn reap(&mut self, now_ns: u64, idle_ns: u64) -> Result<Reaped, LoaderError> {
        let mut out = Reaped::default();
        let mut per = vec![0u64; (MAX_ZONES + 1) as usize * RATE_KINDS as usize];
        for (i, s) in self.slots()?.into_iter().enumerate() {
            if s.is_free() {
                continue;
            }
            if s.tat.saturating_add(idle_ns) <= now_ns {
                self.free(i as u32)?;
                out.deleted += 1;
                let k = RateKey::from_words(&s.key);
                let i = rate_zone_index(u32::from(k.zone), u32::from(k.kind)) as usize;
                if let Some(c) = per.get_mut(i) {
                    *c += 1;
                }
            } else {
                out.kept += 1;
            }
        }
        for (i, n) in per.into_iter().enumerate() {
            if n == 0 {
                continue;
            }
            let i = i as u32;
            let old = self
                .reaped
                .get(&i, 0)
                .map_err(LoaderError::map(MAP_RATE_REAPED))?;
            self.reaped
                .set(i, old + n, 0)
                .map_err(LoaderError::map(MAP_RATE_REAPED))?;
        }
        Ok(out)
    }

    /// Tracked keys per limit, as the datapath counts them (inserted −
    /// reaped), for limits that have any.
    pub fn usage(&self) -> Result<Vec<LimitUse>, LoaderError> {
        let mut out = Vec::new();
        for zone in 0..=MAX_ZONES {
            for kind in 0..RATE_KINDS {
                let i = rate_zone_index(zone, kind);
                let z = self
                    .zone
                    .get(&i, 0)
                    .map_err(LoaderError::map(MAP_RATE_ZONE))?;
                let r = self
                    .reaped
                    .get(&i, 0)
                    .map_err(LoaderError::map(MAP_RATE_REAPED))?;
                let tracked = z.inserted.saturating_sub(r);
                if tracked > 0 {
                    out.push(LimitUse {
                        zone,
                        kind,
                        tracked,
                    });
                }
            }
        }
        Ok(out)
    }

    /// The zone-wide state of a limit.
    pub fn zone_state(&self, zone: u32, kind: u32) -> Result<RateZone, LoaderError> {
        self.zone
            .get(&rate_zone_index(zone, kind), 0)
            .map_err(LoaderError::map(MAP_RATE_ZONE))
    }
}

/// Where `key` goes in `RATE_SLOTS`, as the datapath places it: the way of
/// its set that holds it already, else the first free one; `None` when all
/// four hold other keys. `set` is the key's set as read (4 slots).
pub(crate) fn way_for(set: &[RateSlot], key: &RateKey) -> Option<(u32, bool)> {
    let w = key.words();
    let found = set.iter().position(|s| s.key == w).map(|i| (i, true));
    found
        .or_else(|| set.iter().position(RateSlot::is_free).map(|i| (i, false)))
        .map(|(i, held)| (i as u32, held))
}

/// The first `RATE_SLOTS` index of `key`'s set.
pub(crate) fn set_of(key: &RateKey) -> u32 {
    rate_set(&key.words())
}

/// CLOCK_MONOTONIC now, in ns: the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes one timespec; CLOCK_MONOTONIC always exists.
    if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::{rate_key4, RATE_WAYS};

    #[test]
    fn a_key_takes_its_own_way_then_the_first_free_then_none() {
        let k = |last: u8| rate_key4(1, 0, 32, [10, 0, 0, last]);
        let mut set = vec![RateSlot::default(); RATE_WAYS as usize];
        assert_eq!(way_for(&set, &k(1)), Some((0, false)));
        set[0].key = k(1).words();
        set[2].key = k(2).words();
        assert_eq!(way_for(&set, &k(2)), Some((2, true)));
        assert_eq!(way_for(&set, &k(3)), Some((1, false)));
        set[1].key = k(3).words();
        set[3].key = k(4).words();
        assert_eq!(way_for(&set, &k(5)), None);
        assert_eq!(set_of(&k(1)), rate_set(&k(1).words()));
    }
}
