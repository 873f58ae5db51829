//! The reference model: docs/parsing-contract.md, implemented a second time, plainly.
//!
//! `judge` reads a raw Ethernet frame and returns the (verdict, reason, rule) the
//! contract prescribes for a policy. It shares no code with the XDP program and is
//! written to be obviously right rather than fast: explicit length checks that
//! follow the contract's tables row by row, linear scans over prefixes with
//! hand-written bit comparisons. Every read goes through `get`-style helpers, so a
//! short or hostile frame yields `malformed`, never a panic.
//!
//! Where the contract leaves room for more than one reading, the most literal one
//! is taken and marked `// CONTRACT:`.
//!
//! By concern: `parse` reads the frame (the contract's tables), this module
//! applies the verdict order, `schedule` says whether a zone keeps its hours
//! (from the windows and an instant, never from the compiled transition
//! list), `reply` whether and how a rejecting zone answers (the exact reply
//! bytes, from docs/policy.md), `rate` and `quota` keep what a sequence of
//! frames has spent (rate buckets, transfer quota usage, and their clocks;
//! [`Sequence`]), `tests` pins it all.

mod parse;
pub mod quota;
pub mod rate;
mod reply;
pub mod schedule;
#[cfg(test)]
mod tests;

use std::net::{IpAddr, Ipv4Addr};

use filter_common::{Reason, Verdict, RULE_FAILSAFE, RULE_GLOBAL};
use ipnet::IpNet;

pub use parse::*;
pub use reply::{reply, NoReply};

use crate::spec::{ports_cover, Act, Allow, Fragments, PolicySpec};

/// The model's answer for one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Judgement {
    pub verdict: Verdict,
    pub reason: Reason,
    /// `RULE_GLOBAL`, a zone id (1..), or `RULE_FAILSAFE`.
    pub rule: u32,
}

impl Judgement {
    pub fn new(verdict: Verdict, reason: Reason, rule: u32) -> Self {
        Judgement {
            verdict,
            reason,
            rule,
        }
    }
}

impl std::fmt::Display for Judgement {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} rule {}",
            self.verdict.as_str(),
            self.reason.as_str(),
            self.rule
        )
    }
}

/// The address the rules judge: an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`)
/// becomes the IPv4 address; everything else stays as it is.
pub fn effective_source(src: IpAddr) -> IpAddr {
    match src {
        IpAddr::V4(a) => IpAddr::V4(a),
        IpAddr::V6(a) => {
            let o = a.octets();
            let mapped = o[..10].iter().all(|&b| b == 0) && o[10] == 0xff && o[11] == 0xff;
            if mapped {
                IpAddr::V4(Ipv4Addr::new(o[12], o[13], o[14], o[15]))
            } else {
                IpAddr::V6(a)
            }
        }
    }
}

/// Is `addr` inside `net`? Families never match across (an IPv4 address, mapped
/// or not, is never in an IPv6 prefix).
pub fn prefix_contains(net: &IpNet, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpNet::V4(n), IpAddr::V4(a)) => {
            let len = u32::from(n.prefix_len());
            if len == 0 {
                return true;
            }
            let mask = u32::MAX << (32 - len);
            (u32::from(n.addr()) & mask) == (u32::from(a) & mask)
        }
        (IpNet::V6(n), IpAddr::V6(a)) => {
            let len = u32::from(n.prefix_len());
            if len == 0 {
                return true;
            }
            let mask = u128::MAX << (128 - len);
            (u128::from(n.addr()) & mask) == (u128::from(a) & mask)
        }
        _ => false,
    }
}

fn in_any(nets: &[IpNet], addr: IpAddr) -> bool {
    nets.iter().any(|n| prefix_contains(n, addr))
}

fn allowed(allow: &[Allow], addr: IpAddr) -> bool {
    allow.iter().any(|a| match a {
        Allow::Any => true,
        Allow::Net(n) => prefix_contains(n, addr),
    })
}

fn act(a: Act) -> Verdict {
    match a {
        Act::Pass => Verdict::Pass,
        Act::Drop => Verdict::Drop,
    }
}

/// The verdict for `frame` under `policy`, by the contract's verdict order.
pub fn judge(policy: &PolicySpec, frame: &[u8]) -> Judgement {
    decide(policy, frame).0
}

/// The reply the program must send for `frame` (exactly these bytes), if
/// its verdict is `rejected`.
pub fn expected_reply(policy: &PolicySpec, frame: &[u8]) -> Option<Vec<u8>> {
    decide(policy, frame).1
}

/// What a sequence of frames under one policy carries from frame to frame:
/// the rate limits' buckets and the transfer quotas' usage (each with its
/// clock).
#[derive(Clone, Debug, Default)]
pub struct Sequence {
    pub rates: rate::Rates,
    pub quotas: quota::Quotas,
}

impl Sequence {
    pub fn new() -> Self {
        Sequence::default()
    }
}

/// The verdict, and for `rejected` the reply, of a frame judged alone (rate
/// limits see it as the first packet on a fresh clock, quotas as the first
/// frame of the period).
pub fn decide(policy: &PolicySpec, frame: &[u8]) -> (Judgement, Option<Vec<u8>>) {
    decide_with(policy, frame, &mut Sequence::new())
}

/// The host sends `frame` (egress): the download it counts for a quota
/// zone, if any. Egress frames are never refused.
pub fn egress(policy: &PolicySpec, frame: &[u8], seq: &mut Sequence) -> Option<quota::Download> {
    seq.quotas.egress(policy, frame)
}

/// As [`decide`], one frame of a sequence: the rate limits' buckets and the
/// quotas' usage in `seq` (and their clocks) carry over from frame to frame.
pub fn decide_with(
    policy: &PolicySpec,
    frame: &[u8],
    seq: &mut Sequence,
) -> (Judgement, Option<Vec<u8>>) {
    let global = |verdict, reason| (Judgement::new(verdict, reason, RULE_GLOBAL), None);
    let d = &policy.defaults;

    // 1. not IPv4/IPv6, 2. malformed
    let info = match parse(frame) {
        Parsed::NonIp { .. } => return global(act(d.non_ip), Reason::NonIp),
        Parsed::Malformed(_) => return global(Verdict::Drop, Reason::Malformed),
        Parsed::Ip(info) => info,
    };
    let src = effective_source(info.src);

    // 3. failsafe: ports covered by a failsafe rule and the source in its `from`
    // (several rules covering the port: the union of their `from` lists).
    if let Transport::Ports { proto, dport } = info.transport {
        for rule in &policy.failsafe {
            if ports_cover(&rule.ports, proto, dport) && in_any(&rule.from, src) {
                let j = Judgement::new(Verdict::Pass, Reason::Failsafe, RULE_FAILSAFE);
                return (j, None);
            }
        }
    }

    // 4. bans, then the blocklist, for everything IP. A ban is in force
    // until its instant (exclusive); several covering one source: banned
    // while any of them is. The list is a sequence of `ban add`s: a later
    // ban of the same prefix replaces the earlier one.
    let now = policy.at.unwrap_or_else(jiff::Timestamp::now);
    let replaced =
        |i: usize, net: &ipnet::IpNet| policy.bans[i + 1..].iter().any(|l| l.net == *net);
    if policy.bans.iter().enumerate().any(|(i, b)| {
        !replaced(i, &b.net) && prefix_contains(&b.net, src) && b.until.is_none_or(|t| now < t)
    }) {
        return global(Verdict::Drop, Reason::Banned);
    }
    if in_any(&policy.blocklist, src) {
        return global(Verdict::Drop, Reason::Blocklist);
    }

    // 5. fragments
    match (info.fragment, d.fragments) {
        (Fragment::NonFirst, Fragments::FilterFirst) => {
            return global(Verdict::Pass, Reason::Fragment)
        }
        (Fragment::NonFirst, Fragments::Drop) | (Fragment::First, Fragments::Drop) => {
            return global(Verdict::Drop, Reason::Fragment)
        }
        (Fragment::First, Fragments::FilterFirst) | (Fragment::No, _) => {}
    }

    // 6. no ports
    let (proto, dport) = match info.transport {
        Transport::NoPorts { .. } => return global(act(d.other_protocols), Reason::OtherProtocol),
        Transport::Ports { proto, dport } => (proto, dport),
    };

    // 7. the zone claiming (proto, dport)
    for (index, zone) in policy.zones.iter().enumerate() {
        if ports_cover(&zone.ports, proto, dport) {
            let id = PolicySpec::zone_id(index);
            let j = |verdict, reason| (Judgement::new(verdict, reason, id), None);
            // Outside its hours a scheduled zone refuses everyone.
            let at = || policy.at.unwrap_or_else(jiff::Timestamp::now);
            let closed = zone
                .schedule
                .as_ref()
                .is_some_and(|s| !schedule::open_at(s, at()));
            let mut over = None;
            if !closed && allowed(&zone.allow, src) {
                // A SYN without ACK opens a connection (the header's flags
                // byte; the parser checked the 20 bytes are there).
                let syn = proto == crate::spec::Proto::Tcp
                    && frame.get(info.l4 + 13).is_some_and(|f| f & 0x12 == 0x02);
                // The rate limits first: a frame they refuse is not
                // counted as transfer. Then the quota, which counts the
                // whole frame of an admitted upload.
                over = if !zone.rate.is_empty() && !seq.rates.admit(index, zone, src, syn) {
                    Some(Reason::RateLimited)
                } else if zone.quota.as_ref().is_some_and(|q| {
                    let now = seq.quotas.now(policy);
                    !seq.quotas.admit(zone, q, src, frame.len() as u64, now)
                }) {
                    Some(Reason::QuotaExceeded)
                } else {
                    return j(Verdict::Pass, Reason::Allowed);
                };
            }
            // An auditing zone only counts what it would do, reject included.
            if zone.audit {
                return j(Verdict::Pass, Reason::Audit);
            }
            // A rejecting zone answers what may be answered (reply.rs) and
            // drops the rest as a dropping zone would (`not_allowed`, closed
            // or not: the reply program judges those). The reply budget is
            // not modelled: tests that compare give the policy room.
            let refused = if let Some(r) = over.filter(|_| zone.reject.is_none()) {
                r
            } else if closed && zone.reject.is_none() {
                Reason::Closed
            } else {
                Reason::NotAllowed
            };
            return match zone.reject.map(|with| reply(frame, &info, with, proto)) {
                Some(Ok(bytes)) => (
                    Judgement::new(Verdict::Drop, Reason::Rejected, id),
                    Some(bytes),
                ),
                _ => j(Verdict::Drop, refused),
            };
        }
    }

    // 8. no zone
    global(act(d.unmatched), Reason::Unmatched)
}
