//! The imports core ABI version 2 adds (`docs/core-abi.md`): the host's state store (the
//! `kv_*` functions, here) and messaging between connections ([`messaging`]), the same
//! operations contract 0.2 gives components, with status codes for answers and caller-supplied
//! buffers for results.
//!
//! Every call checks all its buffers first ([`super::guest`]): one out of bounds traps before
//! anything is done. After that a call never traps: whatever the store or the messenger answers
//! is a [`Status`].

use crate::metrics::Op;
use std::time::{Duration, Instant};

mod messaging;

use wasmtime::{Caller, Linker};

use crate::state::{Backend, Namespace, StateError, Ttl};

use super::guest::{Fault, Guest, Out};
use super::guest_memory;
use crate::plugin::host_api::HostState;
use crate::plugin::services::OpenRefused;

/// What a version-2 import answers (its `i32` result).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    /// Done, and the key, the room membership or the connection was not there.
    Absent = 1,
    /// `kv_compare_and_swap` found another value: nothing was written.
    CasMismatch = 2,
    /// The store did not answer by the call's deadline, or failed.
    Unavailable = 3,
    /// A state quota would be exceeded: nothing was written.
    Quota = 4,
    NotAnInteger = 5,
    Overflow = 6,
    /// A negative TTL, or a string that is not UTF-8.
    InvalidArgument = 7,
    NoSuchStore = 8,
    AccessDenied = 9,
    UnknownConnection = 10,
    TooManyRooms = 11,
    BadRoomName = 12,
}

/// The names of the version-2 imports (module `sandport`).
pub const IMPORTS: &[&str] = &[
    "kv_get",
    "kv_set",
    "kv_delete",
    "kv_exists",
    "kv_increment",
    "kv_compare_and_swap",
    "kv_expire",
    "kv_ttl",
    "kv_list_keys",
    "send",
    "close",
    "connection_info",
    "join",
    "leave",
    "members",
    "publish",
    "peer_certificate",
];

fn state_status(e: StateError) -> Status {
    match e {
        StateError::Unavailable(_) => Status::Unavailable,
        StateError::Quota(_) => Status::Quota,
        StateError::NotAnInteger => Status::NotAnInteger,
        StateError::Overflow => Status::Overflow,
        StateError::InvalidTtl => Status::InvalidArgument,
    }
}

/// What an import's body answers: a status (`Err` for anything but OK), or a trap.
type Answer = Result<Result<(), Status>, Fault>;

/// Runs an import's body on the guest's memory and the host state; its status is the result.
fn run(
    caller: &mut Caller<'_, HostState>,
    body: impl FnOnce(&mut Guest<'_>, &mut HostState) -> Answer,
) -> wasmtime::Result<i32> {
    let memory = guest_memory(caller)?;
    let (data, state) = memory.data_and_store_mut(caller);
    let status = match body(&mut Guest { data }, state)? {
        Ok(()) => Status::Ok,
        Err(s) => s,
    };
    Ok(status as i32)
}

fn text(bytes: Vec<u8>) -> Result<String, Status> {
    String::from_utf8(bytes).map_err(|_| Status::InvalidArgument)
}

/// A TTL argument: 0 is none (the key persists), a negative one is an error.
fn ttl(ms: i64) -> Result<Option<Duration>, Status> {
    match ms {
        0 => Ok(None),
        ms if ms > 0 => Ok(Some(Duration::from_millis(ms as u64))),
        _ => Err(Status::InvalidArgument),
    }
}

/// Runs `op` on the state store in `bucket`'s namespace, by the call's deadline.
fn in_bucket<T>(
    state: &HostState,
    bucket: &str,
    op: impl FnOnce(&dyn Backend, &Namespace, Instant) -> Result<T, StateError>,
) -> Result<T, Status> {
    let services = state.services.as_ref().ok_or(Status::Unavailable)?;
    let ns = services.namespace(bucket).map_err(|e| match e {
        OpenRefused::NoSuchStore => Status::NoSuchStore,
        OpenRefused::AccessDenied => Status::AccessDenied,
    })?;
    op(&*services.state, &ns, state.state_deadline()).map_err(state_status)
}

/// A boolean answer: true is OK, false is ABSENT.
fn found(b: bool) -> Result<(), Status> {
    if b {
        Ok(())
    } else {
        Err(Status::Absent)
    }
}

/// Writes a variable-length result: its length at `len_out`, and the bytes into `out` if they
/// fit (otherwise the caller asks again with a buffer of that length).
fn deliver(g: &mut Guest<'_>, out: &Out, len_out: &Out, bytes: &[u8]) -> Answer {
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    g.write(len_out, 0, &len.to_le_bytes())?;
    if bytes.len() <= out.cap() {
        g.write(out, 0, bytes)?;
    }
    Ok(Ok(()))
}

/// `(bucket_ptr, bucket_len, key_ptr, key_len)`, the first four arguments of every `kv_*` but
/// `kv_list_keys`, read as the bucket name and the key.
fn bucket_and_key(
    g: &Guest<'_>,
    b: (i32, i32),
    k: (i32, i32),
) -> Result<(Vec<u8>, Vec<u8>), Fault> {
    Ok((g.bytes("bucket", b.0, b.1)?, g.bytes("key", k.0, k.1)?))
}

/// Registers every version-2 import in `linker`.
pub fn link(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    link_state(linker)?;
    messaging::link(linker)
}

/// The caller every import gets.
type C<'a> = Caller<'a, HostState>;

fn link_state(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    const M: &str = "sandport";
    linker.func_wrap(
        M,
        "kv_get",
        |mut c: C<'_>, bp: i32, bl: i32, kp: i32, kl: i32, out: i32, cap: i32, len_out: i32| {
            run(&mut c, |g, s| {
                s.count(Op::Get);
                let (b, k) = bucket_and_key(g, (bp, bl), (kp, kl))?;
                let (out, len_out) = (
                    g.out("out", out, cap as u32 as u64)?,
                    g.out("len", len_out, 4)?,
                );
                let value = (|| {
                    let (b, k) = (text(b)?, text(k)?);
                    in_bucket(s, &b, |st, ns, d| st.get(ns, &k, d))?.ok_or(Status::Absent)
                })();
                match value {
                    Ok(v) => deliver(g, &out, &len_out, &v),
                    Err(status) => Ok(Err(status)),
                }
            })
        },
    )?;
    linker.func_wrap(
        M,
        "kv_set",
        |mut c: C<'_>, bp: i32, bl: i32, kp: i32, kl: i32, vp: i32, vl: i32, ttl_ms: i64| {
            run(&mut c, |g, s| {
                s.count(if ttl_ms > 0 { Op::SetWithTtl } else { Op::Set });
                let (b, k) = bucket_and_key(g, (bp, bl), (kp, kl))?;
                let value = g.bytes("value", vp, vl)?;
                Ok((|| {
                    let (b, k, ttl) = (text(b)?, text(k)?, ttl(ttl_ms)?);
                    in_bucket(s, &b, |st, ns, d| st.set(ns, &k, &value, ttl, d))
                })())
            })
        },
    )?;
    linker.func_wrap(
        M,
        "kv_delete",
        |mut c: C<'_>, bp: i32, bl: i32, kp: i32, kl: i32| {
            run(&mut c, |g, s| {
                s.count(Op::Delete);
                let (b, k) = bucket_and_key(g, (bp, bl), (kp, kl))?;
                Ok((|| {
                    let (b, k) = (text(b)?, text(k)?);
                    found(in_bucket(s, &b, |st, ns, d| st.delete(ns, &k, d))?)
                })())
            })
        },
    )?;
    linker.func_wrap(
        M,
        "kv_exists",
        |mut c: C<'_>, bp: i32, bl: i32, kp: i32, kl: i32| {
            run(&mut c, |g, s| {
                s.count(Op::Exists);
                let (b, k) = bucket_and_key(g, (bp, bl), (kp, kl))?;
                Ok((|| {
                    let (b, k) = (text(b)?, text(k)?);
                    found(in_bucket(s, &b, |st, ns, d| st.exists(ns, &k, d))?)
                })())
            })
        },
    )?;
    linker.func_wrap(
        M,
        "kv_increment",
        |mut c: C<'_>, bp: i32, bl: i32, kp: i32, kl: i32, delta: i64, out: i32| {
            run(&mut c, |g, s| {
                s.count(Op::Increment);
                let (b, k) = bucket_and_key(g, (bp, bl), (kp, kl))?;
                let out = g.out("out", out, 8)?;
                let n = (|| {
                    let (b, k) = (text(b)?, text(k)?);
                    in_bucket(s, &b, |st, ns, d| st.increment(ns, &k, delta, d))
                })();
                match n {
                    Ok(n) => g.write(&out, 0, &n.to_le_bytes()).map(Ok),
                    Err(status) => Ok(Err(status)),
                }
            })
        },
    )?;
    linker.func_wrap(
        M,
        "kv_compare_and_swap",
        |mut c: C<'_>, bp: i32, bl: i32, kp: i32, kl: i32, ep: i32, el: i32, np: i32, nl: i32| {
            run(&mut c, |g, s| {
                s.count(Op::Swap);
                let (b, k) = bucket_and_key(g, (bp, bl), (kp, kl))?;
                let expected = g.optional_bytes("expected", ep, el)?;
                let new = g.bytes("new", np, nl)?;
                Ok((|| {
                    let (b, k) = (text(b)?, text(k)?);
                    let swapped = in_bucket(s, &b, |st, ns, d| {
                        st.compare_and_swap(ns, &k, expected.as_deref(), &new, d)
                    })?;
                    if swapped {
                        Ok(())
                    } else {
                        Err(Status::CasMismatch)
                    }
                })())
            })
        },
    )?;
    linker.func_wrap(
        M,
        "kv_expire",
        |mut c: C<'_>, bp: i32, bl: i32, kp: i32, kl: i32, ttl_ms: i64| {
            run(&mut c, |g, s| {
                s.count(Op::Expire);
                let (b, k) = bucket_and_key(g, (bp, bl), (kp, kl))?;
                Ok((|| {
                    let (b, k, ttl) = (text(b)?, text(k)?, ttl(ttl_ms)?);
                    found(in_bucket(s, &b, |st, ns, d| st.expire(ns, &k, ttl, d))?)
                })())
            })
        },
    )?;
    linker.func_wrap(
        M,
        "kv_ttl",
        |mut c: C<'_>, bp: i32, bl: i32, kp: i32, kl: i32, out: i32| {
            run(&mut c, |g, s| {
                s.count(Op::Ttl);
                let (b, k) = bucket_and_key(g, (bp, bl), (kp, kl))?;
                let out = g.out("out", out, 8)?;
                let left = (|| {
                    let (b, k) = (text(b)?, text(k)?);
                    match in_bucket(s, &b, |st, ns, d| st.ttl(ns, &k, d))? {
                        Ttl::Absent => Err(Status::Absent),
                        Ttl::Persistent => Ok(-1i64),
                        Ttl::Remaining(d) => Ok(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
                    }
                })();
                match left {
                    Ok(ms) => g.write(&out, 0, &ms.to_le_bytes()).map(Ok),
                    Err(status) => Ok(Err(status)),
                }
            })
        },
    )?;
    linker.func_wrap(
        M,
        "kv_list_keys",
        |mut c: C<'_>, bp: i32, bl: i32, cp: i32, cl: i32, out: i32, cap: i32, len_out: i32| {
            run(&mut c, |g, s| {
                s.count(Op::ListKeys);
                let bucket = g.bytes("bucket", bp, bl)?;
                let cursor = g.optional_bytes("cursor", cp, cl)?;
                let (out, len_out) = (
                    g.out("out", out, cap as u32 as u64)?,
                    g.out("len", len_out, 4)?,
                );
                let page = (|| {
                    let b = text(bucket)?;
                    let cursor = cursor.map(text).transpose()?;
                    in_bucket(s, &b, |st, ns, d| st.list_keys(ns, cursor.as_deref(), d))
                })();
                match page {
                    Ok(page) => deliver(
                        g,
                        &out,
                        &len_out,
                        &encode_page(&page.keys, page.cursor.as_deref()),
                    ),
                    Err(status) => Ok(Err(status)),
                }
            })
        },
    )?;
    Ok(())
}

/// A `kv_list_keys` page: `u32` count, then each key as `u32` length and bytes, then the
/// cursor as `u32` length and bytes, its length `0xFFFFFFFF` (and no bytes) on the last page.
fn encode_page(keys: &[String], cursor: Option<&str>) -> Vec<u8> {
    let mut page = Vec::new();
    let mut put = |bytes: &[u8]| {
        page.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        page.extend_from_slice(bytes);
    };
    put(&[]);
    for key in keys {
        put(key.as_bytes());
    }
    match cursor {
        Some(c) => put(c.as_bytes()),
        None => page.extend_from_slice(&u32::MAX.to_le_bytes()),
    }
    page[..4].copy_from_slice(&(keys.len() as u32).to_le_bytes());
    page
}

#[cfg(test)]
mod tests;
