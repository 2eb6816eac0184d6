//! Fuzz target `framing`: the checks are `sandport::fuzzing::framing` (see fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandport::fuzzing::framing(data));
