//! Process-wide settings the daemon makes for itself at start.
//!
//! The metrics server caps its connections far below the fd limit, but the
//! control socket, the watcher, BPF maps and list files need fds too: raise
//! the soft RLIMIT_NOFILE to the hard limit (systemd's LimitNOFILE sets both),
//! so that a low inherited soft limit (often 1024, or less) is not what
//! decides when the daemon runs out.
use nix::sys::resource::{getrlimit, setrlimit, Resource};

#[derive(Debug, thiserror::Error)]
pub enum LimitsError {
    #[error("reading RLIMIT_NOFILE: {0}")]
    Get(#[source] nix::Error),
    #[error("raising the RLIMIT_NOFILE soft limit from {from} to {to}: {source}")]
    Set {
        from: u64,
        to: u64,
        #[source]
        source: nix::Error,
    },
}

/// Raises the soft fd limit to the hard one; returns (before, after).
pub fn raise_nofile() -> Result<(u64, u64), LimitsError> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(LimitsError::Get)?;
    if soft >= hard {
        return Ok((soft, soft));
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(|source| LimitsError::Set {
        from: soft,
        to: hard,
        source,
    })?;
    Ok((soft, hard))
}

/// Allocations of 4 MiB and more are mmapped and returned at free. glibc
/// otherwise raises its mmap threshold after the first large free, and
/// argon2's m KiB per basic-auth check then stays in (and fragments) the
/// heap: 40 checks with the default m = 19 MiB in one thread left 216 MB
/// resident, against 2 MB with this (peak 21 MB either way).
pub fn return_large_allocations() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raise_nofile_lifts_a_lowered_soft_limit_to_the_hard_limit() {
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        // Lowering the soft limit is always allowed; leave room for the test runner.
        let low = hard.min(512);
        setrlimit(Resource::RLIMIT_NOFILE, low, hard).unwrap();
        let (before, after) = raise_nofile().unwrap();
        let (soft_now, hard_now) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!((before, after), (low, hard));
        assert_eq!((soft_now, hard_now), (hard, hard));
        // Already at the hard limit: nothing to do.
        assert_eq!(raise_nofile().unwrap(), (hard, hard));
    }
}
