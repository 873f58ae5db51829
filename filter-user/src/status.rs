//! What `portcullis status` and the metrics endpoint report: the loaded policy,
//! the interfaces and the counters, labelled from the META record. Built the
//! same way from the daemon's handles or from the pins alone.
use std::fmt;

use filter_common::{decode_counter_index, Counter, RULE_FAILSAFE, RULE_GLOBAL};
use serde::{Deserialize, Serialize};

use crate::loader::{LoaderError, Meta};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub daemon_running: bool,
    pub pin_root: String,
    pub generation: u32,
    /// The generation the META record describes. When it differs from
    /// `generation` an apply was interrupted between writing META and the
    /// flip (or another writer touched the maps): the policy hash and path
    /// are then not known to be what is enforced.
    #[serde(default)]
    pub meta_generation: u32,
    pub policy_hash: String,
    pub policy_path: String,
    pub interfaces: Vec<IfaceStatus>,
    /// Non-zero counters only.
    pub counters: Vec<CounterRow>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceStatus {
    pub name: String,
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CounterRow {
    pub interface: String,
    pub zone: String,
    pub reason: String,
    pub verdict: String,
    pub packets: u64,
    pub bytes: u64,
}

/// The label of a counter rule: a zone's name, `global` or `failsafe`.
pub fn rule_label(meta: &Meta, rule: u32) -> String {
    match rule {
        RULE_GLOBAL => "global".into(),
        RULE_FAILSAFE => "failsafe".into(),
        id => meta
            .zone_name(id)
            .map(str::to_string)
            .unwrap_or_else(|| format!("zone{id}")),
    }
}

/// Non-zero counters of every attached interface (and of slot 0, labelled
/// `other`, when it has any), read through `read(slot)`.
pub fn counter_rows(
    meta: &Meta,
    mut read: impl FnMut(u32) -> Result<Vec<Counter>, LoaderError>,
) -> Result<Vec<CounterRow>, LoaderError> {
    let mut slots: Vec<(u32, &str)> = meta
        .interfaces
        .iter()
        .map(|i| (i.slot, i.name.as_str()))
        .collect();
    slots.push((0, "other"));
    let mut rows = Vec::new();
    for (slot, iface) in slots {
        for (index, c) in read(slot)?.into_iter().enumerate() {
            if c.packets == 0 {
                continue;
            }
            let (rule, reason, verdict) = decode_counter_index(index as u32);
            rows.push(CounterRow {
                interface: iface.to_string(),
                zone: rule_label(meta, rule),
                reason: reason.as_str().into(),
                verdict: verdict.as_str().into(),
                packets: c.packets,
                bytes: c.bytes,
            });
        }
    }
    Ok(rows)
}

impl Status {
    pub fn new(
        daemon_running: bool,
        pin_root: &str,
        generation: u32,
        meta: &Meta,
        counters: Vec<CounterRow>,
    ) -> Status {
        Status {
            daemon_running,
            pin_root: pin_root.to_string(),
            generation,
            meta_generation: meta.generation,
            policy_hash: meta.policy_hash.clone(),
            policy_path: meta.policy_path.clone(),
            interfaces: meta
                .interfaces
                .iter()
                .map(|i| IfaceStatus {
                    name: i.name.clone(),
                    mode: i.mode.as_str().into(),
                })
                .collect(),
            counters,
        }
    }
}

impl Status {
    /// Do the policy hash and path describe the enforced generation?
    pub fn policy_known(&self) -> bool {
        self.generation != 0 && self.meta_generation == self.generation
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "daemon      {}",
            if self.daemon_running {
                "running"
            } else {
                "not running (filter state read from the pins)"
            }
        )?;
        writeln!(f, "pin root    {}", self.pin_root)?;
        writeln!(f, "generation  {}", self.generation)?;
        if self.policy_known() {
            writeln!(
                f,
                "policy      {} (sha256 {})",
                self.policy_path, self.policy_hash
            )?;
        } else {
            writeln!(
                f,
                "policy      unknown: the META record describes generation {}, not the \
                 enforced {} (an apply was interrupted); the next reload rewrites it",
                self.meta_generation, self.generation
            )?;
        }
        for i in &self.interfaces {
            writeln!(f, "interface   {} ({} XDP)", i.name, i.mode)?;
        }
        if self.interfaces.is_empty() {
            writeln!(f, "interface   none attached")?;
        }
        writeln!(
            f,
            "\n{:<12} {:<16} {:<15} {:<7} {:>12} {:>14}",
            "interface", "zone", "reason", "verdict", "packets", "bytes"
        )?;
        for c in &self.counters {
            writeln!(
                f,
                "{:<12} {:<16} {:<15} {:<7} {:>12} {:>14}",
                c.interface, c.zone, c.reason, c.verdict, c.packets, c.bytes
            )?;
        }
        Ok(())
    }
}
