//! Log output on stderr: `--log-format plain` (the default) or `json`.
//!
//! Plain text adapts to where stderr goes. To a terminal: timestamp, level,
//! target, message, in colour. To journald (systemd sets `JOURNAL_STREAM` to
//! the device and inode of the stream it hands the service; it must match
//! stderr's, so a child with a redirected stderr does not inherit the
//! behaviour): no timestamp (journald stamps each line), no colour, and each
//! line prefixed with its syslog priority (`<3>` error … `<7>` debug; see
//! sd-daemon(3)), so `journalctl -p warning` selects by level. Anywhere else
//! (a file, a pipe, `kubectl logs`): timestamp, no colour.
//!
//! JSON is tracing-subscriber's, flattened: one object per line with
//! `timestamp` (RFC 3339, UTC), `level`, `target`, `message` and the event's
//! own fields (`code` on policy warnings, …). docs/operations.md lists them.
use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::{
    fmt::{
        format::{FormatEvent, FormatFields, Writer},
        FmtContext,
    },
    registry::LookupSpan,
    EnvFilter,
};

/// `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Text, one event per line (journald-aware: see docs/operations.md).
    #[default]
    Plain,
    /// One JSON object per line (timestamp, level, target, message, fields).
    Json,
}

/// Where stderr goes, as far as the plain format cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    Terminal,
    Journal,
    Other,
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`, decimal) names the stream
/// `stderr` (its device and inode) is.
pub fn journal_stream_matches(var: Option<&str>, stderr: Option<(u64, u64)>) -> bool {
    let (Some(var), Some((dev, ino))) = (var, stderr) else {
        return false;
    };
    let Some((d, i)) = var.trim().split_once(':') else {
        return false;
    };
    d.parse() == Ok(dev) && i.parse() == Ok(ino)
}

fn stderr_dev_ino() -> Option<(u64, u64)> {
    use std::os::fd::AsFd;
    let st = nix::sys::stat::fstat(std::io::stderr().as_fd()).ok()?;
    Some((st.st_dev, st.st_ino))
}

/// Where this process's stderr goes.
pub fn sink() -> Sink {
    let var = std::env::var("JOURNAL_STREAM").ok();
    if journal_stream_matches(var.as_deref(), stderr_dev_ino()) {
        Sink::Journal
    } else if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        Sink::Terminal
    } else {
        Sink::Other
    }
}

/// The syslog priority journald reads from a `<N>` line prefix.
pub fn priority(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// Prefixes every line of an event with its priority: journald splits a
/// multi-line message (a rejected policy's diagnostics) into entries, and
/// each should keep the event's level.
struct JournalPriority<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalPriority<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let mut text = String::new();
        self.0.format_event(ctx, Writer::new(&mut text), event)?;
        let prio = priority(*event.metadata().level());
        for line in text.lines() {
            writeln!(writer, "<{prio}>{line}")?;
        }
        Ok(())
    }
}

/// Installs the subscriber: `RUST_LOG` if set, else `default_level`; events
/// from the `log` crate (aya) are forwarded to it.
pub fn init(format: LogFormat, default_level: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match (format, sink()) {
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
        (LogFormat::Plain, Sink::Journal) => {
            let inner = tracing_subscriber::fmt::format()
                .without_time()
                .with_ansi(false);
            builder
                .with_ansi(false)
                .event_format(JournalPriority(inner))
                .init()
        }
        (LogFormat::Plain, Sink::Terminal) => builder.with_ansi(true).init(),
        (LogFormat::Plain, Sink::Other) => builder.with_ansi(false).init(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_stream_counts_only_when_it_names_stderr() {
        assert!(journal_stream_matches(Some("8:1234"), Some((8, 1234))));
        // Inherited by a child whose stderr was redirected elsewhere.
        assert!(!journal_stream_matches(Some("8:1234"), Some((8, 99))));
        assert!(!journal_stream_matches(Some("9:1234"), Some((8, 1234))));
        assert!(!journal_stream_matches(None, Some((8, 1234))));
        assert!(!journal_stream_matches(Some("garbage"), Some((8, 1234))));
        assert!(!journal_stream_matches(Some("8:1234"), None));
    }

    #[test]
    fn journal_priorities_follow_sd_daemon() {
        assert_eq!(priority(Level::ERROR), 3);
        assert_eq!(priority(Level::WARN), 4);
        assert_eq!(priority(Level::INFO), 6);
        assert_eq!(priority(Level::DEBUG), 7);
        assert_eq!(priority(Level::TRACE), 7);
    }

    /// Every line of a multi-line event keeps the event's priority.
    #[test]
    fn every_line_of_a_journal_event_carries_its_priority() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let inner = tracing_subscriber::fmt::format()
            .without_time()
            .with_ansi(false);
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(JournalPriority(inner))
            .with_writer(move || out.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!("reload rejected:\npolicy.toml:3:1: error: x");
            tracing::info!("ok");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("<4> WARN "), "{text}");
        assert_eq!(lines[1], "<4>policy.toml:3:1: error: x");
        assert!(lines[2].starts_with("<6> INFO "), "{text}");
    }
}
