//! What a contract-0.2 plugin reaches beyond its instance: the host's state store (through its
//! namespaces) and the other connections (through the server's [`Messenger`]), and the
//! `sandport:plugin@0.2.0` imports built on them except the key-value ones ([`super::kv`]).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use crate::metrics::{Op, Ops};
use crate::server::messaging::{Messenger, SendError};
use crate::state::{Backend, Namespace};

use super::bindings::v2::sandport::plugin::{messaging, types};
use super::bindings::v2::{HandlerImports, Level};
use super::host_api::HostState;

/// The state and messaging a plugin's instances share; cheap to clone (every field is shared).
#[derive(Clone)]
pub struct Services {
    pub state: Arc<dyn Backend>,
    /// The plugin's own namespace: the bucket `default`.
    pub own: Namespace,
    /// The shared namespaces the operator gave this plugin (`--shared-state`), by name.
    pub shared: Arc<BTreeSet<String>>,
    /// Every shared namespace of the server, so a name given to other plugins only is told
    /// apart (`access-denied`) from one that does not exist (`no-such-store`).
    pub all_shared: Arc<BTreeSet<String>>,
    /// The server's connections and rooms; `None` where there is no server (the trial
    /// instance at load, `sandport call`): every connection is then unknown.
    pub messenger: Option<Arc<Messenger>>,
    /// Counts every state and messaging call, for `/metrics`.
    pub ops: Arc<Ops>,
}

impl Services {
    /// The namespace a bucket name opens for this plugin, or the `wasi:keyvalue` error.
    pub fn namespace(&self, name: &str) -> Result<Namespace, OpenRefused> {
        if name.is_empty() || name == "default" {
            return Ok(self.own.clone());
        }
        if !self.all_shared.contains(name) {
            return Err(OpenRefused::NoSuchStore);
        }
        if !self.shared.contains(name) {
            return Err(OpenRefused::AccessDenied);
        }
        Namespace::shared(name).map_err(|_| OpenRefused::NoSuchStore)
    }
}

/// Why a bucket cannot be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenRefused {
    NoSuchStore,
    AccessDenied,
}

impl HostState {
    /// When state calls made now must have answered: the call's deadline, or shutdown's
    /// cut-off if that comes first.
    pub fn state_deadline(&self) -> Instant {
        Instant::now() + self.limits.left()
    }

    pub(super) fn messenger(&self) -> Option<&Messenger> {
        self.services.as_ref()?.messenger.as_deref()
    }

    /// The server's messenger, for a messaging import of the contract, once `op` is counted.
    fn messenger_for(&self, op: Op) -> Option<&Messenger> {
        self.count(op);
        self.messenger()
    }

    /// Counts a state or messaging call.
    pub(super) fn count(&self, op: Op) {
        if let Some(s) = &self.services {
            s.ops.count(op);
        }
    }
}

fn send_error(e: SendError) -> messaging::Error {
    match e {
        SendError::UnknownConnection(_) => messaging::Error::UnknownConnection,
        SendError::TooManyRooms(_) => messaging::Error::TooManyRooms,
        SendError::BadRoomName => messaging::Error::BadRoomName,
    }
}

impl types::Host for HostState {}

impl messaging::Host for HostState {
    fn send(&mut self, to: u64, message: Vec<u8>) -> Result<(), messaging::Error> {
        let m = self
            .messenger_for(Op::Send)
            .ok_or(messaging::Error::UnknownConnection)?;
        m.send(to, &message, self.state_deadline())
            .map_err(send_error)
    }

    fn close(&mut self, conn: u64) -> Result<(), messaging::Error> {
        let m = self
            .messenger_for(Op::Close)
            .ok_or(messaging::Error::UnknownConnection)?;
        m.close(conn, self.state_deadline()).map_err(send_error)
    }

    fn connection_info(&mut self, conn: u64) -> Option<types::Connection> {
        let addresses = self.messenger_for(Op::ConnectionInfo)?.addresses(conn)?;
        Some(types::Connection {
            id: conn,
            peer: addresses.0.clone(),
            local: addresses.1.clone(),
        })
    }

    fn peer_certificate(&mut self, conn: u64) -> Option<String> {
        let m = self.messenger_for(Op::PeerCertificate)?;
        m.certificate(conn).ok().flatten().map(|s| s.to_string())
    }

    fn join(&mut self, conn: u64, room: String) -> Result<(), messaging::Error> {
        let m = self
            .messenger_for(Op::Join)
            .ok_or(messaging::Error::UnknownConnection)?;
        m.join(conn, &room).map_err(send_error)
    }

    fn leave(&mut self, conn: u64, room: String) -> bool {
        self.messenger_for(Op::Leave)
            .is_some_and(|m| m.leave(conn, &room))
    }

    fn members(&mut self, room: String) -> Vec<u64> {
        let deadline = self.state_deadline();
        self.messenger_for(Op::Members)
            .map_or_else(Vec::new, |m| m.members(&room, deadline))
    }

    fn publish(&mut self, sender: u64, room: String, message: Vec<u8>, include: bool) -> u32 {
        let deadline = self.state_deadline();
        self.messenger_for(Op::Publish).map_or(0, |m| {
            let sent = m.publish(sender, &room, &message, include, deadline);
            u32::try_from(sent).unwrap_or(u32::MAX)
        })
    }
}

impl HandlerImports for HostState {
    fn log(&mut self, level: Level, message: String) {
        self.log_line(level.into(), &message);
    }

    fn config_get(&mut self, key: String) -> Option<String> {
        self.config_value(&key).map(str::to_string)
    }
}

impl From<Level> for super::bindings::Level {
    fn from(level: Level) -> Self {
        use super::bindings::Level as V1;
        match level {
            Level::Trace => V1::Trace,
            Level::Debug => V1::Debug,
            Level::Info => V1::Info,
            Level::Warn => V1::Warn,
            Level::Error => V1::Error,
        }
    }
}
