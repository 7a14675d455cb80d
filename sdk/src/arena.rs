//! The guest's allocator: a bump arena in the module's zero-initialised data, falling back to
//! the standard allocator when it is full.
//!
//! Every plugin call runs in a fresh instance, so memory never needs to be reused within the
//! arena; and because the arena is part of the initial memory, a typical call never executes
//! `memory.grow`. That matters to the host: growing and then resetting a pooled linear memory
//! costs two `mprotect` calls (and TLB shootdowns) per call, more than the call itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::UnsafeCell;

/// Enough for a call on a large contact; the initial memory grows by this, and every call pays
/// for resetting what it touched, not for its size.
const ARENA_BYTES: usize = 128 << 10;

#[repr(C, align(16))]
struct Arena {
    bytes: UnsafeCell<[u8; ARENA_BYTES]>,
    next: UnsafeCell<usize>,
}

// SAFETY: a wasm32-unknown-unknown plugin is single-threaded.
unsafe impl Sync for Arena {}

/// Bump allocation in a static arena, then the system allocator.
pub struct ArenaAllocator {
    arena: Arena,
}

impl ArenaAllocator {
    /// An empty arena.
    pub const fn new() -> Self {
        ArenaAllocator {
            arena: Arena {
                bytes: UnsafeCell::new([0; ARENA_BYTES]),
                next: UnsafeCell::new(0),
            },
        }
    }

    fn start(&self) -> usize {
        self.arena.bytes.get() as usize
    }

    fn contains(&self, ptr: *mut u8) -> bool {
        let address = ptr as usize;
        address >= self.start() && address < self.start() + ARENA_BYTES
    }
}

impl Default for ArenaAllocator {
    fn default() -> Self {
        Self::new()
    }
}

unsafe impl GlobalAlloc for ArenaAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: single-threaded; `next` is only touched here and in `realloc`.
        let next = unsafe { &mut *self.arena.next.get() };
        let start = self.start();
        let aligned = (start + *next + layout.align() - 1) & !(layout.align() - 1);
        let end = aligned - start + layout.size();
        if end <= ARENA_BYTES {
            *next = end;
            return aligned as *mut u8;
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if self.contains(ptr) {
            // SAFETY: single-threaded. Give back the most recent allocation; others stay until
            // the instance is dropped after the call.
            let next = unsafe { &mut *self.arena.next.get() };
            if ptr as usize - self.start() + layout.size() == *next {
                *next -= layout.size();
            }
            return;
        }
        // SAFETY: `ptr` came from `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if self.contains(ptr) {
            // SAFETY: single-threaded.
            let next = unsafe { &mut *self.arena.next.get() };
            let offset = ptr as usize - self.start();
            // The most recent allocation grows or shrinks in place.
            if offset + layout.size() == *next && offset + new_size <= ARENA_BYTES {
                *next = offset + new_size;
                return ptr;
            }
        } else {
            // SAFETY: `ptr` came from `System` with this layout.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // SAFETY: a valid layout with the new size (the caller guarantees it does not overflow).
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: as in `alloc`.
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            // SAFETY: both blocks are valid for the smaller of the two sizes and do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size)) };
            // SAFETY: `ptr` was allocated with `layout`.
            unsafe { self.dealloc(ptr, layout) };
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_are_aligned_and_the_last_one_grows_in_place() {
        // Statics: a 128 KiB arena does not belong on a test thread's stack.
        static ARENA: ArenaAllocator = ArenaAllocator::new();
        let arena = &ARENA;
        unsafe {
            let a = arena.alloc(Layout::from_size_align(3, 1).unwrap());
            let b = arena.alloc(Layout::from_size_align(8, 8).unwrap());
            assert!(arena.contains(a) && arena.contains(b));
            assert_eq!(b as usize % 8, 0);
            let grown = arena.realloc(b, Layout::from_size_align(8, 8).unwrap(), 64);
            assert_eq!(grown, b, "the most recent allocation grows in place");
            b.write(42);
            let moved = arena.realloc(a, Layout::from_size_align(3, 1).unwrap(), 16);
            assert_ne!(moved, a, "an older allocation moves");
            assert_eq!(*b, 42, "moving one allocation leaves the others intact");
        }
    }

    #[test]
    fn a_full_arena_falls_back_to_the_system_allocator() {
        static ARENA: ArenaAllocator = ArenaAllocator::new();
        let arena = &ARENA;
        unsafe {
            let big = Layout::from_size_align(ARENA_BYTES - 16, 16).unwrap();
            let filler = arena.alloc(big);
            assert!(arena.contains(filler));
            let small = Layout::from_size_align(64, 8).unwrap();
            let outside = arena.alloc(small);
            assert!(!outside.is_null() && !arena.contains(outside));
            arena.dealloc(outside, small);
            // Freeing the last allocation gives its space back.
            arena.dealloc(filler, big);
            assert!(arena.contains(arena.alloc(small)));
        }
    }
}
