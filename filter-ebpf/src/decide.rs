//! The verdict order of docs/parsing-contract.md, over one policy slot.
use filter_common::{
    lane6_space, port_index, set_tag, zone_index, Config, PortEntry, Reason, ReplyPending, Verdict,
    ZoneInfo, FAILSAFE_SET_BASE, RULE_FAILSAFE, RULE_GLOBAL,
};

use aya_ebpf::programs::XdpContext;

use crate::{
    bans::{ban_tag, count_tag},
    blocklist4::{blocklisted_v4, in_lane_v4},
    blocklist6::{blocklisted_v6, in_lane_v6},
    maps::{lpm4_contains, lpm6_contains, ALLOW4, ALLOW6, PORTS, ZONES},
    parse::{IpPacket, Parsed, Src, L4},
    quota, rate, reply,
    schedule::zone_open,
};

#[derive(Clone, Copy)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    pub rule: u32,
}

#[inline(always)]
fn decision(verdict: Verdict, reason: Reason, rule: u32) -> Decision {
    Decision {
        verdict,
        reason,
        rule,
    }
}

/// A `defaults.*` setting: drop if the flag is set, else pass.
#[inline(always)]
fn by_default(cfg: &Config, drop_flag: u32, reason: Reason) -> Decision {
    let verdict = if cfg.has(drop_flag) {
        Verdict::Drop
    } else {
        Verdict::Pass
    };
    decision(verdict, reason, RULE_GLOBAL)
}

/// The decision for a parsed frame. A rejecting zone's refusal does not
/// return: it is handed to the reply program (reply.rs), which counts,
/// samples and answers; only without one is it returned, as `not_allowed`.
#[inline(always)]
pub fn decide(ctx: &XdpContext, slot: u32, cfg: &Config, parsed: Parsed) -> Decision {
    match parsed {
        Parsed::NonIp => by_default(cfg, Config::NON_IP_DROP, Reason::NonIp),
        Parsed::Malformed => decision(Verdict::Drop, Reason::Malformed, RULE_GLOBAL),
        Parsed::Ip(p) => decide_ip(ctx, slot, cfg, &p),
    }
}

#[inline(always)]
fn decide_ip(ctx: &XdpContext, slot: u32, cfg: &Config, p: &IpPacket) -> Decision {
    // Looked up first, used at step 4: the verifier then walks the lookup
    // once per parser outcome, not once more per failsafe branch.
    let bl6 = match p.src {
        Src::V6(a) => cfg.has(Config::HAS_BL6) && blocklisted_v6(slot, &a),
        Src::V4(_) => false,
    };
    // Looked up here for the same reason; the clock is read only when some
    // ban entry covers the source.
    let ban = ban_tag(&p.src);
    let entry = match p.l4 {
        L4::Ports { proto_index, dport } => PORTS
            .get(port_index(slot, proto_index, dport))
            .copied()
            .unwrap_or_default(),
        _ => PortEntry::default(),
    };
    // The zone's flags and, for a zone that keeps hours, whether it is closed
    // now: looked up here, used at step 7, so the verifier walks the
    // schedule scan once per parser outcome (like the IPv6 lookup above).
    let zone = entry.zone as u32;
    let zone_flags = if zone != 0 {
        ZONES.get(zone_index(slot, zone)).map_or(0, |z| z.flags)
    } else {
        0
    };
    let closed = zone_flags & ZoneInfo::SCHEDULED != 0 && !zone_open(slot, zone);

    // 3. failsafe: cannot be blocklisted away.
    if entry.failsafe != 0 && in_set(slot, FAILSAFE_SET_BASE + entry.failsafe as u32, &p.src) {
        return decision(Verdict::Pass, Reason::Failsafe, RULE_FAILSAFE);
    }
    // 4. bans, then the blocklist: fragments and port-less packets too.
    if let Some(tag) = ban {
        count_tag(tag, (ctx.data_end() - ctx.data()) as u64);
        return decision(Verdict::Drop, Reason::Banned, RULE_GLOBAL);
    }
    if bl6 || blocklisted(slot, cfg, &p.src) {
        return decision(Verdict::Drop, Reason::Blocklist, RULE_GLOBAL);
    }
    // 5. fragments.
    let non_first = matches!(p.l4, L4::NonFirstFragment);
    if (non_first || p.first_fragment) && cfg.has(Config::FRAGMENTS_DROP) {
        return decision(Verdict::Drop, Reason::Fragment, RULE_GLOBAL);
    }
    if non_first {
        return decision(Verdict::Pass, Reason::Fragment, RULE_GLOBAL);
    }
    // 6. no ports.
    if matches!(p.l4, L4::NoPorts) {
        return by_default(cfg, Config::OTHER_DROP, Reason::OtherProtocol);
    }
    // 7. zones. Outside its hours a scheduled zone refuses everyone.
    if zone != 0 {
        let audit = zone_flags & ZoneInfo::AUDIT != 0;
        let reject = zone_flags & ZoneInfo::REJECT != 0;
        if closed {
            if audit {
                return decision(Verdict::Pass, Reason::Audit, zone);
            }
            // A closed rejecting zone answers too (the reply program counts
            // it `rejected`, or `not_allowed` if it cannot be answered).
            if reject {
                reply::hand_off(ctx, pending(slot, zone, zone_flags));
            }
            return decision(Verdict::Drop, Reason::Closed, zone);
        }
        // Opaque to the optimiser: else LLVM folds the lookup's pointer into
        // the verdict (`audit | found`), which the verifier refuses.
        if core::hint::black_box(in_zone(slot, zone, zone_flags, &p.src)) {
            // Over the rate limit, or (checked after it, so a refused frame
            // is not counted as transfer) over the quota: the zone's action,
            // as for a source outside `allow` (a rejecting zone's reply is
            // counted `rejected`).
            let refused = if zone_flags & ZoneInfo::LIMITED != 0
                && !core::hint::black_box(rate::within(ctx, slot, zone, p))
            {
                Reason::RateLimited
            } else if zone_flags & ZoneInfo::QUOTA != 0
                && !core::hint::black_box(quota::within(
                    slot,
                    zone,
                    &p.src,
                    (ctx.data_end() - ctx.data()) as u64,
                ))
            {
                Reason::QuotaExceeded
            } else {
                return decision(Verdict::Pass, Reason::Allowed, zone);
            };
            if audit {
                return decision(Verdict::Pass, Reason::Audit, zone);
            }
            if reject {
                reply::hand_off(ctx, pending(slot, zone, zone_flags));
            }
            return decision(Verdict::Drop, refused, zone);
        }
        // Audit wins over reject: an auditing zone only counts what it
        // would have done.
        if audit {
            return decision(Verdict::Pass, Reason::Audit, zone);
        }
        // Here, not in the caller: a branch on the decision there would
        // make the verifier walk counting and sampling once per reason.
        if reject {
            reply::hand_off(ctx, pending(slot, zone, zone_flags));
        }
        return decision(Verdict::Drop, Reason::NotAllowed, zone);
    }
    // 8. no zone claims the port.
    by_default(cfg, Config::UNMATCHED_DROP, Reason::Unmatched)
}

/// What the reply program is handed: the zone (it parses the frame again;
/// keeping the header offsets on every parser path took the main program
/// past 1M verifier instructions on 6.1).
#[inline(always)]
fn pending(slot: u32, zone: u32, zone_flags: u32) -> ReplyPending {
    ReplyPending {
        zone,
        zone_flags,
        slot,
        ..ReplyPending::default()
    }
}

/// Is `src` in allow set `set` (a zone or a failsafe group) of `slot`?
#[inline(always)]
fn in_set(slot: u32, set: u32, src: &Src) -> bool {
    let tag = set_tag(slot, set);
    match src {
        Src::V4(a) => lpm4_contains(&ALLOW4, tag, *a),
        Src::V6(a) => lpm6_contains(&ALLOW6, tag, *a),
    }
}

/// Is `src` in zone `zone`'s allow set: its family's lane for a source of
/// a laned zone, else the trie.
#[inline(always)]
fn in_zone(slot: u32, zone: u32, zone_flags: u32, src: &Src) -> bool {
    let lane = (zone_flags & ZoneInfo::LANE_MASK) >> ZoneInfo::LANE_SHIFT;
    let lane6 = (zone_flags & ZoneInfo::LANE6_MASK) >> ZoneInfo::LANE6_SHIFT;
    match src {
        Src::V4(a) if lane != 0 => in_lane_v4(slot, lane, u32::from_be_bytes(*a)),
        Src::V6(a) if lane6 != 0 => in_lane_v6(lane6_space(slot, lane6), a),
        _ => in_set(slot, zone, src),
    }
}

#[inline(always)]
fn blocklisted(slot: u32, cfg: &Config, src: &Src) -> bool {
    match src {
        Src::V4(a) => cfg.has(Config::HAS_BL4) && blocklisted_v4(slot, u32::from_be_bytes(*a)),
        Src::V6(_) => false,
    }
}
