//! The plugin authors' tools: `sandport check` (load and describe a plugin) and `sandport call`
//! (one connect / message / disconnect cycle in-process, no socket).

use std::io::Write;
use std::sync::Arc;

use crate::server::messaging::{Delivery, Inbox, Messenger};
use std::time::Instant;

use crate::config::Config;
use crate::error::Error;
use crate::plugin::bindings::Connection;
use crate::plugin::{ConnInstances, CutOff, Plugins, WorkerPool};

/// What the sandbox does with an import, by the interface it belongs to.
fn sandbox_note(import: &str) -> Option<&'static str> {
    const NOTES: &[(&str, &str)] = &[
        (
            "wasi:filesystem",
            "files: denied (no preopened directories)",
        ),
        (
            "wasi:sockets",
            "network: denied (no TCP, UDP or name lookups)",
        ),
        ("wasi:cli/environment", "environment and arguments: empty"),
        ("wasi:cli/stdin", "stdin: empty"),
        ("wasi:cli/stdout", "stdout: lines go to the host's log"),
        ("wasi:cli/stderr", "stderr: lines go to the host's log"),
        ("wasi:cli/exit", "exit: ends the call with an error"),
        (
            "wasi:clocks",
            "clocks: allowed; sleeps end by the call's deadline",
        ),
        ("wasi:random", "random: allowed"),
        (
            "wasi_snapshot_preview1::path_",
            "files: denied (no preopened directories)",
        ),
        ("wasi_snapshot_preview1::sock_", "network: denied"),
        ("wasi_snapshot_preview1::environ", "environment: empty"),
        ("wasi_snapshot_preview1::args", "arguments: empty"),
        (
            "wasi_snapshot_preview1::fd_write",
            "stdout/stderr: lines go to the host's log",
        ),
        (
            "wasi_snapshot_preview1::proc_exit",
            "exit: ends the call with an error",
        ),
        (
            "wasi_snapshot_preview1::poll_oneoff",
            "sleep: ends by the call's deadline",
        ),
        ("wasi_snapshot_preview1::clock", "clocks: allowed"),
        ("wasi_snapshot_preview1::random", "random: allowed"),
    ];
    NOTES
        .iter()
        .find(|(prefix, _)| import.starts_with(prefix))
        .map(|(_, note)| *note)
}

/// `sandport check`: loads the plugin as the server would and describes it on stdout.
pub fn check(config: &Config) -> Result<(), Error> {
    config.validate()?;
    let plugins = Plugins::load(config, CutOff::default())?;
    let plugin = &plugins.chain[0];
    let mut out = std::io::stdout().lock();
    let w = |out: &mut std::io::StdoutLock, s: String| {
        let _ = writeln!(out, "{s}");
    };
    w(
        &mut out,
        format!("plugin:  {} ({})", plugin.name, plugin.path.display()),
    );
    w(&mut out, format!("kind:    {}", plugin.kind.describe()));
    w(
        &mut out,
        format!(
            "size:    {} bytes, compiled and checked in {:.1} ms",
            plugin.size,
            plugin.load_time.as_secs_f64() * 1e3
        ),
    );
    w(&mut out, "imports:".into());
    for import in &plugin.imports {
        w(&mut out, format!("  {import}"));
    }
    let mut notes: Vec<&str> = plugin
        .imports
        .iter()
        .filter_map(|i| sandbox_note(i))
        .collect();
    notes.sort_unstable();
    notes.dedup();
    w(&mut out, "sandbox:".into());
    if notes.is_empty() {
        w(&mut out, "  (imports nothing the sandbox restricts)".into());
    }
    for note in notes {
        w(&mut out, format!("  {note}"));
    }
    w(
        &mut out,
        format!(
            "limits:  {} ms per call, {} bytes of memory per instance",
            config.timeout.as_millis(),
            config.memory_limit
        ),
    );
    w(&mut out, "ok: it can be served".into());
    Ok(())
}

/// A messenger with one worker's inbox and no event loop to wake but a private one (kept alive
/// by the caller): `call`'s only connection is its only route.
fn lone_messenger(
    config: &Config,
) -> std::io::Result<(
    Arc<Messenger>,
    crossbeam_channel::Receiver<Delivery>,
    mio::Poll,
)> {
    let poll = mio::Poll::new()?;
    let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0))?);
    let (tx, rx) = crossbeam_channel::unbounded();
    let messenger = Messenger::new(
        vec![Inbox::new(tx, waker)],
        config.max_output_bytes,
        config.max_rooms_per_connection,
    );
    Ok((Arc::new(messenger), rx, poll))
}

/// `sandport call`: on-connect, on-message with `message`, on-disconnect, on one connection;
/// replies go to stdout (one per line), the plugin's log lines to stderr. A failed hook is an
/// error (exit 1) after on-disconnect ran. The connection is the only one open: what a contract
/// 0.2 plugin sends it (by id, or through a room) is printed as `sent`.
pub fn call(config: &Config, message: &[u8]) -> Result<(), Error> {
    config.validate()?;
    let plugins = Arc::new(Plugins::load(config, CutOff::default())?);
    let (messenger, deliveries, _poll) = lone_messenger(config)
        .map_err(|e| Error::Runtime(anyhow::Error::new(e).context("cannot set up messaging")))?;
    let mut pool = WorkerPool::new(plugins, Some(messenger.clone()));
    let mut own = ConnInstances::default();
    let conn = Connection {
        id: 1,
        peer: "127.0.0.1:40000".into(),
        local: "127.0.0.1:7000".into(),
    };
    messenger.register(conn.id, 0, &conn.peer, &conn.local);
    let mut out = std::io::stdout().lock();
    let mut emit = |label: &str, bytes: &[u8]| {
        let _ = writeln!(out, "{label}: {}", String::from_utf8_lossy(bytes));
    };
    // What plugins sent the connection, in order, after the hook that sent it.
    let sent = |emit: &mut dyn FnMut(&str, &[u8])| {
        while let Ok(d) = deliveries.try_recv() {
            match d {
                Delivery::Bytes { bytes, .. } => emit("sent", &bytes),
                Delivery::Close { .. } => emit("close", b"a plugin closed the connection by id"),
                Delivery::SlowConsumer { .. } => emit("close", b"slow consumer"),
            }
        }
    };

    let started = Instant::now();
    let (greetings, connected, res) = pool.on_connect(&conn, &mut own);
    for g in &greetings {
        emit("greeting", g);
    }
    sent(&mut emit);
    let mut failure = res
        .as_ref()
        .err()
        .map(|e| format!("{}: {}", e.hook, e.cause));
    if matches!(res, Ok(false)) {
        match pool.on_message(&conn, &mut own, message) {
            Ok(outcome) => {
                match &outcome.reply {
                    Some(reply) => emit("reply", reply),
                    None => emit("reply", b"(none)"),
                }
                if outcome.close {
                    emit("close", b"the plugin asked to close the connection");
                }
            }
            Err(e) => failure = Some(format!("{}: {}", e.hook, e.cause)),
        }
        sent(&mut emit);
    }
    // As in the server, a closing connection has left its rooms before on-disconnect.
    messenger.unregister(conn.id);
    for e in pool.on_disconnect(&conn, &mut own, connected) {
        failure.get_or_insert(format!("{}: {}", e.hook, e.cause));
    }
    drop(out);
    tracing::debug!(ms = started.elapsed().as_secs_f64() * 1e3, "call finished");
    match failure {
        Some(f) => Err(Error::Runtime(anyhow::anyhow!("plugin call failed in {f}"))),
        None => Ok(()),
    }
}
