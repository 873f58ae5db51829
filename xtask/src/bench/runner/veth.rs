//! Throughput on veth pairs. The generator (`gen.rs`) runs on CPU 0 and sends
//! every frame out of a pair's first veth with XDP_TX; the receiving veth runs
//! threaded NAPI pinned to CPU 1, so the program under test gets one whole
//! core. The rate is what the receiver processed: the `rx_queue_0_xdp_packets`
//! counter of the receiving veth over a window (frames the receiver cannot
//! take are dropped at the sender's ring).
//!
//! Four pairs live in the bench namespace: the daemon's (`pcb0`→`pcb1`) and
//! one per baseline program, attached for the whole run (`pcb3` empty
//! XDP_DROP, `pcb5` the floor, `pcb7` the floor with XDP_PASS). So one round
//! floods every row once — empty, floor, floor IPv6, floor pass, then each
//! portcullis flood; each round starts one step further along that list —
//! without reattaching anything, and the rounds repeat: slow drifts of the
//! machine's load hit every row alike, and each ratio is the median of its
//! per-round ratios (`report.rs`). nftables and iptables +
//! ipset come after, on the daemon's pair, `trials` windows each.
//!
//! Every portcullis window is checked against the daemon's own counters (its
//! metrics endpoint): the flood must have taken the verdict path it is named
//! after (≥ 90% of its packets), or the run fails. Floor windows are checked
//! against the floor's per-family counter.
use std::{
    collections::HashMap,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use ipnet::{Ipv4Net, Ipv6Net};

use crate::{
    frame,
    gen::{sample, Gen, Sources},
    nft,
    policies::{PolicySet, VethSet, ALLOW6_PORT, ALLOW_BIG_PORT, ALLOW_SMALL_PORT, LIMITED_PORT},
    report::{Flood, Group, Results},
    sys, Args, Plan,
};

pub const NETNS: &str = "pcbench";
/// (sender, receiver) veth pairs, in `NETNS`.
const PAIRS: [(&str, &str); 4] = [
    ("pcb0", "pcb1"),
    ("pcb2", "pcb3"),
    ("pcb4", "pcb5"),
    ("pcb6", "pcb7"),
];
const DAEMON_PAIR: usize = 0;
const EMPTY_PAIR: usize = 1;
const FLOOR_PAIR: usize = 2;
const FLOOR_PASS_PAIR: usize = 3;
/// The daemon's receiving veth (nftables hooks it too).
pub const RX: &str = PAIRS[DAEMON_PAIR].1;
const PIN_ROOT: &str = "/sys/fs/bpf/pcbench";
const METRICS: &str = "127.0.0.1:19190";

/// The namespace and its veth pairs; deleted on drop (also on failure).
pub struct Env {
    _private: (),
}

impl Env {
    pub fn create() -> Result<Env> {
        let _ = sys::sh(None, &format!("ip netns del {NETNS} 2>/dev/null; true"));
        sys::sh(None, &format!("ip netns add {NETNS}"))?;
        let env = Env { _private: () };
        let mac = |m: [u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        let mut script = String::from(
            "set -e\nip link set lo up\nsysctl -qw net.ipv4.conf.all.rp_filter=0 net.ipv4.conf.default.rp_filter=0\n",
        );
        // Every receiver has the frames' destination MAC, so frames a
        // baseline passes reach the stack as the daemon's do (198.18.0.2 is
        // local to the namespace whichever veth they arrive on).
        for (tx, rx) in PAIRS {
            script.push_str(&format!(
                "ip link add {tx} address {} type veth peer name {rx} address {}\n\
                 ip link set {tx} up\nip link set {rx} up\n\
                 sysctl -qw net.ipv4.conf.{rx}.rp_filter=0\n",
                mac(frame::MAC_TX),
                mac(frame::MAC_RX),
            ));
        }
        script.push_str(&format!(
            "ip addr add 198.18.0.1/24 dev {}\nip addr add {}/24 dev {RX}\n",
            PAIRS[DAEMON_PAIR].0,
            frame::RX_ADDR
        ));
        sys::sh(Some(NETNS), &script)?;
        Ok(env)
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        let _ = sys::sh(
            Some(NETNS),
            &format!("nft delete table netdev {} 2>/dev/null; iptables -t raw -F 2>/dev/null; ip6tables -t raw -F 2>/dev/null; ipset destroy 2>/dev/null; true", nft::TABLE),
        );
        let _ = sys::sh(None, &format!("ip netns del {NETNS} 2>/dev/null; true"));
        let _ = std::fs::remove_dir_all(PIN_ROOT);
    }
}

fn ifindex(name: &str) -> Result<u32> {
    let c = std::ffi::CString::new(name)?;
    // SAFETY: a valid NUL-terminated string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {name} in this namespace");
    }
    Ok(i)
}

/// `rx_queue_0_xdp_packets` of a receiving veth.
fn rx_packets(rx: &str) -> Result<u64> {
    let out = sys::sh(Some(NETNS), &format!("ethtool -S {rx}"))?;
    for line in out.lines() {
        let l = line.trim();
        if let Some(v) = l.strip_prefix("rx_queue_0_xdp_packets:") {
            return Ok(v.trim().parse()?);
        }
    }
    bail!("no rx_queue_0_xdp_packets in `ethtool -S {rx}`:\n{out}")
}

/// Makes a receiver's NAPI threaded (veth has NAPI only while an XDP program
/// is attached) and pins its thread(s) to CPU 1; their pids.
fn pin_napi(rx: &str) -> Result<Vec<i32>> {
    sys::sh(
        Some(NETNS),
        &format!("echo 1 > /sys/class/net/{rx}/threaded"),
    )?;
    let t = Instant::now();
    let prefix = format!("napi/{rx}-");
    let mut pids = sys::kthreads(&prefix);
    while pids.is_empty() && t.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(20));
        pids = sys::kthreads(&prefix);
    }
    if pids.is_empty() {
        bail!("no threaded NAPI thread for {rx}");
    }
    for &pid in &pids {
        sys::pin_to_cpu(pid, 1)?;
    }
    Ok(pids)
}

/// One window of `src` on pair `pair`: receiver Mpps, generator Mpps, and
/// how often per second the receiver's NAPI thread slept (a receiver that
/// keeps up drains its ring, sleeps and must be woken per burst: near the
/// generator's rate the wakeups, not the program, can set the rate).
fn measure(gen: &mut Gen, src: &Sources, pair: usize, plan: &Plan) -> Result<(f64, f64, f64)> {
    let (tx, rx) = PAIRS[pair];
    let pids = pin_napi(rx)?;
    let warmup = Duration::from_millis(plan.veth_warmup_ms);
    let window = Duration::from_millis(plan.veth_window_ms);
    let s0 = sys::voluntary_switches(&pids);
    let t = Instant::now();
    let (rate, gen_rate) = gen.window(src, ifindex(tx)?, &|| rx_packets(rx), warmup, window)?;
    let sleeps =
        sys::voluntary_switches(&pids).saturating_sub(s0) as f64 / t.elapsed().as_secs_f64();
    Ok((rate, gen_rate, sleeps))
}

/// How many prefixes each sampled source set holds (an evenly strided sample
/// over the whole list): 65,536 keeps the generator's own table in its cache,
/// while the receiver's lookups still spread over the whole structure.
fn gen_sources() -> usize {
    std::env::var("PCB_GEN_SOURCES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 16)
}

/// The daemon, stopped (SIGTERM, then SIGKILL) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(15) {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn daemon_log(work: &Path) -> String {
    std::fs::read_to_string(work.join("daemon.log")).unwrap_or_default()
}

/// `portcullis run` on the daemon's receiver with `policy`; returns once it
/// notified READY=1 (policy written, interface attached), with the seconds
/// that took.
fn start_daemon(args: &Args, policy: &Path, work: &Path) -> Result<(Daemon, f64)> {
    let _ = std::fs::remove_dir_all(PIN_ROOT);
    let socket: PathBuf = work.join("ctl.sock");
    let notify_path = work.join("notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(Duration::from_millis(100)))?;
    let log = std::fs::File::create(work.join("daemon.log"))?;
    let t = Instant::now();
    // Spawned from this thread, so in the bench namespace, with the host's
    // mount namespace (and its bpffs).
    let child = Command::new(&args.portcullis)
        .arg("run")
        .arg("--policy")
        .arg(policy)
        .args(["--iface", RX, "--pin-root", PIN_ROOT, "--detach-on-exit"])
        .arg("--control-socket")
        .arg(&socket)
        .args(["--metrics-listen", METRICS])
        // The ban store in the work directory, not the host's /var/lib.
        .arg("--state-dir")
        .arg(work.join("state"))
        .env("NOTIFY_SOCKET", &notify_path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("starting {}", args.portcullis.display()))?;
    let mut d = Daemon(child);
    let mut buf = [0u8; 512];
    loop {
        if let Ok(n) = notify.recv(&mut buf) {
            if String::from_utf8_lossy(&buf[..n]).contains("READY=1") {
                break;
            }
        }
        if let Some(status) = d.0.try_wait()? {
            bail!("the daemon exited ({status}):\n{}", daemon_log(work));
        }
        if t.elapsed() > Duration::from_secs(180) {
            bail!("the daemon did not get ready within 180 s");
        }
    }
    let ready = t.elapsed().as_secs_f64();
    thread::sleep(Duration::from_millis(300));
    if let Some(status) = d.0.try_wait()? {
        bail!("the daemon exited ({status}):\n{}", daemon_log(work));
    }
    Ok((d, ready))
}

/// The daemon's packet counters, summed by (reason, verdict), from its
/// metrics endpoint.
fn verdict_counts() -> Result<HashMap<(String, String), u64>> {
    let mut conn = TcpStream::connect(METRICS).context("connecting to the daemon's metrics")?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    conn.set_write_timeout(Some(Duration::from_secs(5)))?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")?;
    let mut text = String::new();
    conn.take(16 << 20).read_to_string(&mut text)?;
    ensure!(
        text.starts_with("HTTP/1.1 200"),
        "metrics answered: {}",
        text.lines().next().unwrap_or("")
    );
    let label = |line: &str, name: &str| -> Option<String> {
        let at = line.find(&format!("{name}=\""))? + name.len() + 2;
        Some(line[at..].split('"').next()?.to_string())
    };
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("portcullis_packets_total{"))
    {
        let (Some(reason), Some(verdict)) = (label(line, "reason"), label(line, "verdict")) else {
            continue;
        };
        let v: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("metrics line {line}"))?;
        *out.entry((reason, verdict)).or_insert(0) += v as u64;
    }
    Ok(out)
}

/// What a window must show besides its rate.
#[derive(Clone, Copy)]
enum Expect {
    Nothing,
    /// The floor counted (nearly) only frames of this family (0 IPv4, 1 IPv6).
    Family(usize),
    /// The daemon counted (nearly) only this (reason, verdict).
    Verdict(&'static str, &'static str),
}

/// Taken before a window; [`Probe::check`] after it.
enum Probe {
    None,
    Floor([u64; 3]),
    Daemon(HashMap<(String, String), u64>),
}

impl Expect {
    fn before(&self, gen: &Gen) -> Result<Probe> {
        Ok(match self {
            Expect::Nothing => Probe::None,
            Expect::Family(_) => Probe::Floor(gen.floor_counts()?),
            Expect::Verdict(..) => Probe::Daemon(verdict_counts()?),
        })
    }

    fn check(&self, before: Probe, gen: &Gen, key: &str) -> Result<()> {
        let (want, total, what) = match (self, before) {
            (Expect::Family(f), Probe::Floor(b)) => {
                let a = gen.floor_counts()?;
                let d: Vec<u64> = a.iter().zip(b).map(|(a, b)| a - b).collect();
                (d[*f], d.iter().sum::<u64>(), format!("family {f}: {d:?}"))
            }
            (Expect::Verdict(reason, verdict), Probe::Daemon(b)) => {
                let a = verdict_counts()?;
                let mut d: Vec<((String, String), u64)> = a
                    .into_iter()
                    .map(|(k, v)| {
                        let was = b.get(&k).copied().unwrap_or(0);
                        (k, v.saturating_sub(was))
                    })
                    .filter(|(_, v)| *v > 0)
                    .collect();
                d.sort_by_key(|x| std::cmp::Reverse(x.1));
                let want = d
                    .iter()
                    .find(|((r, v), _)| r == reason && v == verdict)
                    .map_or(0, |(_, n)| *n);
                let total = d.iter().map(|(_, n)| n).sum();
                (want, total, format!("{reason}/{verdict}; counted {d:?}"))
            }
            _ => return Ok(()),
        };
        ensure!(
            total > 0 && want as f64 >= 0.9 * total as f64,
            "the {key} flood did not take its path: want {what}"
        );
        Ok(())
    }
}

/// One interleaved row.
struct Row {
    key: &'static str,
    label: &'static str,
    group: Group,
    pair: usize,
    src: Sources,
    expect: Expect,
}

/// The generator's source sets.
struct Sets {
    list: Sources,
    hosts: Sources,
    hot: Sources,
    nets: Sources,
    allowed: Sources,
    uniform: Sources,
    allow_big: Sources,
    allow_big_miss: Sources,
    allow_small: Sources,
    allow_small_miss: Sources,
    v6_list: Sources,
    v6_uniform: Sources,
    allow6_big: Sources,
    allow6_big_miss: Sources,
    spoofed: Sources,
}

fn fill(gen: &mut Gen, set: &PolicySet, veth: &VethSet, n: usize) -> Result<Sets> {
    let want = gen_sources();
    let zone = &set.zones[0];
    let mut bl = set.v4(n);
    let list = gen.add_v4(&sample(&bl, want), 53)?;
    let hosts_all: Vec<Ipv4Net> = bl
        .iter()
        .filter(|p| p.prefix_len() == 32)
        .copied()
        .collect();
    let hosts = gen.add_v4(&sample(&hosts_all, want), 53)?;
    let hot = gen.add_v4(&sample(&hosts_all, 64), 53)?;
    drop(hosts_all);
    bl.retain(|p| p.prefix_len() <= 24);
    let nets = gen.add_v4(&sample(&bl, want), 53)?;
    drop(bl);
    // The zone's /16 only: its /24s are in 172/8 and need no weighting.
    let allowed = gen.add_v4(&zone.allow4[..1], zone.udp)?;
    let uniform = gen.add_v4(&["0.0.0.0/0".parse()?], zone.udp)?;
    // The same random sources at the rate-limited zone: a spoofed flood.
    let spoofed = gen.add_v4(&["0.0.0.0/0".parse()?], LIMITED_PORT)?;
    let small = veth.small;
    let allow_big = gen.add_v4(&sample(&veth.allow, want), ALLOW_BIG_PORT)?;
    let allow_big_miss = gen.add_v4(&sample(&veth.allow_misses, want), ALLOW_BIG_PORT)?;
    let allow_small = gen.add_v4(&veth.allow[..small], ALLOW_SMALL_PORT)?;
    let allow_small_miss = gen.add_v4(&veth.allow_misses[..small], ALLOW_SMALL_PORT)?;
    let v6_list = gen.add_v6(&sample(&veth.v6, want), 53)?;
    let global: Ipv6Net = "2000::/3".parse()?;
    let v6_uniform = gen.add_v6(&[global], zone.udp)?;
    // A quarter of the sources: the generator's IPv6 table holds 2^17.
    let allow6_big = gen.add_v6(&sample(&veth.allow6, want / 4), ALLOW6_PORT)?;
    let allow6_big_miss = gen.add_v6(&sample(&veth.allow6_misses, want / 4), ALLOW6_PORT)?;
    Ok(Sets {
        list,
        hosts,
        hot,
        nets,
        allowed,
        uniform,
        allow_big,
        allow_big_miss,
        allow_small,
        allow_small_miss,
        v6_list,
        v6_uniform,
        allow6_big,
        allow6_big_miss,
        spoofed,
    })
}

// One row per line: the table is read across.
#[rustfmt::skip]
fn rows(s: &Sets) -> Vec<Row> {
    use Group::{Baseline, Portcullis};
    let row = |key, label, group, pair, src, expect| Row { key, label, group, pair, src, expect };
    let blocklist = Expect::Verdict("blocklist", "drop");
    let not_allowed = Expect::Verdict("not_allowed", "drop");
    let allowed = Expect::Verdict("allowed", "pass");
    vec![
        row("xdp_drop_empty", "empty XDP_DROP", Baseline, EMPTY_PAIR, s.hosts, Expect::Nothing),
        row("floor_drop", "floor: read the source, count, drop", Baseline, FLOOR_PAIR, s.hosts, Expect::Family(0)),
        row("floor_drop_v6", "floor, IPv6: read the 16-byte source, count, drop", Baseline, FLOOR_PAIR, s.v6_list, Expect::Family(1)),
        row("floor_pass", "floor with XDP_PASS (the stack behind it)", Baseline, FLOOR_PASS_PAIR, s.allow_big, Expect::Family(0)),
        row("floor_pass_v6", "floor with XDP_PASS, IPv6 (the stack behind it)", Baseline, FLOOR_PASS_PAIR, s.allow6_big, Expect::Family(1)),
        row("portcullis_drop_hosts", "blocklist: random listed /32s (drop)", Portcullis, DAEMON_PAIR, s.hosts, blocklist),
        row("portcullis_drop", "blocklist: random listed prefixes, 90% /32s (drop)", Portcullis, DAEMON_PAIR, s.list, blocklist),
        row("portcullis_drop_v6", "blocklist IPv6: random listed /48s (drop)", Portcullis, DAEMON_PAIR, s.v6_list, blocklist),
        row("portcullis_drop_uniform", "uniform random IPv4 sources, zone port (drop)", Portcullis, DAEMON_PAIR, s.uniform, not_allowed),
        row("portcullis_spoofed_limited", "uniform random IPv4 sources, rate-limited zone port (drop)", Portcullis, DAEMON_PAIR, s.spoofed, Expect::Verdict("rate_limited", "drop")),
        row("portcullis_drop_uniform_v6", "uniform random IPv6 sources (2000::/3), zone port (drop)", Portcullis, DAEMON_PAIR, s.v6_uniform, not_allowed),
        row("portcullis_drop_nets", "blocklist: listed /24s only (drop)", Portcullis, DAEMON_PAIR, s.nets, blocklist),
        row("portcullis_drop_hot", "blocklist: 64 listed /32s (drop, cache-resident)", Portcullis, DAEMON_PAIR, s.hot, blocklist),
        row("portcullis_allowed", "zone port, source in the zone's /16 (pass)", Portcullis, DAEMON_PAIR, s.allowed, allowed),
        row("portcullis_allow_100k", "zone port, source in a 100k allowlist (pass)", Portcullis, DAEMON_PAIR, s.allow_big, allowed),
        row("portcullis_allow_100k_miss", "zone port, source beside a 100k allowlist's prefixes (drop)", Portcullis, DAEMON_PAIR, s.allow_big_miss, not_allowed),
        row("portcullis_allow_1k", "zone port, source in a 1k allowlist (pass)", Portcullis, DAEMON_PAIR, s.allow_small, allowed),
        row("portcullis_allow6_60k", "IPv6, zone port, source in a 60k allowlist (pass)", Portcullis, DAEMON_PAIR, s.allow6_big, allowed),
        row("portcullis_allow6_60k_miss", "IPv6, zone port, source beside a 60k allowlist's prefixes (drop)", Portcullis, DAEMON_PAIR, s.allow6_big_miss, not_allowed),
        row("portcullis_allow_1k_miss", "zone port, source beside a 1k allowlist's prefixes (drop)", Portcullis, DAEMON_PAIR, s.allow_small_miss, not_allowed),
    ]
}

/// Per-row samples as the rounds go.
struct Samples {
    rx: Vec<f64>,
    gen: Vec<f64>,
    sleeps: Vec<f64>,
}

pub fn run(
    plan: &Plan,
    args: &Args,
    set: &PolicySet,
    veth: &VethSet,
    work: &Path,
    results: &mut Results,
) -> Result<()> {
    sys::enter_netns(NETNS)?;
    let n = *plan.sizes.iter().max().expect("sizes");
    let mut gen = Gen::load(&args.bench_object)?;
    let sets = fill(&mut gen, set, veth, n)?;
    let rows = rows(&sets);
    for r in &rows {
        gen.self_check(&r.src, 32)
            .with_context(|| format!("generator self-check for {}", r.key))?;
    }
    let baselines = [
        ("bench_drop", EMPTY_PAIR),
        ("bench_floor", FLOOR_PAIR),
        ("bench_floor_pass", FLOOR_PASS_PAIR),
    ];
    let mut links = Vec::new();
    for (prog, pair) in baselines {
        links.push((prog, gen.attach(prog, PAIRS[pair].1)?));
    }

    // The daemon with the 1M policy of the other parts: its RSS and start.
    let (daemon, ready_s) = start_daemon(args, &set.policy_path(n), work)?;
    let pid = daemon.0.id();
    let rss = sys::status_kib(pid, "VmRSS")? as f64 / 1024.0;
    let hwm = sys::status_kib(pid, "VmHWM")? as f64 / 1024.0;
    eprintln!("  daemon, 1M policy: ready in {ready_s:.2}s, RSS {rss:.1} MiB (peak {hwm:.1} MiB)");
    results.set_num("rss_mib", rss);
    results.set_num("rss_peak_mib", hwm);
    results.set_num("daemon_start_1m_s", ready_s);
    drop(daemon);

    // The daemon with the flood policy (+ 1M IPv6, the allowlist zones).
    let (mut daemon, ready_s) = start_daemon(args, &veth.path, work)?;
    let rss = sys::status_kib(daemon.0.id(), "VmRSS")? as f64 / 1024.0;
    eprintln!(
        "  daemon, flood policy ({n} IPv4 + {} IPv6, allowlists {} and {}): ready in {ready_s:.2}s, RSS {rss:.1} MiB",
        veth.v6.len(),
        veth.allow.len(),
        veth.small
    );
    results.set_num("daemon_start_veth_s", ready_s);
    results.set_num("rss_veth_policy_mib", rss);

    let mut samples: Vec<Samples> = rows
        .iter()
        .map(|_| Samples {
            rx: Vec::new(),
            gen: Vec::new(),
            sleeps: Vec::new(),
        })
        .collect();
    for round in 0..plan.veth_rounds {
        eprintln!("  round {}/{}", round + 1, plan.veth_rounds);
        // Each round starts further along the rows, so no row is always
        // measured early or late in a round (load that changes on the scale
        // of a round would otherwise favour some rows over their floor).
        let start = round * rows.len() / plan.veth_rounds;
        for i in (0..rows.len()).map(|i| (i + start) % rows.len()) {
            let (r, out) = (&rows[i], &mut samples[i]);
            if let Some(status) = daemon.0.try_wait()? {
                bail!("the daemon exited ({status}):\n{}", daemon_log(work));
            }
            let rx_if = PAIRS[r.pair].1;
            let before = r.expect.before(&gen)?;
            let (rate, gen_rate, sleeps) = measure(&mut gen, &r.src, r.pair, plan)?;
            r.expect.check(before, &gen, r.key)?;
            ensure!(
                rate > 0.0,
                "{}: the receiver {rx_if} processed nothing",
                r.key
            );
            eprintln!(
                "    {:62} {rate:6.2} Mpps (generator {gen_rate:5.2}; NAPI slept {sleeps:.0}/s)",
                r.label
            );
            out.rx.push(rate);
            out.gen.push(gen_rate);
            out.sleeps.push(sleeps);
        }
    }
    for (r, s) in rows.iter().zip(samples) {
        results.push_flood(Flood {
            key: r.key.into(),
            label: r.label.into(),
            group: r.group,
            samples: s.rx,
            gen: s.gen,
            napi_sleeps: s.sleeps,
            interleaved: true,
        });
    }
    drop(daemon);
    for (prog, link) in links {
        gen.detach(prog, link)?;
    }
    others(plan, set, n, &mut gen, &sets, results)
}

/// nftables and iptables + ipset with the same IPv4 policy, on the daemon's
/// pair behind an XDP_PASS program, `veth_trials` windows per flood.
fn others(
    plan: &Plan,
    set: &PolicySet,
    n: usize,
    gen: &mut Gen,
    sets: &Sets,
    results: &mut Results,
) -> Result<()> {
    let link = gen.attach("bench_pass", RX)?;
    let flood = |results: &mut Results,
                 gen: &mut Gen,
                 key: &str,
                 label: &str,
                 src: &Sources|
     -> Result<()> {
        let (mut rx, mut gn, mut sl) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..plan.veth_trials {
            let (r, g, z) = measure(gen, src, DAEMON_PAIR, plan)?;
            rx.push(r);
            gn.push(g);
            sl.push(z);
        }
        eprintln!(
            "    {label:62} {:6.2} Mpps (generator {:5.2})",
            sys::median(rx.clone()),
            sys::median(gn.clone())
        );
        results.push_flood(Flood {
            key: key.into(),
            label: label.into(),
            group: Group::Other,
            samples: rx,
            gen: gn,
            napi_sleeps: sl,
            interleaved: false,
        });
        Ok(())
    };

    let script = nft::ruleset(set, n, Some(RX));
    let s = nft::load_timed(NETNS, &script)?;
    drop(script);
    eprintln!("  nft -f {n} prefixes: {s:.2}s");
    results.push_nft_load(n, s);
    flood(
        results,
        gen,
        "nftables_drop",
        "nftables: blocklisted flood (drop)",
        &sets.list,
    )?;
    flood(
        results,
        gen,
        "nftables_allowed",
        "nftables: allowlisted zone port (pass)",
        &sets.allowed,
    )?;
    nft::delete(NETNS)?;

    let t = Instant::now();
    sys::run_with_input(
        Command::new("ip").args(["netns", "exec", NETNS, "ipset", "restore"]),
        nft::ipset_script(set, n).as_bytes(),
    )?;
    let ipset_s = t.elapsed().as_secs_f64();
    for (cmd, v6) in [("iptables-restore", false), ("ip6tables-restore", true)] {
        sys::run_with_input(
            Command::new("ip").args(["netns", "exec", NETNS, cmd]),
            nft::iptables_rules(set, v6).as_bytes(),
        )?;
    }
    eprintln!("  ipset restore {n} prefixes: {ipset_s:.2}s");
    results.set_num("ipset_load_1m_s", ipset_s);
    flood(
        results,
        gen,
        "iptables_drop",
        "iptables + ipset: blocklisted flood (drop)",
        &sets.list,
    )?;
    flood(
        results,
        gen,
        "iptables_allowed",
        "iptables + ipset: allowlisted zone port (pass)",
        &sets.allowed,
    )?;
    sys::sh(
        Some(NETNS),
        "iptables -t raw -F; ip6tables -t raw -F; ipset destroy",
    )?;
    gen.detach("bench_pass", link)?;
    Ok(())
}
