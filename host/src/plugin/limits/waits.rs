//! WASI waits that end by the call's deadline: WASI 0.2's `monotonic-clock` for components and
//! preview 1's `poll_oneoff` for core modules, each shadowing WASI's own.
//!
//! The epoch deadline only interrupts running wasm code; a guest blocked in the host (a WASI
//! `sleep` is a `subscribe-duration` then a `poll`) would hold the worker for as long as it
//! asked. Clamping every wait to the call's remaining budget means the guest wakes by its
//! deadline and the epoch check then traps it. Waits that end within the budget are unchanged.

use std::time::Duration;

use wasmtime::component::{HasData, Linker, Resource};
use wasmtime::{format_err, Caller};
use wasmtime_wasi::clocks::{WasiClocksCtxView, WasiClocksView};
use wasmtime_wasi::p2::bindings::clocks::{monotonic_clock, wall_clock};
use wasmtime_wasi::p2::DynPollable;

use super::TICK;
use crate::plugin::core_abi::{guest_memory, read_guest};
use crate::plugin::host_api::HostState;

/// The longest a guest may wait in the host with `left` of its budget: a little past the
/// deadline, so that it wakes up overdue and the next epoch check stops it.
fn capped_wait(left: Duration) -> Duration {
    left + TICK * 2
}

/// Replaces WASI 0.2's `monotonic-clock` in a component linker with one whose timers end by
/// the call's deadline.
pub fn link_capped_clock(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let res =
        monotonic_clock::add_to_linker::<HostState, CappedClock>(linker, |s| CappedClockView {
            left: s.limits.left(),
            inner: s.clocks(),
        });
    linker.allow_shadowing(false);
    res
}

/// Replaces WASI preview 1's `poll_oneoff` in a core-module linker with [`poll_oneoff`].
pub fn link_capped_poll(linker: &mut wasmtime::Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let res = linker
        .func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff)
        .map(drop);
    linker.allow_shadowing(false);
    res
}

struct CappedClock;

impl HasData for CappedClock {
    type Data<'a> = CappedClockView<'a>;
}

struct CappedClockView<'a> {
    /// The call's budget left when the guest called in.
    left: Duration,
    inner: WasiClocksCtxView<'a>,
}

impl CappedClockView<'_> {
    fn remaining_ns(&self) -> u64 {
        capped_wait(self.left).as_nanos() as u64
    }
}

impl monotonic_clock::Host for CappedClockView<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        self.inner.now()
    }

    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        self.inner.resolution()
    }

    fn subscribe_instant(
        &mut self,
        when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let now = self.inner.now()?;
        let capped = when.min(now.saturating_add(self.remaining_ns()));
        self.inner.subscribe_instant(capped)
    }

    fn subscribe_duration(
        &mut self,
        duration: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        let capped = duration.min(self.remaining_ns());
        self.inner.subscribe_duration(capped)
    }
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
        let cap = capped_wait(caller.data().limits.left());
        let wait = Duration::from_nanos(earliest).min(cap);
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
        .map_err(|_| format_err!("poll_oneoff: events buffer outside memory"))?;
    memory
        .write(
            &mut caller,
            nevents_out as u32 as usize,
            &(ready.len() as u32).to_le_bytes(),
        )
        .map_err(|_| format_err!("poll_oneoff: nevents outside memory"))?;
    Ok(0)
}
