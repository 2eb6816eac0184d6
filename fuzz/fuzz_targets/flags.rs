//! Fuzz target `flags`: the checks are `sandport::fuzzing::flags` (see fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandport::fuzzing::flags(data));
