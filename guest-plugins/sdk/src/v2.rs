//! Contract 0.2 (`sandport:plugin@0.2.0`, `wit/v0.2/handler.wit`): hooks by connection id, host
//! state through `wasi:keyvalue` ([`state`]), and messages between connections ([`messaging`]).
//!
//! ```ignore
//! use sandport_guest::v2::{messaging, state::Bucket, Handler, Response};
//!
//! struct Count;
//!
//! impl Handler for Count {
//!     fn on_message(conn: u64, _message: Vec<u8>) -> Result<Response, String> {
//!         // State and messaging errors convert into the hooks' `String` errors.
//!         let n = Bucket::open_default()?.increment("messages", 1)?;
//!         messaging::send(conn, format!("message {n} of the server")).ok();
//!         Ok(Response::none())
//!     }
//! }
//!
//! sandport_guest::export_handler_v2!(Count);
//! ```
//!
//! State lives in the host, so a 0.2 plugin works under every `--isolation` mode, including the
//! default `message` (a fresh instance per call). A plugin crate uses either this module and
//! [`export_handler_v2!`](crate::export_handler_v2) or the crate root's 0.1 API and
//! [`export_handler!`](crate::export_handler), not both.

pub mod messaging;
pub mod state;

use std::fmt::Display;
use std::str::FromStr;

/// The bindings generated from `wit/v0.2`. Public only for [`export_handler_v2!`]'s expansion;
/// use this module's items instead.
///
/// [`export_handler_v2!`]: crate::export_handler_v2
#[doc(hidden)]
pub mod __bindings {
    wit_bindgen::generate!({
        // The 0.2 `handler` world under another name: the generated (crate-level) macros are
        // named after the world, and the 0.1 bindings already took `handler`'s.
        inline: "
            package sandport:guest;
            world handler-v2 { include sandport:plugin/handler@0.2.0; }
        ",
        path: "../../wit/v0.2",
        world: "sandport:guest/handler-v2",
        // The 0.1 records have the same shape: share them, so that `Response::reply` and friends
        // are one set of constructors for both contracts.
        with: {
            "sandport:plugin/types@0.2.0": crate::__bindings::sandport::plugin::types,
        },
        generate_all,
        pub_export_macro: true,
        export_macro_name: "export_v2",
        default_bindings_module: "::sandport_guest::v2::__bindings",
    });
}

/// One TCP client connection: `id`, `peer` (the client's address) and `local` (the host's).
pub use crate::Connection;
/// Severity of a [`log`] line.
pub use crate::Level;
/// What the host does after a hook (see [`crate::Response`]'s constructors).
pub use crate::Response;

/// Writes a line to the host's log, tagged with the plugin's name and the connection's id.
pub fn log(level: Level, message: &str) {
    __bindings::log(level, message)
}

/// This plugin's setting `key` (`--config PLUGIN.KEY=VALUE`); `None` when it was not given.
pub fn config_get(key: &str) -> Option<String> {
    __bindings::config_get(key)
}

/// The setting `key` parsed as a `T`, or `default` when it was not given; an unparsable value is
/// an error naming the key and the value.
pub fn config_parse<T>(key: &str, default: T) -> Result<T, String>
where
    T: FromStr,
    T::Err: Display,
{
    crate::parse_setting(key, config_get(key), default)
}

/// A 0.2 handler: implement it on a unit struct and export it with
/// [`export_handler_v2!`](crate::export_handler_v2).
///
/// Keep what must outlive a call in [`state`] (host state, shared by every instance, worker and
/// connection of this plugin), not in statics: under the default `--isolation message` every
/// call runs on a fresh instance.
pub trait Handler {
    /// A client connected; `reply` is a greeting sent before anything else. An `Err` closes the
    /// connection without calling [`Handler::on_disconnect`]. Default: no greeting.
    fn on_connect(conn: &Connection) -> Result<Response, String> {
        let _ = conn;
        Ok(Response::none())
    }

    /// A whole message arrived from connection `conn`. An `Err` is logged by the host and closes
    /// the connection (or drops the message, with `--on-error drop`).
    fn on_message(conn: u64, message: Vec<u8>) -> Result<Response, String>;

    /// Connection `conn` is closing: it has left its rooms and nothing more can be sent to it.
    /// Default: nothing.
    fn on_disconnect(conn: u64) {
        let _ = conn;
    }
}

impl<T: Handler> __bindings::Guest for T {
    fn on_connect(conn: Connection) -> Result<Response, String> {
        T::on_connect(&conn)
    }

    fn on_message(conn: u64, message: Vec<u8>) -> Result<Response, String> {
        T::on_message(conn, message)
    }

    fn on_disconnect(conn: u64) {
        T::on_disconnect(conn)
    }
}

/// Exports a [`v2::Handler`](crate::v2::Handler) type as the plugin's 0.2 `handler` world:
/// `sandport_guest::export_handler_v2!(MyHandler);`, once, in the plugin crate (a `cdylib`).
#[macro_export]
macro_rules! export_handler_v2 {
    ($handler:ident) => {
        $crate::v2::__bindings::export_v2!($handler with_types_in $crate::v2::__bindings);
    };
}
