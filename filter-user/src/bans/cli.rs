//! `portcullis ban add|del|list|flush`: requests to the running daemon (it
//! owns the bans; without it nothing changes).
use std::{io::Write, path::PathBuf, process::ExitCode, time::Duration};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use serde::Serialize;

use super::{input, AddRequest, BanView, Tally};
use crate::daemon::control::{self, Request, Response, DEFAULT_CONTROL_SOCKET};

#[derive(Debug, Args)]
pub struct BanArgs {
    #[command(subcommand)]
    pub command: BanCommand,
    /// The running daemon's control socket.
    #[arg(long, global = true, value_name = "PATH", default_value = DEFAULT_CONTROL_SOCKET)]
    pub control_socket: PathBuf,
    /// Output format for stdout (json: also on failure, as {"ok":false,"error":…}).
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum BanCommand {
    /// Drop these sources on every port but failsafe ones, until --for runs
    /// out (enforced by the datapath itself) or `ban del`. Banning a banned
    /// prefix again replaces its expiry, tag and reason.
    Add {
        /// Addresses or prefixes (198.51.100.7, 203.0.113.0/24, 2001:db8::/48).
        #[arg(value_name = "ADDR|PREFIX")]
        targets: Vec<String>,
        /// A file of addresses/prefixes, one a line (`#` comments), read by
        /// the daemon: the way to add many in one request.
        #[arg(long, value_name = "FILE")]
        file: Option<PathBuf>,
        /// How long: 90s, 15m, 4h, 2d, 1w (default: until removed).
        #[arg(long = "for", value_name = "DURATION", value_parser = input::parse_ttl)]
        for_s: Option<u64>,
        /// Who banned (fail2ban, crowdsec:…): counted per tag; `flush --tag`.
        #[arg(long, value_name = "NAME", default_value = "")]
        tag: String,
        /// Free text kept with the ban (`ban list`).
        #[arg(long, value_name = "TEXT", default_value = "")]
        reason: String,
    },
    /// Remove the bans of exactly these addresses/prefixes.
    Del {
        /// Addresses or prefixes, exactly as banned (a prefix's ban is not
        /// split by removing an address inside it).
        #[arg(value_name = "ADDR|PREFIX", required = true)]
        targets: Vec<String>,
    },
    /// Show the bans in force.
    List {
        /// Only the bans carrying this tag.
        #[arg(long, value_name = "NAME")]
        tag: Option<String>,
    },
    /// Remove every ban (of --tag, if given).
    Flush {
        /// Only the bans carrying this tag (fail2ban's jail, say).
        #[arg(long, value_name = "NAME")]
        tag: Option<String>,
    },
}

#[derive(Serialize)]
struct Answer<'a> {
    ok: bool,
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    tally: Option<&'a Tally>,
    #[serde(skip_serializing_if = "Option::is_none")]
    bans: Option<&'a [BanView]>,
}

pub fn run(args: &BanArgs) -> Result<ExitCode> {
    let req = match &args.command {
        BanCommand::Add {
            targets,
            file,
            for_s,
            tag,
            reason,
        } => {
            if targets.is_empty() && file.is_none() {
                bail!("nothing to ban: name addresses/prefixes or --file");
            }
            // Checked here too, for a message before any request is sent.
            for t in targets {
                input::parse_target(t)?;
            }
            let file = match file {
                Some(f) => Some(
                    std::fs::canonicalize(f)
                        .with_context(|| format!("the bulk file {}", f.display()))?,
                ),
                None => None,
            };
            Request::BanAdd(AddRequest {
                targets: targets.clone(),
                file,
                for_s: *for_s,
                tag: tag.clone(),
                reason: reason.clone(),
            })
        }
        BanCommand::Del { targets } => Request::BanDel {
            targets: targets.clone(),
        },
        BanCommand::List { tag } => Request::BanList { tag: tag.clone() },
        BanCommand::Flush { tag } => Request::BanFlush { tag: tag.clone() },
    };
    let line = serde_json::to_string(&req)?;
    if line.len() >= control::MAX_REQUEST {
        bail!(
            "too many addresses for one request ({} bytes, the most is {}): put them in a \
             file and pass --file",
            line.len(),
            control::MAX_REQUEST
        );
    }
    let answer: Response = control::request(&args.control_socket, &req, Duration::from_secs(120))?;
    if !answer.ok {
        bail!("{}", answer.error.unwrap_or_else(|| "refused".into()));
    }
    let bans = answer.bans.unwrap_or_default();
    let mut out = std::io::stdout().lock();
    match args.output {
        Format::Json => {
            serde_json::to_writer(
                &mut out,
                &Answer {
                    ok: true,
                    tally: bans.tally.as_ref(),
                    bans: bans.list.as_deref(),
                },
            )?;
            writeln!(out)?;
        }
        Format::Text => {
            if let Some(t) = bans.tally {
                writeln!(
                    out,
                    "{} added, {} updated, {} removed",
                    t.added, t.updated, t.removed
                )?;
            }
            if let Some(list) = bans.list {
                for b in &list {
                    let left = match b.remaining_s {
                        Some(s) => format!("{s}s left ({})", b.expires.as_deref().unwrap_or("?")),
                        None => "no expiry".into(),
                    };
                    let tag = if b.tag.is_empty() { "-" } else { &b.tag };
                    writeln!(out, "{}\t{left}\ttag {tag}\t{}", b.prefix, b.reason)?;
                }
                writeln!(out, "{} bans", list.len())?;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
