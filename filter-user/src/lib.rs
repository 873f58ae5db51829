//! portcullis user side: the policy compiler, the loader that writes compiled
//! policies into the XDP program's maps, and the daemon.
pub mod bans;
pub mod crowdsec;
pub mod daemon;
pub mod events;
pub mod explain;
pub mod feeds;
pub mod fetch;
pub mod loader;
pub mod logging;
pub mod policy;
pub mod report;
pub mod status;
