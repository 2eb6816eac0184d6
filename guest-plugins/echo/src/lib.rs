//! `echo`: replies every message unchanged.

// Bindings for `wit/handler.wit` (the `Guest` trait, `Connection`, `Response`, ...).
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct Echo;

impl Guest for Echo {
    /// No greeting: the client speaks first.
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    /// Send the message straight back. The host frames the reply (with `--framing line` it
    /// appends the `\n` the line was split on).
    fn on_message(_conn: Connection, message: Vec<u8>) -> Result<Response, String> {
        Ok(Response { reply: Some(message), close: false })
    }

    /// Nothing to clean up.
    fn on_disconnect(_conn: Connection) {}
}

export!(Echo);
