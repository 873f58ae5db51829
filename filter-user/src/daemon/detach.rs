//! `portcullis detach`: remove the filter and its pins — never from under a
//! live daemon that did not agree. The daemon that owns the pin root (holds
//! its lock, see [`owner`]) is asked through its control socket; if the socket
//! given reaches no daemon or another one, detach refuses and names the owner's
//! PID, unless `--force`, which stops the owner first (SIGTERM, bounded wait).
use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use super::{
    control::{self, ClientError, Request},
    owner::{self, Holder, OwnerError},
    root_matches,
};
use crate::loader::{LoaderError, PinRoot};

/// How long `--force` waits for the owner to exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DetachError {
    #[error(
        "a portcullis daemon (PID {pid}) owns the filter under {pin_root}, and {socket} \
         does not reach it; nothing was removed: stop it (systemctl stop portcullis), pass \
         its --control-socket, or pass --force to stop it and detach"
    )]
    Owned {
        pid: Holder,
        pin_root: PathBuf,
        socket: PathBuf,
    },
    #[error("the daemon refused: {0}")]
    Refused(String),
    #[error(
        "pins removed, but XDP links {0:?} are still held open by another process \
         (see `bpftool link show`); the filter stays until it closes them"
    )]
    LinksHeld(Vec<u32>),
    #[error(transparent)]
    Owner(#[from] OwnerError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Loader(#[from] LoaderError),
}

#[derive(Debug, Clone)]
pub struct Detached {
    /// Interfaces whose filter was removed.
    pub interfaces: Vec<String>,
    /// The daemon that was asked (or, with `--force`, stopped), if any.
    pub daemon: Option<u32>,
}

/// Who speaks for the filter under the pin root: the daemon on the socket if
/// it is the lock's holder (or too old to say and no one holds the lock).
fn asks_owner(answer: &Option<Option<crate::status::DaemonInfo>>, holder: Option<Holder>) -> bool {
    match (answer, holder) {
        (Some(Some(d)), Some(Holder(Some(pid)))) => d.pid == pid,
        (Some(None), None) => true,
        _ => false,
    }
}

pub fn detach(pin_root: &Path, socket: &Path, force: bool) -> Result<Detached, DetachError> {
    let root = PinRoot::new(pin_root);
    let interfaces = root.pinned_links();
    let link_ids = root.link_ids();
    let holder = owner::holder(pin_root)?;
    let answer = control::ping_info(socket);
    let mut daemon = holder.and_then(|h| h.0);
    if asks_owner(&answer, holder) {
        // The daemon removes the pins itself and exits, releasing its handles.
        let reply = control::request(socket, &Request::Detach, Duration::from_secs(30))?;
        if !reply.ok {
            return Err(DetachError::Refused(reply.error.unwrap_or_default()));
        }
        for _ in 0..100 {
            if !control::ping(socket) && owner::holder(pin_root)?.is_none() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    } else if let Some(h) = holder {
        if !force {
            return Err(DetachError::Owned {
                pid: h,
                pin_root: pin_root.to_path_buf(),
                socket: socket.to_path_buf(),
            });
        }
        tracing::warn!("--force: stopping daemon PID {h} (SIGTERM)");
        owner::stop_holder(pin_root, STOP_TIMEOUT)?;
    } else if let Some(Some(d)) = &answer {
        if !root_matches(&d.pin_root, pin_root) {
            tracing::info!(
                "the daemon on {} (PID {}) serves {}, not {}; it is left alone",
                socket.display(),
                d.pid,
                d.pin_root,
                pin_root.display()
            );
        }
        daemon = None;
    }
    // Held while removing: no daemon can start on half-removed pins.
    let _lock = owner::acquire(pin_root)?;
    root.remove_all()?;
    let alive = PinRoot::wait_links_released(&link_ids, Duration::from_secs(5));
    if !alive.is_empty() {
        return Err(DetachError::LinksHeld(alive));
    }
    Ok(Detached { interfaces, daemon })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::DaemonInfo;

    fn info(pid: u32) -> Option<Option<DaemonInfo>> {
        Some(Some(DaemonInfo {
            pid,
            version: "0".into(),
            pin_root: "/sys/fs/bpf/portcullis".into(),
            enforcing: true,
            not_enforcing: None,
            last_reload: None,
            bans: None,
            crowdsec: None,
            feeds: Vec::new(),
        }))
    }

    #[test]
    fn only_the_lock_holder_is_asked_to_detach() {
        let h = Some(Holder(Some(42)));
        assert!(asks_owner(&info(42), h));
        assert!(!asks_owner(&info(7), h), "another daemon on the socket");
        assert!(!asks_owner(&None, h), "no daemon on the socket");
        assert!(!asks_owner(&info(42), None), "a daemon of another pin root");
        assert!(
            asks_owner(&Some(None), None),
            "an old daemon, no lock: as before"
        );
        assert!(!asks_owner(&Some(None), h));
    }
}
