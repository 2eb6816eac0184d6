//! Plain core modules through the sandport core-module ABI (`docs/core-abi.md`): the imports the
//! host provides them (version 1's here, version 2's state and messaging in [`v2`]), checking
//! what they import and export, and calling their hooks.

use std::sync::atomic::{AtomicI32, Ordering};

use wasmtime::format_err as anyhow;
use wasmtime::{
    AsContextMut, Caller, Engine, Extern, ExternType, InstancePre, Linker, Memory, Module, Store,
    TypedFunc, ValType,
};

use super::bindings::{Connection, Level, Response};
use super::error::PluginError;
use super::host_api::HostState;
use super::instance::HookResult;
use super::limits;

mod guest;
mod result;
pub mod v2;

pub(crate) use result::{read_result, ResultError, FLAG_CLOSE, FLAG_ERROR, FLAG_REPLY};

/// The ABI versions this host speaks (`sandport_abi_version`): 1, and 2, which adds the
/// optional imports of [`v2`].
pub const ABI_VERSIONS: [i32; 2] = [1, 2];

/// The exports the ABI requires, with their types, for checking at load.
const REQUIRED: &[(&str, &[ValType], &[ValType])] = &[
    ("sandport_abi_version", &[], &[ValType::I32]),
    ("sandport_alloc", &[ValType::I32], &[ValType::I32]),
    ("sandport_free", &[ValType::I32, ValType::I32], &[]),
    (
        "sandport_on_message",
        &[ValType::I64, ValType::I32, ValType::I32],
        &[ValType::I32],
    ),
];
const OPTIONAL: &[(&str, &[ValType], &[ValType])] = &[
    (
        "sandport_on_connect",
        &[
            ValType::I64,
            ValType::I32,
            ValType::I32,
            ValType::I32,
            ValType::I32,
        ],
        &[ValType::I32],
    ),
    ("sandport_on_disconnect", &[ValType::I64], &[]),
    ("_initialize", &[], &[]),
];

/// A checked, linked core module, ready to instantiate.
pub struct CorePlugin {
    pre: InstancePre<HostState>,
    /// The version-2 functions it imports, which a version-1 module may not.
    v2_imports: Vec<String>,
    /// The version its `sandport_abi_version` returned, once an instance told it (0 before).
    version: AtomicI32,
    /// `--max-reply-bytes`: a larger reply is refused before it is copied out of the guest.
    max_reply: usize,
}

/// `sandport_on_connect(conn, peer_ptr, peer_len, local_ptr, local_len) -> result`.
type ConnectFn = TypedFunc<(i64, i32, i32, i32, i32), i32>;

/// A live instance's entry points.
pub struct CoreInstance {
    memory: Memory,
    alloc: TypedFunc<i32, i32>,
    free: TypedFunc<(i32, i32), ()>,
    on_message: TypedFunc<(i64, i32, i32), i32>,
    on_connect: Option<ConnectFn>,
    on_disconnect: Option<TypedFunc<i64, ()>>,
    max_reply: usize,
}

/// The linker every core module is instantiated with: WASI preview 1 (granting nothing, like
/// the components' WASI), the `sandport` module's `log` and `config_get`, and version 2's
/// state and messaging functions.
pub fn linker(engine: &Engine) -> wasmtime::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, HostState::p1)?;
    linker.func_wrap(
        "sandport",
        "log",
        |mut caller: Caller<'_, HostState>,
         level: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<()> {
            let bytes = read_guest(&mut caller, ptr, len)?;
            let level = match level {
                0 => Level::Trace,
                1 => Level::Debug,
                3 => Level::Warn,
                4 => Level::Error,
                _ => Level::Info,
            };
            caller
                .data_mut()
                .log_line(level, &String::from_utf8_lossy(&bytes));
            Ok(())
        },
    )?;
    linker.func_wrap(
        "sandport",
        "config_get",
        |mut caller: Caller<'_, HostState>,
         key_ptr: i32,
         key_len: i32,
         out_ptr: i32,
         out_cap: i32|
         -> wasmtime::Result<i32> {
            let key = read_guest(&mut caller, key_ptr, key_len)?;
            let Some(value) = caller
                .data()
                .config_value(&String::from_utf8_lossy(&key))
                .map(|v| v.as_bytes().to_vec())
            else {
                return Ok(-1);
            };
            let len = i32::try_from(value.len()).map_err(|_| anyhow!("config value too long"))?;
            if len > 0 && len <= out_cap {
                let memory = guest_memory(&mut caller)?;
                memory
                    .write(&mut caller, out_ptr as u32 as usize, &value)
                    .map_err(|_| anyhow!("config_get: output buffer outside memory"))?;
            }
            Ok(len)
        },
    )?;
    // WASI's own poll_oneoff sleeps for as long as the guest asks; this one never past the
    // call's deadline.
    limits::link_capped_poll(&mut linker)?;
    v2::link(&mut linker)?;
    Ok(linker)
}

/// The module's exported memory, which the ABI requires.
pub(super) fn guest_memory(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(anyhow!("the module exports no `memory`")),
    }
}

/// A copy of the guest's `len` bytes at `ptr`; an error if they are outside its memory.
pub(super) fn read_guest(
    caller: &mut Caller<'_, HostState>,
    ptr: i32,
    len: i32,
) -> wasmtime::Result<Vec<u8>> {
    let memory = guest_memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    memory
        .data(&caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| anyhow!("buffer {start}+{len} is outside the module's memory"))
}

/// Checks a core module's imports and exports against the ABI and links it.
/// `max_reply` is `--max-reply-bytes`.
pub fn load(
    linker: &Linker<HostState>,
    module: &Module,
    max_reply: usize,
) -> Result<CorePlugin, PluginError> {
    let mut v2_imports = Vec::new();
    for import in module.imports() {
        let allowed = match (import.module(), import.name()) {
            ("wasi_snapshot_preview1", _) => true,
            ("sandport", "log" | "config_get") => true,
            ("sandport", name) if v2::IMPORTS.contains(&name) => {
                v2_imports.push(name.to_string());
                true
            }
            _ => false,
        };
        if !allowed {
            return Err(PluginError::RefusedImport(anyhow!(
                "`{}::{}`: a core module may import only the `sandport` functions of \
                 docs/core-abi.md (`log` and `config_get`; version 2's state and messaging \
                 functions) and WASI preview 1",
                import.module(),
                import.name()
            )));
        }
    }
    match module.get_export("memory") {
        Some(ExternType::Memory(_)) => {}
        _ => return Err(wrong_abi("it exports no memory named `memory`")),
    }
    for (required, list) in [(true, REQUIRED), (false, OPTIONAL)] {
        for (name, params, results) in list {
            match module.get_export(name) {
                Some(ExternType::Func(f)) => {
                    let same = |a: &mut dyn ExactSizeIterator<Item = ValType>, b: &[ValType]| {
                        a.len() == b.len() && a.zip(b).all(|(x, y)| ValType::eq(&x, y))
                    };
                    if !same(&mut f.params(), params) || !same(&mut f.results(), results) {
                        return Err(wrong_abi(&format!(
                            "export `{name}` has type {f}, expected (func (param {}) (result {}))",
                            types(params),
                            types(results)
                        )));
                    }
                }
                Some(_) => return Err(wrong_abi(&format!("export `{name}` is not a function"))),
                None if required => {
                    return Err(wrong_abi(&format!("missing export `{name}`")));
                }
                None => {}
            }
        }
    }
    let pre = linker
        .instantiate_pre(module)
        .map_err(PluginError::RefusedImport)?;
    Ok(CorePlugin {
        pre,
        v2_imports,
        version: AtomicI32::new(0),
        max_reply,
    })
}

fn wrong_abi(detail: &str) -> PluginError {
    PluginError::WrongAbi(detail.to_string())
}

fn types(list: &[ValType]) -> String {
    list.iter()
        .map(|t| t.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}

impl CorePlugin {
    /// The ABI version the module declared, once an instance was made (the trial one at load).
    pub fn version(&self) -> Option<i32> {
        Some(self.version.load(Ordering::Relaxed)).filter(|&v| v != 0)
    }

    /// Instantiates, runs `_initialize` if exported, and looks up the hooks.
    pub fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<CoreInstance> {
        let instance = self.pre.instantiate(&mut *store)?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
            init.call(&mut *store, ())?;
        }
        let version = instance
            .get_typed_func::<(), i32>(&mut *store, "sandport_abi_version")?
            .call(&mut *store, ())?;
        if !ABI_VERSIONS.contains(&version) {
            return Err(anyhow!(
                "the module speaks sandport core ABI version {version}; this host speaks \
                 versions 1 and 2"
            ));
        }
        if version == 1 {
            if let Some(name) = self.v2_imports.first() {
                return Err(anyhow!(
                    "the module declares sandport core ABI version 1 but imports `sandport::{name}`, \
                     a version 2 function: return 2 from `sandport_abi_version`"
                ));
            }
        }
        self.version.store(version, Ordering::Relaxed);
        Ok(CoreInstance {
            memory: instance
                .get_memory(&mut *store, "memory")
                .ok_or_else(|| anyhow!("no memory export"))?,
            alloc: instance.get_typed_func(&mut *store, "sandport_alloc")?,
            free: instance.get_typed_func(&mut *store, "sandport_free")?,
            on_message: instance.get_typed_func(&mut *store, "sandport_on_message")?,
            on_connect: instance
                .get_typed_func(&mut *store, "sandport_on_connect")
                .ok(),
            on_disconnect: instance
                .get_typed_func(&mut *store, "sandport_on_disconnect")
                .ok(),
            max_reply: self.max_reply,
        })
    }
}

impl CoreInstance {
    pub fn on_connect(&self, store: &mut Store<HostState>, conn: &Connection) -> HookResult {
        let Some(f) = &self.on_connect else {
            return Ok(Ok(Response {
                reply: None,
                close: false,
            }));
        };
        let (peer, peer_len) = self.pass(store, conn.peer.as_bytes())?;
        let (local, local_len) = self.pass(store, conn.local.as_bytes())?;
        let at = f.call(
            &mut *store,
            (conn.id as i64, peer, peer_len, local, local_len),
        )?;
        self.result(store, at)
    }

    pub fn on_message(
        &self,
        store: &mut Store<HostState>,
        conn: u64,
        message: &[u8],
    ) -> HookResult {
        let (ptr, len) = self.pass(store, message)?;
        let at = self.on_message.call(&mut *store, (conn as i64, ptr, len))?;
        self.result(store, at)
    }

    pub fn on_disconnect(&self, store: &mut Store<HostState>, conn: u64) -> wasmtime::Result<()> {
        match &self.on_disconnect {
            Some(f) => f.call(store, conn as i64),
            None => Ok(()),
        }
    }

    /// Copies `bytes` into a buffer from the module's allocator; the module owns it from now on.
    fn pass(&self, store: &mut Store<HostState>, bytes: &[u8]) -> wasmtime::Result<(i32, i32)> {
        let len = i32::try_from(bytes.len()).map_err(|_| anyhow!("message too large"))?;
        let ptr = self.alloc.call(&mut *store, len)?;
        if ptr == 0 {
            return Err(anyhow!("sandport_alloc({len}) returned 0: out of memory"));
        }
        if bytes.is_empty() {
            // Any pointer will do for nothing (docs/core-abi.md), even one past the memory.
            return Ok((ptr, 0));
        }
        self.memory
            .write(store.as_context_mut(), ptr as u32 as usize, bytes)
            .map_err(|_| anyhow!("sandport_alloc({len}) returned {ptr}, outside memory"))?;
        Ok((ptr, len))
    }

    /// Reads the 12-byte result at `at`, takes its bytes and hands them back to `sandport_free`.
    fn result(&self, store: &mut Store<HostState>, at: i32) -> HookResult {
        let data = self.memory.data(&*store);
        let record = match read_result(data, at, self.max_reply) {
            Ok(record) => record,
            Err(e @ ResultError::TooLarge { ptr, len, .. }) => {
                // Never copied, but handed back all the same.
                self.free.call(&mut *store, (ptr as i32, len as i32))?;
                return Err(e.into());
            }
            Err(e) => return Err(e.into()),
        };
        let (flags, bytes) = (record.flags, data[record.bytes.clone()].to_vec());
        if !record.bytes.is_empty() {
            self.free.call(
                &mut *store,
                (record.bytes.start as i32, record.bytes.len() as i32),
            )?;
        }
        if flags & FLAG_ERROR != 0 {
            return Ok(Err(String::from_utf8_lossy(&bytes).into_owned()));
        }
        Ok(Ok(Response {
            reply: (flags & FLAG_REPLY != 0).then_some(bytes),
            close: flags & FLAG_CLOSE != 0,
        }))
    }
}
