//! The behaviour every state backend must have, as tests each backend runs with [`suite!`].

use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::{Backend, Namespace, QuotaError, Quotas, StateError, Ttl, Unavailable, LIST_PAGE};

/// Makes a fresh, empty backend with the given quotas.
pub(crate) type Make<'a> = &'a dyn Fn(Quotas) -> Arc<dyn Backend>;

/// Expands to one `#[test]` per conformance check, each on a backend made by `$make`.
macro_rules! suite {
    ($make:expr) => {
        $crate::state::conformance::suite!(@ $make;
            get_set_delete_exists, namespaces_are_isolated, increment_counts_and_refuses,
            compare_and_swap_swaps_only_on_match, keys_expire_and_ttls_are_reported,
            list_keys_pages_in_order, quotas_refuse_with_the_limit_and_size,
            namespace_bytes_are_counted_exactly, expired_keys_free_their_bytes,
            a_passed_deadline_does_nothing, increment_is_atomic_under_contention,
            compare_and_swap_is_atomic_under_contention);
    };
    (@ $make:expr; $($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                $crate::state::conformance::$name(&$make);
            }
        )*
    };
}
pub(crate) use suite;

mod contention;
mod quotas;
pub(crate) use contention::{
    compare_and_swap_is_atomic_under_contention, increment_is_atomic_under_contention,
};
pub(crate) use quotas::{
    expired_keys_free_their_bytes, namespace_bytes_are_counted_exactly,
    quotas_refuse_with_the_limit_and_size,
};

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(10)
}

fn ns(name: &str) -> Namespace {
    Namespace::plugin(name).unwrap()
}

/// Polls `done` every 5 ms for up to 5 s.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < until, "timed out waiting until {what}");
        thread::sleep(Duration::from_millis(5));
    }
}

fn quota_error(result: Result<impl std::fmt::Debug, StateError>) -> QuotaError {
    match result {
        Err(StateError::Quota(q)) => q,
        other => panic!("expected a quota error, got {other:?}"),
    }
}

pub(crate) fn get_set_delete_exists(make: Make) {
    let (b, a) = (make(Quotas::default()), ns("a"));
    assert_eq!(b.get(&a, "k", soon()).unwrap(), None);
    assert!(!b.exists(&a, "k", soon()).unwrap());
    b.set(&a, "k", b"one", None, soon()).unwrap();
    assert_eq!(
        b.get(&a, "k", soon()).unwrap().as_deref(),
        Some(&b"one"[..])
    );
    assert!(b.exists(&a, "k", soon()).unwrap());
    b.set(&a, "k", b"", None, soon()).unwrap();
    assert_eq!(
        b.get(&a, "k", soon()).unwrap(),
        Some(vec![]),
        "an empty value is a value"
    );
    assert!(b.delete(&a, "k", soon()).unwrap());
    assert!(
        !b.delete(&a, "k", soon()).unwrap(),
        "a second delete finds nothing"
    );
    assert_eq!(b.get(&a, "k", soon()).unwrap(), None);
    assert!(!b.exists(&a, "k", soon()).unwrap());
}

pub(crate) fn namespaces_are_isolated(make: Make) {
    let b = make(Quotas::default());
    let (a, other, shared) = (ns("a"), ns("b"), Namespace::shared("a").unwrap());
    b.set(&a, "k", b"mine", None, soon()).unwrap();
    assert_eq!(b.get(&other, "k", soon()).unwrap(), None);
    assert_eq!(b.get(&shared, "k", soon()).unwrap(), None);
    assert!(!b.delete(&other, "k", soon()).unwrap());
    assert_eq!(b.increment(&shared, "k", 1, soon()).unwrap(), 1);
    assert_eq!(
        b.get(&a, "k", soon()).unwrap().as_deref(),
        Some(&b"mine"[..])
    );
    assert_eq!(
        b.list_keys(&other, None, soon()).unwrap().keys,
        Vec::<String>::new()
    );
    assert_eq!(b.usage(&other, soon()).unwrap(), 0);
}

pub(crate) fn increment_counts_and_refuses(make: Make) {
    let (b, a) = (make(Quotas::default()), ns("a"));
    assert_eq!(
        b.increment(&a, "n", 5, soon()).unwrap(),
        5,
        "a missing key counts as 0"
    );
    assert_eq!(b.increment(&a, "n", -7, soon()).unwrap(), -2);
    assert_eq!(b.get(&a, "n", soon()).unwrap().as_deref(), Some(&b"-2"[..]));
    b.set(&a, "n", b"41", None, soon()).unwrap();
    assert_eq!(b.increment(&a, "n", 1, soon()).unwrap(), 42);
    for bad in [&b"abc"[..], b"+5", b" 5", b"5 ", b"", b"\xff"] {
        b.set(&a, "s", bad, None, soon()).unwrap();
        let err = b.increment(&a, "s", 1, soon()).unwrap_err();
        assert!(matches!(err, StateError::NotAnInteger), "{bad:?}: {err:?}");
        assert_eq!(
            b.get(&a, "s", soon()).unwrap().as_deref(),
            Some(bad),
            "unchanged"
        );
    }
    // Leading zeros and a negative zero are what Rust's `i64` parsing makes of them.
    for (stored, next) in [(&b"007"[..], 8), (b"-0", 1), (b"-0012", -11)] {
        b.set(&a, "z", stored, None, soon()).unwrap();
        assert_eq!(b.increment(&a, "z", 1, soon()).unwrap(), next, "{stored:?}");
    }
    b.set(&a, "max", i64::MAX.to_string().as_bytes(), None, soon())
        .unwrap();
    assert!(matches!(
        b.increment(&a, "max", 1, soon()),
        Err(StateError::Overflow)
    ));
    assert_eq!(
        b.increment(&a, "max", 0, soon()).unwrap(),
        i64::MAX,
        "unchanged"
    );
    assert!(matches!(
        b.increment(&a, "min", i64::MIN, soon()),
        Ok(i64::MIN)
    ));
    assert!(matches!(
        b.increment(&a, "min", -1, soon()),
        Err(StateError::Overflow)
    ));
    // Like INCRBY, an increment keeps the key's TTL.
    b.set(&a, "t", b"1", Some(Duration::from_secs(60)), soon())
        .unwrap();
    b.increment(&a, "t", 1, soon()).unwrap();
    assert!(matches!(b.ttl(&a, "t", soon()).unwrap(), Ttl::Remaining(_)));
}

pub(crate) fn compare_and_swap_swaps_only_on_match(make: Make) {
    let (b, a) = (make(Quotas::default()), ns("a"));
    assert!(
        b.compare_and_swap(&a, "k", None, b"first", soon()).unwrap(),
        "absent as expected"
    );
    assert!(
        !b.compare_and_swap(&a, "k", None, b"again", soon()).unwrap(),
        "no longer absent"
    );
    assert!(!b
        .compare_and_swap(&a, "k", Some(b"other"), b"x", soon())
        .unwrap());
    assert_eq!(
        b.get(&a, "k", soon()).unwrap().as_deref(),
        Some(&b"first"[..])
    );
    assert!(b
        .compare_and_swap(&a, "k", Some(b"first"), b"second", soon())
        .unwrap());
    assert_eq!(
        b.get(&a, "k", soon()).unwrap().as_deref(),
        Some(&b"second"[..])
    );
    assert!(
        !b.compare_and_swap(&a, "gone", Some(b""), b"x", soon())
            .unwrap(),
        "absent is not empty"
    );
}

pub(crate) fn keys_expire_and_ttls_are_reported(make: Make) {
    let (b, a) = (make(Quotas::default()), ns("a"));
    let ttl = Duration::from_millis(40);
    b.set(&a, "short", b"v", Some(ttl), soon()).unwrap();
    match b.ttl(&a, "short", soon()).unwrap() {
        Ttl::Remaining(left) => assert!(left <= ttl, "{left:?}"),
        other => panic!("{other:?}"),
    }
    eventually("the key expired", || {
        b.get(&a, "short", soon()).unwrap().is_none()
    });
    assert!(!b.exists(&a, "short", soon()).unwrap());
    assert_eq!(b.ttl(&a, "short", soon()).unwrap(), Ttl::Absent);
    assert!(
        !b.delete(&a, "short", soon()).unwrap(),
        "an expired key is not there to delete"
    );

    b.set(&a, "k", b"v", None, soon()).unwrap();
    assert_eq!(b.ttl(&a, "k", soon()).unwrap(), Ttl::Persistent);
    assert!(b
        .expire(&a, "k", Some(Duration::from_secs(60)), soon())
        .unwrap());
    assert!(matches!(b.ttl(&a, "k", soon()).unwrap(), Ttl::Remaining(_)));
    assert!(b.expire(&a, "k", None, soon()).unwrap());
    assert_eq!(b.ttl(&a, "k", soon()).unwrap(), Ttl::Persistent);
    assert!(!b.expire(&a, "missing", Some(ttl), soon()).unwrap());
    b.set(&a, "k", b"v", Some(Duration::from_secs(60)), soon())
        .unwrap();
    b.set(&a, "k", b"w", None, soon()).unwrap();
    assert_eq!(
        b.ttl(&a, "k", soon()).unwrap(),
        Ttl::Persistent,
        "a set without TTL clears it"
    );
    assert!(matches!(
        b.set(&a, "k", b"v", Some(Duration::ZERO), soon()),
        Err(StateError::InvalidTtl)
    ));
    assert!(matches!(
        b.expire(&a, "k", Some(Duration::ZERO), soon()),
        Err(StateError::InvalidTtl)
    ));

    // An expired key is absent to every operation, and its TTL goes with it.
    b.set(&a, "c", b"7", Some(ttl), soon()).unwrap();
    eventually("the counter expired", || {
        !b.exists(&a, "c", soon()).unwrap()
    });
    assert_eq!(b.increment(&a, "c", 1, soon()).unwrap(), 1);
    assert_eq!(b.ttl(&a, "c", soon()).unwrap(), Ttl::Persistent);
}

pub(crate) fn list_keys_pages_in_order(make: Make) {
    let (b, a) = (make(Quotas::default()), ns("a"));
    let total = LIST_PAGE + 5;
    // Written from several threads: the file backend commits concurrent writes together.
    thread::scope(|s| {
        for t in 0..8 {
            let b = &b;
            let a = &a;
            s.spawn(move || {
                for i in (t..total).step_by(8) {
                    b.set(a, &format!("key{i:05}"), b"v", None, soon()).unwrap();
                }
            });
        }
    });
    b.set(
        &a,
        "key~expired",
        b"v",
        Some(Duration::from_millis(1)),
        soon(),
    )
    .unwrap();
    b.set(&ns("b"), "key~other", b"v", None, soon()).unwrap();
    eventually("the key expired", || {
        !b.exists(&a, "key~expired", soon()).unwrap()
    });
    let first = b.list_keys(&a, None, soon()).unwrap();
    assert_eq!(first.keys.len(), LIST_PAGE);
    assert!(first.keys.windows(2).all(|w| w[0] < w[1]), "in byte order");
    let cursor = first.cursor.as_deref().expect("more to come");
    let rest = b.list_keys(&a, Some(cursor), soon()).unwrap();
    assert_eq!(rest.cursor, None);
    let all: Vec<String> = first.keys.into_iter().chain(rest.keys).collect();
    let expected: Vec<String> = (0..total).map(|i| format!("key{i:05}")).collect();
    assert_eq!(
        all, expected,
        "every live key once, none of the expired or other namespace's"
    );
}

pub(crate) fn a_passed_deadline_does_nothing(make: Make) {
    let (b, a) = (make(Quotas::default()), ns("a"));
    b.set(&a, "k", b"1", None, soon()).unwrap();
    let past = Instant::now();
    let results = [
        b.set(&a, "new", b"v", None, past).map(drop),
        b.get(&a, "k", past).map(drop),
        b.exists(&a, "k", past).map(drop),
        b.delete(&a, "k", past).map(drop),
        b.increment(&a, "k", 1, past).map(drop),
        b.compare_and_swap(&a, "k", Some(b"1"), b"2", past)
            .map(drop),
        b.expire(&a, "k", Some(Duration::from_secs(1)), past)
            .map(drop),
        b.ttl(&a, "k", past).map(drop),
        b.list_keys(&a, None, past).map(drop),
        b.usage(&a, past).map(drop),
    ];
    for result in results {
        assert!(
            matches!(result, Err(StateError::Unavailable(Unavailable::Deadline))),
            "{result:?}"
        );
    }
    assert_eq!(b.get(&a, "k", soon()).unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(b.get(&a, "new", soon()).unwrap(), None);
    assert_eq!(b.ttl(&a, "k", soon()).unwrap(), Ttl::Persistent);
}
