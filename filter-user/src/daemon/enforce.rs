//! Is the filter still in force? The daemon's handles keep its maps alive even
//! when someone removes the pins (`detach` through another socket, `rm -r` of
//! the pin root) or the interface goes away: writes to those maps then succeed
//! and change nothing that filters. A periodic check of what the kernel and
//! the bpffs hold tells the daemon, so that `status`, `reload` and metrics say
//! "not enforcing" instead of reporting generations nobody enforces.
use std::path::Path;

use aya::programs::links::{FdLink, PinnedLink};
use filter_common::{MAP_ACTIVE, MAP_COUNTERS, MAP_META};

use crate::loader::PinRoot;

/// How often the daemon looks.
pub const CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforcing {
    /// (interface, its filter is in place).
    pub interfaces: Vec<(String, bool)>,
    /// Why not, when something is missing (the first thing found).
    pub why: Option<String>,
}

impl Enforcing {
    /// What the daemon believes right after a successful start.
    pub fn started(interfaces: &[String]) -> Enforcing {
        Enforcing {
            interfaces: interfaces.iter().map(|i| (i.clone(), true)).collect(),
            why: None,
        }
    }

    pub fn ok(&self) -> bool {
        self.why.is_none()
    }
}

/// Checks the pinned maps, and for each interface that its pinned link opens
/// as a live bpf_link and that the interface still exists.
pub fn check(root: &PinRoot, interfaces: &[String]) -> Enforcing {
    let missing_map = [MAP_ACTIVE, MAP_META, MAP_COUNTERS]
        .into_iter()
        .find(|m| !root.map(m).exists());
    let mut why = missing_map.map(|m| {
        format!(
            "the filter was removed: the pinned map {} is gone",
            root.map(m).display()
        )
    });
    let mut states = Vec::new();
    for iface in interfaces {
        let problem = if missing_map.is_some() {
            Some(String::new())
        } else {
            link_problem(&root.link(iface), iface)
        };
        if let (None, Some(p)) = (&why, &problem) {
            why = Some(p.clone());
        }
        states.push((iface.clone(), problem.is_none()));
    }
    Enforcing {
        interfaces: states,
        why,
    }
}

fn link_problem(path: &Path, iface: &str) -> Option<String> {
    if !path.exists() {
        return Some(format!(
            "the filter was removed from {iface}: its pinned link {} is gone",
            path.display()
        ));
    }
    match PinnedLink::from_pin(path).map(FdLink::from) {
        Ok(link) if link.info().is_ok() => {}
        Ok(_) | Err(_) => {
            return Some(format!(
                "{iface}: the pinned link {} is not a live XDP link",
                path.display()
            ))
        }
    }
    if nix::net::if_::if_nametoindex(iface).is_err() {
        return Some(format!(
            "{iface}: the interface no longer exists, so nothing is filtered on it"
        ));
    }
    None
}

/// The log line for a change of state, if it changed (logged once, not every
/// check).
pub fn transition(before: &Enforcing, now: &Enforcing) -> Option<(bool, String)> {
    match (before.ok(), now.ok()) {
        (true, false) => Some((
            false,
            format!(
                "NOT ENFORCING: {}; reloads are refused until the daemon is restarted",
                now.why.as_deref().unwrap_or("")
            ),
        )),
        (false, true) => Some((true, "enforcing again".to_string())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_maps_make_every_interface_not_enforcing() {
        let root = PinRoot::new(std::env::temp_dir().join("pc-enforce-none"));
        let e = check(&root, &["lo".to_string()]);
        assert!(!e.ok());
        assert_eq!(e.interfaces, [("lo".to_string(), false)]);
        assert!(e.why.unwrap().contains("filter was removed"));
    }

    #[test]
    fn a_change_is_reported_once() {
        let ok = Enforcing::started(&["eth0".to_string()]);
        let gone = Enforcing {
            interfaces: vec![("eth0".into(), false)],
            why: Some("gone".into()),
        };
        let (good, line) = transition(&ok, &gone).unwrap();
        assert!(!good && line.contains("NOT ENFORCING: gone"), "{line}");
        assert_eq!(transition(&gone, &gone), None);
        assert_eq!(transition(&ok, &ok), None);
        assert!(transition(&gone, &ok).unwrap().0);
    }
}
