//! portcullis user side: the policy compiler and the loader that writes compiled
//! policies into the XDP program's maps.
pub mod loader;
pub mod policy;
