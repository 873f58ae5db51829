#![no_main]
//! Fuzz target `policy`: see portcullis_fuzz::policy for what it checks.
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if portcullis_fuzz::policy(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
