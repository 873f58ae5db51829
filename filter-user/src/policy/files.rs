//! Reading the policy and its list files without trusting what the paths name.
//!
//! Only regular files are read (symlinks are followed): a FIFO would block
//! `check`, a reload or the daemon's start until someone writes to it, a
//! device may never end. The type and size are checked with `stat` before the
//! file is opened (opening a device can have effects of its own) and again with
//! `fstat` on the descriptor, which is opened `O_NONBLOCK | O_CLOEXEC` so that
//! a file swapped for a FIFO in between cannot block the open. The size is
//! capped before a byte is read, so an oversized file costs no memory, and the
//! read goes in chunks against a deadline.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Largest policy file. Policies are written by hand; 4 MiB is thousands of
/// zones' worth of text (the list files hold the big prefix sets).
pub(crate) const POLICY_MAX_BYTES: u64 = 4 << 20;
/// Largest list file. A 1,000,000-prefix feed is about 20 MB as text and about
/// 70 MB as Spamhaus JSON lines; 128 MiB fits either with room to spare.
pub(crate) const LIST_MAX_BYTES: u64 = 128 << 20;
/// Largest total of all list files of one policy: a few 1M-prefix feeds, far
/// more prefixes than the blocklist maps hold.
pub(crate) const LISTS_TOTAL_MAX_BYTES: u64 = 256 << 20;
/// All files of one load (the policy and every list file) must be read within
/// this; a regular file on a local disk needs a fraction of it even at the caps.
pub(crate) const READ_TIME_LIMIT: Duration = Duration::from_secs(30);

const CHUNK: usize = 1 << 20;

/// The caps and the deadline of one load (the policy and its list files).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ReadLimits {
    pub deadline: Instant,
    pub list_max: u64,
    pub lists_total_max: u64,
}

impl ReadLimits {
    /// The documented caps, and a deadline [`READ_TIME_LIMIT`] from now.
    pub(crate) fn standard() -> ReadLimits {
        ReadLimits {
            deadline: Instant::now() + READ_TIME_LIMIT,
            list_max: LIST_MAX_BYTES,
            lists_total_max: LISTS_TOTAL_MAX_BYTES,
        }
    }
}

/// Why a file was not read. Displayed after the file's name: "`x` is a FIFO, …".
#[derive(Debug, thiserror::Error)]
pub(crate) enum FileError {
    #[error("cannot be opened: {0}")]
    Open(io::Error),
    #[error("is {0}, not a regular file")]
    NotRegular(&'static str),
    #[error("is {} ({size} bytes), more than the {} allowed", mib(*size), mib(*cap))]
    TooLarge { size: u64, cap: u64 },
    #[error("was not read within {limit:?} ({done} of {size} bytes read)")]
    TimedOut {
        limit: Duration,
        done: u64,
        size: u64,
    },
    #[error("cannot be read: {0}")]
    Read(io::Error),
}

impl FileError {
    /// The message about `subject` ("policy file", "list file `…`").
    pub(crate) fn describe(&self, subject: &str) -> String {
        match self {
            FileError::Open(e) | FileError::Read(e) => format!("cannot read {subject}: {e}"),
            other => format!("{subject} {other}"),
        }
    }
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1 << 20))
}

/// What a file that is not regular is, for the message.
fn kind(meta: &Metadata) -> Option<&'static str> {
    let t = meta.file_type();
    if t.is_file() {
        None
    } else if t.is_dir() {
        Some("a directory")
    } else if t.is_fifo() {
        Some("a FIFO")
    } else if t.is_socket() {
        Some("a socket")
    } else if t.is_char_device() {
        Some("a character device")
    } else if t.is_block_device() {
        Some("a block device")
    } else {
        Some("not a file")
    }
}

fn check(meta: &Metadata, cap: u64) -> Result<(), FileError> {
    if let Some(k) = kind(meta) {
        return Err(FileError::NotRegular(k));
    }
    if meta.len() > cap {
        return Err(FileError::TooLarge {
            size: meta.len(),
            cap,
        });
    }
    Ok(())
}

/// Reads the regular file at `path` (symlinks followed): at most `cap` bytes,
/// by `deadline`.
pub(crate) fn read_regular(path: &Path, cap: u64, deadline: Instant) -> Result<Vec<u8>, FileError> {
    check(&std::fs::metadata(path).map_err(FileError::Open)?, cap)?;
    // std opens with O_CLOEXEC; O_NONBLOCK keeps a FIFO swapped in since the
    // stat from blocking the open (fstat below then refuses it).
    let mut file = File::options()
        .read(true)
        .custom_flags(nix::libc::O_NONBLOCK)
        .open(path)
        .map_err(FileError::Open)?;
    let meta = file.metadata().map_err(FileError::Open)?;
    check(&meta, cap)?;
    let size = meta.len();
    let mut out = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    let mut chunk = vec![0u8; CHUNK];
    loop {
        if Instant::now() > deadline {
            return Err(FileError::TimedOut {
                limit: READ_TIME_LIMIT,
                done: out.len() as u64,
                size,
            });
        }
        let n = match file.read(&mut chunk) {
            Ok(0) => return Ok(out),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FileError::Read(e)),
        };
        // The file may grow while it is read.
        if (out.len() + n) as u64 > cap {
            return Err(FileError::TooLarge {
                size: (out.len() + n) as u64,
                cap,
            });
        }
        out.extend_from_slice(&chunk[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::path::PathBuf;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pc-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let d = dir("fifo");
        let fifo = d.join("list.txt");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let started = Instant::now();
        let e = read_regular(&fifo, LIST_MAX_BYTES, soon()).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(e.to_string(), "is a FIFO, not a regular file");
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn symlink_to_fifo_is_refused_and_symlink_to_file_is_read() {
        let d = dir("link");
        let fifo = d.join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        std::os::unix::fs::symlink(&fifo, d.join("to-fifo")).unwrap();
        let e = read_regular(&d.join("to-fifo"), LIST_MAX_BYTES, soon()).unwrap_err();
        assert!(matches!(e, FileError::NotRegular("a FIFO")), "{e}");
        std::fs::write(d.join("real"), "10.0.0.0/8\n").unwrap();
        std::os::unix::fs::symlink(d.join("real"), d.join("to-real")).unwrap();
        let bytes = read_regular(&d.join("to-real"), LIST_MAX_BYTES, soon()).unwrap();
        assert_eq!(bytes, b"10.0.0.0/8\n");
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn directory_socket_and_device_are_refused() {
        let d = dir("kinds");
        let sock = d.join("sock");
        let _l = UnixListener::bind(&sock).unwrap();
        for (path, what) in [
            (d.clone(), "a directory"),
            (sock, "a socket"),
            (PathBuf::from("/dev/zero"), "a character device"),
        ] {
            let e = read_regular(&path, LIST_MAX_BYTES, soon()).unwrap_err();
            assert_eq!(e.to_string(), format!("is {what}, not a regular file"));
        }
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn oversized_file_is_refused_before_reading() {
        let d = dir("big");
        let big = d.join("big.txt");
        // Sparse: 200 MiB of size, no disk; refused from its size alone.
        File::create(&big).unwrap().set_len(200 << 20).unwrap();
        let e = read_regular(&big, LIST_MAX_BYTES, soon()).unwrap_err();
        assert!(
            matches!(e, FileError::TooLarge { size, cap } if size == 200 << 20 && cap == LIST_MAX_BYTES),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "is 200.0 MiB (209715200 bytes), more than the 128.0 MiB allowed"
        );
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn read_past_the_deadline_gives_up() {
        let d = dir("slow");
        let f = d.join("l.txt");
        std::fs::write(&f, "10.0.0.0/8\n").unwrap();
        let e = read_regular(
            &f,
            LIST_MAX_BYTES,
            Instant::now() - Duration::from_millis(1),
        )
        .unwrap_err();
        assert!(matches!(e, FileError::TimedOut { done: 0, .. }), "{e}");
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn missing_file_reports_the_os_error() {
        let e = read_regular(Path::new("/nonexistent/x"), 10, soon()).unwrap_err();
        assert!(e.to_string().contains("os error 2"), "{e}");
    }
}
