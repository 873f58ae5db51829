//! The model of a zone's hours: is the zone open at an instant? Decided from
//! the windows as written and the instant, by reading the zone's local clock
//! (jiff's time zone data, but none of the compiler's code: no transition
//! list, no ambiguity API). Written plainly, not fast.
//!
//! The rule (docs/policy.md): a window opens at the first instant at which
//! the local clock reaches its start on a day it names, and closes at the
//! first instant at which the clock reaches its end (on the next day if the
//! end is not after the start). A time a DST gap skips is reached when the
//! gap ends; a time a fold repeats is reached at its first occurrence.

use jiff::{
    civil::{Date, DateTime, Time},
    tz::TimeZone,
    SignedDuration, Timestamp,
};

use crate::spec::ScheduleSpec;

const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Weekdays (0 = Monday) a `days` string names.
fn days(s: &str) -> [bool; 7] {
    let s = s.trim().to_ascii_lowercase();
    let mut out = [false; 7];
    if s == "daily" || s == "*" {
        return [true; 7];
    }
    let index = |d: &str| {
        DAYS.iter()
            .position(|n| d.trim().starts_with(n))
            .unwrap_or_else(|| panic!("model: unknown day {d:?}"))
    };
    for part in s.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (mut d, last) = (index(a), index(b));
                loop {
                    out[d] = true;
                    if d == last {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => out[index(part)] = true,
        }
    }
    out
}

/// Seconds after midnight of `HH:MM[:SS]`.
fn secs(t: &str) -> i64 {
    let n: Vec<i64> = t
        .trim()
        .split(':')
        .map(|p| p.parse().expect("model: a time"))
        .collect();
    n[0] * 3600 + n[1] * 60 + n.get(2).copied().unwrap_or(0)
}

/// The local civil time at `t`.
fn local(tz: &TimeZone, t: Timestamp) -> DateTime {
    tz.to_datetime(t)
}

/// The first instant at which the local clock reads `day` + `s` seconds.
fn reach(tz: &TimeZone, day: Date, s: i64) -> Timestamp {
    let want = day.to_datetime(Time::midnight()) + SignedDuration::from_secs(s);
    // Every instant whose local reading is exactly `want`: one per offset in
    // force around it (two in a fold, none in a gap).
    let guess = want
        .to_zoned(TimeZone::UTC)
        .expect("model: a civil time")
        .timestamp();
    let mut offsets: Vec<i64> = (-40..=40)
        .map(|h| {
            tz.to_offset(guess + SignedDuration::from_mins(30 * h))
                .seconds() as i64
        })
        .collect();
    offsets.sort();
    offsets.dedup();
    let hits: Vec<Timestamp> = offsets
        .iter()
        .map(|o| guess - SignedDuration::from_secs(*o))
        .filter(|t| local(tz, *t) == want)
        .collect();
    if let Some(first) = hits.iter().min() {
        return *first;
    }
    // A gap: the clock jumps over `want`. Bisect for the jump (local time
    // is below `want` before it and above after, with no fold this close).
    // Transitions fall on whole seconds.
    let sec = |s: i64| Timestamp::from_second(s).expect("model: an instant");
    let (mut lo, mut hi) = (guess.as_second() - 30 * 3600, guess.as_second() + 30 * 3600);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if local(tz, sec(mid)) >= want {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    sec(hi)
}

pub fn time_zone(s: &ScheduleSpec) -> TimeZone {
    let name = s.timezone.as_deref().unwrap_or("UTC");
    jiff::tz::TimeZoneDatabase::bundled()
        .get(name)
        .unwrap_or_else(|_| panic!("model: unknown time zone {name:?}"))
}

/// Is a zone with these hours open at `at`?
pub fn open_at(s: &ScheduleSpec, at: Timestamp) -> bool {
    let tz = time_zone(s);
    let today = local(&tz, at).date();
    for (d, h) in &s.windows {
        let on = days(d);
        let (a, b) = h.split_once('-').expect("model: a range");
        let (start, mut end) = (secs(a), secs(b));
        if end <= start {
            end += 86_400;
        }
        // Windows are shorter than a day and two DST shifts: the one that
        // started yesterday or today is the only one that can hold `at`.
        for back in 0..=2 {
            let day = today
                .checked_sub(jiff::Span::new().days(back))
                .expect("model: a date");
            if !on[day.weekday().to_monday_zero_offset() as usize] {
                continue;
            }
            if reach(&tz, day, start) <= at && at < reach(&tz, day, end) {
                return true;
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn model_reaches_gap_times_when_the_gap_ends_and_fold_times_first() {
        let tz = jiff::tz::TimeZoneDatabase::bundled()
            .get("Europe/Berlin")
            .unwrap();
        let spring = jiff::civil::date(2027, 3, 28);
        assert_eq!(
            reach(&tz, spring, 2 * 3600 + 1800),
            ts("2027-03-28T01:00:00Z")
        );
        let autumn = jiff::civil::date(2027, 10, 31);
        assert_eq!(
            reach(&tz, autumn, 2 * 3600 + 1800),
            ts("2027-10-31T00:30:00Z")
        );
        assert_eq!(reach(&tz, autumn, 12 * 3600), ts("2027-10-31T11:00:00Z"));
    }

    #[test]
    fn model_windows_cross_midnight_into_the_next_day() {
        let s = ScheduleSpec::new(Some("UTC"), &[("fri", "22:00-06:00")]);
        assert!(open_at(&s, ts("2026-12-05T05:59:59Z")));
        assert!(!open_at(&s, ts("2026-12-05T06:00:00Z")));
        assert!(!open_at(&s, ts("2026-12-04T21:59:59Z")));
        assert!(open_at(&s, ts("2026-12-04T22:00:00Z")));
    }
}
