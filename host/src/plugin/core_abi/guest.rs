//! Bounds-checked access to a core module's linear memory for the version-2 imports: every
//! pointer and length a guest passes is checked here before anything is read or written.
//!
//! Pointers and lengths arrive as `i32` and are read as unsigned 32-bit numbers, so a negative
//! length is a huge one. A buffer is in bounds when all of `ptr .. ptr + len` is inside the
//! memory; an empty buffer may point anywhere (Zig's empty slices point at `0xFFFFFFFF`). A
//! buffer out of bounds is a [`Fault`]: the import traps, failing that call only.

use std::ops::Range;

/// A guest buffer outside its memory: the import traps with this message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: buffer {ptr}+{len} is outside the module's memory ({size} bytes)")]
pub struct Fault {
    pub what: &'static str,
    pub ptr: u32,
    pub len: u64,
    pub size: usize,
}

/// The range of `len` bytes at `ptr` in a memory of `size` bytes, if it is all inside.
pub fn span(what: &'static str, size: usize, ptr: i32, len: u64) -> Result<Range<usize>, Fault> {
    let fault = Fault {
        what,
        ptr: ptr as u32,
        len,
        size,
    };
    if len == 0 {
        return Ok(0..0);
    }
    let start = ptr as u32 as usize;
    let len = usize::try_from(len).map_err(|_| fault.clone())?;
    match start.checked_add(len) {
        Some(end) if end <= size => Ok(start..end),
        _ => Err(fault),
    }
}

/// A view of the guest's memory for one import call.
pub struct Guest<'a> {
    pub data: &'a mut [u8],
}

impl Guest<'_> {
    /// A copy of the `len` bytes at `ptr`.
    pub fn bytes(&self, what: &'static str, ptr: i32, len: i32) -> Result<Vec<u8>, Fault> {
        let range = span(what, self.data.len(), ptr, u64::from(len as u32))?;
        Ok(self.data[range].to_vec())
    }

    /// Like [`bytes`](Self::bytes), but `len == -1` means no buffer at all (`None`).
    pub fn optional_bytes(
        &self,
        what: &'static str,
        ptr: i32,
        len: i32,
    ) -> Result<Option<Vec<u8>>, Fault> {
        if len == -1 {
            return Ok(None);
        }
        self.bytes(what, ptr, len).map(Some)
    }

    /// An output buffer of `cap` bytes at `ptr`, checked now so that nothing is done by a call
    /// that could not deliver its result.
    pub fn out(&self, what: &'static str, ptr: i32, cap: u64) -> Result<Out, Fault> {
        span(what, self.data.len(), ptr, cap).map(|range| Out { range })
    }

    /// Writes `bytes` at the start of `out` (checked by [`out`](Self::out) to hold at least as
    /// many bytes); a fault, never a panic, if it does not.
    pub fn write(&mut self, out: &Out, at: usize, bytes: &[u8]) -> Result<(), Fault> {
        let start = out.range.start.saturating_add(at);
        let end = start.saturating_add(bytes.len());
        let size = self.data.len();
        if end > out.range.end || end < start {
            return Err(Fault {
                what: "result",
                ptr: start as u32,
                len: bytes.len() as u64,
                size,
            });
        }
        match self.data.get_mut(start..end) {
            Some(dest) => {
                dest.copy_from_slice(bytes);
                Ok(())
            }
            None => Err(Fault {
                what: "result",
                ptr: start as u32,
                len: bytes.len() as u64,
                size,
            }),
        }
    }
}

/// A checked output buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Out {
    range: Range<usize>,
}

impl Out {
    /// Its capacity in bytes.
    pub fn cap(&self) -> usize {
        self.range.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guest(size: usize) -> Vec<u8> {
        (0..size).map(|i| i as u8).collect()
    }

    #[test]
    fn buffers_inside_memory_are_read() {
        let mut data = guest(100);
        let g = Guest { data: &mut data };
        assert_eq!(g.bytes("key", 10, 3).unwrap(), vec![10, 11, 12]);
        assert_eq!(g.bytes("key", 97, 3).unwrap(), vec![97, 98, 99]);
        assert_eq!(g.bytes("key", 0, 100).unwrap().len(), 100);
    }

    #[test]
    fn hostile_pointers_and_lengths_are_faults_not_panics() {
        let mut data = guest(100);
        let g = Guest { data: &mut data };
        for (ptr, len) in [
            (98, 3),              // one past the end
            (100, 1),             // starts at the end
            (-1, 1),              // 0xFFFFFFFF
            (-1, i32::MAX),       // wraps around 32 bits
            (0, -1),              // a negative length is 4 GiB
            (i32::MAX, i32::MAX), // both huge
            (i32::MIN, 2),        // 0x80000000
            (50, i32::MIN),       // 2 GiB
            (0x7fff_fff0, 0x20),  // end past 2 GiB
            (-16, 32),            // end past 4 GiB: must not wrap to a small range
        ] {
            let err = g.bytes("key", ptr, len).unwrap_err();
            assert_eq!(err.ptr, ptr as u32, "{err}");
            assert!(err.to_string().contains("outside the module's memory"));
        }
        assert!(g.out("out", 96, 8).is_err());
        assert!(g.out("out", -8, 8).is_err());
        assert!(g.out("out", 0, u64::from(u32::MAX)).is_err());
    }

    #[test]
    fn empty_buffers_may_point_anywhere() {
        let mut data = guest(100);
        let g = Guest { data: &mut data };
        for ptr in [0, 100, 5000, -1, i32::MIN] {
            assert_eq!(g.bytes("key", ptr, 0).unwrap(), Vec::<u8>::new());
            assert_eq!(g.out("out", ptr, 0).unwrap().cap(), 0);
        }
        let mut empty: Vec<u8> = Vec::new();
        let g = Guest { data: &mut empty };
        assert!(g.bytes("key", 0, 0).unwrap().is_empty());
        assert!(g.bytes("key", 0, 1).is_err());
    }

    #[test]
    fn minus_one_is_no_buffer_and_other_negatives_are_faults() {
        let mut data = guest(100);
        let g = Guest { data: &mut data };
        assert_eq!(g.optional_bytes("expected", 12345, -1).unwrap(), None);
        assert_eq!(
            g.optional_bytes("expected", 0, 2).unwrap(),
            Some(vec![0, 1])
        );
        assert!(g.optional_bytes("expected", 0, -2).is_err());
    }

    #[test]
    fn writes_stay_inside_their_checked_buffer() {
        let mut data = vec![0u8; 64];
        let mut g = Guest { data: &mut data };
        let out = g.out("out", 8, 8).unwrap();
        g.write(&out, 0, &[1, 2, 3, 4]).unwrap();
        g.write(&out, 4, &[5, 6, 7, 8]).unwrap();
        assert!(g.write(&out, 5, &[9, 9, 9, 9]).is_err(), "past the buffer");
        assert!(
            g.write(&out, usize::MAX, &[1]).is_err(),
            "overflowing offset"
        );
        assert_eq!(&data[8..16], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(data[16], 0, "nothing written past the buffer");
    }
}
