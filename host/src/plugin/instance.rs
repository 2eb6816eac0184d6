//! A live plugin instance: its store and its entry points, of either kind (component or core
//! module), and the hooks called on it.

use wasmtime::{ResetPoint, Store};

use super::bindings::{v2, Connection, Handler, Response};
use super::core_abi::CoreInstance;
use super::host_api::HostState;
use super::registry::Plugin;

/// What a hook returns: a trap or a host error (outer), or the plugin's own `ok`/`err` (inner).
pub type HookResult = wasmtime::Result<Result<Response, String>>;

/// A live instance's entry points, of either kind.
// Made once per instance and kept in place beside its store: boxing would only add an allocation.
#[allow(clippy::large_enum_variant)]
pub enum Handle {
    /// A component of contract 0.1.0.
    Component(Handler),
    /// A component of contract 0.2.0.
    ComponentV2(v2::Handler),
    Core(CoreInstance),
}

/// A live instance of one plugin, with the store that owns its memory and budgets.
pub struct Instance {
    pub(super) store: Store<HostState>,
    handle: Handle,
    /// The state instantiation left, when it is to be reset in place (see [`Instance::reset`]).
    reset: Option<ResetPoint>,
}

impl Instance {
    /// Instantiates `plugin` in `store`, whose call has been started (`limits::start_call`):
    /// start-up code runs within that call's budget. On failure the store is dropped after
    /// logging what the plugin printed.
    pub fn new(plugin: &Plugin, mut store: Store<HostState>) -> wasmtime::Result<Instance> {
        match plugin.instantiate(&mut store) {
            Ok(handle) => Ok(Instance {
                store,
                handle,
                reset: None,
            }),
            Err(e) => {
                store.data_mut().flush_output();
                Err(e)
            }
        }
    }

    pub fn on_connect(&mut self, conn: &Connection) -> HookResult {
        match &self.handle {
            Handle::Component(h) => h.call_on_connect(&mut self.store, conn),
            Handle::ComponentV2(h) => {
                let conn = v2::Connection {
                    id: conn.id,
                    peer: conn.peer.clone(),
                    local: conn.local.clone(),
                };
                Ok(h.call_on_connect(&mut self.store, &conn)?.map(v1))
            }
            Handle::Core(c) => c.on_connect(&mut self.store, conn),
        }
    }

    pub fn on_message(&mut self, conn: &Connection, msg: &[u8]) -> HookResult {
        match &self.handle {
            Handle::Component(h) => h.call_on_message(&mut self.store, conn, msg),
            Handle::ComponentV2(h) => Ok(h.call_on_message(&mut self.store, conn.id, msg)?.map(v1)),
            Handle::Core(c) => c.on_message(&mut self.store, conn.id, msg),
        }
    }

    pub fn on_disconnect(&mut self, conn: &Connection) -> wasmtime::Result<()> {
        match &self.handle {
            Handle::Component(h) => h.call_on_disconnect(&mut self.store, conn),
            Handle::ComponentV2(h) => h.call_on_disconnect(&mut self.store, conn.id),
            Handle::Core(c) => c.on_disconnect(&mut self.store, conn.id),
        }
    }

    /// Takes the state instantiation left, to [`Instance::reset`] to after each call. Called
    /// before the first call; `false` when wasmtime could not restore all of it exactly (GC
    /// references, a shared memory, no `PAGEMAP_SCAN`): the instance is then used once.
    pub fn prepare_reset(&mut self) -> bool {
        self.reset = self.store.reset_point();
        self.reset.is_some()
    }

    /// Puts the instance back, in place, into the state instantiation left it in: its memories
    /// (contents and size), globals, tables, dropped segments and a component's handle tables,
    /// with a renewed host state (`fresh` makes one where the old cannot be kept). `false` when
    /// it cannot be (the guest still holds a resource handle, say): drop it then.
    pub fn reset(&mut self, fresh: impl FnOnce() -> HostState) -> bool {
        let Some(point) = &mut self.reset else {
            return false;
        };
        match self.store.reset(point) {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "instance reset failed; making a new one"
                );
                return false;
            }
        }
        if !self.store.data_mut().renew() {
            *self.store.data_mut() = fresh();
        }
        true
    }

    /// Whether the last [`Instance::reset`] scanned the memories for the pages the call wrote
    /// (the others reset only the pages the scan before found: no page fault happened since).
    pub fn last_reset_scanned(&self) -> bool {
        self.reset.as_ref().is_some_and(|p| p.last_reset_scanned())
    }

    /// The host state, for the next instance of the same plugin (see `HostState::recycle`).
    pub fn into_state(self) -> HostState {
        self.store.into_data()
    }
}

/// A 0.2.0 response as the host handles every response (the two records are the same).
fn v1(r: v2::Response) -> Response {
    Response {
        reply: r.reply,
        close: r.close,
    }
}
