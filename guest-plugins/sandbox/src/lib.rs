//! `sandbox` (test plugin): replies with a report of what the sandbox let it do, one line each:
//!
//! ```text
//! file: denied (<error>)      or  file: allowed     (reading /etc/passwd)
//! env: <n> vars                                     (environment variables visible)
//! args: <n>                                         (command-line arguments visible)
//! net: denied (<error>)       or  net: allowed      (TCP connect to 127.0.0.1:1)
//! ```

use std::fmt::Display;

wit_bindgen::generate!({ path: "../../wit", world: "handler" });

/// `allowed` or `denied (<error>)`.
fn outcome<T, E: Display>(result: Result<T, E>) -> String {
    match result {
        Ok(_) => "allowed".to_string(),
        Err(e) => format!("denied ({e})"),
    }
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
        ]
        .join("\n");
        Ok(Response { reply: Some(report.into_bytes()), close: false })
    }

    fn on_disconnect(_conn: Connection) {}
}

export!(Sandbox);
