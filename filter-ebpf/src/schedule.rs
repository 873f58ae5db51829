//! Time-restricted zones: is a scheduled zone open now? The daemon stores the
//! zone's coming transitions in `SCHED` as CLOCK_TAI instants; the datapath
//! reads the clock itself (clock.rs: at most a tick behind), so the schedule holds with the daemon stopped.
use filter_common::{sched_is_open, zone_index};

use crate::{clock, maps::SCHED};

/// Whether scheduled zone `zone` of `slot` is open now. A missing entry is
/// closed (fail closed, like a list that ran out).
#[inline(always)]
pub fn zone_open(slot: u32, zone: u32) -> bool {
    match SCHED.get(zone_index(slot, zone)) {
        Some(s) => sched_is_open(s, clock::tai_ns()),
        None => false,
    }
}
