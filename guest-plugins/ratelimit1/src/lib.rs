//! `ratelimit1`: the 0.1 `ratelimit`, kept as the test plugin of the SDK's 0.1 API (`Handler`,
//! `export_handler!`, `config_parse`, `log`, `Response`): echoes every message, but at most `max`
//! messages (default 5) per `window_ms` milliseconds (default 1000) on a connection; the first
//! message over the limit gets the reply `rate limit exceeded` and the connection is closed.
//!
//! The count lives in the instance's memory, so run it with `--isolation connection` (or
//! `worker`): under the default `message` isolation every call gets a fresh instance that has
//! seen no earlier message, and nothing is ever limited. The `ratelimit` example does the same
//! per client address with host state (contract 0.2), under any isolation.

use std::cell::RefCell;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use sandport_guest::{config_parse, log, Connection, Handler, Level, Response};

/// What a connection has sent recently.
struct Limiter {
    max: usize,
    window: Duration,
    /// When each of the messages of the last `window` arrived, oldest first.
    recent: VecDeque<Instant>,
}

thread_local! {
    /// Limiters by connection id: under `--isolation worker` one instance serves several
    /// connections. (A Wasm instance is single-threaded; this is just a safe global.)
    static LIMITERS: RefCell<HashMap<u64, Limiter>> = RefCell::new(HashMap::new());
}

/// Reads the settings: `max` messages per `window_ms`.
fn limiter() -> Result<Limiter, String> {
    let max = config_parse("max", 5usize)?;
    let window_ms = config_parse("window_ms", 1000u64)?;
    if window_ms == 0 {
        return Err("invalid setting window_ms=0: must be at least 1".into());
    }
    Ok(Limiter { max, window: Duration::from_millis(window_ms), recent: VecDeque::new() })
}

struct RateLimit;

impl Handler for RateLimit {
    fn on_connect(conn: &Connection) -> Result<Response, String> {
        // Settings are checked at connect time, so a bad value refuses clients at once.
        let limiter = limiter()?;
        LIMITERS.with_borrow_mut(|all| all.insert(conn.id, limiter));
        Ok(Response::none())
    }

    fn on_message(conn: &Connection, message: Vec<u8>) -> Result<Response, String> {
        let now = Instant::now();
        LIMITERS.with_borrow_mut(|all| {
            let limiter = match all.entry(conn.id) {
                Entry::Occupied(e) => e.into_mut(),
                // This instance did not see the connection open: under `--isolation message`,
                // every call runs on a fresh instance (so nothing is ever limited there).
                Entry::Vacant(e) => e.insert(limiter()?),
            };
            while limiter.recent.front().is_some_and(|&t| now.duration_since(t) >= limiter.window) {
                limiter.recent.pop_front();
            }
            if limiter.recent.len() >= limiter.max {
                log(
                    Level::Warn,
                    &format!(
                        "{} sent more than {} messages in {} ms: closing",
                        conn.peer,
                        limiter.max,
                        limiter.window.as_millis()
                    ),
                );
                all.remove(&conn.id);
                return Ok(Response::close_with("rate limit exceeded"));
            }
            limiter.recent.push_back(now);
            Ok(Response::reply(message))
        })
    }

    fn on_disconnect(conn: &Connection) {
        LIMITERS.with_borrow_mut(|all| all.remove(&conn.id));
    }
}

sandport_guest::export_handler!(RateLimit);
