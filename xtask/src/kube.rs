//! deploy/kubernetes checked offline: `kubernetes-validate --strict` (the
//! schemas it bundles, for the oldest Kubernetes the manifests need, 1.25:
//! DaemonSet `maxSurge`, and its newest), the ConfigMap's policy through
//! `portcullis check --strict`, and the DaemonSet's args through the binary's
//! own parser. The Containerfile is not built here (no container engine).
use std::{
    io::Write,
    path::Path,
    process::{Command, Stdio},
    time::Instant,
};

use anyhow::{ensure, Context, Result};

use crate::{bootstrap, exec};

const MANIFESTS: [&str; 3] = ["namespace.yaml", "configmap.yaml", "daemonset.yaml"];
const KUBERNETES_VERSIONS: [&str; 2] = ["1.25", "1.37"];

/// One YAML value, read with PyYAML (kubernetes-validate's own dependency).
fn yaml_value(python: &Path, file: &Path, kind: &str, expr: &str) -> Result<String> {
    let script = format!(
        "import json, sys, yaml\n\
         docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d and d.get('kind') == '{kind}']\n\
         assert len(docs) == 1, 'want one {kind}'\n\
         d = docs[0]\n\
         v = {expr}\n\
         print(v if isinstance(v, str) else json.dumps(v), end='')\n"
    );
    let out = Command::new(python)
        .args(["-c", &script])
        .arg(file)
        .output()
        .context("running the venv's python")?;
    ensure!(
        out.status.success(),
        "reading {kind} from {}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

pub fn check(root: &Path, portcullis: &Path) -> Result<()> {
    let started = Instant::now();
    let dir = root.join("deploy/kubernetes");
    let venv = bootstrap::pytools(root);
    for version in KUBERNETES_VERSIONS {
        exec(
            Command::new(venv.join("bin/kubernetes-validate"))
                .args(["--strict", "--quiet", "-k", version])
                .args(MANIFESTS.iter().map(|m| dir.join(m))),
        )?;
    }
    let python = venv.join("bin/python");

    let policy = yaml_value(
        &python,
        &dir.join("configmap.yaml"),
        "ConfigMap",
        "d['data']['policy.toml']",
    )?;
    let mut child = Command::new(portcullis)
        .args(["check", "--strict", "-q", "-"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(policy.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "the ConfigMap's policy.toml fails `portcullis check --strict`:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let args = yaml_value(
        &python,
        &dir.join("daemonset.yaml"),
        "DaemonSet",
        "d['spec']['template']['spec']['containers'][0]['args']",
    )?;
    let args: Vec<String> = args
        .trim_matches(|c| c == '[' || c == ']')
        .split(", ")
        .map(|a| a.trim_matches('"').to_string())
        .collect();
    // clap rejects an unknown option before it acts on --help.
    let out = Command::new(portcullis)
        .args(&args)
        .arg("--help")
        .output()?;
    ensure!(
        out.status.success(),
        "the DaemonSet's args {args:?} do not parse: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "kubernetes: manifests valid (--strict, Kubernetes {}), the ConfigMap's policy passes check --strict, the DaemonSet's args parse ({:.1} s)",
        KUBERNETES_VERSIONS.join(" and "),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
