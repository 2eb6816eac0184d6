//! WASI 0.2's `wasi:random/random` for components, shadowing WASI's own so that
//! `get-random-bytes` fills its buffer in bulk.
//!
//! wasmtime-wasi 48 draws one 32-bit word per byte (`random_iter::<u8>()`). A fresh Python
//! interpreter seeds its `random` module with 2,496 bytes, and under `--isolation message` every
//! call starts fresh, so those draws were 5-7% of the server's time for `upper-python`
//! (bench/PROFILES.md, "Issue 10, fifth pass"). The generator is `rand`'s thread-local ChaCha
//! generator, seeded and reseeded from the OS: the one wasmtime-wasi's default per-context
//! generator is itself seeded from. The length limit is wasmtime-wasi's default.

use rand::Rng;
use wasmtime::bail;
use wasmtime::component::{HasData, Linker};
use wasmtime_wasi::p2::bindings::random::random;
use wasmtime_wasi::random::DEFAULT_MAX_SIZE;

use crate::plugin::host_api::HostState;

/// Replaces WASI 0.2's `wasi:random/random` in a component linker with [`BulkRandom`].
pub fn link_bulk_random(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    let res = random::add_to_linker::<HostState, BulkRandom>(linker, |_| BulkRandom);
    linker.allow_shadowing(false);
    res
}

/// The secure random source: whole buffers from the thread's generator.
pub struct BulkRandom;

impl HasData for BulkRandom {
    type Data<'a> = BulkRandom;
}

impl random::Host for BulkRandom {
    fn get_random_bytes(&mut self, len: u64) -> wasmtime::Result<Vec<u8>> {
        if len > DEFAULT_MAX_SIZE {
            bail!("requested len {len:?} exceeds limit {DEFAULT_MAX_SIZE}");
        }
        let mut bytes = vec![0; len as usize];
        rand::rng().fill_bytes(&mut bytes);
        Ok(bytes)
    }

    fn get_random_u64(&mut self) -> wasmtime::Result<u64> {
        Ok(rand::rng().next_u64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use random::Host as _;

    #[test]
    fn bytes_are_as_many_as_asked_and_differ_between_calls() {
        let mut r = BulkRandom;
        assert!(r.get_random_bytes(0).unwrap().is_empty());
        let a = r.get_random_bytes(2496).unwrap();
        let b = r.get_random_bytes(2496).unwrap();
        assert_eq!((a.len(), b.len()), (2496, 2496));
        assert_ne!(a, b);
        // 2,496 random bytes hold every value of a byte with near certainty; zeros alone
        // would mean the buffer was never filled.
        assert!(a.iter().filter(|&&x| x == 0).count() < 100);
        assert_ne!(r.get_random_u64().unwrap(), r.get_random_u64().unwrap());
    }

    #[test]
    fn a_length_over_the_limit_is_refused_without_allocating_it() {
        assert!(BulkRandom.get_random_bytes(DEFAULT_MAX_SIZE + 1).is_err());
        assert!(BulkRandom.get_random_bytes(u64::MAX).is_err());
    }
}
