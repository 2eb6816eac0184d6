//! The fan-out scenario (contract 0.2 rooms): one sender and many members of one room, through
//! the `chat` example, under the default `--isolation message` and under `worker`.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

use serde::Deserialize;

use crate::scenarios::{median, thousands, Ctx, Section, Target};
use crate::server;

/// What `sandport-fanout` prints (the fields used here).
#[derive(Debug, Deserialize)]
pub struct FanoutReport {
    pub messages: u64,
    pub deliveries_per_sec: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: Vec<String>,
}

/// Messages in flight from the sender (each to every member) at most.
const WINDOW: usize = 4;

pub fn fanout(ctx: &mut Ctx, chat: &Path) -> Section {
    let members = if ctx.smoke { 50 } else { 1000 };
    let mut body = String::new();
    let mut targets = Vec::new();
    let _ = writeln!(
        body,
        "`sandport-fanout --members {members} --window {WINDOW}` against `sandport --plugin \
         plugins/chat.wasm --workers 2`: {members} clients `/join bench`, then one more sends \
         `fanout SEQ` lines, at most {WINDOW} of them not yet delivered to every member; each \
         line reaches the {members} others (`guestN: fanout SEQ`). A delivery is one line read \
         by one member; its latency runs from the send to that read, so it includes the wait \
         behind the other members of the same message. Median of {} rounds of {:.0} s.\n",
        ctx.rounds, ctx.secs
    );
    let _ = writeln!(
        body,
        "| isolation | deliveries/s | messages/s | p50 | p99 |\n| --- | ---: | ---: | ---: | ---: |"
    );
    for iso in ["message", "worker"] {
        let mut rates = Vec::new();
        let mut p50 = Vec::new();
        let mut p99 = Vec::new();
        for round in 1..=ctx.rounds {
            let what = format!("fan-out to {members}, --isolation {iso}, round {round}");
            match run_once(ctx, chat, iso, members) {
                Ok(r) if r.errors.is_empty() && r.messages > 0 => {
                    eprintln!(
                        "bench: {what}: {} deliveries/s, p99 {:.1} ms",
                        thousands(r.deliveries_per_sec),
                        r.p99_us / 1e3
                    );
                    rates.push(r.deliveries_per_sec);
                    p50.push(r.p50_us);
                    p99.push(r.p99_us);
                }
                Ok(r) => ctx.failures.push(format!(
                    "{what}: {} messages, errors: {}",
                    r.messages,
                    r.errors.join("; ")
                )),
                Err(e) => ctx.failures.push(format!("{what}: {e}")),
            }
        }
        let (rate, p50, p99) = (median(rates), median(p50), median(p99));
        let _ = writeln!(
            body,
            "| {iso} | {} | {} | {:.1} ms | {:.1} ms |",
            thousands(rate),
            thousands(rate / members as f64),
            p50 / 1e3,
            p99 / 1e3
        );
        targets.push(Target {
            what: format!("chat fan-out to {members} members, `--isolation {iso}`"),
            target: "reported (deliveries/s, p99)".into(),
            measured: format!("{} deliveries/s, p99 {:.1} ms", thousands(rate), p99 / 1e3),
            pass: None,
        });
    }
    Section {
        title: format!("Fan-out: one sender, {members} room members (contract 0.2)"),
        body,
        targets,
    }
}

fn run_once(ctx: &Ctx, chat: &Path, iso: &str, members: usize) -> Result<FanoutReport, String> {
    let max = (members + 100).to_string();
    let running = server::start_with(
        &ctx.bins,
        chat,
        &["--isolation", iso, "--max-connections", &max],
    )?;
    let report = run_fanout(ctx, running.addr, running.addr, members);
    running.stop();
    report
}

/// Runs `sandport-fanout`: `members` on `addr`, the sender on `sender`.
pub fn run_fanout(
    ctx: &Ctx,
    addr: SocketAddr,
    sender: SocketAddr,
    members: usize,
) -> Result<FanoutReport, String> {
    let fanout = ctx.bins.load.with_file_name("sandport-fanout");
    let out = Command::new(&fanout)
        .arg("--addr")
        .arg(addr.to_string())
        .arg("--sender-addr")
        .arg(sender.to_string())
        .args(["--members", &members.to_string()])
        .args(["--window", &WINDOW.to_string()])
        .args(["--duration", &format!("{}ms", (ctx.secs * 1e3) as u64)])
        .output()
        .map_err(|e| format!("cannot run {}: {e}", fanout.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).map_err(|e| {
        format!(
            "unreadable report ({e}): {text} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}
