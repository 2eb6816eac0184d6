//! `sandport-guest`: write a sandport handler plugin in Rust as a trait impl plus one macro.
//!
//! ```ignore
//! use sandport_guest::{config_get, log, Connection, Handler, Level, Response};
//!
//! struct Upper;
//!
//! impl Handler for Upper {
//!     fn on_message(conn: &Connection, message: Vec<u8>) -> Result<Response, String> {
//!         let prefix = config_get("prefix").unwrap_or_default();
//!         log(Level::Debug, &format!("conn {}: upper-cased", conn.id));
//!         Ok(Response::reply(prefix + &String::from_utf8_lossy(&message).to_uppercase()))
//!     }
//! }
//!
//! sandport_guest::export_handler!(Upper);
//! ```
//!
//! The plugin crate is a `cdylib` depending on this crate (not on `wit-bindgen`), built for
//! `wasm32-wasip2`: the `.wasm` is the component sandport loads. Only [`Handler::on_message`] is
//! required; [`Handler::on_connect`] defaults to no greeting and [`Handler::on_disconnect`] to
//! nothing. The hooks' semantics (when each runs, what an `Err` does, isolation modes) are
//! documented in the WIT contract, `wit/handler.wit`.
//!
//! Contract 0.2 (host state, messages between connections, rooms) is the [`v2`] module, with its
//! own [`v2::Handler`] trait and [`export_handler_v2!`].

use std::fmt::Display;
use std::str::FromStr;

pub mod v2;

/// The bindings generated from `wit/handler.wit`. Public only for [`export_handler!`]'s
/// expansion; use the re-exports at the crate root instead.
#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "handler",
        // The export macro is used by the plugin crates, not by this one: make it `pub` and let
        // it find the generated types here. (`export_handler!` passes `$crate::__bindings`
        // explicitly, which also works when a plugin renames this dependency.)
        pub_export_macro: true,
        export_macro_name: "export",
        default_bindings_module: "::sandport_guest::__bindings",
    });
}

/// One TCP client connection: `id` (unique for the host process's life, from 1), `peer` (the
/// client's address, e.g. `127.0.0.1:53412`) and `local` (the host's address it connected to).
pub use __bindings::Connection;
/// Severity of a [`log`] line: `Trace`, `Debug`, `Info`, `Warn`, `Error`.
pub use __bindings::Level;
/// What the host does after a hook: send `reply` (if any), then close if `close`. Build one with
/// [`Response::none`], [`Response::reply`], [`Response::close`] or [`Response::close_with`].
pub use __bindings::Response;

/// Writes a line to the host's log, tagged with the plugin's name and the connection's id.
/// `Debug` and `Trace` lines only show when the host runs with e.g. `RUST_LOG=debug`.
pub fn log(level: Level, message: &str) {
    __bindings::log(level, message)
}

/// This plugin's setting `key`, given to the host as `--config PLUGIN.KEY=VALUE` (PLUGIN is the
/// plugin's file name without `.wasm`); `None` when it was not given.
///
/// Read settings in the hooks, not once at start-up: with `--isolation message` every call runs
/// on a fresh instance.
pub fn config_get(key: &str) -> Option<String> {
    __bindings::config_get(key)
}

/// The setting `key` parsed as a `T`, or `default` when it was not given. An unparsable value
/// is an error naming the key and the value (return it from a hook with `?`).
pub fn config_parse<T>(key: &str, default: T) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    parse_setting(key, config_get(key), default)
}

/// `value` (setting `key`'s, if it was given) parsed as a `T`, or `default`: both contracts'
/// `config_parse`.
fn parse_setting<T>(key: &str, value: Option<String>, default: T) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    match value {
        None => Ok(default),
        Some(value) => {
            value.trim().parse().map_err(|e| format!("invalid setting {key}={value:?}: {e}"))
        }
    }
}

impl Response {
    /// Send nothing and keep the connection open (in a chain, the chain ends here).
    pub fn none() -> Response {
        Response { reply: None, close: false }
    }

    /// Send `bytes` (a `String`, `&str`, `Vec<u8>`, `&[u8]`, ...) and keep the connection open.
    pub fn reply(bytes: impl Into<Vec<u8>>) -> Response {
        Response { reply: Some(bytes.into()), close: false }
    }

    /// Close the connection without sending anything.
    pub fn close() -> Response {
        Response { reply: None, close: true }
    }

    /// Send `bytes`, then close the connection.
    pub fn close_with(bytes: impl Into<Vec<u8>>) -> Response {
        Response { reply: Some(bytes.into()), close: true }
    }
}

impl Default for Response {
    /// [`Response::none`].
    fn default() -> Response {
        Response::none()
    }
}

/// A sandport handler: implement it on a unit struct and export it with [`export_handler!`].
///
/// The hooks are associated functions (no `self`): what an instance keeps between calls lives in
/// statics, and survives only as the host's `--isolation` mode allows (`message`: nothing
/// survives a call; `connection`: one instance per connection; `worker`: shared by the
/// connections of a host thread, so key any state by [`Connection::id`]).
pub trait Handler {
    /// A client connected; `reply` is a greeting sent before anything else. An `Err` closes the
    /// connection without calling [`Handler::on_disconnect`]. Default: no greeting.
    fn on_connect(conn: &Connection) -> Result<Response, String> {
        let _ = conn;
        Ok(Response::none())
    }

    /// A whole message arrived, as framed by the host's `--framing`. An `Err` is logged by the
    /// host and closes the connection (or drops the message, with `--on-error drop`).
    fn on_message(conn: &Connection, message: Vec<u8>) -> Result<Response, String>;

    /// The connection is closing; nothing more can be sent. Default: nothing.
    fn on_disconnect(conn: &Connection) {
        let _ = conn;
    }
}

impl<T: Handler> __bindings::Guest for T {
    fn on_connect(conn: Connection) -> Result<Response, String> {
        T::on_connect(&conn)
    }

    fn on_message(conn: Connection, message: Vec<u8>) -> Result<Response, String> {
        T::on_message(&conn, message)
    }

    fn on_disconnect(conn: Connection) {
        T::on_disconnect(&conn)
    }
}

/// Exports a [`Handler`] type as the plugin's `handler` world: `export_handler!(MyHandler);`,
/// once, in the plugin crate (a `cdylib`).
#[macro_export]
macro_rules! export_handler {
    ($handler:ident) => {
        $crate::__bindings::export!($handler with_types_in $crate::__bindings);
    };
}
