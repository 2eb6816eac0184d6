//! Plugins written in zig, built from source by guest-plugins/zig/build.sh.

use crate::support::*;

#[test]
fn upper_zig() {
    crate::languages::check_upper("zig");
}

/// Zig's `wasm_allocator` reuses what `sandport_free` gives back: on one long-lived instance with
/// a 4 MiB memory cap (the module starts at about 1 MiB, mostly stack), 200 messages of 40 KB
/// each (16 MB in all, with their replies) all get through.
#[test]
fn upper_zig_reuses_its_memory_on_a_long_lived_instance() {
    crate::languages::check_memory_reuse("zig", "4MiB", 1_000_000, "");
}

/// Only ASCII letters change; every other byte (UTF-8 or not) is copied as it is.
#[test]
fn upper_zig_changes_only_ascii_letters() {
    let server = Server::builder().plugin(test_plugin("upper-zig")).start();
    let mut c = server.connect();
    c.send(b"stra\xc3\x9fe \xff\xfe z@[`{\n");
    let line = c.recv_line_bytes(REPLY_TIMEOUT).expect("a reply");
    assert_eq!(line, b"STRA\xc3\x9fE \xff\xfe Z@[`{\n");
}

/// A prefix longer than the first 256-byte buffer is fetched again with room for all of it.
#[test]
fn upper_zig_long_prefix() {
    let prefix = "p".repeat(1000);
    let server = Server::builder()
        .plugin(test_plugin("upper-zig"))
        .config(&format!("upper-zig.prefix={prefix}"))
        .args(["--isolation", "worker"])
        .start();
    let mut c = server.connect();
    for _ in 0..3 {
        c.send_line("hi");
        c.expect_line(&format!("{prefix}HI"));
    }
}
