//! The exposition (OpenMetrics text) from a snapshot of the counters.
//!
//! prometheus-client 0.23 writes label values as given, so a zone or
//! interface name holding `"` or `\` or a newline would end the value early
//! and inject labels or lines. Every value goes through [`Escaped`], which
//! escapes them as the text format requires.
use std::fmt::Write as _;

use prometheus_client::{
    encoding::{text::encode, EncodeLabelValue, LabelValueEncoder},
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

use crate::status::CounterRow;

/// A label value, escaped when encoded (`\` → `\\`, `"` → `\"`, newline → `\n`).
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Escaped(pub String);

impl EncodeLabelValue for Escaped {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        for c in self.0.chars() {
            match c {
                '\\' => encoder.write_str("\\\\")?,
                '"' => encoder.write_str("\\\"")?,
                '\n' => encoder.write_str("\\n")?,
                c => encoder.write_char(c)?,
            }
        }
        Ok(())
    }
}

type Labels = Vec<(&'static str, Escaped)>;

fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (*k, Escaped(v.to_string())))
        .collect()
}

/// What one scrape shows.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub rows: Vec<CounterRow>,
    pub generation: u32,
    pub reloads_ok: u64,
    pub reloads_error: u64,
    /// (list, IPv4 prefixes, IPv6 prefixes); empty if unknown.
    pub prefixes: Vec<(&'static str, usize, usize)>,
    /// (interface, XDP mode).
    pub modes: Vec<(String, String)>,
    /// (interface, its filter is in place).
    pub enforcing: Vec<(String, bool)>,
    /// Sampled events: the datapath's counters (None if unreadable).
    pub events: Option<crate::events::Stats>,
    /// `portcullis events` streams open now.
    pub event_subscribers: usize,
    /// Lines event subscribers lost by falling behind, and subscribers
    /// disconnected for taking nothing.
    pub event_subscriber_drops: u64,
    pub event_subscribers_stuck: u64,
    /// Scheduled zones as the datapath judges them, and the Unix time now.
    pub zone_hours: Vec<crate::status::ZoneHours>,
    pub now_unix: i64,
    /// Bans (None: the daemon holds none of its own, e.g. `status` off-line).
    pub bans: Option<crate::bans::BanStats>,
    /// The CrowdSec bouncer (None: no `[crowdsec]`).
    pub crowdsec: Option<crate::crowdsec::CrowdsecStatus>,
    /// `[blocklist] feeds`.
    pub feeds: Vec<crate::feeds::FeedState>,
    /// Quota zones' use in their current period.
    pub quotas: Vec<crate::loader::ZoneQuotaUse>,
}

pub fn render(s: &Snapshot) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();

    let packets = Family::<Labels, Counter>::default();
    let bytes = Family::<Labels, Counter>::default();
    // A zone the policy no longer has keeps its id (and its counters in the
    // map), but is not shown as if it still filtered.
    for r in s.rows.iter().filter(|r| !r.zone_removed) {
        let l = labels(&[
            ("interface", &r.interface),
            ("zone", &r.zone),
            ("reason", &r.reason),
            ("verdict", &r.verdict),
        ]);
        packets.get_or_create(&l).inc_by(r.packets);
        bytes.get_or_create(&l).inc_by(r.bytes);
    }
    registry.register(
        "portcullis_packets",
        "Frames judged, by interface, zone, reason and verdict",
        packets,
    );
    registry.register("portcullis_bytes", "Bytes of the frames judged", bytes);

    let generation = Gauge::<i64>::default();
    generation.set(i64::from(s.generation));
    registry.register(
        "portcullis_policy_generation",
        "Generation of the enforced policy",
        generation,
    );

    let reloads = Family::<Labels, Counter>::default();
    reloads
        .get_or_create(&labels(&[("result", "ok")]))
        .inc_by(s.reloads_ok);
    reloads
        .get_or_create(&labels(&[("result", "error")]))
        .inc_by(s.reloads_error);
    registry.register(
        "portcullis_reloads",
        "Policy reloads since the daemon started",
        reloads,
    );

    let prefixes = Family::<Labels, Gauge>::default();
    for &(list, v4, v6) in &s.prefixes {
        prefixes
            .get_or_create(&labels(&[("list", list), ("family", "ipv4")]))
            .set(v4 as i64);
        prefixes
            .get_or_create(&labels(&[("list", list), ("family", "ipv6")]))
            .set(v6 as i64);
    }
    registry.register(
        "portcullis_prefixes",
        "Prefixes in the enforced policy, after merging",
        prefixes,
    );

    let modes = Family::<Labels, Gauge>::default();
    for (iface, mode) in &s.modes {
        modes
            .get_or_create(&labels(&[("interface", iface), ("mode", mode)]))
            .set(1);
    }
    registry.register(
        "portcullis_attach_mode",
        "1 for the XDP mode each interface runs in",
        modes,
    );

    if !s.zone_hours.is_empty() {
        let open = Family::<Labels, Gauge>::default();
        let next = Family::<Labels, Gauge>::default();
        let left = Family::<Labels, Gauge>::default();
        for h in &s.zone_hours {
            let l = labels(&[("zone", &h.zone)]);
            open.get_or_create(&l).set(i64::from(h.open));
            if let Some(t) = h.next_change {
                next.get_or_create(&l).set((t - s.now_unix).max(0));
            }
            left.get_or_create(&l)
                .set(h.known_until.map_or(0, |k| (k - s.now_unix).max(0)));
        }
        registry.register(
            "portcullis_zone_open",
            "1 while a scheduled zone is inside its hours (as the datapath judges it now)",
            open,
        );
        registry.register(
            "portcullis_zone_next_change_seconds",
            "Seconds until a scheduled zone opens or closes next (absent past its last stored transition)",
            next,
        );
        registry.register(
            "portcullis_zone_schedule_horizon_seconds",
            "Seconds of stored transitions left for a scheduled zone; at 0 it stays closed (the daemon tops them up daily)",
            left,
        );
    }

    if !s.quotas.is_empty() {
        let limit = Family::<Labels, Gauge>::default();
        let counted = Family::<Labels, Gauge>::default();
        let over = Family::<Labels, Gauge>::default();
        let top = Family::<Labels, Gauge>::default();
        for q in &s.quotas {
            let l = labels(&[("zone", &q.zone), ("period", &q.period)]);
            limit.get_or_create(&l).set(q.limit_bytes as i64);
            counted.get_or_create(&l).set(q.counted as i64);
            over.get_or_create(&l).set(q.over as i64);
            // At most loader::quota::TOP sources per zone: bounded labels.
            for c in &q.top {
                top.get_or_create(&labels(&[("zone", &q.zone), ("source", &c.source)]))
                    .set(c.bytes as i64);
            }
        }
        registry.register(
            "portcullis_quota_limit_bytes",
            "A quota zone's limit per source and period",
            limit,
        );
        registry.register(
            "portcullis_quota_sources",
            "Sources (or aggregates) with transfer counted in the zone's current period",
            counted,
        );
        registry.register(
            "portcullis_quota_sources_over",
            "Sources at or over the zone's quota: refused until the period rolls over",
            over,
        );
        registry.register(
            "portcullis_quota_top_bytes",
            "Bytes of the zone's largest consumers in the current period (top 5)",
            top,
        );
    }

    let enforcing = Family::<Labels, Gauge>::default();
    for (iface, on) in &s.enforcing {
        enforcing
            .get_or_create(&labels(&[("interface", iface)]))
            .set(i64::from(*on));
    }
    registry.register(
        "portcullis_enforcing",
        "1 while the interface's pinned link and the pinned maps are in place",
        enforcing,
    );

    if let Some(ev) = &s.events {
        let events = Family::<Labels, Counter>::default();
        for (result, n) in [
            ("emitted", ev.emitted),
            ("suppressed", ev.suppressed),
            ("lost", ev.lost),
        ] {
            events
                .get_or_create(&labels(&[("result", result)]))
                .inc_by(n);
        }
        registry.register(
            "portcullis_events",
            "Sampled decisions: emitted into the ring, suppressed by the rate limit, lost (ring full)",
            events,
        );
    }
    let subscribers = Gauge::<i64>::default();
    subscribers.set(s.event_subscribers as i64);
    registry.register(
        "portcullis_event_subscribers",
        "Event streams (`portcullis events`, `top`) open now",
        subscribers,
    );
    let drops = Family::<Labels, Counter>::default();
    drops
        .get_or_create(&labels(&[("why", "behind")]))
        .inc_by(s.event_subscriber_drops);
    drops
        .get_or_create(&labels(&[("why", "stuck")]))
        .inc_by(s.event_subscribers_stuck);
    registry.register(
        "portcullis_event_subscriber_drops",
        "Event lines not delivered: behind = lost by a subscriber that fell behind; stuck = subscribers disconnected for taking nothing",
        drops,
    );

    if let Some(b) = &s.bans {
        let active = Family::<Labels, Gauge>::default();
        let dropped = Family::<Labels, Counter>::default();
        for (tag, n, packets, _) in &b.tags {
            let l = labels(&[("tag", tag)]);
            active.get_or_create(&l).set(*n as i64);
            dropped.get_or_create(&l).inc_by(*packets);
        }
        registry.register(
            "portcullis_bans_active",
            "Bans in force, by tag (the empty tag: bans without --tag)",
            active,
        );
        registry.register(
            "portcullis_ban_drops",
            "Frames dropped by a ban, by the ban's tag",
            dropped,
        );
        let changes = Family::<Labels, Counter>::default();
        for (what, n) in [
            ("added", b.added),
            ("updated", b.updated),
            ("removed", b.removed),
            ("expired", b.expired),
        ] {
            changes
                .get_or_create(&labels(&[("change", what)]))
                .inc_by(n);
        }
        registry.register(
            "portcullis_bans",
            "Ban changes since the daemon started: added, updated (banned again), removed (ban del/flush), expired (removed by the daemon after the datapath stopped dropping)",
            changes,
        );
    }

    if let Some(c) = &s.crowdsec {
        crowdsec(&mut registry, c);
    }
    if !s.feeds.is_empty() {
        feeds(&mut registry, &s.feeds, s.now_unix);
    }

    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

fn crowdsec(registry: &mut Registry, c: &crate::crowdsec::CrowdsecStatus) {
    let up = Gauge::<i64>::default();
    up.set(c.up as i64);
    registry.register(
        "portcullis_crowdsec_up",
        "1 if the last pull of the CrowdSec decision stream succeeded",
        up,
    );
    if let Some(t) = c.last_ok {
        let last = Gauge::<i64>::default();
        last.set(t as i64);
        registry.register(
            "portcullis_crowdsec_last_success_timestamp_seconds",
            "Unix time of the last successful pull of the CrowdSec decision stream",
            last,
        );
    }
    let pulls = Family::<Labels, Counter>::default();
    for (result, n) in &c.pulls {
        pulls
            .get_or_create(&labels(&[("result", result)]))
            .inc_by(*n);
    }
    registry.register(
        "portcullis_crowdsec_pulls",
        "Pulls of the CrowdSec decision stream by result: ok, or why it failed (unreachable, timeout, unauthorized, http_status, too_large, bad_answer, key_file, ca_file, tls, bans)",
        pulls,
    );
    let decisions = Family::<Labels, Counter>::default();
    for (what, n) in &c.decisions {
        decisions
            .get_or_create(&labels(&[("result", what)]))
            .inc_by(*n);
    }
    registry.register(
        "portcullis_crowdsec_decisions",
        "CrowdSec decisions by what became of them: added, updated, removed (as bans), skipped_scope / _type / _origin / _value / _duration / _full",
        decisions,
    );
    let tracked = Gauge::<i64>::default();
    tracked.set(c.tracked as i64);
    registry.register(
        "portcullis_crowdsec_tracked_prefixes",
        "Prefixes with at least one CrowdSec decision in force",
        tracked,
    );
}

/// Per feed (label `feed`: its name): the copy in force and the attempts.
fn feeds(registry: &mut Registry, feeds: &[crate::feeds::FeedState], now: i64) {
    let success = Family::<Labels, Gauge>::default();
    let age = Family::<Labels, Gauge>::default();
    let entries = Family::<Labels, Gauge>::default();
    let fetches = Family::<Labels, Counter>::default();
    for f in feeds {
        let l = labels(&[("feed", &f.name)]);
        if let Some(t) = f.checked_at {
            success.get_or_create(&l).set(t as i64);
            age.get_or_create(&l)
                .set(now.saturating_sub(t as i64).max(0));
        }
        entries.get_or_create(&l).set(f.entries.unwrap_or(0) as i64);
        for (result, n) in &f.results {
            fetches
                .get_or_create(&labels(&[("feed", &f.name), ("result", result)]))
                .inc_by(*n);
        }
    }
    registry.register(
        "portcullis_feed_last_success_timestamp_seconds",
        "Unix time the feed's server last confirmed the copy in force (a 200 or a 304); absent before the first success",
        success,
    );
    registry.register(
        "portcullis_feed_age_seconds",
        "Seconds since the feed's server last confirmed the copy in force",
        age,
    );
    registry.register(
        "portcullis_feed_entries",
        "Entries of the feed's copy in force (0: no copy yet)",
        entries,
    );
    registry.register(
        "portcullis_feed_fetches",
        "Feed fetch attempts since the daemon started, by result: updated, not_modified, unchanged; refused: html, invalid, emptied, too_large; failed: unreachable, timeout, http_status, unauthorized, tls, apply_failed, cache_error",
        fetches,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through serde, so that fields added to `CounterRow` with a default
    /// need no change here.
    fn row(interface: &str, zone: &str) -> CounterRow {
        serde_json::from_value(serde_json::json!({
            "interface": interface,
            "zone": zone,
            "reason": "not_allowed",
            "verdict": "drop",
            "packets": 7,
            "bytes": 420,
        }))
        .unwrap()
    }

    /// The label values of a sample line, unescaped by a strict reader of
    /// the text format: every value must be a quoted string whose only
    /// escapes are `\\`, `\"` and `\n`, and the line must end after `}`
    /// with exactly one value.
    fn strict_labels(line: &str) -> Vec<(String, String)> {
        let open = line.find('{').expect("labels");
        let mut chars = line[open + 1..].chars();
        let mut out = Vec::new();
        loop {
            let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
            assert!(
                !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "bad label name {key:?} in {line:?}"
            );
            assert_eq!(chars.next(), Some('"'), "{line:?}");
            let mut value = String::new();
            loop {
                match chars.next().expect("unterminated value") {
                    '\\' => match chars.next() {
                        Some('\\') => value.push('\\'),
                        Some('"') => value.push('"'),
                        Some('n') => value.push('\n'),
                        other => panic!("bad escape {other:?} in {line:?}"),
                    },
                    '"' => break,
                    '\n' => panic!("raw newline in a value: {line:?}"),
                    c => value.push(c),
                }
            }
            out.push((key, value));
            match chars.next() {
                Some(',') => continue,
                Some('}') => break,
                other => panic!("expected , or }} after a value, got {other:?} in {line:?}"),
            }
        }
        let rest: String = chars.collect();
        assert_eq!(rest.split_whitespace().count(), 1, "{line:?}");
        out
    }

    #[test]
    fn hostile_zone_and_interface_names_are_escaped_in_label_values() {
        let zone = "x\",verdict=\"pass";
        let iface = "a\"b=\\c";
        let multi = "evil\nportcullis_policy_generation 999";
        let snap = Snapshot {
            rows: vec![row(iface, zone), row("eth0", multi), row("eth\\", "z\\\"")],
            generation: 3,
            reloads_ok: 1,
            reloads_error: 0,
            prefixes: vec![("blocklist", 2, 1)],
            modes: vec![(iface.into(), "native".into())],
            enforcing: vec![(iface.into(), true)],
            ..Snapshot::default()
        };
        let text = render(&snap).unwrap();
        assert!(text.contains(r#"interface="a\"b=\\c",zone="x\",verdict=\"pass","#));
        assert!(text.contains(r#"zone="evil\nportcullis_policy_generation 999""#));
        // One generation line: the newline in a zone name injected none.
        let gen: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("portcullis_policy_generation"))
            .collect();
        assert_eq!(gen, ["portcullis_policy_generation 3"]);
        let mut seen = Vec::new();
        for line in text
            .lines()
            .filter(|l| l.starts_with("portcullis_packets_total{"))
        {
            let l = strict_labels(line);
            let names: Vec<&str> = l.iter().map(|(k, _)| k.as_str()).collect();
            assert_eq!(names, ["interface", "zone", "reason", "verdict"], "{line}");
            assert_eq!(l[3].1, "drop", "{line}");
            seen.push((l[0].1.clone(), l[1].1.clone()));
        }
        seen.sort();
        let mut want = vec![
            (iface.to_string(), zone.to_string()),
            ("eth0".to_string(), multi.to_string()),
            ("eth\\".to_string(), "z\\\"".to_string()),
        ];
        want.sort();
        assert_eq!(seen, want);
        let mode = text
            .lines()
            .find(|l| l.starts_with("portcullis_attach_mode{"))
            .unwrap();
        assert_eq!(
            strict_labels(mode),
            [
                ("interface".to_string(), iface.to_string()),
                ("mode".to_string(), "native".to_string())
            ]
        );
    }

    #[test]
    fn removed_zones_are_left_out_and_enforcing_is_a_gauge_per_interface() {
        let mut gone = row("inet0", "old-zone");
        gone.zone_removed = true;
        let text = render(&Snapshot {
            rows: vec![row("inet0", "keep-admin"), gone],
            enforcing: vec![("inet0".into(), true), ("mgmt0".into(), false)],
            ..Snapshot::default()
        })
        .unwrap();
        assert!(text.contains("keep-admin"));
        assert!(!text.contains("old-zone"), "{text}");
        assert!(
            text.contains("portcullis_enforcing{interface=\"inet0\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("portcullis_enforcing{interface=\"mgmt0\"} 0"),
            "{text}"
        );
    }

    #[test]
    fn plain_names_are_written_unchanged() {
        let text = render(&Snapshot {
            rows: vec![row("inet0", "keep-admin")],
            ..Snapshot::default()
        })
        .unwrap();
        assert!(text.contains(
            "portcullis_packets_total{interface=\"inet0\",zone=\"keep-admin\",reason=\"not_allowed\",verdict=\"drop\"} 7"
        ));
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn feeds_are_exported_per_feed_with_escaped_labels_and_results() {
        let mut results = std::collections::BTreeMap::new();
        results.insert("updated".to_string(), 2);
        results.insert("html".to_string(), 1);
        let feed = crate::feeds::FeedState {
            name: "lists.example.org/a\"b".into(),
            entries: Some(1234),
            checked_at: Some(1_800_000_000),
            results,
            ..Default::default()
        };
        let never = crate::feeds::FeedState {
            name: "new".into(),
            ..Default::default()
        };
        let text = render(&Snapshot {
            feeds: vec![feed, never],
            now_unix: 1_800_000_060,
            ..Snapshot::default()
        })
        .unwrap();
        for line in [
            "portcullis_feed_entries{feed=\"lists.example.org/a\\\"b\"} 1234",
            "portcullis_feed_last_success_timestamp_seconds{feed=\"lists.example.org/a\\\"b\"} 1800000000",
            "portcullis_feed_age_seconds{feed=\"lists.example.org/a\\\"b\"} 60",
            "portcullis_feed_fetches_total{feed=\"lists.example.org/a\\\"b\",result=\"html\"} 1",
            "portcullis_feed_fetches_total{feed=\"lists.example.org/a\\\"b\",result=\"updated\"} 2",
            "portcullis_feed_entries{feed=\"new\"} 0",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
        // Never confirmed: no timestamp (0 would read as "stale since 1970").
        assert!(
            !text.contains("portcullis_feed_last_success_timestamp_seconds{feed=\"new\"}"),
            "{text}"
        );
    }

    #[test]
    fn event_counters_are_exported_by_result() {
        let text = render(&Snapshot {
            events: Some(crate::events::Stats {
                emitted: 3,
                suppressed: 97,
                lost: 1,
            }),
            event_subscribers: 2,
            event_subscriber_drops: 5,
            ..Snapshot::default()
        })
        .unwrap();
        for line in [
            "portcullis_events_total{result=\"emitted\"} 3",
            "portcullis_events_total{result=\"suppressed\"} 97",
            "portcullis_events_total{result=\"lost\"} 1",
            "portcullis_event_subscribers 2",
            "portcullis_event_subscriber_drops_total{why=\"behind\"} 5",
        ] {
            assert!(text.contains(line), "{line} missing:\n{text}");
        }
    }
}
