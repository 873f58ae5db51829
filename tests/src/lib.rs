//! portcullis verdict and integration harness.
//!
//! - `packet`: a builder for valid and deliberately broken test frames.
//! - `spec`: a policy as the tests see it, rendered to policy file format v1.
//! - `model`: the independent reference model of docs/parsing-contract.md.
//! - `gen`: seeded random policies and frames, and a minimiser, for differential tests
//!   (`gen_rate`, `gen_schedule`, `gen_quota`: rate limits, hours, transfer quotas and
//!   the host's egress frames).
//! - `case`, `fixtures`, `fixtures_v6`, `fixtures_reject`, `evasion`: named cases with
//!   hand-written expectations (`fixtures_reject`: with the exact reply bytes);
//!   `fixtures_rate`, `fixtures_quota`: sequences of frames under one policy.
//! - `harness`, `loader_checks`, `apply_faults`: run frames through the real XDP
//!   object (root); `apply_faults` fails every write step of an apply;
//!   `bl4_checks` pins the IPv4 blocklist's layout and diff sizes.
//! - `e2e`, `soak`: the daemon in network namespaces, for seconds and for minutes (root).

pub mod apply_faults;
pub mod bl4_checks;
pub mod case;
pub mod e2e;
pub mod evasion;
pub mod fixtures;
pub mod fixtures_bans;
pub mod fixtures_lanes;
pub mod fixtures_lanes6;
pub mod fixtures_quota;
pub mod fixtures_rate;
pub mod fixtures_reject;
pub mod fixtures_schedule;
pub mod fixtures_v6;
pub mod gen;
pub mod gen_quota;
pub mod gen_rate;
pub mod gen_schedule;
pub mod harness;
pub mod loader_checks;
pub mod loader_v6;
pub mod model;
pub mod packet;
pub mod soak;
pub mod spec;
