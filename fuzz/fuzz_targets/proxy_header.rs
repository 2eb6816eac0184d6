//! Fuzz target `proxy_header`: the checks are `sandport::fuzzing::proxy_header` (see fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandport::fuzzing::proxy_header(data));
