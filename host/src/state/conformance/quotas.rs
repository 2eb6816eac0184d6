//! The conformance checks of the quotas: each one's error, and exact byte accounting through
//! every operation and through expiry.

use std::time::Duration;

use super::{eventually, ns, quota_error, soon, Make};
use crate::state::{Quota, Quotas};

pub(crate) fn quotas_refuse_with_the_limit_and_size(make: Make) {
    let quotas = Quotas {
        max_key_bytes: 8,
        max_value_bytes: 10,
        max_namespace_bytes: 1000,
    };
    let (b, a) = (make(quotas), ns("a"));
    let q = quota_error(b.set(&a, "k", &[0; 11], None, soon()));
    assert_eq!((q.quota, q.limit, q.asked), (Quota::ValueBytes, 10, 11));
    let err = crate::error::report(&b.set(&a, "k", &[0; 11], None, soon()).unwrap_err());
    assert_eq!(
        err,
        "state quota exceeded: the value would take 11 bytes, over the limit of 10"
    );
    let q = quota_error(b.compare_and_swap(&a, "k", None, &[0; 11], soon()));
    assert_eq!(q.quota, Quota::ValueBytes);
    for long in [
        b.get(&a, "ninechars", soon()).map(drop),
        b.set(&a, "ninechars", b"", None, soon()),
    ] {
        let q = quota_error(long);
        assert_eq!((q.quota, q.limit, q.asked), (Quota::KeyBytes, 8, 9));
    }
    b.set(&a, "eightchr", &[0; 10], None, soon()).unwrap();
    assert_eq!(
        b.get(&a, "k", soon()).unwrap(),
        None,
        "nothing refused was written"
    );
    assert_eq!(b.usage(&a, soon()).unwrap(), 18);
}

pub(crate) fn namespace_bytes_are_counted_exactly(make: Make) {
    let quotas = Quotas {
        max_namespace_bytes: 100,
        ..Quotas::default()
    };
    let (b, a) = (make(quotas), ns("a"));
    let used = || b.usage(&a, soon()).unwrap();
    b.set(&a, "a", &[0; 49], None, soon()).unwrap();
    assert_eq!(used(), 50);
    let q = quota_error(b.set(&a, "b", &[0; 50], None, soon()));
    assert_eq!(
        (q.quota, q.limit, q.asked),
        (Quota::NamespaceBytes, 100, 101)
    );
    b.set(&a, "b", &[0; 49], None, soon()).unwrap();
    assert_eq!(used(), 100, "exactly at the limit is allowed");
    b.set(&a, "a", &[0; 9], None, soon()).unwrap();
    assert_eq!(used(), 60, "an overwrite counts the difference");
    assert_eq!(b.increment(&a, "n", 9, soon()).unwrap(), 9);
    assert_eq!(used(), 62);
    assert_eq!(b.increment(&a, "n", 1, soon()).unwrap(), 10);
    assert_eq!(used(), 63);
    assert!(b
        .compare_and_swap(&a, "n", Some(b"10"), b"1234", soon())
        .unwrap());
    assert_eq!(used(), 65);
    assert!(!b
        .compare_and_swap(&a, "n", Some(b"10"), b"123456", soon())
        .unwrap());
    assert_eq!(used(), 65, "a failed swap changes nothing");
    assert!(b
        .expire(&a, "n", Some(Duration::from_secs(60)), soon())
        .unwrap());
    assert_eq!(used(), 65, "a TTL is not counted");
    assert!(b.delete(&a, "b", soon()).unwrap());
    assert_eq!(used(), 15);
    assert!(b.delete(&a, "a", soon()).unwrap() && b.delete(&a, "n", soon()).unwrap());
    assert_eq!(used(), 0);
}

pub(crate) fn expired_keys_free_their_bytes(make: Make) {
    let quotas = Quotas {
        max_namespace_bytes: 100,
        ..Quotas::default()
    };
    let (b, a) = (make(quotas), ns("a"));
    b.set(&a, "t", &[0; 89], Some(Duration::from_millis(30)), soon())
        .unwrap();
    b.set(&a, "p", &[0; 9], None, soon()).unwrap();
    assert_eq!(b.usage(&a, soon()).unwrap(), 100);
    eventually("the expired key's bytes are freed", || {
        b.usage(&a, soon()).unwrap() == 10
    });
    // The expired key never blocks a write, whether or not it has been swept yet.
    b.set(&a, "big", &[0; 87], None, soon()).unwrap();
    assert_eq!(b.usage(&a, soon()).unwrap(), 100);

    let b = make(quotas);
    b.set(&a, "t", &[0; 99], Some(Duration::from_millis(30)), soon())
        .unwrap();
    eventually("the key expired", || !b.exists(&a, "t", soon()).unwrap());
    b.set(&a, "u", &[0; 99], None, soon()).unwrap();
    assert_eq!(b.usage(&a, soon()).unwrap(), 100);
}
