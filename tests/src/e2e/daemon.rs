//! The sandbox (topology, listeners, a private bpffs and run directory) and the
//! `portcullis` daemon and CLI running inside its host namespace.
//!
//! `ip netns exec` remounts /sys privately, so pins live on a bpffs mounted at
//! `/tmp/pc<pid>/bpffs` (visible inside and outside), and the control and
//! notify sockets in `/tmp/pc<pid>/run`.
use std::{
    fs,
    io::{BufRead, BufReader},
    net::SocketAddr,
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    sync::{
        atomic::{AtomicU32, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use nix::{
    mount::{mount, umount2, MntFlags, MsFlags},
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use super::{
    cleanup::{self, Guard},
    cmd::{self, CMD_TIMEOUT},
    http,
    probe::Listeners,
    topology::{Topology, HOST_INET_IF, HOST_MGMT_IF},
};

/// How long a daemon may take to report READY=1.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a daemon may take to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// The metrics address of every policy that does not set one.
pub const DEFAULT_METRICS: &str = "127.0.0.1:9469";

pub struct Sandbox {
    pub bin: PathBuf,
    pub dir: PathBuf,
    pub pin_root: PathBuf,
    pub control: PathBuf,
    pub verbose: bool,
    // Drop order: listeners, namespaces, bpffs, directory.
    pub listeners: Listeners,
    pub topo: Topology,
    _mount: Guard,
    _dir: Guard,
}

impl Sandbox {
    /// Builds everything under the run prefix `pc<pid>`; the VLAN path only
    /// with `vlan` (and where tcx exists, see [`Topology::build`]).
    pub fn new(bin: &Path, verbose: bool, vlan: bool) -> Result<Sandbox> {
        if !bin.is_file() {
            bail!(
                "{} not found: build it first (cargo build --release -p filter-user)",
                bin.display()
            );
        }
        let prefix = Topology::default_prefix();
        let dir = PathBuf::from(format!("/tmp/{prefix}"));
        fs::create_dir_all(dir.join("run"))
            .with_context(|| format!("creating {}", dir.display()))?;
        let d = dir.clone();
        let dir_guard = cleanup::register(format!("remove {}", dir.display()), move || {
            let _ = fs::remove_dir_all(&d);
        });
        let bpffs = dir.join("bpffs");
        fs::create_dir_all(&bpffs)?;
        mount(
            Some("bpf"),
            &bpffs,
            Some("bpf"),
            MsFlags::empty(),
            None::<&str>,
        )
        .with_context(|| format!("mounting bpffs on {}", bpffs.display()))?;
        let p = bpffs.clone();
        let mount_guard = cleanup::register(format!("unmount {}", bpffs.display()), move || {
            if let Err(e) = umount2(&p, MntFlags::MNT_DETACH) {
                eprintln!("cleanup: unmounting {}: {e}", p.display());
            }
        });
        let topo = Topology::build(&prefix, vlan)?;
        let listeners = Listeners::start(topo.host_ns())?;
        super::probe::warm_up(&topo, super::patience(Duration::from_secs(10)))?;
        Ok(Sandbox {
            bin: bin.to_path_buf(),
            control: dir.join("run/control.sock"),
            dir,
            // Like /sys/fs/bpf/portcullis: a directory on a bpffs.
            pin_root: bpffs.join("portcullis"),
            verbose,
            listeners,
            topo,
            _mount: mount_guard,
            _dir: dir_guard,
        })
    }

    pub fn host_ns(&self) -> &str {
        self.topo.host_ns()
    }

    /// The daemon's `--state-dir` (bans), under the run directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// `ip netns exec <host> portcullis ARGS…`.
    pub fn portcullis(&self, args: &[&str]) -> Command {
        self.portcullis_of(&self.bin, args)
    }

    /// As [`Sandbox::portcullis`], with another build's binary.
    pub fn portcullis_of(&self, bin: &Path, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", self.host_ns()])
            .arg(bin)
            .args(args);
        c
    }

    /// A CLI call with the sandbox's pin root or control socket added where
    /// the subcommand takes them.
    pub fn cli(&self, args: &[&str]) -> Result<Output> {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let sub = args.first().copied().unwrap_or_default();
        if matches!(sub, "status" | "detach") {
            all.push("--pin-root".into());
            all.push(self.pin_root.display().to_string());
        }
        if matches!(sub, "status" | "reload" | "ban") {
            all.push("--control-socket".into());
            all.push(self.control.display().to_string());
        }
        let refs: Vec<&str> = all.iter().map(String::as_str).collect();
        cmd::run(&mut self.portcullis(&refs), super::patience(CMD_TIMEOUT))
    }

    /// `status --output json`, parsed.
    pub fn status(&self) -> Result<Status> {
        let out = self.cli(&["status", "--output", "json"])?;
        if !out.status.success() {
            bail!(
                "portcullis status failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        let v: Value = serde_json::from_slice(&out.stdout).with_context(|| {
            format!(
                "status is not JSON: {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })?;
        Status::from_json(&v)
    }

    /// `portcullis reload`: (exit success, stdout + stderr).
    pub fn reload(&self) -> Result<(bool, String)> {
        let out = self.cli(&["reload"])?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok((out.status.success(), text))
    }

    /// `portcullis detach`, checked.
    pub fn detach(&self) -> Result<()> {
        let out = self.cli(&["detach"])?;
        if !out.status.success() {
            bail!(
                "portcullis detach failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(())
    }

    /// Files left under the pin root.
    pub fn pins(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>, depth: usize) {
            if depth > 8 {
                return;
            }
            if let Ok(rd) = fs::read_dir(p) {
                for e in rd.flatten() {
                    let path = e.path();
                    if path.is_dir() {
                        walk(&path, out, depth + 1);
                    } else {
                        out.push(path);
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.pin_root, &mut out, 0);
        out
    }

    /// Removes every pin (and directory) under the pin root by hand.
    pub fn remove_pins(&self) {
        for p in self.pins() {
            let _ = fs::remove_file(p);
        }
        let _ = fs::remove_dir_all(&self.pin_root);
    }

    /// GET /metrics from inside the host namespace.
    pub fn metrics_raw(&self, addr: &str, auth: Option<(&str, &str)>) -> Result<(u16, String)> {
        let a: SocketAddr = addr.parse().context("metrics address")?;
        http::get(self.host_ns(), a, "/metrics", auth)
    }

    /// GET /metrics (no auth) on the default address, parsed; an error unless 200.
    pub fn metrics(&self) -> Result<Vec<http::Sample>> {
        let (code, body) = self.metrics_raw(DEFAULT_METRICS, None)?;
        if code != 200 {
            bail!("GET /metrics: HTTP {code}: {body}");
        }
        Ok(http::parse_metrics(&body))
    }

    /// Starts `portcullis run` on `inet0` and `mgmt0` with `policy` and waits
    /// for READY=1.
    pub fn start_daemon(&self, policy: &Path, extra: &[&str]) -> Result<Daemon> {
        Daemon::start(self, &self.bin, policy, extra, &[])
    }

    /// As [`Sandbox::start_daemon`], with extra environment variables.
    pub fn start_daemon_env(
        &self,
        policy: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        Daemon::start(self, &self.bin, policy, extra, env)
    }

    /// As [`Sandbox::start_daemon`], with another build's binary (an earlier
    /// release, for the upgrade scenarios).
    pub fn start_daemon_of(&self, bin: &Path, policy: &Path, extra: &[&str]) -> Result<Daemon> {
        Daemon::start(self, bin, policy, extra, &[])
    }

    /// Writes `text` to `path` atomically (temp file + rename).
    pub fn write_atomic(path: &Path, text: &str) -> Result<()> {
        let tmp = path.with_extension("tmp~");
        fs::write(&tmp, text).with_context(|| format!("writing {}", tmp.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
        Ok(())
    }
}

/// `status --output json`.
#[derive(Debug, Clone)]
pub struct Status {
    pub daemon_running: bool,
    pub generation: u64,
    pub policy_hash: String,
    pub interfaces: Vec<(String, String)>,
    pub counters: Vec<Counter>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub interface: String,
    pub zone: String,
    pub reason: String,
    pub verdict: String,
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    pub fn key(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.interface, self.zone, self.reason, self.verdict
        )
    }
}

impl Status {
    pub fn from_json(v: &Value) -> Result<Status> {
        let s = |v: &Value, k: &str| -> Result<String> {
            v.get(k)
                .and_then(Value::as_str)
                .map(str::to_string)
                .with_context(|| format!("status JSON: no string `{k}` in {v}"))
        };
        let n = |v: &Value, k: &str| -> Result<u64> {
            v.get(k)
                .and_then(Value::as_u64)
                .with_context(|| format!("status JSON: no number `{k}` in {v}"))
        };
        let arr = |k: &str| -> Vec<Value> {
            v.get(k)
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        };
        Ok(Status {
            daemon_running: v
                .get("daemon_running")
                .and_then(Value::as_bool)
                .context("status JSON: no `daemon_running`")?,
            generation: n(v, "generation")?,
            policy_hash: s(v, "policy_hash").unwrap_or_default(),
            interfaces: arr("interfaces")
                .iter()
                .map(|i| Ok((s(i, "name")?, s(i, "mode")?)))
                .collect::<Result<_>>()?,
            counters: arr("counters")
                .iter()
                .map(|c| {
                    Ok(Counter {
                        interface: s(c, "interface")?,
                        zone: s(c, "zone")?,
                        reason: s(c, "reason")?,
                        verdict: s(c, "verdict")?,
                        packets: n(c, "packets")?,
                        bytes: n(c, "bytes")?,
                    })
                })
                .collect::<Result<_>>()?,
        })
    }

    /// Packets counted for (interface, zone, reason, verdict); 0 if absent.
    pub fn packets(&self, interface: &str, zone: &str, reason: &str, verdict: &str) -> u64 {
        self.counters
            .iter()
            .filter(|c| {
                c.interface == interface
                    && c.zone == zone
                    && c.reason == reason
                    && c.verdict == verdict
            })
            .map(|c| c.packets)
            .sum()
    }
}

static NOTIFY_SEQ: AtomicU32 = AtomicU32::new(0);

/// A running `portcullis run`; SIGKILLed (and reaped) on drop if still running.
pub struct Daemon {
    child: Child,
    pid: i32,
    log: Arc<Mutex<Vec<String>>>,
    guard: Option<Guard>,
    /// From spawn to READY=1.
    pub ready_after: Duration,
}

impl Daemon {
    fn start(
        sb: &Sandbox,
        bin: &Path,
        policy: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Result<Daemon> {
        let n = NOTIFY_SEQ.fetch_add(1, Ordering::Relaxed);
        let notify_path = sb.dir.join(format!("run/notify-{n}.sock"));
        let _ = fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)
            .with_context(|| format!("binding {}", notify_path.display()))?;
        notify.set_read_timeout(Some(Duration::from_millis(100)))?;

        let policy_s = policy.display().to_string();
        let pin_root = sb.pin_root.display().to_string();
        let control = sb.control.display().to_string();
        let mut args = vec![
            "run",
            "--policy",
            &policy_s,
            "--iface",
            HOST_INET_IF,
            "--iface",
            HOST_MGMT_IF,
            "--pin-root",
            &pin_root,
            "--control-socket",
            &control,
        ];
        // Earlier releases (upgrade scenarios) have no bans and no --state-dir.
        let state = sb.state_dir().display().to_string();
        if bin == sb.bin {
            args.extend_from_slice(&["--state-dir", &state]);
        }
        args.extend_from_slice(extra);
        let mut cmd = sb.portcullis_of(bin, &args);
        cmd.envs(env.iter().copied());
        cmd.env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        let started = Instant::now();
        let mut child = cmd::unblock_signals(&mut cmd)
            .spawn()
            .with_context(|| format!("starting {cmd:?}"))?;
        // `ip netns exec` execs the command: this is the daemon's pid.
        let pid = child.id() as i32;
        let guard = cleanup::register(format!("kill daemon {pid}"), move || {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        });
        let log = Arc::new(Mutex::new(Vec::new()));
        for (stream, tag) in [
            (
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                "out",
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
                "err",
            ),
        ] {
            let Some(stream) = stream else { continue };
            let log = log.clone();
            let verbose = sb.verbose;
            thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    if verbose {
                        eprintln!("  [portcullis {pid} {tag}] {line}");
                    }
                    let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                    if l.len() < 100_000 {
                        l.push(line);
                    }
                }
            });
        }
        let mut d = Daemon {
            child,
            pid,
            log,
            guard: Some(guard),
            ready_after: Duration::ZERO,
        };
        let mut buf = [0u8; 4096];
        loop {
            let limit = super::patience(READY_TIMEOUT);
            if started.elapsed() > limit {
                d.kill9();
                bail!(
                    "daemon sent no READY=1 within {limit:?}; its log:\n{}",
                    d.log_tail(60)
                );
            }
            if let Ok(Some(st)) = d.child.try_wait() {
                thread::sleep(Duration::from_millis(50)); // let the log threads drain
                bail!(
                    "daemon exited ({st}) before READY=1; its log:\n{}",
                    d.log_tail(60)
                );
            }
            match notify.recv(&mut buf) {
                Ok(len) => {
                    let msg = String::from_utf8_lossy(&buf[..len]);
                    if msg.lines().any(|l| l.trim() == "READY=1") {
                        d.ready_after = started.elapsed();
                        break;
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock
                            | std::io::ErrorKind::TimedOut
                            // A signal to the harness (SIGCHLD) is no error.
                            | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => bail!("notify socket: {e}"),
            }
        }
        drop(notify);
        let _ = fs::remove_file(&notify_path);
        Ok(d)
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn signal(&self, sig: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid), sig).with_context(|| format!("kill -{sig} {}", self.pid))
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM and wait (bounded); SIGKILL past [`STOP_TIMEOUT`] (an error).
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        if let Ok(Some(st)) = self.child.try_wait() {
            return Ok(st);
        }
        self.signal(Signal::SIGTERM)?;
        let limit = super::patience(STOP_TIMEOUT);
        match cmd::wait_bounded(&mut self.child, limit) {
            Some(st) => Ok(st),
            None => bail!(
                "daemon {} did not exit within {limit:?} of SIGTERM (killed); log:\n{}",
                self.pid,
                self.log_tail(40)
            ),
        }
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }

    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn log_tail(&self, n: usize) -> String {
        let l = self.log();
        l[l.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.kill9();
        if let Some(g) = self.guard.take() {
            g.disarm();
        }
    }
}
