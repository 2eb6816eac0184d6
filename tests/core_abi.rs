//! The core-module ABI (docs/core-abi.md), with small hand-written WAT modules: the happy path in
//! every isolation mode, the optional hooks, and every way a module can get the ABI wrong.

use std::time::Duration;

use crate::support::*;

/// The ABI's boilerplate: memory, version, a bump allocator whose heap restarts at every message
/// (so a reused instance never runs out), a no-op free, and a result area at offset 0.
pub(crate) const PRELUDE: &str = r#"
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

pub(crate) fn module(dir: &TempDir, name: &str, body: &str) -> std::path::PathBuf {
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
            PRELUDE.replace("(result i32) (i32.const 1))", "(result i32) (i32.const 3))")
        ),
        &["ABI version 3", "versions 1 and 2", "cannot be instantiated"],
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

// ---------------------------------------------------------------------------------------------
// ABI version 2: state and messaging

/// Every version-2 import, declared before the prelude (imports come first in a module).
const V2_IMPORTS: &str = r#"
  (import "sandport" "kv_get" (func $get (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "sandport" "kv_set" (func $set (param i32 i32 i32 i32 i32 i32 i64) (result i32)))
  (import "sandport" "kv_delete" (func $del (param i32 i32 i32 i32) (result i32)))
  (import "sandport" "kv_exists" (func $exists (param i32 i32 i32 i32) (result i32)))
  (import "sandport" "kv_increment" (func $incr (param i32 i32 i32 i32 i64 i32) (result i32)))
  (import "sandport" "kv_compare_and_swap" (func $cas (param i32 i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "sandport" "kv_expire" (func $expire (param i32 i32 i32 i32 i64) (result i32)))
  (import "sandport" "kv_ttl" (func $ttl (param i32 i32 i32 i32 i32) (result i32)))
  (import "sandport" "kv_list_keys" (func $list (param i32 i32 i32 i32 i32 i32 i32) (result i32)))
  (import "sandport" "send" (func $send (param i64 i32 i32) (result i32)))
  (import "sandport" "close" (func $close (param i64) (result i32)))
  (import "sandport" "connection_info" (func $info (param i64 i32 i32 i32) (result i32)))
  (import "sandport" "join" (func $join (param i64 i32 i32) (result i32)))
  (import "sandport" "leave" (func $leave (param i64 i32 i32) (result i32)))
  (import "sandport" "members" (func $members (param i32 i32 i32 i32 i32) (result i32)))
  (import "sandport" "publish" (func $publish (param i64 i32 i32 i32 i32 i32 i32) (result i32)))
"#;

/// A version-2 module driven by the first byte of each message; it replies with what each call
/// answered, one character per status (`0`-`9`, then `a` = 10, `b` = 11, `c` = 12), and any
/// bytes it read. Statics: `k` 100, `hello` 104, `world` 112, `n` 120, `nope` 124, `lobby` 130,
/// `zz` 136, `hits` 140, `sh` 150, `psst` 160, `default` 170, `other` 180; value buffer 1024
/// (256 bytes), length out 16, i64 out 24, reply built at 2048.
const V2_MODULE: &str = r#"
  (global $rp (mut i32) (i32.const 2048))
  (data (i32.const 80) "0123456789abcdef")
  (data (i32.const 100) "k") (data (i32.const 104) "hello") (data (i32.const 112) "world")
  (data (i32.const 120) "n") (data (i32.const 124) "nope") (data (i32.const 130) "lobby")
  (data (i32.const 136) "zz") (data (i32.const 140) "hits") (data (i32.const 150) "sh")
  (data (i32.const 160) "psst") (data (i32.const 170) "default") (data (i32.const 180) "other")
  (func $ch (param $c i32)
    (i32.store8 (global.get $rp) (local.get $c))
    (global.set $rp (i32.add (global.get $rp) (i32.const 1))))
  (func $st (param $s i32) (call $ch (i32.load8_u (i32.add (i32.const 80) (local.get $s)))))
  (func $app (param $p i32) (param $n i32)
    (memory.copy (global.get $rp) (local.get $p) (local.get $n))
    (global.set $rp (i32.add (global.get $rp) (local.get $n))))
  (func $kv
    (call $st (call $get (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 1024) (i32.const 256) (i32.const 16)))
    (call $st (call $set (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 104) (i32.const 5) (i64.const 0)))
    (call $st (call $get (i32.const 170) (i32.const 7) (i32.const 100) (i32.const 1) (i32.const 1024) (i32.const 256) (i32.const 16)))
    (call $app (i32.const 1024) (i32.load (i32.const 16)))
    (call $st (call $exists (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1)))
    (call $st (call $exists (i32.const 0) (i32.const 0) (i32.const 136) (i32.const 2)))
    (call $st (call $incr (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i64.const 1) (i32.const 24)))
    (call $st (call $cas (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 0) (i32.const -1) (i32.const 112) (i32.const 5)))
    (call $st (call $cas (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 104) (i32.const 5) (i32.const 112) (i32.const 5)))
    (call $st (call $ttl (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 24)))
    (call $ch (select (i32.const 80) (i32.const 63) (i64.eq (i64.load (i32.const 24)) (i64.const -1))))
    (call $st (call $expire (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i64.const 60000)))
    (call $st (call $ttl (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 24)))
    (call $ch (select (i32.const 84) (i32.const 63)
      (i32.and (i64.gt_s (i64.load (i32.const 24)) (i64.const 0))
               (i64.le_s (i64.load (i32.const 24)) (i64.const 60000)))))
    (call $st (call $get (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 1024) (i32.const 2) (i32.const 16)))
    (call $st (i32.load (i32.const 16)))
    (call $st (call $set (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 104) (i32.const 5) (i64.const -5)))
    (call $st (call $incr (i32.const 0) (i32.const 0) (i32.const 120) (i32.const 1) (i64.const 5) (i32.const 24)))
    (call $st (i32.wrap_i64 (i64.load (i32.const 24))))
    (call $st (call $list (i32.const 0) (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 1024) (i32.const 256) (i32.const 16)))
    (call $st (i32.load (i32.const 1024)))
    (call $app (i32.const 1032) (i32.const 1))
    (call $st (call $del (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1)))
    (call $st (call $del (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1)))
    (call $st (call $expire (i32.const 0) (i32.const 0) (i32.const 136) (i32.const 2) (i64.const 5)))
    (call $st (call $ttl (i32.const 0) (i32.const 0) (i32.const 136) (i32.const 2) (i32.const 24)))
    (call $st (call $get (i32.const 124) (i32.const 4) (i32.const 100) (i32.const 1) (i32.const 1024) (i32.const 256) (i32.const 16)))
    (call $st (call $del (i32.const 0) (i32.const 0) (i32.const 120) (i32.const 1))))
  ;; Counts in the shared bucket `sh`; the own bucket has no `hits`; `other` is not ours.
  (func $hits
    (call $st (call $incr (i32.const 150) (i32.const 2) (i32.const 140) (i32.const 4) (i64.const 1) (i32.const 24)))
    (call $st (call $get (i32.const 150) (i32.const 2) (i32.const 140) (i32.const 4) (i32.const 1024) (i32.const 256) (i32.const 16)))
    (call $app (i32.const 1024) (i32.load (i32.const 16)))
    (call $st (call $get (i32.const 0) (i32.const 0) (i32.const 140) (i32.const 4) (i32.const 1024) (i32.const 256) (i32.const 16)))
    (call $st (call $get (i32.const 180) (i32.const 5) (i32.const 140) (i32.const 4) (i32.const 1024) (i32.const 256) (i32.const 16))))
  ;; Sends `psst` to (op 0) or closes (op 1) every other member of `lobby`.
  (func $others (param $conn i64) (param $op i32)
    (local $i i32) (local $n i32) (local $id i64)
    (call $st (call $members (i32.const 130) (i32.const 5) (i32.const 1024) (i32.const 256) (i32.const 16)))
    (local.set $n (i32.load (i32.const 16)))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $id (i64.load (i32.add (i32.const 1024) (i32.shl (local.get $i) (i32.const 3)))))
      (if (i64.ne (local.get $id) (local.get $conn))
        (then (if (local.get $op)
          (then (call $st (call $close (local.get $id))))
          (else (call $st (call $send (local.get $id) (i32.const 160) (i32.const 4)))))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $next))))
  (func (export "sandport_on_message") (param $conn i64) (param $ptr i32) (param $len i32) (result i32)
    (local $op i32)
    (global.set $rp (i32.const 2048))
    (local.set $op (i32.load8_u (local.get $ptr)))
    (if (i32.eq (local.get $op) (i32.const 107)) (then (call $kv)))             ;; k
    (if (i32.eq (local.get $op) (i32.const 105)) (then (call $hits)))           ;; i
    (if (i32.eq (local.get $op) (i32.const 106)) (then                          ;; j
      (call $st (call $join (local.get $conn) (i32.const 130) (i32.const 5)))
      (call $st (call $members (i32.const 130) (i32.const 5) (i32.const 1024) (i32.const 256) (i32.const 16)))
      (call $st (i32.load (i32.const 16)))))
    (if (i32.eq (local.get $op) (i32.const 108)) (then                          ;; l
      (call $st (call $leave (local.get $conn) (i32.const 130) (i32.const 5)))
      (call $st (call $leave (local.get $conn) (i32.const 130) (i32.const 5)))))
    (if (i32.eq (local.get $op) (i32.const 112)) (then                          ;; p: publish the rest
      (call $st (call $publish (local.get $conn) (i32.const 130) (i32.const 5)
        (i32.add (local.get $ptr) (i32.const 1)) (i32.sub (local.get $len) (i32.const 1))
        (i32.const 0) (i32.const 16)))
      (call $st (i32.load (i32.const 16)))))
    (if (i32.eq (local.get $op) (i32.const 99)) (then                           ;; c: own peer
      (call $st (call $info (local.get $conn) (i32.const 1024) (i32.const 256) (i32.const 16)))
      (call $app (i32.const 1024) (i32.load (i32.const 16)))))
    (if (i32.eq (local.get $op) (i32.const 119)) (then (call $others (local.get $conn) (i32.const 0)))) ;; w
    (if (i32.eq (local.get $op) (i32.const 120)) (then (call $others (local.get $conn) (i32.const 1)))) ;; x
    (if (i32.eq (local.get $op) (i32.const 117)) (then                          ;; u: unknown ids
      (call $st (call $send (i64.const 999999) (i32.const 160) (i32.const 4)))
      (call $st (call $join (i64.const 999999) (i32.const 130) (i32.const 5)))
      (call $st (call $close (i64.const 999999)))
      (call $st (call $join (local.get $conn) (i32.const 0) (i32.const 0)))
      (call $st (call $info (i64.const 999999) (i32.const 1024) (i32.const 256) (i32.const 16)))
      (call $st (call $leave (i64.const 999999) (i32.const 130) (i32.const 5)))))
    ;; Hostile buffers: each traps, failing this call only.
    (if (i32.eq (local.get $op) (i32.const 98))                                 ;; b: key at 0xFFFFFFFF
      (then (drop (call $get (i32.const 0) (i32.const 0) (i32.const -1) (i32.const 10) (i32.const 1024) (i32.const 256) (i32.const 16)))))
    (if (i32.eq (local.get $op) (i32.const 66))                                 ;; B: 4 GiB output buffer
      (then (drop (call $get (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 1024) (i32.const -1) (i32.const 16)))))
    (if (i32.eq (local.get $op) (i32.const 77))                                 ;; M: count out past the end
      (then (drop (call $members (i32.const 130) (i32.const 5) (i32.const 1024) (i32.const 0) (i32.const 65534)))))
    (if (i32.eq (local.get $op) (i32.const 80))                                 ;; P: a 2 GiB message
      (then (drop (call $publish (local.get $conn) (i32.const 130) (i32.const 5) (i32.const 0) (i32.const 0x7fffffff) (i32.const 0) (i32.const 16)))))
    (if (i32.eq (local.get $op) (i32.const 83))                                 ;; S: set with a negative value length
      (then (drop (call $set (i32.const 0) (i32.const 0) (i32.const 100) (i32.const 1) (i32.const 104) (i32.const -5) (i64.const 0)))))
    (call $result (i32.const 1) (i32.const 2048) (i32.sub (global.get $rp) (i32.const 2048))))
"#;

/// The prelude of a module declaring ABI version 2.
fn prelude_v2() -> String {
    PRELUDE.replace("(result i32) (i32.const 1))", "(result i32) (i32.const 2))")
}

/// The version-2 module, followed in the chain by a version-1 echo (`echo1`), which the
/// operator gives the shared namespace `other`.
fn v2_server(dir: &TempDir, args: &[&str]) -> Server {
    let v2 = dir.write(
        "v2.wat",
        format!("(module {V2_IMPORTS} {} {V2_MODULE})", prelude_v2()).as_bytes(),
    );
    let echo = module(
        dir,
        "echo1",
        r#"
  (func (export "sandport_on_message") (param i64) (param $ptr i32) (param $len i32) (result i32)
    (call $result (i32.const 1) (local.get $ptr) (local.get $len)))
"#,
    );
    Server::builder()
        .plugin(&v2)
        .plugin(&echo)
        .args(["--shared-state", "sh=v2", "--shared-state", "other=echo1"])
        .args(args)
        .start()
}

#[test]
fn core_v2_state_calls_answer_with_status_codes() {
    let dir = TempDir::new("core-v2-kv");
    // The default --isolation message: every message gets a fresh instance, the state stays.
    let server = v2_server(&dir, &[]);
    let mut c = server.connect();
    let expected = [
        "1",     // get k: absent
        "0",     // set k = hello
        "0",     // get k from `default` (the own bucket) ...
        "hello", // ... its value
        "0",     // exists k
        "1",     // exists zz: absent
        "5",     // increment k: not an integer
        "2",     // compare-and-swap k from absent: mismatch
        "0",     // compare-and-swap k from hello to world
        "0P",    // ttl k: persistent (-1)
        "0",     // expire k in 60 s
        "0T",    // ttl k: within 60 s
        "05",    // get k into a 2-byte buffer: ok, its length is 5, nothing copied
        "7",     // set with a negative TTL: invalid argument
        "05",    // increment n by 5: 5
        "02k",   // list keys: 2 keys, the first `k`
        "0",     // delete k
        "1",     // delete k again: absent
        "1",     // expire zz: absent
        "1",     // ttl zz: absent
        "8",     // get from bucket `nope`: no such store
        "0",     // delete n
    ]
    .concat();
    c.send_line("k");
    c.expect_line(&expected);
    // The same again: the script leaves the store as it found it.
    c.send_line("k");
    c.expect_line(&expected);

    // `sh` is shared with this plugin: counted across connections and instances; the own
    // bucket has no `hits`; `other` is shared with another plugin only (access denied).
    c.send_line("i");
    c.expect_line("00119");
    let mut d = server.connect();
    d.send_line("i");
    d.expect_line("00219");
}

#[test]
fn core_v2_messaging_rooms_and_connections() {
    let dir = TempDir::new("core-v2-msg");
    let server = v2_server(&dir, &["--workers", "2"]);
    let mut a = server.connect();
    let mut b = server.connect();
    a.send_line("j");
    a.expect_line("001"); // joined; lobby has 1 member
    b.send_line("j");
    b.expect_line("002");
    a.send_line("phello everyone");
    a.expect_line("01"); // published to 1 (not to itself)
    b.expect_line("hello everyone");
    a.send_line("w");
    a.expect_line("00"); // members ok, one send ok
    b.expect_line("psst");
    // Its own addresses.
    a.send_line("c");
    a.expect_line(&format!("0{}", a.local_addr()));
    // Unknown connections, an empty room name, leaving a room one is not in.
    a.send_line("u");
    a.expect_line("aaaca1");
    b.send_line("l");
    b.expect_line("01"); // left, then was not in it
    a.send_line("j");
    a.expect_line("001"); // joining twice is fine; b left
    b.send_line("j");
    b.expect_line("002");
    a.send_line("x");
    a.expect_line("00"); // closed b
    b.expect_closed_without_reply(Duration::from_secs(5));
    // A closed connection leaves its rooms.
    a.send_line("j");
    a.expect_line("001");
}

#[test]
fn core_v2_hostile_buffers_fail_the_call_not_the_host() {
    let dir = TempDir::new("core-v2-hostile");
    let server = v2_server(&dir, &[]);
    for op in ["b", "B", "M", "P", "S"] {
        let mut c = server.connect();
        c.send_line(op);
        c.expect_closed_without_reply(Duration::from_secs(5));
    }
    for what in [
        "key: buffer 4294967295+10",
        "out: buffer 1024+4294967295",
        "count: buffer 65534+4",
    ] {
        server.wait_for_log(
            &format!("{what} is outside the module's memory"),
            LOG_TIMEOUT,
        );
    }
    // Nothing was written by the refused set, and the host serves on.
    let mut c = server.connect();
    c.send_line("k");
    let reply = c.line();
    assert!(reply.starts_with("10"), "{reply}");
}

#[test]
fn core_v2_module_is_described_as_version_2() {
    let dir = TempDir::new("core-v2-check");
    let v2 = dir.write(
        "v2.wat",
        format!("(module {V2_IMPORTS} {} {V2_MODULE})", prelude_v2()).as_bytes(),
    );
    let r = Server::builder()
        .no_default_listen()
        .args(["check", v2.to_str().unwrap()])
        .run();
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("core module (sandport core ABI version 2)"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout.contains("sandport::kv_compare_and_swap"),
        "{}",
        r.stdout
    );
}

/// A version-2 module needs no version-2 import; a version-1 module may not have any.
#[test]
fn core_v1_module_importing_a_v2_function_is_refused() {
    let on_message =
        r#"(func (export "sandport_on_message") (param i64 i32 i32) (result i32) (i32.const 0))"#;
    let import =
        r#"(import "sandport" "kv_get" (func (param i32 i32 i32 i32 i32 i32 i32) (result i32)))"#;
    load_error(
        &format!("(module {import} {PRELUDE} {on_message})"),
        &[
            "cannot be instantiated",
            "declares sandport core ABI version 1 but imports `sandport::kv_get`",
            "return 2 from `sandport_abi_version`",
        ],
    );
    // The same module declaring version 2 is served; so is a version-2 module with no
    // version-2 import.
    let dir = TempDir::new("core-v2-ok");
    for (name, text) in [
        (
            "withimport",
            format!("(module {import} {} {on_message})", prelude_v2()),
        ),
        ("without", format!("(module {} {on_message})", prelude_v2())),
    ] {
        let path = dir.write(&format!("{name}.wat"), text.as_bytes());
        let server = Server::builder().plugin(&path).start();
        let mut c = server.connect();
        c.send_line("x");
        c.expect_silence(Duration::from_millis(100));
    }
}

/// A reactor: `_initialize` logs "init ran" and sets the count to 5, so each message's reply
/// tells which state it started from; each message logs "message seen".
const REACTOR: &str = r#"
  (global $count (mut i32) (i32.const 0))
  (data (i32.const 100) "init ran")
  (data (i32.const 120) "message seen")
  (func (export "_initialize")
    (call $log (i32.const 2) (i32.const 100) (i32.const 8))
    (global.set $count (i32.const 5)))
  (func (export "sandport_on_message") (param $conn i64) (param $ptr i32) (param $len i32) (result i32)
    (global.set $heap (i32.add (local.get $ptr) (local.get $len)))
    (global.set $count (i32.add (global.get $count) (i32.const 1)))
    (call $log (i32.const 2) (i32.const 120) (i32.const 12))
    (i32.store8 (i32.sub (local.get $ptr) (i32.const 2))
      (i32.add (i32.const 48) (i32.rem_u (global.get $count) (i32.const 10))))
    (i32.store8 (i32.sub (local.get $ptr) (i32.const 1)) (i32.const 58))
    (call $result (i32.const 1) (i32.sub (local.get $ptr) (i32.const 2))
      (i32.add (local.get $len) (i32.const 2))))
"#;

/// Sends three messages to a fresh-instance server and returns how often `_initialize` logged.
fn reactor_inits(path: &std::path::Path, args: &[&str]) -> usize {
    let server = Server::builder()
        .plugin(path)
        .args(["--isolation", "message", "--workers", "1"])
        .args(args)
        .start();
    let mut c = server.connect();
    for m in ["a", "b", "c"] {
        // Every instance starts where `_initialize` left it, pre-initialized or not.
        c.send_line(m);
        c.expect_line(&format!("6:{m}"));
    }
    server.assert_no_call_failed();
    // An instance's "init ran" is logged before its "message seen".
    wait_until("three messages logged", Duration::from_secs(10), || {
        server.log_lines_containing("message seen").len() >= 3
    });
    server.log_lines_containing("init ran").len()
}

#[test]
fn core_module_initialize_runs_once_at_load_unless_told_otherwise() {
    let dir = TempDir::new("core-preinit");
    let path = module(&dir, "reactor", REACTOR);
    // Once at load (none when the pre-initialized module came from the cache).
    let inits = reactor_inits(&path, &[]);
    assert!(inits <= 1, "`_initialize` ran {inits} times");
    // --no-preinit: at load (the trial instance) and in each message's instance (made anew
    // for each with --no-reset; reset in place, the worker's one instance ran it once).
    let inits = reactor_inits(&path, &["--no-preinit", "--no-reset"]);
    assert!(inits >= 4, "`_initialize` ran {inits} times");
    let inits = reactor_inits(&path, &["--no-preinit", "--no-cache"]);
    assert_eq!(inits, 2, "`_initialize` ran {inits} times");
}

#[test]
fn core_module_wizer_cannot_snapshot_still_runs_initialize_in_every_instance() {
    let dir = TempDir::new("core-preinit-no");
    // `table.copy` is one of the instructions a snapshot cannot account for.
    let body = format!(
        "{REACTOR} (table 1 funcref) \
         (func $copies (table.copy (i32.const 0) (i32.const 0) (i32.const 0)))"
    );
    let path = module(&dir, "reactor", &body);
    let inits = reactor_inits(&path, &["--no-cache", "--no-reset"]);
    assert!(inits >= 4, "`_initialize` ran {inits} times");
}

#[test]
fn core_module_initialize_that_traps_is_a_load_error() {
    let dir = TempDir::new("core-preinit-trap");
    let path = module(
        &dir,
        "reactor",
        r#"(func (export "_initialize") unreachable)
           (func (export "sandport_on_message") (param i64 i32 i32) (result i32)
             (call $result (i32.const 0) (i32.const 0) (i32.const 0)))"#,
    );
    let (code, stderr) = Server::builder()
        .plugin(&path)
        .arg("--no-cache")
        .run_expect_failure();
    assert_ne!(code, 0);
    assert!(stderr.contains("unreachable"), "{stderr}");
}
