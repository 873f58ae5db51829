//! Bans on disk, so that they survive a restart and a reboot: a snapshot
//! (`bans`, replaced atomically: temp file, fsync, rename, fsync of the
//! directory) and a journal of the requests since (`bans.journal`, one fsync
//! per request), folded into a new snapshot when it grows. Replaying the
//! journal over a snapshot that already holds it gives the same set (each
//! line sets, deletes or flushes), so a crash between the rename and the
//! truncation is harmless; a torn last line was never acknowledged and is
//! dropped. Anything else that does not parse is an error naming the file
//! and line, and nothing (in the kernel or on disk) is changed.
use std::{
    collections::BTreeMap,
    fs::{File, OpenOptions},
    io::{BufReader, Read, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
};

use filter_common::BAN_FOREVER;
use ipnet::IpNet;

use super::{set::Ban, BanError};

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/portcullis";
const SNAPSHOT: &str = "bans";
const JOURNAL: &str = "bans.journal";
const HEADER: &str = "portcullis-bans 1";
/// Largest file read back (a full 2M-entry list is about 150 MiB).
pub const MAX_FILE_BYTES: u64 = 512 << 20;
/// Longest line (a reason is at most 256 bytes, escaped ×3).
const MAX_LINE: usize = 2048;
/// The journal is folded into the snapshot past this many lines.
const COMPACT_LINES: u64 = 200_000;

/// One journal record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rec {
    Add(Ban),
    Del(IpNet),
    Flush(Option<String>),
}

pub struct Store {
    dir: PathBuf,
    journal: File,
    journal_lines: u64,
}

/// CLOCK_TAI minus the Unix clock, in ns, for the file's Unix times.
fn offset_ns(tai_offset_s: i64) -> i128 {
    tai_offset_s as i128 * 1_000_000_000
}

fn escape(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_graphic() && b != b'%' && b != b'-' {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn unescape(s: &str) -> Option<String> {
    if s == "-" {
        return Some(String::new());
    }
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

fn ban_fields(b: &Ban, tai_offset_s: i64) -> String {
    let expires = if b.expires_ns == BAN_FOREVER {
        "forever".to_string()
    } else {
        (b.expires_ns as i128 - offset_ns(tai_offset_s)).to_string()
    };
    format!(
        "{} {expires} {} {}",
        b.net,
        escape(&b.tag),
        escape(&b.reason)
    )
}

fn parse_ban(f: &[&str], tai_offset_s: i64) -> Result<Ban, String> {
    let [net, expires, tag, reason] = f else {
        return Err("expected: PREFIX EXPIRY TAG REASON".into());
    };
    let net: IpNet = net
        .parse()
        .map_err(|_| format!("`{net}` is not a prefix"))?;
    let expires_ns = if *expires == "forever" {
        BAN_FOREVER
    } else {
        let unix: i128 = expires
            .parse()
            .map_err(|_| format!("`{expires}` is not a time"))?;
        (unix + offset_ns(tai_offset_s)).clamp(0, BAN_FOREVER as i128 - 1) as u64
    };
    Ok(Ban {
        net,
        expires_ns,
        tag: unescape(tag).ok_or("bad escape in the tag")?,
        reason: unescape(reason).ok_or("bad escape in the reason")?,
    })
}

fn encode(r: &Rec, tai_offset_s: i64) -> String {
    match r {
        Rec::Add(b) => format!("+ {}\n", ban_fields(b, tai_offset_s)),
        Rec::Del(n) => format!("- {n}\n"),
        Rec::Flush(None) => "F *\n".into(),
        Rec::Flush(Some(t)) => format!("F {}\n", escape(t)),
    }
}

fn decode(line: &str, tai_offset_s: i64) -> Result<Rec, String> {
    let f: Vec<&str> = line.split(' ').collect();
    match f.as_slice() {
        ["+", rest @ ..] => parse_ban(rest, tai_offset_s).map(Rec::Add),
        ["-", net] => net
            .parse()
            .map(Rec::Del)
            .map_err(|_| format!("`{net}` is not a prefix")),
        ["F", "*"] => Ok(Rec::Flush(None)),
        ["F", tag] => Ok(Rec::Flush(Some(
            unescape(tag).ok_or("bad escape in the tag")?,
        ))),
        _ => Err("not a journal record (+, - or F)".into()),
    }
}

/// Reads `path` as lines, bounded; `None` if it does not exist.
fn read_lines(path: &Path) -> Result<Option<(Vec<String>, bool)>, BanError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(BanError::io(path, e)),
    };
    let len = file.metadata().map_err(|e| BanError::io(path, e))?.len();
    if len > MAX_FILE_BYTES {
        return Err(BanError::Corrupt {
            path: path.to_path_buf(),
            line: 0,
            detail: format!("{len} bytes, more than the {MAX_FILE_BYTES} a ban file may have"),
        });
    }
    let mut text = String::new();
    BufReader::new(file.take(MAX_FILE_BYTES))
        .read_to_string(&mut text)
        .map_err(|e| BanError::Corrupt {
            path: path.to_path_buf(),
            line: 0,
            detail: format!("not readable as text: {e}"),
        })?;
    let complete = text.is_empty() || text.ends_with('\n');
    Ok(Some((text.lines().map(str::to_string).collect(), complete)))
}

pub struct Loaded {
    pub bans: Vec<Ban>,
    /// Whether any state was found (else this is the first start here).
    pub found: bool,
}

impl Store {
    /// Opens (creating, mode 0700) the state directory and reads the bans
    /// back: the snapshot, then the journal.
    pub fn open(dir: &Path, tai_offset_s: i64) -> Result<(Store, Loaded), BanError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| BanError::io(dir, e))?;
        let mut bans: BTreeMap<IpNet, Ban> = BTreeMap::new();
        let snap = dir.join(SNAPSHOT);
        let mut found = false;
        if let Some((lines, complete)) = read_lines(&snap)? {
            found = true;
            let corrupt = |line: usize, detail: String| BanError::Corrupt {
                path: snap.clone(),
                line,
                detail,
            };
            if !complete {
                return Err(corrupt(lines.len(), "truncated last line".into()));
            }
            match lines.first() {
                Some(h) if h == HEADER => {}
                _ => return Err(corrupt(1, format!("the first line is not `{HEADER}`"))),
            }
            for (i, l) in lines.iter().enumerate().skip(1) {
                if l.len() > MAX_LINE {
                    return Err(corrupt(i + 1, "line too long".into()));
                }
                let f: Vec<&str> = l.split(' ').collect();
                let b = parse_ban(&f, tai_offset_s).map_err(|d| corrupt(i + 1, d))?;
                bans.insert(b.net, b);
            }
        }
        let jpath = dir.join(JOURNAL);
        let mut journal_lines = 0;
        if let Some((mut lines, complete)) = read_lines(&jpath)? {
            found = true;
            if !complete {
                // The request it belonged to was never answered.
                tracing::warn!(
                    "{}: dropped a torn last line (a request interrupted before its answer)",
                    jpath.display()
                );
                lines.pop();
            }
            for (i, l) in lines.iter().enumerate() {
                let corrupt = |detail: String| BanError::Corrupt {
                    path: jpath.clone(),
                    line: i + 1,
                    detail,
                };
                if l.len() > MAX_LINE {
                    return Err(corrupt("line too long".into()));
                }
                match decode(l, tai_offset_s).map_err(corrupt)? {
                    Rec::Add(b) => {
                        bans.insert(b.net, b);
                    }
                    Rec::Del(n) => {
                        bans.remove(&n);
                    }
                    Rec::Flush(tag) => {
                        bans.retain(|_, b| tag.as_ref().is_some_and(|t| *t != b.tag));
                    }
                }
                journal_lines += 1;
            }
        }
        let journal = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&jpath)
            .map_err(|e| BanError::io(&jpath, e))?;
        let store = Store {
            dir: dir.to_path_buf(),
            journal,
            journal_lines,
        };
        Ok((
            store,
            Loaded {
                bans: bans.into_values().collect(),
                found,
            },
        ))
    }

    /// Appends one request's records and syncs them: when this returns, the
    /// request survives a crash.
    pub fn append(&mut self, recs: &[Rec], tai_offset_s: i64) -> Result<(), BanError> {
        if recs.is_empty() {
            return Ok(());
        }
        let mut buf = String::new();
        for r in recs {
            buf.push_str(&encode(r, tai_offset_s));
        }
        let path = self.dir.join(JOURNAL);
        self.journal
            .write_all(buf.as_bytes())
            .and_then(|()| self.journal.sync_data())
            .map_err(|e| BanError::io(&path, e))?;
        self.journal_lines += recs.len() as u64;
        Ok(())
    }

    pub fn wants_compaction(&self, entries: usize) -> bool {
        self.journal_lines > COMPACT_LINES.max(entries as u64)
    }

    /// Replaces the snapshot with `bans` and empties the journal.
    pub fn compact(&mut self, bans: &[Ban], tai_offset_s: i64) -> Result<(), BanError> {
        let snap = self.dir.join(SNAPSHOT);
        let tmp = self.dir.join(format!("{SNAPSHOT}.tmp"));
        let mut out = String::with_capacity(bans.len() * 64 + 32);
        out.push_str(HEADER);
        out.push('\n');
        for b in bans {
            out.push_str(&ban_fields(b, tai_offset_s));
            out.push('\n');
        }
        let write = || -> std::io::Result<()> {
            let mut f = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(out.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, &snap)?;
            File::open(&self.dir)?.sync_all()?;
            self.journal.set_len(0)?;
            self.journal.sync_all()
        };
        write().map_err(|e| BanError::io(&snap, e))?;
        self.journal_lines = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pc-bans-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn ban(net: &str, expires_ns: u64, tag: &str, reason: &str) -> Ban {
        Ban {
            net: net.parse().unwrap(),
            expires_ns,
            tag: tag.into(),
            reason: reason.into(),
        }
    }

    #[test]
    fn journal_and_snapshot_give_back_the_set_with_odd_reasons() {
        let d = dir("roundtrip");
        let (mut s, l) = Store::open(&d, 37).unwrap();
        assert!(!l.found && l.bans.is_empty());
        let a = ban(
            "192.0.2.1/32",
            5_000_000_000_000,
            "f2b",
            "sshd: 5 failures % - x\n",
        );
        let b = ban("2001:db8::/48", BAN_FOREVER, "", "");
        s.append(&[Rec::Add(a.clone()), Rec::Add(b.clone())], 37)
            .unwrap();
        s.append(&[Rec::Del(b.net)], 37).unwrap();
        drop(s);
        let (mut s, l) = Store::open(&d, 37).unwrap();
        assert_eq!(l.bans, vec![a.clone()]);
        s.compact(&l.bans, 37).unwrap();
        s.append(&[Rec::Add(b.clone()), Rec::Flush(Some("f2b".into()))], 37)
            .unwrap();
        drop(s);
        let (_, l) = Store::open(&d, 37).unwrap();
        assert_eq!(l.bans, vec![b]);
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn the_unix_time_on_disk_follows_a_changed_tai_offset() {
        let d = dir("offset");
        let (mut s, _) = Store::open(&d, 0).unwrap();
        s.append(&[Rec::Add(ban("192.0.2.1/32", 10_000_000_000, "", ""))], 0)
            .unwrap();
        drop(s);
        let (_, l) = Store::open(&d, 37).unwrap();
        assert_eq!(l.bans[0].expires_ns, 47_000_000_000);
        std::fs::remove_dir_all(d).ok();
    }

    #[test]
    fn a_torn_last_journal_line_is_dropped_and_a_corrupt_one_named() {
        let d = dir("torn");
        let (mut s, _) = Store::open(&d, 0).unwrap();
        s.append(&[Rec::Add(ban("192.0.2.1/32", BAN_FOREVER, "", ""))], 0)
            .unwrap();
        drop(s);
        let j = d.join(JOURNAL);
        let mut f = OpenOptions::new().append(true).open(&j).unwrap();
        f.write_all(b"+ 192.0.2.2/32 forev").unwrap();
        drop(f);
        let (_, l) = Store::open(&d, 0).unwrap();
        assert_eq!(l.bans.len(), 1);
        std::fs::write(&j, "+ 192.0.2.1/32 forever - -\nbogus\n").unwrap();
        let e = Store::open(&d, 0).err().unwrap().to_string();
        assert!(e.contains("bans.journal:2:"), "{e}");
        std::fs::write(&j, "").unwrap();
        std::fs::write(d.join(SNAPSHOT), "not a header\n").unwrap();
        let e = Store::open(&d, 0).err().unwrap().to_string();
        assert!(e.contains("bans:1:") && e.contains(HEADER), "{e}");
        std::fs::remove_dir_all(d).ok();
    }
}
