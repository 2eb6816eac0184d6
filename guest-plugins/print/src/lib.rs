//! `print`: logs every connection, message and disconnection through the host, and replies nothing.
//!
//! The smallest useful sandport plugin, and a template for your own: generate the bindings for
//! the `handler` world, implement its `Guest` trait, and `export!` the implementation.

// Generates Rust bindings for `wit/handler.wit`: the `Guest` trait with the three hooks to
// implement, the types (`Connection`, `Response`, `Level`), and the host functions the plugin may
// call (`log`, `config_get`).
wit_bindgen::generate!({ path: "../../wit", world: "handler" });

/// The plugin. It keeps no state, so a unit struct is enough.
struct Print;

impl Guest for Print {
    /// A client connected: log its address. No greeting is sent.
    fn on_connect(conn: Connection) -> Result<Response, String> {
        log(Level::Info, &format!("connection from {}", conn.peer));
        Ok(Response { reply: None, close: false })
    }

    /// A message arrived: log it as text (invalid UTF-8 shows as `�`). No reply is sent.
    fn on_message(_conn: Connection, message: Vec<u8>) -> Result<Response, String> {
        log(Level::Info, &format!("received: {}", String::from_utf8_lossy(&message)));
        Ok(Response { reply: None, close: false })
    }

    /// The connection is closing.
    fn on_disconnect(_conn: Connection) {
        log(Level::Info, "client closed the connection");
    }
}

// Exports `Print` as the component's implementation of the `handler` world.
export!(Print);
