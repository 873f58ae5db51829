//! Undo actions that run exactly once: when their guard drops (also while a
//! panic unwinds), or all of them, newest first, when the suite gets SIGINT or
//! SIGTERM. And a sweep of namespaces, mounts and directories that crashed
//! earlier runs (`pc<pid>-…`, `/tmp/pc<pid>`) left behind.
use std::{
    fs,
    path::Path,
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex, MutexGuard,
    },
    thread,
    time::Duration,
};

use anyhow::{Context, Result};
use nix::{
    sys::signal::{kill, SigSet, Signal},
    unistd::Pid,
};

type Action = Box<dyn FnOnce() + Send>;

struct Entry {
    id: u64,
    what: String,
    action: Action,
}

static REGISTRY: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn registry() -> MutexGuard<'static, Vec<Entry>> {
    REGISTRY.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs its action when dropped, unless the signal handler ran it already.
#[must_use = "the action runs when the guard drops"]
pub struct Guard {
    id: u64,
}

/// Registers `action` (described by `what`, for the log) and returns its guard.
pub fn register(what: impl Into<String>, action: impl FnOnce() + Send + 'static) -> Guard {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    registry().push(Entry {
        id,
        what: what.into(),
        action: Box::new(action),
    });
    Guard { id }
}

impl Guard {
    /// Forgets the action without running it.
    pub fn disarm(self) {
        let taken = take(self.id);
        drop(taken);
        std::mem::forget(self);
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(e) = take(self.id) {
            (e.action)();
        }
    }
}

fn take(id: u64) -> Option<Entry> {
    let mut reg = registry();
    let pos = reg.iter().position(|e| e.id == id)?;
    Some(reg.remove(pos))
}

/// Runs every pending action, newest first.
pub fn run_all() {
    loop {
        let Some(e) = registry().pop() else { break };
        eprintln!("cleanup: {}", e.what);
        (e.action)();
    }
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread (and so in every
/// thread it starts later) and waits for them in a dedicated thread, which runs
/// all pending cleanups and exits 128+signal. Call first thing in `main`.
/// Children started through `std::process::Command` get an empty signal mask.
pub fn install_signal_handler() -> Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGHUP);
    set.thread_block().context("blocking SIGINT/SIGTERM")?;
    thread::Builder::new()
        .name("cleanup-on-signal".into())
        .spawn(move || {
            if let Ok(sig) = set.wait() {
                eprintln!("e2e: got {sig}, cleaning up");
                run_all();
                std::process::exit(128 + sig as i32);
            }
        })
        .context("starting the signal thread")?;
    Ok(())
}

/// The run prefix of a `pc<pid>…` name, if it has one: the pid.
fn prefix_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("pc")?;
    let digits: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    if digits.is_empty() {
        return None;
    }
    let tail = &rest[digits.len()..];
    if !(tail.is_empty() || tail.starts_with('-')) {
        return None;
    }
    digits.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    // ESRCH: no such process. EPERM would mean alive (we are root, so never).
    kill(Pid::from_raw(pid), None).is_ok()
}

/// Removes what runs of this harness whose process is gone left behind:
/// `pc<pid>-*` namespaces (killing processes still inside them, i.e. daemons
/// such a run started), mounts under `/tmp/pc<pid>` and the directory itself.
/// Runs whose process is alive (a concurrent suite or demo) are left alone.
pub fn sweep_leftovers() -> Vec<String> {
    let mut done = Vec::new();
    let me = std::process::id() as i32;
    let stale = |name: &str| matches!(prefix_pid(name), Some(p) if p != me && !pid_alive(p));

    if let Ok(entries) = fs::read_dir("/var/run/netns") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !stale(&name) {
                continue;
            }
            kill_processes_in_netns(&e.path());
            let _ = super::cmd::ip(&["netns", "del", &name]);
            done.push(format!("namespace {name}"));
        }
    }
    if let Ok(mounts) = fs::read_to_string("/proc/mounts") {
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| {
                m.strip_prefix("/tmp/")
                    .and_then(|r| r.split('/').next())
                    .is_some_and(stale)
            })
            .collect();
        points.sort_by_key(|p| std::cmp::Reverse(p.len()));
        for p in points {
            let _ = nix::mount::umount2(p, nix::mount::MntFlags::MNT_DETACH);
            done.push(format!("mount {p}"));
        }
    }
    if let Ok(entries) = fs::read_dir("/tmp") {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if stale(&name) && e.path().is_dir() {
                let _ = fs::remove_dir_all(e.path());
                done.push(format!("directory /tmp/{name}"));
            }
        }
    }
    done
}

/// SIGKILLs every process whose network namespace is the one bound at `ns`.
fn kill_processes_in_netns(ns: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(ns) else { return };
    let want = format!("net:[{}]", meta.ino());
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if fs::read_link(p.path().join("ns/net")).is_ok_and(|l| l.to_string_lossy() == want) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
    thread::sleep(Duration::from_millis(50));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_pids() {
        assert_eq!(prefix_pid("pc123-host"), Some(123));
        assert_eq!(prefix_pid("pc123"), Some(123));
        assert_eq!(prefix_pid("pc-host"), None);
        assert_eq!(prefix_pid("pc12x-host"), None);
        assert_eq!(prefix_pid("pcap"), None);
    }

    #[test]
    fn guards_run_once() {
        use std::sync::{atomic::AtomicUsize, Arc};
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        let g = register("count", move || {
            n2.fetch_add(1, Ordering::SeqCst);
        });
        drop(g);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        let n3 = n.clone();
        register("disarmed", move || {
            n3.fetch_add(1, Ordering::SeqCst);
        })
        .disarm();
        assert_eq!(n.load(Ordering::SeqCst), 1);
    }
}
