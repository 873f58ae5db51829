//! `rate` of a zone: what compiles, what `check` says, and located errors.
use std::path::Path;

use super::{compile_str, Diagnostic};
use filter_common::{RATE_KIND_CONNECTIONS, RATE_KIND_PACKETS};

const HEAD: &str =
    "version = 1\n[[zone]]\nname = \"api\"\nports = [\"8080/tcp\"]\nallow = [\"any\"]\n";

fn errors(text: &str) -> Vec<Diagnostic> {
    match compile_str(text, Path::new("p.toml")) {
        Ok(_) => panic!("expected errors:\n{text}"),
        Err(e) => e.iter().cloned().collect(),
    }
}

/// The one error, as `line:column: message`.
fn one_error(rate_line: &str) -> (usize, usize, String, String) {
    let e = errors(&format!("{HEAD}{rate_line}\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    let d = &e[0];
    (
        d.line,
        d.column,
        d.message.clone(),
        d.help.clone().unwrap_or_default(),
    )
}

#[test]
fn a_packet_and_a_connection_limit_compile_to_both_kernel_limits() {
    let p = compile_str(
        &format!(
            "{HEAD}rate = [{{ packets = \"200/s\", burst = 400 }}, \
             {{ connections = \"20/s\", burst = 40, per = [\"/24\", \"/64\"] }}]\n"
        ),
        Path::new("p.toml"),
    )
    .expect("compiles");
    let l = p.zones[0].limits.as_ref().expect("limits");
    let r = l.zone_rates();
    let pk = r.limits[RATE_KIND_PACKETS as usize];
    assert_eq!(
        (pk.interval_ns, pk.tolerance_ns),
        (5_000_000, 399 * 5_000_000)
    );
    assert_eq!((pk.v4_len, pk.v6_len), (32, 128));
    assert_eq!(pk.tracked, super::rate::DEFAULT_TRACKED);
    // Default ceiling: ten times the limit.
    assert_eq!(pk.ceiling_interval_ns, 500_000);
    let c = r.limits[RATE_KIND_CONNECTIONS as usize];
    assert_eq!(c.interval_ns, 50_000_000);
    assert_eq!((c.v4_len, c.v6_len), (24, 64));
}

#[test]
fn check_explains_each_limit_in_words() {
    let p = compile_str(
        &format!("{HEAD}rate = {{ packets = \"200/s\", burst = 400 }}\n"),
        Path::new("p.toml"),
    )
    .expect("compiles");
    let s = p.summary().to_string();
    assert!(
        s.contains("rate  at most 200 packets/s per source, bursts of 400;"),
        "{s}"
    );
    let z = compile_str(
        &format!("{HEAD}rate = {{ connections = \"10/min\", per = \"zone\" }}\n"),
        Path::new("p.toml"),
    )
    .expect("compiles");
    let s = z.summary().to_string();
    assert!(
        s.contains("at most 10 new connections/min for the whole zone, bursts of 10"),
        "{s}"
    );
}

#[test]
fn an_unknown_rate_unit_is_located_with_the_nearest_unit() {
    let (line, col, m, h) = one_error("rate = { packets = \"200/fortnight\" }");
    assert_eq!((line, col), (6, 20));
    assert!(m.contains("unknown rate unit \"fortnight\""), "{m}");
    assert!(h.contains("units are s"), "{h}");
}

#[test]
fn a_zero_or_negative_burst_is_out_of_range() {
    let (_, col, m, _) = one_error("rate = { packets = \"200/s\", burst = 0 }");
    assert_eq!(col, 37);
    assert!(m.contains("`rate.burst` 0 is out of range"), "{m}");
    let (_, _, m, _) = one_error("rate = { packets = \"200/s\", burst = -3 }");
    assert!(m.contains("-3 is out of range"), "{m}");
}

#[test]
fn absurd_rates_and_lengths_are_refused() {
    let (_, _, m, _) = one_error("rate = { packets = \"99999999999/s\" }");
    assert!(m.contains("beyond the largest limit"), "{m}");
    let (_, _, m, _) = one_error("rate = { packets = \"-5/s\" }");
    assert!(m.contains("at least 1"), "{m}");
    let (_, col, m, _) = one_error("rate = { packets = \"5/s\", per = \"/33\" }");
    assert_eq!(col, 33);
    assert!(m.contains("neither an IPv4 length"), "{m}");
    let (_, _, m, _) = one_error("rate = { packets = \"5/s\", tracked = 10000000 }");
    assert!(m.contains("out of range"), "{m}");
}

#[test]
fn a_limit_needs_exactly_one_kind_and_per_zone_takes_no_tracking() {
    let (_, _, m, _) = one_error("rate = { burst = 5 }");
    assert!(m.contains("needs `packets` or `connections`"), "{m}");
    let (_, _, m, h) = one_error("rate = { packets = \"5/s\", connections = \"1/s\" }");
    assert!(m.contains("both"), "{m}");
    assert!(h.contains("its own table"), "{h}");
    let (_, _, m, _) = one_error("rate = { packets = \"5/s\", per = \"zone\", tracked = 5 }");
    assert!(m.contains("`tracked` with per = \"zone\""), "{m}");
    let (_, _, m, _) = one_error("rate = [{ packets = \"5/s\" }, { packets = \"6/s\" }]");
    assert!(m.contains("a second `packets` limit"), "{m}");
    let (_, _, m, h) = one_error("rate = { packets = \"5/s\", brust = 5 }");
    assert!(m.contains("unknown key `brust`"), "{m}");
    assert!(h.contains("`burst`"), "{h}");
}

#[test]
fn a_failsafe_rule_cannot_be_rate_limited() {
    let e = errors(
        "version = 1\n[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"10.0.0.0/8\"]\n\
         rate = { packets = \"5/s\" }\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].line, e[0].column), (5, 1));
    assert!(e[0].message.contains("failsafe rule cannot have a `rate`"));
}

#[test]
fn the_tracked_keys_of_all_zones_must_fit_the_table() {
    let mut text = String::from("version = 1\n[defaults]\nrate_tracked = 40000\n");
    for i in 0..2 {
        text.push_str(&format!(
            "[[zone]]\nname = \"z{i}\"\nports = [\"{}/tcp\"]\nallow = [\"any\"]\n\
             rate = {{ packets = \"5/s\" }}\n",
            8000 + i
        ));
    }
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].line, 13);
    assert!(
        e[0].message.contains("track 80000 sources"),
        "{}",
        e[0].message
    );
}
