//! The Redis scenario (`--state redis://`): what a Redis round trip costs a host's throughput
//! (the `statebench` plugin, 2 state calls per message, `memory` against `redis`), and what
//! rooms across hosts cost (the chat fan-out with the members on one host and the sender on
//! another, against both on one host), each set-up interleaved round after round. Runs its own
//! `redis-server` (Debian package `redis-server`) on a free loopback port.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::fanout::{self, FanoutReport};
use crate::scenarios::{median, thousands, Ctx, LoadSpec, Section, Target};
use crate::server;

/// A `redis-server` of the scenario's own, killed on drop.
struct RedisServer {
    child: Child,
    url: String,
}

impl RedisServer {
    fn start() -> Result<RedisServer, String> {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--loglevel", "warning"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start redis-server (Debian package redis-server): {e}"))?;
        let redis = RedisServer {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        };
        let until = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if Instant::now() > until {
                return Err("redis-server did not listen within 10 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(redis)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn redis(ctx: &mut Ctx, root: &Path) -> Section {
    let title = "Redis: state and rooms across hosts (`--state redis://`)".to_string();
    let redis = match RedisServer::start() {
        Ok(r) => r,
        Err(e) => {
            ctx.failures.push(format!("redis scenario: {e}"));
            return Section {
                title,
                body: format!("Not run: {e}\n"),
                targets: Vec::new(),
            };
        }
    };
    let mut body = String::new();
    let mut targets = Vec::new();
    state_cost(ctx, root, &redis.url, &mut body, &mut targets);
    rooms_across(ctx, root, &redis.url, &mut body, &mut targets);
    Section {
        title,
        body,
        targets,
    }
}

/// `statebench` with 2 state calls per message, 16 connections ping-pong: msg/s and p99.
fn state_cost(ctx: &mut Ctx, root: &Path, url: &str, body: &mut String, targets: &mut Vec<Target>) {
    let plugin = root.join("tests/plugins/statebench.wasm");
    let spec = LoadSpec::ping_pong(16, 64);
    let _ = writeln!(
        body,
        "**State calls.** `sandport --plugin tests/plugins/statebench.wasm --config \
         statebench.ops=2 --state STATE --workers 2`, 16 connections ping-pong, 64 B: each \
         message makes two state calls (a set and a get of a 64-byte value), each a Redis \
         round trip with `redis`; a worker waits for it, its other connections too. Median of \
         {} interleaved rounds of {:.0} s.\n",
        ctx.rounds, ctx.secs
    );
    let _ = writeln!(
        body,
        "| state | msg/s | p50 | p99 |\n| --- | ---: | ---: | ---: |"
    );
    let states = [("memory", "memory".to_string()), ("redis", url.to_string())];
    let mut results: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); 2];
    for round in 1..=ctx.rounds {
        for (i, (name, state)) in states.iter().enumerate() {
            let what = format!("statebench on {name}, round {round}");
            let args = ["--config", "statebench.ops=2", "--state", state];
            let running = match server::start_with(&ctx.bins, &plugin, &args) {
                Ok(r) => r,
                Err(e) => {
                    ctx.failures.push(format!("{what}: {e}"));
                    continue;
                }
            };
            if let Some(r) = ctx.run_load(running.addr, &spec, &what) {
                ctx.smoke_check(&what, &r);
                eprintln!("bench: {what}: {} msg/s", thousands(r.msgs_per_sec));
                results[i].0.push(r.msgs_per_sec);
                results[i].1.push(r.latency_us.p50);
                results[i].2.push(r.latency_us.p99);
            }
            running.stop();
        }
    }
    let mut rates = Vec::new();
    for ((name, _), (rate, p50, p99)) in states.iter().zip(results) {
        let (rate, p50, p99) = (median(rate), median(p50), median(p99));
        let _ = writeln!(
            body,
            "| {name} | {} | {p50:.0} µs | {p99:.0} µs |",
            thousands(rate)
        );
        rates.push(rate);
    }
    let _ = writeln!(
        body,
        "\n`redis` serves {:.2}x what `memory` does here: the round trips, with the load \
         generator, sandport and redis-server on the same cores.\n",
        rates[1] / rates[0]
    );
    targets.push(Target {
        what: "2 state calls per message on `redis` vs `memory`".into(),
        target: "reported (msg/s ratio)".into(),
        measured: format!(
            "{} vs {} msg/s ({:.2}x)",
            thousands(rates[1]),
            thousands(rates[0]),
            rates[1] / rates[0]
        ),
        pass: None,
    });
}

/// The chat fan-out to 100 members: one host on `memory`, one host on `redis`, and the sender
/// on a second host sharing the Redis.
fn rooms_across(
    ctx: &mut Ctx,
    root: &Path,
    url: &str,
    body: &mut String,
    targets: &mut Vec<Target>,
) {
    let chat = root.join("plugins/chat.wasm");
    let members = if ctx.smoke { 20 } else { 100 };
    let _ = writeln!(
        body,
        "**Rooms across hosts.** `sandport-fanout --members {members}` through \
         `plugins/chat.wasm` (as in the fan-out scenario): on one host with `memory` state, on \
         one host with `redis` state (each publish also goes through Redis, and the plugin's \
         two state reads per message are round trips), and with the members on one host and \
         the sender on another sharing the Redis (every delivery crosses Redis pub/sub). Median \
         of {} interleaved rounds.\n",
        ctx.rounds
    );
    let _ = writeln!(
        body,
        "| set-up | deliveries/s | p50 | p99 |\n| --- | ---: | ---: | ---: |"
    );
    let setups = ["one host, memory", "one host, redis", "two hosts, redis"];
    let mut results: Vec<(Vec<f64>, Vec<f64>, Vec<f64>)> = vec![Default::default(); 3];
    for round in 1..=ctx.rounds {
        for (i, setup) in setups.iter().enumerate() {
            let what = format!("fan-out to {members}, {setup}, round {round}");
            match fan_out_once(ctx, &chat, url, i, members) {
                Ok(r) if r.errors.is_empty() && r.messages > 0 => {
                    eprintln!(
                        "bench: {what}: {} deliveries/s",
                        thousands(r.deliveries_per_sec)
                    );
                    results[i].0.push(r.deliveries_per_sec);
                    results[i].1.push(r.p50_us);
                    results[i].2.push(r.p99_us);
                }
                Ok(r) => ctx.failures.push(format!(
                    "{what}: {} messages, errors: {}",
                    r.messages,
                    r.errors.join("; ")
                )),
                Err(e) => ctx.failures.push(format!("{what}: {e}")),
            }
        }
    }
    let mut rates = Vec::new();
    for (setup, (rate, p50, p99)) in setups.iter().zip(results) {
        let (rate, p50, p99) = (median(rate), median(p50), median(p99));
        let _ = writeln!(
            body,
            "| {setup} | {} | {:.1} ms | {:.1} ms |",
            thousands(rate),
            p50 / 1e3,
            p99 / 1e3
        );
        rates.push(rate);
    }
    targets.push(Target {
        what: format!("chat fan-out to {members} members across two hosts on one Redis"),
        target: "reported (vs one host on the same Redis)".into(),
        measured: format!(
            "{} vs {} deliveries/s ({:.2}x)",
            thousands(rates[2]),
            thousands(rates[1]),
            rates[2] / rates[1]
        ),
        pass: None,
    });
}

/// One fan-out run of set-up `setup` (0: memory, 1: redis, 2: two hosts on redis).
fn fan_out_once(
    ctx: &Ctx,
    chat: &Path,
    url: &str,
    setup: usize,
    members: usize,
) -> Result<FanoutReport, String> {
    let state = if setup == 0 { "memory" } else { url };
    let args = ["--state", state, "--max-connections", "1000"];
    let host = server::start_with(&ctx.bins, chat, &args)?;
    let sender = if setup == 2 {
        Some(server::start_with(&ctx.bins, chat, &args)?)
    } else {
        None
    };
    let sender_addr = sender.as_ref().map_or(host.addr, |s| s.addr);
    let report = fanout::run_fanout(ctx, host.addr, sender_addr, members);
    host.stop();
    if let Some(s) = sender {
        s.stop();
    }
    report
}
