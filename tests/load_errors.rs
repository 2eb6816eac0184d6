//! Startup failures: exit code 2 and an `error: ...` message naming the problem.

use std::net::TcpListener;
use std::path::Path;

use crate::support::*;

fn fails_with_plugin(path: &Path) -> (i32, String) {
    Server::builder().plugin(path).run_expect_failure()
}

fn assert_error_exit(code: i32, stderr: &str) {
    assert_eq!(code, 2, "expected exit code 2; stderr:\n{stderr}");
    assert!(
        stderr.contains("error"),
        "expected an `error: ...` message; stderr:\n{stderr}"
    );
}

#[test]
fn missing_plugin_file_names_the_path() {
    let dir = TempDir::new("missing");
    let path = dir.join("does-not-exist.wasm");
    let (code, stderr) = fails_with_plugin(&path);
    assert_error_exit(code, &stderr);
    assert!(
        stderr.contains(&*path.to_string_lossy()),
        "message includes the path {}:\n{stderr}",
        path.display()
    );
}

#[test]
fn text_file_is_not_wasm() {
    let dir = TempDir::new("text");
    let path = dir.write("notes.wasm", b"this is just some text, not WebAssembly\n");
    let (code, stderr) = fails_with_plugin(&path);
    assert_error_exit(code, &stderr);
    assert!(
        stderr.contains("notes.wasm"),
        "message names the file:\n{stderr}"
    );
    let without_path = stderr.replace(&*path.to_string_lossy(), "").to_lowercase();
    assert!(
        without_path.contains("wasm") || without_path.contains("webassembly"),
        "message says it is not WebAssembly:\n{stderr}"
    );
}

#[test]
fn empty_file_is_not_wasm() {
    let dir = TempDir::new("empty");
    let path = dir.write("empty.wasm", b"");
    let (code, stderr) = fails_with_plugin(&path);
    assert_error_exit(code, &stderr);
    assert!(stderr.contains("empty.wasm"), "{stderr}");
}

#[test]
fn empty_core_module_does_not_implement_the_core_abi() {
    let dir = TempDir::new("core");
    let path = dir.write("core.wasm", b"\0asm\x01\0\0\0");
    let (code, stderr) = fails_with_plugin(&path);
    assert_error_exit(code, &stderr);
    assert!(
        stderr.contains("core module") && stderr.contains("core ABI") && stderr.contains("memory"),
        "message says it is a core module missing the ABI's memory export:\n{stderr}"
    );
}

#[test]
fn component_without_on_message_is_rejected() {
    let (code, stderr) = fails_with_plugin(&test_plugin("noexport"));
    assert_error_exit(code, &stderr);
    assert!(
        stderr.contains("on-message"),
        "message names the missing export `on-message`:\n{stderr}"
    );
}

#[test]
fn component_with_forbidden_import_is_rejected() {
    let (code, stderr) = fails_with_plugin(&test_plugin("badimport"));
    assert_error_exit(code, &stderr);
    assert!(
        stderr.contains("forbidden"),
        "message names the forbidden import (sandport:extra/forbidden):\n{stderr}"
    );
}

#[test]
fn bad_plugin_later_in_chain_is_still_an_error() {
    let dir = TempDir::new("chain-bad");
    let core = dir.write("core.wasm", b"\0asm\x01\0\0\0");
    let (code, stderr) = Server::builder()
        .plugin(plugin("echo"))
        .plugin(&core)
        .run_expect_failure();
    assert_error_exit(code, &stderr);
    assert!(stderr.contains("core.wasm"), "{stderr}");
}

#[test]
fn address_in_use_is_a_load_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let (code, stderr) = Server::builder()
        .no_default_listen()
        .args(["--listen", &addr])
        .plugin(plugin("echo"))
        .run_expect_failure();
    assert_error_exit(code, &stderr);
    assert!(
        stderr.to_lowercase().contains("in use") || stderr.contains(&addr),
        "message says the address is in use:\n{stderr}"
    );
    drop(taken);
}

#[test]
fn unparsable_listen_address_is_rejected() {
    let (code, stderr) = Server::builder()
        .no_default_listen()
        .args(["--listen", "not-an-address"])
        .plugin(plugin("echo"))
        .run_expect_failure();
    assert_error_exit(code, &stderr);
}

fn assert_bad_flag(flag: &str, value: &str) {
    let (code, stderr) = Server::builder()
        .plugin(plugin("echo"))
        .arg(format!("{flag}={value}"))
        .run_expect_failure();
    assert_eq!(
        code, 2,
        "{flag} {value:?} should be rejected with exit code 2; stderr:\n{stderr}"
    );
    assert!(
        stderr.contains(flag.trim_start_matches('-')),
        "message names the flag {flag}:\n{stderr}"
    );
}

#[test]
fn workers_zero_is_rejected() {
    assert_bad_flag("--workers", "0");
}

#[test]
fn workers_not_a_number_is_rejected() {
    assert_bad_flag("--workers", "many");
}

#[test]
fn unknown_framing_is_rejected() {
    assert_bad_flag("--framing", "nope");
}

#[test]
fn unknown_isolation_is_rejected() {
    assert_bad_flag("--isolation", "nope");
}

#[test]
fn unparsable_memory_limit_is_rejected() {
    assert_bad_flag("--memory-limit", "lots");
}

#[test]
fn unparsable_max_message_bytes_is_rejected() {
    assert_bad_flag("--max-message-bytes", "12XB");
}

#[test]
fn config_without_equals_is_rejected() {
    assert_bad_flag("--config", "noequals");
}

#[test]
fn unknown_on_error_is_rejected() {
    assert_bad_flag("--on-error", "ignore");
}

#[test]
fn unknown_log_format_is_rejected() {
    assert_bad_flag("--log-format", "xml");
}

#[test]
fn negative_timeout_is_rejected() {
    assert_bad_flag("--timeout-ms", "-5");
}

#[test]
fn unknown_flag_is_rejected() {
    let (code, stderr) = run_expect_failure(["--no-such-flag"]);
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no-such-flag"), "{stderr}");
}

#[test]
fn size_suffixes_are_accepted() {
    // Not an error case: every documented size spelling starts the server.
    for size in ["1024", "64KiB", "1MiB", "128MB"] {
        let server = Server::builder()
            .plugin(plugin("echo"))
            .args(["--max-message-bytes", size, "--memory-limit", "64MiB"])
            .start();
        let mut c = server.connect();
        c.send_line("ok");
        c.expect_line("ok");
    }
}
