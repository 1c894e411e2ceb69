//! The UI's state: the timeline it shows, the cursor, the panes, and what
//! each key does. No terminal code: tests drive it with keys directly.

use std::cell::Cell;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::event::StackId;
use crate::model::diagnose::Diagnosis;
use crate::model::spans::Outcome;
use crate::model::store::LiveBlock;
use crate::model::store::{Filter, HeapOp, Idx};
use crate::model::summary::{HeapAt, Order};
use crate::model::Timeline;

/// A saved recording still being read (`open`): events so far and the
/// share of the file read (none when its size is unknown: stdin).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Loading {
    pub events: u64,
    pub fraction: Option<f64>,
}

/// Whether the view follows new events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Recording, the cursor on the newest event.
    Live,
    /// Recording, the cursor held by the user (or by a crash).
    Frozen,
    /// A saved recording.
    Replay,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pane {
    Events,
    Heap,
    Stack,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapView {
    /// One row per live block.
    Blocks,
    /// One row per allocation site (stack).
    Sites,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum SortBy {
    Bytes,
    Count,
    Age,
    Growth,
}

impl SortBy {
    pub fn name(self) -> &'static str {
        self.into()
    }

    /// The next order, round the list.
    fn next(self) -> SortBy {
        use strum::IntoEnumIterator;
        SortBy::iter()
            .cycle()
            .skip_while(|s| *s != self)
            .nth(1)
            .unwrap_or(self)
    }
}

/// A row of the heap table grouped by allocation site.
#[derive(Clone, Debug, PartialEq)]
pub struct SiteRow {
    pub stack: Option<StackId>,
    pub blocks: u64,
    pub bytes: u64,
    pub oldest_ts: u64,
    /// The allocation event of its oldest live block.
    pub oldest: Idx,
    /// From the live leak analysis (as of the newest event).
    pub growth: f64,
    pub suspected: bool,
    /// The worst kind the last leak scan gave its blocks.
    pub kind: Option<crate::event::LeakKind>,
}

impl SiteRow {
    /// The flag before its site: how the leak scan found its blocks
    /// (valgrind's words, shortened), else `LEAK? ` when it only grew.
    pub fn flag(&self) -> &'static str {
        use crate::event::LeakKind;
        match self.kind {
            Some(LeakKind::DefinitelyLost) => "LOST ",
            Some(LeakKind::IndirectlyLost) => "LOST(ind) ",
            Some(LeakKind::PossiblyLost) => "LOST? ",
            _ if self.suspected => "LEAK? ",
            _ => "",
        }
    }
}

pub struct App {
    pub tl: Timeline,
    pub mode: Mode,
    /// The selected event; `None` while nothing is recorded.
    pub cursor: Option<Idx>,
    pub pane: Pane,
    pub heap_view: HeapView,
    pub sort: SortBy,
    /// Selected row of the heap table.
    pub heap_sel: usize,
    /// Lines scrolled in the stack / diagnosis pane.
    pub stack_scroll: u16,
    /// Half the time range of the timeline bar, when zoomed; the range
    /// is centred on the cursor (shifted to stay inside the recording).
    pub zoom: Option<u64>,
    pub filter: Option<(String, Filter)>,
    /// Matches of the filter counted so far: (first event counted, next
    /// event to count, count). Counted a slice at a time between frames.
    pub matches: Option<(Idx, Idx, u64)>,
    /// The filter being typed after `/`.
    pub input: Option<String>,
    pub help: bool,
    /// A one-line notice (errors of the last key, "no crash", …).
    pub message: Option<String>,
    pub quit: bool,
    /// `L` asked for a leak scan (the live loop hands it to its feed).
    pub leak_scan: bool,
    /// Events per second, measured by the live loop.
    pub rate: f64,
    /// How far the live view is behind the recording.
    pub lag: crate::ui::Lag,
    /// A saved recording still being read.
    pub loading: Option<Loading>,
    /// `open --at`: the view follows the reading up to this time (an
    /// event's), then holds there.
    pub stop_at: Option<u64>,
    /// The reading started at the trace's part before `stop_at`.
    pub stop_from_part: bool,
    /// The reading stopped before the recording's end (past `stop_at`):
    /// the heap "at end" is where it stopped.
    pub read_stopped: bool,
    /// The target is gone (live mode): nothing more will arrive.
    pub ended: bool,
    /// Rows the event list showed last time (a "screen" for PgUp/PgDn).
    pub page: Cell<usize>,
    /// How far the stack / diagnosis pane scrolls (its lines past the
    /// pane's height, as last drawn).
    pub stack_max: Cell<u16>,
    /// The heap as of the cursor (totals, per stack), recomputed when the
    /// cursor moves.
    view: Option<HeapAt>,
    /// The first rows of the blocks table in its order, as many as it
    /// shows (the summaries answer these without reading every block).
    rows: Vec<LiveBlock>,
    /// `rows` holds every live block: read whole, past the summaries'
    /// lists (the title says so).
    rows_full: bool,
    rows_for: Option<(Idx, Order)>,
    /// Rows the heap table showed last time.
    pub heap_page: Cell<usize>,
    sites: Vec<SiteRow>,
    blocks_at: Option<Idx>,
    /// The last leak scan's blocks (site, allocation, end, kind), as of
    /// `.0` events.
    scanned: (Idx, Vec<Scanned>),
    diagnosis: Option<(Idx, Option<Diagnosis>)>,
    /// The watchpoints' findings (first access of each), as of `.0`
    /// watch hits.
    findings: (usize, Vec<Idx>),
    /// Live: the recorder's watchpoints (slots armed so far).
    pub watcher: Option<crate::recorder::watch::WatchCell>,
    /// Growth and suspicion per allocation stack, as of `.0` events.
    leaks: (Idx, crate::util::hash::FxMap<Option<StackId>, SiteLeak>),
}

/// A scanned block: its site, allocation, end and leak kind.
type Scanned = (Option<StackId>, Idx, Idx, crate::event::LeakKind);

/// A site's growth, suspicion and leak-scan kind.
type SiteLeak = (f64, bool, Option<crate::event::LeakKind>);

/// Nice time steps for `[` / `]`: the largest not above a tenth of the
/// visible span.
const STEPS: [u64; 10] = [
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
    10_000_000_000,
    60_000_000_000,
    600_000_000_000,
];

impl App {
    pub fn new(tl: Timeline, mode: Mode) -> Self {
        let mut app = App {
            tl,
            mode,
            cursor: None,
            pane: Pane::Events,
            heap_view: HeapView::Blocks,
            sort: SortBy::Bytes,
            heap_sel: 0,
            stack_scroll: 0,
            zoom: None,
            filter: None,
            matches: None,
            input: None,
            help: false,
            message: None,
            quit: false,
            leak_scan: false,
            rate: 0.0,
            lag: crate::ui::Lag::default(),
            loading: None,
            stop_at: None,
            stop_from_part: false,
            read_stopped: false,
            ended: false,
            page: Cell::new(10),
            stack_max: Cell::new(u16::MAX),
            view: None,
            rows: Vec::new(),
            rows_full: false,
            rows_for: None,
            heap_page: Cell::new(40),
            sites: Vec::new(),
            blocks_at: None,
            scanned: (Idx::MAX, Vec::new()),
            diagnosis: None,
            findings: (0, Vec::new()),
            watcher: None,
            leaks: (Idx::MAX, Default::default()),
        };
        app.after_ingest();
        if let (Mode::Replay, Some(c)) = (mode, app.tl.crash()) {
            app.cursor = Some(c);
            app.pane = Pane::Stack;
        }
        app.refresh();
        app
    }

    /// Call after new events reached the timeline: follow them when live,
    /// freeze on a crash.
    pub fn after_ingest(&mut self) {
        let before = self.findings.1.len();
        let now = self.findings().len();
        if now > before {
            self.message = Some(format!(
                "watchpoints caught {now} bug(s) the program survived: w to see"
            ));
        }
        let held = self.tl.store().held();
        if held.is_empty() {
            return;
        }
        let last = held.end - 1;
        if let (Some(t), true) = (self.stop_at, self.mode == Mode::Live) {
            let passed = self.tl.store().ts(last).is_some_and(|l| l > t);
            if passed || self.tl.crash().is_some() {
                self.stop_at = None;
            }
            if passed
                && self
                    .tl
                    .crash()
                    .is_none_or(|c| self.tl.store().ts(c) > Some(t))
            {
                self.mode = Mode::Frozen;
                self.cursor = self.tl.store().at(t);
                self.message = Some(format!(
                    "at {} (--at), read from {}; → and End go on",
                    crate::model::present::rel(t, self.tl.meta().start_mono_ns),
                    if self.stop_from_part {
                        "the trace's part before it"
                    } else {
                        "the start"
                    }
                ));
            }
        }
        if let (Some(c), true) = (self.tl.crash(), self.mode == Mode::Live) {
            self.mode = Mode::Frozen;
            self.cursor = Some(c);
            self.pane = Pane::Stack;
            self.message = Some("crashed: frozen at the crash; scrub back with ←".into());
        }
        match (self.mode, self.cursor) {
            (Mode::Live, _) | (_, None) => self.cursor = Some(last),
            (_, Some(c)) if c < held.start => self.cursor = Some(held.start),
            _ => {}
        }
        if self.mode == Mode::Live {
            self.blocks_at = None;
        }
    }

    /// Recompute what depends on the cursor.
    pub fn refresh(&mut self) {
        let Some(c) = self.cursor else {
            return;
        };
        if self.blocks_at != Some(c) {
            self.at_cursor(c);
        }
        self.fill_rows();
    }

    fn at_cursor(&mut self, c: Idx) {
        self.view = self.tl.heap().view_at(self.tl.store(), c + 1);
        self.blocks_at = Some(c);
        self.rows_for = None;
        // Leak analysis is as of the newest event: recomputed only when
        // events arrived, not on every cursor move.
        let end = self.tl.store().end();
        if self.leaks.0 != end {
            self.leaks = (
                end,
                self.tl
                    .leak_groups()
                    .into_iter()
                    .map(|g| (g.stack, (g.growth_bytes_per_s, g.suspected, g.kind())))
                    .collect(),
            );
        }
        if self.scanned.0 != end {
            self.scanned = (end, self.scanned_blocks());
        }
        let leaks = &self.leaks.1;
        let at_cursor = self.site_leaks_at(c);
        let mut sites: crate::util::hash::FxMap<Option<StackId>, SiteRow> = Default::default();
        for s in self.view.iter().flat_map(|v| &v.sites) {
            let site = self.tl.site_of(s.stack);
            let (growth, suspected, kind) = match &at_cursor {
                None => leaks.get(&site).copied().unwrap_or((0.0, false, None)),
                Some(m) => m.get(&site).copied().unwrap_or((0.0, false, None)),
            };
            let r = sites.entry(site).or_insert(SiteRow {
                stack: site,
                blocks: 0,
                bytes: 0,
                oldest_ts: s.oldest.ts,
                oldest: s.oldest.alloc,
                growth,
                suspected,
                kind,
            });
            r.blocks += s.blocks;
            r.bytes += s.bytes;
            if s.oldest.alloc < r.oldest {
                (r.oldest, r.oldest_ts) = (s.oldest.alloc, s.oldest.ts);
            }
        }
        self.sites = sites.into_values().collect();
        self.sort_heap();
        if self.tl.crash() == Some(c) && self.diagnosis.as_ref().is_none_or(|(i, _)| *i != c) {
            self.diagnosis = Some((c, self.tl.diagnosis()));
        }
        // On a watchpoint's hit: its finding, if it is one.
        if self.diagnosis.as_ref().is_none_or(|(i, _)| *i != c)
            && self.tl.store().kind(c) == Some(crate::event::Kind::Watch)
        {
            self.diagnosis = Some((c, self.tl.diagnosis_at(c)));
        }
    }

    /// The order of the blocks table: by age, else by bytes (a block's
    /// count is 1 and its growth none).
    pub fn block_order(&self) -> Order {
        match self.sort {
            SortBy::Age => Order::Age,
            _ => Order::Bytes,
        }
    }

    /// The blocks table's rows down to the selection and a screen more,
    /// from the summaries; past their lists, every live block read.
    fn fill_rows(&mut self) {
        let (Some(c), Some(v)) = (self.cursor, self.view.as_ref()) else {
            self.rows.clear();
            return;
        };
        let order = self.block_order();
        let want = (self.heap_sel + 1).max(self.heap_page.get());
        if self.rows_for == Some((c, order))
            && (self.rows_full || self.rows.len() >= want.min(v.blocks as usize))
        {
            return;
        }
        let (heap, store) = (self.tl.heap(), self.tl.store());
        // A screen ahead when the lists reach that far.
        let top = v
            .top(heap, store, order, 2 * want)
            .or_else(|| v.top(heap, store, order, want));
        match top {
            Some(rows) => {
                self.rows = rows;
                self.rows_full = false;
            }
            None => {
                let mut all = self.tl.heap_after(c).unwrap_or_default();
                match order {
                    Order::Bytes => all.sort_unstable_by_key(crate::model::summary::key),
                    Order::Age => all.sort_unstable_by_key(|b| b.alloc),
                }
                self.rows = all;
                self.rows_full = true;
            }
        }
        self.rows_for = Some((c, order));
    }

    /// The last leak scan's blocks with their site and end (the scan saw
    /// them live, so each is live from its allocation to its end).
    fn scanned_blocks(&self) -> Vec<Scanned> {
        let Some(k) = self.tl.leak_scan() else {
            return Vec::new();
        };
        k.blocks()
            .filter_map(|(a, kind)| {
                let b = self.tl.heap().block(self.tl.store(), a)?;
                let end = self.tl.end_of(a).unwrap_or(Idx::MAX);
                Some((self.tl.site_of(b.stack), a, end, kind))
            })
            .collect()
    }

    /// Growth and leak kind per site as of the cursor `c`, when it is
    /// not on the newest event (there the live analysis answers): the net
    /// change of each site's live bytes over the window before the cursor,
    /// and the worst kind the leak scan gave the blocks live at the cursor.
    /// No site is suspected back in time: suspicion needs every free of
    /// the window, which two heaps do not tell.
    fn site_leaks_at(&self, c: Idx) -> Option<crate::util::hash::FxMap<Option<StackId>, SiteLeak>> {
        let store = self.tl.store();
        if c + 1 >= store.end() {
            return None;
        }
        let tc = store.ts(c)?;
        let (first, _) = self.tl.span()?;
        let t0 = tc.saturating_sub(self.tl.leaks().window_ns).max(first);
        let before = self.tl.heap().view_at(store, store.partition(t0));
        let mut out: crate::util::hash::FxMap<Option<StackId>, SiteLeak> = Default::default();
        let span_s = (tc - t0) as f64 / 1e9;
        let mut old: crate::util::hash::FxMap<Option<StackId>, u64> = Default::default();
        for s in before.iter().flat_map(|v| &v.sites) {
            *old.entry(self.tl.site_of(s.stack)).or_default() += s.bytes;
        }
        for s in self.view.iter().flat_map(|v| &v.sites) {
            out.entry(self.tl.site_of(s.stack))
                .or_insert((0.0, false, None))
                .0 += s.bytes as f64;
        }
        for &(site, a, end, k) in &self.scanned.1 {
            if a <= c && c < end {
                if let Some(e) = out.get_mut(&site) {
                    e.2 = Some(e.2.map_or(k, |w: crate::event::LeakKind| w.min(k)));
                }
            }
        }
        for (site, e) in out.iter_mut() {
            let now = e.0;
            let was = old.get(site).copied().unwrap_or(0) as f64;
            e.0 = if span_s > 1e-3 {
                (now - was) / span_s
            } else {
                0.0
            };
        }
        Some(out)
    }

    /// The first access of each finding, in order (recomputed when new
    /// watchpoint hits arrived).
    pub fn findings(&mut self) -> &[Idx] {
        let hits = self.tl.watch_hits();
        if self.findings.0 != hits {
            self.findings = (hits, self.tl.findings().iter().map(|f| f.idx).collect());
        }
        &self.findings.1
    }

    /// The findings as last computed (for drawing).
    pub fn findings_seen(&self) -> &[Idx] {
        &self.findings.1
    }

    /// `w` / `W`: the next / previous finding, its diagnosis shown.
    fn jump_finding(&mut self, forward: bool) {
        let cur = self.cursor.unwrap_or(0);
        let f = self.findings().to_vec();
        let to = if forward {
            f.iter().copied().find(|&i| i > cur)
        } else {
            f.iter().rev().copied().find(|&i| i < cur)
        };
        // Past the last one, round to the first (and back).
        let wrapped = if forward { f.first() } else { f.last() };
        match (to, wrapped) {
            (Some(i), _) => {
                self.goto(i);
                self.pane = Pane::Stack;
                self.stack_scroll = 0;
            }
            (None, Some(&i)) => {
                self.goto(i);
                self.pane = Pane::Stack;
                self.stack_scroll = 0;
                self.message = Some(format!(
                    "wrapped to the {} finding ({} in all)",
                    if forward { "first" } else { "last" },
                    f.len()
                ));
            }
            (None, None) => {
                self.message = Some("no finding: the watchpoints caught nothing".into());
            }
        }
    }

    fn sort_heap(&mut self) {
        let key = |size: u64, count: u64, ts: u64, growth: f64| match self.sort {
            SortBy::Bytes => (std::cmp::Reverse(size), 0, 0),
            SortBy::Count => (std::cmp::Reverse(count), 0, 0),
            SortBy::Age => (std::cmp::Reverse(0), ts, 0),
            SortBy::Growth => (std::cmp::Reverse((growth.max(0.0) * 1000.0) as u64), 0, 0),
        };
        self.sites.sort_by(|a, b| {
            key(a.bytes, a.blocks, a.oldest_ts, a.growth)
                .cmp(&key(b.bytes, b.blocks, b.oldest_ts, b.growth))
                .then(b.bytes.cmp(&a.bytes))
                .then(a.stack.cmp(&b.stack))
        });
    }

    /// The first rows of the blocks table (see [`Self::heap_rows`] for
    /// how many there are).
    pub fn blocks(&self) -> &[LiveBlock] {
        &self.rows
    }

    /// Whether the blocks table's rows were read from every live block.
    pub fn rows_full(&self) -> bool {
        self.rows_full
    }

    /// Live blocks and bytes at the cursor.
    pub fn heap_totals(&self) -> (u64, u64) {
        self.view.as_ref().map_or((0, 0), |v| (v.blocks, v.bytes))
    }

    pub fn sites(&self) -> &[SiteRow] {
        &self.sites
    }

    pub fn heap_rows(&self) -> usize {
        match self.heap_view {
            HeapView::Blocks => self.heap_totals().0 as usize,
            HeapView::Sites => self.sites.len(),
        }
    }

    /// The diagnosis, when the cursor is on the crash.
    pub fn diagnosis(&self) -> Option<&Diagnosis> {
        match (&self.diagnosis, self.cursor) {
            (Some((i, d)), Some(c)) if *i == c => d.as_ref(),
            _ => None,
        }
    }

    /// The time span the timeline bar shows.
    pub fn span(&self) -> Option<(u64, u64)> {
        let (a, b) = self.tl.span()?;
        let Some(half) = self.zoom else {
            return Some((a, b));
        };
        let c = self
            .cursor
            .and_then(|c| self.tl.store().ts(c))
            .unwrap_or(a / 2 + b / 2)
            .clamp(
                a.saturating_add(half),
                b.saturating_sub(half).max(a.saturating_add(half)),
            );
        Some((c.saturating_sub(half).max(a), c.saturating_add(half).min(b)))
    }

    pub fn step_ns(&self) -> u64 {
        let span = self.span().map_or(0, |(a, b)| b - a);
        STEPS
            .iter()
            .rev()
            .copied()
            .find(|s| *s <= span / 10)
            .unwrap_or(STEPS[0])
    }

    fn goto(&mut self, i: Idx) {
        // The user moved: `--at` no longer holds the view.
        self.stop_at = None;
        let held = self.tl.store().held();
        if held.is_empty() {
            return;
        }
        let i = i.clamp(held.start, held.end - 1);
        if self.cursor != Some(i) {
            self.stack_scroll = 0;
        }
        self.cursor = Some(i);
        if self.mode == Mode::Live && i != held.end - 1 {
            self.mode = Mode::Frozen;
        }
        self.heap_sel = 0;
    }

    fn move_by(&mut self, delta: i64) {
        if let Some(c) = self.cursor {
            self.goto(c.saturating_add_signed(delta));
        }
    }

    fn jump_time(&mut self, forward: bool) {
        let (Some(c), step) = (self.cursor, self.step_ns()) else {
            return;
        };
        let Some(t) = self.tl.store().ts(c) else {
            return;
        };
        // Forward: the first event at or after t + step (events may be
        // sparser than the step); back: the last at or before t - step.
        let i = if forward {
            let w = self.tl.store().window(t.saturating_add(step), u64::MAX);
            if w.is_empty() {
                None
            } else {
                Some(w.start)
            }
        } else {
            self.tl.store().at(t.saturating_sub(step))
        };
        match i {
            Some(i) if Some(i) != self.cursor => self.goto(i),
            _ => self.move_by(if forward { 1 } else { -1 }),
        }
    }

    fn zoom(&mut self, zoom_in: bool) {
        let Some((a, b)) = self.tl.span() else {
            return;
        };
        let full_half = (b - a).div_ceil(2).max(1);
        let half = self.zoom.unwrap_or(full_half);
        self.zoom = if zoom_in {
            Some((half / 2).max(1_000).min(full_half))
        } else if half.saturating_mul(2) >= full_half {
            None
        } else {
            Some(half * 2)
        };
        if self.zoom == Some(full_half) {
            self.zoom = None;
        }
    }

    /// The heap effect of the selected event.
    fn selected_op(&self) -> Option<(Idx, HeapOp)> {
        let c = self.cursor?;
        Some((c, self.tl.store().heap_op(c)?))
    }

    /// On the crash, `a` / `f` go to the allocation / free the diagnosis
    /// names; false when the cursor is not on a diagnosed crash.
    fn jump_to_evidence(&mut self, free: bool) -> bool {
        let Some(d) = self.diagnosis() else {
            return false;
        };
        let site = if free { &d.free } else { &d.alloc };
        match site.as_ref().and_then(|s| s.idx) {
            Some(i) => self.goto(i),
            None => {
                self.message = Some(format!(
                    "the diagnosis names no recorded {}",
                    if free { "free" } else { "allocation" }
                ))
            }
        }
        true
    }

    /// `a`: the allocation of the selected block.
    fn jump_alloc(&mut self) {
        if self.jump_to_evidence(false) {
            return;
        }
        let target = match self.pane {
            Pane::Heap => self.selected_heap_alloc(),
            _ => self.selected_op().and_then(|(c, op)| match op {
                HeapOp::Alloc { .. } => Some(c),
                HeapOp::Realloc { ptr, .. } if ptr != 0 => Some(c),
                HeapOp::Free { ptr } | HeapOp::Realloc { old: ptr, .. } => {
                    self.tl.around(ptr, c).life.map(|l| l.block.alloc)
                }
            }),
        };
        match target {
            Some(i) if self.tl.store().contains(i) => self.goto(i),
            Some(_) => self.message = Some("allocated before the held recording".into()),
            None => self.message = Some("no allocation recorded for this event".into()),
        }
    }

    /// `f`: the free that ended the selected block.
    fn jump_free(&mut self) {
        if self.jump_to_evidence(true) {
            return;
        }
        let alloc = match self.pane {
            Pane::Heap => self.selected_heap_alloc(),
            _ => self.selected_op().and_then(|(c, op)| match op {
                HeapOp::Alloc { .. } | HeapOp::Realloc { .. } => Some(c),
                HeapOp::Free { .. } => None,
            }),
        };
        let Some(alloc) = alloc else {
            self.message = Some("select an allocation first".into());
            return;
        };
        match self.tl.end_of(alloc) {
            Some(i) => self.goto(i),
            None => self.message = Some("still live: never freed in the recording".into()),
        }
    }

    fn selected_heap_alloc(&self) -> Option<Idx> {
        match self.heap_view {
            HeapView::Blocks => self.rows.get(self.heap_sel).map(|b| b.alloc),
            HeapView::Sites => self.sites.get(self.heap_sel).map(|s| s.oldest),
        }
    }

    /// Counts up to `budget` more events against the filter (the title
    /// shows the count; a big recording is counted over several frames).
    /// Restarts when the retention budget dropped counted events.
    pub fn count_matches(&mut self, budget: u64) {
        let Some((_, f)) = &self.filter else {
            return;
        };
        let held = self.tl.store().held();
        let (start, mut next, mut n) = match self.matches {
            Some((start, next, n)) if start >= held.start => (start, next, n),
            _ => (held.start, held.start, 0),
        };
        let upto = held.end.min(next.saturating_add(budget));
        while next < upto {
            n += u64::from(self.tl.store().matches(next, f));
            next += 1;
        }
        self.matches = Some((start, next, n));
    }

    /// `12 matches`, or `12+ matches` while counting.
    pub fn matches_text(&self) -> Option<String> {
        let (_, next, n) = self.matches?;
        let done = next >= self.tl.store().end();
        Some(format!(
            "{n}{} match{}",
            if done { "" } else { "+" },
            if n == 1 && done { "" } else { "es" }
        ))
    }

    /// `%`: from a CALL row to its RET row and back.
    fn jump_pair(&mut self) {
        let Some(c) = self.cursor else {
            return;
        };
        let target = match self.tl.span_of(c) {
            Some(s) if s.begin == c => match (s.outcome, s.end) {
                (Outcome::Returned, Some(e)) => Ok(e),
                (Outcome::Abandoned, _) => {
                    Err("this call never returned (unwound by longjmp or an exception)".into())
                }
                (Outcome::ThreadExit, _) => {
                    Err("this call never returned: its thread ended".into())
                }
                (Outcome::EntryOnly, _) => {
                    Err("an entry-only probe (--probe-entry): no return is recorded".into())
                }
                _ => Err("this call has not returned (yet)".into()),
            },
            Some(s) => Ok(s.begin),
            None => Err("% goes from a CALL to its RET and back: select one".to_string()),
        };
        match target {
            Ok(i) if self.tl.store().contains(i) => self.goto(i),
            Ok(_) => self.message = Some("called before the held recording".into()),
            Err(m) => self.message = Some(m),
        }
    }

    fn find(&mut self, forward: bool) {
        let (Some((spec, f)), Some(c)) = (&self.filter, self.cursor) else {
            self.message = Some("no filter: press / to set one".into());
            return;
        };
        let hit = if forward {
            self.tl.store().find_next(c, f)
        } else {
            self.tl.store().find_prev(c, f)
        };
        match hit {
            Some(i) => self.goto(i),
            None => {
                self.message = Some(format!(
                    "no {} match for '{spec}'",
                    if forward { "later" } else { "earlier" }
                ))
            }
        }
    }

    fn filter_key(&mut self, k: KeyEvent) {
        let Some(buf) = self.input.as_mut() else {
            return;
        };
        match k.code {
            KeyCode::Esc => self.input = None,
            KeyCode::Char('u') if k.modifiers.contains(KeyModifiers::CONTROL) => buf.clear(),
            KeyCode::Enter => {
                let spec = buf.trim().to_string();
                self.input = None;
                if spec.is_empty() {
                    self.filter = None;
                    self.matches = None;
                    self.message = Some("filter cleared".into());
                    return;
                }
                // A bare word is a function name.
                let full = if spec.contains('=') {
                    spec.clone()
                } else {
                    format!("func={spec}")
                };
                match self.tl.parse_filter(&full) {
                    Ok(f) => {
                        self.filter = Some((full, f));
                        self.matches = None;
                        self.find(true);
                    }
                    Err(e) => {
                        // Keep what was typed, to correct it.
                        self.message = Some(e);
                        self.input = Some(spec);
                    }
                }
            }
            KeyCode::Backspace => {
                buf.pop();
                self.message = None;
            }
            KeyCode::Char(ch) => {
                buf.push(ch);
                self.message = None;
            }
            _ => {}
        }
    }

    pub fn on_key(&mut self, k: KeyEvent) {
        if self.input.is_some() {
            self.filter_key(k);
            return;
        }
        self.message = None;
        // Any key closes the help, and does nothing else.
        if self.help {
            self.help = false;
            return;
        }
        let shift = k.modifiers.contains(KeyModifiers::SHIFT);
        let page = self.page.get().max(1) as i64;
        match k.code {
            KeyCode::Char('q') => self.quit = true,
            KeyCode::Char('c') if k.modifiers.contains(KeyModifiers::CONTROL) => self.quit = true,
            KeyCode::Char('?') => self.help = true,
            KeyCode::Char('L') => self.leak_scan = true,
            KeyCode::Up | KeyCode::Down if self.pane == Pane::Heap => {
                let n = self.heap_rows();
                if k.code == KeyCode::Up {
                    self.heap_sel = self.heap_sel.saturating_sub(1);
                } else if self.heap_sel + 1 < n {
                    self.heap_sel += 1;
                }
            }
            KeyCode::Up if self.pane == Pane::Stack => {
                self.stack_scroll = self.stack_scroll.saturating_sub(1);
            }
            KeyCode::Down if self.pane == Pane::Stack => {
                // Not past the last line (the pane said how far it goes).
                self.stack_scroll = self
                    .stack_scroll
                    .saturating_add(1)
                    .min(self.stack_max.get().max(self.stack_scroll));
            }
            KeyCode::Left | KeyCode::Up if shift => self.move_by(-page),
            KeyCode::Right | KeyCode::Down if shift => self.move_by(page),
            KeyCode::Left | KeyCode::Up => self.move_by(-1),
            KeyCode::Right | KeyCode::Down => self.move_by(1),
            KeyCode::PageUp => self.move_by(-page),
            KeyCode::PageDown => self.move_by(page),
            KeyCode::Home => self.goto(0),
            KeyCode::End => {
                self.goto(Idx::MAX);
                if self.mode == Mode::Frozen && !self.ended && self.tl.crash().is_none() {
                    self.mode = Mode::Live;
                }
            }
            KeyCode::Char('[') => self.jump_time(false),
            KeyCode::Char(']') => self.jump_time(true),
            KeyCode::Char('c') => match self.tl.crash() {
                Some(c) => {
                    self.goto(c);
                    self.pane = Pane::Stack;
                }
                None => self.message = Some("no crash in this recording".into()),
            },
            KeyCode::Char(' ') => match self.mode {
                Mode::Live => self.mode = Mode::Frozen,
                Mode::Frozen if self.tl.crash().is_none() && !self.ended => {
                    self.mode = Mode::Live;
                    self.goto(Idx::MAX);
                }
                Mode::Frozen => self.message = Some("the target is gone: nothing to follow".into()),
                Mode::Replay => self.message = Some("a saved recording: nothing to follow".into()),
            },
            KeyCode::Char('/') => {
                self.input = Some(
                    self.filter
                        .as_ref()
                        .map(|(s, _)| s.clone())
                        .unwrap_or_default(),
                )
            }
            KeyCode::Char('n') => self.find(true),
            KeyCode::Char('N') => self.find(false),
            KeyCode::Char('%') => self.jump_pair(),
            KeyCode::Char('a') => self.jump_alloc(),
            KeyCode::Char('w') => self.jump_finding(true),
            KeyCode::Char('W') => self.jump_finding(false),
            KeyCode::Char('f') => self.jump_free(),
            KeyCode::Tab => {
                self.pane = match self.pane {
                    Pane::Events => Pane::Heap,
                    Pane::Heap => Pane::Stack,
                    Pane::Stack => Pane::Events,
                }
            }
            KeyCode::BackTab => {
                self.pane = match self.pane {
                    Pane::Events => Pane::Stack,
                    Pane::Heap => Pane::Events,
                    Pane::Stack => Pane::Heap,
                }
            }
            KeyCode::Enter if self.pane == Pane::Heap => {
                if let Some(a) = self.selected_heap_alloc() {
                    if self.tl.store().contains(a) {
                        self.goto(a);
                        self.pane = Pane::Events;
                    } else {
                        self.message = Some("allocated before the held recording".into());
                    }
                }
            }
            KeyCode::Char('g') => {
                self.heap_view = match self.heap_view {
                    HeapView::Blocks => HeapView::Sites,
                    HeapView::Sites => HeapView::Blocks,
                };
                self.heap_sel = 0;
            }
            KeyCode::Char('s') => {
                // Blocks sort by bytes or age (one block's count is 1).
                self.sort = match (self.heap_view, self.block_order()) {
                    (HeapView::Blocks, Order::Bytes) => SortBy::Age,
                    (HeapView::Blocks, Order::Age) => SortBy::Bytes,
                    (HeapView::Sites, _) => self.sort.next(),
                };
                self.sort_heap();
            }
            KeyCode::Char('+') | KeyCode::Char('=') => self.zoom(true),
            KeyCode::Char('-') => self.zoom(false),
            _ => {}
        }
        self.refresh();
    }

    /// Move the cursor to the event nearest `ts` (a click on the bar).
    pub fn click_time(&mut self, ts: u64) {
        if let Some(i) = self.tl.store().nearest(ts) {
            self.goto(i);
            self.refresh();
        }
    }

    /// The events of the list around the cursor: `rows` indices, the
    /// cursor as near the middle as the ends allow.
    pub fn visible_events(&self, rows: usize) -> Vec<Idx> {
        let held = self.tl.store().held();
        let Some(c) = self.cursor else {
            return Vec::new();
        };
        let rows = rows as u64;
        let start = c
            .saturating_sub(rows / 2)
            .min(held.end.saturating_sub(rows))
            .max(held.start);
        (start..(start + rows).min(held.end)).collect()
    }
}
