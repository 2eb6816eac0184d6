//! Plugins written in AssemblyScript, built from source by guest-plugins/assemblyscript/build.sh.

use crate::support::*;

super::common_tests! { "assemblyscript":
    upper;
    /// The TLSF allocator and the garbage collector give memory back: on one long-lived instance
    /// with a 4 MiB memory cap (the module starts at 64 KiB), 200 messages of 40 KB each (16 MB in
    /// all, with their replies and the UTF-16 strings made from them) all get through.
    memory_reuse("4MiB", 200_000, "");
    /// A prefix longer than the first 256-byte buffer is fetched again with room for all of it.
    long_prefix;
}

/// Valid UTF-8 is upper-cased with Unicode rules; anything else gets its ASCII letters
/// upper-cased and every other byte kept (AssemblyScript's own decoder would mangle it).
#[test]
fn unicode_and_invalid_utf8() {
    let server = Server::builder()
        .plugin(test_plugin("upper-assemblyscript"))
        .start();
    let mut c = server.connect();
    c.send_line("straße é ü 😀 ok");
    c.expect_line("STRASSE É Ü 😀 OK");
    for bad in [
        &b"\xff\xfeabc"[..],
        b"ab\xc3",
        b"\xed\xa0\x80x",
        b"\xc0\xafz",
    ] {
        let mut message = bad.to_vec();
        message.push(b'\n');
        c.send(&message);
        let line = c.recv_line_bytes(REPLY_TIMEOUT).expect("a reply");
        assert_eq!(line, message.to_ascii_uppercase(), "reply to {bad:?}");
    }
}
