//! `tm-tui report`: what a recording says — target, counts, losses, heap
//! accounting, the crash with its stack, and the events around a moment —
//! as text or as JSON (schema in the README; fields are added, never
//! renamed).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{anyhow, Result};

use strum::IntoEnumIterator;

use crate::event::{
    si_code_name, signal_name, Event, EventKind, Kind, ProbeId, SignalInfo, Stack, StackId, SysCall,
};
pub use crate::model::names::{frame_label, stack_lines, top_user_frame};
use crate::model::present::{self, call_path_text, fmt_ns, probe_name, rel};
use crate::model::store::Idx;
use crate::model::Timeline;
use crate::trace::Trace;

pub mod json;

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

fn stack_of(stacks: &[Stack], id: Option<StackId>) -> Option<&Stack> {
    crate::event::find_stack(stacks, id?)
}

pub fn crash_headline(s: &SignalInfo, pid: u32, tid: u32, ts: u64, start: u64) -> String {
    let from = match (&s.sender, s.code <= 0) {
        (Some(snd), true) if snd.comm.is_empty() => format!(", from pid {}", snd.pid),
        (Some(snd), true) => format!(", from pid {} ({})", snd.pid, snd.comm),
        // x86's general protection: the kernel gives no address.
        _ if s.signo == 11 && s.code == 128 => ": general protection, no address".to_string(),
        _ => String::new(),
    };
    format!(
        "CRASH  {} ({}{}{from})  pid {pid} tid {tid}  at {}",
        signal_name(s.signo),
        s.fault_addr()
            .map(|a| format!("address {a:#x}, "))
            .unwrap_or_default(),
        si_code_name(s.signo, s.code),
        rel(ts, start)
    )
}

/// One event (number `i` of `tl`'s recording) as a report line, without
/// the leading marker: the UI's columns, in a line.
pub fn event_line(tl: &Timeline, i: Idx, e: &Event) -> String {
    let module_path = crate::model::names::module_path(tl.modules());
    let at = rel(e.ts, tl.meta().start_mono_ns);
    let label = present::label(tl, i, e.kind.kind());
    let c = present::columns(tl, i, e);
    let what = if c.own {
        c.what
    } else {
        let size = match c.size_name {
            "" => String::new(),
            name => format!("{name}={}", c.size),
        };
        format!("{:<14}  {size:<13} {}", c.addr, c.what)
    };
    let site = stack_of(tl.stacks(), e.kind.stack())
        .and_then(|s| top_user_frame(s, &module_path))
        .map(|f| frame_label(f, &module_path))
        .unwrap_or_default();
    format!(
        "{at}  {label:<7} {:<36} tid {:<6} {site}",
        what.trim_end(),
        e.tid
    )
    .trim_end()
    .to_string()
}

/// The crash block: headline, stack, the events leading to it (with
/// their numbers in `tl`'s recording).
pub fn crash_block(tl: &Timeline, crash: Idx, ev: &Event, before: &[(Idx, Event)]) -> String {
    let mut out = String::new();
    let EventKind::Signal(s) = &ev.kind else {
        return out;
    };
    let start = tl.meta().start_mono_ns;
    let module_path = crate::model::names::module_path(tl.modules());
    let _ = writeln!(out, "{}", crash_headline(s, ev.pid, ev.tid, ev.ts, start));
    match stack_of(tl.stacks(), s.stack) {
        Some(st) => {
            for line in stack_lines(st, &module_path) {
                let _ = writeln!(out, "  {line}");
            }
        }
        None => {
            let _ = writeln!(out, "  (no stack: ip {:#x})", s.ip);
        }
    }
    let path = tl.call_path(crash);
    if !path.is_empty() {
        let _ = writeln!(out, "  inside: {}", call_path_text(tl, &path));
    }
    if !before.is_empty() {
        let _ = writeln!(out, "  last events before the crash:");
        for (i, e) in before {
            let _ = writeln!(out, "      {}", event_line(tl, *i, e));
        }
    }
    let _ = writeln!(out, "  >>> {}", event_line(tl, crash, ev));
    out
}

/// `main → process_request(42) → parse_body`: the calls (outermost
/// first) with the arguments of their Call events when held.
pub struct Summary {
    /// How many events in the timeline's numbering: the recording's, with
    /// the blocks the model made at forks and execs among them (see
    /// [`Summary::event`]; not a copy of them).
    pub len: usize,
    /// The trace's events were not kept (`cmd::load::read_streaming_part`): every
    /// event comes from the timeline.
    pub streamed: bool,
    pub by_kind: BTreeMap<&'static str, u64>,
    /// The crash, as an index into the trace's events.
    pub crash: Option<usize>,
    /// The end of the recording (CLOCK_MONOTONIC ns).
    pub end_ns: u64,
    pub tl: Timeline,
}

impl Summary {
    /// Event `i` in the timeline's numbering: one the model made (from its
    /// store) or the recording's (from the trace, no copy).
    pub fn event<'a>(&'a self, t: &'a Trace, i: usize) -> Option<std::borrow::Cow<'a, Event>> {
        if self.streamed {
            // Read without keeping the events: the timeline's (held) ones.
            return self
                .tl
                .store()
                .get(i as Idx)
                .map(|e| std::borrow::Cow::Owned(crate::model::untagged(e)));
        }
        let made = self.tl.made();
        let before = made.partition_point(|&m| (m as usize) < i);
        if made.get(before).is_some_and(|&m| m as usize == i) {
            return self.tl.store().get(i as Idx).map(std::borrow::Cow::Owned);
        }
        t.events.get(i - before).map(std::borrow::Cow::Borrowed)
    }

    /// The time of event `i` (0 past the end).
    pub fn ts(&self, t: &Trace, i: usize) -> u64 {
        self.event(t, i).map_or(0, |e| e.ts)
    }

    /// The first event whose `ts` does not satisfy `pred` (events are in
    /// time order), as `slice::partition_point`.
    pub fn partition_point(&self, t: &Trace, pred: impl Fn(u64) -> bool) -> usize {
        let (mut lo, mut hi) = (0, self.len);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if pred(self.ts(t, mid)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// Every event there is, in order, with its number (read without
    /// keeping the events, those the memory budget dropped are not).
    pub fn events<'a>(
        &'a self,
        t: &'a Trace,
    ) -> impl Iterator<Item = (usize, std::borrow::Cow<'a, Event>)> + 'a {
        let first = if self.streamed {
            self.tl.store().first() as usize
        } else {
            0
        };
        (first..self.len).filter_map(move |i| Some((i, self.event(t, i)?)))
    }
}

pub fn summarize(t: &Trace, memory: usize) -> Summary {
    summary_of(t, crate::cmd::timeline_of(t, memory))
}

/// The summary of `t` over its timeline `tl` (built by `timeline_of`, or
/// while streaming the file: then `t.events` is empty).
pub fn summary_of(t: &Trace, tl: Timeline) -> Summary {
    let streamed = t.events.is_empty() && t.event_count > 0;
    let by_kind = Kind::iter()
        .map(|k| (k.name(), tl.kind_count(k)))
        .filter(|(_, n)| *n > 0)
        .collect();
    Summary {
        len: if streamed {
            tl.store().end() as usize
        } else {
            (t.events.len() + tl.made().len()).min(tl.store().end() as usize)
        },
        streamed,
        by_kind,
        crash: tl.crash().and_then(|c| usize::try_from(c).ok()),
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
        (Some(d), _) => start.saturating_add(nanos(d)),
        (None, Some(i)) => sum.ts(t, i),
        (None, None) => sum.end_ns,
    };
    let upto = sum.partition_point(t, |ts| ts <= at);
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
            .is_none_or(|f| sum.tl.store().matches(*i as u64, f))
    };
    Ok(match opts.window {
        Some(w) => {
            let from_ts = at.saturating_sub(nanos(w));
            let from = sum.partition_point(t, |ts| ts < from_ts);
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
    text_of(t, &summarize(t, opts.memory), opts)
}

/// The text report of `t` over its summary.
/// A duration in ns, saturated.
pub fn nanos(d: Duration) -> u64 {
    d.as_nanos().min(u128::from(u64::MAX)) as u64
}

/// The moment the read stopped at (`--at`, after the start), if it did.
pub fn read_up_to(t: &Trace, opts: &Options) -> Option<u64> {
    opts.at.filter(|_| t.stopped).map(nanos)
}

/// A read from a part (`--at`) that holds no crash of a program killed by
/// a signal: the crash came before the part. When the part starts.
pub fn crash_before_read(t: &Trace, sum: &Summary) -> Option<u64> {
    let from_part = t.part_start().is_some();
    let killed = matches!(
        t.end.as_ref().and_then(|e| e.status),
        Some(crate::event::ExitStatus::Signal { .. })
    );
    (from_part && killed && sum.crash.is_none())
        .then_some(t.first_ts)
        .flatten()
}

/// The moment read up to (`--at`) is before a bounded recording's held
/// window: the root's blocks known live then, those allocated by then that
/// lived into the window (a lower bound: the others are not known), as
/// (blocks, bytes, the window's start).
pub fn before_window(t: &Trace, sum: &Summary, opts: &Options) -> Option<(u64, u64, u64)> {
    let at = t.meta.start_mono_ns.saturating_add(read_up_to(t, opts)?);
    let first = t.first_ts.filter(|&f| t.window.is_some() && at < f)?;
    let live = sum.tl.heap().now_of(sum.tl.store(), 0);
    let known = live.iter().filter(|b| b.ts <= at);
    Some((
        known.clone().count() as u64,
        known.map(|b| b.size).sum(),
        first,
    ))
}

/// What of the recording was read, when not all of it (`--at`): from the
/// part before the moment (if not the start) up to the moment.
pub fn read_line(t: &Trace, opts: &Options) -> Option<String> {
    let start = t.meta.start_mono_ns;
    let from_part = t.part_start().is_some();
    if !from_part && !t.stopped {
        return None;
    }
    let from = match t.first_ts {
        Some(f) if t.window.is_some() => rel(f, start),
        _ => "the start".to_string(),
    };
    let to = match read_up_to(t, opts) {
        Some(at) => rel(start.saturating_add(at), start),
        None => "the end".to_string(),
    };
    if let (Some(at), Some(first)) = (read_up_to(t, opts), t.first_ts) {
        if t.window.is_some() && start.saturating_add(at) < first {
            return Some(format!(
                "nothing: {to} is before the held window, which starts at {}",
                rel(first, start)
            ));
        }
    }
    Some(format!(
        "{from} to {to} of the recording (--at reads from the trace's part before the moment \
         up to it; --whole reads it all)"
    ))
}

pub fn text_of(t: &Trace, sum: &Summary, opts: &Options) -> Result<String> {
    let start = t.meta.start_mono_ns;
    let mut out = String::new();
    let _ = writeln!(out, "target    pid {}  {}", t.meta.pid, t.meta.command);
    let _ = writeln!(
        out,
        "recorded  {:.3}s{} from {}  ({}; traced: {})",
        (sum.end_ns.saturating_sub(start)) as f64 / 1e9,
        if t.stopped {
            " or more (read up to --at)"
        } else {
            ""
        },
        wall(t, start),
        if t.meta.families.has(crate::event::Family::Alloc) {
            format!("{} allocator", t.meta.allocator)
        } else {
            "heap not traced".to_string()
        },
        t.meta.families.names().join(",")
    );
    // The recorded kinds add up to the count; the model's own (blocks a
    // child inherits, an exec discards, a window carries) are apart.
    let made = |k: &str| k == "inherit" || k == "discard";
    let kinds: Vec<String> = sum
        .by_kind
        .iter()
        .filter(|(k, _)| !made(k))
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let model: Vec<String> = sum
        .by_kind
        .iter()
        .filter(|(k, _)| made(k))
        .map(|(k, n)| format!("{k} {n}"))
        .collect();
    let _ = writeln!(
        out,
        "events    {}  ({}){}",
        t.event_count,
        kinds.join(", "),
        if model.is_empty() {
            String::new()
        } else {
            format!("; made by the model: {}", model.join(", "))
        }
    );
    if let Some(read) = read_line(t, opts) {
        let _ = writeln!(out, "read      {read}");
    }
    if let Some(w) = &t.window {
        let from = t.first_ts.unwrap_or(start);
        let (what, unit) = match (w.from_part, w.is_kept) {
            (Some(p), _) if p.in_file => ("read from a part of the file", "parts"),
            (Some(_), _) => ("a bounded recording, read from a segment", "segments"),
            (None, true) => (
                "kept before a crash or watchpoint hit (the recording went on after it)",
                "segments",
            ),
            (None, false) => ("a bounded recording", "segments"),
        };
        let _ = writeln!(
            out,
            "window    {what}: {} {}{}; events from {}; {} blocks ({}) \
             live before it carried in (the 'inherit' events), so the heap is exact",
            if w.segments == 1 {
                format!("{} {}", unit.trim_end_matches('s'), w.first_segment)
            } else {
                let last = w.last_segment.max(w.first_segment + w.segments - 1);
                format!(
                    "{unit} {} to {last}{}",
                    w.first_segment,
                    if last + 1 - w.first_segment != w.segments {
                        format!(" ({} of them)", w.segments)
                    } else {
                        String::new()
                    }
                )
            },
            if w.from_part.is_some() {
                "read"
            } else {
                "held"
            },
            if let Some(p) = w.from_part {
                format!(
                    " ({} before not read: --at starts at the one before the moment)",
                    present::bytes(p.offset)
                )
            } else if w.first_segment > 1 {
                format!(
                    " ({} older dropped by --max-size/--keep)",
                    w.first_segment - 1
                )
            } else {
                String::new()
            },
            rel(from, start),
            w.carried.len(),
            present::bytes(w.carried.iter().map(|b| b.size).sum())
        );
        for k in &w.kept {
            let _ = writeln!(
                out,
                "kept      {}: the segments before a crash or watchpoint hit, a recording of its own",
                k.display()
            );
        }
    }
    if sum.tl.store().dropped > 0 {
        let _ = writeln!(
            out,
            "held      the last {} events, from {} ({} older ones dropped by the memory budget; heap and leaks stay exact)",
            sum.tl.store().end() - sum.tl.store().first(),
            rel(sum.tl.span().map_or(start, |s| s.0), start),
            sum.tl.store().dropped
        );
    }
    // Every loss by reason, as the record summary says it.
    let _ = writeln!(
        out,
        "lost      {}",
        match t.lost.summary().as_str() {
            "0" => "none".to_string(),
            s => s.to_string(),
        }
    );
    let h = &sum.tl.heap().totals;
    // The root process's; each child's is in the processes section.
    let root = &sum.tl.processes()[0].heap;
    let heap_traced = t.meta.families.has(crate::event::Family::Alloc);
    if !heap_traced {
        let _ = writeln!(out, "heap      not traced (--trace without alloc)");
    } else {
        let (live, at) = match (before_window(t, sum, opts), read_up_to(t, opts)) {
            (Some((blocks, bytes, first)), Some(at)) => (
                format!(
                    "at least {blocks} live blocks, {bytes} bytes (before the held window, which \
                     starts at {}: the blocks allocated by then that lived into it; the others \
                     are not known)",
                    rel(first, start)
                ),
                rel(start.saturating_add(at), start),
            ),
            (_, at) => (
                format!(
                    "{} live blocks, {} bytes",
                    root.live_blocks, root.live_bytes
                ),
                at.map_or("end".to_string(), |at| rel(start.saturating_add(at), start)),
            ),
        };
        let _ = writeln!(
            out,
            "heap      {} allocs, {} frees; at {at} {live}{}",
            root.allocs,
            root.frees,
            if h.unknown_frees > 0 {
                format!(
                    "  ({} frees of blocks not allocated in the recording)",
                    h.unknown_frees
                )
            } else {
                String::new()
            }
        );
    }
    if let Some(status) = t.end.as_ref().and_then(|e| e.status) {
        let _ = writeln!(out, "exit      {status}");
    }
    if let Some(from) = crash_before_read(t, sum) {
        let _ = writeln!(
            out,
            "crash     not in the stretch read, which starts at {}: the program was killed by a \
             signal before it (--whole, or --at a moment before it, shows the crash)",
            rel(from, start)
        );
    } else if let (Some(from), None, true) = (t.first_ts, sum.crash, t.part_start().is_some()) {
        // A crash, or an exit, before the part read is not in it.
        let _ = writeln!(
            out,
            "crash     none from {} on (the stretch read); a crash or exit before it is not seen \
             here (--whole reads it all)",
            rel(from, start)
        );
    }
    let procs = sum.tl.processes();
    if procs.len() > 1 {
        let _ = writeln!(
            out,
            "processes {} (the root and the children it forked, followed)",
            procs.len()
        );
        // Read up to a moment (--at): the per-process state is at it.
        let moment = read_up_to(t, opts).map_or("the end".to_string(), |at| {
            rel(start.saturating_add(at), start)
        });
        for (p, pr) in procs.iter().enumerate() {
            let h = &pr.heap;
            let _ = writeln!(
                out,
                "  pid {:<7} {:<12} {:<24} {} allocs, {} frees, {} live blocks ({} bytes) at {}{}{}",
                pr.pid,
                match (p, pr.ppid) {
                    (0, _) => "root".to_string(),
                    (_, Some(pp)) => format!("ppid {pp}"),
                    // Forked before the part or window read from.
                    (_, None) if t.window.is_some() => "ppid unknown".to_string(),
                    // Already running when recording began (--children).
                    (_, None) => "was running".to_string(),
                },
                pr.exit.map_or(
                    if t.part_start().is_some() {
                        // An exit before the part read is not in it.
                        "no exit read".to_string()
                    } else {
                        format!("running at {moment}")
                    },
                    |s| s.to_string()
                ),
                h.allocs,
                h.frees,
                h.live_blocks,
                h.live_bytes,
                if pr.exit.is_some() { "its exit" } else { &moment },
                if h.inherited > 0 {
                    format!(", {} inherited at fork", h.inherited)
                } else {
                    String::new()
                },
                if h.discarded > 0 {
                    format!(", {} dropped by exec", h.discarded)
                } else {
                    String::new()
                },
            );
            if let Some(c) = pr.crash {
                if let Some(d) = sum.tl.diagnosis_at(c) {
                    let _ = writeln!(out, "            crashed: {}", d.summary);
                }
            }
        }
    }
    match &t.damage {
        Some(d) if d.reason.starts_with(crate::trace::NO_END) => {
            let _ = writeln!(
                out,
                "ENDED     abruptly at byte {} ({} in the recording): {}",
                d.offset,
                rel(sum.end_ns, start),
                d.reason
            );
        }
        Some(d) => {
            let _ = writeln!(
                out,
                "DAMAGED   the file is unreadable from byte {}: {}",
                d.offset, d.reason
            );
        }
        None => {}
    }
    if !t.integrity.is_empty() {
        let _ = writeln!(
            out,
            "DAMAGED   {} record(s) missing, repeated or out of order (the counts below may be off):",
            t.integrity.len()
        );
        for d in t.integrity.iter().take(5) {
            let _ = writeln!(out, "            at byte {}: {}", d.offset, d.reason);
        }
        if t.integrity.len() > 5 {
            let _ = writeln!(
                out,
                "            … {} more (report --json lists them all)",
                t.integrity.len() - 5
            );
        }
    }
    if let Some(first) = t.skipped.first() {
        let _ = writeln!(
            out,
            "SKIPPED   {} record(s) this version cannot read, the first at byte {}: {}",
            t.skipped.len(),
            first.offset,
            first.reason
        );
    }
    let _ = writeln!(out);
    let shown = window(t, sum, opts)?;
    let at = shown.at;
    let events: Vec<(Idx, Event)> = shown
        .idx
        .iter()
        .filter_map(|&i| Some((i as Idx, sum.event(t, i)?.into_owned())))
        .collect();
    match sum.crash {
        Some(c) if opts.at.is_none() => {
            let crash = sum
                .event(t, c)
                .ok_or_else(|| anyhow!("the crash event {c} is not in the recording"))?;
            out.push_str(&crash_block(&sum.tl, c as Idx, &crash, &events));
            if let Some(d) = sum.tl.diagnosis() {
                let _ = writeln!(out);
                out.push_str(&d.text(&sum.tl));
            }
        }
        _ => {
            let _ = writeln!(out, "events up to {}:", rel(at, start));
            if let (Some(_), Some(first)) = (&t.window, t.first_ts) {
                if at < first {
                    let _ = writeln!(
                        out,
                        "      (before the held window, which starts at {}: only the blocks that lived into it are known, as 'live before the window')",
                        rel(first, start)
                    );
                }
            }
            let held_from = sum.tl.span().map_or(start, |s| s.0);
            if sum.tl.store().dropped > 0
                && at.saturating_sub(opts.window.map_or(0, nanos)) < held_from
            {
                let _ = writeln!(
                    out,
                    "      (the events before {} were dropped by the memory budget: raise --memory to see them)",
                    rel(held_from, start)
                );
            }
            for (i, e) in &events {
                let _ = writeln!(out, "      {}", event_line(&sum.tl, *i, e));
            }
        }
    }
    if let Some((from, upto)) = shown.range {
        window_live_text(&mut out, sum, from, upto);
    }
    findings_text(&mut out, &sum.tl);
    leaks_text(&mut out, sum);
    probes_text(&mut out, &sum.tl);
    syscalls_text(&mut out, &sum.tl);
    Ok(out)
}

/// What watchpoints caught: each finding's diagnosis, stacks included.
fn findings_text(out: &mut String, tl: &Timeline) {
    let findings = tl.findings();
    if findings.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nFINDINGS  {} bug(s) caught by watchpoints (the program did not crash on them)",
        findings.len()
    );
    for (n, f) in findings.iter().enumerate() {
        let _ = writeln!(out);
        let _ = write!(out, "#{} ", n + 1);
        out.push_str(&f.diagnosis.text(tl));
        if f.more > 0 {
            let _ = writeln!(
                out,
                "  note: {} more access(es) of the block seen after this one",
                f.more
            );
        }
    }
}

/// What was allocated in `[from, upto)` and is live at its end, by site;
/// `None` when the memory budget dropped the window's end (not known).
fn window_live(sum: &Summary, from: usize, upto: usize) -> Option<Vec<crate::model::SiteGroup>> {
    let store = sum.tl.store();
    // The window starts among the events the memory budget dropped (its
    // index lands on the first one held, later than the window's start):
    // the blocks allocated there are not told apart from older ones.
    if store.dropped > 0 && from <= store.first() as usize {
        return None;
    }
    Some(match upto.checked_sub(1) {
        Some(last) if from < upto => sum.tl.diff(from as u64, last as u64)?,
        _ => Vec::new(),
    })
}

fn window_live_text(out: &mut String, sum: &Summary, from: usize, upto: usize) {
    let Some(groups) = window_live(sum, from, upto) else {
        let _ = writeln!(
            out,
            "\nallocated in this window and still live at its end: not known (the memory budget \
             dropped events of it: raise --memory)"
        );
        return;
    };
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

/// valgrind's LEAK SUMMARY from the last leak scan.
fn leak_summary_text(out: &mut String, sum: &Summary) {
    use strum::IntoEnumIterator;
    let Some(k) = sum.tl.leak_scan() else {
        return;
    };
    let s = &k.scan;
    let _ = writeln!(
        out,
        "\nLEAK SUMMARY (memory of pid {} scanned {}, {} of roots and {} of blocks read; target {} {}):",
        s.pid,
        match s.trigger {
            crate::event::ScanTrigger::Exit => "at its exit",
            crate::event::ScanTrigger::Paused => "while paused",
        },
        crate::model::present::bytes(s.root_bytes),
        crate::model::present::bytes(s.block_bytes),
        match s.trigger {
            crate::event::ScanTrigger::Exit => "held",
            crate::event::ScanTrigger::Paused => "paused",
        },
        crate::model::diagnose::fmt_ns(s.paused_ns),
    );
    for kind in crate::event::LeakKind::iter() {
        let t = k.total(kind);
        let _ = writeln!(
            out,
            "  {:>15}: {} bytes in {} blocks",
            kind.words(),
            t.bytes,
            t.blocks
        );
    }
    for c in &s.caveats {
        let _ = writeln!(out, "  caveat: {c}");
    }
    if k.unmatched > 0 {
        let _ = writeln!(
            out,
            "  caveat: {} scanned blocks were not live in the recording (a damaged or cut trace?)",
            k.unmatched
        );
    }
}

/// How a group's blocks were found by the last leak scan: `  definitely
/// lost` or `  2 definitely lost, 1 still reachable`; empty without one.
fn kinds_text(g: &crate::model::leaks::LeakGroup) -> String {
    use strum::IntoEnumIterator;
    let present: Vec<_> = crate::event::LeakKind::iter()
        .filter(|k| g.by_kind[*k as usize].blocks > 0)
        .collect();
    match present.as_slice() {
        [] => String::new(),
        [k] if g.by_kind[*k as usize].blocks == g.blocks => format!("  {}", k.words()),
        ks => format!(
            "  {}",
            ks.iter()
                .map(|k| format!("{} {}", g.by_kind[*k as usize].blocks, k.words()))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn leaks_text(out: &mut String, sum: &Summary) {
    leak_summary_text(out, sum);
    let groups = sum.tl.leak_groups();
    if groups.is_empty() {
        return;
    }
    let end = sum.end_ns;
    let _ = writeln!(
        out,
        "\nlive at the end, by allocation site ({} sites; growth over the last {}):",
        groups.len(),
        crate::model::diagnose::fmt_ns(sum.tl.leaks().window_ns)
    );
    for g in groups.iter().take(TEXT_LEAKS) {
        let _ = writeln!(
            out,
            "  {:>10} B in {:>6} blocks  oldest {:>9} ago  {:>+10.0} B/s  {}{}{}",
            g.bytes,
            g.blocks,
            crate::model::diagnose::fmt_ns(end.saturating_sub(g.oldest_ts)),
            g.growth_bytes_per_s,
            sum.tl
                .site(g.stack)
                .unwrap_or_else(|| "(no stack)".to_string()),
            kinds_text(g),
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

/// One row per probe of the table, with its calls (none: zeros).
struct ProbeRow {
    id: ProbeId,
    func: String,
    module: String,
    module_name: String,
    entry_only: bool,
    /// The signature's type names (`auto` without one).
    args: Vec<&'static str>,
    ret: &'static str,
    stats: crate::model::spans::ProbeStats,
}

fn probe_rows(tl: &Timeline) -> Vec<ProbeRow> {
    let mut rows: Vec<ProbeRow> = tl
        .probes()
        .iter()
        .map(|p| ProbeRow {
            id: p.id,
            func: p.func.clone(),
            module: p.module.clone(),
            module_name: p.module_name().to_string(),
            entry_only: !p.returns,
            args: p.args.iter().map(|t| t.name()).collect(),
            ret: p.ret.name(),
            stats: tl.spans().stats(p.id).cloned().unwrap_or_default(),
        })
        .collect();
    // Calls of a probe missing from the table (a damaged file) still count.
    for (id, st) in tl.spans().all_stats() {
        if tl.probe(id).is_none() {
            rows.push(ProbeRow {
                id,
                func: format!("probe {id}"),
                module: String::new(),
                module_name: String::new(),
                entry_only: false,
                args: Vec::new(),
                ret: "auto",
                stats: st.clone(),
            });
        }
    }
    rows
}

fn opt_ns(v: Option<u64>) -> String {
    v.map_or_else(|| "-".to_string(), fmt_ns)
}

fn probes_text(out: &mut String, tl: &Timeline) {
    let rows = probe_rows(tl);
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nprobes ({} functions; durations of the calls that returned):",
        rows.len()
    );
    let w = rows.iter().map(|r| r.func.len()).max().unwrap_or(0).min(40);
    for r in &rows {
        let st = &r.stats;
        let _ = writeln!(
            out,
            "  {:<w$}  {:>7} calls  {:>5} errors  total {:>9}  mean {:>9}  p99 {:>9}  {} unfinished  {}",
            r.func,
            st.calls,
            st.errors,
            fmt_ns(st.total_ns),
            opt_ns(st.mean_ns()),
            opt_ns(st.p99_ns()),
            st.unfinished(),
            r.module_name,
        );
    }
    if tl.spans().unmatched_returns > 0 {
        let _ = writeln!(
            out,
            "  ({} returns matched no recorded call)",
            tl.spans().unmatched_returns
        );
    }
}

fn syscalls_text(out: &mut String, tl: &Timeline) {
    let rows: Vec<(SysCall, &crate::model::SysTotal)> = SysCall::iter()
        .map(|c| (c, tl.sys_total(c)))
        .filter(|(_, t)| t.count > 0)
        .collect();
    if rows.is_empty() {
        return;
    }
    let _ = writeln!(out, "\nsystem calls:");
    for (c, t) in rows {
        let _ = writeln!(
            out,
            "  {:<5} {:<10} {:>7} calls  {:>10} bytes  {:>5} errors  total {}{}",
            c.family().name(),
            c.name(),
            t.count,
            t.bytes,
            t.errors,
            fmt_ns(t.total_ns),
            if t.would_block > 0 {
                format!("  ({} would block: EAGAIN)", t.would_block)
            } else {
                String::new()
            }
        );
    }
}

/// The `report --json` document.
#[cfg(test)]
pub fn json(t: &Trace, opts: &Options) -> Result<json::Report> {
    json::Report::of(t, &summarize(t, opts.memory), opts)
}

/// The `report --json` document of `t` over its summary.
pub fn json_of(t: &Trace, sum: &Summary, opts: &Options) -> Result<json::Report> {
    json::Report::of(t, sum, opts)
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
                    // Past u64 seconds: an error, not a panic.
                    return Duration::try_from_secs_f64(v * scale)
                        .map_err(|_| anyhow!("duration '{s}' is too long"));
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

    use serde_json::{json, Value};

    use crate::event::{Arg, CallInfo, Meta, Probe, SysInfo, ValueType};

    const MS: u64 = 1_000_000;

    fn call(probe: ProbeId, args: Vec<Arg>, sp: u64) -> EventKind {
        EventKind::Call(Box::new(CallInfo {
            probe,
            args,
            sp,
            stack: None,
            ret_addr: 0,
        }))
    }

    /// A server: main → process_request(42, "GET /") → parse_body(NULL),
    /// parse_body returns -1 after 3 ms, a refused connect, an off-CPU
    /// stretch, then a second request whose parse_body longjmps out.
    fn probed_trace() -> Trace {
        let probe = |id, func: &str, args, ret| Probe {
            id,
            func: func.into(),
            module: "/srv/app".into(),
            offset: 0x1000 * u64::from(id),
            args,
            ret,
            returns: true,
        };
        let kinds = vec![
            call(0, vec![], 0x7000),
            call(1, vec![Arg::Int(42), Arg::Str("GET /".into())], 0x6f00),
            call(2, vec![Arg::Ptr(0)], 0x6e00),
            EventKind::Return {
                probe: 2,
                ret: u64::from((-1i32) as u32),
                sp: 0x6e08,
            },
            EventKind::Sys(Box::new(SysInfo {
                call: SysCall::Connect,
                fd: 5,
                ret: -111,
                dur_ns: 12_000,
                len: 0,
                arg: 0,
                target: Some("10.0.0.1:80".into()),
                stack: None,
            })),
            EventKind::Sys(Box::new(SysInfo {
                call: SysCall::Read,
                fd: 3,
                ret: 4096,
                dur_ns: 2_000,
                len: 4096,
                arg: 0,
                target: Some("/tmp/x".into()),
                stack: None,
            })),
            EventKind::OffCpu {
                dur_ns: 3_100_000,
                preempted: true,
                stack: None,
            },
            EventKind::Return {
                probe: 1,
                ret: 0,
                sp: 0x6f08,
            },
            call(1, vec![Arg::Int(43), Arg::Str("POST /".into())], 0x6f00),
            call(2, vec![Arg::Ptr(0x5000)], 0x6e00),
            // parse_body longjmps back into process_request's caller.
            EventKind::Return {
                probe: 1,
                ret: 7,
                sp: 0x6f08,
            },
        ];
        let gaps = [0, 1, 1, 3, 1, 1, 1, 1, 1, 1, 2];
        let mut ts = 10 * MS;
        let events: Vec<Event> = kinds
            .into_iter()
            .zip(gaps)
            .map(|(kind, g)| {
                ts += g * MS;
                Event {
                    ts,
                    pid: 7,
                    tid: 7,
                    kind,
                }
            })
            .collect();
        Trace {
            event_count: events.len() as u64,
            first_ts: events.first().map(|e| e.ts),
            meta: Meta {
                pid: 7,
                command: "server".into(),
                start_mono_ns: 10 * MS,
                ..Meta::default()
            },
            modules: Vec::new(),
            stacks: Vec::new(),
            probes: vec![
                probe(0, "main", vec![], ValueType::Int),
                probe(
                    1,
                    "process_request",
                    vec![ValueType::Int, ValueType::Str],
                    ValueType::Int,
                ),
                probe(2, "parse_body", vec![ValueType::Ptr], ValueType::Int),
            ],
            events,
            lost: Default::default(),
            lost_marks: Vec::new(),
            end: None,
            damage: None,
            skipped: Vec::new(),
            leak_scans: Vec::new(),
            integrity: Vec::new(),
            window: None,
            resyncs: Vec::new(),
            closed: false,
            stopped: false,
        }
    }

    /// A part read (`--at`) of a program killed by a signal, without its
    /// crash: the report says the crash is before the stretch read
    /// instead of a crash-free recording.
    #[test]
    fn a_crash_before_the_part_read_is_said() {
        let f = tempfile::NamedTempFile::new().unwrap();
        let killed = crate::event::ExitStatus::Signal {
            signo: 11,
            core: false,
        };
        crate::cmd::load::tests::write_pairs_with(f.path(), 400_000, true, Some(killed));
        // After the end: the read goes on to the End record and its status.
        let at = Duration::from_micros(500_000);
        let part = crate::cmd::load::Part::at(f.path(), nanos(at), nanos(at), 0).unwrap();
        assert!(part.from.is_some(), "the file has parts");
        let (t, tl) = crate::cmd::load::read_streaming_part(f.path(), 1 << 26, part).unwrap();
        let sum = summary_of(&t, tl);
        let opts = Options {
            at: None,
            window: None,
            memory: 1 << 26,
            filter: None,
        };
        let text = text_of(&t, &sum, &opts).unwrap();
        assert!(text.contains("crash     not in the stretch read"), "{text}");
        let j = serde_json::to_value(json_of(&t, &sum, &opts).unwrap()).unwrap();
        assert_eq!(
            j["retention"]["read"]["crash_before"], true,
            "{}",
            j["retention"]
        );
        // The whole read has no such line.
        let (t, tl) =
            crate::cmd::load::read_streaming_part(f.path(), 1 << 26, Default::default()).unwrap();
        let sum = summary_of(&t, tl);
        let text = text_of(&t, &sum, &opts).unwrap();
        assert!(!text.contains("not in the stretch read"), "{text}");
    }

    /// A window whose events the memory budget dropped: what was live
    /// at its end is not known, and said so, not "0 blocks".
    #[test]
    fn a_window_the_budget_dropped_is_not_known() {
        let f = tempfile::NamedTempFile::new().unwrap();
        crate::cmd::load::tests::write_pairs(f.path(), 200_000);
        let part = crate::cmd::load::Part::default();
        let (t, tl) = crate::cmd::load::read_streaming_part(f.path(), 1 << 20, part).unwrap();
        let sum = summary_of(&t, tl);
        assert!(sum.tl.store().dropped > 0, "nothing dropped");
        let opts = |at_us: u64| Options {
            at: Some(Duration::from_micros(at_us)),
            window: Some(Duration::from_micros(3)),
            memory: 1 << 20,
            filter: None,
        };
        let early = text_of(&t, &sum, &opts(10)).unwrap();
        assert!(
            early.contains("still live at its end: not known"),
            "{early}"
        );
        let json = |at_us| serde_json::to_value(json_of(&t, &sum, &opts(at_us)).unwrap()).unwrap();
        let j = json(10);
        assert!(j["window_live"].is_null(), "{}", j["window_live"]);
        // Held: at +199,990.2 µs (the pair of +199,990 µs allocated, not
        // yet freed) the window holds its one block.
        let late = json(199_990);
        let groups = late["window_live"].as_array().expect("held");
        let blocks: u64 = groups.iter().filter_map(|g| g["blocks"].as_u64()).sum();
        assert_eq!(blocks, 1, "{}", late["window_live"]);
    }

    #[test]
    fn skipped_records_are_reported() {
        let mut t = probed_trace();
        assert!(!text(&t, &Options::default()).unwrap().contains("SKIPPED"));
        t.skipped = vec![
            crate::trace::Damage {
                offset: 42,
                reason: "undecodable Event record (unknown event kind 16)".into(),
            },
            crate::trace::Damage {
                offset: 99,
                reason: "unknown record type 8".into(),
            },
        ];
        let out = text(&t, &Options::default()).unwrap();
        assert!(
            out.contains(
                "SKIPPED   2 record(s) this version cannot read, the first at byte 42: \
                 undecodable Event record (unknown event kind 16)"
            ),
            "{out}"
        );
    }

    #[test]
    fn calls_returns_and_syscalls_as_text() {
        let t = probed_trace();
        let out = text(&t, &Options::default()).unwrap();
        // Lines with their runs of spaces made one (columns vary).
        let words = |l: &str| l.split_whitespace().collect::<Vec<_>>().join(" ");
        let line = |needle: &str| {
            out.lines()
                .map(words)
                .find(|l| l.contains(&words(needle)))
                .unwrap_or_else(|| panic!("no line with {needle:?} in\n{out}"))
        };
        assert!(line("CALL    process_request(42, \"GET /\")").contains("tid 7"));
        assert!(line("CALL    parse_body(NULL)").starts_with("+0.002000s"));
        assert!(line("RET     parse_body -> -1  3.00ms").starts_with("+0.005000s"));
        line("NET     connect fd=5 10.0.0.1:80 -> -111 ECONNREFUSED  12.0µs");
        line("IO      read fd=3 /tmp/x 4096 -> 4096  2.0µs");
        line("SCHED   off-cpu 3.10ms preempted");
        line("RET     process_request -> 0  8.00ms");
        line("RET     process_request -> 7  3.00ms");
        // Probe totals: process_request returned twice (8 + 3 ms).
        let pr = line("process_request     2 calls");
        assert!(pr.contains("0 errors"), "{pr}");
        assert!(pr.contains("total 11.00ms"), "{pr}");
        assert!(pr.contains("mean 5.50ms"), "{pr}");
        assert!(pr.contains("p99 8.00ms"), "{pr}");
        assert!(pr.contains("0 unfinished app"), "{pr}");
        let pb = line("parse_body          2 calls");
        assert!(pb.contains("1 errors"), "{pb}");
        assert!(pb.contains("1 unfinished"), "{pb}");
        line("main                1 calls");
        let net = line("net   connect");
        assert!(net.contains("1 errors"), "{net}");
        assert!(line("io    read").contains("4096 bytes"));
    }

    /// The document as a `Value`, to index by field name.
    fn json_value(t: &Trace, opts: &Options) -> Value {
        let r = json(t, opts).unwrap();
        serde_json::to_value(r).unwrap()
    }

    #[test]
    fn calls_returns_and_syscalls_as_json() {
        let t = probed_trace();
        let v = json_value(&t, &Options::default());
        let w = v["window"].as_array().cloned().unwrap_or_default();
        assert_eq!(w.len(), t.events.len());
        let c = &w[1];
        assert_eq!(c["kind"], "call");
        assert_eq!(c["func"], "process_request");
        assert_eq!(c["args"], json!([42, "GET /"]));
        assert_eq!(c["ret"], json!(0));
        assert_eq!(c["duration_ns"], json!(8 * MS));
        assert_eq!(c["depth"], json!(1));
        assert_eq!(w[2]["args"], json!([null]));
        assert_eq!(w[2]["ret"], json!(-1));
        assert_eq!(w[9]["args"], json!(["0x5000"]));
        assert_eq!(w[9]["ret"], Value::Null, "longjmp'ed out: no return");
        assert_eq!(w[9]["duration_ns"], Value::Null);
        assert_eq!(w[9]["outcome"], "no return");
        let r = &w[3];
        assert_eq!(
            (&r["kind"], &r["func"], &r["ret"]),
            (&json!("return"), &json!("parse_body"), &json!(-1))
        );
        assert_eq!(r["duration_ns"], json!(3 * MS));
        let n = &w[4];
        assert_eq!(n["kind"], "net");
        assert_eq!(n["call"], "connect");
        assert_eq!(
            (&n["fd"], &n["ret"], &n["duration_ns"]),
            (&json!(5), &json!(-111), &json!(12_000))
        );
        assert_eq!(n["target"], "10.0.0.1:80");
        assert_eq!(w[5]["kind"], "io");
        assert_eq!(w[5]["len"], json!(4096));
        assert_eq!(w[6]["kind"], "sched");
        assert_eq!(w[6]["preempted"], json!(true));
        let probes = v["probes"].as_array().cloned().unwrap_or_default();
        assert_eq!(probes.len(), 3);
        let pb = &probes[2];
        assert_eq!(pb["func"], "parse_body");
        assert_eq!(pb["module"], "/srv/app");
        assert_eq!(
            (&pb["calls"], &pb["errors"], &pb["unfinished"]),
            (&json!(2), &json!(1), &json!(1))
        );
        assert_eq!(
            (&pb["total_ns"], &pb["mean_ns"], &pb["p99_ns"]),
            (&json!(3 * MS), &json!(3 * MS), &json!(3 * MS))
        );
        let sys = v["syscalls"].as_array().cloned().unwrap_or_default();
        let calls: Vec<&Value> = sys.iter().map(|s| &s["call"]).collect();
        assert_eq!(calls, vec!["read", "connect"]);
        assert_eq!(sys[0]["bytes"], json!(4096));
        assert_eq!(sys[1]["errors"], json!(1));
        // Old fields are all still there.
        for k in [
            "target",
            "events",
            "heap",
            "crash",
            "leaks",
            "retention",
            "window",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["events"]["by_kind"]["call"], json!(5));
    }

    #[test]
    fn probes_is_an_empty_list_without_probes() {
        let mut t = probed_trace();
        t.probes.clear();
        t.events.clear();
        let v = json_value(&t, &Options::default());
        assert_eq!(v["probes"], json!([]));
        assert_eq!(v["syscalls"], json!([]));
    }

    /// `tests/data/snap.tmt`: a real recording of `tests/data/snap.c`
    /// (allocations, a realloc, leaks, probed calls, io and net system
    /// calls, off-CPU time, a use-after-free crash). A checked-in file, so
    /// it also tests reading an old format version.
    fn snap_trace() -> Trace {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/snap.tmt");
        crate::trace::read_trace(&path).unwrap_or_else(|e| panic!("{}: {e:#}", path.display()))
    }

    /// `report --json` of the snapshot recording, as the command prints it
    /// (serialized straight from the structs, so their field order shows).
    fn snap_json(opts: &Options) -> String {
        let r = json(&snap_trace(), opts).unwrap();
        serde_json::to_string_pretty(&r).unwrap()
    }

    /// Renaming, dropping or reordering a field of the JSON fails here.
    #[test]
    fn json_of_a_recording() {
        insta::assert_snapshot!("snap_json", snap_json(&Options::default()));
    }

    #[test]
    fn json_of_a_recording_in_a_window_at_a_moment() {
        let opts = Options {
            at: Some(Duration::from_micros(850_420)),
            window: Some(Duration::from_micros(50)),
            ..Options::default()
        };
        insta::assert_snapshot!("snap_json_at_window", snap_json(&opts));
    }

    #[test]
    fn json_of_a_recording_filtered() {
        // Past the end, so the crash is a window event too.
        let opts = Options {
            at: Some(Duration::from_secs(2)),
            filter: Some("kind=alloc,free,realloc,brk,exec,signal,exit".into()),
            ..Options::default()
        };
        insta::assert_snapshot!("snap_json_filter", snap_json(&opts));
    }

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
