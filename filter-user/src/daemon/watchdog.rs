//! systemd's watchdog (`WatchdogSec=`): the unit sets WATCHDOG_USEC, and the
//! daemon's main loop sends WATCHDOG=1 at half that interval. The ping comes
//! from the loop that serves signals and reloads, so a wedged loop (not only
//! a dead process) gets the daemon restarted.
use std::time::Duration;

/// The ping interval (half of WATCHDOG_USEC), if the watchdog is on for this
/// process. Like sd_watchdog_enabled(3): WATCHDOG_PID, when set, must be our
/// pid (the variables are inherited by children otherwise).
pub fn interval() -> Option<Duration> {
    ping_interval(
        std::env::var("WATCHDOG_USEC").ok().as_deref(),
        std::env::var("WATCHDOG_PID").ok().as_deref(),
        std::process::id(),
    )
}

fn ping_interval(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&u| u > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok()? != me {
            return None;
        }
    }
    Some(Duration::from_micros(usec / 2).max(Duration::from_millis(1)))
}

/// Sends WATCHDOG=1.
pub fn ping() {
    if let Err(e) = sd_notify::notify(false, &[sd_notify::NotifyState::Watchdog]) {
        tracing::warn!("sd_notify WATCHDOG=1: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_pings_at_half_its_interval_for_this_pid_only() {
        assert_eq!(
            ping_interval(Some("30000000"), Some("42"), 42),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            ping_interval(Some("30000000"), None, 42),
            Some(Duration::from_secs(15))
        );
        assert_eq!(ping_interval(Some("30000000"), Some("41"), 42), None);
        assert_eq!(ping_interval(None, Some("42"), 42), None);
        assert_eq!(ping_interval(Some("0"), None, 42), None);
        assert_eq!(ping_interval(Some("soon"), None, 42), None);
    }
}
