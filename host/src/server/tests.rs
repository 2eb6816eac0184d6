//! The server in-process: a worker's panic and the shutdown deadline, asserted on typed results
//! (the error `run` returns, the stats) rather than on log text.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::handler::{Connected, Handler};
use super::*;
use crate::plugin::bindings::Connection as ConnInfo;
use crate::plugin::{CallError, Outcome};

/// A core-ABI module whose `on-message` spins forever, unless the message is empty, which it
/// echoes (as nothing).
pub(crate) const SPIN: &str = r#"
(module
  (memory (export "memory") 1)
  (func (export "sandport_abi_version") (result i32) (i32.const 1))
  (func (export "sandport_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "sandport_free") (param i32 i32))
  (func (export "sandport_on_message") (param i64 i32 i32) (result i32)
    (if (i32.ne (local.get 2) (i32.const 0)) (then (loop $forever (br $forever))))
    (i32.const 0)))
"#;

/// Writes `text` to a file of its own (tests run in parallel: one shared path could be read
/// while another test rewrites it).
pub(crate) fn plugin_file(name: &str, text: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sandport-server-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.wat"));
    std::fs::write(&path, text).unwrap();
    path
}

fn config(shutdown_ms: u64) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        plugins: vec![plugin_file("spin", SPIN)],
        workers: 1,
        timeout: Duration::from_secs(60),
        shutdown_timeout: Duration::from_millis(shutdown_ms),
        cache_dir: None,
        ..Config::default()
    }
}

struct Running {
    addr: std::net::SocketAddr,
    shutdown: Shutdown,
    stats: Arc<Stats>,
    thread: JoinHandle<Result<(), Error>>,
}

fn start(
    cfg: Config,
    run: impl FnOnce(Server, TcpListener) -> Result<(), Error> + Send + 'static,
) -> Running {
    let server = Server::new(cfg).expect("the server loads");
    let listener = server.bind().expect("port 0 binds");
    Running {
        addr: listener.local_addr().unwrap(),
        shutdown: server.shutdown(),
        stats: server.stats(),
        thread: std::thread::spawn(move || run(server, listener)),
    }
}

/// Waits for `cond`, polling; panics after five seconds.
fn wait_until(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Panics on the first message, as a bug in the host would.
struct Panicking;

impl Handler for Panicking {
    type Session = ();

    fn on_connect(&mut self, _: &ConnInfo, _: &mut ()) -> Connected {
        (Vec::new(), 0, Ok(false))
    }

    fn on_message(&mut self, _: &ConnInfo, _: &mut (), _: &[u8]) -> Result<Outcome, CallError> {
        panic!("a bug in the handler");
    }

    fn on_disconnect(&mut self, _: &ConnInfo, _: &mut (), _: usize) -> Vec<CallError> {
        Vec::new()
    }
}

#[test]
fn a_worker_that_panics_closes_its_connections_and_stops_the_server_with_an_error() {
    let running = start(config(5000), |server, listener| {
        server.run_with(listener, |_, _| Panicking)
    });
    let mut idle = TcpStream::connect(running.addr).unwrap();
    let mut victim = TcpStream::connect(running.addr).unwrap();
    wait_until("both connections are open", || {
        running.stats.snapshot().accepted == 2
    });
    victim.write_all(b"boom\n").unwrap();

    let result = running
        .thread
        .join()
        .expect("run returns, it does not panic");
    assert!(
        matches!(result, Err(Error::ThreadPanicked(1))),
        "{result:?}"
    );
    assert_eq!(result.unwrap_err().exit_code(), 1);
    let stats = running.stats.snapshot();
    assert_eq!(stats.thread_panics, 1);
    assert_eq!((stats.open, stats.closed), (0, 2), "{stats:?}");
    assert!(running.shutdown.is_triggered());
    for client in [&mut idle, &mut victim] {
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        let n = client.read(&mut buf).unwrap_or(0);
        assert_eq!(n, 0, "the client sees its connection closed");
    }
}

#[test]
fn shutdown_ends_within_its_timeout_plus_one_tick_even_with_a_call_stuck() {
    let grace = Duration::from_millis(300);
    let running = start(config(grace.as_millis() as u64), |server, listener| {
        server.run(listener)
    });
    let mut stuck = TcpStream::connect(running.addr).unwrap();
    let idle: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(running.addr).unwrap())
        .collect();
    wait_until("every connection is open", || {
        running.stats.snapshot().open == 21
    });
    stuck.write_all(b"spin\n").unwrap();
    // The only worker is inside the call once it has read the message off the socket.
    wait_until("the call has started", || socket_drained(&stuck));

    let started = Instant::now();
    running.shutdown.trigger();
    let result = running.thread.join().expect("run returns");
    let took = started.elapsed();
    assert!(result.is_ok(), "{result:?}");
    let stats = running.stats.snapshot();
    assert_eq!(stats.timeouts, 1, "the stuck call is cut off: {stats:?}");
    // The worker noticed the shutdown only then: no on-disconnect may start past the deadline.
    assert_eq!(stats.cut_off, 21, "{stats:?}");
    assert_eq!((stats.open, stats.closed), (0, 21), "{stats:?}");
    // One epoch tick, plus room for thread wake-ups on a busy machine.
    let bound = grace + crate::plugin::limits::TICK + Duration::from_millis(100);
    assert!(took <= bound, "a {grace:?} shutdown took {took:?}");
    assert!(
        took >= grace - Duration::from_millis(5),
        "cut early: {took:?}"
    );
    drop(idle);
}

/// Whether the server has read everything `client` sent: nothing unsent on the client's side,
/// nothing unread in the server's socket (from `/proc/net/tcp`).
fn socket_drained(client: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut unsent: libc::c_int = 0;
    // SAFETY: TIOCOUTQ writes one int through the pointer we pass.
    let rc = unsafe { libc::ioctl(client.as_raw_fd(), libc::TIOCOUTQ, &mut unsent) };
    if rc != 0 || unsent != 0 {
        return false;
    }
    let (server, client) = (client.peer_addr().unwrap(), client.local_addr().unwrap());
    let (local, remote) = (
        format!(":{:04X}", server.port()),
        format!(":{:04X}", client.port()),
    );
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    table.lines().skip(1).any(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx_queue:rx_queue ...
        f.len() > 4
            && f[1].ends_with(&local)
            && f[2].ends_with(&remote)
            && f[4]
                .split(':')
                .nth(1)
                .is_some_and(|rx| u64::from_str_radix(rx, 16) == Ok(0))
    })
}

#[test]
fn connections_queued_when_shutdown_begins_are_served_not_reset() {
    let cfg = Config {
        native_echo: true,
        reuse_port: true,
        ..config(5000)
    };
    let server = Server::new(cfg).expect("the server loads");
    let listener = server.bind().expect("port 0 binds");
    let addr = listener.local_addr().unwrap();
    // Nobody accepts yet: the kernel completes these connections and queues them, as it does
    // for a busy server, or one sharing its port while the signal arrives.
    let mut clients: Vec<TcpStream> = (0..5)
        .map(|i| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(format!("queued {i}\n").as_bytes()).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            c
        })
        .collect();
    let stats = server.stats();
    server.shutdown().trigger();
    server.run(listener).expect("a clean drain");
    for (i, c) in clients.iter_mut().enumerate() {
        let mut got = String::new();
        c.read_to_string(&mut got)
            .unwrap_or_else(|e| panic!("client {i} lost: {e}"));
        assert_eq!(got, format!("queued {i}\n"), "answered, then closed");
    }
    let s = stats.snapshot();
    assert_eq!((s.accepted, s.messages), (5, 5));
    assert_eq!(s.closed_for(stats::Close::Shutdown), 5, "{s:?}");
}

#[test]
fn a_connection_without_a_message_yet_is_read_in_the_drain_until_its_first() {
    let cfg = Config {
        native_echo: true,
        ..config(5000)
    };
    let running = start(cfg, |server, listener| server.run(listener));
    let timeout = Some(Duration::from_secs(5));
    // A connection answered once: the drain closes it, which tells when the drain has begun.
    let mut witness = TcpStream::connect(running.addr).unwrap();
    witness.set_read_timeout(timeout).unwrap();
    witness.write_all(b"w\n").unwrap();
    let mut reply = [0; 2];
    witness.read_exact(&mut reply).unwrap();
    let mut client = TcpStream::connect(running.addr).unwrap();
    client.set_read_timeout(timeout).unwrap();
    wait_until("both are open", || running.stats.snapshot().open == 2);
    running.shutdown.trigger();
    let mut rest = Vec::new();
    witness.read_to_end(&mut rest).unwrap();
    // The drain began with the client open: its first message still counts (it saw `connect`
    // succeed before the shutdown, its message may have been on the wire).
    client.write_all(b"first\n").unwrap();
    let mut got = String::new();
    client.read_to_string(&mut got).unwrap();
    assert_eq!(got, "first\n", "answered, then closed");
    running.thread.join().unwrap().expect("a clean drain");
    assert_eq!(
        running.stats.snapshot().closed_for(stats::Close::Shutdown),
        2
    );
}
