//! Version 2's imports under a hostile guest: every import called with arbitrary pointers,
//! lengths and values answers a status or traps that call, and never panics the host.

use std::sync::Arc;

use wasmtime::{Engine, Extern, Module, Store, Val, ValType};

use super::*;
use crate::plugin::limits::{self, CutOff, Limits};
use crate::plugin::services::Services;
use crate::state::{self, Namespace, Quotas};

#[test]
fn a_key_page_lists_its_keys_then_its_cursor() {
    let page = encode_page(&["a".into(), "bc".into()], Some("bc"));
    assert_eq!(
        page,
        [
            &2u32.to_le_bytes()[..],
            &1u32.to_le_bytes(),
            b"a",
            &2u32.to_le_bytes(),
            b"bc",
            &2u32.to_le_bytes(),
            b"bc"
        ]
        .concat()
    );
    let last = encode_page(&[], None);
    assert_eq!(last, [0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
}

#[test]
fn ttl_arguments() {
    assert_eq!(ttl(0), Ok(None));
    assert_eq!(ttl(1500), Ok(Some(Duration::from_millis(1500))));
    assert_eq!(ttl(-1), Err(Status::InvalidArgument));
    assert_eq!(ttl(i64::MIN), Err(Status::InvalidArgument));
}

/// A store whose plugin has its own namespace in a memory store, and no server (no connection
/// is open), inside a call with ten seconds of budget.
fn store(engine: &Engine) -> Store<HostState> {
    let services = Services {
        state: state::open("memory", Quotas::default()).unwrap(),
        own: Namespace::plugin("hostile").unwrap(),
        shared: Arc::default(),
        all_shared: Arc::default(),
        messenger: None,
        ops: Arc::default(),
    };
    let state = HostState::new(
        "hostile".into(),
        Arc::default(),
        true,
        Limits::new(1 << 20, CutOff::default()),
        Some(services),
    );
    let mut store = limits::new_store(engine, state);
    limits::start_call(&mut store, 1, Duration::from_secs(10)).unwrap();
    store
}

/// A deterministic stream of numbers, half of them edge cases.
struct Values(u64);

impl Values {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn i32(&mut self) -> i32 {
        const EDGES: [i32; 10] = [0, 1, 8, -1, -2, 65532, 65535, 65536, i32::MAX, i32::MIN];
        let n = self.next();
        match n % 4 {
            0 => EDGES[(n >> 8) as usize % EDGES.len()],
            1 | 2 => ((n >> 8) % 2048) as i32, // inside the page
            _ => (n >> 8) as i32,
        }
    }

    fn i64(&mut self) -> i64 {
        const EDGES: [i64; 6] = [0, 1, -1, 60_000, i64::MAX, i64::MIN];
        let n = self.next();
        if n.is_multiple_of(2) {
            EDGES[(n >> 8) as usize % EDGES.len()]
        } else {
            (n >> 8) as i64
        }
    }
}

#[test]
fn every_import_answers_a_status_or_traps_on_hostile_arguments() {
    let mut config = wasmtime::Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config).unwrap();
    let linker = super::super::linker(&engine).unwrap();
    let mut values = Values(0x9e37_79b9_7f4a_7c15);
    for name in IMPORTS {
        let mut store = store(&engine);
        let Ok(Extern::Func(f)) = linker.get(&mut store, "sandport", name) else {
            panic!("{name} is not linked");
        };
        let params: Vec<ValType> = f.ty(&store).params().collect();
        let types = params
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>()
            .join(" ");
        let gets = (0..params.len())
            .map(|i| format!("(local.get {i})"))
            .collect::<String>();
        // One page of memory; `go` forwards its arguments to the import.
        let wat = format!(
            r#"(module
                 (import "sandport" "{name}" (func $f (param {types}) (result i32)))
                 (memory (export "memory") 1)
                 (func (export "go") (param {types}) (result i32) {gets} (call $f)))"#
        );
        let module = Module::new(&engine, wat).unwrap();
        let instance = linker.instantiate(&mut store, &module).unwrap();
        let go = instance.get_func(&mut store, "go").unwrap();
        let (mut answered, mut trapped) = (0, 0);
        for _ in 0..5000 {
            let args: Vec<Val> = params
                .iter()
                .map(|t| match t {
                    ValType::I64 => Val::I64(values.i64()),
                    _ => Val::I32(values.i32()),
                })
                .collect();
            let mut result = [Val::I32(-1)];
            match go.call(&mut store, &args, &mut result) {
                Ok(()) => {
                    let status = result[0].unwrap_i32();
                    assert!(
                        (0..=12).contains(&status),
                        "{name}{args:?}: status {status}"
                    );
                    answered += 1;
                }
                Err(e) => {
                    let e = format!("{e:?}");
                    assert!(
                        e.contains("outside the module's memory"),
                        "{name}{args:?}: {e}"
                    );
                    trapped += 1;
                }
            }
        }
        eprintln!("{name}: {answered} answered, {trapped} trapped");
        let ops = &store
            .data()
            .services
            .as_ref()
            .expect("made with services")
            .ops;
        let counted: u64 = crate::metrics::Op::ALL.iter().map(|&op| ops.get(op)).sum();
        assert_eq!(
            counted, 5000,
            "{name}: every call is counted once, by operation"
        );
        if *name == "close" {
            assert_eq!(trapped, 0, "close has no buffer to get wrong");
        } else {
            assert!(trapped > 0, "{name}: no hostile buffer was caught");
        }
        assert!(answered > 0, "{name}: no call got through the checks");
    }
}
