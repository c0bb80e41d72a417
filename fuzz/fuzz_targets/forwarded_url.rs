#![no_main]
//! See `ak_outpost_fuzz::forwarded_url` for the input format and the invariants.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| ak_outpost_fuzz::forwarded_url::run(data));
