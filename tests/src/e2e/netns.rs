//! Network namespaces (`ip netns`), and code that runs inside one: a thread
//! that `setns(2)`s into `/var/run/netns/NAME` first, so every socket it opens
//! afterwards lives in that namespace. No process is spawned for a probe.
use std::{fs::File, thread};

use anyhow::{anyhow, Context, Result};
use nix::sched::{setns, CloneFlags};

use super::{
    cleanup::{self, Guard},
    cmd::ip,
};

/// A namespace created by `ip netns add`, deleted (`ip netns del`) on drop.
pub struct Netns {
    name: String,
    _guard: Guard,
}

impl Netns {
    pub fn create(name: &str) -> Result<Netns> {
        ip(&["netns", "add", name])?;
        let owned = name.to_string();
        let guard = cleanup::register(format!("delete namespace {name}"), move || {
            if let Err(e) = ip(&["netns", "del", &owned]) {
                eprintln!("cleanup: {e:#}");
            }
        });
        Ok(Netns {
            name: name.to_string(),
            _guard: guard,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// Moves the calling thread into namespace `name`. Only for threads started
/// for that purpose (see [`run_in`], [`spawn_in`]).
pub fn enter(name: &str) -> Result<()> {
    let path = format!("/var/run/netns/{name}");
    let f = File::open(&path).with_context(|| format!("opening {path}"))?;
    setns(f, CloneFlags::CLONE_NEWNET).with_context(|| format!("setns into {name}"))?;
    Ok(())
}

/// Runs `f` in a new thread inside namespace `name` and returns its result.
pub fn run_in<R: Send>(name: &str, f: impl FnOnce() -> R + Send) -> Result<R> {
    thread::scope(|s| {
        s.spawn(|| {
            enter(name)?;
            Ok(f())
        })
        .join()
        .map_err(|_| anyhow!("thread in namespace {name} panicked"))?
    })
}

/// Starts `f` in a thread inside namespace `name`.
pub fn spawn_in<R: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> R + Send + 'static,
) -> thread::JoinHandle<Result<R>> {
    let name = name.to_string();
    thread::spawn(move || {
        enter(&name)?;
        Ok(f())
    })
}
