//! `echo2`: replies every message unchanged, on contract 0.2 (`wit/v0.2`), with nothing else: no
//! state, no messaging, no greeting. The benchmarks compare its cost per call with `echo` (0.1),
//! whose `on-message` also lowers the connection's two addresses.

// Bindings for `wit/v0.2` straight from wit-bindgen, not through the SDK: the least code a 0.2
// plugin can be.
wit_bindgen::generate!({ path: "../../wit/v0.2", world: "handler", generate_all });

struct Echo2;

impl Guest for Echo2 {
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    fn on_message(_conn: u64, message: Vec<u8>) -> Result<Response, String> {
        Ok(Response { reply: Some(message), close: false })
    }

    fn on_disconnect(_conn: u64) {}
}

export!(Echo2);
