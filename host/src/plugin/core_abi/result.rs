//! A hook's result as the core ABI returns it: the 12-byte record at the pointer the hook
//! returned (`flags`, `ptr`, `len`, little-endian `u32`s) and the bytes it points at. Read from
//! the guest's memory as a plain byte slice, every offset checked, and a reply's size checked
//! against `--max-reply-bytes` before a byte of it is copied out.

use std::ops::Range;

pub const FLAG_REPLY: u32 = 1;
pub const FLAG_CLOSE: u32 = 2;
pub const FLAG_ERROR: u32 = 4;

/// A result record whose bytes are inside the memory and within the reply cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub flags: u32,
    /// The reply's or error message's bytes in the memory; empty when the flags take none.
    pub bytes: Range<usize>,
}

/// Why a result cannot be taken; the call fails with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResultError {
    #[error("result pointer {at} is outside memory ({size} bytes)")]
    RecordOutside { at: u32, size: usize },
    #[error("result bytes {ptr}+{len} are outside memory ({size} bytes)")]
    BytesOutside { ptr: u32, len: u32, size: usize },
    /// The bytes are not copied; the caller hands them back to the module's `sandport_free`.
    #[error("reply too large: {len} bytes, over --max-reply-bytes {max}")]
    TooLarge { ptr: u32, len: u32, max: usize },
}

/// Reads the result record at `at` in `memory`; a reply or error message over `max_reply`
/// bytes is refused without being read.
pub fn read_result(memory: &[u8], at: i32, max_reply: usize) -> Result<Record, ResultError> {
    let start = at as u32 as usize;
    let raw = memory
        .get(start..start.saturating_add(12))
        .ok_or(ResultError::RecordOutside {
            at: at as u32,
            size: memory.len(),
        })?;
    let word = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().expect("4 bytes"));
    let (flags, ptr, len) = (word(0), word(4), word(8));
    if flags & (FLAG_REPLY | FLAG_ERROR) == 0 || len == 0 {
        return Ok(Record { flags, bytes: 0..0 });
    }
    let (begin, end) = (ptr as usize, (ptr as usize).saturating_add(len as usize));
    if end > memory.len() {
        return Err(ResultError::BytesOutside {
            ptr,
            len,
            size: memory.len(),
        });
    }
    if len as usize > max_reply {
        return Err(ResultError::TooLarge {
            ptr,
            len,
            max: max_reply,
        });
    }
    Ok(Record {
        flags,
        bytes: begin..end,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A memory of `size` bytes with the record `(flags, ptr, len)` at `at`.
    fn memory(size: usize, at: usize, record: [u32; 3]) -> Vec<u8> {
        let mut m = vec![7; size];
        for (i, w) in record.iter().enumerate() {
            m[at + 4 * i..at + 4 * i + 4].copy_from_slice(&w.to_le_bytes());
        }
        m
    }

    #[test]
    fn a_reply_inside_memory_is_its_range() {
        let m = memory(64, 0, [FLAG_REPLY | FLAG_CLOSE, 20, 5]);
        let r = read_result(&m, 0, 5).unwrap();
        assert_eq!((r.flags, r.bytes), (FLAG_REPLY | FLAG_CLOSE, 20..25));
        let m = memory(64, 52, [FLAG_CLOSE, 9999, 9999]);
        assert_eq!(
            read_result(&m, 52, 0).unwrap().bytes,
            0..0,
            "no reply, no bytes"
        );
    }

    #[test]
    fn hostile_records_are_typed_errors() {
        let m = memory(64, 0, [FLAG_REPLY, 60, 5]);
        assert_eq!(
            read_result(&m, 0, 100),
            Err(ResultError::BytesOutside {
                ptr: 60,
                len: 5,
                size: 64
            })
        );
        let m = memory(64, 0, [FLAG_ERROR, u32::MAX, u32::MAX]);
        assert!(matches!(
            read_result(&m, 0, usize::MAX),
            Err(ResultError::BytesOutside { .. })
        ));
        for at in [53, 64, -1, i32::MIN] {
            assert_eq!(
                read_result(&m, at, 100),
                Err(ResultError::RecordOutside {
                    at: at as u32,
                    size: 64
                })
            );
        }
    }

    #[test]
    fn a_reply_over_the_cap_is_refused_before_it_is_read() {
        let m = memory(64, 0, [FLAG_REPLY, 16, 33]);
        assert_eq!(
            read_result(&m, 0, 32),
            Err(ResultError::TooLarge {
                ptr: 16,
                len: 33,
                max: 32
            })
        );
        assert_eq!(read_result(&m, 0, 33).unwrap().bytes, 16..49);
        let m = memory(64, 0, [FLAG_ERROR, 16, 33]);
        assert!(matches!(
            read_result(&m, 0, 32),
            Err(ResultError::TooLarge { .. })
        ));
    }
}
