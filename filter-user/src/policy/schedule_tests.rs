//! Zone hours through the whole compiler: what compiles, and every bad input
//! as a located error with a fix.

use std::path::Path;

use super::*;

fn compile(text: &str) -> Result<CompiledPolicy, PolicyError> {
    compile_str(text, Path::new("policy.toml"))
}

/// A policy with one zone whose hours are `extra` (TOML lines in the zone).
fn zone(extra: &str) -> String {
    format!(
        "version = 1\n[[zone]]\nname = \"office\"\nports = [\"8443/tcp\"]\nallow = [\"10.0.0.0/8\"]\n{extra}"
    )
}

/// The single diagnostic (asserts there is exactly one).
fn one_error(text: &str) -> Diagnostic {
    match compile(text) {
        Ok(p) => panic!("expected an error, policy compiled: {p:?}"),
        Err(e) => {
            assert_eq!(e.diagnostics.len(), 1, "{e}");
            e.diagnostics[0].clone()
        }
    }
}

#[test]
fn a_schedule_with_time_zone_compiles_into_the_zone() {
    let p = compile(&zone(
        "timezone = \"Europe/Berlin\"\nschedule = [{ days = \"mon-fri\", hours = \"08:00-18:30\" }, { days = \"sat\", hours = \"10:00-12:00:30\" }]\n",
    ))
    .expect("compiles");
    let s = p.zones[0].schedule.as_ref().expect("scheduled");
    assert_eq!(s.timezone, "Europe/Berlin");
    assert_eq!(s.windows.len(), 2);
    assert_eq!(s.windows[1].to_string(), "sat 10:00-12:00:30");
}

#[test]
fn without_a_time_zone_hours_are_utc() {
    let p = compile(&zone(
        "schedule = [{ days = \"daily\", hours = \"22:00-06:00\" }]\n",
    ))
    .expect("compiles");
    assert_eq!(p.zones[0].schedule.as_ref().unwrap().timezone, "UTC");
}

#[test]
fn schedule_as_an_array_of_tables_compiles_too() {
    let p = compile(&zone(
        "[[zone.schedule]]\ndays = \"mon\"\nhours = \"08:00-09:00\"\n",
    ))
    .expect("compiles");
    assert_eq!(p.zones[0].schedule.as_ref().unwrap().windows.len(), 1);
}

#[test]
fn unknown_time_zone_is_located_and_suggests_close_names() {
    let d = one_error(&zone(
        "timezone = \"Europe/Berln\"\nschedule = [{ days = \"mon\", hours = \"08:00-09:00\" }]\n",
    ));
    assert_eq!((d.line, d.column), (6, 12), "{d}");
    assert!(
        d.message.contains("unknown time zone \"Europe/Berln\""),
        "{d}"
    );
    assert!(d.help.unwrap().contains("\"Europe/Berlin\""));
}

#[test]
fn hour_25_is_out_of_range_at_the_hours_value() {
    let d = one_error(&zone(
        "schedule = [{ days = \"mon\", hours = \"25:00-26:00\" }]\n",
    ));
    assert_eq!(d.line, 6);
    assert_eq!(d.column, 37, "{d}");
    assert!(d.message.contains("hour 25"), "{d}");
    assert!(d.help.unwrap().contains("00 to 23"));
}

#[test]
fn an_empty_window_is_an_error_with_the_whole_day_form() {
    let d = one_error(&zone(
        "schedule = [{ days = \"mon\", hours = \"08:00-08:00\" }]\n",
    ));
    assert!(d.message.contains("is empty"), "{d}");
    assert!(d.help.unwrap().contains("00:00-24:00"));
}

#[test]
fn overlapping_windows_name_both_and_the_day() {
    let d = one_error(&zone(
        "schedule = [\n  { days = \"mon-fri\", hours = \"08:00-12:00\" },\n  { days = \"fri\", hours = \"11:00-13:00\" },\n]\n",
    ));
    assert_eq!((d.line, d.column), (8, 3), "{d}");
    assert!(
        d.message.contains(
            "window \"fri 11:00-13:00\" overlaps window \"mon-fri 08:00-12:00\" (line 7) on fri"
        ),
        "{d}"
    );
}

#[test]
fn unknown_day_names_suggest_the_nearest() {
    let d = one_error(&zone(
        "schedule = [{ days = \"mon-fir\", hours = \"08:00-09:00\" }]\n",
    ));
    assert_eq!((d.line, d.column), (6, 22), "{d}");
    assert!(d.message.contains("unknown day \"fir\""), "{d}");
    assert!(d.help.unwrap().contains("\"fri\""));
}

#[test]
fn a_schedule_on_a_failsafe_rule_is_refused_at_the_key() {
    let d = one_error(
        "version = 1\n[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"10.0.0.0/8\"]\nschedule = [{ days = \"mon\", hours = \"08:00-09:00\" }]\n",
    );
    assert_eq!((d.line, d.column), (5, 1), "{d}");
    assert!(
        d.message
            .contains("a failsafe rule cannot have a `schedule`"),
        "{d}"
    );
    assert!(d.help.unwrap().contains("[[zone]] with `schedule`"));
}

#[test]
fn a_time_zone_without_a_schedule_is_an_error() {
    let d = one_error(&zone("timezone = \"UTC\"\n"));
    assert!(d.message.contains("`timezone` without a `schedule`"), "{d}");
}

#[test]
fn an_empty_schedule_and_a_whole_week_are_errors() {
    let d = one_error(&zone("schedule = []\n"));
    assert!(d.message.contains("never open"), "{d}");
    let d = one_error(&zone(
        "schedule = [{ days = \"*\", hours = \"00:00-24:00\" }]\n",
    ));
    assert!(d.message.contains("never closes"), "{d}");
}

#[test]
fn window_keys_are_checked_and_required() {
    let e = compile(&zone(
        "schedule = [{ days = \"mon\", hour = \"08:00-09:00\" }]\n",
    ))
    .unwrap_err();
    // `hour` is unknown (did you mean `hours`?) and `hours` is missing.
    assert_eq!(e.diagnostics.len(), 2, "{e}");
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.help.as_deref() == Some("did you mean `hours`?")),
        "{e}"
    );
    assert!(
        e.diagnostics
            .iter()
            .any(|d| d.message.contains("has no `hours`")),
        "{e}"
    );
}

#[test]
fn every_bad_window_of_a_policy_is_reported_in_one_run() {
    let e = compile(&zone(
        "timezone = \"Mars/Olympus\"\nschedule = [{ days = \"funday\", hours = \"08:00-09:00\" }, { days = \"mon\", hours = \"9-5\" }]\n",
    ))
    .unwrap_err();
    assert_eq!(e.diagnostics.len(), 3, "{e}");
}

#[test]
fn check_summary_shows_the_next_open_and_close_in_local_time_and_utc() {
    let p = compile(&zone(
        "timezone = \"Europe/Berlin\"\nschedule = [{ days = \"mon-fri\", hours = \"08:00-18:30\" }]\n",
    ))
    .unwrap();
    // Saturday 2026-12-05 12:00 UTC: closed until Monday 08:00 CET.
    let s = p.summary_at("2026-12-05T12:00:00Z".parse().unwrap());
    let text = s.to_string();
    assert!(
        text.contains("hours mon-fri 08:00-18:30 (Europe/Berlin)"),
        "{text}"
    );
    assert!(
        text.contains(
            "now closed; opens Mon 2026-12-07 08:00:00 CET (2026-12-07T07:00:00Z), then closes Mon 2026-12-07 18:30:00 CET (2026-12-07T17:30:00Z)"
        ),
        "{text}"
    );
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["zones"][0]["schedule"]["open_now"], false);
    assert_eq!(
        json["zones"][0]["schedule"]["next_open"]["utc"],
        "2026-12-07T07:00:00Z"
    );
}

#[test]
fn a_top_up_is_due_daily_or_sooner_for_dense_schedules() {
    use super::schedule::{topup_due, SchedClock};
    let now: jiff::Timestamp = "2026-12-02T08:30:00Z".parse().unwrap();
    let clock = SchedClock {
        now,
        kernel_offset_ns: 0,
    };
    let p = compile(&zone(
        "schedule = [{ days = \"daily\", hours = \"08:00-09:00\" }]\n",
    ))
    .unwrap();
    assert_eq!(
        topup_due(&p, &clock),
        Some(now + jiff::SignedDuration::from_hours(24))
    );
    // 32 windows a day: 62 transitions last under a day; top up after half.
    let windows: Vec<String> = (0..32)
        .map(|k| {
            let m = k * 45;
            format!(
                "{{ days = \"daily\", hours = \"{:02}:{:02}-{:02}:{:02}\" }}",
                m / 60,
                m % 60,
                (m + 20) / 60,
                (m + 20) % 60
            )
        })
        .collect();
    let p = compile(&zone(&format!("schedule = [{}]\n", windows.join(", ")))).unwrap();
    let due = topup_due(&p, &clock).unwrap();
    let hours = due.duration_since(now).as_secs() / 3600;
    assert!((10..=12).contains(&hours), "due in {hours} h");
    let p = compile(&zone("")).unwrap();
    assert_eq!(topup_due(&p, &clock), None);
}
