//! The core-module ABI (docs/core-abi.md), with small hand-written WAT modules: the happy path in
//! every isolation mode, the optional hooks, and every way a module can get the ABI wrong.

use std::time::Duration;

use crate::support::*;

/// The ABI's boilerplate: memory, version, a bump allocator whose heap restarts at every message
/// (so a reused instance never runs out), a no-op free, and a result area at offset 0.
const PRELUDE: &str = r#"
  (import "sandport" "log" (func $log (param i32 i32 i32)))
  (import "sandport" "config_get" (func $config_get (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 4096))
  (func (export "sandport_abi_version") (result i32) (i32.const 1))
  (func $alloc (export "sandport_alloc") (param $size i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $size)))
    (local.get $p))
  (func (export "sandport_free") (param i32 i32))
  (func $result (param $flags i32) (param $ptr i32) (param $len i32) (result i32)
    (i32.store (i32.const 0) (local.get $flags))
    (i32.store (i32.const 4) (local.get $ptr))
    (i32.store (i32.const 8) (local.get $len))
    (i32.const 0))
"#;

fn module(dir: &TempDir, name: &str, body: &str) -> std::path::PathBuf {
    dir.write(
        &format!("{name}.wat"),
        format!("(module {PRELUDE} {body})").as_bytes(),
    )
}

/// Echo, counting messages in a global (to tell the isolation modes apart): replies
/// "<count>:<message>", logs "core says hi" at info, and greets with the `greeting` setting.
const COUNTING_ECHO: &str = r#"
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 100) "core says hi")
  (data (i32.const 200) "greeting")
  (func (export "sandport_on_message") (param $conn i64) (param $ptr i32) (param $len i32) (result i32)
    (global.set $heap (i32.add (local.get $ptr) (local.get $len)))
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (call $log (i32.const 2) (i32.const 100) (i32.const 12))
    ;; "<digit>:" before the message: the message sits at $ptr, so write 2 bytes before it.
    (i32.store8 (i32.sub (local.get $ptr) (i32.const 2))
      (i32.add (i32.const 48) (i32.rem_u (global.get $count) (i32.const 10))))
    (i32.store8 (i32.sub (local.get $ptr) (i32.const 1)) (i32.const 58))
    (call $result (i32.const 1) (i32.sub (local.get $ptr) (i32.const 2))
      (i32.add (local.get $len) (i32.const 2))))
  (func (export "sandport_on_connect") (param i64 i32 i32 i32 i32) (result i32)
    (local $n i32)
    (global.set $heap (i32.const 4096))
    (local.set $n (call $config_get (i32.const 200) (i32.const 8) (i32.const 300) (i32.const 64)))
    (if (result i32) (i32.lt_s (local.get $n) (i32.const 0))
      (then (call $result (i32.const 0) (i32.const 0) (i32.const 0)))
      (else (call $result (i32.const 1) (i32.const 300) (local.get $n)))))
"#;

#[test]
fn core_module_counts_per_isolation_mode() {
    let dir = TempDir::new("core-iso");
    let path = module(&dir, "counting", COUNTING_ECHO);
    for (isolation, second) in [("message", "1:b"), ("connection", "2:b"), ("worker", "2:b")] {
        let server = Server::builder()
            .plugin(&path)
            .args(["--isolation", isolation, "--workers", "1"])
            .start();
        let mut c = server.connect();
        c.send_line("a");
        c.expect_line("1:a");
        c.send_line("b");
        c.expect_line(second);
        server.wait_for_log("core says hi", Duration::from_secs(5));
    }
}

#[test]
fn core_module_on_connect_greets_with_a_config_value() {
    let dir = TempDir::new("core-greet");
    let path = module(&dir, "greeter", COUNTING_ECHO);
    let server = Server::builder()
        .plugin(&path)
        .config("greeter.greeting=welcome to core")
        .start();
    let mut c = server.connect();
    c.expect_line("welcome to core");
    // Without the setting, config_get returns -1 and there is no greeting.
    let server = Server::builder().plugin(&path).start();
    let mut c = server.connect();
    c.send_line("x");
    c.expect_line("1:x");
}

#[test]
fn core_module_close_and_error_flags() {
    let dir = TempDir::new("core-flags");
    let path = module(
        &dir,
        "flags",
        r#"
  (data (i32.const 100) "bye")
  (data (i32.const 200) "refused by core")
  (func (export "sandport_on_message") (param i64) (param $ptr i32) (param $len i32) (result i32)
    ;; "c..." closes with "bye", "e..." fails, anything else: no reply.
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 99))
      (then (return (call $result (i32.const 3) (i32.const 100) (i32.const 3)))))
    (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 101))
      (then (return (call $result (i32.const 4) (i32.const 200) (i32.const 15)))))
    (call $result (i32.const 0) (i32.const 0) (i32.const 0)))
"#,
    );
    let server = Server::builder().plugin(&path).start();
    let mut c = server.connect();
    c.send_line("quiet");
    c.expect_silence(Duration::from_millis(200));
    c.send_line("close");
    c.expect_line("bye");
    c.read_until_closed(Duration::from_secs(5));

    let mut d = server.connect();
    d.send_line("error");
    d.expect_closed_without_reply(Duration::from_secs(5));
    let line = server.wait_for_log("plugin call failed", Duration::from_secs(5));
    assert!(line.contains("refused by core"), "{line}");
}

#[test]
fn core_module_result_outside_memory_fails_the_call_not_the_host() {
    let dir = TempDir::new("core-oob");
    let path = module(
        &dir,
        "oob",
        r#"
  (func (export "sandport_on_message") (param i64 i32 i32) (result i32)
    (i32.const 0x7fffff00))
"#,
    );
    let server = Server::builder().plugin(&path).start();
    let mut c = server.connect();
    c.send_line("x");
    c.expect_closed_without_reply(Duration::from_secs(5));
    let line = server.wait_for_log("plugin call failed", Duration::from_secs(5));
    assert!(line.contains("outside memory"), "{line}");
    let mut d = server.connect();
    d.send_line("y");
    d.expect_closed_without_reply(Duration::from_secs(5));
}

#[test]
fn core_module_infinite_loop_is_cut_by_the_deadline() {
    let dir = TempDir::new("core-loop");
    let path = module(
        &dir,
        "looper",
        r#"
  (func (export "sandport_on_message") (param i64 i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0))
"#,
    );
    let server = Server::builder()
        .plugin(&path)
        .args(["--timeout-ms", "200"])
        .start();
    let mut c = server.connect();
    let t = std::time::Instant::now();
    c.send_line("x");
    c.expect_closed_without_reply(Duration::from_secs(5));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "{:?}",
        t.elapsed()
    );
    let line = server.wait_for_log("plugin call failed", Duration::from_secs(5));
    assert!(line.contains("deadline"), "{line}");
}

fn load_error(body: &str, wanted: &[&str]) {
    let dir = TempDir::new("core-bad");
    let path = dir.write("bad.wat", body.as_bytes());
    let (code, stderr) = Server::builder().plugin(&path).run_expect_failure();
    assert_eq!(code, 2, "{stderr}");
    for w in wanted {
        assert!(stderr.contains(w), "expected {w:?} in:\n{stderr}");
    }
}

#[test]
fn core_module_importing_anything_else_is_refused_naming_the_import() {
    load_error(
        r#"(module (import "env" "open_socket" (func)))"#,
        &[
            "env::open_socket",
            "imports something the host does not provide",
        ],
    );
    load_error(
        r#"(module (import "sandport" "exec" (func)))"#,
        &["sandport::exec"],
    );
}

#[test]
fn core_module_missing_or_mistyped_exports_are_named() {
    load_error(
        &format!(
            "(module {})",
            PRELUDE.replace("(export \"sandport_alloc\")", "")
        ),
        &["core ABI", "missing export `sandport_alloc`"],
    );
    load_error(
        &format!("(module {PRELUDE})"),
        &["missing export `sandport_on_message`"],
    );
    load_error(
        &format!(
            "(module {PRELUDE} (func (export \"sandport_on_message\") (param i32 i32 i32) (result i32) (i32.const 0)))"
        ),
        &["export `sandport_on_message` has type"],
    );
}

#[test]
fn core_module_of_another_abi_version_is_refused() {
    load_error(
        &format!(
            "(module {} (func (export \"sandport_on_message\") (param i64 i32 i32) (result i32) (i32.const 0)))",
            PRELUDE.replace("(result i32) (i32.const 1))", "(result i32) (i32.const 2))")
        ),
        &["ABI version 2", "cannot be instantiated"],
    );
}

#[test]
fn invalid_wat_text_is_a_clear_load_error() {
    load_error("(module (", &["not valid WebAssembly text"]);
}

/// Sleeps through WASI preview 1 `poll_oneoff` for the number of milliseconds in the first
/// byte of the message times 100 ("\x01" = 100 ms, "d" = 10 s), then replies "woke".
const SLEEPER: &str = r#"
  (data (i32.const 100) "woke")
  (func (export "sandport_on_message") (param i64) (param $ptr i32) (param $len i32) (result i32)
    ;; One relative monotonic clock subscription at 512: userdata 7, tag 0, clock id 1.
    (i64.store (i32.const 512) (i64.const 7))
    (i32.store8 (i32.const 520) (i32.const 0))
    (i32.store (i32.const 528) (i32.const 1))
    (i64.store (i32.const 536)
      (i64.mul (i64.extend_i32_u (i32.load8_u (local.get $ptr))) (i64.const 100000000)))
    (i64.store (i32.const 544) (i64.const 0))
    (i32.store16 (i32.const 552) (i32.const 0))
    (drop (call $poll (i32.const 512) (i32.const 1024) (i32.const 1) (i32.const 2000)))
    (call $result (i32.const 1) (i32.const 100) (i32.const 4)))
"#;

#[test]
fn core_module_sleep_within_the_budget_completes() {
    let dir = TempDir::new("core-sleep");
    let path = module(&dir, "sleeper", SLEEPER);
    let server = Server::builder()
        .plugin(&path)
        .args(["--timeout-ms", "1000"])
        .start();
    let mut c = server.connect();
    let t = std::time::Instant::now();
    c.send(b"\x01\n");
    c.expect_line("woke");
    assert!(
        t.elapsed() >= Duration::from_millis(100),
        "{:?}",
        t.elapsed()
    );
}

/// Regression: WASI preview 1's poll_oneoff slept as long as the guest asked, holding its worker
/// past --timeout-ms (the epoch deadline only interrupts running Wasm code).
#[test]
fn core_module_sleep_past_the_deadline_is_cut_at_the_deadline() {
    let dir = TempDir::new("core-sleep-long");
    let path = module(&dir, "sleeper", SLEEPER);
    let server = Server::builder()
        .plugin(&path)
        .args(["--timeout-ms", "200", "--workers", "1"])
        .start();
    let mut c = server.connect();
    let t = std::time::Instant::now();
    c.send_line("d");
    c.expect_closed_without_reply(Duration::from_secs(5));
    assert!(
        t.elapsed() < Duration::from_millis(1500),
        "a 10s sleep under a 200ms deadline took {:?}",
        t.elapsed()
    );
    let line = server.wait_for_log("plugin call failed", Duration::from_secs(5));
    assert!(line.contains("deadline"), "{line}");
}

/// Regression: a zero-length buffer may point anywhere (Zig's empty slices point at
/// 0xFFFFFFFF); the host checked even empty buffers against the memory size and failed the call.
#[test]
fn core_module_empty_buffers_may_point_outside_memory() {
    let dir = TempDir::new("core-empty");
    let body = r#"
  (func (export "sandport_on_message") (param i64) (param $ptr i32) (param $len i32) (result i32)
    (if (i32.eqz (local.get $len))
      (then (return (call $result (i32.const 1) (i32.const -1) (i32.const 0)))))
    (call $result (i32.const 1) (local.get $ptr) (local.get $len)))
"#;
    let prelude = PRELUDE.replace(
        "(local $p i32)",
        "(local $p i32)
    (if (i32.eqz (local.get $size)) (then (return (i32.const -1))))",
    );
    let path = dir.write("empty.wat", format!("(module {prelude} {body})").as_bytes());
    let server = Server::builder().plugin(&path).start();
    let mut c = server.connect();
    c.send_line("");
    c.expect_line("");
    c.send_line("still here");
    c.expect_line("still here");
}
