#![no_main]
//! Fuzz target `list`: see portcullis_fuzz::list for what it checks.
use libfuzzer_sys::{fuzz_target, Corpus};

fuzz_target!(|data: &[u8]| -> Corpus {
    if portcullis_fuzz::list(data) {
        Corpus::Keep
    } else {
        Corpus::Reject
    }
});
