//! Attaching only where the parser's assumptions hold: a device whose frames
//! have no Ethernet header (here a TUN device, ARPHRD_NONE) is refused with
//! its link type named, instead of being filtered as if its IP header were
//! Ethernet (which would judge everything `non_ip`: a silent fail-open).
use std::time::Duration;

use anyhow::{ensure, Result};

use super::{cleanup, cmd, policies, scenarios::Ctx};

const TUN: &str = "pc-tun0";

pub fn non_ethernet_link_is_refused(cx: &mut Ctx) -> Result<()> {
    let ns = cx.sb.host_ns().to_string();
    cmd::ip(&["-n", &ns, "tuntap", "add", "dev", TUN, "mode", "tun"])?;
    let undo_ns = ns.clone();
    let _tun = cleanup::register(format!("delete {TUN} in {ns}"), move || {
        let _ = cmd::ip(&["-n", &undo_ns, "link", "del", TUN]);
    });
    let p = cx.policy("tun.toml", &policies::policy_a())?;
    let (policy, pins, control) = (
        p.display().to_string(),
        cx.sb.pin_root.display().to_string(),
        cx.sb.control.display().to_string(),
    );
    let out = cmd::run(
        &mut cx.sb.portcullis(&[
            "run",
            "--policy",
            &policy,
            "--iface",
            TUN,
            "--pin-root",
            &pins,
            "--control-socket",
            &control,
        ]),
        super::patience(Duration::from_secs(30)),
    )?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success(),
        "portcullis attached to a TUN device (no Ethernet header):\n{stderr}"
    );
    ensure!(
        stderr.contains("link type 65534"),
        "the refusal does not name the link type:\n{stderr}"
    );
    cx.note(format!(
        "refused: {}",
        stderr
            .lines()
            .find(|l| l.contains("link type"))
            .unwrap_or("")
            .trim()
    ));
    Ok(())
}
