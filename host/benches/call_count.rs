//! Runs one call-path case a fixed number of times, for `valgrind --tool=callgrind`: instruction
//! counts are repeatable where timings on a shared 2-core machine are not. `bench/profile.sh`
//! runs it twice (N and 2N calls) and divides the difference by N, so loading and compiling the
//! plugin cancel out, then reports where the instructions of one call go.
//!
//! Usage: `call_count CASE SIZE CALLS` with a case from `common::CASES`.

use std::hint::black_box;

use sandport::plugin::ConnInstances;

mod common;
use common::{case_pool, conn, core_echo, echo_component, message, Case, CASES};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = || -> ! {
        let names: Vec<_> = CASES.iter().map(|(n, s)| format!("{n} {s}")).collect();
        eprintln!(
            "usage: call_count CASE SIZE CALLS\ncases: {}",
            names.join(", ")
        );
        std::process::exit(2)
    };
    let [name, size, calls] = &args[..] else {
        usage()
    };
    let (Ok(size), Ok(calls)) = (size.parse::<usize>(), calls.parse::<u64>()) else {
        usage()
    };
    let component = echo_component();
    let core = core_echo();
    let Some(mut pool) = case_pool(name, &component, &core) else {
        usage()
    };
    let conn = conn();
    let mut own = ConnInstances::default();
    let msg = message(size);
    run(&mut pool, &conn, &mut own, &msg, calls);
    let _ = std::fs::remove_dir_all(core.parent().expect("in a folder"));
}

/// The measured loop, kept out of line so callgrind's `--toggle-collect` can pick it out.
#[inline(never)]
fn run(
    pool: &mut Case,
    conn: &sandport::plugin::bindings::Connection,
    own: &mut ConnInstances,
    msg: &[u8],
    calls: u64,
) {
    for _ in 0..calls {
        let out = pool.on_message(black_box(msg), conn, own).expect("call");
        assert_eq!(out.reply.as_deref(), Some(msg), "not an echo");
    }
}
