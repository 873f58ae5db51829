//! Transfer quotas on the wire: real TCP downloads from a server in the
//! host's namespace to clients in the internet namespace, under a per-source
//! download quota of one UTC minute. The egress program counts what the host
//! sends; once a client is over, the XDP program drops its packets, so the
//! running download stalls (its ACKs are dropped) and a new connection is
//! refused; another client is unaffected; a reload and a restart keep the
//! usage; the next minute serves the client again.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::{
    netns,
    scenarios::Ctx,
    topology::{host_addr, Source, INET4, VPN4},
};

const PORT: u16 = 7070;
const ZONE: &str = "downloads";
/// The quota, and downloads well under and far over it.
const QUOTA: u64 = 1_000_000;
const SMALL: u64 = 400_000;
const LARGE: u64 = 40_000_000;

fn policy(extra_zone_first: bool) -> String {
    let extra = if extra_zone_first {
        // A zone before it renumbers nothing that counts: usage is keyed by
        // the zone's name.
        "[[zone]]\nname  = \"other\"\nports = [\"7071/tcp\"]\nallow = [\"any\"]\n\n"
    } else {
        ""
    };
    format!(
        r#"version = 1

{extra}[[zone]]
name  = "{ZONE}"
ports = ["{PORT}/tcp"]
allow = ["any"]
quota = {{ bytes = "1 MB", period = "minute", direction = "download" }}
"#
    )
}

/// A server that answers each connection's decimal byte count (one line)
/// with that many bytes, until dropped.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Server {
    fn start(ns: &str) -> Result<Server> {
        let l = netns::run_in(ns, || TcpListener::bind(("::", PORT)))?
            .with_context(|| format!("binding port {PORT} in {ns}"))?;
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = thread::spawn(move || {
            // Bounded: the scenario drops the server within minutes.
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        thread::spawn(move || serve(c));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Ok(Server {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve(mut c: TcpStream) {
    let _ = c.set_nonblocking(false);
    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
    // A stalled client must not hold the thread: sends give up after 3 s.
    let _ = c.set_write_timeout(Some(Duration::from_secs(3)));
    let mut line = [0u8; 32];
    let Ok(n) = c.read(&mut line) else { return };
    let Some(want) = std::str::from_utf8(&line[..n])
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
    else {
        return;
    };
    let chunk = [0x5au8; 16 * 1024];
    let mut left = want.min(LARGE);
    while left > 0 {
        let k = left.min(chunk.len() as u64) as usize;
        if c.write_all(&chunk[..k]).is_err() {
            return;
        }
        left -= k as u64;
    }
}

/// What a download got.
#[derive(Debug)]
enum Got {
    /// Could not connect within the timeout (SYN dropped).
    Refused,
    /// Bytes received before EOF or a stall.
    Bytes(u64),
}

/// Downloads `want` bytes from `from`: stops at EOF or after 1.5 s without
/// data; at most 20 s.
fn download(ns: &str, from: &Source, want: u64) -> Result<Got> {
    let to = SocketAddr::new(host_addr(from), PORT);
    let src = from.addr;
    netns::run_in(ns, move || -> Result<Got> {
        let sock = socket2::Socket::new(
            socket2::Domain::for_address(to),
            socket2::Type::STREAM,
            None,
        )?;
        sock.bind(&SocketAddr::new(src, 0).into())?;
        if sock
            .connect_timeout(&to.into(), Duration::from_secs(2))
            .is_err()
        {
            return Ok(Got::Refused);
        }
        let mut c: TcpStream = sock.into();
        c.set_read_timeout(Some(Duration::from_millis(1500)))?;
        c.write_all(format!("{want}\n").as_bytes())?;
        let started = Instant::now();
        let mut got = 0u64;
        let mut buf = vec![0u8; 64 * 1024];
        while started.elapsed() < Duration::from_secs(20) {
            match c.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => got += n as u64,
                Err(_) => break,
            }
        }
        Ok(Got::Bytes(got))
    })?
}

/// The status's line for the zone, as JSON.
fn quota_status(cx: &Ctx) -> Result<Value> {
    let out = cx.sb.cli(&["status", "--output", "json"])?;
    let v: Value = serde_json::from_slice(&out.stdout).context("status JSON")?;
    v["quotas"]
        .as_array()
        .and_then(|a| a.iter().find(|q| q["zone"] == ZONE).cloned())
        .with_context(|| format!("no quota for {ZONE} in status: {v}"))
}

/// Seconds into the current UTC minute.
fn second_of_minute() -> u64 {
    jiff::Timestamp::now().as_second().rem_euclid(60) as u64
}

/// Sleeps until `at` seconds into a UTC minute (the next one if past).
fn sleep_until_second(at: u64) {
    let s = second_of_minute();
    let wait = if s < at { at - s } else { 60 - s + at };
    thread::sleep(Duration::from_secs(wait));
}

pub fn download_over_quota_stops_reload_keeps_rollover_restores(cx: &mut Ctx) -> Result<()> {
    let ns = cx.sb.topo.ns(INET4.side).to_string();
    let _server = Server::start(cx.sb.host_ns())?;
    let p = cx.policy("quota.toml", &policy(false))?;
    let mut d = cx.start(&p, &[])?;
    // The steps below take about 15 s here (more under QEMU TCG) and must
    // share one minute.
    let need = super::patience(Duration::from_secs(25)).min(Duration::from_secs(55));
    if second_of_minute() + need.as_secs() > 59 {
        sleep_until_second(1);
    }
    let minute = jiff::Timestamp::now().as_second().div_euclid(60);

    match download(&ns, &INET4, SMALL)? {
        Got::Bytes(n) if n == SMALL => {}
        other => bail!("a download under the quota was not served whole: {other:?}"),
    }
    let got = match download(&ns, &INET4, LARGE)? {
        Got::Bytes(n) => n,
        Got::Refused => bail!("the second download was refused before it started"),
    };
    ensure!(
        got < LARGE / 4 && got + SMALL >= QUOTA,
        "a download past the quota got {got} bytes (quota {QUOTA}, {SMALL} used before): \
         it should stall just past the quota"
    );
    cx.note(format!(
        "over quota: the second download stalled after {got} bytes ({} in all, quota {QUOTA})",
        got + SMALL
    ));
    ensure!(
        matches!(download(&ns, &INET4, SMALL)?, Got::Refused),
        "a new connection over quota was not refused"
    );
    match download(&ns, &VPN4, SMALL)? {
        Got::Bytes(n) if n == SMALL => {}
        other => bail!("another source under its quota was not served: {other:?}"),
    }
    let q = quota_status(cx)?;
    let top = q["top"][0]["source"].as_str().unwrap_or_default();
    ensure!(
        q["over"] == 1 && q["counted"] == 2 && top == INET4.addr.to_string(),
        "status does not show the one source over quota on top: {q}"
    );
    cx.note(format!("status: {q}"));

    // A reload (a zone added before it) keeps the usage.
    super::daemon::Sandbox::write_atomic(&p, &policy(true))?;
    let (ok, out) = cx.sb.reload()?;
    ensure!(ok, "reload failed: {out}");
    ensure!(
        matches!(download(&ns, &INET4, SMALL)?, Got::Refused),
        "after a reload the source over quota was served again"
    );
    // So does a restart: the usage is pinned, the new daemon adopts it.
    d.terminate()?;
    let _d = cx.start(&p, &[])?;
    ensure!(
        matches!(download(&ns, &INET4, SMALL)?, Got::Refused),
        "after a restart the source over quota was served again"
    );
    ensure!(
        jiff::Timestamp::now().as_second().div_euclid(60) == minute,
        "the steps crossed a minute boundary; the checks above are void"
    );

    // The next minute serves it again.
    sleep_until_second(2);
    let started = Instant::now();
    match download(&ns, &INET4, SMALL)? {
        Got::Bytes(n) if n == SMALL => {}
        other => bail!("the next minute did not serve the source again: {other:?}"),
    }
    cx.note(format!(
        "rollover: served again {} ms into the next minute",
        2000 + started.elapsed().as_millis()
    ));
    Ok(())
}
