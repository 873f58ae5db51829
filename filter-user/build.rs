//! Embeds the eBPF object built by `cargo xtask build-ebpf`. Without it the crate
//! still builds (so the policy compiler can be developed and checked on machines
//! without the BPF toolchain), and loading reports how to build the object.
use std::{env, fs, path::PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=PORTCULLIS_EBPF_OBJECT");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let path = env::var_os("PORTCULLIS_EBPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("../target/ebpf/bpfel-unknown-none/release/filter-ebpf"));
    println!("cargo:rerun-if-changed={}", path.display());
    let embedded = if path.is_file() {
        path.canonicalize().expect("object path resolves")
    } else {
        println!(
            "cargo:warning=eBPF object {} not found: run `cargo xtask build-ebpf`; \
             this build cannot load the filter",
            path.display()
        );
        let empty = PathBuf::from(env::var("OUT_DIR").expect("set by cargo")).join("missing.o");
        fs::write(&empty, []).expect("write placeholder");
        empty
    };
    println!(
        "cargo:rustc-env=PORTCULLIS_EBPF_OBJECT={}",
        embedded.display()
    );
}
