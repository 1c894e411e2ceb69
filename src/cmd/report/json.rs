//! The `report --json` document as types: one struct per object of the
//! schema in the README, built from a trace by [`Report::of`].
//!
//! Fields are declared in alphabetical order: the document was first built
//! from `serde_json::Value` maps, which sort their keys, and serde writes a
//! struct's fields in declaration order, so this keeps the bytes as they
//! were. The snapshot tests in `report.rs` hold the order and the names.

use std::collections::BTreeMap;

use anyhow::Result;
use serde::Serialize;

use super::{
    probe_name, probe_rows, stack_of, top_user_frame, wall, window, window_live, Options, Summary,
};
use crate::event::{
    si_code_name, signal_name, Arg, EventKind, ExitStatus, ProbeId, StackId, SysCall,
};
use crate::model::diagnose;
use crate::model::store::Idx;
use crate::model::Timeline;
use crate::trace::Trace;

/// `schema_version`. Fields are added, never renamed, and an added field
/// keeps the version.
pub const SCHEMA_VERSION: u32 = 1;

#[derive(Serialize)]
pub struct Report {
    at_ns: u64,
    crash: Option<Crash>,
    damage: Option<Damage>,
    duration_ns: u64,
    events: Events,
    exit: Option<Exit>,
    families: Vec<&'static str>,
    /// Bugs watchpoints caught (the program did not crash on them), each
    /// shaped like `crash.diagnosis`, plus `time_ns` and `more` (later
    /// accesses of the same block).
    findings: Vec<FindingJson>,
    heap: Heap,
    /// Records missing, repeated or out of order, where each was seen.
    integrity: Vec<Damage>,
    /// valgrind's LEAK SUMMARY from the last leak scan; null without one.
    leak_summary: Option<LeakSummary>,
    leaks: Vec<Leak>,
    probes: Vec<Probe>,
    /// The root process first, then each child followed (the top-level
    /// fields are the root's and the recording's).
    processes: Vec<Process>,
    retention: Retention,
    schema_version: u32,
    start_wall: String,
    syscalls: Vec<SysTotal>,
    target: Target,
    window: Vec<WindowEvent>,
    /// Only with an explicit window (`--window`).
    window_live: Option<Vec<LiveGroup>>,
}

#[derive(Serialize)]
pub struct Process {
    command: String,
    crash: Option<Crash>,
    exit: Option<Exit>,
    heap: ProcessHeap,
    /// Live at the end of the recording (or at its exit), by site.
    leaks: Vec<LiveGroup>,
    pid: u32,
    ppid: Option<u32>,
    start_ns: u64,
}

#[derive(Serialize)]
pub struct ProcessHeap {
    alloc_bytes: u64,
    allocs: u64,
    discarded_blocks: u64,
    frees: u64,
    inherited_blocks: u64,
    live_blocks: u64,
    live_bytes: u64,
}

fn exit_json(s: ExitStatus) -> Exit {
    match s {
        ExitStatus::Code(code) => Exit::Code { code },
        ExitStatus::Signal { signo, core } => Exit::Signal {
            core,
            signal: signal_name(signo),
        },
    }
}

#[derive(Serialize)]
pub struct Target {
    allocator: String,
    command: String,
    pid: u32,
}

#[derive(Serialize)]
#[serde(untagged)]
pub enum Exit {
    Code { code: i32 },
    Signal { core: bool, signal: &'static str },
}

#[derive(Serialize)]
pub struct Events {
    /// Only the kinds that occurred.
    by_kind: BTreeMap<&'static str, u64>,
    lost: Lost,
    total: usize,
}

#[derive(Serialize)]
pub struct Lost {
    channel_full: u64,
    events_without_stack: u64,
    inflight_full: u64,
    ringbuf_full: u64,
    stack_table_full: u64,
    undecodable: u64,
}

#[derive(Serialize)]
pub struct Heap {
    allocs: u64,
    failed_allocs: u64,
    frees: u64,
    live_blocks: u64,
    live_bytes: u64,
    /// The moment `live_*` are at (ns from the start): `--at` when the
    /// read stopped there; null: the end (with `--whole`, whatever `--at`).
    at_ns: Option<u64>,
    /// `--at` before a bounded recording's held window: `live_*` count
    /// only the blocks allocated by then that lived into it (a lower
    /// bound).
    partial: bool,
    unknown_frees: u64,
}

#[derive(Serialize)]
pub struct Crash {
    addr: String,
    diagnosis: Option<Diagnosis>,
    /// What the program said as it aborted (glibc's abort message).
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    /// Who sent the signal (si_code ≤ 0: kill, tkill, sigqueue).
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<Sender>,
    si_code: String,
    signal: &'static str,
    signo: i32,
    stack: Vec<Frame>,
    tid: u32,
    time_ns: u64,
}

#[derive(Serialize)]
pub struct Diagnosis {
    access: Option<Site>,
    access_stack: Option<Vec<Frame>>,
    alloc: Option<Site>,
    alloc_stack: Option<Vec<Frame>>,
    block: Option<Block>,
    free: Option<Site>,
    free_stack: Option<Vec<Frame>>,
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<String>,
    notes: Vec<String>,
    offset: Option<i64>,
    /// wild-pointer: the faulting instruction's memory operand.
    #[serde(skip_serializing_if = "Option::is_none")]
    operand: Option<Operand>,
    /// The fatal delivery when the cause (`access`) is an earlier one the
    /// program's handler caught and raised again.
    #[serde(skip_serializing_if = "Option::is_none")]
    reraised: Option<Site>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sender: Option<Sender>,
    summary: String,
}

#[derive(Serialize)]
pub struct FindingJson {
    #[serde(flatten)]
    diagnosis: Diagnosis,
    more: usize,
    pid: u32,
    tid: u32,
    time_ns: u64,
}

#[derive(Serialize)]
pub struct Sender {
    comm: Option<String>,
    pid: u32,
    uid: u32,
}

impl Sender {
    fn of(s: &crate::event::SignalSender) -> Sender {
        Sender {
            comm: (!s.comm.is_empty()).then(|| s.comm.clone()),
            pid: s.pid,
            uid: s.uid,
        }
    }
}

#[derive(Serialize)]
pub struct Operand {
    /// The address the operand computes to (null: depends on fs/gs).
    addr: Option<String>,
    non_canonical: Option<bool>,
    /// The base (else index) register and its value.
    register: Option<&'static str>,
    /// `mov [rax+0x8]`.
    text: String,
    value: Option<String>,
    /// The register's value as text, when all its bytes are printable.
    value_text: Option<String>,
}

#[derive(Serialize)]
pub struct Block {
    addr: String,
    size: u64,
}

/// Where and when something happened to the diagnosed block.
#[derive(Serialize)]
pub struct Site {
    site: Option<String>,
    tid: u32,
    time_ns: u64,
}

/// A stack frame; every stack in the document is a list of these.
#[derive(Serialize)]
pub struct Frame {
    addr: String,
    file: Option<String>,
    func: Option<String>,
    /// A call the compiler inlined into the next frame (same address);
    /// present only when true.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    inlined: bool,
    line: Option<u32>,
    module: Option<String>,
    offset: String,
    /// On a truncated stack's last frame only: why the walk stopped there.
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated_after: Option<String>,
}

/// Blocks and bytes.
#[derive(Serialize)]
pub struct KindTotal {
    blocks: u64,
    bytes: u64,
}

impl From<crate::model::leakkinds::Total> for KindTotal {
    fn from(t: crate::model::leakkinds::Total) -> Self {
        KindTotal {
            blocks: t.blocks,
            bytes: t.bytes,
        }
    }
}

/// A scan of the target's memory for pointers to its live blocks.
#[derive(Serialize)]
pub struct LeakSummary {
    /// Bytes of live blocks read.
    block_bytes: u64,
    /// What makes the kinds less than exact; empty when nothing does.
    caveats: Vec<String>,
    definitely_lost: KindTotal,
    indirectly_lost: KindTotal,
    /// How long the target was stopped for it.
    paused_ns: u64,
    pid: u32,
    possibly_lost: KindTotal,
    /// Bytes of roots read (data, bss, stacks, other anonymous memory).
    root_bytes: u64,
    still_reachable: KindTotal,
    time_ns: u64,
    /// "exit" (a launched target held in its exit) or "paused".
    trigger: &'static str,
}

/// The blocks live at the end from one allocation stack.
#[derive(Serialize)]
pub struct Leak {
    allocs: u64,
    blocks: u64,
    bytes: u64,
    frees: u64,
    growth_bytes_per_s: f64,
    /// The worst kind the last leak scan gave its blocks; null without a
    /// scan (or for blocks born after it).
    kind: Option<&'static str>,
    /// Its blocks by kind (the kinds found only).
    kinds: BTreeMap<&'static str, KindTotal>,
    oldest_age_ns: u64,
    oldest_ns: u64,
    site: Option<String>,
    stack: Vec<Frame>,
    suspected: bool,
}

/// Live blocks from one allocation stack: a process's at its exit (or
/// the end), or those allocated in the window and live at its end.
#[derive(Serialize)]
pub struct LiveGroup {
    blocks: u64,
    bytes: u64,
    site: Option<String>,
    stack: Vec<Frame>,
}

impl LiveGroup {
    fn of(g: &crate::model::SiteGroup, sum: &Summary, t: &Trace) -> LiveGroup {
        LiveGroup {
            blocks: g.blocks,
            bytes: g.bytes,
            site: sum.tl.site(g.stack),
            stack: timeline_stack(&sum.tl, g.stack, t),
        }
    }
}

#[derive(Serialize)]
pub struct Probe {
    args: Vec<&'static str>,
    calls: u64,
    entry_only: bool,
    errors: u64,
    func: String,
    id: ProbeId,
    mean_ns: Option<u64>,
    module: String,
    p99_ns: Option<u64>,
    ret: &'static str,
    returned: u64,
    total_ns: u64,
    unfinished: u64,
}

#[derive(Serialize)]
pub struct SysTotal {
    bytes: u64,
    call: &'static str,
    count: u64,
    errors: u64,
    family: &'static str,
    total_ns: u64,
    would_block: u64,
}

#[derive(Serialize)]
pub struct Retention {
    dropped_events: u64,
    held_from_ns: Option<u64>,
    memory_budget: usize,
    /// A bounded recording (`record --max-size/--keep`), or a file read
    /// from a part (`--at`): null otherwise.
    segments: Option<Segments>,
    /// Not the whole recording was read (`--at` without `--whole`): from
    /// the part before the moment (null: the start) up to it (null: the
    /// end). Null when all of it was read.
    read: Option<ReadSpan>,
}

#[derive(Serialize)]
pub struct ReadSpan {
    from_ns: Option<u64>,
    to_ns: Option<u64>,
    /// Bytes of the trace before the part read from (not read).
    skipped_bytes: u64,
    /// The program was killed by a signal, its crash before the part
    /// read (`crash` is null): `--whole` shows it.
    crash_before: bool,
}

#[derive(Serialize)]
pub struct Segments {
    /// Blocks live when the first held segment began (allocated before).
    carried_blocks: u64,
    carried_bytes: u64,
    /// Segments dropped before the first held one.
    dropped: u64,
    /// The first recorded event held (after the carried blocks).
    events_from_ns: Option<u64>,
    first: u64,
    held: u64,
    /// Windows kept apart before crashes and findings (`DIR/kept-N`).
    kept: Vec<String>,
}

#[derive(Serialize)]
pub struct Damage {
    offset: u64,
    reason: String,
}

/// A window event. Every kind has `addr`, `file`, `func`, `kind`, `line`,
/// `size`, `tid` and `time_ns` (and `stack` when it has one); the probe and
/// syscall families add their own fields, in among those alphabetically, so
/// each shape is a struct of its own rather than a flattened common part.
#[derive(Serialize)]
#[serde(untagged)]
pub enum WindowEvent {
    Call(CallEvent),
    Return(ReturnEvent),
    Sys(SysEvent),
    OffCpu(OffCpuEvent),
    /// Memory, signal and lifecycle events.
    Plain(PlainEvent),
}

/// A field every window event has, always null for this kind.
#[derive(Serialize)]
pub struct Null;

#[derive(Serialize)]
pub struct PlainEvent {
    addr: Option<String>,
    file: Option<String>,
    func: Option<String>,
    kind: &'static str,
    line: Option<u32>,
    /// Realloc only.
    #[serde(skip_serializing_if = "Option::is_none")]
    old_addr: Option<String>,
    size: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack: Option<Vec<Frame>>,
    tid: u32,
    time_ns: u64,
}

#[derive(Serialize)]
pub struct CallEvent {
    addr: Null,
    args: Vec<ArgValue>,
    depth: Option<u32>,
    duration_ns: Option<u64>,
    file: Option<String>,
    /// The probed function, not the top frame's.
    func: String,
    kind: &'static str,
    line: Option<u32>,
    outcome: Option<&'static str>,
    probe: ProbeId,
    /// Null without a return.
    ret: ArgValue,
    size: Null,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack: Option<Vec<Frame>>,
    tid: u32,
    time_ns: u64,
}

#[derive(Serialize)]
pub struct ReturnEvent {
    addr: Null,
    depth: Option<u32>,
    duration_ns: Option<u64>,
    file: Option<String>,
    func: String,
    kind: &'static str,
    line: Option<u32>,
    probe: ProbeId,
    ret: ArgValue,
    size: Null,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack: Option<Vec<Frame>>,
    tid: u32,
    time_ns: u64,
}

#[derive(Serialize)]
pub struct SysEvent {
    /// The futex of a `lock` event; null for the others.
    addr: Option<String>,
    call: &'static str,
    duration_ns: u64,
    fd: i32,
    file: Option<String>,
    /// open: octal.
    #[serde(skip_serializing_if = "Option::is_none")]
    flags: Option<String>,
    func: Option<String>,
    kind: &'static str,
    len: u64,
    line: Option<u32>,
    /// pread and pwrite.
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    /// dup.
    #[serde(skip_serializing_if = "Option::is_none")]
    old_fd: Option<i64>,
    ret: i64,
    size: Null,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack: Option<Vec<Frame>>,
    target: Option<String>,
    tid: u32,
    time_ns: u64,
}

#[derive(Serialize)]
pub struct OffCpuEvent {
    addr: Null,
    duration_ns: u64,
    file: Option<String>,
    func: Option<String>,
    kind: &'static str,
    line: Option<u32>,
    preempted: bool,
    size: Null,
    #[serde(skip_serializing_if = "Option::is_none")]
    stack: Option<Vec<Frame>>,
    tid: u32,
    time_ns: u64,
}

/// An argument or return value: integers as numbers, pointers as hex
/// strings, strings as strings, NULL as null.
#[derive(Serialize)]
#[serde(untagged)]
pub enum ArgValue {
    Null,
    Int(i64),
    Uint(u64),
    Bool(bool),
    Str(String),
    /// Not a string of its own: "0x…" could be one.
    Unreadable {
        unreadable: String,
    },
}

impl From<&Arg> for ArgValue {
    fn from(a: &Arg) -> Self {
        match a {
            Arg::Int(v) => ArgValue::Int(*v),
            Arg::Uint(v) => ArgValue::Uint(*v),
            Arg::Ptr(0) | Arg::BadStr(0) => ArgValue::Null,
            Arg::Ptr(p) => ArgValue::Str(format!("{p:#x}")),
            Arg::BadStr(p) => ArgValue::Unreadable {
                unreadable: format!("{p:#x}"),
            },
            Arg::Bool(b) => ArgValue::Bool(*b),
            Arg::Char(c) => ArgValue::Str((*c as char).to_string()),
            Arg::Str(s) => ArgValue::Str(s.clone()),
        }
    }
}

fn ret_value(tl: &Timeline, probe: ProbeId, ret: u64) -> ArgValue {
    ArgValue::from(&match tl.probe(probe) {
        Some(p) => p.ret_value(ret),
        None => Arg::guess(ret),
    })
}

impl Report {
    pub fn of(t: &Trace, sum: &Summary, opts: &Options) -> Result<Report> {
        let start = t.meta.start_mono_ns;
        let shown = window(t, sum, opts)?;
        let crate::event::Lost {
            ringbuf,
            stack_table,
            inflight,
            channel,
            stackless,
            undecodable,
        } = t.lost;
        let heap = sum.tl.heap();
        Ok(Report {
            at_ns: shown.at.saturating_sub(start),
            crash: Crash::of(t, sum),
            damage: t.damage.as_ref().map(|d| Damage {
                offset: d.offset,
                reason: d.reason.clone(),
            }),
            integrity: t
                .integrity
                .iter()
                .map(|d| Damage {
                    offset: d.offset,
                    reason: d.reason.clone(),
                })
                .collect(),
            duration_ns: sum.end_ns.saturating_sub(start),
            events: Events {
                by_kind: sum.by_kind.clone(),
                lost: Lost {
                    channel_full: channel,
                    events_without_stack: stackless,
                    inflight_full: inflight,
                    ringbuf_full: ringbuf,
                    stack_table_full: stack_table,
                    undecodable,
                },
                total: t.event_count as usize,
            },
            exit: t.end.as_ref().and_then(|e| e.status).map(|s| match s {
                ExitStatus::Code(code) => Exit::Code { code },
                ExitStatus::Signal { signo, core } => Exit::Signal {
                    core,
                    signal: signal_name(signo),
                },
            }),
            families: t.meta.families.names(),
            findings: sum
                .tl
                .findings()
                .iter()
                .filter_map(|f| {
                    let e = sum.tl.store().get(f.idx)?;
                    Some(FindingJson {
                        diagnosis: Diagnosis::of(&f.diagnosis, &sum.tl, t),
                        more: f.more,
                        pid: e.pid,
                        tid: e.tid,
                        time_ns: e.ts.saturating_sub(t.meta.start_mono_ns),
                    })
                })
                .collect(),
            // The root process's (its children's are in `processes`).
            heap: {
                let root = &sum.tl.processes()[0].heap;
                let before = super::before_window(t, sum, opts);
                Heap {
                    allocs: root.allocs,
                    failed_allocs: heap.totals.failed,
                    frees: root.frees,
                    live_blocks: before.map_or(root.live_blocks, |b| b.0),
                    live_bytes: before.map_or(root.live_bytes, |b| b.1),
                    partial: before.is_some(),
                    at_ns: super::read_up_to(t, opts),
                    unknown_frees: heap.totals.unknown_frees,
                }
            },
            leak_summary: sum.tl.leak_scan().map(|k| {
                use crate::event::LeakKind as K;
                LeakSummary {
                    block_bytes: k.scan.block_bytes,
                    caveats: k.scan.caveats.clone(),
                    definitely_lost: k.total(K::DefinitelyLost).into(),
                    indirectly_lost: k.total(K::IndirectlyLost).into(),
                    paused_ns: k.scan.paused_ns,
                    pid: k.scan.pid,
                    possibly_lost: k.total(K::PossiblyLost).into(),
                    root_bytes: k.scan.root_bytes,
                    still_reachable: k.total(K::StillReachable).into(),
                    time_ns: k.scan.ts.saturating_sub(start),
                    trigger: k.scan.trigger.into(),
                }
            }),
            leaks: sum
                .tl
                .leak_groups()
                .iter()
                .map(|g| Leak {
                    allocs: g.allocs,
                    blocks: g.blocks,
                    bytes: g.bytes,
                    frees: g.frees,
                    growth_bytes_per_s: g.growth_bytes_per_s,
                    kind: g.kind().map(crate::event::LeakKind::name),
                    kinds: {
                        use strum::IntoEnumIterator;
                        crate::event::LeakKind::iter()
                            .filter(|k| g.by_kind[*k as usize].blocks > 0)
                            .map(|k| (k.name(), g.by_kind[k as usize].into()))
                            .collect()
                    },
                    oldest_age_ns: sum.end_ns.saturating_sub(g.oldest_ts),
                    oldest_ns: g.oldest_ts.saturating_sub(start),
                    site: sum.tl.site(g.stack),
                    stack: timeline_stack(&sum.tl, g.stack, t),
                    suspected: g.suspected,
                })
                .collect(),
            probes: probes(&sum.tl),
            retention: Retention {
                dropped_events: sum.tl.store().dropped,
                held_from_ns: sum.tl.span().map(|s| s.0.saturating_sub(start)),
                memory_budget: opts.memory,
                segments: t.window.as_ref().map(|w| Segments {
                    carried_blocks: w.carried.len() as u64,
                    carried_bytes: w.carried.iter().map(|b| b.size).sum(),
                    // Segments deleted by the bounds (not the parts a
                    // read from a part skipped: `read` says those).
                    dropped: if w.from_part.is_some() {
                        0
                    } else {
                        w.first_segment.saturating_sub(1)
                    },
                    events_from_ns: t.first_ts.map(|ts| ts.saturating_sub(start)),
                    first: w.first_segment,
                    held: w.segments,
                    kept: w.kept.iter().map(|k| k.display().to_string()).collect(),
                }),
                read: {
                    let part = t.part_start();
                    (part.is_some() || t.stopped).then(|| ReadSpan {
                        from_ns: part.and(t.first_ts).map(|ts| ts.saturating_sub(start)),
                        to_ns: super::read_up_to(t, opts),
                        skipped_bytes: part.map_or(0, |p| p.offset),
                        crash_before: super::crash_before_read(t, sum).is_some(),
                    })
                },
            },
            schema_version: SCHEMA_VERSION,
            start_wall: wall(t, start),
            syscalls: syscalls(&sum.tl),
            target: Target {
                allocator: t.meta.allocator.clone(),
                command: t.meta.command.clone(),
                pid: t.meta.pid,
            },
            window: shown
                .idx
                .iter()
                .filter_map(|&i| Some(WindowEvent::of(i as Idx, t, &*sum.event(t, i)?, &sum.tl)))
                .collect(),
            processes: sum
                .tl
                .processes()
                .iter()
                .enumerate()
                .map(|(p, pr)| Process {
                    command: pr.command.clone(),
                    crash: pr
                        .crash
                        .and_then(|c| Crash::at(t, sum, usize::try_from(c).ok()?)),
                    exit: pr.exit.map(exit_json),
                    heap: ProcessHeap {
                        alloc_bytes: pr.heap.alloc_bytes,
                        allocs: pr.heap.allocs,
                        discarded_blocks: pr.heap.discarded,
                        frees: pr.heap.frees,
                        inherited_blocks: pr.heap.inherited,
                        live_blocks: pr.heap.live_blocks,
                        live_bytes: pr.heap.live_bytes,
                    },
                    leaks: sum
                        .tl
                        .live_sites_of(p)
                        .iter()
                        .map(|g| LiveGroup::of(g, sum, t))
                        .collect(),
                    pid: pr.pid,
                    ppid: pr.ppid,
                    start_ns: pr.start_ns.saturating_sub(start),
                })
                .collect(),
            window_live: shown.range.and_then(|(from, upto)| {
                let groups = window_live(sum, from, upto)?;
                Some(groups.iter().map(|g| LiveGroup::of(g, sum, t)).collect())
            }),
        })
    }
}

impl Crash {
    fn of(t: &Trace, sum: &Summary) -> Option<Crash> {
        Crash::at(t, sum, sum.crash?)
    }

    /// The fatal signal at event `i` (of any process).
    fn at(t: &Trace, sum: &Summary, i: usize) -> Option<Crash> {
        let e = sum.event(t, i)?;
        let EventKind::Signal(s) = &e.kind else {
            return None;
        };
        Some(Crash {
            addr: format!("{:#x}", s.addr),
            diagnosis: sum
                .tl
                .diagnosis_at(i as Idx)
                .map(|d| Diagnosis::of(&d, &sum.tl, t)),
            message: s.message.clone(),
            sender: s.sender.as_ref().filter(|_| s.code <= 0).map(Sender::of),
            si_code: si_code_name(s.signo, s.code),
            signal: signal_name(s.signo),
            signo: s.signo,
            stack: trace_stack(t, s.stack).unwrap_or_default(),
            tid: e.tid,
            time_ns: e.ts.saturating_sub(t.meta.start_mono_ns),
        })
    }
}

impl Diagnosis {
    fn of(d: &diagnose::Diagnosis, tl: &Timeline, t: &Trace) -> Diagnosis {
        let site = |s: &Option<diagnose::Site>| {
            s.as_ref().map(|s| Site {
                site: tl.site(s.stack),
                tid: s.tid,
                time_ns: s.ts.saturating_sub(t.meta.start_mono_ns),
            })
        };
        let stack = |s: &Option<diagnose::Site>| s.as_ref().map(|s| timeline_stack(tl, s.stack, t));
        Diagnosis {
            access: site(&d.access),
            access_stack: stack(&d.access),
            alloc: site(&d.alloc),
            alloc_stack: stack(&d.alloc),
            block: d.block.map(|(a, n)| Block {
                addr: format!("{a:#x}"),
                size: n,
            }),
            free: site(&d.free),
            free_stack: stack(&d.free),
            kind: d.kind.name(),
            message: d.extra.message.clone(),
            notes: d.notes.clone(),
            offset: d.offset,
            operand: d.extra.operand.as_ref().map(|o| Operand {
                addr: o.addr.map(|a| format!("{a:#x}")),
                non_canonical: o.addr.map(crate::model::operand::non_canonical),
                register: o.reg.map(|(r, _)| r),
                text: o.text.clone(),
                value: o.reg.map(|(_, v)| format!("{v:#x}")),
                value_text: o.reg.and_then(|(_, v)| crate::model::operand::as_text(v)),
            }),
            reraised: site(&d.extra.reraised),
            sender: d.extra.sender.as_ref().map(Sender::of),
            summary: d.summary.clone(),
        }
    }
}

impl Frame {
    fn of(f: &crate::event::Frame, t: &Trace) -> Frame {
        Frame {
            addr: format!("{:#x}", f.addr),
            file: f.file.clone(),
            func: f.func.clone(),
            inlined: f.inlined,
            line: (f.line > 0).then_some(f.line),
            module: f
                .module
                .and_then(|id| t.modules.iter().find(|m| m.id == id))
                .map(|m| m.path.clone()),
            offset: format!("{:#x}", f.offset),
            truncated_after: None,
        }
    }

    /// A stack's frames, the last one saying why the walk ended there if
    /// it was truncated.
    fn stack(st: &crate::event::Stack, t: &Trace) -> Vec<Frame> {
        let mut v: Vec<Frame> = st.frames.iter().map(|f| Frame::of(f, t)).collect();
        if let Some(last) = v.last_mut() {
            last.truncated_after = st.end.marker(last.module.as_deref());
        }
        v
    }
}

/// A stack of the trace's table (the crash's and the window events').
fn trace_stack(t: &Trace, id: Option<StackId>) -> Option<Vec<Frame>> {
    stack_of(&t.stacks, id).map(|st| Frame::stack(st, t))
}

/// A stack of the timeline's table (diagnosis and leak sites); none: `[]`.
fn timeline_stack(tl: &Timeline, id: Option<StackId>, t: &Trace) -> Vec<Frame> {
    tl.stack(id)
        .map(|st| Frame::stack(st, t))
        .unwrap_or_default()
}

fn probes(tl: &Timeline) -> Vec<Probe> {
    probe_rows(tl)
        .into_iter()
        .map(|r| Probe {
            args: r.args,
            calls: r.stats.calls,
            entry_only: r.entry_only,
            errors: r.stats.errors,
            func: r.func,
            id: r.id,
            mean_ns: r.stats.mean_ns(),
            module: r.module,
            p99_ns: r.stats.p99_ns(),
            ret: r.ret,
            returned: r.stats.returned,
            total_ns: r.stats.total_ns,
            unfinished: r.stats.unfinished(),
        })
        .collect()
}

fn syscalls(tl: &Timeline) -> Vec<SysTotal> {
    <SysCall as strum::IntoEnumIterator>::iter()
        .map(|c| (c, tl.sys_total(c)))
        .filter(|(_, t)| t.count > 0)
        .map(|(c, t)| SysTotal {
            bytes: t.bytes,
            call: c.name(),
            count: t.count,
            errors: t.errors,
            family: c.family().name(),
            total_ns: t.total_ns,
            would_block: t.would_block,
        })
        .collect()
}

impl WindowEvent {
    /// Event number `i` of the trace (and of `tl`'s recording).
    fn of(i: Idx, t: &Trace, e: &crate::event::Event, tl: &Timeline) -> WindowEvent {
        let module_path = |id: u32| {
            t.modules
                .iter()
                .find(|m| m.id == id)
                .map(|m| m.path.clone())
        };
        let st = stack_of(&t.stacks, e.kind.stack());
        let top = st.and_then(|s| top_user_frame(s, module_path));
        let file = top.and_then(|f| f.file.clone());
        let func = top.and_then(|f| f.func.clone());
        let line = top.filter(|f| f.line > 0).map(|f| f.line);
        let kind = e.kind.kind().name();
        let stack = trace_stack(t, e.kind.stack());
        let (tid, time_ns) = (e.tid, e.ts.saturating_sub(t.meta.start_mono_ns));
        match &e.kind {
            EventKind::Call(c) => {
                let span = tl.spans().of_call(i);
                WindowEvent::Call(CallEvent {
                    addr: Null,
                    args: c.args.iter().map(ArgValue::from).collect(),
                    depth: span.map(|s| s.depth),
                    duration_ns: span.and_then(|s| s.duration_ns()),
                    file,
                    func: probe_name(tl, c.probe),
                    kind,
                    line,
                    outcome: span.map(|s| s.outcome.name()),
                    probe: c.probe,
                    ret: span
                        .and_then(|s| s.ret)
                        .map_or(ArgValue::Null, |r| ret_value(tl, c.probe, r)),
                    size: Null,
                    stack,
                    tid,
                    time_ns,
                })
            }
            EventKind::Return { probe, ret, .. } => {
                let span = tl.spans().of_return(i);
                WindowEvent::Return(ReturnEvent {
                    addr: Null,
                    depth: span.map(|s| s.depth),
                    duration_ns: span.and_then(|s| s.duration_ns()),
                    file,
                    func: probe_name(tl, *probe),
                    kind,
                    line,
                    probe: *probe,
                    ret: ret_value(tl, *probe, *ret),
                    size: Null,
                    stack,
                    tid,
                    time_ns,
                })
            }
            EventKind::Sys(s) => WindowEvent::Sys(SysEvent {
                addr: (s.call == SysCall::FutexWait).then(|| format!("{:#x}", s.arg)),
                call: s.call.name(),
                duration_ns: s.dur_ns,
                fd: s.fd,
                file,
                flags: (s.call == SysCall::Open).then(|| format!("{:#o}", s.arg)),
                func,
                kind,
                len: s.len,
                line,
                offset: matches!(s.call, SysCall::Pread | SysCall::Pwrite).then_some(s.arg),
                old_fd: (s.call == SysCall::Dup).then_some(s.arg as i64),
                ret: s.ret,
                size: Null,
                stack,
                target: s.target.clone(),
                tid,
                time_ns,
            }),
            EventKind::OffCpu {
                dur_ns, preempted, ..
            } => WindowEvent::OffCpu(OffCpuEvent {
                addr: Null,
                duration_ns: *dur_ns,
                file,
                func,
                kind,
                line,
                preempted: *preempted,
                size: Null,
                stack,
                tid,
                time_ns,
            }),
            k @ (EventKind::Alloc { .. }
            | EventKind::Free { .. }
            | EventKind::Realloc { .. }
            | EventKind::Mmap { .. }
            | EventKind::Munmap { .. }
            | EventKind::Mremap { .. }
            | EventKind::Brk { .. }
            | EventKind::Signal(_)
            | EventKind::Spawn { .. }
            | EventKind::Exec { .. }
            | EventKind::ThreadExit { .. }
            | EventKind::Inherit { .. }
            | EventKind::Discard { .. }
            | EventKind::Watch(_)
            | EventKind::ProcessExit { .. }) => {
                let (addr, size) = match k {
                    EventKind::Watch(w) => (Some(w.addr), Some(u64::from(w.len))),
                    EventKind::Alloc { ptr, size, .. }
                    | EventKind::Realloc { ptr, size, .. }
                    | EventKind::Inherit { ptr, size, .. } => (Some(*ptr), Some(*size)),
                    EventKind::Free { ptr, .. } | EventKind::Discard { ptr } => (Some(*ptr), None),
                    EventKind::Mmap { ret, len, .. } => (u64::try_from(*ret).ok(), Some(*len)),
                    EventKind::Munmap { addr, len, .. } => (Some(*addr), Some(*len)),
                    // A sent signal's si_addr slot holds the sender's pid.
                    EventKind::Signal(s) => (s.fault_addr(), None),
                    EventKind::Mremap { .. }
                    | EventKind::Brk { .. }
                    | EventKind::Spawn { .. }
                    | EventKind::Exec { .. }
                    | EventKind::ThreadExit { .. }
                    | EventKind::ProcessExit { .. }
                    | EventKind::Call(_)
                    | EventKind::Return { .. }
                    | EventKind::Sys(_)
                    | EventKind::OffCpu { .. } => (None, None),
                };
                WindowEvent::Plain(PlainEvent {
                    addr: addr.map(|a| format!("{:#x}", crate::model::untag(a))),
                    file,
                    func,
                    kind,
                    line,
                    old_addr: match k {
                        EventKind::Realloc { old, .. } => Some(format!("{old:#x}")),
                        _ => None,
                    },
                    size,
                    stack,
                    tid,
                    time_ns,
                })
            }
        }
    }
}
