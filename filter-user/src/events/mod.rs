//! Sampled decisions ("events"): what the datapath samples and how fast
//! (`EVENTS_CFG`, pinned, so a runtime switch outlives the daemon), its
//! counters (`EVENTS_STATE`), and the records read from the `EVENTS` ring.
//!
//! - [`Sampling`]: the setting, to and from the map's [`EventsConfig`];
//! - `record`: an [`Event`](filter_common::Event) decoded and named
//!   (interface, zone, reason), as text and JSON;
//! - `cli`: `portcullis events`, `top`, `sampling`, `log-packets`.
//!
//! The policy's `[events]` gives the setting at start and at each reload,
//! unless one was made at run time (`portcullis sampling`, `log-packets`):
//! that one carries the OVERRIDE flag and stays (also across restarts) until
//! `portcullis sampling --reset`.
pub mod cli;
pub mod record;

use std::{fmt, path::Path};

use aya::maps::{Array, Map, MapData, PerCpuArray};
use filter_common::{EventsConfig, EventsState, MAP_EVENTS_CFG, MAP_EVENTS_STATE};
use serde::{Deserialize, Serialize};

use crate::loader::PinRoot;

pub use record::{Names, Record};

/// Largest `rate` (events per second per CPU) and `burst`.
pub const MAX_RATE: u32 = 1_000_000;
pub const MAX_BURST: u32 = 1_000_000;
/// The policy's defaults: low, so a flood costs little even when on.
pub const DEFAULT_RATE: u32 = 10;
pub const DEFAULT_BURST: u32 = 20;

#[derive(Debug, thiserror::Error)]
pub enum EventsError {
    #[error(
        "no portcullis filter is pinned under {0} (is the daemon running with this --pin-root?)"
    )]
    NoFilter(String),
    #[error("map {map}: {source}")]
    Map {
        map: &'static str,
        #[source]
        source: aya::maps::MapError,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Stream(String),
}

fn map_err(map: &'static str) -> impl FnOnce(aya::maps::MapError) -> EventsError {
    move |source| EventsError::Map { map, source }
}

/// Which decisions are sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Mode {
    #[default]
    #[serde(rename = "off")]
    Off,
    #[serde(rename = "drops")]
    Drops,
    /// Drops and the passes of auditing zones.
    #[serde(rename = "drops+audit")]
    DropsAudit,
    /// Every decision.
    #[serde(rename = "all")]
    All,
}

impl Mode {
    pub const NAMES: [&'static str; 4] = ["off", "drops", "drops+audit", "all"];

    pub fn parse(s: &str) -> Option<Mode> {
        match s {
            "off" => Some(Mode::Off),
            "drops" => Some(Mode::Drops),
            "drops+audit" => Some(Mode::DropsAudit),
            "all" => Some(Mode::All),
            _ => None,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            Mode::Off => "off",
            Mode::Drops => "drops",
            Mode::DropsAudit => "drops+audit",
            Mode::All => "all",
        }
    }

    const fn flags(self) -> u32 {
        match self {
            Mode::Off => 0,
            Mode::Drops => EventsConfig::DROPS,
            Mode::DropsAudit => EventsConfig::DROPS | EventsConfig::AUDIT,
            Mode::All => EventsConfig::CLASSES,
        }
    }

    fn of_flags(flags: u32) -> Mode {
        let c = flags & EventsConfig::CLASSES;
        if c == 0 {
            Mode::Off
        } else if c == EventsConfig::DROPS {
            Mode::Drops
        } else if c == EventsConfig::DROPS | EventsConfig::AUDIT {
            Mode::DropsAudit
        } else {
            Mode::All
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The policy's `[events]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventsPolicy {
    pub sample: Mode,
    pub rate: u32,
    pub burst: u32,
}

impl Default for EventsPolicy {
    fn default() -> Self {
        EventsPolicy {
            sample: Mode::Off,
            rate: DEFAULT_RATE,
            burst: DEFAULT_BURST,
        }
    }
}

/// What `EVENTS_CFG[0]` says, in words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sampling {
    pub sample: Mode,
    /// Events per second, per CPU.
    pub rate: u32,
    /// Tokens a CPU can save up.
    pub burst: u32,
    /// The daemon logs each event (packet logging).
    pub log: bool,
    /// Set at run time: kept over the policy's `[events]`.
    #[serde(rename = "runtime")]
    pub runtime_override: bool,
}

impl Sampling {
    pub fn of_policy(p: &EventsPolicy) -> Sampling {
        Sampling {
            sample: p.sample,
            rate: p.rate,
            burst: p.burst,
            log: false,
            runtime_override: false,
        }
    }

    /// The map value: the token cost and cap in nanoseconds, so the
    /// datapath needs no division.
    pub fn to_config(&self) -> EventsConfig {
        let rate = self.rate.clamp(1, MAX_RATE);
        let burst = self.burst.clamp(1, MAX_BURST);
        let cost_ns = 1_000_000_000 / u64::from(rate);
        let mut flags = self.sample.flags();
        if self.log {
            flags |= EventsConfig::LOG;
        }
        if self.runtime_override {
            flags |= EventsConfig::OVERRIDE;
        }
        EventsConfig {
            flags,
            rate,
            cost_ns,
            cap_ns: cost_ns * u64::from(burst),
            burst,
            _pad: 0,
        }
    }

    /// A fresh (all-zero) map reads as the defaults, off.
    pub fn of_config(c: &EventsConfig) -> Sampling {
        let or = |v: u32, d: u32| if v == 0 { d } else { v };
        Sampling {
            sample: Mode::of_flags(c.flags),
            rate: or(c.rate, DEFAULT_RATE),
            burst: or(c.burst, DEFAULT_BURST),
            log: c.flags & EventsConfig::LOG != 0,
            runtime_override: c.flags & EventsConfig::OVERRIDE != 0,
        }
    }

    pub fn check(&self) -> Result<(), EventsError> {
        if !(1..=MAX_RATE).contains(&self.rate) {
            return Err(EventsError::Invalid(format!(
                "rate {} is out of range: 1 to {MAX_RATE} events per second per CPU",
                self.rate
            )));
        }
        if !(1..=MAX_BURST).contains(&self.burst) {
            return Err(EventsError::Invalid(format!(
                "burst {} is out of range: 1 to {MAX_BURST}",
                self.burst
            )));
        }
        Ok(())
    }
}

impl fmt::Display for Sampling {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.sample == Mode::Off {
            f.write_str("off")?;
        } else {
            write!(
                f,
                "{} at {}/s per CPU (burst {})",
                self.sample, self.rate, self.burst
            )?;
        }
        f.write_str(if self.log {
            "; packet logging on"
        } else {
            "; packet logging off"
        })?;
        if self.runtime_override {
            f.write_str("; set at run time (kept over the policy's [events])")?;
        }
        Ok(())
    }
}

/// Events counters, summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub emitted: u64,
    pub suppressed: u64,
    pub lost: u64,
}

/// The pinned `EVENTS_CFG` and `EVENTS_STATE`.
pub struct EventsMaps {
    cfg: Array<MapData, EventsConfig>,
    state: PerCpuArray<MapData, EventsState>,
}

impl EventsMaps {
    pub fn open(root: &PinRoot) -> Result<EventsMaps, EventsError> {
        if !root.has_maps() {
            return Err(EventsError::NoFilter(root.path().display().to_string()));
        }
        Self::open_at(&root.map(MAP_EVENTS_CFG), &root.map(MAP_EVENTS_STATE))
    }

    fn open_at(cfg: &Path, state: &Path) -> Result<EventsMaps, EventsError> {
        let open = |path: &Path, name: &'static str| -> Result<Map, EventsError> {
            let data = MapData::from_pin(path).map_err(map_err(name))?;
            Map::from_map_data(data).map_err(map_err(name))
        };
        Ok(EventsMaps {
            cfg: Array::try_from(open(cfg, MAP_EVENTS_CFG)?).map_err(map_err(MAP_EVENTS_CFG))?,
            state: PerCpuArray::try_from(open(state, MAP_EVENTS_STATE)?)
                .map_err(map_err(MAP_EVENTS_STATE))?,
        })
    }

    /// Handles on maps taken from a loaded object (tests, no pins).
    pub fn from_maps(cfg: Map, state: Map) -> Result<EventsMaps, EventsError> {
        Ok(EventsMaps {
            cfg: Array::try_from(cfg).map_err(map_err(MAP_EVENTS_CFG))?,
            state: PerCpuArray::try_from(state).map_err(map_err(MAP_EVENTS_STATE))?,
        })
    }

    pub fn config(&self) -> Result<EventsConfig, EventsError> {
        self.cfg.get(&0, 0).map_err(map_err(MAP_EVENTS_CFG))
    }

    pub fn sampling(&self) -> Result<Sampling, EventsError> {
        Ok(Sampling::of_config(&self.config()?))
    }

    /// One 32-byte array write: the datapath sees the old or the new setting.
    pub fn set(&mut self, s: &Sampling) -> Result<(), EventsError> {
        s.check()?;
        self.cfg
            .set(0, s.to_config(), 0)
            .map_err(map_err(MAP_EVENTS_CFG))
    }

    pub fn stats(&self) -> Result<Stats, EventsError> {
        let per_cpu = self.state.get(&0, 0).map_err(map_err(MAP_EVENTS_STATE))?;
        Ok(per_cpu.iter().fold(Stats::default(), |a, s| Stats {
            emitted: a.emitted + s.emitted,
            suppressed: a.suppressed + s.suppressed,
            lost: a.lost + s.lost,
        }))
    }

    /// At start and reload: the policy's setting, unless one made at run
    /// time is in force (returned as `Err` with it, to be logged).
    pub fn apply_policy(&mut self, p: &EventsPolicy) -> Result<Sampling, Sampling> {
        let now = match self.sampling() {
            Ok(s) => s,
            Err(_) => Sampling::of_policy(p),
        };
        if now.runtime_override {
            return Err(now);
        }
        let want = Sampling::of_policy(p);
        if want != now || self.config().map(|c| c != want.to_config()).unwrap_or(true) {
            // A failure here leaves the old setting; it is not the policy's
            // business to fail over.
            if let Err(e) = self.set(&want) {
                tracing::warn!("events: writing the policy's [events]: {e}");
            }
        }
        Ok(want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_survives_the_map_value() {
        for sample in [Mode::Off, Mode::Drops, Mode::DropsAudit, Mode::All] {
            for (log, runtime_override) in [(false, false), (true, true), (true, false)] {
                let s = Sampling {
                    sample,
                    rate: 37,
                    burst: 5,
                    log,
                    runtime_override,
                };
                assert_eq!(Sampling::of_config(&s.to_config()), s);
            }
        }
    }

    #[test]
    fn rate_and_burst_become_cost_and_cap() {
        let c = Sampling {
            sample: Mode::Drops,
            rate: 10,
            burst: 20,
            log: false,
            runtime_override: false,
        }
        .to_config();
        assert_eq!(c.cost_ns, 100_000_000);
        assert_eq!(c.cap_ns, 2_000_000_000);
        assert_eq!(c.flags, EventsConfig::DROPS);
        let all = Sampling {
            sample: Mode::All,
            ..Sampling::of_config(&c)
        }
        .to_config();
        assert_eq!(all.flags & EventsConfig::CLASSES, EventsConfig::CLASSES);
    }

    #[test]
    fn a_fresh_map_reads_as_off_with_the_defaults() {
        let s = Sampling::of_config(&EventsConfig::default());
        assert_eq!(s.sample, Mode::Off);
        assert_eq!((s.rate, s.burst), (DEFAULT_RATE, DEFAULT_BURST));
        assert!(!s.log && !s.runtime_override);
    }

    #[test]
    fn out_of_range_rates_are_refused() {
        let mut s = Sampling::of_policy(&EventsPolicy::default());
        s.rate = 0;
        assert!(s.check().is_err());
        s.rate = MAX_RATE + 1;
        assert!(s.check().is_err());
        s.rate = 1;
        s.burst = 0;
        assert!(s.check().is_err());
    }

    #[test]
    fn modes_parse_as_they_print() {
        for n in Mode::NAMES {
            assert_eq!(Mode::parse(n).unwrap().as_str(), n);
        }
        assert_eq!(Mode::parse("drop"), None);
    }
}
