//! Messengers of two "hosts" sharing a real `redis-server`: rooms, sends and closes across
//! them, members from both, a host that dies is pruned, and a Redis restart is recovered from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use mio::{Poll, Token, Waker};

use super::{tag_of, Bus, MAX_TAG, TAG_SHIFT};
use crate::metrics::BusCounters;
use crate::server::messaging::{Delivery, Inbox, Messenger, SendError};
use crate::state::redis::server::RedisServer;

/// One host: its messenger on the bus, what its one worker would take, its counters.
struct Host {
    m: Arc<Messenger>,
    inbox: Receiver<Delivery>,
    counters: Arc<BusCounters>,
    next: u64,
    _poll: Poll,
}

impl Host {
    fn start(redis: &RedisServer) -> Host {
        let poll = Poll::new().unwrap();
        let waker = Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let (tx, inbox) = crossbeam_channel::unbounded();
        let counters = Arc::new(BusCounters::default());
        let bus = Bus::open(&redis.url(), counters.clone()).unwrap();
        let m = Messenger::new(vec![Inbox::new(tx, waker)], 1 << 20, 16).with_bus(Arc::new(bus));
        let m = Arc::new(m);
        m.start_bus().unwrap();
        let host = Host {
            next: m.first_id(),
            m,
            inbox,
            counters,
            _poll: poll,
        };
        eventually("subscribed", || host.subscribed());
        host
    }

    fn subscribed(&self) -> bool {
        self.counters
            .connected
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// A new connection on this host.
    fn connect(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        self.m.register(id, 0, "peer", "local");
        id
    }

    /// The next delivery, within 10 s.
    fn take(&self) -> (u64, Option<Vec<u8>>) {
        match self.inbox.recv_timeout(Duration::from_secs(10)) {
            Ok(Delivery::Bytes { to, bytes }) => (to, Some(bytes.to_vec())),
            Ok(Delivery::Close { to }) => (to, None),
            Ok(Delivery::SlowConsumer { to }) => panic!("{to} found slow"),
            Err(e) => panic!("nothing delivered: {e}"),
        }
    }

    fn nothing_more(&self) {
        assert!(self.inbox.try_recv().is_err(), "an unexpected delivery");
    }
}

/// Ids in order (hosts' tags are random, so which host's ids come first is too).
fn sorted<const N: usize>(mut ids: [u64; N]) -> Vec<u64> {
    ids.sort_unstable();
    ids.to_vec()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(5)
}

/// Polls `done` every 10 ms for up to 15 s (a dead host's heartbeat lasts 5 s).
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(15);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ids_carry_their_host_and_stay_below_2_to_the_53() {
    let redis = RedisServer::start();
    let (one, two) = (Host::start(&redis), Host::start(&redis));
    let (a, b) = (one.m.first_id(), two.m.first_id());
    assert_ne!(tag_of(a), tag_of(b), "two live hosts never share a tag");
    for id in [a, b] {
        assert!((1..=MAX_TAG).contains(&tag_of(id)));
        assert_eq!(id & ((1 << TAG_SHIFT) - 1), 1);
        assert!(id < 1 << 53);
    }
    let bus = one.m.bus.as_ref().unwrap();
    assert!(bus.is_remote(b) && !bus.is_remote(a));
    assert!(
        !bus.is_remote(7),
        "an id of a host without the bus is nobody's"
    );
}

#[test]
fn a_room_spans_hosts_and_members_lists_both() {
    let redis = RedisServer::start();
    let (mut one, mut two) = (Host::start(&redis), Host::start(&redis));
    let (a, a2, b) = (one.connect(), one.connect(), two.connect());
    one.m.join(a, "lobby").unwrap();
    one.m.join(a2, "lobby").unwrap();
    two.m.join(b, "lobby").unwrap();
    // A join is reached by the next publish at once; counts and lists follow the writers.
    two.m.publish(b, "lobby", b"hi from two", false, soon());
    let mut got = [one.take(), one.take()];
    got.sort();
    assert_eq!(
        got,
        [
            (a, Some(b"hi from two".to_vec())),
            (a2, Some(b"hi from two".to_vec()))
        ]
    );
    two.nothing_more();
    eventually("both hosts' members listed on both", || {
        one.m.members("lobby", soon()) == sorted([a, a2, b])
            && two.m.members("lobby", soon()) == sorted([a, a2, b])
    });
    assert_eq!(
        one.m.publish(a, "lobby", b"x", false, soon()),
        2,
        "a2 here, b there"
    );
    assert_eq!(one.m.publish(a, "lobby", b"y", true, soon()), 3);
    one.m.leave(a2, "lobby");
    eventually("a2 gone from the other host's list", || {
        two.m.members("lobby", soon()) == sorted([a, b])
    });
    one.m.unregister(a);
    eventually("a closed: gone too", || {
        two.m.members("lobby", soon()) == sorted([b])
    });
}

#[test]
fn sends_and_closes_reach_a_connection_on_another_host() {
    let redis = RedisServer::start();
    let (mut one, mut two) = (Host::start(&redis), Host::start(&redis));
    let (a, b) = (one.connect(), two.connect());
    two.m.send(a, b"psst", soon()).unwrap();
    assert_eq!(one.take(), (a, Some(b"psst".to_vec())));
    two.m.close(a, soon()).unwrap();
    assert_eq!(one.take(), (a, None));
    one.m.send(b, b"back", soon()).unwrap();
    assert_eq!(two.take(), (b, Some(b"back".to_vec())));
    // A host nobody runs: nobody hears it.
    let tag = (1..=MAX_TAG)
        .find(|t| ![tag_of(a), tag_of(b)].contains(t))
        .unwrap();
    let nobody = tag << TAG_SHIFT | 1;
    assert_eq!(
        one.m.send(nobody, b"?", soon()),
        Err(SendError::UnknownConnection(nobody))
    );
    assert_eq!(
        one.m.close(nobody, soon()),
        Err(SendError::UnknownConnection(nobody))
    );
}

#[test]
fn a_dead_host_is_pruned_from_rooms() {
    let redis = RedisServer::start();
    let (mut one, mut two) = (Host::start(&redis), Host::start(&redis));
    let (a, b) = (one.connect(), two.connect());
    one.m.join(a, "lobby").unwrap();
    two.m.join(b, "lobby").unwrap();
    eventually("both members", || {
        two.m.members("lobby", soon()) == sorted([a, b])
    });
    // Gone without a word (as kill -9): its threads stop, its heartbeat expires.
    drop(one);
    eventually("the dead host's member pruned", || {
        two.m.members("lobby", soon()) == sorted([b])
    });
    assert_eq!(two.m.publish(b, "lobby", b"anyone?", false, soon()), 0);
}

#[test]
fn after_a_redis_restart_memberships_and_messages_come_back() {
    let mut redis = RedisServer::start();
    let (mut one, mut two) = (Host::start(&redis), Host::start(&redis));
    let (a, b) = (one.connect(), two.connect());
    one.m.join(a, "lobby").unwrap();
    two.m.join(b, "lobby").unwrap();
    eventually("both members", || {
        two.m.members("lobby", soon()) == sorted([a, b])
    });
    redis.restart();
    // Redis came back empty: each host rewrites what it has, and subscribes again.
    eventually("memberships rewritten", || {
        one.subscribed() && two.m.members("lobby", soon()) == sorted([a, b])
    });
    eventually("messages flow again", || {
        two.m.publish(b, "lobby", b"back", false, soon()) == 1
    });
    assert_eq!(one.take(), (a, Some(b"back".to_vec())));
}

#[test]
fn without_redis_a_host_falls_back_to_its_own_view() {
    let mut redis = RedisServer::start();
    let (mut one, two) = (Host::start(&redis), Host::start(&redis));
    let (a, a2) = (one.connect(), one.connect());
    one.m.join(a, "lobby").unwrap();
    one.m.join(a2, "lobby").unwrap();
    redis.stop();
    let remote = two.m.first_id();
    let started = Instant::now();
    assert_eq!(one.m.members("lobby", soon()), [a, a2]);
    assert_eq!(one.m.publish(a, "lobby", b"local", false, soon()), 1);
    assert_eq!(one.take(), (a2, Some(b"local".to_vec())));
    assert_eq!(
        one.m.send(remote, b"?", soon()),
        Err(SendError::UnknownConnection(remote))
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "bounded by the deadline"
    );
}
