//! Transfer-quota fixtures: sequences of frames under one policy (now and
//! then reloaded), clients' frames through the XDP program and the host's
//! frames through the egress program (`test_run_egress`), with the verdict
//! of each, what each egress frame counts and the bytes used worked out by
//! hand from the contract (filter-common/src/quota.rs and the zone step).
//!
//! Every fixture judges at one instant (`AT`, mid-day, mid-month): the
//! harness shifts the datapath's clock there, and a sequence runs in
//! milliseconds, so no period ends inside one; a new period is reached by a
//! reload at a later instant, or by writing an entry of a past period.
//!
//! After every step the whole `QUOTA_USAGE` table is read back and compared
//! with the model's (zone keys, masked addresses, periods, bytes), and the
//! model must agree with every hand-written expectation too.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use anyhow::{Context, Result};
use filter_common::{QuotaKey, QuotaUsage, Reason as R, Verdict as V, RULE_FAILSAFE, RULE_GLOBAL};

use crate::harness::{Harness, Observed};
use crate::model::{
    self,
    quota::{key_of, period_at, zone_key, Usage, UsageKey},
    Sequence,
};
use crate::packet::{ExtHeader, Frame};
use crate::spec::{
    allow, nets, Allow, LimitSpec, PolicySpec, Proto, QuotaDirection, QuotaPeriod, QuotaSpec,
    RejectWith, RuleSpec, ZoneSpec, UNLIMITED_REPLIES,
};

const HOST4: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);
const PORT: u16 = 8080;
const CLIENT_PORT: u16 = 40000;
const ACK: u8 = 0x10;
/// The instant every fixture is judged at.
const AT: &str = "2026-06-15T12:00:00Z";
/// The TC action the egress program returns for every frame (continue).
const TC_NEXT: i32 = -1;

fn at(s: &str) -> jiff::Timestamp {
    s.parse().expect("timestamp")
}

fn observed(verdict: V, reason: R, rule: u32) -> Observed {
    Observed {
        verdict,
        reason,
        rule,
    }
}

/// Allowed by zone `rule`.
fn ok(rule: u32) -> Observed {
    observed(V::Pass, R::Allowed, rule)
}

/// Over quota in zone `rule`.
fn over(rule: u32) -> Observed {
    observed(V::Drop, R::QuotaExceeded, rule)
}

const A: Observed = Observed {
    verdict: V::Pass,
    reason: R::Allowed,
    rule: 1,
};
const Q: Observed = Observed {
    verdict: V::Drop,
    reason: R::QuotaExceeded,
    rule: 1,
};

/// `f` with a payload that makes the frame exactly `size` bytes.
fn sized(f: Frame, size: usize) -> Vec<u8> {
    let base = f.clone().payload(Vec::new()).build().len();
    let out = f.payload(vec![0x5a; size - base]).build();
    assert_eq!(out.len(), size, "frame size");
    out
}

fn addr(s: &str) -> IpAddr {
    s.parse().expect("address")
}

/// A client's TCP segment (ACK) to `dport`, `size` bytes.
fn tcp_to(src: &str, dport: u16, size: usize) -> Vec<u8> {
    let f = match addr(src) {
        IpAddr::V4(a) => Frame::ipv4(a, HOST4),
        IpAddr::V6(a) => Frame::ipv6(a, HOST6),
    };
    sized(f.tcp_flags(CLIENT_PORT, dport, ACK), size)
}

/// A client's TCP segment to the quota zone's port.
fn up(src: &str, size: usize) -> Vec<u8> {
    tcp_to(src, PORT, size)
}

/// The host's TCP segment from `sport` to a client, `size` bytes.
fn down_from(dst: &str, sport: u16, size: usize) -> Vec<u8> {
    let f = match addr(dst) {
        IpAddr::V4(a) => Frame::ipv4(HOST4, a),
        IpAddr::V6(a) => Frame::ipv6(HOST6, a),
    };
    sized(f.tcp_flags(sport, CLIENT_PORT, ACK), size)
}

/// The host's TCP segment from the quota zone's port.
fn down(dst: &str, size: usize) -> Vec<u8> {
    down_from(dst, PORT, size)
}

/// One step of a sequence.
#[derive(Clone, Debug)]
enum Step {
    /// A client's frame (XDP) and what it must get.
    In(Vec<u8>, Observed),
    /// A frame the host sends (egress) and whether it is counted.
    Out(Vec<u8>, bool),
    /// What (zone, address) has used in the current period: `None`, no
    /// entry at all.
    Used(&'static str, &'static str, Option<u64>),
    /// A reload: the policy applied keeping the usage.
    Reload(PolicySpec),
    /// An entry of (zone, address) written with the period before the
    /// current one and these bytes.
    Past(&'static str, &'static str, u64),
}

use Step::{In, Out, Past, Reload, Used};

struct Seq {
    name: &'static str,
    policy: PolicySpec,
    steps: Vec<Step>,
}

fn zone(q: QuotaSpec) -> ZoneSpec {
    ZoneSpec::new("api", vec![(Proto::Tcp, PORT, PORT)], vec![Allow::Any]).quota(q)
}

fn day(bytes: u64) -> QuotaSpec {
    QuotaSpec::new(bytes, QuotaPeriod::Day)
}

fn policy(zones: Vec<ZoneSpec>) -> PolicySpec {
    PolicySpec {
        zones,
        at: Some(at(AT)),
        ..PolicySpec::default()
    }
}

fn sequences() -> Vec<Seq> {
    let download = |b| day(b).direction(QuotaDirection::Download);
    let upload = |b| day(b).direction(QuotaDirection::Upload);
    let reload_first = policy(vec![zone(day(250))]);
    let mut reload_second = policy(vec![
        ZoneSpec::new("dns", vec![(Proto::Udp, 53, 53)], vec![Allow::Any]),
        zone(day(250)),
    ]);
    reload_second.zones[0].quota = None;
    let reload_per24 = policy(vec![
        ZoneSpec::new("dns", vec![(Proto::Udp, 53, 53)], vec![Allow::Any]),
        zone(day(250).per(24, 128)),
    ]);
    let next_day = PolicySpec {
        at: Some(at("2026-06-16T00:00:01Z")),
        ..policy(vec![zone(day(250))])
    };
    let month = |s: &str| PolicySpec {
        at: Some(at(s)),
        ..policy(vec![zone(QuotaSpec::new(250, QuotaPeriod::Month))])
    };
    let guarded = PolicySpec {
        blocklist: nets(&["10.66.0.0/16"]),
        failsafe: vec![RuleSpec {
            ports: vec![(Proto::Tcp, PORT, PORT)],
            from: nets(&["10.77.0.0/16"]),
        }],
        ..policy(vec![ZoneSpec::new(
            "api",
            vec![(Proto::Tcp, PORT, PORT)],
            vec![allow("10.0.0.0/8")],
        )
        .quota(day(150))])
    };
    let units = policy(vec![
        ZoneSpec::new("kib", vec![(Proto::Tcp, PORT, PORT)], vec![Allow::Any])
            .quota(day(1024).written("1 KiB")),
        ZoneSpec::new(
            "kb",
            vec![(Proto::Tcp, PORT + 1, PORT + 1)],
            vec![Allow::Any],
        )
        .quota(day(1000).written("1 kB")),
    ]);
    let two_zones = policy(vec![
        zone(day(150)),
        ZoneSpec::new("web", vec![(Proto::Tcp, 80, 80)], vec![Allow::Any]),
    ]);
    let download_and_web = policy(vec![
        zone(download(150)),
        ZoneSpec::new("web", vec![(Proto::Tcp, 80, 80)], vec![Allow::Any]),
    ]);
    vec![
        Seq {
            name: "quota_under_the_limit_passes_and_counts_whole_frames",
            policy: policy(vec![zone(day(1000))]),
            steps: vec![
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 250), A),
                Used("api", "10.0.0.1", Some(350)),
                In(up("10.0.0.2", 60), A),
                Used("api", "10.0.0.2", Some(60)),
                Used("api", "10.0.0.3", None),
            ],
        },
        Seq {
            name: "quota_the_frame_crossing_the_limit_passes_the_next_is_refused",
            policy: policy(vec![zone(day(250))]),
            steps: vec![
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                // 200 used < 250: admitted, and counted (300).
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), Q),
                In(up("10.0.0.1", 54), Q),
                // Refused frames are not counted.
                Used("api", "10.0.0.1", Some(300)),
                In(up("10.0.0.2", 100), A),
                Used("api", "10.0.0.2", Some(100)),
            ],
        },
        Seq {
            name: "quota_reaching_the_limit_exactly_refuses_the_next",
            policy: policy(vec![zone(day(200))]),
            steps: vec![
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 54), Q),
                Used("api", "10.0.0.1", Some(200)),
            ],
        },
        Seq {
            name: "quota_units_kib_and_kb_differ",
            policy: units,
            steps: vec![
                In(up("10.0.0.1", 500), A),
                In(up("10.0.0.1", 500), A),
                // 1000 < 1024: admitted (1100), then over.
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), Q),
                // The same source in another zone: its own count.
                In(tcp_to("10.0.0.1", PORT + 1, 500), ok(2)),
                In(tcp_to("10.0.0.1", PORT + 1, 500), ok(2)),
                In(tcp_to("10.0.0.1", PORT + 1, 100), over(2)),
                Used("kib", "10.0.0.1", Some(1100)),
                Used("kb", "10.0.0.1", Some(1000)),
            ],
        },
        Seq {
            name: "quota_per_24_aggregates_a_network_and_spares_the_next",
            policy: policy(vec![zone(day(250).per(24, 128))]),
            steps: vec![
                In(up("10.1.2.3", 100), A),
                In(up("10.1.2.4", 100), A),
                In(up("10.1.2.5", 100), A),
                In(up("10.1.2.3", 100), Q),
                In(up("10.1.2.200", 100), Q),
                In(up("10.1.3.1", 100), A),
                Used("api", "10.1.2.77", Some(300)),
                Used("api", "10.1.3.9", Some(100)),
            ],
        },
        Seq {
            name: "quota_per_zone_one_count_for_every_source_of_both_families",
            policy: policy(vec![zone(day(250).per_zone())]),
            steps: vec![
                In(up("10.0.0.1", 100), A),
                In(up("172.16.0.1", 100), A),
                In(up("192.0.2.99", 100), A),
                In(up("10.9.9.9", 100), Q),
                // One count for the zone: IPv6 sources share it.
                In(up("2001:db8::1", 100), Q),
                In(up("fd00::1", 100), Q),
                Used("api", "10.200.0.1", Some(300)),
                Used("api", "2001:db8::99", Some(300)),
            ],
        },
        Seq {
            name: "quota_download_counts_egress_then_ingress_refuses",
            policy: policy(vec![zone(download(300))]),
            steps: vec![
                // Upload is not counted (an entry with 0 bytes).
                In(up("10.0.0.1", 100), A),
                Used("api", "10.0.0.1", Some(0)),
                Out(down("10.0.0.1", 150), true),
                Used("api", "10.0.0.1", Some(150)),
                In(up("10.0.0.1", 100), A),
                Used("api", "10.0.0.1", Some(150)),
                Out(down("10.0.0.1", 200), true),
                In(up("10.0.0.1", 100), Q),
                // Egress never refuses: still counted.
                Out(down("10.0.0.1", 100), true),
                Used("api", "10.0.0.1", Some(450)),
                // Downloads to another client are its own.
                Out(down("10.0.0.2", 120), true),
                Used("api", "10.0.0.2", Some(120)),
                In(up("10.0.0.2", 100), A),
            ],
        },
        Seq {
            name: "quota_upload_only_does_not_count_egress",
            policy: policy(vec![zone(upload(300))]),
            steps: vec![
                Out(down("10.0.0.1", 500), false),
                Used("api", "10.0.0.1", None),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), Q),
                Out(down("10.0.0.1", 500), false),
                Used("api", "10.0.0.1", Some(300)),
            ],
        },
        Seq {
            name: "quota_both_directions_add_up",
            policy: policy(vec![zone(day(300).direction(QuotaDirection::Both))]),
            steps: vec![
                In(up("10.0.0.1", 100), A),
                Out(down("10.0.0.1", 150), true),
                Used("api", "10.0.0.1", Some(250)),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), Q),
                Used("api", "10.0.0.1", Some(350)),
            ],
        },
        Seq {
            name: "quota_ipv6_per_64_aggregates_upload_and_download",
            policy: policy(vec![zone(day(250).per(32, 64))]),
            steps: vec![
                In(up("2001:db8:1:2::1", 100), A),
                In(up("2001:db8:1:2:ffff::9", 100), A),
                In(up("2001:db8:1:2::3", 100), A),
                In(up("2001:db8:1:2::1", 100), Q),
                In(up("2001:db8:1:3::1", 100), A),
                Out(down("2001:db8:1:3::5", 100), true),
                Used("api", "2001:db8:1:2::", Some(300)),
                Used("api", "2001:db8:1:3::", Some(200)),
                In(up("2001:db8:1:3::2", 100), A),
                In(up("2001:db8:1:3::3", 100), Q),
                // IPv4 stays per source (/32).
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.2", 100), A),
                Used("api", "10.0.0.1", Some(100)),
            ],
        },
        Seq {
            name: "quota_ipv4_mapped_sources_and_destinations_count_as_ipv4",
            policy: policy(vec![zone(day(250))]),
            steps: vec![
                In(up("::ffff:10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                In(up("::ffff:10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), Q),
                In(up("::ffff:10.0.0.1", 100), Q),
                Used("api", "10.0.0.1", Some(300)),
                Out(down("::ffff:10.0.0.2", 100), true),
                Used("api", "10.0.0.2", Some(100)),
                Used("api", "::ffff:10.0.0.2", Some(100)),
            ],
        },
        Seq {
            name: "quota_audit_zone_passes_over_quota_as_audit",
            policy: policy(vec![zone(day(150)).audit()]),
            steps: vec![
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), observed(V::Pass, R::Audit, 1)),
                In(up("10.0.0.1", 100), observed(V::Pass, R::Audit, 1)),
                Used("api", "10.0.0.1", Some(200)),
            ],
        },
        Seq {
            name: "quota_rejecting_zone_answers_over_quota",
            policy: PolicySpec {
                reject_budget: Some(UNLIMITED_REPLIES),
                ..policy(vec![zone(day(150)).reject(RejectWith::TcpReset)])
            },
            steps: vec![
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), observed(V::Drop, R::Rejected, 1)),
                Used("api", "10.0.0.1", Some(200)),
            ],
        },
        Seq {
            // Burst 3: the third frame is within the rate and over the
            // quota; the fourth is over the rate, which is checked first.
            name: "quota_after_the_rate_limit_whose_refusals_are_not_counted",
            policy: policy(vec![zone(day(150)).limited(LimitSpec::packets(10, "h", 3))]),
            steps: vec![
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), Q),
                In(up("10.0.0.1", 100), observed(V::Drop, R::RateLimited, 1)),
                Used("api", "10.0.0.1", Some(200)),
                // Rate-limited frames of a source within its quota: not
                // counted either.
                In(up("10.0.0.2", 60), A),
                In(up("10.0.0.2", 60), A),
                In(up("10.0.0.2", 60), A),
                In(up("10.0.0.2", 60), observed(V::Drop, R::RateLimited, 1)),
                Used("api", "10.0.0.2", Some(180)),
            ],
        },
        Seq {
            name: "quota_blocklist_failsafe_fragments_and_allow_come_first",
            policy: guarded,
            steps: vec![
                In(
                    up("10.66.0.1", 100),
                    observed(V::Drop, R::Blocklist, RULE_GLOBAL),
                ),
                Used("api", "10.66.0.1", None),
                // Failsafe sources are never counted nor refused.
                In(
                    up("10.77.0.1", 100),
                    observed(V::Pass, R::Failsafe, RULE_FAILSAFE),
                ),
                In(
                    up("10.77.0.1", 100),
                    observed(V::Pass, R::Failsafe, RULE_FAILSAFE),
                ),
                Used("api", "10.77.0.1", None),
                // Outside `allow`: not_allowed, not counted.
                In(up("192.0.2.5", 100), observed(V::Drop, R::NotAllowed, 1)),
                Used("api", "192.0.2.5", None),
                // A first fragment is judged (and counted) by the zone; a
                // later one passes as a fragment, uncounted.
                In(
                    sized(
                        Frame::ipv4(Ipv4Addr::new(10, 0, 0, 1), HOST4)
                            .frag(0, true)
                            .tcp_flags(CLIENT_PORT, PORT, ACK),
                        100,
                    ),
                    A,
                ),
                In(
                    sized(
                        Frame::ipv4(Ipv4Addr::new(10, 0, 0, 1), HOST4)
                            .frag(100, false)
                            .tcp_flags(CLIENT_PORT, PORT, ACK),
                        100,
                    ),
                    observed(V::Pass, R::Fragment, RULE_GLOBAL),
                ),
                Used("api", "10.0.0.1", Some(100)),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), Q),
            ],
        },
        Seq {
            name: "quota_reload_keeps_usage_by_zone_name_across_renumbering",
            policy: reload_first.clone(),
            steps: vec![
                In(up("10.0.0.1", 100), A),
                Reload(reload_first),
                In(up("10.0.0.1", 100), A),
                Used("api", "10.0.0.1", Some(200)),
                // "dns" before "api": api is zone 2 now, its usage kept.
                Reload(reload_second),
                In(up("10.0.0.1", 100), ok(2)),
                In(up("10.0.0.1", 100), over(2)),
                Used("api", "10.0.0.1", Some(300)),
                // Another `per` is another key: counted afresh.
                Reload(reload_per24),
                In(up("10.0.0.1", 100), ok(2)),
                Used("api", "10.0.0.1", Some(100)),
            ],
        },
        Seq {
            // docs/policy.md: a lower quota applies to the usage as it
            // stands; another `period` starts the sources from 0.
            name: "quota_reload_lowers_and_raises_bytes_and_changes_the_period",
            policy: policy(vec![zone(day(250))]),
            steps: vec![
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                Reload(policy(vec![zone(day(150))])),
                In(up("10.0.0.1", 100), Q),
                Reload(policy(vec![zone(day(1000))])),
                In(up("10.0.0.1", 100), A),
                Used("api", "10.0.0.1", Some(300)),
                Reload(policy(vec![zone(QuotaSpec::new(150, QuotaPeriod::Hour))])),
                Used("api", "10.0.0.1", Some(0)),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), Q),
                Used("api", "10.0.0.1", Some(200)),
            ],
        },
        Seq {
            name: "quota_past_period_entry_reads_as_nothing_and_is_restarted",
            policy: policy(vec![zone(day(250))]),
            steps: vec![
                Past("api", "10.0.0.1", 5000),
                Used("api", "10.0.0.1", Some(0)),
                In(up("10.0.0.1", 100), A),
                Used("api", "10.0.0.1", Some(100)),
                // Download counting restarts one too.
                Past("api", "10.0.0.2", 5000),
                Out(down("10.0.0.2", 120), true),
                Used("api", "10.0.0.2", Some(120)),
                In(up("10.0.0.2", 100), A),
                // 220 < 250: admitted (320).
                In(up("10.0.0.2", 100), A),
                In(up("10.0.0.2", 100), Q),
            ],
        },
        Seq {
            name: "quota_a_new_day_starts_again",
            policy: policy(vec![zone(day(250))]),
            steps: vec![
                In(up("10.0.0.1", 200), A),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), Q),
                Reload(next_day),
                In(up("10.0.0.1", 100), A),
                Used("api", "10.0.0.1", Some(100)),
            ],
        },
        Seq {
            name: "quota_a_new_month_starts_again",
            policy: month("2026-06-30T12:00:00Z"),
            steps: vec![
                In(up("10.0.0.1", 200), A),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), Q),
                // Still June: kept.
                Reload(month("2026-06-30T23:00:00Z")),
                In(up("10.0.0.1", 100), Q),
                Reload(month("2026-07-01T00:30:00Z")),
                In(up("10.0.0.1", 100), A),
                Used("api", "10.0.0.1", Some(100)),
            ],
        },
        Seq {
            name: "quota_a_zone_without_quota_is_unaffected",
            policy: two_zones,
            steps: vec![
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), Q),
                In(tcp_to("10.0.0.1", 80, 1000), ok(2)),
                In(tcp_to("10.0.0.1", 80, 1000), ok(2)),
                Out(down_from("10.0.0.1", 80, 1000), false),
                In(tcp_to("10.0.0.1", 80, 1000), ok(2)),
                Used("api", "10.0.0.1", Some(200)),
            ],
        },
        Seq {
            name: "quota_egress_not_from_a_quota_port_is_not_counted",
            policy: download_and_web,
            steps: vec![
                // Another port, a zone without quota, another protocol.
                Out(down_from("10.0.0.1", PORT + 1, 500), false),
                Out(down_from("10.0.0.1", 80, 500), false),
                Out(
                    sized(
                        Frame::ipv4(HOST4, Ipv4Addr::new(10, 0, 0, 1)).udp(PORT, CLIENT_PORT),
                        500,
                    ),
                    false,
                ),
                // The host as a client of someone's port 8080.
                Out(
                    sized(
                        Frame::ipv4(HOST4, Ipv4Addr::new(10, 0, 0, 1)).tcp_flags(
                            CLIENT_PORT,
                            PORT,
                            ACK,
                        ),
                        500,
                    ),
                    false,
                ),
                // A later fragment, IPv6 behind an extension header.
                Out(
                    sized(
                        Frame::ipv4(HOST4, Ipv4Addr::new(10, 0, 0, 1))
                            .frag(100, false)
                            .tcp_flags(PORT, CLIENT_PORT, ACK),
                        500,
                    ),
                    false,
                ),
                Out(
                    sized(
                        Frame::ipv6(HOST6, "2001:db8::1".parse().expect("addr"))
                            .ext(ExtHeader::HopByHop { len_units: 0 })
                            .tcp_flags(PORT, CLIENT_PORT, ACK),
                        500,
                    ),
                    false,
                ),
                Used("api", "10.0.0.1", None),
                Used("api", "2001:db8::1", None),
                In(up("10.0.0.1", 100), A),
                In(up("10.0.0.1", 100), A),
                // A first fragment from the port is counted.
                Out(
                    sized(
                        Frame::ipv4(HOST4, Ipv4Addr::new(10, 0, 0, 1))
                            .frag(0, true)
                            .tcp_flags(PORT, CLIENT_PORT, ACK),
                        200,
                    ),
                    true,
                ),
                Used("api", "10.0.0.1", Some(200)),
                In(up("10.0.0.1", 100), Q),
            ],
        },
    ]
}

/// The model's key of (zone, address) under `policy`'s quota for `zone`.
fn model_key(policy: &PolicySpec, zone: &str, a: &str) -> Result<(UsageKey, u64)> {
    let z = policy
        .zones
        .iter()
        .find(|z| z.name == zone)
        .with_context(|| format!("no zone {zone}"))?;
    let q = z
        .quota
        .as_ref()
        .with_context(|| format!("zone {zone} has no quota"))?;
    let now = policy.at.unwrap_or_else(jiff::Timestamp::now);
    Ok((key_of(zone, q, addr(a)), period_at(q.period, now)))
}

/// A model key as the kernel stores it.
pub fn kernel_key(k: &UsageKey) -> QuotaKey {
    QuotaKey {
        zone_key: zone_key(&k.zone),
        family: k.family,
        len: k.len,
        _pad: [0; 2],
        addr: k.addr,
    }
}

/// The model's usage table as the kernel's entries, sorted.
pub fn model_table(seq: &Sequence) -> Vec<(QuotaKey, QuotaUsage)> {
    let mut v: Vec<_> = seq
        .quotas
        .entries()
        .map(|(k, u)| {
            (
                kernel_key(k),
                QuotaUsage {
                    period: u.period,
                    bytes: u.bytes,
                },
            )
        })
        .collect();
    v.sort_by_key(|(k, _)| *k);
    v
}

/// The differences of the kernel's `QUOTA_USAGE` from the model's table,
/// one line each (empty when they agree).
pub fn table_differences(h: &Harness, seq: &Sequence) -> Result<Vec<String>> {
    let mut kernel = h.quota_usage()?;
    kernel.sort_by_key(|(k, _)| *k);
    let model = model_table(seq);
    let show = |k: &QuotaKey| {
        let a = if k.family == 4 {
            IpAddr::from([k.addr[0], k.addr[1], k.addr[2], k.addr[3]]).to_string()
        } else {
            IpAddr::from(k.addr).to_string()
        };
        format!("zone key {:#010x} {a}/{}", k.zone_key, k.len)
    };
    let mut out = Vec::new();
    for (k, u) in &kernel {
        match model.iter().find(|(mk, _)| mk == k) {
            None => out.push(format!("kernel has {} = {u:?}, model none", show(k))),
            Some((_, mu)) if mu != u => {
                out.push(format!("{}: kernel {u:?}, model {mu:?}", show(k)))
            }
            Some(_) => {}
        }
    }
    for (k, u) in &model {
        if !kernel.iter().any(|(kk, _)| kk == k) {
            out.push(format!("model has {} = {u:?}, kernel none", show(k)));
        }
    }
    Ok(out)
}

/// Runs `s` through the model alone: every disagreement with the
/// expectations, as lines.
fn model_disagreements(s: &Seq) -> Vec<String> {
    let mut out = Vec::new();
    let mut seq = Sequence::new();
    let mut policy = s.policy.clone();
    for (i, step) in s.steps.iter().enumerate() {
        let mut say = |m: String| out.push(format!("{} step {i}: {m}", s.name));
        match step {
            In(frame, expect) => {
                let (j, _) = model::decide_with(&policy, frame, &mut seq);
                let m = observed(j.verdict, j.reason, j.rule);
                if m != *expect {
                    say(format!("model says {m}, expected {expect}"));
                }
            }
            Out(frame, counted) => {
                let d = model::egress(&policy, frame, &mut seq);
                if d.is_some() != *counted {
                    say(format!("model counts {d:?}, expected counted: {counted}"));
                }
            }
            Used(zone, a, bytes) => match model_key(&policy, zone, a) {
                Err(e) => say(format!("{e:#}")),
                Ok((k, period)) => {
                    let got = seq
                        .quotas
                        .get(&k)
                        .map(|u| if u.period == period { u.bytes } else { 0 });
                    if got != *bytes {
                        say(format!("model has used {got:?}, expected {bytes:?}"));
                    }
                }
            },
            Reload(p) => policy = p.clone(),
            Past(zone, a, bytes) => match model_key(&policy, zone, a) {
                Err(e) => say(format!("{e:#}")),
                Ok((k, period)) => seq.quotas.set(
                    k,
                    Usage {
                        period: period - 1,
                        bytes: *bytes,
                    },
                ),
            },
        }
    }
    out
}

/// Does some sequence expect a frame dropped `quota_exceeded`? (For the
/// fixtures' reason coverage.)
pub fn exceeds_some() -> bool {
    sequences().iter().any(|s| {
        s.steps
            .iter()
            .any(|st| matches!(st, In(_, o) if o.reason == R::QuotaExceeded))
    })
}

/// Names of the sequences.
pub fn names() -> Vec<&'static str> {
    sequences().iter().map(|s| s.name).collect()
}

/// Runs one sequence on the kernel, the model alongside; the failures.
fn run_one(h: &mut Harness, s: &Seq) -> Result<Vec<String>> {
    let mut fails = model_disagreements(s);
    // A policy the compiler refuses fails the fixture, not the suite.
    if let Err(e) = h.apply(&s.policy) {
        fails.push(format!("{}: policy rejected: {e:#}", s.name));
        return Ok(fails);
    }
    let mut seq = Sequence::new();
    let mut policy = s.policy.clone();
    for (i, step) in s.steps.iter().enumerate() {
        let mut say = |m: String| fails.push(format!("{} step {i}: {m}", s.name));
        match step {
            In(frame, expect) => {
                model::decide_with(&policy, frame, &mut seq);
                if let Some(got) = h.check(frame, *expect)? {
                    say(format!("program did {got}, expected {expect}"));
                }
            }
            Out(frame, _) => {
                model::egress(&policy, frame, &mut seq);
                let r = h.egress(frame)?;
                if r != TC_NEXT {
                    say(format!("egress program returned {r}, expected {TC_NEXT}"));
                }
            }
            Used(zone, a, bytes) => {
                let (k, period) = model_key(&policy, zone, a)?;
                let entry = h
                    .quota_usage()?
                    .into_iter()
                    .find(|(kk, _)| *kk == kernel_key(&k));
                let got = entry.map(|(_, u)| if u.period == period { u.bytes } else { 0 });
                if got != *bytes {
                    say(format!(
                        "kernel has used {got:?} ({entry:?}), expected {bytes:?}"
                    ));
                }
            }
            Reload(p) => {
                if let Err(e) = h.apply_keeping_rates(p) {
                    say(format!("reload rejected: {e:#}"));
                    return Ok(fails);
                }
                policy = p.clone();
            }
            Past(zone, a, bytes) => {
                let (k, period) = model_key(&policy, zone, a)?;
                let u = Usage {
                    period: period - 1,
                    bytes: *bytes,
                };
                h.set_quota_usage(
                    kernel_key(&k),
                    QuotaUsage {
                        period: u.period,
                        bytes: u.bytes,
                    },
                )?;
                seq.quotas.set(k, u);
            }
        }
        for d in table_differences(h, &seq)? {
            say(format!("usage table: {d}"));
        }
    }
    Ok(fails)
}

/// A full `QUOTA_USAGE` (`QUOTA_TABLE_MAX` entries, all but one of another
/// zone): a source with an entry is still counted and refused; a new
/// source finds no room and is admitted uncounted, every time (quotas
/// account, rate limits defend); once an entry is freed it is counted.
/// The model has no table size: the kernel alone, against the contract.
fn table_full(h: &mut Harness) -> Result<Vec<String>> {
    let mut fails = Vec::new();
    let p = policy(vec![zone(day(250))]);
    h.apply(&p)?;
    let expect = |h: &mut Harness,
                  fails: &mut Vec<String>,
                  frame: &[u8],
                  o: Observed,
                  what: &str|
     -> Result<()> {
        if let Some(got) = h.check(frame, o)? {
            fails.push(format!("{what}: program did {got}, expected {o}"));
        }
        Ok(())
    };
    expect(h, &mut fails, &up("10.0.0.9", 200), A, "before the fill")?;
    let filler = |i: u32| QuotaKey {
        zone_key: zone_key("filler"),
        family: 4,
        len: 32,
        _pad: [0; 2],
        addr: {
            let mut a = [0u8; 16];
            a[..4].copy_from_slice(&i.to_be_bytes());
            a
        },
    };
    for i in 1..filter_common::QUOTA_TABLE_MAX {
        h.set_quota_usage(
            filler(i),
            QuotaUsage {
                period: 1,
                bytes: 0,
            },
        )?;
    }
    let used = |h: &Harness, a: &str| -> Result<Option<u64>> {
        let (k, _) = model_key(&p, "api", a)?;
        Ok(h.quota_usage()?
            .into_iter()
            .find(|(kk, _)| *kk == kernel_key(&k))
            .map(|(_, u)| u.bytes))
    };
    expect(
        h,
        &mut fails,
        &up("10.0.0.9", 100),
        A,
        "an entry in a full table",
    )?;
    expect(
        h,
        &mut fails,
        &up("10.0.0.9", 100),
        Q,
        "an entry in a full table",
    )?;
    for _ in 0..5 {
        expect(
            h,
            &mut fails,
            &up("10.0.0.1", 100),
            A,
            "a new source, the table full",
        )?;
    }
    let (nine, one) = (used(h, "10.0.0.9")?, used(h, "10.0.0.1")?);
    if (nine, one) != (Some(300), None) {
        fails.push(format!(
            "used: 10.0.0.9 {nine:?}, 10.0.0.1 {one:?}; expected Some(300), None"
        ));
    }
    h.remove_quota_usage(&filler(1))?;
    expect(h, &mut fails, &up("10.0.0.1", 100), A, "room again")?;
    if used(h, "10.0.0.1")? != Some(100) {
        fails.push(format!(
            "room again: 10.0.0.1 used {:?}",
            used(h, "10.0.0.1")?
        ));
    }
    h.reset_quota_usage()?;
    Ok(fails)
}

/// Runs the sequences and the table check; (passed, failed).
pub fn run(h: &mut Harness) -> Result<(u64, u64)> {
    let (mut passed, mut failed) = (0, 0);
    let started = std::time::Instant::now();
    let fails = table_full(h)?;
    for f in &fails {
        println!("quota check {f}");
    }
    println!(
        "quota check quota_a_full_table_leaves_new_sources_uncounted: {} ({:.1}s)",
        if fails.is_empty() { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    if fails.is_empty() {
        passed += 1;
    } else {
        failed += 1;
    }
    for s in sequences() {
        let fails = run_one(h, &s)?;
        for f in &fails {
            println!("quota fixture {f}");
        }
        println!(
            "quota fixture {}: {}",
            s.name,
            if fails.is_empty() { "ok" } else { "FAILED" }
        );
        if fails.is_empty() {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    Ok((passed, failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_model_agrees_with_every_quota_fixture() {
        let all: Vec<String> = sequences().iter().flat_map(model_disagreements).collect();
        assert!(all.is_empty(), "{}", all.join("\n"));
    }

    #[test]
    fn quota_fixture_policies_are_valid_and_names_unique() {
        let mut names = std::collections::BTreeSet::new();
        for s in sequences() {
            assert!(names.insert(s.name), "{} twice", s.name);
            assert!(s.name.starts_with("quota_"), "{}", s.name);
            let reloads = s.steps.iter().filter_map(|st| match st {
                Reload(p) => Some(p),
                _ => None,
            });
            for p in std::iter::once(&s.policy).chain(reloads) {
                if let Err(e) = p.check() {
                    panic!("{}: {e:?}", s.name);
                }
            }
        }
        assert!(names.len() >= 20);
        assert!(exceeds_some());
    }
}
