//! `run --wait-iface SECONDS`: at boot an interface may appear after the
//! daemon starts (a slow driver, a renamed NIC). Waiting a bounded time for
//! it is an explicit choice, not a crash loop of restarts; past the limit the
//! start fails as without the option.
use std::time::{Duration, Instant};

/// The interfaces of `names` that do not exist (yet).
pub fn missing(names: &[String]) -> Vec<String> {
    names
        .iter()
        .filter(|n| nix::net::if_::if_nametoindex(n.as_str()).is_err())
        .cloned()
        .collect()
}

/// Waits until every interface of `names` exists, at most `limit`; returns
/// those still missing (empty: all there). Checks every 100 ms, and tells
/// systemd what it waits for.
pub fn wait(names: &[String], limit: Duration) -> Vec<String> {
    let deadline = Instant::now() + limit;
    let mut told = false;
    loop {
        let absent = missing(names);
        if absent.is_empty() || Instant::now() >= deadline {
            return absent;
        }
        if !told {
            let status = format!(
                "waiting up to {}s for {}",
                limit.as_secs(),
                absent.join(", ")
            );
            tracing::info!("{status}");
            let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&status)]);
            told = true;
        }
        std::thread::sleep(Duration::from_millis(100).min(limit));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waiting_for_an_absent_interface_ends_at_the_limit() {
        let names = vec!["lo".to_string(), "pc-none-such0".to_string()];
        let started = Instant::now();
        let absent = wait(&names, Duration::from_millis(300));
        let took = started.elapsed();
        assert_eq!(absent, vec!["pc-none-such0".to_string()]);
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }

    #[test]
    fn present_interfaces_need_no_wait() {
        let started = Instant::now();
        assert!(wait(&["lo".to_string()], Duration::from_secs(5)).is_empty());
        assert!(started.elapsed() < Duration::from_millis(100));
    }
}
