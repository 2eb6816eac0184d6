//! How `--plugin` values and `--plugins-dir` are resolved.

use crate::support::*;

#[test]
fn bare_plugin_name_is_found_in_plugins_dir() {
    // Check the plugins are built, then refer to them by bare file name; the child
    // runs in an empty temp dir, so the name can only be found through --plugins-dir.
    plugin("echo");
    plugin("print");
    let server = Server::builder()
        .arg("--plugins-dir")
        .arg(plugins_dir())
        .args(["--plugin", "echo.wasm", "--plugin", "print.wasm"])
        .start();
    let mut c = server.connect();
    c.send_line("via bare names");
    server.wait_for_log("received: via bare names", LOG_TIMEOUT);
}

#[test]
fn bare_plugin_name_prefers_file_in_cwd() {
    // A file named upper.wasm in the cwd that is really echo wins over plugins-dir/upper.wasm.
    let cwd = TempDir::new("cwd-plugin");
    cwd.copy(&plugin("echo"), "upper.wasm");
    plugin("upper");
    let server = Server::builder()
        .cwd(cwd.path())
        .arg("--plugins-dir")
        .arg(plugins_dir())
        .args(["--plugin", "upper.wasm"])
        .start();
    let mut c = server.connect();
    c.send_line("lower");
    c.expect_line("lower");
}

#[test]
fn bare_plugin_name_missing_from_plugins_dir_is_an_error() {
    let dir = TempDir::new("empty-plugins");
    let (code, stderr) = Server::builder()
        .arg("--plugins-dir")
        .arg(dir.path())
        .args(["--plugin", "nosuch.wasm"])
        .run_expect_failure();
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("nosuch.wasm"),
        "message names the file: {stderr}"
    );
}

#[test]
fn no_plugin_flag_loads_every_wasm_in_plugins_dir_in_name_order() {
    let dir = TempDir::new("plugins-dir");
    // Created in reverse order so that name order differs from creation order.
    dir.copy(&test_plugin("lifecycle"), "2-lifecycle.wasm");
    dir.copy(&plugin("upper"), "1-upper.wasm");
    dir.write("notes.txt", b"not a plugin, must be ignored");
    dir.write("3-readme.md", b"also ignored");
    let server = Server::builder()
        .arg("--plugins-dir")
        .arg(dir.path())
        .start();
    let mut c = server.connect();
    // lifecycle is loaded: it greets.
    let id = greeting_id(&c.line());
    // upper runs first: lifecycle sees "CLOSE", not its "close" command, and echoes it.
    c.send_line("close");
    c.expect_line("CLOSE");
    c.send_line("abc");
    c.expect_line("ABC");
    drop(c);
    server.wait_for_log(&format!("goodbye {id}"), LOG_TIMEOUT);
}

#[test]
fn plugin_name_for_config_is_file_stem() {
    let dir = TempDir::new("plugins-stem");
    dir.copy(&plugin("upper"), "shout.wasm");
    let server = Server::builder()
        .arg("--plugins-dir")
        .arg(dir.path())
        .config("shout.prefix=! ")
        .start();
    let mut c = server.connect();
    c.send_line("hey");
    c.expect_line("! HEY");
}
