//! `--config PLUGIN.KEY=VALUE` and the SANDPORT_* environment variables.

use crate::support::*;

#[test]
fn upper_without_prefix_just_uppercases() {
    let server = Server::builder().plugin(plugin("upper")).start();
    let mut c = server.connect();
    c.send_line("hello, world");
    c.expect_line("HELLO, WORLD");
}

#[test]
fn upper_prefix_from_config() {
    let server = Server::builder()
        .plugin(plugin("upper"))
        .config("upper.prefix=[x] ")
        .start();
    let mut c = server.connect();
    c.send_line("hello");
    c.expect_line("[x] HELLO");
}

#[test]
fn config_value_may_contain_equals_sign() {
    let server = Server::builder()
        .plugin(plugin("upper"))
        .config("upper.prefix=a=b:")
        .start();
    let mut c = server.connect();
    c.send_line("x");
    c.expect_line("a=b:X");
}

#[test]
fn config_for_other_key_is_not_seen() {
    let server = Server::builder()
        .plugin(plugin("upper"))
        .config("upper.other=zzz")
        .start();
    let mut c = server.connect();
    c.send_line("x");
    c.expect_line("X");
}

#[test]
fn config_for_plugin_not_loaded_is_rejected() {
    let (code, stderr) = Server::builder()
        .plugin(plugin("echo"))
        .config("upper.prefix=x")
        .run_expect_failure();
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(
        stderr.contains("upper"),
        "message names the plugin: {stderr}"
    );
}

#[test]
fn config_without_plugin_dot_key_is_rejected() {
    let (code, stderr) = Server::builder()
        .plugin(plugin("upper"))
        .config("prefix=x")
        .run_expect_failure();
    assert_eq!(code, 2, "stderr: {stderr}");
    assert!(stderr.contains("error"), "{stderr}");
}

#[test]
fn flags_can_come_from_environment_variables() {
    let server = Server::builder()
        .plugin(test_plugin("counter"))
        .env("SANDPORT_ISOLATION", "connection")
        .env("SANDPORT_FRAMING", "length")
        .start();
    let mut c = server.connect();
    for n in 1..=3 {
        c.send_frame(b"tick");
        let got = c.recv_frame(REPLY_TIMEOUT).expect("frame reply");
        assert_eq!(got, n.to_string().as_bytes());
    }
}

#[test]
fn command_line_flag_overrides_environment_variable() {
    let server = Server::builder()
        .plugin(plugin("echo"))
        .env("SANDPORT_FRAMING", "length")
        .args(["--framing", "line"])
        .start();
    let mut c = server.connect();
    c.send_line("line wins");
    c.expect_line("line wins");
}
