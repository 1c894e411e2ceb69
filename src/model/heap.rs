//! Exact heap accounting: which blocks are live after a sequence of
//! allocator events, with the counts a valgrind summary gives.

use std::collections::HashMap;

use crate::event::{Event, EventKind, StackId};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub size: u64,
    pub ts: u64,
    pub tid: u32,
    pub stack: Option<StackId>,
}

/// Live blocks keyed by address, and running totals. realloc counts as a
/// free of the old block and an allocation of the new one, as valgrind
/// counts it.
#[derive(Clone, Debug, Default)]
pub struct LiveHeap {
    pub blocks: HashMap<u64, Block>,
    pub live_bytes: u64,
    pub allocs: u64,
    pub frees: u64,
    pub alloc_bytes: u64,
    /// Frees of addresses not live in the recording: allocated before it
    /// started, or a double/invalid free.
    pub unknown_frees: u64,
    /// Allocations that returned NULL.
    pub failed: u64,
}

impl LiveHeap {
    pub fn apply(&mut self, e: &Event) {
        match &e.kind {
            EventKind::Alloc {
                ptr, size, stack, ..
            } => {
                if *ptr == 0 {
                    self.failed += 1;
                } else {
                    self.insert(*ptr, *size, e, *stack);
                }
            }
            EventKind::Free { ptr, .. } => self.remove(*ptr),
            EventKind::Realloc {
                old,
                ptr,
                size,
                stack,
                ..
            } => {
                if *ptr == 0 {
                    if *size == 0 && *old != 0 {
                        self.remove(*old);
                    } else {
                        self.failed += 1;
                    }
                } else {
                    if *old != 0 {
                        self.remove(*old);
                    }
                    self.insert(*ptr, *size, e, *stack);
                }
            }
            _ => {}
        }
    }

    fn insert(&mut self, ptr: u64, size: u64, e: &Event, stack: Option<StackId>) {
        self.allocs += 1;
        self.alloc_bytes += size;
        self.live_bytes += size;
        let block = Block {
            size,
            ts: e.ts,
            tid: e.tid,
            stack,
        };
        if let Some(prev) = self.blocks.insert(ptr, block) {
            // The allocator handed out a live address again: its free was
            // not seen (lost, or from before the recording).
            self.live_bytes -= prev.size;
        }
    }

    fn remove(&mut self, ptr: u64) {
        match self.blocks.remove(&ptr) {
            Some(b) => {
                self.frees += 1;
                self.live_bytes -= b.size;
            }
            None => self.unknown_frees += 1,
        }
    }

    pub fn live_blocks(&self) -> u64 {
        self.blocks.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AllocFn;

    fn ev(kind: EventKind) -> Event {
        Event {
            ts: 1,
            tid: 1,
            kind,
        }
    }

    fn alloc(ptr: u64, size: u64) -> Event {
        ev(EventKind::Alloc {
            func: AllocFn::Malloc,
            ptr,
            size,
            stack: None,
        })
    }

    fn realloc(old: u64, ptr: u64, size: u64) -> Event {
        ev(EventKind::Realloc {
            func: AllocFn::Realloc,
            old,
            ptr,
            size,
            stack: None,
        })
    }

    #[test]
    fn realloc_moves_resizes_frees_and_fails() {
        let mut h = LiveHeap::default();
        h.apply(&alloc(0x10, 8));
        h.apply(&realloc(0x10, 0x20, 100)); // moved
        assert_eq!((h.live_blocks(), h.live_bytes), (1, 100));
        h.apply(&realloc(0x20, 0x20, 50)); // in place
        assert_eq!((h.live_blocks(), h.live_bytes), (1, 50));
        h.apply(&realloc(0x20, 0, 1 << 50)); // failed: old stays live
        assert_eq!((h.live_blocks(), h.live_bytes, h.failed), (1, 50, 1));
        h.apply(&realloc(0x20, 0, 0)); // realloc(p, 0) frees
        assert_eq!((h.live_blocks(), h.live_bytes), (0, 0));
        h.apply(&realloc(0, 0x30, 7)); // realloc(NULL, n) allocates
        assert_eq!((h.live_blocks(), h.live_bytes), (1, 7));
        assert_eq!((h.allocs, h.frees), (4, 3));
    }

    #[test]
    fn unknown_frees_do_not_touch_live_state() {
        let mut h = LiveHeap::default();
        h.apply(&alloc(0x10, 8));
        h.apply(&ev(EventKind::Free {
            ptr: 0x99,
            stack: None,
        }));
        assert_eq!((h.live_blocks(), h.live_bytes, h.unknown_frees), (1, 8, 1));
    }
}
