//! The daemon's record in the pinned `META` map: what policy is loaded, which
//! counter rule each zone name owns, which counter slot each interface owns.
//! Keeping ids stable by name keeps per-zone counters monotonic across reloads
//! and restarts.
use std::collections::BTreeMap;

use filter_common::{MetaBlob, MAX_IFACE_SLOTS, MAX_ZONES, META_CAPACITY};
use serde::{Deserialize, Serialize};

use super::{pins::AttachMode, LoaderError};
use crate::policy::CompiledPolicy;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The generation this record describes. Written before the flip and
    /// restored if the flip fails, so a record whose generation differs from
    /// `ACTIVE` tells of an apply that was interrupted (and is not trusted).
    /// Absent (0) in records of builds before it existed.
    #[serde(default)]
    pub generation: u32,
    pub policy_hash: String,
    pub policy_path: String,
    /// Zone name → counter rule id, for every zone name seen (up to MAX_ZONES).
    pub zone_ids: BTreeMap<String, u16>,
    /// Names of the zones in the enforced policy, by id.
    pub active_zones: BTreeMap<u16, String>,
    pub interfaces: Vec<IfaceMeta>,
    /// Unix time of the last successful apply.
    pub applied_at: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceMeta {
    pub name: String,
    pub ifindex: u32,
    /// Counter slot (1..MAX_IFACE_SLOTS).
    pub slot: u32,
    pub mode: AttachMode,
}

impl Meta {
    pub fn decode(blob: &MetaBlob) -> Result<Meta, LoaderError> {
        let len = (blob.len as usize).min(META_CAPACITY);
        if len == 0 {
            return Ok(Meta::default());
        }
        serde_json::from_slice(&blob.data[..len]).map_err(|e| LoaderError::Meta(e.to_string()))
    }

    pub fn encode(&self) -> Result<MetaBlob, LoaderError> {
        let json = serde_json::to_vec(self).map_err(|e| LoaderError::Meta(e.to_string()))?;
        if json.len() > META_CAPACITY {
            return Err(LoaderError::Meta(format!(
                "record of {} bytes exceeds {META_CAPACITY}",
                json.len()
            )));
        }
        let mut blob = MetaBlob {
            len: json.len() as u32,
            _pad: 0,
            data: [0; META_CAPACITY],
        };
        blob.data[..json.len()].copy_from_slice(&json);
        Ok(blob)
    }

    /// Renumbers `policy`'s zones so a name keeps the id it had before. New
    /// names get ids no earlier name used; only when all are taken is the id of
    /// a name absent from this policy reused (its counters then carry over).
    pub fn assign_zone_ids(&mut self, policy: &mut CompiledPolicy) {
        let wanted: Vec<&str> = policy.zones.iter().map(|z| z.name.as_str()).collect();
        for name in &wanted {
            if self.zone_ids.contains_key(*name) {
                continue;
            }
            let used: Vec<u16> = self.zone_ids.values().copied().collect();
            let id = (1..=MAX_ZONES as u16)
                .find(|id| !used.contains(id))
                .unwrap_or_else(|| self.evict(&wanted));
            self.zone_ids.insert((*name).to_string(), id);
        }
        for zone in &mut policy.zones {
            zone.id = self.zone_ids[&zone.name];
        }
        self.active_zones = policy
            .zones
            .iter()
            .map(|z| (z.id, z.name.clone()))
            .collect();
    }

    /// Frees the smallest id held by a name not in `keep`. The policy has at
    /// most MAX_ZONES zones, so one exists whenever all ids are taken.
    fn evict(&mut self, keep: &[&str]) -> u16 {
        let (name, id) = self
            .zone_ids
            .iter()
            .filter(|(n, _)| !keep.contains(&n.as_str()))
            .min_by_key(|(_, id)| **id)
            .map(|(n, id)| (n.clone(), *id))
            .expect("a policy has at most MAX_ZONES zones");
        self.zone_ids.remove(&name);
        id
    }

    /// The counter slot of `iface`: its previous one, else the lowest free.
    pub fn iface_slot(&self, iface: &str) -> Option<u32> {
        if let Some(m) = self.interfaces.iter().find(|m| m.name == iface) {
            return Some(m.slot);
        }
        (1..MAX_IFACE_SLOTS).find(|s| !self.interfaces.iter().any(|m| m.slot == *s))
    }

    /// Does this record describe what `active_generation` enforces?
    pub fn describes(&self, active_generation: u32) -> bool {
        active_generation != 0 && self.generation == active_generation
    }

    pub fn zone_name(&self, id: u32) -> Option<&str> {
        self.active_zones
            .get(&(id as u16))
            .map(String::as_str)
            .or_else(|| {
                self.zone_ids
                    .iter()
                    .find(|(_, z)| **z as u32 == id)
                    .map(|(n, _)| n.as_str())
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::compile_str;
    use std::path::Path;

    fn zones(names: &[&str]) -> CompiledPolicy {
        let mut text = String::from("version = 1\n");
        for (i, n) in names.iter().enumerate() {
            text.push_str(&format!(
                "[[zone]]\nname = \"{n}\"\nports = [\"{}/tcp\"]\nallow = [\"any\"]\n",
                1000 + i
            ));
        }
        compile_str(&text, Path::new("t.toml")).expect("compiles")
    }

    fn ids(p: &CompiledPolicy) -> Vec<(String, u16)> {
        p.zones.iter().map(|z| (z.name.clone(), z.id)).collect()
    }

    #[test]
    fn zone_keeps_its_id_when_reordered_or_others_removed() {
        let mut meta = Meta::default();
        let mut a = zones(&["api", "admin", "metrics"]);
        meta.assign_zone_ids(&mut a);
        let mut b = zones(&["metrics", "api"]);
        meta.assign_zone_ids(&mut b);
        assert_eq!(ids(&b), [("metrics".into(), 3), ("api".into(), 1)]);
    }

    #[test]
    fn new_zone_does_not_take_a_removed_zones_id() {
        let mut meta = Meta::default();
        meta.assign_zone_ids(&mut zones(&["a", "b"]));
        let mut next = zones(&["a", "c"]);
        meta.assign_zone_ids(&mut next);
        assert_eq!(ids(&next), [("a".into(), 1), ("c".into(), 3)]);
    }

    #[test]
    fn ids_are_reused_only_when_all_are_taken() {
        let mut meta = Meta::default();
        let first: Vec<String> = (0..MAX_ZONES).map(|i| format!("old{i}")).collect();
        meta.assign_zone_ids(&mut zones(
            &first.iter().map(String::as_str).collect::<Vec<_>>(),
        ));
        let mut next = zones(&["old5", "new"]);
        meta.assign_zone_ids(&mut next);
        assert_eq!(ids(&next), [("old5".into(), 6), ("new".into(), 1)]);
        assert!(meta.zone_ids.len() <= MAX_ZONES as usize);
    }

    #[test]
    fn meta_round_trips_through_the_blob() {
        let mut meta = Meta {
            policy_hash: "ab".into(),
            ..Meta::default()
        };
        meta.assign_zone_ids(&mut zones(&["x"]));
        meta.interfaces.push(IfaceMeta {
            name: "eth0".into(),
            ifindex: 2,
            slot: 1,
            mode: AttachMode::Native,
        });
        assert_eq!(Meta::decode(&meta.encode().unwrap()).unwrap(), meta);
        let empty = MetaBlob {
            len: 0,
            _pad: 0,
            data: [0; META_CAPACITY],
        };
        assert_eq!(Meta::decode(&empty).unwrap(), Meta::default());
    }
}
