//! Arbitrary bytes as a capture for `gatekeeper replay`: see
//! `gatekeeper_fuzz::check_capture`.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| gatekeeper_fuzz::check_capture(data));
