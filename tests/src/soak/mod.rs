//! The soak (`cargo xtask soak [--minutes N]`): the e2e sandbox under
//! everything at once, for minutes, against one policy file.
//!
//! - the controller (this module): a reload every second alternating policies
//!   A and B, every 7th an invalid policy (it must be rejected with exit 1 and
//!   change nothing), and every minute `kill -9` of the daemon and a restart
//!   that adopts the pinned filter;
//! - `flood`: raw frames from the internet namespace at a capped rate;
//! - `hostile`: idle and slowloris connections and wrong credentials on the
//!   metrics port;
//! - `scrape`: /metrics in a loop, counters monotonic per series;
//! - `judge`: probes in a loop from the internet and mgmt namespaces, every
//!   result explained by A or B, and by the one known to be enforced where
//!   that is known (also while the daemon is down);
//! - `procstat`: the daemon's fds and RSS per incarnation.
//!
//! Every loop stops at the run's end (or on the first fatal error); the
//! sandbox's cleanup registry removes namespaces, pins and processes on any
//! exit, Ctrl-C included.
pub mod flood;
pub mod hostile;
pub mod judge;
pub mod procstat;
pub mod scrape;

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering},
        Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use crate::e2e::{
    daemon::{Daemon, Sandbox},
    http, policies,
    probe::ProbeLoop,
    scenarios::{metric, ms, stats, table_ab, usable, which_policy},
    topology::HOST_INET_IF,
};
use judge::{Judge, Policy, Timeline};
use procstat::Incarnation;

/// The metrics listener of both soak policies (basic auth on).
pub const METRICS: &str = "127.0.0.1:9470";
const USER: &str = "prom";
/// Between two probes of one probe thread.
const PROBE_PAUSE: Duration = Duration::from_millis(25);
/// Probe loops are replaced (overlapping, so without a gap) this often, and
/// their results judged, so memory stays flat however long the run.
const PROBE_SEGMENT: Duration = Duration::from_secs(15);
/// How long the daemon stays dead after `kill -9` before the restart.
const DOWN_FOR: Duration = Duration::from_secs(1);
/// Failures printed per kind (all are counted).
const SHOWN: usize = 20;

#[derive(Debug, Clone)]
pub struct Options {
    pub minutes: f64,
    pub flood_pps: u64,
    pub kill_every: Duration,
    pub reload_every: Duration,
    /// Every Nth reload is of an invalid policy.
    pub invalid_every: u64,
    pub idle_conns: usize,
    pub slowloris_conns: usize,
    pub wrong_clients: usize,
    pub scrape_every: Duration,
    pub verbose: bool,
    pub vlan: bool,
    /// Where to write every fd/RSS sample (CSV), if anywhere.
    pub samples: Option<PathBuf>,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            minutes: 30.0,
            flood_pps: 10_000,
            kill_every: Duration::from_secs(60),
            reload_every: Duration::from_secs(1),
            invalid_every: 7,
            idle_conns: 40,
            slowloris_conns: 8,
            wrong_clients: 4,
            scrape_every: Duration::from_millis(200),
            verbose: false,
            vlan: true,
            samples: None,
        }
    }
}

/// What every thread reads: stop, and which daemon runs.
#[derive(Default)]
pub struct Live {
    pub stop: AtomicBool,
    /// Odd while a daemon is up; +1 at each `kill -9` and each READY=1.
    pub epoch: AtomicU64,
    pub pid: AtomicI32,
}

impl Live {
    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }
    pub fn up(&self) -> bool {
        self.epoch() % 2 == 1
    }
    fn came_up(&self, pid: i32) {
        self.pid.store(pid, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
    fn went_down(&self) {
        self.pid.store(0, Ordering::SeqCst);
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }
}

/// Sets `stop` when dropped: whatever way the controller ends, the others do.
struct StopOnDrop<'a>(&'a Live);
impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::SeqCst);
    }
}

/// The two policies (with basic auth) and the invalid ones.
struct Texts {
    a: String,
    b: String,
}

impl Texts {
    fn of(&self, p: Policy) -> &str {
        match p {
            Policy::A => &self.a,
            Policy::B => &self.b,
        }
    }

    /// Invalid policy number `n`: a parse error, or (every other time) the
    /// other policy with a zone whose name makes the META record too large
    /// (rejected only when the loader writes it: the apply must still be
    /// all-or-nothing).
    fn invalid(&self, n: u64, current: Policy) -> (&'static str, String) {
        if n % 2 == 1 {
            ("typo'd key, host bits", policies::policy_invalid())
        } else {
            (
                "40,000-character zone name",
                format!(
                    "{}\n[[zone]]\nname  = \"{}\"\nports = [\"7100/tcp\"]\nallow = [\"any\"]\n",
                    self.of(current.other()),
                    "z".repeat(40_000)
                ),
            )
        }
    }
}

/// What the controller did and saw.
#[derive(Default)]
struct Control {
    reloads_ok: u64,
    reloads_rejected: u64,
    reload_took: Vec<Duration>,
    invalid_sent: u64,
    invalid_rejected: u64,
    invalid_kept_old: u64,
    restarts: u64,
    ready_after: Vec<Duration>,
    pins: Vec<usize>,
    problems: Vec<String>,
}

impl Control {
    fn problem(&mut self, s: String) {
        if self.problems.len() < SHOWN {
            self.problems.push(s);
        }
    }
}

fn at(run0: Instant) -> String {
    format!("{:.1} s", run0.elapsed().as_secs_f64())
}

fn output_text(o: &std::process::Output) -> String {
    let s = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let s = s.trim();
    // Some rejections echo their input: keep messages short.
    if s.chars().count() > 300 {
        format!(
            "{}… ({} bytes)",
            s.chars().take(300).collect::<String>(),
            s.len()
        )
    } else {
        s.to_string()
    }
}

/// Everything the soak needs from one place.
struct Run<'a> {
    o: &'a Options,
    sb: &'a Sandbox,
    live: &'a Live,
    timeline: &'a Timeline,
    incarnations: &'a Mutex<Vec<Incarnation>>,
    texts: Texts,
    policy: PathBuf,
    run0: Instant,
    deadline: Instant,
}

impl Run<'_> {
    fn letter(p: Policy) -> char {
        match p {
            Policy::A => 'A',
            Policy::B => 'B',
        }
    }

    fn started(&self, d: &Daemon) {
        let ready = Instant::now();
        self.timeline.daemon_ready(ready);
        self.incarnations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Incarnation::new(d.pid(), ready));
        self.live.came_up(d.pid());
    }

    /// The reload loop, with a restart instead of a reload once a minute.
    /// Returns the last daemon (to stop it in order) with the figures.
    fn control(&self, mut d: Daemon) -> (Option<Daemon>, Control, Result<()>) {
        let mut c = Control::default();
        let mut current = Policy::A;
        let mut n = 0u64;
        let mut tick = self.run0 + self.o.reload_every;
        let mut next_kill = self.run0 + self.o.kill_every;
        while tick < self.deadline {
            if let Some(wait) = tick.checked_duration_since(Instant::now()) {
                thread::sleep(wait);
            }
            tick += self.o.reload_every;
            if Instant::now() >= next_kill {
                next_kill += self.o.kill_every;
                match self.restart(&mut d, current, &mut c) {
                    Ok(d2) => d = d2,
                    Err(e) => return (None, c, Err(e)),
                }
                continue;
            }
            n += 1;
            if n.is_multiple_of(self.o.invalid_every) {
                if let Err(e) = self.invalid_reload(n / self.o.invalid_every, current, &mut c) {
                    return (Some(d), c, Err(e));
                }
            } else {
                current = self.valid_reload(current.other(), &mut c);
            }
        }
        (Some(d), c, Ok(()))
    }

    fn reload(&self, c: &mut Control) -> Result<std::process::Output> {
        let t = Instant::now();
        let out = self.sb.cli(&["reload"]);
        c.reload_took.push(t.elapsed());
        out
    }

    /// Rewrites the file with `next` and reloads; returns the policy the file
    /// now holds.
    fn valid_reload(&self, next: Policy, c: &mut Control) -> Policy {
        self.timeline.unknown_from(Instant::now());
        if let Err(e) = Sandbox::write_atomic(&self.policy, self.texts.of(next)) {
            c.problem(format!(
                "at {}: writing policy {next}: {e:#}",
                at(self.run0)
            ));
            return next.other();
        }
        match self.reload(c) {
            Ok(out) if out.status.success() => {
                self.timeline.known_from(Instant::now(), next);
                c.reloads_ok += 1;
            }
            Ok(out) => {
                c.reloads_rejected += 1;
                c.problem(format!(
                    "at {}: the valid policy {next} was rejected ({}): {}",
                    at(self.run0),
                    out.status,
                    output_text(&out)
                ));
            }
            Err(e) => c.problem(format!(
                "at {}: `portcullis reload` of policy {next}: {e:#}",
                at(self.run0)
            )),
        }
        next
    }

    /// Reloads invalid policy number `k`: exit 1, no new generation, and
    /// `current` still enforced; then puts `current` back into the file.
    fn invalid_reload(&self, k: u64, current: Policy, c: &mut Control) -> Result<()> {
        let (what, text) = self.texts.invalid(k, current);
        c.invalid_sent += 1;
        let gen0 = self.sb.status().map(|s| s.generation);
        Sandbox::write_atomic(&self.policy, &text)?;
        let when = at(self.run0);
        match self.reload(c) {
            Ok(out) if out.status.code() == Some(1) => {
                c.reloads_rejected += 1;
                c.invalid_rejected += 1;
            }
            Ok(out) => {
                if out.status.success() {
                    c.reloads_ok += 1;
                    // What is enforced is unknown from here to the next reload.
                    self.timeline.unknown_from(Instant::now());
                }
                c.problem(format!(
                    "at {when}: invalid policy ({what}): reload exited {}, expected 1: {}",
                    out.status,
                    output_text(&out)
                ));
            }
            Err(e) => c.problem(format!(
                "at {when}: `portcullis reload` of the invalid policy ({what}): {e:#}"
            )),
        }
        let seen = which_policy(self.sb);
        if seen == Some(Self::letter(current)) {
            c.invalid_kept_old += 1;
        } else {
            c.problem(format!(
                "at {when}: after the rejected reload ({what}) the probes see {} instead of {current}",
                seen.map_or("neither A nor B".to_string(), |p| format!("policy {p}"))
            ));
        }
        let gen1 = self.sb.status().map(|s| s.generation);
        match (gen0, gen1) {
            (Ok(g0), Ok(g1)) if g0 == g1 => {}
            (Ok(g0), Ok(g1)) => c.problem(format!(
                "at {when}: the rejected reload ({what}) moved the generation {g0} -> {g1}"
            )),
            (a, b) => c.problem(format!(
                "at {when}: `portcullis status` around the rejected reload: {:?} / {:?}",
                a.err().map(|e| format!("{e:#}")),
                b.err().map(|e| format!("{e:#}"))
            )),
        }
        // The file must be valid again before the watcher or a restart reads it.
        Sandbox::write_atomic(&self.policy, self.texts.of(current))
    }

    /// `kill -9`, a second without a daemon (the filter keeps enforcing
    /// `current`), then a new daemon over the pins with the same policy.
    fn restart(&self, d: &mut Daemon, current: Policy, c: &mut Control) -> Result<Daemon> {
        let when = at(self.run0);
        let gen0 = self.sb.status().map(|s| s.generation).ok();
        // Down before the signal: a request the kill cuts off is not a failure.
        self.live.went_down();
        let kill_at = Instant::now();
        self.timeline.daemon_down(kill_at);
        d.signal(Signal::SIGKILL)?;
        d.kill9();
        if let Some(last) = self
            .incarnations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .last_mut()
        {
            last.lived = last.ready.elapsed();
        }
        match self.sb.status() {
            Ok(st) => {
                if st.daemon_running {
                    c.problem(format!(
                        "at {when}: status says a daemon runs after kill -9"
                    ));
                }
                if gen0.is_some_and(|g| g != st.generation) {
                    c.problem(format!(
                        "at {when}: generation {} after kill -9, was {gen0:?}",
                        st.generation
                    ));
                }
            }
            Err(e) => c.problem(format!("at {when}: status with the daemon dead: {e:#}")),
        }
        if let Some(wait) = (kill_at + DOWN_FOR).checked_duration_since(Instant::now()) {
            thread::sleep(wait);
        }
        Sandbox::write_atomic(&self.policy, self.texts.of(current))?;
        let d2 = self
            .sb
            .start_daemon(&self.policy, &[])
            .with_context(|| format!("at {when}: restart {} after kill -9", c.restarts + 1))?;
        self.started(&d2);
        c.restarts += 1;
        c.ready_after.push(d2.ready_after);
        let pins = self.sb.pins().len();
        if c.pins.first().is_some_and(|&p| p != pins) {
            c.problem(format!(
                "at {when}: {pins} pins after restart {}, {} at the start",
                c.restarts, c.pins[0]
            ));
        }
        c.pins.push(pins);
        if self.o.verbose {
            eprintln!(
                "soak: at {when}: kill -9 {}, daemon {} ready after {}",
                d.pid(),
                d2.pid(),
                ms(d2.ready_after)
            );
        }
        Ok(d2)
    }

    /// Probe loops, replaced every segment, their results judged.
    fn probe(&self) -> (Judge, Vec<crate::e2e::probe::Probe>) {
        let table = table_ab();
        let probes = usable(self.sb, table.iter().map(|r| r.0).collect());
        let mut judge = Judge::new(&table);
        let start = || {
            (
                Instant::now(),
                ProbeLoop::start(&self.sb.topo, &probes, PROBE_PAUSE),
            )
        };
        let mut cur = start();
        while !self.live.stopped() {
            if cur.0.elapsed() < PROBE_SEGMENT {
                thread::sleep(Duration::from_millis(50));
                continue;
            }
            let (t0, lp) = std::mem::replace(&mut cur, start());
            let samples = lp.finish();
            judge.judge(t0, self.run0, &samples, &self.timeline.snapshot());
        }
        let (t0, lp) = cur;
        let samples = lp.finish();
        judge.judge(t0, self.run0, &samples, &self.timeline.snapshot());
        (judge, probes)
    }

    /// fds and RSS of the running daemon, once a second.
    fn sample(&self) {
        while !self.live.stopped() {
            let pid = self.live.pid.load(Ordering::SeqCst);
            if let Some(inc) = self
                .incarnations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .last_mut()
            {
                if inc.pid == pid && self.live.up() {
                    inc.sample();
                }
            }
            for _ in 0..10 {
                if self.live.stopped() {
                    break;
                }
                thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn scrape_once(sb: &Sandbox, addr: SocketAddr, auth: (&str, &str)) -> Result<Vec<http::Sample>> {
    let (code, body) = http::get(sb.host_ns(), addr, "/metrics", Some(auth))?;
    if code != 200 {
        bail!(
            "GET /metrics: HTTP {code}: {}",
            body.chars().take(200).collect::<String>()
        );
    }
    Ok(http::parse_metrics(&body))
}

fn blocklist_drops(m: &[http::Sample]) -> f64 {
    metric(
        m,
        "portcullis_packets_total",
        &[
            ("interface", HOST_INET_IF),
            ("reason", "blocklist"),
            ("verdict", "drop"),
        ],
    )
    .unwrap_or(0.0)
}

fn median(v: &mut [Duration]) -> String {
    if v.is_empty() {
        return "-".into();
    }
    v.sort();
    ms(v[v.len() / 2])
}

/// Runs the soak with the `portcullis` binary `bin`; prints a summary.
/// `Ok(false)` when a check failed.
pub fn run(bin: &Path, o: &Options) -> Result<bool> {
    let sb = Sandbox::new(bin, o.verbose, o.vlan)?;
    if let Some(why) = &sb.topo.vlan_skipped {
        eprintln!("soak: {why}");
    }
    let password = format!("{:016x}", rand::random::<u64>());
    let hash = policies::argon2_hash(&password)?;
    let texts = Texts {
        a: policies::policy_a_auth(METRICS, USER, &hash),
        b: policies::policy_b_auth(METRICS, USER, &hash),
    };
    let policy = policies::write(&sb.dir.join("soak"), "policy.toml", &texts.a)?;
    let addr: SocketAddr = METRICS.parse()?;
    let auth = (USER, password.as_str());
    let live = Live::default();
    let timeline = Timeline::default();
    let incarnations = Mutex::new(Vec::new());

    let d = sb.start_daemon(&policy, &[])?;
    let run0 = Instant::now();
    let r = Run {
        o,
        sb: &sb,
        live: &live,
        timeline: &timeline,
        incarnations: &incarnations,
        texts,
        policy,
        run0,
        deadline: run0 + Duration::from_secs_f64(o.minutes * 60.0),
    };
    r.started(&d);
    timeline.known_from(run0, Policy::A);
    let base = scrape_once(&sb, addr, auth).context("the first scrape")?;
    let pins0 = sb.pins().len();
    eprintln!(
        "soak: {:.1} min: reload every {} (every {}th invalid), kill -9 every {}, flood {} pps, \
         {} idle + {} slowloris connections, {} wrong-credential clients, scrape every {}",
        o.minutes,
        ms(o.reload_every),
        o.invalid_every,
        ms(o.kill_every),
        o.flood_pps,
        o.idle_conns,
        o.slowloris_conns,
        o.wrong_clients,
        ms(o.scrape_every)
    );

    let ns_host = sb.host_ns().to_string();
    let ns_inet = sb.topo.internet.name().to_string();
    let until = r.deadline + Duration::from_secs(5);
    let (ctl, flood, idle, slow, wrong, scraped, judged) = thread::scope(|s| {
        let flood = s.spawn(|| flood::run(&ns_inet, "eth0", o.flood_pps, &live.stop, until));
        let idle = s.spawn(|| hostile::hold(&ns_host, addr, o.idle_conns, false, &live));
        let slow = s.spawn(|| hostile::hold(&ns_host, addr, o.slowloris_conns, true, &live));
        let wrong: Vec<_> = (0..o.wrong_clients)
            .map(|_| {
                s.spawn(|| {
                    hostile::wrong_credentials(
                        &ns_host,
                        addr,
                        USER,
                        Duration::from_millis(250),
                        &live,
                    )
                })
            })
            .collect();
        let scraper = s.spawn(|| scrape::run(&ns_host, addr, auth, o.scrape_every, &live, run0));
        let sampler = s.spawn(|| r.sample());
        let prober = s.spawn(|| r.probe());
        let ctl = {
            let _stop = StopOnDrop(&live);
            r.control(d)
        };
        let join_err = |what: &str| anyhow::anyhow!("the {what} thread panicked");
        let mut w = hostile::WrongStats::default();
        for h in wrong {
            if let Ok(st) = h.join() {
                w.merge(st);
            }
        }
        let _ = sampler.join();
        (
            ctl,
            flood.join().map_err(|_| join_err("flood")).and_then(|r| r),
            idle.join().map_err(|_| join_err("idle")).and_then(|r| r),
            slow.join()
                .map_err(|_| join_err("slowloris"))
                .and_then(|r| r),
            w,
            scraper.join().map_err(|_| join_err("scrape")),
            prober.join().map_err(|_| join_err("probe")),
        )
    });
    let (d, c, ctl_res) = ctl;
    let mut failures: Vec<String> = Vec::new();
    if let Err(e) = &ctl_res {
        failures.push(format!("the run stopped early: {e:#}"));
    }
    let flood = flood?;
    let (idle, slow) = (idle?, slow?);
    let mut scraped = scraped?;
    let (judge, probes) = judged?;

    // The end: a last scrape (after the flood stopped), then SIGTERM, detach.
    let last = scrape_once(&sb, addr, auth);
    if let Ok(m) = &last {
        scraped
            .monotonic
            .observe(m, live.epoch().div_ceil(2), "the last scrape");
    }
    let last_log = d.as_ref().map(|d| d.log_tail(30)).unwrap_or_default();
    if let Some(mut d) = d {
        match d.terminate() {
            Ok(st) if st.success() => {}
            Ok(st) => failures.push(format!("the last daemon exited {st} after SIGTERM")),
            Err(e) => failures.push(format!("{e:#}")),
        }
    }
    let incs = incarnations.into_inner().unwrap_or_else(|e| e.into_inner());
    if let Some(path) = &o.samples {
        let mut csv = String::from("daemon,pid,seconds_since_ready,fds,sockets,rss_kib\n");
        for (i, inc) in incs.iter().enumerate() {
            for x in &inc.samples {
                csv.push_str(&format!(
                    "{},{},{:.1},{},{},{}\n",
                    i + 1,
                    inc.pid,
                    x.at.as_secs_f64(),
                    x.fds,
                    x.sockets,
                    x.rss_kib
                ));
            }
        }
        if let Err(e) = std::fs::write(path, csv) {
            failures.push(format!("writing {}: {e}", path.display()));
        }
    }
    if let Err(e) = sb.detach() {
        failures.push(format!("{e:#}"));
    }
    let pins_left = sb.pins();

    // ------------------------------------------------------------ summary
    let secs = run0.elapsed().as_secs_f64();
    println!(
        "soak: {:.1} min on kernel {}",
        secs / 60.0,
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
    );
    let (down_total, down_fewest) = judge.down_figures(&probes);
    println!(
        "soak: probes {} from {} probe threads: only-A {}, only-B {}, both {}; judged by neither {}",
        judge.total,
        probes.len(),
        judge.only_a,
        judge.only_b,
        judge.both,
        judge.neither
    );
    println!(
        "soak: probes while the enforced policy was known: {}, against it {}; \
         during the {} kill -9 windows: {} (fewest per probe and window {down_fewest}), against it {}",
        judge.strict,
        judge.strict_wrong,
        c.restarts,
        down_total,
        judge.down_wrong
    );
    let mut took = c.reload_took.clone();
    println!(
        "soak: reloads ok {} / rejected {} (invalid sent {}, rejected with exit 1 {}, old policy kept {}); reload {}",
        c.reloads_ok,
        c.reloads_rejected,
        c.invalid_sent,
        c.invalid_rejected,
        c.invalid_kept_old,
        stats(&mut took)
    );
    let mut ready = c.ready_after.clone();
    println!(
        "soak: restarts {} (kill -9, {} down, READY=1 after {}); pins {} at the start, {} after each restart",
        c.restarts,
        ms(DOWN_FOR),
        stats(&mut ready),
        pins0,
        {
            let mut p = c.pins.clone();
            p.dedup();
            format!("{p:?}")
        }
    );
    let mut st = scraped.took.clone();
    println!(
        "soak: scrapes ok {} / failed {} (+{} during restarts, not counted), {}; \
         {} counter series, {} comparisons, regressions {}",
        scraped.ok,
        scraped.failed,
        scraped.during_restart,
        median(&mut st).to_string() + " median",
        scraped.monotonic.series(),
        scraped.monotonic.comparisons,
        scraped.monotonic.regressions
    );
    let drops = last
        .as_ref()
        .map(|m| blocklist_drops(m) - blocklist_drops(&base))
        .unwrap_or(-1.0);
    println!(
        "soak: flood {} frames in {:.0} s ({:.0} pps, {} send errors), {} blocklisted; \
         blocklist drops counted on {HOST_INET_IF}: +{drops:.0}",
        flood.sent,
        flood.elapsed.as_secs_f64(),
        flood.sent as f64 / flood.elapsed.as_secs_f64().max(1e-9),
        flood.send_errors,
        flood.blocklisted
    );
    for (what, h) in [("idle", &idle), ("slowloris", &slow)] {
        println!(
            "soak: {what}: {} held, {} opened ({} failed), closed by the server {} (soonest after {}), \
             by restarts {}, renewed {}; longest held {:.1} s",
            h.target,
            h.opened,
            h.connect_failed,
            h.closed_by_server,
            h.shortest_server_close.map_or("-".into(), ms),
            h.closed_by_restart,
            h.renewed,
            h.longest.as_secs_f64()
        );
    }
    let (mut wu, mut wp) = (wrong.wrong_user.clone(), wrong.wrong_password.clone());
    println!(
        "soak: wrong credentials: {} requests: 401 {}, busy {}, admitted {}, other {:?}, errors {}{}; \
         median 401 for a wrong user {}, a wrong password {}",
        wrong.requests,
        wrong.unauthorized,
        wrong.busy,
        wrong.admitted,
        wrong.other_status,
        wrong.errors,
        wrong
            .first_error
            .as_ref()
            .map(|e| format!(" (first: {e})"))
            .unwrap_or_default(),
        median(&mut wu),
        median(&mut wp)
    );
    for (i, inc) in incs.iter().enumerate() {
        let f = inc.figures();
        let lived = if inc.lived.is_zero() {
            inc.ready.elapsed()
        } else {
            inc.lived
        };
        println!(
            "soak: daemon {} (pid {}, {:.0} s, {} samples): fds {} -> {} (max {}; not sockets {} -> {}), \
             RSS {:.1} (early max {:.1}) -> {:.1} MiB (peak {:.1}){}",
            i + 1,
            inc.pid,
            lived.as_secs_f64(),
            f.samples,
            f.fds_early,
            f.fds_late,
            f.fds_max,
            f.files_early,
            f.files_late,
            f.rss_early_kib as f64 / 1024.0,
            f.rss_early_max_kib as f64 / 1024.0,
            f.rss_late_kib as f64 / 1024.0,
            f.rss_peak_kib as f64 / 1024.0,
            if f.too_short {
                " (too short to compare)"
            } else {
                ""
            }
        );
        if let Some(why) = f.growth_problem() {
            failures.push(format!("daemon {} (pid {}) grew: {why}", i + 1, inc.pid));
        }
    }

    // ------------------------------------------------------------- checks
    if judge.neither > 0 {
        failures.push(format!(
            "{} probe results judged by neither policy:\n{}",
            judge.neither,
            judge.neither_shown.join("\n")
        ));
    }
    if judge.strict_wrong > 0 {
        failures.push(format!(
            "{} probe results against the policy known to be enforced:\n{}",
            judge.strict_wrong,
            judge.strict_shown.join("\n")
        ));
    }
    if judge.only_a == 0 || judge.only_b == 0 {
        failures.push(format!(
            "the probes never saw both policies (only-A {}, only-B {})",
            judge.only_a, judge.only_b
        ));
    }
    for (w, missing) in judge.unobserved(c.restarts as usize, &probes) {
        failures.push(format!(
            "kill -9 window {}: {missing} probes have no result in it",
            w + 1
        ));
    }
    failures.extend(c.problems.iter().cloned());
    if c.reloads_ok == 0 {
        failures.push("no reload succeeded".into());
    }
    if scraped.failed > 0 {
        failures.push(format!(
            "{} scrapes failed outside restarts:\n{}",
            scraped.failed,
            scraped.failures.join("\n")
        ));
    }
    if scraped.monotonic.regressions > 0 {
        failures.push(format!(
            "{} counter regressions:\n{}",
            scraped.monotonic.regressions,
            scraped.monotonic.shown.join("\n")
        ));
    }
    if let Err(e) = &last {
        failures.push(format!("the last scrape: {e:#}"));
    }
    // Frames from blocklisted sources reach the filter: its counter follows
    // (probes from blocklisted sources add a few more).
    if (drops as f64) < 0.9 * flood.blocklisted as f64 || flood.sent == 0 {
        failures.push(format!(
            "the flood sent {} blocklisted frames but {HOST_INET_IF} counted +{drops:.0} blocklist drops",
            flood.blocklisted
        ));
    }
    if wrong.admitted > 0 {
        failures.push(format!(
            "{} requests with wrong credentials got /metrics",
            wrong.admitted
        ));
    }
    if !pins_left.is_empty() {
        failures.push(format!("pins left after detach: {pins_left:?}"));
    }
    drop(sb);
    if failures.is_empty() {
        println!("soak: PASSED");
        return Ok(true);
    }
    println!("soak: FAILED ({} problems)", failures.len());
    for f in &failures {
        println!("  - {}", f.replace('\n', "\n    "));
    }
    if !last_log.is_empty() {
        println!("soak: the last daemon's log (tail):\n{last_log}");
    }
    Ok(false)
}
