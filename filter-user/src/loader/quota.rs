//! The transfer quotas' usage (`QUOTA_USAGE`): not part of any policy slot,
//! so applying a policy never touches it. The daemon deletes entries of past
//! periods (and of zones no longer under a quota) from here; `status` and the
//! metrics report who uses how much; tests reset it and read it back.
use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use aya::maps::{HashMap, Map, MapData};
use filter_common::{
    quota_period, quota_used, QuotaKey, QuotaUsage, ZoneInfo, ZoneQuota, MAP_QUOTAS,
    MAP_QUOTA_USAGE, QUOTA_DAY, QUOTA_HOUR, QUOTA_KIND_SHIFT, QUOTA_MINUTE, QUOTA_MONTH,
    QUOTA_TABLE_MAX,
};
use serde::{Deserialize, Serialize};

use super::{LoaderError, Meta, PinRoot};

/// Consumers `status` and the metrics name per zone.
pub const TOP: usize = 5;

pub struct QuotaState {
    usage: HashMap<MapData, QuotaKey, QuotaUsage>,
}

/// One quota zone's use in its current period.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneQuotaUse {
    pub zone: String,
    pub limit_bytes: u64,
    /// "minute", "hour", "day" or "month" (UTC).
    pub period: String,
    /// Sources (or aggregates) counted in the current period.
    pub counted: u64,
    /// Of those, at or over the limit: refused until the period rolls over.
    pub over: u64,
    /// The largest consumers, most bytes first.
    pub top: Vec<Consumer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumer {
    /// The masked source: an address, or a prefix for `per = "/N"`/"zone".
    pub source: String,
    pub bytes: u64,
}

/// The period kind's name, from a tagged period number.
pub fn period_name(tagged: u64) -> &'static str {
    match tagged >> QUOTA_KIND_SHIFT {
        QUOTA_MINUTE => "minute",
        QUOTA_HOUR => "hour",
        QUOTA_DAY => "day",
        QUOTA_MONTH => "month",
        _ => "unknown",
    }
}

/// The masked source of a key, as text.
pub fn source_text(k: &QuotaKey) -> String {
    if k.len == 0 {
        return "all sources".into();
    }
    let (ip, full) = if k.family == 4 {
        let a: [u8; 4] = k.addr[..4].try_into().unwrap_or([0; 4]);
        (IpAddr::V4(Ipv4Addr::from(a)), 32)
    } else {
        (IpAddr::V6(Ipv6Addr::from(k.addr)), 128)
    };
    if k.len >= full {
        ip.to_string()
    } else {
        format!("{ip}/{}", k.len)
    }
}

/// The quota zones of the slot `generation` lives in: (zone id, quota).
/// Empty when the pins have no `QUOTAS` (an older layout).
pub fn active_quotas(
    root: &PinRoot,
    generation: u32,
) -> Result<Vec<(u32, ZoneQuota)>, LoaderError> {
    super::pins::zone_entries(root, generation, MAP_QUOTAS, ZoneInfo::QUOTA)
}

impl QuotaState {
    pub fn from_map(usage: Map) -> Result<Self, LoaderError> {
        Ok(QuotaState {
            usage: HashMap::try_from(usage).map_err(LoaderError::map(MAP_QUOTA_USAGE))?,
        })
    }

    /// From the pins of the enforced filter; `None` if they have no usage
    /// map (an older layout).
    pub fn open(root: &PinRoot) -> Result<Option<Self>, LoaderError> {
        let path = root.map(MAP_QUOTA_USAGE);
        if !path.exists() {
            return Ok(None);
        }
        let data = MapData::from_pin(path).map_err(LoaderError::map(MAP_QUOTA_USAGE))?;
        let map = Map::from_map_data(data).map_err(LoaderError::map(MAP_QUOTA_USAGE))?;
        Self::from_map(map).map(Some)
    }

    /// Every entry (at most `QUOTA_TABLE_MAX`).
    pub fn entries(&self) -> Result<Vec<(QuotaKey, QuotaUsage)>, LoaderError> {
        let mut out = Vec::new();
        for e in self.usage.iter().take(QUOTA_TABLE_MAX as usize) {
            out.push(e.map_err(LoaderError::map(MAP_QUOTA_USAGE))?);
        }
        Ok(out)
    }

    /// Writes one entry (tests: a usage left from a past period).
    pub fn set(&mut self, key: QuotaKey, usage: QuotaUsage) -> Result<(), LoaderError> {
        self.usage
            .insert(key, usage, 0)
            .map_err(LoaderError::map(MAP_QUOTA_USAGE))
    }

    /// Forgets all usage (tests, between policies that must not share it).
    pub fn reset(&mut self) -> Result<(), LoaderError> {
        for (k, _) in self.entries()? {
            let _ = self.usage.remove(&k);
        }
        Ok(())
    }

    /// Deletes the entries that count nothing any more: of a past period of
    /// their zone, or of a zone no longer under a quota. Returns (deleted,
    /// kept). A frame racing the delete restarts the entry: nothing is lost
    /// but a past period's count.
    pub fn reap(
        &mut self,
        quotas: &[(u32, ZoneQuota)],
        now_tai_ns: u64,
    ) -> Result<(u64, u64), LoaderError> {
        let current: BTreeMap<u32, u64> = quotas
            .iter()
            .map(|(_, q)| (q.zone_key, quota_period(q, now_tai_ns)))
            .collect();
        let (mut deleted, mut kept) = (0, 0);
        for (k, u) in self.entries()? {
            if current.get(&k.zone_key) == Some(&u.period) {
                kept += 1;
            } else if self.usage.remove(&k).is_ok() {
                deleted += 1;
            }
        }
        Ok((deleted, kept))
    }

    /// Each quota zone's use in its current period, by zone id.
    pub fn report(
        &self,
        quotas: &[(u32, ZoneQuota)],
        meta: &Meta,
        now_tai_ns: u64,
    ) -> Result<Vec<ZoneQuotaUse>, LoaderError> {
        let entries = self.entries()?;
        let mut out = Vec::new();
        for (id, q) in quotas {
            let period = quota_period(q, now_tai_ns);
            let mut mine: Vec<(QuotaKey, u64)> = entries
                .iter()
                .filter(|(k, _)| k.zone_key == q.zone_key)
                .map(|(k, u)| (*k, quota_used(u, period)))
                .filter(|(_, b)| *b > 0)
                .collect();
            mine.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            out.push(ZoneQuotaUse {
                zone: meta
                    .active_zones
                    .get(&(*id as u16))
                    .cloned()
                    .unwrap_or_else(|| format!("zone {id}")),
                limit_bytes: q.limit_bytes,
                period: period_name(period).into(),
                counted: mine.len() as u64,
                over: mine.iter().filter(|(_, b)| *b >= q.limit_bytes).count() as u64,
                top: mine
                    .iter()
                    .take(TOP)
                    .map(|(k, b)| Consumer {
                        source: source_text(k),
                        bytes: *b,
                    })
                    .collect(),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use filter_common::{quota_key4, quota_key6, quota_tag};

    #[test]
    fn sources_read_as_addresses_or_prefixes() {
        assert_eq!(source_text(&quota_key4(1, 32, [10, 0, 0, 5])), "10.0.0.5");
        assert_eq!(
            source_text(&quota_key4(1, 24, [10, 0, 0, 5])),
            "10.0.0.0/24"
        );
        let a6 = "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(source_text(&quota_key6(1, 64, a6)), "2001:db8::/64");
        assert_eq!(source_text(&quota_key6(1, 128, a6)), "2001:db8::1");
    }

    #[test]
    fn period_names_come_from_the_tag() {
        assert_eq!(period_name(quota_tag(QUOTA_DAY, 20_000)), "day");
        assert_eq!(period_name(quota_tag(QUOTA_MONTH, 683)), "month");
    }
}
