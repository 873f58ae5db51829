//! `portcullis`: the command-line front end of the XDP endpoint filter.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use filter_user::policy;
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
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs go to stderr, `warn` and up unless RUST_LOG says otherwise, so that
/// stdout carries only the command's output.
fn init_tracing() {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn check(args: &CheckArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let loaded = policy::load(&args.policy);
    tracing::info!(elapsed = ?started.elapsed(), "policy checked");
    match loaded {
        Ok(compiled) => {
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
