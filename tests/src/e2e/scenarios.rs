//! The end-to-end scenarios: each one asserts real TCP/UDP results from the
//! internet and mgmt namespaces against a `portcullis run` in the host
//! namespace. Every scenario starts from a host with no filter and no pins and
//! leaves it that way (the runner detaches and checks between scenarios).
use std::{
    collections::HashMap,
    fmt, fs,
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, bail, ensure, Context, Result};
use nix::sys::signal::Signal;

use super::{
    bans, continuity, crowdsec,
    daemon::{Daemon, Sandbox, Status},
    fail2ban, feeds, http, inputs, limits, metrics_hardening as mh, policies,
    probe::{self, Outcome, Probe, ProbeLoop, CLOSED_TCP_PORT},
    quota, reject, schedule,
    topology::*,
    upgrade,
};

/// What a probe should see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exp {
    Open,
    /// Dropped: no answer.
    Blocked,
    /// Reached the host, port closed.
    Refused,
}

impl Exp {
    pub fn matches(self, o: &Outcome) -> bool {
        matches!(
            (self, o),
            (Exp::Open, Outcome::Open)
                | (Exp::Blocked, Outcome::Timeout)
                | (Exp::Refused, Outcome::Refused)
        )
    }
}

impl fmt::Display for Exp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Exp::Open => "open",
            Exp::Blocked => "blocked",
            Exp::Refused => "refused",
        })
    }
}

pub struct Ctx<'a> {
    pub sb: &'a Sandbox,
    /// Timings and observations, printed under the scenario's line.
    pub notes: Vec<String>,
    pub flips: usize,
    pub keep_policy: PathBuf,
    pub policy_dir: PathBuf,
    /// Set by a scenario that could not run here (with the reason).
    pub skipped: Option<String>,
}

impl Ctx<'_> {
    pub(crate) fn note(&mut self, s: impl Into<String>) {
        self.notes.push(s.into());
    }

    pub(crate) fn policy(&self, name: &str, text: &str) -> Result<PathBuf> {
        policies::write(&self.policy_dir, name, text)
    }

    pub(crate) fn start(&mut self, policy: &std::path::Path, extra: &[&str]) -> Result<Daemon> {
        let d = self.sb.start_daemon(policy, extra)?;
        self.note(format!(
            "daemon {} ready (READY=1) after {} ms",
            d.pid(),
            d.ready_after.as_millis()
        ));
        Ok(d)
    }
}

pub type ScenarioFn = fn(&mut Ctx) -> Result<()>;

pub struct Scenario {
    pub name: &'static str,
    /// Runs without the daemon (proves the harness itself).
    pub harness_only: bool,
    /// In the VM subset (`e2e-suite --vm-subset`): what differs between
    /// kernels — native XDP on veth, pinning, adoption with
    /// `bpf_link_update`, kill -9, reloads, detach.
    pub vm: bool,
    pub run: ScenarioFn,
}

pub fn all() -> Vec<Scenario> {
    use upgrade::{
        upgrade_from_layout_with_bans as up_bans,
        upgrade_from_layout_without_ban_store as up_no_store,
    };
    let s = |name, harness_only, vm, run| Scenario {
        name,
        harness_only,
        vm,
        run,
    };
    vec![
        s(
            "harness-baseline",
            true,
            true,
            harness_baseline as ScenarioFn,
        ),
        s("harness-nft-drop", true, false, harness_nft_drop),
        s("keep-policy", false, true, keep_policy),
        s(
            "blocklist-beats-allowlist",
            false,
            false,
            blocklist_beats_allowlist,
        ),
        s(
            "failsafe-beats-blocklist",
            false,
            false,
            failsafe_beats_blocklist,
        ),
        s("ipv6-paths", false, true, ipv6_paths),
        s(
            "reject-answers-at-once",
            false,
            true,
            reject::answers_at_once,
        ),
        s(
            "reject-budget-bounds-a-flood",
            false,
            false,
            reject::budget_bounds_a_flood,
        ),
        s(
            "rate-limit-probe-and-polite-source",
            false,
            false,
            limits::probe_sees_the_limit_polite_source_unaffected,
        ),
        s(
            "rate-limit-spoofed-flood",
            false,
            false,
            limits::spoofed_flood_keeps_steady_client_and_ceiling,
        ),
        s(
            "quota-download-stops-reload-keeps-rollover-restores",
            false,
            true,
            quota::download_over_quota_stops_reload_keeps_rollover_restores,
        ),
        s("vlan-path", false, false, vlan_path),
        s("invalid-reload-keeps-old", false, true, invalid_reload),
        s("valid-reload-swaps", false, true, valid_reload),
        s("reload-flips-under-probing", false, true, reload_flips),
        s("kill9-under-probing", false, true, continuity::kill9),
        s("restart-adopts", false, true, continuity::restart_adopts),
        s(
            "schedule-kill9-boundaries",
            false,
            true,
            schedule::kill9_boundaries,
        ),
        s(
            "upgrade-from-v0.1.0",
            false,
            false,
            upgrade::upgrade_from_v0_1_0,
        ),
        s(
            "upgrade-from-v0.1.0-interrupted",
            false,
            false,
            upgrade::upgrade_from_v0_1_0_interrupted,
        ),
        s(
            "upgrade-from-layout-2-keeps-sampling",
            false,
            false,
            upgrade::upgrade_from_layout_2_keeps_sampling,
        ),
        s(
            "upgrade-from-layout-3",
            false,
            false,
            upgrade::upgrade_from_layout_3,
        ),
        s(
            "upgrade-from-layout-4",
            false,
            false,
            upgrade::upgrade_from_layout_4,
        ),
        // Layouts with bans and rate limits: the same two scenarios each.
        s("upgrade-from-layout-5", false, false, up_bans::<5>),
        s("upgrade-from-layout-6", false, false, up_bans::<6>),
        s("upgrade-from-layout-7", false, false, up_bans::<7>),
        s(
            "upgrade-from-layout-5-without-ban-store-keeps-kernel-bans",
            false,
            false,
            up_no_store::<5>,
        ),
        s(
            "upgrade-from-layout-6-without-ban-store-keeps-kernel-bans",
            false,
            false,
            up_no_store::<6>,
        ),
        s(
            "upgrade-from-layout-7-without-ban-store-keeps-kernel-bans",
            false,
            false,
            up_no_store::<7>,
        ),
        s(
            "upgrade-failed-start-changes-nothing",
            false,
            false,
            upgrade::upgrade_failed_start_changes_nothing,
        ),
        s(
            "newer-layout-is-refused",
            false,
            true,
            upgrade::newer_layout_is_refused,
        ),
        s("bans-drop-and-admit", false, true, bans::drop_and_admit),
        s(
            "bans-bad-input-changes-nothing",
            false,
            false,
            bans::bad_input_changes_nothing,
        ),
        s(
            "bans-expire-with-daemon-killed",
            false,
            true,
            bans::expire_with_daemon_killed,
        ),
        s("bans-survive-restart", false, true, bans::survive_restart),
        s(
            "fail2ban-bans-and-unbans",
            false,
            false,
            fail2ban::bans_and_unbans,
        ),
        s(
            "crowdsec-bouncer-bans-and-unbans",
            false,
            false,
            crowdsec::bouncer_bans_and_unbans,
        ),
        s(
            "feeds-refresh-and-refuse",
            false,
            false,
            feeds::refresh_applies_and_a_bad_feed_keeps_the_old_set,
        ),
        s("counters-monotonic", false, false, counters_monotonic),
        s("metrics-basic-auth", false, false, metrics_basic_auth),
        s("list-file-fifo", false, false, inputs::fifo_list_file),
        s(
            "list-file-huge-line",
            false,
            false,
            inputs::huge_line_list_file,
        ),
        s(
            "list-file-secret-symlink",
            false,
            false,
            inputs::secret_behind_symlink,
        ),
        s(
            "control-socket-regular-file",
            false,
            false,
            inputs::control_socket_regular_file,
        ),
        s(
            "control-socket-silent-clients",
            false,
            false,
            inputs::control_socket_silent_clients,
        ),
        s("detach-removes-filter", false, true, detach),
        s("metrics-idle-flood", false, false, mh::idle_flood),
        s(
            "metrics-wrong-password-burst",
            false,
            false,
            mh::wrong_password_burst,
        ),
        s(
            "metrics-auth-timing-hides-users",
            false,
            false,
            mh::auth_timing_hides_users,
        ),
        s(
            "metrics-auth-scheme-and-routing",
            false,
            false,
            mh::auth_scheme_and_routing,
        ),
        s(
            "metrics-exposition-parses",
            false,
            false,
            mh::exposition_parses,
        ),
        s(
            "metrics-listen-follows-reload",
            false,
            false,
            mh::listen_follows_reload,
        ),
        s("metrics-tls", false, false, mh::tls_listener),
        s(
            "rejected-reload-changes-nothing",
            false,
            true,
            super::apply::rejected_reload_changes_nothing,
        ),
        s(
            "unchanged-is-judged-from-the-kernel",
            false,
            false,
            super::apply::unchanged_is_judged_from_the_kernel,
        ),
        s(
            "non-ethernet-link-is-refused",
            false,
            false,
            super::attach::non_ethernet_link_is_refused,
        ),
        s(
            "explain-names-verdict-and-lines",
            false,
            false,
            super::explain::explain_names_verdict_and_lines,
        ),
        s(
            "cli-errors-once",
            false,
            false,
            super::cli::errors_printed_once,
        ),
        s(
            "cli-check-conventions",
            false,
            false,
            super::cli::check_conventions,
        ),
        s(
            "cli-detach-one-iface",
            false,
            false,
            super::cli::detach_one_iface,
        ),
        s(
            "cli-mode-generic",
            false,
            false,
            super::cli::mode_generic_is_forced,
        ),
        s(
            "cli-wait-iface",
            false,
            false,
            super::cli::wait_for_a_late_iface,
        ),
        s("cli-watchdog", false, false, super::cli::watchdog_pings),
        s(
            "check-and-daemon-warn",
            false,
            false,
            super::warnings::check_and_daemon_warn,
        ),
        s(
            "second-daemon-refused-with-pid",
            false,
            false,
            super::ownership::second_daemon_is_refused_with_the_owners_pid,
        ),
        s(
            "detach-refused-under-live-daemon",
            false,
            false,
            super::ownership::detach_refuses_under_a_live_daemon_and_force_stops_it,
        ),
        s(
            "pins-removed-means-not-enforcing",
            false,
            false,
            super::ownership::pins_removed_under_the_daemon_mean_not_enforcing,
        ),
        s(
            "failed-start-rolls-back",
            false,
            false,
            super::ownership::failed_start_leaves_nothing_and_status_exits_3,
        ),
        s(
            "status-shows-daemon",
            false,
            false,
            super::ownership::status_shows_pid_version_and_last_reload,
        ),
        s(
            "private-pins-not-said-to-stay",
            false,
            false,
            super::ownership::private_pins_are_not_said_to_stay,
        ),
        s(
            "events-name-drops",
            false,
            false,
            super::events::drops_show_up_named,
        ),
        s(
            "events-flood-bounded-by-token-bucket",
            false,
            false,
            super::events::flood_is_bounded_by_the_token_bucket,
        ),
        s(
            "events-off-yields-none",
            false,
            false,
            super::events::off_yields_no_events,
        ),
        s(
            "events-runtime-switch-survives-restart",
            false,
            false,
            super::events::runtime_switch_survives_restart,
        ),
        s(
            "top-puts-flooder-first",
            false,
            false,
            super::events::top_puts_the_flooder_first,
        ),
        s("logs-json", false, false, super::logs::daemon_logs_json),
        s(
            "logs-plain-journald",
            false,
            false,
            super::logs::plain_logs_follow_journal_stream,
        ),
        s(
            "deb-prerm-remove-detaches",
            false,
            false,
            super::package::prerm_remove_detaches_upgrade_keeps,
        ),
        s(
            "monitoring-names-are-exported",
            false,
            false,
            super::monitoring::names_are_exported,
        ),
        s(
            "configmap-data-swap-reloads",
            false,
            false,
            super::kubernetes::configmap_swap_reloads,
        ),
    ]
}

// ---------------------------------------------------------------- helpers

/// Runs the probes in parallel; an error listing every mismatch. Rows whose
/// source has no path here (the VLAN path when it was not built) are left out.
pub fn check(sb: &Sandbox, rows: &[(Probe, Exp)]) -> Result<()> {
    let rows: Vec<(Probe, Exp)> = rows
        .iter()
        .filter(|r| sb.topo.has_source(&r.0.from))
        .copied()
        .collect();
    let rows = &rows[..];
    let probes: Vec<Probe> = rows.iter().map(|r| r.0).collect();
    let got = probe::run_batch(&sb.topo, &probes);
    let bad: Vec<String> = rows
        .iter()
        .zip(&got)
        .filter(|((_, e), o)| !e.matches(o))
        .map(|((p, e), o)| format!("  {p}: expected {e}, got {o}"))
        .collect();
    if !bad.is_empty() {
        bail!(
            "{} of {} probes wrong:\n{}",
            bad.len(),
            rows.len(),
            bad.join("\n")
        );
    }
    Ok(())
}

/// The probes whose source has a path here (see [`check`]).
pub(crate) fn usable(sb: &Sandbox, probes: Vec<Probe>) -> Vec<Probe> {
    probes
        .into_iter()
        .filter(|p| sb.topo.has_source(&p.from))
        .collect()
}

/// Polls `f` every `step` until it returns true; false after `timeout`
/// (scaled by the slowdown, see [`super::patience`]).
pub(crate) fn wait_until(timeout: Duration, step: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + super::patience(timeout);
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(step);
    }
}

pub(crate) fn t(p: Source, port: u16) -> Probe {
    Probe::tcp(p, port)
}
pub(crate) fn u(p: Source, port: u16) -> Probe {
    Probe::udp(p, port)
}

use Exp::{Blocked as B, Open as O, Refused as R};

/// Probes with their outcome under policy A and under policy B.
pub(crate) fn table_ab() -> Vec<(Probe, Exp, Exp)> {
    vec![
        (t(INET4, 8880), O, B),
        (t(INET6, 8880), O, B),
        (t(MGMT4, 8880), O, O),
        (t(INET4, 8889), B, O),
        (t(INET6, 8890), B, O),
        (t(MGMT4, 8889), O, O),
        (t(MGMT6, 8890), O, O),
        (t(VLAN_OUT4, 9005), B, O),
        (t(BLOCKED4, 8880), B, B),
        (t(BLOCKED6, 8889), B, B),
        (t(VPN4, 22), O, O),
        (u(INET4, 7008), B, O),
        (u(MGMT4, 7008), O, B),
        (u(MGMT6, 7008), O, B),
        (t(INET4, CLOSED_TCP_PORT), R, R),
    ]
}

pub(crate) fn rows_a() -> Vec<(Probe, Exp)> {
    table_ab().into_iter().map(|(p, a, _)| (p, a)).collect()
}
pub(crate) fn rows_b() -> Vec<(Probe, Exp)> {
    table_ab().into_iter().map(|(p, _, b)| (p, b)).collect()
}

/// Two fast probes that tell A from B: (INET4→8880, MGMT4 udp 7008) are
/// (open, open) under A and (blocked, blocked) under B.
pub(crate) fn which_policy(sb: &Sandbox) -> Option<char> {
    let got = probe::run_batch(&sb.topo, &[t(INET4, 8880), u(MGMT4, 7008)]);
    match (&got[0], &got[1]) {
        (Outcome::Open, Outcome::Open) => Some('A'),
        (Outcome::Timeout, Outcome::Timeout) => Some('B'),
        _ => None,
    }
}

pub(crate) fn metric(samples: &[http::Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .filter(|s| {
            s.name == name
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .reduce(|a, b| a + b)
}

fn reloads(samples: &[http::Sample], result: &str) -> f64 {
    metric(samples, "portcullis_reloads_total", &[("result", result)]).unwrap_or(0.0)
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1e3)
}

pub(crate) fn stats(v: &mut [Duration]) -> String {
    if v.is_empty() {
        return "none".into();
    }
    v.sort();
    format!(
        "min {} / median {} / max {}",
        ms(v[0]),
        ms(v[v.len() / 2]),
        ms(v[v.len() - 1])
    )
}

/// Runs between scenarios: no daemon (the scenario's are dropped), no
/// filter, no pins, and the forbidden-by-everything probe reaches the host.
pub fn reset(sb: &Sandbox) -> Result<()> {
    let leftover = sb.pins();
    if !leftover.is_empty() {
        let out = sb.cli(&["detach"])?;
        if !out.status.success() {
            eprintln!(
                "  reset: detach failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        sb.remove_pins();
    }
    // Bans are kept across daemon runs on purpose; not across scenarios.
    let _ = fs::remove_dir_all(sb.state_dir());
    // Without a filter a detached XDP link is gone with its last pin; allow the
    // kernel a moment, bounded.
    let ok = wait_until(Duration::from_secs(3), Duration::from_millis(50), || {
        probe::run_batch(&sb.topo, &[t(BLOCKED4, 8889)])[0] == Outcome::Open
    });
    ensure!(
        ok,
        "after reset, 203.0.113.7 -> 8889 still does not get through: a filter is left"
    );
    Ok(())
}

// -------------------------------------------------------------- scenarios

/// No filter: every source reaches the host on every path.
fn harness_baseline(cx: &mut Ctx) -> Result<()> {
    let mut rows = Vec::new();
    let sources = cx.sb.topo.sources();
    for &s in &sources {
        rows.push((t(s, 8889), O));
        rows.push((t(s, CLOSED_TCP_PORT), R));
        rows.push((u(s, 7007), O));
    }
    rows.push((u(INET4, 7999), R));
    rows.push((u(VLAN6, 7999), R));
    let started = Instant::now();
    check(cx.sb, &rows)?;
    let rows = rows
        .iter()
        .filter(|r| cx.sb.topo.has_source(&r.0.from))
        .count();
    if let Some(why) = &cx.sb.topo.vlan_skipped {
        cx.note(format!(
            "{rows} probes from {} sources in {}; {why}",
            sources.len(),
            ms(started.elapsed())
        ));
        return Ok(());
    }
    cx.note(format!(
        "{rows} probes from {} sources in {}; VLAN tags in-band on the mgmt trunk: {}",
        sources.len(),
        ms(started.elapsed()),
        cx.sb.topo.vlan_tags_inband
    ));
    ensure!(
        cx.sb.topo.vlan_tags_inband,
        "tx-vlan offload is still on: XDP would not see tags"
    );
    Ok(())
}

/// The harness sees drops: an nftables netdev-ingress rule on the host side
/// makes exactly the matching probes time out. Skipped without `nft`.
fn harness_nft_drop(cx: &mut Ctx) -> Result<()> {
    if super::cmd::run(
        std::process::Command::new("nft").arg("--version"),
        Duration::from_secs(5),
    )
    .map(|o| !o.status.success())
    .unwrap_or(true)
    {
        cx.skipped = Some("no `nft` on this machine".into());
        return Ok(());
    }
    let ns = cx.sb.host_ns().to_string();
    let vlan_chain = if cx.sb.topo.vlan_skipped.is_none() {
        format!(
            "chain from_vlan {{ type filter hook ingress device {VLAN_IF} priority 0; \
             meta protocol ip ip saddr 198.19.100.2 drop; }}; "
        )
    } else {
        String::new()
    };
    let rules = format!(
        "table netdev pcprobe {{ chain from_internet {{ type filter hook ingress device {HOST_INET_IF} priority 0; \
         ip saddr 203.0.113.7 tcp dport 8880 drop; ip6 saddr 2001:db8:bad::7 drop; }}; \
         {vlan_chain}}}"
    );
    super::cmd::check(
        std::process::Command::new("ip").args(["netns", "exec", &ns, "nft", &rules]),
        Duration::from_secs(10),
    )?;
    let res = check(
        cx.sb,
        &[
            (t(BLOCKED4, 8880), B),
            (t(BLOCKED4, 8889), O),
            (t(INET4, 8880), O),
            (t(BLOCKED6, 8880), B),
            (u(BLOCKED6, 7007), B),
            (t(VLAN_OUT4, 8880), B),
            (t(VLAN4, 8880), O),
        ],
    );
    let del = super::cmd::check(
        std::process::Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "nft",
            "delete table netdev pcprobe",
        ]),
        Duration::from_secs(10),
    );
    res?;
    del?;
    check(cx.sb, &[(t(BLOCKED4, 8880), O), (t(VLAN_OUT4, 8880), O)])
}

/// deploy/examples/keep.toml as it is: 8880 open to all, 8889/8890 only from
/// 10.20/16, SSH failsafe from the VPN, blocklist inline and from list files.
fn keep_policy(cx: &mut Ctx) -> Result<()> {
    let keep = cx.keep_policy.clone();
    let mut d = cx.start(&keep, &[])?;
    check(
        cx.sb,
        &[
            (t(INET4, 8880), O),
            (t(MGMT4, 8880), O),
            (t(INET4, 8889), B),
            (t(INET4, 8890), B),
            (t(VPN4, 8889), B),
            (t(MGMT4, 8889), O),
            (t(MGMT4, 8890), O),
            (t(VPN4, 22), O),
            // keep.toml's "ssh" zone admits only the admin VPN.
            (t(MGMT4, 22), B),
            (t(INET4, 22), B),
            (t(BLOCKED4, 8880), B),
            (t(BLOCKED4, 22), B),
            (t(LISTED4, 8880), B),
            (t(LISTED4B, 8880), B),
            (t(INET4, CLOSED_TCP_PORT), R),
            (u(INET4, 7007), O),
            (u(BLOCKED4, 7007), B),
        ],
    )?;
    let st = cx.sb.status()?;
    ensure!(st.daemon_running, "status: daemon_running is false");
    for dev in [HOST_INET_IF, HOST_MGMT_IF] {
        let mode = st
            .interfaces
            .iter()
            .find(|(n, _)| n == dev)
            .map(|(_, m)| m.as_str());
        ensure!(
            mode == Some("native"),
            "status: {dev} attach mode {mode:?}, expected native"
        );
    }
    let dropped = st.packets(HOST_INET_IF, "global", "blocklist", "drop");
    ensure!(
        dropped >= 5,
        "status: {dropped} blocklist drops on {HOST_INET_IF}, expected ≥ 5"
    );
    let m = cx.sb.metrics()?;
    ensure!(
        metric(
            &m,
            "portcullis_attach_mode",
            &[("interface", HOST_INET_IF), ("mode", "native")]
        ) == Some(1.0),
        "metrics: no portcullis_attach_mode{{interface=\"{HOST_INET_IF}\",mode=\"native\"}} 1"
    );
    ensure!(
        metric(&m, "portcullis_policy_generation", &[]).is_some(),
        "metrics: no portcullis_policy_generation"
    );
    ensure!(
        metric(
            &m,
            "portcullis_packets_total",
            &[("zone", "keep-admin"), ("verdict", "drop")]
        )
        .unwrap_or(0.0)
            >= 3.0,
        "metrics: keep-admin drops not counted"
    );
    cx.note(format!(
        "generation {}, policy hash {}",
        st.generation, st.policy_hash
    ));
    d.terminate()?;
    Ok(())
}

fn blocklist_beats_allowlist(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("blocklist.toml", &policies::policy_blocklist_wins())?;
    let mut d = cx.start(&p, &[])?;
    check(
        cx.sb,
        &[
            // In keep-admin's allow, but blocklisted (inline / by list file).
            (t(BLOCKED4, 8889), B),
            (t(BLOCKED6, 8889), B),
            (t(LISTED4, 8889), B),
            // keep-api allows any: the blocklist still wins.
            (t(BLOCKED4, 8880), B),
            (t(BLOCKED6, 8880), B),
            (t(LISTED4, 8880), B),
            // Not on this policy's blocklist.
            (t(LISTED4B, 8880), O),
            (t(MGMT4, 8889), O),
            (t(MGMT6, 8889), O),
            (t(INET4, 8880), O),
            (t(INET4, 8889), B),
        ],
    )?;
    d.terminate()?;
    Ok(())
}

fn failsafe_beats_blocklist(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("failsafe.toml", &policies::policy_failsafe_wins())?;
    let mut d = cx.start(&p, &[])?;
    check(
        cx.sb,
        &[
            // Blocklisted, but named by the SSH failsafe.
            (t(BLOCKED4, 22), O),
            (t(BLOCKED6, 22), O),
            (t(VPN4, 22), O),
            // The blocklist still applies to their other ports.
            (t(BLOCKED4, 8880), B),
            (t(BLOCKED6, 8880), B),
            (t(VPN4, 8880), B),
            (t(BLOCKED4, CLOSED_TCP_PORT), B),
            // The ssh zone allows nobody else.
            (t(INET4, 22), B),
            (t(INET6, 22), B),
            (t(MGMT4, 22), B),
            (t(INET4, 8880), O),
        ],
    )?;
    d.terminate()?;
    Ok(())
}

fn ipv6_paths(cx: &mut Ctx) -> Result<()> {
    let keep = cx.keep_policy.clone();
    let mut d = cx.start(&keep, &[])?;
    check(
        cx.sb,
        &[
            (t(INET6, 8880), O),
            (t(INET6, 8889), B),
            (t(INET6, 8890), B),
            (t(MGMT6, 8889), O),
            (t(MGMT6, 8890), O),
            (t(MGMT6, 8880), O),
            (t(VPN6, 22), O),
            (t(VPN6, 8889), B),
            (t(BLOCKED6, 8880), B),
            (t(BLOCKED6, 22), B),
            (t(LISTED6, 8880), B),
            (t(INET6, CLOSED_TCP_PORT), R),
            (u(INET6, 7007), O),
            (u(BLOCKED6, 7007), B),
            (u(MGMT6, 7007), O),
        ],
    )?;
    d.terminate()?;
    Ok(())
}

/// Tagged frames (VLAN 100) cross the host's XDP-attached mgmt0.
fn vlan_path(cx: &mut Ctx) -> Result<()> {
    if let Some(why) = &cx.sb.topo.vlan_skipped {
        cx.skipped = Some(why.clone());
        return Ok(());
    }
    let keep = cx.keep_policy.clone();
    let mut d = cx.start(&keep, &[])?;
    let before = cx.sb.status()?;
    check(
        cx.sb,
        &[
            (t(VLAN4, 8889), O),
            (t(VLAN4, 8890), O),
            (t(VLAN6, 8889), O),
            (t(VLAN_OUT4, 8889), B),
            (t(VLAN_OUT4, 8890), B),
            (t(VLAN_OUT6, 8889), B),
            (t(VLAN_OUT4, 8880), O),
            (t(VLAN_OUT6, 8880), O),
            (t(VLAN_OUT4, CLOSED_TCP_PORT), R),
            (u(VLAN_OUT4, 7007), O),
            (u(VLAN6, 7007), O),
        ],
    )?;
    let after = cx.sb.status()?;
    let drops = |s: &Status| s.packets(HOST_MGMT_IF, "keep-admin", "not_allowed", "drop");
    let n = drops(&after) - drops(&before);
    ensure!(
        n >= 3,
        "{HOST_MGMT_IF} counted {n} keep-admin drops for the 3 blocked VLAN probes"
    );
    cx.note(format!(
        "{n} keep-admin drops counted on {HOST_MGMT_IF} for tagged frames"
    ));
    d.terminate()?;
    Ok(())
}

fn invalid_reload(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("invalid.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    check(cx.sb, &rows_a())?;
    let gen0 = cx.sb.status()?.generation;
    let err0 = reloads(&cx.sb.metrics()?, "error");

    Sandbox::write_atomic(&p, &policies::policy_invalid())?;
    let (ok, out) = cx.sb.reload()?;
    ensure!(
        !ok,
        "portcullis reload exited 0 for an invalid policy:\n{out}"
    );
    ensure!(
        out.contains("invalid.toml:") && out.contains("error"),
        "reload output does not locate the errors:\n{out}"
    );
    cx.note(format!(
        "reload output: {}",
        out.lines()
            .find(|l| l.contains("invalid.toml:"))
            .unwrap_or("")
            .trim()
    ));
    check(cx.sb, &rows_a()).context("after the invalid reload")?;
    // SIGHUP with the same invalid file: still A, still running.
    d.signal(Signal::SIGHUP)?;
    thread::sleep(Duration::from_millis(300));
    ensure!(
        d.running(),
        "daemon exited after SIGHUP with an invalid policy:\n{}",
        d.log_tail(30)
    );
    check(cx.sb, &rows_a()).context("after SIGHUP with the invalid policy")?;
    let err1 = reloads(&cx.sb.metrics()?, "error");
    ensure!(
        err1 > err0,
        "portcullis_reloads_total{{result=\"error\"}} did not grow ({err0} -> {err1})"
    );
    let gen1 = cx.sb.status()?.generation;
    ensure!(
        gen1 == gen0,
        "generation changed by an invalid reload ({gen0} -> {gen1})"
    );
    cx.note(format!(
        "reloads_total{{result=\"error\"}} {err0} -> {err1}; generation stays {gen0}"
    ));

    Sandbox::write_atomic(&p, &policies::policy_a())?;
    let (ok, out) = cx.sb.reload()?;
    ensure!(ok, "reload of the restored valid policy failed:\n{out}");
    d.terminate()?;
    Ok(())
}

fn valid_reload(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("swap.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    check(cx.sb, &rows_a())?;

    // 1. `portcullis reload`: enforced when it returns.
    Sandbox::write_atomic(&p, &policies::policy_b())?;
    let started = Instant::now();
    let (ok, out) = cx.sb.reload()?;
    let took = started.elapsed();
    ensure!(ok, "portcullis reload failed:\n{out}");
    check(cx.sb, &rows_b()).context("right after `portcullis reload` returned")?;
    cx.note(format!(
        "`portcullis reload` returned in {} ({})",
        ms(took),
        out.trim()
    ));

    // 2. Editing the policy file in place: picked up by the watcher.
    let started = Instant::now();
    fs::write(&p, policies::policy_a())?;
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        which_policy(cx.sb) == Some('A')
    });
    ensure!(ok, "policy A not enforced within 10 s of editing the file");
    cx.note(format!(
        "file edit → enforced within {}",
        ms(started.elapsed())
    ));
    check(cx.sb, &rows_a()).context("after the file edit")?;

    // 3. SIGHUP: a reload happens (counted or a new generation) …
    thread::sleep(Duration::from_millis(500)); // let watcher events settle
    let m0 = reloads(&cx.sb.metrics()?, "ok");
    let g0 = cx.sb.status()?.generation;
    d.signal(Signal::SIGHUP)?;
    let started = Instant::now();
    let ok = wait_until(Duration::from_secs(5), Duration::from_millis(20), || {
        let m = cx.sb.metrics().map(|m| reloads(&m, "ok")).unwrap_or(m0);
        let g = cx.sb.status().map(|s| s.generation).unwrap_or(g0);
        m > m0 || g > g0
    });
    ensure!(
        ok,
        "SIGHUP: no reload counted and no new generation within 5 s"
    );
    cx.note(format!(
        "SIGHUP → reload counted within {}",
        ms(started.elapsed())
    ));
    // … and applies the file's current content.
    Sandbox::write_atomic(&p, &policies::policy_b())?;
    d.signal(Signal::SIGHUP)?;
    let ok = wait_until(Duration::from_secs(10), Duration::from_millis(20), || {
        which_policy(cx.sb) == Some('B')
    });
    ensure!(ok, "policy B not enforced within 10 s of SIGHUP");
    check(cx.sb, &rows_b()).context("after SIGHUP")?;
    d.terminate()?;
    Ok(())
}

/// `flips` reloads alternating A and B, with probes running all along: every
/// probe result must be what A or what B gives.
fn reload_flips(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("flip.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    check(cx.sb, &rows_a())?;
    let table = table_ab();
    let probes = usable(cx.sb, table.iter().map(|r| r.0).collect());
    let lp = ProbeLoop::start(&cx.sb.topo, &probes, Duration::from_millis(2));
    let mut took = Vec::new();
    let started = Instant::now();
    let mut failure = None;
    for i in 0..cx.flips {
        let text = if i % 2 == 0 {
            policies::policy_b()
        } else {
            policies::policy_a()
        };
        Sandbox::write_atomic(&p, &text)?;
        let t0 = Instant::now();
        let (ok, out) = cx.sb.reload()?;
        took.push(t0.elapsed());
        if !ok {
            failure = Some(format!("reload {i} failed: {out}"));
            break;
        }
    }
    let total = started.elapsed();
    thread::sleep(Duration::from_millis(350));
    let samples = lp.finish();
    if let Some(f) = failure {
        bail!(f);
    }
    let expect: HashMap<Probe, (Exp, Exp)> = table.iter().map(|(p, a, b)| (*p, (*a, *b))).collect();
    let (mut only_a, mut only_b, mut bad) = (0usize, 0usize, Vec::new());
    for s in &samples {
        let (a, b) = expect[&s.probe];
        match (a.matches(&s.outcome), b.matches(&s.outcome)) {
            (true, true) => {}
            (true, false) => only_a += 1,
            (false, true) => only_b += 1,
            (false, false) => bad.push(format!(
                "  at {}: {}: {} (A: {a}, B: {b})",
                ms(s.at),
                s.probe,
                s.outcome
            )),
        }
    }
    cx.note(format!(
        "{} reloads in {} ({}); {} probe results during them: {} only-A, {} only-B, {} consistent with neither",
        took.len(),
        ms(total),
        stats(&mut took),
        samples.len(),
        only_a,
        only_b,
        bad.len()
    ));
    ensure!(
        bad.is_empty(),
        "probe results consistent with neither policy:\n{}",
        bad.join("\n")
    );
    ensure!(
        only_a > 0 && only_b > 0,
        "the probes never saw both policies (only-A {only_a}, only-B {only_b})"
    );
    let last = if cx.flips % 2 == 1 {
        rows_b()
    } else {
        rows_a()
    };
    check(cx.sb, &last).context("after the last reload")?;
    let ok_count = reloads(&cx.sb.metrics()?, "ok");
    ensure!(
        ok_count >= cx.flips as f64,
        "reloads_total{{result=\"ok\"}} = {ok_count} after {} reloads",
        cx.flips
    );
    d.terminate()?;
    Ok(())
}

fn traffic(sb: &Sandbox) {
    let probes = usable(sb, table_ab().iter().map(|r| r.0).collect());
    let _ = probe::run_batch(&sb.topo, &probes);
}

fn counters_monotonic(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("counters.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    let mut snaps: Vec<(&str, Status)> = Vec::new();
    let mut msnaps: Vec<(&str, Vec<http::Sample>)> = Vec::new();
    traffic(cx.sb);
    snaps.push(("start", cx.sb.status()?));
    msnaps.push(("start", cx.sb.metrics()?));
    // Status and metrics agree when no traffic flows in between.
    let (st, m) = (&snaps[0].1, &msnaps[0].1);
    for c in &st.counters {
        let v = metric(
            m,
            "portcullis_packets_total",
            &[
                ("interface", &c.interface),
                ("zone", &c.zone),
                ("reason", &c.reason),
                ("verdict", &c.verdict),
            ],
        );
        ensure!(
            v == Some(c.packets as f64),
            "status counter {} = {} but metrics say {v:?}",
            c.key(),
            c.packets
        );
    }
    for (label, text) in [
        ("reload B", policies::policy_b()),
        ("reload A", policies::policy_a()),
    ] {
        Sandbox::write_atomic(&p, &text)?;
        let (ok, out) = cx.sb.reload()?;
        ensure!(ok, "{label}: {out}");
        traffic(cx.sb);
        snaps.push((label, cx.sb.status()?));
        msnaps.push((label, cx.sb.metrics()?));
    }
    d.terminate()?;
    let down = cx.sb.status()?;
    ensure!(
        !down.daemon_running,
        "status says the daemon runs after SIGTERM"
    );
    snaps.push(("daemon down", down));
    let mut d2 = cx.start(&p, &[])?;
    traffic(cx.sb);
    snaps.push(("restarted", cx.sb.status()?));
    msnaps.push(("restarted", cx.sb.metrics()?));

    for w in snaps.windows(2) {
        let ((la, a), (lb, b)) = (&w[0], &w[1]);
        ensure!(
            b.generation >= a.generation,
            "generation went back: {} ({la}) -> {} ({lb})",
            a.generation,
            b.generation
        );
        for c in &a.counters {
            let now = b.counters.iter().find(|x| x.key() == c.key());
            let ok = now.is_some_and(|n| n.packets >= c.packets && n.bytes >= c.bytes);
            ensure!(
                ok,
                "counter {} went back from {la} to {lb}: {}/{} -> {:?}",
                c.key(),
                c.packets,
                c.bytes,
                now.map(|n| (n.packets, n.bytes))
            );
        }
    }
    for w in msnaps.windows(2) {
        let ((la, a), (lb, b)) = (&w[0], &w[1]);
        for s in a
            .iter()
            .filter(|s| s.name == "portcullis_packets_total" || s.name == "portcullis_bytes_total")
        {
            let now = b.iter().find(|x| x.key() == s.key()).map(|x| x.value);
            ensure!(
                now.is_some_and(|n| n >= s.value),
                "metric {} went back from {la} to {lb}: {} -> {now:?}",
                s.key(),
                s.value
            );
        }
    }
    let sum = |s: &Status| s.counters.iter().map(|c| c.packets).sum::<u64>();
    let (first, last) = (sum(&snaps[0].1), sum(&snaps[snaps.len() - 1].1));
    ensure!(
        last > first,
        "no packets counted across the run ({first} -> {last})"
    );
    let r1 = reloads(&msnaps[1].1, "ok");
    let r0 = reloads(&msnaps[0].1, "ok");
    ensure!(
        r1 > r0,
        "reloads_total{{result=\"ok\"}} did not grow with a reload ({r0} -> {r1})"
    );
    cx.note(format!(
        "{} counters; packets {first} -> {last} over 2 reloads and a restart; generations {}",
        snaps[snaps.len() - 1].1.counters.len(),
        snaps
            .iter()
            .map(|(_, s)| s.generation.to_string())
            .collect::<Vec<_>>()
            .join(" → ")
    ));
    d2.terminate()?;
    Ok(())
}

fn metrics_basic_auth(cx: &mut Ctx) -> Result<()> {
    let password = format!("{:016x}", rand::random::<u64>());
    let hash = policies::argon2_hash(&password)?;
    let listen = "127.0.0.1:9470";
    let p = cx.policy("auth.toml", &policies::policy_a_auth(listen, "prom", &hash))?;
    let mut d = cx.start(&p, &[])?;
    let sb = cx.sb;
    let (c, _) = sb.metrics_raw(listen, None)?;
    ensure!(c == 401, "no credentials: HTTP {c}, expected 401");
    let (c, _) = sb.metrics_raw(listen, Some(("prom", "wrong-password")))?;
    ensure!(c == 401, "wrong password: HTTP {c}, expected 401");
    let (c, _) = sb.metrics_raw(listen, Some(("someone", &password)))?;
    ensure!(c == 401, "wrong user: HTTP {c}, expected 401");
    let (c, body) = sb.metrics_raw(listen, Some(("prom", &password)))?;
    ensure!(c == 200, "right credentials: HTTP {c}, expected 200");
    ensure!(
        body.contains("portcullis_policy_generation"),
        "200 but no portcullis metrics:\n{body}"
    );
    d.terminate()?;
    Ok(())
}

fn detach(cx: &mut Ctx) -> Result<()> {
    let p = cx.policy("detach.toml", &policies::policy_a())?;
    let mut d = cx.start(&p, &[])?;
    let forbidden = [(t(INET4, 8889), B), (t(BLOCKED4, 8880), B)];
    check(cx.sb, &forbidden)?;
    let st = d.terminate()?;
    ensure!(st.success(), "daemon exit status after SIGTERM: {st}");
    check(cx.sb, &forbidden).context("after SIGTERM the filter must stay")?;
    ensure!(!cx.sb.pins().is_empty(), "no pins after SIGTERM");
    cx.sb.detach()?;
    // `detach` removes the pins; the kernel lets the XDP link go a moment
    // later (the bpffs inode is freed after an RCU grace period, the link
    // released from a workqueue), so allow that, bounded, and report it.
    let started = Instant::now();
    let gone = wait_until(Duration::from_secs(2), Duration::from_millis(10), || {
        probe::run_batch(&cx.sb.topo, &[t(INET4, 8889), t(BLOCKED4, 8880)])
            .iter()
            .all(|o| *o == Outcome::Open)
    });
    let lag = started.elapsed();
    ensure!(
        gone,
        "the filter still drops {} after `portcullis detach`",
        ms(lag)
    );
    cx.note(format!(
        "filter gone {} after `portcullis detach` returned",
        ms(lag)
    ));
    check(cx.sb, &[(t(INET4, 8889), O), (t(BLOCKED4, 8880), O)]).context("after detach")?;
    let left = cx.sb.pins();
    ensure!(left.is_empty(), "pins left after detach: {left:?}");

    // --detach-on-exit: SIGTERM takes the filter away.
    let mut d = cx.start(&p, &["--detach-on-exit"])?;
    check(cx.sb, &forbidden)?;
    d.terminate()?;
    // As after `detach`: the links go a moment after the exit closed the
    // last handle (two per interface now: XDP and egress).
    let started = Instant::now();
    let gone = wait_until(
        super::patience(Duration::from_secs(2)),
        Duration::from_millis(10),
        || {
            probe::run_batch(&cx.sb.topo, &[t(INET4, 8889), t(BLOCKED4, 8880)])
                .iter()
                .all(|o| *o == Outcome::Open)
        },
    );
    ensure!(
        gone,
        "the filter still drops {} after the --detach-on-exit daemon exited",
        ms(started.elapsed())
    );
    cx.note(format!(
        "--detach-on-exit: filter gone {} after exit",
        ms(started.elapsed())
    ));
    check(cx.sb, &[(t(INET4, 8889), O), (t(BLOCKED4, 8880), O)])
        .context("after SIGTERM with --detach-on-exit")?;
    let left = cx.sb.pins();
    cx.note(format!(
        "--detach-on-exit: {} pins left after exit",
        left.len()
    ));
    Ok(())
}

/// Runs `scenarios` with a reset after each; prints one line each (and its
/// notes); returns (passed, failed, skipped).
pub fn run_all(
    sb: &Sandbox,
    scenarios: &[Scenario],
    flips: usize,
    keep_policy: PathBuf,
) -> (usize, usize, usize) {
    let (mut passed, mut failed, mut skipped) = (0, 0, 0);
    for sc in scenarios {
        let mut cx = Ctx {
            sb,
            notes: Vec::new(),
            flips,
            keep_policy: keep_policy.clone(),
            policy_dir: sb.dir.join("policies").join(sc.name),
            skipped: None,
        };
        let started = Instant::now();
        let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (sc.run)(&mut cx)))
            .unwrap_or_else(|p| {
                let msg = p
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                Err(anyhow!("panicked: {msg}"))
            });
        let res = res.and_then(|()| reset(sb).context("cleaning up after the scenario"));
        let res = match res {
            Ok(()) => Ok(()),
            Err(e) => {
                let _ = reset(sb);
                Err(e)
            }
        };
        let secs = started.elapsed().as_secs_f64();
        match &res {
            Ok(()) if cx.skipped.is_some() => {
                skipped += 1;
                println!(
                    "e2e: {} ... skipped: {}",
                    sc.name,
                    cx.skipped.as_deref().unwrap_or_default()
                );
            }
            Ok(()) => {
                passed += 1;
                println!("e2e: {} ... ok ({secs:.1} s)", sc.name);
            }
            Err(e) => {
                failed += 1;
                println!(
                    "e2e: {} ... FAILED ({secs:.1} s)\n{}",
                    sc.name,
                    indent(&format!("{e:#}"))
                );
            }
        }
        for n in &cx.notes {
            println!("    {n}");
        }
    }
    (passed, failed, skipped)
}

fn indent(s: &str) -> String {
    s.lines()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
