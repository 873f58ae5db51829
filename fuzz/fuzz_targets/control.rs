#![no_main]
//! Fuzz target `control`: see portcullis_fuzz::control for what it checks.
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if portcullis_fuzz::control(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
