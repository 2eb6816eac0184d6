//! sandport patch: an instance put back, in place, into the state instantiation left it in.
//!
//! What a guest can change in its own instance is its memories (contents and size), its
//! globals, its tables (elements and size), its passive element segments (`elem.drop`) and its
//! data segments (`data.drop`, which zeroes a length in the vmctx). A reset point copies each
//! of them right after instantiation; a reset puts them back. The memories go back to their
//! copy-on-write image with the pooling allocator's own reset (the one run between two
//! instances of a slot), at the size instantiation left, then the pages instantiation itself
//! wrote are copied over it.
//! Anything a reset cannot restore exactly (GC references, shared memories, dynamic tables,
//! no `PAGEMAP_SCAN`) makes `InstanceResetPoint::new` return `None`.

use super::Instance;
use crate::prelude::*;
use crate::runtime::vm::InstanceAllocator;
use crate::runtime::vm::instance::InstanceLayout;
use alloc::vec::Vec;
use core::pin::Pin;
use wasmtime_environ::{
    DefinedGlobalIndex, DefinedMemoryIndex, DefinedTableIndex, EntityRef, MemoryKind,
    MemoryTunables, Tunables,
};

/// One instance's state right after instantiation.
pub struct InstanceResetPoint {
    globals: Vec<[u8; 16]>,
    tables: Vec<Vec<usize>>,
    passive_elements: Vec<Vec<crate::ValRaw>>,
    data_lengths: Vec<u32>,
    data_bases: Vec<usize>,
    memories: Vec<MemoryResetPoint>,
}

/// One memory's state right after instantiation.
struct MemoryResetPoint {
    /// Its size in bytes.
    size: usize,
    /// The pages instantiation wrote, as (offset, bytes).
    written: Vec<(usize, Vec<u8>)>,
    /// The written pages the last reset's scan found, as byte ranges; every page a guest can
    /// write without a page fault is in them (see `MemoryImageSlot::sandport_reset`).
    known: Option<(usize, Vec<core::ops::Range<usize>>)>,
}

const _: () = assert!(core::mem::size_of::<crate::runtime::vm::VMGlobalDefinition>() == 16);

impl InstanceResetPoint {
    /// Copies `instance`'s state; `None` if a reset could not restore all of it.
    pub(crate) fn new(instance: &Instance, allocator: &dyn InstanceAllocator) -> Option<Self> {
        let module = instance.env_module();
        let mut defined_globals = module.globals.iter().skip(module.num_imported_globals);
        if defined_globals.any(|(_, g)| g.wasm_ty.is_vmgcref_type_and_not_i31()) {
            return None;
        }
        if instance.passive_elements.iter().any(|p| p.needs_gc_rooting) {
            return None;
        }
        let globals = (0..module.num_defined_globals())
            .map(|i| {
                let p = instance.global_ptr(DefinedGlobalIndex::new(i));
                // SAFETY: a defined global's 16 bytes in this instance's vmctx.
                unsafe { p.cast::<[u8; 16]>().read() }
            })
            .collect();
        let tables = instance
            .tables
            .values()
            .map(|(_, t)| t.sandport_func_elements())
            .collect::<Option<Vec<_>>>()?;
        let passive_elements = instance
            .passive_elements
            .iter()
            .map(|p| p.elements.iter().copied().collect())
            .collect();
        let n = module.runtime_data.len();
        let offsets = instance.runtime_info.offsets();
        // SAFETY: the vmctx holds `n` lengths and `n` bases from these offsets.
        let (data_lengths, data_bases) = unsafe {
            let lengths =
                instance.vmctx_plus_offset_raw::<u32>(offsets.vmctx_runtime_data_lengths_begin());
            let bases =
                instance.vmctx_plus_offset_raw::<usize>(offsets.vmctx_runtime_data_bases_begin());
            (
                core::slice::from_raw_parts(lengths.as_ptr(), n).to_vec(),
                core::slice::from_raw_parts(bases.as_ptr(), n).to_vec(),
            )
        };
        let memories = instance
            .memories
            .values()
            .map(|(_, m)| {
                Some(MemoryResetPoint {
                    size: m.byte_size(),
                    written: allocator.sandport_memory_written(m)?,
                    known: None,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(InstanceResetPoint {
            globals,
            tables,
            passive_elements,
            data_lengths,
            data_bases,
            memories,
        })
    }
}

impl Instance {
    /// Puts this instance back to `point`, taken from it. `Ok(false)` if it cannot be, and
    /// then the instance must not run again. `clean`: no page fault on this thread since the
    /// last reset (see `MemoryImageSlot::sandport_reset`).
    pub(crate) fn sandport_reset(
        mut self: Pin<&mut Self>,
        point: &mut InstanceResetPoint,
        allocator: &dyn InstanceAllocator,
        tunables: &Tunables,
        clean: bool,
    ) -> Result<bool> {
        let memory_tunables = MemoryTunables::new(tunables, MemoryKind::LinearMemory);
        // Fields borrowed apart, not cloned: the module's `Arc` is shared by every thread's
        // instances, and a count bumped per call would bounce between cores.
        // SAFETY: nothing is moved out of the pinned instance.
        let this = unsafe { self.as_mut().get_unchecked_mut() };
        for (i, m) in point.memories.iter_mut().enumerate() {
            let index = DefinedMemoryIndex::new(i);
            let image = this.runtime_info.memory_image(index)?;
            let memory = &mut this.memories[index].1;
            let (size, known) = (m.size, &mut m.known);
            if !allocator.sandport_reset_memory(
                memory,
                size,
                image,
                &memory_tunables,
                known,
                clean,
            )? {
                return Ok(false);
            }
            let def = memory.vmmemory();
            let base = def.base.as_ptr();
            for (offset, bytes) in &m.written {
                // SAFETY: the pages were within the memory's initial size, which it has again.
                unsafe {
                    core::ptr::copy_nonoverlapping(bytes.as_ptr(), base.add(*offset), bytes.len())
                };
            }
            this.set_memory(index, def);
        }
        for (i, value) in point.globals.iter().enumerate() {
            let p = self.global_ptr(DefinedGlobalIndex::new(i));
            // SAFETY: a defined global's 16 bytes in this instance's vmctx.
            unsafe { p.cast::<[u8; 16]>().write(*value) };
        }
        for (i, elements) in point.tables.iter().enumerate() {
            let index = DefinedTableIndex::new(i);
            let table = &mut self.as_mut().tables_mut()[index].1;
            if !table.sandport_restore_func(elements) {
                return Ok(false);
            }
            let def = table.vmtable();
            self.as_mut().set_table(index, def);
        }
        for (segment, elements) in self
            .as_mut()
            .passive_elements_mut()
            .iter_mut()
            .zip(&point.passive_elements)
        {
            if segment.elements.len() != elements.len() {
                segment.elements.clear();
                segment.elements.reserve(elements.len())?;
                for e in elements {
                    segment.elements.push(*e)?;
                }
            }
        }
        let offsets = self.runtime_info.offsets();
        let n = point.data_lengths.len();
        // SAFETY: the vmctx holds `n` lengths and `n` bases from these offsets.
        unsafe {
            let lengths =
                self.vmctx_plus_offset_raw::<u32>(offsets.vmctx_runtime_data_lengths_begin());
            let bases =
                self.vmctx_plus_offset_raw::<usize>(offsets.vmctx_runtime_data_bases_begin());
            core::ptr::copy_nonoverlapping(point.data_lengths.as_ptr(), lengths.as_ptr(), n);
            core::ptr::copy_nonoverlapping(point.data_bases.as_ptr(), bases.as_ptr(), n);
        }
        Ok(true)
    }
}
