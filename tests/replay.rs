//! `--record` and `sandport replay` through the real binary: a recorded session replayed
//! through the same plugin shows no difference (exit 0), through another one shows them
//! (exit 1); a capture that cannot be read is a usage error (exit 2); the recording folder
//! stays within its cap.

use std::path::Path;
use std::time::Duration;

use crate::support::*;

fn sandport(args: &[&str]) -> Finished {
    Server::builder().no_default_listen().args(args).run()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Serves `upper` recording into `dir`, runs `talk` against it, then stops it (SIGTERM) so
/// that everything recorded is written.
fn record(dir: &Path, args: &[&str], talk: impl FnOnce(&Server)) {
    let mut server = Server::builder()
        .plugin(plugin("upper"))
        .args(["--record", path(dir)])
        .args(args)
        .start();
    talk(&server);
    server.signal(libc::SIGTERM);
    let status = server.wait_exit(Duration::from_secs(10)).expect("it stops");
    assert!(status.success(), "{status:?}");
}

#[test]
fn a_recorded_session_replays_the_same_through_its_plugin_and_differs_through_another() {
    let dir = TempDir::new("record");
    let cap = dir.join("cap");
    record(&cap, &[], |server| {
        let mut c = server.connect();
        c.roundtrip("hello", "HELLO");
        c.roundtrip("second line", "SECOND LINE");
        let mut d = server.connect();
        d.roundtrip("other", "OTHER");
    });
    let same = sandport(&["replay", path(&cap), "--plugin", path(&plugin("upper"))]);
    assert_eq!(same.code, 0, "{}\n{}", same.stdout, same.stderr);
    assert!(
        same.stdout
            .contains("replayed 2 sessions, 3 messages: 3 same, 0 differ"),
        "{}",
        same.stdout
    );

    let other = sandport(&["replay", path(&cap), "--plugin", path(&plugin("echo"))]);
    assert_eq!(other.code, 1, "{}\n{}", other.stdout, other.stderr);
    assert!(other.stdout.contains("3 differ"), "{}", other.stdout);
    assert!(
        other
            .stdout
            .contains(r#""hello": recorded reply "HELLO", now reply "hello""#),
        "{}",
        other.stdout
    );
}

#[test]
fn a_capture_that_cannot_be_read_is_a_usage_error() {
    let dir = TempDir::new("badcap");
    let upper = plugin("upper");
    let garbage = dir.write("x.spcap", b"certainly not a capture");
    let empty = TempDir::new("emptycap");
    for (capture, want) in [
        (garbage.clone(), "not a sandport capture"),
        (dir.join("missing.spcap"), "missing.spcap"),
        (empty.path().to_path_buf(), "holds no *.spcap file"),
    ] {
        let out = sandport(&["replay", path(&capture), "--plugin", path(&upper)]);
        assert_eq!(out.code, 2, "{capture:?}: {}", out.stderr);
        assert!(out.stderr.contains(want), "{capture:?}: {}", out.stderr);
    }
    let no_plugin = sandport(&["replay", path(&garbage)]);
    assert_eq!(no_plugin.code, 2, "{}", no_plugin.stderr);
}

#[test]
fn the_recording_folder_stays_within_its_cap_and_still_replays() {
    let dir = TempDir::new("recordcap");
    let cap = dir.join("cap");
    let max: u64 = 64 << 10;
    record(&cap, &["--record-max-bytes", "64KiB"], |server| {
        let mut c = server.connect();
        let line = "x".repeat(500);
        for _ in 0..400 {
            c.roundtrip(&line, &line.to_uppercase());
        }
    });
    let files: Vec<_> = std::fs::read_dir(&cap)
        .unwrap()
        .map(|e| e.unwrap())
        .collect();
    let total: u64 = files.iter().map(|f| f.metadata().unwrap().len()).sum();
    // Within the cap, give or take the file being written when the oldest were deleted.
    assert!(
        total <= max + max / 8,
        "{total} bytes in {} files",
        files.len()
    );
    assert!(files.len() > 1, "rotated into several files");
    let out = sandport(&["replay", path(&cap), "--plugin", path(&plugin("upper"))]);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("whose start was rotated away"),
        "{}",
        out.stdout
    );
}
