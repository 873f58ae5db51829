//! Random zone hours for the differential test: a few time zones (with and
//! without DST, a 30-minute DST, a half-hour offset), windows that cross
//! midnight or not, and an instant near the DST changes, so that a zone is
//! open or closed "now" at random. The instant is kept at least
//! `SETTLE_S` before any change of state: the datapath's clock runs on
//! between the apply and the frame.

use jiff::{SignedDuration, Timestamp};
use rand::Rng;

use crate::{
    model::schedule::open_at,
    spec::{PolicySpec, ScheduleSpec},
};

const ZONES: [Option<&str>; 6] = [
    None,
    Some("Europe/Berlin"),
    Some("America/New_York"),
    Some("Australia/Lord_Howe"),
    Some("Asia/Kolkata"),
    Some("UTC"),
];
const DAYS: [&str; 9] = [
    "mon-fri",
    "sat,sun",
    "daily",
    "*",
    "tue",
    "fri-mon",
    "mon,wed,fri",
    "sun",
    "thu-sat",
];
/// Seconds an instant keeps clear of the next change of any zone's state.
pub const SETTLE_S: i64 = 300;

fn clock<R: Rng + ?Sized>(rng: &mut R, s: i64) -> String {
    if rng.gen_bool(0.2) {
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    } else {
        format!("{:02}:{:02}", s / 3600, s / 60 % 60)
    }
}

/// A window of 1 minute to 23 hours, on whole minutes (or seconds).
fn window<R: Rng + ?Sized>(rng: &mut R, days: &str, cross: bool) -> (String, String) {
    let start = rng.gen_range(0..24 * 60) * 60;
    let max = if cross { 23 * 3600 } else { 86_400 - start };
    let len = rng.gen_range(60..=max.max(60));
    let end = (start + len) % 86_400;
    let end_text = if end == 0 {
        "24:00".to_string()
    } else {
        clock(rng, end)
    };
    (
        days.to_string(),
        format!("{}-{}", clock(rng, start), end_text),
    )
}

fn schedule<R: Rng + ?Sized>(rng: &mut R) -> ScheduleSpec {
    let timezone = ZONES[rng.gen_range(0..ZONES.len())].map(str::to_string);
    let windows = if rng.gen_bool(0.7) {
        // One window shorter than a day never overlaps itself.
        let days = DAYS[rng.gen_range(0..DAYS.len())];
        vec![window(rng, days, true)]
    } else {
        // Two on disjoint days, neither crossing midnight.
        vec![window(rng, "mon-wed", false), {
            let days = ["fri", "sat,sun", "thu"][rng.gen_range(0..3)];
            window(rng, days, false)
        }]
    };
    ScheduleSpec { timezone, windows }
}

/// Gives about a third of the zones hours and the policy an instant.
pub fn add_schedules<R: Rng + ?Sized>(rng: &mut R, p: &mut PolicySpec) {
    if !rng.gen_bool(0.5) {
        return;
    }
    for z in &mut p.zones {
        if rng.gen_bool(0.35) {
            z.schedule = Some(schedule(rng));
        }
    }
    // Around the 2027 DST changes (EU: Mar 28, Oct 31; US: Mar 14, Nov 7;
    // Lord Howe: Apr 4, Oct 3) or anywhere in 2027.
    let anchors = [
        "2027-03-28T00:00:00Z",
        "2027-10-31T00:00:00Z",
        "2027-03-14T06:00:00Z",
        "2027-11-07T05:00:00Z",
        "2027-04-03T14:00:00Z",
        "2027-10-02T15:00:00Z",
    ];
    let base: Timestamp = if rng.gen_bool(0.6) {
        anchors[rng.gen_range(0..anchors.len())]
            .parse()
            .expect("anchor")
    } else {
        "2027-01-01T00:00:00Z".parse().expect("anchor")
    };
    let spread = if base.as_second() % 86_400 == 0 && rng.gen_bool(0.5) {
        365 * 86_400
    } else {
        2 * 86_400
    };
    let mut at = base + SignedDuration::from_secs(rng.gen_range(-spread / 2..spread));
    for _ in 0..50 {
        if settled(p, at) {
            p.at = Some(at);
            return;
        }
        at += SignedDuration::from_secs(SETTLE_S);
    }
    for z in &mut p.zones {
        z.schedule = None;
    }
}

/// No scheduled zone changes state within `SETTLE_S` after `at`.
pub fn settled(p: &PolicySpec, at: Timestamp) -> bool {
    let later = at + SignedDuration::from_secs(SETTLE_S);
    p.zones.iter().filter_map(|z| z.schedule.as_ref()).all(|s| {
        let now = open_at(s, at);
        // Sampled every 30 s: windows are at least a minute long.
        (1..=SETTLE_S / 30).all(|k| open_at(s, at + SignedDuration::from_secs(30 * k)) == now)
            && open_at(s, later) == now
    })
}
