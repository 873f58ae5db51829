//! One owner per filter: the daemon holds an exclusive `flock` on a lock file
//! named after its pin root for its whole life, with its PID written in it.
//! A second daemon on the same pin root, or a `detach` that would pull the
//! filter out from under a live daemon, sees the lock and names the holder.
//!
//! The lock lives in [`LOCK_DIR`], not beside the pins: bpffs holds only BPF
//! objects, and /run is shared by every mount namespace `ip netns exec`
//! creates (it remounts /sys, not /run). The kernel drops the lock when the
//! holder dies, even by `kill -9`, so a stale file never blocks anyone.
use std::{
    fs::{File, OpenOptions},
    io::{Read, Seek, Write},
    os::{
        fd::AsRawFd,
        unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use sha2::{Digest, Sha256};

/// Where the lock files are.
pub const LOCK_DIR: &str = "/run/portcullis";

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error(
        "another portcullis daemon (PID {pid}) owns the filter under {pin_root} \
         (lock {lock}); nothing was changed: stop it first, or pass another --pin-root"
    )]
    Held {
        pid: Holder,
        pin_root: PathBuf,
        lock: PathBuf,
    },
    #[error("lock file {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("daemon PID {pid} still holds {lock} {secs} s after SIGTERM; nothing was removed")]
    StillRunning {
        pid: Holder,
        lock: PathBuf,
        secs: u64,
    },
    #[error("stopping daemon PID {pid}: {source}")]
    Signal {
        pid: u32,
        #[source]
        source: nix::Error,
    },
}

/// The PID recorded by the lock's holder (unknown if it wrote none yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder(pub Option<u32>);

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(pid) => write!(f, "{pid}"),
            None => f.write_str("unknown"),
        }
    }
}

/// The held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct OwnerLock {
    _file: File,
    path: PathBuf,
}

impl OwnerLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The lock file of `pin_root` in `dir`: the pin root's absolute path, hashed
/// (paths may hold any byte and be longer than a file name may be).
pub fn lock_path_in(dir: &Path, pin_root: &Path) -> PathBuf {
    let abs = std::path::absolute(pin_root).unwrap_or_else(|_| pin_root.to_path_buf());
    let digest = Sha256::digest(abs.as_os_str().as_encoded_bytes());
    let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    dir.join(format!("pins-{hex}.lock"))
}

pub fn lock_path(pin_root: &Path) -> PathBuf {
    lock_path_in(Path::new(LOCK_DIR), pin_root)
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> OwnerError + '_ {
    move |source| OwnerError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Non-blocking exclusive flock; `Ok(false)` when someone else holds it.
fn try_flock(file: &File) -> std::io::Result<bool> {
    // SAFETY: flock on a descriptor we own; no memory is passed.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn read_pid(file: &mut File) -> Holder {
    let mut s = String::new();
    let _ = file.rewind();
    let _ = file.take(32).read_to_string(&mut s);
    Holder(s.trim().parse().ok())
}

/// Takes the lock of `pin_root` (lock file in `dir`) and records our PID, or
/// names the holder.
pub fn acquire_in(dir: &Path, pin_root: &Path) -> Result<OwnerLock, OwnerError> {
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(io(dir))?;
    }
    let path = lock_path_in(dir, pin_root);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
        .map_err(io(&path))?;
    if !try_flock(&file).map_err(io(&path))? {
        return Err(OwnerError::Held {
            pid: read_pid(&mut file),
            pin_root: pin_root.to_path_buf(),
            lock: path,
        });
    }
    let pid = std::process::id();
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{pid}"))
        .and_then(|()| file.flush())
        .map_err(io(&path))?;
    Ok(OwnerLock { _file: file, path })
}

pub fn acquire(pin_root: &Path) -> Result<OwnerLock, OwnerError> {
    acquire_in(Path::new(LOCK_DIR), pin_root)
}

/// Who holds the lock of `pin_root` (lock file in `dir`), if anyone.
pub fn holder_in(dir: &Path, pin_root: &Path) -> Result<Option<Holder>, OwnerError> {
    let path = lock_path_in(dir, pin_root);
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(&path)(e)),
    };
    // Taking it for a moment is the only way to ask; closing releases it.
    if try_flock(&file).map_err(io(&path))? {
        Ok(None)
    } else {
        Ok(Some(read_pid(&mut file)))
    }
}

pub fn holder(pin_root: &Path) -> Result<Option<Holder>, OwnerError> {
    holder_in(Path::new(LOCK_DIR), pin_root)
}

/// SIGTERM to the holder of `pin_root`'s lock, then waits up to `timeout` for
/// the lock to be released (the daemon lets go of it as it exits).
pub fn stop_holder(pin_root: &Path, timeout: Duration) -> Result<Option<Holder>, OwnerError> {
    let Some(h) = holder(pin_root)? else {
        return Ok(None);
    };
    let lock = lock_path(pin_root);
    let Some(pid) = h.0 else {
        return Err(OwnerError::StillRunning {
            pid: h,
            lock,
            secs: 0,
        });
    };
    let target = nix::unistd::Pid::from_raw(pid as i32);
    match nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM) {
        Ok(()) | Err(nix::Error::ESRCH) => {}
        Err(source) => return Err(OwnerError::Signal { pid, source }),
    }
    let deadline = Instant::now() + timeout;
    while holder(pin_root)?.is_some() {
        if Instant::now() >= deadline {
            return Err(OwnerError::StillRunning {
                pid: h,
                lock,
                secs: timeout.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(Some(h))
}

/// Are the pins at `pin_root` only in this process's mount namespace? They
/// are when our mount namespace is not that of PID 1 (or, when PID 1 may not
/// be inspected, as in some containers, that of our parent) and that process
/// does not see the same directory: `ip netns exec` makes a namespace of its
/// own and remounts /sys, so a bpffs mounted under it vanishes, pins and all,
/// when the last process in it exits. Unknown counts as not private.
pub fn pins_are_private(pin_root: &Path) -> bool {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/mnt")).ok();
    let Some(ours) = ns("self") else {
        return false;
    };
    let parent = std::os::unix::process::parent_id().to_string();
    let Some((reference, theirs)) = ["1", parent.as_str()]
        .into_iter()
        .find_map(|pid| ns(pid).map(|n| (pid.to_string(), n)))
    else {
        return false;
    };
    if theirs == ours {
        return false;
    }
    seen_differently(pin_root, &reference).unwrap_or(false)
}

/// Does process `pid` see something other at `path` than we do (or nothing)?
/// `None` if we cannot tell.
fn seen_differently(path: &Path, pid: &str) -> Option<bool> {
    let abs = std::path::absolute(path).ok()?;
    let ours = std::fs::metadata(&abs).ok()?;
    let root = PathBuf::from(format!("/proc/{pid}/root"));
    let theirs = root.join(abs.strip_prefix("/").unwrap_or(&abs));
    match std::fs::metadata(theirs) {
        Ok(t) => Some((t.dev(), t.ino()) != (ours.dev(), ours.ino())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Missing there, unless we could not look at all.
            std::fs::metadata(&root).ok().map(|_| true)
        }
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pc-owner-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn a_second_lock_on_the_same_pin_root_names_the_holders_pid() {
        let d = dir("second");
        let root = Path::new("/sys/fs/bpf/pc-owner-test");
        let held = acquire_in(&d, root).expect("first lock");
        let written = std::fs::read_to_string(held.path()).unwrap();
        assert_eq!(written.trim(), std::process::id().to_string());
        let e = acquire_in(&d, root).unwrap_err();
        match &e {
            OwnerError::Held { pid, .. } => assert_eq!(pid.0, Some(std::process::id())),
            other => panic!("{other}"),
        }
        assert!(
            e.to_string().contains(&std::process::id().to_string()),
            "{e}"
        );
        assert_eq!(
            holder_in(&d, root).unwrap(),
            Some(Holder(Some(std::process::id())))
        );
        // Another pin root is another owner.
        let other = acquire_in(&d, Path::new("/sys/fs/bpf/pc-owner-other"));
        assert!(other.is_ok());
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_released_lock_is_free_and_its_stale_file_blocks_nobody() {
        let d = dir("release");
        let root = Path::new("/sys/fs/bpf/pc-owner-release");
        assert_eq!(holder_in(&d, root).unwrap(), None, "no file yet");
        drop(acquire_in(&d, root).unwrap());
        assert!(lock_path_in(&d, root).exists(), "the file stays");
        assert_eq!(holder_in(&d, root).unwrap(), None);
        let again = acquire_in(&d, root).expect("a stale file is no lock");
        drop(again);
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn the_lock_path_depends_on_the_absolute_pin_root_only() {
        let d = Path::new("/run/x");
        let a = lock_path_in(d, Path::new("/sys/fs/bpf/portcullis"));
        assert_eq!(a, lock_path_in(d, Path::new("/sys/fs/bpf/portcullis")));
        assert_ne!(a, lock_path_in(d, Path::new("/sys/fs/bpf/other")));
        assert!(a.starts_with(d));
    }

    #[test]
    fn a_directory_visible_from_pid_1_is_not_private() {
        // The test runs in the host's mount namespace (or cannot tell).
        assert!(!pins_are_private(&std::env::temp_dir()));
        assert!(!pins_are_private(Path::new("/nonexistent/pc-owner")));
    }
}
