//! Hand-written fixtures for time-restricted zones: each policy is judged at a
//! fixed instant (`PolicySpec::at`; the harness shifts the compiled
//! transitions so the datapath's real clock stands for it), and the expected
//! verdicts are worked out by hand from docs/policy.md (schedule, DST), not
//! by the model. Instants keep minutes clear of every change of state.

use std::net::Ipv4Addr;

use filter_common::{Reason as R, Verdict as V};
use jiff::Timestamp;

use crate::case::{Case, Expect};
use crate::fixtures::case;
use crate::packet::Frame;
use crate::spec::{nets, Allow, PolicySpec, Proto, RuleSpec, ScheduleSpec, ZoneSpec};

const HOST4: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const OFFICE: u16 = 8443;

fn tcp4(src: &str, dport: u16) -> Vec<u8> {
    Frame::ipv4(src.parse().expect("IPv4 source"), HOST4)
        .tcp(40000, dport)
        .build()
}

fn at(s: &str) -> Timestamp {
    s.parse().expect("an RFC 3339 instant")
}

/// Zone 1 "office": 8443/tcp from 10.0.0.0/8, Mon–Fri 08:00–18:30 Berlin
/// time; failsafe 8443/tcp from 10.99.0.0/16; blocklist 203.0.113.0/24.
fn office(when: &str, audit: bool) -> PolicySpec {
    let mut zone = ZoneSpec::new(
        "office",
        vec![(Proto::Tcp, OFFICE, OFFICE)],
        vec![Allow::Net(nets(&["10.0.0.0/8"])[0])],
    )
    .scheduled(ScheduleSpec::new(
        Some("Europe/Berlin"),
        &[("mon-fri", "08:00-18:30")],
    ));
    zone.audit = audit;
    PolicySpec {
        at: Some(at(when)),
        blocklist: nets(&["203.0.113.0/24"]),
        failsafe: vec![RuleSpec {
            ports: vec![(Proto::Tcp, OFFICE, OFFICE)],
            from: nets(&["10.99.0.0/16"]),
        }],
        zones: vec![zone],
        ..PolicySpec::default()
    }
}

/// Zone 1 on 9000/tcp open to everyone during `windows` (`timezone`).
fn hours(when: &str, timezone: &str, windows: &[(&str, &str)]) -> PolicySpec {
    PolicySpec {
        at: Some(at(when)),
        zones: vec![
            ZoneSpec::new("hours", vec![(Proto::Tcp, 9000, 9000)], vec![Allow::Any])
                .scheduled(ScheduleSpec::new(Some(timezone), windows)),
        ],
        ..PolicySpec::default()
    }
}

const OPEN: Expect = Expect::zone(V::Pass, R::Allowed, 1);
const CLOSED: Expect = Expect::zone(V::Drop, R::Closed, 1);

// Wednesday 2027-03-03 12:00 CET; Saturday 2027-03-06 12:00 CET; Wednesday
// 07:50 and 18:40 CET (just outside the window).
const WED_NOON: &str = "2027-03-03T11:00:00Z";
const SAT_NOON: &str = "2027-03-06T11:00:00Z";
const WED_EARLY: &str = "2027-03-03T06:50:00Z";
const WED_LATE: &str = "2027-03-03T17:40:00Z";

pub fn fixtures() -> Vec<Case> {
    vec![
        case("schedule_open_allows_the_allowlist", "office hours, Wednesday noon: a source in `allow` passes",
            office(WED_NOON, false), tcp4("10.1.2.3", OFFICE), OPEN),
        case("schedule_open_drops_others_as_not_allowed", "office hours, Wednesday noon: a source outside `allow` is not_allowed",
            office(WED_NOON, false), tcp4("198.51.100.9", OFFICE), Expect::zone(V::Drop, R::NotAllowed, 1)),
        case("schedule_closed_drops_the_allowlist_too", "Saturday noon: the zone is closed to its own allowlist",
            office(SAT_NOON, false), tcp4("10.1.2.3", OFFICE), CLOSED),
        case("schedule_closed_drops_others_as_closed", "Saturday noon: an outside source counts `closed`, not not_allowed",
            office(SAT_NOON, false), tcp4("198.51.100.9", OFFICE), CLOSED),
        case("schedule_closed_before_opening", "Wednesday 07:50 CET: not open yet",
            office(WED_EARLY, false), tcp4("10.1.2.3", OFFICE), CLOSED),
        case("schedule_closed_after_closing", "Wednesday 18:40 CET: closed since 18:30",
            office(WED_LATE, false), tcp4("10.1.2.3", OFFICE), CLOSED),
        case("schedule_closed_audit_zone_passes_as_audit", "Saturday, auditing zone: counted audit and passed",
            office(SAT_NOON, true), tcp4("10.1.2.3", OFFICE), Expect::zone(V::Pass, R::Audit, 1)),
        case("schedule_closed_failsafe_still_passes", "Saturday: a failsafe source on the zone's port passes",
            office(SAT_NOON, false), tcp4("10.99.0.5", OFFICE), Expect::failsafe()),
        case("schedule_closed_blocklist_still_first", "Saturday: a blocklisted source is dropped as blocklist",
            office(SAT_NOON, false), tcp4("203.0.113.5", OFFICE), Expect::drop(R::Blocklist)),
        case("schedule_other_ports_unaffected", "Saturday: a port no zone claims is judged by defaults",
            office(SAT_NOON, false), tcp4("10.1.2.3", 9999), Expect::pass(R::Unmatched)),
        // Midnight: a window belongs to the day it starts.
        case("schedule_crossing_midnight_open_next_morning", "fri 22:00-06:00 UTC, Saturday 05:00: open",
            hours("2027-03-06T05:00:00Z", "UTC", &[("fri", "22:00-06:00")]), tcp4("198.51.100.9", 9000), OPEN),
        case("schedule_crossing_midnight_closed_day_before", "fri 22:00-06:00 UTC, Friday 05:00: closed (Thursday has no window)",
            hours("2027-03-05T05:00:00Z", "UTC", &[("fri", "22:00-06:00")]), tcp4("198.51.100.9", 9000), CLOSED),
        // DST, Europe/Berlin 2027-03-28: 02:00 CET jumps to 03:00 CEST (01:00 UTC).
        case("schedule_spring_gap_closed_before", "sun 02:30-05:00 Berlin, 01:50 CET (00:50 UTC): closed",
            hours("2027-03-28T00:50:00Z", "Europe/Berlin", &[("sun", "02:30-05:00")]), tcp4("198.51.100.9", 9000), CLOSED),
        case("schedule_spring_gap_start_opens_when_gap_ends", "sun 02:30-05:00 Berlin, 03:10 CEST (01:10 UTC): opened at 03:00 CEST, the end of the gap",
            hours("2027-03-28T01:10:00Z", "Europe/Berlin", &[("sun", "02:30-05:00")]), tcp4("198.51.100.9", 9000), OPEN),
        case("schedule_spring_gap_window_inside_never_opens", "sun 02:10-02:50 Berlin lies in the gap: closed all around it",
            hours("2027-03-28T01:10:00Z", "Europe/Berlin", &[("sun", "02:10-02:50")]), tcp4("198.51.100.9", 9000), CLOSED),
        // DST, Europe/Berlin 2027-10-31: 03:00 CEST goes back to 02:00 CET
        // (01:00 UTC): 02:00-03:00 happens twice.
        case("schedule_autumn_fold_open_first_pass", "sun 02:00-02:45 Berlin, 02:20 CEST (00:20 UTC): open",
            hours("2027-10-31T00:20:00Z", "Europe/Berlin", &[("sun", "02:00-02:45")]), tcp4("198.51.100.9", 9000), OPEN),
        case("schedule_autumn_fold_closed_second_pass", "sun 02:00-02:45 Berlin, 02:15 CET (01:15 UTC, the repeated hour): closed since the first 02:45",
            hours("2027-10-31T01:15:00Z", "Europe/Berlin", &[("sun", "02:00-02:45")]), tcp4("198.51.100.9", 9000), CLOSED),
        case("schedule_autumn_fold_long_window_spans_both", "sun 02:30-03:30 Berlin, 02:10 CET (01:10 UTC): open from the first 02:30 to 03:30 CET",
            hours("2027-10-31T01:10:00Z", "Europe/Berlin", &[("sun", "02:30-03:30")]), tcp4("198.51.100.9", 9000), OPEN),
        // Another zone's offset: New York, Monday 2027-03-01 09:30 EST = 14:30 UTC.
        case("schedule_new_york_morning_open", "mon-fri 09:00-17:00 New York, Monday 09:30 EST: open",
            hours("2027-03-01T14:30:00Z", "America/New_York", &[("mon-fri", "09:00-17:00")]), tcp4("198.51.100.9", 9000), OPEN),
        case("schedule_new_york_same_instant_in_berlin_closed", "mon-fri 09:00-10:00 Berlin, the same instant (15:30 CET): closed",
            hours("2027-03-01T14:30:00Z", "Europe/Berlin", &[("mon-fri", "09:00-10:00")]), tcp4("198.51.100.9", 9000), CLOSED),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::case::{bad_names, duplicate_names, invalid_policies, model_disagreements};

    #[test]
    fn model_agrees_with_every_schedule_fixture() {
        let bad = model_disagreements(&fixtures());
        assert!(bad.is_empty(), "{}", bad.join("\n"));
    }

    #[test]
    fn schedule_fixture_names_are_unique_snake_case_and_policies_valid() {
        assert_eq!(duplicate_names(&fixtures()), Vec::<&str>::new());
        assert_eq!(bad_names(&fixtures()), Vec::<&str>::new());
        assert_eq!(invalid_policies(&fixtures()), Vec::<String>::new());
    }

    #[test]
    fn schedule_fixture_instants_are_clear_of_changes() {
        for c in fixtures() {
            let at = c.policy.at.expect("every schedule fixture has an instant");
            assert!(crate::gen_schedule::settled(&c.policy, at), "{}", c.name);
        }
    }

    #[test]
    fn every_schedule_fixture_policy_compiles() {
        for c in fixtures() {
            filter_user::policy::compile_str(&c.policy.to_toml(), std::path::Path::new("f.toml"))
                .unwrap_or_else(|e| panic!("{}: {e}", c.name));
        }
    }
}
