//! Messages between connections: which worker owns each connection, rooms and their members,
//! and delivery of bytes (or a close) to a connection through its owning worker's inbox.
//!
//! A handler on any worker may send to any connection. The bytes never touch the receiver's
//! buffers from another thread: they go to the owning worker's inbox (a channel and its event
//! loop's waker), which frames and queues them as a reply between two events. One channel per
//! receiving worker, filled in call order, keeps delivery in order per sender and receiver.
//!
//! Nothing buffers without bound: a receiver whose unsent output is over `--max-output-bytes`
//! once its worker has queued and written what was sent to it is a slow consumer (as Redis
//! treats a pub/sub client over its output limit): it is closed, what was queued for it is
//! dropped, and the sender is never blocked. Bytes still in the channel are capped too
//! ([`IN_FLIGHT_FACTOR`] caps per receiver).
//!
//! With a shared Redis ([`bus`]), ids name connections on every host, and sends, closes and
//! publishes reach the other hosts' connections too; `members` lists every host's.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed, Ordering::SeqCst};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Instant;

use crossbeam_channel::Sender;
use mio::Waker;

use bus::{Bus, Change};

pub mod bus;

/// What a worker's inbox carries for one of its connections.
pub enum Delivery {
    /// Bytes for the client, framed as a reply; one allocation shared by a publish's members.
    Bytes { to: u64, bytes: Arc<[u8]> },
    /// Close the connection once what is queued for it is written.
    Close { to: u64 },
    /// Too much is in flight to it: close it now, dropping its queued output.
    SlowConsumer { to: u64 },
}

/// Why a message was not accepted for delivery.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("no open connection has the id {0}")]
    UnknownConnection(u64),
    #[error("a connection may be in at most {0} rooms")]
    TooManyRooms(usize),
    #[error("a room name must be 1 to 256 bytes")]
    BadRoomName,
}

/// How to reach one open connection.
struct Route {
    worker: usize,
    /// Bytes sent to it and not yet taken by its worker.
    in_flight: Arc<AtomicUsize>,
    /// Set once it was found to be a slow consumer: later sends are dropped.
    slow: Arc<AtomicBool>,
    /// The rooms it is in.
    rooms: BTreeSet<String>,
    /// Its peer and local addresses, for `messaging.connection`.
    addresses: Arc<(String, String)>,
    /// Under mutual TLS, its client certificate's subject (`messaging.peer-certificate`).
    certificate: Option<Arc<str>>,
}

/// One worker's inbox.
pub struct Inbox {
    tx: Sender<Delivery>,
    waker: Arc<Waker>,
    /// Whether the worker has been woken since it last started taking deliveries: a publish to
    /// a thousand members on one worker then costs one wake-up (a syscall), not a thousand.
    woken: AtomicBool,
}

impl Inbox {
    pub fn new(tx: Sender<Delivery>, waker: Arc<Waker>) -> Self {
        Inbox {
            tx,
            waker,
            woken: AtomicBool::new(false),
        }
    }

    fn put(&self, delivery: Delivery) {
        // A worker that is gone (shutting down) drops the delivery with its connections.
        // SeqCst pairs with `taking`: either this sees the flag cleared and wakes the worker, or
        // the worker clears it before draining and finds this delivery.
        if self.tx.send(delivery).is_ok() && !self.woken.swap(true, SeqCst) {
            let _ = self.waker.wake();
        }
    }
}

/// Shared by every worker and handler of a server.
pub struct Messenger {
    routes: RwLock<HashMap<u64, Route>>,
    rooms: Mutex<HashMap<String, BTreeSet<u64>>>,
    inboxes: Vec<Inbox>,
    /// `--max-output-bytes`: what may wait for one receiver, in flight and unsent together.
    max_output: usize,
    max_rooms: usize,
    /// The hosts sharing this one's Redis, if it has one.
    bus: Option<Arc<Bus>>,
}

/// How many `--max-output-bytes` may be in flight to one receiver (sent, not yet taken by its
/// worker) before it is closed: its worker is that far behind. With what it has not read (at
/// most one cap), a receiver holds at most `1 + IN_FLIGHT_FACTOR` caps of the host's memory.
pub const IN_FLIGHT_FACTOR: usize = 4;

/// Rooms one connection may be in at once (a quota: each membership costs memory and makes
/// every publish to the room do work). The contract 0.2 wiring makes it a flag.
pub const MAX_ROOMS_PER_CONNECTION: usize = 16;

/// The longest room name, in bytes.
const MAX_ROOM_NAME: usize = 256;

impl Messenger {
    pub fn new(inboxes: Vec<Inbox>, max_output: usize, max_rooms: usize) -> Self {
        Messenger {
            routes: RwLock::default(),
            rooms: Mutex::default(),
            inboxes,
            max_output,
            max_rooms,
            bus: None,
        }
    }

    /// Reaches the other hosts on `bus` too; its threads start with [`Messenger::start_bus`].
    pub fn with_bus(mut self, bus: Arc<Bus>) -> Self {
        self.bus = Some(bus);
        self
    }

    /// Starts the bus's threads, if there is a bus; they stop when the messenger is dropped.
    pub fn start_bus(self: &Arc<Self>) -> std::io::Result<()> {
        match &self.bus {
            Some(bus) => bus.start(Arc::downgrade(self)),
            None => Ok(()),
        }
    }

    /// The id of the host's first connection: 1, or with a bus its host's first.
    pub fn first_id(&self) -> u64 {
        self.bus.as_ref().map_or(1, |b| b.first_id())
    }

    /// Connection `id`, from `peer` to `local`, is open on `worker`.
    pub(crate) fn register(&self, id: u64, worker: usize, peer: &str, local: &str) {
        self.register_with(id, worker, peer, local, None);
    }

    /// [`Messenger::register`], for a connection whose client showed a verified TLS
    /// certificate with this subject.
    pub(crate) fn register_with(
        &self,
        id: u64,
        worker: usize,
        peer: &str,
        local: &str,
        certificate: Option<&str>,
    ) {
        let route = Route {
            certificate: certificate.map(Arc::from),
            worker,
            in_flight: Arc::default(),
            slow: Arc::default(),
            rooms: BTreeSet::new(),
            addresses: Arc::new((peer.to_owned(), local.to_owned())),
        };
        self.routes_mut().insert(id, route);
    }

    /// Connection `id` is gone: it leaves its rooms, and sends to it fail from now on.
    pub(crate) fn unregister(&self, id: u64) {
        let Some(route) = self.routes_mut().remove(&id) else {
            return;
        };
        let mut rooms = self.rooms();
        for name in route.rooms {
            if let Some(members) = rooms.get_mut(&name) {
                members.remove(&id);
                if members.is_empty() {
                    rooms.remove(&name);
                }
            }
            self.changed(|| Change::Leave { id, room: name });
        }
    }

    /// Worker `worker` is about to drain its inbox: what arrives from now on wakes it again.
    pub(crate) fn taking(&self, worker: usize) {
        self.inboxes[worker].woken.store(false, SeqCst);
    }

    /// The worker took `n` bytes for `id` off its inbox.
    pub(crate) fn taken(&self, id: u64, n: usize) {
        if let Some(route) = self.routes_read().get(&id) {
            route.in_flight.fetch_sub(n, Relaxed);
        }
    }

    /// Open connection `id`'s peer and local addresses.
    pub fn addresses(&self, id: u64) -> Option<Arc<(String, String)>> {
        self.routes_read().get(&id).map(|r| r.addresses.clone())
    }

    /// Open connection `id`'s client certificate subject: `Err` if it is not open on this host,
    /// `Ok(None)` if its client showed no certificate (no mutual TLS).
    pub fn certificate(&self, id: u64) -> Result<Option<Arc<str>>, SendError> {
        let routes = self.routes_read();
        let route = routes.get(&id).ok_or(SendError::UnknownConnection(id))?;
        Ok(route.certificate.clone())
    }

    /// Sends `bytes` to connection `to`, framed as a reply; never blocks on the receiver. A
    /// receiver over its output cap is closed as a slow consumer instead, which is not the
    /// sender's error. One on another host is reached through the bus, by `deadline`.
    pub fn send(&self, to: u64, bytes: &[u8], deadline: Instant) -> Result<(), SendError> {
        if self.send_local(to, bytes) {
            return Ok(());
        }
        self.remote(to, Some(bytes), deadline)
    }

    /// Sends `bytes` to `to` if it is open on this host; whether it is.
    pub(crate) fn send_local(&self, to: u64, bytes: &[u8]) -> bool {
        let routes = self.routes_read();
        let Some(route) = routes.get(&to) else {
            return false;
        };
        // A slow consumer's loss is not the sender's error: it is closed, and the send succeeds.
        self.deliver(to, route, &Arc::from(bytes));
        true
    }

    /// A send (or a close, for `None`) to `to` on another host.
    fn remote(&self, to: u64, bytes: Option<&[u8]>, deadline: Instant) -> Result<(), SendError> {
        match &self.bus {
            // A Redis that cannot be reached cannot tell whether the connection is open.
            Some(bus) if bus.is_remote(to) => match bus.direct(to, bytes, deadline) {
                Ok(true) => Ok(()),
                Ok(false) | Err(_) => Err(SendError::UnknownConnection(to)),
            },
            _ => Err(SendError::UnknownConnection(to)),
        }
    }

    /// Queues `bytes` for `to`; false when it will not get them: it is a slow consumer (found
    /// now or before) about to be closed by its worker.
    fn deliver(&self, to: u64, route: &Route, bytes: &Arc<[u8]>) -> bool {
        if route.slow.load(Relaxed) {
            return false;
        }
        let inbox = &self.inboxes[route.worker];
        let before = route.in_flight.fetch_add(bytes.len(), Relaxed);
        if before + bytes.len() > self.max_output * IN_FLIGHT_FACTOR {
            route.in_flight.fetch_sub(bytes.len(), Relaxed);
            route.slow.store(true, Relaxed);
            inbox.put(Delivery::SlowConsumer { to });
            return false;
        }
        inbox.put(Delivery::Bytes {
            to,
            bytes: bytes.clone(),
        });
        true
    }

    /// Closes connection `to` once what is queued for it is written.
    pub fn close(&self, to: u64, deadline: Instant) -> Result<(), SendError> {
        if self.close_local(to) {
            return Ok(());
        }
        self.remote(to, None, deadline)
    }

    /// Closes `to` if it is open on this host; whether it is.
    pub(crate) fn close_local(&self, to: u64) -> bool {
        let routes = self.routes_read();
        let Some(route) = routes.get(&to) else {
            return false;
        };
        self.inboxes[route.worker].put(Delivery::Close { to });
        true
    }

    /// Connection `id` joins `room` (nothing changes if it is in it already).
    pub fn join(&self, id: u64, room: &str) -> Result<(), SendError> {
        if room.is_empty() || room.len() > MAX_ROOM_NAME {
            return Err(SendError::BadRoomName);
        }
        let mut routes = self.routes_mut();
        let route = routes
            .get_mut(&id)
            .ok_or(SendError::UnknownConnection(id))?;
        if !route.rooms.contains(room) && route.rooms.len() >= self.max_rooms {
            return Err(SendError::TooManyRooms(self.max_rooms));
        }
        if route.rooms.insert(room.to_string()) {
            self.changed(|| Change::Join {
                id,
                room: room.to_string(),
            });
        }
        self.rooms().entry(room.to_string()).or_default().insert(id);
        Ok(())
    }

    /// Connection `id` leaves `room`; returns whether it was in it.
    pub fn leave(&self, id: u64, room: &str) -> bool {
        let mut routes = self.routes_mut();
        let was_in = routes.get_mut(&id).is_some_and(|r| r.rooms.remove(room));
        if was_in {
            let mut rooms = self.rooms();
            if let Some(members) = rooms.get_mut(room) {
                members.remove(&id);
                if members.is_empty() {
                    rooms.remove(room);
                }
            }
            self.changed(|| Change::Leave {
                id,
                room: room.to_string(),
            });
        }
        was_in
    }

    /// The ids in `room`, in order: on every host sharing the bus (this host's alone if Redis
    /// does not answer by `deadline`).
    pub fn members(&self, room: &str, deadline: Instant) -> Vec<u64> {
        let mut ids = self.local_members(room);
        if let Some(remote) = self
            .bus
            .as_ref()
            .and_then(|b| b.members(room, deadline).ok())
        {
            ids.extend(remote);
            ids.sort_unstable();
            ids.dedup();
        }
        ids
    }

    fn local_members(&self, room: &str) -> Vec<u64> {
        self.rooms()
            .get(room)
            .map_or_else(Vec::new, |m| m.iter().copied().collect())
    }

    /// Every (connection, room) membership of this host, for the bus to rewrite.
    pub(crate) fn memberships(&self) -> Vec<(u64, String)> {
        let routes = self.routes_read();
        let rooms = routes
            .iter()
            .flat_map(|(id, r)| r.rooms.iter().map(|n| (*id, n.clone())));
        rooms.collect()
    }

    /// Sends `bytes` to every member of `room` (the sender `from` too only if `include_self`),
    /// on every host sharing the bus; returns how many it was queued for (not a slow consumer
    /// being closed; the other hosts' members as Redis counts them).
    pub fn publish(
        &self,
        from: u64,
        room: &str,
        bytes: &[u8],
        include_self: bool,
        deadline: Instant,
    ) -> usize {
        let skip = (!include_self).then_some(from);
        let mut sent = self.fan_out(room, skip, bytes);
        if let Some(bus) = &self.bus {
            // Unreachable, the other hosts' members miss it: as a slow consumer's would.
            let remote = bus.publish(room, from, bytes, deadline).unwrap_or(0);
            sent += usize::try_from(remote).unwrap_or(usize::MAX);
        }
        sent
    }

    /// Sends `bytes` to `room`'s members on this host but `skip`; how many it was queued for.
    pub(crate) fn fan_out(&self, room: &str, skip: Option<u64>, bytes: &[u8]) -> usize {
        let members = self.local_members(room);
        let routes = self.routes_read();
        let bytes: Arc<[u8]> = Arc::from(bytes);
        let mut sent = 0;
        for to in members {
            if Some(to) == skip {
                continue;
            }
            if let Some(route) = routes.get(&to) {
                sent += usize::from(self.deliver(to, route, &bytes));
            }
        }
        sent
    }

    /// Tells the bus, if any, of a membership change (made only then: without a bus a join
    /// allocates nothing more).
    fn changed(&self, change: impl FnOnce() -> Change) {
        if let Some(bus) = &self.bus {
            bus.changed(change());
        }
    }

    fn routes_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<u64, Route>> {
        // A panicking thread cannot leave the map half-changed: every change is one insert or
        // remove.
        self.routes.read().unwrap_or_else(|e| e.into_inner())
    }

    fn routes_mut(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<u64, Route>> {
        self.routes.write().unwrap_or_else(|e| e.into_inner())
    }

    fn rooms(&self) -> MutexGuard<'_, HashMap<String, BTreeSet<u64>>> {
        self.rooms.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests;
