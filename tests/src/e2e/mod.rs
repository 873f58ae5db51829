//! Network-namespace end-to-end harness for the `portcullis` daemon.
//!
//! - `cleanup`: a registry of undo actions, run on drop, on panic (unwinding) and
//!   on SIGINT/SIGTERM; and a sweep of what crashed earlier runs left behind.
//! - `cmd`: running `ip` and other commands with a time limit and their stderr
//!   in the error.
//! - `netns`: namespaces, and running code inside one from a thread (`setns(2)`).
//! - `topology`: the "internet", "mgmt" and "host" namespaces, veth links, VLAN.
//! - `vlan`: 802.1Q tagging with two tiny tc programs (no 8021q module here).
//! - `probe`: TCP connect and UDP echo probes, listeners.
//! - `daemon`: a `portcullis run` inside the host namespace, readiness via
//!   sd_notify, the CLI (`status`, `reload`, `detach`), metrics over HTTP.
//! - `policies`: the policies the scenarios load.
//! - `scenarios`: the scenarios of `e2e-suite`; `apply`: all-or-nothing apply;
//!   `attach`: link types the parser can read.
//! - `cli`: the command line as processes: errors once, `-o json` failures,
//!   `detach --iface`, `--mode`, `--wait-iface`, the systemd watchdog.
//! - `inputs`: hostile local inputs (FIFO, huge and secret list files, the
//!   control socket's path and silent clients).
//! - `ownership`: one owner per pin root, honest status, failed-start rollback.
//! - `events`: sampled drop events, `top`, the runtime switch, packet logging.
//! - `reject`: rejecting zones' replies reach real sockets; the reply budget.
//! - `warnings`: policy warnings in `check` (text, JSON, `--strict`) and the
//!   daemon's log.
//! - `logs`: `--log-format json` lines and journald-aware plain text.
//! - `package`: the Debian maintainer scripts against a live filter.
//! - `monitoring`: deploy/monitoring's names against a scrape, promtool.
//! - `kubernetes`: a ConfigMap volume swapped as kubelet swaps it.
//! - `demo`: the sandbox demo (`cargo xtask demo`).
//! - `feeds`: list feeds from a local HTTP server: refresh, 304, refusals,
//!   restart from the cache.
//! - `schedule`: time-restricted zones opening and closing on time with the
//!   daemon killed.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use anyhow::{bail, Context, Result};

pub mod apply;
pub mod attach;
pub mod bans;
pub mod cleanup;
pub mod cli;
pub mod cmd;
pub mod continuity;
pub mod crowdsec;
pub mod daemon;
pub mod demo;
pub mod events;
pub mod explain;
pub mod fail2ban;
pub mod feeds;
pub mod http;
pub mod inputs;
pub mod kubernetes;
pub mod limits;
pub mod logs;
pub mod metrics_hardening;
pub mod monitoring;
pub mod netns;
pub mod ownership;
pub mod package;
pub mod policies;
pub mod probe;
pub mod quota;
pub mod reject;
pub mod scenarios;
pub mod schedule;
pub mod topology;
pub mod upgrade;
pub mod vlan;
pub mod warnings;

/// How much slower than the development host the machine is (1 there; the VM
/// subset under QEMU TCG sets 4): scales the harness's waiting limits, never
/// what a probe must see.
static SLOWDOWN: AtomicU32 = AtomicU32::new(1);

/// Sets the factor [`patience`] multiplies limits by.
pub fn set_slowdown(factor: u32) {
    SLOWDOWN.store(factor.max(1), Ordering::Relaxed);
}

/// A waiting limit (READY=1, SIGTERM, CLI calls, polls) scaled by the slowdown.
pub fn patience(d: Duration) -> Duration {
    d * SLOWDOWN.load(Ordering::Relaxed)
}

/// The common start of the netns programs (`what` names them in messages):
/// cleanup on signals, root, leftovers of crashed runs swept, and the
/// `portcullis` binary to run (default: beside the running executable).
pub fn prepare(what: &str, portcullis: Option<&Path>) -> Result<PathBuf> {
    cleanup::install_signal_handler()?;
    if !nix::unistd::Uid::effective().is_root() {
        bail!("the {what} creates network namespaces and loads XDP: run it as root");
    }
    for leftover in cleanup::sweep_leftovers() {
        eprintln!("{what}: removed leftover {leftover}");
    }
    match portcullis {
        Some(p) => Ok(p.to_path_buf()),
        None => Ok(std::env::current_exe()?
            .parent()
            .context("exe has a directory")?
            .join("portcullis")),
    }
}
