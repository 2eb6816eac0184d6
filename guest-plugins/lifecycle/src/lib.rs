//! `lifecycle` (test plugin): exercises every hook and every kind of response.
//!
//! - on-connect: prints `stdout from <id>` to stdout and greets with `hello <id>`;
//! - on-message: `close` -> replies `bye` and asks to close; `fail` -> `Err("asked to fail")`;
//!   `silent` -> no reply; anything else is echoed;
//! - on-disconnect: logs `goodbye <id>` at info.

wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct Lifecycle;

impl Guest for Lifecycle {
    fn on_connect(conn: Connection) -> Result<Response, String> {
        // The host turns the plugin's stdout into log lines.
        println!("stdout from {}", conn.id);
        Ok(Response { reply: Some(format!("hello {}", conn.id).into_bytes()), close: false })
    }

    fn on_message(_conn: Connection, message: Vec<u8>) -> Result<Response, String> {
        match message.as_slice() {
            b"close" => Ok(Response { reply: Some(b"bye".to_vec()), close: true }),
            b"fail" => Err("asked to fail".to_string()),
            b"silent" => Ok(Response { reply: None, close: false }),
            _ => Ok(Response { reply: Some(message), close: false }),
        }
    }

    fn on_disconnect(conn: Connection) {
        log(Level::Info, &format!("goodbye {}", conn.id));
    }
}

export!(Lifecycle);
