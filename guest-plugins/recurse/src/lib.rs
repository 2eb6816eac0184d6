//! `recurse` (test plugin): `recurse` recurses without bound until the host's stack limit
//! traps it; anything else is echoed.

use std::hint::black_box;

wit_bindgen::generate!({ path: "../../wit", world: "handler" });

/// Counts the calls below this one. Not a tail call (the result is used after the recursive
/// call returns), and `limit` is opaque to the optimiser (`black_box` at the call site), so the
/// compiler can neither turn this into a loop nor prove it never returns.
fn depth(n: u64, limit: u64) -> u64 {
    if n >= limit {
        return n;
    }
    depth(n + 1, limit).wrapping_mul(31).wrapping_add(n)
}

struct Recurse;

impl Guest for Recurse {
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    fn on_message(_conn: Connection, message: Vec<u8>) -> Result<Response, String> {
        if message == b"recurse" {
            // Would need 2^64 frames to return: the host's stack limit traps long before.
            let calls = depth(0, black_box(u64::MAX));
            return Ok(Response { reply: Some(calls.to_string().into_bytes()), close: false });
        }
        Ok(Response { reply: Some(message), close: false })
    }

    fn on_disconnect(_conn: Connection) {}
}

export!(Recurse);
