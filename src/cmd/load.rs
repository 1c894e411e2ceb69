//! Reading a trace into a timeline as it streams, never holding its events:
//! `report` and `export` in one pass on this thread ([`read_streaming_part`]),
//! `open` from a loader thread while the UI already shows what has come
//! ([`Loader`]). Memory is the timeline's budget whatever the file's size.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Result;
use crossbeam_channel::{Receiver, Sender};

use crate::event::{Event, LeakScan, Lost, Meta, Module, ModuleId, Probe, Stack, StackId};
use crate::model::Timeline;
use crate::recorder::symbols::Symbols;
use crate::trace::{CarriedBlock, Item, Trace};

/// Names the frames the recording machine could not (a stripped module
/// without its debug info there) when this machine has the debug info,
/// found by the build-id the trace recorded.
#[derive(Default)]
struct Namer {
    /// Modules seen (their build-ids name unnamed frames).
    seen: Vec<Module>,
    sym: Option<(Symbols, HashSet<ModuleId>)>,
}

impl Namer {
    fn module(&mut self, m: &Module) {
        self.seen.push(m.clone());
    }

    fn stack(&mut self, s: &Stack) -> Stack {
        let mut s = s.clone();
        let unnamed: HashSet<ModuleId> = s
            .frames
            .iter()
            .filter(|f| f.file.is_none())
            .filter_map(|f| f.module)
            .collect();
        if unnamed.is_empty() {
            return s;
        }
        let (sym, added) = self
            .sym
            .get_or_insert_with(|| (Symbols::new(), HashSet::new()));
        let mut new = false;
        for m in self.seen.iter().filter(|m| unnamed.contains(&m.id)) {
            if added.insert(m.id) {
                sym.add_module(m, None);
                new = true;
            }
        }
        if new {
            // Said when it was recorded: nothing new to say here.
            sym.wait_pending();
            let _ = sym.take_notes(true);
        }
        sym.symbolize(&mut s.frames);
        s
    }
}

/// The trace's end into the timeline once everything was read.
pub fn set_end(t: &Trace, tl: &mut Timeline) {
    tl.set_lost(t.lost.clone());
    tl.set_end_ns(t.end.as_ref().map(|e| e.end_mono_ns));
    if let Some(s) = t.end.as_ref().and_then(|e| e.status) {
        tl.set_exit(s);
    }
}

/// What of a trace a read takes: from a part of it (`trace::locate`) and
/// up to a moment, or all of it (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Part {
    pub from: Option<crate::trace::Start>,
    /// Stop at the first event later than this long after the start...
    pub until: Option<u64>,
    /// ...unless fewer than this many events and carried blocks were
    /// taken in all (`open --at`: what the timeline holds without
    /// dropping the moment; `report --at`: 0, none past it).
    pub past: u64,
}

impl Part {
    /// The read for the moment `at` (after the start) of `path`: from its
    /// part (or segment) before `from`, up to `at`, and after it while
    /// fewer than `past` events and carried blocks were taken. A pipe or FIFO is read whole, from its start: stopping would
    /// end the recorder writing it (EPIPE).
    pub fn at(path: &std::path::Path, from: u64, at: u64, past: u64) -> Result<Part> {
        if !crate::trace::seekable(path) {
            return Ok(Part::default());
        }
        Ok(Part {
            from: crate::trace::locate(path, from)?,
            until: Some(at),
            past,
        })
    }
}

/// A trace (`part` of it) and its timeline, read in one pass without
/// keeping the events (`Trace::events` stays empty): what `report` and
/// `export` show, in at most `memory` bytes of events and indexes
/// whatever the file's size
/// (the oldest events past it are dropped, the heap and leaks kept exact).
/// The file is decoded on the loader thread while this one builds the
/// timeline (two cores: 1.6× one). Progress goes to stderr when it is a
/// terminal.
pub fn read_streaming_part(
    path: &std::path::Path,
    memory: usize,
    part: Part,
) -> Result<(Trace, Timeline)> {
    use std::io::IsTerminal;
    let mut l = Loader::start_part(path, part)?;
    let mut tl = Timeline::with_budget(l.meta.clone(), memory);
    let progress = std::io::stderr().is_terminal();
    let (mut last, mut shown) = (std::time::Instant::now(), false);
    loop {
        let Ok(m) = l.rx.recv() else {
            anyhow::bail!("the loader thread ended before the end of the trace");
        };
        if let Some(mut t) = l.apply(&mut tl, m)? {
            if shown {
                eprint!("\r\x1b[K");
            }
            // The named stacks (the timeline's) for the report's own lookups.
            t.stacks = tl.stacks().to_vec();
            return Ok((t, tl));
        }
        if progress && last.elapsed() >= std::time::Duration::from_secs(1) {
            last = std::time::Instant::now();
            shown = true;
            eprint!(
                "\rtm-tui: reading the trace: {}{} events, {} held in memory ",
                l.fraction()
                    .map(|f| format!("{:.0}%, ", f * 100.0))
                    .unwrap_or_default(),
                l.events,
                tl.store().end() - tl.store().first()
            );
        }
    }
}

/// What the loader thread hands the UI, in file order.
pub enum Load {
    Module(Module),
    Stack(Stack),
    Probe(Probe),
    Events(Vec<Event>),
    Lost(Lost),
    LeakScan(LeakScan),
    Carried(Vec<CarriedBlock>),
    /// Parts were missing before this moment: the heap is these blocks
    /// (the next part's carried ones), not what the events before left.
    Resync(u64, Vec<CarriedBlock>),
    /// Everything was read: the trace without its events (its end, losses,
    /// damage), or why it could not be read on.
    Done(Box<Result<Trace>>),
}

/// Events sent at once: the channel holds at most `CHANNEL` batches, a few
/// MiB on top of the timeline's budget.
const BATCH: usize = 4096;
const CHANNEL: usize = 16;

/// The loader thread's side: owned items sent on, events in batches. The
/// tables a bounded recording's segments repeat are sent once, and only
/// the first segment's carried blocks (later segments' describe a heap
/// the timeline already has).
#[derive(Default)]
struct ChannelSink {
    tx: Option<Sender<Load>>,
    meta: Option<Meta>,
    foreign: bool,
    namer: Namer,
    modules: HashSet<ModuleId>,
    stacks: HashSet<StackId>,
    probes: HashSet<crate::event::ProbeId>,
    /// The heap's start state is set (carried blocks taken, or an event seen).
    started: bool,
    /// After parts missing: the time and the carried blocks of the part
    /// read next (sent before anything else of it).
    resync: Option<(u64, Vec<CarriedBlock>)>,
    batch: Vec<Event>,
    /// The UI went away: nothing more to send.
    gone: bool,
    /// Events after this (after the start; absolute once the Meta is
    /// read) are not wanted: the read stops at the first.
    until: Option<u64>,
    past: u64,
    /// Events and carried blocks taken.
    taken: u64,
    enough: bool,
}

impl ChannelSink {
    fn send(&mut self, m: Load) {
        if !self.gone && self.tx.as_ref().is_none_or(|tx| tx.send(m).is_err()) {
            self.gone = true;
        }
    }

    /// The events batched and a resync pending sent on.
    fn flush(&mut self) {
        if let Some((ts, b)) = self.resync.take() {
            self.send(Load::Resync(ts, b));
        }
        self.flush_events();
    }

    fn flush_events(&mut self) {
        if !self.batch.is_empty() {
            let b = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
            self.send(Load::Events(b));
        }
    }
}

impl crate::trace::Sink for ChannelSink {
    fn meta(&mut self, meta: &Meta) {
        match &self.meta {
            None => {
                self.meta = Some(meta.clone());
                self.until = self.until.map(|u| meta.start_mono_ns.saturating_add(u));
            }
            Some(m) => self.foreign = m != meta,
        }
    }

    fn enough(&self) -> bool {
        self.enough || self.gone
    }

    fn item(&mut self, item: Item<'_>) {
        if self.foreign || self.gone || self.enough {
            return;
        }
        match item {
            Item::Resync(ts) if self.started => {
                self.flush();
                self.resync = Some((ts, Vec::new()));
                return;
            }
            Item::Carried(b) if self.resync.is_some() => {
                self.taken += b.len() as u64;
                if let Some((_, r)) = &mut self.resync {
                    r.extend_from_slice(b);
                }
                return;
            }
            _ => {}
        }
        if let Item::Event(e) = item {
            if self.resync.is_some() {
                self.flush();
            }
            if self.until.is_some_and(|u| e.ts > u) && self.taken >= self.past {
                self.enough = true;
                return;
            }
            self.taken += 1;
            self.started = true;
            self.batch.push(e);
            if self.batch.len() >= BATCH {
                self.flush();
            }
            return;
        }
        // A part's tables and losses come before its carried blocks: a
        // resync waits for them all (until its first event).
        self.flush_events();
        let m = match item {
            Item::Module(m) if self.modules.insert(m.id) => {
                self.namer.module(m);
                Load::Module(m.clone())
            }
            Item::Stack(s) if self.stacks.insert(s.id) => Load::Stack(self.namer.stack(s)),
            Item::Probe(p) if self.probes.insert(p.id) => Load::Probe(p.clone()),
            // A segment's carried blocks may come in several records:
            // all of them before its first event.
            Item::Carried(b) if !self.started => {
                self.taken += b.len() as u64;
                Load::Carried(b.to_vec())
            }
            Item::Lost(l) => Load::Lost(l.clone()),
            Item::LeakScan(l) => Load::LeakScan(l.clone()),
            // Repeated by a later segment.
            _ => return,
        };
        self.send(m);
    }
}

/// A trace read on a thread of its own for the UI: the Meta comes first
/// (the timeline is made of it), then the items as they are read.
pub struct Loader {
    pub meta: Meta,
    pub rx: Receiver<Load>,
    /// Bytes of the file read so far, and its size (none for stdin).
    pub read: Arc<AtomicU64>,
    pub size: Option<u64>,
    pub events: u64,
    pub started: std::time::Instant,
}

impl Loader {
    #[cfg(test)]
    /// Starts reading `path`; returns once its Meta is read (an error if
    /// it is not a trace).
    pub fn start(path: &std::path::Path) -> Result<Loader> {
        Self::start_part(path, Part::default())
    }

    /// As [`Loader::start`], reading `part` of the trace.
    pub fn start_part(path: &std::path::Path, part: Part) -> Result<Loader> {
        let (tx, rx) = crossbeam_channel::bounded(CHANNEL);
        let (meta_tx, meta_rx) = crossbeam_channel::bounded(1);
        let read = Arc::new(AtomicU64::new(0));
        let size = match part.from {
            Some(s) => Some(s.total.saturating_sub(s.offset)),
            None => crate::trace::size_of(path),
        };
        let (path, counter) = (path.to_path_buf(), read.clone());
        let started = std::time::Instant::now();
        std::thread::Builder::new()
            .name("loader".into())
            .spawn(move || {
                let mut sink = MetaFirst {
                    meta_tx: Some(meta_tx),
                    inner: ChannelSink {
                        tx: Some(tx),
                        batch: Vec::with_capacity(BATCH),
                        until: part.until,
                        past: part.past,
                        ..ChannelSink::default()
                    },
                };
                let r =
                    crate::trace::read_trace_into_from(&path, &mut sink, Some(&counter), part.from);
                let MetaFirst { meta_tx, mut inner } = sink;
                match (meta_tx, r) {
                    // Not a trace (no Meta): the error goes where the Meta would.
                    (Some(m), r) => {
                        let _ = m.send(r.map(|t| t.meta));
                    }
                    (None, r) => {
                        inner.flush();
                        inner.send(Load::Done(Box::new(r)));
                    }
                }
            })
            .map_err(|e| anyhow::anyhow!("cannot start the loader thread: {e}"))?;
        let meta = meta_rx
            .recv()
            .map_err(|_| anyhow::anyhow!("the loader thread ended without a word"))??;
        Ok(Loader {
            meta,
            rx,
            read,
            size,
            events: 0,
            started,
        })
    }

    /// Applies one message; the trace once everything was read.
    pub fn apply(&mut self, tl: &mut Timeline, m: Load) -> Result<Option<Trace>> {
        match m {
            Load::Module(m) => tl.add_module(m),
            Load::Stack(s) => tl.add_stack(s),
            Load::Probe(p) => tl.add_probe(p),
            Load::Events(es) => {
                self.events += es.len() as u64;
                for e in &es {
                    tl.push(e);
                }
            }
            Load::Lost(l) => tl.note_lost(l),
            Load::LeakScan(l) => tl.add_leak_scan(l),
            Load::Carried(b) => {
                for b in &b {
                    tl.carry(b);
                }
            }
            Load::Resync(ts, b) => tl.resync(&b, ts),
            Load::Done(t) => {
                let t = (*t)?;
                set_end(&t, tl);
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    /// The share of the file read, 0 to 1 (none for stdin).
    pub fn fraction(&self) -> Option<f64> {
        let size = self.size.filter(|s| *s > 0)?;
        Some((self.read.load(Ordering::Relaxed) as f64 / size as f64).min(1.0))
    }
}

/// Hands the Meta to the thread waiting for it, then the rest on.
struct MetaFirst {
    meta_tx: Option<Sender<Result<Meta>>>,
    inner: ChannelSink,
}

impl crate::trace::Sink for MetaFirst {
    fn meta(&mut self, meta: &Meta) {
        if let Some(tx) = self.meta_tx.take() {
            let _ = tx.send(Ok(meta.clone()));
        }
        self.inner.meta(meta);
    }

    fn item(&mut self, item: Item<'_>) {
        self.inner.item(item);
    }

    fn enough(&self) -> bool {
        self.inner.enough()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A trace at `path` of pid 7 starting at 1 µs: a 5-byte block
    /// allocated at the start and never freed, then `n` pairs 1 µs apart:
    /// pair i an 8-byte malloc at +(1 + i) µs and its free 500 ns later.
    pub(crate) fn write_pairs(path: &std::path::Path, n: u64) {
        write_pairs_with(path, n, false, None);
    }

    /// As [`write_pairs`], in 1 MiB parts if `parts` (the 5-byte block
    /// carried into each), ended by an End record if `end`.
    pub(crate) fn write_pairs_with(
        path: &std::path::Path,
        n: u64,
        parts: bool,
        end: Option<crate::event::ExitStatus>,
    ) {
        use crate::event::{AllocFn, EventKind, Families};
        let meta = Meta {
            pid: 7,
            start_mono_ns: 1_000,
            families: Families::parse("alloc").unwrap(),
            ..Meta::default()
        };
        let mut w = crate::trace::TraceWriter::create(path, &meta).unwrap();
        if parts {
            w.checkpoint_every(&meta, crate::trace::PART_ALIGN);
        }
        let ev = |ts: u64, kind| Event {
            ts,
            pid: 7,
            tid: 7,
            kind,
        };
        let alloc = |ptr, size| EventKind::Alloc {
            func: AllocFn::Malloc,
            ptr,
            size,
            stack: None,
        };
        let kept = CarriedBlock {
            pid: 7,
            tid: 7,
            ts: 1_000,
            ptr: 0x10,
            size: 5,
            stack: None,
        };
        w.write_event(&ev(1_000, alloc(0x10, 5))).unwrap();
        let mut last = 1_000;
        for i in 0..n {
            let (ts, ptr) = (2_000 + i * 1_000, 0x1000 + (i % 64) * 0x100);
            if w.wants_rotation(ts) {
                let tables = crate::trace::Tables {
                    modules: &[],
                    probes: &[],
                    stacks: &[],
                    lost: &Lost::default(),
                };
                w.rotate(ts, tables, std::slice::from_ref(&kept)).unwrap();
            }
            w.write_event(&ev(ts, alloc(ptr, 8))).unwrap();
            let free = EventKind::Free { ptr, stack: None };
            w.write_event(&ev(ts + 500, free)).unwrap();
            last = ts + 500;
        }
        match end {
            Some(status) => w.write_end(last + 1, Some(status)).unwrap(),
            None => w.flush().unwrap(),
        }
    }

    /// `open --at`'s read past the moment: only while fewer than `past`
    /// events and carried blocks were taken in all, so that a part long
    /// before the moment cannot push the moment out of `--memory`.
    #[test]
    fn past_the_moment_only_while_under_the_cap() {
        let f = tempfile::NamedTempFile::new().unwrap();
        write_pairs_with(f.path(), 200_000, true, None);
        let at = 150_000_000;
        let read = |past| {
            let mut p = Part::at(f.path(), at, at, 0).unwrap();
            assert!(p.from.is_some(), "in parts");
            p.past = past;
            let (_, tl) = read_streaming_part(f.path(), usize::MAX, p).unwrap();
            let last = tl.store().ts(tl.store().end() - 1).unwrap();
            (tl.store().end(), last)
        };
        // Up to the moment: every event taken is at or before it.
        let (to_at, last) = read(0);
        assert!(last <= 1_000 + at, "{last}");
        assert!(to_at > 1_000, "{to_at} taken");
        // A cap under what the moment took: nothing past it.
        assert_eq!(read(to_at / 2).0, to_at);
        // A cap past it: exactly up to the cap.
        let (n, last) = read(to_at + 500);
        assert_eq!(n, to_at + 500);
        assert!(last > 1_000 + at, "{last}");
    }

    /// The UI's loader and `report`'s one-pass read build the same timeline.
    #[test]
    fn loader_builds_what_the_streaming_read_builds() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/every-kind-v8.tmt");
        let (t, want) = read_streaming_part(&path, usize::MAX, Part::default()).unwrap();
        let mut l = Loader::start(&path).unwrap();
        let mut tl = Timeline::with_budget(l.meta.clone(), usize::MAX);
        let mut done = None;
        while done.is_none() {
            let m = l.rx.recv().unwrap();
            done = l.apply(&mut tl, m).unwrap();
        }
        let done = done.unwrap();
        assert_eq!(done.event_count, t.event_count);
        assert_eq!(l.events, t.event_count);
        assert_eq!(l.fraction(), Some(1.0));
        assert_eq!(tl.store().end(), want.store().end());
        assert!(tl.store().end() > 0);
        assert_eq!(tl.heap().live_bytes(), want.heap().live_bytes());
        assert_eq!(tl.heap().live_blocks(), want.heap().live_blocks());
        assert_eq!(tl.crash(), want.crash());
        assert_eq!(tl.stacks().len(), want.stacks().len());
        assert_eq!(tl.lost(), want.lost());
    }

    #[test]
    fn loader_says_a_file_is_not_a_trace() {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), b"hello, not a trace").unwrap();
        let e = Loader::start(f.path()).err().expect("an error");
        assert!(format!("{e:#}").contains("not a tm-tui trace"), "{e:#}");
    }
}
