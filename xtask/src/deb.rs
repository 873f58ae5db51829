//! `cargo xtask deb`: a Debian package laid out by hand and built with
//! `dpkg-deb` (no debhelper, no network), then checked: `lintian` (errors
//! fail it), an install into a throwaway root with `dpkg --root`, `check` of
//! the installed example policy by the installed binary, remove and purge.
//!
//! Layout: /usr/sbin/portcullis, the systemd unit (deploy/systemd, with the
//! binary's path), /etc/portcullis/policy.toml and its sample lists
//! (conffiles, from deploy/examples/keep.toml), man pages (deploy/man),
//! completions (deploy/completions), docs and examples under
//! /usr/share/doc/portcullis, maintainer scripts from deploy/debian.
use std::{
    fs,
    io::Write,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{bail, ensure, Context, Result};

use crate::exec;

const PACKAGE: &str = "portcullis";
const MAINTAINER: &str = "portcullis developers <portcullis@example.org>";
/// Where the package installs the binary (admin commands: root only).
const BINARY: &str = "usr/sbin/portcullis";
/// Policy 12.3: documentation over 4 kB is compressed.
const COMPRESS_OVER: u64 = 4096;

/// Files the package copies as they are: (source in the repo, destination in
/// the package, mode).
const FILES: &[(&str, &str, u32)] = &[
    (
        "deploy/examples/keep.toml",
        "etc/portcullis/policy.toml",
        0o644,
    ),
    (
        "deploy/examples/lists/drop.txt",
        "etc/portcullis/lists/drop.txt",
        0o644,
    ),
    (
        "deploy/examples/lists/drop-sample.jsonl",
        "etc/portcullis/lists/drop-sample.jsonl",
        0o644,
    ),
    (
        "deploy/completions/portcullis",
        "usr/share/bash-completion/completions/portcullis",
        0o644,
    ),
    (
        "deploy/completions/_portcullis",
        "usr/share/zsh/vendor-completions/_portcullis",
        0o644,
    ),
    (
        "deploy/completions/portcullis.fish",
        "usr/share/fish/vendor_completions.d/portcullis.fish",
        0o644,
    ),
    (
        "docs/policy.schema.json",
        "usr/share/doc/portcullis/policy.schema.json",
        0o644,
    ),
    (
        "deploy/debian/copyright",
        "usr/share/doc/portcullis/copyright",
        0o644,
    ),
    (
        "deploy/debian/README.Debian",
        "usr/share/doc/portcullis/README.Debian",
        0o644,
    ),
    (
        "deploy/debian/lintian-overrides",
        "usr/share/lintian/overrides/portcullis",
        0o644,
    ),
];

/// Documentation, compressed when large (under /usr/share/doc/portcullis).
const DOCS: &[&str] = &[
    "README.md",
    "deploy/README.md",
    "docs/operations.md",
    "docs/policy.md",
    "docs/architecture.md",
    "docs/kernels.md",
    "docs/parsing-contract.md",
];

/// The built package.
pub struct Deb {
    pub path: PathBuf,
    pub version: String,
}

fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("starting {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn write_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir)?;
    }
    fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(mode))?;
    Ok(())
}

/// gzip -9n: no name, no timestamp (reproducible, as dh_compress does).
fn gzip(bytes: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new("gzip")
        .args(["-9n", "-c"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting gzip")?;
    let mut stdin = child.stdin.take().context("gzip stdin")?;
    let data = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output()?;
    writer
        .join()
        .map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
    ensure!(out.status.success(), "gzip failed");
    Ok(out.stdout)
}

/// `shlibs:Depends` of the binary, as dpkg-shlibdeps computes it (it wants a
/// debian/control beside it).
fn shlib_depends(work: &Path, binary: &Path) -> Result<String> {
    let dir = work.join("shlibdeps");
    fs::create_dir_all(dir.join("debian"))?;
    fs::write(
        dir.join("debian/control"),
        format!("Source: {PACKAGE}\n\nPackage: {PACKAGE}\nArchitecture: any\n"),
    )?;
    let out = output(
        Command::new("dpkg-shlibdeps")
            .current_dir(&dir)
            .args(["-O", "-e"])
            .arg(binary),
    )?;
    let deps = out
        .lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .with_context(|| format!("dpkg-shlibdeps said: {out}"))?;
    Ok(deps.to_string())
}

/// Stages and builds the package from `binary` (a release `portcullis`).
pub fn build(root: &Path, binary: &Path) -> Result<Deb> {
    let started = Instant::now();
    // xtask shares the workspace's version.
    let version = env!("CARGO_PKG_VERSION").to_string();
    let arch = output(Command::new("dpkg").arg("--print-architecture"))?;
    let work = root.join("target/deb");
    let stage = work.join(format!("{PACKAGE}_{version}_{arch}"));
    if stage.exists() {
        fs::remove_dir_all(&stage)?;
    }
    fs::create_dir_all(&stage)?;

    // The binary, stripped (the embedded XDP object is data: it keeps its BTF).
    let bin = stage.join(BINARY);
    fs::create_dir_all(bin.parent().expect("has a directory"))?;
    exec(
        Command::new("strip")
            .args(["--strip-unneeded", "--remove-section=.comment", "-o"])
            .arg(&bin)
            .arg(binary),
    )?;
    write_mode(&bin, &fs::read(&bin)?, 0o755)?;

    // The unit, pointing at the packaged binary.
    let unit = fs::read_to_string(root.join("deploy/systemd/portcullis.service"))?
        .replace("/usr/local/bin/portcullis", &format!("/{BINARY}"))
        .replace(
            "# Install: see deploy/README.md.",
            "# Installed by the portcullis package: /usr/share/doc/portcullis/README.Debian.",
        );
    ensure!(
        unit.contains(&format!("ExecStart=/{BINARY} run")),
        "the unit's ExecStart= no longer names /usr/local/bin/portcullis"
    );
    write_mode(
        &stage.join("lib/systemd/system/portcullis.service"),
        unit.as_bytes(),
        0o644,
    )?;

    for (src, dst, mode) in FILES {
        write_mode(&stage.join(dst), &fs::read(root.join(src))?, *mode)?;
    }
    for entry in fs::read_dir(root.join("deploy/man"))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let dst = stage.join(format!("usr/share/man/man8/{name}.gz"));
        write_mode(&dst, &gzip(&fs::read(entry.path())?)?, 0o644)?;
    }
    let doc = stage.join("usr/share/doc/portcullis");
    for src in DOCS {
        let bytes = fs::read(root.join(src))?;
        let name = src.replace('/', "-").replace("docs-", "");
        if bytes.len() as u64 > COMPRESS_OVER {
            write_mode(&doc.join(format!("{name}.gz")), &gzip(&bytes)?, 0o644)?;
        } else {
            write_mode(&doc.join(name), &bytes, 0o644)?;
        }
    }
    for entry in walk(&root.join("deploy/examples"))? {
        let rel = entry.strip_prefix(root.join("deploy/examples"))?;
        write_mode(&doc.join("examples").join(rel), &fs::read(&entry)?, 0o644)?;
    }
    let date = output(
        Command::new("git")
            .current_dir(root)
            .args(["log", "-1", "--format=%cD"]),
    )
    .unwrap_or_else(|_| "Thu, 01 Jan 2026 00:00:00 +0000".into());
    let changelog = format!(
        "{PACKAGE} ({version}) unstable; urgency=medium\n\n  \
         * Built from the portcullis source tree (cargo xtask deb).\n\n \
         -- {MAINTAINER}  {date}\n"
    );
    write_mode(
        &doc.join("changelog.gz"),
        &gzip(changelog.as_bytes())?,
        0o644,
    )?;

    // DEBIAN/: scripts, conffiles, md5sums, control.
    let debian = stage.join("DEBIAN");
    for script in ["postinst", "prerm", "postrm"] {
        write_mode(
            &debian.join(script),
            &fs::read(root.join("deploy/debian").join(script))?,
            0o755,
        )?;
    }
    let conffiles: String = FILES
        .iter()
        .filter(|(_, dst, _)| dst.starts_with("etc/"))
        .map(|(_, dst, _)| format!("/{dst}\n"))
        .collect();
    write_mode(&debian.join("conffiles"), conffiles.as_bytes(), 0o644)?;
    let mut md5 = String::new();
    let mut size = 0u64;
    let mut files = walk(&stage)?;
    files.retain(|p| !p.starts_with(&debian));
    files.sort();
    for f in &files {
        let rel = f.strip_prefix(&stage)?.display().to_string();
        size += fs::metadata(f)?.len();
        if rel.starts_with("etc/") {
            continue; // conffiles have their own sums
        }
        let sum = output(Command::new("md5sum").arg(f))?;
        let sum = sum.split_whitespace().next().unwrap_or_default();
        md5.push_str(&format!("{sum}  {rel}\n"));
    }
    write_mode(&debian.join("md5sums"), md5.as_bytes(), 0o644)?;
    let depends = shlib_depends(&work, &bin)?;
    let control = format!(
        "Package: {PACKAGE}\n\
         Version: {version}\n\
         Architecture: {arch}\n\
         Maintainer: {MAINTAINER}\n\
         Installed-Size: {}\n\
         Depends: {depends}\n\
         Section: net\n\
         Priority: optional\n\
         Description: eBPF/XDP endpoint filter for Linux hosts\n \
         portcullis keeps sensitive endpoints (admin, management and metrics\n \
         ports) reachable only from the networks that should reach them, and\n \
         keeps known-bad sources off the host, deciding at the NIC (XDP) from\n \
         a plain TOML policy file. The daemon swaps policies atomically,\n \
         survives its own restart without a filtering gap, and exports\n \
         per-zone counters to Prometheus.\n \
         .\n \
         Installing the package enforces nothing: edit\n \
         /etc/portcullis/policy.toml, then enable the portcullis service.\n",
        size.div_ceil(1024)
    );
    write_mode(&debian.join("control"), control.as_bytes(), 0o644)?;

    let path = work.join(format!("{PACKAGE}_{version}_{arch}.deb"));
    exec(
        Command::new("dpkg-deb")
            .args(["--root-owner-group", "-Zxz", "--build"])
            .arg(&stage)
            .arg(&path),
    )?;
    eprintln!(
        "deb: {} ({} KiB) built in {:.1} s",
        path.display(),
        fs::metadata(&path)?.len() / 1024,
        started.elapsed().as_secs_f64()
    );
    Ok(Deb { path, version })
}

fn walk(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let p = e?.path();
        if p.is_dir() {
            out.extend(walk(&p)?);
        } else {
            out.push(p);
        }
    }
    Ok(out)
}

/// lintian (errors fail), then install, check, remove and purge in a
/// throwaway root.
pub fn check(root: &Path, deb: &Deb) -> Result<()> {
    let started = Instant::now();
    // Errors fail; warnings are printed for whoever reads the log.
    exec(
        Command::new("lintian")
            .args([
                "--fail-on",
                "error",
                "--display-info",
                "--no-tag-display-limit",
            ])
            .arg(&deb.path),
    )?;
    let linted = started.elapsed();

    let r = root.join("target/deb/instroot");
    if r.exists() {
        fs::remove_dir_all(&r)?;
    }
    fs::create_dir_all(r.join("var/lib/dpkg/info"))?;
    fs::create_dir_all(r.join("var/lib/dpkg/updates"))?;
    fs::write(r.join("var/lib/dpkg/status"), "")?;
    // No chroot (the root has no /bin/sh): the scripts run here with
    // DPKG_ROOT set and touch nothing outside it (deploy/debian). The root
    // has no libc6 package: its dependencies are not checked.
    let dpkg = |args: &[&str]| -> Result<()> {
        exec(
            Command::new("dpkg")
                .arg(format!("--root={}", r.display()))
                .args([
                    "--force-script-chrootless",
                    "--force-depends",
                    "--log=/dev/null",
                ])
                .args(args),
        )
    };
    dpkg(&["-i", &deb.path.display().to_string()])?;
    let status = output(
        Command::new("dpkg-query")
            .arg(format!("--admindir={}", r.join("var/lib/dpkg").display()))
            .args(["-W", "-f=${Status} ${Version}", PACKAGE]),
    )?;
    ensure!(
        status == format!("install ok installed {}", deb.version),
        "after dpkg -i: {status}"
    );
    let bin = r.join(BINARY);
    let policy = r.join("etc/portcullis/policy.toml");
    let out = Command::new(&bin)
        .args(["check", "-q"])
        .arg(&policy)
        .output()?;
    ensure!(
        out.status.success(),
        "the installed binary refuses the installed policy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = output(Command::new(&bin).arg("--version"))?;
    ensure!(
        version == format!("portcullis {}", deb.version),
        "installed binary says {version}"
    );
    for f in [
        "lib/systemd/system/portcullis.service",
        "usr/share/man/man8/portcullis.8.gz",
        "usr/share/man/man8/portcullis-run.8.gz",
        "usr/share/bash-completion/completions/portcullis",
        "usr/share/zsh/vendor-completions/_portcullis",
        "usr/share/fish/vendor_completions.d/portcullis.fish",
        "usr/share/doc/portcullis/copyright",
        "etc/portcullis/lists/drop.txt",
    ] {
        ensure!(r.join(f).is_file(), "not installed: /{f}");
    }
    exec(
        Command::new("bash")
            .arg("-n")
            .arg(r.join("usr/share/bash-completion/completions/portcullis")),
    )?;
    // Nothing enabled: no unit symlink anywhere under /etc/systemd.
    ensure!(
        !r.join("etc/systemd").exists(),
        "the package enabled something under /etc/systemd"
    );

    dpkg(&["-r", PACKAGE])?;
    ensure!(!bin.exists(), "dpkg -r left {}", bin.display());
    ensure!(policy.is_file(), "dpkg -r removed the policy (a conffile)");
    dpkg(&["-P", PACKAGE])?;
    ensure!(
        !r.join("etc/portcullis").exists(),
        "dpkg -P left /etc/portcullis"
    );
    eprintln!(
        "deb: lintian {:.1} s; install, check, remove, purge in {} {:.1} s",
        linted.as_secs_f64(),
        r.display(),
        (started.elapsed() - linted).as_secs_f64()
    );
    fs::remove_dir_all(&r)?;
    Ok(())
}
