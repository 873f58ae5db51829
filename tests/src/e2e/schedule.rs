//! Time-restricted zones against the real daemon and kernel: a window that
//! opens a few seconds from now and closes a few seconds later, with the
//! daemon `kill -9`ed before either boundary. The datapath reads the clock
//! itself, so the zone must open and close on time with nobody left to
//! write a map; the probes measure how late.

use std::{
    thread,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use anyhow::{ensure, Context, Result};
use nix::sys::signal::Signal;
use serde_json::Value;

use super::{
    netns, patience,
    probe::{self, Outcome, Probe},
    scenarios::Ctx,
    topology::*,
};

/// keep-api's port: open to everyone (no schedule), then with hours.
const PORT: u16 = 8880;

fn policy(schedule: &str) -> String {
    format!(
        "version = 1\n\n[[zone]]\nname = \"keep-api\"\nports = [\"{PORT}/tcp\"]\nallow = [\"any\"]\n{schedule}"
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `HH:MM:SS` (UTC) of Unix second `s`.
fn hms(s: u64) -> String {
    let d = s % 86_400;
    format!("{:02}:{:02}:{:02}", d / 3600, d / 60 % 60, d % 60)
}

/// Time between probe starts: probes overlap (a dropped one waits out its
/// timeout), so both boundaries are seen to about this resolution.
const PROBE_EVERY: Duration = Duration::from_millis(20);

/// (start, outcome) of probes started every `PROBE_EVERY` until `until`
/// (Unix seconds), each on a thread of its own in the source's namespace.
fn probe_until(cx: &Ctx, until: f64) -> Vec<(f64, Outcome)> {
    let p = Probe::tcp(INET4, PORT);
    let ns = cx.sb.topo.ns(p.from.side);
    thread::scope(|s| {
        let mut handles = Vec::new();
        while unix_now() < until {
            let p = &p;
            handles.push(s.spawn(move || {
                if let Err(e) = netns::enter(ns) {
                    return (unix_now(), Outcome::Error(format!("{e:#}")));
                }
                let at = unix_now();
                (at, probe::probe_here(p, probe::PROBE_TIMEOUT))
            }));
            thread::sleep(PROBE_EVERY);
        }
        let mut out: Vec<(f64, Outcome)> = handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or((0.0, Outcome::Error("probe thread panicked".into())))
            })
            .collect();
        out.sort_by(|a, b| a.0.total_cmp(&b.0));
        out
    })
}

/// The scheduled zone's entry in `portcullis status -o json` (from the pins).
fn zone_hours(cx: &Ctx) -> Result<Value> {
    let out = cx.sb.cli(&["status", "--output", "json"])?;
    let v: Value = serde_json::from_slice(&out.stdout).context("status JSON")?;
    v.get("schedules")
        .and_then(|s| s.get(0))
        .cloned()
        .with_context(|| format!("status shows no scheduled zone: {v}"))
}

/// Opens `lead` seconds from now for `open_s` seconds, daemon killed first.
pub(crate) fn kill9_boundaries(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("schedule.toml", &policy(""))?;
    let mut d = cx.start(&p, &[])?;
    // Compute the window only now: the daemon's start time does not count.
    let lead = patience(Duration::from_secs(2)).as_secs() + 1;
    let open_at = unix_now().ceil() as u64 + lead;
    let close_at = open_at + 3;
    let window = format!(
        "schedule = [{{ days = \"daily\", hours = \"{}-{}\" }}]\n",
        hms(open_at),
        hms(close_at)
    );
    super::daemon::Sandbox::write_atomic(&p, &policy(&window))?;
    let (ok, text) = cx.sb.reload()?;
    ensure!(ok, "reload into the scheduled policy failed: {text}");
    let reloaded = unix_now();
    ensure!(
        reloaded + 0.5 < open_at as f64,
        "the reload took until {:.2} s before the window opens; too slow a machine for this scenario",
        open_at as f64 - reloaded
    );
    d.signal(Signal::SIGKILL)?;
    d.kill9();
    let h = zone_hours(cx)?;
    ensure!(
        h["open"] == false && h["next_change"] == open_at,
        "status from the pins before the window: {h}"
    );
    let samples = probe_until(cx, close_at as f64 + 1.5);
    let tol = 0.1 * patience(Duration::from_secs(1)).as_secs_f64();
    let open = |o: &Outcome| *o == Outcome::Open;
    let blocked = |o: &Outcome| *o == Outcome::Timeout;
    let (o, c) = (open_at as f64, close_at as f64);
    let mut wrong = Vec::new();
    for (at, outcome) in &samples {
        let want_open = *at >= o + tol && *at < c - tol;
        let want_closed = *at < o - tol || *at >= c + tol;
        if (want_open && !open(outcome)) || (want_closed && !blocked(outcome)) {
            wrong.push(format!("{:+.3} s from opening: {outcome:?}", at - o));
        }
    }
    // Lateness: the first probe of the new state, from its boundary.
    let first = |from: f64, pred: &dyn Fn(&Outcome) -> bool| {
        samples
            .iter()
            .find(|(at, s)| *at >= from - tol && pred(s))
            .map(|(at, _)| at - from)
    };
    let opened = first(o, &open);
    let closed = first(c, &blocked);
    cx.note(format!(
        "{} probes; daemon killed {:.2} s before opening; first open probe {} after opening, \
         first blocked probe {} after closing (a probe started every {} ms)",
        samples.len(),
        o - reloaded,
        opened.map_or("none".into(), |l| format!("{:.0} ms", l * 1000.0)),
        closed.map_or("none".into(), |l| format!("{:.0} ms", l * 1000.0)),
        PROBE_EVERY.as_millis()
    ));
    ensure!(
        wrong.is_empty(),
        "probes against the schedule (window {}-{} UTC):\n{}",
        hms(open_at),
        hms(close_at),
        wrong.join("\n")
    );
    ensure!(
        opened.is_some() && closed.is_some(),
        "no probe saw a boundary"
    );
    cx.sb.detach()?;
    Ok(())
}
