//! The timeline model: pure Rust over owned events, no terminal code,
//! testable without root. A [`Timeline`] takes events as they arrive and
//! answers, at any instant of the recording: which blocks were live, what
//! happened at an address, which stacks leak, and why the process crashed.
//!
//! - `store`: compact, time-indexed event columns with retention;
//! - `heap`: live blocks now and at any instant (checkpoints + replay);
//! - `history`: every block that lived at an address;
//! - `leaks`: outstanding blocks by allocation stack, growth, suspicion;
//! - `diagnose`: the crash explained, with the evidence;
//! - `spans`: probed calls paired with their returns, nested per thread;
//! - `names`: frame labels, each unique stack labelled once.

pub mod diagnose;
pub mod heap;
pub mod history;
pub mod leakkinds;
pub mod leaks;
pub mod names;
pub mod operand;
pub mod present;
pub mod spans;
pub mod store;
pub mod summary;

use crate::event::{
    Event, EventKind, ExitStatus, Lost, Meta, Module, Probe, ProbeId, Stack, StackId, SysCall,
};

use diagnose::Diagnosis;
use heap::HeapIndex;
use leakkinds::{KindsAt, LeakKinds};
use leaks::{LeakGroup, Leaks};
use names::Names;
use spans::{Span, Spans};
use store::{EventStore, Filter, Idx, Kind, LiveBlock, CHUNK};
use strum::{EnumCount, IntoEnumIterator};

/// What a user sees of a frame: its function, file and line once
/// symbolized, else where in which module it is.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum SiteFrame {
    Sym(String, Option<String>, u32),
    Raw(Option<crate::event::ModuleId>, u64),
}

impl SiteFrame {
    fn of(f: &crate::event::Frame) -> SiteFrame {
        match &f.func {
            Some(func) => SiteFrame::Sym(func.clone(), f.file.clone(), f.line),
            None => SiteFrame::Raw(f.module, if f.module.is_some() { f.offset } else { f.addr }),
        }
    }
}

/// `stack`'s site in a table from [`Timeline::add_stack`]; itself when the
/// table does not know it.
pub fn site_in(sites: &[StackId], stack: Option<StackId>) -> Option<StackId> {
    let id = stack?;
    match usize::try_from(id).ok().and_then(|i| sites.get(i)) {
        Some(&s) if s != StackId::MAX => Some(s),
        _ => Some(id),
    }
}

/// The keys of [`Timeline::parse_filter`], for its messages.
pub const FILTER_KEYS: &str = "kind, tid, pid, func, call, addr";

/// The default memory budget of a recording held in memory.
pub const DEFAULT_MEMORY: usize = 1 << 30;

/// A followed child's heap addresses carry its process number in these
/// high bits (user addresses stay below 2^47), so the blocks of processes
/// sharing an address space layout (a fork) never meet in the model.
pub const TAG_SHIFT: u32 = 48;

/// An address as the program saw it (its process number removed).
pub fn untag(a: u64) -> u64 {
    a & ((1 << TAG_SHIFT) - 1)
}

/// `e` with its heap addresses tagged for process `tag`.
fn tag_event(e: &Event, tag: u64) -> Event {
    let t = |a: u64| {
        if a == 0 {
            0
        } else {
            untag(a) | tag << TAG_SHIFT
        }
    };
    let kind = match &e.kind {
        EventKind::Alloc {
            func,
            ptr,
            size,
            stack,
        } => EventKind::Alloc {
            func: *func,
            ptr: t(*ptr),
            size: *size,
            stack: *stack,
        },
        EventKind::Free { ptr, stack } => EventKind::Free {
            ptr: t(*ptr),
            stack: *stack,
        },
        EventKind::Realloc {
            func,
            old,
            ptr,
            size,
            stack,
        } => EventKind::Realloc {
            func: *func,
            old: t(*old),
            ptr: t(*ptr),
            size: *size,
            stack: *stack,
        },
        other => other.clone(),
    };
    Event { kind, ..*e }
}

/// The event as the program saw it: its heap addresses without the
/// process tag the store keeps them with (the model's own events too).
pub fn untagged(e: Event) -> Event {
    match e.kind {
        EventKind::Inherit { ptr, size, stack } => Event {
            kind: EventKind::Inherit {
                ptr: untag(ptr),
                size,
                stack,
            },
            ..e
        },
        EventKind::Discard { ptr } => Event {
            kind: EventKind::Discard { ptr: untag(ptr) },
            ..e
        },
        _ => tag_event(&e, 0),
    }
}

/// Steps along an address's chain the UI takes per frame at most.
const HISTORY_CAP: usize = 1024;

pub struct Timeline {
    meta: Meta,
    modules: Vec<Module>,
    stacks: Vec<Stack>,
    /// Stack id → the first stack with the same symbolized frames: the
    /// allocation site the heap and leak views group by (one call path
    /// reached with different return addresses in the frames the user
    /// cannot tell apart, or ending truncated, is one site).
    sites: Vec<StackId>,
    site_keys: std::collections::HashMap<Vec<SiteFrame>, StackId>,
    /// The probed functions (`--probe`), by [`crate::event::ProbeId`].
    probes: Vec<Probe>,
    store: EventStore,
    heap: HeapIndex,
    leaks: Leaks,
    kinds: LeakKinds,
    names: Names,
    /// Calls of probed functions, as spans.
    spans: Spans,
    lost: Lost,
    /// Where losses happened: the number of events recorded when the
    /// lost-event count rose, and the count then (cumulative).
    loss_marks: Vec<(Idx, u64)>,
    /// Traced system calls by [`SysCall`], dropped ones included.
    sys: [SysTotal; SysCall::COUNT],
    /// Events by [`Kind`], dropped ones included.
    by_kind: [u64; Kind::COUNT],
    /// The fatal signal, once it arrived.
    crash: Option<Idx>,
    exit: Option<ExitStatus>,
    /// CLOCK_MONOTONIC of the recording's end, when known.
    end_ns: Option<u64>,
    memory_budget: usize,
    last_signal: Option<(Idx, i32)>,
    /// The root (index 0), then each child followed, in order of birth;
    /// a process's index is the tag of its heap addresses.
    processes: Vec<Process>,
    /// The index of each live pid's process.
    proc_of: crate::util::hash::FxMap<u32, usize>,
    /// The events the model made (inherited and discarded blocks), in
    /// order: the others are the recording's, one for one.
    made: Vec<Idx>,
    /// Every watchpoint hit, in order.
    /// `carry` is pushing a block live before the held recording.
    carrying: bool,
    /// A bounded recording's held window: blocks were carried in, and its
    /// first recorded event's time (once seen).
    window: Option<Option<u64>>,
    watch_hits: Vec<Idx>,
}

/// A bug a watchpoint caught (see [`Timeline::findings`]).
#[derive(Clone, Debug)]
pub struct Finding {
    /// The first access seen.
    pub idx: Idx,
    pub diagnosis: Diagnosis,
    /// Further accesses of the same block seen after it.
    pub more: usize,
}

/// A process of the recording: the root or a child it followed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Process {
    pub pid: u32,
    /// The process it was forked from (none for the root).
    pub ppid: Option<u32>,
    /// Its command (the last image it exec'd, else its parent's).
    pub command: String,
    /// CLOCK_MONOTONIC of its fork (the recording's start for the root).
    pub start_ns: u64,
    pub exit: Option<ExitStatus>,
    /// Its fatal signal.
    pub crash: Option<Idx>,
    pub heap: ProcHeap,
    last_signal: Option<(Idx, i32)>,
}

/// One process's heap: calls of its allocator, what is live.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProcHeap {
    pub allocs: u64,
    pub frees: u64,
    pub alloc_bytes: u64,
    pub live_blocks: u64,
    pub live_bytes: u64,
    /// Blocks it had from its parent at its fork.
    pub inherited: u64,
    /// Blocks live when the recording held begins (a bounded recording's
    /// oldest segment), allocated before it.
    pub carried: u64,
    /// Blocks gone with an exec of it.
    pub discarded: u64,
}

/// The most processes a recording tells apart (the tag's 16 bits).
const MAX_PROCESSES: usize = 1 << (64 - TAG_SHIFT);

/// The traced system calls of one kind, over the whole recording.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SysTotal {
    pub count: u64,
    /// Bytes moved (the results of read/write/send/recv calls).
    pub bytes: u64,
    /// Calls that failed (see [`SysCall::failed`]).
    pub errors: u64,
    /// Calls that returned EAGAIN: would block, not failed.
    pub would_block: u64,
    /// Entry to return, summed.
    pub total_ns: u64,
}

/// Blocks grouped by allocation stack.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SiteGroup {
    pub stack: Option<StackId>,
    pub blocks: u64,
    pub bytes: u64,
    /// Allocation time of the oldest block.
    pub oldest_ts: u64,
}

/// `blocks` by allocation site (`sites`, see [`Timeline::add_stack`]),
/// most bytes first.
pub fn group_by_site<'a>(
    blocks: impl IntoIterator<Item = &'a LiveBlock>,
    sites: &[StackId],
) -> Vec<SiteGroup> {
    let mut groups: crate::util::hash::FxMap<Option<StackId>, SiteGroup> = Default::default();
    for b in blocks {
        let site = site_in(sites, b.stack);
        let g = groups.entry(site).or_insert(SiteGroup {
            stack: site,
            blocks: 0,
            bytes: 0,
            oldest_ts: b.ts,
        });
        g.blocks += 1;
        g.bytes = g.bytes.wrapping_add(b.size);
        g.oldest_ts = g.oldest_ts.min(b.ts);
    }
    let mut v: Vec<SiteGroup> = groups.into_values().collect();
    v.sort_by(|x, y| y.bytes.cmp(&x.bytes).then(x.stack.cmp(&y.stack)));
    v
}

impl Timeline {
    #[cfg(test)]
    pub fn new(meta: Meta) -> Self {
        Self::with_budget(meta, DEFAULT_MEMORY)
    }

    /// A timeline that keeps at most about `memory_budget` bytes of events
    /// and indexes, dropping the oldest events first (at least two chunks
    /// are always kept).
    pub fn with_budget(meta: Meta, memory_budget: usize) -> Self {
        Timeline {
            modules: Vec::new(),
            stacks: Vec::new(),
            sites: Vec::new(),
            site_keys: Default::default(),
            probes: Vec::new(),
            store: EventStore::new(),
            heap: HeapIndex::default(),
            leaks: Leaks::default(),
            kinds: LeakKinds::default(),
            names: Names::default(),
            spans: Spans::default(),
            lost: Lost::default(),
            loss_marks: Vec::new(),
            sys: [SysTotal::default(); SysCall::COUNT],
            by_kind: [0; Kind::COUNT],
            crash: None,
            exit: None,
            end_ns: None,
            memory_budget,
            last_signal: None,
            processes: vec![Process {
                pid: meta.pid,
                command: meta.command.clone(),
                start_ns: meta.start_mono_ns,
                ..Process::default()
            }],
            proc_of: [(meta.pid, 0)].into_iter().collect(),
            made: Vec::new(),
            watch_hits: Vec::new(),
            carrying: false,
            window: None,
            meta,
        }
    }

    /// When a bounded recording's held window starts (its first recorded
    /// event): before it the heap is only the blocks carried into it.
    pub fn window_start(&self) -> Option<u64> {
        self.window.flatten()
    }

    /// The events the model made (inherited, discarded blocks), in order.
    pub fn made(&self) -> &[Idx] {
        &self.made
    }

    /// The root process, then each child followed, in order of birth.
    pub fn processes(&self) -> &[Process] {
        &self.processes
    }

    /// The tag of `pid`'s heap addresses (0: the root's, or unknown).
    pub fn tag_of(&self, pid: u32) -> u64 {
        self.proc_of.get(&pid).map_or(0, |&p| p as u64)
    }

    pub fn meta(&self) -> &Meta {
        &self.meta
    }

    pub fn modules(&self) -> &[Module] {
        &self.modules
    }

    pub fn stacks(&self) -> &[Stack] {
        &self.stacks
    }

    /// The probed functions (`--probe`), by [`crate::event::ProbeId`].
    pub fn probes(&self) -> &[Probe] {
        &self.probes
    }

    /// The events held, with their indexes.
    pub fn store(&self) -> &EventStore {
        &self.store
    }

    /// The heap at any held instant.
    pub fn heap(&self) -> &HeapIndex {
        &self.heap
    }

    pub fn leaks(&self) -> &Leaks {
        &self.leaks
    }

    /// Calls of probed functions, as spans.
    pub fn spans(&self) -> &Spans {
        &self.spans
    }

    /// The losses so far (cumulative).
    pub fn lost(&self) -> &Lost {
        &self.lost
    }

    /// Where losses happened: the number of events recorded when the
    /// lost-event count rose, and the count then (cumulative).
    pub fn loss_marks(&self) -> &[(Idx, u64)] {
        &self.loss_marks
    }

    /// Traced system calls by [`SysCall`], dropped ones included.
    pub fn sys_total(&self, c: SysCall) -> &SysTotal {
        &self.sys[c as usize]
    }

    /// Events by [`Kind`], dropped ones included.
    pub fn kind_count(&self, k: Kind) -> u64 {
        self.by_kind[k as usize]
    }

    /// The fatal signal, once it arrived.
    pub fn crash(&self) -> Option<Idx> {
        self.crash
    }

    /// The recording ended at `ns` (CLOCK_MONOTONIC).
    pub fn set_end_ns(&mut self, ns: Option<u64>) {
        self.end_ns = ns;
    }

    /// Replaces the loss counters without marking the timeline (the last
    /// snapshot of a file, which the marks already placed).
    pub fn set_lost(&mut self, l: Lost) {
        self.lost = l;
    }

    /// A new (cumulative) loss snapshot: marks the timeline where the
    /// count of lost events rose.
    pub fn note_lost(&mut self, l: Lost) {
        if l.events() > self.lost.events() {
            self.loss_marks.push((self.store.end(), l.events()));
        }
        self.lost = l;
    }

    pub fn add_module(&mut self, m: Module) {
        self.modules.push(m);
    }

    pub fn add_probe(&mut self, p: Probe) {
        self.probes.push(p);
    }

    /// The probe with `id` (ids are table indexes).
    pub fn probe(&self, id: crate::event::ProbeId) -> Option<&Probe> {
        self.probes.iter().find(|p| p.id == id)
    }

    pub fn add_stack(&mut self, s: Stack) {
        let key: Vec<SiteFrame> = s.frames.iter().map(SiteFrame::of).collect();
        let site = *self.site_keys.entry(key).or_insert(s.id);
        if let Ok(i) = usize::try_from(s.id) {
            if self.sites.len() <= i {
                self.sites.resize(i + 1, StackId::MAX);
            }
            self.sites[i] = site;
        }
        self.stacks.push(s);
    }

    /// The site (see `sites`) of a stack.
    pub fn site_of(&self, stack: Option<StackId>) -> Option<StackId> {
        site_in(&self.sites, stack)
    }

    /// A block live when the held recording begins, allocated (at `ts`)
    /// before it: the heap starts with it, as a child's starts with its
    /// parent's blocks. Call in time order, before the events.
    pub fn carry(&mut self, b: &crate::trace::CarriedBlock) {
        let p = match self.proc_of.get(&b.pid) {
            Some(&p) => p,
            None => self.new_process(b.pid, None, b.ts),
        };
        self.window.get_or_insert(None);
        self.carrying = true;
        self.push_one(
            &Event {
                ts: b.ts,
                pid: b.pid,
                tid: b.tid,
                kind: EventKind::Inherit {
                    ptr: untag(b.ptr) | (p as u64) << TAG_SHIFT,
                    size: b.size,
                    stack: b.stack,
                },
            },
            p,
        );
        self.carrying = false;
    }

    /// Parts of the recording are missing before `ts`: the heap is
    /// `blocks` (the blocks the part read next carried in), not what the
    /// events before left. Blocks live and not among them end (discarded),
    /// those among them not live begin (carried in), at `ts` (or the last
    /// event's time, if later).
    pub fn resync(&mut self, blocks: &[crate::trace::CarriedBlock], ts: u64) {
        let ts = self
            .store
            .end()
            .checked_sub(1)
            .and_then(|i| self.store.ts(i))
            .map_or(ts, |last| ts.max(last));
        let mut want: std::collections::HashMap<u64, &crate::trace::CarriedBlock> =
            std::collections::HashMap::new();
        for b in blocks {
            let p = match self.proc_of.get(&b.pid) {
                Some(&p) => p,
                None => self.new_process(b.pid, None, ts),
            };
            want.insert(untag(b.ptr) | (p as u64) << TAG_SHIFT, b);
        }
        for b in self.heap.now(&self.store) {
            if want.get(&b.ptr).is_some_and(|w| w.size == b.size) {
                want.remove(&b.ptr);
                continue;
            }
            let p = (b.ptr >> TAG_SHIFT) as usize;
            let Some(pid) = self.processes.get(p).map(|x| x.pid) else {
                continue;
            };
            self.push_one(
                &Event {
                    ts,
                    pid,
                    tid: b.tid,
                    kind: EventKind::Discard { ptr: b.ptr },
                },
                p,
            );
        }
        let mut add: Vec<(u64, &crate::trace::CarriedBlock)> = want.into_iter().collect();
        add.sort_unstable_by_key(|(ptr, b)| (b.ts, *ptr));
        self.carrying = true;
        for (ptr, b) in add {
            let p = (ptr >> TAG_SHIFT) as usize;
            self.push_one(
                &Event {
                    ts,
                    pid: b.pid,
                    tid: b.tid,
                    kind: EventKind::Inherit {
                        ptr,
                        size: b.size,
                        stack: b.stack,
                    },
                },
                p,
            );
        }
        self.carrying = false;
    }

    /// Takes one event: O(1) amortized (a fork or an exec also takes the
    /// blocks the child inherits or the image loses).
    pub fn push(&mut self, e: &Event) -> Idx {
        if let Some(w @ None) = &mut self.window {
            *w = Some(e.ts);
        }
        let p = match self.proc_of.get(&e.pid) {
            Some(&p) => p,
            // A child not announced by a fork (its fork was lost): its own
            // process all the same.
            None => self.new_process(e.pid, None, e.ts),
        };
        if let EventKind::Exec { filename } = &e.kind {
            // The old image's heap is gone with it.
            for b in self.heap.now_of(&self.store, p as u64) {
                self.push_one(
                    &Event {
                        ts: e.ts,
                        pid: e.pid,
                        tid: e.tid,
                        kind: EventKind::Discard { ptr: b.ptr },
                    },
                    p,
                );
            }
            self.processes[p].command = filename.clone();
        }
        let tagged;
        let heap = matches!(
            e.kind,
            EventKind::Alloc { .. } | EventKind::Free { .. } | EventKind::Realloc { .. }
        );
        let e = if p != 0 && heap {
            tagged = tag_event(e, p as u64);
            &tagged
        } else {
            e
        };
        let idx = self.push_one(e, p);
        if let EventKind::Spawn {
            child,
            thread: false,
        } = e.kind
        {
            if !self.meta.follow {
                // Not followed: nothing of the child is recorded.
                return idx;
            }
            let c = self.new_process(child, Some(e.pid), e.ts);
            // The child starts with its parent's live blocks as its own.
            for b in self.heap.now_of(&self.store, p as u64) {
                self.push_one(
                    &Event {
                        ts: e.ts,
                        pid: child,
                        tid: child,
                        kind: EventKind::Inherit {
                            ptr: untag(b.ptr) | (c as u64) << TAG_SHIFT,
                            size: b.size,
                            stack: b.stack,
                        },
                    },
                    c,
                );
            }
        }
        idx
    }

    /// A new process (`pid`'s old one, if any, is over): its index.
    fn new_process(&mut self, pid: u32, ppid: Option<u32>, ts: u64) -> usize {
        if self.processes.len() >= MAX_PROCESSES {
            // Out of tags: the last one is shared from here on.
            let p = MAX_PROCESSES - 1;
            self.proc_of.insert(pid, p);
            return p;
        }
        let command = ppid
            .and_then(|pp| self.proc_of.get(&pp))
            .map(|&i| self.processes[i].command.clone())
            .unwrap_or_default();
        self.processes.push(Process {
            pid,
            ppid,
            command,
            start_ns: ts,
            ..Process::default()
        });
        let p = self.processes.len() - 1;
        self.proc_of.insert(pid, p);
        p
    }

    /// Takes one event of process `p` (its addresses tagged).
    fn push_one(&mut self, e: &Event, p: usize) -> Idx {
        if self.store.end().is_multiple_of(CHUNK as u64) && self.store.end() > 0 {
            self.enforce_budget();
        }
        let idx = self.store.push(e);
        if matches!(e.kind, EventKind::Watch(_)) {
            self.watch_hits.push(idx);
        }
        let ch = self.heap.on_event(&self.store, idx);
        {
            let synthetic = matches!(
                e.kind,
                EventKind::Inherit { .. } | EventKind::Discard { .. }
            );
            if synthetic {
                self.made.push(idx);
                self.heap.not_a_call(&ch);
            }
            let tag = |ptr: u64| (ptr >> TAG_SHIFT) as usize;
            if let Some(b) = ch.born {
                if let Some(h) = self.processes.get_mut(tag(b.ptr)).map(|p| &mut p.heap) {
                    h.live_blocks += 1;
                    h.live_bytes = h.live_bytes.wrapping_add(b.size);
                    if synthetic && self.carrying {
                        h.carried += 1;
                    } else if synthetic {
                        h.inherited += 1;
                    } else {
                        h.allocs += 1;
                        h.alloc_bytes = h.alloc_bytes.wrapping_add(b.size);
                    }
                }
            }
            for end in ch.ended.iter().flatten() {
                if let Some(h) = self
                    .processes
                    .get_mut(tag(end.block.ptr))
                    .map(|p| &mut p.heap)
                {
                    h.live_blocks = h.live_blocks.saturating_sub(1);
                    h.live_bytes = h.live_bytes.saturating_sub(end.block.size);
                    if synthetic {
                        h.discarded += 1;
                    } else if end.freed {
                        h.frees += 1;
                    }
                }
            }
        }
        if self.carrying {
            // Live before the window: not an allocation of it.
            self.leaks.on_carry(&ch, e.ts, &self.sites);
        } else {
            self.leaks.on_change(&ch, e.ts, &self.sites);
        }
        if let Some(b) = ch.born {
            self.kinds.on_block(b.ptr);
        }
        self.spans.on_event(idx, e, &self.probes);
        self.by_kind[e.kind.kind() as usize] += 1;
        match &e.kind {
            EventKind::Signal(s) => {
                if p == 0 {
                    self.last_signal = Some((idx, s.signo));
                }
                let pr = &mut self.processes[p];
                pr.last_signal = Some((idx, s.signo));
                if !s.handled {
                    pr.crash = pr.crash.or(Some(idx));
                    self.crash = self.crash.or(Some(idx));
                }
            }
            EventKind::ProcessExit { status } => {
                let pr = &mut self.processes[p];
                pr.exit = Some(*status);
                // A handled signal that still killed it is its crash.
                if let (None, ExitStatus::Signal { signo, .. }, Some((i, s))) =
                    (pr.crash, *status, pr.last_signal)
                {
                    if s == signo {
                        pr.crash = Some(i);
                        self.crash = self.crash.or(Some(i));
                    }
                }
                if p == 0 {
                    self.set_exit(*status);
                }
            }
            EventKind::Sys(s) => {
                let t = &mut self.sys[s.call as usize];
                t.count += 1;
                t.total_ns = t.total_ns.saturating_add(s.dur_ns);
                if s.ret == -11 {
                    t.would_block += 1;
                }
                if s.call.failed(s.ret) {
                    t.errors += 1;
                } else if s.ret > 0 && s.call.moves_bytes() {
                    t.bytes = t.bytes.saturating_add(s.ret.unsigned_abs());
                }
            }
            _ => {}
        }
        idx
    }

    pub fn set_exit(&mut self, status: ExitStatus) {
        self.exit = Some(status);
        // A handled signal that still killed the process is the crash.
        if let (None, ExitStatus::Signal { signo, .. }, Some((i, s))) =
            (self.crash, status, self.last_signal)
        {
            if s == signo {
                self.crash = Some(i);
            }
        }
    }

    /// Bytes held by the events and indexes.
    pub fn bytes(&self) -> usize {
        self.store.bytes() + self.heap.bytes() + self.spans.bytes()
    }

    fn enforce_budget(&mut self) {
        while self.bytes() > self.memory_budget && self.store.chunk_starts().count() > 2 {
            let Some(next) = self.store.chunk_starts().nth(1) else {
                break;
            };
            self.heap.before_drop(&self.store, next);
            self.store.drop_oldest();
            self.spans.retain_from(self.store.first());
        }
    }

    /// The first and last event time held (CLOCK_MONOTONIC ns).
    pub fn span(&self) -> Option<(u64, u64)> {
        let h = self.store.held();
        Some((
            self.store.ts(h.start)?,
            self.store.ts(h.end.checked_sub(1)?)?,
        ))
    }

    /// The end of the recording: its end record, else the last event.
    pub fn end_time(&self) -> u64 {
        let last = self.span().map_or(self.meta.start_mono_ns, |(_, b)| b);
        self.end_ns.map_or(last, |e| e.max(last))
    }

    /// Live blocks just after event `i` (the state the UI shows with the
    /// cursor on `i`).
    pub fn heap_after(&self, i: Idx) -> Option<Vec<LiveBlock>> {
        self.heap.at(&self.store, i + 1)
    }

    /// What was allocated from event `from` on and is still live after
    /// event `upto`, by allocation stack, most bytes first.
    pub fn diff(&self, from: Idx, upto: Idx) -> Option<Vec<SiteGroup>> {
        let live = self.heap_after(upto)?;
        Some(group_by_site(
            live.iter().filter(|b| b.alloc >= from),
            &self.sites,
        ))
    }

    /// Every block that lived at (or covered) `addr`.
    pub fn block_history(&self, addr: u64) -> history::History {
        let mut h = history::at_start(&self.store, &self.heap, addr);
        if h.lives.is_empty() && h.stray_frees.is_empty() {
            h.lives = history::covering(&self.store, &self.heap, addr);
        }
        h
    }

    /// Heap event `c` (at block-start address `addr`) in its block's
    /// life, at a bounded cost whatever the address's reuse.
    pub fn around(&self, addr: u64, c: Idx) -> history::Around {
        history::around(&self.store, &self.heap, addr, c, HISTORY_CAP)
    }

    /// The event that ended the block allocated at `alloc`, if held.
    pub fn end_of(&self, alloc: Idx) -> Option<Idx> {
        let ptr = self.heap.block(&self.store, alloc)?.ptr;
        history::end_of(&self.store, ptr, alloc)
    }

    /// Outstanding blocks by allocation stack, as of the latest event.
    pub fn leak_groups(&self) -> Vec<LeakGroup> {
        self.leaks
            .groups(&self.heap, &self.store, &self.sites, self.kinds.last())
    }

    /// A leak scan of the blocks live now (the target stopped after the
    /// last event held).
    pub fn add_leak_scan(&mut self, scan: crate::event::LeakScan) {
        self.kinds.add(scan, &self.heap, &self.store);
    }

    /// The last leak scan, if one was made.
    pub fn leak_scan(&self) -> Option<&KindsAt> {
        self.kinds.last()
    }

    /// Whether a heap block ever started in `[start, end)` (a mapping
    /// that held one is the allocator's, not a leak scan's root).
    pub fn held_blocks(&self, start: u64, end: u64) -> bool {
        self.kinds.held_blocks(start, end)
    }

    /// The crash explained, if there was one.
    pub fn diagnosis(&self) -> Option<Diagnosis> {
        diagnose::diagnose(self, self.crash?)
    }

    /// The diagnosis of the fatal signal at event `i` (a child's crash).
    pub fn diagnosis_at(&self, i: Idx) -> Option<Diagnosis> {
        diagnose::diagnose(self, i)
    }

    /// Watchpoint hits recorded (findings or not).
    pub fn watch_hits(&self) -> usize {
        self.watch_hits.len()
    }

    /// The bugs watchpoints caught, in order: one per block and kind (its
    /// first access; the later ones counted). Hits that were not the
    /// program's (the allocator's own work) are left out.
    pub fn findings(&self) -> Vec<Finding> {
        let mut out: Vec<Finding> = Vec::new();
        let mut seen: crate::util::hash::FxMap<(u64, u64, diagnose::DiagKind), usize> =
            Default::default();
        for &i in &self.watch_hits {
            let Some(d) = diagnose::diagnose(self, i) else {
                continue;
            };
            let key = (
                d.block.map_or(0, |b| b.0),
                d.alloc.as_ref().map_or(0, |a| a.ts),
                d.kind,
            );
            if let Some(&k) = seen.get(&key) {
                out[k].more += 1;
                continue;
            }
            seen.insert(key, out.len());
            out.push(Finding {
                idx: i,
                diagnosis: d,
                more: 0,
            });
        }
        out
    }

    /// Process `p`'s live blocks now, by allocation site (its leaks when it
    /// has ended).
    pub fn live_sites_of(&self, p: usize) -> Vec<SiteGroup> {
        let blocks = self.heap.now_of(&self.store, p as u64);
        group_by_site(&blocks, &self.sites)
    }

    /// A filter from `kind=free,realloc tid=42 func=drop_conn addr=0x…
    /// call=parse_*` (terms separated by spaces; all must hold). `func`
    /// matches stacks with a function containing the text; `call` the
    /// Call and Return events of the probed functions named (`*` and `?` globs).
    pub fn parse_filter(&self, spec: &str) -> Result<Filter, String> {
        let mut f = Filter::default();
        for term in spec.split_whitespace() {
            let (key, val) = term.split_once('=').ok_or_else(|| {
                format!("filter term '{term}' is not key=value (keys: {FILTER_KEYS})")
            })?;
            match key {
                "kind" => {
                    for k in val.split(',') {
                        let kind = Kind::from_name(k).ok_or_else(|| {
                            let names: Vec<&str> = Kind::iter().map(Kind::name).collect();
                            format!("unknown event kind '{k}' (kinds: {})", names.join(", "))
                        })?;
                        f = f.kind(kind);
                    }
                }
                "tid" => {
                    f.tid = Some(val.parse().map_err(|_| format!("invalid tid '{val}'"))?);
                }
                "pid" => {
                    f.pid = Some(val.parse().map_err(|_| format!("invalid pid '{val}'"))?);
                }
                "addr" => {
                    let hex = val.trim_start_matches("0x");
                    f.addr = Some(
                        u64::from_str_radix(hex, 16)
                            .map_err(|_| format!("invalid address '{val}' (hex)"))?,
                    );
                }
                "call" => {
                    let p: crate::util::hash::FxSet<ProbeId> = self
                        .probes
                        .iter()
                        .filter(|p| crate::util::glob_match(val, &p.func))
                        .map(|p| p.id)
                        .collect();
                    if p.is_empty() {
                        let names: Vec<&str> =
                            self.probes.iter().map(|p| p.func.as_str()).collect();
                        return Err(if names.is_empty() {
                            "call=: this recording has no probed functions (--probe)".to_string()
                        } else {
                            format!(
                                "no probed function matches '{val}' (probed: {})",
                                names.join(", ")
                            )
                        });
                    }
                    f.probes = Some(p);
                }
                "func" => {
                    let s = Names::stacks_with(&self.stacks, val);
                    let probes: crate::util::hash::FxSet<crate::event::ProbeId> = self
                        .probes
                        .iter()
                        .filter(|p| p.func.contains(val))
                        .map(|p| p.id)
                        .collect();
                    if s.is_empty() && probes.is_empty() {
                        return Err(format!("no recorded stack has a function matching '{val}'"));
                    }
                    f.stacks = Some(s);
                    f.stack_probes = probes;
                }
                _ => return Err(format!("unknown filter key '{key}' (keys: {FILTER_KEYS})")),
            }
        }
        Ok(f)
    }

    /// The probed calls event `i` happened inside, outermost first.
    pub fn call_path(&self, i: Idx) -> Vec<&Span> {
        match self.store.tid(i) {
            Some(tid) => self.spans.path(tid, i),
            None => Vec::new(),
        }
    }

    /// The call a Call or Return event begins or ends.
    pub fn span_of(&self, i: Idx) -> Option<&Span> {
        match self.store.kind(i)? {
            Kind::Call => self.spans.of_call(i),
            Kind::Return => self.spans.of_return(i),
            _ => None,
        }
    }

    /// `func (file:line)` of the top user frame of a stack.
    pub fn site(&self, stack: Option<StackId>) -> Option<String> {
        self.names.site(&self.stacks, &self.modules, stack?)
    }

    pub fn stack(&self, id: Option<StackId>) -> Option<&Stack> {
        crate::event::find_stack(&self.stacks, id?)
    }
}

#[cfg(test)]
mod tests;
