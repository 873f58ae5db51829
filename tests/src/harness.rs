//! Runs frames through the real XDP object (BPF_PROG_TEST_RUN) under policies
//! compiled by the real compiler, and checks verdict, reason and rule.
//!
//! The program returns only the XDP action; the reason and rule are observed
//! through the counters: every frame increments exactly one counter, indexed by
//! (rule, reason, verdict), so "the expected counter grew by one and the action
//! matches" means the program decided exactly as expected.
use std::{collections::HashMap, fmt, path::Path, time::Duration};

use aya::maps::{HashMap as BpfHashMap, MapData};
use filter_common::{
    decode_counter_index, QuotaKey, QuotaUsage, Reason, Verdict, MAP_QUOTA_USAGE, NUM_COUNTERS,
};
use filter_user::{
    loader::{Filter, ImageOptions, LoadOptions, LoaderError, RateState},
    policy::{
        self,
        schedule::{kernel_tai_now_ns, SchedClock},
        PolicyError,
    },
};

/// A clock whose transitions start at `at` and put the kernel's CLOCK_TAI
/// of this moment at `at`.
pub fn shifted_clock(at: jiff::Timestamp) -> SchedClock {
    SchedClock {
        now: at,
        kernel_offset_ns: i128::from(kernel_tai_now_ns()) - at.as_nanosecond(),
    }
}

use crate::{case::Expect, spec::PolicySpec};

#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error(transparent)]
    Loader(#[from] LoaderError),
    #[error(transparent)]
    Bans(#[from] filter_user::bans::BanError),
    #[error("policy does not compile:\n{0}")]
    Policy(#[from] PolicyError),
    #[error("frame of {0} bytes: BPF_PROG_TEST_RUN needs 14..=3500")]
    FrameSize(usize),
    #[error("QUOTA_USAGE: {0}")]
    Quota(#[from] aya::maps::MapError),
    #[error("the object has no QUOTA_USAGE map (taken by the loader?)")]
    NoQuotaMap,
}

/// What the program did with one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observed {
    pub verdict: Verdict,
    pub reason: Reason,
    pub rule: u32,
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}, rule {})",
            self.verdict.as_str(),
            self.reason.as_str(),
            self.rule
        )
    }
}

impl From<&Expect> for Observed {
    fn from(e: &Expect) -> Self {
        Observed {
            verdict: e.verdict,
            reason: e.reason,
            rule: e.rule,
        }
    }
}

pub struct Harness {
    filter: Filter,
    /// The rate limits' buckets (outside the policy slots).
    rates: RateState,
    /// The ban maps (taken out of the filter) and what they hold.
    bans: (
        filter_user::bans::kernel::BanMaps,
        filter_user::bans::BanSet,
    ),
    /// The transfer quotas' usage (outside the policy slots).
    quota: BpfHashMap<MapData, QuotaKey, QuotaUsage>,
    /// Last known packet count per counter index.
    seen: HashMap<u32, u64>,
}

/// Largest frame BPF_PROG_TEST_RUN accepts for XDP on 4 KiB pages (headroom and
/// skb_shared_info are taken from the page).
pub const MAX_FRAME: usize = 3500;

impl Harness {
    pub fn new() -> Result<Harness, HarnessError> {
        // Nothing is attached and TEST_RUN is synchronous: no packet can be
        // in flight on the old slot, so no quiescence wait is needed.
        let mut filter = Filter::load(LoadOptions {
            quiesce: Duration::ZERO,
            ..LoadOptions::default()
        })?;
        let rates = filter.take_rate_state()?;
        let maps = filter_user::bans::kernel::BanMaps::take(&mut filter)?;
        let quota = filter
            .take_map(MAP_QUOTA_USAGE)
            .ok_or(HarnessError::NoQuotaMap)?;
        Ok(Harness {
            filter,
            rates,
            bans: (maps, filter_user::bans::BanSet::new()),
            quota: BpfHashMap::try_from(quota)?,
            seen: HashMap::new(),
        })
    }

    /// Makes the ban maps hold `spec.bans`, expiries shifted so that the
    /// datapath's clock stands for `spec.at` (or now).
    fn apply_bans(&mut self, spec: &PolicySpec) -> Result<(), HarnessError> {
        use filter_user::bans::{Ban, BanSet};
        let now = spec.at.unwrap_or_else(jiff::Timestamp::now);
        let kernel_now = filter_user::policy::schedule::kernel_tai_now_ns() as i128;
        let mut set = BanSet::new();
        for b in &spec.bans {
            let expires_ns = match b.until {
                None => filter_common::BAN_FOREVER,
                Some(t) => {
                    let left = t.as_nanosecond() - now.as_nanosecond();
                    (kernel_now + left).clamp(0, i128::from(u64::MAX - 1)) as u64
                }
            };
            set.add(&Ban {
                net: b.net,
                expires_ns,
                tag: String::new(),
                reason: String::new(),
            })?;
        }
        self.bans.0.rewrite(&set)?;
        self.bans.1 = set;
        Ok(())
    }

    pub fn filter(&mut self) -> &mut Filter {
        &mut self.filter
    }

    /// The rate limits' state, to read buckets back.
    pub fn rates(&mut self) -> &mut RateState {
        &mut self.rates
    }

    /// Every `QUOTA_USAGE` entry.
    pub fn quota_usage(&self) -> Result<Vec<(QuotaKey, QuotaUsage)>, HarnessError> {
        Ok(self.quota.iter().collect::<Result<Vec<_>, _>>()?)
    }

    /// Writes one `QUOTA_USAGE` entry (a test's past period).
    pub fn set_quota_usage(&mut self, k: QuotaKey, u: QuotaUsage) -> Result<(), HarnessError> {
        Ok(self.quota.insert(k, u, 0)?)
    }

    /// Deletes one `QUOTA_USAGE` entry.
    pub fn remove_quota_usage(&mut self, k: &QuotaKey) -> Result<(), HarnessError> {
        Ok(self.quota.remove(k)?)
    }

    /// Empties `QUOTA_USAGE`.
    pub fn reset_quota_usage(&mut self) -> Result<(), HarnessError> {
        let keys = self.quota.keys().collect::<Result<Vec<_>, _>>()?;
        for k in keys {
            self.quota.remove(&k)?;
        }
        Ok(())
    }

    /// Runs `frame` through the egress program, as if the host sent it.
    pub fn egress(&mut self, frame: &[u8]) -> Result<i32, HarnessError> {
        if frame.len() < 14 || frame.len() > MAX_FRAME {
            return Err(HarnessError::FrameSize(frame.len()));
        }
        Ok(self.filter.test_run_egress(frame)?)
    }

    /// Compiles `spec` through its TOML form, as an operator's file would
    /// be, on fresh rate buckets and quota usage (each test policy starts
    /// from full buckets and nothing used).
    pub fn apply(&mut self, spec: &PolicySpec) -> Result<(), HarnessError> {
        self.rates.reset()?;
        self.reset_quota_usage()?;
        self.apply_keeping_rates(spec)
    }

    /// As [`apply`](Self::apply), keeping the buckets and the quota usage,
    /// as a reload does.
    pub fn apply_keeping_rates(&mut self, spec: &PolicySpec) -> Result<(), HarnessError> {
        let compiled = policy::compile_str(&spec.to_toml(), Path::new("generated.toml"))?;
        self.apply_bans(spec)?;
        match spec.at {
            // The datapath reads the real clock: shift the transitions so
            // that its "now" is `at`.
            Some(at) => {
                let meta = self.filter.meta()?;
                let opts = ImageOptions {
                    clock: shifted_clock(at),
                };
                self.filter.apply_with_options(&compiled, &meta, opts)?;
            }
            None => {
                self.filter.apply(&compiled)?;
            }
        }
        Ok(())
    }

    fn packets(&mut self, index: u32, o: &Observed) -> Result<u64, HarnessError> {
        let packets = self.filter.counter(o.rule, o.reason, o.verdict)?.packets;
        self.seen.insert(index, packets);
        Ok(packets)
    }

    /// Runs `frame`; `Ok(None)` if the program did exactly `expect`, else what
    /// it did instead.
    pub fn check(
        &mut self,
        frame: &[u8],
        expect: Observed,
    ) -> Result<Option<Observed>, HarnessError> {
        Ok(self.check_reply(frame, expect, None)?.err().map(|(o, _)| o))
    }

    /// As [`Harness::check`], and for `rejected` also the reply: `Ok(Ok(()))`
    /// if the program did exactly `expect` and (when `reply` is given) left
    /// exactly those bytes; else what it did and the bytes it left.
    pub fn check_reply(
        &mut self,
        frame: &[u8],
        expect: Observed,
        reply: Option<&[u8]>,
    ) -> Result<Result<(), (Observed, Vec<u8>)>, HarnessError> {
        if frame.len() < 14 || frame.len() > MAX_FRAME {
            return Err(HarnessError::FrameSize(frame.len()));
        }
        let index = index_of(&expect);
        let before = match self.seen.get(&index) {
            Some(p) => *p,
            None => self.packets(index, &expect)?,
        };
        let (action, out) = self.filter.test_run_output(frame)?;
        let after = self.packets(index, &expect)?;
        let verdict_ok = action == xdp_action_of(expect.verdict, expect.reason);
        let reply_ok = reply.is_none_or(|r| r == out.as_slice());
        if verdict_ok && reply_ok && after == before + 1 {
            return Ok(Ok(()));
        }
        let observed = if verdict_ok && after == before + 1 {
            expect
        } else {
            self.observe(frame)?
        };
        Ok(Err((observed, out)))
    }

    /// Mean kernel time of one run of `frame` over `repeat` runs.
    pub fn time(&mut self, frame: &[u8], repeat: u32) -> Result<Duration, HarnessError> {
        self.seen.clear(); // the counters move by `repeat`
        Ok(self.filter.time_run(frame, repeat)?)
    }

    /// Runs `frame` again and finds the one counter that moved (slow: reads all
    /// counters twice; used to explain mismatches).
    pub fn observe(&mut self, frame: &[u8]) -> Result<Observed, HarnessError> {
        let snapshot = |f: &Filter| -> Result<Vec<u64>, HarnessError> {
            (0..NUM_COUNTERS)
                .map(|i| match decode_counter_index(i) {
                    Some((rule, reason, verdict)) => Ok(f.counter(rule, reason, verdict)?.packets),
                    // An unassigned reason number: no packet counts there.
                    None => Ok(0),
                })
                .collect()
        };
        let before = snapshot(&self.filter)?;
        let action = self.filter.test_run(frame)?;
        let after = snapshot(&self.filter)?;
        self.seen.clear();
        let moved: Vec<u32> = (0..NUM_COUNTERS)
            .filter(|i| after[*i as usize] != before[*i as usize])
            .collect();
        let (rule, reason, verdict) = match moved.as_slice() {
            [one] if decode_counter_index(*one).is_some() => {
                decode_counter_index(*one).expect("checked")
            }
            // Not exactly one counter moved: report the action with a marker reason.
            _ => (
                u32::MAX,
                Reason::NoPolicy,
                if action == xdp_action(Verdict::Pass) {
                    Verdict::Pass
                } else {
                    Verdict::Drop
                },
            ),
        };
        Ok(Observed {
            verdict,
            reason,
            rule,
        })
    }
}

fn index_of(o: &Observed) -> u32 {
    filter_common::counter_index(o.rule, o.reason, o.verdict)
}

pub fn xdp_action(v: Verdict) -> u32 {
    match v {
        Verdict::Pass => 2, // XDP_PASS
        Verdict::Drop => 1, // XDP_DROP
    }
}

/// The action of a decision: a rejecting zone's reply leaves by XDP_TX.
pub fn xdp_action_of(v: Verdict, r: Reason) -> u32 {
    match (v, r) {
        (Verdict::Drop, Reason::Rejected) => 3, // XDP_TX
        _ => xdp_action(v),
    }
}
