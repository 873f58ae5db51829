#![no_main]
//! Fuzz target `metrics`: see portcullis_fuzz::metrics for what it checks.
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if portcullis_fuzz::metrics(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
