//! Transfer quotas as the contract (filter-common/src/quota.rs) and the zone
//! step describe them, written a second time: bytes per (zone *name*, masked
//! address, period), on a clock the caller sets.
//!
//! - Upload: an allowed source of a quota zone that the rate limits admitted
//!   is refused (`quota_exceeded`, or the zone's audit / reject) when what
//!   it used in the current period is already at or over the limit; else it
//!   passes and, if the zone counts upload, its whole frame (Ethernet header
//!   included) is added. So the frame that crosses the limit is admitted.
//! - Download: a frame the host sends *from* a quota zone's port (protocol
//!   and source port) is added to its *destination*, masked the same way,
//!   if the zone counts download. Never refused. IPv4-mapped destinations
//!   are IPv4; non-first IPv4 fragments and IPv6 whose first next header is
//!   not TCP, UDP or SCTP are not counted; nothing but untagged IPv4 and
//!   IPv6 is looked at.
//! - A usage entry of a past period reads as 0; the next counted frame (or
//!   admitted one) restarts it.
//!
//! Periods: minutes, hours and days since the Unix epoch; calendar months
//! (UTC) since January 1970. Numbers are tagged with their kind in the top
//! byte, as the kernel stores them, so read-back usage can be compared.
//! The model keeps a key for every admitted source (with 0 bytes when only
//! download counts), as the datapath inserts one.
use std::collections::BTreeMap;
use std::net::IpAddr;

use jiff::Timestamp;

use super::effective_source;
use crate::spec::{ports_cover, PolicySpec, Proto, QuotaPeriod, QuotaSpec, ZoneSpec};

/// The period kinds' tags (the top byte of a stored period).
fn kind(p: QuotaPeriod) -> u64 {
    match p {
        QuotaPeriod::Minute => 1,
        QuotaPeriod::Hour => 2,
        QuotaPeriod::Day => 3,
        QuotaPeriod::Month => 4,
    }
}

/// Year and month (1..=12) of a day count since 1970-01-01 (proleptic
/// Gregorian; H. Hinnant's `civil_from_days`).
fn civil_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// The tagged period `t` falls in (instants before 1970: period 0).
pub fn period_at(p: QuotaPeriod, t: Timestamp) -> u64 {
    let secs = t.as_second().max(0);
    let number = match p {
        QuotaPeriod::Minute => secs / 60,
        QuotaPeriod::Hour => secs / 3_600,
        QuotaPeriod::Day => secs / 86_400,
        QuotaPeriod::Month => {
            let (y, m) = civil_month(secs / 86_400);
            (y - 1970) * 12 + (m - 1)
        }
    } as u64;
    (kind(p) << 56) | (number & ((1 << 56) - 1))
}

/// FNV-1a of a zone name, never 0: the zone part of the kernel's key
/// (for reading usage back; the model keys by the name itself).
pub fn zone_key(name: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

/// A usage entry's key: the zone's name and the masked address.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UsageKey {
    pub zone: String,
    /// 4 or 6.
    pub family: u8,
    /// The mask length the address was cut to.
    pub len: u8,
    /// The masked address (IPv4 in the first 4 bytes, the rest zero).
    pub addr: [u8; 16],
}

/// The key of `addr` (as the rules see it: mapped addresses are IPv4)
/// under zone `zone`'s quota `q`.
///
/// A mask length of 0 (`per = "zone"`) is one count for the zone, whatever
/// the family: such keys carry family 0.
pub fn key_of(zone: &str, q: &QuotaSpec, addr: IpAddr) -> UsageKey {
    let (v4_len, v6_len) = q.masks();
    let mut out = [0u8; 16];
    let (family, len) = match effective_source(addr) {
        IpAddr::V4(a) => {
            let len = u32::from(v4_len);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            out[..4].copy_from_slice(&(u32::from(a) & mask).to_be_bytes());
            (4, v4_len)
        }
        IpAddr::V6(a) => {
            let len = u32::from(v6_len);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            out = (u128::from(a) & mask).to_be_bytes();
            (6, v6_len)
        }
    };
    UsageKey {
        zone: zone.to_string(),
        family: if len == 0 { 0 } else { family },
        len,
        addr: out,
    }
}

/// A usage entry: the tagged period it counts and its bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Usage {
    pub period: u64,
    pub bytes: u64,
}

/// A download the model counted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Download {
    /// Index of the zone in the policy.
    pub zone: usize,
    pub key: UsageKey,
    pub bytes: u64,
}

/// The quota usage of a sequence, and its clock.
#[derive(Clone, Debug, Default)]
pub struct Quotas {
    /// The instant periods are judged at; `None`: the policy's `at`, or
    /// the real now.
    pub clock: Option<Timestamp>,
    usage: BTreeMap<UsageKey, Usage>,
}

impl Quotas {
    pub fn new() -> Self {
        Quotas::default()
    }

    /// The instant in force for `policy`.
    pub fn now(&self, policy: &PolicySpec) -> Timestamp {
        self.clock
            .or(policy.at)
            .unwrap_or_else(jiff::Timestamp::now)
    }

    /// What `key` has used in `period` (a past period's entry: 0).
    fn used(&self, key: &UsageKey, period: u64) -> u64 {
        match self.usage.get(key) {
            Some(u) if u.period == period => u.bytes,
            _ => 0,
        }
    }

    /// Adds `bytes` to `key` in `period`, restarting a past period's entry.
    fn add(&mut self, key: UsageKey, period: u64, bytes: u64) {
        let u = self.usage.entry(key).or_default();
        if u.period != period {
            *u = Usage { period, bytes: 0 };
        }
        u.bytes = u.bytes.saturating_add(bytes);
    }

    /// Is an allowed source `src` of zone `zone` (with quota `q`), admitted
    /// by its rate limits, within its quota at `now`? If so its frame of
    /// `len` bytes is counted as upload (when the zone counts upload).
    pub fn admit(
        &mut self,
        zone: &ZoneSpec,
        q: &QuotaSpec,
        src: IpAddr,
        len: u64,
        now: Timestamp,
    ) -> bool {
        let key = key_of(&zone.name, q, src);
        let period = period_at(q.period, now);
        if self.used(&key, period) >= q.bytes {
            return false;
        }
        let up = if q.counts().upload() { len } else { 0 };
        self.add(key, period, up);
        true
    }

    /// The host sends `frame`: counts it as a download of the zone whose
    /// port it leaves from, if that zone counts download.
    pub fn egress(&mut self, policy: &PolicySpec, frame: &[u8]) -> Option<Download> {
        let (proto, sport, dst) = egress_headers(frame)?;
        let (index, zone) = policy
            .zones
            .iter()
            .enumerate()
            .find(|(_, z)| ports_cover(&z.ports, proto, sport))?;
        let q = zone.quota.as_ref()?;
        if !q.counts().download() {
            return None;
        }
        let key = key_of(&zone.name, q, dst);
        let period = period_at(q.period, self.now(policy));
        let bytes = frame.len() as u64;
        self.add(key.clone(), period, bytes);
        Some(Download {
            zone: index,
            key,
            bytes,
        })
    }

    /// The entry of `key`, as stored (any period).
    pub fn get(&self, key: &UsageKey) -> Option<Usage> {
        self.usage.get(key).copied()
    }

    /// Sets an entry (a test writes one of a past period).
    pub fn set(&mut self, key: UsageKey, usage: Usage) {
        self.usage.insert(key, usage);
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> impl Iterator<Item = (&UsageKey, &Usage)> {
        self.usage.iter()
    }
}

/// (protocol, source port, destination) of a frame the host sends, if it
/// is one downloads are counted for.
pub fn egress_headers(frame: &[u8]) -> Option<(Proto, u16, IpAddr)> {
    let at = |i: usize| frame.get(i).copied();
    let word = |i: usize| Some(u16::from_be_bytes([at(i)?, at(i + 1)?]));
    let (proto, dst, l4) = match word(12)? {
        0x0800 => {
            let vihl = at(14)?;
            if vihl >> 4 != 4 {
                return None;
            }
            // Offset bits only: a first fragment (MF set) is counted.
            if word(14 + 6)? & 0x1fff != 0 {
                return None;
            }
            let proto = at(14 + 9)?;
            let d: [u8; 4] = frame.get(30..34)?.try_into().ok()?;
            (proto, IpAddr::from(d), 14 + usize::from(vihl & 0x0f) * 4)
        }
        0x86dd => {
            let proto = at(14 + 6)?;
            let d: [u8; 16] = frame.get(38..54)?.try_into().ok()?;
            (proto, IpAddr::from(d), 14 + 40)
        }
        _ => return None,
    };
    let proto = Proto::from_number(proto)?;
    Some((proto, word(l4)?, effective_source(dst)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{ExtHeader, Frame};
    use crate::spec::{Allow, QuotaDirection};

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    #[test]
    fn periods_are_utc_aligned_and_tagged() {
        let t = ts("2026-12-03T18:00:00Z");
        let secs = t.as_second() as u64;
        assert_eq!(period_at(QuotaPeriod::Day, t), (3 << 56) | (secs / 86_400));
        assert_eq!(period_at(QuotaPeriod::Hour, t), (2 << 56) | (secs / 3_600));
        assert_eq!(period_at(QuotaPeriod::Minute, t), (1 << 56) | (secs / 60));
        // December 2026: (2026 − 1970) × 12 + 11.
        assert_eq!(period_at(QuotaPeriod::Month, t), (4 << 56) | 683);
        let last = ts("2026-11-30T23:59:59Z");
        assert_eq!(period_at(QuotaPeriod::Month, last), (4 << 56) | 682);
        assert_eq!(
            period_at(QuotaPeriod::Month, ts("2024-02-29T12:00:00Z")),
            (4 << 56) | (54 * 12 + 1)
        );
        assert_eq!(
            period_at(QuotaPeriod::Month, ts("1970-01-01T00:00:00Z")),
            4 << 56
        );
        assert_eq!(
            period_at(QuotaPeriod::Day, ts("1960-05-01T00:00:00Z")),
            3 << 56
        );
    }

    #[test]
    fn civil_months_match_jiff_over_centuries() {
        for day in (-800_000i64..800_000).step_by(997) {
            let t = Timestamp::from_second(day * 86_400).expect("in range");
            let d = t.to_zoned(jiff::tz::TimeZone::UTC).date();
            assert_eq!(
                civil_month(day),
                (i64::from(d.year()), i64::from(d.month())),
                "day {day}"
            );
        }
    }

    #[test]
    fn zone_keys_are_fnv1a() {
        assert_eq!(zone_key(""), 0x811c_9dc5);
        assert_eq!(zone_key("a"), 0xe40c_292c);
        assert_eq!(
            zone_key("api"),
            filter_common::quota_zone_key(b"api"),
            "the contract's hash"
        );
    }

    #[test]
    fn keys_mask_and_map() {
        let q = QuotaSpec::new(10, QuotaPeriod::Day).per(24, 64);
        let k = key_of("z", &q, "10.1.2.3".parse().expect("addr"));
        assert_eq!(
            (k.family, k.len, &k.addr[..]),
            (
                4,
                24,
                &[10, 1, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0][..]
            )
        );
        let mapped = key_of("z", &q, "::ffff:10.1.2.200".parse().expect("addr"));
        assert_eq!(mapped, k);
        let k6 = key_of("z", &q, "2001:db8:1:2:3:4:5:6".parse().expect("addr"));
        assert_eq!((k6.family, k6.len), (6, 64));
        assert_eq!(&k6.addr[..8], &[0x20, 0x01, 0x0d, 0xb8, 0, 1, 0, 2]);
        assert_eq!(&k6.addr[8..], &[0; 8]);
        let zq = QuotaSpec::new(10, QuotaPeriod::Day).per_zone();
        let a = key_of("z", &zq, "10.1.2.3".parse().expect("addr"));
        let b = key_of("z", &zq, "192.0.2.9".parse().expect("addr"));
        assert_eq!(a, b);
        assert_eq!((a.family, a.len, a.addr), (0, 0, [0; 16]));
        assert_eq!(key_of("z", &zq, "2001:db8::1".parse().expect("addr")), a);
    }

    fn zone(q: QuotaSpec) -> ZoneSpec {
        ZoneSpec::new("api", vec![(Proto::Tcp, 80, 80)], vec![Allow::Any]).quota(q)
    }

    #[test]
    fn the_frame_crossing_the_limit_is_admitted_the_next_refused() {
        let z = zone(QuotaSpec::new(150, QuotaPeriod::Day));
        let q = z.quota.clone().expect("quota");
        let now = ts("2026-06-15T12:00:00Z");
        let src: IpAddr = "10.0.0.1".parse().expect("addr");
        let mut m = Quotas::new();
        assert!(m.admit(&z, &q, src, 100, now));
        assert!(m.admit(&z, &q, src, 100, now));
        assert!(!m.admit(&z, &q, src, 100, now));
        let k = key_of("api", &q, src);
        assert_eq!(m.get(&k).map(|u| u.bytes), Some(200));
        // The next day starts again.
        let tomorrow = ts("2026-06-16T00:00:00Z");
        assert!(m.admit(&z, &q, src, 60, tomorrow));
        assert_eq!(
            m.get(&k),
            Some(Usage {
                period: period_at(QuotaPeriod::Day, tomorrow),
                bytes: 60
            })
        );
    }

    #[test]
    fn download_only_counts_egress_and_refuses_at_ingress() {
        let z = zone(QuotaSpec::new(100, QuotaPeriod::Month).direction(QuotaDirection::Download));
        let q = z.quota.clone().expect("quota");
        let p = PolicySpec {
            zones: vec![z.clone()],
            at: Some(ts("2026-06-15T12:00:00Z")),
            ..PolicySpec::default()
        };
        let now = p.at.expect("at");
        let client: std::net::Ipv4Addr = "10.0.0.1".parse().expect("addr");
        let host: std::net::Ipv4Addr = "192.0.2.1".parse().expect("addr");
        let mut m = Quotas::new();
        assert!(m.admit(&z, &q, client.into(), 500, now));
        assert_eq!(
            m.get(&key_of("api", &q, client.into())).map(|u| u.bytes),
            Some(0)
        );
        let out = Frame::ipv4(host, client).tcp(80, 40000).build();
        let d = m.egress(&p, &out).expect("counted");
        assert_eq!((d.zone, d.bytes), (0, out.len() as u64));
        assert!(m.admit(&z, &q, client.into(), 500, now));
        m.egress(&p, &out).expect("counted");
        assert!(!m.admit(&z, &q, client.into(), 500, now));
        // From another port, another protocol, a later fragment: not counted.
        for f in [
            Frame::ipv4(host, client).tcp(81, 40000).build(),
            Frame::ipv4(host, client).udp(80, 40000).build(),
            Frame::ipv4(host, client)
                .frag(8, false)
                .tcp(80, 40000)
                .build(),
            Frame::ipv4(host, client)
                .vlan(0x8100, 5)
                .tcp(80, 40000)
                .build(),
            Frame::ipv6(
                "2001:db8::1".parse().expect("a"),
                "2001:db8::2".parse().expect("a"),
            )
            .ext(ExtHeader::HopByHop { len_units: 0 })
            .tcp(80, 40000)
            .build(),
        ] {
            assert_eq!(m.egress(&p, &f), None);
        }
        // A first fragment and a mapped destination are.
        let first = Frame::ipv4(host, client)
            .frag(0, true)
            .tcp(80, 40000)
            .build();
        assert!(m.egress(&p, &first).is_some());
        let mapped = Frame::ipv6(
            "2001:db8::1".parse().expect("a"),
            "::ffff:10.0.0.1".parse().expect("a"),
        )
        .tcp(80, 40000)
        .build();
        let d = m.egress(&p, &mapped).expect("counted");
        assert_eq!(d.key, key_of("api", &q, client.into()));
    }
}
