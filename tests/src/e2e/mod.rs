//! Network-namespace end-to-end harness for the `portcullis` daemon.
//!
//! - `cleanup`: a registry of undo actions, run on drop, on panic (unwinding) and
//!   on SIGINT/SIGTERM; and a sweep of what crashed earlier runs left behind.
//! - `cmd`: running `ip` and other commands with a time limit and their stderr
//!   in the error.
//! - `netns`: namespaces, and running code inside one from a thread (`setns(2)`).
//! - `topology`: the "internet", "mgmt" and "host" namespaces, veth links, VLAN.
//! - `vlan`: 802.1Q tagging with two tiny tc programs (no 8021q module here).
//! - `probe`: TCP connect and UDP echo probes, listeners.
//! - `daemon`: a `portcullis run` inside the host namespace, readiness via
//!   sd_notify, the CLI (`status`, `reload`, `detach`), metrics over HTTP.
//! - `policies`: the policies the scenarios load.
//! - `scenarios`: the scenarios of `e2e-suite`.
//! - `demo`: the sandbox demo (`cargo xtask demo`).

pub mod cleanup;
pub mod cmd;
pub mod daemon;
pub mod demo;
pub mod http;
pub mod netns;
pub mod policies;
pub mod probe;
pub mod scenarios;
pub mod topology;
pub mod vlan;
