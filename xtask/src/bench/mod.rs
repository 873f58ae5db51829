//! `cargo xtask bench [--quick] [-- RUNNER ARGS]`: installs what the comparison needs
//! (nftables, iptables, ipset, ethtool), builds the eBPF objects, the daemon and
//! the runner (`runner/`, release, feature `bench`), and runs it as root.
use std::{path::Path, process::Command};

use anyhow::{bail, Result};

use crate::{bootstrap, build_ebpf, clean_cargo, exec};

/// Debian packages of the bench's comparison systems and its stats reader.
const PACKAGES: [(&str, &str); 4] = [
    ("nft", "nftables"),
    ("iptables", "iptables"),
    ("ipset", "ipset"),
    ("ethtool", "ethtool"),
];

fn have(cmd: &str) -> bool {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .any(|d| Path::new(d).join(cmd).exists())
}

fn install_tools() -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(cmd, pkg)| {
            let present = have(cmd);
            eprintln!(
                "[bootstrap] {pkg}: {}",
                if present { "present" } else { "missing" }
            );
            !present
        })
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !have("apt-get") {
        bail!("install {} (no apt-get here)", missing.join(" "));
    }
    eprintln!("[bootstrap] apt-get install -y {}", missing.join(" "));
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
    };
    if !install()?.success() {
        exec(Command::new("apt-get").arg("update"))?;
        if !install()?.success() {
            bail!("apt-get install {} failed", missing.join(" "));
        }
    }
    Ok(())
}

pub fn run(root: &Path, quick: bool, runner_args: &[String]) -> Result<()> {
    if !bootstrap::is_root() {
        bail!("the benchmark loads BPF programs and creates namespaces: run `cargo xtask bench` as root");
    }
    bootstrap::run()?;
    install_tools()?;
    build_ebpf(root)?;
    let bench_object = root.join("target/ebpf/bpfel-unknown-none/release/bench-progs");
    if !bench_object.is_file() {
        bail!("{} is missing after the eBPF build", bench_object.display());
    }
    exec(clean_cargo(None).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "filter-user",
        "--bin",
        "portcullis",
    ]))?;
    exec(clean_cargo(None).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "xtask",
        "--features",
        "bench",
        "--bin",
        "portcullis-bench",
    ]))?;
    let mut cmd = Command::new(root.join("target/release/portcullis-bench"));
    cmd.current_dir(root)
        .arg("--out")
        .arg(root.join("bench"))
        .arg("--bench-object")
        .arg(&bench_object)
        .arg("--portcullis")
        .arg(root.join("target/release/portcullis"));
    if quick {
        cmd.arg("--quick");
    }
    cmd.args(runner_args);
    exec(&mut cmd)
}
