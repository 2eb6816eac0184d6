//! The key-value imports of contract 0.2: `wasi:keyvalue` (draft2) `store` and `atomics`, and
//! sandport's `expiry`, on the host's state store. A bucket is a [`Namespace`]; every call is
//! bounded by the plugin call's deadline, and every failure is an error value, never a trap.

use std::time::{Duration, Instant};

use wasmtime::component::Resource;

use crate::metrics::Op;
use crate::state::{self, Backend, Namespace, StateError};

use super::bindings::v2::sandport::plugin::expiry;
use super::bindings::v2::wasi::keyvalue::{atomics, store};
use super::host_api::HostState;
use super::services::OpenRefused;

/// An open bucket: the namespace its keys live in.
pub struct Bucket {
    ns: Namespace,
}

/// A compare-and-swap in progress: the key and the value it held when the `cas` was made.
pub struct Cas {
    ns: Namespace,
    key: String,
    current: Option<Vec<u8>>,
}

type Answer<T> = Result<T, store::Error>;

fn other(e: StateError) -> store::Error {
    store::Error::Other(crate::error::report(&e))
}

/// A handle the guest passed that the table does not hold: the component model makes this
/// impossible for well-formed guests, so it is reported rather than trusted.
fn stale(e: wasmtime::component::ResourceTableError) -> store::Error {
    store::Error::Other(format!("invalid handle: {e}"))
}

fn ms(ttl_ms: u64) -> Duration {
    Duration::from_millis(ttl_ms)
}

impl HostState {
    /// Runs `op` on the state store, in `bucket`'s namespace, by the call's deadline.
    fn in_bucket<T>(
        &self,
        bucket: &Resource<Bucket>,
        op: impl FnOnce(&dyn Backend, &Namespace, Instant) -> Result<T, StateError>,
    ) -> Answer<T> {
        let deadline = self.state_deadline();
        let table = self.table_ref().ok_or_else(no_state)?;
        let ns = &table.get(bucket).map_err(stale)?.ns;
        let services = self.services.as_ref().ok_or_else(no_state)?;
        op(&*services.state, ns, deadline).map_err(other)
    }
}

fn no_state() -> store::Error {
    store::Error::Other("this host has no state store".into())
}

impl store::Host for HostState {
    fn open(&mut self, identifier: String) -> Answer<Resource<Bucket>> {
        self.count(Op::Open);
        let services = self.services.as_ref().ok_or_else(no_state)?;
        let ns = services.namespace(&identifier).map_err(|e| match e {
            OpenRefused::NoSuchStore => store::Error::NoSuchStore,
            OpenRefused::AccessDenied => store::Error::AccessDenied,
        })?;
        self.table()
            .push(Bucket { ns })
            .map_err(|e| store::Error::Other(format!("too many open buckets: {e}")))
    }
}

impl store::HostBucket for HostState {
    fn get(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Option<Vec<u8>>> {
        self.count(Op::Get);
        self.in_bucket(&bucket, |s, ns, deadline| s.get(ns, &key, deadline))
    }

    fn set(&mut self, bucket: Resource<Bucket>, key: String, value: Vec<u8>) -> Answer<()> {
        self.count(Op::Set);
        self.in_bucket(&bucket, |s, ns, deadline| {
            s.set(ns, &key, &value, None, deadline)
        })
    }

    fn delete(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<()> {
        self.count(Op::Delete);
        self.in_bucket(&bucket, |s, ns, deadline| {
            s.delete(ns, &key, deadline).map(drop)
        })
    }

    fn exists(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<bool> {
        self.count(Op::Exists);
        self.in_bucket(&bucket, |s, ns, deadline| s.exists(ns, &key, deadline))
    }

    fn list_keys(
        &mut self,
        bucket: Resource<Bucket>,
        cursor: Option<String>,
    ) -> Answer<store::KeyResponse> {
        self.count(Op::ListKeys);
        let page = self.in_bucket(&bucket, |s, ns, deadline| {
            s.list_keys(ns, cursor.as_deref(), deadline)
        })?;
        Ok(store::KeyResponse {
            keys: page.keys,
            cursor: page.cursor,
        })
    }

    fn drop(&mut self, bucket: Resource<Bucket>) -> wasmtime::Result<()> {
        self.table().delete(bucket)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    fn increment(&mut self, bucket: Resource<Bucket>, key: String, delta: i64) -> Answer<i64> {
        self.count(Op::Increment);
        self.in_bucket(&bucket, |s, ns, deadline| {
            s.increment(ns, &key, delta, deadline)
        })
    }

    fn swap(&mut self, cas: Resource<Cas>, value: Vec<u8>) -> Result<(), atomics::CasError> {
        self.count(Op::Swap);
        let store_error = atomics::CasError::StoreError;
        let deadline = self.state_deadline();
        let cas = self
            .table()
            .delete(cas)
            .map_err(|e| store_error(stale(e)))?;
        let services = self
            .services
            .as_ref()
            .ok_or_else(|| store_error(no_state()))?;
        let swapped = services
            .state
            .compare_and_swap(&cas.ns, &cas.key, cas.current.as_deref(), &value, deadline)
            .map_err(|e| store_error(other(e)))?;
        if swapped {
            return Ok(());
        }
        // Lost the race: a new handle with what the key holds now, ready for a retry.
        let current = services
            .state
            .get(&cas.ns, &cas.key, deadline)
            .map_err(|e| store_error(other(e)))?;
        let retry = Cas { current, ..cas };
        let handle = self
            .table()
            .push(retry)
            .map_err(|e| store_error(store::Error::Other(format!("too many open handles: {e}"))))?;
        Err(atomics::CasError::CasFailed(handle))
    }
}

impl atomics::HostCas for HostState {
    fn new(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<Resource<Cas>> {
        self.count(Op::Cas);
        let (ns, current) = self.in_bucket(&bucket, |s, ns, deadline| {
            Ok((ns.clone(), s.get(ns, &key, deadline)?))
        })?;
        self.table()
            .push(Cas { ns, key, current })
            .map_err(|e| store::Error::Other(format!("too many open handles: {e}")))
    }

    fn current(&mut self, cas: Resource<Cas>) -> Answer<Option<Vec<u8>>> {
        let table = self.table_ref().ok_or_else(no_state)?;
        Ok(table.get(&cas).map_err(stale)?.current.clone())
    }

    fn drop(&mut self, cas: Resource<Cas>) -> wasmtime::Result<()> {
        self.table().delete(cas)?;
        Ok(())
    }
}

impl expiry::Host for HostState {
    fn set_with_ttl(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        value: Vec<u8>,
        ttl_ms: u64,
    ) -> Answer<()> {
        self.count(Op::SetWithTtl);
        self.in_bucket(&bucket, |s, ns, deadline| {
            s.set(ns, &key, &value, Some(ms(ttl_ms)), deadline)
        })
    }

    fn expire(
        &mut self,
        bucket: Resource<Bucket>,
        key: String,
        ttl_ms: Option<u64>,
    ) -> Answer<bool> {
        self.count(Op::Expire);
        self.in_bucket(&bucket, |s, ns, deadline| {
            s.expire(ns, &key, ttl_ms.map(ms), deadline)
        })
    }

    fn ttl(&mut self, bucket: Resource<Bucket>, key: String) -> Answer<expiry::TimeToLive> {
        self.count(Op::Ttl);
        let ttl = self.in_bucket(&bucket, |s, ns, deadline| s.ttl(ns, &key, deadline))?;
        Ok(match ttl {
            state::Ttl::Absent => expiry::TimeToLive::Absent,
            state::Ttl::Persistent => expiry::TimeToLive::Persistent,
            state::Ttl::Remaining(d) => {
                expiry::TimeToLive::Remaining(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            }
        })
    }
}

#[cfg(test)]
mod tests;
