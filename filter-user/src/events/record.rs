//! An [`Event`] from the ring, decoded and named: interface and zone names
//! from the META record, the reason's label, wall-clock time.
use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use filter_common::{
    Event, Reason, Verdict, EVENT_IPV4, EVENT_IPV6, EVENT_SIZE, IPPROTO_SCTP, IPPROTO_TCP,
    IPPROTO_UDP,
};
use serde::{Deserialize, Serialize};

use crate::{loader::Meta, status::rule_label};

/// The record as `events -o json` prints it, one per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// UTC, RFC 3339 with milliseconds.
    pub time: String,
    /// Unix time in nanoseconds.
    pub unix_ns: u64,
    pub iface: String,
    pub verdict: String,
    pub reason: String,
    /// The zone's name, `global` or `failsafe`.
    pub zone: String,
    /// `ipv4`, `ipv6`, or `none` (non-IP and malformed frames).
    pub family: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub src: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<IpAddr>,
    /// `tcp`, `udp`, `sctp`, `icmp`, `icmpv6`, or the number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// Frame length in bytes.
    pub len: u32,
}

/// The raw record, if `bytes` is one (the ring hands out byte slices).
pub fn decode(bytes: &[u8]) -> Option<Event> {
    if bytes.len() < EVENT_SIZE {
        return None;
    }
    // SAFETY: Event is plain integers and byte arrays (any bit pattern is
    // valid); read_unaligned copes with any alignment of the slice.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
}

/// Interface and zone names, from the META record.
#[derive(Debug, Clone, Default)]
pub struct Names {
    ifaces: HashMap<u32, String>,
    meta: Meta,
}

impl Names {
    pub fn new(meta: Meta) -> Names {
        let ifaces = meta
            .interfaces
            .iter()
            .map(|i| (i.ifindex, i.name.clone()))
            .collect();
        Names { ifaces, meta }
    }

    pub fn iface(&self, ifindex: u32) -> String {
        if let Some(n) = self.ifaces.get(&ifindex) {
            return n.clone();
        }
        // An interface the record does not list (BPF_PROG_TEST_RUN: 0 or lo).
        let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
        // SAFETY: buf holds IF_NAMESIZE bytes, as if_indextoname requires.
        let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
        if p.is_null() {
            return format!("if{ifindex}");
        }
        // SAFETY: on success buf holds a NUL-terminated name.
        unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }
            .to_string_lossy()
            .into_owned()
    }

    pub fn zone(&self, rule: u32) -> String {
        rule_label(&self.meta, rule)
    }
}

/// Converts `bpf_ktime_get_ns` (CLOCK_MONOTONIC) to Unix time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Unix ns minus monotonic ns, taken at one instant.
    offset: i128,
}

fn clock_ns(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write to.
    unsafe { libc::clock_gettime(id, &mut ts) };
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

impl Clock {
    pub fn now() -> Clock {
        let mono = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        Clock {
            offset: real - mono,
        }
    }

    pub fn unix_ns(&self, mono_ns: u64) -> u64 {
        u64::try_from(i128::from(mono_ns) + self.offset).unwrap_or(0)
    }
}

/// `2026-12-02T00:31:02.123Z` for a Unix time in nanoseconds.
pub fn rfc3339(unix_ns: u64) -> String {
    let secs = unix_ns / 1_000_000_000;
    let ms = (unix_ns / 1_000_000) % 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

fn proto_name(proto: u8, family: u8) -> String {
    match (proto, family) {
        (IPPROTO_TCP, _) => "tcp".into(),
        (IPPROTO_UDP, _) => "udp".into(),
        (IPPROTO_SCTP, _) => "sctp".into(),
        (1, _) => "icmp".into(),
        (58, _) => "icmpv6".into(),
        (n, _) => n.to_string(),
    }
}

impl Record {
    pub fn new(e: &Event, names: &Names, clock: &Clock) -> Record {
        let unix_ns = clock.unix_ns(e.ts_ns);
        let reason = match Reason::from_u32(u32::from(e.reason)) {
            Some(r) => r.as_str().to_string(),
            None => format!("reason{}", e.reason),
        };
        let verdict = if e.verdict == Verdict::Drop as u8 {
            Verdict::Drop
        } else {
            Verdict::Pass
        };
        let (family, src, dst) = match e.family {
            EVENT_IPV4 => {
                let a = |b: &[u8; 16]| IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]));
                ("ipv4", Some(a(&e.src)), Some(a(&e.dst)))
            }
            EVENT_IPV6 => {
                let a = |b: &[u8; 16]| IpAddr::V6(Ipv6Addr::from(*b));
                ("ipv6", Some(a(&e.src)), Some(a(&e.dst)))
            }
            _ => ("none", None, None),
        };
        let ip = src.is_some();
        let ports = ip && matches!(e.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP);
        let ported = ports && (e.sport != 0 || e.dport != 0);
        Record {
            time: rfc3339(unix_ns),
            unix_ns,
            iface: names.iface(e.ifindex),
            verdict: verdict.as_str().to_string(),
            reason,
            zone: names.zone(e.rule),
            family: family.to_string(),
            src,
            dst,
            proto: ip.then(|| proto_name(e.proto, e.family)),
            sport: ported.then_some(e.sport),
            dport: ported.then_some(e.dport),
            len: e.len,
        }
    }
}

fn endpoint(f: &mut fmt::Formatter<'_>, a: &IpAddr, port: Option<u16>) -> fmt::Result {
    match (a, port) {
        (IpAddr::V6(a), Some(p)) => write!(f, "[{a}]:{p}"),
        (a, Some(p)) => write!(f, "{a}:{p}"),
        (a, None) => write!(f, "{a}"),
    }
}

/// One log line: `TIME IFACE VERDICT REASON zone Z SRC -> DST/PROTO LEN bytes`.
impl fmt::Display for Record {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} zone {} ",
            self.time, self.iface, self.verdict, self.reason, self.zone
        )?;
        match (&self.src, &self.dst) {
            (Some(s), Some(d)) => {
                endpoint(f, s, self.sport)?;
                f.write_str(" -> ")?;
                endpoint(f, d, self.dport)?;
                if let Some(p) = &self.proto {
                    write!(f, "/{p}")?;
                }
            }
            _ => f.write_str("(no IP header)")?,
        }
        write!(f, " {} bytes", self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::IfaceMeta;
    use filter_common::{RULE_FAILSAFE, RULE_GLOBAL};

    fn names() -> Names {
        let mut meta = Meta::default();
        meta.active_zones.insert(3, "keep-admin".into());
        meta.zone_ids.insert("keep-admin".into(), 3);
        meta.interfaces.push(IfaceMeta {
            name: "inet0".into(),
            ifindex: 7,
            slot: 1,
            mode: crate::loader::AttachMode::Native,
        });
        Names::new(meta)
    }

    fn bytes_of(e: &Event) -> Vec<u8> {
        // SAFETY: Event is repr(C) without implicit padding (see filter-common's test).
        unsafe { std::slice::from_raw_parts((e as *const Event).cast::<u8>(), EVENT_SIZE) }.to_vec()
    }

    #[test]
    fn an_ipv4_drop_decodes_with_names_ports_and_time() {
        let mut e = Event {
            ts_ns: 1_000_000_000,
            ifindex: 7,
            rule: 3,
            len: 74,
            reason: Reason::NotAllowed as u8,
            verdict: Verdict::Drop as u8,
            family: EVENT_IPV4,
            proto: IPPROTO_TCP,
            sport: 40000,
            dport: 8889,
            ..Event::default()
        };
        e.src[..4].copy_from_slice(&[198, 18, 0, 2]);
        e.dst[..4].copy_from_slice(&[198, 18, 0, 1]);
        // One byte more than a record, unaligned: as the ring may hand it out.
        let mut raw = vec![0u8];
        raw.extend(bytes_of(&e));
        let back = decode(&raw[1..]).unwrap();
        assert_eq!(back, e);
        let clock = Clock {
            offset: 1_764_635_462_000_000_000 - 1_000_000_000,
        };
        let r = Record::new(&back, &names(), &clock);
        assert_eq!(r.time, "2025-12-02T00:31:02.000Z");
        assert_eq!(r.iface, "inet0");
        assert_eq!(
            (r.verdict.as_str(), r.reason.as_str()),
            ("drop", "not_allowed")
        );
        assert_eq!(r.zone, "keep-admin");
        assert_eq!(r.src, Some("198.18.0.2".parse().unwrap()));
        assert_eq!(r.dst, Some("198.18.0.1".parse().unwrap()));
        assert_eq!((r.sport, r.dport), (Some(40000), Some(8889)));
        assert_eq!(r.proto.as_deref(), Some("tcp"));
        assert_eq!(
            r.to_string(),
            "2025-12-02T00:31:02.000Z inet0 drop not_allowed zone keep-admin \
             198.18.0.2:40000 -> 198.18.0.1:8889/tcp 74 bytes"
        );
        let json: Record = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(json, r);
        assert!(decode(&raw[1..EVENT_SIZE]).is_none(), "a short record");
    }

    #[test]
    fn ipv6_icmp_and_non_ip_records_name_what_they_have() {
        let mut e = Event {
            rule: RULE_GLOBAL,
            reason: Reason::Blocklist as u8,
            verdict: Verdict::Drop as u8,
            family: EVENT_IPV6,
            proto: 58,
            ..Event::default()
        };
        e.src = "2001:db8:bad::7".parse::<Ipv6Addr>().unwrap().octets();
        e.dst = "2001:db8:1::1".parse::<Ipv6Addr>().unwrap().octets();
        let r = Record::new(&e, &names(), &Clock::now());
        assert_eq!(r.zone, "global");
        assert_eq!(r.proto.as_deref(), Some("icmpv6"));
        assert_eq!((r.sport, r.dport), (None, None));
        assert!(r
            .to_string()
            .contains("2001:db8:bad::7 -> 2001:db8:1::1/icmpv6"));
        let malformed = Event {
            rule: RULE_FAILSAFE,
            reason: Reason::Malformed as u8,
            verdict: Verdict::Drop as u8,
            ifindex: 9999,
            ..Event::default()
        };
        let r = Record::new(&malformed, &names(), &Clock::now());
        assert_eq!(
            (r.family.as_str(), r.src, r.proto.clone()),
            ("none", None, None)
        );
        assert_eq!(r.iface, "if9999");
        assert_eq!(r.zone, "failsafe");
        assert!(r.to_string().contains("(no IP header)"));
        let bad = Event {
            reason: 200,
            ..Event::default()
        };
        assert_eq!(
            Record::new(&bad, &names(), &Clock::now()).reason,
            "reason200"
        );
    }

    #[test]
    fn rfc3339_handles_epoch_leap_years_and_milliseconds() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400_123_000_000), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            rfc3339(4_107_542_399_999_000_000),
            "2100-02-28T23:59:59.999Z"
        );
    }
}
