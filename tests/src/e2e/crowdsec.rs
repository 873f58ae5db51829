//! CrowdSec's real LAPI (Debian's package, unpacked by the bootstrap under
//! target/crowdsec and run with a private config in the daemon's namespace)
//! driving the daemon in bouncer mode: `cscli decisions add` → dropped at
//! XDP, `cscli decisions delete` → admitted; a wrong key and a LAPI that is
//! down keep the bans in force and say so; a decision deleted while the
//! daemon was down is lifted at its next start (full resync).

use std::{
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{ensure, Context, Result};
use serde_json::Value;

use super::{
    bans::{self, POLICY},
    cleanup, cmd,
    scenarios::{check, metric, ms, t, wait_until, Ctx, Exp},
    topology::*,
};

use Exp::{Blocked as B, Open as O};

/// The unpacked package (xtask/src/bootstrap.rs `crowdsec_root`).
const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../target/crowdsec/root");
/// The LAPI's port, on the daemon namespace's loopback.
const PORT: u16 = 18081;

struct Lapi {
    dir: PathBuf,
    ns: String,
}

impl Lapi {
    fn config(&self) -> PathBuf {
        self.dir.join("config.yaml")
    }

    /// A private configuration: sqlite under `dir`, no central API, no
    /// metrics port, an empty hub.
    fn configure(dir: &Path, ns: &str) -> Result<Lapi> {
        for sub in ["data", "hub", "log", "cfg"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        fs::write(dir.join("hub/.index.json"), "{}")?;
        fs::write(dir.join("cfg/simulation.yaml"), "simulation: off\n")?;
        fs::write(
            dir.join("cfg/profiles.yaml"),
            "name: default_ip_remediation\nfilters:\n - Alert.Remediation == true && Alert.GetScope() == \"Ip\"\n\
             decisions:\n - type: ban\n   duration: 4h\non_success: break\n",
        )?;
        let d = dir.display();
        fs::write(
            dir.join("config.yaml"),
            format!(
                "common:\n  daemonize: false\n  log_media: file\n  log_level: info\n  log_dir: {d}/log/\n  working_dir: {d}\n\
                 config_paths:\n  config_dir: {d}/cfg/\n  data_dir: {d}/data/\n  simulation_path: {d}/cfg/simulation.yaml\n  \
                 hub_dir: {d}/hub/\n  index_path: {d}/hub/.index.json\n  notification_dir: {d}/cfg/notifications/\n  \
                 plugin_dir: {ROOT}/usr/lib/crowdsec/plugins/\n\
                 crowdsec_service:\n  acquisition_path: {d}/cfg/acquis.yaml\n\
                 cscli:\n  output: human\n\
                 db_config:\n  type: sqlite\n  db_path: {d}/data/crowdsec.db\n\
                 api:\n  client:\n    credentials_path: {d}/cfg/local_api_credentials.yaml\n  server:\n    \
                 listen_uri: 127.0.0.1:{PORT}\n    profiles_path: {d}/cfg/profiles.yaml\n    trusted_ips: [127.0.0.1]\n\
                 prometheus:\n  enabled: false\n"
            ),
        )?;
        let lapi = Lapi {
            dir: dir.to_path_buf(),
            ns: ns.to_string(),
        };
        let creds = dir.join("cfg/local_api_credentials.yaml");
        lapi.cscli(&[
            "machines",
            "add",
            "local",
            "--auto",
            "--force",
            "--file",
            &creds.display().to_string(),
        ])?;
        Ok(lapi)
    }

    /// `cscli ARGS…` in the namespace; an error unless it succeeds.
    fn cscli(&self, args: &[&str]) -> Result<String> {
        let out = cmd::run(
            Command::new("ip")
                .args(["netns", "exec", &self.ns])
                .arg(format!("{ROOT}/usr/bin/cscli"))
                .arg("-c")
                .arg(self.config())
                .args(args),
            super::patience(Duration::from_secs(30)),
        )?;
        ensure!(
            out.status.success(),
            "cscli {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts the LAPI (`-no-cs`: no log acquisition) and waits until
    /// `cscli decisions list` (through the API) gets an answer.
    fn start(&self) -> Result<(Child, cleanup::Guard)> {
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .arg(format!("{ROOT}/usr/bin/crowdsec"))
            .arg("-c")
            .arg(self.config())
            .arg("-no-cs")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting crowdsec (Debian's package unpacked under target/crowdsec by `cargo xtask bootstrap`)")?;
        let pid = child.id() as i32;
        let guard = cleanup::register("stop the CrowdSec LAPI", move || {
            let _ =
                nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL);
        });
        let up = wait_until(Duration::from_secs(30), Duration::from_millis(250), || {
            self.cscli(&["decisions", "list"]).is_ok()
        });
        ensure!(up, "the LAPI did not come up:\n{}", self.log());
        Ok((child, guard))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.join("log/crowdsec_api.log"))
            .or_else(|_| fs::read_to_string(self.dir.join("log/crowdsec.log")))
            .unwrap_or_default()
    }
}

fn stop(mut child: Child, guard: cleanup::Guard) {
    let _ = child.kill();
    let _ = cmd::wait_bounded(&mut child, Duration::from_secs(10));
    guard.disarm();
}

const TAG: &str = "crowdsec:cscli";

fn banned(cx: &Ctx) -> Result<Vec<String>> {
    bans::tagged(cx, TAG)
}

fn crowdsec_status(cx: &Ctx) -> Result<Value> {
    let out = cx.sb.cli(&["status", "--output", "json"])?;
    let v: Value = serde_json::from_slice(&out.stdout).context("status JSON")?;
    Ok(v["daemon"]["crowdsec"].clone())
}

fn metric_now(cx: &Ctx, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    cx.sb.metrics().ok().and_then(|s| metric(&s, name, labels))
}

pub(crate) fn bouncer_bans_and_unbans(cx: &mut Ctx) -> Result<()> {
    let lapi = Lapi::configure(&cx.sb.dir.join("crowdsec"), cx.sb.host_ns())?;
    let key = lapi.cscli(&["bouncers", "add", "portcullis-e2e", "-o", "raw"])?;
    let key = key.trim().to_string();
    let (lapi_child, lapi_guard) = lapi.start()?;

    let policy = format!(
        "{POLICY}\n[crowdsec]\nlapi_url = \"http://127.0.0.1:{PORT}\"\napi_key_file = \"crowdsec.key\"\npoll = \"1s\"\n"
    );
    let p = cx.policy("crowdsec.toml", &policy)?;
    let key_file = p.parent().context("policy dir")?.join("crowdsec.key");
    fs::write(&key_file, format!("{key}\n"))?;
    fs::set_permissions(&key_file, fs::Permissions::from_mode(0o600))?;
    let out = cx.sb.cli(&["check", p.to_str().context("path")?])?;
    ensure!(
        out.status.success(),
        "check: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut d = cx.start(&p, &[])?;
    let up = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        crowdsec_status(cx).is_ok_and(|c| c["up"] == true)
    });
    ensure!(up, "bouncer not up: {}", crowdsec_status(cx)?);
    check(cx.sb, &[(t(INET4, 8880), O), (t(INET6, 8880), O)])?;

    // cscli decisions → bans with their duration, the failsafe port still open.
    let added = Instant::now();
    lapi.cscli(&[
        "decisions",
        "add",
        "--ip",
        "198.18.0.2",
        "--duration",
        "1h",
        "--reason",
        "e2e scan",
    ])?;
    let got = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        banned(cx).is_ok_and(|b| b == ["198.18.0.2/32"])
    });
    ensure!(got, "no ban for the decision: {:?}", banned(cx)?);
    let took = added.elapsed();
    check(
        cx.sb,
        &[(t(INET4, 8880), B), (t(INET4, 22), O), (t(MGMT4, 8880), O)],
    )?;
    cx.note(format!(
        "crowdsec: `cscli decisions add` → dropped at XDP in {} (poll 1 s)",
        ms(took)
    ));
    let list = bans::listed_with(cx, &["--tag", TAG])?;
    let left = list[0]["remaining_s"].as_u64().unwrap_or(0);
    ensure!(
        (3500..=3600).contains(&left),
        "ban remaining {left} s, decision 1h: {list:?}"
    );
    ensure!(list[0]["reason"] == "e2e scan", "reason: {list:?}");

    lapi.cscli(&[
        "decisions",
        "add",
        "--range",
        "2001:db8:1::/64",
        "--duration",
        "30m",
    ])?;
    // A scope the NIC cannot enforce: the stream is asked for ip and range
    // only (what another scope that still arrives does is a unit test:
    // decisions_the_datapath_cannot_enforce_are_skipped_with_a_reason).
    lapi.cscli(&[
        "decisions",
        "add",
        "--scope",
        "Country",
        "--value",
        "FR",
        "--duration",
        "1h",
    ])?;
    let got = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        banned(cx).is_ok_and(|b| b.len() == 2)
    });
    ensure!(got, "no range ban: {:?}", banned(cx)?);
    check(cx.sb, &[(t(INET6, 8880), B), (t(INET6, 22), O)])?;
    std::thread::sleep(Duration::from_millis(1500));
    ensure!(
        banned(cx)?.len() == 2,
        "the Country decision became a ban: {:?}",
        banned(cx)?
    );
    ensure!(
        crowdsec_status(cx)?["up"] == true,
        "a Country decision upset the bouncer"
    );

    // Deleted in CrowdSec → admitted.
    lapi.cscli(&["decisions", "delete", "--ip", "198.18.0.2"])?;
    let lifted = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        banned(cx).is_ok_and(|b| b == ["2001:db8:1::/64"])
    });
    ensure!(
        lifted,
        "ban kept after the decision was deleted: {:?}",
        banned(cx)?
    );
    check(cx.sb, &[(t(INET4, 8880), O), (t(INET6, 8880), B)])?;
    // An operator's own ban of the same address is not CrowdSec's to lift.
    bans::ban_ok(cx, &["add", "198.18.0.2", "--tag", "ops"])?;
    lapi.cscli(&["decisions", "add", "--ip", "198.18.0.2", "--duration", "1h"])?;
    let held = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        metric_now(
            cx,
            "portcullis_crowdsec_decisions_total",
            &[("result", "skipped_held")],
        )
        .is_some_and(|n| n >= 1.0)
    });
    ensure!(
        held,
        "a decision on an operator-banned address was not counted as held"
    );
    lapi.cscli(&["decisions", "delete", "--ip", "198.18.0.2"])?;
    std::thread::sleep(Duration::from_secs(3));
    ensure!(
        bans::tagged(cx, "ops")? == ["198.18.0.2/32"],
        "CrowdSec's delete lifted the operator's ban"
    );
    check(cx.sb, &[(t(INET4, 8880), B)])?;
    bans::ban_ok(cx, &["del", "198.18.0.2"])?;
    check(cx.sb, &[(t(INET4, 8880), O)])?;

    // A wrong key: refused, said so, the bans in force stay.
    fs::write(&key_file, "not-the-key\n")?;
    let down = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        crowdsec_status(cx).is_ok_and(|c| c["up"] == false)
    });
    ensure!(down, "a wrong key went unnoticed: {}", crowdsec_status(cx)?);
    let text = String::from_utf8_lossy(&cx.sb.cli(&["status"])?.stdout).into_owned();
    ensure!(
        text.lines()
            .any(|l| l.starts_with("crowdsec    DOWN") && l.contains("403")),
        "status has no crowdsec DOWN line:\n{text}"
    );
    ensure!(
        metric_now(
            cx,
            "portcullis_crowdsec_pulls_total",
            &[("result", "unauthorized")]
        )
        .is_some_and(|n| n >= 1.0),
        "no unauthorized pull counted"
    );
    ensure!(
        metric_now(cx, "portcullis_crowdsec_up", &[]) == Some(0.0),
        "crowdsec_up not 0"
    );
    check(cx.sb, &[(t(INET6, 8880), B)])?;
    fs::write(&key_file, format!("{key}\n"))?;
    let up = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        crowdsec_status(cx).is_ok_and(|c| c["up"] == true)
    });
    ensure!(
        up,
        "the right key again, still down: {}",
        crowdsec_status(cx)?
    );

    // The LAPI down: bans stay; back: pulling again.
    stop(lapi_child, lapi_guard);
    let down = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        metric_now(
            cx,
            "portcullis_crowdsec_pulls_total",
            &[("result", "unreachable")],
        )
        .is_some_and(|n| n >= 1.0)
    });
    ensure!(down, "LAPI down went unnoticed: {}", crowdsec_status(cx)?);
    check(cx.sb, &[(t(INET6, 8880), B)])?;
    ensure!(
        banned(cx)? == ["2001:db8:1::/64"],
        "bans changed while the LAPI was down"
    );
    let (lapi_child, lapi_guard) = lapi.start()?;
    let up = wait_until(Duration::from_secs(10), Duration::from_millis(100), || {
        crowdsec_status(cx).is_ok_and(|c| c["up"] == true)
    });
    ensure!(
        up,
        "LAPI back, bouncer still down: {}",
        crowdsec_status(cx)?
    );

    // Deleted while the daemon was stopped: lifted at its next start (the
    // ban itself was restored from the state directory first).
    d.terminate()?;
    lapi.cscli(&["decisions", "delete", "--range", "2001:db8:1::/64"])?;
    lapi.cscli(&["decisions", "add", "--ip", "198.18.0.2", "--duration", "1h"])?;
    let mut d = cx.start(&p, &[])?;
    let synced = wait_until(Duration::from_secs(15), Duration::from_millis(100), || {
        banned(cx).is_ok_and(|b| b == ["198.18.0.2/32"])
    });
    ensure!(
        synced,
        "after restart, bans {:?} (want the new decision only)",
        banned(cx)?
    );
    check(cx.sb, &[(t(INET4, 8880), B), (t(INET6, 8880), O)])?;
    d.terminate()?;
    stop(lapi_child, lapi_guard);
    Ok(())
}
