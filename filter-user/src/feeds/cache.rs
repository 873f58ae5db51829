//! The feeds' last good copies on disk, under `<state-dir>/feeds/`: per feed
//! `<id>.list` (the body, exactly as fetched and validated) and `<id>.json`
//! (where it came from and when). The policy compiler reads `<id>.list` like
//! a list file; the fetch task is the only writer. Every write is a temp
//! file, fsync, rename, fsync of the directory: a reader (a reload, `check`)
//! sees the old copy or the new one, never half of one, also after a crash.
use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The cache's directory under a state directory.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("feeds")
}

/// A feed's file stem: a hash of its URL (URLs may be long and hold any
/// character; the metadata record names the URL).
pub fn id(url: &str) -> String {
    let h = Sha256::digest(url.as_bytes());
    h[..8].iter().map(|b| format!("{b:02x}")).collect()
}

pub fn body_path(state_dir: &Path, url: &str) -> PathBuf {
    dir(state_dir).join(format!("{}.list", id(url)))
}

pub fn meta_path(state_dir: &Path, url: &str) -> PathBuf {
    dir(state_dir).join(format!("{}.json", id(url)))
}

/// What is known about a cached copy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    /// The feed's URL as the policy writes it (credentials and all: the file
    /// is 0600 in a 0700 directory, like the policy's own secrets).
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
    /// Unix seconds the body was downloaded.
    pub fetched_at: u64,
    /// Unix seconds the server last confirmed it (a 200 or a 304).
    pub checked_at: u64,
    pub entries: usize,
    pub bytes: u64,
}

/// Largest metadata record read back (it holds a URL and two headers).
const META_MAX: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("feed cache {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn io_at(path: &Path) -> impl FnOnce(io::Error) -> CacheError + '_ {
    move |source| CacheError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The metadata of `url`'s cached copy; None when there is none, or it is
/// unreadable, oversized or about another URL (the body alone still counts).
pub fn read_meta(state_dir: &Path, url: &str) -> Option<Meta> {
    let path = meta_path(state_dir, url);
    let f = File::open(&path).ok()?;
    if f.metadata().ok()?.len() > META_MAX {
        return None;
    }
    let m: Meta = serde_json::from_reader(io::BufReader::new(f)).ok()?;
    (m.url == url).then_some(m)
}

/// Replaces `path` with `bytes` atomically (see the module comment).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CacheError> {
    let parent = path.parent().unwrap_or(Path::new("."));
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(io_at(parent))?;
    let tmp = path.with_extension("tmp");
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io_at(&tmp))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(io_at(&tmp))?;
    fs::rename(&tmp, path).map_err(io_at(path))?;
    File::open(parent)
        .and_then(|d| d.sync_all())
        .map_err(io_at(parent))
}

fn remove(path: &Path) -> Result<(), CacheError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_at(path)(e)),
        _ => Ok(()),
    }
}

/// A feed's cached copy as it was before an update, to put back if the
/// policy with the new one is not applied.
#[derive(Debug)]
pub struct Previous {
    body: Option<Vec<u8>>,
    meta: Option<Vec<u8>>,
}

/// Writes a new copy (body first: the body is what is enforced, the record
/// only describes it); returns what it replaced.
pub fn store(state_dir: &Path, body: &[u8], meta: &Meta) -> Result<Previous, CacheError> {
    let (bp, mp) = (
        body_path(state_dir, &meta.url),
        meta_path(state_dir, &meta.url),
    );
    let read = |p: &Path| match fs::read(p) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(p)(e)),
    };
    let previous = Previous {
        body: read(&bp)?,
        meta: read(&mp)?,
    };
    write_atomic(&bp, body)?;
    let json = serde_json::to_vec_pretty(meta).map_err(|e| io_at(&mp)(e.into()))?;
    write_atomic(&mp, &json)?;
    Ok(previous)
}

/// Puts back what [`store`] replaced (no copy before: none again).
pub fn restore(state_dir: &Path, url: &str, previous: Previous) -> Result<(), CacheError> {
    for (path, bytes) in [
        (body_path(state_dir, url), previous.body),
        (meta_path(state_dir, url), previous.meta),
    ] {
        match bytes {
            Some(b) => write_atomic(&path, &b)?,
            None => remove(&path)?,
        }
    }
    Ok(())
}

/// Rewrites only the record (a 304: the copy is confirmed, the body stays).
pub fn write_meta(state_dir: &Path, meta: &Meta) -> Result<(), CacheError> {
    let mp = meta_path(state_dir, &meta.url);
    let json = serde_json::to_vec_pretty(meta).map_err(|e| io_at(&mp)(e.into()))?;
    write_atomic(&mp, &json)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pc-feedcache-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn meta(url: &str, entries: usize) -> Meta {
        Meta {
            url: url.into(),
            etag: Some("\"v1\"".into()),
            fetched_at: 100,
            checked_at: 100,
            entries,
            bytes: 3,
            ..Meta::default()
        }
    }

    #[test]
    fn a_stored_copy_is_private_complete_and_leaves_no_temp_file() {
        let d = tmpdir("store");
        let url = "https://example.org/drop.txt";
        store(&d, b"10.0.0.0/8\n", &meta(url, 1)).unwrap();
        assert_eq!(fs::read(body_path(&d, url)).unwrap(), b"10.0.0.0/8\n");
        assert_eq!(read_meta(&d, url).unwrap().entries, 1);
        let mode = fs::metadata(dir(&d)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let mode = fs::metadata(body_path(&d, url))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        let names: Vec<String> = fs::read_dir(dir(&d))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        assert_eq!(names.len(), 2, "{names:?}");
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn restore_puts_back_the_previous_copy_or_none() {
        let d = tmpdir("restore");
        let url = "https://example.org/drop.txt";
        // No copy before: restoring removes the new one.
        let prev = store(&d, b"10.0.0.0/8\n", &meta(url, 1)).unwrap();
        restore(&d, url, prev).unwrap();
        assert!(!body_path(&d, url).exists());
        assert!(read_meta(&d, url).is_none());
        // A copy before: it comes back byte for byte, record included.
        store(&d, b"10.0.0.0/8\n", &meta(url, 1)).unwrap();
        let prev = store(&d, b"192.0.2.0/24\n198.51.100.0/24\n", &meta(url, 2)).unwrap();
        assert_eq!(read_meta(&d, url).unwrap().entries, 2);
        restore(&d, url, prev).unwrap();
        assert_eq!(fs::read(body_path(&d, url)).unwrap(), b"10.0.0.0/8\n");
        assert_eq!(read_meta(&d, url).unwrap().entries, 1);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn a_record_about_another_url_is_not_used() {
        let d = tmpdir("other");
        let url = "https://example.org/a.txt";
        write_meta(&d, &meta("https://example.org/b.txt", 5)).unwrap();
        fs::rename(
            meta_path(&d, "https://example.org/b.txt"),
            meta_path(&d, url),
        )
        .unwrap();
        assert!(read_meta(&d, url).is_none());
        fs::remove_dir_all(&d).unwrap();
    }
}
