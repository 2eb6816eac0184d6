//! Replays the committed fuzz corpora (`fuzz/corpus/TARGET/`) through the checks their targets
//! run, so `cargo test` on stable keeps every input the fuzzer found interesting passing.

use std::path::PathBuf;

/// Runs `check` on every file of `fuzz/corpus/<target>`, which must not be empty.
fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let entries =
        std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("a corpus entry").path();
        let data = std::fs::read(&path).expect("a corpus file");
        let outcome = std::panic::catch_unwind(|| check(&data));
        assert!(outcome.is_ok(), "{} fails its check", path.display());
        count += 1;
    }
    assert!(count > 0, "{} is empty", dir.display());
}

#[test]
fn the_framing_corpus_passes() {
    replay("framing", super::framing);
}

#[test]
fn the_flags_corpus_passes() {
    replay("flags", super::flags);
}

#[test]
fn the_core_abi_reply_corpus_passes() {
    replay("core_abi_reply", super::core_abi_reply);
}

#[test]
fn the_proxy_header_corpus_passes() {
    replay("proxy_header", super::proxy_header);
}

#[test]
fn empty_and_tiny_inputs_are_valid_cases() {
    for data in [
        &b""[..],
        b"\x01",
        b"\x02\xff",
        b"\x01\x00\x00\n",
        b"\x02\xfe\x01\x03\0\0\0\x01z",
    ] {
        super::framing(data);
        super::flags(data);
        super::core_abi_reply(data);
        super::proxy_header(data);
    }
}
