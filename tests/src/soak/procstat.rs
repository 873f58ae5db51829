//! The daemon's open file descriptors and resident memory, sampled per
//! incarnation (one `portcullis run` process between two `kill -9`s), and the
//! growth between an early and a late window of each.
use std::{
    fs,
    time::{Duration, Instant},
};

/// Open fds of `pid` (entries of /proc/PID/fd) and how many of them are
/// sockets; `None` once it is gone.
pub fn fds(pid: i32) -> Option<(usize, usize)> {
    let d = fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    let (mut all, mut sockets) = (0, 0);
    for e in d.flatten() {
        all += 1;
        if fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:")) {
            sockets += 1;
        }
    }
    Some((all, sockets))
}

/// VmRSS of `pid` in KiB; `None` once it is gone.
pub fn rss_kib(pid: i32) -> Option<u64> {
    let s = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Leave this long after READY=1 before the early window (first reloads,
/// standby pre-fill and the hostile clients' first connections settle).
pub const WARMUP: Duration = Duration::from_secs(5);
/// Length of the early and the late window.
pub const WINDOW: Duration = Duration::from_secs(10);
/// Allowed change of the fd count between the windows' medians (either way).
pub const MAX_FD_DRIFT: i64 = 8;
/// Allowed RSS growth: the late window's median over the early window's
/// highest sample. Not median to median: every argon2 check of a password
/// (basic auth) allocates 19 MiB, and glibc's per-thread arenas keep such
/// blocks, so RSS moves in whole blocks as threads come and go (measured:
/// 50–300 MiB within one minute under the soak's wrong-password clients).
/// A leak still shows as a late window above anything the early one reached.
pub const MAX_RSS_GROWTH_KIB: i64 = 20 * 1024;
/// RSS no daemon may reach at any sample (the unbounded argon2 concurrency
/// of issue 8 took it to 1.2 GB).
pub const MAX_RSS_KIB: i64 = 512 * 1024;

/// One reading of a daemon.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// Since READY=1.
    pub at: Duration,
    pub fds: usize,
    /// Of `fds`, sockets (metrics clients come and go: the rest should not move).
    pub sockets: usize,
    pub rss_kib: u64,
}

/// One daemon process and its samples.
pub struct Incarnation {
    pub pid: i32,
    pub ready: Instant,
    pub lived: Duration,
    pub samples: Vec<Sample>,
}

/// What one incarnation's samples say.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub samples: usize,
    pub fds_early: i64,
    pub fds_late: i64,
    pub fds_max: i64,
    /// Median non-socket fds in the early and late windows.
    pub files_early: i64,
    pub files_late: i64,
    pub rss_early_kib: i64,
    pub rss_early_max_kib: i64,
    pub rss_late_kib: i64,
    pub rss_peak_kib: i64,
    /// Set when the incarnation was too short to compare two windows.
    pub too_short: bool,
}

fn median(mut v: Vec<i64>) -> i64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

impl Incarnation {
    pub fn new(pid: i32, ready: Instant) -> Incarnation {
        Incarnation {
            pid,
            ready,
            lived: Duration::ZERO,
            samples: Vec::new(),
        }
    }

    /// Takes one sample now; false when the process is gone.
    pub fn sample(&mut self) -> bool {
        match (fds(self.pid), rss_kib(self.pid)) {
            (Some((fds, sockets)), Some(rss_kib)) => {
                self.samples.push(Sample {
                    at: self.ready.elapsed(),
                    fds,
                    sockets,
                    rss_kib,
                });
                true
            }
            _ => false,
        }
    }

    /// Early window: [WARMUP, WARMUP + WINDOW); late window: the last WINDOW
    /// of samples. Needs the two windows not to overlap.
    pub fn figures(&self) -> Figures {
        let end = self.samples.last().map(|s| s.at).unwrap_or_default();
        let early: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.at >= WARMUP && s.at < WARMUP + WINDOW)
            .collect();
        let late: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| s.at + WINDOW > end && s.at >= WARMUP + WINDOW)
            .collect();
        let too_short = early.is_empty() || late.is_empty();
        let pick = |w: &[&Sample], f: fn(&Sample) -> i64| median(w.iter().map(|s| f(s)).collect());
        let all = |f: fn(&Sample) -> i64| self.samples.iter().map(f).max().unwrap_or(0);
        Figures {
            samples: self.samples.len(),
            fds_early: pick(&early, |s| s.fds as i64),
            fds_late: pick(&late, |s| s.fds as i64),
            fds_max: all(|s| s.fds as i64),
            files_early: pick(&early, |s| (s.fds - s.sockets) as i64),
            files_late: pick(&late, |s| (s.fds - s.sockets) as i64),
            rss_early_kib: pick(&early, |s| s.rss_kib as i64),
            rss_early_max_kib: early.iter().map(|s| s.rss_kib as i64).max().unwrap_or(0),
            rss_late_kib: pick(&late, |s| s.rss_kib as i64),
            rss_peak_kib: all(|s| s.rss_kib as i64),
            too_short,
        }
    }
}

impl Figures {
    /// Why the growth is beyond the bounds, if it is.
    pub fn growth_problem(&self) -> Option<String> {
        let mut why = Vec::new();
        if self.rss_peak_kib > MAX_RSS_KIB {
            why.push(format!(
                "RSS peak {:.1} MiB (bound {} MiB)",
                self.rss_peak_kib as f64 / 1024.0,
                MAX_RSS_KIB / 1024
            ));
        }
        let fd = self.fds_late - self.fds_early;
        let rss = self.rss_late_kib - self.rss_early_max_kib;
        if !self.too_short && fd.abs() > MAX_FD_DRIFT {
            why.push(format!("fds {fd:+} (bound ±{MAX_FD_DRIFT})"));
        }
        let files = self.files_late - self.files_early;
        if !self.too_short && files.abs() > MAX_FD_DRIFT {
            why.push(format!(
                "fds other than sockets {files:+} (bound ±{MAX_FD_DRIFT})"
            ));
        }
        if !self.too_short && rss > MAX_RSS_GROWTH_KIB {
            why.push(format!(
                "RSS +{:.1} MiB over the early window's highest (bound +{} MiB)",
                rss as f64 / 1024.0,
                MAX_RSS_GROWTH_KIB / 1024
            ));
        }
        (!why.is_empty()).then(|| why.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(samples: &[(u64, usize, u64)]) -> Incarnation {
        Incarnation {
            pid: 1,
            ready: Instant::now(),
            lived: Duration::ZERO,
            samples: samples
                .iter()
                .map(|&(s, fds, rss_kib)| Sample {
                    at: Duration::from_secs(s),
                    fds,
                    sockets: fds / 2,
                    rss_kib,
                })
                .collect(),
        }
    }

    #[test]
    fn own_process_is_sampled() {
        let me = std::process::id() as i32;
        assert!(fds(me).is_some_and(|(n, sockets)| n >= 3 && sockets <= n));
        assert!(rss_kib(me).is_some_and(|r| r > 0));
        assert_eq!(fds(i32::MAX), None);
    }

    #[test]
    fn growth_beyond_the_bounds_is_reported() {
        let flat: Vec<_> = (0..60).map(|s| (s, 20, 30_000)).collect();
        let f = inc(&flat).figures();
        assert_eq!((f.fds_early, f.fds_late), (20, 20));
        assert_eq!(f.growth_problem(), None);

        let leaking: Vec<_> = (0..60)
            .map(|s| (s, 20 + s as usize, 30_000 + s * 1024))
            .collect();
        let f = inc(&leaking).figures();
        let why = f.growth_problem().expect("growth must be reported");
        assert!(
            why.contains("fds") && why.contains("other than sockets") && why.contains("RSS"),
            "{why}"
        );

        // Whole argon2 blocks coming and going: jitter, not growth.
        let jitter: Vec<_> = (0..60)
            .map(|s| (s, 80, 60_000 + (s * 7 % 5) * 19 * 1024))
            .collect();
        assert_eq!(inc(&jitter).figures().growth_problem(), None);

        let short: Vec<_> = (0..12).map(|s| (s, 20 + s as usize, 30_000)).collect();
        let f = inc(&short).figures();
        assert!(f.too_short);
        assert_eq!(f.growth_problem(), None);

        let huge: Vec<_> = (0..12).map(|s| (s, 20, 600 * 1024)).collect();
        let why = inc(&huge).figures().growth_problem().expect("peak");
        assert!(why.contains("peak"), "{why}");
    }
}
