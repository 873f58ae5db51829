//! Hostile local inputs against the real daemon: list files that are FIFOs,
//! huge or symlinked to secrets, a `--control-socket` naming a regular file,
//! and clients that connect to the control socket and say nothing.
//!
//! Every wait is bounded; sizes are measured in bytes of the reload answer,
//! the `check` output and the daemon's log (stderr and stdout, as captured by
//! [`Daemon`]).
use std::{
    fs,
    io::Read,
    os::unix::{fs::PermissionsExt, net::UnixStream},
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, ensure, Context, Result};
use nix::sys::signal::Signal;

use super::{
    cmd,
    daemon::{Daemon, Sandbox},
    policies,
    probe::Probe,
    scenarios::{check, Ctx, Exp},
    topology::*,
};

/// How long `check` or `reload` may take to answer about a bad list file.
const PROMPT: Duration = Duration::from_secs(5);
/// Bound on the reload answer, the `check` output and the log growth of one
/// rejected reload, whatever the list file holds.
const SMALL: usize = 16 << 10;

/// What policy_blocklist_wins enforces: the list file's 198.51.100.0/24 is
/// dropped, keep-admin admits mgmt only.
fn rows_enforced() -> Vec<(Probe, Exp)> {
    vec![
        (Probe::tcp(LISTED4, 8880), Exp::Blocked),
        (Probe::tcp(LISTED4B, 8880), Exp::Open),
        (Probe::tcp(INET4, 8889), Exp::Blocked),
        (Probe::tcp(MGMT4, 8889), Exp::Open),
    ]
}

/// The policy with its list file `bl-list.txt`, and the daemon enforcing it.
fn start(cx: &mut Ctx) -> Result<(PathBuf, PathBuf, Daemon)> {
    let policy = policies::write(&cx.policy_dir, "p.toml", &policies::policy_blocklist_wins())?;
    let list = cx.policy_dir.join("bl-list.txt");
    let d = cx.sb.start_daemon(&policy, &[])?;
    cx.notes.push(format!(
        "daemon {} ready after {} ms",
        d.pid(),
        d.ready_after.as_millis()
    ));
    check(cx.sb, &rows_enforced()).context("before the hostile list file")?;
    Ok((policy, list, d))
}

/// Bytes in the daemon's log so far (each line and its newline).
fn log_bytes(d: &Daemon) -> usize {
    d.log().iter().map(|l| l.len() + 1).sum()
}

/// The daemon's log from line `from` on, joined.
fn log_since(d: &Daemon, from: usize) -> String {
    d.log().get(from..).unwrap_or_default().join("\n")
}

/// `portcullis check --policy P`: (exit success, stdout + stderr, time taken).
fn cli_check(sb: &Sandbox, policy: &Path) -> Result<(bool, String, Duration)> {
    let started = Instant::now();
    let out = sb.cli(&["check", "--policy", &policy.display().to_string()])?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok((out.status.success(), text, started.elapsed()))
}

/// `portcullis reload`: (exit success, stdout + stderr, time taken).
fn cli_reload(sb: &Sandbox) -> Result<(bool, String, Duration)> {
    let started = Instant::now();
    let (ok, text) = sb.reload()?;
    Ok((ok, text, started.elapsed()))
}

/// Replaces `path` by `make(tmp)` with one rename, so that the daemon's
/// watcher never sees a half-made file.
fn replace(path: &Path, make: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let tmp = path.with_extension("new~");
    let _ = fs::remove_file(&tmp);
    make(&tmp)?;
    fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))
}

fn short(s: &str) -> String {
    let s = s.trim();
    let mut out: String = s.chars().take(160).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out.replace('\n', " | ")
}

/// A list file that is a FIFO: `check` and `reload` answer at once with the
/// error, again on a second reload and after SIGHUP; the old policy keeps
/// enforcing; SIGTERM stops the daemon promptly.
pub fn fifo_list_file(cx: &mut Ctx) -> Result<()> {
    let (policy, list, mut d) = start(cx)?;
    let gen0 = cx.sb.status()?.generation;
    replace(&list, |tmp| {
        nix::unistd::mkfifo(tmp, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .with_context(|| format!("mkfifo {}", tmp.display()))
    })?;

    let (ok, out, took) = cli_check(cx.sb, &policy)?;
    ensure!(!ok, "check accepted a FIFO list file:\n{out}");
    ensure!(
        out.contains("is a FIFO, not a regular file") && out.contains("p.toml:"),
        "check does not say the list file is a FIFO, at its line:\n{out}"
    );
    ensure!(took < PROMPT, "check took {took:?} on a FIFO");
    cx.notes
        .push(format!("check: {} ms: {}", took.as_millis(), short(&out)));

    for round in 1..=2 {
        let (ok, out, took) = cli_reload(cx.sb)?;
        ensure!(!ok, "reload {round} accepted a FIFO list file:\n{out}");
        ensure!(
            out.contains("is a FIFO, not a regular file"),
            "reload {round} does not name the problem:\n{out}"
        );
        ensure!(took < PROMPT, "reload {round} took {took:?}");
        cx.notes.push(format!(
            "reload {round}: answered in {} ms",
            took.as_millis()
        ));
    }
    check(cx.sb, &rows_enforced()).context("after the rejected reloads")?;
    let gen1 = cx.sb.status()?.generation;
    ensure!(gen1 == gen0, "generation moved {gen0} -> {gen1}");

    // A reload from the daemon's own signal path, then SIGTERM right away.
    d.signal(Signal::SIGHUP)?;
    thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let st = d.terminate()?;
    let took = started.elapsed();
    ensure!(
        took < Duration::from_secs(3),
        "SIGTERM took {took:?} with a FIFO list file"
    );
    cx.notes.push(format!(
        "SIGTERM after SIGHUP: exited ({st}) in {} ms; generation stays {gen0}",
        took.as_millis()
    ));
    check(cx.sb, &rows_enforced()).context("the filter stays after the daemon exits")
}

/// A 20 MB one-line list file: the reload answer, the `check` output and the
/// log each stay under [`SMALL`].
pub fn huge_line_list_file(cx: &mut Ctx) -> Result<()> {
    let (policy, list, mut d) = start(cx)?;
    let line = "9".repeat(20 << 20);
    replace(&list, |tmp| Ok(fs::write(tmp, &line)?))?;
    let (lines0, bytes0) = (d.log().len(), log_bytes(&d));

    let (ok, answer, took) = cli_reload(cx.sb)?;
    ensure!(!ok, "reload accepted a 20 MB junk line");
    ensure!(
        answer.contains("bl-list.txt:1:1"),
        "the reload answer does not locate the bad line:\n{}",
        short(&answer)
    );
    let (ok, checked, _) = cli_check(cx.sb, &policy)?;
    ensure!(!ok, "check accepted a 20 MB junk line");
    // The file watcher reloads too: let both rejections reach the log.
    thread::sleep(Duration::from_millis(1500));
    let grown = log_bytes(&d) - bytes0;
    cx.notes.push(format!(
        "reload answer {} B (in {} ms), check output {} B, log +{grown} B over {} lines",
        answer.len(),
        took.as_millis(),
        checked.len(),
        d.log().len() - lines0
    ));
    ensure!(
        answer.len() < SMALL,
        "reload answer of {} bytes",
        answer.len()
    );
    ensure!(
        checked.len() < SMALL,
        "check output of {} bytes",
        checked.len()
    );
    ensure!(grown < SMALL, "the log grew by {grown} bytes");
    check(cx.sb, &rows_enforced()).context("after the rejected reload")?;
    d.terminate()?;
    Ok(())
}

/// A list file symlinked to a root-only file holding a secret: the secret
/// reaches neither the reload answer, nor `check`, nor the log.
pub fn secret_behind_symlink(cx: &mut Ctx) -> Result<()> {
    let (policy, list, mut d) = start(cx)?;
    let token = format!(
        "TOK{:016x}{:016x}",
        rand::random::<u64>(),
        rand::random::<u64>()
    );
    let secret = cx.policy_dir.join("shadow");
    fs::write(
        &secret,
        format!(
            "root:$y$j9T${token}$Zm9v:19700:0:99999:7:::\n{token}\n\
             {{\"cidr\":\"{token}\"}}\n10.0.0.1/8 {token}\n"
        ),
    )?;
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600))?;
    replace(&list, |tmp| Ok(std::os::unix::fs::symlink(&secret, tmp)?))?;
    let lines0 = d.log().len();

    let (ok, answer, _) = cli_reload(cx.sb)?;
    ensure!(!ok, "reload accepted a shadow file as a list");
    let (ok, checked, _) = cli_check(cx.sb, &policy)?;
    ensure!(!ok, "check accepted a shadow file as a list");
    thread::sleep(Duration::from_millis(1500));
    let log = log_since(&d, lines0);
    for (what, text) in [
        ("reload answer", &answer),
        ("check", &checked),
        ("log", &log),
    ] {
        for part in [token.as_str(), &token[3..19], "root:", "$y$j9T"] {
            ensure!(
                !text.contains(part),
                "the {what} echoes the secret file (`{part}`):\n{text}"
            );
        }
    }
    ensure!(
        answer.contains("bl-list.txt:1:1: error: not an address or prefix"),
        "the answer does not locate the bad line:\n{answer}"
    );
    ensure!(
        log.contains("bl-list.txt:1:1"),
        "the rejected reload is not in the log:\n{log}"
    );
    cx.notes.push(format!(
        "4 bad lines reported, secret in neither answer ({} B), check ({} B) nor log ({} B)",
        answer.len(),
        checked.len(),
        log.len()
    ));
    check(cx.sb, &rows_enforced())?;
    d.terminate()?;
    Ok(())
}

/// `--control-socket` naming a regular file: the daemon refuses to start,
/// says why, leaves the file as it was and touches no filter.
pub fn control_socket_regular_file(cx: &mut Ctx) -> Result<()> {
    let policy = policies::write(&cx.policy_dir, "p.toml", &policies::policy_blocklist_wins())?;
    let file = cx.policy_dir.join("precious.db");
    let content = "an operator's file that --control-socket names by mistake\n";
    fs::write(&file, content)?;
    let (file_s, policy_s) = (file.display().to_string(), policy.display().to_string());
    let pin_root = cx.sb.pin_root.display().to_string();
    let mut c = cx.sb.portcullis(&[
        "run",
        "--policy",
        &policy_s,
        "--iface",
        HOST_INET_IF,
        "--pin-root",
        &pin_root,
        "--control-socket",
        &file_s,
    ]);
    c.env("RUST_LOG", "info");
    let started = Instant::now();
    let out = cmd::run(&mut c, super::patience(cmd::CMD_TIMEOUT))?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "the daemon started on a regular file as its control socket"
    );
    ensure!(
        stderr.contains("is a regular file, not a socket"),
        "the daemon does not say why it refused:\n{stderr}"
    );
    let now = fs::read_to_string(&file).context("the file is gone")?;
    ensure!(now == content, "the file was changed: {now:?}");
    ensure!(
        cx.sb.pins().is_empty(),
        "pins were created: {:?}",
        cx.sb.pins()
    );
    cx.notes.push(format!(
        "refused in {} ms: {}",
        started.elapsed().as_millis(),
        short(&stderr)
    ));
    Ok(())
}

/// Open descriptors of process `pid`.
fn fds(pid: i32) -> Result<usize> {
    Ok(fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Clients that connect to the control socket and send nothing hold at most
/// 32 of the daemon's descriptors, are dropped after the 5 s request timeout,
/// and a `portcullis reload` behind them is still answered.
pub fn control_socket_silent_clients(cx: &mut Ctx) -> Result<()> {
    const SILENT: usize = 40;
    let (_policy, _list, mut d) = start(cx)?;
    let before = fds(d.pid())?;
    let mut clients = Vec::with_capacity(SILENT);
    for i in 0..SILENT {
        let c =
            UnixStream::connect(&cx.sb.control).with_context(|| format!("silent client {i}"))?;
        c.set_read_timeout(Some(Duration::from_millis(200)))?;
        clients.push(c);
    }
    thread::sleep(Duration::from_millis(500));
    let during = fds(d.pid())?;
    let started = Instant::now();
    let (ok, out, took) = cli_reload(cx.sb)?;
    ensure!(ok, "reload behind {SILENT} silent clients failed:\n{out}");
    ensure!(
        took < Duration::from_secs(12),
        "reload behind {SILENT} silent clients took {took:?}"
    );
    // Every silent client is closed by the daemon (EOF), within two timeouts.
    let deadline = started + super::patience(Duration::from_secs(15));
    let mut open: Vec<UnixStream> = clients;
    while !open.is_empty() {
        if Instant::now() > deadline {
            bail!(
                "{} of {SILENT} silent clients still connected after 15 s",
                open.len()
            );
        }
        open.retain_mut(|c| {
            let mut b = [0u8; 64];
            match c.read(&mut b) {
                Ok(0) => false,
                Ok(_) => false, // answered (with an error): also done
                Err(e) => matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ),
            }
        });
    }
    let after = fds(d.pid())?;
    cx.notes.push(format!(
        "daemon fds: {before} before, {during} with {SILENT} silent clients, {after} after; \
         reload answered in {} ms; all dropped within {} ms",
        took.as_millis(),
        started.elapsed().as_millis()
    ));
    ensure!(
        during <= before + 32 + 2,
        "{SILENT} silent clients took {} descriptors",
        during - before
    );
    ensure!(d.running(), "the daemon died");
    d.terminate()?;
    Ok(())
}
