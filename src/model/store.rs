//! The event store: every event of a recording in rows of 29 bytes an
//! event, in chunks that the retention budget drops oldest first, with a
//! time index and a per-address chain (each heap event links back to the
//! previous event at the same address) for block histories.
//!
//! Events are numbered from 0 in arrival order; a number (`Idx`) stays
//! valid for the whole recording, dropped or not.

use std::collections::VecDeque;
use std::ops::Range;

pub use crate::event::Kind;
use crate::event::{AllocFn, Event, EventKind, ProbeId, StackId};
use crate::util::hash::{FxMap, FxSet};
use strum::EnumCount;

/// The number of an event in the recording, in arrival order.
pub type Idx = u64;

/// Events a chunk holds; the unit of retention and of heap checkpoints.
#[cfg(not(test))]
pub const CHUNK: usize = 1 << 16;
/// Small in unit tests, so short sequences cross many chunks.
#[cfg(test)]
pub const CHUNK: usize = 1 << 10;

/// A row's stack (or probe) field is 24 bits: this one says none, and
/// [`BIG_STACK`] that the id is in the side table (ids are numbered from
/// 0 as the recorder meets stacks, so 16 M of them fit).
const NO_STACK: u32 = 0xff_ffff;
const BIG_STACK: u32 = NO_STACK - 1;
const BIG_SIZE: u32 = u32::MAX;
const MANY_TIDS: u16 = u16::MAX;
/// A link to a previous event too far back for 32 bits: it is outside any
/// held recording (4 G events would need over 100 GB), so history walks
/// stop there as truncated rather than as complete.
const FAR: u32 = u32::MAX;

/// What a record is, in the low byte of its time word.
mod code {
    /// `ALLOC + AllocFn as u8` for malloc … pvalloc.
    pub const ALLOC: u8 = 0;
    pub const FREE: u8 = 8;
    pub const REALLOC: u8 = 9;
    pub const REALLOCARRAY: u8 = 10;
    /// A probed function's return, whole in its row: `addr` = sp, `size`
    /// and `link` = the low and high halves of the return value, `stack`
    /// = the probe (half of a call-heavy recording's events).
    pub const RETURN: u8 = 11;
    /// Made by the model: a block a forked child has from its parent.
    pub const INHERIT: u8 = 12;
    /// Made by the model: a block gone with its image at an exec.
    pub const DISCARD: u8 = 13;
    /// Anything else: the event is kept whole in the side table.
    pub const OTHER: u8 = 16;

    /// Allocator events: rows that start or end blocks.
    pub fn is_heap(c: u8) -> bool {
        c <= REALLOCARRAY || c == INHERIT || c == DISCARD
    }

    /// Heap rows that end a block without starting one.
    pub fn is_end(c: u8) -> bool {
        c == FREE || c == DISCARD
    }
}

/// The bit of a kind in a filter's set.
fn kind_bit(k: Kind) -> u32 {
    const _: () = assert!(Kind::COUNT <= 32, "a filter's kind set is a u32");
    1 << (k as u8)
}

/// A live block as of some instant, with where it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LiveBlock {
    pub ptr: u64,
    pub size: u64,
    pub ts: u64,
    pub tid: u32,
    pub stack: Option<StackId>,
    /// The event that allocated it.
    pub alloc: Idx,
}

/// Which events a search selects; unset fields select everything.
#[derive(Clone, Debug, Default)]
pub struct Filter {
    /// Bit set of [`Kind`]s; 0 = all kinds.
    pub kinds: u32,
    pub tid: Option<u32>,
    /// Only the events of this process.
    pub pid: Option<u32>,
    /// Heap events on this address or whose new block covers it; other
    /// events whose main address (mapping, fault) equals it.
    pub addr: Option<u64>,
    /// Only events with one of these stacks (a function filter resolved
    /// to the stacks that contain the function).
    pub stacks: Option<FxSet<StackId>>,
    /// Only Call and Return events of these probes (`call=NAME`).
    pub probes: Option<FxSet<ProbeId>>,
    /// With `stacks`: the calls and returns of these probes match too (a
    /// call's own stack starts at its caller; a return has none).
    pub stack_probes: FxSet<ProbeId>,
}

impl Filter {
    pub fn kind(mut self, k: Kind) -> Self {
        self.kinds |= kind_bit(k);
        self
    }
}

/// One event, packed: 29 bytes. Rows rather than columns, because the
/// heap queries read every field of scattered events (one cache miss a
/// row, not one a column).
#[derive(Clone, Copy)]
#[repr(C, packed)]
struct Row {
    /// `(ts - base) << 8 | code`: 56 bits of nanoseconds (2.2 years).
    ts_code: u64,
    /// The block (new block for realloc); for OTHER events the address
    /// they are about (mapping, fault address) or 0.
    addr: u64,
    size: u32,
    /// The stack (a return: the probe), little-endian: see [`NO_STACK`].
    stack: [u8; 3],
    /// Heap events: distance back to the previous event at `addr`
    /// (0: none). OTHER events: 0.
    link: u32,
    /// Index into the thread table.
    tid: u16,
}

impl Row {
    fn code(&self) -> u8 {
        (self.ts_code & 0xff) as u8
    }

    /// The stack field: [`NO_STACK`], [`BIG_STACK`] or the id.
    fn stack24(&self) -> u32 {
        let [a, b, c] = self.stack;
        u32::from_le_bytes([a, b, c, 0])
    }

    fn rel(&self) -> u64 {
        self.ts_code >> 8
    }
}

/// Up to [`CHUNK`] consecutive events.
struct Chunk {
    first: Idx,
    rows: Vec<Row>,
}

impl Chunk {
    fn new(first: Idx) -> Self {
        Chunk {
            first,
            rows: Vec::with_capacity(CHUNK),
        }
    }

    fn len(&self) -> usize {
        self.rows.len()
    }

    const BYTES_PER_EVENT: usize = std::mem::size_of::<Row>();
}

/// The freed side of a realloc: the old block and the previous event at
/// its address. 20 bytes.
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
struct ReallocOld {
    idx: Idx,
    old: u64,
    /// Distance back to the previous event at `old` (0: none; [`FAR`]),
    /// as a row's link.
    link: u32,
}

impl ReallocOld {
    /// Previous event at `old`, if any.
    fn prev(&self) -> Option<Idx> {
        let d = self.link;
        (d != 0).then(|| self.idx - u64::from(d))
    }
}

/// The distance back from event `idx` to `prev` as a row keeps it.
fn link_to(idx: Idx, prev: Option<Idx>) -> u32 {
    prev.map_or(0, |p| u32::try_from(idx - p).unwrap_or(FAR))
}

/// Per block-start address: the last event there and the biggest block
/// that ever started there (to answer "which blocks covered address A").
#[derive(Clone, Copy, Debug)]
pub struct AddrInfo {
    pub last: Idx,
    /// At least the biggest block's size: `2^k - 1` for the smallest `k`
    /// that holds it (candidates only; the blocks are read after).
    pub max_size: u64,
}

/// [`AddrInfo`] as [`EventStore::addrs`] keeps it: the last event in the
/// low [`ADDR_LAST_BITS`], the bits of the biggest size above.
const ADDR_LAST_BITS: u32 = 56;

fn size_bits(size: u64) -> u64 {
    u64::from(64 - size.leading_zeros())
}

fn addr_info(v: u64) -> AddrInfo {
    let bits = v >> ADDR_LAST_BITS;
    AddrInfo {
        last: v & ((1 << ADDR_LAST_BITS) - 1),
        max_size: if bits == 64 {
            u64::MAX
        } else {
            (1 << bits) - 1
        },
    }
}

/// A compact view of one stored heap event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapOp {
    /// A block `[ptr, ptr+size)` became live (`ptr == 0`: failed).
    Alloc {
        ptr: u64,
        size: u64,
    },
    Free {
        ptr: u64,
    },
    /// `old` (if non-zero) ended and `ptr` (if non-zero) began.
    Realloc {
        old: u64,
        ptr: u64,
        size: u64,
    },
}

impl HeapOp {
    /// The block this event ends: a free, a realloc that moved or freed
    /// its block (a failed realloc leaves it live).
    pub fn ends(self) -> Option<u64> {
        match self {
            HeapOp::Free { ptr } => Some(ptr),
            HeapOp::Realloc { old, ptr, size } if old != 0 && (ptr != 0 || size == 0) => Some(old),
            _ => None,
        }
    }

    /// The block this event starts (none when the allocation failed).
    pub fn starts(self) -> Option<u64> {
        match self {
            HeapOp::Alloc { ptr, .. } | HeapOp::Realloc { ptr, .. } if ptr != 0 => Some(ptr),
            _ => None,
        }
    }
}

#[derive(Default)]
pub struct EventStore {
    base_ts: Option<u64>,
    last_rel: u64,
    chunks: VecDeque<Chunk>,
    /// Total events ever pushed; the next event's number.
    end: Idx,
    /// (tid, pid) of each thread index.
    threads: Vec<(u32, u32)>,
    thread_ix: FxMap<(u32, u32), u16>,
    /// Events whose thread did not fit the thread table: (tid, pid).
    tid_overflow: FxMap<Idx, (u32, u32)>,
    big_sizes: FxMap<Idx, u64>,
    /// Stacks and probes of [`BIG_STACK`] or more, by event.
    big_stacks: FxMap<Idx, u32>,
    others: VecDeque<(Idx, EventKind)>,
    reallocs: VecDeque<ReallocOld>,
    /// By block-start address: see [`addr_info`].
    addrs: FxMap<u64, u64>,
    /// Events stamped earlier than their predecessor (cross-CPU clock
    /// skew): stored at the predecessor's time so the index stays sorted.
    pub reordered: u64,
    /// Events dropped by the retention budget (oldest first).
    pub dropped: u64,
}

impl EventStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Total events pushed (dropped ones included): the next number.
    pub fn end(&self) -> Idx {
        self.end
    }

    /// The oldest event still held.
    pub fn first(&self) -> Idx {
        self.chunks.front().map_or(self.end, |c| c.first)
    }

    pub fn held(&self) -> Range<Idx> {
        self.first()..self.end
    }

    fn is_empty(&self) -> bool {
        self.first() == self.end
    }

    /// Resident bytes of the columns and side tables (approximate for the
    /// hash tables).
    pub fn bytes(&self) -> usize {
        let cols: usize = self
            .chunks
            .iter()
            .map(|c| c.rows.capacity() * Chunk::BYTES_PER_EVENT)
            .sum();
        cols + self.others.len() * (8 + std::mem::size_of::<EventKind>())
            + self.reallocs.len() * std::mem::size_of::<ReallocOld>()
            + (self.big_sizes.len() + self.tid_overflow.len() + self.big_stacks.len()) * 24
            + self.addrs.capacity() * 17
    }

    /// Appends an event; returns its number.
    pub fn push(&mut self, e: &Event) -> Idx {
        let idx = self.end;
        let base = *self.base_ts.get_or_insert(e.ts);
        let mut rel = e.ts.saturating_sub(base).min((1 << 56) - 1);
        if e.ts < base.saturating_add(self.last_rel) {
            self.reordered += 1;
            rel = self.last_rel;
        }
        self.last_rel = rel;
        let tid = self.thread(e.tid, e.pid, idx);
        let (code, addr, size, stack) = match &e.kind {
            EventKind::Alloc {
                func,
                ptr,
                size,
                stack,
            } => (code::ALLOC + *func as u8, *ptr, *size, *stack),
            EventKind::Free { ptr, stack } => (code::FREE, *ptr, 0, *stack),
            EventKind::Inherit { ptr, size, stack } => (code::INHERIT, *ptr, *size, *stack),
            EventKind::Discard { ptr } => (code::DISCARD, *ptr, 0, None),
            EventKind::Realloc {
                func,
                ptr,
                size,
                stack,
                ..
            } => {
                let c = if *func == AllocFn::Reallocarray {
                    code::REALLOCARRAY
                } else {
                    code::REALLOC
                };
                (c, *ptr, *size, *stack)
            }
            EventKind::Return { .. } => (code::RETURN, 0, 0, None),
            other => {
                self.others.push_back((idx, other.clone()));
                (code::OTHER, other.addr(), 0, other.stack())
            }
        };
        let mut link = 0u32;
        if code::is_heap(code) {
            if let EventKind::Realloc { old, .. } = &e.kind {
                if *old != 0 && *old != addr {
                    let prev = self.touch(*old, 0, idx);
                    self.reallocs.push_back(ReallocOld {
                        idx,
                        old: *old,
                        link: link_to(idx, prev),
                    });
                } else if *old != 0 {
                    self.reallocs.push_back(ReallocOld {
                        idx,
                        old: *old,
                        link: 0,
                    });
                }
            }
            if addr != 0 {
                let block = if code::is_end(code) { 0 } else { size };
                link = link_to(idx, self.touch(addr, block, idx));
            }
        }
        let mut size32 = match u32::try_from(size) {
            Ok(s) if s != BIG_SIZE => s,
            _ => {
                self.big_sizes.insert(idx, size);
                BIG_SIZE
            }
        };
        let mut addr = addr;
        let mut stack = stack;
        if let EventKind::Return { probe, ret, sp } = &e.kind {
            addr = *sp;
            size32 = *ret as u32;
            link = (*ret >> 32) as u32;
            stack = Some(*probe);
        }
        let stack = match stack {
            None => NO_STACK,
            Some(s) if s < BIG_STACK => s,
            Some(s) => {
                self.big_stacks.insert(idx, s);
                BIG_STACK
            }
        };
        let [s0, s1, s2, _] = stack.to_le_bytes();
        if self.chunks.back().is_none_or(|c| c.len() == CHUNK) {
            self.chunks.push_back(Chunk::new(idx));
        }
        let Some(c) = self.chunks.back_mut() else {
            unreachable!("a chunk was just pushed")
        };
        c.rows.push(Row {
            ts_code: rel << 8 | u64::from(code),
            addr,
            size: size32,
            stack: [s0, s1, s2],
            link,
            tid,
        });
        self.end += 1;
        idx
    }

    /// Records an event at a block-start address; returns the previous.
    fn touch(&mut self, addr: u64, size: u64, idx: Idx) -> Option<Idx> {
        let bits = size_bits(size);
        match self.addrs.get_mut(&addr) {
            Some(a) => {
                let prev = addr_info(*a).last;
                *a = idx | (*a >> ADDR_LAST_BITS).max(bits) << ADDR_LAST_BITS;
                Some(prev)
            }
            None => {
                self.addrs.insert(addr, idx | bits << ADDR_LAST_BITS);
                None
            }
        }
    }

    fn thread(&mut self, tid: u32, pid: u32, idx: Idx) -> u16 {
        if let Some(&t) = self.thread_ix.get(&(tid, pid)) {
            return t;
        }
        match u16::try_from(self.threads.len()) {
            Ok(t) if t != MANY_TIDS => {
                self.threads.push((tid, pid));
                self.thread_ix.insert((tid, pid), t);
                t
            }
            _ => {
                self.tid_overflow.insert(idx, (tid, pid));
                MANY_TIDS
            }
        }
    }

    fn row(&self, i: Idx) -> Option<Row> {
        let (c, o) = self.locate(i)?;
        Some(c.rows[o])
    }

    fn locate(&self, i: Idx) -> Option<(&Chunk, usize)> {
        let first = self.first();
        if i < first || i >= self.end {
            return None;
        }
        // Chunks are full except the last, so the position is arithmetic.
        let ci = usize::try_from((i - first) / CHUNK as u64).ok()?;
        let c = self.chunks.get(ci)?;
        let off = usize::try_from(i - c.first).ok()?;
        (off < c.len()).then_some((c, off))
    }

    pub fn contains(&self, i: Idx) -> bool {
        self.locate(i).is_some()
    }

    /// Kernel timestamp (CLOCK_MONOTONIC ns) of event `i`.
    pub fn ts(&self, i: Idx) -> Option<u64> {
        let (c, o) = self.locate(i)?;
        Some(self.base_ts.unwrap_or(0) + c.rows[o].rel())
    }

    fn code(&self, i: Idx) -> Option<u8> {
        let (c, o) = self.locate(i)?;
        Some(c.rows[o].code())
    }

    pub fn tid(&self, i: Idx) -> Option<u32> {
        self.tid_of(i, self.row(i)?.tid)
    }

    /// The process event `i` belongs to.
    pub fn pid(&self, i: Idx) -> Option<u32> {
        self.thread_of(i, self.row(i)?.tid).map(|(_, p)| p)
    }

    fn tid_of(&self, i: Idx, t: u16) -> Option<u32> {
        self.thread_of(i, t).map(|(t, _)| t)
    }

    fn thread_of(&self, i: Idx, t: u16) -> Option<(u32, u32)> {
        match t {
            MANY_TIDS => self.tid_overflow.get(&i).copied(),
            t => self.threads.get(usize::from(t)).copied(),
        }
    }

    pub fn stack(&self, i: Idx) -> Option<StackId> {
        let (c, o) = self.locate(i)?;
        let r = c.rows[o];
        if r.code() == code::RETURN {
            return None;
        }
        self.stack_of(i, &r)
    }

    /// The stack (or probe) of row `r` of event `i`.
    fn stack_of(&self, i: Idx, r: &Row) -> Option<u32> {
        match r.stack24() {
            NO_STACK => None,
            BIG_STACK => self.big_stacks.get(&i).copied(),
            s => Some(s),
        }
    }

    /// The block address of a heap event (the new block for realloc).
    pub fn addr(&self, i: Idx) -> Option<u64> {
        let (c, o) = self.locate(i)?;
        Some(c.rows[o].addr)
    }

    pub fn size(&self, i: Idx) -> Option<u64> {
        Some(self.size_of(i, self.row(i)?.size))
    }

    pub fn kind(&self, i: Idx) -> Option<Kind> {
        Some(match self.code(i)? {
            c if c < code::FREE => Kind::Alloc,
            code::FREE => Kind::Free,
            code::REALLOC | code::REALLOCARRAY => Kind::Realloc,
            code::RETURN => Kind::Return,
            code::INHERIT => Kind::Inherit,
            code::DISCARD => Kind::Discard,
            _ => self.other(i)?.kind(),
        })
    }

    /// The probe of a Call or Return event.
    pub fn probe(&self, i: Idx) -> Option<ProbeId> {
        let (c, o) = self.locate(i)?;
        if c.rows[o].code() == code::RETURN {
            return self.stack_of(i, &c.rows[o]);
        }
        match self.other(i)? {
            EventKind::Call(c) => Some(c.probe),
            EventKind::Return { probe, .. } => Some(*probe),
            _ => None,
        }
    }

    fn other(&self, i: Idx) -> Option<&EventKind> {
        let at = self.others.partition_point(|(j, _)| *j < i);
        match self.others.get(at) {
            Some((j, k)) if *j == i => Some(k),
            _ => None,
        }
    }

    fn realloc_old(&self, i: Idx) -> Option<ReallocOld> {
        // Ingest asks for the realloc it just pushed.
        if let Some(&r) = self.reallocs.back().filter(|r| r.idx <= i) {
            return (r.idx == i).then_some(r);
        }
        let at = self.reallocs.partition_point(|r| r.idx < i);
        self.reallocs.get(at).filter(|r| r.idx == i).copied()
    }

    /// The block allocated by event `i`, with one lookup (the heap
    /// index's hot path); `None` if `i` allocates nothing.
    pub fn block(&self, i: Idx) -> Option<LiveBlock> {
        self.block_of(i, self.row(i)?)
    }

    fn block_of(&self, i: Idx, r: Row) -> Option<LiveBlock> {
        if code::is_end(r.code()) || !code::is_heap(r.code()) {
            return None;
        }
        Some(LiveBlock {
            ptr: r.addr,
            size: self.size_of(i, r.size),
            ts: self.base_ts.unwrap_or(0) + r.rel(),
            tid: self.tid_of(i, r.tid)?,
            stack: self.stack_of(i, &r),
            alloc: i,
        })
    }

    /// [`Self::block`] of many events, in order, skipping those that
    /// allocate nothing. The rows are fetched in groups before any is
    /// decoded, so their cache misses overlap instead of queueing.
    pub fn blocks(&self, idx: &[Idx], mut f: impl FnMut(LiveBlock)) {
        const GROUP: usize = 32;
        for group in idx.chunks(GROUP) {
            let mut rows = [None; GROUP];
            for (slot, &i) in rows.iter_mut().zip(group) {
                *slot = self.row(i);
            }
            for (r, &i) in rows.iter().zip(group) {
                if let Some(b) = r.and_then(|r| self.block_of(i, r)) {
                    f(b);
                }
            }
        }
    }

    /// The heap effects of the events in `range`, in order, reading rows
    /// sequentially (the replay of a heap-at-T query).
    pub fn heap_ops(&self, range: Range<Idx>, mut f: impl FnMut(Idx, HeapOp)) {
        let start = range.start.max(self.first());
        let end = range.end.min(self.end);
        if start >= end {
            return;
        }
        let mut rx = self.reallocs.partition_point(|r| r.idx < start);
        let first = self.first();
        let ci0 = usize::try_from((start - first) / CHUNK as u64).unwrap_or(usize::MAX);
        for c in self.chunks.iter().skip(ci0) {
            if c.first >= end {
                break;
            }
            let lo = usize::try_from(start.saturating_sub(c.first)).unwrap_or(0);
            let hi = usize::try_from((end - c.first).min(c.len() as u64)).unwrap_or(0);
            for (o, r) in c.rows[lo..hi].iter().enumerate() {
                let i = c.first + (lo + o) as u64;
                let code = r.code();
                let op = match code {
                    c if !code::is_heap(c) => continue,
                    c if code::is_end(c) => HeapOp::Free { ptr: r.addr },
                    code::REALLOC | code::REALLOCARRAY => {
                        while self.reallocs.get(rx).is_some_and(|x| x.idx < i) {
                            rx += 1;
                        }
                        let old = match self.reallocs.get(rx) {
                            Some(x) if x.idx == i => x.old,
                            _ => 0,
                        };
                        HeapOp::Realloc {
                            old,
                            ptr: r.addr,
                            size: self.size_of(i, r.size),
                        }
                    }
                    _ => HeapOp::Alloc {
                        ptr: r.addr,
                        size: self.size_of(i, r.size),
                    },
                };
                f(i, op);
            }
        }
    }

    fn size_of(&self, i: Idx, s: u32) -> u64 {
        match s {
            BIG_SIZE => self.big_sizes.get(&i).copied().unwrap_or(u64::MAX),
            s => u64::from(s),
        }
    }

    /// The heap effect of event `i`, if it is a heap event.
    pub fn heap_op(&self, i: Idx) -> Option<HeapOp> {
        let (c, o) = self.locate(i)?;
        let code = c.rows[o].code();
        if !code::is_heap(code) {
            return None;
        }
        let ptr = { c.rows[o].addr };
        Some(match code {
            c if c < code::FREE => HeapOp::Alloc {
                ptr,
                size: self.size(i)?,
            },
            code::FREE | code::DISCARD => HeapOp::Free { ptr },
            code::REALLOC | code::REALLOCARRAY => HeapOp::Realloc {
                old: self.realloc_old(i).map_or(0, |r| r.old),
                ptr,
                size: self.size(i)?,
            },
            code::INHERIT => HeapOp::Alloc {
                ptr,
                size: self.size(i)?,
            },
            _ => return None,
        })
    }

    /// The event `i`, whole.
    pub fn get(&self, i: Idx) -> Option<Event> {
        let code = self.code(i)?;
        let ts = self.ts(i)?;
        let tid = self.tid(i)?;
        let stack = self.stack(i);
        let kind = match code {
            c if c < code::FREE => EventKind::Alloc {
                func: AllocFn::from_repr(c).unwrap_or(AllocFn::Malloc),
                ptr: self.addr(i)?,
                size: self.size(i)?,
                stack,
            },
            code::FREE => EventKind::Free {
                ptr: self.addr(i)?,
                stack,
            },
            code::INHERIT => EventKind::Inherit {
                ptr: self.addr(i)?,
                size: self.size(i)?,
                stack,
            },
            code::DISCARD => EventKind::Discard { ptr: self.addr(i)? },
            code::REALLOC | code::REALLOCARRAY => EventKind::Realloc {
                func: if code == code::REALLOC {
                    AllocFn::Realloc
                } else {
                    AllocFn::Reallocarray
                },
                old: self.realloc_old(i).map_or(0, |r| r.old),
                ptr: self.addr(i)?,
                size: self.size(i)?,
                stack,
            },
            code::RETURN => {
                let (c, o) = self.locate(i)?;
                let r = c.rows[o];
                EventKind::Return {
                    probe: self.stack_of(i, &r)?,
                    ret: u64::from(r.size) | u64::from(r.link) << 32,
                    sp: r.addr,
                }
            }
            _ => self.other(i)?.clone(),
        };
        let pid = self.pid(i)?;
        Some(Event { ts, pid, tid, kind })
    }

    /// The previous event at the block-start address `addr` before event
    /// `i` (which must be a heap event at `addr`, as new or old block).
    pub fn prev_at(&self, i: Idx, addr: u64) -> Option<Idx> {
        let (c, o) = self.locate(i)?;
        if { c.rows[o].addr } == addr && code::is_heap(c.rows[o].code()) {
            let d = { c.rows[o].link };
            return (d != 0).then(|| i - u64::from(d));
        }
        self.realloc_old(i).filter(|r| { r.old } == addr)?.prev()
    }

    /// The last event at the block-start address `addr`, and the biggest
    /// block that started there.
    pub fn addr_info(&self, addr: u64) -> Option<AddrInfo> {
        self.addrs.get(&addr).map(|&v| addr_info(v))
    }

    /// Block-start addresses in `[lo, hi]` whose biggest block could reach
    /// `target`: candidates for "which blocks covered this address".
    pub fn starts_covering(&self, target: u64, max_back: u64) -> Vec<u64> {
        let lo = target.saturating_sub(max_back);
        let mut v: Vec<u64> = self
            .addrs
            .iter()
            .filter(|(&a, &v)| a <= target && a >= lo && target - a < addr_info(v).max_size.max(1))
            .map(|(&a, _)| a)
            .collect();
        v.sort_unstable();
        v
    }

    /// The number of events with a timestamp ≤ `ts` (an absolute event
    /// number: `first()` when none held is that early).
    pub fn partition(&self, ts: u64) -> Idx {
        let Some(base) = self.base_ts else {
            return self.end;
        };
        if ts < base {
            return self.first();
        }
        let rel = (ts - base).min((1 << 56) - 1);
        // Chunks are sorted by time too: find the chunk, then the slot.
        let ci = self
            .chunks
            .partition_point(|c| c.rows.first().is_some_and(|r| r.rel() <= rel));
        if ci == 0 {
            return self.first();
        }
        let c = &self.chunks[ci - 1];
        c.first + c.rows.partition_point(|r| r.rel() <= rel) as u64
    }

    /// The event at or just before `ts` (the first held one if none is).
    pub fn at(&self, ts: u64) -> Option<Idx> {
        if self.is_empty() {
            return None;
        }
        Some(self.partition(ts).saturating_sub(1).max(self.first()))
    }

    /// The held event whose time is nearest `ts`.
    pub fn nearest(&self, ts: u64) -> Option<Idx> {
        let before = self.at(ts)?;
        let after = before + 1;
        match (self.ts(before), self.ts(after)) {
            (Some(b), Some(a)) if a.abs_diff(ts) < b.abs_diff(ts) => Some(after),
            _ => Some(before),
        }
    }

    /// Held events with `t0 ≤ ts ≤ t1`.
    pub fn window(&self, t0: u64, t1: u64) -> Range<Idx> {
        let lo = if t0 == 0 {
            self.first()
        } else {
            self.partition(t0 - 1)
        };
        lo..self.partition(t1).max(lo)
    }

    /// How many events fall in each of `buckets` equal slices of
    /// `[t0, t1]`: the timeline bar.
    pub fn histogram(&self, t0: u64, t1: u64, buckets: usize) -> Vec<u64> {
        if buckets == 0 || t1 < t0 {
            return Vec::new();
        }
        let span = u128::from(t1 - t0) + 1;
        let mut out = Vec::with_capacity(buckets);
        let mut prev = self.window(t0, t0).start;
        for b in 1..=buckets {
            let edge = t0 as u128 + span * b as u128 / buckets as u128;
            let next = self.partition(u64::try_from(edge - 1).unwrap_or(u64::MAX));
            out.push(next.saturating_sub(prev));
            prev = next.max(prev);
        }
        out
    }

    pub fn matches(&self, i: Idx, f: &Filter) -> bool {
        let Some((c, o)) = self.locate(i) else {
            return false;
        };
        if f.kinds != 0 && self.kind(i).is_none_or(|k| f.kinds & kind_bit(k) == 0) {
            return false;
        }
        if let Some(t) = f.tid {
            if self.tid(i) != Some(t) {
                return false;
            }
        }
        if let Some(p) = f.pid {
            if self.pid(i) != Some(p) {
                return false;
            }
        }
        if let Some(s) = &f.stacks {
            let by_stack = self.stack(i).is_some_and(|id| s.contains(&id));
            let by_probe = self.probe(i).is_some_and(|p| f.stack_probes.contains(&p));
            if !by_stack && !by_probe {
                return false;
            }
        }
        if let Some(p) = &f.probes {
            if !self.probe(i).is_some_and(|id| p.contains(&id)) {
                return false;
            }
        }
        if let Some(a) = f.addr {
            let code = c.rows[o].code();
            let ptr = { c.rows[o].addr };
            // The block a free (or realloc) ended covers `a`: its size is
            // on the previous event at its address.
            let ended_covers = |start: u64| {
                a > start
                    && self
                        .prev_at(i, start)
                        .and_then(|p| self.block(p))
                        .is_some_and(|b| b.ptr == start && a - start < b.size)
            };
            let hit = match code {
                c if code::is_end(c) => ptr == a || ended_covers(ptr),
                c if !code::is_heap(c) => ptr == a,
                _ => {
                    let size = self.size(i).unwrap_or(0);
                    (ptr != 0 && a >= ptr && a - ptr < size.max(1))
                        || self
                            .realloc_old(i)
                            .is_some_and(|r| r.old == a || ended_covers(r.old))
                }
            };
            if !hit {
                return false;
            }
        }
        true
    }

    /// The next event after `from` (exclusive) matching `f`.
    pub fn find_next(&self, from: Idx, f: &Filter) -> Option<Idx> {
        (from.saturating_add(1).max(self.first())..self.end).find(|&i| self.matches(i, f))
    }

    /// The previous event before `from` (exclusive) matching `f`.
    pub fn find_prev(&self, from: Idx, f: &Filter) -> Option<Idx> {
        (self.first()..from.min(self.end))
            .rev()
            .find(|&i| self.matches(i, f))
    }

    /// Drops the oldest chunk; returns the new first event.
    pub fn drop_oldest(&mut self) -> Idx {
        if let Some(c) = self.chunks.pop_front() {
            self.dropped += c.len() as u64;
            let first = self.first();
            while self.others.front().is_some_and(|(i, _)| *i < first) {
                self.others.pop_front();
            }
            while self.reallocs.front().is_some_and(|r| r.idx < first) {
                self.reallocs.pop_front();
            }
            self.big_sizes.retain(|i, _| *i >= first);
            self.big_stacks.retain(|i, _| *i >= first);
            self.tid_overflow.retain(|i, _| *i >= first);
        }
        self.first()
    }

    /// Held events other than heap events (maps, signals, lifecycle).
    pub fn others(&self) -> impl DoubleEndedIterator<Item = (Idx, &EventKind)> + '_ {
        self.others.iter().map(|(i, k)| (*i, k))
    }

    /// Held chunk boundaries: the first event of each chunk.
    pub fn chunk_starts(&self) -> impl Iterator<Item = Idx> + '_ {
        self.chunks.iter().map(|c| c.first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, tid: u32, kind: EventKind) -> Event {
        Event {
            ts,
            pid: tid,
            tid,
            kind,
        }
    }

    fn alloc(ptr: u64, size: u64) -> EventKind {
        EventKind::Alloc {
            func: AllocFn::Malloc,
            ptr,
            size,
            stack: Some(7),
        }
    }

    fn free(ptr: u64) -> EventKind {
        EventKind::Free { ptr, stack: None }
    }

    #[test]
    fn events_round_trip_and_are_compact() {
        let events = vec![
            ev(100, 1, alloc(0x1000, 16)),
            ev(
                150,
                2,
                EventKind::Realloc {
                    func: AllocFn::Reallocarray,
                    old: 0x1000,
                    ptr: 0x2000,
                    size: 1 << 40,
                    stack: None,
                },
            ),
            ev(
                160,
                2,
                EventKind::Mmap {
                    addr: 0,
                    len: 4096,
                    prot: 3,
                    flags: 0x22,
                    fd: -1,
                    offset: 0,
                    ret: 0x7000_0000,
                },
            ),
            ev(170, 3, free(0x2000)),
            ev(
                180,
                1,
                EventKind::ProcessExit {
                    status: crate::event::ExitStatus::Code(0),
                },
            ),
        ];
        let mut s = EventStore::new();
        for e in &events {
            s.push(e);
        }
        for (i, e) in events.iter().enumerate() {
            assert_eq!(s.get(i as u64).as_ref(), Some(e), "event {i}");
        }
        assert_eq!(Chunk::BYTES_PER_EVENT, 29);
        assert_eq!(s.prev_at(3, 0x2000), Some(1));
        assert_eq!(s.prev_at(1, 0x1000), Some(0));
        assert_eq!(s.prev_at(0, 0x1000), None);
        assert_eq!(s.kind(2), Some(Kind::Mmap));
        assert_eq!(s.addr(2), Some(0x7000_0000));
    }

    /// Stack and probe ids past the row's 24 bits come back whole, and
    /// from the side table only for the events that need it.
    #[test]
    fn big_stack_and_probe_ids_round_trip() {
        let mut events = Vec::new();
        for (n, id) in [0, 1, 0xff_fffd, 0xff_fffe, 0xff_ffff, 0x100_0000, u32::MAX]
            .into_iter()
            .enumerate()
        {
            let n = n as u64;
            events.push(ev(
                100 + 2 * n,
                1,
                EventKind::Alloc {
                    func: AllocFn::Malloc,
                    ptr: 0x1000 + n * 0x100,
                    size: 16,
                    stack: Some(id),
                },
            ));
            events.push(ev(
                101 + 2 * n,
                1,
                EventKind::Return {
                    probe: id,
                    ret: u64::MAX - n,
                    sp: 0x7ff0_0000 + n,
                },
            ));
        }
        events.push(ev(300, 1, free(0x1000)));
        let mut s = EventStore::new();
        for e in &events {
            s.push(e);
        }
        for (i, e) in events.iter().enumerate() {
            assert_eq!(s.get(i as u64).as_ref(), Some(e), "event {i}");
        }
        assert_eq!(s.stack(events.len() as u64 - 1), None);
        assert_eq!(s.block(12).map(|b| b.stack), Some(Some(u32::MAX)));
        // 0xff_fffe and above: four allocations and four returns.
        assert_eq!(s.big_stacks.len(), 8);
    }

    #[test]
    fn time_queries() {
        let mut s = EventStore::new();
        for i in 0..(CHUNK as u64 * 2 + 10) {
            s.push(&ev(1_000 + i * 10, 1, alloc(0x10 + i * 16, 8)));
        }
        assert_eq!(s.partition(999), 0);
        assert_eq!(s.partition(1_000), 1);
        assert_eq!(s.partition(1_005), 1);
        assert_eq!(s.at(1_015), Some(1));
        assert_eq!(s.nearest(1_016), Some(2));
        let n = CHUNK as u64 + 3;
        assert_eq!(s.at(1_000 + n * 10), Some(n));
        assert_eq!(s.window(1_010, 1_030), 1..4);
        let h = s.histogram(1_000, 1_000 + 100 * 10 - 1, 10);
        assert_eq!(h, vec![10; 10]);
        let total: u64 = s.histogram(0, u64::MAX / 2, 200).iter().sum();
        assert_eq!(total, s.end());
    }

    #[test]
    fn out_of_order_stamps_keep_the_index_sorted() {
        let mut s = EventStore::new();
        s.push(&ev(100, 1, alloc(0x10, 1)));
        s.push(&ev(90, 2, alloc(0x20, 1)));
        s.push(&ev(110, 1, free(0x10)));
        assert_eq!(s.reordered, 1);
        assert_eq!(s.ts(1), Some(100));
        assert_eq!(s.window(100, 100), 0..2);
    }

    #[test]
    fn filters_find_forward_and_back() {
        let mut s = EventStore::new();
        s.push(&ev(1, 1, alloc(0x100, 32)));
        s.push(&ev(2, 2, alloc(0x200, 32)));
        s.push(&ev(3, 1, free(0x100)));
        s.push(&ev(4, 2, free(0x200)));
        let f = Filter::default().kind(Kind::Free);
        assert_eq!(s.find_next(0, &f), Some(2));
        assert_eq!(s.find_prev(3, &f), Some(2));
        let f = Filter {
            tid: Some(2),
            ..Filter::default()
        };
        assert_eq!(s.find_next(1, &f), Some(3));
        let f = Filter {
            addr: Some(0x210),
            ..Filter::default()
        };
        assert_eq!(s.find_next(0, &f), Some(1));
        let f = Filter {
            stacks: Some([7].into_iter().collect()),
            ..Filter::default()
        };
        assert_eq!(s.find_prev(4, &f), Some(1));
    }

    #[test]
    fn dropping_chunks_keeps_numbers() {
        let mut s = EventStore::new();
        for i in 0..(CHUNK as u64 + 5) {
            s.push(&ev(i, 1, alloc(0x10 + i * 16, 8)));
        }
        assert_eq!(s.drop_oldest(), CHUNK as u64);
        assert_eq!(s.get(0), None);
        assert_eq!(s.addr(CHUNK as u64), Some(0x10 + CHUNK as u64 * 16));
        assert_eq!(s.dropped, CHUNK as u64);
        assert_eq!(s.at(0), Some(CHUNK as u64));
    }
}
