//! Rate limits on the wire: UDP to the host's echo port (7007) from the
//! internet namespace. What was admitted is read from the daemon's counters
//! (`allowed` / `rate_limited` of the zone on `inet0`), what reached the
//! polite or steady client from its echoes.
//!
//! Tolerances: a probe sending faster than the limit for `T` seconds must be
//! admitted `burst + rate × T` packets within ±20 % (+5 packets): the clock
//! runs from the first to the last datagram sent, while admissions follow the
//! arrival times, which veth and the scheduler shift by milliseconds. The
//! flood bound is exact (`ceiling × window + ceiling burst`) with the window
//! from before the first datagram to after the last counter read.
use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{
    netns,
    probe::{udp_echo, Outcome},
    scenarios::Ctx,
    topology::{host_addr, Source, HOST_INET_IF, INET4, VPN4},
};

const PORT: u16 = 7007;
const ZONE: &str = "limited";

fn policy(rate: &str) -> String {
    format!(
        r#"version = 1

[[zone]]
name  = "{ZONE}"
ports = ["{PORT}/udp"]
allow = ["any"]
rate  = {rate}
"#
    )
}

/// Sends datagrams from `from` every `gap` for `dur`; returns (sent, the
/// time from the first to the last).
fn paced(ns: &str, from: &Source, gap: Duration, dur: Duration) -> Result<(u64, Duration)> {
    let to = SocketAddr::new(host_addr(from), PORT);
    let src = SocketAddr::new(from.addr, 0);
    netns::run_in(ns, move || -> Result<(u64, Duration)> {
        let s = UdpSocket::bind(src).with_context(|| format!("binding {src}"))?;
        let started = Instant::now();
        let mut sent = 0u64;
        while started.elapsed() < dur {
            if s.send_to(&sent.to_be_bytes(), to).is_ok() {
                sent += 1;
            }
            thread::sleep(gap);
        }
        Ok((sent, started.elapsed()))
    })?
}

/// Echo probes from `from` every `gap` for `dur`: (sent, answered).
fn polite(ns: &str, from: &Source, gap: Duration, dur: Duration) -> Result<(u64, u64)> {
    let to = SocketAddr::new(host_addr(from), PORT);
    let src = from.addr;
    netns::run_in(ns, move || {
        let started = Instant::now();
        let (mut sent, mut ok) = (0, 0);
        while started.elapsed() < dur {
            sent += 1;
            if udp_echo(src, to, Duration::from_millis(500)) == Outcome::Open {
                ok += 1;
            }
            thread::sleep(gap);
        }
        (sent, ok)
    })
}

fn counts(cx: &Ctx) -> Result<(u64, u64)> {
    let s = cx.sb.status()?;
    Ok((
        s.packets(HOST_INET_IF, ZONE, "allowed", "pass"),
        s.packets(HOST_INET_IF, ZONE, "rate_limited", "drop"),
    ))
}

/// A probe at ~1000/s against 100/s (burst 20) per source for 2 s is
/// admitted ≈ 20 + 100 × 2 packets, while a second source at 5/s from the
/// same namespace gets every echo.
pub fn probe_sees_the_limit_polite_source_unaffected(cx: &mut Ctx) -> Result<()> {
    const RATE: f64 = 100.0;
    const BURST: f64 = 20.0;
    let ns = cx.sb.topo.ns(INET4.side).to_string();
    let p = cx.policy(
        "rate-probe.toml",
        &policy("{ packets = \"100/s\", burst = 20 }"),
    )?;
    let mut d = cx.start(&p, &[])?;
    let (a0, l0) = counts(cx)?;
    let ns2 = ns.clone();
    let politely = thread::spawn(move || {
        polite(
            &ns2,
            &VPN4,
            Duration::from_millis(200),
            Duration::from_secs(2),
        )
    });
    let (sent, took) = paced(
        &ns,
        &INET4,
        Duration::from_micros(1000),
        Duration::from_secs(2),
    )?;
    let (psent, pok) = politely
        .join()
        .map_err(|_| anyhow::anyhow!("the polite prober panicked"))??;
    thread::sleep(Duration::from_millis(200));
    let (a1, l1) = counts(cx)?;
    let admitted = (a1 - a0).saturating_sub(pok);
    let expected = BURST + RATE * took.as_secs_f64();
    cx.note(format!(
        "probe: {sent} datagrams in {:.2} s, {admitted} admitted (expected {expected:.0} ± 20 % + 5), \
         {} rate_limited; polite source {pok}/{psent} echoes",
        took.as_secs_f64(),
        l1 - l0
    ));
    ensure!(
        sent as f64 > 2.0 * expected,
        "the probe sent only {sent} datagrams: not faster than the limit"
    );
    let (lo, hi) = (expected * 0.8 - 5.0, expected * 1.2 + 5.0);
    ensure!(
        (admitted as f64) >= lo && (admitted as f64) <= hi,
        "{admitted} admitted, expected {expected:.0} (between {lo:.0} and {hi:.0})"
    );
    ensure!(
        pok == psent && psent > 0,
        "the polite source got {pok} of {psent} echoes"
    );
    d.terminate()?;
    Ok(())
}

/// An IPv4 + UDP datagram from `src` to `dst`:`PORT` (UDP checksum 0 =
/// none; the kernel fills in the IP checksum and length).
fn datagram(src: Ipv4Addr, dst: Ipv4Addr, sport: u16) -> [u8; 36] {
    let mut b = [0u8; 36];
    b[0] = 0x45;
    b[2..4].copy_from_slice(&36u16.to_be_bytes());
    b[6] = 0x40; // DF
    b[8] = 64;
    b[9] = 17;
    b[12..16].copy_from_slice(&src.octets());
    b[16..20].copy_from_slice(&dst.octets());
    b[20..22].copy_from_slice(&sport.to_be_bytes());
    b[22..24].copy_from_slice(&PORT.to_be_bytes());
    b[24..26].copy_from_slice(&16u16.to_be_bytes());
    b
}

/// Spoofed datagrams from random sources in 100.64.0.0/10 for `dur` (at
/// most `max`), from a raw socket in namespace `ns`.
fn spoofed_flood(ns: &str, dst: Ipv4Addr, dur: Duration, max: u64) -> Result<u64> {
    netns::run_in(ns, move || -> Result<u64> {
        // IPPROTO_RAW: we write the IP header (IP_HDRINCL is implied).
        let s = Socket::new(
            Domain::IPV4,
            Type::from(libc::SOCK_RAW),
            Some(Protocol::from(libc::IPPROTO_RAW)),
        )
        .context("raw IPv4 socket")?;
        let to = SockAddr::from(SocketAddrV4::new(dst, 0));
        let started = Instant::now();
        let mut sent = 0;
        while sent < max && started.elapsed() < dur {
            let r: u32 = rand::random();
            let src = Ipv4Addr::from(0x6440_0000 | (r & 0x003f_ffff));
            if s.send_to(&datagram(src, dst, (r >> 16) as u16 | 1024), &to)
                .is_ok()
            {
                sent += 1;
            }
        }
        Ok(sent)
    })?
}

/// A spoofed flood from random sources against a per-source limit (20/s,
/// ceiling 200/s) leaves a steady client, tracked before the flood, with
/// every echo, and the zone admits the flood at most at its ceiling.
pub fn spoofed_flood_keeps_steady_client_and_ceiling(cx: &mut Ctx) -> Result<()> {
    const CEILING: f64 = 200.0;
    const CEILING_BURST: f64 = 200.0;
    let ns = cx.sb.topo.ns(INET4.side).to_string();
    let dst = match host_addr(&INET4) {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => bail!("INET4's host address is IPv6"),
    };
    let p = cx.policy(
        "rate-flood.toml",
        &policy(
            "{ packets = \"20/s\", burst = 20, ceiling = \"200/s\", new_sources = \"50/s\", \
             tracked = 256 }",
        ),
    )?;
    let mut d = cx.start(&p, &[])?;
    // The steady client becomes tracked before the flood.
    let (_, warm) = polite(
        &ns,
        &INET4,
        Duration::from_millis(100),
        Duration::from_millis(500),
    )?;
    ensure!(warm > 0, "the steady client got no echo before the flood");
    let (a0, l0) = counts(cx)?;
    let window = Instant::now();
    let ns2 = ns.clone();
    let steady = thread::spawn(move || {
        polite(
            &ns2,
            &INET4,
            Duration::from_millis(100),
            Duration::from_secs(3),
        )
    });
    let sent = spoofed_flood(&ns, dst, Duration::from_secs(3), 2_000_000)?;
    let (ssent, sok) = steady
        .join()
        .map_err(|_| anyhow::anyhow!("the steady client panicked"))??;
    thread::sleep(Duration::from_millis(200));
    let (a1, l1) = counts(cx)?;
    let t = window.elapsed().as_secs_f64();
    let flood_admitted = (a1 - a0).saturating_sub(ssent);
    let bound = CEILING * t + CEILING_BURST;
    cx.note(format!(
        "spoofed flood: {sent} datagrams from random sources; zone admitted {flood_admitted} of \
         them in {t:.2} s (ceiling bound {bound:.0}), {} rate_limited; steady client {sok}/{ssent} \
         echoes",
        l1 - l0
    ));
    ensure!(sent > 10_000, "only {sent} spoofed datagrams were sent");
    ensure!(
        (flood_admitted as f64) <= bound,
        "the zone admitted {flood_admitted} flood datagrams, over its ceiling ({bound:.0})"
    );
    ensure!(l1 - l0 > 0, "nothing was rate_limited");
    ensure!(
        sok == ssent && ssent > 0,
        "the steady client got {sok} of {ssent} echoes during the flood"
    );
    d.terminate()?;
    Ok(())
}
