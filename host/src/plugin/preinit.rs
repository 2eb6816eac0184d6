//! Pre-initialization of core modules that export `_initialize` (WASI reactors: Go's runtime,
//! TinyGo, C and Zig with constructors): the function runs once, at load, in the plugin's own
//! sandbox, and the state it leaves (memory and globals) becomes the module's initial state
//! (wasmtime's Wizer). A fresh instance then starts where `_initialize` ended instead of running
//! it again, which for Go is most of the cost of an instance per message.
//!
//! What a plugin sees (docs/core-abi.md, "Pre-initialization"): everything `_initialize` did
//! happened once, at load, not once per instance: values it drew (random seeds, the clock) are
//! the same in every instance, and what it logged is logged once.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use wasmtime::{Instance, Linker, Module, Store};
use wasmtime_wizer::{InstanceState, SnapshotVal, ValType, Wizer};

use super::host_api::HostState;
use super::limits;

/// Part of a pre-initialized module's cache key: a change to how it is made makes a new entry.
pub const VERSION: &str = "wasmtime-wizer 48.0.8; data merged within 1 MiB, unread dropped";

/// The reactor initializer this pre-initializes.
pub const INIT: &str = "_initialize";

/// Whether `module` exports `_initialize` as a function without parameters or results.
pub fn wants(module: &Module) -> bool {
    matches!(
        module.get_export(INIT),
        Some(wasmtime::ExternType::Func(f)) if f.params().len() == 0 && f.results().len() == 0
    )
}

/// Runs `bytes`'s `_initialize` in `store` (with its memory cap, and a call's `timeout` from
/// instantiation on) and returns the module with its result as initial state, without the
/// `_initialize` export.
pub fn run(
    linker: &Linker<HostState>,
    mut store: Store<HostState>,
    timeout: Duration,
    bytes: &[u8],
) -> wasmtime::Result<Vec<u8>> {
    let mut wizer = Wizer::new();
    wizer.init_func(INIT);
    let (cx, instrumented) = wizer.instrument(bytes)?;
    let module = Module::new(store.engine(), &instrumented)?;
    limits::start_call(&mut store, 0, timeout)?;
    let instance = linker.instantiate(&mut store, &module)?;
    instance
        .get_typed_func::<(), ()>(&mut store, INIT)?
        .call(&mut store, ())?;
    store.data_mut().flush_output();
    let snapshot = ready(wizer.snapshot(&cx, &mut Snapshot { store, instance }))??;
    merge_data(&snapshot)
}

/// Two active data segments closer than this become one (the zeros between them included).
const MERGE_GAP: u32 = 1 << 20;

/// `module` with its active data segments merged where they lie within [`MERGE_GAP`] of each
/// other. Wizer writes the snapshot as up to 10,000 segments, one per run of non-zero bytes,
/// and wasmtime records every segment's address in each new instance (Go's runtime after
/// `_initialize`: 46% of the server's time). The memory image is one mapping either way.
fn merge_data(module: &[u8]) -> wasmtime::Result<Vec<u8>> {
    use wasmparser::{Parser, Payload};
    let Some(segments) = merged_segments(module)? else {
        return Ok(module.to_vec());
    };
    let mut out = wasm_encoder::Module::new();
    for payload in Parser::new(0).parse_all(module) {
        match payload? {
            Payload::DataSection(_) => {
                let mut section = wasm_encoder::DataSection::new();
                for (memory, offset, bytes) in &segments {
                    let offset = wasm_encoder::ConstExpr::i32_const(*offset as i32);
                    section.active(*memory, &offset, bytes.iter().copied());
                }
                out.section(&section);
            }
            Payload::DataCountSection { .. } => {
                let count = segments.len() as u32;
                out.section(&wasm_encoder::DataCountSection { count });
            }
            other => {
                if let Some((id, range)) = other.as_section() {
                    let data = &module[range];
                    out.section(&wasm_encoder::RawSection { id, data });
                }
            }
        }
    }
    Ok(out.finish())
}

/// The module's active data segments as (memory, offset, bytes), merged. Passive segments are
/// dropped when no code can read them (Wizer turns the original active segments into passive
/// ones, and forbids `data.drop`; Go's 22,764 would each cost every instance a vmctx entry);
/// `None` when code uses `memory.init`, which names segments by index, or an offset is not a
/// constant.
#[allow(clippy::type_complexity)]
fn merged_segments(module: &[u8]) -> wasmtime::Result<Option<Vec<(u32, u32, Vec<u8>)>>> {
    use wasmparser::{DataKind, Operator, Parser, Payload};
    if uses_memory_init(module)? {
        return Ok(None);
    }
    let mut merged: Vec<(u32, u32, Vec<u8>)> = Vec::new();
    for payload in Parser::new(0).parse_all(module) {
        let Payload::DataSection(reader) = payload? else {
            continue;
        };
        for data in reader {
            let data = data?;
            let DataKind::Active {
                memory_index,
                offset_expr,
            } = data.kind
            else {
                continue;
            };
            let mut ops = offset_expr.get_operators_reader();
            let (Operator::I32Const { value }, Operator::End) = (ops.read()?, ops.read()?) else {
                return Ok(None);
            };
            let offset = value as u32;
            match merged.last_mut() {
                Some((memory, start, bytes))
                    if *memory == memory_index
                        && offset >= *start + bytes.len() as u32
                        && offset - (*start + bytes.len() as u32) <= MERGE_GAP =>
                {
                    bytes.resize((offset - *start) as usize, 0);
                    bytes.extend_from_slice(data.data);
                }
                _ => merged.push((memory_index, offset, data.data.to_vec())),
            }
        }
    }
    Ok(Some(merged))
}
/// Whether any function reads a data segment with `memory.init`.
fn uses_memory_init(module: &[u8]) -> wasmtime::Result<bool> {
    use wasmparser::{Operator, Parser, Payload};
    for payload in Parser::new(0).parse_all(module) {
        if let Payload::CodeSectionEntry(body) = payload? {
            let mut ops = body.get_operators_reader()?;
            while !ops.eof() {
                if let Operator::MemoryInit { .. } = ops.read()? {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// The instance's state as Wizer reads it: its exported globals and memories.
struct Snapshot {
    store: Store<HostState>,
    instance: Instance,
}

impl InstanceState for Snapshot {
    fn global_get(&mut self, name: &str, _: ValType) -> impl Future<Output = SnapshotVal> + Send {
        let global = self.instance.get_global(&mut self.store, name);
        let value = match global.map(|g| g.get(&mut self.store)) {
            Some(wasmtime::Val::I32(x)) => SnapshotVal::I32(x),
            Some(wasmtime::Val::I64(x)) => SnapshotVal::I64(x),
            Some(wasmtime::Val::F32(x)) => SnapshotVal::F32(x),
            Some(wasmtime::Val::F64(x)) => SnapshotVal::F64(x),
            Some(wasmtime::Val::V128(x)) => SnapshotVal::V128(x.as_u128()),
            // Wizer asks only for the globals its instrumentation exported, of these types.
            other => panic!("global {name}: {other:?} cannot be snapshotted"),
        };
        std::future::ready(value)
    }

    fn memory_contents(
        &mut self,
        name: &str,
        contents: impl FnOnce(&[u8]) + Send,
    ) -> impl Future<Output = ()> + Send {
        let memory = self.instance.get_memory(&mut self.store, name);
        let memory = memory.unwrap_or_else(|| panic!("memory {name} is not exported"));
        contents(memory.data(&self.store));
        std::future::ready(())
    }
}

/// The output of a future that never waits (Wizer's snapshot over [`Snapshot`], which answers
/// at once); an error if it would.
fn ready<T>(f: impl Future<Output = T>) -> wasmtime::Result<T> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Ok(v),
        Poll::Pending => Err(wasmtime::format_err!("the snapshot waited")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segments(module: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        use wasmparser::{DataKind, Operator, Parser, Payload};
        let mut out = Vec::new();
        for payload in Parser::new(0).parse_all(module) {
            if let Payload::DataSection(r) = payload.unwrap() {
                for d in r {
                    let d = d.unwrap();
                    let DataKind::Active {
                        memory_index,
                        offset_expr,
                    } = d.kind
                    else {
                        panic!("a passive segment is left")
                    };
                    let Operator::I32Const { value } =
                        offset_expr.get_operators_reader().read().unwrap()
                    else {
                        panic!("offset")
                    };
                    out.push((memory_index, value as u32, d.data.to_vec()));
                }
            }
        }
        out
    }

    #[test]
    fn near_data_segments_become_one_and_far_ones_stay_apart() {
        let module = wat::parse_str(
            r#"(module (memory 40) (data (i32.const 16) "ab") (data (i32.const 20) "cd")
                (data (i32.const 2000000) "far") (func (export "f")))"#,
        )
        .unwrap();
        let merged = merge_data(&module).unwrap();
        wasmparser::Validator::new().validate_all(&merged).unwrap();
        assert_eq!(
            segments(&merged),
            vec![
                (0, 16, b"ab\0\0cd".to_vec()),
                (0, 2_000_000, b"far".to_vec())
            ]
        );
    }

    #[test]
    fn passive_data_no_code_reads_is_dropped() {
        let module = wat::parse_str(
            r#"(module (memory 1) (data (i32.const 0) "a") (data (i32.const 8) "b")
                (data "passive") (func (export "f")))"#,
        )
        .unwrap();
        let merged = merge_data(&module).unwrap();
        wasmparser::Validator::new().validate_all(&merged).unwrap();
        assert_eq!(
            segments(&merged),
            vec![(0, 0, b"a\0\0\0\0\0\0\0b".to_vec())]
        );
    }

    #[test]
    fn a_module_that_reads_data_with_memory_init_is_left_as_it_is() {
        let module = wat::parse_str(
            r#"(module (memory 1) (data (i32.const 0) "a") (data (i32.const 8) "b")
                (data "passive")
                (func (export "f") (memory.init 2 (i32.const 0) (i32.const 0) (i32.const 1))))"#,
        )
        .unwrap();
        assert_eq!(merge_data(&module).unwrap(), module);
    }
}
