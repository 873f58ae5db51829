//! `rate` of a `[[zone]]`: packet and connection limits, parsed with located
//! errors, compiled to the kernel's [`filter_common::ZoneRates`] and
//! explained in words for `check`.
//!
//! ```toml
//! rate = { packets = "200/s", burst = 400 }                  # one limit
//! rate = [{ packets = "200/s", burst = 400, per = "/24" },    # or both
//!         { connections = "20/s", burst = 40 }]
//! ```
use std::fmt;

use filter_common::{rate_burst, rate_params, RateLimit, ZoneRates, RATE_TABLE_MAX};
use toml_edit::{Item, TableLike, Value};

use super::diag::{excerpt, nearest};
use super::parse::{Field, Walker};

/// Keys of one `rate` table.
pub const RATE_KEYS: &[&str] = &[
    "packets",
    "connections",
    "burst",
    "per",
    "ceiling",
    "new_sources",
    "tracked",
];
/// Zone keys of this feature (refused on failsafe rules).
pub const ZONE_RATE_KEYS: &[&str] = &["rate"];

/// Sources a limit tracks by default (`[defaults] rate_tracked`).
pub const DEFAULT_TRACKED: u32 = 4096;
/// The most a limit may admit: a packet per 100 ns. Beyond it a limit is no
/// limit (and the interval's rounding would be coarse).
pub const MAX_PER_SECOND: u64 = 10_000_000;
/// Largest burst.
pub const MAX_BURST: u64 = 10_000_000;
/// The default ceiling is this many times the per-key limit.
pub const DEFAULT_CEILING_FACTOR: u64 = 10;
/// Default budget of new keys a second.
pub const DEFAULT_NEW_SOURCES: u64 = 100;

const NS: u64 = 1_000_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateKind {
    Packets,
    Connections,
}

impl RateKind {
    pub fn key(self) -> &'static str {
        match self {
            RateKind::Packets => "packets",
            RateKind::Connections => "connections",
        }
    }
    pub fn index(self) -> usize {
        match self {
            RateKind::Packets => filter_common::RATE_KIND_PACKETS as usize,
            RateKind::Connections => filter_common::RATE_KIND_CONNECTIONS as usize,
        }
    }
    fn noun(self) -> &'static str {
        match self {
            RateKind::Packets => "packets",
            RateKind::Connections => "new connections",
        }
    }
}

/// `count` per `period` (`"200/s"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u64,
    pub period: Period,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Second,
    Minute,
    Hour,
    Day,
}

impl Period {
    pub fn ns(self) -> u64 {
        match self {
            Period::Second => NS,
            Period::Minute => 60 * NS,
            Period::Hour => 3600 * NS,
            Period::Day => 86_400 * NS,
        }
    }
    fn short(self) -> &'static str {
        match self {
            Period::Second => "s",
            Period::Minute => "min",
            Period::Hour => "h",
            Period::Day => "day",
        }
    }
}

impl Rate {
    fn times(&self, k: u64) -> Rate {
        Rate {
            count: self.count.saturating_mul(k),
            period: self.period,
        }
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, self.period.short())
    }
}

/// What one bucket covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Per {
    /// One bucket (or usage counter) for the whole zone.
    pub zone: bool,
    /// Mask lengths of a source's key.
    pub v4_len: u8,
    pub v6_len: u8,
}

impl Per {
    pub const SOURCE: Per = Per {
        zone: false,
        v4_len: 32,
        v6_len: 128,
    };

    /// The mask lengths a source's key is cut to (IPv4, IPv6): 0 for the
    /// whole zone.
    pub fn masks(&self) -> (u8, u8) {
        if self.zone {
            (0, 0)
        } else {
            (self.v4_len, self.v6_len)
        }
    }
}

impl fmt::Display for Per {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.zone {
            return f.write_str("for the whole zone");
        }
        match (self.v4_len, self.v6_len) {
            (32, 128) => f.write_str("per source"),
            (32, v6) => write!(f, "per IPv4 source and IPv6 /{v6}"),
            (v4, 128) => write!(f, "per IPv4 /{v4} and IPv6 source"),
            (v4, v6) => write!(f, "per IPv4 /{v4} and IPv6 /{v6}"),
        }
    }
}

/// One compiled limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateSpec {
    pub kind: RateKind,
    pub rate: Rate,
    pub burst: u64,
    pub per: Per,
    /// The zone's aggregate ceiling and its burst.
    pub ceiling: Rate,
    pub ceiling_burst: u64,
    pub new_sources: Rate,
    /// Keys tracked (0 for `per = "zone"`).
    pub tracked: u32,
}

impl RateSpec {
    /// The kernel's settings.
    pub fn limit(&self) -> RateLimit {
        let (interval_ns, tolerance_ns) =
            rate_params(self.rate.count, self.rate.period.ns(), self.burst);
        let (ceiling_interval_ns, ceiling_tolerance_ns) = rate_params(
            self.ceiling.count,
            self.ceiling.period.ns(),
            self.ceiling_burst,
        );
        // One period's worth of new keys at once.
        let new_burst = self.new_sources.count;
        let (new_interval_ns, new_tolerance_ns) = rate_params(
            self.new_sources.count,
            self.new_sources.period.ns(),
            new_burst,
        );
        RateLimit {
            interval_ns,
            tolerance_ns,
            ceiling_interval_ns,
            ceiling_tolerance_ns,
            new_interval_ns,
            new_tolerance_ns,
            tracked: self.tracked,
            v4_len: self.per.masks().0,
            v6_len: self.per.masks().1,
            _pad: [0; 2],
        }
    }

    /// `check`'s sentence: "at most 200 packets/s per source, bursts of 400; …".
    pub fn explain(&self) -> String {
        let what = self.kind.noun();
        let burst = self.burst_words();
        if self.per.zone {
            return format!(
                "at most {} {what}/{} for the whole zone, bursts of {burst}",
                self.rate.count,
                self.rate.period.short(),
            );
        }
        format!(
            "at most {} {what}/{} {}, bursts of {}; {} sources tracked at most ({} new a {}), \
             the others share {} (bursts of {}), and the zone admits no more than that beyond \
             what its tracked sources use",
            self.rate.count,
            self.rate.period.short(),
            self.per,
            burst,
            self.tracked,
            self.new_sources.count,
            period_word(self.new_sources.period),
            self.ceiling,
            self.ceiling_burst,
        )
    }
}

impl RateSpec {
    /// The burst as enforced: one raised to 10 ms of the rate says so.
    fn burst_words(&self) -> String {
        let real = rate_burst(self.rate.count, self.rate.period.ns(), self.burst);
        if real > self.burst {
            format!(
                "{real} (raised from {}: the datapath's clock moves a kernel tick, up to 10 ms, \
                 at a time)",
                self.burst
            )
        } else {
            self.burst.to_string()
        }
    }
}

fn period_word(p: Period) -> &'static str {
    match p {
        Period::Second => "second",
        Period::Minute => "minute",
        Period::Hour => "hour",
        Period::Day => "day",
    }
}

/// A zone's limits.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ZoneLimits {
    pub packets: Option<RateSpec>,
    pub connections: Option<RateSpec>,
}

impl ZoneLimits {
    pub fn specs(&self) -> impl Iterator<Item = &RateSpec> {
        self.packets.iter().chain(self.connections.iter())
    }
    /// `RATES` value of the zone.
    pub fn zone_rates(&self) -> ZoneRates {
        let mut z = ZoneRates::default();
        for s in self.specs() {
            z.limits[s.kind.index()] = s.limit();
        }
        z
    }
}

/// Parses `"200/s"`: (message, help) on error.
pub fn parse_rate(s: &str) -> Result<Rate, (String, String)> {
    let example = "write a count per unit: \"200/s\", \"3000/min\", \"10/h\" or \"100/day\"";
    let Some((n, unit)) = s.trim().split_once('/') else {
        return Err((
            format!("rate \"{}\" has no unit", excerpt(s)),
            example.into(),
        ));
    };
    let period = match unit.trim() {
        "s" | "sec" | "second" => Period::Second,
        "m" | "min" | "minute" => Period::Minute,
        "h" | "hour" => Period::Hour,
        "d" | "day" => Period::Day,
        other => {
            let units = ["s", "min", "h", "day"];
            let help = match nearest(other, &units) {
                Some(u) => format!("did you mean \"{}/{u}\"?", n.trim()),
                None => {
                    format!("the units are s (second), min (minute), h (hour) and day; {example}")
                }
            };
            return Err((format!("unknown rate unit \"{}\"", excerpt(other)), help));
        }
    };
    let count: u64 = match n.trim().parse::<i64>() {
        Ok(c) if c >= 1 => c as u64,
        Ok(c) => {
            return Err((
                format!("rate {c}/{} must be at least 1", period.short()),
                "a limit admits at least one packet per period; to refuse every source use \
                 allow = []"
                    .into(),
            ))
        }
        Err(_) => {
            return Err((
                format!("rate \"{}\" does not start with a whole number", excerpt(s)),
                example.into(),
            ))
        }
    };
    let rate = Rate { count, period };
    if count > MAX_PER_SECOND * (period.ns() / NS) {
        return Err((
            format!("rate {rate} is beyond the largest limit ({MAX_PER_SECOND}/s)"),
            "a limit above 10 million a second limits nothing; remove `rate` instead".into(),
        ));
    }
    Ok(rate)
}

/// Parses one `per` string (of a rate limit or a quota).
pub(super) fn parse_per_one(s: &str, per: &mut Per) -> Result<(), (String, String)> {
    let help = "per is \"source\" (the default), \"zone\" (one for the whole zone), an IPv4 \
                prefix length \"/8\" to \"/32\", an IPv6 one \"/48\" to \"/128\", or one of \
                each: per = [\"/24\", \"/64\"]";
    match s.trim() {
        "source" => return Ok(()),
        "zone" => {
            per.zone = true;
            return Ok(());
        }
        _ => {}
    }
    let Some(n) = s.trim().strip_prefix('/') else {
        let help = match nearest(s, &["source", "zone"]) {
            Some(n) => format!("did you mean \"{n}\"?"),
            None => help.into(),
        };
        return Err((format!("unknown `per` \"{}\"", excerpt(s)), help));
    };
    match n.parse::<u32>() {
        Ok(l @ 8..=32) => per.v4_len = l as u8,
        Ok(l @ 48..=128) => per.v6_len = l as u8,
        _ => {
            return Err((
                format!(
                    "`per = \"{}\"` is neither an IPv4 length (/8 to /32) nor an IPv6 length \
                     (/48 to /128)",
                    excerpt(s)
                ),
                help.into(),
            ))
        }
    }
    Ok(())
}

impl Walker<'_> {
    /// `rate` of a zone table, or `None` (absent or reported). `tracked` is
    /// `[defaults] rate_tracked`.
    pub(super) fn zone_rate(&mut self, t: &dyn TableLike, tracked: u32) -> Option<ZoneLimits> {
        let item = t.get("rate")?;
        let key = t.key("rate").and_then(|k| k.span());
        let tables: Vec<(&dyn TableLike, _)> = match item {
            Item::Value(Value::InlineTable(it)) => vec![(it as &dyn TableLike, item.span())],
            Item::Table(tb) => vec![(tb as &dyn TableLike, key.clone())],
            _ => self.table_array(t, "rate"),
        };
        if tables.is_empty() {
            self.diags.at(
                item.span().or(key),
                "`rate` is empty",
                Some("e.g. rate = { packets = \"200/s\", burst = 400 }, or remove it".into()),
            );
            return None;
        }
        let mut out = ZoneLimits::default();
        let mut ok = true;
        for (rt, span) in tables {
            match self.one_rate(rt, span.clone(), tracked) {
                Some(spec) => {
                    let slot = match spec.kind {
                        RateKind::Packets => &mut out.packets,
                        RateKind::Connections => &mut out.connections,
                    };
                    if slot.is_some() {
                        self.diags.at(
                            span,
                            format!("a second `{}` limit in one zone", spec.kind.key()),
                            Some(
                                "a zone has at most one packet and one connection limit; \
                                 merge them into one"
                                    .into(),
                            ),
                        );
                        ok = false;
                    } else {
                        *slot = Some(spec);
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// `per` of a table (a rate limit's, a quota's; `dotted` names it in
    /// messages): `"source"` when absent, `None` when wrong (reported).
    pub(super) fn per(&mut self, t: &dyn TableLike, dotted: &str) -> Option<Per> {
        let mut per = Per::SOURCE;
        let Some(item) = t.get("per") else {
            return Some(per);
        };
        let mut per_bad = false;
        let entries: Vec<(&str, _)> = match item {
            Item::Value(Value::String(s)) => vec![(s.value().as_str(), item.span())],
            Item::Value(Value::Array(a)) if (1..=2).contains(&a.len()) => a
                .iter()
                .filter_map(|v| v.as_str().map(|s| (s, v.span())))
                .collect(),
            _ => {
                self.type_error(item, dotted, "a string (or two)", "per = \"source\"");
                return None;
            }
        };
        let (mut v4, mut v6) = (false, false);
        for (s, sp) in entries {
            let before = per;
            if let Err((m, h)) = parse_per_one(s, &mut per) {
                self.diags.at(sp, m, Some(h));
                per_bad = true;
                continue;
            }
            let twice = (per.v4_len != before.v4_len && std::mem::replace(&mut v4, true))
                || (per.v6_len != before.v6_len && std::mem::replace(&mut v6, true));
            if twice {
                self.diags.at(
                    sp,
                    "`per` names one family's length twice",
                    Some(
                        "give at most one IPv4 and one IPv6 length: per = [\"/24\", \"/64\"]"
                            .into(),
                    ),
                );
                per_bad = true;
            }
        }
        (!per_bad).then_some(per)
    }

    fn positive(&mut self, t: &dyn TableLike, key: &str, max: u64, what: &str) -> Field<u64> {
        let Some(item) = t.get(key) else {
            return Field::Missing;
        };
        match item.as_integer() {
            Some(n) if n >= 1 && (n as u64) <= max => Field::Ok(n as u64),
            Some(n) => {
                let help = if n <= 0 {
                    format!("{key} counts {what}: at least 1")
                } else {
                    format!("{key} counts {what}: at most {max}")
                };
                self.diags.at(
                    item.span(),
                    format!("`rate.{key}` {n} is out of range (1 to {max})"),
                    Some(help),
                );
                Field::Bad
            }
            None => {
                self.type_error(
                    item,
                    &format!("rate.{key}"),
                    "an integer",
                    &format!("{key} = 400"),
                );
                Field::Bad
            }
        }
    }

    fn rate_string(&mut self, t: &dyn TableLike, key: &str) -> Field<Rate> {
        match self.string(
            t,
            key,
            &format!("rate.{key}"),
            &format!("{key} = \"200/s\""),
        ) {
            Field::Missing => Field::Missing,
            Field::Bad => Field::Bad,
            Field::Ok((s, span)) => match parse_rate(s) {
                Ok(r) => Field::Ok(r),
                Err((m, h)) => {
                    self.diags.at(span, m, Some(h));
                    Field::Bad
                }
            },
        }
    }

    fn one_rate(
        &mut self,
        t: &dyn TableLike,
        span: Option<std::ops::Range<usize>>,
        default_tracked: u32,
    ) -> Option<RateSpec> {
        self.check_keys(t, RATE_KEYS, "in a zone's `rate`");
        let errors = self.diags.len();
        let packets = self.rate_string(t, "packets");
        let connections = self.rate_string(t, "connections");
        let (kind, rate) = match (packets, connections) {
            (Field::Ok(r), Field::Missing) => (RateKind::Packets, Some(r)),
            (Field::Missing, Field::Ok(r)) => (RateKind::Connections, Some(r)),
            (Field::Missing, Field::Missing) => {
                self.diags.at(
                    span.clone(),
                    "a `rate` needs `packets` or `connections`",
                    Some(
                        "e.g. rate = { packets = \"200/s\", burst = 400 } or \
                         rate = { connections = \"20/s\", burst = 40 }"
                            .into(),
                    ),
                );
                (RateKind::Packets, None)
            }
            (p, c) => {
                if !matches!(p, Field::Bad) && !matches!(c, Field::Bad) {
                    self.diags.at(
                        t.key("connections").and_then(|k| k.span()),
                        "one `rate` table has both `packets` and `connections`",
                        Some(
                            "give each limit its own table: rate = [{ packets = \"200/s\" }, \
                             { connections = \"20/s\" }]"
                                .into(),
                        ),
                    );
                }
                (RateKind::Packets, None)
            }
        };
        let burst = self.positive(t, "burst", MAX_BURST, "packets admitted at once");
        let tracked = self.positive(
            t,
            "tracked",
            u64::from(RATE_TABLE_MAX),
            "the sources (or prefixes) this limit keeps a bucket for",
        );
        let (per, mut per_bad) = match self.per(t, "rate.per") {
            Some(p) => (p, false),
            None => (Per::SOURCE, true),
        };
        let ceiling = self.rate_string(t, "ceiling");
        let new_sources = self.rate_string(t, "new_sources");
        if per.zone {
            for key in ["ceiling", "new_sources", "tracked"] {
                if t.get(key).is_some() {
                    self.diags.at(
                        t.key(key).and_then(|k| k.span()),
                        format!("`{key}` with per = \"zone\""),
                        Some(
                            "a zone-wide limit is one bucket: its rate is the zone's ceiling and \
                             no sources are tracked; remove the key"
                                .into(),
                        ),
                    );
                    per_bad = true;
                }
            }
        }
        let rate = rate?;
        if per_bad || self.diags.len() != errors {
            return None;
        }
        // One period's worth unless given.
        let burst = match burst {
            Field::Ok(b) => b,
            _ => rate.count.min(MAX_BURST),
        };
        if per.zone {
            return Some(RateSpec {
                kind,
                rate,
                burst,
                per,
                ceiling: rate,
                ceiling_burst: burst,
                new_sources: rate,
                tracked: 0,
            });
        }
        let (ceiling, ceiling_burst) = match ceiling {
            Field::Ok(c) => {
                // The same proportion of burst to rate as the limit's.
                let b = (u128::from(burst) * u128::from(c.count) * u128::from(rate.period.ns())
                    / (u128::from(rate.count) * u128::from(c.period.ns())))
                .clamp(1, u128::from(MAX_BURST)) as u64;
                (c, b)
            }
            _ => (
                rate.times(DEFAULT_CEILING_FACTOR),
                burst.saturating_mul(DEFAULT_CEILING_FACTOR).min(MAX_BURST),
            ),
        };
        let new_sources = match new_sources {
            Field::Ok(n) => n,
            _ => Rate {
                count: DEFAULT_NEW_SOURCES,
                period: Period::Second,
            },
        };
        let tracked = match tracked {
            Field::Ok(n) => n as u32,
            _ => default_tracked,
        };
        Some(RateSpec {
            kind,
            rate,
            burst,
            per,
            ceiling,
            ceiling_burst,
            new_sources,
            tracked,
        })
    }

    /// `[defaults] rate_tracked`.
    pub(super) fn default_tracked(&mut self, t: &dyn TableLike) -> u32 {
        match self.positive(
            t,
            "rate_tracked",
            u64::from(RATE_TABLE_MAX),
            "the sources each rate limit keeps a bucket for",
        ) {
            Field::Ok(n) => n as u32,
            _ => DEFAULT_TRACKED,
        }
    }

    /// The zones' `tracked` numbers share one table of `RATE_TABLE_MAX`
    /// entries: reported at the limit that overflows it.
    pub(super) fn rate_table_room(&mut self, zones: &[(&dyn TableLike, Option<&ZoneLimits>)]) {
        let mut total: u64 = 0;
        for (t, limits) in zones {
            let Some(l) = limits else { continue };
            total += l.specs().map(|s| u64::from(s.tracked)).sum::<u64>();
            if total > u64::from(RATE_TABLE_MAX) {
                self.diags.at(
                    t.key("rate").and_then(|k| k.span()),
                    format!(
                        "the zones' rate limits track {total} sources in all, more than the \
                         table holds ({RATE_TABLE_MAX})"
                    ),
                    Some(
                        "lower `tracked` of some limits (or [defaults] rate_tracked), or \
                         aggregate sources with per = \"/24\" / \"/64\""
                            .into(),
                    ),
                );
                return;
            }
        }
    }

    pub(super) fn no_failsafe_rate(&mut self, t: &dyn TableLike) {
        for key in ZONE_RATE_KEYS {
            if t.get(key).is_some() {
                self.diags.at(
                    t.key(key).and_then(|k| k.span()),
                    format!("a failsafe rule cannot have a `{key}`"),
                    Some(
                        "failsafe rules keep admin access open whatever the traffic; to limit a \
                         port, claim it with a [[zone]] and give that zone a `rate`"
                            .into(),
                    ),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_their_units() {
        assert_eq!(
            parse_rate("200/s").unwrap(),
            Rate {
                count: 200,
                period: Period::Second
            }
        );
        assert_eq!(parse_rate("3000/min").unwrap().period, Period::Minute);
        assert_eq!(parse_rate("10/hour").unwrap().period, Period::Hour);
        assert!(parse_rate("200/fortnight")
            .unwrap_err()
            .0
            .contains("unknown rate unit"));
        assert!(parse_rate("-5/s").unwrap_err().0.contains("at least 1"));
        assert!(parse_rate("0/s").is_err());
        assert!(parse_rate("200").unwrap_err().0.contains("no unit"));
        assert!(parse_rate("20000000/s").unwrap_err().0.contains("beyond"));
        assert!(parse_rate("many/s").is_err());
    }

    #[test]
    fn per_takes_a_keyword_or_one_length_per_family() {
        let mut p = Per::SOURCE;
        parse_per_one("/24", &mut p).unwrap();
        parse_per_one("/64", &mut p).unwrap();
        assert_eq!((p.v4_len, p.v6_len), (24, 64));
        let mut q = Per::SOURCE;
        assert!(parse_per_one("/33", &mut q).is_err());
        assert!(parse_per_one("/0", &mut q).is_err());
        assert!(parse_per_one("sourse", &mut q)
            .unwrap_err()
            .1
            .contains("\"source\""));
    }
}
