//! The key-value imports on a real memory store, called as a guest would: buckets by name,
//! every operation, compare-and-swap races, TTLs, quotas as error values.

use std::collections::BTreeSet;
use std::sync::Arc;

use wasmtime::component::Resource;

use super::*;
use crate::plugin::bindings::v2::sandport::plugin::expiry::Host as _;
use crate::plugin::bindings::v2::wasi::keyvalue::atomics::{Host as _, HostCas as _};
use crate::plugin::bindings::v2::wasi::keyvalue::store::{Host as _, HostBucket as _};
use crate::plugin::limits::{CutOff, Limits};
use crate::plugin::services::Services;
use crate::state::Quotas;

/// A plugin `name`'s host state on `state`, given the shared namespaces `grants`, with `all`
/// shared namespaces existing, inside a call with a second of budget.
fn plugin(state: &Arc<dyn Backend>, name: &str, grants: &[&str], all: &[&str]) -> HostState {
    let services = Services {
        state: state.clone(),
        own: Namespace::plugin(name).unwrap(),
        shared: Arc::new(grants.iter().map(|s| s.to_string()).collect()),
        all_shared: Arc::new(all.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>()),
        messenger: None,
        ops: Arc::default(),
    };
    let mut limits = Limits::new(1 << 20, CutOff::default());
    limits.start_for_test(std::time::Duration::from_secs(1));
    HostState::new(name.into(), Arc::default(), false, limits, Some(services))
}

fn memory(quotas: Quotas) -> Arc<dyn Backend> {
    crate::state::open("memory", quotas).unwrap()
}

fn open(h: &mut HostState, name: &str) -> Resource<Bucket> {
    h.open(name.into()).unwrap()
}

fn b(r: &Resource<Bucket>) -> Resource<Bucket> {
    Resource::new_borrow(r.rep())
}

#[test]
fn every_store_operation_on_the_plugins_own_bucket() {
    let store = memory(Quotas::default());
    let mut h = plugin(&store, "p", &[], &[]);
    let bucket = open(&mut h, "default");
    assert_eq!(h.get(b(&bucket), "k".into()).unwrap(), None);
    h.set(b(&bucket), "k".into(), b"v".to_vec()).unwrap();
    assert_eq!(h.get(b(&bucket), "k".into()).unwrap(), Some(b"v".to_vec()));
    assert!(h.exists(b(&bucket), "k".into()).unwrap());
    h.set(b(&bucket), "j".into(), b"w".to_vec()).unwrap();
    let page = h.list_keys(b(&bucket), None).unwrap();
    assert_eq!(page.keys, ["j", "k"]);
    assert_eq!(page.cursor, None);
    h.delete(b(&bucket), "k".into()).unwrap();
    h.delete(b(&bucket), "k".into())
        .expect("deleting an absent key is not an error");
    assert!(!h.exists(b(&bucket), "k".into()).unwrap());
    // `""` is the same bucket as `default`.
    let same = open(&mut h, "");
    assert_eq!(h.get(b(&same), "j".into()).unwrap(), Some(b"w".to_vec()));
    store::HostBucket::drop(&mut h, bucket).unwrap();
    store::HostBucket::drop(&mut h, same).unwrap();
}

#[test]
fn plugins_cannot_read_each_other_unless_a_namespace_is_shared() {
    let store = memory(Quotas::default());
    let mut a = plugin(&store, "a", &["team"], &["team", "other"]);
    let mut c = plugin(&store, "c", &["team"], &["team", "other"]);
    let a_own = open(&mut a, "default");
    a.set(b(&a_own), "k".into(), b"a's".to_vec()).unwrap();
    let c_own = open(&mut c, "default");
    assert_eq!(
        c.get(b(&c_own), "k".into()).unwrap(),
        None,
        "c's own bucket is not a's"
    );

    let a_team = open(&mut a, "team");
    a.set(b(&a_team), "k".into(), b"shared".to_vec()).unwrap();
    let c_team = open(&mut c, "team");
    assert_eq!(
        c.get(b(&c_team), "k".into()).unwrap(),
        Some(b"shared".to_vec())
    );

    assert!(matches!(
        a.open("other".into()),
        Err(store::Error::AccessDenied)
    ));
    assert!(matches!(
        a.open("nowhere".into()),
        Err(store::Error::NoSuchStore)
    ));
}

#[test]
fn increment_and_compare_and_swap_with_a_lost_race() {
    let store = memory(Quotas::default());
    let mut h = plugin(&store, "p", &[], &[]);
    let mut rival = plugin(&store, "p", &[], &[]);
    let bucket = open(&mut h, "default");
    assert_eq!(h.increment(b(&bucket), "n".into(), 5).unwrap(), 5);
    assert_eq!(h.increment(b(&bucket), "n".into(), -2).unwrap(), 3);
    h.set(b(&bucket), "s".into(), b"text".to_vec()).unwrap();
    assert!(matches!(
        h.increment(b(&bucket), "s".into(), 1),
        Err(store::Error::Other(e)) if e.contains("not a decimal 64-bit integer")
    ));

    let cas = h.new(b(&bucket), "n".into()).unwrap();
    assert_eq!(
        h.current(Resource::new_borrow(cas.rep())).unwrap(),
        Some(b"3".to_vec())
    );
    // Another instance changes the value between the read and the swap.
    let rb = open(&mut rival, "default");
    rival.set(b(&rb), "n".into(), b"10".to_vec()).unwrap();
    let retry = match h.swap(cas, b"4".to_vec()) {
        Err(atomics::CasError::CasFailed(retry)) => retry,
        other => panic!("expected a lost race, got {:?}", other.map_err(|_| ())),
    };
    assert_eq!(
        h.current(Resource::new_borrow(retry.rep())).unwrap(),
        Some(b"10".to_vec()),
        "the retry handle holds the value that won"
    );
    h.swap(retry, b"11".to_vec())
        .map_err(|_| ())
        .expect("the retry swaps");
    assert_eq!(h.get(b(&bucket), "n".into()).unwrap(), Some(b"11".to_vec()));

    // A swap on an absent key succeeds only while it stays absent.
    let fresh = h.new(b(&bucket), "new".into()).unwrap();
    h.swap(fresh, b"first".to_vec()).map_err(|_| ()).unwrap();
    assert_eq!(
        h.get(b(&bucket), "new".into()).unwrap(),
        Some(b"first".to_vec())
    );
}

#[test]
fn ttls_expire_and_report() {
    let store = memory(Quotas::default());
    let mut h = plugin(&store, "p", &[], &[]);
    let bucket = open(&mut h, "default");
    assert!(matches!(
        h.ttl(b(&bucket), "k".into()).unwrap(),
        expiry::TimeToLive::Absent
    ));
    h.set(b(&bucket), "k".into(), b"v".to_vec()).unwrap();
    assert!(matches!(
        h.ttl(b(&bucket), "k".into()).unwrap(),
        expiry::TimeToLive::Persistent
    ));
    assert!(h.expire(b(&bucket), "k".into(), Some(60_000)).unwrap());
    match h.ttl(b(&bucket), "k".into()).unwrap() {
        expiry::TimeToLive::Remaining(ms) => assert!((59_000..=60_000).contains(&ms), "{ms}"),
        other => panic!("expected a remaining TTL, got {other:?}"),
    }
    assert!(!h.expire(b(&bucket), "missing".into(), Some(5)).unwrap());
    h.set_with_ttl(b(&bucket), "short".into(), b"v".to_vec(), 1)
        .unwrap();
    let gone = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while h.get(b(&bucket), "short".into()).unwrap().is_some() {
        assert!(std::time::Instant::now() < gone, "a 1 ms key never expired");
        std::thread::yield_now();
    }
    assert!(matches!(
        h.set_with_ttl(b(&bucket), "k".into(), b"v".to_vec(), 0),
        Err(store::Error::Other(e)) if e.contains("at least 1 ms")
    ));
}

#[test]
fn quotas_are_errors_that_write_nothing() {
    let quotas = Quotas {
        max_key_bytes: 4,
        max_value_bytes: 8,
        max_namespace_bytes: 20,
    };
    let store = memory(quotas);
    let mut h = plugin(&store, "p", &[], &[]);
    let bucket = open(&mut h, "default");
    for (key, value) in [("toolong", &b"v"[..]), ("k", &b"123456789"[..])] {
        let e = h.set(b(&bucket), key.into(), value.to_vec()).unwrap_err();
        assert!(
            matches!(&e, store::Error::Other(m) if m.contains("quota")),
            "{e:?}"
        );
        // Nothing was written (a key over the key quota cannot even be asked about).
        assert!(!h.exists(b(&bucket), key.into()).unwrap_or(false));
    }
    assert!(!h.exists(b(&bucket), "k".into()).unwrap());
    h.set(b(&bucket), "a".into(), b"12345678".to_vec()).unwrap();
    h.set(b(&bucket), "b".into(), b"12345678".to_vec()).unwrap();
    let e = h
        .set(b(&bucket), "c".into(), b"12345678".to_vec())
        .unwrap_err();
    assert!(
        matches!(&e, store::Error::Other(m) if m.contains("namespace")),
        "{e:?}"
    );
}

#[test]
fn a_call_past_its_deadline_gets_unavailable() {
    let store = memory(Quotas::default());
    let mut h = plugin(&store, "p", &[], &[]);
    h.limits.start_for_test(std::time::Duration::ZERO);
    let bucket = open(&mut h, "default");
    let e = h.get(b(&bucket), "k".into()).unwrap_err();
    assert!(
        matches!(&e, store::Error::Other(m) if m.contains("unavailable")),
        "{e:?}"
    );
}
