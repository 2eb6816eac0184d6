//! The Redis backend's connections: a small pool shared by the workers, every command bounded
//! by its caller's deadline, and reconnection with backoff while Redis cannot be reached.
//!
//! A worker takes an idle connection (or opens one) for one command and puts it back after, so
//! workers never wait for each other on one socket; at most [`MAX_IDLE`] stay open between
//! calls. A connection that failed at the socket level (a timeout, a reset, end of file) may
//! still have a reply in flight, so it is dropped, never reused; and since such a failure
//! usually means Redis went away, the idle ones go too rather than failing one call each.
//!
//! While Redis cannot be reached, connection attempts back off from [`BACKOFF_MIN`] doubling up
//! to [`BACKOFF_MAX`]; in between, every call fails at once with [`Unavailable::Backoff`]
//! instead of each worker trying (and waiting) again. One call at a time makes the next attempt,
//! so a restart is noticed within `BACKOFF_MAX` of Redis answering again.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ::redis::{Client, Connection, ConnectionLike, RedisError, RedisResult};

use crate::state::{StateError, Unavailable};

/// Connections kept open between calls: more than the workers of most hosts.
pub(super) const MAX_IDLE: usize = 64;
/// The first wait after a failed connection attempt.
pub(super) const BACKOFF_MIN: Duration = Duration::from_millis(50);
/// The longest wait between attempts: how late, at most, a host notices Redis is back.
pub(super) const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The longest a connection attempt may take, whatever the caller's deadline: a connect that
/// takes this long on a network fit for a shared store is a store that is not there.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

pub(super) struct Pool {
    client: Client,
    idle: Mutex<Vec<Connection>>,
    health: Mutex<Health>,
}

/// Connection attempts that failed in a row, and when the next one may be made.
#[derive(Default)]
struct Health {
    failures: u32,
    retry_at: Option<Instant>,
}

impl Pool {
    pub fn new(client: Client) -> Self {
        Pool {
            client,
            idle: Mutex::default(),
            health: Mutex::default(),
        }
    }

    /// Runs `command` on a connection, with socket timeouts set to what is left until
    /// `deadline`; every failure is `Unavailable`.
    pub fn run<T>(
        &self,
        deadline: Instant,
        command: impl FnOnce(&mut Connection) -> RedisResult<T>,
    ) -> Result<T, StateError> {
        let mut conn = self.take(deadline)?;
        let Some(left) = remaining(deadline) else {
            self.put(conn);
            return Err(StateError::deadline());
        };
        if let Err(e) = conn
            .set_read_timeout(Some(left))
            .and_then(|()| conn.set_write_timeout(Some(left)))
        {
            self.lost();
            return Err(StateError::store(e));
        }
        match command(&mut conn) {
            Ok(answer) => {
                self.put(conn);
                Ok(answer)
            }
            // An error reply (a script error, `LOADING` after a restart, `OOM`) leaves the
            // connection in step: keep it.
            Err(e) if conn.is_open() && !socket_level(&e) => {
                self.put(conn);
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
        if let Some(conn) = lock(&self.idle).pop() {
            return Ok(conn);
        }
        let now = Instant::now();
        {
            let mut health = lock(&self.health);
            if health.retry_at.is_some_and(|at| now < at) {
                return Err(StateError::Unavailable(Unavailable::Backoff));
            }
            if health.failures > 0 {
                // This call makes the attempt; the others keep failing fast meanwhile.
                health.retry_at = Some(now + backoff(health.failures));
            }
        }
        let Some(left) = remaining(deadline) else {
            return Err(StateError::deadline());
        };
        match self
            .client
            .get_connection_with_timeout(left.min(CONNECT_TIMEOUT))
        {
            Ok(conn) => {
                let mut health = lock(&self.health);
                if health.failures > 0 {
                    tracing::info!("state store reachable again: reconnected to Redis");
                }
                *health = Health::default();
                Ok(conn)
            }
            Err(e) => {
                let mut health = lock(&self.health);
                if health.failures == 0 {
                    tracing::warn!(
                        "state store unreachable, reconnecting with backoff: {}",
                        crate::error::report(&e)
                    );
                }
                health.failures = health.failures.saturating_add(1);
                health.retry_at = Some(Instant::now() + backoff(health.failures));
                Err(StateError::store(e))
            }
        }
    }

    fn put(&self, conn: Connection) {
        let mut idle = lock(&self.idle);
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// A connection failed at the socket level: the idle ones most likely share its fate.
    fn lost(&self) {
        let stale = std::mem::take(&mut *lock(&self.idle));
        drop(stale);
    }
}

/// The wait after `failures` failed attempts in a row.
fn backoff(failures: u32) -> Duration {
    let doubled = BACKOFF_MIN.saturating_mul(1 << failures.saturating_sub(1).min(16));
    doubled.min(BACKOFF_MAX)
}

fn remaining(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

fn socket_level(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_unrecoverable_error()
}

/// Nothing is left half-done while these locks are held (a pop, a push, a few fields).
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
