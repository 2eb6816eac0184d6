//! Plugins written in WAT (the WebAssembly text format), built from source by
//! guest-plugins/wat/build.sh.

use crate::support::*;

super::common_tests! { "wat":
    upper;
    /// The allocator gives memory back: on one long-lived instance with a 256 KiB memory cap (4
    /// pages), 200 messages of 40 KB each (16 MB in all, with their replies) all get through.
    memory_reuse("256KiB", 100_000, "");
    /// Only ASCII letters change; every other byte (UTF-8 or not) is copied as it is.
    ascii_only;
    /// The `prefix` setting is written straight into the reply buffer, whatever its length.
    long_prefix;
}

/// sandport also loads the text form: the source file itself runs, as `upper-wat.wat`.
#[test]
fn source_loads_as_text() {
    let dir = TempDir::new("wat-text");
    let source = workspace_root().join("guest-plugins/wat/upper/upper.wat");
    let path = dir.copy(&source, "upper-wat.wat");
    let server = Server::builder()
        .plugin(&path)
        .config("upper-wat.prefix=> ")
        .env("RUST_LOG", "debug")
        .start();
    let mut c = server.connect();
    c.send_line("from text");
    c.expect_line("> FROM TEXT");
    server.wait_for_plugin_log("upper-cased 9 bytes", "upper-wat");
}
