//! The Redis backend's connections: a small pool shared by the workers, every command bounded
//! by its caller's deadline, and reconnection with backoff while Redis cannot be reached.
//!
//! A worker takes an idle connection for one call and puts it back after, so workers never wait
//! for each other on one socket; at most [`MAX_IDLE`] stay open between calls. A connection that
//! failed at the socket level (a timeout, a reset, end of file) may still have a reply in
//! flight, so it is dropped, never reused; and since such a failure usually means Redis went
//! away, the idle ones go too rather than failing one call each.
//!
//! **Connecting** runs on a short-lived thread of its own: redis-rs bounds each read of its
//! connection handshake by the timeout, not the handshake as a whole, so a frozen Redis could
//! hold a caller for several timeouts. The caller waits for the thread's answer only until its
//! deadline; a connection made after that goes to the pool. At most [`MAX_CONNECTING`]
//! attempts run at once; a caller finding none idle and no attempt slot free waits (until its
//! deadline) for a connection to come back.
//!
//! While Redis cannot be reached, attempts back off from [`BACKOFF_MIN`] doubling up to
//! [`BACKOFF_MAX`]; in between, every call fails at once with [`Unavailable::Backoff`] instead
//! of each worker trying (and waiting) again. One call at a time makes the next attempt, so a
//! restart is noticed within `BACKOFF_MAX` of Redis answering again.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, ConnectionLike, RedisError, RedisResult};
use crossbeam_channel::{bounded, RecvTimeoutError};

use crate::state::{StateError, Unavailable};

/// Connections kept open between calls: more than the workers of most hosts.
pub(super) const MAX_IDLE: usize = 64;
/// Connection attempts at once: enough to warm the pool up quickly, few enough that a Redis
/// which accepts but never answers ties up only this many threads.
pub(super) const MAX_CONNECTING: usize = 4;
/// The first wait after a failed connection attempt.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest wait between attempts: how late, at most, a host notices Redis is back.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// How long each step of a connection attempt may take (it runs on its own thread, so this
/// bounds the threads, not the callers): a connect that takes this long on a network fit for a
/// shared store is a store that is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub(crate) struct Pool {
    shared: Arc<Shared>,
}

struct Shared {
    client: Client,
    state: Mutex<State>,
    /// Signalled when a connection comes back to the pool or an attempt ends.
    changed: Condvar,
}

#[derive(Default)]
struct State {
    idle: Vec<Connection>,
    connecting: usize,
    /// Connection attempts that failed in a row, and when the next one may be made.
    failures: u32,
    retry_at: Option<Instant>,
}

impl Pool {
    pub fn new(client: Client) -> Self {
        Pool {
            shared: Arc::new(Shared {
                client,
                state: Mutex::default(),
                changed: Condvar::new(),
            }),
        }
    }

    /// Runs `command` on a connection, with socket timeouts set to what is left until
    /// `deadline` (a command of several steps calls [`bound`] again between them); every
    /// failure is `Unavailable`.
    pub fn run<T>(
        &self,
        deadline: Instant,
        command: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StateError> {
        let mut conn = self.take(deadline)?;
        if bound(&mut conn, deadline).is_err() {
            // Out of time before sending anything: the connection is still in step.
            self.shared.put(conn);
            return Err(StateError::deadline());
        }
        match command(&mut conn) {
            Ok(answer) => {
                self.shared.put(conn);
                Ok(answer)
            }
            // An error reply (a script error, `LOADING` after a restart, `OOM`) leaves the
            // connection in step: keep it.
            Err(e) if conn.is_open() && !socket_level(&e) => {
                self.shared.put(conn);
                Err(StateError::store(e))
            }
            Err(e) => {
                self.lost();
                if e.is_timeout() {
                    Err(StateError::deadline())
                } else {
                    Err(StateError::store(e))
                }
            }
        }
    }

    fn take(&self, deadline: Instant) -> Result<Connection, StateError> {
        let mut state = lock(&self.shared.state);
        loop {
            if let Some(conn) = state.idle.pop() {
                return Ok(conn);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(StateError::deadline());
            }
            if state.retry_at.is_some_and(|at| now < at) {
                return Err(StateError::Unavailable(Unavailable::Backoff));
            }
            if state.connecting < MAX_CONNECTING {
                if state.failures > 0 {
                    // This call makes the attempt; the others keep failing fast meanwhile.
                    state.retry_at = Some(now + backoff(state.failures));
                }
                state.connecting += 1;
                drop(state);
                return self.connect(deadline);
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Connects on a thread of its own and waits for it until `deadline`.
    fn connect(&self, deadline: Instant) -> Result<Connection, StateError> {
        let (answer, answered) = bounded(1);
        let shared = self.shared.clone();
        let attempt = move || {
            let result = shared.client.get_connection_with_timeout(CONNECT_TIMEOUT);
            shared.attempted(result.as_ref().err());
            match result {
                Ok(conn) => {
                    // The caller gave up meanwhile: the connection serves the next one.
                    if let Err(unsent) = answer.send(Ok(conn)) {
                        if let Ok(conn) = unsent.into_inner() {
                            shared.put(conn);
                        }
                    }
                }
                Err(e) => drop(answer.send(Err(e))),
            }
        };
        let spawned = std::thread::Builder::new()
            .name("sandport-redis-connect".into())
            .spawn(attempt);
        if let Err(e) = spawned {
            lock(&self.shared.state).connecting -= 1;
            self.shared.changed.notify_all();
            return Err(StateError::store(e));
        }
        match answered.recv_deadline(deadline) {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(StateError::store(e)),
            Err(RecvTimeoutError::Timeout) => Err(StateError::deadline()),
            Err(RecvTimeoutError::Disconnected) => {
                Err(StateError::Unavailable(Unavailable::Closed))
            }
        }
    }

    /// A connection failed at the socket level, or Redis was seen to go away (the messaging
    /// bus's subscription): the idle ones most likely share its fate.
    pub fn lost(&self) {
        let stale = std::mem::take(&mut lock(&self.shared.state).idle);
        drop(stale);
    }
}

impl Shared {
    fn put(&self, conn: Connection) {
        let mut state = lock(&self.state);
        if state.idle.len() < MAX_IDLE {
            state.idle.push(conn);
        }
        drop(state);
        self.changed.notify_one();
    }

    /// Records how a connection attempt ended (`failed`: why it failed).
    fn attempted(&self, failed: Option<&RedisError>) {
        let mut state = lock(&self.state);
        state.connecting -= 1;
        match failed {
            None => {
                if state.failures > 0 {
                    tracing::info!("state store reachable again: reconnected to Redis");
                }
                state.failures = 0;
                state.retry_at = None;
            }
            Some(e) => {
                if state.failures == 0 {
                    tracing::warn!(
                        "state store unreachable, reconnecting with backoff: {}",
                        crate::error::report(e)
                    );
                }
                state.failures = state.failures.saturating_add(1);
                state.retry_at = Some(Instant::now() + backoff(state.failures));
            }
        }
        drop(state);
        // Waiters look again: at the pool, at the free attempt slot, or at the backoff.
        self.changed.notify_all();
    }
}

/// Sets `conn`'s socket timeouts to what is left until `deadline`; a timeout error if nothing is.
pub(crate) fn bound(conn: &mut Connection, deadline: Instant) -> RedisResult<()> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        let timed_out = std::io::Error::new(std::io::ErrorKind::TimedOut, "deadline passed");
        return Err(timed_out.into());
    }
    conn.set_read_timeout(Some(left))?;
    conn.set_write_timeout(Some(left))
}

/// The wait after `failures` failed attempts in a row.
fn backoff(failures: u32) -> Duration {
    let doubled = BACKOFF_MIN.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(BACKOFF_MAX)
}

fn socket_level(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Nothing is left half-done while this lock is held (a pop, a push, a few fields).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        assert_eq!(backoff(1), BACKOFF_MIN);
        assert_eq!(backoff(2), BACKOFF_MIN * 2);
        assert_eq!(backoff(3), BACKOFF_MIN * 4);
        assert_eq!(backoff(100), BACKOFF_MAX);
    }
}
