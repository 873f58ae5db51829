//! Judging probe results against policies A and B.
//!
//! Every result must be what A or B gives. Stricter, where the soak knows which
//! policy is enforced (from a successful reload's return, or READY=1, until
//! just before the file is rewritten with the other policy; rejected reloads
//! and `kill -9` + restart do not end such a stretch), the result must be
//! what *that* policy gives: a rejected reload that changed the enforced
//! policy, or a gap while the daemon is down, shows up here.
use std::{
    collections::HashMap,
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::e2e::{
    probe::{Probe, Sample},
    scenarios::{ms, Exp},
};

/// Results this close to the end of a stretch are judged by A-or-B only: the
/// probe's packet may leave a moment after the sample's timestamp.
pub const END_MARGIN: Duration = Duration::from_millis(100);

/// Failures printed per kind (all are counted).
const SHOWN: usize = 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Policy {
    A,
    B,
}

impl Policy {
    pub fn other(self) -> Policy {
        match self {
            Policy::A => Policy::B,
            Policy::B => Policy::A,
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Policy::A => "A",
            Policy::B => "B",
        })
    }
}

/// Where the enforced policy is known, and when the daemon was down.
#[derive(Default)]
pub struct Timeline {
    inner: Mutex<TimelineInner>,
}

#[derive(Default, Clone)]
struct TimelineInner {
    /// (from, until (open: None), policy).
    stretches: Vec<(Instant, Option<Instant>, Policy)>,
    /// (kill -9, READY=1 of the next daemon (None while down)).
    downs: Vec<(Instant, Option<Instant>)>,
}

/// A copy of the timeline with open ends closed at the time of the copy.
pub struct Snapshot {
    stretches: Vec<(Instant, Instant, Policy)>,
    downs: Vec<(Instant, Instant)>,
}

impl Timeline {
    fn lock(&self) -> std::sync::MutexGuard<'_, TimelineInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `p` is enforced from `at` on (a reload returned, a daemon is ready).
    pub fn known_from(&self, at: Instant, p: Policy) {
        let mut t = self.lock();
        if let Some(last) = t.stretches.last_mut() {
            if last.1.is_none() {
                last.1 = Some(at);
            }
        }
        t.stretches.push((at, None, p));
    }

    /// From `at` on the enforced policy may change (the file is about to be
    /// rewritten with the other policy, or a reload failed).
    pub fn unknown_from(&self, at: Instant) {
        if let Some(last) = self.lock().stretches.last_mut() {
            if last.1.is_none() {
                last.1 = Some(at);
            }
        }
    }

    pub fn daemon_down(&self, at: Instant) {
        self.lock().downs.push((at, None));
    }

    pub fn daemon_ready(&self, at: Instant) {
        if let Some(last) = self.lock().downs.last_mut() {
            last.1.get_or_insert(at);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let t = self.lock().clone();
        Snapshot {
            stretches: t
                .stretches
                .iter()
                .map(|&(a, b, p)| (a, b.unwrap_or(now), p))
                .collect(),
            downs: t
                .downs
                .iter()
                .map(|&(a, b)| (a, b.unwrap_or(now)))
                .collect(),
        }
    }
}

impl Snapshot {
    /// The policy known to be enforced at `t`, if any.
    fn known(&self, t: Instant) -> Option<Policy> {
        self.stretches
            .iter()
            .rev()
            .find(|(from, until, _)| t >= *from && t + END_MARGIN <= *until)
            .map(|s| s.2)
    }

    fn down_window(&self, t: Instant) -> Option<usize> {
        self.downs.iter().position(|(a, b)| t >= *a && t <= *b)
    }
}

/// Counts over every judged result.
#[derive(Default)]
pub struct Judge {
    expect: HashMap<Probe, (Exp, Exp)>,
    pub total: u64,
    pub only_a: u64,
    pub only_b: u64,
    pub both: u64,
    pub neither: u64,
    pub neither_shown: Vec<String>,
    /// Results inside a stretch of known policy, and those that disagree with it.
    pub strict: u64,
    pub strict_wrong: u64,
    pub strict_shown: Vec<String>,
    /// Per down window: results inside it, and per probe how many.
    pub down: HashMap<usize, HashMap<Probe, u64>>,
    pub down_wrong: u64,
}

impl Judge {
    pub fn new(table: &[(Probe, Exp, Exp)]) -> Judge {
        Judge {
            expect: table.iter().map(|(p, a, b)| (*p, (*a, *b))).collect(),
            ..Judge::default()
        }
    }

    /// Judges the samples of a probe loop started at `t0` (the samples' `at`
    /// is since then); `run0` is the soak's start, for messages.
    pub fn judge(&mut self, t0: Instant, run0: Instant, samples: &[Sample], tl: &Snapshot) {
        for s in samples {
            let Some(&(a, b)) = self.expect.get(&s.probe) else {
                continue;
            };
            self.total += 1;
            let at = t0 + s.at;
            let when = ms(at.saturating_duration_since(run0));
            let (ma, mb) = (a.matches(&s.outcome), b.matches(&s.outcome));
            match (ma, mb) {
                (true, true) => self.both += 1,
                (true, false) => self.only_a += 1,
                (false, true) => self.only_b += 1,
                (false, false) => {
                    self.neither += 1;
                    if self.neither_shown.len() < SHOWN {
                        self.neither_shown.push(format!(
                            "  at {when}: {}: {} (A: {a}, B: {b})",
                            s.probe, s.outcome
                        ));
                    }
                }
            }
            let down = tl.down_window(at);
            if let Some(w) = down {
                *self.down.entry(w).or_default().entry(s.probe).or_default() += 1;
            }
            if let Some(p) = tl.known(at) {
                self.strict += 1;
                let ok = match p {
                    Policy::A => ma,
                    Policy::B => mb,
                };
                if !ok {
                    self.strict_wrong += 1;
                    if down.is_some() {
                        self.down_wrong += 1;
                    }
                    if self.strict_shown.len() < SHOWN {
                        let exp = if p == Policy::A { a } else { b };
                        self.strict_shown.push(format!(
                            "  at {when}{}: {}: {} (policy {p} enforced: {exp})",
                            if down.is_some() { " (daemon down)" } else { "" },
                            s.probe,
                            s.outcome
                        ));
                    }
                }
            }
        }
    }

    /// Down windows in which some probe has no result at all (a gap in what
    /// the soak saw), as (window, probes without results).
    pub fn unobserved(&self, windows: usize, probes: &[Probe]) -> Vec<(usize, usize)> {
        (0..windows)
            .filter_map(|w| {
                let seen = self.down.get(&w);
                let missing = probes
                    .iter()
                    .filter(|p| seen.and_then(|m| m.get(p)).copied().unwrap_or(0) == 0)
                    .count();
                (missing > 0).then_some((w, missing))
            })
            .collect()
    }

    /// Results inside down windows, and the fewest any probe had in one window.
    pub fn down_figures(&self, probes: &[Probe]) -> (u64, u64) {
        let total = self.down.values().flat_map(|m| m.values()).sum();
        let fewest = self
            .down
            .values()
            .map(|m| {
                probes
                    .iter()
                    .map(|p| m.get(p).copied().unwrap_or(0))
                    .min()
                    .unwrap_or(0)
            })
            .min()
            .unwrap_or(0);
        (total, fewest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e2e::{
        probe::Outcome,
        topology::{INET4, MGMT4},
    };

    fn sample(p: Probe, at_ms: u64, o: Outcome) -> Sample {
        Sample {
            probe: p,
            at: Duration::from_millis(at_ms),
            outcome: o,
        }
    }

    #[test]
    fn results_are_judged_by_either_and_by_the_known_policy() {
        let open_in_a = Probe::tcp(INET4, 8880);
        let open_in_both = Probe::tcp(MGMT4, 8889);
        let table = [
            (open_in_a, Exp::Open, Exp::Blocked),
            (open_in_both, Exp::Open, Exp::Open),
        ];
        // In the past: a snapshot closes open stretches at "now".
        let t0 = Instant::now() - Duration::from_secs(10);
        let tl = Timeline::default();
        tl.known_from(t0, Policy::A);
        tl.unknown_from(t0 + Duration::from_millis(1000));
        tl.known_from(t0 + Duration::from_millis(1200), Policy::B);
        tl.daemon_down(t0 + Duration::from_millis(1500));
        tl.daemon_ready(t0 + Duration::from_millis(2500));
        let mut j = Judge::new(&table);
        let snap = Snapshot {
            stretches: vec![
                (t0, t0 + Duration::from_millis(1000), Policy::A),
                (
                    t0 + Duration::from_millis(1200),
                    t0 + Duration::from_millis(5000),
                    Policy::B,
                ),
            ],
            downs: vec![(
                t0 + Duration::from_millis(1500),
                t0 + Duration::from_millis(2500),
            )],
        };
        let samples = [
            sample(open_in_a, 100, Outcome::Open),        // A, as known
            sample(open_in_a, 1100, Outcome::Timeout),    // in the change: B is fine
            sample(open_in_a, 1300, Outcome::Open),       // B known: wrong
            sample(open_in_both, 1600, Outcome::Timeout), // neither, while down
            sample(open_in_both, 2000, Outcome::Open),    // fine, while down
        ];
        j.judge(t0, t0, &samples, &snap);
        assert_eq!(j.total, 5);
        assert_eq!((j.only_a, j.only_b, j.both, j.neither), (2, 1, 1, 1));
        assert_eq!(j.strict, 4);
        assert_eq!(j.strict_wrong, 2);
        assert_eq!(j.down_wrong, 1);
        assert_eq!(j.unobserved(1, &[open_in_both]), vec![]);
        assert_eq!(j.unobserved(1, &[open_in_a, open_in_both]), vec![(0, 1)]);
        // The real timeline closes open ends at the snapshot.
        let s = tl.snapshot();
        assert_eq!(s.known(t0 + Duration::from_millis(500)), Some(Policy::A));
        assert_eq!(s.known(t0 + Duration::from_millis(1100)), None);
        assert_eq!(s.known(t0 + Duration::from_millis(1300)), Some(Policy::B));
        assert_eq!(s.down_window(t0 + Duration::from_millis(2000)), Some(0));
    }
}
