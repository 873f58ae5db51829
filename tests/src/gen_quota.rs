//! Random transfer quotas for the differential test, and the host's
//! frames (egress) that count downloads. Limits are small (a few hundred to
//! a few thousand bytes) so that a policy's frames cross them; sources come
//! back again and again (`gen_rate::sticky_sources` covers quota zones).
//!
//! The datapath counts periods on the kernel's clock, which runs on while
//! a policy's frames run: every quota policy is judged at an instant
//! (`PolicySpec::at`) at least `SETTLE_S` before the end of each of its
//! quotas' periods, so no period ends inside a run.

use std::net::IpAddr;

use jiff::{SignedDuration, Timestamp};
use rand::{seq::SliceRandom, Rng};

use crate::gen::{HOST4, HOST6};
use crate::model::quota::period_at;
use crate::packet::{ExtHeader, Frame};
use crate::spec::{PolicySpec, Proto, QuotaDirection, QuotaPeriod, QuotaSpec};

/// Seconds a judged instant keeps clear of the end of a quota's period.
pub const SETTLE_S: i64 = 50;

/// Does no period of `p` end within `SETTLE_S` after `at`?
fn settled(period: QuotaPeriod, at: Timestamp) -> bool {
    period_at(period, at) == period_at(period, at + SignedDuration::from_secs(SETTLE_S))
}

fn quota<R: Rng + ?Sized>(rng: &mut R, at: Timestamp) -> QuotaSpec {
    let periods: Vec<QuotaPeriod> = QuotaPeriod::ALL
        .into_iter()
        .filter(|p| settled(*p, at))
        .collect();
    let period = *periods.choose(rng).unwrap_or(&QuotaPeriod::Month);
    // Mostly a few hundred bytes: a policy's frames to one zone from one
    // source (or prefix) are few.
    let (bytes, written) = match rng.gen_range(0..20) {
        0 => (1000, Some("1 kB")),
        1 => (2048, Some("2 KiB")),
        2 => (1_000_000, Some("1 MB")),
        3..=7 => (rng.gen_range(500..=3000), None),
        _ => (rng.gen_range(100..500), None),
    };
    let mut q = QuotaSpec::new(bytes, period);
    if let Some(w) = written {
        q = q.written(w);
    }
    q.direction = match rng.gen_range(0..4) {
        0 => None,
        n => Some(QuotaDirection::ALL[n - 1]),
    };
    match rng.gen_range(0..6) {
        0 => q.zone = true,
        1 => q.v4_len = [8, 16, 24].choose(rng).copied().expect("lengths"),
        2 => q.v6_len = [48, 56, 64].choose(rng).copied().expect("lengths"),
        3 => {
            q.v4_len = 24;
            q.v6_len = 64;
        }
        _ => {}
    }
    q
}

/// Gives some zones of some policies a quota, and a quota policy an instant
/// clear of its periods' ends (kept if the schedules chose one that is).
pub fn add_quotas<R: Rng + ?Sized>(rng: &mut R, p: &mut PolicySpec) {
    if p.zones.is_empty() || !rng.gen_bool(0.5) {
        return;
    }
    let at = match p.at {
        Some(at) => at,
        None => {
            // A random minute of 2026, a few seconds in: every period
            // kind has at least 50 s left.
            let minute = rng.gen_range(0..365 * 24 * 60) as i64;
            let at = "2026-01-01T00:00:00Z"
                .parse::<Timestamp>()
                .expect("instant")
                + SignedDuration::from_secs(minute * 60 + rng.gen_range(1..=9));
            p.at = Some(at);
            at
        }
    };
    let n = p.zones.len();
    for z in &mut p.zones {
        if n == 1 || rng.gen_bool(0.6) {
            z.quota = Some(quota(rng, at));
        }
    }
}

/// A client's well-formed frame to a quota zone's port, mostly from a
/// source that comes back (`gen_rate::sticky_sources`), of up to a few
/// hundred bytes: what makes a policy's sources cross their quotas. `None`
/// for a policy without quotas.
pub fn random_upload<R: Rng + ?Sized>(rng: &mut R, policy: &PolicySpec) -> Option<Frame> {
    let zones: Vec<_> = policy.zones.iter().filter(|z| z.quota.is_some()).collect();
    let zone = zones.choose(rng)?;
    let &(proto, lo, hi) = zone.ports.choose(rng)?;
    let sticky = crate::gen_rate::sticky_sources(policy);
    let src = match sticky.choose(rng) {
        Some(a) if rng.gen_bool(0.8) => *a,
        _ => crate::gen::random_source(rng, policy),
    };
    let f = match src {
        IpAddr::V4(a) if rng.gen_bool(0.1) => Frame::ipv6(a.to_ipv6_mapped(), HOST6),
        IpAddr::V4(a) => Frame::ipv4(a, HOST4),
        IpAddr::V6(a) => Frame::ipv6(a, HOST6),
    };
    let (sport, dport) = (rng.gen_range(1024..=65535), rng.gen_range(lo..=hi));
    let f = match proto {
        Proto::Tcp => f.tcp_flags(sport, dport, if rng.gen_bool(0.2) { 0x02 } else { 0x10 }),
        Proto::Udp => f.udp(sport, dport),
        Proto::Sctp => f.sctp(sport, dport),
    };
    let size = if rng.gen_bool(0.5) {
        rng.gen_range(0..40)
    } else {
        rng.gen_range(40..300)
    };
    Some(f.payload(vec![0x75; size]))
}

/// A frame the host sends: mostly from a zone's port (a quota zone's, now
/// and then another's, or a port of none), to a client like the ones the
/// frames come from; now and then a fragment, an IPv6 extension header,
/// ICMP, a VLAN tag or an IPv4-mapped destination.
pub fn random_egress<R: Rng + ?Sized>(rng: &mut R, policy: &PolicySpec) -> Vec<u8> {
    let quota_ranges: Vec<_> = policy
        .zones
        .iter()
        .filter(|z| z.quota.is_some())
        .flat_map(|z| z.ports.clone())
        .collect();
    let any_ranges = policy.all_ports();
    let pick = if rng.gen_bool(0.8) && !quota_ranges.is_empty() {
        quota_ranges.choose(rng).copied()
    } else {
        any_ranges.choose(rng).copied()
    };
    let (proto, sport) = match pick {
        Some((proto, lo, hi)) if rng.gen_bool(0.9) => {
            let proto = if rng.gen_bool(0.9) {
                proto
            } else {
                *Proto::ALL.choose(rng).expect("protocols")
            };
            (proto, rng.gen_range(lo..=hi))
        }
        _ => (*Proto::ALL.choose(rng).expect("protocols"), rng.gen()),
    };
    let dport = rng.gen_range(1024..=65535);
    let dst = crate::gen::random_source(rng, policy);
    let (mut f, v4) = match dst {
        IpAddr::V4(a) if rng.gen_bool(0.1) => (Frame::ipv6(HOST6, a.to_ipv6_mapped()), false),
        IpAddr::V4(a) => (Frame::ipv4(HOST4, a), true),
        IpAddr::V6(a) => (Frame::ipv6(HOST6, a), false),
    };
    let roll = rng.gen_range(0..100);
    if roll < 5 {
        // ICMP from the host: never counted.
        f = if v4 { f.icmp() } else { f.icmpv6() };
    } else {
        f = match proto {
            Proto::Tcp => f.tcp_flags(sport, dport, 0x18),
            Proto::Udp => f.udp(sport, dport),
            Proto::Sctp => f.sctp(sport, dport),
        };
    }
    match roll {
        5..=11 if v4 => f = f.frag(rng.gen_range(1..200), rng.gen_bool(0.5)),
        12..=16 if v4 => f = f.frag(0, true),
        17..=19 if v4 => f = f.ipv4_options(vec![1, 1, 1, 1]),
        5..=11 if !v4 => f = f.ext(ExtHeader::HopByHop { len_units: 0 }),
        20..=22 => f = f.vlan(0x8100, 7),
        _ => {}
    }
    let size = match rng.gen_range(0..4) {
        0 => 0,
        1 => rng.gen_range(1..64),
        2 => rng.gen_range(64..600),
        _ => rng.gen_range(600..1400),
    };
    f.payload(vec![0xd0; size]).build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{self, Sequence};
    use filter_common::Reason;

    #[test]
    fn quota_policies_are_judged_clear_of_their_periods_end() {
        let mut r = crate::gen::rng(11);
        let mut with = 0;
        for _ in 0..2000 {
            let p = crate::gen::random_policy(&mut r);
            for q in p.zones.iter().filter_map(|z| z.quota.as_ref()) {
                with += 1;
                let at = p.at.expect("an instant");
                assert!(settled(q.period, at), "{at} {:?}", q.period);
                assert!(p.check().is_ok());
            }
        }
        assert!(with > 300, "{with} quota zones");
    }

    #[test]
    fn sequences_cross_quotas_and_egress_counts() {
        let mut r = crate::gen::rng(5);
        let (mut exceeded, mut counted, mut egress) = (0, 0, 0);
        for _ in 0..200 {
            let p = crate::gen::random_policy(&mut r);
            if !p.zones.iter().any(|z| z.quota.is_some()) {
                continue;
            }
            let mut seq = Sequence::new();
            for _ in 0..300 {
                if r.gen_bool(0.2) {
                    egress += 1;
                    let f = random_egress(&mut r, &p);
                    counted += usize::from(model::egress(&p, &f, &mut seq).is_some());
                    continue;
                }
                let f = crate::gen::random_frame(&mut r, &p);
                let j = model::decide_with(&p, &f, &mut seq).0;
                exceeded += usize::from(j.reason == Reason::QuotaExceeded);
            }
        }
        assert!(exceeded > 200, "{exceeded} quota_exceeded");
        assert!(
            counted > egress / 5,
            "{counted} of {egress} egress frames counted"
        );
        assert!(
            counted < egress,
            "{counted} of {egress} egress frames counted"
        );
    }
}
