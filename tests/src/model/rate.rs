//! Rate limits as docs/policy.md describes them, written as plain token
//! buckets (not the datapath's GCRA words): a bucket of `burst` tokens,
//! refilled at exactly `count` per `period` on a clock the caller sets.
//! Tokens are kept scaled by the period (one token = `period_ns` credit, the
//! refill is `count` credit per ns), so the arithmetic is exact integers.
//!
//! Per limit: a bucket per tracked key (the source masked by `per`); sources
//! without one share the zone's ceiling and are tracked from their first
//! admitted packet while the table has room and the new-key budget allows;
//! a tracked source's admitted packets are charged to the ceiling too, which
//! may then owe up to `burst − 1` tokens (so the tracked never starve, and
//! the untracked get only what they leave).
use std::collections::HashMap;
use std::net::IpAddr;

use crate::spec::{LimitSpec, ZoneSpec};

/// Default `tracked` (`defaults.rate_tracked`).
pub const DEFAULT_TRACKED: u64 = 4096;

#[derive(Clone, Debug)]
struct Bucket {
    /// Tokens × period; starts full.
    credit: i128,
    last: u64,
    count: i128,
    period: i128,
    burst: i128,
}

impl Bucket {
    fn new(count: u64, period: u64, burst: u64, now: u64) -> Self {
        // docs/policy.md: a burst holds at least 10 ms of the rate (the
        // datapath's clock moves a kernel tick at a time).
        let step = (10_000_000u128 * count as u128 / period.max(1) as u128) as u64;
        let burst = burst.max(step);
        Bucket {
            credit: burst as i128 * period as i128,
            last: now,
            count: count as i128,
            period: period as i128,
            burst: burst as i128,
        }
    }

    fn refill(&mut self, now: u64) {
        let elapsed = now.saturating_sub(self.last) as i128;
        self.last = self.last.max(now);
        self.credit = (self.credit + elapsed * self.count).min(self.burst * self.period);
    }

    /// Takes a token if there is one.
    fn take(&mut self, now: u64) -> bool {
        self.refill(now);
        if self.credit >= self.period {
            self.credit -= self.period;
            true
        } else {
            false
        }
    }

    /// Takes a token even if there is none, owing at most `burst − 1`.
    fn charge(&mut self, now: u64) {
        self.refill(now);
        self.credit = (self.credit - self.period).max((1 - self.burst) * self.period);
    }
}

#[derive(Clone, Debug)]
struct LimitState {
    keys: HashMap<(u8, u128), Bucket>,
    ceiling: Bucket,
    new_keys: Bucket,
}

/// The rate state of a whole policy, and the clock.
#[derive(Clone, Debug, Default)]
pub struct Rates {
    /// CLOCK_MONOTONIC-like ns; the caller moves it.
    pub now_ns: u64,
    limits: HashMap<(usize, bool), LimitState>,
}

fn burst_of(l: &LimitSpec) -> u64 {
    l.burst.unwrap_or(l.count)
}

/// (count, period ns, burst) of the zone's ceiling for `l`.
fn ceiling_of(l: &LimitSpec) -> (u64, u64, u64) {
    let period = LimitSpec::period_ns(l.unit);
    let burst = burst_of(l);
    if l.zone {
        return (l.count, period, burst);
    }
    match l.ceiling {
        None => (l.count * 10, period, burst * 10),
        Some((c, u)) => {
            let cp = LimitSpec::period_ns(u);
            // Burst in the limit's proportion: burst × (ceiling rate / rate).
            let b = (burst as u128 * c as u128 * period as u128 / (l.count as u128 * cp as u128))
                .max(1) as u64;
            (c, cp, b)
        }
    }
}

fn key_of(l: &LimitSpec, src: IpAddr) -> (u8, u128) {
    match src {
        IpAddr::V4(a) => {
            let len = u32::from(l.v4_len);
            let v = u32::from(a);
            let m = if len == 0 {
                0
            } else {
                v & (u32::MAX << (32 - len))
            };
            (4, u128::from(m))
        }
        IpAddr::V6(a) => {
            let len = u32::from(l.v6_len);
            let v = u128::from(a);
            let m = if len == 0 {
                0
            } else {
                v & (u128::MAX << (128 - len))
            };
            (6, m)
        }
    }
}

impl Rates {
    pub fn new() -> Self {
        Rates::default()
    }

    /// Is a packet of `src` to zone `index` within its limits? `syn`: a TCP
    /// segment with SYN and without ACK (a new connection). Packet limit
    /// first; a packet it refuses does not reach the connection limit.
    pub fn admit(&mut self, index: usize, zone: &ZoneSpec, src: IpAddr, syn: bool) -> bool {
        for l in &zone.rate {
            if l.connections && !syn {
                continue;
            }
            if !l.connections && !self.admit_one(index, l, src) {
                return false;
            }
        }
        for l in zone.rate.iter().filter(|l| l.connections && syn) {
            if !self.admit_one(index, l, src) {
                return false;
            }
        }
        true
    }

    fn admit_one(&mut self, index: usize, l: &LimitSpec, src: IpAddr) -> bool {
        let now = self.now_ns;
        let period = LimitSpec::period_ns(l.unit);
        let (cc, cp, cb) = ceiling_of(l);
        let (nc, nu) = l.new_sources.unwrap_or((100, "s"));
        let state = self
            .limits
            .entry((index, l.connections))
            .or_insert_with(|| LimitState {
                keys: HashMap::new(),
                ceiling: Bucket::new(cc, cp, cb, now),
                new_keys: Bucket::new(nc, LimitSpec::period_ns(nu), nc, now),
            });
        let key = key_of(l, src);
        let tracked = if l.zone {
            0
        } else {
            u64::from(l.tracked.unwrap_or(DEFAULT_TRACKED as u32))
        };
        if tracked > 0 {
            if let Some(b) = state.keys.get_mut(&key) {
                if !b.take(now) {
                    return false;
                }
                state.ceiling.charge(now);
                return true;
            }
        }
        if !state.ceiling.take(now) {
            return false;
        }
        if tracked > 0 && (state.keys.len() as u64) < tracked && state.new_keys.take(now) {
            // Its first packet is the one just admitted.
            let mut b = Bucket::new(l.count, period, burst_of(l), now);
            b.credit -= b.period;
            state.keys.insert(key, b);
        }
        true
    }
}
