//! The `explain` subcommand's arguments and output (main.rs only dispatches).
use std::{io::Write, net::IpAddr, path::PathBuf, process::ExitCode};

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::{explain, parse_fragment, parse_to, parse_vlan, Fragment, Query};
use crate::{loader::DEFAULT_PIN_ROOT, policy::Proto};

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Source address of the packet (IPv4 or IPv6).
    #[arg(long, value_name = "ADDR")]
    pub from: IpAddr,
    /// Destination port and protocol: 8889/tcp, 53/udp, 2905/sctp.
    #[arg(long, value_name = "PORT/PROTO", value_parser = parse_to)]
    pub to: (u16, Proto),
    /// Run the program of this interface's link (default: the first attached).
    #[arg(long, value_name = "IF")]
    pub iface: Option<String>,
    /// Send the frame with one 802.1Q tag of this VLAN id.
    #[arg(long, value_name = "N", value_parser = parse_vlan)]
    pub vlan: Option<u16>,
    /// Send a first fragment (offset 0, more to follow) or a later one (no ports).
    #[arg(long, value_name = "first|later", value_parser = parse_fragment)]
    pub fragment: Option<Fragment>,
    /// Destination address (default 192.0.2.1 or 2001:db8::1; not judged).
    #[arg(long, value_name = "ADDR")]
    pub dst: Option<IpAddr>,
    /// Where the filter's maps and links are pinned.
    #[arg(long, value_name = "DIR", default_value = DEFAULT_PIN_ROOT)]
    pub pin_root: PathBuf,
    /// The daemon's state directory (the feeds' cached copies are searched
    /// for the blocklist line).
    #[arg(long, value_name = "DIR", default_value = crate::bans::DEFAULT_STATE_DIR)]
    pub state_dir: PathBuf,
    /// Output format for stdout.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Text)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Runs `portcullis explain`: exit 0 with the explanation (whatever the
/// verdict), an error (exit 1) if the filter could not be asked.
pub fn run(args: &ExplainArgs) -> Result<ExitCode> {
    let query = Query {
        from: args.from,
        proto: args.to.1,
        port: args.to.0,
        iface: args.iface.clone(),
        vlan: args.vlan,
        fragment: args.fragment,
        dst: args.dst,
        state_dir: args.state_dir.clone(),
    };
    let e = explain(&args.pin_root, &query)?;
    let text = match args.output {
        Format::Text => e.to_string(),
        Format::Json => serde_json::to_string_pretty(&e)?,
    };
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{text}").and_then(|()| out.flush()) {
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => {}
        other => other.context("writing to stdout")?,
    }
    Ok(ExitCode::SUCCESS)
}
