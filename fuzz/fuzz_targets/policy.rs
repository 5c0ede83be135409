//! Arbitrary bytes as a policy file: see `gatekeeper_fuzz::check_policy`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gatekeeper_fuzz::check_policy(data));
