//! Sampled drop events against the real daemon: drops from the internet
//! namespace appear in `portcullis events -o json` with their addresses,
//! ports, reason, zone and interface (and the filters select them); a flood
//! yields at most what the token bucket allows and at least one; sampling
//! off yields none (the bucket is not even consulted); the runtime switch
//! needs no reload and survives a restart; packet logging writes lines with
//! addresses and names; `top` ranks the flooding source first.
use std::{
    io::{BufRead, BufReader},
    net::{IpAddr, SocketAddr, UdpSocket},
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::{
    cmd,
    daemon::Sandbox,
    netns, policies,
    scenarios::Ctx,
    topology::{host_addr, Source, BLOCKED4, HOST_INET_IF, INET4, INET6, LISTED4},
};

/// 7008/udp is udp-admin's, open to mgmt only: internet sources are dropped
/// as `not_allowed`.
const ZONE_PORT: u16 = 7008;
const ZONE: &str = "udp-admin";

fn policy_with_events(events: &str) -> String {
    format!("{}\n[events]\n{events}\n", policies::policy_a())
}

/// `portcullis events` (or `top`) running in the host namespace.
struct Stream {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    err: Arc<Mutex<Vec<String>>>,
    readers: Vec<thread::JoinHandle<()>>,
}

fn collect(
    stream: impl std::io::Read + Send + 'static,
    into: Arc<Mutex<Vec<String>>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            let mut l = into.lock().unwrap_or_else(|e| e.into_inner());
            if l.len() < 1_000_000 {
                l.push(line);
            }
        }
    })
}

impl Stream {
    /// Starts `portcullis ARGS --control-socket …` and waits until it has
    /// subscribed (its first stderr line says what is sampled).
    fn start(sb: &Sandbox, args: &[&str]) -> Result<Stream> {
        let control = sb.control.display().to_string();
        let mut all = args.to_vec();
        all.extend(["--control-socket", &control]);
        let mut c = sb.portcullis(&all);
        c.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().with_context(|| format!("starting {all:?}"))?;
        let out = Arc::new(Mutex::new(Vec::new()));
        let err = Arc::new(Mutex::new(Vec::new()));
        let readers = vec![
            collect(child.stdout.take().context("stdout")?, out.clone()),
            collect(child.stderr.take().context("stderr")?, err.clone()),
        ];
        let s = Stream {
            child,
            out,
            err,
            readers,
        };
        let limit = super::patience(Duration::from_secs(10));
        let started = Instant::now();
        while s.stderr().iter().all(|l| !l.starts_with("portcullis:")) {
            if started.elapsed() > limit {
                bail!(
                    "{all:?} did not subscribe within {limit:?}: {:?}",
                    s.stderr()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(s)
    }

    fn stderr(&self) -> Vec<String> {
        self.err.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits for the exit (its --count/--timeout end it); stdout lines.
    fn finish(mut self, limit: Duration) -> Result<(Vec<String>, Vec<String>)> {
        let st = cmd::wait_bounded(&mut self.child, super::patience(limit));
        if st.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let out = self.out.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let err = self.stderr();
        match st {
            Some(s) if s.success() => Ok((out, err)),
            Some(s) => bail!("the stream exited {s}: {err:?}"),
            None => bail!("the stream did not end within {limit:?}: {err:?}"),
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn records(lines: &[String]) -> Result<Vec<Value>> {
    lines
        .iter()
        .map(|l| serde_json::from_str(l).with_context(|| format!("not JSON: {l}")))
        .collect()
}

/// Sends `n` UDP datagrams from `from`:`sport` to the host's `port`, paced
/// `gap` apart, inside the source's namespace; returns how long it took.
fn send_udp(
    sb: &Sandbox,
    from: &Source,
    sport: u16,
    port: u16,
    n: usize,
    gap: Duration,
) -> Result<Duration> {
    let to = SocketAddr::new(host_addr(from), port);
    let src = SocketAddr::new(from.addr, sport);
    let ns = sb.topo.ns(from.side).to_string();
    netns::run_in(&ns, move || -> Result<Duration> {
        let s = UdpSocket::bind(src).with_context(|| format!("binding {src}"))?;
        let started = Instant::now();
        for i in 0..n {
            // A full socket buffer is no failure here: the flood is the point.
            let _ = s.send_to(&(i as u64).to_be_bytes(), to);
            if !gap.is_zero() {
                thread::sleep(gap);
            }
        }
        Ok(started.elapsed())
    })?
}

/// `sampling -o json [ARGS]` under the sandbox's pin root.
fn sampling(sb: &Sandbox, args: &[&str]) -> Result<Value> {
    sampling_of(sb, &sb.bin, args)
}

/// As [`sampling`], with another build's binary (an earlier release).
pub(crate) fn sampling_of(sb: &Sandbox, bin: &std::path::Path, args: &[&str]) -> Result<Value> {
    let root = sb.pin_root.display().to_string();
    let control = sb.control.display().to_string();
    let mut all = vec!["sampling", "-o", "json", "--pin-root", &root];
    all.extend_from_slice(args);
    if args.contains(&"--reset") {
        all.extend(["--control-socket", &control]);
    }
    let out = cmd::run(
        &mut sb.portcullis_of(bin, &all),
        super::patience(cmd::CMD_TIMEOUT),
    )?;
    ensure!(
        out.status.success(),
        "{all:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| format!("{all:?}: stdout is not JSON"))
}

fn stat(v: &Value, key: &str) -> u64 {
    v["stats"][key].as_u64().unwrap_or(u64::MAX)
}

/// CPUs with a token bucket of their own.
fn cpus() -> Result<u64> {
    let n = aya::util::nr_cpus().map_err(|(what, e)| anyhow::anyhow!("{what}: {e}"))?;
    Ok(n as u64)
}

fn s(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or("?").to_string()
}

pub fn drops_show_up_named(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy(
        "events.toml",
        &policy_with_events("sample = \"drops\"\nrate = 1000\nburst = 1000"),
    )?;
    let _d = cx.start(&p, &[])?;
    let all = Stream::start(
        cx.sb,
        &["events", "-o", "json", "--count", "3", "--timeout", "20s"],
    )?;
    let blocklisted = Stream::start(
        cx.sb,
        &[
            "events",
            "-o",
            "json",
            "--reason",
            "blocklist",
            "--count",
            "1",
            "--timeout",
            "20s",
        ],
    )?;
    let zoned = Stream::start(
        cx.sb,
        &[
            "events",
            "-o",
            "json",
            "--zone",
            ZONE,
            "--count",
            "2",
            "--timeout",
            "20s",
        ],
    )?;
    let cases: [(Source, u16, u16, &str, &str, &str); 3] = [
        (INET4, 40701, ZONE_PORT, "not_allowed", ZONE, "ipv4"),
        (BLOCKED4, 40702, 7007, "blocklist", "global", "ipv4"),
        (INET6, 40703, ZONE_PORT, "not_allowed", ZONE, "ipv6"),
    ];
    for (from, sport, port, ..) in &cases {
        send_udp(cx.sb, from, *sport, *port, 1, Duration::ZERO)?;
        // One at a time: the stream's order is the packets' order.
        thread::sleep(Duration::from_millis(50));
    }
    let (out, _) = all.finish(Duration::from_secs(25))?;
    let got = records(&out)?;
    ensure!(got.len() == 3, "3 drops, {} events: {out:?}", got.len());
    for ((from, sport, port, reason, zone, family), e) in cases.iter().zip(&got) {
        let want = (
            from.addr.to_string(),
            host_addr(from).to_string(),
            "udp".to_string(),
            *sport as u64,
            *port as u64,
            reason.to_string(),
            zone.to_string(),
            HOST_INET_IF.to_string(),
            "drop".to_string(),
            family.to_string(),
        );
        let seen = (
            s(e, "src"),
            s(e, "dst"),
            s(e, "proto"),
            e["sport"].as_u64().unwrap_or(0),
            e["dport"].as_u64().unwrap_or(0),
            s(e, "reason"),
            s(e, "zone"),
            s(e, "iface"),
            s(e, "verdict"),
            s(e, "family"),
        );
        ensure!(seen == want, "event {e}\n  want {want:?}");
        ensure!(
            e["time"].as_str().is_some_and(|t| t.ends_with('Z')) && e["len"].as_u64() > Some(40),
            "event time/len: {e}"
        );
    }
    let (out, _) = blocklisted.finish(Duration::from_secs(25))?;
    let got = records(&out)?;
    ensure!(
        got.len() == 1 && s(&got[0], "src") == BLOCKED4.addr.to_string(),
        "--reason blocklist: {out:?}"
    );
    let (out, _) = zoned.finish(Duration::from_secs(25))?;
    let got = records(&out)?;
    let srcs: Vec<String> = got.iter().map(|e| s(e, "src")).collect();
    ensure!(
        srcs == [INET4.addr.to_string(), INET6.addr.to_string()],
        "--zone {ZONE}: {out:?}"
    );
    cx.note(format!("event: {}", out[0]));
    Ok(())
}

pub fn flood_is_bounded_by_the_token_bucket(cx: &mut Ctx) -> Result<()> {
    let (rate, burst) = (5u64, 10u64);
    let p = cx.policy(
        "events-flood.toml",
        &policy_with_events(&format!(
            "sample = \"drops\"\nrate = {rate}\nburst = {burst}"
        )),
    )?;
    let _d = cx.start(&p, &[])?;
    let before = sampling(cx.sb, &[])?;
    let stream = Stream::start(cx.sb, &["events", "-o", "json", "--timeout", "4s"])?;
    let n = 3000usize;
    let took = send_udp(
        cx.sb,
        &INET4,
        40710,
        ZONE_PORT,
        n,
        Duration::from_micros(300),
    )?;
    let (out, _) = stream.finish(Duration::from_secs(10))?;
    let got = records(&out)?
        .iter()
        .filter(|e| e["sport"].as_u64() == Some(40710))
        .count() as u64;
    let cpus = cpus()?;
    // Each CPU's bucket starts full and refills at `rate` while the flood
    // lasts (plus 0.25 s for packets still in flight).
    let bound = cpus * (rate * (took.as_millis() as u64 + 250) / 1000 + burst);
    ensure!(
        (1..=bound).contains(&got),
        "{n} drops in {took:?}: {got} events, want 1..={bound} ({cpus} CPUs × ({rate}/s × t + {burst}))"
    );
    let after = sampling(cx.sb, &[])?;
    let emitted = stat(&after, "emitted") - stat(&before, "emitted");
    let suppressed = stat(&after, "suppressed") - stat(&before, "suppressed");
    ensure!(
        emitted + suppressed >= n as u64
            && suppressed >= n as u64 - bound
            && stat(&after, "lost") == 0,
        "counters: emitted {emitted}, suppressed {suppressed}, lost {} for {n} drops",
        stat(&after, "lost")
    );
    let metrics = cx.sb.metrics()?;
    let m = |result: &str| {
        metrics
            .iter()
            .find(|s| {
                s.name == "portcullis_events_total"
                    && s.labels.get("result").map(String::as_str) == Some(result)
            })
            .map(|s| s.value)
    };
    ensure!(
        m("suppressed").is_some_and(|v| v >= suppressed as f64) && m("emitted").is_some(),
        "metrics: emitted {:?}, suppressed {:?}",
        m("emitted"),
        m("suppressed")
    );
    cx.note(format!(
        "{n} drops in {} ms: {got} events (bound {bound}), {suppressed} suppressed",
        took.as_millis()
    ));
    Ok(())
}

pub fn off_yields_no_events(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("events-off.toml", &policies::policy_a())?;
    let _d = cx.start(&p, &[])?;
    let stream = Stream::start(cx.sb, &["events", "-o", "json", "--timeout", "3s"])?;
    send_udp(
        cx.sb,
        &INET4,
        40720,
        ZONE_PORT,
        500,
        Duration::from_micros(200),
    )?;
    let (out, err) = stream.finish(Duration::from_secs(10))?;
    ensure!(out.is_empty(), "sampling off, yet events: {out:?}");
    ensure!(
        err.iter().any(|l| l.contains("sampling is off")),
        "no hint that sampling is off: {err:?}"
    );
    let v = sampling(cx.sb, &[])?;
    ensure!(
        v["sampling"]["sample"] == "off" && stat(&v, "emitted") == 0 && stat(&v, "suppressed") == 0,
        "off must not even consult the bucket: {v}"
    );
    Ok(())
}

fn generation(sb: &Sandbox) -> Result<u64> {
    Ok(sb.status()?.generation)
}

/// Events of one probe from INET4:`sport`, within `limit`.
fn probe_events(sb: &Sandbox, sport: u16, packets: usize) -> Result<usize> {
    let stream = Stream::start(sb, &["events", "-o", "json", "--timeout", "2s"])?;
    send_udp(
        sb,
        &INET4,
        sport,
        ZONE_PORT,
        packets,
        Duration::from_millis(5),
    )?;
    let (out, _) = stream.finish(Duration::from_secs(8))?;
    Ok(records(&out)?
        .iter()
        .filter(|e| e["sport"].as_u64() == Some(sport as u64))
        .count())
}

pub fn runtime_switch_survives_restart(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("events-switch.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    ensure!(probe_events(cx.sb, 40730, 5)? == 0, "events while off");
    let gen = generation(cx.sb)?;
    let v = sampling(cx.sb, &["drops", "--rate", "100", "--burst", "100"])?;
    ensure!(
        v["sampling"]["sample"] == "drops" && v["sampling"]["runtime"] == true,
        "sampling drops: {v}"
    );
    ensure!(
        probe_events(cx.sb, 40731, 5)? == 5,
        "switched on: not 5 events"
    );
    ensure!(
        generation(cx.sb)? == gen,
        "switching sampling reloaded the policy"
    );

    // A restart keeps the runtime setting over the policy's (off).
    d.terminate()?;
    let mut d = cx.start(&p, &[])?;
    ensure!(
        d.log().iter().any(|l| l.contains("set at run time")),
        "the daemon did not say it keeps the runtime setting:\n{}",
        d.log_tail(30)
    );
    ensure!(
        probe_events(cx.sb, 40732, 5)? == 5,
        "after restart: not 5 events"
    );

    // Packet logging: lines with addresses and names, switched at run time.
    let out = cx.sb.cli(&[
        "log-packets",
        "on",
        "--pin-root",
        &cx.sb.pin_root.display().to_string(),
    ])?;
    ensure!(
        out.status.success(),
        "log-packets on: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    send_udp(cx.sb, &INET4, 40733, ZONE_PORT, 1, Duration::ZERO)?;
    let want = format!(
        "{HOST_INET_IF} drop not_allowed zone {ZONE} {}:40733 -> {}:{ZONE_PORT}/udp",
        INET4.addr,
        host_addr(&INET4)
    );
    let started = Instant::now();
    while !d.log().iter().any(|l| l.contains(&want)) {
        if started.elapsed() > super::patience(Duration::from_secs(5)) {
            bail!("no packet log line {want:?}:\n{}", d.log_tail(20));
        }
        thread::sleep(Duration::from_millis(50));
    }
    let line = d
        .log()
        .into_iter()
        .find(|l| l.contains(&want))
        .unwrap_or_default();
    cx.note(format!("packet log: {line}"));
    let v = sampling(cx.sb, &["off"])?;
    ensure!(v["sampling"]["sample"] == "off", "sampling off: {v}");
    ensure!(
        probe_events(cx.sb, 40734, 5)? == 0,
        "events after sampling off"
    );

    // --reset: back to the policy's [events] (off, not a runtime setting).
    let v = sampling(cx.sb, &["--reset"])?;
    ensure!(
        v["sampling"]["runtime"] == false && v["sampling"]["log"] == false,
        "--reset: {v}"
    );
    // The deprecated --log-packets switches logging on at start.
    d.terminate()?;
    let d = cx.start(&p, &["--log-packets"])?;
    ensure!(
        d.log()
            .iter()
            .any(|l| l.contains("--log-packets is deprecated")),
        "no deprecation note:\n{}",
        d.log_tail(30)
    );
    let v = sampling(cx.sb, &[])?;
    ensure!(
        v["sampling"]["log"] == true && v["sampling"]["sample"] == "all",
        "--log-packets: {v}"
    );
    Ok(())
}

pub fn top_puts_the_flooder_first(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy(
        "events-top.toml",
        &policy_with_events("sample = \"drops\"\nrate = 100000\nburst = 100000"),
    )?;
    let _d = cx.start(&p, &[])?;
    let top = Stream::start(cx.sb, &["top", "--window", "4s", "-o", "json"])?;
    send_udp(cx.sb, &BLOCKED4, 40741, 7007, 40, Duration::from_millis(2))?;
    send_udp(
        cx.sb,
        &LISTED4,
        40742,
        ZONE_PORT,
        20,
        Duration::from_millis(2),
    )?;
    send_udp(
        cx.sb,
        &INET4,
        40740,
        ZONE_PORT,
        1000,
        Duration::from_micros(300),
    )?;
    let (out, _) = top.finish(Duration::from_secs(10))?;
    let doc: Value = serde_json::from_str(&out.join("\n")).context("top -o json")?;
    let sources = doc["sources"].as_array().cloned().unwrap_or_default();
    let first = sources.first().map(|r| s(r, "src"));
    ensure!(
        first.as_deref() == Some(INET4.addr.to_string().as_str())
            && sources.len() >= 3
            && sources[0]["events"].as_u64() > sources[1]["events"].as_u64(),
        "top sources: {}",
        doc["sources"]
    );
    ensure!(
        s(&doc["zones"][0], "zone") == ZONE && s(&sources[0], "reason") == "not_allowed",
        "top zones: {}",
        doc["zones"]
    );
    let addr: IpAddr = BLOCKED4.addr;
    ensure!(
        sources
            .iter()
            .any(|r| s(r, "src") == addr.to_string() && s(r, "zone") == "global"),
        "the blocklisted source is not listed: {}",
        doc["sources"]
    );
    cx.note(format!("top: {}", doc["sources"][0]));
    Ok(())
}
