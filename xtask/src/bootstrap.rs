//! Installs what building the XDP object needs, idempotently and visibly:
//! nightly rust-src (for `-Z build-std=core`), Debian's LLVM 22 development
//! files, bpf-linker 0.13 built against them, cargo-fuzz, and the test tools
//! (openssl, Python's prometheus_client; for deploy/: lintian, dpkg-dev,
//! promtool, and kubernetes-validate in a venv under target/). Where it cannot install (not
//! root, not Debian) it prints the exact commands instead.
use std::{path::Path, process::Command};

use anyhow::{bail, Result};

use crate::{clean_cargo, exec};

const BPF_LINKER_VERSION: &str = "0.13.0";
const CARGO_FUZZ_VERSION: &str = "0.13.2";
const LLVM_PREFIX: &str = "/usr/lib/llvm-22";
const LLVM_PACKAGES: [&str; 2] = ["llvm-22-dev", "libpolly-22-dev"];

pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

fn say(what: &str, state: &str) {
    eprintln!("[bootstrap] {what}: {state}");
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn run() -> Result<()> {
    nightly()?;
    rust_src()?;
    bpf_linker()?;
    cargo_fuzz()?;
    test_tools()?;
    Ok(())
}

/// What the tests check the daemon with: openssl(1) makes the metrics TLS
/// certificates, Python's `prometheus_client` parses the exposition.
pub fn test_tools() -> Result<()> {
    let works = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    };
    let mut apt: Vec<&str> = Vec::new();
    if works("openssl", &["version"]) {
        say("openssl", "present");
    } else {
        apt.push("openssl");
    }
    if !works("python3", &["--version"]) {
        apt.push("python3");
    }
    if !apt.is_empty() {
        say(&apt.join(", "), "missing, installing");
        if !is_root() {
            bail!("as root: apt-get install -y {}", apt.join(" "));
        }
        exec(Command::new("apt-get").args(["update", "-qq"]))?;
        exec(
            Command::new("apt-get")
                .args(["install", "-y", "-qq"])
                .args(&apt),
        )?;
    }
    let import = || works("python3", &["-c", "import prometheus_client"]);
    if import() {
        say("python3 prometheus_client", "present");
        return Ok(());
    }
    say("python3 prometheus_client", "missing, installing with pip");
    let pip = |extra: &[&str]| {
        Command::new("python3")
            .args(["-m", "pip", "install", "--quiet", "prometheus_client"])
            .args(extra)
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    // A Debian python3 refuses pip installs outside a venv (PEP 668).
    if !pip(&[]) && !pip(&["--break-system-packages"]) && is_root() {
        let _ = exec(Command::new("apt-get").args([
            "install",
            "-y",
            "-qq",
            "python3-prometheus-client",
        ]));
    }
    if !import() {
        bail!("python3 cannot import prometheus_client: python3 -m pip install prometheus_client");
    }
    Ok(())
}

/// cargo-fuzz, for `cargo xtask fuzz` (the targets build with nightly).
pub fn cargo_fuzz() -> Result<()> {
    if let Some(v) = output(clean_cargo(None).args(["fuzz", "--version"])) {
        say("cargo-fuzz", &format!("present ({})", v.trim()));
        return Ok(());
    }
    say("cargo-fuzz", "missing, installing (about 2 minutes)");
    exec(clean_cargo(None).args([
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
}

fn nightly() -> Result<()> {
    let mut cmd = clean_cargo(Some("nightly"));
    cmd.arg("--version");
    if output(&mut cmd).is_some() {
        say("nightly toolchain", "present");
        return Ok(());
    }
    say("nightly toolchain", "missing, installing");
    exec(Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]))
}

fn rust_src() -> Result<()> {
    let sysroot = output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    let core = Path::new(&sysroot).join("lib/rustlib/src/rust/library/core");
    if core.is_dir() {
        say("rust-src (nightly)", "present");
        return Ok(());
    }
    say("rust-src (nightly)", "missing, installing");
    exec(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
}

fn bpf_linker() -> Result<()> {
    if let Some(v) = output(Command::new("bpf-linker").arg("--version")) {
        if v.contains(BPF_LINKER_VERSION) {
            say("bpf-linker", &format!("present ({})", v.trim()));
            return Ok(());
        }
        say(
            "bpf-linker",
            &format!("found {}, need {BPF_LINKER_VERSION}", v.trim()),
        );
    }
    llvm()?;
    say("bpf-linker", "building against LLVM 22 (about 3 minutes)");
    exec(clean_cargo(None).env("LLVM_PREFIX", LLVM_PREFIX).args([
        "install",
        "bpf-linker",
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        "llvm-22",
    ]))
}

fn llvm() -> Result<()> {
    let config = Path::new(LLVM_PREFIX).join("bin/llvm-config");
    let polly = Path::new(LLVM_PREFIX).join("lib/libPolly.a");
    if config.is_file() && polly.is_file() {
        say("LLVM 22 (llvm-22-dev, libpolly-22-dev)", "present");
        return Ok(());
    }
    let install = format!("apt-get install -y {}", LLVM_PACKAGES.join(" "));
    if !is_root() || !Path::new("/etc/debian_version").exists() {
        eprintln!(
            "[bootstrap] LLVM 22 is missing and this is not root on Debian. Run:\n  \
             sudo apt-get update && sudo {install}\n  \
             LLVM_PREFIX={LLVM_PREFIX} cargo install bpf-linker --version {BPF_LINKER_VERSION} \
             --no-default-features --features llvm-22\n  \
             rustup component add rust-src --toolchain nightly"
        );
        bail!("LLVM 22 development files are required to build bpf-linker");
    }
    say("LLVM 22", "missing, installing from Debian");
    apt_install(&LLVM_PACKAGES, true)
}

/// `apt-get install` of `packages` (as root, on Debian), after an
/// `apt-get update` only if apt does not know one of them yet.
fn apt_install(packages: &[&str], recommends: bool) -> Result<()> {
    let known = packages.iter().all(|p| {
        output(Command::new("apt-cache").args(["policy", p]))
            .is_some_and(|s| s.contains("Candidate:") && !s.contains("Candidate: (none)"))
    });
    if !known {
        exec(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    let mut install = Command::new("apt-get");
    install
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq"]);
    if !recommends {
        install.arg("--no-install-recommends");
    }
    exec(install.args(packages))
}

/// What `vm-test` needs on the host (Debian packages). `kmod` provides
/// `depmod`: kernel packages ship no modules.dep (their postinst generates it),
/// so the xtask runs `depmod -b` on the extracted tree. `xz-utils` unpacks
/// trixie's compressed modules for busybox's `insmod`.
const VM_PACKAGES: [&str; 5] = [
    "qemu-system-x86",
    "busybox-static",
    "cpio",
    "kmod",
    "xz-utils",
];

fn installed(package: &str) -> bool {
    output(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]))
        .is_some_and(|s| s.trim() == "install ok installed")
}

/// Installs what the VM tests need (QEMU, a static busybox for the
/// initramfs, cpio, depmod, xz), skipping what is present.
pub fn vm() -> Result<()> {
    let mut missing = Vec::new();
    for package in VM_PACKAGES {
        if installed(package) {
            say(package, "present");
        } else {
            say(package, "missing");
            missing.push(package);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let install = format!("apt-get install -y {}", missing.join(" "));
    if !is_root() || !Path::new("/etc/debian_version").exists() {
        eprintln!(
            "[bootstrap] VM tests need packages this user cannot install. Run:\n  sudo {install}"
        );
        bail!("missing VM test packages: {}", missing.join(", "));
    }
    say(
        "VM test packages",
        &format!("installing {}", missing.join(" ")),
    );
    apt_install(&missing, false)
}

/// What the package, manifest, schema and alert-rule checks need: Debian's
/// `lintian`, `dpkg-dev` (dpkg-shlibdeps), `prometheus` (for `promtool`) and
/// `fail2ban` (the e2e suite runs its server with a private config; neither
/// starts a service without systemd, and CI has none), and a Python
/// venv at target/pytools with `kubernetes-validate` (it bundles the
/// Kubernetes schemas and brings `jsonschema`, which checks the policy schema).
pub fn deploy_tools(root: &Path) -> Result<()> {
    let mut missing = Vec::new();
    for (package, tool) in DEPLOY_PACKAGES {
        if Command::new(tool).arg("--version").output().is_ok() {
            say(package, "present");
        } else {
            say(package, "missing");
            missing.push(*package);
        }
    }
    if !missing.is_empty() {
        if !is_root() || !Path::new("/etc/debian_version").exists() {
            bail!(
                "as root on Debian: apt-get install -y --no-install-recommends {}",
                missing.join(" ")
            );
        }
        apt_install(&missing, false)?;
    }
    crowdsec(root)?;
    let venv = pytools(root);
    let python = venv.join("bin/python");
    let pinned = format!("kubernetes-validate=={KUBERNETES_VALIDATE_VERSION}");
    let have = output(Command::new(&python).args(["-m", "pip", "show", "kubernetes-validate"]))
        .is_some_and(|s| s.contains(&format!("Version: {KUBERNETES_VALIDATE_VERSION}")));
    if have {
        say(&pinned, "present");
        return Ok(());
    }
    say(&pinned, "missing, installing into target/pytools");
    if !python.is_file() {
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success());
        // Debian's python3 makes venvs only with python3-venv (ensurepip).
        if !made {
            if !is_root() {
                bail!("python3 -m venv failed: as root, apt-get install -y python3-venv");
            }
            let _ = std::fs::remove_dir_all(&venv);
            exec(
                Command::new("apt-get")
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .args(["install", "-y", "-qq", "python3-venv"]),
            )?;
            exec(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
        }
    }
    exec(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
            ])
            .arg(&pinned),
    )
}

/// Where the e2e suite finds CrowdSec (`usr/bin/crowdsec`, `usr/bin/cscli`
/// below it): Debian's package unpacked, not installed.
pub fn crowdsec_root(root: &Path) -> std::path::PathBuf {
    root.join("target/crowdsec/root")
}

/// Debian's `crowdsec` (LAPI + cscli) for the bouncer e2e scenario.
/// `apt-get install crowdsec` fails offline (its postinst registers with
/// CrowdSec's central API), so the package is downloaded and unpacked under
/// target/ and run with a private config (../shared/TOOLCHAIN.md); its one
/// shared library, libsqlite3, is installed if missing.
fn crowdsec(root: &Path) -> Result<()> {
    let dir = crowdsec_root(root);
    let bin = dir.join("usr/bin/crowdsec");
    if Command::new(&bin)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        say("crowdsec (unpacked)", "present");
        return Ok(());
    }
    say(
        "crowdsec (unpacked)",
        "missing, downloading into target/crowdsec",
    );
    if !is_root() || !Path::new("/etc/debian_version").exists() {
        bail!(
            "as root on Debian: apt-get download crowdsec && dpkg -x crowdsec_*.deb {}",
            dir.display()
        );
    }
    if !installed("libsqlite3-0") {
        apt_install(&["libsqlite3-0"], false)?;
    }
    let dl = root.join("target/crowdsec/dl");
    let _ = std::fs::remove_dir_all(&dl);
    std::fs::create_dir_all(&dl)?;
    let known = output(Command::new("apt-cache").args(["policy", "crowdsec"]))
        .is_some_and(|s| s.contains("Candidate:") && !s.contains("Candidate: (none)"));
    if !known {
        exec(Command::new("apt-get").args(["update", "-qq"]))?;
    }
    exec(
        Command::new("apt-get")
            .current_dir(&dl)
            .args(["download", "-qq", "crowdsec"]),
    )?;
    let deb = std::fs::read_dir(&dl)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or_else(|| {
            anyhow::anyhow!("apt-get download crowdsec left no .deb in {}", dl.display())
        })?;
    let _ = std::fs::remove_dir_all(&dir);
    exec(Command::new("dpkg").arg("-x").arg(&deb).arg(&dir))?;
    let _ = std::fs::remove_dir_all(&dl);
    if !Command::new(&bin)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        bail!("{} does not run after unpacking", bin.display());
    }
    Ok(())
}

/// The venv of the Python checkers (`bin/kubernetes-validate`, `bin/python`).
pub fn pytools(root: &Path) -> std::path::PathBuf {
    root.join("target/pytools")
}

const KUBERNETES_VALIDATE_VERSION: &str = "1.37.0";

/// Debian packages of the deploy checks, each with a program that answers
/// `--version` once it is installed.
const DEPLOY_PACKAGES: &[(&str, &str)] = &[
    ("lintian", "lintian"),
    ("dpkg-dev", "dpkg-shlibdeps"),
    ("prometheus", "promtool"),
    ("fail2ban", "fail2ban-server"),
];
