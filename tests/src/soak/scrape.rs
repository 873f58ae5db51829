//! /metrics scraped in a loop, with every counter checked monotonic per
//! series. The packet and byte counters live in pinned maps and the policy
//! generation in the pinned META record: they must never go back, across
//! `kill -9` and restarts too. Other `_total` counters are the process's own
//! (e.g. reloads): they may start again from zero in a new daemon, so they are
//! compared within one daemon's life only.
use std::{
    collections::HashMap,
    net::SocketAddr,
    thread,
    time::{Duration, Instant},
};

use super::Live;
use crate::e2e::http;

/// Series that survive the daemon (read from pins at scrape time).
fn pinned(name: &str) -> bool {
    matches!(
        name,
        "portcullis_packets_total" | "portcullis_bytes_total" | "portcullis_policy_generation"
    )
}

fn checked(name: &str) -> bool {
    pinned(name) || name.ends_with("_total")
}

const SHOWN: usize = 20;

/// Every series' last value, and what went back.
#[derive(Default)]
pub struct Monotonic {
    /// key → (value, daemon incarnation it was read from).
    last: HashMap<String, (f64, u64)>,
    pub comparisons: u64,
    pub regressions: u64,
    pub shown: Vec<String>,
}

impl Monotonic {
    /// Checks one scrape of daemon `incarnation` against the previous ones.
    pub fn observe(&mut self, samples: &[http::Sample], incarnation: u64, label: &str) {
        let now: HashMap<String, f64> = samples
            .iter()
            .filter(|s| checked(&s.name))
            .map(|s| (s.key(), s.value))
            .collect();
        let mut bad = Vec::new();
        for (k, (old, inc)) in &self.last {
            let name = k.split('{').next().unwrap_or_default();
            if !pinned(name) && *inc != incarnation {
                continue;
            }
            self.comparisons += 1;
            match now.get(k) {
                Some(v) if v >= old => {}
                Some(v) => bad.push(format!("  {label}: {k} went back {old} -> {v}")),
                None => bad.push(format!("  {label}: {k} ({old}) vanished")),
            }
        }
        self.regressions += bad.len() as u64;
        for b in bad {
            if self.shown.len() < SHOWN {
                self.shown.push(b);
            }
        }
        // Keep vanished series (so they are reported once per scrape) unless
        // they belonged to a daemon that is gone.
        self.last
            .retain(|k, (_, inc)| *inc == incarnation || pinned(k.split('{').next().unwrap_or("")));
        for (k, v) in now {
            self.last.insert(k, (v, incarnation));
        }
    }

    pub fn series(&self) -> usize {
        self.last.len()
    }
}

/// What the scrape loop saw.
#[derive(Default)]
pub struct Stats {
    pub ok: u64,
    /// Failed outside any restart (connection errors, timeouts, non-200).
    pub failed: u64,
    pub failures: Vec<String>,
    /// Failed while the daemon was down or being replaced (expected).
    pub during_restart: u64,
    pub took: Vec<Duration>,
    pub monotonic: Monotonic,
}

/// GET /metrics on `addr` with `auth` every `every` until stopped; every
/// answered scrape goes through [`Monotonic::observe`].
pub fn run(
    ns: &str,
    addr: SocketAddr,
    auth: (&str, &str),
    every: Duration,
    live: &Live,
    run0: Instant,
) -> Stats {
    let mut st = Stats::default();
    while !live.stopped() {
        let next = Instant::now() + every;
        let e0 = live.epoch();
        let t = Instant::now();
        let res = http::get(ns, addr, "/metrics", Some(auth));
        let took = t.elapsed();
        let e1 = live.epoch();
        let same_daemon = e0 == e1 && e0 % 2 == 1;
        let label = format!("scrape at {:.1} s", run0.elapsed().as_secs_f64());
        match res {
            Ok((200, body)) if same_daemon => {
                st.ok += 1;
                st.took.push(took);
                st.monotonic
                    .observe(&http::parse_metrics(&body), e0.div_ceil(2), &label);
            }
            // A daemon answered, but which one is unclear: count, don't compare.
            Ok((200, _)) => st.ok += 1,
            _ if !same_daemon => st.during_restart += 1,
            other => {
                st.failed += 1;
                if st.failures.len() < SHOWN {
                    st.failures.push(match other {
                        Ok((code, body)) => format!(
                            "  {label}: HTTP {code}: {}",
                            body.chars().take(200).collect::<String>()
                        ),
                        Err(e) => format!("  {label}: {e:#}"),
                    });
                }
            }
        }
        if let Some(d) = next.checked_duration_since(Instant::now()) {
            thread::sleep(d);
        }
    }
    st
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pinned_counters_must_survive_restarts_and_own_ones_may_reset() {
        let scrape = |packets: f64, reloads: f64| {
            http::parse_metrics(&format!(
                "portcullis_packets_total{{interface=\"inet0\",zone=\"global\",reason=\"blocklist\",verdict=\"drop\"}} {packets}\n\
                 portcullis_reloads_total{{result=\"ok\"}} {reloads}\n\
                 portcullis_policy_generation 3\n"
            ))
        };
        let mut m = Monotonic::default();
        m.observe(&scrape(10.0, 5.0), 1, "1");
        m.observe(&scrape(12.0, 6.0), 1, "2");
        assert_eq!(m.regressions, 0);
        // A new daemon: its reload count starts again; the packets must not.
        m.observe(&scrape(13.0, 0.0), 2, "3");
        assert_eq!(m.regressions, 0, "{:?}", m.shown);
        m.observe(&scrape(11.0, 1.0), 2, "4");
        assert_eq!(m.regressions, 1, "{:?}", m.shown);
        m.observe(&scrape(11.0, 0.0), 2, "5");
        assert_eq!(m.regressions, 2, "{:?}", m.shown);
        // A pinned series that vanishes is a regression.
        m.observe(
            &http::parse_metrics("portcullis_policy_generation 3\n"),
            2,
            "6",
        );
        assert_eq!(m.regressions, 4, "{:?}", m.shown);
        assert!(m.shown.iter().any(|s| s.contains("vanished")));
    }
}
