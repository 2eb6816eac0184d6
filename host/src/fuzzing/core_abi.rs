//! The `core_abi_reply` fuzz target: reading a core module's hook result (the 12-byte record
//! and the bytes it points at) out of guest memory of any size, with any pointers, lengths,
//! flags and reply cap: it never panics, never reads outside the memory, and every refusal is a
//! typed error that says why, checked against the ABI's definition (`docs/core-abi.md`).

use super::Input;
use crate::plugin::core_abi::{read_result, ResultError, FLAG_ERROR, FLAG_REPLY};

/// Checks one case: `[size u16, at, flags, ptr, len (u32 each), max, place, memory...]`. With
/// `place` odd the record is written at `at` when it fits; otherwise whatever the memory holds
/// there is the record.
pub fn core_abi_reply(data: &[u8]) {
    let mut input = Input(data);
    let size = input.u8() as usize | (input.u8() as usize) << 8;
    let at = input.u32() as i32;
    let (flags, ptr, len) = (input.u32(), input.u32(), input.u32());
    let max = match input.u8() {
        0xFF => usize::MAX,
        0xFE => u32::MAX as usize,
        0xF0..=0xFD => input.u32() as usize,
        small => small as usize,
    };
    let place = input.u8() & 1 == 1;
    let mut memory = input.rest().to_vec();
    memory.resize(size, 0);
    let start = at as u32 as usize;
    if place && start + 12 <= memory.len() {
        for (i, word) in [flags, ptr, len].into_iter().enumerate() {
            memory[start + 4 * i..start + 4 * i + 4].copy_from_slice(&word.to_le_bytes());
        }
    }

    let got = read_result(&memory, at, max);
    // The ABI, read from scratch.
    let Some(raw) = memory.get(start..start + 12) else {
        assert_eq!(
            got,
            Err(ResultError::RecordOutside {
                at: at as u32,
                size: memory.len()
            })
        );
        return;
    };
    let word = |i: usize| u32::from_le_bytes(raw[4 * i..4 * i + 4].try_into().expect("4 bytes"));
    let (flags, ptr, len) = (word(0), word(1), word(2));
    let takes_bytes = flags & (FLAG_REPLY | FLAG_ERROR) != 0 && len > 0;
    let end = ptr as u64 + len as u64;
    match got {
        Ok(record) => {
            assert_eq!(record.flags, flags);
            if takes_bytes {
                assert!(
                    end <= memory.len() as u64 && len as usize <= max,
                    "{record:?}"
                );
                assert_eq!(record.bytes, ptr as usize..end as usize);
            } else {
                assert!(record.bytes.is_empty(), "{record:?}");
            }
            // Taking them cannot read out of bounds.
            let _ = &memory[record.bytes];
        }
        Err(ResultError::RecordOutside { .. }) => panic!("the record is inside memory"),
        Err(ResultError::BytesOutside {
            ptr: p,
            len: l,
            size: s,
        }) => {
            assert!(takes_bytes && end > memory.len() as u64);
            assert_eq!((p, l, s), (ptr, len, memory.len()));
        }
        Err(ResultError::TooLarge {
            ptr: p,
            len: l,
            max: m,
        }) => {
            assert!(takes_bytes && end <= memory.len() as u64 && len as usize > max);
            assert_eq!((p, l, m), (ptr, len, max));
        }
    }
}
