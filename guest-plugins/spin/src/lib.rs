//! `spin` (test plugin): burns CPU to test the host's per-call deadline.
//!
//! - `spin` -> loops forever;
//! - `busy <ms>` -> busy-waits `<ms>` milliseconds, then replies `done <ms>`;
//! - `sleep <ms>` -> sleeps `<ms>` milliseconds (blocked in the host, not running Wasm code),
//!   then replies `slept <ms>`;
//! - anything else (including a `busy` or `sleep` without a number) is echoed.
//!
//! The loops keep executing Wasm code, so the host's epoch deadline can interrupt them; the
//! sleep waits in the host, where the host must bound it some other way.

use std::hint::black_box;
use std::time::{Duration, Instant};

wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct Spin;

impl Guest for Spin {
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    fn on_message(_conn: Connection, message: Vec<u8>) -> Result<Response, String> {
        let text = String::from_utf8_lossy(&message);
        if text == "spin" {
            // Work the optimiser cannot remove (`black_box`): Wasm code keeps running until the
            // host's deadline interrupts it.
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        if let Some(ms) = text.strip_prefix("busy ").and_then(|ms| ms.parse::<u64>().ok()) {
            // `Instant` reads the WASI monotonic clock; each check is a call into the host.
            let start = Instant::now();
            while start.elapsed() < Duration::from_millis(ms) {
                std::hint::spin_loop();
            }
            return Ok(Response { reply: Some(format!("done {ms}").into_bytes()), close: false });
        }
        if let Some(ms) = text.strip_prefix("sleep ").and_then(|ms| ms.parse::<u64>().ok()) {
            // A WASI `subscribe-duration` plus `poll`: the guest waits inside the host.
            std::thread::sleep(Duration::from_millis(ms));
            return Ok(Response { reply: Some(format!("slept {ms}").into_bytes()), close: false });
        }
        Ok(Response { reply: Some(message), close: false })
    }

    fn on_disconnect(_conn: Connection) {}
}

export!(Spin);
