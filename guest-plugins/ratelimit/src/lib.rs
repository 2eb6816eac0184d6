//! `ratelimit`: echoes every message, but at most `max` messages (default 5) per `window_ms`
//! milliseconds (default 1000) from one client IP address, whichever connections and host
//! workers they come through; the first message over the limit gets the reply
//! `rate limit exceeded` and its connection is closed.
//!
//! Written with the `sandport-guest` SDK on contract 0.2: the counts are host state, so it works
//! under every `--isolation` mode, the default `message` included.
//!
//! The algorithm is a fixed window per address, Redis's `INCR` + `EXPIRE` limiter: each message
//! increments the key `ip:<IP>` in the plugin's bucket; the message that creates it (count 1)
//! makes it expire after `window_ms`, so the window starts with the first message and the count
//! starts again from zero once it has passed (increments keep the TTL). A message whose count
//! is over `max` is refused. Two messages of one address racing on two workers are counted
//! exactly (the increment is atomic); a client can get up to `2 × max` messages through around
//! the moment one window ends and the next starts, the price of one state call per message.
//!
//! ```sh
//! sandport --plugin ratelimit.wasm --config ratelimit.max=10 --config ratelimit.window_ms=2000
//! ```

use std::net::SocketAddr;
use std::time::Duration;

use sandport_guest::v2::state::{Bucket, Ttl};
use sandport_guest::v2::{config_parse, log, messaging, Connection, Handler, Level, Response};

/// The settings: `max` messages per `window`.
struct Limit {
    max: i64,
    window: Duration,
}

fn limit() -> Result<Limit, String> {
    let max = config_parse("max", 5i64)?;
    let window_ms = config_parse("window_ms", 1000u64)?;
    if window_ms == 0 {
        return Err("invalid setting window_ms=0: must be at least 1".into());
    }
    Ok(Limit { max, window: Duration::from_millis(window_ms) })
}

/// The IP address part of a peer address such as `127.0.0.1:53412` or `[::1]:53412`.
fn ip_of(peer: &str) -> String {
    match peer.parse::<SocketAddr>() {
        Ok(addr) => addr.ip().to_string(),
        Err(_) => peer.to_string(),
    }
}

struct RateLimit;

impl Handler for RateLimit {
    fn on_connect(_conn: &Connection) -> Result<Response, String> {
        // Settings are checked at connect time, so a bad value refuses clients at once.
        limit()?;
        Ok(Response::none())
    }

    fn on_message(conn: u64, message: Vec<u8>) -> Result<Response, String> {
        let limit = limit()?;
        let peer = messaging::connection(conn).ok_or("the connection is not open")?.peer;
        let key = format!("ip:{}", ip_of(&peer));
        let bucket = Bucket::open_default()?;
        let count = bucket.increment(&key, 1)?;
        // The first message of a window starts it. A key left without a TTL (by a call that
        // failed between its increment and its expire) would refuse the address for ever: a
        // refusal checks for that, and starts the window then.
        if count == 1 || (count > limit.max && bucket.ttl(&key)? == Ttl::Persistent) {
            bucket.expire(&key, Some(limit.window))?;
        }
        if count > limit.max {
            log(
                Level::Warn,
                &format!(
                    "{peer} sent more than {} messages in {} ms: closing",
                    limit.max,
                    limit.window.as_millis()
                ),
            );
            return Ok(Response::close_with("rate limit exceeded"));
        }
        Ok(Response::reply(message))
    }
}

sandport_guest::export_handler_v2!(RateLimit);
