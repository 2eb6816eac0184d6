//! Files that cannot be served are refused and counted, and the version serving keeps serving
//! with no client seeing an error; a file copied slowly is read only once whole.

use std::io::Write;
use std::time::Duration;

use super::{deploy, deploy_bytes, reloads, serve_file, wait_reloads};
use crate::support::*;

#[test]
fn garbage_wrong_world_refused_import_and_cut_short_files_are_refused_and_the_old_serves() {
    let dir = TempDir::new("live-refuse");
    let (server, metrics) = serve_file(&dir, &plugin("upper"), &[]);
    let mut c = server.connect();
    c.roundtrip("hello", "HELLO");
    let upper = std::fs::read(plugin("upper")).unwrap();
    let half = &upper[..upper.len() / 2];
    let bad: [(&str, Vec<u8>); 4] = [
        ("garbage", b"this is not wasm at all".to_vec()),
        (
            "wrong world",
            std::fs::read(test_plugin("noexport")).unwrap(),
        ),
        (
            "refused import",
            std::fs::read(test_plugin("badimport")).unwrap(),
        ),
        ("cut short", half.to_vec()),
    ];
    for (i, (what, bytes)) in bad.iter().enumerate() {
        deploy_bytes(dir.path(), "p.wasm", bytes);
        wait_reloads(metrics, "p", "refused", (i + 1) as f64);
        c.roundtrip("hello", "HELLO");
        let mut fresh = server.connect();
        fresh.roundtrip("hello", "HELLO");
        assert_eq!(reloads(metrics, "p", "loaded"), 0.0, "{what} was loaded");
    }
    // A good file afterwards is loaded as usual.
    deploy(dir.path(), "p.wasm", &plugin("echo"));
    wait_reloads(metrics, "p", "loaded", 1.0);
    c.roundtrip("hello", "hello");
    server.assert_no_call_failed();
}

/// Written in place, in pieces, with pauses shorter than the settling time: the reloader waits
/// until the file is whole, so the only outcome is one load, never a refusal of half of it.
#[test]
fn a_file_written_slowly_in_place_is_loaded_once_whole() {
    let dir = TempDir::new("live-slow");
    let (server, metrics) = serve_file(&dir, &plugin("upper"), &[]);
    let mut c = server.connect();
    c.roundtrip("hello", "HELLO");
    let echo = std::fs::read(plugin("echo")).unwrap();
    let mut f = std::fs::File::create(dir.join("p.wasm")).unwrap();
    for piece in echo.chunks(echo.len() / 8 + 1) {
        f.write_all(piece).unwrap();
        f.flush().unwrap();
        // Shorter than the 200 ms a file must stay unchanged before it is read.
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(f);
    wait_reloads(metrics, "p", "loaded", 1.0);
    c.roundtrip("hello", "hello");
    assert_eq!(
        reloads(metrics, "p", "refused"),
        0.0,
        "half a file was read"
    );
    server.assert_no_call_failed();
}
