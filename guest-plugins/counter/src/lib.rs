//! `counter` (test plugin): replies how many messages this instance has seen, as decimal text.
//!
//! The count lives in a static, so it shows which instance a call landed on: with
//! `--isolation message` every reply is `1`; with `connection` it counts up per connection.

use std::sync::atomic::{AtomicU64, Ordering};

wit_bindgen::generate!({ path: "../../wit", world: "handler" });

/// Messages seen by this instance (its linear memory) so far.
static COUNT: AtomicU64 = AtomicU64::new(0);

struct Counter;

impl Guest for Counter {
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    fn on_message(_conn: Connection, _message: Vec<u8>) -> Result<Response, String> {
        let count = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Response { reply: Some(count.to_string().into_bytes()), close: false })
    }

    fn on_disconnect(_conn: Connection) {}
}

export!(Counter);
