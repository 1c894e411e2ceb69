//! Live leak analysis: outstanding blocks grouped by allocation stack,
//! with growth over a sliding window; a group whose outstanding bytes only
//! grew over the window is a suspected leak. Kept exact whatever the
//! retention budget drops.

use std::collections::VecDeque;

use crate::event::LeakKind;
use crate::event::StackId;
use crate::model::heap::{Change, HeapIndex};
use crate::model::leakkinds::{ByKind, KindsAt};
use crate::model::site_in;
use crate::model::store::EventStore;
use crate::util::hash::FxMap;

/// The sliding window growth and suspicion are judged over.
pub const DEFAULT_WINDOW_NS: u64 = 10_000_000_000;
/// Growth is sampled per group at this granularity.
const SLOT_NS: u64 = 100_000_000;
/// A suspected leak needs at least this many allocations in the window,
/// none freed.
const MIN_SUSPECT_ALLOCS: u64 = 3;

#[derive(Clone, Copy, Debug)]
struct Sample {
    slot_ts: u64,
    bytes: u64,
    allocs: u64,
}

#[derive(Clone, Debug, Default)]
struct Group {
    blocks: u64,
    bytes: u64,
    allocs: u64,
    frees: u64,
    last_free_ts: Option<u64>,
    samples: VecDeque<Sample>,
}

impl Group {
    fn sample(&mut self, ts: u64, window_ns: u64) {
        let slot_ts = ts - ts % SLOT_NS;
        let s = Sample {
            slot_ts,
            bytes: self.bytes,
            allocs: self.allocs,
        };
        match self.samples.back_mut() {
            Some(b) if b.slot_ts == slot_ts => *b = s,
            _ => self.samples.push_back(s),
        }
        // Keep one sample older than the window: the reference point.
        while self.samples.len() > 2 && self.samples[1].slot_ts + window_ns + SLOT_NS < slot_ts {
            self.samples.pop_front();
        }
    }

    /// (bytes, allocs) as of the end of the last slot before `t`.
    fn as_of(&self, t: u64) -> (u64, u64) {
        self.samples
            .iter()
            .rev()
            .find(|s| s.slot_ts + SLOT_NS <= t)
            .map_or((0, 0), |s| (s.bytes, s.allocs))
    }
}

/// One allocation site's outstanding blocks (`stack`: the first stack
/// seen of the site).
#[derive(Clone, Debug, PartialEq)]
pub struct LeakGroup {
    pub stack: Option<StackId>,
    pub blocks: u64,
    pub bytes: u64,
    /// Allocation time of the oldest outstanding block.
    pub oldest_ts: u64,
    pub allocs: u64,
    pub frees: u64,
    /// Change of outstanding bytes per second over the window.
    pub growth_bytes_per_s: f64,
    /// Outstanding bytes only grew over the window (≥ 3 allocations,
    /// no free).
    pub suspected: bool,
    /// Its blocks by the kind the last leak scan gave them (blocks born
    /// since are in none).
    pub by_kind: ByKind,
}

impl LeakGroup {
    /// The worst kind among its blocks, if a scan saw any of them.
    pub fn kind(&self) -> Option<LeakKind> {
        use strum::IntoEnumIterator;
        LeakKind::iter().find(|k| self.by_kind[*k as usize].blocks > 0)
    }
}

pub struct Leaks {
    groups: FxMap<Option<StackId>, Group>,
    pub window_ns: u64,
    start_ts: Option<u64>,
    now: u64,
}

impl Default for Leaks {
    fn default() -> Self {
        Leaks {
            groups: FxMap::default(),
            window_ns: DEFAULT_WINDOW_NS,
            start_ts: None,
            now: 0,
        }
    }
}

impl Leaks {
    /// Account a heap change; groups are by site (`sites`, see
    /// [`crate::model::site_in`]).
    pub fn on_change(&mut self, ch: &Change, ts: u64, sites: &[StackId]) {
        self.start_ts.get_or_insert(ts);
        self.now = self.now.max(ts);
        let w = self.window_ns;
        for e in ch.ended.iter().flatten() {
            if let Some(g) = self.groups.get_mut(&site_in(sites, e.block.stack)) {
                g.blocks = g.blocks.saturating_sub(1);
                g.bytes = g.bytes.saturating_sub(e.block.size);
                g.frees += 1;
                g.last_free_ts = Some(ts);
                g.sample(ts, w);
            }
        }
        if let Some(b) = ch.born {
            let g = self.groups.entry(site_in(sites, b.stack)).or_default();
            g.blocks += 1;
            g.bytes = g.bytes.wrapping_add(b.size);
            g.allocs += 1;
            g.sample(ts, w);
        }
    }

    /// A block live before the held window (a bounded recording's start):
    /// outstanding, sampled at its allocation time, but not an allocation
    /// the window made, and not where the window starts (growth and
    /// suspicion are judged over the events held).
    pub fn on_carry(&mut self, ch: &Change, ts: u64, sites: &[StackId]) {
        let w = self.window_ns;
        if let Some(b) = ch.born {
            let g = self.groups.entry(site_in(sites, b.stack)).or_default();
            g.blocks += 1;
            g.bytes = g.bytes.wrapping_add(b.size);
            g.sample(ts, w);
        }
    }

    /// Groups with outstanding blocks, most bytes first, as of the latest
    /// event (or tick).
    pub fn groups(
        &self,
        heap: &HeapIndex,
        store: &EventStore,
        sites: &[StackId],
        kinds: Option<&KindsAt>,
    ) -> Vec<LeakGroup> {
        let mut oldest: FxMap<Option<StackId>, (u64, ByKind)> = FxMap::default();
        for b in heap.now(store) {
            let o = oldest
                .entry(site_in(sites, b.stack))
                .or_insert((b.ts, ByKind::default()));
            o.0 = o.0.min(b.ts);
            if let Some(k) = kinds.and_then(|k| k.kind(b.alloc)) {
                o.1[k as usize].add(b.size);
            }
        }
        let now = self.now;
        let from = now
            .saturating_sub(self.window_ns)
            .max(self.start_ts.unwrap_or(now));
        let span_s = (now - from) as f64 / 1e9;
        let mut out: Vec<LeakGroup> = self
            .groups
            .iter()
            .filter(|(_, g)| g.blocks > 0)
            .map(|(stack, g)| {
                let (bytes0, allocs0) = g.as_of(from);
                let growth = if span_s > 1e-3 {
                    (g.bytes as f64 - bytes0 as f64) / span_s
                } else {
                    0.0
                };
                let freed_in_window = g.last_free_ts.is_some_and(|t| t >= from);
                LeakGroup {
                    stack: *stack,
                    blocks: g.blocks,
                    bytes: g.bytes,
                    oldest_ts: oldest.get(stack).map_or(now, |o| o.0),
                    allocs: g.allocs,
                    frees: g.frees,
                    growth_bytes_per_s: growth,
                    suspected: !freed_in_window
                        && g.allocs - allocs0 >= MIN_SUSPECT_ALLOCS
                        && g.bytes > bytes0,
                    by_kind: oldest.get(stack).map_or_else(ByKind::default, |o| o.1),
                }
            })
            .collect();
        out.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.stack.cmp(&b.stack)));
        out
    }
}
