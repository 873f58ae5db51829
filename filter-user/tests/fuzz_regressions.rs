//! Replays every input under fuzz/regressions/<target>/ (crashes found by
//! `cargo xtask fuzz` and fixed) and fuzz/seeds/<target>/ through the fuzz
//! targets' own entry points and invariants, on stable and without libFuzzer:
//! a regression fails `cargo test`.
#[path = "../../fuzz/src/lib.rs"]
mod fuzz;

use std::path::{Path, PathBuf};

fn inputs(kind: &str, target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz")
        .join(kind)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    files
}

/// Runs each input, naming the file of the first that fails.
fn replay(kind: &str) -> usize {
    let mut n = 0;
    for target in fuzz::TARGETS {
        for file in inputs(kind, target) {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| fuzz::run(target, &data));
            assert!(
                outcome.is_ok(),
                "fuzz target `{target}` fails on {} (see the panic above)",
                file.display()
            );
            n += 1;
        }
    }
    n
}

#[test]
fn fixed_fuzz_crashes_stay_fixed() {
    replay("regressions");
}

#[test]
fn fuzz_seeds_satisfy_the_targets_invariants() {
    let n = replay("seeds");
    assert!(n >= 10, "only {n} seed inputs found under fuzz/seeds");
}
