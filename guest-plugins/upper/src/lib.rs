//! `upper`: replies every message upper-cased, prefixed by the `prefix` setting if it is given.
//!
//! Shows how a plugin reads its configuration: start the host with
//! `--config upper.prefix=">> "` and the reply to `hello` is `>> HELLO`.

// Bindings for `wit/handler.wit` (the `Guest` trait, `Connection`, `Response`, `log`, ...).
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct Upper;

impl Guest for Upper {
    /// No greeting: the client speaks first.
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    /// Upper-case the message as text (invalid UTF-8 becomes `�`), with Unicode rules
    /// (`straße` -> `STRASSE`).
    fn on_message(conn: Connection, message: Vec<u8>) -> Result<Response, String> {
        // `config_get` asks the host for `--config upper.prefix=...`; `None` when not given.
        // Settings are read on every call: an instance may be fresh for each message.
        let prefix = config_get("prefix").unwrap_or_default();
        let reply = prefix + &String::from_utf8_lossy(&message).to_uppercase();
        // Debug lines only show when the host runs with e.g. `RUST_LOG=debug`.
        log(Level::Debug, &format!("conn {}: upper-cased {} bytes", conn.id, message.len()));
        Ok(Response { reply: Some(reply.into_bytes()), close: false })
    }

    /// Nothing to clean up.
    fn on_disconnect(_conn: Connection) {}
}

export!(Upper);
