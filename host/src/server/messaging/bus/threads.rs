//! The bus's two threads: the subscriber, one Redis connection that receives what other hosts
//! send here and fans it out to this host's connections, and the writer, which keeps this
//! host's heartbeat and memberships in Redis. Both end once the messenger is gone.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError};

use super::wire::{self, Direct};
use super::{host_channel, Beat, Bus, Change, HEARTBEAT};
use crate::server::messaging::Messenger;

/// How long the subscriber blocks on its socket before it looks whether the messenger is gone.
const POLL: Duration = Duration::from_secs(1);
/// The first and the longest wait between the subscriber's connection attempts.
const RETRY_MIN: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// Membership changes written in one round trip at most.
const BATCH: usize = 256;

pub(super) fn spawn(
    bus: Arc<Bus>,
    messenger: Weak<Messenger>,
    changes: Receiver<Change>,
) -> std::io::Result<()> {
    let (b, m) = (bus.clone(), messenger.clone());
    std::thread::Builder::new()
        .name("sandport-bus-sub".into())
        .spawn(move || subscriber(&b, &m))?;
    std::thread::Builder::new()
        .name("sandport-bus-writer".into())
        .spawn(move || writer(&bus, &messenger, &changes))?;
    Ok(())
}

fn subscriber(bus: &Bus, messenger: &Weak<Messenger>) {
    let mut retry = RETRY_MIN;
    let mut first = true;
    while messenger.strong_count() > 0 {
        let Err(e) = listen(bus, messenger) else {
            return;
        };
        bus.counters.errors.fetch_add(1, Relaxed);
        // Redis went away: the pooled connections went with it, and would each fail one call
        // (a publish lost) once it is back.
        bus.pool.lost();
        if bus.counters.connected.swap(false, Relaxed) || first {
            retry = RETRY_MIN;
            tracing::warn!(
                "messaging bus: no Redis subscription, reconnecting (what other hosts send \
                 meanwhile is missed): {}",
                crate::error::report(&e)
            );
        }
        first = false;
        std::thread::sleep(retry);
        retry = (retry * 2).min(RETRY_MAX);
    }
}

/// Subscribes and delivers until the connection fails (an error) or the messenger is gone.
fn listen(bus: &Bus, messenger: &Weak<Messenger>) -> ::redis::RedisResult<()> {
    let mut conn = bus.client.get_connection_with_timeout(POLL)?;
    let mut sub = conn.as_pubsub();
    sub.set_read_timeout(Some(POLL))?;
    sub.psubscribe("sandport:room:*")?;
    sub.subscribe(host_channel(bus.tag))?;
    bus.counters.connected.store(true, Relaxed);
    tracing::info!(tag = bus.tag, "messaging bus: subscribed");
    loop {
        let msg = match sub.get_message() {
            Ok(msg) => msg,
            Err(e) if e.is_timeout() => {
                if messenger.strong_count() == 0 {
                    return Ok(());
                }
                continue;
            }
            Err(e) => return Err(e),
        };
        let Some(m) = messenger.upgrade() else {
            return Ok(());
        };
        bus.counters.received.fetch_add(1, Relaxed);
        let payload = msg.get_payload_bytes();
        let delivered = match msg.get_channel_name().strip_prefix("sandport:room:") {
            Some(room) => wire::parse_room(payload).map(|p| {
                if p.origin != bus.tag {
                    m.fan_out(room, None, p.bytes);
                }
            }),
            None => wire::parse_direct(payload).map(|d| match d {
                // A connection closed meanwhile: as a send to it on this host would be.
                Direct::Send { to, bytes } => drop(m.send_local(to, bytes)),
                Direct::Close { to } => drop(m.close_local(to)),
            }),
        };
        if delivered.is_none() {
            // Another version's or another program's: not ours to read.
            bus.counters.errors.fetch_add(1, Relaxed);
        }
    }
}

/// Writes membership changes in order; renews the heartbeat; after any failure (or dropped
/// changes) rewrites every membership this host has.
fn writer(bus: &Bus, messenger: &Weak<Messenger>, changes: &Receiver<Change>) {
    let mut next_beat = Instant::now();
    let mut batch = Vec::new();
    let mut conflict_logged = false;
    loop {
        let wait = next_beat.saturating_duration_since(Instant::now());
        match changes.recv_timeout(wait) {
            Ok(change) => {
                batch.push(change);
                batch.extend(changes.try_iter().take(BATCH - 1));
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(m) = messenger.upgrade() else {
            return;
        };
        let deadline = Instant::now() + HEARTBEAT;
        if Instant::now() >= next_beat || bus.resync.load(Relaxed) {
            next_beat = Instant::now() + HEARTBEAT;
            match bus.beat(deadline) {
                Ok(Beat::Renewed) => conflict_logged = false,
                // Redis lost the host's key (a restart), or others pruned the host meanwhile.
                Ok(Beat::Claimed) => bus.resync.store(true, Relaxed),
                Ok(Beat::Taken) if !conflict_logged => {
                    conflict_logged = true;
                    tracing::error!(
                        tag = bus.tag,
                        "messaging bus: another live host holds this host's tag; messages \
                         to connection ids may reach the wrong host until it stops"
                    );
                }
                Ok(Beat::Taken) => {}
                Err(_) => {
                    // The memberships wait for a heartbeat that succeeds: written without one,
                    // the others would prune them as a dead host's.
                    bus.resync.store(true, Relaxed);
                    batch.clear();
                    continue;
                }
            }
        }
        if bus.resync.swap(false, Relaxed) {
            // Everything the host has now supersedes whatever was queued before.
            changes.try_iter().for_each(drop);
            if bus.sync(&m.memberships(), deadline).is_err() {
                bus.resync.store(true, Relaxed);
            }
        } else if !batch.is_empty() && bus.write(&batch, deadline).is_err() {
            bus.resync.store(true, Relaxed);
        }
        batch.clear();
    }
}
