//! With no `--plugin`, the plugins folder is the chain: a file added joins it, a file removed
//! leaves it (in name order), and removing the last one is refused.

use std::net::SocketAddr;

use super::{deploy, wait_reloads, wait_served};
use crate::metrics::{metrics_addr, scrape, wait_value};
use crate::support::*;

/// The plugin names of the chain's stages, in stage order, from `/metrics`.
fn stages(addr: SocketAddr) -> Vec<String> {
    let text = scrape(addr);
    let mut rows: Vec<(usize, String)> = text
        .lines()
        .filter(|l| l.starts_with("sandport_plugin_messages_total{") && l.contains("\"in\""))
        .map(|l| {
            let field = |k: &str| {
                let at = l.find(&format!("{k}=\"")).unwrap() + k.len() + 2;
                l[at..at + l[at..].find('"').unwrap()].to_string()
            };
            (field("stage").parse().unwrap(), field("plugin"))
        })
        .collect();
    rows.sort();
    rows.into_iter().map(|(_, p)| p).collect()
}

#[test]
fn files_added_and_removed_change_the_chain_and_the_last_is_kept() {
    let dir = TempDir::new("live-folder");
    dir.copy(&plugin("echo"), "a.wasm");
    let server = Server::builder()
        .arg("--plugins-dir")
        .arg(dir.path())
        .args(["--metrics-listen", "127.0.0.1:0"])
        .start();
    let metrics = metrics_addr(&server);
    let mut c = server.connect();
    c.roundtrip("hello", "hello");
    assert_eq!(stages(metrics), ["a"]);

    // Added: the chain is a then b, in name order.
    deploy(dir.path(), "b.wasm", &plugin("upper"));
    wait_reloads(metrics, "b", "loaded", 1.0);
    wait_served(&server, "hello", "HELLO");
    c.roundtrip("hello", "HELLO");
    assert_eq!(stages(metrics), ["a", "b"]);

    // Removed: b alone.
    std::fs::remove_file(dir.join("a.wasm")).unwrap();
    wait_reloads(metrics, "a", "removed", 1.0);
    assert_eq!(stages(metrics), ["b"]);
    c.roundtrip("hello", "HELLO");

    // The last one removed: refused, the chain stays.
    std::fs::remove_file(dir.join("b.wasm")).unwrap();
    wait_reloads(metrics, "b", "refused", 1.0);
    assert_eq!(stages(metrics), ["b"]);
    c.roundtrip("hello", "HELLO");
    wait_value(metrics, "sandport_plugin_chain_generation", &[], 2.0);

    // Files that are not plugins of the folder are not looked at.
    dir.write("notes.txt", b"not a plugin");
    dir.write(".hidden.wasm", b"not even wasm");
    deploy(dir.path(), "c.wasm", &plugin("echo"));
    wait_reloads(metrics, "c", "loaded", 1.0);
    assert_eq!(stages(metrics), ["c"]);
    assert_eq!(super::reloads(metrics, "hidden", "refused"), 0.0);
    assert_eq!(super::reloads(metrics, ".hidden", "refused"), 0.0);
    c.roundtrip("hello", "hello");
    server.assert_no_call_failed();
}
