//! The acceptor thread: takes new clients off the listener, enforces `--max-connections`, and
//! hands each connection to the least loaded worker.

use std::io;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use crossbeam_channel::Sender;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};

use super::Shared;

const LISTENER: Token = Token(0);
const WAKER: Token = Token(1);
/// Refusals are logged at most this often, with a count, so a flood cannot flood the log too.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(1);
/// Pause after the process ran out of file descriptors, instead of spinning on accept.
const FD_BACKOFF: Duration = Duration::from_millis(20);

/// A new connection for a worker.
pub struct NewConn {
    pub stream: TcpStream,
    pub id: u64,
}

/// How the acceptor reaches one worker.
pub struct Inbox {
    pub tx: Sender<NewConn>,
    pub waker: Arc<Waker>,
}

pub struct Acceptor {
    poll: Poll,
    listener: TcpListener,
    waker: Arc<Waker>,
    inboxes: Vec<Inbox>,
    shared: Arc<Shared>,
    next_id: u64,
    refused_since_log: u64,
    last_refusal_log: Option<Instant>,
}

impl Acceptor {
    pub fn new(
        mut listener: TcpListener,
        inboxes: Vec<Inbox>,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Self> {
        let poll = Poll::new().context("cannot create the acceptor's event loop")?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .context("cannot watch the listening socket")?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER).context("cannot create a waker")?);
        Ok(Acceptor {
            poll,
            listener,
            waker,
            inboxes,
            shared,
            next_id: 1,
            refused_since_log: 0,
            last_refusal_log: None,
        })
    }

    pub fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub fn run(mut self) {
        let mut events = Events::with_capacity(64);
        while !self.shared.shutdown.is_triggered() {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!("acceptor event loop failed: {e}");
                    self.shared.shutdown.trigger();
                }
                continue;
            }
            // Listener readiness, or our own wake after a pause: either way, drain the queue.
            self.accept_all();
        }
        // Calls still running when the drain deadline passes are cut off like timeouts, so a
        // plugin stuck in a long call cannot hold shutdown past --shutdown-timeout-ms.
        let since = self.shared.shutdown.since().unwrap_or_else(Instant::now);
        self.shared
            .plugins
            .cutoff()
            .set(since + self.shared.config.shutdown_timeout);
        // Dropping the listener here makes new clients see a refused connection at once.
    }

    fn accept_all(&mut self) {
        loop {
            if self.shared.shutdown.is_triggered() {
                return;
            }
            match self.listener.accept() {
                Ok((stream, peer)) => self.admit(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) => {
                    tracing::warn!("out of file descriptors, pausing accept: {e}");
                    std::thread::sleep(FD_BACKOFF);
                    return self.rearm();
                }
                // A client that gave up before we took it; nothing to do.
                Err(e) if e.kind() == io::ErrorKind::ConnectionAborted => continue,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(FD_BACKOFF);
                    return self.rearm();
                }
            }
        }
    }

    /// Edge-triggered readiness will not fire again for clients already queued: ask again.
    fn rearm(&mut self) {
        let _ = self.waker.wake();
    }

    fn admit(&mut self, stream: TcpStream, peer: std::net::SocketAddr) {
        let max = self.shared.config.max_connections;
        if self.shared.open.load(SeqCst) >= max {
            self.shared.stats.refused.fetch_add(1, Relaxed);
            self.refused_since_log += 1;
            let now = Instant::now();
            if self
                .last_refusal_log
                .is_none_or(|t| now.duration_since(t) >= REFUSAL_LOG_EVERY)
            {
                tracing::warn!(
                    %peer,
                    refused = self.refused_since_log,
                    "connection refused: --max-connections {max} reached"
                );
                self.refused_since_log = 0;
                self.last_refusal_log = Some(now);
            }
            // Dropping the stream closes it: the client sees EOF at once.
            return;
        }
        self.shared.open.fetch_add(1, SeqCst);
        self.shared.stats.accepted.fetch_add(1, Relaxed);
        let _ = stream.set_nodelay(true);
        let id = self.next_id;
        self.next_id += 1;
        let (index, _) = self
            .shared
            .per_worker
            .iter()
            .enumerate()
            .min_by_key(|(_, n)| n.load(Relaxed))
            .expect("at least one worker");
        self.shared.per_worker[index].fetch_add(1, Relaxed);
        let inbox = &self.inboxes[index];
        if inbox.tx.send(NewConn { stream, id }).is_ok() {
            let _ = inbox.waker.wake();
        } else {
            // The worker is gone (shutting down); the stream was dropped with the message.
            self.shared.open.fetch_sub(1, SeqCst);
            self.shared.per_worker[index].fetch_sub(1, Relaxed);
        }
    }
}
