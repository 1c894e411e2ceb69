//! Exact heap accounting: which blocks are live after a sequence of
//! allocator events, with the counts a valgrind summary gives — now
//! ([`LiveHeap`], a plain replay) and at any instant of a recording
//! ([`HeapIndex`]: periodic checkpoints plus replay of the deltas).

#[cfg(test)]
use std::collections::HashMap;
use std::collections::VecDeque;

#[cfg(test)]
use crate::event::{Event, EventKind, StackId};
use crate::model::store::LiveBlock;
use crate::model::store::{EventStore, Idx, CHUNK};
use crate::model::summary::{class, Tally, WINDOW};
use crate::util::hash::FxMap;

/// The live map's values: the allocation event, its block's size class
/// in the top byte (so `big` refills without reading every block).
const CLASS_SHIFT: u32 = 56;

fn live_val(alloc: Idx, size: u64) -> u64 {
    alloc | u64::from(class(size)) << CLASS_SHIFT
}

fn alloc_of(v: u64) -> Idx {
    v & ((1 << CLASS_SHIFT) - 1)
}

/// Checkpoint spacing: at most this many events (or four times the live
/// blocks, if more) are replayed to answer a full heap-at-T read. Sparse
/// with big heaps: the UI's view comes from [`crate::model::summary`].
const SPACING: u64 = CHUNK as u64 / 2;

/// A block as the naive replay keeps it.
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    pub size: u64,
    pub ts: u64,
    pub tid: u32,
    pub stack: Option<StackId>,
}

/// The naive full replay: the oracle the indexed heap is tested against.
/// Live blocks keyed by address, and running totals. realloc counts as a
/// free of the old block and an allocation of the new one, as valgrind
/// counts it.
#[cfg(test)]
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

#[cfg(test)]
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
        self.alloc_bytes = self.alloc_bytes.wrapping_add(size);
        self.live_bytes = self.live_bytes.wrapping_add(size);
        let block = Block {
            size,
            ts: e.ts,
            tid: e.tid,
            stack,
        };
        if let Some(prev) = self.blocks.insert(ptr, block) {
            // The allocator handed out a live address again: its free was
            // not seen (lost, or from before the recording).
            self.live_bytes = self.live_bytes.wrapping_sub(prev.size);
        }
    }

    fn remove(&mut self, ptr: u64) {
        match self.blocks.remove(&ptr) {
            Some(b) => {
                self.frees += 1;
                self.live_bytes = self.live_bytes.wrapping_sub(b.size);
            }
            None => self.unknown_frees += 1,
        }
    }

    pub fn live_blocks(&self) -> u64 {
        self.blocks.len() as u64
    }
}

/// A block that stopped being live at some event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ended {
    pub block: LiveBlock,
    /// Ended by a free or realloc (false: its address was handed out
    /// again without a recorded free).
    pub freed: bool,
}

/// What one event did to the heap.
#[derive(Clone, Copy, Debug, Default)]
pub struct Change {
    pub ended: [Option<Ended>; 2],
    pub born: Option<LiveBlock>,
    /// A free (or realloc) of an address that was not live.
    pub unknown_free: Option<u64>,
}

/// The heap state before event `at`: the allocation events of the blocks
/// live then, sorted and stored as varint gaps (1–3 bytes a block instead
/// of 8).
struct Checkpoint {
    at: Idx,
    blocks: Vec<u8>,
}

impl Checkpoint {
    fn new(at: Idx, mut allocs: Vec<Idx>) -> Self {
        allocs.sort_unstable();
        let mut blocks = Vec::with_capacity(allocs.len() * 2);
        let mut prev = 0;
        for a in allocs {
            let mut gap = a - prev;
            prev = a;
            while gap >= 0x80 {
                blocks.push((gap as u8) | 0x80);
                gap >>= 7;
            }
            blocks.push(gap as u8);
        }
        blocks.shrink_to_fit();
        Checkpoint { at, blocks }
    }

    fn allocs(&self) -> impl Iterator<Item = Idx> + '_ {
        let mut bytes = self.blocks.iter();
        let mut prev = 0u64;
        std::iter::from_fn(move || {
            let mut gap = 0u64;
            let mut shift = 0;
            loop {
                let b = *bytes.next()?;
                gap |= u64::from(b & 0x7f) << shift;
                if b & 0x80 == 0 {
                    break;
                }
                shift += 7;
            }
            prev += gap;
            Some(prev)
        })
    }
}

/// Live blocks now and at any held instant. Ingest is O(1) per event;
/// `at(i)` starts from the nearest checkpoint at or before `i` and replays
/// at most `max(CHUNK, 4 × live)` events.
#[derive(Default)]
pub struct HeapIndex {
    /// Live blocks by address: see [`live_val`].
    live: FxMap<u64, u64>,
    pub totals: LiveHeapTotals,
    checkpoints: VecDeque<Checkpoint>,
    /// Blocks live at the start of the held recording whose allocation
    /// event was dropped by the retention budget. Kept after they end too:
    /// heap-at-T before their end, histories and diagnoses need them; the
    /// set is rebuilt at each drop.
    survivors: FxMap<Idx, LiveBlock>,
    /// The survivors by address.
    survivor_at: FxMap<u64, Idx>,
    /// Aggregates and per-window summaries for [`Self::view_at`].
    pub(crate) tally: Tally,
}

/// Running totals with [`LiveHeap`]'s meaning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LiveHeapTotals {
    pub allocs: u64,
    pub frees: u64,
    pub alloc_bytes: u64,
    pub live_bytes: u64,
    pub unknown_frees: u64,
    pub failed: u64,
}

impl HeapIndex {
    pub fn live_blocks(&self) -> u64 {
        self.live.len() as u64
    }

    pub fn live_bytes(&self) -> u64 {
        self.totals.live_bytes
    }

    /// The block allocated by event `alloc`, from the store or, when the
    /// event was dropped, from the survivors.
    pub fn block(&self, store: &EventStore, alloc: Idx) -> Option<LiveBlock> {
        if !self.survivors.is_empty() {
            if let Some(b) = self.survivors.get(&alloc) {
                return Some(*b);
            }
        }
        store.block(alloc)
    }

    /// `ch` came from a block the model made at a fork (born) or took at
    /// an exec (ended): live or not, but no call of the allocator.
    pub fn not_a_call(&mut self, ch: &Change) {
        let t = &mut self.totals;
        if let Some(b) = ch.born {
            t.allocs -= 1;
            t.alloc_bytes = t.alloc_bytes.wrapping_sub(b.size);
        }
        if ch.ended[0].is_some() {
            t.frees -= 1;
        }
    }

    /// Blocks live now in the process whose addresses carry `tag`
    /// (see [`crate::model::TAG_SHIFT`]).
    pub fn now_of(&self, store: &EventStore, tag: u64) -> Vec<LiveBlock> {
        let mut idx: Vec<Idx> = self
            .live
            .iter()
            .filter(|(&p, _)| p >> crate::model::TAG_SHIFT == tag)
            .map(|(_, &v)| alloc_of(v))
            .collect();
        idx.sort_unstable();
        let mut out = Vec::with_capacity(idx.len());
        self.materialize(store, &idx, |b| out.push(b));
        out
    }

    /// Blocks live now.
    pub fn now(&self, store: &EventStore) -> Vec<LiveBlock> {
        let mut idx: Vec<Idx> = self.live.values().map(|&v| alloc_of(v)).collect();
        idx.sort_unstable();
        let mut out = Vec::with_capacity(idx.len());
        self.materialize(store, &idx, |b| out.push(b));
        out
    }

    /// Applies event `idx` (just pushed to `store`).
    pub fn on_event(&mut self, store: &EventStore, idx: Idx) -> Change {
        let due = match self.checkpoints.back() {
            None => true,
            Some(cp) => {
                idx.is_multiple_of(SPACING)
                    && idx - cp.at >= SPACING.max(4 * self.live.len() as u64)
            }
        };
        if due {
            self.checkpoints.push_back(Checkpoint::new(
                idx,
                self.live.values().map(|&v| alloc_of(v)).collect(),
            ));
        }
        if idx.is_multiple_of(WINDOW) {
            self.tally.boundary(idx);
        }
        if self.tally.wants_refill(idx) {
            let c = self.tally.refill_class();
            let mut idx_c: Vec<Idx> = self
                .live
                .values()
                .filter(|&&v| (v >> CLASS_SHIFT) as u8 >= c)
                .map(|&v| alloc_of(v))
                .collect();
            idx_c.sort_unstable();
            let blocks = self.blocks_of(store, &idx_c);
            self.tally.refill(idx, blocks);
        }
        let mut ch = Change::default();
        let Some(op) = store.heap_op(idx) else {
            return ch;
        };
        let ends = op.ends();
        if let Some(ptr) = ends {
            self.remove(store, ptr, idx, &mut ch);
        }
        match op.starts() {
            Some(ptr) => self.insert(store, ptr, idx, &mut ch),
            // Neither ended nor started anything: a failed allocation.
            None if ends.is_none() => self.totals.failed += 1,
            None => {}
        }
        ch
    }

    fn insert(&mut self, store: &EventStore, ptr: u64, idx: Idx, ch: &mut Change) {
        ch.born = self.block(store, idx);
        let size = ch.born.map_or(0, |b| b.size);
        let t = &mut self.totals;
        t.allocs += 1;
        t.alloc_bytes = t.alloc_bytes.wrapping_add(size);
        t.live_bytes = t.live_bytes.wrapping_add(size);
        if let Some(prev) = self.live.insert(ptr, live_val(idx, size)) {
            // Handed out again while live: its free was not recorded.
            if let Some(b) = self.block(store, alloc_of(prev)) {
                self.tally.ended(&b, idx);
                self.totals.live_bytes = self.totals.live_bytes.wrapping_sub(b.size);
                ch.ended[1] = Some(Ended {
                    block: b,
                    freed: false,
                });
            }
        }
        if let Some(b) = &ch.born {
            self.tally.born(b);
        }
    }

    fn remove(&mut self, store: &EventStore, ptr: u64, idx: Idx, ch: &mut Change) {
        match self.live.remove(&ptr) {
            Some(v) => {
                self.totals.frees += 1;
                if let Some(b) = self.block(store, alloc_of(v)) {
                    self.tally.ended(&b, idx);
                    self.totals.live_bytes = self.totals.live_bytes.wrapping_sub(b.size);
                    ch.ended[0] = Some(Ended {
                        block: b,
                        freed: true,
                    });
                }
            }
            None => {
                self.totals.unknown_frees += 1;
                ch.unknown_free = Some(ptr);
            }
        }
    }

    /// The blocks allocated by events `idx`, from the store in batches, or
    /// from the survivors.
    fn materialize(&self, store: &EventStore, idx: &[Idx], mut f: impl FnMut(LiveBlock)) {
        if !self.survivors.is_empty() {
            for i in idx {
                if let Some(b) = self.survivors.get(i) {
                    f(*b);
                }
            }
        }
        store.blocks(idx, f);
    }

    /// [`Self::materialize`] into a list in allocation order.
    pub(crate) fn blocks_of(&self, store: &EventStore, idx: &[Idx]) -> Vec<LiveBlock> {
        let mut out = Vec::with_capacity(idx.len());
        self.materialize(store, idx, |b| out.push(b));
        out.sort_unstable_by_key(|b| b.alloc);
        out
    }

    /// The live blocks just before event `upto` (after all events < upto),
    /// or `None` when `upto` is before the held recording.
    pub fn at(&self, store: &EventStore, upto: Idx) -> Option<Vec<LiveBlock>> {
        let upto = upto.min(store.end());
        let ci = self.checkpoints.partition_point(|c| c.at <= upto);
        let cp = self.checkpoints.get(ci.checked_sub(1)?)?;
        // The final state of every address the replay touches.
        let mut delta: FxMap<u64, Option<Idx>> = FxMap::default();
        store.heap_ops(cp.at..upto, |i, op| {
            // Ended first: a realloc in place ends and starts one address.
            if let Some(a) = op.ends() {
                delta.insert(a, None);
            }
            if let Some(a) = op.starts() {
                delta.insert(a, Some(i));
            }
        });
        let mut idx: Vec<Idx> = cp.allocs().collect();
        idx.extend(delta.values().flatten());
        let mut out = Vec::with_capacity(idx.len());
        self.materialize(store, &idx, |b| {
            // Snapshot blocks the replay touched are decided by the replay.
            if b.alloc >= cp.at || !delta.contains_key(&b.ptr) {
                out.push(b);
            }
        });
        Some(out)
    }

    /// Bytes held by checkpoints and survivors.
    pub fn bytes(&self) -> usize {
        self.checkpoints
            .iter()
            .map(|c| c.blocks.capacity() + 32)
            .sum::<usize>()
            + self.survivors.capacity() * (8 + std::mem::size_of::<LiveBlock>() + 1)
            + self.survivor_at.capacity() * 17
            + self.live.capacity() * 17
            + self.tally.bytes()
    }

    /// The store is about to drop the events before `new_first`: keep
    /// what the held recording still needs of them.
    pub fn before_drop(&mut self, store: &EventStore, new_first: Idx) {
        // The live set at `new_first` as allocation numbers only: the last
        // checkpoint before it, minus what ended and plus what was born in
        // between. Ends are found through the store's per-address chain, so
        // no block is read from the scattered store but those that become
        // survivors now (the others are survivors already, or were not
        // allocated before `new_first`).
        let ci = self.checkpoints.partition_point(|c| c.at <= new_first);
        let Some(cp) = ci.checked_sub(1).and_then(|i| self.checkpoints.get(i)) else {
            return;
        };
        let mut born: Vec<Idx> = Vec::new();
        let mut ended: crate::util::hash::FxSet<Idx> = Default::default();
        store.heap_ops(cp.at..new_first, |i, op| {
            // A free ends the live block at its address; a new block at a
            // live address ends the old one (its free was not recorded).
            for addr in [op.ends(), op.starts()].into_iter().flatten() {
                if let Some(a) = self.live_start_before(store, i, addr) {
                    ended.insert(a);
                }
            }
            if op.starts().is_some() {
                born.push(i);
            }
        });
        let mut live: Vec<Idx> = cp
            .allocs()
            .chain(born)
            .filter(|a| !ended.contains(a))
            .collect();
        live.sort_unstable();
        let keep: Vec<Idx> = live.iter().copied().filter(|&a| a < new_first).collect();
        let mut survivors: FxMap<Idx, LiveBlock> = FxMap::default();
        let fresh: Vec<Idx> = keep
            .iter()
            .copied()
            .filter(|a| match self.survivors.get(a) {
                Some(b) => {
                    survivors.insert(*a, *b);
                    false
                }
                None => true,
            })
            .collect();
        self.survivors = FxMap::default();
        self.materialize(store, &fresh, |b| {
            survivors.insert(b.alloc, b);
        });
        self.survivor_at = survivors.values().map(|b| (b.ptr, b.alloc)).collect();
        self.survivors = survivors;
        while self.checkpoints.front().is_some_and(|c| c.at <= new_first) {
            self.checkpoints.pop_front();
        }
        self.checkpoints
            .push_front(Checkpoint::new(new_first, live));
        self.tally.before(new_first);
    }

    /// The allocation live at `addr` just before event `i` (which touches
    /// `addr`), from the chain of events at that address: the last event
    /// that changed it, if that started a block.
    pub(crate) fn live_start_before(&self, store: &EventStore, i: Idx, addr: u64) -> Option<Idx> {
        let mut p = store.prev_at(i, addr)?;
        loop {
            if !store.contains(p) {
                // Dropped: every held event at `addr` since changed
                // nothing, so the block live here is the survivor here,
                // if any (`p` itself may be a failed realloc of `addr`,
                // or a realloc that moved it elsewhere).
                return self.survivor_at.get(&addr).copied();
            }
            let op = store.heap_op(p)?;
            if op.starts() == Some(addr) {
                return Some(p);
            }
            if op.ends() == Some(addr) {
                return None;
            }
            // A failed realloc of `addr` changed nothing: look further.
            p = store.prev_at(p, addr)?;
        }
    }

    /// Every block live at the start of the held recording whose
    /// allocation event was dropped.
    pub fn survivors(&self) -> impl Iterator<Item = &LiveBlock> {
        self.survivors.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::AllocFn;

    fn ev(kind: EventKind) -> Event {
        Event {
            ts: 1,
            pid: 1,
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
