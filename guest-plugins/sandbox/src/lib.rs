//! `sandbox` (test plugin): replies with a report of what the sandbox let it do, one line each:
//!
//! ```text
//! file: denied (<error>)      or  file: allowed     (reading /etc/passwd)
//! env: <n> vars                                     (environment variables visible)
//! args: <n>                                         (command-line arguments visible)
//! net: denied (<error>)       or  net: allowed      (TCP connect to 127.0.0.1:1)
//! random: <32 hex digits>                           (16 bytes from wasi:random/random)
//! ```

use std::fmt::Display;

wit_bindgen::generate!({ path: "../../wit", world: "handler" });

/// WASI 0.2's secure random source, which the host grants (and serves in bulk:
/// host/src/plugin/random.rs). The standard library does not reach it: its hash seeds come
/// from `insecure-seed`.
mod secure_random {
    wit_bindgen::generate!({
        inline: "
            package wasi:random@0.2.6;
            // Whole, as WASI 0.2.6 has it: the linker merges it with the standard library's.
            interface random {
                get-random-bytes: func(len: u64) -> list<u8>;
                get-random-u64: func() -> u64;
            }
            world secure-random {
                import random;
            }
        ",
        world: "secure-random",
    });
    pub use self::wasi::random::random::get_random_bytes;
}

/// `allowed` or `denied (<error>)`.
fn outcome<T, E: Display>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => "allowed".to_string(),
        Err(e) => format!("denied ({e})"),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

struct Sandbox;

impl Guest for Sandbox {
    fn on_connect(_conn: Connection) -> Result<Response, String> {
        Ok(Response { reply: None, close: false })
    }

    fn on_message(_conn: Connection, _message: Vec<u8>) -> Result<Response, String> {
        let report = [
            format!("file: {}", outcome(std::fs::read("/etc/passwd"))),
            format!("env: {} vars", std::env::vars_os().count()),
            format!("args: {}", std::env::args_os().count()),
            format!("net: {}", outcome(std::net::TcpStream::connect("127.0.0.1:1"))),
            format!("random: {}", hex(&secure_random::get_random_bytes(16))),
        ]
        .join("\n");
        Ok(Response { reply: Some(report.into_bytes()), close: false })
    }

    fn on_disconnect(_conn: Connection) {}
}

export!(Sandbox);
