//! The datapath's clocks, through the per-CPU `CLOCK` cache (filter-common
//! `ClockCache`): `jiffies` is a plain load (the verifier inlines
//! `bpf_jiffies64`), the clock helpers are calls (a `rdtsc` in a VM, and
//! about as dear as the rest of a rate-limited packet), so a helper runs
//! only on the first packet of a CPU in each tick. The time returned is at
//! most a tick behind the clock; rate limits allow for it
//! (`RATE_CLOCK_STEP_NS`), schedules and quota periods are in seconds.
use aya_ebpf::helpers::{bpf_jiffies64, bpf_ktime_get_ns, bpf_ktime_get_tai_ns};

use crate::maps::CLOCK;

/// CLOCK_MONOTONIC, ns (the rate limits' buckets).
#[inline(always)]
pub fn mono_ns() -> u64 {
    // SAFETY: helpers without arguments.
    let j = unsafe { bpf_jiffies64() };
    let Some(c) = CLOCK.get_ptr_mut(0) else {
        return unsafe { bpf_ktime_get_ns() };
    };
    // SAFETY: per-CPU slot; XDP does not preempt itself on one CPU (a TC
    // program interleaving would at worst leave a stale pair: a tick late).
    unsafe {
        if (*c).mono_jiffies != j {
            (*c).mono_ns = bpf_ktime_get_ns();
            (*c).mono_jiffies = j;
        }
        (*c).mono_ns
    }
}

/// CLOCK_TAI, ns (schedules, quota periods; Linux >= 6.1).
#[inline(always)]
pub fn tai_ns() -> u64 {
    // SAFETY: as in `mono_ns`.
    let j = unsafe { bpf_jiffies64() };
    let Some(c) = CLOCK.get_ptr_mut(0) else {
        return unsafe { bpf_ktime_get_tai_ns() };
    };
    unsafe {
        if (*c).tai_jiffies != j {
            (*c).tai_ns = bpf_ktime_get_tai_ns();
            (*c).tai_jiffies = j;
        }
        (*c).tai_ns
    }
}
