//! Verdict fixtures for the IPv6 blocklist layout (/24 bitmap + per-length
//! hash table): prefixes of many lengths together, the first, middle and last
//! address of each, and the address just below and just above it (which no
//! other listed prefix covers). Expectations follow from the prefixes alone:
//! inside = dropped as blocklisted, outside = allowed by the open zone.

use std::net::Ipv6Addr;

use filter_common::{Reason as R, Verdict as V, BL6_MAX_LENS};
use ipnet::{IpNet, Ipv6Net};

use crate::case::{Case, Expect};
use crate::packet::Frame;
use crate::spec::{Allow, Defaults, PolicySpec, Proto, ZoneSpec};

const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0xffff, 0, 0, 0, 0, 1);

fn policy(prefixes: &[Ipv6Net]) -> PolicySpec {
    PolicySpec {
        bans: Vec::new(),
        at: None,
        defaults: Defaults::default(),
        blocklist: prefixes.iter().map(|n| IpNet::V6(*n)).collect(),
        failsafe: vec![],
        zones: vec![ZoneSpec::new(
            "web",
            vec![(Proto::Tcp, 443, 443)],
            vec![Allow::Any],
        )],
        reject_budget: None,
    }
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Five cases per prefix: first, middle, last (dropped), below, above (allowed).
fn edges(group: &str, prefixes: &[Ipv6Net]) -> Vec<Case> {
    let spec = policy(prefixes);
    let mut out = Vec::new();
    for n in prefixes {
        let lo = u128::from(n.network());
        let hi = u128::from(n.broadcast());
        let probes = [
            ("first", lo, true),
            ("middle", lo + (hi - lo) / 2, true),
            ("last", hi, true),
            ("below", lo - 1, false),
            ("above", hi + 1, false),
        ];
        for (edge, a, inside) in probes {
            let src = Ipv6Addr::from(a);
            let expect = if inside {
                Expect::drop(R::Blocklist)
            } else {
                Expect::zone(V::Pass, R::Allowed, 1)
            };
            let name = leak(format!(
                "blocklist_v6_{group}_slash_{}_{edge}",
                n.prefix_len()
            ));
            let what = leak(format!(
                "{src} ({edge} {}) with {} prefixes of lengths {}",
                if inside { "address of" } else { "outside" },
                prefixes.len(),
                lengths(prefixes)
            ));
            out.push(Case {
                name,
                what,
                policy: spec.clone(),
                frame: Frame::ipv6(src, HOST6).tcp(40000, 443).build(),
                expect,
            });
        }
    }
    out
}

fn lengths(prefixes: &[Ipv6Net]) -> String {
    prefixes
        .iter()
        .map(|n| format!("/{}", n.prefix_len()))
        .collect::<Vec<_>>()
        .join(" ")
}

fn p(s: &str) -> Ipv6Net {
    s.parse()
        .unwrap_or_else(|_| panic!("not an IPv6 prefix: {s}"))
}

/// /19 … /128 together; /32, /48, /64, /127 and /128 share the /24
/// 2001:d00::/24, the /25 is the upper half of a /24 whose lower half is free.
fn mixed() -> Vec<Ipv6Net> {
    vec![
        p("2a02:e000::/19"),
        p("2a05:d000::/24"),
        p("2a06:a080::/25"),
        p("2001:db8::/32"),
        p("2001:dc0:bad::/48"),
        p("2001:dc0:1:2::/64"),
        p("2001:dc0:2::10/127"),
        p("2001:dc0:2::66/128"),
    ]
}

/// More distinct lengths above /24 than the datapath probes: the loader
/// expands the shorter ones. One prefix per length, each in its own /24.
fn many_lengths() -> Vec<Ipv6Net> {
    let lens = [25u8, 26, 28, 30, 33, 40, 50, 60, 70, 90, 110, 126, 128];
    assert!(lens.len() > BL6_MAX_LENS);
    lens.iter()
        .enumerate()
        .map(|(i, len)| {
            // Upper half of 2a0c:ii00::/24, then alternating bits down to the length.
            let top = (0x2a0c_0080u128 + ((i as u128 + 1) << 8)) << 96;
            let pattern = 0x5555_5555_5555_5555_5555_5555u128;
            let a = top | pattern;
            Ipv6Net::new(Ipv6Addr::from(a), *len)
                .expect("valid length")
                .trunc()
        })
        .collect()
}

pub fn fixtures() -> Vec<Case> {
    let mut out = edges("mixed", &mixed());
    out.extend(edges("many_lengths", &many_lengths()));
    out
}
