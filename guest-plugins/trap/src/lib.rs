//! `trap` (test plugin): panics on every message, which traps the instance; on-connect works.

wit_bindgen::generate!({ path: "../../wit", world: "handler" });

struct Trap;

impl Guest for Trap {
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    fn on_message(conn: Connection, _message: Vec<u8>) -> Result<Response, String> {
        // The panic message goes to stderr, then the panic aborts: a Wasm `unreachable` trap.
        panic!("trap plugin panics on every message (conn {})", conn.id)
    }

    fn on_disconnect(_conn: Connection) {}
}

export!(Trap);
