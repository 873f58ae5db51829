//! Walks the span-carrying TOML document by hand, so that one run reports every
//! problem (unknown keys included) with its location, then compiles the result.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::{Ipv4Net, Ipv6Net};
use sha2::{Digest, Sha256};
use toml_edit::{ImDocument, Item, TableLike, Value};

use super::addr::{self, Use};
use super::compile::{
    merge_ports, merge_v4, merge_v6, Action, BasicAuth, CompiledFailsafe, CompiledPolicy,
    CompiledZone, Defaults, FragmentMode, ListFileInfo, MetricsConfig, PortRange, Proto,
    RejectWith, TlsFiles, ZoneAction, MAX_REJECT_BURST, MAX_REJECT_RATE,
};
use super::diag::{excerpt, nearest, Diags, PolicyError};
use super::files::{self, FileError, ReadLimits};
use super::lists;
use super::ports::parse_port;
use super::warn;
use crate::events::{EventsPolicy, Mode};

type Span = Option<Range<usize>>;

pub(super) const ROOT_KEYS: &[&str] = &[
    "version",
    "interfaces",
    "defaults",
    "blocklist",
    "failsafe",
    "zone",
    "metrics",
    "events",
    "crowdsec",
];
pub(super) const DEFAULTS_KEYS: &[&str] = &[
    "unmatched",
    "non_ip",
    "other_protocols",
    "fragments",
    "reject_rate",
    "reject_burst",
    "rate_tracked",
];
pub(super) const BLOCKLIST_KEYS: &[&str] = &["cidrs", "files", "feeds"];
pub(super) const FAILSAFE_KEYS: &[&str] = &["ports", "from"];
pub(super) const ZONE_KEYS: &[&str] = &[
    "name",
    "ports",
    "allow",
    "action",
    "reject_with",
    "audit",
    "schedule",
    "timezone",
    "rate",
    "quota",
];
pub(super) const METRICS_KEYS: &[&str] = &["listen", "basic_auth", "tls"];
pub(super) const BASIC_AUTH_KEYS: &[&str] = &["user", "password_hash"];
pub(super) const TLS_KEYS: &[&str] = &["cert", "key"];
pub(super) const EVENTS_KEYS: &[&str] = &["sample", "rate", "burst"];

/// The policy format version this build reads.
pub const POLICY_VERSION: i64 = 1;

/// Linux interface names are at most IFNAMSIZ - 1 bytes.
const IFNAME_MAX: usize = 15;

/// A field read from a table: absent, present but already reported as wrong, or good.
pub(super) enum Field<T> {
    Missing,
    Bad,
    Ok(T),
}

struct ZoneDraft {
    name: String,
    ports: Vec<(PortRange, Span)>,
    allow_v4: Vec<Ipv4Net>,
    allow_v6: Vec<Ipv6Net>,
    audit: bool,
    schedule: Option<super::schedule::ZoneSchedule>,
    action: ZoneAction,
    limits: Option<super::rate::ZoneLimits>,
    quota: Option<super::quota::QuotaSpec>,
}

pub(super) struct Walker<'a> {
    pub(super) diags: Diags<'a>,
    /// Caps and deadline for the list files.
    limits: ReadLimits,
    /// The daemon's state directory: feeds are read from its cache.
    state_dir: PathBuf,
}

/// Longest TOML parser message quoted (it may quote a key).
const TOML_MESSAGE_CHARS: usize = 200;

/// Parses, validates and compiles a policy. List files are read from disk,
/// relative to `path`'s directory, within `limits`.
pub(crate) fn compile(
    text: &str,
    path: &Path,
    limits: ReadLimits,
    state_dir: &Path,
) -> Result<CompiledPolicy, PolicyError> {
    let mut w = Walker {
        diags: Diags::new(path, text),
        limits,
        state_dir: state_dir.to_path_buf(),
    };
    let doc = match ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let mut message: String = e
                .message()
                .trim()
                .replace('\n', ": ")
                .chars()
                .take(TOML_MESSAGE_CHARS + 1)
                .collect();
            if message.chars().count() > TOML_MESSAGE_CHARS {
                message = message.chars().take(TOML_MESSAGE_CHARS).collect();
                message.push('…');
            }
            w.diags.at(
                e.span(),
                format!("invalid TOML: {message}"),
                Some("fix the syntax at this point; docs/policy.md shows a complete policy".into()),
            );
            return Err(w.diags.into_error());
        }
    };
    let root: &dyn TableLike = doc.as_table();

    let mut hasher = Sha256::new();
    hasher.update(b"portcullis policy v1\0");
    hash_chunk(&mut hasher, text.as_bytes());

    w.check_keys(root, ROOT_KEYS, "at the top level");
    w.version(root);
    let interfaces = w.interfaces(root);
    let defaults = w.defaults(root);
    let (blocklist_v4, blocklist_v6, list_files, feeds) = w.blocklist(root, path, &mut hasher);
    let failsafe = w.failsafe(root);
    let zones = w.zones(root, defaults.rate_tracked);
    let metrics = w.metrics(root, path);
    let events = w.events(root);
    let crowdsec = w.crowdsec(root, path);

    let blocklist_v4 = merge_v4(blocklist_v4);
    let blocklist_v6 = merge_v6(blocklist_v6);
    w.blocklist_everything(root, &blocklist_v4, &blocklist_v6);

    if !w.diags.is_empty() {
        return Err(w.diags.into_error());
    }
    let zones = zones
        .into_iter()
        .enumerate()
        .map(|(i, z)| CompiledZone {
            // Validated above: at most MAX_ZONES zones.
            id: u16::try_from(i + 1).unwrap_or(u16::MAX),
            name: z.name,
            ports: merge_ports(z.ports.into_iter().map(|(r, _)| r).collect()),
            allow_v4: merge_v4(z.allow_v4),
            allow_v6: merge_v6(z.allow_v6),
            audit: z.audit,
            schedule: z.schedule,
            action: z.action,
            limits: z.limits,
            quota: z.quota,
        })
        .collect();
    let mut policy = CompiledPolicy {
        interfaces,
        defaults,
        blocklist_v4,
        blocklist_v6,
        failsafe,
        zones,
        metrics,
        events,
        crowdsec,
        list_files,
        feeds,
        source_hash: hasher.finalize().into(),
        warnings: Vec::new(),
    };
    policy.warnings = warn::collect(&policy, root, path, text);
    Ok(policy)
}

/// Longest zone name, in characters (all ASCII): fits a Prometheus label, and
/// MAX_ZONES names twice over (the META record keeps the names seen and the
/// active ones) stay far under META_CAPACITY.
pub(crate) const ZONE_NAME_MAX: usize = 64;

/// Names that label counters which belong to no zone (see status.rs).
const RESERVED_ZONE_NAMES: &[&str] = &["global", "failsafe"];

const ZONE_NAME_HELP: &str = "a zone name is 1 to 64 letters, digits, `.`, `_` or `-`, \
    starting with a letter or digit, e.g. name = \"keep-admin\"";

/// Zone names match `[A-Za-z0-9][A-Za-z0-9._-]{0,63}`: they label metrics,
/// appear in `status` and in the pinned META record.
fn zone_name_problem(name: &str) -> Option<(String, String)> {
    if name.trim().is_empty() {
        return Some((
            "zone name is empty".into(),
            "name the zone; the name labels its metrics, e.g. name = \"admin\"".into(),
        ));
    }
    let len = name.chars().count();
    if len > ZONE_NAME_MAX {
        return Some((
            format!(
                "zone name \"{}\" is {len} characters long (at most {ZONE_NAME_MAX})",
                excerpt(name)
            ),
            ZONE_NAME_HELP.into(),
        ));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if let Some(bad) = name.chars().find(|&c| !allowed(c)) {
        return Some((
            format!("zone name \"{}\" contains {bad:?}", excerpt(name)),
            ZONE_NAME_HELP.into(),
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Some((
            format!("zone name \"{name}\" does not start with a letter or digit"),
            ZONE_NAME_HELP.into(),
        ));
    }
    if RESERVED_ZONE_NAMES.contains(&name) {
        return Some((
            format!("zone name \"{name}\" is reserved"),
            "`global` and `failsafe` label the counters of the blocklist and defaults and \
             of failsafe rules; choose another name"
                .into(),
        ));
    }
    None
}

/// Longest list file name (Linux's PATH_MAX).
const LIST_NAME_MAX: usize = 4096;

/// Message and help for a list file that was not read.
fn list_file_error(
    e: &FileError,
    subject: &str,
    dir: &Path,
    limits: &ReadLimits,
) -> (String, String) {
    let message = e.describe(subject);
    let help = match e {
        FileError::Open(_) | FileError::Read(_) => format!(
            "list file paths are relative to the policy file's directory ({})",
            dir.display()
        ),
        FileError::NotRegular(_) => "a list file must be a regular file (a symlink to one is \
            fine); to feed a list from a program, write it to a temporary file and rename \
            that into place (the daemon reloads on the change)"
            .into(),
        FileError::TooLarge { size, .. } if *size <= limits.list_max => {
            return (
                format!(
                    "{subject} ({size} bytes) would bring the list files to more than \
                     {} in all",
                    files::mib(limits.lists_total_max)
                ),
                format!(
                    "all list files of a policy together hold at most {}; drop a feed \
                     or keep only the prefixes it needs (see docs/policy.md)",
                    files::mib(limits.lists_total_max)
                ),
            );
        }
        FileError::TooLarge { .. } => format!(
            "a list file holds at most {} (a 1,000,000-prefix feed is about 20 MB as text, \
             70 MB as JSON lines): is this the list you meant?",
            files::mib(limits.list_max)
        ),
        FileError::TimedOut { .. } => "the file system is too slow to read the lists in \
            time; keep list files on a local disk"
            .into(),
    };
    (message, help)
}

/// Length-prefixed, so that moving bytes between chunks changes the hash.
pub(super) fn hash_chunk(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

fn key_span(t: &dyn TableLike, key: &str) -> Span {
    t.key(key).and_then(|k| k.span())
}

/// "a" or "an" + the TOML type name, for messages.
fn found(item: &Item) -> String {
    let name = item.type_name();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}

impl Walker<'_> {
    pub(super) fn limits(&self) -> ReadLimits {
        self.limits
    }

    /// Entries that each drop part of the address space may merge into all of
    /// it (`0.0.0.0/1` + `128.0.0.0/1`): refused like a single /0.
    fn blocklist_everything(&mut self, root: &dyn TableLike, v4: &[Ipv4Net], v6: &[Ipv6Net]) {
        let all_v4 = v4.iter().any(|n| n.prefix_len() == 0);
        let all_v6 = v6.iter().any(|n| n.prefix_len() == 0);
        if !all_v4 && !all_v6 {
            return;
        }
        let family = match (all_v4, all_v6) {
            (true, true) => "IPv4 and IPv6",
            (true, false) => "IPv4",
            _ => "IPv6",
        };
        let t = root.get("blocklist").and_then(Item::as_table_like);
        let span = t
            .and_then(|t| t.key("cidrs").or_else(|| t.key("files")))
            .and_then(|k| k.span())
            .or_else(|| key_span(root, "blocklist"));
        self.diags.at(
            span,
            format!("the blocklist's entries together cover every {family} source (they merge to a /0)"),
            Some("a blocklist names the sources to drop; remove the entries that add up to everything (e.g. 0.0.0.0/1 + 128.0.0.0/1); for default-deny set defaults.unmatched = \"drop\"".into()),
        );
    }

    pub(super) fn check_keys(&mut self, t: &dyn TableLike, known: &[&str], section: &str) {
        self.check_keys_but(t, known, &[], section);
    }

    /// As `check_keys`, leaving the keys in `reported` to a check of their own.
    pub(super) fn check_keys_but(
        &mut self,
        t: &dyn TableLike,
        known: &[&str],
        reported: &[&str],
        section: &str,
    ) {
        for (key, _) in t.iter() {
            if known.contains(&key) || reported.contains(&key) {
                continue;
            }
            let help = match nearest(key, known) {
                Some(n) => format!("did you mean `{n}`?"),
                None => format!("valid keys {section}: {}", known.join(", ")),
            };
            self.diags.at(
                key_span(t, key),
                format!("unknown key `{}` {section}", excerpt(key)),
                Some(help),
            );
        }
    }

    pub(super) fn type_error(&mut self, item: &Item, dotted: &str, expected: &str, example: &str) {
        self.diags.at(
            item.span(),
            format!("`{dotted}` must be {expected}, found {}", found(item)),
            Some(format!("e.g. {example}")),
        );
    }

    pub(super) fn missing(&mut self, span: Span, section: &str, key: &str, example: &str) {
        self.diags.at(
            span,
            format!("{section} has no `{key}`"),
            Some(format!("add it, e.g. {example}")),
        );
    }

    pub(super) fn string<'d>(
        &mut self,
        t: &'d dyn TableLike,
        key: &str,
        dotted: &str,
        example: &str,
    ) -> Field<(&'d str, Span)> {
        let Some(item) = t.get(key) else {
            return Field::Missing;
        };
        match item.as_str() {
            Some(s) => Field::Ok((s, item.span())),
            None => {
                self.type_error(item, dotted, "a string", example);
                Field::Bad
            }
        }
    }

    /// An array of strings; wrong elements are reported and skipped.
    pub(super) fn strings<'d>(
        &mut self,
        t: &'d dyn TableLike,
        key: &str,
        dotted: &str,
        example: &str,
    ) -> Field<Vec<(&'d str, Span)>> {
        let Some(item) = t.get(key) else {
            return Field::Missing;
        };
        let Some(array) = item.as_array() else {
            self.type_error(item, dotted, "an array of strings", example);
            return Field::Bad;
        };
        let mut out = Vec::with_capacity(array.len());
        for v in array.iter() {
            match v.as_str() {
                Some(s) => out.push((s, v.span())),
                None => self.diags.at(
                    v.span(),
                    format!(
                        "`{dotted}` entries must be strings, found {}",
                        value_type(v)
                    ),
                    Some(format!("quote each entry, e.g. {example}")),
                ),
            }
        }
        Field::Ok(out)
    }

    /// A string that must be one of `choices`.
    fn choice<T: Copy>(
        &mut self,
        t: &dyn TableLike,
        key: &str,
        dotted: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
        let example = format!("{key} = \"{}\"", names[0]);
        let Field::Ok((s, span)) = self.string(t, key, dotted, &example) else {
            return None;
        };
        if let Some((_, v)) = choices.iter().find(|(n, _)| *n == s) {
            return Some(*v);
        }
        let valid = names
            .iter()
            .map(|n| format!("\"{n}\""))
            .collect::<Vec<_>>()
            .join(" or ");
        let help = match nearest(s, &names) {
            Some(n) => format!("did you mean \"{n}\"?"),
            None => format!("valid values: {valid}"),
        };
        self.diags.at(
            span,
            format!("`{dotted}` must be {valid}, found \"{}\"", excerpt(s)),
            Some(help),
        );
        None
    }

    pub(super) fn section<'d>(
        &mut self,
        t: &'d dyn TableLike,
        key: &str,
    ) -> Option<&'d dyn TableLike> {
        let item = t.get(key)?;
        match item.as_table_like() {
            Some(table) => Some(table),
            None => {
                self.type_error(item, key, "a table", &format!("a [{key}] section"));
                None
            }
        }
    }

    /// `[[key]]` entries, also accepted as an inline array of inline tables.
    pub(super) fn table_array<'d>(
        &mut self,
        t: &'d dyn TableLike,
        key: &str,
    ) -> Vec<(&'d dyn TableLike, Span)> {
        let Some(item) = t.get(key) else {
            return Vec::new();
        };
        match item {
            Item::ArrayOfTables(a) => a.iter().map(|t| (t as &dyn TableLike, t.span())).collect(),
            Item::Value(Value::Array(a)) => {
                let mut out = Vec::new();
                for v in a.iter() {
                    match v.as_inline_table() {
                        Some(it) => out.push((it as &dyn TableLike, v.span())),
                        None => self.diags.at(
                            v.span(),
                            format!("`{key}` entries must be tables, found {}", value_type(v)),
                            Some(format!("write each entry as a [[{key}]] section")),
                        ),
                    }
                }
                out
            }
            other => {
                self.diags.at(
                    other.span(),
                    format!("`{key}` must be an array of tables, found {}", found(other)),
                    Some(format!(
                        "write each entry as [[{key}]] (two brackets), even if there is only one"
                    )),
                );
                Vec::new()
            }
        }
    }

    fn version(&mut self, root: &dyn TableLike) {
        let Some(item) = root.get("version") else {
            self.diags.at(
                Some(0..0),
                "the policy has no `version`",
                Some(format!(
                    "add `version = {POLICY_VERSION}` as the first line"
                )),
            );
            return;
        };
        match item.as_integer() {
            Some(POLICY_VERSION) => {}
            Some(v) => self.diags.at(
                item.span(),
                format!("unsupported policy version {v}"),
                Some(format!(
                    "this portcullis reads version {POLICY_VERSION} policies"
                )),
            ),
            None => self.type_error(item, "version", "an integer", "version = 1"),
        }
    }

    fn interfaces(&mut self, root: &dyn TableLike) -> Vec<String> {
        let Field::Ok(names) =
            self.strings(root, "interfaces", "interfaces", "interfaces = [\"eth0\"]")
        else {
            return Vec::new();
        };
        let mut out: Vec<String> = Vec::with_capacity(names.len());
        for (name, span) in names {
            let problem = if name.is_empty() {
                Some("interface name is empty".to_string())
            } else if name.len() > IFNAME_MAX {
                Some(format!(
                    "interface name `{}` is longer than {IFNAME_MAX} bytes",
                    excerpt(name)
                ))
            } else if name.contains(['/', '\0'])
                || name.contains(char::is_whitespace)
                || name.contains(char::is_control)
                || name == "."
                || name == ".."
            {
                Some(format!("`{}` is not a valid interface name", excerpt(name)))
            } else if out.iter().any(|n| n == name) {
                Some(format!("interface `{name}` is listed twice"))
            } else {
                None
            };
            match problem {
                Some(m) => self.diags.at(
                    span,
                    m,
                    Some("list interface names as `ip link` shows them, e.g. \"eth0\"".into()),
                ),
                None => out.push(name.to_string()),
            }
        }
        out
    }

    fn defaults(&mut self, root: &dyn TableLike) -> Defaults {
        let mut d = Defaults::default();
        let Some(t) = self.section(root, "defaults") else {
            return d;
        };
        self.check_keys(t, DEFAULTS_KEYS, "in [defaults]");
        let actions = [("pass", Action::Pass), ("drop", Action::Drop)];
        if let Some(a) = self.choice(t, "unmatched", "defaults.unmatched", &actions) {
            d.unmatched = a;
        }
        if let Some(a) = self.choice(t, "non_ip", "defaults.non_ip", &actions) {
            d.non_ip = a;
        }
        if let Some(a) = self.choice(t, "other_protocols", "defaults.other_protocols", &actions) {
            d.other_protocols = a;
        }
        let modes = [
            ("filter-first", FragmentMode::FilterFirst),
            ("drop", FragmentMode::Drop),
        ];
        if let Some(m) = self.choice(t, "fragments", "defaults.fragments", &modes) {
            d.fragments = m;
        }
        let budget = [
            (
                "reject_rate",
                MAX_REJECT_RATE,
                "replies of rejecting zones per second per CPU",
                100,
            ),
            (
                "reject_burst",
                MAX_REJECT_BURST,
                "replies a CPU may send at once",
                200,
            ),
        ];
        for (key, max, what, example) in budget {
            let Some(item) = t.get(key) else {
                continue;
            };
            let example = format!("{key} = {example}");
            match item.as_integer() {
                Some(n) if (1..=i64::from(max)).contains(&n) => {
                    if key == "reject_rate" {
                        d.reject_rate = n as u32;
                    } else {
                        d.reject_burst = n as u32;
                    }
                }
                Some(n) => self.diags.at(
                    item.span(),
                    format!("`defaults.{key}` {n} is out of range (1 to {max})"),
                    Some(format!("{key} counts {what}, e.g. {example}")),
                ),
                None => self.type_error(item, &format!("defaults.{key}"), "an integer", &example),
            }
        }
        d.rate_tracked = self.default_tracked(t);
        d
    }

    /// Address entries of `dotted`, appended per family.
    fn addresses(
        &mut self,
        entries: &[(&str, Span)],
        usage: Use,
        v4: &mut Vec<Ipv4Net>,
        v6: &mut Vec<Ipv6Net>,
    ) {
        for (s, span) in entries {
            match addr::parse_addr(s.trim(), usage) {
                Ok(a) => addr::push(a, v4, v6),
                Err(p) => self.diags.problem(span.clone(), p),
            }
        }
    }

    fn port_list(&mut self, entries: &[(&str, Span)]) -> Vec<(PortRange, Span)> {
        let mut out = Vec::with_capacity(entries.len());
        for (s, span) in entries {
            match parse_port(s.trim()) {
                Ok(r) => out.push((r, span.clone())),
                Err(p) => self.diags.problem(span.clone(), p),
            }
        }
        out
    }

    fn blocklist(
        &mut self,
        root: &dyn TableLike,
        policy_path: &Path,
        hasher: &mut Sha256,
    ) -> (
        Vec<Ipv4Net>,
        Vec<Ipv6Net>,
        Vec<ListFileInfo>,
        Vec<super::feeds::FeedInfo>,
    ) {
        let (mut v4, mut v6, mut infos) = (Vec::new(), Vec::new(), Vec::new());
        let Some(t) = self.section(root, "blocklist") else {
            return (v4, v6, infos, Vec::new());
        };
        self.check_keys(t, BLOCKLIST_KEYS, "in [blocklist]");
        if let Field::Ok(cidrs) = self.strings(
            t,
            "cidrs",
            "blocklist.cidrs",
            "cidrs = [\"203.0.113.0/24\"]",
        ) {
            self.addresses(&cidrs, Use::Block, &mut v4, &mut v6);
        }
        let files = match self.strings(
            t,
            "files",
            "blocklist.files",
            "files = [\"lists/drop.txt\"]",
        ) {
            Field::Ok(f) => f,
            _ => Vec::new(),
        };
        let dir = match policy_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let mut total = 0u64;
        for (name, span) in files {
            if name.trim().is_empty() {
                self.diags.at(
                    span,
                    "empty list file name",
                    Some("name a file, e.g. \"lists/drop.txt\"".into()),
                );
                continue;
            }
            if name.len() > LIST_NAME_MAX {
                self.diags.at(
                    span,
                    format!(
                        "list file name `{}` is {} bytes long (at most {LIST_NAME_MAX})",
                        excerpt(name),
                        name.len()
                    ),
                    Some("name the file by a shorter path".into()),
                );
                continue;
            }
            let resolved = dir.join(name);
            let limits = self.limits;
            let room = limits.lists_total_max.saturating_sub(total);
            let bytes =
                match files::read_regular(&resolved, limits.list_max.min(room), limits.deadline) {
                    Ok(b) => b,
                    Err(e) => {
                        let subject = format!("list file `{}`", resolved.display());
                        let (message, help) = list_file_error(&e, &subject, &dir, &limits);
                        self.diags.at(span, message, Some(help));
                        continue;
                    }
                };
            total += bytes.len() as u64;
            hash_chunk(hasher, name.as_bytes());
            hash_chunk(hasher, &bytes);
            let parsed = lists::parse_list(&bytes, &resolved, &mut v4, &mut v6);
            let rank = infos.len() + 1;
            for d in parsed.diagnostics {
                self.diags.external(rank, d);
            }
            tracing::debug!(file = %resolved.display(), entries = parsed.entries, "read list file");
            infos.push(ListFileInfo {
                name: name.to_string(),
                path: resolved,
                entries: parsed.entries,
                bytes: bytes.len() as u64,
            });
        }
        let state_dir = self.state_dir.clone();
        let rank = infos.len() + 1;
        let feeds = self.feeds(t, &state_dir, &mut total, rank, &mut v4, &mut v6, hasher);
        (v4, v6, infos, feeds)
    }

    fn failsafe(&mut self, root: &dyn TableLike) -> Vec<CompiledFailsafe> {
        let mut out = Vec::new();
        for (t, span) in self.table_array(root, "failsafe") {
            self.no_failsafe_schedule(t);
            self.no_failsafe_rate(t);
            self.no_failsafe_quota(t);
            let reported: Vec<&str> = super::schedule::SCHEDULE_KEYS
                .iter()
                .chain(super::rate::ZONE_RATE_KEYS)
                .chain(super::quota::ZONE_QUOTA_KEYS)
                .copied()
                .collect();
            self.check_keys_but(t, FAILSAFE_KEYS, &reported, "in [[failsafe]]");
            let mut rule = CompiledFailsafe {
                ports: Vec::new(),
                from_v4: Vec::new(),
                from_v6: Vec::new(),
            };
            match self.strings(t, "ports", "failsafe.ports", "ports = [\"22/tcp\"]") {
                Field::Missing => self.missing(
                    span.clone(),
                    "[[failsafe]]",
                    "ports",
                    "ports = [\"22/tcp\"]",
                ),
                Field::Bad => {}
                Field::Ok(_) if raw_len(t, "ports") == 0 => self.empty(
                    t,
                    "ports",
                    "a failsafe rule needs at least one port, e.g. ports = [\"22/tcp\"]",
                ),
                Field::Ok(p) => {
                    rule.ports = self.port_list(&p).into_iter().map(|(r, _)| r).collect()
                }
            }
            match self.strings(t, "from", "failsafe.from", "from = [\"10.0.0.0/8\"]") {
                Field::Missing => self.missing(span, "[[failsafe]]", "from", "from = [\"10.0.0.0/8\"]"),
                Field::Bad => {}
                Field::Ok(_) if raw_len(t, "from") == 0 => self.empty(t, "from", "a failsafe rule with no sources protects nobody; list the admin networks, e.g. from = [\"10.0.0.0/8\"]"),
                Field::Ok(f) => self.addresses(&f, Use::Allow, &mut rule.from_v4, &mut rule.from_v6),
            }
            rule.ports = merge_ports(rule.ports);
            rule.from_v4 = merge_v4(rule.from_v4);
            rule.from_v6 = merge_v6(rule.from_v6);
            out.push(rule);
        }
        out
    }

    fn empty(&mut self, t: &dyn TableLike, key: &str, help: &str) {
        let span = t.get(key).and_then(|i| i.span());
        self.diags
            .at(span, format!("`{key}` is empty"), Some(help.to_string()));
    }

    fn zones(&mut self, root: &dyn TableLike, rate_tracked: u32) -> Vec<ZoneDraft> {
        let tables = self.table_array(root, "zone");
        let max = filter_common::MAX_ZONES as usize;
        if tables.len() > max {
            let span = tables[max].1.clone();
            self.diags.at(
                span,
                format!("too many zones: {} (at most {max})", tables.len()),
                Some("merge zones that share an allow list; a zone may hold many ports".into()),
            );
        }
        let mut drafts = Vec::with_capacity(tables.len());
        let mut names: HashMap<String, usize> = HashMap::new();
        let mut room: Vec<&dyn TableLike> = Vec::new();
        for (i, (t, span)) in tables.into_iter().enumerate() {
            self.check_keys(t, ZONE_KEYS, "in [[zone]]");
            let mut z = ZoneDraft {
                name: format!("#{}", i + 1),
                ports: Vec::new(),
                allow_v4: Vec::new(),
                allow_v6: Vec::new(),
                audit: false,
                schedule: None,
                action: ZoneAction::Drop,
                limits: None,
                quota: None,
            };
            match self.string(t, "name", "zone.name", "name = \"admin\"") {
                Field::Missing => {
                    self.missing(span.clone(), "[[zone]]", "name", "name = \"admin\"")
                }
                Field::Bad => {}
                Field::Ok((name, nspan)) => {
                    let line = self.diags.line_of(nspan.clone());
                    if let Some((message, help)) = zone_name_problem(name) {
                        self.diags.at(nspan, message, Some(help));
                    } else if let Some(first) = names.get(name) {
                        self.diags.at(
                            nspan,
                            format!("duplicate zone name \"{name}\" (first used on line {first})"),
                            Some("zone names must be unique; rename one of them".into()),
                        );
                    } else {
                        names.insert(name.to_string(), line);
                        z.name = name.to_string();
                    }
                }
            }
            match self.strings(t, "ports", "zone.ports", "ports = [\"8889/tcp\"]") {
                Field::Missing => {
                    self.missing(span.clone(), "[[zone]]", "ports", "ports = [\"8889/tcp\"]")
                }
                Field::Bad => {}
                Field::Ok(_) if raw_len(t, "ports") == 0 => self.empty(
                    t,
                    "ports",
                    "a zone claims at least one port, e.g. ports = [\"8889/tcp\"]",
                ),
                Field::Ok(p) => z.ports = self.port_list(&p),
            }
            match self.strings(t, "allow", "zone.allow", "allow = [\"10.0.0.0/8\"]") {
                Field::Missing => self.missing(
                    span,
                    "[[zone]]",
                    "allow",
                    "allow = [\"10.0.0.0/8\"] (or allow = [] to drop every source)",
                ),
                Field::Bad => {}
                Field::Ok(a) => self.addresses(&a, Use::Allow, &mut z.allow_v4, &mut z.allow_v6),
            }
            z.action = self.zone_action(t, &z);
            if let Some(item) = t.get("audit") {
                match item.as_bool() {
                    Some(b) => z.audit = b,
                    None => self.type_error(item, "zone.audit", "true or false", "audit = false"),
                }
            }
            z.schedule = self.zone_schedule(t);
            z.limits = self.zone_rate(t, rate_tracked);
            z.quota = self.zone_quota(t);
            room.push(t);
            drafts.push(z);
        }
        let with_quota: Vec<_> = room
            .iter()
            .zip(&drafts)
            .map(|(t, z)| (*t, z.name.as_str(), z.quota.is_some()))
            .collect();
        self.quota_keys_unique(&with_quota);
        let with_limits: Vec<_> = room
            .into_iter()
            .zip(drafts.iter().map(|z| z.limits.as_ref()))
            .collect();
        self.rate_table_room(&with_limits);
        self.check_port_claims(&drafts);
        drafts
    }

    /// `action` and `reject_with` of a zone whose ports are read.
    fn zone_action(&mut self, t: &dyn TableLike, z: &ZoneDraft) -> ZoneAction {
        let mut reject = false;
        if let Field::Ok((action, aspan)) =
            self.string(t, "action", "zone.action", "action = \"drop\"")
        {
            match action {
                "drop" => {}
                "reject" => reject = true,
                other => {
                    let help = match nearest(other, &["drop", "reject"]) {
                        Some(n) => format!("did you mean \"{n}\"?"),
                        None => "an action is \"drop\" (silently) or \"reject\" (a TCP reset or an ICMP unreachable); to let traffic through while watching, set audit = true".into(),
                    };
                    self.diags.at(
                        aspan,
                        format!("unknown zone action \"{}\"", excerpt(other)),
                        Some(help),
                    );
                }
            }
        }
        let with = self.choice(t, "reject_with", "zone.reject_with", &RejectWith::NAMES);
        let Some(with) = with else {
            return if reject {
                ZoneAction::Reject(RejectWith::ByProtocol)
            } else {
                ZoneAction::Drop
            };
        };
        let span = t.get("reject_with").and_then(|i| i.span());
        if !reject {
            self.diags.at(
                span.clone(),
                format!("`reject_with = \"{with}\"` without action = \"reject\""),
                Some(
                    "a reply is sent only by a rejecting zone: add action = \"reject\" (sources \
                     outside `allow` then get this reply), or remove reject_with to drop them \
                     silently"
                        .into(),
                ),
            );
        }
        if with == RejectWith::TcpReset {
            if let Some((range, _)) = z.ports.iter().find(|(r, _)| r.proto != Proto::Tcp) {
                self.diags.at(
                    span,
                    format!(
                        "reject_with = \"tcp-reset\" cannot answer {range} of zone \"{}\": a TCP \
                         reset answers TCP only",
                        z.name
                    ),
                    Some(
                        "leave reject_with out (TCP then gets a reset, UDP and SCTP an ICMP \
                         port unreachable), choose an ICMP reply for the whole zone, or move \
                         the UDP and SCTP ports to a zone of their own"
                            .into(),
                    ),
                );
            }
        }
        if reject {
            ZoneAction::Reject(with)
        } else {
            ZoneAction::Drop
        }
    }

    /// A (proto, port) belongs to one zone at most. Sweeps all ranges sorted by
    /// start, so that thousands of ports stay cheap.
    fn check_port_claims(&mut self, zones: &[ZoneDraft]) {
        struct Claim<'z> {
            range: PortRange,
            zone: usize,
            order: usize,
            span: &'z Span,
        }
        let mut claims: Vec<Claim<'_>> = Vec::new();
        for (zi, z) in zones.iter().enumerate() {
            for (range, span) in &z.ports {
                let order = claims.len();
                claims.push(Claim {
                    range: *range,
                    zone: zi,
                    order,
                    span,
                });
            }
        }
        claims.sort_by_key(|c| (c.range.proto, c.range.first, c.order));
        let mut active: Vec<usize> = Vec::new();
        let mut reported: HashSet<(usize, usize)> = HashSet::new();
        for i in 0..claims.len() {
            let cur = &claims[i];
            active.retain(|&j| {
                claims[j].range.proto == cur.range.proto && claims[j].range.last >= cur.range.first
            });
            for &j in &active {
                let other = &claims[j];
                if other.zone == cur.zone {
                    continue;
                }
                let (first, second) = if other.order < cur.order {
                    (other, cur)
                } else {
                    (cur, other)
                };
                if !reported.insert((second.order, first.zone)) {
                    continue;
                }
                let Some(overlap) = first.range.intersection(&second.range) else {
                    continue;
                };
                let noun = if overlap.len() == 1 { "port" } else { "ports" };
                let line = self.diags.line_of(first.span.clone());
                self.diags.at(
                    second.span.clone(),
                    format!(
                        "{noun} {overlap} of zone \"{}\" already claimed by zone \"{}\" (line {line})",
                        zones[second.zone].name, zones[first.zone].name
                    ),
                    Some(format!(
                        "a port belongs to one zone only: remove {overlap} from \"{}\" or from \"{}\", or add the sources to that zone's `allow`",
                        zones[second.zone].name, zones[first.zone].name
                    )),
                );
            }
            active.push(i);
        }
    }

    /// `[metrics] tls = { cert, key }`, resolved against the policy's
    /// directory. The files are read by the daemon (and by `check`).
    fn metrics_tls(&mut self, item: &Item, policy_path: &Path) -> Option<TlsFiles> {
        const EXAMPLE: &str = "tls = { cert = \"metrics.crt\", key = \"metrics.key\" }";
        let Some(t) = item.as_table_like() else {
            self.type_error(item, "metrics.tls", "a table", EXAMPLE);
            return None;
        };
        self.check_keys(t, TLS_KEYS, "in metrics.tls");
        let dir = match policy_path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let span = item.span();
        let cert = self.tls_file(t, span.clone(), "cert", "cert = \"metrics.crt\"");
        let key = self.tls_file(t, span, "key", "key = \"metrics.key\"");
        Some(TlsFiles {
            cert: dir.join(cert?),
            key: dir.join(key?),
        })
    }

    fn tls_file(
        &mut self,
        t: &dyn TableLike,
        span: Span,
        key: &str,
        example: &str,
    ) -> Option<String> {
        match self.string(t, key, &format!("metrics.tls.{key}"), example) {
            Field::Missing => {
                self.missing(span, "metrics.tls", key, example);
                None
            }
            Field::Bad => None,
            Field::Ok((v, vspan)) if v.trim().is_empty() => {
                self.diags.at(
                    vspan,
                    format!("empty `metrics.tls.{key}`"),
                    Some(format!("name a PEM file, e.g. {example}")),
                );
                None
            }
            Field::Ok((v, _)) => Some(v.to_string()),
        }
    }

    /// `[events]`: what is sampled into the event stream, and how fast.
    fn events(&mut self, root: &dyn TableLike) -> EventsPolicy {
        let mut e = EventsPolicy::default();
        let Some(t) = self.section(root, "events") else {
            return e;
        };
        self.check_keys(t, EVENTS_KEYS, "in [events]");
        let modes = [
            ("off", Mode::Off),
            ("drops", Mode::Drops),
            ("drops+audit", Mode::DropsAudit),
            ("all", Mode::All),
        ];
        if let Some(m) = self.choice(t, "sample", "events.sample", &modes) {
            e.sample = m;
        }
        let limits = [
            ("rate", crate::events::MAX_RATE, "events per second per CPU"),
            (
                "burst",
                crate::events::MAX_BURST,
                "events a CPU may send at once",
            ),
        ];
        for (key, max, what) in limits {
            let Some(item) = t.get(key) else {
                continue;
            };
            let example = format!("{key} = {}", if key == "rate" { 10 } else { 20 });
            match item.as_integer() {
                Some(n) if (1..=i64::from(max)).contains(&n) => {
                    let n = n as u32;
                    if key == "rate" {
                        e.rate = n;
                    } else {
                        e.burst = n;
                    }
                }
                Some(n) => self.diags.at(
                    item.span(),
                    format!("`events.{key}` {n} is out of range (1 to {max})"),
                    Some(format!("{key} counts {what}, e.g. {example}")),
                ),
                None => self.type_error(item, &format!("events.{key}"), "an integer", &example),
            }
        }
        e
    }

    fn metrics(&mut self, root: &dyn TableLike, policy_path: &Path) -> MetricsConfig {
        let mut m = MetricsConfig::default();
        let Some(t) = self.section(root, "metrics") else {
            return m;
        };
        self.check_keys(t, METRICS_KEYS, "in [metrics]");
        if let Field::Ok((listen, span)) =
            self.string(t, "listen", "metrics.listen", "listen = \"127.0.0.1:9469\"")
        {
            match listen.trim().parse::<SocketAddr>() {
                Ok(a) => m.listen = a,
                Err(_) => self.diags.at(
                    span,
                    format!(
                        "`metrics.listen` \"{}\" is not an IP address and port",
                        excerpt(listen)
                    ),
                    Some(
                        "e.g. \"127.0.0.1:9469\" or \"[::1]:9469\" (host names are not resolved)"
                            .into(),
                    ),
                ),
            }
        }
        if let Some(item) = t.get("tls") {
            m.tls = self.metrics_tls(item, policy_path);
        }
        if let Some(item) = t.get("basic_auth") {
            let Some(auth) = item.as_table_like() else {
                self.type_error(
                    item,
                    "metrics.basic_auth",
                    "a table",
                    "basic_auth = { user = \"prom\", password_hash = \"$argon2id$…\" }",
                );
                return m;
            };
            self.check_keys(auth, BASIC_AUTH_KEYS, "in metrics.basic_auth");
            let span = item.span();
            let user = match self.string(auth, "user", "metrics.basic_auth.user", "user = \"prom\"")
            {
                Field::Missing => {
                    self.missing(
                        span.clone(),
                        "metrics.basic_auth",
                        "user",
                        "user = \"prom\"",
                    );
                    None
                }
                Field::Bad => None,
                Field::Ok((u, uspan)) if u.is_empty() || u.contains(':') => {
                    self.diags.at(
                        uspan,
                        "basic auth user must be non-empty and contain no `:`",
                        Some("e.g. user = \"prom\"".into()),
                    );
                    None
                }
                Field::Ok((u, _)) => Some(u.to_string()),
            };
            let hash = match self.string(
                auth,
                "password_hash",
                "metrics.basic_auth.password_hash",
                "password_hash = \"$argon2id$…\"",
            ) {
                Field::Missing => {
                    self.missing(
                        span,
                        "metrics.basic_auth",
                        "password_hash",
                        "password_hash = \"$argon2id$v=19$…\"",
                    );
                    None
                }
                Field::Bad => None,
                Field::Ok((h, hspan)) if !h.starts_with("$argon2") => {
                    self.diags.at(
                        hspan,
                        "`metrics.basic_auth.password_hash` is not an argon2 hash",
                        Some("store an argon2 PHC string ($argon2id$v=19$m=…), never the password itself".into()),
                    );
                    None
                }
                Field::Ok((h, _)) => Some(h.to_string()),
            };
            if let (Some(user), Some(password_hash)) = (user, hash) {
                m.basic_auth = Some(BasicAuth {
                    user,
                    password_hash,
                });
            }
        }
        m
    }
}

/// Length of the array at `key` as written (before bad entries are dropped).
fn raw_len(t: &dyn TableLike, key: &str) -> usize {
    t.get(key).and_then(Item::as_array).map_or(0, |a| a.len())
}

fn value_type(v: &Value) -> String {
    let name = v.type_name();
    let article = if name.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    };
    format!("{article} {name}")
}
