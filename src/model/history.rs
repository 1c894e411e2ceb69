//! Block history: every block that lived at an address across reuse, with
//! its allocation and end, and the frees that matched no live block
//! (double and invalid frees). Walks the store's per-address chain, so the
//! cost is the number of events at that address, not the recording's.

use crate::model::heap::HeapIndex;
use crate::model::store::LiveBlock;
use crate::model::store::{EventStore, Idx};

/// One block's life at an address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Life {
    pub block: LiveBlock,
    /// The free or realloc that ended it; `None` while live (or when its
    /// end was not recorded and the address was handed out again).
    pub end: Option<Idx>,
    /// Frees of this address after the block ended and before it was
    /// handed out again: double frees.
    pub extra_frees: Vec<Idx>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    pub addr: u64,
    /// In time order.
    pub lives: Vec<Life>,
    /// Frees of the address before any known block there.
    pub stray_frees: Vec<Idx>,
    /// The chain reaches back past the held recording.
    pub truncated: bool,
}

/// The events at the block-start address `addr`, oldest first.
fn chain(store: &EventStore, addr: u64) -> (Vec<Idx>, bool) {
    let mut out = Vec::new();
    let mut cur = store.addr_info(addr).map(|a| a.last);
    let mut truncated = false;
    while let Some(i) = cur {
        if !store.contains(i) {
            truncated = true;
            break;
        }
        out.push(i);
        cur = store.prev_at(i, addr);
    }
    out.reverse();
    (out, truncated)
}

/// The life of every block that started at `addr`.
pub fn at_start(store: &EventStore, heap: &HeapIndex, addr: u64) -> History {
    let (events, truncated) = chain(store, addr);
    let mut h = History {
        addr,
        truncated,
        ..History::default()
    };
    // A block allocated before the held recording and still needed.
    let mut cur: Option<Life> = heap.survivors().find(|b| b.ptr == addr).map(|b| Life {
        block: *b,
        end: None,
        extra_frees: Vec::new(),
    });
    for i in events {
        let Some(op) = store.heap_op(i) else { continue };
        let (ends, starts) = (op.ends() == Some(addr), op.starts() == Some(addr));
        if ends {
            match cur.take() {
                Some(mut l) => {
                    l.end = Some(i);
                    h.lives.push(l);
                }
                None => match h.lives.last_mut() {
                    Some(l) => l.extra_frees.push(i),
                    None => h.stray_frees.push(i),
                },
            }
        }
        if starts {
            if let Some(l) = cur.take() {
                h.lives.push(l);
            }
            cur = heap.block(store, i).map(|block| Life {
                block,
                end: None,
                extra_frees: Vec::new(),
            });
        }
    }
    h.lives.extend(cur);
    h
}

/// Every block that covered `addr` (started at or below it and reached
/// past it), in allocation order.
pub fn covering(store: &EventStore, heap: &HeapIndex, addr: u64) -> Vec<Life> {
    let mut lives: Vec<Life> = store
        .starts_covering(addr, u64::MAX)
        .into_iter()
        .flat_map(|start| at_start(store, heap, start).lives)
        .filter(|l| addr >= l.block.ptr && addr - l.block.ptr < l.block.size.max(1))
        .collect();
    // Survivors whose start no event in the held recording touches.
    for b in heap.survivors() {
        if addr >= b.ptr
            && addr - b.ptr < b.size.max(1)
            && !lives.iter().any(|l| l.block.alloc == b.alloc)
        {
            lives.push(Life {
                block: *b,
                end: None,
                extra_frees: Vec::new(),
            });
        }
    }
    lives.sort_by_key(|l| l.block.alloc);
    lives
}
