//! `quota` of a zone: what compiles, the period clock, what `check` says,
//! and located errors.
use std::path::Path;

use filter_common::{
    quota_period, quota_tag, quota_zone_key, QUOTA_DAY, QUOTA_DOWNLOAD, QUOTA_HOUR, QUOTA_MINUTE,
    QUOTA_MONTH, QUOTA_MONTHS, QUOTA_UPLOAD,
};
use jiff::Timestamp;

use super::quota::{parse_bytes, period_at, QuotaDirection, QuotaPeriod, QuotaSpec};
use super::schedule::SchedClock;
use super::{compile_str, CompiledPolicy, Diagnostic};

const HEAD: &str =
    "version = 1\n[[zone]]\nname = \"api\"\nports = [\"8080/tcp\"]\nallow = [\"any\"]\n";

fn compile(text: &str) -> CompiledPolicy {
    compile_str(text, Path::new("p.toml")).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

fn quota(line: &str) -> QuotaSpec {
    compile(&format!("{HEAD}{line}\n")).zones[0]
        .quota
        .clone()
        .expect("a quota")
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match compile_str(text, Path::new("p.toml")) {
        Ok(_) => panic!("expected errors:\n{text}"),
        Err(e) => e.iter().cloned().collect(),
    }
}

/// The one error of a zone with this `quota` line: line, column, message, help.
fn one_error(quota_line: &str) -> (usize, usize, String, String) {
    let e = errors(&format!("{HEAD}{quota_line}\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    let d = &e[0];
    (
        d.line,
        d.column,
        d.message.clone(),
        d.help.clone().unwrap_or_default(),
    )
}

fn utc(s: &str) -> Timestamp {
    s.parse().unwrap()
}

const TAI: i128 = 37_000_000_000;

fn clock(now: &str) -> SchedClock {
    SchedClock {
        now: utc(now),
        kernel_offset_ns: TAI,
    }
}

/// `t` on the kernel's clock of [`clock`].
fn tai(t: &str) -> u64 {
    (utc(t).as_nanosecond() + TAI) as u64
}

#[test]
fn a_quota_compiles_with_its_defaults() {
    let q = quota("quota = { bytes = \"10 GB\", period = \"day\" }");
    assert_eq!(q.bytes, 10_000_000_000);
    assert_eq!(q.written.as_deref(), Some("10 GB"));
    assert_eq!(q.period, QuotaPeriod::Day);
    assert_eq!(q.direction, QuotaDirection::Both);
    assert_eq!(q.per.masks(), (32, 128));
    // All keys, as a sub-table.
    let p = compile(&format!(
        "{HEAD}[zone.quota]\nbytes = 1500\nperiod = \"month\"\ndirection = \"download\"\n\
         per = [\"/24\", \"/64\"]\n"
    ));
    let q = p.zones[0].quota.as_ref().unwrap();
    assert_eq!((q.bytes, q.written.as_deref()), (1500, None));
    assert_eq!(q.period, QuotaPeriod::Month);
    assert_eq!(q.direction.bits(), QUOTA_DOWNLOAD);
    assert_eq!(q.per.masks(), (24, 64));
    let q = quota("quota = { bytes = \"1 MiB\", period = \"hour\", per = \"zone\" }");
    assert_eq!(q.per.masks(), (0, 0));
    assert_eq!(
        quota("quota = { bytes = \"1 MB\", period = \"minute\", direction = \"upload\" }")
            .direction
            .bits(),
        QUOTA_UPLOAD
    );
    // A zone without one has none.
    assert!(compile(HEAD).zones[0].quota.is_none());
}

#[test]
fn amounts_take_decimal_and_binary_units_and_decimals() {
    let b = |s: &str| parse_bytes(s).map(|(b, _)| b).map_err(|p| p.message);
    assert_eq!(b("10 GB"), Ok(10_000_000_000));
    assert_eq!(b("10GB"), Ok(10_000_000_000));
    assert_eq!(b("  10   GB "), Ok(10_000_000_000));
    assert_eq!(b("1 kB"), Ok(1000));
    assert_eq!(b("1 KB"), Ok(1000));
    assert_eq!(b("1 KiB"), Ok(1024));
    assert_eq!(b("1 MB"), Ok(1_000_000));
    assert_eq!(b("1 MiB"), Ok(1 << 20));
    assert_eq!(b("1.5 GiB"), Ok(1_610_612_736));
    assert_eq!(b("2 TB"), Ok(2_000_000_000_000));
    assert_eq!(b("2 TiB"), Ok(2 << 40));
    assert_eq!(b("0.5 kB"), Ok(500));
    assert_eq!(b("7 B"), Ok(7));
    // Whole bytes, rounded down.
    assert_eq!(b("1.0001 kB"), Ok(1000));
    assert_eq!(b("1.1 KiB"), Ok(1126));
    assert_eq!(b("000.250000 MB"), Ok(250_000));
    // Exactly 1 EB is the largest.
    assert_eq!(b("1000000 TB"), Ok(1_000_000_000_000_000_000));
    assert_eq!(parse_bytes("1.50 GiB").unwrap().1, "1.50 GiB");
    assert_eq!(parse_bytes("10GB").unwrap().1, "10 GB");
    for bad in [
        "10", "GB", ".5 GB", "5. GB", "1e9 B", "1,000 GB", "ten GB", "10 gb", "10 GX",
    ] {
        assert!(parse_bytes(bad).is_err(), "{bad}");
    }
}

#[test]
fn a_period_in_the_amount_is_located_with_the_fix() {
    let (line, col, m, h) = one_error("quota = { bytes = \"10 GB/day\", period = \"day\" }");
    assert_eq!((line, col), (6, 19));
    assert!(m.contains("\"10 GB/day\" has a period in it"), "{m}");
    assert!(h.contains("bytes = \"10 GB\", period = \"day\""), "{h}");
    let (_, _, _, h) = one_error("quota = { bytes = \"5 TB/month\", period = \"month\" }");
    assert!(h.contains("period = \"month\""), "{h}");
}

#[test]
fn an_unknown_unit_suggests_the_nearest_one() {
    let (line, col, m, h) = one_error("quota = { bytes = \"10 GX\", period = \"day\" }");
    assert_eq!((line, col), (6, 19));
    assert!(m.contains("unknown quota unit \"GX\""), "{m}");
    assert!(h.contains("did you mean \"10 GB\"?"), "{h}");
    assert!(h.contains("KiB"), "{h}");
    let (_, _, _, h) = one_error("quota = { bytes = \"3 gib\", period = \"day\" }");
    assert!(h.contains("did you mean \"3 GiB\"?"), "{h}");
    let (_, _, m, h) = one_error("quota = { bytes = \"10\", period = \"day\" }");
    assert!(m.contains("has no unit"), "{m}");
    assert!(h.contains("integer of bytes"), "{h}");
}

#[test]
fn negative_zero_tiny_and_absurd_amounts_are_refused() {
    let cases = [
        ("\"-5 GB\"", "is negative"),
        ("-5", "is negative"),
        ("\"0 GB\"", "a quota of 0 bytes"),
        ("\"0.000 MB\"", "a quota of 0 bytes"),
        ("0", "a quota of 0 bytes"),
        ("\"0.0001 kB\"", "less than one byte"),
        ("\"0.5 B\"", "less than one byte"),
        ("\"1000001 TB\"", "beyond the largest quota"),
        ("\"1000000 TiB\"", "beyond the largest quota"),
        ("\"99999999999999999999999 B\"", "beyond the largest quota"),
        ("\"184467440737095516160 TiB\"", "beyond the largest quota"),
        ("2000000000000000000", "beyond the largest quota"),
    ];
    for (bytes, want) in cases {
        let (line, col, m, _) =
            one_error(&format!("quota = {{ bytes = {bytes}, period = \"day\" }}"));
        assert_eq!((line, col), (6, 19), "{bytes}");
        assert!(m.contains(want), "{bytes}: {m}");
    }
    let (_, _, m, _) = one_error("quota = { bytes = 1.5e9, period = \"day\" }");
    assert!(
        m.contains("must be a string with a unit or an integer"),
        "{m}"
    );
}

#[test]
fn period_direction_and_per_are_checked_where_they_are() {
    let (line, col, m, h) = one_error("quota = { bytes = \"1 GB\", period = \"fortnight\" }");
    assert_eq!((line, col), (6, 36));
    assert!(
        m.contains("`quota.period` must be one of \"minute\", \"hour\", \"day\", \"month\""),
        "{m}"
    );
    assert!(h.contains("aligned to UTC"), "{h}");
    let (_, _, _, h) = one_error("quota = { bytes = \"1 GB\", period = \"days\" }");
    assert!(h.starts_with("did you mean \"day\"?"), "{h}");
    let (_, col, m, h) =
        one_error("quota = { bytes = \"1 GB\", period = \"day\", direction = \"sideways\" }");
    assert_eq!(col, 55);
    assert!(m.contains("`quota.direction` must be one of"), "{m}");
    assert!(h.contains("\"upload\" counts"), "{h}");
    let (_, col, m, _) = one_error("quota = { bytes = \"1 GB\", period = \"day\", per = \"/33\" }");
    assert_eq!(col, 49);
    assert!(m.contains("neither an IPv4 length"), "{m}");
    let (_, _, m, _) = one_error("quota = { bytes = \"1 GB\", period = \"day\", per = \"/129\" }");
    assert!(m.contains("neither an IPv4 length"), "{m}");
    let (_, _, m, _) =
        one_error("quota = { bytes = \"1 GB\", period = \"day\", per = [\"/24\", \"/16\"] }");
    assert!(m.contains("names one family's length twice"), "{m}");
    let (_, _, m, h) = one_error("quota = { bytes = \"1 GB\", period = \"day\", per = \"sorce\" }");
    assert!(m.contains("unknown `per`"), "{m}");
    assert!(h.contains("\"source\""), "{h}");
}

#[test]
fn unknown_and_missing_keys_and_a_non_table_are_reported() {
    let (line, col, m, h) = one_error("quota = { byte = \"1 GB\", bytes = 5, period = \"day\" }");
    assert_eq!((line, col), (6, 11));
    assert!(m.contains("unknown key `byte` in a zone's `quota`"), "{m}");
    assert!(h.contains("`bytes`"), "{h}");
    let (_, col, m, h) = one_error("quota = { period = \"day\" }");
    assert_eq!(col, 9);
    assert!(m.contains("a zone's `quota` has no `bytes`"), "{m}");
    assert!(h.contains("bytes = \"10 GB\""), "{h}");
    let (_, _, m, _) = one_error("quota = { bytes = \"1 GB\" }");
    assert!(m.contains("has no `period`"), "{m}");
    let (_, _, m, _) = one_error("quota = \"10 GB\"");
    assert!(m.contains("`zone.quota` must be a table"), "{m}");
    // Every problem of one quota at once.
    let e = errors(&format!(
        "{HEAD}quota = {{ bytes = \"1 GX\", period = \"week\", direction = \"up\" }}\n"
    ));
    assert_eq!(e.len(), 3, "{e:?}");
}

#[test]
fn a_failsafe_rule_cannot_have_a_quota() {
    let e = errors(
        "version = 1\n[[failsafe]]\nports = [\"22/tcp\"]\nfrom = [\"10.0.0.0/8\"]\n\
         quota = { bytes = \"1 GB\", period = \"day\" }\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].line, e[0].column), (5, 1));
    assert!(e[0].message.contains("failsafe rule cannot have a `quota`"));
    assert!(e[0].help.as_deref().unwrap().contains("[[zone]]"));
}

#[test]
fn two_quota_zones_whose_names_hash_alike_are_told_to_rename_one() {
    // Found by search: FNV-1a gives both 0x68ddaec2.
    let (a, b) = ("zone-579599", "zone-762382");
    assert_eq!(quota_zone_key(a.as_bytes()), quota_zone_key(b.as_bytes()));
    let zone = |name: &str, port: u16, quota: bool| {
        format!(
            "[[zone]]\nname = \"{name}\"\nports = [\"{port}/tcp\"]\nallow = [\"any\"]\n{}",
            if quota {
                "quota = { bytes = \"1 GB\", period = \"day\" }\n"
            } else {
                ""
            }
        )
    };
    let text = format!("version = 1\n{}{}", zone(a, 1, true), zone(b, 2, true));
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!((e[0].line, e[0].column), (11, 1));
    assert!(
        e[0].message
            .contains("zones \"zone-579599\" (line 6) and \"zone-762382\""),
        "{}",
        e[0].message
    );
    assert!(e[0].help.as_deref().unwrap().contains("rename one"));
    // Only zones with a quota have usage.
    compile(&format!(
        "version = 1\n{}{}",
        zone(a, 1, true),
        zone(b, 2, false)
    ));
}

#[test]
fn fixed_periods_are_counted_from_the_epoch_with_utc_edges() {
    for (period, len, kind) in [
        (QuotaPeriod::Minute, 60, QUOTA_MINUTE),
        (QuotaPeriod::Hour, 3600, QUOTA_HOUR),
        (QuotaPeriod::Day, 86_400, QUOTA_DAY),
    ] {
        assert_eq!(period.kind(), kind);
        let edge = utc("2026-12-03T00:00:00Z");
        let n = edge.as_second() as u64 / len;
        assert_eq!(n * len, edge.as_second() as u64, "midnight is an edge");
        let at = period_at(period, edge);
        assert_eq!((at.number, at.start), (n, edge));
        assert!(at.next.is_empty());
        let before = edge - jiff::SignedDuration::from_nanos(1);
        let at = period_at(period, before);
        assert_eq!(at.number, n - 1);
        assert_eq!(at.start, edge - jiff::SignedDuration::from_secs(len as i64));
    }
    // 2026-12-03T10:17:42Z: its minute, hour and day.
    let t = utc("2026-12-03T10:17:42.5Z");
    assert_eq!(
        period_at(QuotaPeriod::Minute, t).start,
        utc("2026-12-03T10:17:00Z")
    );
    assert_eq!(
        period_at(QuotaPeriod::Hour, t).start,
        utc("2026-12-03T10:00:00Z")
    );
    let day = period_at(QuotaPeriod::Day, t);
    assert_eq!(day.start, utc("2026-12-03T00:00:00Z"));
    assert_eq!(day.number, 20_790);
    // The epoch is period 0 of every kind, and so is anything before it.
    assert_eq!(period_at(QuotaPeriod::Day, Timestamp::UNIX_EPOCH).number, 0);
    assert_eq!(
        period_at(QuotaPeriod::Month, utc("1969-07-20T20:17:00Z")).number,
        0
    );
}

#[test]
fn months_are_calendar_months_numbered_from_january_1970() {
    let at = period_at(QuotaPeriod::Month, utc("2026-12-15T12:00:00Z"));
    assert_eq!(at.number, 56 * 12 + 11);
    assert_eq!(at.start, utc("2026-12-01T00:00:00Z"));
    assert_eq!(at.next.len(), QUOTA_MONTHS);
    // December → January of the next year, and a leap February.
    assert_eq!(at.next[0], utc("2027-01-01T00:00:00Z"));
    assert_eq!(at.next[1], utc("2027-02-01T00:00:00Z"));
    assert_eq!(at.next[14], utc("2028-03-01T00:00:00Z"));
    assert_eq!(at.next[15], utc("2028-04-01T00:00:00Z"));
    assert!(at.next.windows(2).all(|w| w[0] < w[1]));
    assert!(at.start < at.next[0]);
    // The edges: the first nanosecond of a month is in it, the last of the
    // month before is not.
    let jan = utc("2027-01-01T00:00:00Z");
    assert_eq!(period_at(QuotaPeriod::Month, jan).number, 56 * 12 + 12);
    assert_eq!(period_at(QuotaPeriod::Month, jan).start, jan);
    let last = jan - jiff::SignedDuration::from_nanos(1);
    assert_eq!(period_at(QuotaPeriod::Month, last).number, 56 * 12 + 11);
    assert_eq!(
        period_at(QuotaPeriod::Month, Timestamp::UNIX_EPOCH).number,
        0
    );
}

#[test]
fn the_kernel_entry_carries_the_period_on_the_tai_clock() {
    let q = quota("quota = { bytes = \"10 GB\", period = \"hour\", per = [\"/24\", \"/64\"] }");
    let c = clock("2026-12-03T10:17:42Z");
    let z = q.zone_quota("api", &c);
    let hour = utc("2026-12-03T10:00:00Z").as_second() as u64 / 3600;
    assert_eq!(z.limit_bytes, 10_000_000_000);
    assert_eq!(z.first, quota_tag(QUOTA_HOUR, hour));
    assert_eq!(z.start_ns, tai("2026-12-03T10:00:00Z"));
    assert_eq!(z.len_ns, 3_600_000_000_000);
    assert_eq!(z.next, [u64::MAX; QUOTA_MONTHS]);
    assert_eq!(z.zone_key, quota_zone_key(b"api"));
    assert_eq!(z.directions, QUOTA_UPLOAD | QUOTA_DOWNLOAD);
    assert_eq!((z.v4_len, z.v6_len), (24, 64));
    // The datapath's reading of it: the hour rolls over at the UTC hour.
    assert_eq!(
        quota_period(&z, tai("2026-12-03T10:59:59.999999999Z")),
        z.first
    );
    assert_eq!(quota_period(&z, tai("2026-12-03T11:00:00Z")), z.first + 1);
    assert_eq!(quota_period(&z, tai("2026-12-04T10:00:00Z")), z.first + 24);

    let q = quota("quota = { bytes = \"5 TB\", period = \"month\", per = \"zone\" }");
    let z = q.zone_quota("api", &clock("2026-12-31T23:59:59Z"));
    assert_eq!(z.first, quota_tag(QUOTA_MONTH, 56 * 12 + 11));
    assert_eq!((z.start_ns, z.len_ns), (tai("2026-12-01T00:00:00Z"), 0));
    assert_eq!(z.next[0], tai("2027-01-01T00:00:00Z"));
    assert_eq!(z.next[QUOTA_MONTHS - 1], tai("2028-04-01T00:00:00Z"));
    assert_eq!((z.v4_len, z.v6_len), (0, 0));
    assert_eq!(quota_period(&z, tai("2026-12-31T23:59:59Z")), z.first);
    assert_eq!(quota_period(&z, tai("2027-01-01T00:00:00Z")), z.first + 1);
    assert_eq!(quota_period(&z, tai("2027-02-28T00:00:00Z")), z.first + 2);
    // A reload in the same period writes the same entry; in the next, the next.
    assert_eq!(q.zone_quota("api", &clock("2026-12-01T00:00:00Z")), z);
    let jan = q.zone_quota("api", &clock("2027-01-01T00:00:00Z"));
    assert_eq!(jan.first, z.first + 1);
    assert_eq!(jan.next[0], z.next[1]);
}

#[test]
fn check_explains_the_quota_in_words() {
    let p = compile(&format!(
        "{HEAD}quota = {{ bytes = \"10 GB\", period = \"day\" }}\n"
    ));
    let s = p.summary().to_string();
    assert!(
        s.contains(
            "      quota at most 10 GB (10,000,000,000 bytes) per source per UTC day, upload \
             and download counted; over it the zone's action (drop)\n"
        ),
        "{s}"
    );
    let json = serde_json::to_value(p.summary()).unwrap();
    assert!(json["zones"][0]["quota"]
        .as_str()
        .unwrap()
        .starts_with("at most 10 GB"));
    let words = |line: &str| {
        let p = compile(&format!("{HEAD}{line}\n"));
        p.summary().zones[0].quota.clone().unwrap()
    };
    assert_eq!(
        words(
            "action = \"reject\"\nquota = { bytes = 1500, period = \"month\", direction = \
             \"download\", per = \"zone\" }"
        ),
        "at most 1,500 bytes for the whole zone per calendar month (UTC), download counted \
         (upload is not); over it the zone's action (reject)"
    );
    assert_eq!(
        words(
            "audit = true\nquota = { bytes = \"1.5 GiB\", period = \"minute\", direction = \
             \"upload\", per = \"/24\" }"
        ),
        "at most 1.5 GiB (1,610,612,736 bytes) per IPv4 /24 and IPv6 source per UTC minute, \
         upload counted (download is not); over it counted as audit and passed (the zone audits)"
    );
    assert!(
        words("quota = { bytes = \"1 B\", period = \"day\" }").starts_with("at most 1 byte per")
    );
    assert!(compile(HEAD).summary().zones[0].quota.is_none());
}

#[test]
fn quota_zones_are_topped_up_daily() {
    use super::schedule::topup_due;
    let c = clock("2026-12-03T10:17:42Z");
    let p = compile(&format!(
        "{HEAD}quota = {{ bytes = \"1 GB\", period = \"day\" }}\n"
    ));
    assert_eq!(
        topup_due(&p, &c),
        Some(c.now + jiff::SignedDuration::from_hours(24))
    );
    assert_eq!(topup_due(&compile(HEAD), &c), None);
}
