//! What a worker runs for each connection event: the plugin chain, or the benchmarks' native
//! echo. The worker is generic over it, so the baseline adds no branch to the plugin path.

use crate::plugin::bindings::Connection as ConnInfo;
use crate::plugin::{CallError, ConnInstances, Outcome, WorkerPool};

/// The greetings to send, how many stages accepted the connection (they get `on-disconnect`),
/// and whether to close it (or why the connect failed).
pub type Connected = (Vec<Vec<u8>>, usize, Result<bool, CallError>);

/// One worker's message handler; never shared with another thread.
pub trait Handler {
    /// What the handler keeps per connection.
    type Session: Default + Send;

    fn on_connect(&mut self, conn: &ConnInfo, session: &mut Self::Session) -> Connected;

    fn on_message(
        &mut self,
        conn: &ConnInfo,
        session: &mut Self::Session,
        message: &[u8],
    ) -> Result<Outcome, CallError>;

    /// Runs `on-disconnect` on the first `connected` stages; returns the calls that failed.
    fn on_disconnect(
        &mut self,
        conn: &ConnInfo,
        session: &mut Self::Session,
        connected: usize,
    ) -> Vec<CallError>;

    /// A quiet connection gives up what it holds that can be made again; how many instances.
    fn hibernate(&mut self, _session: &mut Self::Session) -> usize {
        0
    }
}

impl Handler for WorkerPool {
    /// The instances a connection owns under `--isolation connection`.
    type Session = ConnInstances;

    fn on_connect(&mut self, conn: &ConnInfo, own: &mut ConnInstances) -> Connected {
        WorkerPool::on_connect(self, conn, own)
    }

    fn on_message(
        &mut self,
        conn: &ConnInfo,
        own: &mut ConnInstances,
        message: &[u8],
    ) -> Result<Outcome, CallError> {
        WorkerPool::on_message(self, conn, own, message)
    }

    fn on_disconnect(
        &mut self,
        conn: &ConnInfo,
        own: &mut ConnInstances,
        connected: usize,
    ) -> Vec<CallError> {
        WorkerPool::on_disconnect(self, conn, own, connected)
    }

    fn hibernate(&mut self, own: &mut ConnInstances) -> usize {
        WorkerPool::hibernate(self, own)
    }
}

/// The benchmarks' baseline (`--bench-native-echo`): every message answered with itself,
/// in-process, by the same server without Wasm, to measure what the sandbox costs.
pub struct NativeEcho;

impl Handler for NativeEcho {
    type Session = ();

    fn on_connect(&mut self, _: &ConnInfo, _: &mut ()) -> Connected {
        (Vec::new(), 0, Ok(false))
    }

    fn on_message(
        &mut self,
        _: &ConnInfo,
        _: &mut (),
        message: &[u8],
    ) -> Result<Outcome, CallError> {
        Ok(Outcome {
            reply: Some(message.to_vec()),
            close: false,
        })
    }

    fn on_disconnect(&mut self, _: &ConnInfo, _: &mut (), _: usize) -> Vec<CallError> {
        Vec::new()
    }
}
