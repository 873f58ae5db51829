//! Continuity across daemon restarts, kill -9 and upgrades: probes run the
//! whole time; forbidden ones must never reach the host and allowed ones
//! must keep getting through.
use std::{
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;

use super::{
    policies,
    probe::{Outcome, Probe, ProbeLoop, Sample},
    scenarios::{check, ms, rows_a, rows_b, t, u, usable, Ctx},
    topology::*,
};

/// One sample as a line of a failure message.
fn line(s: &Sample) -> String {
    format!("  at {}: {}: {}", ms(s.at), s.probe, s.outcome)
}

/// The first ten samples as failure-message lines.
pub(crate) fn listed<'a>(samples: impl Iterator<Item = &'a Sample>) -> String {
    samples.take(10).map(line).collect::<Vec<_>>().join("\n")
}

/// Samples of `probes` that reached the host (what a forbidden probe must never do).
pub(crate) fn reached<'a>(
    samples: &'a [Sample],
    probes: &[Probe],
    before: Option<Duration>,
) -> Vec<&'a Sample> {
    samples
        .iter()
        .filter(|s| {
            probes.contains(&s.probe) && s.outcome.reached() && before.is_none_or(|b| s.at < b)
        })
        .collect()
}

/// For allowed probes: how many were not open (timeouts are tolerated across a
/// restart and reported; anything else fails), and the longest time between
/// two consecutive open results of one probe.
pub(crate) fn gaps(samples: &[Sample], probes: &[Probe]) -> (usize, usize, Duration, Vec<String>) {
    let (mut timeouts, mut other) = (0, 0);
    let mut longest = Duration::ZERO;
    let mut where_ = Vec::new();
    for p in probes {
        let mut last_open: Option<Duration> = None;
        for s in samples.iter().filter(|s| s.probe == *p) {
            if s.outcome == Outcome::Open {
                if let Some(l) = last_open {
                    longest = longest.max(s.at - l);
                }
                last_open = Some(s.at);
            } else {
                if s.outcome == Outcome::Timeout {
                    timeouts += 1;
                } else {
                    other += 1;
                }
                if where_.len() < 10 {
                    where_.push(line(s));
                }
            }
        }
    }
    (timeouts, other, longest, where_)
}

pub(crate) fn forbidden_a() -> Vec<Probe> {
    vec![
        t(INET4, 8889),
        t(INET6, 8890),
        t(BLOCKED4, 8880),
        t(BLOCKED6, 8880),
        u(INET4, 7008),
        t(VLAN_OUT4, 8889),
    ]
}
pub(crate) fn allowed_a() -> Vec<Probe> {
    vec![
        t(INET4, 8880),
        t(MGMT4, 8889),
        t(MGMT6, 8890),
        t(VPN4, 22),
        u(MGMT4, 7008),
        t(VLAN4, 8889),
    ]
}

pub(crate) fn kill9(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("kill.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    let gen = cx.sb.status()?.generation;
    let (forbidden, allowed) = (forbidden_a(), allowed_a());
    let all = usable(cx.sb, forbidden.iter().chain(&allowed).copied().collect());
    let started = Instant::now();
    let lp = ProbeLoop::start(&cx.sb.topo, &all, Duration::from_millis(5));
    thread::sleep(Duration::from_millis(700));
    let t_kill = started.elapsed();
    d.signal(Signal::SIGKILL)?;
    d.kill9();
    thread::sleep(Duration::from_millis(1000));
    let st = cx
        .sb
        .status()
        .context("status from the pins with the daemon dead")?;
    let t_restart = started.elapsed();
    let d2 = cx.start(&p, &[]);
    let t_ready = started.elapsed();
    thread::sleep(Duration::from_millis(700));
    let samples = lp.finish();
    let mut d2 = d2?;
    ensure!(
        !st.daemon_running,
        "status says the daemon runs after kill -9"
    );
    ensure!(
        st.generation == gen,
        "status generation {} after kill -9, was {gen}",
        st.generation
    );
    let leaks = reached(&samples, &forbidden, None);
    let (timeouts, fails, longest, where_) = gaps(&samples, &allowed);
    cx.note(format!(
        "{} samples; kill -9 at {}, restart at {}, ready at {}; forbidden reached: {}; allowed timed out: {timeouts}, failed otherwise: {} (longest gap between opens {})",
        samples.len(),
        ms(t_kill),
        ms(t_restart),
        ms(t_ready),
        leaks.len(),
        fails,
        ms(longest)
    ));
    ensure!(
        leaks.is_empty(),
        "forbidden probes got through:\n{}",
        listed(leaks.iter().copied())
    );
    ensure!(
        fails == 0,
        "allowed probes failed (not a timeout) across kill -9 and restart:\n{}",
        where_.join("\n")
    );
    check(cx.sb, &rows_a()).context("after the restart")?;
    d2.terminate()?;
    Ok(())
}

pub(crate) fn restart_adopts(cx: &mut Ctx) -> Result<()> {
    let pa = cx.policy("restart-a.toml", &policies::policy_a())?;
    let pb = cx.policy("restart-b.toml", &policies::policy_b())?;
    let mut d = cx.start(&pa, &[])?;
    let gen0 = cx.sb.status()?.generation;
    let forbidden_both = vec![t(BLOCKED4, 8880), t(BLOCKED6, 8889), t(BLOCKED4, 8889)];
    let (forbidden, allowed) = (forbidden_a(), allowed_a());
    let allowed_both = vec![t(MGMT4, 8889), t(MGMT4, 8880), t(MGMT6, 8890), t(VPN4, 22)];
    let all = usable(
        cx.sb,
        forbidden
            .iter()
            .chain(&allowed)
            .chain(&forbidden_both)
            .copied()
            .collect(),
    );
    let started = Instant::now();
    let lp = ProbeLoop::start(&cx.sb.topo, &all, Duration::from_millis(5));
    thread::sleep(Duration::from_millis(700));

    // 1. Same policy: SIGTERM, start again over the pins.
    let t_stop = started.elapsed();
    let st = d.terminate();
    let t_stopped = started.elapsed();
    let d2 = cx.start(&pa, &[]);
    let t_ready = started.elapsed();
    thread::sleep(Duration::from_millis(700));
    // 2. Into policy B.
    let t_switch = started.elapsed();
    let mut d2 = match d2 {
        Ok(d2) => d2,
        Err(e) => {
            drop(lp);
            return Err(e.context("restart over existing pins"));
        }
    };
    let st2 = d2.terminate();
    let d3 = cx.start(&pb, &[]);
    let t_ready_b = started.elapsed();
    thread::sleep(Duration::from_millis(500));
    let samples = lp.finish();
    st?;
    st2?;
    let mut d3 = d3?;

    let phase1: Vec<Sample> = samples
        .iter()
        .filter(|s| s.at < t_switch)
        .cloned()
        .collect();
    let leaks = reached(&phase1, &forbidden, None);
    let leaks_both = reached(&samples, &forbidden_both, None);
    let (timeouts, fails, longest, where_) = gaps(&phase1, &allowed);
    let (timeouts_b, fails_b, longest_b, where_b) = gaps(&samples, &allowed_both);
    cx.note(format!(
        "restart A→A: SIGTERM at {}, exited at {}, new daemon ready at {}; allowed probes timed out: {timeouts}, failed otherwise: {fails}; longest gap between opens {}",
        ms(t_stop),
        ms(t_stopped),
        ms(t_ready),
        ms(longest)
    ));
    cx.note(format!(
        "restart A→B: at {}, ready at {}; allowed-by-both timed out: {timeouts_b}, failed otherwise: {fails_b}; longest gap {}",
        ms(t_switch),
        ms(t_ready_b),
        ms(longest_b)
    ));
    ensure!(
        leaks.is_empty() && leaks_both.is_empty(),
        "forbidden probes got through across the restart:\n{}",
        listed(leaks.iter().chain(&leaks_both).copied())
    );
    ensure!(
        fails == 0 && fails_b == 0,
        "allowed probes failed (not a timeout) across the restart:\n{}\n{}",
        where_.join("\n"),
        where_b.join("\n")
    );
    check(cx.sb, &rows_b()).context("after restarting into B")?;
    let gen = cx.sb.status()?.generation;
    ensure!(
        gen > gen0,
        "generation {gen} after restarting into B, was {gen0}"
    );
    d3.terminate()?;
    Ok(())
}
