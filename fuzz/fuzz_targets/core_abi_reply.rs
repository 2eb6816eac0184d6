//! Fuzz target `core_abi_reply`: the checks are `sandport::fuzzing::core_abi_reply` (see fuzz/README.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| sandport::fuzzing::core_abi_reply(data));
