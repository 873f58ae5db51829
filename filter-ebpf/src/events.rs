//! Sampled decisions: a decision of a class selected in `EVENTS_CFG` takes a
//! token from this CPU's bucket (`EVENTS_STATE`) and, with one, becomes an
//! `Event` in the `EVENTS` ring buffer. The contract: `filter-common`
//! (`EventsConfig`, `EventsState`, `Event`, `bucket_take`).
//!
//! Off (no class selected, the default) costs one array read and a branch.
//! The rest runs in a program of its own, entered by a tail call: its
//! verification does not multiply with the main program's paths, and the
//! packet (destination, source port) is read again only when an event is
//! written.
use aya_ebpf::{
    bindings::xdp_action, helpers::bpf_ktime_get_ns, macros::xdp, programs::XdpContext,
};
use filter_common::{
    bucket_take, Event, EventsConfig, EventsPending, Reason, Verdict, EVENT_IPV4, EVENT_IPV6,
};

use crate::{
    decide::Decision,
    maps::{EVENTS, EVENTS_CFG, EVENTS_PENDING, EVENTS_PROG, EVENTS_STATE},
    parse::{self, bytes, Headers, Parsed, L4},
};

/// In the main program, after counting: a decision of a selected class is
/// handed to the events program (a tail call, which returns the verdict's
/// action). Returns only if nothing is sampled or the tail call failed (no
/// events program loaded): the caller then acts itself.
#[inline(always)]
pub fn sample(ctx: &XdpContext, d: &Decision) {
    let Some(cfg) = EVENTS_CFG.get(0) else {
        return;
    };
    if cfg.flags & EventsConfig::class(d.verdict, d.reason) == 0 {
        return;
    }
    let Some(pending) = EVENTS_PENDING.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU slot; XDP does not preempt itself on one CPU, and the
    // tail-called program reads it on the same CPU.
    unsafe {
        *pending = EventsPending {
            rule: d.rule,
            reason: d.reason as u8,
            verdict: d.verdict as u8,
            _pad: [0; 2],
        };
        EVENTS_PROG.tail_call(ctx, 0);
    }
}

/// The events program: verified on its own (so the sampling path does not
/// multiply the main program's verifier states), entered only by the tail
/// call of [`sample`]. Emits the event and returns the main program's verdict.
#[xdp]
pub fn portcullis_events(ctx: XdpContext) -> u32 {
    let Some(p) = EVENTS_PENDING.get(0).copied() else {
        return xdp_action::XDP_PASS;
    };
    let drop = p.verdict == Verdict::Drop as u8;
    let reason = Reason::from_u32(p.reason as u32).unwrap_or(Reason::Malformed);
    let d = Decision {
        verdict: if drop { Verdict::Drop } else { Verdict::Pass },
        reason,
        rule: p.rule,
    };
    emit(&ctx, &d);
    if drop {
        xdp_action::XDP_DROP
    } else {
        xdp_action::XDP_PASS
    }
}

/// Where an event finds the packet's addresses and ports.
#[derive(Clone, Copy)]
pub struct Where {
    pub at: Headers,
    /// TCP, UDP or SCTP with its header (ports at `at.l4`).
    pub ports: bool,
}

impl Where {
    #[inline(always)]
    pub fn of(parsed: &Parsed) -> Option<Where> {
        match parsed {
            Parsed::Ip(p) => Some(Where {
                at: p.at,
                ports: matches!(p.l4, L4::Ports { .. }),
            }),
            _ => None,
        }
    }
}

/// Samples `d` if its class is selected (the packet is parsed again for
/// its addresses and ports).
#[inline(always)]
pub fn emit(ctx: &XdpContext, d: &Decision) {
    emit_at(ctx, d, Where::of(&parse::parse(ctx)));
}

/// Samples `d` if its class is selected: takes a token from this CPU's
/// bucket and, with one, writes the event, reading addresses and ports at
/// `at`. Used by the events program and by the reply program (reply.rs),
/// which samples before it rewrites the frame, from the headers it parsed.
/// Not inlined, and without a parse of its own: the reply program calls it
/// with several decisions, and the verifier walks it once per decision.
#[inline(never)]
pub fn emit_at(ctx: &XdpContext, d: &Decision, at: Option<Where>) {
    let (Some(cfg), Some(state)) = (EVENTS_CFG.get(0), EVENTS_STATE.get_ptr_mut(0)) else {
        return;
    };
    if cfg.flags & EventsConfig::class(d.verdict, d.reason) == 0 {
        return;
    }
    let (cost, cap) = (cfg.cost_ns, cfg.cap_ns);
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: per-CPU slot; XDP does not preempt itself on one CPU.
    let state = unsafe { &mut *state };
    let (credit, taken) = bucket_take(state.credit_ns, state.last_ns, now, cost, cap);
    state.credit_ns = credit;
    state.last_ns = now;
    if !taken {
        state.suppressed += 1;
        return;
    }
    match EVENTS.reserve::<Event>(0) {
        Some(mut slot) => {
            slot.write(record(ctx, at, d, now));
            slot.submit(0);
            state.emitted += 1;
        }
        None => state.lost += 1,
    }
}

/// The event of one decision, its addresses and ports read again from the
/// offsets the parser found.
#[inline(always)]
fn record(ctx: &XdpContext, at: Option<Where>, d: &Decision, now: u64) -> Event {
    let mut e = Event {
        ts_ns: now,
        ifindex: ctx.ingress_ifindex() as u32,
        rule: d.rule,
        len: (ctx.data_end() - ctx.data()) as u32,
        reason: d.reason as u8,
        verdict: d.verdict as u8,
        ..Event::default()
    };
    let Some(w) = at else {
        return e;
    };
    e.proto = w.at.proto;
    let l3 = w.at.l3 as usize;
    if w.at.v6 {
        e.family = EVENT_IPV6;
        if let Some(a) = bytes::<32>(ctx, l3 + 8) {
            e.src.copy_from_slice(&a[..16]);
            e.dst.copy_from_slice(&a[16..]);
        }
    } else {
        e.family = EVENT_IPV4;
        if let Some(a) = bytes::<8>(ctx, l3 + 12) {
            e.src[..4].copy_from_slice(&a[..4]);
            e.dst[..4].copy_from_slice(&a[4..]);
        }
    }
    if w.ports {
        if let Some(p) = bytes::<4>(ctx, w.at.l4 as usize) {
            e.sport = u16::from_be_bytes([p[0], p[1]]);
            e.dport = u16::from_be_bytes([p[2], p[3]]);
        }
    }
    e
}
