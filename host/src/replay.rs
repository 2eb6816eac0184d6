//! `sandport replay`: the sessions of a capture (`--record`) run in-process through another
//! chain, each reply compared with the recorded one, so an operator sees what a new version
//! would have answered real traffic before deploying it.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::error::Error;
use crate::plugin::bindings::Connection;
use crate::plugin::{ConnInstances, CutOff, Outcome as Reply, Plugins, WorkerPool};
use crate::record::format::{self, Event};
use crate::record::writer::captures_in;

/// How many differences are shown in full.
const SHOWN: usize = 5;

/// One recorded session: who, and each message with what the chain did with it.
#[derive(Debug, Default)]
struct Session {
    run: u64,
    conn: u64,
    peer: Option<String>,
    greetings: Vec<Vec<u8>>,
    exchanges: Vec<(Vec<u8>, Event)>,
    /// A message whose outcome was not recorded (the recording stopped or was cut).
    pending: Option<Vec<u8>>,
}

/// What a message got: its reply, none, or a failure (compared by kind, not by wording).
#[derive(Debug, PartialEq, Eq)]
enum Got {
    Reply(Vec<u8>),
    None,
    Failed(String),
}

impl Got {
    fn recorded(e: &Event) -> Got {
        match e {
            Event::Reply(b) => Got::Reply(b.clone()),
            Event::Failed(why) => Got::Failed(why.clone()),
            _ => Got::None,
        }
    }

    fn describe(&self) -> String {
        match self {
            Got::Reply(b) => format!("reply {:?}", String::from_utf8_lossy(b)),
            Got::None => "no reply".into(),
            Got::Failed(why) => format!("failed ({why})"),
        }
    }
}

/// Reads every session of `capture` (a capture file, or a `--record` folder).
fn sessions(capture: &Path) -> Result<(Vec<Session>, usize), Error> {
    let bad = |why: String| Error::config(format!("capture {}: {why}", capture.display()));
    let files = if capture.is_dir() {
        let files = captures_in(capture).map_err(|e| bad(e.to_string()))?;
        if files.is_empty() {
            return Err(bad("the folder holds no *.spcap file".into()));
        }
        files
    } else {
        vec![capture.to_path_buf()]
    };
    let mut by_key: BTreeMap<(u64, u64), usize> = BTreeMap::new();
    let mut all: Vec<Session> = Vec::new();
    let mut orphans = 0;
    for file in &files {
        let unreadable = |why: String| Error::config(format!("capture {}: {why}", file.display()));
        let bytes = std::fs::read(file).map_err(|e| unreadable(e.to_string()))?;
        let c = format::read(&bytes).map_err(|e| unreadable(e.to_string()))?;
        if c.cut_short {
            tracing::warn!(file = %file.display(), "the capture ends in a record: that one is left out");
        }
        for r in c.records {
            let key = (c.run, r.conn);
            let i = match (by_key.get(&key), &r.event) {
                (Some(&i), _) => i,
                (None, Event::Connect { .. }) => {
                    by_key.insert(key, all.len());
                    all.push(Session {
                        run: c.run,
                        conn: r.conn,
                        ..Session::default()
                    });
                    all.len() - 1
                }
                // Its connect was in a file deleted by rotation: it cannot be replayed whole.
                (None, _) => {
                    orphans += 1;
                    continue;
                }
            };
            let s = &mut all[i];
            match r.event {
                Event::Connect { peer } => s.peer = Some(peer),
                Event::Greeting(g) => s.greetings.push(g),
                Event::Message(m) => s.pending = Some(m),
                Event::Close { .. } => {}
                outcome => {
                    if let Some(m) = s.pending.take() {
                        s.exchanges.push((m, outcome));
                    }
                }
            }
        }
    }
    Ok((all, orphans))
}

/// Replays `capture` through `config`'s chain; prints a summary and the first differences on
/// stdout; an error (exit 1) when any reply differs, exit 2 for a capture that cannot be read.
pub fn replay(config: &Config, capture: &Path) -> Result<(), Error> {
    config.validate()?;
    let (sessions, orphans) = sessions(capture)?;
    let plugins = Arc::new(Plugins::load(config, CutOff::default())?);
    let mut pool = WorkerPool::new(plugins, None);
    let (mut messages, mut differ, mut shown) = (0usize, 0usize, String::new());
    let mut note = |what: String| {
        differ += 1;
        if differ <= SHOWN {
            let _ = writeln!(shown, "  {what}");
        }
    };
    for s in &sessions {
        let conn = Connection {
            id: s.conn,
            peer: s.peer.clone().unwrap_or_default(),
            local: "replay".into(),
        };
        let who = format!("session {}/{} ({})", s.run, s.conn, conn.peer);
        let mut own = ConnInstances::default();
        let (greetings, connected, res) = pool.on_connect(&conn, &mut own);
        if greetings != s.greetings {
            note(format!(
                "{who} greeting: recorded {:?}, now {:?}",
                lossy(&s.greetings),
                lossy(&greetings)
            ));
        }
        if matches!(res, Ok(false)) {
            for (k, (message, recorded)) in s.exchanges.iter().enumerate() {
                messages += 1;
                let now = match pool.on_message(&conn, &mut own, message) {
                    Ok(Reply { reply: Some(b), .. }) => Got::Reply(b),
                    Ok(Reply { reply: None, .. }) => Got::None,
                    Err(e) => Got::Failed(e.cause.kind().to_string()),
                };
                let recorded = Got::recorded(recorded);
                if now != recorded {
                    note(format!(
                        "{who} message {} {:?}: recorded {}, now {}",
                        k + 1,
                        String::from_utf8_lossy(message),
                        recorded.describe(),
                        now.describe()
                    ));
                }
            }
        }
        pool.on_disconnect(&conn, &mut own, connected);
    }
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "replayed {} sessions, {messages} messages: {} same, {differ} differ",
        sessions.len(),
        messages.saturating_sub(differ)
    );
    if orphans > 0 {
        let _ = writeln!(
            out,
            "skipped {orphans} records of sessions whose start was rotated away"
        );
    }
    if differ > 0 {
        let _ = write!(out, "first differences:\n{shown}");
        return Err(Error::Runtime(anyhow::anyhow!(
            "{differ} replies differ from the recorded ones"
        )));
    }
    Ok(())
}

fn lossy(items: &[Vec<u8>]) -> Vec<String> {
    items
        .iter()
        .map(|b| String::from_utf8_lossy(b).into_owned())
        .collect()
}
