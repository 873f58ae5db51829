//! `cargo xtask`: bootstrap the toolchain, build the eBPF object, run the tests.
mod bench;
mod bootstrap;
mod deb;
mod fuzz;
mod kube;
mod releases;
mod schema;
mod vm;

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "portcullis build and test tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the build and the tests need (nightly rust-src, LLVM 22, bpf-linker, lintian,
    /// promtool, kubernetes-validate, ...), skipping what is present.
    Bootstrap,
    /// Build the XDP object (target/ebpf/bpfel-unknown-none/release/filter-ebpf).
    BuildEbpf,
    /// Everything: lint, unit tests, and the verdict suite on the real object (root).
    Test {
        /// Differential run of at least 1,000,000 cases instead of 200,000.
        #[arg(long)]
        long: bool,
        /// Seed for the differential test (default: random, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Skip the VM run (the verdict suite on Debian's 6.1 kernel under QEMU).
        #[arg(long)]
        no_vm: bool,
        /// Skip the network-namespace end-to-end suite (daemon, probes, reloads).
        #[arg(long)]
        no_e2e: bool,
    },
    /// Check deploy/ with the tools that consume it: the Debian package
    /// (lintian, install), the Kubernetes manifests (part of `test`).
    DeployCheck,
    /// Regenerate the checked-in files derived from the code: man pages and shell
    /// completions (deploy/man, deploy/completions) from the CLI, the policy's
    /// JSON schema (docs/policy.schema.json). `cargo test` fails while they differ.
    Gen,
    /// The Debian package (target/deb/portcullis_VERSION_ARCH.deb), linted with
    /// lintian and installed, checked, removed and purged in a throwaway root.
    Deb,
    /// Build the earlier releases the upgrade test starts from (xtask/src/releases.rs),
    /// cached under target/releases/; prints NAME=PATH for each.
    Releases,
    /// The sandbox demo: deploy/examples/keep.toml enforced in network namespaces,
    /// which probes are admitted and dropped, the counters that moved (root).
    Demo,
    /// Benchmarks: per-packet cost, veth throughput against the floor and nftables/iptables, control plane (root).
    /// Writes bench/results.json and bench/results.svg.
    Bench {
        /// Smaller counts and fewer repeats (a few minutes).
        #[arg(long)]
        quick: bool,
        /// Passed to the runner after `--`, e.g. `-- --rounds 9`, `-- --skip perpkt,control`
        /// (see `portcullis-bench --help`).
        #[arg(last = true)]
        runner_args: Vec<String>,
    },
    /// The soak: the e2e sandbox under a flood, a reload every second (some invalid),
    /// kill -9 and restart every minute, metrics scraping and hostile metrics clients,
    /// with every probe judged against the two policies (root).
    Soak {
        /// How long to run (`cargo xtask test` runs 2).
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
    },
    /// Build the libFuzzer targets in fuzz/ (nightly, cargo-fuzz) and run each in turn.
    /// Non-zero exit and the reproducer's path if any input crashed.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS)]
        seconds: u64,
        /// Target to run (policy, list, control, metrics); repeatable. Default: all.
        #[arg(long = "target", value_name = "NAME")]
        targets: Vec<String>,
    },
    /// The verdict suite inside QEMU on Debian kernels, plus the host kernel (root).
    VmTest {
        /// Kernel to test: 6.1 (bookworm) or 6.12 (trixie); repeatable. Default: both.
        #[arg(long = "kernel", value_name = "VERSION")]
        kernels: Vec<String>,
        /// Seed for the differential test (default: random, printed).
        #[arg(long)]
        seed: Option<u64>,
        /// Differential cases per kernel.
        #[arg(long, default_value_t = vm::DEFAULT_CASES)]
        cases: u64,
        /// Per-VM timeout in seconds (QEMU is killed after it).
        #[arg(long, default_value_t = vm::DEFAULT_TIMEOUT_SECS)]
        timeout: u64,
        /// Skip the row for the host kernel.
        #[arg(long)]
        no_host: bool,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Cmd::Bootstrap => {
            bootstrap::run()?;
            bootstrap::deploy_tools(&root)
        }
        Cmd::BuildEbpf => {
            bootstrap::run()?;
            build_ebpf(&root).map(|_| ())
        }
        Cmd::Test {
            long,
            seed,
            no_lint,
            no_vm,
            no_e2e,
        } => test(&root, long, seed, no_lint, no_vm, no_e2e),
        Cmd::Demo => demo(&root),
        Cmd::Gen => gen(&root),
        Cmd::DeployCheck => {
            bootstrap::run()?;
            build_ebpf(&root)?;
            deploy_checks(&root)
        }
        Cmd::Deb => {
            bootstrap::run()?;
            bootstrap::deploy_tools(&root)?;
            build_ebpf(&root)?;
            // The same build as the e2e suite's: one set of release artifacts.
            let bin = build_release_bins(&root)?;
            let deb = deb::build(&root, &bin.join("portcullis"))?;
            deb::check(&root, &deb)
        }
        Cmd::Releases => {
            bootstrap::run()?;
            for r in releases::build_all(&root)? {
                println!("{r}");
            }
            Ok(())
        }
        Cmd::Bench { quick, runner_args } => bench::run(&root, quick, &runner_args),
        Cmd::Fuzz { seconds, targets } => fuzz::run(&root, seconds, &targets),
        Cmd::Soak { minutes } => soak(&root, minutes),
        Cmd::VmTest {
            kernels,
            seed,
            cases,
            timeout,
            no_host,
        } => vm::run(
            &root,
            &vm::Options {
                kernels: if kernels.is_empty() {
                    vec!["6.1".into(), "6.12".into()]
                } else {
                    kernels
                },
                seed,
                cases,
                timeout: std::time::Duration::from_secs(timeout),
                host: !no_host,
            },
        ),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

/// A command without the variables the outer (stable) cargo set, so the inner
/// cargo picks its own toolchain and flags.
pub(crate) fn clean_cargo(toolchain: Option<&str>) -> Command {
    let mut cmd = Command::new("cargo");
    if let Some(t) = toolchain {
        cmd.arg(format!("+{t}"));
    }
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

pub(crate) fn exec(cmd: &mut Command) -> Result<()> {
    eprintln!("+ {cmd:?}");
    let status = cmd.status().with_context(|| format!("starting {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// The nightly cargo invocation for the eBPF crate (`build`, `clippy`).
fn ebpf_cargo(root: &Path, subcommand: &str) -> Command {
    ebpf_cargo_in(root, &root.join("target/ebpf"), subcommand)
}

/// `cargo +nightly SUBCOMMAND` of the eBPF crate of the source tree `src`
/// (this checkout, or an earlier release's), with its output under `target`.
pub(crate) fn ebpf_cargo_in(src: &Path, target: &Path, subcommand: &str) -> Command {
    let mut cmd = clean_cargo(Some("nightly"));
    cmd.current_dir(src)
        .args([
            subcommand,
            "--release",
            "-Z",
            "build-std=core",
            "--target",
            "bpfel-unknown-none",
            "-p",
            "filter-ebpf",
            "--target-dir",
        ])
        .arg(target)
        // aya-ebpf reads the architecture it is built for from this cfg; the
        // program runs on the host it is built on.
        .env(
            "CARGO_ENCODED_RUSTFLAGS",
            format!("--cfg=bpf_target_arch=\"{}\"", std::env::consts::ARCH),
        );
    cmd
}

fn build_ebpf(root: &Path) -> Result<PathBuf> {
    exec(&mut ebpf_cargo(root, "build"))?;
    let obj = root.join("target/ebpf/bpfel-unknown-none/release/filter-ebpf");
    if !obj.is_file() {
        bail!("build succeeded but {} is missing", obj.display());
    }
    eprintln!("eBPF object: {}", obj.display());
    Ok(obj)
}

/// What deploy/ ships, checked by the tools that consume it: the Debian
/// package (lintian, install into a throwaway root), the Kubernetes manifests
/// (kubernetes-validate, the ConfigMap's policy), the policy's JSON schema
/// (jsonschema over the examples and fixtures). Reuses the release
/// binary the e2e suite runs.
fn deploy_checks(root: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    bootstrap::deploy_tools(root)?;
    let bin = build_release_bins(root)?;
    let deb = deb::build(root, &bin.join("portcullis"))?;
    deb::check(root, &deb)?;
    kube::check(root, &bin.join("portcullis"))?;
    schema::check(root, &bin)?;
    eprintln!(
        "deploy checks: passed in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn test(
    root: &Path,
    long: bool,
    seed: Option<u64>,
    no_lint: bool,
    no_vm: bool,
    no_e2e: bool,
) -> Result<()> {
    bootstrap::run()?;
    // lintian, promtool (the e2e suite's monitoring scenario), kubernetes-validate.
    bootstrap::deploy_tools(root)?;
    build_ebpf(root)?;
    if !no_lint {
        exec(
            clean_cargo(None)
                .current_dir(root)
                .args(["fmt", "--all", "--", "--check"]),
        )?;
        exec(clean_cargo(None).current_dir(root).args([
            "clippy",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        exec(ebpf_cargo(root, "clippy").args(["--", "-D", "warnings"]))?;
        // The bench runner only builds with its feature (it links the loader).
        exec(clean_cargo(None).current_dir(root).args([
            "clippy",
            "-p",
            "xtask",
            "--features",
            "bench",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
    }
    // Unit tests (policy compiler, image builder, reference model, packet builder).
    exec(
        clean_cargo(None)
            .current_dir(root)
            .args(["test", "--release"]),
    )?;
    // The bench runner's own tests (frame checksums, generated policies).
    exec(clean_cargo(None).current_dir(root).args([
        "test",
        "--release",
        "-p",
        "xtask",
        "--features",
        "bench",
        "--bin",
        "portcullis-bench",
    ]))?;
    // A short pass over every fuzz target (fuzz/regressions ran in the unit tests).
    fuzz::run(root, fuzz::TEST_SECONDS, &[])?;
    if !bootstrap::is_root() {
        bail!("the verdict suite loads BPF programs: run `cargo xtask test` as root");
    }
    let mut suite = clean_cargo(None);
    suite.current_dir(root).args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "portcullis-tests",
        "--bin",
        "verdict-suite",
        "--",
    ]);
    if long {
        suite.arg("--long");
    }
    if let Some(s) = seed {
        suite.args(["--seed", &s.to_string()]);
    }
    exec(&mut suite)?;
    if no_e2e {
        eprintln!("end-to-end suite skipped (--no-e2e)");
    } else {
        e2e(root)?;
        soak_run(root, SOAK_TEST_MINUTES)?;
    }
    deploy_checks(root)?;
    if no_vm {
        eprintln!("VM run skipped (--no-vm)");
        return Ok(());
    }
    // The host kernel was just covered above; the VM adds Debian's 6.1.
    vm::run(
        root,
        &vm::Options {
            kernels: vec!["6.1".into()],
            seed,
            cases: vm::DEFAULT_CASES,
            timeout: std::time::Duration::from_secs(vm::DEFAULT_TIMEOUT_SECS),
            host: false,
        },
    )
}

/// The generators are the drift tests themselves, run with
/// `PORTCULLIS_REGENERATE=1` (filter-user/src/cli_docs.rs, policy/schema.rs).
fn gen(root: &Path) -> Result<()> {
    for filter in [
        ["--bin", "portcullis", "cli_docs::"],
        ["--lib", "policy::schema::", "--"],
    ] {
        exec(
            clean_cargo(None)
                .current_dir(root)
                .env("PORTCULLIS_REGENERATE", "1")
                .args(["test", "-p", "filter-user"])
                .args(filter.iter().filter(|a| **a != "--")),
        )?;
    }
    eprintln!(
        "regenerated deploy/man, deploy/completions and docs/policy.schema.json; review with `git diff`"
    );
    Ok(())
}

/// The daemon and the harness binaries (release, workspace target dir).
fn build_release_bins(root: &Path) -> Result<PathBuf> {
    exec(clean_cargo(None).current_dir(root).args([
        "build",
        "--release",
        "-p",
        "filter-user",
        "-p",
        "portcullis-tests",
        "--bins",
    ]))?;
    Ok(root.join("target/release"))
}

/// The network-namespace end-to-end suite against the real daemon (root),
/// with the earlier releases for the upgrade scenarios.
fn e2e(root: &Path) -> Result<()> {
    let releases = releases::build_all(root)?;
    let bin = build_release_bins(root)?;
    let mut suite = Command::new(bin.join("e2e-suite"));
    suite
        .arg("--portcullis")
        .arg(bin.join("portcullis"))
        .arg("--examples")
        .arg(root.join("deploy/examples"));
    for r in releases {
        suite.arg("--release").arg(r);
    }
    exec(&mut suite)
}

/// The soak's length in `cargo xtask test`.
const SOAK_TEST_MINUTES: f64 = 2.0;

/// `cargo xtask soak`: everything it needs, then the run.
fn soak(root: &Path, minutes: f64) -> Result<()> {
    bootstrap::run()?;
    build_ebpf(root)?;
    if !bootstrap::is_root() {
        bail!(
            "the soak creates network namespaces and attaches XDP: run `cargo xtask soak` as root"
        );
    }
    soak_run(root, minutes)
}

fn soak_run(root: &Path, minutes: f64) -> Result<()> {
    let bin = build_release_bins(root)?;
    exec(
        Command::new(bin.join("soak"))
            .arg("--portcullis")
            .arg(bin.join("portcullis"))
            .arg("--minutes")
            .arg(minutes.to_string()),
    )
}

fn demo(root: &Path) -> Result<()> {
    bootstrap::run()?;
    build_ebpf(root)?;
    if !bootstrap::is_root() {
        bail!(
            "the demo creates network namespaces and attaches XDP: run `cargo xtask demo` as root"
        );
    }
    let bin = build_release_bins(root)?;
    exec(
        Command::new(bin.join("demo"))
            .arg("--portcullis")
            .arg(bin.join("portcullis"))
            .arg("--policy")
            .arg(root.join("deploy/examples/keep.toml")),
    )
}
