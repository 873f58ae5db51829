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
    /// Is a filter in force (pins, a generation, an attached interface, its
    /// link)? `portcullis status` exits 3 when not.
    #[serde(default)]
    pub enforcing: bool,
    /// Why nothing (or not everything) is enforced, in one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_enforcing: Option<String>,
    /// What the daemon says about itself, when one answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub daemon: Option<DaemonInfo>,
    /// Scheduled zones of the enforced slot, as the datapath judges them now.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<ZoneHours>,
    /// Quota zones of the enforced slot: use in the current period.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<crate::loader::ZoneQuotaUse>,
}

/// A scheduled zone's state, read from `SCHED` and the kernel's clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneHours {
    pub zone: String,
    pub open: bool,
    /// Unix seconds of the next change; `None` past the last stored
    /// transition (the zone fails closed).
    pub next_change: Option<i64>,
    /// Unix seconds of the last stored transition: after it the datapath
    /// says closed whatever the hours (the daemon tops the list up daily).
    pub known_until: Option<i64>,
    /// Why an operator should look, if they should.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// Below this much of stored transitions left, `status` warns.
pub const HORIZON_WARN_S: i64 = 24 * 3600;

/// The state of each scheduled zone (`entries`: zone id → its `SCHED`
/// entry) at kernel CLOCK_TAI `kernel_now`; `tai_offset_s` turns kernel
/// instants into Unix time.
pub fn zone_hours(
    meta: &Meta,
    entries: &[(u32, filter_common::Sched)],
    kernel_now: u64,
    tai_offset_s: i64,
) -> Vec<ZoneHours> {
    let unix = |t: u64| (t / 1_000_000_000) as i64 - tai_offset_s;
    let now = unix(kernel_now);
    entries
        .iter()
        .map(|(id, s)| {
            let count = (s.count as usize).min(s.t.len());
            let stored = &s.t[..count];
            let next_change = stored.iter().find(|t| **t > kernel_now).map(|t| unix(*t));
            let known_until = stored.last().map(|t| unix(*t));
            let warning = match (next_change, known_until) {
                (None, _) => Some(
                    "past its last stored transition: closed until the daemon writes the \
                     schedule again (is it running?)"
                        .to_string(),
                ),
                (Some(_), Some(k)) if k - now < HORIZON_WARN_S => Some(format!(
                    "only {}h of transitions stored: the zone closes for good at {} unless \
                     the daemon tops them up",
                    (k - now).max(0) / 3600,
                    utc_text(k)
                )),
                _ => None,
            };
            ZoneHours {
                zone: meta
                    .zone_name(*id)
                    .map_or_else(|| format!("zone {id}"), str::to_string),
                open: filter_common::sched_is_open(s, kernel_now),
                next_change,
                known_until,
                warning,
            }
        })
        .collect()
}

/// Bytes in the largest decimal unit that keeps a digit before the point.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["kB", "MB", "GB", "TB", "PB", "EB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    format!("{v:.1} {}", UNITS[u])
}

/// `status`'s line for one quota zone.
pub fn quota_line(q: &crate::loader::ZoneQuotaUse) -> String {
    let top: Vec<String> = q
        .top
        .iter()
        .map(|c| format!("{} {}", c.source, human_bytes(c.bytes)))
        .collect();
    format!(
        "{}: {} per UTC {}; {} counted, {} over{}",
        q.zone,
        human_bytes(q.limit_bytes),
        q.period,
        q.counted,
        q.over,
        if top.is_empty() {
            String::new()
        } else {
            format!("; top {}", top.join(", "))
        }
    )
}

/// Unix seconds as RFC 3339 UTC.
pub fn utc_text(unix_s: i64) -> String {
    jiff::Timestamp::from_second(unix_s)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| unix_s.to_string())
}

/// A daemon's answer to `ping` (fields absent from daemons before them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DaemonInfo {
    pub pid: u32,
    pub version: String,
    pub pin_root: String,
    pub enforcing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_enforcing: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reload: Option<LastReload>,
    /// The bans in force, by tag (absent while a ban request holds the store).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bans: Option<BanSummary>,
    /// The CrowdSec bouncer (absent: no `[crowdsec]` in the policy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crowdsec: Option<crate::crowdsec::CrowdsecStatus>,
    /// `[blocklist] feeds`: each feed's copy and last attempt.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub feeds: Vec<crate::feeds::FeedState>,
}

/// `ping`'s view of the bans (`portcullis ban list` has each one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanSummary {
    pub in_force: u64,
    pub tags: Vec<BanTag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BanTag {
    /// "" for bans without `--tag`.
    pub tag: String,
    pub bans: u64,
    /// Frames dropped by this tag's bans since its id was last assigned.
    pub dropped: u64,
}

impl fmt::Display for BanSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} in force", self.in_force)?;
        for (i, t) in self.tags.iter().enumerate() {
            let name = if t.tag.is_empty() {
                "(untagged)"
            } else {
                &t.tag
            };
            let sep = if i == 0 { ": " } else { ", " };
            write!(f, "{sep}{name} {} ({} frames dropped)", t.bans, t.dropped)?;
        }
        Ok(())
    }
}

/// The outcome of the daemon's last apply (its start counts as one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastReload {
    pub ok: bool,
    /// Unix time.
    pub at: u64,
    /// What asked: start, SIGHUP, file change, control socket.
    pub why: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
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
    /// The zone is not in the enforced policy any more (its counters stay).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub zone_removed: bool,
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

/// Is `rule` a zone that the enforced policy no longer has? Its id stays
/// reserved in `zone_ids` so that its counters stay its own.
pub fn zone_removed(meta: &Meta, rule: u32) -> bool {
    rule != RULE_GLOBAL
        && rule != RULE_FAILSAFE
        && !meta.active_zones.is_empty()
        && u16::try_from(rule).map_or(true, |id| !meta.active_zones.contains_key(&id))
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
            let Some((rule, reason, verdict)) = decode_counter_index(index as u32) else {
                continue;
            };
            rows.push(CounterRow {
                interface: iface.to_string(),
                zone: rule_label(meta, rule),
                zone_removed: zone_removed(meta, rule),
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
    /// `links`: the interfaces with a pinned link; `daemon`: the daemon's
    /// answer to `ping`, if one answers.
    pub fn new(
        daemon: Option<DaemonInfo>,
        pin_root: &str,
        generation: u32,
        meta: &Meta,
        counters: Vec<CounterRow>,
        links: &[String],
    ) -> Status {
        let not_enforcing = not_enforcing(daemon.as_ref(), generation, meta, links);
        Status {
            daemon_running: daemon.is_some(),
            enforcing: not_enforcing.is_none(),
            not_enforcing,
            daemon,
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
            schedules: Vec::new(),
            quotas: Vec::new(),
        }
    }

    /// No pins under `pin_root`: nothing is enforced there.
    pub fn absent(daemon: Option<DaemonInfo>, pin_root: &str) -> Status {
        let why = daemon
            .as_ref()
            .and_then(|d| d.not_enforcing.clone())
            .unwrap_or_else(|| format!("no pinned filter under {pin_root}"));
        Status {
            daemon_running: daemon.is_some(),
            pin_root: pin_root.to_string(),
            generation: 0,
            meta_generation: 0,
            policy_hash: String::new(),
            policy_path: String::new(),
            interfaces: Vec::new(),
            counters: Vec::new(),
            enforcing: false,
            not_enforcing: Some(why),
            daemon,
            schedules: Vec::new(),
            quotas: Vec::new(),
        }
    }
}

/// Why the pins describe no filter in force, if they don't.
fn not_enforcing(
    daemon: Option<&DaemonInfo>,
    generation: u32,
    meta: &Meta,
    links: &[String],
) -> Option<String> {
    if let Some(why) = daemon.and_then(|d| d.not_enforcing.clone()) {
        return Some(why);
    }
    if generation == 0 {
        return Some("no policy was ever applied (generation 0)".into());
    }
    if meta.interfaces.is_empty() {
        return Some("no interface is attached".into());
    }
    let gone: Vec<&str> = meta
        .interfaces
        .iter()
        .map(|i| i.name.as_str())
        .filter(|name| !links.iter().any(|l| l == name))
        .collect();
    if gone.len() == meta.interfaces.len() {
        return Some(format!(
            "the pinned links of {} are gone: the program is attached nowhere",
            gone.join(", ")
        ));
    }
    None
}

impl Status {
    /// Do the policy hash and path describe the enforced generation?
    pub fn policy_known(&self) -> bool {
        self.generation != 0 && self.meta_generation == self.generation
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.not_enforcing, self.enforcing) {
            (Some(why), false) => writeln!(f, "enforcing   NO: {why}")?,
            (Some(why), true) => writeln!(f, "enforcing   partly: {why}")?,
            (None, _) => writeln!(f, "enforcing   yes")?,
        }
        match &self.daemon {
            Some(d) => {
                writeln!(
                    f,
                    "daemon      running, PID {}, version {}",
                    d.pid, d.version
                )?;
                if let Some(r) = &d.last_reload {
                    let what = match (&r.error, r.generation) {
                        (Some(e), _) => format!("rejected: {}", e.lines().next().unwrap_or("")),
                        (None, Some(g)) => format!("ok, generation {g}"),
                        (None, None) => "ok".to_string(),
                    };
                    writeln!(f, "last reload {what} ({}, unix time {})", r.why, r.at)?;
                }
                if let Some(b) = &d.bans {
                    writeln!(f, "bans        {b}")?;
                }
                let now = crate::feeds::unix_now();
                if let Some(c) = &d.crowdsec {
                    writeln!(f, "crowdsec    {}", c.line(now))?;
                }
                for feed in &d.feeds {
                    writeln!(f, "feed        {}", crate::feeds::describe(feed, now))?;
                }
            }
            None if self.daemon_running => writeln!(f, "daemon      running")?,
            None => writeln!(
                f,
                "daemon      not running (filter state read from the pins)"
            )?,
        }
        writeln!(f, "pin root    {}", self.pin_root)?;
        if self.generation == 0 && self.interfaces.is_empty() && self.policy_hash.is_empty() {
            return Ok(());
        }
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
        for h in &self.schedules {
            let state = if h.open { "open" } else { "closed" };
            let next = match h.next_change {
                Some(t) => format!(
                    ", {} {}",
                    if h.open { "closes" } else { "opens" },
                    utc_text(t)
                ),
                None => String::new(),
            };
            writeln!(f, "schedule    {}: {state}{next}", h.zone)?;
            if let Some(w) = &h.warning {
                writeln!(f, "  warning: {w}")?;
            }
        }
        for q in &self.quotas {
            writeln!(f, "quota       {}", quota_line(q))?;
        }
        writeln!(
            f,
            "\n{:<12} {:<16} {:<15} {:<7} {:>12} {:>14}",
            "interface", "zone", "reason", "verdict", "packets", "bytes"
        )?;
        for c in &self.counters {
            let zone = if c.zone_removed {
                format!("{} (removed)", c.zone)
            } else {
                c.zone.clone()
            };
            writeln!(
                f,
                "{:<12} {:<16} {:<15} {:<7} {:>12} {:>14}",
                c.interface, zone, c.reason, c.verdict, c.packets, c.bytes
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::{AttachMode, IfaceMeta};

    fn meta() -> Meta {
        let mut m = Meta {
            generation: 4,
            ..Meta::default()
        };
        m.zone_ids.insert("api".into(), 1);
        m.zone_ids.insert("old".into(), 2);
        m.active_zones.insert(1, "api".into());
        m.interfaces.push(IfaceMeta {
            name: "eth0".into(),
            ifindex: 2,
            slot: 1,
            mode: AttachMode::Native,
        });
        m
    }

    #[test]
    fn a_zone_gone_from_the_policy_is_marked_removed_and_live_ones_are_not() {
        let m = meta();
        assert!(!zone_removed(&m, 1));
        assert!(zone_removed(&m, 2));
        assert!(!zone_removed(&m, RULE_GLOBAL));
        assert!(!zone_removed(&m, RULE_FAILSAFE));
        assert_eq!(rule_label(&m, 2), "old");
    }

    #[test]
    fn status_says_why_nothing_is_enforcing() {
        let m = meta();
        let links = ["eth0".to_string()];
        let ok = Status::new(None, "/p", 4, &m, Vec::new(), &links);
        assert!(ok.enforcing && ok.not_enforcing.is_none());
        let gen0 = Status::new(None, "/p", 0, &m, Vec::new(), &links);
        assert!(!gen0.enforcing);
        assert!(gen0.not_enforcing.unwrap().contains("generation 0"));
        let unlinked = Status::new(None, "/p", 4, &m, Vec::new(), &[]);
        assert!(unlinked
            .not_enforcing
            .unwrap()
            .contains("links of eth0 are gone"));
        let none = Status::new(None, "/p", 4, &Meta::default(), Vec::new(), &[]);
        assert!(none.not_enforcing.unwrap().contains("no interface"));
        let absent = Status::absent(None, "/p");
        assert!(!absent.enforcing);
        assert!(absent
            .to_string()
            .starts_with("enforcing   NO: no pinned filter under /p"));
    }

    #[test]
    fn the_quota_line_names_the_limit_the_counts_and_the_top_consumers() {
        let q = crate::loader::ZoneQuotaUse {
            zone: "api".into(),
            limit_bytes: 10_000_000_000,
            period: "day".into(),
            counted: 3,
            over: 1,
            top: vec![crate::loader::Consumer {
                source: "10.0.0.5".into(),
                bytes: 10_500_000_000,
            }],
        };
        assert_eq!(
            quota_line(&q),
            "api: 10.0 GB per UTC day; 3 counted, 1 over; top 10.0.0.5 10.5 GB"
        );
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 kB");
    }

    #[test]
    fn the_bans_line_names_each_tag_and_its_drops() {
        let b = BanSummary {
            in_force: 3,
            tags: vec![
                BanTag {
                    tag: "sshd".into(),
                    bans: 2,
                    dropped: 14,
                },
                BanTag {
                    tag: String::new(),
                    bans: 1,
                    dropped: 0,
                },
            ],
        };
        assert_eq!(
            b.to_string(),
            "3 in force: sshd 2 (14 frames dropped), (untagged) 1 (0 frames dropped)"
        );
    }

    #[test]
    fn the_daemons_word_that_it_lost_the_filter_wins() {
        let m = meta();
        let d = DaemonInfo {
            pid: 9,
            version: "1".into(),
            pin_root: "/p".into(),
            enforcing: false,
            not_enforcing: Some("the filter was removed".into()),
            last_reload: None,
            bans: None,
            crowdsec: None,
            feeds: Vec::new(),
        };
        let s = Status::new(Some(d), "/p", 4, &m, Vec::new(), &["eth0".into()]);
        assert!(!s.enforcing);
        let text = s.to_string();
        assert!(text.contains("NO: the filter was removed"), "{text}");
        assert!(text.contains("PID 9, version 1"), "{text}");
    }
}
