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
use crate::model::heap::LiveHeap;
use crate::trace::Trace;

/// How many events the report shows before the moment when no window is
/// given.
pub const DEFAULT_LAST: usize = 20;

pub struct Options {
    /// The moment, relative to the start; default: the crash, else the end.
    pub at: Option<Duration>,
    /// Show events in [at - window, at]; default: the last few before it.
    pub window: Option<Duration>,
}

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
        EventKind::ProcessExit { .. } => "exit",
    }
}

pub fn event_stack(k: &EventKind) -> Option<StackId> {
    match k {
        EventKind::Alloc { stack, .. }
        | EventKind::Free { stack, .. }
        | EventKind::Realloc { stack, .. } => *stack,
        EventKind::Signal(s) => s.stack,
        _ => None,
    }
}

/// Libraries of the system (libc, libstdc++, …): their frames are where
/// the program's call went, not where it came from.
pub fn is_system_path(p: &str) -> bool {
    [
        "/lib/",
        "/lib64/",
        "/usr/lib/",
        "/usr/lib64/",
        "/usr/libexec/",
    ]
    .iter()
    .any(|d| p.starts_with(d))
}

/// The frame a user cares about: the first outside system libraries with
/// source info (their code), else the first with a name, else the first.
pub fn top_user_frame(
    stack: &Stack,
    module_path: impl Fn(u32) -> Option<String>,
) -> Option<&Frame> {
    let user = |f: &&Frame| {
        !f.module
            .and_then(&module_path)
            .is_some_and(|p| is_system_path(&p))
    };
    stack
        .frames
        .iter()
        .filter(user)
        .find(|f| f.file.is_some() && f.func.is_some())
        .or_else(|| {
            stack
                .frames
                .iter()
                .find(|f| f.file.is_some() && f.func.is_some())
        })
        .or_else(|| stack.frames.iter().find(|f| f.func.is_some()))
        .or_else(|| stack.frames.first())
}

fn stack_of(stacks: &[Stack], id: Option<StackId>) -> Option<&Stack> {
    crate::event::find_stack(stacks, id?)
}

/// The signal that killed the process: the last fatal-class signal without
/// a handler, or the one matching the exit signal.
pub fn find_crash(events: &[Event]) -> Option<usize> {
    let exit_sig = events.iter().rev().find_map(|e| match e.kind {
        EventKind::ProcessExit {
            status: ExitStatus::Signal { signo, .. },
        } => Some(signo),
        _ => None,
    });
    events.iter().rposition(|e| match &e.kind {
        EventKind::Signal(s) => !s.handled || Some(s.signo) == exit_sig,
        _ => false,
    })
}

pub fn rel(ts: u64, start: u64) -> String {
    let d = ts.saturating_sub(start);
    format!("+{}.{:06}s", d / 1_000_000_000, (d % 1_000_000_000) / 1000)
}

fn short_file(f: &str) -> &str {
    f.rsplit('/').next().unwrap_or(f)
}

/// `func (file:line)`, `func`, or `module+0xoff`.
pub fn frame_label(f: &Frame, module_path: impl Fn(u32) -> Option<String>) -> String {
    match (&f.func, &f.file) {
        (Some(func), Some(file)) if f.line > 0 => {
            format!("{func} ({}:{})", short_file(file), f.line)
        }
        (Some(func), _) => func.clone(),
        _ => match f.module.and_then(&module_path) {
            Some(m) => format!("{}+{:#x}", short_file(&m), f.offset),
            None => format!("{:#x}", f.addr),
        },
    }
}

pub fn crash_headline(s: &SignalInfo, pid: u32, tid: u32, ts: u64, start: u64) -> String {
    let d = ts.saturating_sub(start);
    format!(
        "CRASH  {} (address {:#x}, {})  pid {pid} tid {tid}  at +{}.{:03}s",
        signal_name(s.signo),
        s.addr,
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
            format!("{}  addr={:#x}", signal_name(s.signo), s.addr),
        ),
        EventKind::Spawn { child, thread } => (
            if *thread { "THREAD" } else { "FORK" },
            format!("tid {child}"),
        ),
        EventKind::Exec { filename } => ("EXEC", filename.clone()),
        EventKind::ThreadExit { code } => ("TEXIT", format!("code {code}")),
        EventKind::ProcessExit { status } => ("EXIT", status.to_string()),
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
            let labels: Vec<(String, String)> = st
                .frames
                .iter()
                .map(|f| {
                    let name = f
                        .func
                        .clone()
                        .unwrap_or_else(|| frame_label(f, module_path));
                    let loc = match &f.file {
                        Some(file) if f.line > 0 => format!("{}:{}", short_file(file), f.line),
                        _ => f
                            .module
                            .and_then(module_path)
                            .map(|m| short_file(&m).to_string())
                            .unwrap_or_default(),
                    };
                    (name, loc)
                })
                .collect();
            let w = labels
                .iter()
                .map(|(n, _)| n.len())
                .max()
                .unwrap_or(0)
                .min(40);
            for (i, (name, loc)) in labels.iter().enumerate() {
                let _ = writeln!(out, "  #{i:<2} {name:<w$}  {loc}");
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
    pub heap: LiveHeap,
    pub crash: Option<usize>,
    pub end_ns: u64,
}

pub fn summarize(t: &Trace) -> Summary {
    let mut by_kind = BTreeMap::new();
    let mut heap = LiveHeap::default();
    for e in &t.events {
        *by_kind.entry(kind_name(&e.kind)).or_insert(0) += 1;
        heap.apply(e);
    }
    let last_ts = t.events.last().map_or(t.meta.start_mono_ns, |e| e.ts);
    let end_ns = t
        .end
        .as_ref()
        .map_or(last_ts, |e| e.end_mono_ns.max(last_ts));
    Summary {
        by_kind,
        heap,
        crash: find_crash(&t.events),
        end_ns,
    }
}

/// Indices of the events shown: [at - window, at], or the last
/// [`DEFAULT_LAST`] up to the moment (the crash itself excluded: it is
/// printed as the `>>>` line).
fn window(t: &Trace, sum: &Summary, opts: &Options) -> (u64, Vec<usize>) {
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
    let idx: Vec<usize> = match opts.window {
        Some(w) => {
            let from = at.saturating_sub(w.as_nanos() as u64);
            (t.events.partition_point(|e| e.ts < from)..upto).collect()
        }
        None => (upto.saturating_sub(DEFAULT_LAST)..upto).collect(),
    };
    (at, idx)
}

fn wall(t: &Trace, ts: u64) -> String {
    let wall_ns = t.meta.start_wall_ns + ts.saturating_sub(t.meta.start_mono_ns);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_nanos(wall_ns)).to_string()
}

pub fn text(t: &Trace, opts: &Options) -> String {
    let sum = summarize(t);
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
    let h = &sum.heap;
    let _ = writeln!(
        out,
        "heap      {} allocs, {} frees; at end {} live blocks, {} bytes{}",
        h.allocs,
        h.frees,
        h.live_blocks(),
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
    let (at, idx) = window(t, &sum, opts);
    let events: Vec<Event> = idx.iter().map(|&i| t.events[i].clone()).collect();
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
    out
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
    v
}

pub fn json(t: &Trace, opts: &Options) -> Value {
    let sum = summarize(t);
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
        }))
    });
    let (at, idx) = window(t, &sum, opts);
    let lost: serde_json::Map<String, Value> = crate::event::LossReason::ALL
        .iter()
        .map(|r| (r.name().to_string(), json!(t.lost.get(*r))))
        .chain([("events_without_stack".to_string(), json!(t.lost.stackless))])
        .collect();
    json!({
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
            "allocs": sum.heap.allocs,
            "frees": sum.heap.frees,
            "live_blocks": sum.heap.live_blocks(),
            "live_bytes": sum.heap.live_bytes,
            "unknown_frees": sum.heap.unknown_frees,
            "failed_allocs": sum.heap.failed,
        },
        "crash": crash,
        "at_ns": at.saturating_sub(t.meta.start_mono_ns),
        "window": idx.iter().map(|&i| event_json(&t.events[i], t)).collect::<Vec<_>>(),
        "damage": t.damage.as_ref().map(|d| json!({"offset": d.offset, "reason": d.reason})),
    })
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
