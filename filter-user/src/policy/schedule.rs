//! Time-restricted zones: `schedule = [{ days, hours }, …]` and `timezone`.
//!
//! Parsing and validation of the windows, and their translation into the
//! instants at which a zone opens and closes (what `SCHED` holds, see
//! filter-common). Time zones come from jiff's bundled copy of the IANA
//! database, so a host (or container) without /usr/share/zoneinfo judges the
//! same as one with it, and a schedule means the same on every machine that
//! runs one portcullis build (a tz rule change needs a new build).
//!
//! A window's start and end are local wall-clock times on the day it starts
//! (an end not after the start is on the next day). Each becomes the **first
//! instant at which the zone's local clock reaches that time** on that date:
//! a time skipped by a DST gap becomes the end of the gap (the first valid
//! instant after it); a time that occurs twice in a fold is its first
//! (earlier) occurrence. So every window opens and closes exactly once.

use std::fmt;

use jiff::{
    civil::{Date, DateTime, Time},
    tz::{AmbiguousOffset, TimeZone, TimeZoneDatabase},
    Timestamp,
};

use toml_edit::TableLike;

use super::diag::{excerpt, Problem};
use super::parse::Field;

/// Most windows one zone may list.
pub const MAX_WINDOWS: usize = 32;
/// How far ahead transitions are computed (days), at most: the list also
/// stops at `SCHED_MAX_TRANSITIONS`.
pub const SPAN_DAYS: i64 = 15;

const DAY_S: u32 = 86_400;
const WEEK_S: u32 = 7 * DAY_S;
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const DAY_LONG: [&str; 7] = [
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
    "sunday",
];

/// One `{ days, hours }` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Bit `i`: the window starts on weekday `i` (0 = Monday).
    pub days: u8,
    /// Seconds after local midnight of the day it starts, 0..86400.
    pub start: u32,
    /// Seconds after local midnight, 1..=86400; `end <= start` ends on the
    /// next day.
    pub end: u32,
}

impl Window {
    /// Length in seconds (a window ending at or before its start crosses
    /// midnight).
    pub fn len(&self) -> u32 {
        if self.end > self.start {
            self.end - self.start
        } else {
            self.end + DAY_S - self.start
        }
    }

    /// Never true: an empty window is refused when parsed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn starts_on(&self, weekday: jiff::civil::Weekday) -> bool {
        self.days & (1 << weekday.to_monday_zero_offset()) != 0
    }
}

impl fmt::Display for Window {
    /// The policy's form: `mon,wed-fri 08:00-18:30`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}-{}",
            days_text(self.days),
            clock(self.start),
            clock(self.end)
        )
    }
}

fn clock(s: u32) -> String {
    let (h, m, sec) = (s / 3600, s / 60 % 60, s % 60);
    if sec == 0 {
        format!("{h:02}:{m:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

fn days_text(days: u8) -> String {
    if days == 0x7f {
        return "daily".into();
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < 7 {
        if days & (1 << i) == 0 {
            i += 1;
            continue;
        }
        let first = i;
        while i + 1 < 7 && days & (1 << (i + 1)) != 0 {
            i += 1;
        }
        parts.push(match i - first {
            0 => DAY_NAMES[first].to_string(),
            1 => format!("{},{}", DAY_NAMES[first], DAY_NAMES[i]),
            _ => format!("{}-{}", DAY_NAMES[first], DAY_NAMES[i]),
        });
        i += 1;
    }
    parts.join(",")
}

/// A zone's hours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZoneSchedule {
    /// The IANA name as the database spells it (`Europe/Berlin`, `UTC`).
    pub timezone: String,
    pub tz: TimeZone,
    pub windows: Vec<Window>,
}

/// Where a zone stands at an instant, and what comes next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outlook {
    pub open: bool,
    /// The next change of state after the instant (always within a week and
    /// a day: a valid schedule is neither always open nor always closed).
    pub next_change: Option<Timestamp>,
    /// The next open and close after the instant.
    pub next_open: Option<Timestamp>,
    pub next_close: Option<Timestamp>,
}

/// The zone's transitions from an instant on, as the datapath gets them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transitions {
    /// Open just after `from`.
    pub open_first: bool,
    /// Ascending, after `from`; ends with a close (or is empty).
    pub at: Vec<Timestamp>,
    /// The datapath's answer is right until here: the first transition not
    /// stored, or the end of the span computed. Past it the zone fails closed.
    pub horizon: Timestamp,
}

impl ZoneSchedule {
    /// The open intervals `[open, close)` of the windows starting on local
    /// dates `first..=last`, as instants, sorted and merged (touching
    /// windows make one interval).
    pub fn intervals(&self, first: Date, last: Date) -> Vec<(Timestamp, Timestamp)> {
        let mut out = Vec::new();
        let mut day = first;
        while day <= last {
            for w in &self.windows {
                if !w.starts_on(day.weekday()) {
                    continue;
                }
                let open = reach(&self.tz, day, w.start);
                let close = if w.end > w.start {
                    reach(&self.tz, day, w.end)
                } else {
                    match day.tomorrow() {
                        Ok(next) => reach(&self.tz, next, w.end),
                        Err(_) => continue,
                    }
                };
                // Both ends inside one DST gap: the window does not happen.
                if open < close {
                    out.push((open, close));
                }
            }
            match day.tomorrow() {
                Ok(d) => day = d,
                Err(_) => break,
            }
        }
        out.sort();
        let mut merged: Vec<(Timestamp, Timestamp)> = Vec::with_capacity(out.len());
        for (open, close) in out {
            match merged.last_mut() {
                Some(last) if open <= last.1 => last.1 = last.1.max(close),
                _ => merged.push((open, close)),
            }
        }
        merged
    }

    /// Intervals that can matter from `from` to `from + days` days.
    fn intervals_from(&self, from: Timestamp, days: i64) -> Vec<(Timestamp, Timestamp)> {
        let today = from.to_zoned(self.tz.clone()).date();
        // A window that started yesterday may still be open.
        let first = today.yesterday().unwrap_or(today);
        let last = today
            .checked_add(jiff::Span::new().days(days))
            .unwrap_or(today);
        self.intervals(first, last)
    }

    /// Open or closed at `at`, and when that changes next.
    pub fn outlook(&self, at: Timestamp) -> Outlook {
        let iv = self.intervals_from(at, 9);
        let open = iv.iter().any(|(o, c)| *o <= at && at < *c);
        let next_open = iv.iter().map(|(o, _)| *o).find(|o| *o > at);
        let next_close = iv.iter().map(|(_, c)| *c).find(|c| *c > at);
        Outlook {
            open,
            next_change: if open { next_close } else { next_open },
            next_open,
            next_close,
        }
    }

    /// Up to `max` transitions after `from` (within `SPAN_DAYS`), cut so the
    /// list ends with a close: past its end the datapath says closed, which
    /// is then right until the next open (the horizon).
    pub fn transitions(&self, from: Timestamp, max: usize) -> Transitions {
        let iv = self.intervals_from(from, SPAN_DAYS);
        let open_first = iv.iter().any(|(o, c)| *o <= from && from < *c);
        let mut all: Vec<Timestamp> = Vec::new();
        for (o, c) in &iv {
            if *o > from {
                all.push(*o);
            }
            if *c > from {
                all.push(*c);
            }
        }
        let span_end = from
            .checked_add(jiff::SignedDuration::from_hours(24 * SPAN_DAYS))
            .unwrap_or(from);
        let mut at: Vec<Timestamp> = all.iter().copied().take(max).collect();
        // The state after k transitions is open_first XOR (k odd).
        if (open_first ^ (at.len() % 2 == 1)) && !at.is_empty() {
            at.pop();
        }
        let horizon = all.get(at.len()).copied().unwrap_or(span_end).min(span_end);
        Transitions {
            open_first,
            at,
            horizon,
        }
    }
}

/// What a compiled schedule is anchored to: the instant its transitions start
/// from, and how a UTC instant maps onto the clock the datapath reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedClock {
    /// Transitions are computed from here on (normally: now).
    pub now: Timestamp,
    /// Added to an instant's Unix nanoseconds to give the kernel's CLOCK_TAI
    /// (`bpf_ktime_get_tai_ns`): the TAI offset (0 unless chrony or ntpd set
    /// it, 37 s if they did). Tests put the distance between a synthetic
    /// "now" and the real one here, so the datapath judges that instant.
    pub kernel_offset_ns: i128,
}

impl SchedClock {
    /// Now, with the host's TAI offset.
    pub fn system() -> SchedClock {
        SchedClock {
            now: Timestamp::now(),
            kernel_offset_ns: i128::from(tai_offset_s()) * 1_000_000_000,
        }
    }

    /// `t` on the kernel's CLOCK_TAI, in nanoseconds (0 before its epoch).
    pub fn kernel_ns(&self, t: Timestamp) -> u64 {
        let ns = t.as_nanosecond() + self.kernel_offset_ns;
        u64::try_from(ns.max(0)).unwrap_or(u64::MAX)
    }

    /// The instant a kernel CLOCK_TAI reading stands for.
    pub fn instant(&self, kernel_ns: u64) -> Timestamp {
        Timestamp::from_nanosecond(i128::from(kernel_ns) - self.kernel_offset_ns)
            .unwrap_or(Timestamp::UNIX_EPOCH)
    }
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write to.
    if unsafe { libc::clock_gettime(id, &mut ts) } != 0 {
        return 0;
    }
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

/// CLOCK_TAI − CLOCK_REALTIME in whole seconds (it is a whole number of
/// seconds; rounding removes the time between the two reads).
pub fn tai_offset_s() -> i64 {
    let tai = clock_ns(libc::CLOCK_TAI);
    let real = clock_ns(libc::CLOCK_REALTIME);
    ((tai - real + 500_000_000).div_euclid(1_000_000_000)) as i64
}

/// The kernel's CLOCK_TAI now, in nanoseconds (what the datapath reads).
pub fn kernel_tai_now_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_TAI).max(0)).unwrap_or(0)
}

impl ZoneSchedule {
    /// The zone's `SCHED` entry at `clock`, and the transitions behind it.
    pub fn sched_entry(&self, clock: &SchedClock) -> (filter_common::Sched, Transitions) {
        let t = self.transitions(clock.now, filter_common::SCHED_MAX_TRANSITIONS);
        let mut s = filter_common::Sched {
            open_first: u32::from(t.open_first),
            count: t.at.len() as u32,
            // Never reached: the datapath's scan stops there.
            t: [u64::MAX; filter_common::SCHED_MAX_TRANSITIONS],
        };
        for (slot, at) in s.t.iter_mut().zip(&t.at) {
            *slot = clock.kernel_ns(*at);
        }
        (s, t)
    }
}

/// Top up at the latest this often.
pub const TOPUP_EVERY_H: i64 = 24;
/// Top up when fewer transitions than this remain stored for a zone.
pub const TOPUP_MIN_LEFT: usize = 3;
/// When a policy's stored transitions (compiled at `clock`) need writing
/// again: daily, or earlier when half of a zone's horizon has passed or its
/// list is down to its last `TOPUP_MIN_LEFT` transitions (a dense schedule
/// whose 62 transitions cover less than two days); never sooner than a
/// minute on. Quota zones are topped up daily too: their periods' starts
/// are on CLOCK_TAI, so a changed TAI offset (which a pending top-up
/// watches for) must rewrite them, and a month quota's stored month starts
/// move on. `None` without scheduled or quota zones.
pub fn topup_due(policy: &super::CompiledPolicy, clock: &SchedClock) -> Option<Timestamp> {
    let hours = |h: i64| jiff::SignedDuration::from_hours(h);
    let mut due: Option<Timestamp> = None;
    if policy.zones.iter().any(|z| z.quota.is_some()) {
        due = Some(clock.now + hours(TOPUP_EVERY_H));
    }
    for s in policy.zones.iter().filter_map(|z| z.schedule.as_ref()) {
        let (_, t) = s.sched_entry(clock);
        let mut zone_due = clock.now + hours(TOPUP_EVERY_H);
        if t.at.len() >= TOPUP_MIN_LEFT {
            zone_due = zone_due.min(t.at[t.at.len() - TOPUP_MIN_LEFT]);
        }
        let half =
            jiff::SignedDuration::from_secs(t.horizon.duration_since(clock.now).as_secs() / 2);
        zone_due = zone_due.min(clock.now + half);
        due = Some(due.map_or(zone_due, |d| d.min(zone_due)));
    }
    due.map(|d| d.max(clock.now + jiff::SignedDuration::from_secs(60)))
}

/// The first instant at which `tz`'s local clock reads `day` + `secs`
/// (`secs` up to 86400, the next midnight): the end of a DST gap for a time
/// the gap skips, the earlier occurrence for a time a fold repeats.
pub fn reach(tz: &TimeZone, day: Date, secs: u32) -> Timestamp {
    let (day, secs) = if secs >= DAY_S {
        (day.tomorrow().unwrap_or(day), secs - DAY_S)
    } else {
        (day, secs)
    };
    let time = Time::new(
        (secs / 3600) as i8,
        (secs / 60 % 60) as i8,
        (secs % 60) as i8,
        0,
    )
    .unwrap_or(Time::midnight());
    let dt = DateTime::from_parts(day, time);
    let fallback = || Timestamp::UNIX_EPOCH;
    match tz.to_ambiguous_timestamp(dt).offset() {
        AmbiguousOffset::Unambiguous { offset } => {
            offset.to_timestamp(dt).unwrap_or_else(|_| fallback())
        }
        AmbiguousOffset::Fold { before, .. } => {
            before.to_timestamp(dt).unwrap_or_else(|_| fallback())
        }
        AmbiguousOffset::Gap { after, .. } => {
            // `dt` read with the later offset lies inside the gap's span of
            // instants before the transition; the transition is the next one.
            let probe = after.to_timestamp(dt).unwrap_or_else(|_| fallback());
            tz.following(probe)
                .next()
                .map(|t| t.timestamp())
                .unwrap_or(probe)
        }
    }
}

/// The bundled IANA database (see the module docs for why bundled).
pub fn database() -> &'static TimeZoneDatabase {
    static DB: std::sync::OnceLock<TimeZoneDatabase> = std::sync::OnceLock::new();
    DB.get_or_init(TimeZoneDatabase::bundled)
}

/// `timezone = "…"`: an IANA name (exact, or differing only in case).
pub(crate) fn parse_timezone(name: &str) -> Result<(String, TimeZone), Problem> {
    let db = database();
    let name = name.trim();
    if let Ok(tz) = db.get(name) {
        let canonical = tz.iana_name().unwrap_or(name).to_string();
        return Ok((canonical, tz));
    }
    let lower = name.to_ascii_lowercase();
    let mut scored: Vec<(usize, String)> = db
        .available()
        .map(|n| n.as_str().to_string())
        .map(|n| (strsim::levenshtein(&lower, &n.to_ascii_lowercase()), n))
        .collect();
    scored.sort();
    // The city alone ("Berlin") or a close spelling.
    let city: Vec<String> = scored
        .iter()
        .filter(|(_, n)| {
            n.rsplit('/')
                .next()
                .is_some_and(|c| c.eq_ignore_ascii_case(&lower))
        })
        .map(|(_, n)| n.clone())
        .collect();
    let close: Vec<String> = if city.is_empty() {
        // The closest names only (ties kept, at most three).
        let best = scored.first().map_or(0, |(d, _)| *d);
        scored
            .iter()
            .take(3)
            .filter(|(d, _)| *d == best && *d <= 4.max(lower.len() / 3))
            .map(|(_, n)| n.clone())
            .collect()
    } else {
        city
    };
    let help = if close.is_empty() {
        "use an IANA time zone name such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\" \
         (`timedatectl list-timezones` lists them)"
            .to_string()
    } else {
        format!(
            "did you mean {}? (IANA names such as \"Europe/Berlin\" or \"UTC\")",
            close
                .iter()
                .map(|n| format!("\"{n}\""))
                .collect::<Vec<_>>()
                .join(" or ")
        )
    };
    Err(Problem::new(
        format!("unknown time zone \"{}\"", excerpt(name)),
        help,
    ))
}

/// `days = "mon-fri"`, `"sat,sun"`, `"daily"`, `"*"`, `"tue"`, `"fri-mon"`
/// (ranges wrap over the weekend); names of 3 letters or in full, any case.
pub(crate) fn parse_days(text: &str) -> Result<u8, Problem> {
    let s = text.trim().to_ascii_lowercase();
    if s == "daily" || s == "*" {
        return Ok(0x7f);
    }
    let help_forms = "days are \"mon-fri\", \"sat,sun\", \"daily\" (or \"*\"), or single days: \
                      mon tue wed thu fri sat sun";
    if s.is_empty() {
        return Err(Problem::new("`days` is empty", help_forms));
    }
    let mut mask = 0u8;
    for part in s.split(',') {
        let part = part.trim();
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), Some(b.trim())),
            None => (part, None),
        };
        let first = day_index(a)?;
        match b {
            None => mask |= 1 << first,
            Some(b) => {
                let last = day_index(b)?;
                let mut d = first;
                loop {
                    mask |= 1 << d;
                    if d == last {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
        }
    }
    Ok(mask)
}

fn day_index(name: &str) -> Result<usize, Problem> {
    if let Some(i) = DAY_NAMES.iter().position(|d| *d == name) {
        return Ok(i);
    }
    if let Some(i) = DAY_LONG.iter().position(|d| *d == name) {
        return Ok(i);
    }
    let help = match super::diag::nearest(name, &DAY_NAMES)
        .or_else(|| super::diag::nearest(name, &DAY_LONG))
    {
        Some(n) => format!("did you mean \"{}\"?", &n[..3]),
        None => "days are mon tue wed thu fri sat sun, ranges (\"mon-fri\"), lists \
                 (\"sat,sun\") or \"daily\""
            .to_string(),
    };
    Err(Problem::new(
        format!("unknown day \"{}\"", excerpt(name)),
        help,
    ))
}

/// `hours = "08:00-18:30"` (seconds optional: `"08:00:00-08:00:30"`).
/// The end may be `24:00`; an end before the start crosses midnight.
pub(crate) fn parse_hours(text: &str) -> Result<(u32, u32), Problem> {
    let s = text.trim();
    let form = "write hours as \"HH:MM-HH:MM\" (24-hour clock, seconds optional), e.g. \
                \"08:00-18:30\"; \"22:00-06:00\" crosses midnight";
    let Some((a, b)) = s.split_once('-') else {
        return Err(Problem::new(
            format!("`hours` \"{}\" is not a range of times", excerpt(s)),
            form,
        ));
    };
    let start = clock_time(a.trim(), false, form)?;
    let end = clock_time(b.trim(), true, form)?;
    if start == end || (start == 0 && end == 0) {
        return Err(Problem::new(
            format!(
                "`hours` \"{}\" is empty (it starts where it ends)",
                excerpt(s)
            ),
            "for the whole day write \"00:00-24:00\"; to keep the zone closed on a day, leave \
             the day out",
        ));
    }
    // "22:00-00:00" runs until midnight.
    Ok((start, if end == 0 { DAY_S } else { end }))
}

fn clock_time(t: &str, is_end: bool, form: &str) -> Result<u32, Problem> {
    let parts: Vec<&str> = t.split(':').collect();
    let bad = || {
        Problem::new(
            format!("\"{}\" is not a time of day", excerpt(t)),
            form.to_string(),
        )
    };
    if !(2..=3).contains(&parts.len())
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(bad());
    }
    let n: Vec<u32> = parts.iter().map(|p| p.parse().unwrap_or(99)).collect();
    let (h, m, s) = (n[0], n[1], n.get(2).copied().unwrap_or(0));
    if h == 24 && m == 0 && s == 0 {
        if is_end {
            return Ok(DAY_S);
        }
        return Err(Problem::new(
            "a window cannot start at 24:00",
            "start it at \"00:00\" (of the next day)",
        ));
    }
    if h > 23 {
        return Err(Problem::new(
            format!("hour {h} in \"{}\" is out of range (00-23)", excerpt(t)),
            "hours run from 00 to 23 (24:00 only as an end: \"18:00-24:00\")",
        ));
    }
    if m > 59 || s > 59 {
        return Err(Problem::new(
            format!(
                "minutes or seconds in \"{}\" are out of range (00-59)",
                excerpt(t)
            ),
            form.to_string(),
        ));
    }
    Ok(h * 3600 + m * 60 + s)
}

/// Two windows of one zone that overlap on a weekday: (first, second,
/// weekday of the overlap's start), by position in `windows`. Compared on a
/// week of local time (DST shifts both alike).
pub fn first_overlap(windows: &[Window]) -> Option<(usize, usize, &'static str)> {
    let mut spans: Vec<(u32, u32, usize)> = Vec::new();
    for (i, w) in windows.iter().enumerate() {
        for d in 0..7u32 {
            if w.days & (1 << d) == 0 {
                continue;
            }
            let start = d * DAY_S + w.start;
            let end = start + w.len();
            spans.push((start, end, i));
            // Sunday's window crossing midnight reaches into Monday.
            if end > WEEK_S {
                spans.push((0, end - WEEK_S, i));
            }
        }
    }
    spans.sort();
    let mut best: Option<(usize, usize, u32)> = None;
    for (a, x) in spans.iter().enumerate() {
        for y in &spans[a + 1..] {
            if y.0 >= x.1 {
                break;
            }
            if x.2 == y.2 {
                continue;
            }
            let (first, second) = (x.2.min(y.2), x.2.max(y.2));
            if best.is_none_or(|b| (second, first) < (b.1, b.0)) {
                best = Some((first, second, y.0.max(x.0)));
            }
        }
    }
    best.map(|(f, s, at)| (f, s, DAY_NAMES[(at / DAY_S % 7) as usize]))
}

/// Whether the windows leave no second of the week closed.
pub fn always_open(windows: &[Window]) -> bool {
    let mut spans: Vec<(u32, u32)> = Vec::new();
    for w in windows {
        for d in 0..7u32 {
            if w.days & (1 << d) != 0 {
                let start = d * DAY_S + w.start;
                let end = start + w.len();
                spans.push((start, end.min(WEEK_S)));
                if end > WEEK_S {
                    spans.push((0, end - WEEK_S));
                }
            }
        }
    }
    spans.sort();
    let mut reached = 0;
    for (s, e) in spans {
        if s > reached {
            return false;
        }
        reached = reached.max(e);
    }
    reached >= WEEK_S
}

/// The keys of a zone's hours (refused, with a reason, on failsafe rules).
pub const SCHEDULE_KEYS: &[&str] = &["schedule", "timezone"];
const WINDOW_KEYS: &[&str] = &["days", "hours"];

impl super::parse::Walker<'_> {
    /// A zone's `schedule` and `timezone`; `None` without a schedule (or
    /// with errors, which are reported).
    pub(super) fn zone_schedule(&mut self, t: &dyn TableLike) -> Option<ZoneSchedule> {
        let tz = match self.string(
            t,
            "timezone",
            "zone.timezone",
            "timezone = \"Europe/Berlin\"",
        ) {
            Field::Ok((name, span)) => {
                if t.get("schedule").is_none() {
                    self.diags.at(
                        span.clone(),
                        "`timezone` without a `schedule`",
                        Some(
                            "the time zone says how to read the zone's hours: add a schedule, \
                             e.g. schedule = [{ days = \"mon-fri\", hours = \"08:00-18:00\" }], \
                             or remove `timezone`"
                                .into(),
                        ),
                    );
                }
                match parse_timezone(name) {
                    Ok(tz) => Some(tz),
                    Err(p) => {
                        self.diags.problem(span, p);
                        None
                    }
                }
            }
            Field::Missing => parse_timezone("UTC").ok(),
            Field::Bad => None,
        };
        let item = t.get("schedule")?;
        let key = t.key("schedule").and_then(|k| k.span());
        let entries = self.table_array(t, "schedule");
        if entries.is_empty() {
            if item.as_array().is_some_and(|a| a.is_empty()) {
                self.diags.at(
                    key,
                    "`schedule` is empty: the zone would never open",
                    Some(
                        "list the hours the zone is open, e.g. schedule = [{ days = \"mon-fri\", \
                         hours = \"08:00-18:00\" }]; a zone without `schedule` is always open, \
                         and allow = [] closes it for good"
                            .into(),
                    ),
                );
            }
            return None;
        }
        if entries.len() > MAX_WINDOWS {
            self.diags.at(
                entries[MAX_WINDOWS].1.clone(),
                format!(
                    "too many schedule windows: {} (at most {MAX_WINDOWS})",
                    entries.len()
                ),
                Some("one window may name several days (\"mon-fri\", \"sat,sun\")".into()),
            );
            return None;
        }
        let mut windows = Vec::with_capacity(entries.len());
        let mut spans = Vec::with_capacity(entries.len());
        let mut bad = false;
        for (w, span) in entries {
            self.check_keys(w, WINDOW_KEYS, "in a schedule window");
            let days = match self.string(w, "days", "schedule.days", "days = \"mon-fri\"") {
                Field::Ok((d, dspan)) => match parse_days(d) {
                    Ok(days) => Some(days),
                    Err(p) => {
                        self.diags.problem(dspan, p);
                        None
                    }
                },
                Field::Missing => {
                    self.missing(
                        span.clone(),
                        "a schedule window",
                        "days",
                        "days = \"mon-fri\"",
                    );
                    None
                }
                Field::Bad => None,
            };
            let hours = match self.string(w, "hours", "schedule.hours", "hours = \"08:00-18:00\"") {
                Field::Ok((h, hspan)) => match parse_hours(h) {
                    Ok(hours) => Some(hours),
                    Err(p) => {
                        self.diags.problem(hspan, p);
                        None
                    }
                },
                Field::Missing => {
                    self.missing(
                        span.clone(),
                        "a schedule window",
                        "hours",
                        "hours = \"08:00-18:00\"",
                    );
                    None
                }
                Field::Bad => None,
            };
            match (days, hours) {
                (Some(days), Some((start, end))) => {
                    windows.push(Window { days, start, end });
                    spans.push(span);
                }
                _ => bad = true,
            }
        }
        if bad {
            return None;
        }
        if let Some((first, second, day)) = first_overlap(&windows) {
            let line = self.diags.line_of(spans[first].clone());
            self.diags.at(
                spans[second].clone(),
                format!(
                    "window \"{}\" overlaps window \"{}\" (line {line}) on {day}",
                    windows[second], windows[first]
                ),
                Some(
                    "windows of one zone must not overlap: shorten one, or merge them into one \
                     window"
                        .into(),
                ),
            );
            return None;
        }
        if always_open(&windows) {
            self.diags.at(
                key,
                "the schedule's windows cover the whole week: the zone never closes",
                Some("remove `schedule` (a zone without one is always open)".into()),
            );
            return None;
        }
        let (timezone, tz) = tz?;
        Some(ZoneSchedule {
            timezone,
            tz,
            windows,
        })
    }

    /// Failsafe rules hold at all times: a schedule on one is refused.
    pub(super) fn no_failsafe_schedule(&mut self, t: &dyn TableLike) {
        for key in SCHEDULE_KEYS {
            if t.get(key).is_some() {
                self.diags.at(
                    t.key(key).and_then(|k| k.span()),
                    format!("a failsafe rule cannot have a `{key}`"),
                    Some(
                        "failsafe rules keep admin access open at all times; to open ports only \
                         at certain hours, use a [[zone]] with `schedule` (and `timezone`)"
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
    use jiff::civil::date;

    fn sched(tz: &str, windows: &[(&str, &str)]) -> ZoneSchedule {
        let (timezone, tz) = parse_timezone(tz).expect("tz");
        ZoneSchedule {
            timezone,
            tz,
            windows: windows
                .iter()
                .map(|(d, h)| {
                    let (start, end) = parse_hours(h).expect("hours");
                    Window {
                        days: parse_days(d).expect("days"),
                        start,
                        end,
                    }
                })
                .collect(),
        }
    }

    fn utc(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn day_forms_cover_ranges_lists_and_wrap_over_the_weekend() {
        assert_eq!(parse_days("mon-fri").unwrap(), 0b001_1111);
        assert_eq!(parse_days("sat,sun").unwrap(), 0b110_0000);
        assert_eq!(parse_days("daily").unwrap(), 0x7f);
        assert_eq!(parse_days("*").unwrap(), 0x7f);
        assert_eq!(parse_days("Tuesday").unwrap(), 0b10);
        assert_eq!(parse_days("fri-mon").unwrap(), 0b111_0001);
        assert_eq!(parse_days("mon-wed, fri").unwrap(), 0b001_0111);
        let e = parse_days("mon-fir").unwrap_err();
        assert!(e.message.contains("unknown day \"fir\""), "{e:?}");
        assert!(e.help.contains("\"fri\""), "{e:?}");
    }

    #[test]
    fn hours_take_seconds_24_00_and_cross_midnight() {
        assert_eq!(
            parse_hours("08:00-18:30").unwrap(),
            (8 * 3600, 18 * 3600 + 1800)
        );
        assert_eq!(parse_hours("08:00:05-08:00:35").unwrap(), (28_805, 28_835));
        assert_eq!(parse_hours("18:00-24:00").unwrap(), (64_800, DAY_S));
        assert_eq!(parse_hours("00:00-24:00").unwrap(), (0, DAY_S));
        assert_eq!(parse_hours("22:00-06:00").unwrap(), (79_200, 21_600));
        assert_eq!(parse_hours("22:00-00:00").unwrap(), (79_200, DAY_S));
        assert!(parse_hours("25:00-26:00")
            .unwrap_err()
            .message
            .contains("hour 25"));
        assert!(parse_hours("08:00-08:00")
            .unwrap_err()
            .message
            .contains("empty"));
        assert!(parse_hours("8-18").is_err());
        assert!(parse_hours("08:60-09:00").is_err());
        assert!(parse_hours("24:00-06:00").is_err());
    }

    #[test]
    fn unknown_time_zones_suggest_close_names() {
        let e = parse_timezone("Europe/Berln").unwrap_err();
        assert!(e.help.contains("\"Europe/Berlin\""), "{e:?}");
        let e = parse_timezone("Berlin").unwrap_err();
        assert!(e.help.contains("\"Europe/Berlin\""), "{e:?}");
        assert_eq!(parse_timezone("europe/berlin").unwrap().0, "Europe/Berlin");
        assert_eq!(parse_timezone("UTC").unwrap().0, "UTC");
    }

    #[test]
    fn overlapping_windows_are_found_across_days_and_the_week_end() {
        let w = |d: &str, h: &str| {
            let (start, end) = parse_hours(h).unwrap();
            Window {
                days: parse_days(d).unwrap(),
                start,
                end,
            }
        };
        assert_eq!(
            first_overlap(&[w("mon-fri", "08:00-12:00"), w("fri", "11:00-13:00")]),
            Some((0, 1, "fri"))
        );
        // Touching is fine.
        assert_eq!(
            first_overlap(&[w("mon", "08:00-12:00"), w("mon", "12:00-13:00")]),
            None
        );
        // Sunday night into Monday morning.
        assert_eq!(
            first_overlap(&[w("sun", "22:00-06:00"), w("mon", "05:00-07:00")]),
            Some((0, 1, "mon"))
        );
        assert!(always_open(&[w("daily", "00:00-24:00")]));
        assert!(always_open(&[
            w("daily", "22:00-06:00"),
            w("daily", "06:00-22:00")
        ]));
        assert!(!always_open(&[w("mon-sat", "00:00-24:00")]));
    }

    #[test]
    fn a_window_opens_and_closes_in_local_time() {
        let s = sched("Europe/Berlin", &[("mon-fri", "08:00-18:30")]);
        // Wednesday 2026-12-02 12:00 CET = 11:00 UTC: open until 17:30 UTC.
        let o = s.outlook(utc("2026-12-02T11:00:00Z"));
        assert!(o.open);
        assert_eq!(o.next_close, Some(utc("2026-12-02T17:30:00Z")));
        assert_eq!(o.next_open, Some(utc("2026-12-03T07:00:00Z")));
        // Saturday: closed until Monday 08:00 CET.
        let o = s.outlook(utc("2026-12-05T12:00:00Z"));
        assert!(!o.open);
        assert_eq!(o.next_change, Some(utc("2026-12-07T07:00:00Z")));
    }

    #[test]
    fn a_window_crossing_midnight_belongs_to_the_day_it_starts() {
        let s = sched("UTC", &[("fri", "22:00-06:00")]);
        assert!(s.outlook(utc("2026-12-05T05:00:00Z")).open); // Saturday 05:00
        assert!(!s.outlook(utc("2026-12-04T05:00:00Z")).open); // Friday 05:00
        assert!(s.outlook(utc("2026-12-04T23:00:00Z")).open);
    }

    #[test]
    fn a_start_in_the_spring_gap_opens_when_the_gap_ends() {
        // Berlin, Sunday 2027-03-28: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        let tz = parse_timezone("Europe/Berlin").unwrap().1;
        let d = date(2027, 3, 28);
        assert_eq!(reach(&tz, d, 2 * 3600 + 1800), utc("2027-03-28T01:00:00Z"));
        assert_eq!(reach(&tz, d, 3 * 3600), utc("2027-03-28T01:00:00Z"));
        assert_eq!(reach(&tz, d, 4 * 3600), utc("2027-03-28T02:00:00Z"));
        // A window inside the gap does not happen that day.
        let s = sched("Europe/Berlin", &[("sun", "02:10-02:50")]);
        assert!(s.intervals(d, d).is_empty());
        let s = sched("Europe/Berlin", &[("sun", "02:30-05:00")]);
        assert_eq!(
            s.intervals(d, d),
            [(utc("2027-03-28T01:00:00Z"), utc("2027-03-28T03:00:00Z"))]
        );
    }

    #[test]
    fn a_time_in_the_autumn_fold_is_its_first_occurrence() {
        // Berlin, Sunday 2027-10-31: 03:00 CEST goes back to 02:00 CET
        // (01:00 UTC); 02:30 happens at 00:30 UTC and again at 01:30 UTC.
        let tz = parse_timezone("Europe/Berlin").unwrap().1;
        let d = date(2027, 10, 31);
        assert_eq!(reach(&tz, d, 2 * 3600 + 1800), utc("2027-10-31T00:30:00Z"));
        let s = sched("Europe/Berlin", &[("sun", "02:30-03:30")]);
        // Opens at the first 02:30, stays open through the repeated hour.
        assert_eq!(
            s.intervals(d, d),
            [(utc("2027-10-31T00:30:00Z"), utc("2027-10-31T02:30:00Z"))]
        );
    }

    #[test]
    fn touching_windows_make_one_interval_and_no_transition_between() {
        let s = sched("UTC", &[("mon", "20:00-24:00"), ("tue", "00:00-02:00")]);
        let t = s.transitions(utc("2026-11-30T12:00:00Z"), 62); // Monday noon
        assert!(!t.open_first);
        assert_eq!(t.at[0], utc("2026-11-30T20:00:00Z"));
        assert_eq!(t.at[1], utc("2026-12-01T02:00:00Z"));
    }

    #[test]
    fn transitions_end_with_a_close_and_say_how_far_they_hold() {
        let s = sched("UTC", &[("daily", "08:00-09:00")]);
        let from = utc("2026-12-02T08:30:00Z");
        let t = s.transitions(from, 62);
        assert!(t.open_first);
        // Closes 09:00 today, then 14 more days of open/close, until the span ends.
        assert_eq!(t.at[0], utc("2026-12-02T09:00:00Z"));
        assert_eq!(t.at.len() % 2, 1);
        assert!(t.at.windows(2).all(|w| w[0] < w[1]));
        // Capped: an odd cap would end with an open, which is dropped.
        let t = s.transitions(from, 4);
        assert_eq!(t.at.len(), 3);
        assert_eq!(t.horizon, utc("2026-12-04T08:00:00Z"));
        let t = s.transitions(utc("2026-12-02T10:00:00Z"), 5);
        assert_eq!(t.at.len(), 4);
        assert_eq!(t.horizon, utc("2026-12-05T08:00:00Z"));
    }

    #[test]
    fn window_display_is_the_policy_form() {
        let s = sched(
            "UTC",
            &[("mon-wed,fri", "08:00-18:30:15"), ("daily", "22:00-06:00")],
        );
        assert_eq!(s.windows[0].to_string(), "mon-wed,fri 08:00-18:30:15");
        assert_eq!(s.windows[1].to_string(), "daily 22:00-06:00");
    }
}
