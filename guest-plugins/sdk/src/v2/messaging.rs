//! Messages between connections, and rooms: any call may address any open connection of the host,
//! on any of its threads, by id.
//!
//! Sends never block: bytes are framed like a reply and written to the receiver between two of
//! its own calls, in the order each sender sent them. A receiver that stops reading is closed by
//! the host as a slow consumer (over `--max-output-bytes`), which is not the sender's error.
//!
//! ```ignore
//! messaging::join(conn, "lobby")?;
//! let reached = messaging::publish(conn, "lobby", b"hi all", false);
//! ```

use std::fmt;

use super::__bindings::sandport::plugin::messaging as wit;
use super::Connection;

/// Why a messaging call did nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Error {
    /// No open connection has this id (it never existed, or it has closed).
    UnknownConnection,
    /// The connection is in `--max-rooms-per-connection` rooms already.
    TooManyRooms,
    /// A room name must be 1 to 256 bytes.
    BadRoomName,
}

impl Error {
    /// The WIT name of the error: `unknown-connection`, `too-many-rooms` or `bad-room-name`.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::UnknownConnection => "unknown-connection",
            Error::TooManyRooms => "too-many-rooms",
            Error::BadRoomName => "bad-room-name",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Error::UnknownConnection => "no open connection has this id",
            Error::TooManyRooms => "the connection is in too many rooms",
            Error::BadRoomName => "a room name must be 1 to 256 bytes",
        })
    }
}

impl std::error::Error for Error {}

/// `Error`s convert to `String`, so hooks can use `?` on messaging calls.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

impl From<wit::Error> for Error {
    fn from(e: wit::Error) -> Error {
        match e {
            wit::Error::UnknownConnection => Error::UnknownConnection,
            wit::Error::TooManyRooms => Error::TooManyRooms,
            wit::Error::BadRoomName => Error::BadRoomName,
        }
    }
}

/// Sends `message` to connection `to`, framed as a reply, after what was sent to it before.
pub fn send(to: u64, message: impl AsRef<[u8]>) -> Result<(), Error> {
    Ok(wit::send(to, message.as_ref())?)
}

/// Closes connection `conn` once what is queued for it is written (its `on-disconnect` follows).
pub fn close(conn: u64) -> Result<(), Error> {
    Ok(wit::close(conn)?)
}

/// Connection `conn`'s addresses (WIT `connection-info`); `None` when it is not open.
pub fn connection(conn: u64) -> Option<Connection> {
    wit::connection_info(conn)
}

/// Under mutual TLS (`--tls-client-ca`): the verified client certificate's subject of
/// connection `conn`, as `CN=..., O=...` (WIT `peer-certificate`); `None` without one, or when
/// the connection is not open.
pub fn peer_certificate(conn: u64) -> Option<String> {
    wit::peer_certificate(conn)
}

/// Connection `conn` joins `room` (joining twice is not an error). Membership ends with
/// [`leave`] or when the connection closes.
pub fn join(conn: u64, room: &str) -> Result<(), Error> {
    Ok(wit::join(conn, room)?)
}

/// Connection `conn` leaves `room`; whether it was in it.
pub fn leave(conn: u64, room: &str) -> bool {
    wit::leave(conn, room)
}

/// The ids of `room`'s members, ascending (empty for an unknown room).
pub fn members(room: &str) -> Vec<u64> {
    wit::members(room)
}

/// Sends `message` to every member of `room` but `sender` (to `sender` too if
/// `include_sender`); how many it was sent to.
pub fn publish(sender: u64, room: &str, message: impl AsRef<[u8]>, include_sender: bool) -> u32 {
    wit::publish(sender, room, message.as_ref(), include_sender)
}
