//! Namespaces: each plugin's `default` bucket is its own; `--shared-state NAME=PLUGIN,...`
//! shares a named one with the plugins it lists and no other. Two copies of `statetest` (two
//! plugin names) in one chain, tagged `a` and `b`: a line `a ...` runs in the first, `b ...` in
//! the second, and each answer passes through the other copy unchanged.

use crate::support::*;

/// A server with the chain `alpha.wasm` (tag `a`) then `beta.wasm` (tag `b`), copies of
/// statetest, and `args`.
fn two_plugins(dir: &TempDir, args: &[&str]) -> Server {
    let alpha = dir.copy(&test_plugin("statetest"), "alpha.wasm");
    let beta = dir.copy(&test_plugin("statetest"), "beta.wasm");
    Server::builder()
        .plugin(alpha)
        .plugin(beta)
        .config("alpha.tag=a")
        .config("beta.tag=b")
        .args(args)
        .start()
}

#[test]
fn each_plugin_has_its_own_default_bucket() {
    let dir = TempDir::new("namespaces");
    let server = two_plugins(&dir, &[]);
    let mut c = server.connect();
    // The chain passes untagged lines through: what the client sends to neither comes back.
    c.roundtrip("hello", "hello");
    c.roundtrip("a set k alpha's", "ok");
    c.roundtrip("b get k", "-");
    c.roundtrip("b exists k", "false");
    c.roundtrip("b set k beta's", "ok");
    c.roundtrip("a get k", "alpha's");
    c.roundtrip("b get k", "beta's");
    c.roundtrip("a incr n 5", "5");
    c.roundtrip("b incr n 1", "1");
    c.roundtrip("a keys", "k n");
    c.roundtrip("b del k", "ok");
    c.roundtrip("a get k", "alpha's");
    // A shared name nobody was given does not exist.
    c.roundtrip("a open common", "error: no-such-store");
    server.assert_no_call_failed();
}

#[test]
fn a_shared_namespace_is_shared_by_the_plugins_it_names_only() {
    let dir = TempDir::new("namespaces");
    let server = two_plugins(
        &dir,
        &[
            "--shared-state",
            "common=alpha,beta",
            "--shared-state",
            "mine=alpha",
        ],
    );
    let mut c = server.connect();
    c.roundtrip("a in common set k from alpha", "ok");
    c.roundtrip("b in common get k", "from alpha");
    c.roundtrip("b in common incr hits 2", "2");
    c.roundtrip("a in common incr hits 3", "5");
    // The shared bucket is not either plugin's default one.
    c.roundtrip("a get k", "-");
    c.roundtrip("b keys", "");
    c.roundtrip("a in mine set secret 1", "ok");
    c.roundtrip("b open mine", "error: access-denied");
    c.roundtrip("b in mine get secret", "error: access-denied");
    c.roundtrip("a in mine get secret", "1");
    c.roundtrip("b open nosuch", "error: no-such-store");
    server.assert_no_call_failed();
}
