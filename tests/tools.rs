//! `sandport check` and `sandport call`, and the compile cache they share with the server.

use std::time::Duration;

use crate::support::*;

/// Runs `sandport ARGS` to completion, with the run's compile cache.
fn sandport(args: &[&str]) -> Finished {
    Server::builder().no_default_listen().args(args).run()
}

/// Runs `sandport ARGS` to completion with `cache` as its compile cache, for the tests of the
/// cache itself.
fn sandport_cached_in(args: &[&str], cache: &TempDir) -> Finished {
    Server::builder()
        .no_default_listen()
        .args(args)
        .env("SANDPORT_CACHE_DIR", cache.path())
        .run()
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn check_describes_a_component_and_what_the_sandbox_denies() {
    let plugin = test_plugin("sandbox");
    let r = sandport(&["check", path(&plugin)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    for want in [
        "kind:    component (world sandport:plugin/handler@0.1.0)",
        "wasi:filesystem/",
        "files: denied (no preopened directories)",
        "network: denied",
        "environment and arguments: empty",
        "random: allowed",
        "ok: it can be served",
    ] {
        assert!(
            r.stdout.contains(want),
            "missing {want:?} in:\n{}",
            r.stdout
        );
    }
}

#[test]
fn check_describes_a_core_module() {
    let dir = TempDir::new("check-core");
    let wat = dir.write(
        "echo.wat",
        br#"(module
  (import "sandport" "log" (func (param i32 i32 i32)))
  (memory (export "memory") 1)
  (func (export "sandport_abi_version") (result i32) (i32.const 1))
  (func (export "sandport_alloc") (param i32) (result i32) (i32.const 64))
  (func (export "sandport_free") (param i32 i32))
  (func (export "sandport_on_message") (param i64 i32 i32) (result i32) (i32.const 0)))"#,
    );
    let r = sandport(&["check", path(&wat)]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stdout
            .contains("core module (sandport core ABI version 1)"),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("sandport::log"), "{}", r.stdout);
}

#[test]
fn check_fails_with_exit_2_and_the_reason() {
    let r = sandport(&["check", path(&test_plugin("badimport"))]);
    assert_eq!(r.code, 2, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("sandport:extra/forbidden"),
        "{}",
        r.stderr
    );
    assert!(!r.stdout.contains("ok:"), "{}", r.stdout);

    let r = sandport(&["check", "/no/such/plugin.wasm"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("not found"), "{}", r.stderr);
}

#[test]
fn call_prints_the_reply_and_the_plugin_log() {
    let upper = plugin("upper");
    let r = sandport(&[
        "call",
        path(&upper),
        "--message",
        "hello",
        "--config",
        "upper.prefix=> ",
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(r.stdout, "reply: > HELLO\n");

    let r = sandport(&[
        "call",
        path(&test_plugin("lifecycle")),
        "--message",
        "close",
    ]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_eq!(
        r.stdout,
        "greeting: hello 1\nreply: bye\nclose: the plugin asked to close the connection\n"
    );
    assert!(
        r.stderr.contains("goodbye 1"),
        "on-disconnect ran:\n{}",
        r.stderr
    );
    assert!(
        r.stderr.contains("stdout from 1"),
        "plugin stdout is logged:\n{}",
        r.stderr
    );
}

#[test]
fn call_reads_the_message_from_a_file() {
    let dir = TempDir::new("call-file");
    let msg = dir.write("msg.txt", b"from a file");
    let r = sandport(&["call", path(&plugin("upper")), "--file", path(&msg)]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "reply: FROM A FILE\n");
}

/// The call's connection is the only one open: a contract 0.2 plugin can reach it by id, and
/// what it sends or asks is printed in order after the reply.
#[test]
fn call_shows_what_a_0_2_plugin_sends_its_own_connection() {
    let statetest = test_plugin("statetest");
    let r = sandport(&["call", path(&statetest), "--message", "send 1 hello"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout, "reply: ok\nsent: hello\n");
    let r = sandport(&["call", path(&statetest), "--message", "close 1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("close: "), "{}", r.stdout);
    let r = sandport(&["call", path(&statetest), "--message", "send 2 x"]);
    assert!(r.stdout.contains("unknown-connection"), "{}", r.stdout);
}

#[test]
fn call_reports_a_failing_hook_with_exit_1() {
    let r = sandport(&["call", path(&test_plugin("trap")), "--message", "x"]);
    assert_eq!(r.code, 1, "{}{}", r.stdout, r.stderr);
    assert!(
        r.stderr.contains("plugin call failed in on-message"),
        "{}",
        r.stderr
    );

    let r = sandport(&[
        "call",
        path(&test_plugin("spin")),
        "--message",
        "spin",
        "--timeout-ms",
        "100",
    ]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("deadline exceeded"), "{}", r.stderr);
}

#[test]
fn call_without_a_message_is_a_usage_error() {
    let r = sandport(&["call", path(&plugin("echo"))]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--message"), "{}", r.stderr);
}

fn files_under(dir: &std::path::Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() {
                files_under(&p)
            } else {
                1
            }
        })
        .sum()
}

#[test]
fn compiled_plugins_are_cached_unless_disabled() {
    let cache = TempDir::new("cache");
    let r = sandport_cached_in(&["check", "--no-cache", path(&plugin("echo"))], &cache);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        files_under(cache.path()),
        0,
        "--no-cache wrote to the cache"
    );

    let r = sandport_cached_in(&["check", path(&plugin("echo"))], &cache);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // wasmtime writes its entries in the background of the first compile.
    let filled = eventually(Duration::from_secs(10), || {
        (files_under(&cache.path().join("compiled")) > 0).then_some(())
    });
    assert!(
        filled.is_some(),
        "no compiled code was cached in {}",
        cache.path().display()
    );
    let r = sandport_cached_in(&["check", path(&plugin("echo"))], &cache);
    assert_eq!(r.code, 0, "a cached plugin loads too: {}", r.stderr);
}

#[test]
fn a_cache_folder_others_can_write_is_not_used_but_loading_goes_on() {
    let cache = TempDir::new("cache");
    let shared = cache.path().join("shared");
    std::fs::create_dir_all(shared.join("compiled")).unwrap();
    std::fs::set_permissions(
        shared.join("compiled"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let r = sandport_cached_in(
        &["check", "--cache-dir", path(&shared), path(&plugin("echo"))],
        &cache,
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains("compile cache disabled"), "{}", r.stderr);
    assert!(r.stderr.contains("writable by other users"), "{}", r.stderr);
    assert_eq!(
        files_under(&shared.join("compiled")),
        0,
        "nothing written there"
    );
}
