//! portcullis XDP program: parse (parse.rs), decide (decide.rs), count,
//! sample (events.rs: a tail call into `portcullis_events`), act. A rejecting
//! zone's refusal goes to `portcullis_reply` instead (reply.rs, a tail call),
//! which counts, samples and answers itself. egress.rs is a second program,
//! at TC egress, that counts downloads for transfer quotas.
#![no_std]
#![no_main]
// Atomic compare-and-swap for the rate buckets (rate.rs).
#![feature(core_intrinsics)]
#![allow(internal_features)]

mod bans;
mod blocklist4;
mod blocklist6;
mod clock;
mod decide;
mod egress;
mod events;
mod maps;
mod parse;
mod quota;
mod rate;
mod reply;
mod schedule;

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use filter_common::{
    counter_index, iface_counter_index, slot_of, Config, Reason, Verdict, MAX_IFACE_SLOTS,
    RULE_GLOBAL,
};

use crate::maps::{count, ACTIVE, CONFIG, IFACES};

#[xdp]
pub fn portcullis(ctx: XdpContext) -> u32 {
    let bytes = (ctx.data_end() - ctx.data()) as u64;
    let iface = match IFACES.get(ctx.ingress_ifindex() as u32) {
        Some(slot) if *slot < MAX_IFACE_SLOTS => *slot,
        _ => 0,
    };
    // Read the generation once: every lookup below uses this slot only.
    let generation = ACTIVE.get(0).copied().unwrap_or(0);
    let slot = slot_of(generation);
    let cfg = CONFIG.get(slot).copied().unwrap_or_default();
    if !cfg.has(Config::VALID) {
        let index = counter_index(RULE_GLOBAL, Reason::NoPolicy, Verdict::Pass);
        count(iface_counter_index(iface, index), bytes);
        return xdp_action::XDP_PASS;
    }

    let d = decide::decide(&ctx, slot, &cfg, parse::parse(&ctx));
    count(
        iface_counter_index(iface, counter_index(d.rule, d.reason, d.verdict)),
        bytes,
    );
    events::sample(&ctx, &d);
    match d.verdict {
        Verdict::Pass => xdp_action::XDP_PASS,
        Verdict::Drop => xdp_action::XDP_DROP,
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
