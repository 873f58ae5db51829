//! The metrics endpoint against hostile clients and inputs: idle-connection
//! floods, a burst of wrong passwords, user enumeration by timing, the
//! `basic` scheme in lower case, hostile interface names in the exposition
//! (parsed by Python's `prometheus_client`), `listen` changed on reload, TLS.
//!
//! Every loop is bounded in count and time; everything created (a veth, a
//! blocking listener, files) goes away with the scenario.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::Command,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use serde_json::Value;

use super::{
    cleanup,
    cmd::{self, CMD_TIMEOUT},
    daemon::{Daemon, Sandbox},
    http, netns, policies,
    scenarios::Ctx,
};

/// The daemon's limits (filter-user/src/daemon/metrics/http.rs).
const MAX_CONNECTIONS: usize = 64;
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

fn note(cx: &mut Ctx, s: impl Into<String>) {
    cx.notes.push(s.into());
}

fn start(cx: &mut Ctx, policy: &Path, extra: &[&str]) -> Result<Daemon> {
    let d = cx.sb.start_daemon(policy, extra)?;
    note(
        cx,
        format!(
            "daemon {} ready (READY=1) after {} ms",
            d.pid(),
            d.ready_after.as_millis()
        ),
    );
    Ok(d)
}

/// Policy A with its `[metrics]` section replaced by `metrics` (TOML lines).
fn policy_a_with(metrics: &str) -> String {
    let a = policies::policy_a();
    let at = a.find("\n[metrics]").unwrap_or(a.len());
    format!("{}\n[metrics]\n{metrics}\n", &a[..at])
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

// ------------------------------------------------------------ /proc

/// utime + stime of `pid`.
fn cpu_time(pid: i32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is field 3.
    let rest = &stat[stat.rfind(')').context("/proc/PID/stat")? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(Duration::from_millis(ticks * 1000 / hz))
}

/// A `/proc/PID/status` field in kB (VmRSS, VmHWM).
fn status_kb(pid: i32, field: &str) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{field}:")))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .with_context(|| format!("no {field} in /proc/{pid}/status"))
}

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

fn nofile(pid: i32) -> Result<(u64, u64)> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid pid and out-pointer; no new limit is set.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut r) } != 0 {
        bail!("prlimit({pid}): {}", std::io::Error::last_os_error());
    }
    Ok((r.rlim_cur, r.rlim_max))
}

fn set_nofile(pid: i32, soft: u64, hard: u64) -> Result<()> {
    let r = libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    };
    // SAFETY: a valid pid and in-pointer.
    if unsafe { libc::prlimit(pid, libc::RLIMIT_NOFILE, &r, std::ptr::null_mut()) } != 0 {
        bail!(
            "prlimit({pid}, {soft}:{hard}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

// ------------------------------------------------------------ HTTP

/// One raw request on a new connection in namespace `ns`; (status, head, body).
fn raw(ns: &str, addr: SocketAddr, request: Vec<u8>) -> Result<(u16, String, String)> {
    let bytes = netns::run_in(ns, move || -> Result<Vec<u8>> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("connecting to {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        s.write_all(&request)?;
        let mut buf = Vec::new();
        let _ = s.take(16 << 20).read_to_end(&mut buf);
        Ok(buf)
    })??;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no HTTP status in {:?}", &text[..text.len().min(200)]))?;
    Ok((status, head.to_string(), body.to_string()))
}

fn get_request(path: &str, extra_headers: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: metrics\r\nConnection: close\r\n{extra_headers}\r\n")
        .into_bytes()
}

fn basic(scheme: &str, user: &str, password: &str) -> String {
    format!(
        "Authorization: {scheme} {}\r\n",
        http::base64(format!("{user}:{password}").as_bytes())
    )
}

/// (status) of GET /metrics, or None if the connection failed.
fn scrape(sb: &Sandbox, addr: &str, auth: Option<(&str, &str)>) -> Option<u16> {
    sb.metrics_raw(addr, auth).ok().map(|(c, _)| c)
}

// ------------------------------------------------------------ Python

/// Parses an exposition with `prometheus_client`'s OpenMetrics parser;
/// returns (name, labels, value) per sample.
fn python_parse(dir: &Path, text: &str) -> Result<Vec<(String, Value, f64)>> {
    let input = dir.join("exposition.txt");
    std::fs::write(&input, text)?;
    let script = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
out = []
for fam in text_string_to_metric_families(open(sys.argv[1], encoding="utf-8").read()):
    for s in fam.samples:
        out.append([s.name, s.labels, s.value])
print(json.dumps(out))
"#;
    let out = cmd::run(
        Command::new("python3").args(["-c", script]).arg(&input),
        super::patience(CMD_TIMEOUT),
    )?;
    if !out.status.success() {
        bail!(
            "prometheus_client refused the exposition: {}\n--- exposition ---\n{}",
            String::from_utf8_lossy(&out.stderr).trim(),
            text.lines().take(40).collect::<Vec<_>>().join("\n")
        );
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    Ok(v.as_array()
        .context("python output")?
        .iter()
        .map(|s| {
            (
                s[0].as_str().unwrap_or_default().to_string(),
                s[1].clone(),
                s[2].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect())
}

// ------------------------------------------------------------ scenarios

/// 300 idle connections (and one sending half a request) on the metrics
/// port, with the daemon's fd limit at 256: reloads (CLI and file change)
/// and `status` keep working, the daemon does not spin, and /metrics
/// answers again once the header timeout has closed the idle ones.
pub fn idle_flood(cx: &mut Ctx) -> Result<()> {
    let p = policies::write(&cx.policy_dir, "flood.toml", &policies::policy_a())?;
    // Start the daemon with a soft fd limit below its hard one: it must
    // raise it (systemd's LimitNOFILE sets both).
    let me = std::process::id() as i32;
    let (soft0, hard0) = nofile(me)?;
    let low = hard0.min(512);
    set_nofile(me, low, hard0)?;
    let started = start(cx, &p, &[]);
    set_nofile(me, soft0, hard0)?;
    let d = started?;
    let pid = d.pid();
    // Checked at the end, so that the flood's own symptoms show first.
    let (soft, hard) = nofile(pid)?;
    note(
        cx,
        format!("fd limit: started with {low}, now {soft} (hard {hard})"),
    );
    // The limit the issue was found with.
    set_nofile(pid, 256, 256)?;

    let addr: SocketAddr = "127.0.0.1:9469".parse()?;
    let fds0 = open_fds(pid);
    let opened = Instant::now();
    let ns = cx.sb.host_ns().to_string();
    let (mut idle, mut partial) = netns::run_in(&ns, move || -> Result<_> {
        // First, so that it gets one of the connection slots.
        let mut p = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        p.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")?;
        let mut v = Vec::new();
        for _ in 0..300 {
            if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                v.push(s);
            }
        }
        Ok((v, p))
    })??;
    let connected = idle.len();
    thread::sleep(Duration::from_millis(300));
    let fds_flood = open_fds(pid);
    note(
        cx,
        format!("{connected} idle connections open; daemon fds {fds0} → {fds_flood}"),
    );

    let cpu0 = cpu_time(pid)?;
    let st = cx.sb.status().context("status under the flood")?;
    ensure!(
        st.daemon_running,
        "status: the daemon does not answer under the flood"
    );
    let (ok, text) = cx.sb.reload()?;
    ensure!(ok, "portcullis reload under the flood failed: {text}");
    let gen0 = cx.sb.status()?.generation;
    Sandbox::write_atomic(&p, &policies::policy_b())?;
    let mut gen = gen0;
    for _ in 0..100 {
        gen = cx.sb.status()?.generation;
        if gen > gen0 {
            break;
        }
        thread::sleep(Duration::from_millis(100));
    }
    ensure!(
        gen > gen0,
        "a file change under the flood did not reload (generation stays {gen0}); log:\n{}",
        d.log_tail(20)
    );
    thread::sleep(Duration::from_secs(2));
    let cpu = cpu_time(pid)? - cpu0;
    let wall = opened.elapsed();
    note(
        cx,
        format!(
            "under the flood: status, reload and a file-change reload worked; daemon CPU {} over the last {:.1} s",
            ms(cpu),
            wall.as_secs_f64()
        ),
    );
    // A spinning accept loop burns a whole CPU; a reload costs well under this.
    ensure!(
        cpu < Duration::from_millis(1500),
        "the daemon used {} of CPU in {:.1} s under an idle flood",
        ms(cpu),
        wall.as_secs_f64()
    );

    ensure!(
        fds_flood <= fds0 + MAX_CONNECTIONS + 16,
        "the daemon holds {fds_flood} fds under the flood (was {fds0}): connections are not capped"
    );
    // The half-sent request is closed by the header timeout.
    partial.set_read_timeout(Some(HEADER_TIMEOUT * 3))?;
    let mut sink = [0u8; 512];
    let r = partial.read(&mut sink);
    let closed_after = opened.elapsed();
    ensure!(
        !matches!(&r, Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut)),
        "a request with unfinished headers was still open {:.1} s after it was sent",
        closed_after.as_secs_f64()
    );
    ensure!(
        closed_after <= HEADER_TIMEOUT + super::patience(Duration::from_secs(3)),
        "a request with unfinished headers was closed only after {:.1} s",
        closed_after.as_secs_f64()
    );

    // With the idle connections still held, the header timeout frees the slots.
    let limit = HEADER_TIMEOUT + super::patience(Duration::from_secs(3));
    let mut answered = None;
    while opened.elapsed() < limit + Duration::from_secs(1) {
        if scrape(cx.sb, "127.0.0.1:9469", None) == Some(200) {
            answered = Some(opened.elapsed());
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    let Some(answered) = answered else {
        bail!(
            "/metrics did not answer 200 within {:.1} s of the flood (idle connections held)",
            limit.as_secs_f64()
        );
    };
    ensure!(
        answered <= limit,
        "/metrics answered only after {answered:?}"
    );
    note(
        cx,
        format!(
            "half-sent request closed {:.1} s after opening; /metrics 200 again {:.1} s after the flood began (connections still held)",
            closed_after.as_secs_f64(),
            answered.as_secs_f64()
        ),
    );
    idle.clear();
    drop(partial);
    ensure!(
        scrape(cx.sb, "127.0.0.1:9469", None) == Some(200),
        "/metrics after the flood was dropped"
    );
    ensure!(
        soft == hard,
        "the daemon kept its soft fd limit {soft} (hard {hard}); it must raise it"
    );
    let mut d = d;
    d.terminate()?;
    Ok(())
}

fn auth_daemon(cx: &mut Ctx, listen: &str) -> Result<(Daemon, String)> {
    let password = format!("{:016x}", rand::random::<u64>());
    let hash = policies::argon2_hash(&password)?;
    let p = policies::write(
        &cx.policy_dir,
        "auth.toml",
        &policies::policy_a_auth(listen, "prom", &hash),
    )?;
    Ok((start(cx, &p, &[])?, password))
}

/// 64 concurrent wrong passwords: answered 401 (or 503, retry), and the
/// daemon's peak RSS grows by less than 100 MB.
pub fn wrong_password_burst(cx: &mut Ctx) -> Result<()> {
    let listen = "127.0.0.1:9470";
    let (mut d, password) = auth_daemon(cx, listen)?;
    let pid = d.pid();
    let (rss0, hwm0) = (status_kb(pid, "VmRSS")?, status_kb(pid, "VmHWM")?);
    let mut codes: Vec<Option<u16>> = Vec::new();
    let t = Instant::now();
    for _round in 0..2 {
        let handles: Vec<_> = (0..64)
            .map(|i| {
                let ns = cx.sb.host_ns().to_string();
                thread::spawn(move || {
                    http::get(
                        &ns,
                        listen.parse().expect("addr"),
                        "/metrics",
                        Some(("prom", &format!("wrong-{i}"))),
                    )
                    .ok()
                    .map(|(c, _)| c)
                })
            })
            .collect();
        codes.extend(handles.into_iter().map(|h| h.join().unwrap_or(None)));
    }
    let elapsed = t.elapsed();
    let hwm = status_kb(pid, "VmHWM")?;
    let count = |c: u16| codes.iter().filter(|x| **x == Some(c)).count();
    note(
        cx,
        format!(
            "128 wrong passwords (2 × 64 at once) in {:.2} s: {} × 401, {} × 503, {} failed; VmRSS {} MB at start, peak {} → {} MB",
            elapsed.as_secs_f64(),
            count(401),
            count(503),
            codes.iter().filter(|x| x.is_none()).count(),
            rss0 / 1024,
            hwm0 / 1024,
            hwm / 1024
        ),
    );
    ensure!(
        count(401) + count(503) == codes.len(),
        "every wrong password must get 401 or 503: {codes:?}"
    );
    ensure!(
        count(401) >= 2,
        "no wrong password was even checked: {codes:?}"
    );
    ensure!(
        hwm.saturating_sub(hwm0) < 100 * 1024,
        "peak RSS grew by {} MB under 64 concurrent wrong passwords",
        hwm.saturating_sub(hwm0) / 1024
    );
    ensure!(
        scrape(cx.sb, listen, Some(("prom", &password))) == Some(200),
        "the right password after the burst"
    );
    d.terminate()?;
    Ok(())
}

/// A wrong user costs what a wrong password costs (median latency ratio).
pub fn auth_timing_hides_users(cx: &mut Ctx) -> Result<()> {
    let listen = "127.0.0.1:9470";
    let (mut d, _password) = auth_daemon(cx, listen)?;
    let addr: SocketAddr = listen.parse()?;
    let ns = cx.sb.host_ns().to_string();
    let time = |user: &str, password: &str| -> Result<Duration> {
        let req = get_request("/metrics", &basic("Basic", user, password));
        let t = Instant::now();
        let (code, _, _) = raw(&ns, addr, req)?;
        let e = t.elapsed();
        ensure!(code == 401, "{user}: HTTP {code}, expected 401");
        Ok(e)
    };
    // Warm up both paths (the dummy hash is made on first use).
    time("nobody", "x")?;
    time("prom", "x")?;
    let (mut wrong_user, mut wrong_password) = (Vec::new(), Vec::new());
    for i in 0..21 {
        wrong_user.push(time(&format!("user{i}"), "guess")?);
        wrong_password.push(time("prom", &format!("guess{i}"))?);
    }
    wrong_user.sort();
    wrong_password.sort();
    let (mu, mp) = (wrong_user[10], wrong_password[10]);
    let ratio = mu.as_secs_f64() / mp.as_secs_f64().max(1e-6);
    note(
        cx,
        format!(
            "median latency: wrong user {}, wrong password {}; ratio {ratio:.2}",
            ms(mu),
            ms(mp)
        ),
    );
    ensure!(
        (0.5..=2.0).contains(&ratio),
        "a wrong user answers in {} but a wrong password in {}: the user can be enumerated",
        ms(mu),
        ms(mp)
    );
    d.terminate()?;
    Ok(())
}

/// `Authorization: basic …` (any case) is accepted; only GET /metrics is
/// served; oversized headers are refused.
pub fn auth_scheme_and_routing(cx: &mut Ctx) -> Result<()> {
    let listen = "127.0.0.1:9470";
    let (mut d, password) = auth_daemon(cx, listen)?;
    let addr: SocketAddr = listen.parse()?;
    let ns = cx.sb.host_ns().to_string();
    for scheme in ["basic", "BASIC", "Basic"] {
        let (code, _, body) = raw(
            &ns,
            addr,
            get_request("/metrics", &basic(scheme, "prom", &password)),
        )?;
        ensure!(
            code == 200 && body.contains("portcullis_policy_generation"),
            "scheme {scheme:?}: HTTP {code}"
        );
    }
    let auth = basic("Basic", "prom", &password);
    let (code, _, _) = raw(&ns, addr, get_request("/other", &auth))?;
    ensure!(code == 404, "GET /other: HTTP {code}, expected 404");
    let post = format!(
        "POST /metrics HTTP/1.1\r\nHost: m\r\nConnection: close\r\n{auth}Content-Length: 0\r\n\r\n"
    );
    let (code, head, _) = raw(&ns, addr, post.into_bytes())?;
    ensure!(
        code == 405 && head.to_ascii_lowercase().contains("allow: get"),
        "POST /metrics: HTTP {code}, expected 405 with Allow: GET\n{head}"
    );
    let big = format!("X-Filler: {}\r\n", "a".repeat(20_000));
    let (code, _, _) = raw(&ns, addr, get_request("/metrics", &format!("{auth}{big}")))?;
    ensure!(code == 431, "a 20 kB header: HTTP {code}, expected 431");
    // An idle keep-alive connection is closed by the server, bounded.
    let req = format!("GET /metrics HTTP/1.1\r\nHost: m\r\n{auth}\r\n");
    let idle_closed = netns::run_in(&ns, move || -> Result<Duration> {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(40)))?;
        s.write_all(req.as_bytes())?;
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        let t = Instant::now();
        // Read until the connection closes; the response comes first.
        loop {
            match s.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) => bail!("reading: {e} after {:.1} s", t.elapsed().as_secs_f64()),
            }
            ensure!(got < buf.len(), "response too large");
        }
        ensure!(
            buf.starts_with(b"HTTP/1.1 200"),
            "keep-alive GET: {:?}",
            String::from_utf8_lossy(&buf[..got.min(100)])
        );
        Ok(t.elapsed())
    })??;
    ensure!(
        idle_closed <= HEADER_TIMEOUT + super::patience(Duration::from_secs(3)),
        "an idle keep-alive connection was closed only after {:.1} s",
        idle_closed.as_secs_f64()
    );
    note(
        cx,
        format!(
            "basic/BASIC/Basic → 200; /other → 404; POST → 405; 20 kB header → 431; \
             idle keep-alive closed after {:.1} s",
            idle_closed.as_secs_f64()
        ),
    );
    d.terminate()?;
    Ok(())
}

/// Sends one non-IP Ethernet frame out of `iface` (AF_PACKET).
fn send_frame(iface: &str) -> Result<()> {
    let ifindex =
        nix::net::if_::if_nametoindex(iface).with_context(|| format!("ifindex of {iface}"))?;
    // SAFETY: plain socket calls with valid, initialised arguments.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0);
        ensure!(
            fd >= 0,
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        );
        let mut sll: libc::sockaddr_ll = std::mem::zeroed();
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        let mut frame = [0u8; 60];
        frame[..6].copy_from_slice(&[0xff; 6]);
        frame[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 1]);
        frame[12..14].copy_from_slice(&0x88b5u16.to_be_bytes()); // local experimental
        let n = libc::sendto(
            fd,
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sll as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        let err = std::io::Error::last_os_error();
        libc::close(fd);
        ensure!(n == frame.len() as isize, "sendto on {iface}: {err}");
    }
    Ok(())
}

/// An interface named `a"b=\c` (Linux allows it) is filtered and counted;
/// the daemon's /metrics, with its name in labels, parses with the Python
/// `prometheus_client` OpenMetrics parser and keeps the name intact.
pub fn exposition_parses(cx: &mut Ctx) -> Result<()> {
    const HOSTILE: &str = "a\"b=\\c";
    let peer = format!("pcq{}", std::process::id() % 100_000);
    let ns = cx.sb.host_ns().to_string();
    cmd::ip(&[
        "-n", &ns, "link", "add", HOSTILE, "type", "veth", "peer", "name", &peer,
    ])?;
    let ns2 = ns.clone();
    let _veth = cleanup::register(format!("delete veth {HOSTILE:?}"), move || {
        let _ = cmd::ip(&["-n", &ns2, "link", "del", HOSTILE]);
    });
    cmd::ip(&["-n", &ns, "link", "set", HOSTILE, "up"])?;
    cmd::ip(&["-n", &ns, "link", "set", &peer, "up"])?;
    let p = policies::write(&cx.policy_dir, "expo.toml", &policies::policy_a())?;
    let mut d = start(cx, &p, &["--iface", HOSTILE])?;
    let peer2 = peer.clone();
    netns::run_in(&ns, move || {
        for _ in 0..3 {
            send_frame(&peer2)?;
        }
        Ok::<_, anyhow::Error>(())
    })??;
    // Counters are read at scrape time; the frames are judged at once.
    thread::sleep(Duration::from_millis(200));
    let (code, body) = cx.sb.metrics_raw("127.0.0.1:9469", None)?;
    ensure!(code == 200, "GET /metrics: HTTP {code}");
    let samples = python_parse(&cx.policy_dir, &body)?;
    let label = |l: &Value, k: &str| l.get(k).and_then(Value::as_str).map(str::to_string);
    let mode = samples.iter().any(|(n, l, v)| {
        n == "portcullis_attach_mode"
            && label(l, "interface").as_deref() == Some(HOSTILE)
            && *v == 1.0
    });
    ensure!(
        mode,
        "no portcullis_attach_mode{{interface={HOSTILE:?}}} 1 after parsing"
    );
    let mut hostile_packets = 0.0;
    for (n, l, v) in &samples {
        if n == "portcullis_packets_total" {
            let mut keys: Vec<&String> = l
                .as_object()
                .map(|o| o.keys().collect())
                .unwrap_or_default();
            keys.sort();
            ensure!(
                keys == ["interface", "reason", "verdict", "zone"],
                "a packets sample with labels {keys:?}: {l}"
            );
            if label(l, "interface").as_deref() == Some(HOSTILE) {
                hostile_packets += v;
            }
        }
    }
    ensure!(
        hostile_packets >= 3.0,
        "the 3 frames on {HOSTILE:?} are not in portcullis_packets_total ({hostile_packets})"
    );
    note(
        cx,
        format!(
            "{} samples parsed by prometheus_client; interface {HOSTILE:?} kept intact ({hostile_packets} packets)",
            samples.len()
        ),
    );
    d.terminate()?;
    Ok(())
}

/// A changed `listen` follows a reload; one that cannot be bound rejects
/// the reload and changes nothing; `--metrics-listen` overrides the policy.
pub fn listen_follows_reload(cx: &mut Ctx) -> Result<()> {
    let listen = |a: &str| policy_a_with(&format!("listen = \"{a}\""));
    let p = policies::write(&cx.policy_dir, "listen.toml", &listen("127.0.0.1:9471"))?;
    let mut d = start(cx, &p, &[])?;
    ensure!(
        scrape(cx.sb, "127.0.0.1:9471", None) == Some(200),
        "9471 at start"
    );

    Sandbox::write_atomic(&p, &listen("127.0.0.1:9472"))?;
    let (ok, text) = cx.sb.reload()?;
    ensure!(ok, "reload to listen 9472 failed: {text}");
    let moved = (0..20).any(|_| {
        let ok = scrape(cx.sb, "127.0.0.1:9472", None) == Some(200);
        if !ok {
            thread::sleep(Duration::from_millis(50));
        }
        ok
    });
    ensure!(moved, "after the reload /metrics does not answer on 9472");
    ensure!(
        scrape(cx.sb, "127.0.0.1:9471", None).is_none(),
        "9471 still answers after listen moved to 9472"
    );

    // A busy address: the reload is refused and nothing changes.
    let ns = cx.sb.host_ns().to_string();
    let blocker = netns::run_in(&ns, || TcpListener::bind("127.0.0.1:9473"))??;
    let gen0 = cx.sb.status()?.generation;
    let text_b = policy_a_with("listen = \"127.0.0.1:9473\"")
        .replace("allow = [\"any\"]", "allow = [\"10.20.0.0/16\"]");
    Sandbox::write_atomic(&p, &text_b)?;
    let (ok, text) = cx.sb.reload()?;
    ensure!(!ok, "a reload onto a busy listen address succeeded: {text}");
    ensure!(
        text.contains("127.0.0.1:9473") && text.contains("listen"),
        "the refusal does not name the address and `listen`: {text}"
    );
    thread::sleep(Duration::from_millis(500)); // the file-change reload is refused too
    let gen1 = cx.sb.status()?.generation;
    ensure!(
        gen1 == gen0,
        "a refused reload moved the generation {gen0} → {gen1}"
    );
    ensure!(
        scrape(cx.sb, "127.0.0.1:9472", None) == Some(200),
        "after a refused reload 9472 must keep answering"
    );
    drop(blocker);
    let first_line = text
        .lines()
        .find(|l| l.contains("9473"))
        .unwrap_or_default()
        .trim()
        .to_string();
    note(
        cx,
        format!("9471 → 9472 on reload; onto a busy 9473 refused: {first_line}"),
    );
    d.terminate()?;

    // --metrics-listen wins over the policy, before and after a reload.
    Sandbox::write_atomic(&p, &listen("127.0.0.1:9472"))?;
    let mut d = start(cx, &p, &["--metrics-listen", "127.0.0.1:9474"])?;
    ensure!(
        scrape(cx.sb, "127.0.0.1:9474", None) == Some(200),
        "--metrics-listen 9474"
    );
    Sandbox::write_atomic(&p, &listen("127.0.0.1:9475"))?;
    let (ok, text) = cx.sb.reload()?;
    ensure!(ok, "reload with --metrics-listen: {text}");
    ensure!(
        scrape(cx.sb, "127.0.0.1:9474", None) == Some(200),
        "--metrics-listen 9474 after a reload that changed the policy's listen"
    );
    ensure!(
        scrape(cx.sb, "127.0.0.1:9475", None).is_none(),
        "the policy's listen 9475 was bound despite --metrics-listen"
    );
    d.terminate()?;
    Ok(())
}

fn openssl_cert(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = cmd::run(
        Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "2", "-subj", "/CN=localhost"])
            .args([
                "-addext",
                "subjectAltName=DNS:localhost,IP:127.0.0.1",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
        super::patience(CMD_TIMEOUT),
    )?;
    ensure!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((cert, key))
}

/// GET https://127.0.0.1:PORT/metrics from the host namespace with Python's
/// ssl, trusting only `ca`; (status, body) or the error text.
fn https_get(
    sb: &Sandbox,
    port: u16,
    ca: &Path,
    auth: Option<(&str, &str)>,
) -> Result<(u16, String), String> {
    let script = r#"
import base64, ssl, sys, urllib.request
ctx = ssl.create_default_context(cafile=sys.argv[2])
req = urllib.request.Request("https://127.0.0.1:%s/metrics" % sys.argv[1])
if len(sys.argv) > 3:
    req.add_header("Authorization", "Basic " + base64.b64encode(sys.argv[3].encode()).decode())
try:
    with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
        sys.stdout.write("%d\n" % r.status + r.read().decode())
except urllib.error.HTTPError as e:
    sys.stdout.write("%d\n" % e.code)
"#;
    let mut c = Command::new("ip");
    c.args(["netns", "exec", sb.host_ns(), "python3", "-c", script])
        .arg(port.to_string())
        .arg(ca);
    if let Some((u, p)) = auth {
        c.arg(format!("{u}:{p}"));
    }
    let out = cmd::run(&mut c, super::patience(CMD_TIMEOUT)).map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string());
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (code, body) = text.split_once('\n').unwrap_or((&text, ""));
    Ok((
        code.trim().parse().map_err(|_| text.clone())?,
        body.to_string(),
    ))
}

/// `[metrics] tls`: HTTPS with the configured files, a renewed certificate
/// served after a reload, plain HTTP refused; `check` warns about basic
/// auth beyond loopback without TLS.
pub fn tls_listener(cx: &mut Ctx) -> Result<()> {
    let tls_dir = cx.policy_dir.join("tls");
    std::fs::create_dir_all(&tls_dir)?;
    let (cert1, key1) = openssl_cert(&tls_dir, "one")?;
    let (cert, key) = (tls_dir.join("m.crt"), tls_dir.join("m.key"));
    std::fs::copy(&cert1, &cert)?;
    std::fs::copy(&key1, &key)?;
    let password = format!("{:016x}", rand::random::<u64>());
    let hash = policies::argon2_hash(&password)?;
    let text = policy_a_with(&format!(
        "listen = \"127.0.0.1:9476\"\ntls = {{ cert = \"tls/m.crt\", key = \"tls/m.key\" }}\n\
         basic_auth = {{ user = \"prom\", password_hash = \"{hash}\" }}"
    ));
    let p = policies::write(&cx.policy_dir, "tls.toml", &text)?;
    let mut d = start(cx, &p, &[])?;
    let got = https_get(cx.sb, 9476, &cert1, Some(("prom", &password)));
    ensure!(
        matches!(&got, Ok((200, b)) if b.contains("portcullis_policy_generation")),
        "HTTPS with the right password: {got:?}"
    );
    let got = https_get(cx.sb, 9476, &cert1, Some(("prom", "wrong")));
    ensure!(
        matches!(got, Ok((401, _))),
        "HTTPS, wrong password: {got:?}"
    );
    let plain = cx
        .sb
        .metrics_raw("127.0.0.1:9476", Some(("prom", &password)));
    ensure!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP on the TLS port answered 200"
    );

    // Renew: a new pair under the same names, then a reload.
    let (cert2, key2) = openssl_cert(&tls_dir, "two")?;
    std::fs::copy(&key2, tls_dir.join("m.key.tmp"))?;
    std::fs::copy(&cert2, tls_dir.join("m.crt.tmp"))?;
    std::fs::rename(tls_dir.join("m.key.tmp"), &key)?;
    std::fs::rename(tls_dir.join("m.crt.tmp"), &cert)?;
    // No reload asked for: the files are watched.
    let renewed_at = Instant::now();
    let mut got = Err(String::new());
    while renewed_at.elapsed() < super::patience(Duration::from_secs(5)) {
        got = https_get(cx.sb, 9476, &cert2, Some(("prom", &password)));
        if matches!(got, Ok((200, _))) {
            break;
        }
        thread::sleep(Duration::from_millis(200));
    }
    ensure!(
        matches!(got, Ok((200, _))),
        "the renewed certificate is not served 5 s after the files changed: {got:?}"
    );
    let renewed_after = renewed_at.elapsed();
    let old = https_get(cx.sb, 9476, &cert1, Some(("prom", &password)));
    ensure!(old.is_err(), "the old certificate is still served: {old:?}");
    note(
        cx,
        format!(
            "HTTPS 200 / 401; plain HTTP refused; renewed certificate served {} \
             after the files changed (no reload asked)",
            ms(renewed_after)
        ),
    );

    // A broken key: the reload is refused, the old pair keeps serving.
    std::fs::write(tls_dir.join("m.key.tmp"), "not a key\n")?;
    std::fs::rename(tls_dir.join("m.key.tmp"), &key)?;
    let (ok, out) = cx.sb.reload()?;
    ensure!(
        !ok && out.contains("m.key"),
        "a reload with a broken key: ok={ok}: {out}"
    );
    let got = https_get(cx.sb, 9476, &cert2, Some(("prom", &password)));
    ensure!(
        matches!(got, Ok((200, _))),
        "after a refused TLS reload: {got:?}"
    );
    d.terminate()?;

    // check: basic auth beyond loopback without TLS is warned about.
    let clear = policies::write(
        &cx.policy_dir,
        "clear.toml",
        &policy_a_with(&format!(
            "listen = \"0.0.0.0:9477\"\nbasic_auth = {{ user = \"prom\", password_hash = \"{hash}\" }}"
        )),
    )?;
    let out = cx
        .sb
        .cli(&["check", "--policy", &clear.display().to_string()])?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.success() && err.contains("warning") && err.contains("without tls"),
        "check of basic auth on 0.0.0.0 without TLS: {} {err}",
        out.status
    );
    let out = cx
        .sb
        .cli(&["check", "--policy", &p.display().to_string()])?;
    ensure!(!out.status.success(), "check with a broken TLS key passed");
    Ok(())
}
