//! `quota` of a `[[zone]]`: a transfer quota per source (or prefix, or the
//! whole zone) and UTC-aligned period, parsed with located errors, compiled
//! to the kernel's [`filter_common::ZoneQuota`] at apply time (the period
//! clock comes from a [`SchedClock`], like schedules) and explained in words
//! for `check`.
//!
//! ```toml
//! quota = { bytes = "10 GB", period = "day", direction = "both", per = "source" }
//! ```
use std::collections::HashMap;
use std::fmt;

use filter_common::{
    quota_tag, quota_zone_key, ZoneQuota, QUOTA_DAY, QUOTA_DOWNLOAD, QUOTA_HOUR, QUOTA_MINUTE,
    QUOTA_MONTH, QUOTA_MONTHS, QUOTA_UPLOAD,
};
use jiff::{civil::DateTime, tz::Offset, Timestamp};
use toml_edit::{Item, TableLike, Value};

use super::compile::ZoneAction;
use super::diag::{excerpt, nearest, Problem};
use super::parse::{Field, Walker};
use super::rate::Per;
use super::schedule::SchedClock;

/// Keys of a `quota` table.
pub const QUOTA_KEYS: &[&str] = &["bytes", "period", "direction", "per"];
/// Zone keys of this feature (refused on failsafe rules).
pub const ZONE_QUOTA_KEYS: &[&str] = &["quota"];
/// The largest quota: 1 EB (10^18 bytes). Beyond it a quota limits nothing
/// (and the per-frame counter could come near wrapping).
pub const MAX_QUOTA_BYTES: u64 = 1_000_000_000_000_000_000;

const NS: u64 = 1_000_000_000;

/// Units of `bytes`, as written, and their size in bytes.
pub const UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("kB", 1_000),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
];

/// `period`: UTC-aligned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaPeriod {
    Minute,
    Hour,
    Day,
    /// A calendar month (UTC).
    Month,
}

impl QuotaPeriod {
    pub const NAMES: [(&'static str, QuotaPeriod); 4] = [
        ("minute", QuotaPeriod::Minute),
        ("hour", QuotaPeriod::Hour),
        ("day", QuotaPeriod::Day),
        ("month", QuotaPeriod::Month),
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            QuotaPeriod::Minute => "minute",
            QuotaPeriod::Hour => "hour",
            QuotaPeriod::Day => "day",
            QuotaPeriod::Month => "month",
        }
    }

    /// The kind tagged into period numbers (`QUOTA_MINUTE`, …).
    pub const fn kind(self) -> u64 {
        match self {
            QuotaPeriod::Minute => QUOTA_MINUTE,
            QuotaPeriod::Hour => QUOTA_HOUR,
            QuotaPeriod::Day => QUOTA_DAY,
            QuotaPeriod::Month => QUOTA_MONTH,
        }
    }

    /// Length of a fixed period in seconds; `None` for calendar months.
    pub const fn secs(self) -> Option<u64> {
        match self {
            QuotaPeriod::Minute => Some(60),
            QuotaPeriod::Hour => Some(3_600),
            QuotaPeriod::Day => Some(86_400),
            QuotaPeriod::Month => None,
        }
    }

    fn words(self) -> &'static str {
        match self {
            QuotaPeriod::Minute => "per UTC minute",
            QuotaPeriod::Hour => "per UTC hour",
            QuotaPeriod::Day => "per UTC day",
            QuotaPeriod::Month => "per calendar month (UTC)",
        }
    }
}

/// `direction`: what is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QuotaDirection {
    /// Frames from the source to the zone's ports (XDP ingress).
    Upload,
    /// Frames from the zone's ports to the source (TC egress).
    Download,
    Both,
}

impl QuotaDirection {
    pub const NAMES: [(&'static str, QuotaDirection); 3] = [
        ("upload", QuotaDirection::Upload),
        ("download", QuotaDirection::Download),
        ("both", QuotaDirection::Both),
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            QuotaDirection::Upload => "upload",
            QuotaDirection::Download => "download",
            QuotaDirection::Both => "both",
        }
    }

    /// `ZoneQuota::directions`.
    pub const fn bits(self) -> u8 {
        match self {
            QuotaDirection::Upload => QUOTA_UPLOAD,
            QuotaDirection::Download => QUOTA_DOWNLOAD,
            QuotaDirection::Both => QUOTA_UPLOAD | QUOTA_DOWNLOAD,
        }
    }

    fn words(self) -> &'static str {
        match self {
            QuotaDirection::Upload => "upload counted (download is not)",
            QuotaDirection::Download => "download counted (upload is not)",
            QuotaDirection::Both => "upload and download counted",
        }
    }
}

/// A zone's compiled quota (the period clock is added when a slot is built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaSpec {
    pub bytes: u64,
    /// The amount as written, normalised (`"10 GB"`, `"1.5 GiB"`); `None`
    /// for a bare integer of bytes.
    pub written: Option<String>,
    pub period: QuotaPeriod,
    pub direction: QuotaDirection,
    pub per: Per,
}

/// The period `now` falls in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeriodAt {
    /// Untagged: minutes, hours or days since the Unix epoch, or months
    /// since January 1970 (`(year - 1970) * 12 + month - 1`).
    pub number: u64,
    /// When it began (UTC).
    pub start: Timestamp,
    /// Calendar months: the starts of the [`QUOTA_MONTHS`] months after it,
    /// ascending. Empty for fixed periods.
    pub next: Vec<Timestamp>,
}

/// The first instant of a UTC civil date-time (months past jiff's range,
/// year 9999, are clamped there: the slot's list just ends early).
fn utc(dt: DateTime) -> Timestamp {
    Offset::UTC.to_timestamp(dt).unwrap_or(Timestamp::MAX)
}

/// The period of kind `period` that contains `now` (UTC; leap seconds
/// ignored, as Unix time does). Instants before 1970 are in period 0.
pub fn period_at(period: QuotaPeriod, now: Timestamp) -> PeriodAt {
    let now = now.max(Timestamp::UNIX_EPOCH);
    match period.secs() {
        Some(len) => {
            let number = now.as_second() as u64 / len;
            PeriodAt {
                number,
                start: Timestamp::from_second((number * len) as i64)
                    .unwrap_or(Timestamp::UNIX_EPOCH),
                next: Vec::new(),
            }
        }
        None => {
            let d = Offset::UTC.to_datetime(now).date();
            let (mut y, mut m) = (d.year(), d.month());
            let number = (i64::from(y) - 1970) as u64 * 12 + (m as u64 - 1);
            let month_start = |y: i16, m: i8| {
                jiff::civil::Date::new(y, m, 1)
                    .map(|d| utc(d.to_datetime(jiff::civil::Time::midnight())))
                    .unwrap_or(Timestamp::MAX)
            };
            let start = month_start(y, m);
            let mut next = Vec::with_capacity(QUOTA_MONTHS);
            for _ in 0..QUOTA_MONTHS {
                (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                next.push(month_start(y, m));
            }
            PeriodAt {
                number,
                start,
                next,
            }
        }
    }
}

impl QuotaSpec {
    /// The `QUOTAS` entry of zone `zone_name` for a slot built at `clock`:
    /// the period containing `clock.now`, its start (and for months the
    /// next month starts) on the kernel's CLOCK_TAI.
    pub fn zone_quota(&self, zone_name: &str, clock: &SchedClock) -> ZoneQuota {
        let at = period_at(self.period, clock.now);
        let (v4_len, v6_len) = self.per.masks();
        let mut q = ZoneQuota {
            limit_bytes: self.bytes,
            first: quota_tag(self.period.kind(), at.number),
            start_ns: clock.kernel_ns(at.start),
            len_ns: self.period.secs().map_or(0, |s| s * NS),
            zone_key: quota_zone_key(zone_name.as_bytes()),
            directions: self.direction.bits(),
            v4_len,
            v6_len,
            ..ZoneQuota::default()
        };
        for (slot, t) in q.next.iter_mut().zip(&at.next) {
            *slot = if *t == Timestamp::MAX {
                u64::MAX
            } else {
                clock.kernel_ns(*t)
            };
        }
        q
    }

    /// `check`'s sentence: "at most 10 GB (10,000,000,000 bytes) per source
    /// per UTC day, upload and download counted; over it the zone's action
    /// (drop)".
    pub fn explain(&self, action: ZoneAction, audit: bool) -> String {
        let amount = match &self.written {
            Some(w) if !w.ends_with(" B") => format!("{w} ({} bytes)", grouped(self.bytes)),
            _ if self.bytes == 1 => "1 byte".to_string(),
            _ => format!("{} bytes", grouped(self.bytes)),
        };
        let over = if audit {
            "over it counted as audit and passed (the zone audits)".to_string()
        } else {
            format!("over it the zone's action ({})", action.as_str())
        };
        format!(
            "at most {amount} {} {}, {}; {over}",
            self.per,
            self.period.words(),
            self.direction.words()
        )
    }
}

/// `10000000000` → `10,000,000,000`.
pub fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

const BYTES_EXAMPLE: &str =
    "write an amount and a unit: bytes = \"500 MB\", \"10 GB\", \"1.5 GiB\" \
                             (or an integer of bytes: bytes = 500000000)";

fn units_help() -> String {
    let names: Vec<&str> = UNITS.iter().map(|(n, _)| *n).collect();
    format!(
        "the units are {} (kB, MB, GB, TB: powers of 1000; KiB, MiB, GiB, TiB: powers of 1024)",
        names.join(", ")
    )
}

fn too_large(what: &str) -> Problem {
    Problem::new(
        format!("quota {what} is beyond the largest quota (1 EB, 10^18 bytes)"),
        "a quota that large limits nothing; remove `quota` instead",
    )
}

fn zero() -> Problem {
    Problem::new(
        "a quota of 0 bytes",
        "a quota admits at least one byte per period; to refuse every source use allow = []",
    )
}

/// Parses `bytes = "10 GB"`: the bytes and the amount normalised as
/// `"<number> <unit>"`.
pub(crate) fn parse_bytes(s: &str) -> Result<(u64, String), Problem> {
    let t = s.trim();
    if let Some((amount, period)) = t.split_once('/') {
        return Err(Problem::new(
            format!("`bytes` \"{}\" has a period in it", excerpt(s)),
            format!(
                "the period is a key of its own: bytes = \"{}\", period = \"{}\"",
                excerpt(amount.trim()),
                match period.trim() {
                    "m" | "min" | "minute" => "minute",
                    "h" | "hour" => "hour",
                    "mo" | "mon" | "month" => "month",
                    _ => "day",
                }
            ),
        ));
    }
    if let Some(rest) = t.strip_prefix('-') {
        if rest.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(Problem::new(
                format!("quota \"{}\" is negative", excerpt(s)),
                "a quota is the bytes a source may transfer per period: at least 1 byte",
            ));
        }
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = (&t[..split], t[split..].trim());
    let well_formed = match number.split_once('.') {
        Some((i, f)) => {
            !i.is_empty()
                && !f.is_empty()
                && i.bytes().all(|b| b.is_ascii_digit())
                && f.bytes().all(|b| b.is_ascii_digit())
        }
        None => !number.is_empty(),
    };
    if !well_formed {
        return Err(Problem::new(
            format!("quota \"{}\" does not start with a number", excerpt(s)),
            BYTES_EXAMPLE,
        ));
    }
    if unit.is_empty() {
        return Err(Problem::new(
            format!("quota \"{}\" has no unit", excerpt(s)),
            format!("{BYTES_EXAMPLE}; {}", units_help()),
        ));
    }
    if unit.starts_with([',', '_', '\'']) {
        return Err(Problem::new(
            format!("quota \"{}\" has a digit separator", excerpt(s)),
            "write the number without separators, e.g. \"10000 MB\" (or use a larger unit)",
        ));
    }
    let Some(&(unit, size)) = UNITS.iter().find(|(n, _)| *n == unit) else {
        // Case-blind: "gb" and "GX" both mean GB.
        let lower: Vec<String> = UNITS.iter().map(|(n, _)| n.to_ascii_lowercase()).collect();
        let lower: Vec<&str> = lower.iter().map(String::as_str).collect();
        let guess = nearest(unit, &lower).and_then(|g| {
            UNITS
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(g))
                .map(|(n, _)| *n)
        });
        let help = match guess {
            Some(g) => format!("did you mean \"{number} {g}\"? ({})", units_help()),
            None => units_help(),
        };
        return Err(Problem::new(
            format!("unknown quota unit \"{}\"", excerpt(unit)),
            help,
        ));
    };
    let written = format!("{number} {unit}");
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    let int = int.trim_start_matches('0');
    // 1 EB is 19 digits of bytes: a longer integer part is beyond it in
    // any unit. Fraction digits past the 18th change less than a byte.
    if int.len() > 19 {
        return Err(too_large(&format!("\"{}\"", excerpt(&written))));
    }
    let nonzero = number.bytes().any(|b| (b'1'..=b'9').contains(&b));
    let frac = frac.trim_end_matches('0');
    let frac = &frac[..frac.len().min(18)];
    let mantissa: u128 = format!("{int}{frac}").parse().unwrap_or(0);
    if !nonzero {
        return Err(zero());
    }
    // An overflow here means at least 3.4e38 / 1e18 bytes: beyond 1 EB.
    let Some(bytes) = mantissa
        .checked_mul(u128::from(size))
        .map(|b| b / 10u128.pow(frac.len() as u32))
    else {
        return Err(too_large(&format!("\"{}\"", excerpt(&written))));
    };
    if bytes == 0 {
        return Err(Problem::new(
            format!("quota \"{}\" is less than one byte", excerpt(&written)),
            "a quota counts whole bytes: at least 1 B",
        ));
    }
    if bytes > u128::from(MAX_QUOTA_BYTES) {
        return Err(too_large(&format!("\"{}\"", excerpt(&written))));
    }
    Ok((bytes as u64, written))
}

impl Walker<'_> {
    /// `quota` of a zone table, or `None` (absent or reported).
    pub(super) fn zone_quota(&mut self, t: &dyn TableLike) -> Option<QuotaSpec> {
        let item = t.get("quota")?;
        let key = t.key("quota").and_then(|k| k.span());
        let (q, span): (&dyn TableLike, _) = match item {
            Item::Value(Value::InlineTable(it)) => (it, item.span()),
            Item::Table(tb) => (tb, key),
            _ => {
                self.type_error(
                    item,
                    "zone.quota",
                    "a table",
                    "quota = { bytes = \"10 GB\", period = \"day\" }",
                );
                return None;
            }
        };
        self.check_keys(q, QUOTA_KEYS, "in a zone's `quota`");
        let errors = self.diags.len();
        let bytes = self.quota_bytes(q);
        if matches!(bytes, Field::Missing) {
            self.missing(
                span.clone(),
                "a zone's `quota`",
                "bytes",
                "bytes = \"10 GB\"",
            );
        }
        let period = self.quota_choice(
            q,
            "period",
            &QuotaPeriod::NAMES,
            "periods are aligned to UTC: \"minute\", \"hour\", \"day\" or \"month\" (a \
             calendar month); there is no week or year period",
        );
        if q.get("period").is_none() {
            self.missing(span, "a zone's `quota`", "period", "period = \"day\"");
        }
        let direction = match q.get("direction") {
            None => Some(QuotaDirection::Both),
            Some(_) => self.quota_choice(
                q,
                "direction",
                &QuotaDirection::NAMES,
                "\"upload\" counts what sources send to the zone's ports, \"download\" what \
                 the host sends back from them, \"both\" (the default) the two together",
            ),
        };
        let per = self.per(q, "quota.per");
        if self.diags.len() != errors {
            return None;
        }
        let (Field::Ok((bytes, written)), Some(period), Some(direction), Some(per)) =
            (bytes, period, direction, per)
        else {
            return None;
        };
        Some(QuotaSpec {
            bytes,
            written,
            period,
            direction,
            per,
        })
    }

    /// `bytes`: a string with a unit, or an integer of bytes.
    fn quota_bytes(&mut self, q: &dyn TableLike) -> Field<(u64, Option<String>)> {
        let Some(item) = q.get("bytes") else {
            return Field::Missing;
        };
        let result = if let Some(s) = item.as_str() {
            parse_bytes(s).map(|(b, w)| (b, Some(w)))
        } else if let Some(n) = item.as_integer() {
            match n {
                n if n < 0 => Err(Problem::new(
                    format!("quota {n} bytes is negative"),
                    "a quota is the bytes a source may transfer per period: at least 1",
                )),
                0 => Err(zero()),
                n if n as u64 > MAX_QUOTA_BYTES => Err(too_large(&format!("{n} bytes"))),
                n => Ok((n as u64, None)),
            }
        } else {
            self.type_error(
                item,
                "quota.bytes",
                "a string with a unit or an integer of bytes",
                "bytes = \"10 GB\"",
            );
            return Field::Bad;
        };
        match result {
            Ok(v) => Field::Ok(v),
            Err(p) => {
                self.diags.problem(item.span(), p);
                Field::Bad
            }
        }
    }

    /// A string key of `quota` that must be one of `choices`.
    fn quota_choice<T: Copy>(
        &mut self,
        q: &dyn TableLike,
        key: &str,
        choices: &[(&str, T)],
        explain: &str,
    ) -> Option<T> {
        let dotted = format!("quota.{key}");
        let example = format!("{key} = \"{}\"", choices[0].0);
        let Field::Ok((s, span)) = self.string(q, key, &dotted, &example) else {
            return None;
        };
        if let Some((_, v)) = choices.iter().find(|(n, _)| *n == s) {
            return Some(*v);
        }
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let help = match nearest(s, &names) {
            Some(n) => format!("did you mean \"{n}\"? {explain}"),
            None => explain.to_string(),
        };
        let valid = names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(", ");
        self.diags.at(
            span,
            format!(
                "`{dotted}` must be one of {valid}, found \"{}\"",
                excerpt(s)
            ),
            Some(help),
        );
        None
    }

    /// Usage is keyed by a hash of the zone's name: two quota zones whose
    /// names hash alike would count into one another. Reported at the
    /// second zone's `quota`.
    pub(super) fn quota_keys_unique(&mut self, zones: &[(&dyn TableLike, &str, bool)]) {
        let mut seen: HashMap<u32, (&str, usize)> = HashMap::new();
        for (t, name, has_quota) in zones {
            if !has_quota {
                continue;
            }
            let span = t.key("quota").and_then(|k| k.span());
            let key = quota_zone_key(name.as_bytes());
            match seen.get(&key) {
                Some((first, line)) => self.diags.at(
                    span,
                    format!(
                        "the quotas of zones \"{first}\" (line {line}) and \"{name}\" would \
                         share one usage table key ({key:#010x}): usage is keyed by a hash of \
                         the zone name, and these two names hash alike"
                    ),
                    Some(
                        "rename one of the two zones (any change to the name will do; this \
                         happens to about one pair of names in four billion)"
                            .into(),
                    ),
                ),
                None => {
                    let line = self.diags.line_of(span);
                    seen.insert(key, (name, line));
                }
            }
        }
    }

    /// Failsafe rules are never limited: a quota on one is refused.
    pub(super) fn no_failsafe_quota(&mut self, t: &dyn TableLike) {
        for key in ZONE_QUOTA_KEYS {
            if t.get(key).is_some() {
                self.diags.at(
                    t.key(key).and_then(|k| k.span()),
                    format!("a failsafe rule cannot have a `{key}`"),
                    Some(
                        "failsafe rules keep admin access open whatever the traffic; to cap a \
                         port's transfer, claim it with a [[zone]] and give that zone a `quota`"
                            .into(),
                    ),
                );
            }
        }
    }
}

impl fmt::Display for QuotaPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
