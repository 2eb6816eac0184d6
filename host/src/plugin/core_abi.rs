//! Plain core modules through the sandport core-module ABI (`docs/core-abi.md`): the imports the
//! host provides them, checking what they import and export, and calling their hooks.

use wasmtime::format_err as anyhow;
use wasmtime::{
    AsContextMut, Caller, Engine, Extern, ExternType, InstancePre, Linker, Memory, Module, Store,
    TypedFunc, ValType,
};

use super::bindings::{Connection, Level, Response};
use super::error::PluginError;
use super::host_api::HostState;
use super::instance::HookResult;

/// The ABI version this host speaks (`sandport_abi_version`).
pub const ABI_VERSION: i32 = 1;

const FLAG_REPLY: u32 = 1;
const FLAG_CLOSE: u32 = 2;
const FLAG_ERROR: u32 = 4;

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
}

/// The linker every core module is instantiated with: WASI preview 1 (granting nothing, like
/// the components' WASI) and the `sandport` module's `log` and `config_get`.
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
    // call's deadline (the preview 1 twin of `host_api::link_capped_clock`).
    linker.allow_shadowing(true);
    linker.func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff)?;
    linker.allow_shadowing(false);
    Ok(linker)
}

/// WASI preview 1 errno values used here.
const ERRNO_BADF: u16 = 8;
const ERRNO_INVAL: i32 = 28;
const SUBSCRIPTION_SIZE: usize = 48;
const EVENT_SIZE: usize = 32;

/// `poll_oneoff` for the sandbox: the only descriptors are stdin (empty), stdout and stderr
/// (always writable), so fd subscriptions are ready at once; clock subscriptions sleep until
/// the earliest one, capped by the call's budget.
fn poll_oneoff(
    mut caller: Caller<'_, HostState>,
    subs: i32,
    events: i32,
    n: i32,
    nevents_out: i32,
) -> wasmtime::Result<i32> {
    use wasmtime_wasi::clocks::WasiClocksView;
    use wasmtime_wasi::p2::bindings::clocks::{monotonic_clock, wall_clock};

    if n <= 0 {
        return Ok(ERRNO_INVAL);
    }
    let raw = read_guest(
        &mut caller,
        subs,
        n.saturating_mul(SUBSCRIPTION_SIZE as i32),
    )?;
    let mono_now = monotonic_clock::Host::now(&mut caller.data_mut().clocks())?;
    let wall = wall_clock::Host::now(&mut caller.data_mut().clocks())?;
    let wall_now = wall.seconds * 1_000_000_000 + u64::from(wall.nanoseconds);
    let u64_at = |b: &[u8], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8"));

    // (userdata, errno, type, nbytes, flags) per ready event; clocks as (userdata, wait ns).
    let mut ready: Vec<(u64, u16, u8, u64, u16)> = Vec::new();
    let mut clocks: Vec<(u64, u64)> = Vec::new();
    for sub in raw.chunks_exact(SUBSCRIPTION_SIZE) {
        let userdata = u64_at(sub, 0);
        match sub[8] {
            0 => {
                let clock = u32::from_le_bytes(sub[16..20].try_into().expect("4"));
                let timeout = u64_at(sub, 24);
                let absolute = u16::from_le_bytes(sub[40..42].try_into().expect("2")) & 1 != 0;
                let wait = match (absolute, clock) {
                    (false, _) => timeout,
                    (true, 0) => timeout.saturating_sub(wall_now),
                    (true, _) => timeout.saturating_sub(mono_now),
                };
                clocks.push((userdata, wait));
            }
            kind @ (1 | 2) => {
                let fd = u32::from_le_bytes(sub[16..20].try_into().expect("4"));
                let event = match (kind, fd) {
                    // stdin is empty: readable, at its end.
                    (1, 0) => (userdata, 0, kind, 0, 1),
                    (2, 1 | 2) => (userdata, 0, kind, 64 << 10, 0),
                    _ => (userdata, ERRNO_BADF, kind, 0, 0),
                };
                ready.push(event);
            }
            _ => return Ok(ERRNO_INVAL),
        }
    }
    if ready.is_empty() {
        let earliest = clocks.iter().map(|c| c.1).min().unwrap_or(0);
        let cap = super::host_api::capped_wait(caller.data().budget_left());
        let wait = std::time::Duration::from_nanos(earliest).min(cap);
        std::thread::sleep(wait);
        let slept = wait.as_nanos() as u64;
        ready.extend(
            clocks
                .iter()
                .filter(|c| c.1 <= slept.max(earliest))
                .map(|&(userdata, _)| (userdata, 0, 0, 0, 0)),
        );
    }
    let mut out = vec![0u8; ready.len() * EVENT_SIZE];
    for (event, (userdata, errno, kind, nbytes, flags)) in
        out.chunks_exact_mut(EVENT_SIZE).zip(&ready)
    {
        event[0..8].copy_from_slice(&userdata.to_le_bytes());
        event[8..10].copy_from_slice(&errno.to_le_bytes());
        event[10] = *kind;
        event[16..24].copy_from_slice(&nbytes.to_le_bytes());
        event[24..26].copy_from_slice(&flags.to_le_bytes());
    }
    let memory = guest_memory(&mut caller)?;
    memory
        .write(&mut caller, events as u32 as usize, &out)
        .map_err(|_| anyhow!("poll_oneoff: events buffer outside memory"))?;
    memory
        .write(
            &mut caller,
            nevents_out as u32 as usize,
            &(ready.len() as u32).to_le_bytes(),
        )
        .map_err(|_| anyhow!("poll_oneoff: nevents outside memory"))?;
    Ok(0)
}

fn guest_memory(caller: &mut Caller<'_, HostState>) -> wasmtime::Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => Err(anyhow!("the module exports no `memory`")),
    }
}

fn read_guest(caller: &mut Caller<'_, HostState>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let memory = guest_memory(caller)?;
    let (start, len) = (ptr as u32 as usize, len as u32 as usize);
    memory
        .data(&caller)
        .get(start..start.saturating_add(len))
        .map(<[u8]>::to_vec)
        .ok_or_else(|| anyhow!("buffer {start}+{len} is outside the module's memory"))
}

/// Checks a core module's imports and exports against the ABI and links it.
pub fn load(linker: &Linker<HostState>, module: &Module) -> Result<CorePlugin, PluginError> {
    for import in module.imports() {
        let allowed = match import.module() {
            "wasi_snapshot_preview1" => true,
            "sandport" => matches!(import.name(), "log" | "config_get"),
            _ => false,
        };
        if !allowed {
            return Err(PluginError::RefusedImport(anyhow!(
                "`{}::{}`: a core module may import only `sandport::log`, \
                 `sandport::config_get` and WASI preview 1 (see docs/core-abi.md)",
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
    Ok(CorePlugin { pre })
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
    /// Instantiates, runs `_initialize` if exported, and looks up the hooks.
    pub fn instantiate(&self, store: &mut Store<HostState>) -> wasmtime::Result<CoreInstance> {
        let instance = self.pre.instantiate(&mut *store)?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&mut *store, "_initialize") {
            init.call(&mut *store, ())?;
        }
        let version = instance
            .get_typed_func::<(), i32>(&mut *store, "sandport_abi_version")?
            .call(&mut *store, ())?;
        if version != ABI_VERSION {
            return Err(anyhow!(
                "the module speaks sandport core ABI version {version}; this host speaks {ABI_VERSION}"
            ));
        }
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
        let at = at as u32 as usize;
        let raw = data
            .get(at..at.saturating_add(12))
            .ok_or_else(|| anyhow!("result pointer {at} is outside memory"))?;
        let word = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
        let (flags, ptr, len) = (word(0), word(4) as usize, word(8) as usize);
        let bytes = if flags & (FLAG_REPLY | FLAG_ERROR) != 0 && len > 0 {
            data.get(ptr..ptr.saturating_add(len))
                .ok_or_else(|| anyhow!("result bytes {ptr}+{len} are outside memory"))?
                .to_vec()
        } else {
            Vec::new()
        };
        if flags & (FLAG_REPLY | FLAG_ERROR) != 0 && len > 0 {
            self.free.call(&mut *store, (ptr as i32, len as i32))?;
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
