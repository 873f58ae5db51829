//! Man pages and shell completions, generated from the clap definitions in
//! main.rs and checked in under deploy/man and deploy/completions (the Debian
//! package ships them). The test fails when they differ from what the CLI
//! generates now; `cargo xtask gen` rewrites them (it runs this test with
//! `PORTCULLIS_REGENERATE=1`).
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use clap_complete::Shell;

/// Section 8: the commands need root (pins, XDP, the control socket); the
/// package installs the binary in /usr/sbin.
const MAN_SECTION: &str = "8";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("filter-user lives in the workspace")
        .to_path_buf()
}

/// Every generated file: its path in the repository and its contents.
fn generated() -> Vec<(PathBuf, Vec<u8>)> {
    let mut cmd = super::Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut out = Vec::new();
    fn pages(cmd: &clap::Command, out: &mut Vec<(PathBuf, Vec<u8>)>) {
        for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
            pages(sub, out);
        }
        let man = clap_mangen::Man::new(cmd.clone())
            .section(MAN_SECTION)
            .manual("portcullis manual");
        let mut text = Vec::new();
        man.render(&mut text).expect("rendering to memory");
        out.push((PathBuf::from("deploy/man").join(man.get_filename()), text));
    }
    pages(&cmd, &mut out);
    for (shell, name) in [
        (Shell::Bash, "portcullis"),
        (Shell::Zsh, "_portcullis"),
        (Shell::Fish, "portcullis.fish"),
    ] {
        let mut text = Vec::new();
        clap_complete::generate(shell, &mut cmd.clone(), "portcullis", &mut text);
        out.push((PathBuf::from("deploy/completions").join(name), text));
    }
    out.sort();
    out
}

/// Files in `dir` the generator no longer makes (a removed subcommand).
fn stale(dir: &Path, made: &[(PathBuf, Vec<u8>)]) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(repo().join(dir)) else {
        return Vec::new();
    };
    rd.flatten()
        .map(|e| dir.join(e.file_name()))
        .filter(|p| !made.iter().any(|(m, _)| m == p))
        .collect()
}

#[test]
fn man_pages_and_completions_match_the_cli() {
    let made = generated();
    let regenerate = std::env::var_os("PORTCULLIS_REGENERATE").is_some();
    let mut old: Vec<PathBuf> = stale(Path::new("deploy/man"), &made);
    old.extend(stale(Path::new("deploy/completions"), &made));
    if regenerate {
        for p in &old {
            std::fs::remove_file(repo().join(p)).expect("removing a stale file");
        }
        for (path, text) in &made {
            let full = repo().join(path);
            std::fs::create_dir_all(full.parent().expect("has a directory")).expect("mkdir");
            std::fs::write(&full, text).expect("writing a generated file");
        }
        return;
    }
    let drifted: Vec<String> = made
        .iter()
        .filter(|(path, text)| std::fs::read(repo().join(path)).ok().as_ref() != Some(text))
        .map(|(path, _)| path.display().to_string())
        .chain(old.iter().map(|p| format!("{} (stale)", p.display())))
        .collect();
    assert!(
        drifted.is_empty(),
        "generated from the CLI but not as checked in: {drifted:?}; run `cargo xtask gen`"
    );
}

#[test]
fn every_subcommand_has_a_man_page_and_completions_name_it() {
    let made = generated();
    let text = |name: &str| {
        made.iter()
            .find(|(p, _)| p.ends_with(name))
            .map(|(_, t)| String::from_utf8_lossy(t).into_owned())
            .unwrap_or_default()
    };
    let cmd = super::Cli::command();
    for sub in cmd.get_subcommands() {
        let page = format!("portcullis-{}.{MAN_SECTION}", sub.get_name());
        assert!(
            made.iter().any(|(p, _)| p.ends_with(&page)),
            "no man page {page}"
        );
        for shell in ["portcullis", "_portcullis", "portcullis.fish"] {
            assert!(
                text(shell).contains(sub.get_name()),
                "{shell} does not complete {}",
                sub.get_name()
            );
        }
    }
    assert!(text("portcullis-run.8").contains("log\\-format"));
}
