//! Hostile inputs to the policy compiler: files that are not regular files,
//! oversized files, secrets behind symlinks, huge values, hostile zone names.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::files::ReadLimits;
use super::*;

fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "portcullis-inputs-{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn mkfifo(path: &Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// A policy in `dir` whose blocklist names `files`.
fn policy_with_lists(dir: &Path, files: &[&str]) -> PathBuf {
    let names: Vec<String> = files.iter().map(|f| format!("\"{f}\"")).collect();
    let p = dir.join("p.toml");
    std::fs::write(
        &p,
        format!("version = 1\n[blocklist]\nfiles = [{}]\n", names.join(", ")),
    )
    .unwrap();
    p
}

fn zone_errors(name: &str) -> Vec<Diagnostic> {
    let text = format!(
        "version = 1\n[[zone]]\nname = {}\nports = [\"1/tcp\"]\nallow = []\n",
        toml_edit::Value::from(name)
    );
    compile_str(&text, Path::new("p.toml"))
        .map(|_| Vec::new())
        .unwrap_or_else(|e| e.diagnostics)
}

#[test]
fn fifo_list_file_is_refused_at_its_name_without_blocking() {
    let dir = temp_dir("fifo");
    mkfifo(&dir.join("feed.txt"));
    let policy = policy_with_lists(&dir, &["feed.txt"]);
    let started = Instant::now();
    let d = load(&policy).unwrap_err().diagnostics;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!(d[0].path, policy);
    assert_eq!((d[0].line, d[0].column), (3, 10));
    assert_eq!(
        d[0].message,
        format!(
            "list file `{}` is a FIFO, not a regular file",
            dir.join("feed.txt").display()
        )
    );
    assert!(
        d[0].help.as_deref().unwrap().contains("rename"),
        "{:?}",
        d[0].help
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn fifo_policy_file_is_refused_without_blocking() {
    let dir = temp_dir("fifo-policy");
    let policy = dir.join("p.toml");
    mkfifo(&policy);
    let started = Instant::now();
    let d = load(&policy).unwrap_err().diagnostics;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(d[0].message, "policy file is a FIFO, not a regular file");
    assert_eq!((d[0].line, d[0].column), (1, 1));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn directory_and_device_list_files_are_refused() {
    let dir = temp_dir("kinds");
    std::fs::create_dir(dir.join("sub")).unwrap();
    let policy = policy_with_lists(&dir, &["sub", "/dev/null"]);
    let d = load(&policy).unwrap_err().diagnostics;
    assert_eq!(d.len(), 2, "{d:#?}");
    assert!(
        d[0].message.ends_with("is a directory, not a regular file"),
        "{}",
        d[0]
    );
    assert!(
        d[1].message
            .ends_with("`/dev/null` is a character device, not a regular file"),
        "{}",
        d[1]
    );
    assert_eq!((d[1].line, d[1].column), (3, 17));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn oversized_list_file_is_refused_from_its_size_alone() {
    let dir = temp_dir("big");
    // Sparse: 200 MiB that is never read (refused by its size).
    std::fs::File::create(dir.join("big.txt"))
        .unwrap()
        .set_len(200 << 20)
        .unwrap();
    let policy = policy_with_lists(&dir, &["big.txt"]);
    let started = Instant::now();
    let d = load(&policy).unwrap_err().diagnostics;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(d.len(), 1);
    assert!(
        d[0].message
            .ends_with("is 200.0 MiB (209715200 bytes), more than the 128.0 MiB allowed"),
        "{}",
        d[0]
    );
    assert!(d[0].help.as_deref().unwrap().contains("at most 128.0 MiB"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn oversized_policy_file_is_refused() {
    let dir = temp_dir("big-policy");
    let policy = dir.join("p.toml");
    std::fs::File::create(&policy)
        .unwrap()
        .set_len(files::POLICY_MAX_BYTES + 1)
        .unwrap();
    let d = load(&policy).unwrap_err().diagnostics;
    assert!(
        d[0].message.contains("more than the 4.0 MiB allowed"),
        "{}",
        d[0]
    );
    assert!(d[0].help.as_deref().unwrap().contains("list files"));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn list_files_share_a_total_cap() {
    let dir = temp_dir("total");
    for name in ["a.txt", "b.txt", "c.txt"] {
        std::fs::write(dir.join(name), "192.0.2.0/24\n".repeat(100)).unwrap();
    }
    let policy = policy_with_lists(&dir, &["a.txt", "b.txt", "c.txt"]);
    // 1300 bytes each; room for two.
    let limits = ReadLimits {
        list_max: 2000,
        lists_total_max: 3000,
        ..ReadLimits::standard()
    };
    let d = load_with(&policy, limits, &dir).unwrap_err().diagnostics;
    assert_eq!(d.len(), 1, "{d:#?}");
    assert_eq!((d[0].line, d[0].column), (3, 28));
    assert!(d[0].message.contains("c.txt"), "{}", d[0]);
    assert!(
        d[0].message
            .contains("would bring the list files to more than"),
        "{}",
        d[0]
    );
    assert!(load_with(&policy_with_lists(&dir, &["a.txt", "b.txt"]), limits, &dir).is_ok());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn list_files_past_the_deadline_are_refused() {
    let dir = temp_dir("late");
    std::fs::write(dir.join("a.txt"), "192.0.2.0/24\n").unwrap();
    let policy = policy_with_lists(&dir, &["a.txt"]);
    let limits = ReadLimits {
        deadline: Instant::now() - Duration::from_millis(1),
        ..ReadLimits::standard()
    };
    let d = compile_with_limits(&policy, limits);
    assert!(d[0].message.contains("was not read within"), "{}", d[0]);
    assert!(d[0].help.as_deref().unwrap().contains("local disk"));
    std::fs::remove_dir_all(dir).ok();
}

/// Compiles the policy's text with `limits` for its list files (the policy
/// file itself is read with the standard ones).
fn compile_with_limits(policy: &Path, limits: ReadLimits) -> Vec<Diagnostic> {
    let text = std::fs::read_to_string(policy).unwrap();
    parse::compile(&text, policy, limits, Path::new("/nonexistent"))
        .unwrap_err()
        .diagnostics
}

#[test]
fn secret_behind_a_symlinked_list_file_is_never_echoed() {
    let dir = temp_dir("secret");
    let secret = dir.join("shadow");
    std::fs::write(
        &secret,
        "root:$y$j9T$SECRETTOKEN42$abc:19700:0:99999:7:::\n\
         daemon:*:19700:0:99999:7:::\n",
    )
    .unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("list.txt")).unwrap();
    let policy = policy_with_lists(&dir, &["list.txt"]);
    let err = load(&policy).unwrap_err();
    let all = err.to_string();
    assert_eq!(err.len(), 2, "{all}");
    for part in ["SECRET", "root:", "$y$", "daemon:"] {
        assert!(!all.contains(part), "`{part}` echoed:\n{all}");
    }
    assert!(
        all.contains("list.txt:1:1: error: not an address or prefix"),
        "{all}"
    );
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn a_20_mb_one_line_list_file_gives_a_short_error() {
    let dir = temp_dir("oneline");
    std::fs::write(dir.join("l.txt"), "9".repeat(20 << 20)).unwrap();
    let policy = policy_with_lists(&dir, &["l.txt"]);
    let all = load(&policy).unwrap_err().to_string();
    assert!(all.len() < 1024, "{} bytes of errors", all.len());
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn huge_values_in_the_policy_are_quoted_as_short_excerpts() {
    let long = "9".repeat(40_000);
    let text = format!(
        "version = 1\n{long} = 1\n[defaults]\nunmatched = \"{long}\"\n\
         [blocklist]\ncidrs = [\"{long}\", \"10.0.0.0/{long}\"]\n\
         [[zone]]\nname = \"a\"\nports = [\"{long}/tcp\", \"1/{long}\"]\nallow = []\n\
         action = \"{long}\"\n[metrics]\nlisten = \"{long}\"\n"
    );
    let err = compile_str(&text, Path::new("p.toml")).unwrap_err();
    assert!(err.len() >= 7, "{err}");
    for d in err.iter() {
        assert!(
            d.to_string().len() < 400,
            "{} bytes: {d}",
            d.to_string().len()
        );
    }
}

#[test]
fn hostile_zone_names_are_refused_with_a_hint() {
    for name in [
        "x\",verdict=\"pass",
        "a b",
        "-lead",
        ".hidden",
        "zoné",
        "new\nline",
        "tab\t",
        "global",
        "failsafe",
    ] {
        let d = zone_errors(name);
        assert_eq!(d.len(), 1, "{name:?}: {d:#?}");
        assert_eq!((d[0].line, d[0].column), (3, 8), "{name:?}");
        assert!(d[0].message.starts_with("zone name"), "{name:?}: {}", d[0]);
        assert!(!d[0].message.contains('\n'), "{name:?}: {}", d[0]);
    }
    let d = zone_errors("x\",verdict=\"pass");
    assert_eq!(
        d[0].message,
        "zone name \"x\",verdict=\"pass\" contains '\"'"
    );
    assert!(d[0]
        .help
        .as_deref()
        .unwrap()
        .contains("1 to 64 letters, digits"));
}

#[test]
fn zone_names_are_at_most_64_characters() {
    let ok = "a".repeat(64);
    assert!(zone_errors(&ok).is_empty());
    let d = zone_errors(&"a".repeat(65));
    assert!(
        d[0].message.ends_with("is 65 characters long (at most 64)"),
        "{}",
        d[0]
    );
    let d = zone_errors(&"a".repeat(40_000));
    assert!(d[0].to_string().len() < 300, "{}", d[0]);
}

#[test]
fn ordinary_zone_names_are_accepted() {
    for name in [
        "keep-admin",
        "keep_api",
        "v1.2",
        "A",
        "9",
        "node-exporter.metrics_2",
    ] {
        assert!(
            zone_errors(name).is_empty(),
            "{name}: {:?}",
            zone_errors(name)
        );
    }
}

#[test]
fn example_policies_still_pass() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/examples");
    for name in ["keep.toml", "keycloak.toml"] {
        load(&examples.join(name)).unwrap_or_else(|e| panic!("{name}:\n{e}"));
    }
}

#[test]
fn the_largest_meta_record_fits() {
    // MAX_ZONES zones with the longest names, seen twice over (earlier and
    // current names), as the loader records them.
    let mut meta = crate::loader::Meta::default();
    for i in 0..filter_common::MAX_ZONES as u16 {
        let old = format!("{:a>64}", i);
        let new = format!("{:b>64}", i);
        meta.zone_ids.insert(old, i + 1);
        meta.active_zones.insert(i + 1, new);
    }
    meta.policy_path = "/".repeat(4096);
    let blob = meta.encode().expect("fits in META");
    assert!((blob.len as usize) < filter_common::META_CAPACITY / 2);
}

#[test]
fn diagnostics_are_capped_per_policy() {
    let bad: Vec<String> = (0..500).map(|i| format!("\"bad{i}\"")).collect();
    let text = format!(
        "version = 1\n[blocklist]\ncidrs = [\n{}\n]\n",
        bad.join(",\n")
    );
    let err = compile_str(&text, Path::new("p.toml")).unwrap_err();
    assert_eq!(err.len(), diag::MAX_DIAGNOSTICS + 1);
    let last = err.diagnostics.last().unwrap();
    assert_eq!(last.message, "400 more errors from here on (not shown)");
    assert_eq!((last.line, last.column), (104, 1));
    assert!(
        err.to_string().len() < 32 << 10,
        "{}",
        err.to_string().len()
    );
}
