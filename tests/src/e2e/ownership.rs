//! One owner per filter, and a status that tells the truth: a second daemon on
//! the same pin root is refused with the owner's PID; `detach` through a
//! socket that does not reach the owner refuses (and `--force` stops it
//! first); pins removed under a live daemon make status, reload and metrics
//! say "not enforcing"; a failed start leaves nothing behind; status names the
//! daemon's PID, version and last reload.
use std::{
    path::Path,
    process::Output,
    thread,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::{
    cmd,
    daemon::STOP_TIMEOUT,
    policies,
    scenarios::{wait_until, Ctx},
    topology::{HOST_INET_IF, HOST_MGMT_IF},
};

/// How often the waits below poll.
const POLL: Duration = Duration::from_millis(100);

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `portcullis ARGS…` in the host namespace, bounded.
fn cli(cx: &Ctx, args: &[&str]) -> Result<Output> {
    cmd::run(
        &mut cx.sb.portcullis(args),
        super::patience(Duration::from_secs(30)),
    )
}

/// `status -o json` (any exit code): (exit code, document).
fn status_json(cx: &Ctx) -> Result<(i32, Value)> {
    let out = cx.sb.cli(&["status", "--output", "json"])?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("status is not JSON:\n{}", text(&out)))?;
    Ok((out.status.code().unwrap_or(-1), v))
}

fn run_args<'a>(
    policy: &'a str,
    pins: &'a str,
    socket: &'a str,
    ifaces: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "run",
        "--policy",
        policy,
        "--pin-root",
        pins,
        "--control-socket",
        socket,
    ];
    for i in ifaces {
        args.extend(["--iface", i]);
    }
    args
}

pub fn second_daemon_is_refused_with_the_owners_pid(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("owner.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    let before = cx.sb.status()?.generation;
    let other_socket = cx.sb.dir.join("run/second.sock").display().to_string();
    let (policy, pins) = (
        p.display().to_string(),
        cx.sb.pin_root.display().to_string(),
    );
    let out = cli(
        cx,
        &run_args(&policy, &pins, &other_socket, &[HOST_INET_IF, HOST_MGMT_IF]),
    )?;
    let said = text(&out);
    ensure!(
        !out.status.success(),
        "a second daemon started on the same pin root:\n{said}"
    );
    ensure!(
        said.contains(&format!("PID {}", d.pid())),
        "the refusal does not name the owner's PID {}:\n{said}",
        d.pid()
    );
    ensure!(
        !Path::new(&other_socket).exists(),
        "the refused daemon left its socket"
    );
    ensure!(d.running(), "the owner died");
    let after = cx.sb.status()?.generation;
    ensure!(
        after == before,
        "the refused daemon touched the filter: generation {before} -> {after}"
    );
    cx.note(format!(
        "refused: {}",
        said.lines()
            .find(|l| l.contains("PID"))
            .unwrap_or("")
            .trim()
    ));
    d.terminate()?;
    thread::sleep(Duration::from_millis(50)); // let the log threads drain
                                              // The sandbox's pins are on a bpffs the host sees: not "private".
    ensure!(
        d.log()
            .iter()
            .any(|l| l.contains("exiting; the filter stays in force")),
        "a visible pin root's exit message:\n{}",
        d.log_tail(3)
    );
    Ok(())
}

pub fn detach_refuses_under_a_live_daemon_and_force_stops_it(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("owner.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    let pins = cx.sb.pin_root.display().to_string();
    // A socket no daemon answers on: the way to pull the filter out
    // from under a live daemon.
    let nowhere = cx.sb.dir.join("run/nowhere.sock").display().to_string();
    let out = cli(
        cx,
        &["detach", "--pin-root", &pins, "--control-socket", &nowhere],
    )?;
    let said = text(&out);
    ensure!(
        out.status.code() == Some(1),
        "detach through a dead socket under a live daemon: {} (want exit 1):\n{said}",
        out.status
    );
    ensure!(
        said.contains(&format!("PID {}", d.pid())),
        "the refusal does not name PID {}:\n{said}",
        d.pid()
    );
    ensure!(d.running(), "the daemon died after a refused detach");
    let st = cx.sb.status()?;
    ensure!(
        !cx.sb.pins().is_empty() && st.generation > 0,
        "the refused detach removed pins"
    );
    let (reloaded, rtext) = cx.sb.reload()?;
    ensure!(reloaded, "reload after a refused detach failed:\n{rtext}");

    let started = Instant::now();
    let out = cli(
        cx,
        &[
            "detach",
            "--force",
            "--pin-root",
            &pins,
            "--control-socket",
            &nowhere,
        ],
    )?;
    ensure!(
        out.status.success(),
        "detach --force failed ({}):\n{}",
        out.status,
        text(&out)
    );
    let exited = wait_until(STOP_TIMEOUT, POLL, || !d.running());
    ensure!(exited, "detach --force returned but the daemon still runs");
    ensure!(
        cx.sb.pins().is_empty(),
        "pins left after detach --force: {:?}",
        cx.sb.pins()
    );
    cx.note(format!(
        "detach --force: daemon stopped and filter removed in {} ms",
        started.elapsed().as_millis()
    ));
    Ok(())
}

pub fn pins_removed_under_the_daemon_mean_not_enforcing(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("owner.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    let gauge = |cx: &Ctx| -> Result<Vec<f64>> {
        Ok(cx
            .sb
            .metrics()?
            .into_iter()
            .filter(|s| s.name == "portcullis_enforcing")
            .map(|s| s.value)
            .collect())
    };
    let up = gauge(cx)?;
    ensure!(
        up.len() == 2 && up.iter().all(|v| *v == 1.0),
        "portcullis_enforcing before: {up:?} (want 1 for both interfaces)"
    );
    cx.sb.remove_pins();
    let started = Instant::now();
    let mut last = (0, Value::Null);
    let noticed = wait_until(Duration::from_secs(8), POLL, || match status_json(cx) {
        Ok(s) => {
            // The pins are read at once; the daemon looks every 2 s.
            let done = s.0 == 3
                && s.1["enforcing"] == Value::Bool(false)
                && s.1["daemon"]["enforcing"] == Value::Bool(false);
            last = s;
            done
        }
        Err(_) => false,
    });
    ensure!(
        noticed,
        "status after the pins were removed: exit {}, {}",
        last.0,
        last.1
    );
    cx.note(format!(
        "noticed within {} ms: {}",
        started.elapsed().as_millis(),
        last.1["not_enforcing"]
    ));
    ensure!(
        last.1["daemon"]["enforcing"] == Value::Bool(false),
        "the daemon still says it enforces: {}",
        last.1
    );
    let (ok, rtext) = cx.sb.reload()?;
    ensure!(
        !ok && rtext.contains("not enforcing") && rtext.contains("removed"),
        "reload with the filter removed: ok={ok}:\n{rtext}"
    );
    let down = gauge(cx)?;
    ensure!(
        down.len() == 2 && down.iter().all(|v| *v == 0.0),
        "portcullis_enforcing after: {down:?} (want 0 for both interfaces)"
    );
    let out = cx.sb.cli(&["status"])?;
    ensure!(
        text(&out).contains("enforcing   NO:"),
        "status text does not say it:\n{}",
        text(&out)
    );
    d.terminate()?;
    let log = d.log();
    let errors = log.iter().filter(|l| l.contains("NOT ENFORCING")).count();
    ensure!(errors == 1, "NOT ENFORCING logged {errors} times, not once");
    ensure!(
        !log.iter().any(|l| l.contains("the filter stays in force"))
            && log
                .iter()
                .any(|l| l.contains("exiting; nothing stays in force")),
        "the exit message does not say the filter is gone:\n{}",
        d.log_tail(3)
    );
    Ok(())
}

pub fn failed_start_leaves_nothing_and_status_exits_3(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("owner.toml", &policies::policy_a())?;
    let (policy, pins, socket) = (
        p.display().to_string(),
        cx.sb.pin_root.display().to_string(),
        cx.sb.control.display().to_string(),
    );
    // inet0 is attached and pinned before the unknown interface fails.
    let out = cli(
        cx,
        &run_args(&policy, &pins, &socket, &[HOST_INET_IF, "pc-nosuch0"]),
    )?;
    ensure!(
        !out.status.success(),
        "run with an unknown interface succeeded:\n{}",
        text(&out)
    );
    ensure!(
        cx.sb.pins().is_empty(),
        "a failed start left pins: {:?}",
        cx.sb.pins()
    );
    ensure!(!cx.sb.control.exists(), "a failed start left its socket");
    let out = cx.sb.cli(&["status"])?;
    ensure!(
        out.status.code() == Some(3),
        "status after a failed start: {} (want 3):\n{}",
        out.status,
        text(&out)
    );
    let why = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or("")
        .to_string();
    ensure!(why.contains("NO:"), "no reason given: {why}");
    cx.note(format!("status exit 3: {why}"));

    // A failed start on a previous run's filter leaves that filter as it was.
    let mut d = cx.start(&p, &[])?;
    d.terminate()?;
    let kept = cx.sb.pins();
    let out = cli(
        cx,
        &run_args(&policy, &pins, &socket, &[HOST_INET_IF, "pc-nosuch0"]),
    )?;
    ensure!(
        !out.status.success(),
        "run with an unknown interface succeeded"
    );
    let mut now = cx.sb.pins();
    let mut want = kept.clone();
    now.sort();
    want.sort();
    ensure!(
        now == want,
        "a failed start changed an adopted filter's pins: {want:?} -> {now:?}"
    );
    let out = cx.sb.cli(&["status"])?;
    ensure!(
        out.status.success(),
        "the adopted filter is not reported enforcing:\n{}",
        text(&out)
    );
    Ok(())
}

pub fn status_shows_pid_version_and_last_reload(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("owner.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    let (code, v) = status_json(cx)?;
    ensure!(code == 0, "status exit {code} with a daemon enforcing: {v}");
    let daemon = &v["daemon"];
    ensure!(
        daemon["pid"].as_i64() == Some(i64::from(d.pid())),
        "status daemon.pid: {daemon} (want {})",
        d.pid()
    );
    ensure!(
        daemon["version"].as_str().is_some_and(|s| !s.is_empty()),
        "no version: {daemon}"
    );
    ensure!(
        daemon["last_reload"]["why"] == "start" && daemon["last_reload"]["ok"] == true,
        "last reload at start: {daemon}"
    );
    policies::write(&cx.policy_dir, "owner.toml", &policies::policy_b())?;
    let (ok, rtext) = cx.sb.reload()?;
    ensure!(ok, "reload failed: {rtext}");
    let (_, v) = status_json(cx)?;
    let last = &v["daemon"]["last_reload"];
    ensure!(
        last["ok"] == true
            && last["why"] != "start"
            && last["generation"].as_u64() == v["generation"].as_u64()
            && last["at"].as_u64().is_some_and(|t| t > 0),
        "last reload after `portcullis reload`: {last} (generation {})",
        v["generation"]
    );
    policies::write(&cx.policy_dir, "owner.toml", &policies::policy_invalid())?;
    let (ok, _) = cx.sb.reload()?;
    ensure!(!ok, "an invalid policy reloaded");
    let out = cx.sb.cli(&["status"])?;
    let said = text(&out);
    ensure!(
        said.contains(&format!("PID {}", d.pid())) && said.contains("last reload rejected"),
        "status text after a rejected reload:\n{said}"
    );
    cx.note(
        said.lines()
            .find(|l| l.starts_with("last reload"))
            .unwrap_or("")
            .to_string(),
    );
    d.terminate()?;
    Ok(())
}

/// The default pin root under `ip netns exec` is a bpffs mounted on the
/// namespace's private /sys: the daemon must not claim at exit that the
/// filter stays in force, since it vanishes with the process.
pub fn private_pins_are_not_said_to_stay(cx: &mut Ctx) -> Result<()> {
    use nix::{
        sys::signal::{kill, Signal},
        unistd::Pid,
    };
    let p = cx.policy("owner.toml", &policies::policy_a())?;
    let log = cx.sb.dir.join("private-run.log");
    let (policy, socket) = (
        p.display().to_string(),
        cx.sb.dir.join("run/private.sock").display().to_string(),
    );
    let mut cmd = cx.sb.portcullis(&[
        "run",
        "--policy",
        &policy,
        "--iface",
        HOST_INET_IF,
        "--pin-root",
        "/sys/fs/bpf/portcullis",
        "--control-socket",
        &socket,
        "--metrics-listen",
        "127.0.0.1:9479",
    ]);
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .env("RUST_LOG", "info");
    let mut child = cmd::unblock_signals(&mut cmd).spawn()?;
    let pid = child.id() as i32;
    let _guard = super::cleanup::register(format!("kill daemon {pid}"), move || {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    });
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    let ready = wait_until(Duration::from_secs(20), POLL, || {
        // The warning follows the "enforcing" line.
        read().contains("private mount namespace") || matches!(child.try_wait(), Ok(Some(_)))
    });
    ensure!(
        ready && read().contains("enforcing "),
        "the daemon did not start:\n{}",
        read()
    );
    ensure!(
        read().contains("private mount namespace"),
        "no warning at start about the private pins:\n{}",
        read()
    );
    kill(Pid::from_raw(pid), Signal::SIGTERM)?;
    let st = cmd::wait_bounded(&mut child, super::patience(STOP_TIMEOUT));
    ensure!(st.is_some(), "the daemon did not exit after SIGTERM");
    let said = read();
    let exit = said
        .lines()
        .rev()
        .find(|l| l.contains("exiting;"))
        .unwrap_or("")
        .to_string();
    ensure!(
        exit.contains("the filter is removed when this process exits")
            && exit.contains("private mount namespace")
            && !said.contains("the filter stays in force"),
        "exit message with private pins: {exit:?}\n{said}"
    );
    cx.note(exit.trim().to_string());
    Ok(())
}
