//! Leak kinds in the model: the last leak scan of the target's memory
//! (see `recorder::scan`) tied to the blocks it classified, valgrind's
//! LEAK SUMMARY from it, and the heap pages the recording saw blocks in
//! (a mapping that held blocks is the allocator's, not a root).

use std::collections::BTreeSet;

use strum::EnumCount;

use crate::event::{LeakKind, LeakScan};
use crate::model::heap::HeapIndex;
use crate::model::store::{EventStore, Idx};
use crate::util::hash::FxMap;

const PAGE_SHIFT: u32 = 12;

/// Blocks and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Total {
    pub blocks: u64,
    pub bytes: u64,
}

impl Total {
    pub fn add(&mut self, bytes: u64) {
        self.blocks += 1;
        self.bytes += bytes;
    }
}

/// Totals by [`LeakKind`], indexed by its order.
pub type ByKind = [Total; LeakKind::COUNT];

/// A leak scan as the model holds it.
#[derive(Clone, Debug)]
pub struct KindsAt {
    /// The scan as recorded, without its block list.
    pub scan: LeakScan,
    /// valgrind's LEAK SUMMARY.
    pub summary: ByKind,
    /// The kind of each block the scan saw, by its allocation event.
    by_alloc: FxMap<Idx, LeakKind>,
    /// Scanned blocks the model did not know live (should be 0).
    pub unmatched: u64,
}

impl KindsAt {
    pub fn kind(&self, alloc: Idx) -> Option<LeakKind> {
        self.by_alloc.get(&alloc).copied()
    }

    /// Every scanned block: its allocation event and kind.
    pub fn blocks(&self) -> impl Iterator<Item = (Idx, LeakKind)> + '_ {
        self.by_alloc.iter().map(|(&a, &k)| (a, k))
    }

    pub fn total(&self, k: LeakKind) -> Total {
        self.summary[k as usize]
    }
}

/// Slots of [`LeakKinds::seen`].
const SEEN: usize = 4096;

#[derive(Default)]
pub struct LeakKinds {
    /// Pages where a block ever started.
    pages: BTreeSet<u64>,
    /// Pages already in `pages`, one per slot by the page's low bits
    /// (0: none): most blocks start on a page that a recent one started
    /// on, and this is cheaper than the tree's search.
    seen: Vec<u64>,
    last: Option<KindsAt>,
}

impl LeakKinds {
    /// A block was born at `ptr`.
    pub fn on_block(&mut self, ptr: u64) {
        let page = ptr >> PAGE_SHIFT;
        if self.seen.is_empty() {
            self.seen = vec![0; SEEN];
        }
        let slot = &mut self.seen[page as usize % SEEN];
        if *slot != page + 1 {
            *slot = page + 1;
            self.pages.insert(page);
        }
    }

    /// Whether a block ever started in `[start, end)`.
    pub fn held_blocks(&self, start: u64, end: u64) -> bool {
        let (a, b) = (start >> PAGE_SHIFT, end.saturating_sub(1) >> PAGE_SHIFT);
        a <= b && self.pages.range(a..=b).next().is_some()
    }

    /// Takes a scan of the blocks live now.
    pub fn add(&mut self, scan: LeakScan, heap: &HeapIndex, store: &EventStore) {
        let live: FxMap<u64, (Idx, u64)> = heap
            .now(store)
            .iter()
            .map(|b| (b.ptr, (b.alloc, b.size)))
            .collect();
        let mut summary = ByKind::default();
        let mut by_alloc = FxMap::default();
        let mut unmatched = 0;
        for b in &scan.blocks {
            summary[b.kind as usize].add(b.size);
            match live.get(&b.ptr) {
                Some(&(alloc, size)) if size == b.size => {
                    by_alloc.insert(alloc, b.kind);
                }
                _ => unmatched += 1,
            }
        }
        let scan = LeakScan {
            blocks: Vec::new(),
            ..scan
        };
        self.last = Some(KindsAt {
            scan,
            summary,
            by_alloc,
            unmatched,
        });
    }

    pub fn last(&self) -> Option<&KindsAt> {
        self.last.as_ref()
    }
}
