//! The command line as an operator meets it, run as processes against the
//! real daemon: errors printed once, `-o json` failures, `detach --iface`,
//! `run --mode generic`, `--wait-iface`, and the systemd watchdog.
use std::{
    os::unix::net::UnixDatagram,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nix::{
    sys::signal::{kill, Signal},
    unistd::Pid,
};
use serde_json::Value;

use super::{
    cleanup, cmd,
    daemon::READY_TIMEOUT,
    policies,
    probe::{self, Outcome, Probe},
    scenarios::{check, Ctx, Exp},
    topology::{HOST_INET_IF, HOST_MGMT_IF, INET4, MGMT4},
};

/// `portcullis ARGS…` in the host namespace, exactly these arguments.
fn pc(cx: &Ctx, args: &[&str]) -> Result<std::process::Output> {
    cmd::run(
        &mut cx.sb.portcullis(args),
        super::patience(cmd::CMD_TIMEOUT),
    )
}

/// `portcullis ARGS…` with `input` on stdin (bounded like [`pc`]).
fn pc_stdin(
    cx: &Ctx,
    cwd: &std::path::Path,
    args: &[&str],
    input: &str,
) -> Result<std::process::Output> {
    use std::io::Write;
    // The binary's path may be relative to our directory, not `cwd`.
    let bin = std::fs::canonicalize(&cx.sb.bin)?;
    let mut c = std::process::Command::new("ip");
    c.args(["netns", "exec", cx.sb.host_ns()])
        .arg(bin)
        .args(args)
        .current_dir(cwd);
    let mut child = cmd::unblock_signals(&mut c)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(input.as_bytes())?;
    drop(stdin);
    let pid = child.id() as i32;
    let limit = super::patience(cmd::CMD_TIMEOUT);
    let waiter = thread::spawn(move || child.wait_with_output());
    let started = Instant::now();
    while !waiter.is_finished() {
        if started.elapsed() > limit {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            bail!("portcullis {args:?} did not finish within {limit:?}");
        }
        thread::sleep(Duration::from_millis(5));
    }
    waiter
        .join()
        .map_err(|_| anyhow::anyhow!("waiter panicked"))?
        .context("waiting for portcullis")
}

/// `check -q` prints nothing on success; `check -` reads stdin and names it
/// `<stdin>`; `hash-password` reads a line and prints an argon2id string.
pub fn check_conventions(cx: &mut Ctx) -> Result<()> {
    let keep = cx.keep_policy.display().to_string();
    let out = pc(cx, &["check", "-q", &keep])?;
    ensure!(
        out.status.success(),
        "check -q of keep.toml: {:?}",
        text(&out)
    );
    ensure!(out.stdout.is_empty(), "check -q printed {:?}", text(&out).0);
    let out = pc(cx, &["check", &keep])?;
    ensure!(
        out.status.success() && text(&out).0.contains("policy OK"),
        "check FILE: {:?}",
        text(&out)
    );
    let bad =
        "version = 1\n[[zone]]\nname = \"a\"\nports = [\"22/tcp\"]\nallow = [\"10.0.0.0/33\"]\n";
    let out = pc_stdin(cx, &cx.sb.dir, &["check", "-p", "-"], bad)?;
    let (_, err) = text(&out);
    ensure!(
        out.status.code() == Some(1),
        "check -p - of a bad policy: {err}"
    );
    ensure!(
        err.contains("<stdin>:5:10: error: prefix length /33"),
        "{err}"
    );
    let out = pc_stdin(
        cx,
        &cx.sb.dir,
        &["check", "-", "-q"],
        &std::fs::read_to_string(&keep)?,
    )?;
    // keep.toml's list files are relative to its directory, not ours.
    ensure!(
        text(&out).1.contains("cannot read list file `./lists/"),
        "list files of a policy on stdin resolve from the current directory: {:?}",
        text(&out)
    );
    let examples = cx.keep_policy.parent().context("keep.toml's directory")?;
    let out = pc_stdin(
        cx,
        examples,
        &["check", "-", "-q"],
        &std::fs::read_to_string(&keep)?,
    )?;
    ensure!(
        out.status.success() && out.stdout.is_empty(),
        "check - in keep.toml's directory: {:?}",
        text(&out)
    );
    let out = pc_stdin(cx, &cx.sb.dir, &["hash-password"], "correct horse\n")?;
    let (phc, err) = text(&out);
    ensure!(out.status.success(), "hash-password: {err}");
    ensure!(
        phc.trim().starts_with("$argon2id$v=19$"),
        "hash-password printed {phc:?}"
    );
    Ok(())
}

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `portcullis run` with a bad policy prints each diagnostic once; `reload`
/// against a socket nobody answers prints "Connection refused" once, and
/// with `-o json` a JSON failure on stdout with the same exit status.
pub fn errors_printed_once(cx: &mut Ctx) -> Result<()> {
    let bad = cx.policy(
        "bad.toml",
        "version = 1\n[[zone]]\nname = \"a\"\nports = [\"22/tcp\"]\nallow = [\"10.0.0.0/33\"]\n",
    )?;
    let out = cx.sb.cli(&[
        "run",
        "--policy",
        &bad.display().to_string(),
        "--iface",
        HOST_INET_IF,
        "--pin-root",
        &cx.sb.pin_root.display().to_string(),
        "--control-socket",
        &cx.sb.control.display().to_string(),
    ])?;
    let (_, err) = text(&out);
    ensure!(!out.status.success(), "run accepted a bad policy:\n{err}");
    for needle in ["/33 is out of range", "help: IPv4 prefixes are /0 to /32"] {
        let n = err.matches(needle).count();
        ensure!(n == 1, "{needle:?} printed {n} times by run:\n{err}");
    }
    ensure!(cx.sb.pins().is_empty(), "a rejected start left pins");

    // A socket file with no daemon behind it (what kill -9 leaves).
    let dead = cx.sb.dir.join("run/dead.sock");
    drop(std::os::unix::net::UnixListener::bind(&dead).context("binding a dead socket")?);
    let _undo = cleanup::register(format!("remove {}", dead.display()), {
        let d = dead.clone();
        move || {
            let _ = std::fs::remove_file(&d);
        }
    });
    let sock = dead.display().to_string();
    let out = pc(cx, &["reload", "--control-socket", &sock])?;
    let (_, err) = text(&out);
    ensure!(out.status.code() == Some(1), "reload exit {:?}", out.status);
    let n = err.matches("Connection refused").count();
    ensure!(n == 1, "\"Connection refused\" printed {n} times:\n{err}");
    cx.note(format!("reload without a daemon: {}", err.trim()));

    let out = pc(cx, &["reload", "--control-socket", &sock, "-o", "json"])?;
    let (stdout, _) = text(&out);
    ensure!(
        out.status.code() == Some(1),
        "reload -o json exit {:?}",
        out.status
    );
    let v: Value = serde_json::from_str(&stdout)
        .with_context(|| format!("reload -o json printed no JSON: {stdout:?}"))?;
    ensure!(v["ok"] == Value::Bool(false), "ok is not false: {v}");
    let e = v["error"].as_str().unwrap_or_default();
    ensure!(e.matches("Connection refused").count() == 1, "error: {e:?}");

    // The other read/control commands: JSON on stdout, exit status kept.
    let missing = cx.sb.dir.join("no-such-root").display().to_string();
    let control = cx.sb.control.display().to_string();
    let out = pc(
        cx,
        &[
            "detach",
            "--pin-root",
            &missing,
            "--iface",
            "nope0",
            "--control-socket",
            &control,
            "-o",
            "json",
        ],
    )?;
    ensure!(
        out.status.code() == Some(1),
        "detach --iface of nothing: {:?}",
        out.status
    );
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("detach -o json failure: {:?}", text(&out)))?;
    ensure!(
        v["ok"] == Value::Bool(false) && v["error"].is_string(),
        "{v}"
    );
    ensure!(
        out.stderr.is_empty() || !text(&out).1.contains("error:"),
        "printed twice: {:?}",
        text(&out)
    );
    let out = pc(
        cx,
        &[
            "status",
            "--pin-root",
            &missing,
            "--control-socket",
            &control,
            "-o",
            "json",
        ],
    )?;
    ensure!(!out.status.success(), "status of nothing succeeded");
    serde_json::from_slice::<Value>(&out.stdout)
        .with_context(|| format!("status -o json of nothing: {:?}", text(&out)))?;
    Ok(())
}

/// Which interfaces `status -o json` lists, with their mode.
fn status_ifaces(cx: &Ctx) -> Result<Vec<(String, String)>> {
    Ok(cx.sb.status()?.interfaces)
}

/// `detach --iface inet0` after the daemon stopped: inet0 is unfiltered,
/// mgmt0 keeps the filter and its pin, status lists mgmt0 only. While a
/// daemon runs, `detach --iface` refuses and changes nothing.
pub fn detach_one_iface(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("detach-one.toml", &policies::policy_b())?;
    let inet_blocked = Probe::tcp(INET4, 8880);
    let mgmt_blocked = Probe::udp(MGMT4, 7008);
    let mut d = cx.start(&p, &[])?;
    check(
        cx.sb,
        &[(inet_blocked, Exp::Blocked), (mgmt_blocked, Exp::Blocked)],
    )?;
    let control = cx.sb.control.display().to_string();
    let out = cx.sb.cli(&[
        "detach",
        "--iface",
        HOST_INET_IF,
        "--control-socket",
        &control,
    ])?;
    ensure!(
        !out.status.success(),
        "detach --iface went ahead under a running daemon"
    );
    ensure!(
        cx.sb.pin_root.join("links").join(HOST_INET_IF).exists(),
        "a refused detach --iface removed the pin"
    );
    let st = d.terminate()?;
    ensure!(st.success(), "daemon exit after SIGTERM: {st}");

    let out = cx.sb.cli(&[
        "detach",
        "--iface",
        HOST_INET_IF,
        "--control-socket",
        &control,
        "-o",
        "json",
    ])?;
    let (stdout, err) = text(&out);
    ensure!(out.status.success(), "detach --iface failed: {err}");
    let v: Value = serde_json::from_str(&stdout).context("detach -o json")?;
    ensure!(
        v["detached"] == serde_json::json!([HOST_INET_IF])
            && v["remaining"] == serde_json::json!([HOST_MGMT_IF]),
        "detach --iface answered {v}"
    );
    let deadline = Instant::now() + super::patience(Duration::from_secs(3));
    while probe::run_batch(&cx.sb.topo, &[inet_blocked])[0] != Outcome::Open {
        if Instant::now() > deadline {
            bail!("{HOST_INET_IF} still filtered after detach --iface");
        }
        thread::sleep(Duration::from_millis(20));
    }
    check(cx.sb, &[(mgmt_blocked, Exp::Blocked)])
        .context("the other interface must keep its filter")?;
    ensure!(
        !cx.sb.pin_root.join("links").join(HOST_INET_IF).exists()
            && cx.sb.pin_root.join("links").join(HOST_MGMT_IF).exists(),
        "pins after detach --iface: {:?}",
        cx.sb.pins()
    );
    let listed: Vec<String> = status_ifaces(cx)?.into_iter().map(|i| i.0).collect();
    ensure!(listed == [HOST_MGMT_IF], "status lists {listed:?}");
    let out = cx.sb.cli(&[
        "detach",
        "--iface",
        HOST_INET_IF,
        "--control-socket",
        &control,
    ])?;
    ensure!(
        !out.status.success() && text(&out).1.contains("no filter is pinned"),
        "a second detach --iface: {:?}",
        text(&out)
    );
    cx.sb.detach()?;
    Ok(())
}

/// `run --mode generic` attaches in generic mode (native would work on veth).
pub fn mode_generic_is_forced(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("generic.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &["--mode", "generic"])?;
    let modes = status_ifaces(cx)?;
    ensure!(
        modes.len() == 2 && modes.iter().all(|(_, m)| m == "generic"),
        "modes with --mode generic: {modes:?}"
    );
    check(cx.sb, &[(Probe::tcp(INET4, 8889), Exp::Blocked)])?;
    d.terminate()?;
    cx.sb.detach()?;
    let mut d = cx.start(&p, &[])?;
    let modes = status_ifaces(cx)?;
    ensure!(
        modes.iter().all(|(_, m)| m == "native"),
        "default modes on veth: {modes:?}"
    );
    d.terminate()?;
    cx.sb.detach()?;
    Ok(())
}

const LATE: &str = "pc-late0";

/// `run --wait-iface 20` with an interface that appears 1.5 s later: the
/// daemon waits, then attaches to it. Without the option it fails at once.
pub fn wait_for_a_late_iface(cx: &mut Ctx) -> Result<()> {
    let ns = cx.sb.host_ns().to_string();
    let p = cx.policy("late.toml", &policies::policy_a())?;
    let undo_ns = ns.clone();
    let _veth = cleanup::register(format!("delete {LATE} in {ns}"), move || {
        let _ = cmd::ip(&["-n", &undo_ns, "link", "del", LATE]);
    });
    let started = Instant::now();
    let out = cx.sb.cli(&[
        "run",
        "--policy",
        &p.display().to_string(),
        "--iface",
        LATE,
        "--pin-root",
        &cx.sb.pin_root.display().to_string(),
        "--control-socket",
        &cx.sb.control.display().to_string(),
    ])?;
    ensure!(!out.status.success(), "run attached to a missing interface");
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "without --wait-iface a missing interface must fail at once"
    );
    cx.sb.remove_pins();

    let creator_ns = ns.clone();
    let creator = thread::spawn(move || {
        thread::sleep(Duration::from_millis(1500));
        cmd::ip(&[
            "-n",
            &creator_ns,
            "link",
            "add",
            LATE,
            "type",
            "veth",
            "peer",
            "name",
            "pc-late1",
        ])
        .and_then(|_| cmd::ip(&["-n", &creator_ns, "link", "set", LATE, "up"]))
    });
    let d = cx.start(&p, &["--iface", LATE, "--wait-iface", "20"]);
    creator
        .join()
        .map_err(|_| anyhow::anyhow!("veth thread panicked"))??;
    let mut d = d?;
    ensure!(
        d.ready_after >= Duration::from_millis(1400),
        "READY=1 after {:?}, before the interface existed",
        d.ready_after
    );
    let listed: Vec<String> = status_ifaces(cx)?.into_iter().map(|i| i.0).collect();
    ensure!(listed.iter().any(|i| i == LATE), "status lists {listed:?}");
    d.terminate()?;
    cx.sb.detach()?;
    Ok(())
}

/// With WATCHDOG_USEC=1 s (as `WatchdogSec=1` would set), the daemon sends
/// WATCHDOG=1 about every 0.5 s after READY=1.
pub fn watchdog_pings(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("watchdog.toml", &policies::policy_a())?;
    let notify_path = cx.sb.dir.join("run/watchdog-notify.sock");
    let _ = std::fs::remove_file(&notify_path);
    let notify = UnixDatagram::bind(&notify_path)?;
    notify.set_read_timeout(Some(Duration::from_millis(100)))?;
    let mut c = cx.sb.portcullis(&[
        "run",
        "--policy",
        &p.display().to_string(),
        "--iface",
        HOST_INET_IF,
        "--pin-root",
        &cx.sb.pin_root.display().to_string(),
        "--control-socket",
        &cx.sb.control.display().to_string(),
    ]);
    c.env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "1000000")
        .env_remove("WATCHDOG_PID")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let mut child = cmd::unblock_signals(&mut c).spawn()?;
    let pid = child.id() as i32;
    let _kill = cleanup::register(format!("kill daemon {pid}"), move || {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    });
    let mut buf = [0u8; 4096];
    let mut ready = None;
    let mut pings = Vec::new();
    let limit = super::patience(READY_TIMEOUT);
    let started = Instant::now();
    while pings.len() < 4 && started.elapsed() < limit {
        if let Ok(Some(st)) = child.try_wait() {
            bail!("the daemon exited ({st})");
        }
        let Ok(n) = notify.recv(&mut buf) else {
            continue;
        };
        let msg = String::from_utf8_lossy(&buf[..n]);
        if msg.lines().any(|l| l == "READY=1") {
            ready = Some(Instant::now());
        }
        if ready.is_some() && msg.lines().any(|l| l == "WATCHDOG=1") {
            pings.push(Instant::now());
        }
    }
    let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    let _ = cmd::wait_bounded(&mut child, super::patience(Duration::from_secs(10)));
    let _ = std::fs::remove_file(&notify_path);
    ensure!(ready.is_some(), "no READY=1");
    ensure!(
        pings.len() >= 4,
        "{} WATCHDOG=1 within {limit:?}",
        pings.len()
    );
    let gaps: Vec<Duration> = pings.windows(2).map(|w| w[1] - w[0]).collect();
    ensure!(
        gaps.iter().all(|g| *g < Duration::from_millis(900)),
        "watchdog gaps {gaps:?} (want about 500 ms, under the 1 s limit)"
    );
    cx.note(format!("WATCHDOG=1 gaps {gaps:?}"));
    cx.sb.detach()?;
    Ok(())
}
