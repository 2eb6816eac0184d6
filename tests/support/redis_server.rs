//! A real `redis-server` for tests: started on a free loopback port without persistence,
//! stopped (SIGKILL) when dropped, and stoppable and restartable on the same port to test a
//! store that goes away. Only `std`, so the library's unit tests include this file too.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

// Here rather than in `support`: the Redis backend's unit tests include this file alone, and
// need the installer too.
#[path = "debian.rs"]
pub mod debian;

/// How long a `redis-server` may take to answer `PING` after it is spawned.
const STARTUP: Duration = Duration::from_secs(10);

/// A running (or stopped) `redis-server`.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one on a free port; installs `redis-server` first if it is missing.
    pub fn start() -> Self {
        for _ in 0..5 {
            let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut server = RedisServer { port, child: None };
            // Another process may take the port between its release and redis's bind: retry.
            if server.spawn() {
                return server;
            }
        }
        panic!("redis-server did not start on any of five free ports");
    }

    /// `redis://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id while it runs (to freeze it with SIGSTOP, say).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills it (SIGKILL, as a crash would) and waits until it is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port, empty; panics if it does not come up.
    pub fn restart(&mut self) {
        self.stop();
        assert!(
            self.spawn(),
            "redis-server did not restart on port {}",
            self.port
        );
    }

    /// Spawns `redis-server` on `self.port`; whether it answers `PING` before [`STARTUP`].
    fn spawn(&mut self) -> bool {
        let child = Command::new(debian::debian_tool("redis-server", "redis-server"))
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--loglevel", "warning"])
            .current_dir(std::env::temp_dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let mut child = child.unwrap_or_else(|e| panic!("cannot run redis-server: {e}"));
        let until = Instant::now() + STARTUP;
        while Instant::now() < until {
            if ping(self.port) {
                self.child = Some(child);
                return true;
            }
            if let Ok(Some(_)) = child.try_wait() {
                return false; // most likely the port was taken
            }
            thread::sleep(Duration::from_millis(5));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether a Redis on `port` answers `PING` with `+PONG`.
fn ping(port: u16) -> bool {
    let answer = || -> std::io::Result<bool> {
        let mut s = TcpStream::connect((Ipv4Addr::LOCALHOST, port))?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.write_all(b"PING\r\n")?;
        let mut buf = [0; 7];
        s.read_exact(&mut buf)?;
        Ok(&buf == b"+PONG\r\n")
    };
    answer().unwrap_or(false)
}
