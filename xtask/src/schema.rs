//! docs/policy.schema.json against the parser, with a real validator
//! (Python's jsonschema, Draft 7, from the target/pytools venv; TOML read with
//! tomllib): every example policy, the Kubernetes ConfigMap's policy and the
//! corpus `schema-corpus` writes (every verdict fixture's policy, the e2e
//! policies, random generated ones) must validate; each policy of the corpus'
//! `invalid/` must be refused by `portcullis check` and by the schema.
use std::{fs, path::Path, process::Command, time::Instant};

use anyhow::{ensure, Context, Result};

use crate::{bootstrap, exec};

const VALIDATE: &str = r#"
import json, sys, tomllib, yaml
from jsonschema import Draft7Validator
schema = json.load(open(sys.argv[1]))
Draft7Validator.check_schema(schema)
v = Draft7Validator(schema)
mode, bad, counts = None, [], {"valid": 0, "invalid": 0}
for arg in sys.argv[2:]:
    if arg in ("--valid", "--invalid", "--configmap"):
        mode = arg[2:]
        continue
    if mode == "configmap":
        docs = [d for d in yaml.safe_load_all(open(arg)) if d and d.get("kind") == "ConfigMap"]
        doc, name, mode = tomllib.loads(docs[0]["data"]["policy.toml"]), arg + ": policy.toml", "valid"
    else:
        doc, name = tomllib.load(open(arg, "rb")), arg
    errors = sorted(v.iter_errors(doc), key=lambda e: list(e.path))
    counts[mode] += 1
    if mode == "valid" and errors:
        bad.append(f"{name}: refused by the schema: {errors[0].message} at {list(errors[0].path)}")
    if mode == "invalid" and not errors:
        bad.append(f"{name}: the parser refuses it, the schema accepts it")
for b in bad:
    print(b)
print(f"schema: {counts['valid']} valid policies accepted, {counts['invalid']} refused ones refused" if not bad else f"schema: {len(bad)} mismatches")
sys.exit(1 if bad else 0)
"#;

pub fn check(root: &Path, bin: &Path) -> Result<()> {
    let started = Instant::now();
    let corpus = root.join("target/schema-corpus");
    exec(Command::new(bin.join("schema-corpus")).arg(&corpus))?;
    let list = |dir: &Path| -> Result<Vec<std::path::PathBuf>> {
        let mut v: Vec<_> = fs::read_dir(dir)?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "toml"))
            .collect();
        v.sort();
        Ok(v)
    };
    let invalid = list(&corpus.join("invalid"))?;
    for p in &invalid {
        let out = Command::new(bin.join("portcullis"))
            .args(["check", "-q"])
            .arg(p)
            .output()?;
        ensure!(
            out.status.code() == Some(1),
            "{}: `portcullis check` accepts it (exit {}): the corpus's invalid/ must hold policies the parser refuses",
            p.display(),
            out.status
        );
    }
    let mut cmd = Command::new(bootstrap::pytools(root).join("bin/python"));
    cmd.args(["-c", VALIDATE])
        .arg(root.join("docs/policy.schema.json"))
        .arg("--valid")
        .args(list(&root.join("deploy/examples"))?)
        .args(list(&corpus.join("valid"))?)
        .arg("--configmap")
        .arg(root.join("deploy/kubernetes/configmap.yaml"))
        .arg("--invalid")
        .args(&invalid);
    // Not `exec`: it would echo hundreds of paths.
    eprintln!(
        "+ jsonschema (Draft 7) over the examples, the ConfigMap and {}",
        corpus.display()
    );
    let status = cmd.status().context("running the venv's python")?;
    ensure!(
        status.success(),
        "the policy schema disagrees with the parser (above)"
    );
    eprintln!(
        "schema: checked in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
