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

/// The events at the block-start address `addr` up to `from` (the last
/// one when `None`), oldest first, at most `cap` of them: (events, the
/// chain reaches back past the held recording, the cap cut it).
fn chain(store: &EventStore, addr: u64, from: Option<Idx>, cap: usize) -> (Vec<Idx>, bool, bool) {
    let mut out = Vec::new();
    let mut cur = from.or_else(|| store.addr_info(addr).map(|a| a.last));
    let mut truncated = false;
    while let Some(i) = cur {
        if !store.contains(i) {
            truncated = true;
            break;
        }
        if out.len() == cap {
            out.reverse();
            return (out, truncated, true);
        }
        out.push(i);
        cur = store.prev_at(i, addr);
    }
    out.reverse();
    (out, truncated, false)
}

/// The life of every block that started at `addr`.
pub fn at_start(store: &EventStore, heap: &HeapIndex, addr: u64) -> History {
    let (events, truncated, _) = chain(store, addr, None, usize::MAX);
    lives(store, heap, addr, &events, truncated, true)
}

/// Lives from a run of the address's events (oldest first); `from_start`:
/// the run begins at the held recording's start (a survivor may be live).
fn lives(
    store: &EventStore,
    heap: &HeapIndex,
    addr: u64,
    events: &[Idx],
    truncated: bool,
    from_start: bool,
) -> History {
    let mut h = History {
        addr,
        truncated,
        ..History::default()
    };
    // A block allocated before the held recording and still needed.
    let mut cur: Option<Life> = heap
        .survivors()
        .find(|b| from_start && b.ptr == addr)
        .map(|b| Life {
            block: *b,
            end: None,
            extra_frees: Vec::new(),
        });
    for &i in events {
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

/// Event `c` at block-start address `addr` in its block's life, found
/// with at most `cap` steps each way along the address's chain (an
/// address reused millions of times costs no more than one used once).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Around {
    /// The life `c` belongs to (its alloc, its end or an extra free);
    /// its `end` is known only up to `c`.
    pub life: Option<Life>,
    /// `c` frees a block already freed.
    pub double_free: bool,
    /// 1-based: the how-many-th block at `addr` in the held recording
    /// (`None`: more than `cap` events before `c`).
    pub nth: Option<usize>,
    /// Blocks at `addr` in the held recording (`None`: more than `cap`
    /// events).
    pub of: Option<usize>,
}

pub fn around(store: &EventStore, heap: &HeapIndex, addr: u64, c: Idx, cap: usize) -> Around {
    let (events, truncated, capped) = chain(store, addr, Some(c), cap);
    let h = lives(store, heap, addr, &events, truncated, !capped);
    let k = h
        .lives
        .iter()
        .position(|l| l.block.alloc == c || l.end == Some(c) || l.extra_frees.contains(&c));
    let mut a = Around {
        double_free: h.lives.iter().any(|l| l.extra_frees.contains(&c)),
        life: k.map(|k| h.lives[k].clone()),
        ..Around::default()
    };
    if capped {
        return a;
    }
    a.nth = k.map(|k| k + 1);
    // Blocks started after c: walk back from the address's last event.
    let mut later = 0;
    let mut cur = store.addr_info(addr).map(|i| i.last);
    let mut steps = 0;
    while let Some(i) = cur.filter(|&i| i > c) {
        steps += 1;
        if steps > cap {
            return a;
        }
        if store.heap_op(i).is_some_and(|op| op.starts() == Some(addr)) {
            later += 1;
        }
        cur = store.prev_at(i, addr);
    }
    a.of = Some(h.lives.len() + later);
    a
}

/// The event that ended the block allocated at `alloc` (at `addr`), if
/// one is held: walks back from the address's last event to `alloc`.
pub fn end_of(store: &EventStore, addr: u64, alloc: Idx) -> Option<Idx> {
    let mut end = None;
    let mut cur = store.addr_info(addr).map(|i| i.last);
    while let Some(i) = cur.filter(|&i| i > alloc) {
        match store.heap_op(i) {
            // A later block at the address: what ended ours is before it.
            Some(op) if op.starts() == Some(addr) => end = None,
            Some(op) if op.ends() == Some(addr) => end = Some(i),
            _ => {}
        }
        cur = store.prev_at(i, addr);
    }
    end
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
