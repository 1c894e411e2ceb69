//! What the UI shows of the heap at any instant — the live totals, bytes
//! and blocks by allocation stack with each stack's oldest block, the
//! biggest and the oldest blocks — without reading every live block: a
//! summary per window of [`WINDOW`] events, plus a replay of at most one
//! window.
//!
//! A window's summary is sealed when the next one opens, so it knows
//! which of the blocks live at its start ended inside it: its lists of
//! the biggest and oldest blocks hold the first [`TOP`] that outlive the
//! window, and before them the ones that ended in it, each with the event
//! that ended it. A query at any instant of the window then reads those
//! lists (alive at the instant: not yet ended) and adds what the replay
//! saw born, exactly, whatever the window freed. Totals and per-stack
//! bytes are the window's start plus the replay.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, VecDeque};

use crate::event::StackId;
use crate::model::store::{EventStore, Idx, LiveBlock};
use crate::util::hash::FxMap;

/// Events per window: what a query replays at most (16,384: p99 3.3 ms
/// with a million blocks live against 5.4 ms at twice that, for about
/// 0.3 bytes an event more). At most 2^17 - 1, so an end fits a list
/// entry.
pub const WINDOW: u64 = crate::model::store::CHUNK as u64 / 4;

/// Blocks listed per order (bytes, age) that outlive each window: the
/// rows a query answers exactly however many the window frees.
#[cfg(not(test))]
pub const TOP: usize = 128;
/// Small in unit tests, so random recordings run past it.
#[cfg(test)]
pub const TOP: usize = 6;

/// The stack key of a block without a stack.
const NO_STACK: u32 = u32::MAX;

fn skey(s: Option<StackId>) -> u32 {
    s.unwrap_or(NO_STACK)
}

fn stack_of(k: u32) -> Option<StackId> {
    (k != NO_STACK).then_some(k)
}

/// The blocks table's order by bytes: biggest first, then by address.
pub type Key = (Reverse<u64>, u64);

pub fn key(b: &LiveBlock) -> Key {
    (Reverse(b.size), b.ptr)
}

/// A listed block: its allocation event (47 bits) and, in the top 17,
/// the offset in its window of the event that ended it ([`NO_END`]:
/// it outlives the window).
type Cand = u64;
const ALLOC_BITS: u32 = 47;
const ALLOC_MASK: u64 = (1 << ALLOC_BITS) - 1;
const NO_END: u64 = (1 << (64 - ALLOC_BITS)) - 1;
const _: () = assert!(WINDOW < NO_END, "a window's offsets fit a list entry");

fn cand(alloc: Idx, end: Option<Idx>, at: Idx) -> Cand {
    (alloc & ALLOC_MASK) | end.map_or(NO_END, |e| e - at) << ALLOC_BITS
}

fn cand_alloc(c: Cand) -> Idx {
    c & ALLOC_MASK
}

/// Whether the listed block is live just before event `upto`.
fn alive(c: Cand, at: Idx, upto: Idx) -> bool {
    let end = c >> ALLOC_BITS;
    end == NO_END || at + end >= upto
}

/// One stack's live blocks at a window's start.
#[derive(Clone, Copy, Debug)]
struct SiteSum {
    stack: u32,
    /// Its entries in [`Summary::oldest`] start here.
    first: u32,
    blocks: u64,
    bytes: u64,
}

/// A window: the heap at its start, and its lists.
struct Summary {
    at: Idx,
    blocks: u64,
    bytes: u64,
    sites: Box<[SiteSum]>,
    /// Per site (in `sites` order): its blocks live at `at` in age order,
    /// those that ended in the window and then the first that did not.
    oldest: Box<[Cand]>,
    lists: Lists,
}

/// A window's biggest and oldest blocks live at its start.
#[derive(Clone, Debug, Default)]
struct Lists {
    /// In age order, up to the [`TOP`]-th that outlives the window.
    old: Vec<Cand>,
    /// `old` holds every block live at the window's start.
    old_all: bool,
    /// In [`Key`] order, likewise.
    big: Vec<Cand>,
    /// Every block live at the start and not in `big` ranks after this
    /// (`None`: `big` holds them all).
    pivot: Option<Key>,
}

/// A block live at the open window's start that ended in it.
#[derive(Clone, Copy, Debug)]
struct Gone {
    alloc: Idx,
    end: Idx,
    stack: u32,
    size: u64,
    ptr: u64,
}

#[derive(Default)]
struct Site {
    blocks: u64,
    bytes: u64,
    /// Allocation events of its live blocks.
    allocs: Ages,
}

/// A stack's live blocks' allocation events in age order. Blocks are born
/// in event order, so a birth is a push at the end; an end marks its entry
/// dead (found by binary search) and the dead are dropped in bulk, when
/// they are at the front or as many as half the live ones.
#[derive(Default)]
struct Ages {
    /// `alloc << 1 | dead`, ascending.
    v: Vec<u64>,
    /// Entries before it are dead; `v[head]`, if any, is live.
    head: usize,
    /// Dead entries at or after `head`.
    dead: usize,
}

impl Ages {
    fn push(&mut self, a: Idx) {
        debug_assert!(
            self.v.last().is_none_or(|&l| l >> 1 < a),
            "born in event order"
        );
        self.v.push(a << 1);
    }

    fn remove(&mut self, a: Idx) {
        let live = &self.v[self.head..];
        let Ok(i) = live.binary_search_by_key(&a, |&e| e >> 1) else {
            debug_assert!(false, "ended a block not live at its stack");
            return;
        };
        let i = self.head + i;
        if self.v[i] & 1 != 0 {
            return;
        }
        self.v[i] |= 1;
        if i == self.head {
            self.head += 1;
            while self.v.get(self.head).is_some_and(|&e| e & 1 != 0) {
                self.head += 1;
                self.dead -= 1;
            }
        } else {
            self.dead += 1;
        }
        let len = self.v.len() - self.head - self.dead;
        if self.head + self.dead > len / 2 + 16 {
            self.compact();
        }
    }

    fn compact(&mut self) {
        let head = std::mem::take(&mut self.head);
        self.v.drain(..head);
        self.v.retain(|&e| e & 1 == 0);
        self.dead = 0;
        if self.v.capacity() > 2 * self.v.len() + 16 {
            self.v.shrink_to(self.v.len() + self.v.len() / 2 + 8);
        }
    }

    /// The oldest live block.
    fn first(&self) -> Option<Idx> {
        self.v.get(self.head).map(|&e| e >> 1)
    }

    /// The live blocks allocated before `at`, oldest first.
    fn before(&self, at: Idx) -> impl Iterator<Item = Idx> + '_ {
        self.v[self.head..]
            .iter()
            .filter(|&&e| e & 1 == 0)
            .map(|&e| e >> 1)
            .take_while(move |&a| a < at)
    }
}

/// The heap's running aggregates and the windows' summaries.
#[derive(Default)]
pub struct Tally {
    sites: FxMap<u32, Site>,
    /// Entries the sites' [`Ages`] have room for.
    ages_cap: usize,
    blocks: u64,
    bytes: u64,
    /// The live blocks whose key is at most `bound` (all when `None`), in
    /// key order; trimmed to 4 × TOP past 8 × TOP, refilled below 2 × TOP.
    big: BTreeSet<(Key, Idx)>,
    bound: Option<Key>,
    /// Live blocks per size class (bits of the size), to refill `big`.
    classes: Vec<u64>,
    /// When `big` was last refilled from every live block.
    refilled: Option<Idx>,
    /// The open window: its start and sites (sealed when the next opens).
    open: Option<(Idx, u64, u64, Vec<SiteSum>)>,
    ended: Vec<Gone>,
    summaries: VecDeque<Summary>,
}

/// The size class kept with each live block (see [`Tally::refill`]).
pub fn class(size: u64) -> u8 {
    (64 - size.leading_zeros()) as u8
}

impl Tally {
    /// A window opens at event `idx` (before it is applied): seal the
    /// previous one.
    pub fn boundary(&mut self, idx: Idx) {
        if let Some(open) = self.open.take() {
            let s = self.seal(&open);
            self.summaries.push_back(s);
        }
        let mut sites: Vec<SiteSum> = self
            .sites
            .iter()
            .filter(|(_, s)| s.blocks > 0)
            .map(|(&stack, s)| SiteSum {
                stack,
                first: 0,
                blocks: s.blocks,
                bytes: s.bytes,
            })
            .collect();
        sites.sort_unstable_by_key(|s| s.stack);
        self.open = Some((idx, self.blocks, self.bytes, sites));
        self.ended.clear();
    }

    pub fn born(&mut self, b: &LiveBlock) {
        let s = self.sites.entry(skey(b.stack)).or_default();
        s.blocks += 1;
        s.bytes = s.bytes.wrapping_add(b.size);
        let cap = s.allocs.v.capacity();
        s.allocs.push(b.alloc);
        self.ages_cap = self.ages_cap - cap + s.allocs.v.capacity();
        self.blocks += 1;
        self.bytes = self.bytes.wrapping_add(b.size);
        if self.classes.is_empty() {
            self.classes = vec![0; 65];
        }
        self.classes[usize::from(class(b.size))] += 1;
        let k = key(b);
        if self.bound.is_none_or(|bound| k <= bound) {
            self.big.insert((k, b.alloc));
            if self.big.len() > 8 * TOP {
                self.trim();
            }
        }
    }

    /// The block `b` ended at event `end`.
    pub fn ended(&mut self, b: &LiveBlock, end: Idx) {
        if let Some(s) = self.sites.get_mut(&skey(b.stack)) {
            s.blocks -= 1;
            s.bytes = s.bytes.wrapping_sub(b.size);
            let cap = s.allocs.v.capacity();
            s.allocs.remove(b.alloc);
            self.ages_cap = self.ages_cap - cap + s.allocs.v.capacity();
        }
        self.blocks -= 1;
        self.bytes = self.bytes.wrapping_sub(b.size);
        self.classes[usize::from(class(b.size))] -= 1;
        let k = key(b);
        if self.bound.is_none_or(|bound| k <= bound) {
            self.big.remove(&(k, b.alloc));
        }
        if let Some((at, ..)) = self.open {
            if b.alloc < at {
                self.ended.push(Gone {
                    alloc: b.alloc,
                    end,
                    stack: skey(b.stack),
                    size: b.size,
                    ptr: b.ptr,
                });
            }
        }
    }

    fn trim(&mut self) {
        if let Some(&(k, a)) = self.big.iter().nth(4 * TOP - 1) {
            self.big.split_off(&(k, a + 1));
            self.bound = Some(k);
        }
    }

    /// `big` ran short: whether to refill it from every live block now
    /// (not more often than once per sixteenth of the live count in
    /// events, so a program freeing its biggest blocks in turn costs a
    /// bounded amount per event; until then the lists are shorter and a
    /// deep query falls back to a full read).
    pub fn wants_refill(&self, idx: Idx) -> bool {
        self.bound.is_some()
            && self.big.len() < 2 * TOP
            && self.refilled.is_none_or(|r| idx - r >= self.blocks / 16)
    }

    /// Size classes whose blocks, with all bigger ones, are enough to
    /// refill `big`: the smallest class to read.
    pub fn refill_class(&self) -> u8 {
        let want = 6 * TOP as u64;
        let mut n = 0;
        for c in (0..self.classes.len()).rev() {
            n += self.classes[c];
            if n >= want {
                return c as u8;
            }
        }
        0
    }

    /// Rebuilds `big` from `blocks`: every live block of class ≥
    /// [`Self::refill_class`] (which holds every block now in `big`).
    pub fn refill(&mut self, idx: Idx, blocks: Vec<LiveBlock>) {
        self.refilled = Some(idx);
        let all = blocks.len() as u64 == self.blocks;
        self.big = blocks.iter().map(|b| (key(b), b.alloc)).collect();
        self.bound = if all {
            None
        } else {
            // Everything of a smaller class ranks after these.
            self.big.last().map(|&(k, _)| k)
        };
        if self.big.len() > 8 * TOP {
            self.trim();
        }
    }

    /// The retention budget dropped the events before `first`: so go the
    /// summaries of windows that start before it.
    pub fn before(&mut self, first: Idx) {
        while self.summaries.front().is_some_and(|s| s.at < first) {
            self.summaries.pop_front();
        }
    }

    pub fn bytes(&self) -> usize {
        #[cfg(test)]
        assert_eq!(
            self.ages_cap,
            self.sites
                .values()
                .map(|s| s.allocs.v.capacity())
                .sum::<usize>(),
            "the ages' room as counted"
        );
        let lists = |l: &Lists| (l.old.capacity() + l.big.capacity()) * 8 + 48;
        self.summaries
            .iter()
            .map(|s| {
                64 + s.sites.len() * std::mem::size_of::<SiteSum>()
                    + s.oldest.len() * 8
                    + lists(&s.lists)
            })
            .sum::<usize>()
            + self.sites.capacity() * 64
            + self.ages_cap * 8
            + self.big.len() * 40
            + self.ended.capacity() * std::mem::size_of::<Gone>()
    }

    /// The summary of the open window as if sealed now: the ended blocks
    /// are those ended so far, the survivors those live now.
    fn seal(&self, open: &(Idx, u64, u64, Vec<SiteSum>)) -> Summary {
        let (at, blocks, bytes, ref start) = *open;
        // Each site's oldest: those that ended before its first survivor.
        let first_live = |stack: u32| {
            self.sites
                .get(&stack)
                .and_then(|s| s.allocs.first())
                .filter(|&a| a < at)
        };
        let mut gone: Vec<&Gone> = self
            .ended
            .iter()
            .filter(|g| first_live(g.stack).is_none_or(|a| g.alloc < a))
            .collect();
        gone.sort_unstable_by_key(|g| (g.stack, g.alloc));
        let mut sites = Vec::with_capacity(start.len());
        let mut oldest = Vec::with_capacity(start.len());
        for s in start {
            let lo = gone.partition_point(|g| g.stack < s.stack);
            let hi = gone.partition_point(|g| g.stack <= s.stack);
            sites.push(SiteSum {
                first: oldest.len() as u32,
                ..*s
            });
            oldest.extend(gone[lo..hi].iter().map(|g| cand(g.alloc, Some(g.end), at)));
            if let Some(a) = first_live(s.stack) {
                oldest.push(cand(a, None, at));
            }
        }

        // The oldest overall: the sites' survivors merged.
        let mut iters: Vec<_> = start
            .iter()
            .filter_map(|s| self.sites.get(&s.stack))
            .map(|s| s.allocs.before(at))
            .collect();
        let mut heap: BinaryHeap<Reverse<(Idx, usize)>> = BinaryHeap::new();
        for (n, it) in iters.iter_mut().enumerate() {
            if let Some(a) = it.next() {
                heap.push(Reverse((a, n)));
            }
        }
        let mut survivors = Vec::with_capacity(TOP);
        while survivors.len() < TOP {
            let Some(Reverse((a, n))) = heap.pop() else {
                break;
            };
            survivors.push(a);
            if let Some(next) = iters[n].next() {
                heap.push(Reverse((next, n)));
            }
        }
        let old_all = survivors.len() < TOP;
        let last = if old_all {
            Idx::MAX
        } else {
            survivors[TOP - 1]
        };
        let mut old: Vec<Cand> = self
            .ended
            .iter()
            .filter(|g| g.alloc < last)
            .map(|g| cand(g.alloc, Some(g.end), at))
            .chain(survivors.iter().map(|&a| cand(a, None, at)))
            .collect();
        old.sort_unstable_by_key(|&c| cand_alloc(c));

        // The biggest: `big`'s survivors, and the ended ones up to them.
        let survivors: Vec<(Key, Idx)> = self
            .big
            .iter()
            .filter(|(_, a)| *a < at)
            .take(TOP)
            .copied()
            .collect();
        // Blocks of the start still live: all listed, when as many.
        let outlived = blocks - self.ended.len() as u64;
        let pivot = if survivors.len() as u64 == outlived {
            None
        } else if survivors.len() == TOP {
            Some(survivors[TOP - 1].0)
        } else {
            self.bound
        };
        let mut big: Vec<(Key, Cand)> = self
            .ended
            .iter()
            .map(|g| ((Reverse(g.size), g.ptr), g))
            .filter(|(k, _)| pivot.is_none_or(|p| *k <= p))
            .map(|(k, g)| (k, cand(g.alloc, Some(g.end), at)))
            .chain(survivors.iter().map(|&(k, a)| (k, cand(a, None, at))))
            .collect();
        big.sort_unstable_by_key(|(k, _)| *k);
        // Exact sizes: a window's lists are kept for as long as it is (the
        // in-place collect below keeps the 24-byte pairs' buffer).
        old.shrink_to_fit();
        let mut big: Vec<Cand> = big.into_iter().map(|(_, c)| c).collect();
        big.shrink_to_fit();
        Summary {
            at,
            blocks,
            bytes,
            sites: sites.into_boxed_slice(),
            oldest: oldest.into_boxed_slice(),
            lists: Lists {
                old,
                old_all,
                big,
                pivot,
            },
        }
    }
}

/// One allocation stack's live blocks at an instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SiteAt {
    pub stack: Option<StackId>,
    pub blocks: u64,
    pub bytes: u64,
    /// Its oldest live block.
    pub oldest: LiveBlock,
}

/// The heap just before event `upto`, as the UI shows it; the biggest
/// and oldest blocks on request ([`HeapAt::top`]).
#[derive(Clone, Debug)]
pub struct HeapAt {
    pub upto: Idx,
    pub blocks: u64,
    pub bytes: u64,
    /// By allocation stack (not merged into sites), in stack order.
    pub sites: Vec<SiteAt>,
    at: Idx,
    lists: Lists,
    /// Born in the replayed part of the window and live at `upto`, in
    /// age order.
    born: Vec<LiveBlock>,
}

/// The orders [`HeapAt::top`] answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Order {
    /// Biggest first, then by address ([`Key`]).
    Bytes,
    /// Oldest first (allocation order).
    Age,
}

impl Order {
    pub fn name(self) -> &'static str {
        match self {
            Order::Bytes => "bytes",
            Order::Age => "age",
        }
    }
}

impl HeapAt {
    /// The first `n` live blocks in `order`, or `None` when the summary
    /// cannot tell them without reading every live block (past the first
    /// [`TOP`] or so; the caller reads the whole heap).
    pub fn top(
        &self,
        heap: &crate::model::heap::HeapIndex,
        store: &EventStore,
        order: Order,
        n: usize,
    ) -> Option<Vec<LiveBlock>> {
        let (list, all) = match order {
            Order::Bytes => (&self.lists.big, self.lists.pivot.is_none()),
            Order::Age => (&self.lists.old, self.lists.old_all),
        };
        let idx: Vec<Idx> = list
            .iter()
            .filter(|&&c| alive(c, self.at, self.upto))
            .map(|&c| cand_alloc(c))
            .collect();
        let mut v = heap.blocks_of(store, &idx);
        match order {
            Order::Bytes => {
                v.extend(self.born.iter().copied());
                v.sort_unstable_by_key(key);
                // Unlisted blocks rank after the pivot: what ranks before
                // it is exact.
                if let Some(p) = self.lists.pivot {
                    v.truncate(v.partition_point(|b| key(b) <= p));
                }
            }
            Order::Age => {
                v.sort_unstable_by_key(|b| b.alloc);
                // Born blocks are younger than every block of the start.
                if all {
                    v.extend(self.born.iter().copied());
                }
            }
        }
        if v.len() < n && !all {
            return None;
        }
        v.truncate(n);
        Some(v)
    }
}

impl crate::model::heap::HeapIndex {
    /// What the UI shows of the heap just before event `upto` (after the
    /// events before it), or `None` before the held recording.
    pub fn view_at(&self, store: &EventStore, upto: Idx) -> Option<HeapAt> {
        let upto = upto.min(store.end());
        let t = &self.tally;
        let si = t.summaries.partition_point(|s| s.at <= upto);
        let open = t.open.as_ref().filter(|o| o.0 <= upto);
        let sealed;
        let s = match (open, si.checked_sub(1)) {
            (Some(o), _) => {
                sealed = t.seal(o);
                &sealed
            }
            (None, Some(i)) => &t.summaries[i],
            (None, None) => return None,
        };
        if upto < store.first() {
            return None;
        }
        // The final state of every address the replay touches, and the
        // blocks of the window's start it ended.
        let mut delta: FxMap<u64, Option<Idx>> = FxMap::with_capacity_and_hasher(
            usize::try_from(upto - s.at).unwrap_or(0),
            Default::default(),
        );
        let mut gone: Vec<Idx> = Vec::new();
        store.heap_ops(s.at..upto, |i, op| {
            for (addr, state) in [(op.ends(), None), (op.starts(), Some(i))] {
                let Some(addr) = addr else { continue };
                if let std::collections::hash_map::Entry::Vacant(v) = delta.entry(addr) {
                    if let Some(a) = self.live_start_before(store, i, addr) {
                        if a < s.at {
                            gone.push(a);
                        }
                    }
                    v.insert(state);
                } else {
                    delta.insert(addr, state);
                }
            }
        });
        let mut born: Vec<Idx> = delta.values().flatten().copied().collect();
        born.sort_unstable();
        let born = self.blocks_of(store, &born);
        let gone = self.blocks_of(store, &gone);
        let mut blocks = s.blocks;
        let mut bytes = s.bytes;
        let mut by_site: FxMap<u32, (i64, i64, Option<LiveBlock>)> = FxMap::default();
        for b in &gone {
            blocks -= 1;
            bytes = bytes.wrapping_sub(b.size);
            let e = by_site.entry(skey(b.stack)).or_default();
            e.0 -= 1;
            e.1 -= b.size as i64;
        }
        for b in &born {
            blocks += 1;
            bytes = bytes.wrapping_add(b.size);
            let e = by_site.entry(skey(b.stack)).or_default();
            e.0 += 1;
            e.1 += b.size as i64;
            // Age order: the first born is the site's oldest born.
            e.2.get_or_insert(*b);
        }
        // Each site's oldest: its first listed block alive at `upto`, else
        // its oldest born.
        let mut sites = Vec::with_capacity(s.sites.len() + by_site.len());
        let mut want: Vec<Idx> = Vec::new();
        let ends = s.sites.iter().skip(1).map(|x| x.first as usize);
        for (x, end) in s.sites.iter().zip(ends.chain([s.oldest.len()])) {
            let d = by_site.remove(&x.stack).unwrap_or_default();
            let n = (x.blocks as i64 + d.0) as u64;
            if n == 0 {
                continue;
            }
            let first = s.oldest[x.first as usize..end]
                .iter()
                .find(|&&c| alive(c, s.at, upto))
                .map(|&c| cand_alloc(c));
            if let Some(a) = first {
                want.push(a);
            }
            sites.push((x.stack, n, (x.bytes as i64 + d.1) as u64, first, d.2));
        }
        for (stack, d) in by_site {
            if d.0 > 0 {
                sites.push((stack, d.0 as u64, d.1 as u64, None, d.2));
            }
        }
        want.sort_unstable();
        let firsts: FxMap<Idx, LiveBlock> = self
            .blocks_of(store, &want)
            .into_iter()
            .map(|b| (b.alloc, b))
            .collect();
        let mut sites: Vec<SiteAt> = sites
            .into_iter()
            .filter_map(|(stack, blocks, bytes, first, born)| {
                let oldest = first.and_then(|a| firsts.get(&a).copied()).or(born)?;
                Some(SiteAt {
                    stack: stack_of(stack),
                    blocks,
                    bytes,
                    oldest,
                })
            })
            .collect();
        sites.sort_unstable_by_key(|s| skey(s.stack));
        Some(HeapAt {
            upto,
            blocks,
            bytes,
            sites,
            at: s.at,
            lists: s.lists.clone(),
            born,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::xorshift::Rng;

    /// A stack's ages after many births and ends in any order: its oldest
    /// and its blocks before any instant are those of an ordered set.
    #[test]
    fn ages_after_many_ends_equal_an_ordered_set() {
        for seed in 1..=20u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut ages = Ages::default();
            let mut set = BTreeSet::new();
            let mut next: Idx = 0;
            for step in 0..20_000 {
                // Phases that grow, shrink from the front, or churn.
                let grow = match (step / 2000) % 3 {
                    0 => rng.below(10) < 7,
                    1 => rng.below(10) < 3,
                    _ => rng.below(2) == 0,
                };
                if grow || set.is_empty() {
                    next += 1 + rng.below(5);
                    ages.push(next);
                    set.insert(next);
                } else {
                    let v: Vec<Idx> = set.iter().copied().collect();
                    // Often the oldest, else any.
                    let a = if rng.below(3) == 0 {
                        v[0]
                    } else {
                        v[rng.below(v.len() as u64) as usize]
                    };
                    ages.remove(a);
                    set.remove(&a);
                }
                assert_eq!(
                    ages.first(),
                    set.first().copied(),
                    "seed {seed} step {step}"
                );
                let dead = ages.v.iter().filter(|&&e| e & 1 != 0).count();
                assert_eq!(ages.dead + ages.head, dead, "seed {seed} step {step}");
                assert!(
                    ages.v.len() <= 2 * set.len() + 20,
                    "seed {seed} step {step}: {} entries for {} blocks",
                    ages.v.len(),
                    set.len()
                );
                if step % 97 == 0 {
                    let at = rng.below(next + 2);
                    let got: Vec<Idx> = ages.before(at).collect();
                    let want: Vec<Idx> = set.range(..at).copied().collect();
                    assert_eq!(got, want, "seed {seed} step {step} before {at}");
                }
            }
        }
    }
}
