//! `portcullis`: the command-line front end of the XDP endpoint filter.
//!
//! Conventions: every read or control command takes `-o json`; output goes
//! to stdout, logs and diagnostics to stderr; a failure is printed once (see
//! [`filter_user::report`]), as `error: …` on stderr or, with `-o json`, as
//! `{"ok":false,"error":…}` on stdout, with the same exit status.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory, Parser, Subcommand, ValueEnum};
use filter_user::{
    daemon::{
        self,
        control::{self, Request, DEFAULT_CONTROL_SOCKET},
        metrics, RunOptions,
    },
    loader::{self, AttachMode, PinRoot, DEFAULT_PIN_ROOT},
    logging::{self, LogFormat},
    policy, report,
};
use serde::Serialize;

/// Where `run` and `check` look for the policy by default.
const DEFAULT_POLICY: &str = "/etc/portcullis/policy.toml";
/// How `check -` names the policy read from stdin (list files then resolve
/// relative to the current directory).
const STDIN_POLICY: &str = "<stdin>";
/// The most `check -` reads from stdin (the cap on a policy file).
const STDIN_MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "XDP endpoint filter: sensitive ports reachable only from the networks that should reach them"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format on stderr: plain text (to journald without timestamps and
    /// with syslog priorities) or one JSON object per line.
    #[arg(
        long,
        global = true,
        value_enum,
        value_name = "FORMAT",
        default_value_t = LogFormat::Plain
    )]
    log_format: LogFormat,
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
    Reload(ReloadArgs),
    /// Show interfaces, policy, generation and counters (also while the daemon
    /// is down: read from the pins).
    Status(StatusArgs),
    /// Remove the filter: detach the program and delete the pins (or, with
    /// --iface, only that interface's link).
    Detach(DetachArgs),
    /// Print an argon2id hash of a password for `[metrics] basic_auth`.
    ///
    /// Reads the password from stdin: prompted without echo on a terminal,
    /// else the first line (`printf %s "$PW" | portcullis hash-password`).
    HashPassword,
    /// Show what the filter in force does with one packet, and which policy
    /// lines decide it (runs the pinned program; works with the daemon down).
    Explain(filter_user::explain::cli::ExplainArgs),
    /// Stream sampled decisions (time, interface, addresses, ports, reason,
    /// zone) from the running daemon; see `sampling` for what is sampled.
    Events(filter_user::events::cli::EventsArgs),
    /// Show the sources and zones with the most dropped events over a window.
    Top(filter_user::events::cli::TopArgs),
    /// Show or set what the filter samples into the event stream, and how
    /// fast (at run time; kept across restarts until --reset).
    Sampling(filter_user::events::cli::SamplingArgs),
    /// Switch packet logging on or off at run time: the daemon logs each
    /// sampled decision with its addresses, interface and zone.
    LogPackets(filter_user::events::cli::LogPacketsArgs),
    /// Ban sources until a time or until removed, beside the policy (the
    /// running daemon keeps them across restarts; the way in for detectors and scripts).
    Ban(filter_user::bans::cli::BanArgs),
}

impl Command {
    /// The output format a failure of this command is reported in.
    fn output(&self) -> Output {
        match self {
            Command::Check(a) => a.output,
            Command::Reload(a) => a.output,
            Command::Status(a) => a.output,
            Command::Detach(a) => a.output,
            Command::Explain(a) if matches!(a.output, filter_user::explain::cli::Format::Json) => {
                Output::Json
            }
            Command::Events(a) if a.output.is_json() => Output::Json,
            Command::Top(a) if a.output.is_json() => Output::Json,
            Command::Sampling(a) if a.output.is_json() => Output::Json,
            Command::LogPackets(a) if a.output.is_json() => Output::Json,
            Command::Ban(a) if a.output == filter_user::bans::cli::Format::Json => Output::Json,
            Command::Run(_)
            | Command::HashPassword
            | Command::Explain(_)
            | Command::Events(_)
            | Command::Top(_)
            | Command::Sampling(_)
            | Command::LogPackets(_)
            | Command::Ban(_) => Output::Text,
        }
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The policy file.
    #[arg(long, short = 'p', value_name = "FILE", default_value = DEFAULT_POLICY)]
    policy: PathBuf,
    /// Interface to filter (repeatable, each once); overrides the policy's
    /// `interfaces`.
    #[arg(long = "iface", short = 'i', value_name = "IF")]
    ifaces: Vec<String>,
    /// Where maps and links are pinned (must be on a bpffs).
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    /// The control socket `reload`, `status` and `detach` talk to.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    control_socket: PathBuf,
    /// Metrics address; overrides the policy's [metrics] listen.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Remove the filter when the daemon exits (default: it stays in force).
    #[arg(long)]
    detach_on_exit: bool,
    /// Deprecated: `portcullis log-packets on` does this at run time. Switches
    /// packet logging on (every decision sampled, at the configured rate).
    #[arg(long)]
    log_packets: bool,
    /// Attach new links in this XDP mode only; fail rather than fall back
    /// (default: native, generic if the driver refuses).
    #[arg(long, value_enum, value_name = "MODE")]
    mode: Option<ModeArg>,
    /// Wait up to SECONDS for missing interfaces to appear before failing
    /// (for NICs that show up late at boot).
    #[arg(long, value_name = "SECONDS")]
    wait_iface: Option<u64>,
    /// Where bans and the feeds' last good copies are kept across restarts
    /// and reboots.
    #[arg(long, value_name = "DIR", default_value = filter_user::bans::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ModeArg {
    /// In the driver (XDP native).
    Native,
    /// In the kernel's generic path (slower; works on every device).
    Generic,
}

impl From<ModeArg> for AttachMode {
    fn from(m: ModeArg) -> AttachMode {
        match m {
            ModeArg::Native => AttachMode::Native,
            ModeArg::Generic => AttachMode::Generic,
        }
    }
}

#[derive(Debug, Args)]
struct ReloadArgs {
    /// The running daemon's control socket.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    control_socket: PathBuf,
    /// Output format for stdout (json: also on failure, as {"ok":false,"error":…}).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
struct StatusArgs {
    /// Where the filter is pinned.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    /// The daemon's control socket (to tell whether it runs).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    control_socket: PathBuf,
    /// Output format for stdout (json: also on failure, as {"ok":false,"error":…}).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
struct DetachArgs {
    /// Where the filter is pinned.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pin_root: PathBuf,
    /// The daemon's control socket (a running daemon is asked to detach).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    control_socket: PathBuf,
    /// Remove the filter from this interface only; the others keep it.
    #[arg(long, value_name = "IF")]
    iface: Option<String>,
    /// Stop the daemon that owns the pin root first (SIGTERM, 10 s), even if
    /// the control socket does not reach it.
    #[arg(long)]
    force: bool,
    /// Output format for stdout (json: also on failure, as {"ok":false,"error":…}).
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
}

#[derive(Debug, Args)]
struct CheckArgs {
    /// The policy file (TOML, version 1; see docs/policy.md); `-` reads it
    /// from stdin. Default: /etc/portcullis/policy.toml.
    #[arg(value_name = "FILE", conflicts_with = "policy")]
    file: Option<PathBuf>,
    /// The policy file, as FILE (`-p -`: stdin).
    #[arg(long, short = 'p', value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Output format for stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Treat warnings (W001…, see docs/policy.md) as errors: exit 1 if any.
    #[arg(long)]
    strict: bool,
    /// Print nothing on success: only errors and warnings (stderr), and the
    /// exit status.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// The daemon's state directory: `[blocklist] feeds` are read from its
    /// cache (as the daemon reads them).
    #[arg(long, value_name = "DIR", default_value = filter_user::bans::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
}

impl CheckArgs {
    /// FILE, `--policy`, or the default; `-` is stdin.
    fn path(&self) -> PathBuf {
        self.file
            .clone()
            .or_else(|| self.policy.clone())
            .unwrap_or_else(|| PathBuf::from(DEFAULT_POLICY))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    /// For people.
    Text,
    /// One JSON document.
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(&cli);
    if let Err((sub, msg)) = validate(&cli) {
        let mut cmd = Cli::command();
        cmd.build();
        let cmd = cmd
            .find_subcommand_mut(sub)
            .expect("validated subcommands exist");
        cmd.error(clap::error::ErrorKind::ArgumentConflict, msg)
            .exit();
    }
    let output = cli.command.output();
    let result = match cli.command {
        Command::Check(args) => check(&args),
        Command::Run(args) => run(args),
        Command::Reload(args) => reload(&args),
        Command::Status(args) => status(&args),
        Command::Detach(args) => detach(&args),
        Command::HashPassword => hash_password(),
        Command::Explain(args) => filter_user::explain::cli::run(&args),
        Command::Events(args) => filter_user::events::cli::events(&args),
        Command::Top(args) => filter_user::events::cli::top(&args),
        Command::Sampling(args) => filter_user::events::cli::sampling(&args),
        Command::LogPackets(args) => filter_user::events::cli::log_packets(&args),
        Command::Ban(args) => filter_user::bans::cli::run(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => fail(output, &e),
    }
}

/// Usage errors clap cannot see (exit 2, like clap's own).
fn validate(cli: &Cli) -> Result<(), (&'static str, String)> {
    if let Command::Run(args) = &cli.command {
        if let Some(dup) = duplicate(&args.ifaces) {
            return Err((
                "run",
                format!("--iface {dup} is given more than once; name each interface once"),
            ));
        }
    }
    Ok(())
}

/// The first name that occurs twice.
fn duplicate(names: &[String]) -> Option<&str> {
    names
        .iter()
        .enumerate()
        .find(|(i, n)| names[..*i].contains(n))
        .map(|(_, n)| n.as_str())
}

/// Reports a failed command once, in its output format.
fn fail(output: Output, e: &anyhow::Error) -> ExitCode {
    let text = report::flatten_anyhow(e);
    match output {
        Output::Text => eprintln!("error: {text}"),
        Output::Json => {
            if write_json(&report::Failure::new(&text)).is_err() {
                eprintln!("error: {text}");
            }
        }
    }
    ExitCode::FAILURE
}

/// Logs go to stderr, `info` for the daemon and `warn` for the other commands
/// unless RUST_LOG says otherwise, so that stdout carries only the output.
fn init_tracing(cli: &Cli) {
    let daemon = matches!(cli.command, Command::Run(_));
    logging::init(cli.log_format, if daemon { "info" } else { "warn" });
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
        attach_mode: args.mode.map(AttachMode::from),
        wait_iface: args.wait_iface.map(Duration::from_secs),
        state_dir: args.state_dir,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// `reload -o json`.
#[derive(Serialize)]
struct ReloadAnswer {
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    generation: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

fn reload(args: &ReloadArgs) -> Result<ExitCode> {
    // Large policies take seconds to write; the daemon answers when enforced.
    let answer = control::request(
        &args.control_socket,
        &Request::Reload,
        Duration::from_secs(300),
    )?;
    let code = if answer.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    };
    if args.output == Output::Json {
        write_json(&ReloadAnswer {
            ok: answer.ok,
            generation: answer.generation.filter(|_| answer.ok),
            error: answer.error.filter(|_| !answer.ok),
        })?;
    } else if answer.ok {
        println!("reloaded: generation {}", answer.generation.unwrap_or(0));
    } else {
        eprintln!("{}", answer.error.unwrap_or_default());
        eprintln!("reload rejected; the previous policy keeps enforcing");
    }
    Ok(code)
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
    // Like systemctl status: 3 when nothing is enforcing.
    Ok(if status.enforcing {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

/// `detach -o json`.
#[derive(Serialize)]
struct Detached<'a> {
    ok: bool,
    pin_root: String,
    /// Interfaces the filter was removed from.
    detached: &'a [String],
    /// Interfaces that keep it (`--iface`).
    remaining: &'a [String],
}

fn detach(args: &DetachArgs) -> Result<ExitCode> {
    if let Some(iface) = &args.iface {
        return detach_iface(args, iface);
    }
    let interfaces =
        daemon::detach::detach(&args.pin_root, &args.control_socket, args.force)?.interfaces;
    if args.output == Output::Json {
        write_json(&Detached {
            ok: true,
            pin_root: args.pin_root.display().to_string(),
            detached: &interfaces,
            remaining: &[],
        })?;
    } else if interfaces.is_empty() {
        println!("no filter was attached under {}", args.pin_root.display());
    } else {
        println!("filter removed from {}", interfaces.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `detach --iface IF`: only while no daemon runs, since a daemon holds the
/// link open and would attach it again at its next start.
fn detach_iface(args: &DetachArgs, iface: &str) -> Result<ExitCode> {
    if control::ping(&args.control_socket) {
        anyhow::bail!(
            "a daemon answers on {}: it holds {iface}'s link and would attach it again at \
             its next start; remove {iface} from its --iface or `interfaces` and restart it \
             (links no longer listed are removed at start), or stop it first",
            args.control_socket.display()
        );
    }
    let root = PinRoot::new(&args.pin_root);
    let done = loader::detach_iface(&root, iface)?;
    let ids: Vec<u32> = done.link_id.into_iter().collect();
    let alive = PinRoot::wait_links_released(&ids, Duration::from_secs(5));
    if !alive.is_empty() {
        anyhow::bail!(
            "{iface}: pin removed, but XDP link {alive:?} is still held open by another \
             process (see `bpftool link show`); the filter stays on {iface} until it closes it"
        );
    }
    if args.output == Output::Json {
        write_json(&Detached {
            ok: true,
            pin_root: args.pin_root.display().to_string(),
            detached: std::slice::from_ref(&done.detached),
            remaining: &done.remaining,
        })?;
    } else if done.remaining.is_empty() {
        println!("filter removed from {iface}; no interface keeps it (pins stay: `portcullis detach` removes them)");
    } else {
        println!(
            "filter removed from {iface}; still filtered: {}",
            done.remaining.join(", ")
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn hash_password() -> Result<ExitCode> {
    let password = metrics::read_password()?;
    let phc = metrics::hash_password(&password)?;
    write_stdout(&phc)?;
    Ok(ExitCode::SUCCESS)
}

/// The policy `check` was given, compiled: from stdin for `-`.
fn load_for_check(
    path: &Path,
    state_dir: &Path,
) -> Result<policy::CompiledPolicy, policy::PolicyError> {
    if path != Path::new("-") {
        return policy::load_in(path, state_dir);
    }
    let label = Path::new(STDIN_POLICY);
    let mut bytes = Vec::new();
    let read = std::io::stdin()
        .lock()
        .take(STDIN_MAX_BYTES + 1)
        .read_to_end(&mut bytes);
    let problem = match read {
        Err(e) => Some(format!("reading the policy from stdin: {e}")),
        Ok(_) if bytes.len() as u64 > STDIN_MAX_BYTES => {
            Some("the policy on stdin is over 4 MiB".to_string())
        }
        Ok(_) => None,
    };
    if let Some(message) = problem {
        return Err(stdin_error(message));
    }
    match String::from_utf8(bytes) {
        Ok(text) => policy::compile_str_in(&text, label, state_dir),
        Err(_) => Err(stdin_error("the policy on stdin is not valid UTF-8".into())),
    }
}

fn stdin_error(message: String) -> policy::PolicyError {
    policy::PolicyError {
        diagnostics: vec![policy::Diagnostic {
            path: PathBuf::from(STDIN_POLICY),
            line: 1,
            column: 1,
            message,
            help: Some(
                "pipe a UTF-8 policy of at most 4 MiB: portcullis check - < policy.toml".into(),
            ),
        }],
    }
}

fn check(args: &CheckArgs) -> Result<ExitCode> {
    let started = std::time::Instant::now();
    let path = args.path();
    let label = if path == Path::new("-") {
        PathBuf::from(STDIN_POLICY)
    } else {
        path.clone()
    };
    let loaded = load_for_check(&path, &args.state_dir);
    tracing::info!(elapsed = ?started.elapsed(), "policy checked");
    match loaded {
        Ok(compiled) => {
            // The daemon reads the TLS files itself; `check` tries them too.
            // Its warnings are the policy's own (W008, W009).
            match daemon::check_metrics(&compiled.metrics) {
                Ok(_) => {}
                Err(e) => {
                    eprintln!("{}: error: {e}", label.display());
                    eprintln!(
                        "  help: fix the file or `[metrics] tls` (paths are relative to the \
                         policy file's directory)"
                    );
                    eprintln!("{}: 1 error; the policy is not valid", label.display());
                    if args.output == Output::Json {
                        write_json(&report::Failure::new(format!("{}: {e}", label.display())))?;
                    }
                    return Ok(ExitCode::from(1));
                }
            }
            for w in &compiled.warnings {
                eprintln!("{w}");
            }
            // Not a policy error: the key may be provisioned after the
            // policy; until then the daemon reports the bouncer down.
            if let Some(Err(e)) = compiled
                .crowdsec
                .as_ref()
                .map(filter_user::crowdsec::check_key)
            {
                eprintln!(
                    "{}: note: [crowdsec] {e}; the daemon keeps the bans in force and reports the bouncer DOWN until it can read the key",
                    label.display()
                );
            }
            let failed = args.strict && !compiled.warnings.is_empty();
            if !compiled.warnings.is_empty() {
                let n = compiled.warnings.len();
                let plural = if n == 1 { "" } else { "s" };
                let verdict = if failed {
                    "the policy is refused (--strict)"
                } else {
                    "the policy is valid"
                };
                eprintln!("{}: {n} warning{plural}; {verdict}", label.display());
            }
            if !(args.quiet && args.output == Output::Text && !failed) {
                print_ok(&label, &compiled, args.output, !failed)?;
            }
            Ok(if failed {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Err(err) => {
            eprintln!("{err}");
            eprintln!(
                "{}: {} error{}; the policy is not valid",
                label.display(),
                err.len(),
                if err.len() == 1 { "" } else { "s" }
            );
            if args.output == Output::Json {
                let doc = CheckFailed {
                    ok: false,
                    policy: label.display().to_string(),
                    errors: &err.diagnostics,
                };
                write_stdout(&serde_json::to_string_pretty(&doc)?)?;
            }
            Ok(ExitCode::from(1))
        }
    }
}

fn print_ok(
    path: &Path,
    compiled: &policy::CompiledPolicy,
    output: Output,
    ok: bool,
) -> Result<()> {
    let summary = compiled.summary();
    let text = match output {
        Output::Text if ok => format!("policy OK: {}\n{summary}", path.display()),
        Output::Text => format!("policy refused (--strict): {}\n{summary}", path.display()),
        Output::Json => serde_json::to_string_pretty(&CheckOk {
            ok,
            policy: path.display().to_string(),
            warnings: &compiled.warnings,
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
    warnings: &'a [policy::Warning],
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

/// One JSON document on stdout.
fn write_json<T: Serialize>(doc: &T) -> Result<()> {
    write_stdout(&serde_json::to_string_pretty(doc)?)
}

#[cfg(test)]
mod cli_docs;

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("portcullis").chain(args.iter().copied()))
    }

    /// Every option, positional and subcommand, in every subcommand, says
    /// what it is for in `--help`.
    #[test]
    fn every_option_and_subcommand_has_a_help_line() {
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
                if arg.is_positional() || arg.get_long().is_some() {
                    continue;
                }
                missing.push(format!("{path} {id}: no long name"));
            }
            for sub in cmd.get_subcommands() {
                let name = format!("{path} {}", sub.get_name());
                if sub.get_about().is_none() {
                    missing.push(format!("{name}: no about"));
                }
                walk(sub, &name, missing);
            }
        }
        let mut cmd = Cli::command();
        cmd.build();
        let mut missing = Vec::new();
        walk(&cmd, "portcullis", &mut missing);
        assert!(missing.is_empty(), "without help: {missing:#?}");
    }

    #[test]
    fn check_takes_the_file_positionally_and_defaults_like_run() {
        let Command::Check(a) = parse(&["check"]).unwrap().command else {
            panic!("not check")
        };
        let Command::Run(r) = parse(&["run"]).unwrap().command else {
            panic!("not run")
        };
        assert_eq!(a.path(), r.policy);
        assert_eq!(a.path(), PathBuf::from("/etc/portcullis/policy.toml"));
        let Command::Check(a) = parse(&["check", "x.toml", "-q"]).unwrap().command else {
            panic!("not check")
        };
        assert_eq!(a.path(), PathBuf::from("x.toml"));
        assert!(a.quiet);
        let Command::Check(a) = parse(&["check", "-p", "-"]).unwrap().command else {
            panic!("not check")
        };
        assert_eq!(a.path(), PathBuf::from("-"));
        assert!(parse(&["check", "a.toml", "--policy", "b.toml"]).is_err());
    }

    #[test]
    fn a_duplicate_iface_is_refused() {
        let cli = parse(&["run", "-i", "eth0", "--iface", "eth1", "-i", "eth0"]).unwrap();
        let (sub, msg) = validate(&cli).unwrap_err();
        assert_eq!(sub, "run");
        assert!(
            msg.contains("--iface eth0 is given more than once"),
            "{msg}"
        );
        assert!(validate(&parse(&["run", "-i", "eth0", "-i", "eth1"]).unwrap()).is_ok());
        assert_eq!(duplicate(&[]), None);
    }

    #[test]
    fn run_mode_forces_native_or_generic() {
        let mode = |args: &[&str]| match parse(args).map(|c| c.command) {
            Ok(Command::Run(r)) => Ok(r.mode.map(AttachMode::from)),
            Ok(_) => panic!("not run"),
            Err(e) => Err(e),
        };
        assert_eq!(mode(&["run"]).unwrap(), None);
        assert_eq!(
            mode(&["run", "--mode", "native"]).unwrap(),
            Some(AttachMode::Native)
        );
        assert_eq!(
            mode(&["run", "--mode", "generic"]).unwrap(),
            Some(AttachMode::Generic)
        );
        assert!(mode(&["run", "--mode", "offload"]).is_err());
    }

    #[test]
    fn every_read_or_control_command_takes_output_json() {
        for sub in ["check", "status", "reload", "detach"] {
            let cli = parse(&[sub, "-o", "json"]).unwrap_or_else(|e| panic!("{sub}: {e}"));
            assert_eq!(cli.command.output(), Output::Json, "{sub}");
            let cli = parse(&[sub, "--output", "json"]).unwrap();
            assert_eq!(cli.command.output(), Output::Json, "{sub}");
        }
        let Command::Detach(d) = parse(&["detach", "--iface", "eth1"]).unwrap().command else {
            panic!("not detach")
        };
        assert_eq!(d.iface.as_deref(), Some("eth1"));
    }
}
