//! `tm-tui report`: what a recording says — target, counts, losses, heap
//! accounting, the crash with its stack, and the events around a moment —
//! as text or as JSON (schema in the README; fields are added, never
//! renamed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, Result};
use serde_json::{json, Value};

use crate::event::{
    si_code_name, signal_name, Event, EventKind, ExitStatus, Frame, SignalInfo, Stack, StackId,
};
use crate::model::diagnose::{Diagnosis, Site};
use crate::model::leaks::LeakGroup;
pub use crate::model::names::{frame_label, stack_lines, top_user_frame};
use crate::model::Timeline;
use crate::trace::Trace;

/// How many events the report shows before the moment when no window is
/// given.
pub const DEFAULT_LAST: usize = 20;

pub struct Options {
    /// The moment, relative to the start; default: the crash, else the end.
    pub at: Option<Duration>,
    /// Show events in [at - window, at]; default: the last few before it.
    pub window: Option<Duration>,
    /// Memory budget of the timeline built from the file.
    pub memory: usize,
    /// Only events matching this (`kind=free tid=42 func=f addr=0x…`).
    pub filter: Option<String>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            at: None,
            window: None,
            memory: crate::model::DEFAULT_MEMORY,
            filter: None,
        }
    }
}

/// How many leak groups the text report lists.
const TEXT_LEAKS: usize = 5;

/// The stable short name of an event kind, used in JSON and filters.
pub fn kind_name(k: &EventKind) -> &'static str {
    match k {
        EventKind::Alloc { .. } => "alloc",
        EventKind::Free { .. } => "free",
        EventKind::Realloc { .. } => "realloc",
        EventKind::Mmap { .. } => "mmap",
        EventKind::Munmap { .. } => "munmap",
        EventKind::Mremap { .. } => "mremap",
        EventKind::Brk { .. } => "brk",
        EventKind::Signal(_) => "signal",
        EventKind::Spawn { thread: true, .. } => "thread_start",
        EventKind::Spawn { thread: false, .. } => "child_process",
        EventKind::Exec { .. } => "exec",
        EventKind::ThreadExit { .. } => "thread_exit",
        k => crate::model::store::Kind::of(k).name(),
    }
}

pub fn event_stack(k: &EventKind) -> Option<StackId> {
    match k {
        EventKind::Alloc { stack, .. }
        | EventKind::Free { stack, .. }
        | EventKind::Realloc { stack, .. } => *stack,
        EventKind::Signal(s) => s.stack,
        EventKind::Call(c) => c.stack,
        _ => None,
    }
}

fn stack_of(stacks: &[Stack], id: Option<StackId>) -> Option<&Stack> {
    crate::event::find_stack(stacks, id?)
}

pub fn rel(ts: u64, start: u64) -> String {
    let d = ts.saturating_sub(start);
    format!("+{}.{:06}s", d / 1_000_000_000, (d % 1_000_000_000) / 1000)
}

pub fn crash_headline(s: &SignalInfo, pid: u32, tid: u32, ts: u64, start: u64) -> String {
    let d = ts.saturating_sub(start);
    format!(
        "CRASH  {} ({}{})  pid {pid} tid {tid}  at +{}.{:03}s",
        signal_name(s.signo),
        s.fault_addr()
            .map(|a| format!("address {a:#x}, "))
            .unwrap_or_default(),
        si_code_name(s.signo, s.code),
        d / 1_000_000_000,
        (d % 1_000_000_000) / 1_000_000
    )
}

/// One event as a report line (without the leading marker).
pub fn event_line(
    e: &Event,
    start: u64,
    stacks: &[Stack],
    module_path: &impl Fn(u32) -> Option<String>,
) -> String {
    let at = rel(e.ts, start);
    let (kind, what) = match &e.kind {
        EventKind::Alloc {
            func, ptr, size, ..
        } => (
            "ALLOC",
            format!(
                "{ptr:#014x}  size={size:<8} {}",
                if *func == crate::event::AllocFn::Malloc {
                    ""
                } else {
                    func.name()
                }
            ),
        ),
        EventKind::Free { ptr, .. } => ("FREE", format!("{ptr:#014x}")),
        EventKind::Realloc { old, ptr, size, .. } => {
            ("REALLOC", format!("{old:#x} -> {ptr:#x}  size={size}"))
        }
        EventKind::Mmap { len, prot, ret, .. } => {
            ("MMAP", format!("{ret:#x}  len={len} prot={prot:#x}"))
        }
        EventKind::Munmap { addr, len, .. } => ("MUNMAP", format!("{addr:#x}  len={len}")),
        EventKind::Mremap {
            old, new_len, ret, ..
        } => ("MREMAP", format!("{old:#x} -> {ret:#x}  len={new_len}")),
        EventKind::Brk { req, ret } => ("BRK", format!("{req:#x} -> {ret:#x}")),
        EventKind::Signal(s) => (
            "CRASH",
            match s.fault_addr() {
                Some(a) => format!("{}  addr={a:#x}", signal_name(s.signo)),
                None => signal_name(s.signo).to_string(),
            },
        ),
        EventKind::Spawn { child, thread } => (
            if *thread { "THREAD" } else { "FORK" },
            format!("tid {child}"),
        ),
        EventKind::Exec { filename } => ("EXEC", filename.clone()),
        EventKind::ThreadExit { code } => ("TEXIT", format!("code {code}")),
        EventKind::ProcessExit { status } => ("EXIT", status.to_string()),
        EventKind::Call(c) => ("CALL", format!("probe {}", c.probe)),
        EventKind::Return { probe, ret, .. } => ("RET", format!("probe {probe} -> {ret:#x}")),
        EventKind::Sys(s) => ("SYS", format!("{} -> {}", s.call.name(), s.ret)),
        EventKind::OffCpu { dur_ns, .. } => ("OFFCPU", format!("{dur_ns} ns")),
    };
    let kind = if matches!(&e.kind, EventKind::Signal(s) if s.handled) {
        "SIGNAL"
    } else {
        kind
    };
    let site = stack_of(stacks, event_stack(&e.kind))
        .and_then(|s| top_user_frame(s, module_path))
        .map(|f| frame_label(f, module_path))
        .unwrap_or_default();
    format!("{at}  {kind:<7} {what:<36} tid {:<6} {site}", e.tid)
        .trim_end()
        .to_string()
}

/// The crash block: headline, stack, the events leading to it.
pub fn crash_block(
    pid: u32,
    crash: &Event,
    before: &[Event],
    start: u64,
    stacks: &[Stack],
    module_path: &impl Fn(u32) -> Option<String>,
) -> String {
    let mut out = String::new();
    let EventKind::Signal(s) = &crash.kind else {
        return out;
    };
    let _ = writeln!(
        out,
        "{}",
        crash_headline(s, pid, crash.tid, crash.ts, start)
    );
    match stack_of(stacks, s.stack) {
        Some(st) => {
            for line in stack_lines(st, module_path) {
                let _ = writeln!(out, "  {line}");
            }
        }
        None => {
            let _ = writeln!(out, "  (no stack: ip {:#x})", s.ip);
        }
    }
    if !before.is_empty() {
        let _ = writeln!(out, "  last events before the crash:");
        for e in before {
            let _ = writeln!(out, "      {}", event_line(e, start, stacks, module_path));
        }
    }
    let _ = writeln!(
        out,
        "  >>> {}",
        event_line(crash, start, stacks, module_path)
    );
    out
}

pub struct Summary {
    pub by_kind: BTreeMap<&'static str, u64>,
    /// The crash, as an index into the trace's events.
    pub crash: Option<usize>,
    /// The end of the recording (CLOCK_MONOTONIC ns).
    pub end_ns: u64,
    pub tl: Timeline,
}

pub fn summarize(t: &Trace, memory: usize) -> Summary {
    let tl = Timeline::from_trace(t, memory);
    let by_kind = crate::model::store::Kind::ALL
        .iter()
        .map(|k| (k.name(), tl.by_kind[*k as usize]))
        .filter(|(_, n)| *n > 0)
        .collect();
    Summary {
        by_kind,
        crash: tl.crash.and_then(|c| usize::try_from(c).ok()),
        end_ns: tl.end_time(),
        tl,
    }
}

/// The events shown around the moment: [at - window, at], or the last
/// [`DEFAULT_LAST`] up to it (the crash itself excluded: it is printed as
/// the `>>>` line).
struct Shown {
    /// The moment (CLOCK_MONOTONIC ns).
    at: u64,
    /// Indices of the events shown (matching the filter, if any).
    idx: Vec<usize>,
    /// The explicit window `[from, upto)` in event indices, if one was given.
    range: Option<(usize, usize)>,
}

fn window(t: &Trace, sum: &Summary, opts: &Options) -> Result<Shown> {
    let start = t.meta.start_mono_ns;
    let at = match (opts.at, sum.crash) {
        (Some(d), _) => start + d.as_nanos() as u64,
        (None, Some(i)) => t.events[i].ts,
        (None, None) => sum.end_ns,
    };
    let upto = t.events.partition_point(|e| e.ts <= at);
    let upto = match sum.crash {
        Some(c) if opts.at.is_none() => c,
        _ => upto,
    };
    let filter = match &opts.filter {
        Some(spec) => Some(sum.tl.parse_filter(spec).map_err(|e| anyhow!("{e}"))?),
        None => None,
    };
    let keep = |i: &usize| {
        filter
            .as_ref()
            .is_none_or(|f| sum.tl.store.matches(*i as u64, f))
    };
    Ok(match opts.window {
        Some(w) => {
            let from_ts = at.saturating_sub(w.as_nanos() as u64);
            let from = t.events.partition_point(|e| e.ts < from_ts);
            Shown {
                at,
                idx: (from..upto).filter(keep).collect(),
                range: Some((from, upto)),
            }
        }
        None => {
            let mut idx: Vec<usize> = (0..upto).rev().filter(keep).take(DEFAULT_LAST).collect();
            idx.reverse();
            Shown {
                at,
                idx,
                range: None,
            }
        }
    })
}

fn wall(t: &Trace, ts: u64) -> String {
    let wall_ns = t.meta.start_wall_ns + ts.saturating_sub(t.meta.start_mono_ns);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(wall_ns)).to_string()
}

pub fn text(t: &Trace, opts: &Options) -> Result<String> {
    let sum = summarize(t, opts.memory);
    let start = t.meta.start_mono_ns;
    let module_path = |id: u32| {
        t.modules
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.path.clone())
    };
    let mut out = String::new();
    let _ = writeln!(out, "target    pid {}  {}", t.meta.pid, t.meta.command);
    let _ = writeln!(
        out,
        "recorded  {:.3}s from {}  ({} allocator)",
        (sum.end_ns.saturating_sub(start)) as f64 / 1e9,
        wall(t, start),
        t.meta.allocator
    );
    let kinds: Vec<String> = sum
        .by_kind
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(out, "events    {}  ({})", t.events.len(), kinds.join(", "));
    if sum.tl.store.dropped > 0 {
        let _ = writeln!(
            out,
            "held      the last {} events, from {} ({} older ones dropped by the memory budget; heap and leaks stay exact)",
            sum.tl.store.end() - sum.tl.store.first(),
            rel(sum.tl.span().map_or(start, |s| s.0), start),
            sum.tl.store.dropped
        );
    }
    let lost: Vec<String> = crate::event::LossReason::ALL
        .iter()
        .filter(|r| t.lost.get(**r) > 0)
        .map(|r| format!("{} {}", r.name(), t.lost.get(*r)))
        .collect();
    let _ = writeln!(
        out,
        "lost      {}{}",
        if lost.is_empty() {
            "none".to_string()
        } else {
            lost.join(", ")
        },
        if t.lost.stackless > 0 {
            format!("  ({} events without stack)", t.lost.stackless)
        } else {
            String::new()
        }
    );
    let h = &sum.tl.heap.totals;
    let _ = writeln!(
        out,
        "heap      {} allocs, {} frees; at end {} live blocks, {} bytes{}",
        h.allocs,
        h.frees,
        sum.tl.heap.live_blocks(),
        h.live_bytes,
        if h.unknown_frees > 0 {
            format!(
                "  ({} frees of blocks not allocated in the recording)",
                h.unknown_frees
            )
        } else {
            String::new()
        }
    );
    if let Some(status) = t.end.as_ref().and_then(|e| e.status) {
        let _ = writeln!(out, "exit      {status}");
    }
    if let Some(d) = &t.damage {
        let _ = writeln!(
            out,
            "DAMAGED   the file is unreadable from byte {}: {}",
            d.offset, d.reason
        );
    }
    let _ = writeln!(out);
    let shown = window(t, &sum, opts)?;
    let at = shown.at;
    let events: Vec<Event> = shown.idx.iter().map(|&i| t.events[i].clone()).collect();
    match sum.crash {
        Some(c) if opts.at.is_none() => {
            out.push_str(&crash_block(
                t.meta.pid,
                &t.events[c],
                &events,
                start,
                &t.stacks,
                &module_path,
            ));
            if let Some(d) = sum.tl.diagnosis() {
                let _ = writeln!(out);
                out.push_str(&d.text(&sum.tl));
            }
        }
        _ => {
            let _ = writeln!(out, "events up to {}:", rel(at, start));
            for e in &events {
                let _ = writeln!(
                    out,
                    "      {}",
                    event_line(e, start, &t.stacks, &module_path)
                );
            }
        }
    }
    if let Some((from, upto)) = shown.range {
        window_live_text(&mut out, &sum, from, upto);
    }
    leaks_text(&mut out, &sum);
    Ok(out)
}

/// Allocated in `[from, upto)` and still live at its end, by site.
fn window_live(sum: &Summary, from: usize, upto: usize) -> Vec<crate::model::SiteGroup> {
    match upto.checked_sub(1) {
        Some(last) if from < upto => sum.tl.diff(from as u64, last as u64).unwrap_or_default(),
        _ => Vec::new(),
    }
}

fn window_live_text(out: &mut String, sum: &Summary, from: usize, upto: usize) {
    let groups = window_live(sum, from, upto);
    let _ = writeln!(
        out,
        "\nallocated in this window and still live at its end: {} blocks, {} bytes",
        groups.iter().map(|g| g.blocks).sum::<u64>(),
        groups.iter().map(|g| g.bytes).sum::<u64>()
    );
    for g in groups.iter().take(TEXT_LEAKS) {
        let _ = writeln!(
            out,
            "  {:>10} B in {:>6} blocks  {}",
            g.bytes,
            g.blocks,
            sum.tl
                .site(g.stack)
                .unwrap_or_else(|| "(no stack)".to_string())
        );
    }
}

fn leaks_text(out: &mut String, sum: &Summary) {
    let groups = sum.tl.leak_groups();
    if groups.is_empty() {
        return;
    }
    let end = sum.end_ns;
    let _ = writeln!(
        out,
        "\nlive at the end, by allocation site ({} sites; growth over the last {}):",
        groups.len(),
        crate::model::diagnose::fmt_ns(sum.tl.leaks.window_ns)
    );
    for g in groups.iter().take(TEXT_LEAKS) {
        let _ = writeln!(
            out,
            "  {:>10} B in {:>6} blocks  oldest {:>9} ago  {:>+10.0} B/s  {}{}",
            g.bytes,
            g.blocks,
            crate::model::diagnose::fmt_ns(end.saturating_sub(g.oldest_ts)),
            g.growth_bytes_per_s,
            sum.tl
                .site(g.stack)
                .unwrap_or_else(|| "(no stack)".to_string()),
            if g.suspected { "  SUSPECTED LEAK" } else { "" }
        );
    }
    if groups.len() > TEXT_LEAKS {
        let _ = writeln!(
            out,
            "  … {} more sites (report --json lists all)",
            groups.len() - TEXT_LEAKS
        );
    }
}

fn frame_json(f: &Frame, t: &Trace) -> Value {
    json!({
        "addr": format!("{:#x}", f.addr),
        "func": f.func,
        "file": f.file,
        "line": if f.line > 0 { Some(f.line) } else { None },
        "module": f.module.and_then(|id| t.modules.iter().find(|m| m.id == id)).map(|m| m.path.clone()),
        "offset": format!("{:#x}", f.offset),
    })
}

fn event_json(e: &Event, t: &Trace) -> Value {
    let (addr, size) = match &e.kind {
        EventKind::Alloc { ptr, size, .. } | EventKind::Realloc { ptr, size, .. } => {
            (Some(*ptr), Some(*size))
        }
        EventKind::Free { ptr, .. } => (Some(*ptr), None),
        EventKind::Mmap { ret, len, .. } => (u64::try_from(*ret).ok(), Some(*len)),
        EventKind::Munmap { addr, len, .. } => (Some(*addr), Some(*len)),
        EventKind::Signal(s) => (Some(s.addr), None),
        _ => (None, None),
    };
    let module_path = |id: u32| {
        t.modules
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.path.clone())
    };
    let top =
        stack_of(&t.stacks, event_stack(&e.kind)).and_then(|s| top_user_frame(s, module_path));
    let mut v = json!({
        "time_ns": e.ts.saturating_sub(t.meta.start_mono_ns),
        "tid": e.tid,
        "kind": kind_name(&e.kind),
        "addr": addr.map(|a| format!("{a:#x}")),
        "size": size,
        "func": top.and_then(|f| f.func.clone()),
        "file": top.and_then(|f| f.file.clone()),
        "line": top.filter(|f| f.line > 0).map(|f| f.line),
    });
    if let (EventKind::Realloc { old, .. }, Some(o)) = (&e.kind, v.as_object_mut()) {
        o.insert("old_addr".into(), json!(format!("{old:#x}")));
    }
    if let (Some(st), Some(o)) = (stack_of(&t.stacks, event_stack(&e.kind)), v.as_object_mut()) {
        let frames: Vec<Value> = st.frames.iter().map(|f| frame_json(f, t)).collect();
        o.insert("stack".into(), json!(frames));
    }
    v
}

fn stack_json(tl: &Timeline, id: Option<StackId>, t: &Trace) -> Vec<Value> {
    tl.stack(id)
        .map(|st| st.frames.iter().map(|f| frame_json(f, t)).collect())
        .unwrap_or_default()
}

fn site_json(s: &Option<Site>, tl: &Timeline, t: &Trace) -> Value {
    match s {
        None => Value::Null,
        Some(s) => json!({
            "time_ns": s.ts.saturating_sub(t.meta.start_mono_ns),
            "tid": s.tid,
            "site": tl.site(s.stack),
        }),
    }
}

fn diagnosis_json(d: &Diagnosis, tl: &Timeline, t: &Trace) -> Value {
    let stack = |s: &Option<Site>| s.as_ref().map(|s| stack_json(tl, s.stack, t));
    json!({
        "kind": d.kind.name(),
        "summary": d.summary,
        "block": d.block.map(|(a, n)| json!({"addr": format!("{a:#x}"), "size": n})),
        "offset": d.offset,
        "alloc": site_json(&d.alloc, tl, t),
        "free": site_json(&d.free, tl, t),
        "access": site_json(&d.access, tl, t),
        "alloc_stack": stack(&d.alloc),
        "free_stack": stack(&d.free),
        "access_stack": stack(&d.access),
        "notes": d.notes,
    })
}

fn leak_json(g: &LeakGroup, sum: &Summary, t: &Trace) -> Value {
    json!({
        "site": sum.tl.site(g.stack),
        "stack": stack_json(&sum.tl, g.stack, t),
        "blocks": g.blocks,
        "bytes": g.bytes,
        "allocs": g.allocs,
        "frees": g.frees,
        "oldest_ns": g.oldest_ts.saturating_sub(t.meta.start_mono_ns),
        "oldest_age_ns": sum.end_ns.saturating_sub(g.oldest_ts),
        "growth_bytes_per_s": g.growth_bytes_per_s,
        "suspected": g.suspected,
    })
}

pub fn json(t: &Trace, opts: &Options) -> Result<Value> {
    let sum = summarize(t, opts.memory);
    let crash = sum.crash.and_then(|i| {
        let e = &t.events[i];
        let EventKind::Signal(s) = &e.kind else {
            return None;
        };
        let stack: Vec<Value> = stack_of(&t.stacks, s.stack)
            .map(|st| st.frames.iter().map(|f| frame_json(f, t)).collect())
            .unwrap_or_default();
        Some(json!({
            "signal": signal_name(s.signo),
            "signo": s.signo,
            "si_code": si_code_name(s.signo, s.code),
            "addr": format!("{:#x}", s.addr),
            "tid": e.tid,
            "time_ns": e.ts.saturating_sub(t.meta.start_mono_ns),
            "stack": stack,
            "diagnosis": sum.tl.diagnosis().map(|d| diagnosis_json(&d, &sum.tl, t)),
        }))
    });
    let leaks: Vec<Value> = sum
        .tl
        .leak_groups()
        .iter()
        .map(|g| leak_json(g, &sum, t))
        .collect();
    let shown = window(t, &sum, opts)?;
    let (at, idx) = (shown.at, &shown.idx);
    let window_live: Option<Vec<Value>> = shown.range.map(|(from, upto)| {
        window_live(&sum, from, upto)
            .iter()
            .map(|g| {
                json!({
                    "site": sum.tl.site(g.stack),
                    "stack": stack_json(&sum.tl, g.stack, t),
                    "blocks": g.blocks,
                    "bytes": g.bytes,
                })
            })
            .collect()
    });
    let lost: serde_json::Map<String, Value> = crate::event::LossReason::ALL
        .iter()
        .map(|r| (r.name().to_string(), json!(t.lost.get(*r))))
        .chain([("events_without_stack".to_string(), json!(t.lost.stackless))])
        .collect();
    Ok(json!({
        "target": {"pid": t.meta.pid, "command": t.meta.command, "allocator": t.meta.allocator},
        "start_wall": wall(t, t.meta.start_mono_ns),
        "duration_ns": sum.end_ns.saturating_sub(t.meta.start_mono_ns),
        "exit": t.end.as_ref().and_then(|e| e.status).map(|s| match s {
            ExitStatus::Code(c) => json!({"code": c}),
            ExitStatus::Signal { signo, core } => json!({"signal": signal_name(signo), "core": core}),
        }),
        "events": {
            "total": t.events.len(),
            "by_kind": sum.by_kind,
            "lost": lost,
        },
        "heap": {
            "allocs": sum.tl.heap.totals.allocs,
            "frees": sum.tl.heap.totals.frees,
            "live_blocks": sum.tl.heap.live_blocks(),
            "live_bytes": sum.tl.heap.totals.live_bytes,
            "unknown_frees": sum.tl.heap.totals.unknown_frees,
            "failed_allocs": sum.tl.heap.totals.failed,
        },
        "crash": crash,
        "leaks": leaks,
        "retention": {
            "memory_budget": opts.memory,
            "dropped_events": sum.tl.store.dropped,
            "held_from_ns": sum.tl.span().map(|s| s.0.saturating_sub(t.meta.start_mono_ns)),
        },
        "at_ns": at.saturating_sub(t.meta.start_mono_ns),
        "window": idx.iter().map(|&i| event_json(&t.events[i], t)).collect::<Vec<_>>(),
        "window_live": window_live,
        "damage": t.damage.as_ref().map(|d| json!({"offset": d.offset, "reason": d.reason})),
    }))
}

/// A moment or length: humantime (`1s 250ms`, `200ms`) or decimal seconds
/// with a unit (`1.250s`, `0.5ms`).
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    for (unit, scale) in [
        ("ns", 1e-9),
        ("us", 1e-6),
        ("µs", 1e-6),
        ("ms", 1e-3),
        ("s", 1.0),
    ] {
        if let Some(num) = s.strip_suffix(unit) {
            if let Ok(v) = num.trim().parse::<f64>() {
                if v.is_finite() && v >= 0.0 {
                    return Ok(Duration::from_secs_f64(v * scale));
                }
            }
        }
    }
    humantime::parse_duration(s)
        .map_err(|e| anyhow!("invalid duration '{s}': {e} (try 1.25s, 200ms, 1s 250ms)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            parse_duration("1.250s").ok(),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(
            parse_duration("200ms").ok(),
            Some(Duration::from_millis(200))
        );
        assert_eq!(
            parse_duration("1s 250ms").ok(),
            Some(Duration::from_millis(1250))
        );
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
