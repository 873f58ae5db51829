//! `portcullis`: the command-line front end of the XDP endpoint filter.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use filter_user::{
    daemon::{
        self,
        control::{self, Request, DEFAULT_CONTROL_SOCKET},
        RunOptions,
    },
    loader::{PinRoot, DEFAULT_PIN_ROOT},
    policy,
};
use serde::Serialize;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "XDP endpoint filter: sensitive ports reachable only from the networks that should reach them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate a policy and show what it compiles to. Loads nothing.
    ///
    /// Exit status 0 if the policy is valid, 1 if it has errors (all of them are
    /// printed to stderr, each as path:line:col with a hint).
    Check(CheckArgs),
    /// Run the daemon: load, attach, pin, and keep the policy enforced.
    ///
    /// Reloads on SIGHUP, on a change of the policy or a list file, and on
    /// `portcullis reload`; an invalid policy is reported and the old one keeps
    /// enforcing. On SIGTERM the filter stays in force unless --detach-on-exit.
    Run(RunArgs),
    /// Ask the running daemon to reload its policy; exit 1 with the errors if
    /// the new policy is invalid (the old one keeps enforcing).
    Reload(SocketArgs),
    /// Show interfaces, policy, generation and counters (also while the daemon
    /// is down: read from the pins).
    Status(StatusArgs),
    /// Show what the filter in force does with one packet, and which policy
    /// lines decide it (runs the pinned program; works with the daemon down).
    Explain(filter_user::explain::cli::ExplainArgs),
    /// Remove the filter: detach the program and delete the pins.
    Detach(StatusArgs),
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The policy file.
    #[arg(
        long,
        short = 'p',
        value_name = "FILE",
        default_value = "/etc/portcullis/policy.toml"
    )]
    policy: PathBuf,
    /// Interface to filter (repeatable); overrides the policy's `interfaces`.
    #[arg(long = "iface", short = 'i', value_name = "IF")]
    ifaces: Vec<String>,
    /// Where maps and links are pinned (must be on a bpffs).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    control_socket: PathBuf,
    /// Metrics address; overrides the policy's [metrics] listen.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Remove the filter when the daemon exits (default: it stays in force).
    #[arg(long)]
    detach_on_exit: bool,
    /// Log every packet's decision (debugging; costs per packet).
    #[arg(long)]
    log_packets: bool,
}

#[derive(Debug, Args)]
struct SocketArgs {
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    control_socket: PathBuf,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    control_socket: PathBuf,
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The policy file (TOML, version 1; see docs/policy.md).
    #[arg(long, short = 'p', value_name = "FILE")]
    policy: PathBuf,
    /// Output format for stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Check(args) => check(&args),
        Command::Run(args) => run(args),
        Command::Reload(args) => reload(&args),
        Command::Status(args) => status(&args),
        Command::Detach(args) => detach(&args),
        Command::Explain(args) => filter_user::explain::cli::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, `info` for the daemon and `warn` for the other commands
/// unless RUST_LOG says otherwise, so that stdout carries only the output.
fn init_tracing() {
    let daemon = std::env::args().nth(1).as_deref() == Some("run");
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(if daemon { "info" } else { "warn" }));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // journald and log files want plain text.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(args: RunArgs) -> Result<ExitCode> {
    daemon::run(RunOptions {
        policy: args.policy,
        ifaces: args.ifaces,
        pin_root: args.pin_root,
        control_socket: args.control_socket,
        metrics_listen: args.metrics_listen,
        detach_on_exit: args.detach_on_exit,
        log_packets: args.log_packets,
    })?;
    Ok(ExitCode::SUCCESS)
}

fn reload(args: &SocketArgs) -> Result<ExitCode> {
    // Large policies take seconds to write; the daemon answers when enforced.
    let answer = control::request(
        &args.control_socket,
        &Request::Reload,
        std::time::Duration::from_secs(300),
    )?;
    if answer.ok {
        println!("reloaded: generation {}", answer.generation.unwrap_or(0));
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("{}", answer.error.unwrap_or_default());
        eprintln!("reload rejected; the previous policy keeps enforcing");
        Ok(ExitCode::from(1))
    }
}

fn status(args: &StatusArgs) -> Result<ExitCode> {
    let status = daemon::status(&args.pin_root, &args.control_socket).with_context(|| {
        format!(
            "no portcullis filter found under {} (is it running with this --pin-root?)",
            args.pin_root.display()
        )
    })?;
    match args.output {
        Output::Text => write_stdout(&status.to_string())?,
        Output::Json => write_stdout(&serde_json::to_string_pretty(&status)?)?,
    }
    Ok(ExitCode::SUCCESS)
}

fn detach(args: &StatusArgs) -> Result<ExitCode> {
    let root = PinRoot::new(&args.pin_root);
    let interfaces = root.pinned_links();
    let link_ids = root.link_ids();
    if control::ping(&args.control_socket) {
        // The daemon removes the pins itself and exits, releasing its handles.
        let answer = control::request(
            &args.control_socket,
            &Request::Detach,
            std::time::Duration::from_secs(30),
        )?;
        if !answer.ok {
            anyhow::bail!("the daemon refused: {}", answer.error.unwrap_or_default());
        }
        for _ in 0..100 {
            if !control::ping(&args.control_socket) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
    root.remove_all()?;
    let alive = PinRoot::wait_links_released(&link_ids, std::time::Duration::from_secs(5));
    if !alive.is_empty() {
        anyhow::bail!(
            "pins removed, but XDP links {alive:?} are still held open by another process \
             (see `bpftool link show`); the filter stays until it closes them"
        );
    }
    if interfaces.is_empty() {
        println!("no filter was attached under {}", args.pin_root.display());
    } else {
        println!("filter removed from {}", interfaces.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

fn check(args: &CheckArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let loaded = policy::load(&args.policy);
    tracing::info!(elapsed = ?started.elapsed(), "policy checked");
    match loaded {
        Ok(compiled) => {
            // The daemon reads the TLS files itself; `check` tries them too.
            match daemon::check_metrics(&compiled.metrics) {
                Ok(warnings) => {
                    for w in warnings {
                        eprintln!("{}: warning: {w}", args.policy.display());
                    }
                }
                Err(e) => {
                    eprintln!("{}: error: {e}", args.policy.display());
                    eprintln!(
                        "  help: fix the file or `[metrics] tls` (paths are relative to the \
                         policy file's directory)"
                    );
                    eprintln!(
                        "{}: 1 error; the policy is not valid",
                        args.policy.display()
                    );
                    return Ok(ExitCode::from(1));
                }
            }
            print_ok(&args.policy, &compiled, args.output)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(err) => {
            eprintln!("{err}");
            eprintln!(
                "{}: {} error{}; the policy is not valid",
                args.policy.display(),
                err.len(),
                if err.len() == 1 { "" } else { "s" }
            );
            if args.output == Output::Json {
                let doc = CheckFailed {
                    ok: false,
                    policy: args.policy.display().to_string(),
                    errors: &err.diagnostics,
                };
                write_stdout(&serde_json::to_string_pretty(&doc)?)?;
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn print_ok(path: &Path, compiled: &policy::CompiledPolicy, output: Output) -> Result<()> {
    let summary = compiled.summary();
    let text = match output {
        Output::Text => format!("policy OK: {}\n{summary}", path.display()),
        Output::Json => serde_json::to_string_pretty(&CheckOk {
            ok: true,
            policy: path.display().to_string(),
            summary: &summary,
        })?,
    };
    write_stdout(&text)
}

/// `portcullis check --output json` on success.
#[derive(Serialize)]
struct CheckOk<'a> {
    ok: bool,
    policy: String,
    summary: &'a policy::PolicySummary,
}

/// `portcullis check --output json` on failure (diagnostics also go to stderr).
#[derive(Serialize)]
struct CheckFailed<'a> {
    ok: bool,
    policy: String,
    errors: &'a [policy::Diagnostic],
}

/// `println!` panics on a closed pipe; a reader that went away
/// (`portcullis check … | head`) is not an error worth reporting.
fn write_stdout(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to stdout"),
    }
}
