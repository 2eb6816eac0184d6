//! The conformance checks that need several threads: atomicity under contention, with exact
//! final counts.

use std::thread;

use super::{ns, soon, Make};
use crate::state::Quotas;

const THREADS: usize = 4;
const ROUNDS: usize = 100;

pub(crate) fn increment_is_atomic_under_contention(make: Make) {
    let (b, a) = (make(Quotas::default()), ns("a"));
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    b.increment(&a, "n", 1, soon()).unwrap();
                }
            });
        }
    });
    assert_eq!(
        b.increment(&a, "n", 0, soon()).unwrap(),
        (THREADS * ROUNDS) as i64
    );
}

pub(crate) fn compare_and_swap_is_atomic_under_contention(make: Make) {
    let (b, a) = (make(Quotas::default()), ns("a"));
    b.set(&a, "n", b"0", None, soon()).unwrap();
    thread::scope(|s| {
        for _ in 0..THREADS {
            s.spawn(|| {
                for _ in 0..ROUNDS {
                    // A read-modify-write that only lands if nobody wrote in between.
                    loop {
                        let seen = b.get(&a, "n", soon()).unwrap().unwrap();
                        let n: u64 = std::str::from_utf8(&seen).unwrap().parse().unwrap();
                        let next = (n + 1).to_string();
                        if b.compare_and_swap(&a, "n", Some(&seen), next.as_bytes(), soon())
                            .unwrap()
                        {
                            break;
                        }
                    }
                }
            });
        }
    });
    let total = b.get(&a, "n", soon()).unwrap().unwrap();
    assert_eq!(total, (THREADS * ROUNDS).to_string().into_bytes());
}
