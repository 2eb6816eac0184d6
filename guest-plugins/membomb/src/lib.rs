//! `membomb` (test plugin): `bomb` allocates and fills memory, 1 MiB at a time, until the
//! host's memory cap stops it; `reply N` answers N bytes (a small message asking a large reply,
//! what a client that never reads uses against the host's buffers); anything else is echoed.

use std::hint::black_box;

wit_bindgen::generate!({ path: "../../wit", world: "handler" });

/// Allocation step: 1 MiB.
const CHUNK: usize = 1 << 20;

struct Membomb;

impl Guest for Membomb {
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    fn on_message(_conn: Connection, message: Vec<u8>) -> Result<Response, String> {
        if let Some(n) = message.strip_prefix(b"reply ") {
            let n: usize = std::str::from_utf8(n)
                .ok()
                .and_then(|n| n.trim().parse().ok())
                .ok_or("reply N: N is a byte count")?;
            return Ok(Response { reply: Some(vec![b'r'; n]), close: false });
        }
        if message != b"bomb" {
            return Ok(Response { reply: Some(message), close: false });
        }
        let mut hoard = Vec::new();
        loop {
            // Each chunk grows linear memory (`memory.grow`), and filling it with a non-zero
            // byte writes to every page. Once the host refuses to grow memory past its cap, the
            // allocation fails and Rust aborts: a trap, which the host reports as the memory cap.
            let chunk = vec![0xA5_u8; CHUNK];
            hoard.push(black_box(chunk));
        }
    }

    fn on_disconnect(_conn: Connection) {}
}

export!(Membomb);
