//! Property checks the fuzz targets in `fuzz/` run, one function per target, each taking the
//! fuzzer's raw bytes. They live in the library so the committed corpora (`fuzz/corpus/TARGET/`)
//! are replayed by an ordinary `cargo test` on stable (see `tests` below) with the very checks
//! the fuzzer ran: the fuzz targets only call these.
//!
//! Compiled only for this crate's tests and with the `fuzzing` feature (which `fuzz/Cargo.toml`
//! turns on), so the public API of a normal build is unchanged. A check panics when a property
//! fails; that is what the fuzzer reports as a crash.

mod core_abi;
mod flags;
mod framing;
pub(crate) mod proxy_header;
#[cfg(test)]
mod tests;

pub use core_abi::core_abi_reply;
pub use flags::flags;
pub use framing::framing;
pub use proxy_header::proxy_header;

/// The fuzzer's bytes read front to back as the fields of a test case; past the end every
/// number is 0 and every byte string empty, so any input is a valid case.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    fn u32(&mut self) -> u32 {
        let mut word = [0; 4];
        let got = self.bytes(4);
        word[..got.len()].copy_from_slice(got);
        u32::from_le_bytes(word)
    }

    /// The next `n` bytes, or fewer at the end.
    fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (head, rest) = self.0.split_at(n.min(self.0.len()));
        self.0 = rest;
        head
    }

    /// Everything left.
    fn rest(&mut self) -> &'a [u8] {
        std::mem::take(&mut self.0)
    }
}
