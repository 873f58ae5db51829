//! Commands with a time limit; a failure carries the command and its stderr.
use std::{
    io::Read,
    process::{Child, Command, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

/// Default limit for `ip` and CLI calls.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// Children start with an empty signal mask: the suite blocks SIGINT/SIGTERM/
/// SIGHUP in its threads (to handle them in one thread), and a blocked mask is
/// inherited through fork and exec.
pub fn unblock_signals(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    // SAFETY: only async-signal-safe calls (sigemptyset, sigprocmask) between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            if libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    }
}

/// Runs `cmd` to completion or kills it after `timeout`; stdout and stderr are
/// captured. A non-zero exit is not an error here (see [`check`]).
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<Output> {
    let mut child = unblock_signals(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let out = read_in_thread(child.stdout.take());
    let err = read_in_thread(child.stderr.take());
    let status = wait_bounded(&mut child, timeout);
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    match status {
        Some(status) => Ok(Output {
            status,
            stdout,
            stderr,
        }),
        None => bail!(
            "{cmd:?} did not finish within {timeout:?} (killed); stderr: {}",
            String::from_utf8_lossy(&stderr).trim()
        ),
    }
}

fn read_in_thread<R: Read + Send + 'static>(r: Option<R>) -> thread::JoinHandle<Vec<u8>> {
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut r) = r {
            let _ = r.read_to_end(&mut buf);
        }
        buf
    })
}

/// Waits for `child` at most `timeout`; kills (and reaps) it past that.
pub fn wait_bounded(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(s)) => return Some(s),
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(5)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
        }
    }
}

/// Runs `cmd`; an error unless it exits 0. Returns stdout.
pub fn check(cmd: &mut Command, timeout: Duration) -> Result<String> {
    let out = run(cmd, timeout)?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS…`, checked.
pub fn ip(args: &[&str]) -> Result<String> {
    check(Command::new("ip").args(args), super::patience(CMD_TIMEOUT))
}
