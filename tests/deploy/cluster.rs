//! Three hosts run with the systemd unit's flags, behind a real HAProxy running
//! deploy/haproxy.cfg, sharing a real Redis (`--state redis://`): chat clients on different
//! hosts talk in one room; a client's per-IP rate limit holds on every host (its address comes
//! through the PROXY header); `kill -9` of a host under load loses no acknowledged write and
//! its clients carry on through the others while theirs never notice; SIGTERM of a host answers
//! every message it applied; a Redis restart under load is `unavailable` replies, never a hang,
//! then rooms across hosts work again.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use super::haproxy::haproxy_cfg_here;
use super::systemd::unit_args_here;
use super::*;
use crate::metrics::{scrape, value};

/// The hosts, their balancer and their Redis.
struct Cluster {
    hosts: Vec<Server>,
    metrics: Vec<SocketAddr>,
    front: SocketAddr,
    haproxy: Haproxy,
    redis: RedisServer,
    _dirs: Vec<TempDir>,
}

impl Cluster {
    /// Three hosts of `plugin` (with `extra` flags) on one Redis, behind HAProxy.
    fn start(plugin: &Path, extra: &[&str]) -> Cluster {
        let redis = RedisServer::start();
        let mut hosts = Vec::new();
        let mut dirs = Vec::new();
        for _ in 0..3 {
            let dir = TempDir::new("cluster");
            let mut args = unit_args_here(&dir, Some("127.0.0.1/32"));
            set_flag(&mut args, "--state", &redis.url());
            set_flag(&mut args, "--plugin", &plugin.display().to_string());
            args.extend(extra.iter().map(|a| a.to_string()));
            hosts.push(Server::builder().no_default_listen().args(&args).start());
            dirs.push(dir);
        }
        let metrics: Vec<SocketAddr> = hosts.iter().map(metrics_addr).collect();
        let front = free_addr();
        let servers: Vec<_> = hosts.iter().map(|h| h.addr).zip(metrics.clone()).collect();
        let cfg = dirs[0].write("haproxy.cfg", haproxy_cfg_here(front, &servers).as_bytes());
        let haproxy = Haproxy::start(&cfg, front);
        Cluster {
            hosts,
            metrics,
            front,
            haproxy,
            redis,
            _dirs: dirs,
        }
    }

    /// A client through the balancer, from `ip`.
    fn connect_from(&self, ip: [u8; 4]) -> Client {
        Client::connect_from(ip, self.front)
    }

    /// Connections open on host `i`, by its metrics.
    fn open_on(&self, i: usize) -> u64 {
        value(&scrape(self.metrics[i]), "sandport_connections_open", &[]).unwrap_or(0.0) as u64
    }

    fn dump(&self) -> String {
        format!("{}{}", self.haproxy.said.dump(), self.haproxy.logged.dump())
    }
}

/// Replaces the value after `flag` in `args`.
fn set_flag(args: &mut [String], flag: &str, value: &str) {
    let at = args
        .iter()
        .position(|a| a == flag)
        .expect("the unit has the flag");
    args[at + 1] = value.to_string();
}

/// Reads lines until `expected`, skipping notices (`* NAME joined ROOM`, `* NAME left ROOM`):
/// a publish from another host still in flight when a client joins may reach it (at most once,
/// never out of order), as a notice of a join just before its own.
fn expect_after_notices(c: &mut Client, expected: &str) {
    loop {
        let line = c.line();
        if line == expected {
            return;
        }
        assert!(
            line.starts_with("* "),
            "expected {expected:?}, got {line:?}"
        );
    }
}

/// The next line that is not a notice.
fn next_not_notice(c: &mut Client) -> String {
    loop {
        let line = c.line();
        if !line.starts_with("* ") {
            return line;
        }
    }
}

/// The host tag of a chat welcome's `guest<ID>` (ids carry their host in their upper bits).
fn host_of(welcome: &str) -> u64 {
    let id: u64 = welcome
        .strip_prefix("welcome guest")
        .and_then(|id| id.parse().ok())
        .unwrap_or_else(|| panic!("not a welcome: {welcome:?}"));
    id >> 40
}

#[test]
fn chat_clients_on_different_hosts_share_a_room_and_survive_a_redis_restart() {
    let mut cluster = Cluster::start(&plugins_dir().join("chat.wasm"), &[]);
    let mut clients = Vec::new();
    let mut names = Vec::new();
    for i in 0..3u8 {
        let mut c = cluster.connect_from([127, 0, 0, 2 + i]);
        let welcome = c
            .recv_line(REPLY_TIMEOUT)
            .unwrap_or_else(|e| panic!("no welcome through haproxy: {e:?}\n{}", cluster.dump()));
        names.push((host_of(&welcome), welcome["welcome ".len()..].to_string()));
        clients.push(c);
    }
    // leastconn gives each new client the emptiest host: one client on each.
    let mut tags: Vec<u64> = names.iter().map(|n| n.0).collect();
    tags.dedup();
    assert_eq!(tags.len(), 3, "{names:?}");
    let [a, b, c] = &mut clients[..] else {
        unreachable!()
    };
    a.roundtrip("/nick ada", "you are ada");
    b.roundtrip("/nick bob", "you are bob");
    a.roundtrip("/join lobby", "joined lobby");
    b.send_line("/join lobby");
    expect_after_notices(b, "joined lobby");
    a.expect_line("* bob joined lobby");
    c.send_line("/join lobby");
    expect_after_notices(c, "joined lobby");
    let joined = format!("* {} joined lobby", names[2].1);
    a.expect_line(&joined);
    expect_after_notices(b, &joined);
    a.send_line("hello from the first host");
    expect_after_notices(b, "ada: hello from the first host");
    expect_after_notices(c, "ada: hello from the first host");
    // The member list is written to Redis behind the calls: every host's soon lists all three.
    let all = {
        let mut all = ["ada".to_string(), "bob".into(), names[2].1.clone()];
        all.sort();
        all.join(" ")
    };
    for client in [&mut *a, &mut *b, &mut *c] {
        wait_until("/who lists every host's member", REPLY_TIMEOUT, || {
            client.send_line("/who");
            client.line() == all
        });
    }

    drop(clients.pop());
    let left = format!("* {} left lobby", names[2].1);
    clients[0].expect_line(&left);
    clients[1].expect_line(&left);
    for host in &cluster.hosts {
        host.assert_no_call_failed();
    }

    // Redis restarts (empty: no persistence here). Once every host has subscribed again, new
    // clients on two hosts talk again. The first state call on each host may fail (its pooled
    // connection died with Redis), closing that client: it connects again.
    drop(clients);
    cluster.redis.restart();
    let subscribed = |m: &SocketAddr| value(&scrape(*m), "sandport_bus_subscribed", &[]);
    wait_until("every host subscribed again", REPLY_TIMEOUT, || {
        cluster.metrics.iter().all(|m| subscribed(m) == Some(1.0))
    });
    let mut fresh: Vec<(u64, String, Client)> = Vec::new();
    for _ in 0..12 {
        let mut c = cluster.connect_from([127, 0, 0, 7]);
        if let Ok(welcome) = c.recv_line(REPLY_TIMEOUT) {
            if fresh.iter().all(|f| f.0 != host_of(&welcome)) {
                fresh.push((host_of(&welcome), welcome["welcome ".len()..].into(), c));
            }
        }
        if fresh.len() == 2 {
            break;
        }
    }
    let [(_, d_name, d), (_, _, e)] = &mut fresh[..] else {
        panic!(
            "no two clients on two hosts after the restart\n{}",
            cluster.dump()
        );
    };
    for c in [&mut *d, &mut *e] {
        wait_until("the host's store answers", REPLY_TIMEOUT, || {
            c.send_line("/join lobby");
            next_not_notice(c) == "joined lobby"
        });
    }
    d.send_line("after the restart");
    expect_after_notices(e, &format!("{d_name}: after the restart"));
}

#[test]
fn a_clients_rate_limit_holds_on_every_host_behind_the_balancer() {
    let cluster = Cluster::start(
        &test_plugin("ratelimit"),
        &[
            "--config",
            "ratelimit.max=3",
            "--config",
            "ratelimit.window_ms=60000",
        ],
    );
    // A connection from 127.0.0.2 on each of the three hosts (the balancer chooses: connections
    // are opened one by one until each host has one, the others stay open and quiet); each
    // message counts once.
    let mut on_host: Vec<Option<Client>> = vec![None, None, None];
    let mut spare = Vec::new();
    while on_host.iter().any(Option::is_none) && spare.len() < 30 {
        let before: Vec<u64> = (0..3).map(|i| cluster.open_on(i)).collect();
        let c = cluster.connect_from([127, 0, 0, 2]);
        let host = eventually(REPLY_TIMEOUT, || {
            (0..3).find(|&i| cluster.open_on(i) > before[i])
        })
        .expect("the connection opens on a host");
        match on_host[host] {
            None => on_host[host] = Some(c),
            Some(_) => spare.push(c),
        }
    }
    let mut clients: Vec<Client> = (on_host.into_iter())
        .map(|c| c.expect("the balancer sends a connection to every host"))
        .collect();
    for (i, c) in clients.iter_mut().enumerate() {
        c.roundtrip(&format!("m{i}"), &format!("m{i}"));
    }
    // The fourth, on whichever host, is one too many; another address is not limited.
    clients[1].roundtrip("m3", "rate limit exceeded");
    let mut other = cluster.connect_from([127, 0, 0, 3]);
    other.roundtrip("hi", "hi");
}

/// What each load client had acknowledged, and how often it reconnected.
struct Load {
    stop: AtomicBool,
    /// Replies with a number, from all clients.
    served: AtomicU64,
    acked: Vec<AtomicU64>,
    reconnects: Vec<AtomicU64>,
    unavailable: AtomicU64,
    /// Whether each key only grows (not when Redis restarts empty).
    growing: bool,
}

/// `n` clients through the balancer, each incrementing its own key until `load.stop`, waiting
/// for every reply (a `unavailable` error counts, any other reply fails the test) and
/// reconnecting through the balancer when its connection closes.
fn run_load(front: SocketAddr, load: &Load, i: usize) {
    let mut c = Client::connect_from([127, 0, 0, 2], front);
    while !load.stop.load(Relaxed) {
        c.send_line(&format!("incr k{i} 1"));
        // The call's deadline is 1 s; a host dying mid-call closes the connection at once.
        match c.recv_line(Duration::from_secs(3)) {
            Ok(reply) => match reply.parse::<u64>() {
                Ok(n) => {
                    let before = load.acked[i].swap(n, Relaxed);
                    assert!(n > before || !load.growing, "k{i}: {n} after {before}");
                    load.served.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    assert!(reply.contains("unavailable"), "k{i}: {reply:?}");
                    load.unavailable.fetch_add(1, Relaxed);
                }
            },
            Err(RecvError::Closed(_)) => {
                load.reconnects[i].fetch_add(1, Relaxed);
                c = Client::connect_from([127, 0, 0, 2], front);
            }
            Err(e) => panic!("k{i}: no reply within 3 s: {e:?}"),
        }
    }
}

impl Load {
    fn new(n: usize, growing: bool) -> Load {
        Load {
            stop: AtomicBool::new(false),
            served: AtomicU64::new(0),
            growing,
            acked: (0..n).map(|_| AtomicU64::new(0)).collect(),
            reconnects: (0..n).map(|_| AtomicU64::new(0)).collect(),
            unavailable: AtomicU64::new(0),
        }
    }

    fn served(&self) -> u64 {
        self.served.load(Relaxed)
    }

    /// How many clients had to reconnect.
    fn reconnected(&self) -> u64 {
        self.reconnects
            .iter()
            .filter(|r| r.load(Relaxed) > 0)
            .count() as u64
    }

    /// Waits until the clients have been served `more` times from now.
    fn wait_for(&self, more: u64, what: &str) {
        let until = self.served() + more;
        wait_until(what, Duration::from_secs(20), || self.served() >= until);
    }

    /// Each key's value now, read through the balancer. Until its checks mark a killed host
    /// down, the balancer may still hand it a new connection, which then closes: the reads
    /// change nothing, so they start over on a new connection.
    fn stored(&self, cluster: &Cluster) -> Vec<u64> {
        let read_all = || -> Option<Vec<u64>> {
            let mut c = cluster.connect_from([127, 0, 0, 9]);
            (0..self.acked.len())
                .map(|i| {
                    c.try_send_line(&format!("get k{i}")).ok()?;
                    let line = c.recv_line(REPLY_TIMEOUT).ok()?;
                    Some(line.parse().unwrap_or(0))
                })
                .collect()
        };
        eventually(Duration::from_secs(10), read_all).expect("the keys read through the balancer")
    }
}

/// Twelve clients under load, then `stop_host(host 1)`; returns the load and what host 1 had.
fn load_through_a_stop(cluster: &mut Cluster, stop_host: impl FnOnce(&mut Server)) -> (Load, u64) {
    let load = Load::new(12, true);
    let mut on_stopped = 0;
    std::thread::scope(|s| {
        for i in 0..12 {
            let (front, load) = (cluster.front, &load);
            s.spawn(move || run_load(front, load, i));
        }
        wait_until("twelve clients connected", REPLY_TIMEOUT, || {
            (0..3).map(|i| cluster.open_on(i)).sum::<u64>() >= 12
        });
        load.wait_for(600, "the clients are served");
        on_stopped = cluster.open_on(1);
        stop_host(&mut cluster.hosts[1]);
        load.wait_for(600, "the clients are served after the stop");
        load.stop.store(true, Relaxed);
    });
    (load, on_stopped)
}

#[test]
fn kill_9_of_a_host_under_load_loses_no_acknowledged_write() {
    let mut cluster = Cluster::start(&test_plugin("statetest"), &[]);
    let (load, on_killed) = load_through_a_stop(&mut cluster, |host| {
        host.signal(libc::SIGKILL);
    });
    let stored = load.stored(&cluster);
    for (i, &value) in stored.iter().enumerate() {
        let acked = load.acked[i].load(Relaxed);
        // The one in flight when its host died may or may not have been applied.
        assert!(
            value == acked || value == acked + 1,
            "k{i}: stored {value}, acknowledged {acked}"
        );
    }
    // Only the killed host's clients noticed.
    assert!(on_killed >= 1, "leastconn put clients on every host");
    assert_eq!(load.reconnected(), on_killed, "{}", cluster.dump());
    assert_eq!(load.unavailable.load(Relaxed), 0);
    for i in [0, 2] {
        cluster.hosts[i].assert_no_call_failed();
    }
}

#[test]
fn sigterm_of_a_host_under_load_answers_every_message_it_applied() {
    let mut cluster = Cluster::start(&test_plugin("statetest"), &[]);
    let (load, on_stopped) = load_through_a_stop(&mut cluster, |host| {
        host.signal(libc::SIGTERM);
        let exit = host.wait_exit(Duration::from_secs(15));
        assert_eq!(exit.and_then(|e| e.code()), Some(0));
    });
    let stored = load.stored(&cluster);
    for (i, &value) in stored.iter().enumerate() {
        // Every increment a host applied was answered, the draining host's included.
        assert_eq!(value, load.acked[i].load(Relaxed), "k{i}");
    }
    assert_eq!(load.reconnected(), on_stopped, "{}", cluster.dump());
    for host in &cluster.hosts {
        host.assert_no_call_failed();
    }
}

#[test]
fn a_redis_restart_under_load_through_the_balancer_never_hangs() {
    let mut cluster = Cluster::start(&test_plugin("statetest"), &[]);
    let load = Load::new(6, false);
    std::thread::scope(|s| {
        for i in 0..6 {
            let (front, load) = (cluster.front, &load);
            s.spawn(move || run_load(front, load, i));
        }
        load.wait_for(300, "the clients are served");
        let started = Instant::now();
        cluster.redis.stop();
        wait_until("the outage is answered", REPLY_TIMEOUT, || {
            load.unavailable.load(Relaxed) >= 20
        });
        cluster.redis.restart();
        load.wait_for(300, "the clients are served again");
        assert!(started.elapsed() < Duration::from_secs(20));
        load.stop.store(true, Relaxed);
    });
    assert_eq!(
        load.reconnected(),
        0,
        "an outage of the store closes no connection"
    );
    for host in &cluster.hosts {
        host.assert_no_call_failed();
    }
}
