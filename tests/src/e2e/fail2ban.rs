//! fail2ban (Debian's package, the real server) driving portcullis through
//! the shipped action file (deploy/fail2ban/action.d/portcullis.conf): a jail
//! reads a log file the test writes; at `maxretry` failures the source is
//! dropped at XDP, at `bantime` it is admitted again, and stopping fail2ban
//! flushes its jail's bans.

use std::{
    fs,
    io::Write,
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use super::{
    bans::{self, POLICY},
    cleanup, cmd,
    scenarios::{check, ms, t, wait_until, Ctx, Exp},
    topology::*,
};

use Exp::{Blocked as B, Open as O};

/// The action file the package ships, as the repository has it.
const ACTION: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../deploy/fail2ban/action.d/portcullis.conf"
);
/// Seconds fail2ban bans for (its `bantime`).
const BANTIME: u64 = 6;
const TAG: &str = "fail2ban-e2e";

/// A private fail2ban configuration under `dir`: no system config, no
/// database, a polling jail `e2e` on `dir/auth.log` whose action is the
/// shipped file pointed at this daemon's socket and binary.
fn configure(dir: &Path, bin: &Path, socket: &Path) -> Result<()> {
    fs::create_dir_all(dir.join("action.d"))?;
    fs::create_dir_all(dir.join("filter.d"))?;
    fs::copy(ACTION, dir.join("action.d/portcullis.conf"))
        .with_context(|| format!("copying {ACTION}"))?;
    let d = dir.display();
    fs::write(
        dir.join("fail2ban.conf"),
        format!(
            "[Definition]\nloglevel = INFO\nlogtarget = {d}/fail2ban.log\n\
             socket = {d}/fail2ban.sock\npidfile = {d}/fail2ban.pid\ndbfile = :memory:\n"
        ),
    )?;
    fs::write(
        dir.join("filter.d/e2e.conf"),
        "[Definition]\nfailregex = ^auth failure from <HOST>$\ndatepattern = {NONE}\n",
    )?;
    fs::write(
        dir.join("jail.conf"),
        format!(
            "[DEFAULT]\nbackend = polling\n\n[e2e]\nenabled = true\nfilter = e2e\n\
             logpath = {d}/auth.log\nmaxretry = 3\nfindtime = 600\nbantime = {BANTIME}\n\
             action = portcullis[portcullis=\"{}\", socket=\"{}\"]\n",
            bin.display(),
            socket.display()
        ),
    )?;
    fs::write(dir.join("auth.log"), "")?;
    Ok(())
}

fn client(dir: &Path, args: &[&str]) -> Result<std::process::Output> {
    cmd::run(
        Command::new("fail2ban-client")
            .arg("-s")
            .arg(dir.join("fail2ban.sock"))
            .args(args),
        super::patience(Duration::from_secs(20)),
    )
}

fn fail(dir: &Path, src: &str, n: usize) -> Result<()> {
    let mut f = fs::OpenOptions::new()
        .append(true)
        .open(dir.join("auth.log"))?;
    for _ in 0..n {
        writeln!(f, "auth failure from {src}")?;
    }
    Ok(())
}

/// The prefixes `ban list --tag TAG` shows.
fn banned(cx: &Ctx) -> Result<Vec<String>> {
    bans::tagged(cx, TAG)
}

fn log_of(dir: &Path) -> String {
    fs::read_to_string(dir.join("fail2ban.log")).unwrap_or_default()
}

/// N failures → banned at XDP (the failsafe port still open); bantime →
/// admitted; banned again, then fail2ban stopped → its bans flushed.
pub(crate) fn bans_and_unbans(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("bans.toml", POLICY)?;
    let mut d = cx.start(&p, &[])?;
    let dir = cx.sb.dir.join("fail2ban");
    configure(&dir, &cx.sb.bin, &cx.sb.control)?;
    let server: Child = Command::new("fail2ban-server")
        .args(["-f", "-x", "-c"])
        .arg(&dir)
        .arg("-s")
        .arg(dir.join("fail2ban.sock"))
        .arg("-p")
        .arg(dir.join("fail2ban.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting fail2ban-server (Debian's fail2ban; `cargo xtask bootstrap`)")?;
    let pid = server.id() as i32;
    let guard = cleanup::register("stop fail2ban-server", move || {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    });
    let mut server = server;
    let ready = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
        client(&dir, &["status", "e2e"]).is_ok_and(|o| o.status.success())
    });
    ensure!(ready, "fail2ban did not start the jail:\n{}", log_of(&dir));

    // Below maxretry: nothing happens.
    fail(&dir, "198.18.0.2", 2)?;
    std::thread::sleep(Duration::from_secs(2));
    check(cx.sb, &[(t(INET4, 8880), O)])?;
    ensure!(banned(cx)?.is_empty(), "banned before maxretry");

    let third = Instant::now();
    fail(&dir, "198.18.0.2", 1)?;
    let got = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        banned(cx).is_ok_and(|b| b == ["198.18.0.2/32"])
    });
    ensure!(got, "no ban after 3 failures:\n{}", log_of(&dir));
    let took = third.elapsed();
    check(
        cx.sb,
        &[(t(INET4, 8880), B), (t(INET4, 22), O), (t(MGMT4, 8880), O)],
    )?;
    cx.note(format!(
        "fail2ban: 3rd failure written → dropped at XDP in {}",
        ms(took)
    ));
    let list = bans::listed_with(cx, &["--tag", TAG])?;
    let reason = list[0]["reason"].as_str().unwrap_or_default().to_string();
    ensure!(
        reason == "fail2ban e2e: 3 failures",
        "ban reason {reason:?}"
    );

    // bantime: fail2ban unbans (and the datapath would have stopped anyway).
    let lifted = wait_until(
        Duration::from_secs(BANTIME + 10),
        Duration::from_millis(100),
        || banned(cx).is_ok_and(|b| b.is_empty()),
    );
    ensure!(lifted, "still banned after bantime:\n{}", log_of(&dir));
    let lasted = third.elapsed();
    ensure!(
        lasted >= Duration::from_secs(BANTIME - 1),
        "unbanned after {} (bantime {BANTIME}s)",
        ms(lasted)
    );
    check(cx.sb, &[(t(INET4, 8880), O)])?;
    cx.note(format!(
        "fail2ban: admitted again {} after the ban (bantime {BANTIME}s)",
        ms(lasted)
    ));

    // Banned again, then fail2ban stops: its tag is flushed.
    fail(&dir, "198.18.0.2", 3)?;
    let again = wait_until(Duration::from_secs(15), Duration::from_millis(50), || {
        banned(cx).is_ok_and(|b| b.len() == 1)
    });
    ensure!(again, "no second ban:\n{}", log_of(&dir));
    check(cx.sb, &[(t(INET4, 8880), B)])?;
    let out = client(&dir, &["stop"])?;
    ensure!(out.status.success(), "fail2ban-client stop failed");
    match cmd::wait_bounded(&mut server, super::patience(Duration::from_secs(20))) {
        Some(_) => guard.disarm(),
        None => drop(guard),
    }
    ensure!(
        banned(cx)?.is_empty(),
        "fail2ban stopped, its bans stay:\n{}",
        log_of(&dir)
    );
    check(cx.sb, &[(t(INET4, 8880), O)])?;
    d.terminate()?;
    Ok(())
}
