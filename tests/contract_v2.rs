//! Contract 0.2 (`wit/v0.2`, `sandport:plugin@0.2.0`) through the real binary, under the default
//! `--isolation message` unless a test says otherwise: host state (`wasi:keyvalue`, expiry,
//! quotas, namespaces, the file and Redis backends), messaging and rooms, and the plugins written on it
//! (`chat`, `ratelimit`, `statetest`, `echo2`), next to 0.1 plugins.
//!
//! Most tests drive `statetest`, which exposes every state and messaging operation as a line
//! protocol (see `guest-plugins/statetest`).

mod chat;
mod compat;
mod durability;
mod messaging;
mod namespaces;
mod quotas;
mod ratelimit;
mod redis;
mod slow_consumer;
mod state;

use crate::support::*;

/// A server running `statetest` with `args`.
fn statetest(args: &[&str]) -> Server {
    Server::builder()
        .plugin(test_plugin("statetest"))
        .args(args)
        .start()
}

/// Sends `line` and returns the reply line.
fn ask(client: &mut Client, line: &str) -> String {
    client.send_line(line);
    client
        .recv_line(REPLY_TIMEOUT)
        .unwrap_or_else(|e| panic!("no reply to {line:?}: {e:?}"))
}

/// The connection id of `client`, through statetest's `whoami`.
fn whoami(client: &mut Client) -> u64 {
    let reply = ask(client, "whoami");
    reply
        .parse()
        .unwrap_or_else(|_| panic!("whoami replied {reply:?}"))
}

/// The worker serving connection `id`, from its `connection opened` log line.
fn worker_of(server: &Server, id: u64) -> String {
    let id = id.to_string();
    let line =
        server.wait_for_log_where(LOG_TIMEOUT, &format!("connection opened conn={id}"), |l| {
            l.contains("connection opened") && log_field(l, "conn").as_deref() == Some(&id)
        });
    log_field(&line, "worker").unwrap_or_else(|| panic!("no worker= in {line}"))
}

/// Asserts that `reply` is an error line (`error: ...`) and returns what follows `error: `.
fn expect_error(reply: &str, to: &str) -> String {
    match reply.strip_prefix("error: ") {
        Some(what) => what.to_string(),
        None => panic!("expected an error in reply to {to:?}, got {reply:?}"),
    }
}
