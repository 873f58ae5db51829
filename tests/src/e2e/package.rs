//! The Debian package's maintainer scripts (deploy/debian) against a live
//! filter: `prerm upgrade` leaves the daemon and its filter alone (postinst
//! restarts it and the new daemon adopts the pins); `prerm remove` stops the
//! daemon and removes the filter, so nothing keeps enforcing once the binary
//! is gone. `cargo xtask deb` checks the package itself (lintian, install).
use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};

use super::{
    cmd, policies,
    probe::{self, Outcome},
    scenarios::{check, t, wait_until, Ctx, Exp},
    topology::{BLOCKED4, INET4},
};

/// Runs `deploy/debian/prerm ARG` as dpkg would on a host (no DPKG_ROOT),
/// with `portcullis` on PATH aimed at the sandbox's pin root and socket.
fn prerm(cx: &Ctx, arg: &str) -> Result<std::process::Output> {
    let script = policies::examples_dir().join("../debian/prerm");
    let bin_dir = cx.sb.dir.join("deb-path");
    fs::create_dir_all(&bin_dir)?;
    let bin = fs::canonicalize(&cx.sb.bin)?;
    let wrapper = bin_dir.join("portcullis");
    fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec ip netns exec {} {} \"$@\" --pin-root {} --control-socket {}\n",
            cx.sb.host_ns(),
            bin.display(),
            cx.sb.pin_root.display(),
            cx.sb.control.display()
        ),
    )?;
    fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))?;
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    ensure!(
        !Path::new("/run/systemd/system").exists(),
        "systemd runs here: prerm would stop the host's portcullis.service"
    );
    let mut c = Command::new("sh");
    c.arg(&script)
        .arg(arg)
        .env("PATH", path)
        .env_remove("DPKG_ROOT");
    cmd::run(&mut c, super::patience(cmd::CMD_TIMEOUT))
}

pub fn prerm_remove_detaches_upgrade_keeps(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("deb.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    let forbidden = [
        (t(INET4, 8889), Exp::Blocked),
        (t(BLOCKED4, 8880), Exp::Blocked),
    ];
    check(cx.sb, &forbidden)?;

    let out = prerm(cx, "upgrade")?;
    ensure!(out.status.success(), "prerm upgrade: {out:?}");
    ensure!(d.running(), "prerm upgrade stopped the daemon");
    check(cx.sb, &forbidden).context("after prerm upgrade the filter must stay")?;

    let started = Instant::now();
    let out = prerm(cx, "remove")?;
    ensure!(
        out.status.success(),
        "prerm remove failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stopped = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        !d.running()
    });
    ensure!(stopped, "prerm remove left the daemon running");
    let gone = wait_until(Duration::from_secs(2), Duration::from_millis(10), || {
        probe::run_batch(&cx.sb.topo, &[t(INET4, 8889), t(BLOCKED4, 8880)])
            .iter()
            .all(|o| *o == Outcome::Open)
    });
    ensure!(gone, "the filter still drops after prerm remove");
    let left = cx.sb.pins();
    ensure!(left.is_empty(), "pins left after prerm remove: {left:?}");
    cx.note(format!(
        "prerm remove: daemon stopped and filter gone in {} ms ({})",
        started.elapsed().as_millis(),
        String::from_utf8_lossy(&out.stdout).trim()
    ));
    Ok(())
}
