//! Crash diagnosis: deterministic rules over the timeline, each verdict
//! with its evidence — the block, the allocation, free and crash stacks,
//! the offset and the times — as ASan would say it.
//!
//! Rules hold under address reuse: a fault in a block that was freed and
//! handed out again is an access to the live block, not a use-after-free.

use std::fmt::Write as _;

use crate::event::{si_code_name, signal_name, EventKind, SignalInfo, StackId};
use crate::model::history;
use crate::model::names::{module_path, stack_lines};
use crate::model::store::LiveBlock;
use crate::model::store::{HeapOp, Idx};
use crate::model::{untag, Timeline};

/// Faults below this are NULL (or near-NULL) dereferences.
pub const NULL_LIMIT: u64 = 64 * 1024;
/// How far past the end of a live block a fault is still called an
/// out-of-bounds access of that block.
const OOB_REACH: u64 = 64 * 1024;
/// How far below the end of a block an underflow is looked for.
const UNDERFLOW_REACH: u64 = 4096;
/// A fault this close to the stack pointer is on the stack's edge.
const STACK_REACH: u64 = 64 * 1024;
/// How far back the abort's free is looked for on the crashing thread.
const FREE_LOOKBACK: u64 = 100_000;

const SIGILL: i32 = 4;
const SIGABRT: i32 = 6;
const SIGBUS: i32 = 7;
const SIGSEGV: i32 = 11;

#[derive(Clone, Copy, Debug, PartialEq, Eq, strum::EnumIter, strum::IntoStaticStr)]
#[strum(serialize_all = "kebab-case")]
pub enum DiagKind {
    UseAfterFree,
    DoubleFree,
    InvalidFree,
    NullDeref,
    OutOfBounds,
    StackOverflow,
    /// tm-tui's own return probe killed the program (see README).
    ProbeReturn,
    Unknown,
}

impl DiagKind {
    /// The stable name used in `report --json` (`crash.diagnosis.kind`).
    pub fn name(self) -> &'static str {
        self.into()
    }
}

/// An event that is evidence: where and when.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Site {
    /// The event, when it is held in the recording.
    pub idx: Option<Idx>,
    pub ts: u64,
    pub tid: u32,
    pub stack: Option<StackId>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Diagnosis {
    pub kind: DiagKind,
    /// One line, naming the culprit sites.
    pub summary: String,
    /// The block concerned: start and size.
    pub block: Option<(u64, u64)>,
    /// Fault (or freed) address minus the block start.
    pub offset: Option<i64>,
    pub alloc: Option<Site>,
    /// The (first) free of the block.
    pub free: Option<Site>,
    /// The faulting access, or the offending free.
    pub access: Option<Site>,
    /// Further evidence, one fact a line.
    pub notes: Vec<String>,
}

fn site(tl: &Timeline, i: Idx) -> Option<Site> {
    Some(Site {
        idx: Some(i),
        ts: tl.store.ts(i)?,
        tid: tl.store.tid(i)?,
        stack: tl.store.stack(i),
    })
}

fn alloc_site(tl: &Timeline, b: &LiveBlock) -> Site {
    Site {
        idx: tl.store.contains(b.alloc).then_some(b.alloc),
        ts: b.ts,
        tid: b.tid,
        stack: b.stack,
    }
}

fn at(tl: &Timeline, stack: Option<StackId>) -> String {
    tl.site(stack)
        .unwrap_or_else(|| "an unknown site (no stack)".to_string())
}

/// A short human duration: `350ns`, `12.5µs`, `1.20ms`, `2.500s`.
pub fn fmt_ns(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}µs", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.3}s", ns as f64 / 1e9),
    }
}

fn is_free_frame(name: &str) -> bool {
    name.contains("free") || name.contains("realloc") || name == "malloc_printerr"
}

/// The crash at event `crash`, explained.
pub fn diagnose(tl: &Timeline, crash: Idx) -> Option<Diagnosis> {
    let ev = tl.store.get(crash)?;
    let EventKind::Signal(sig) = &ev.kind else {
        return None;
    };
    let access = Site {
        idx: Some(crash),
        ts: ev.ts,
        tid: ev.tid,
        stack: sig.stack,
    };
    // Crashed inside the allocator's free path: glibc aborts on a bad free,
    // and a wild pointer can fault in free itself.
    let in_free = tl.stack(sig.stack).is_some_and(|s| {
        s.frames
            .iter()
            .take(8)
            .any(|f| f.func.as_deref().is_some_and(is_free_frame))
    });
    if sig.signo == SIGABRT || (in_free && sig.signo != SIGILL) {
        if let Some(d) = free_rule(tl, crash, ev.tid, sig) {
            return Some(d);
        }
    }
    if matches!(sig.signo, SIGSEGV | SIGBUS) {
        return Some(addr_rule(tl, crash, sig, access));
    }
    // Return-probed calls open on the crashing thread, innermost last.
    let probed: Vec<String> = tl
        .call_path(crash)
        .iter()
        .filter(|s| tl.probe(s.probe).is_some_and(|p| p.returns))
        .filter_map(|s| tl.probe(s.probe).map(|p| p.func.clone()))
        .collect();
    if sig.signo == SIGILL && crate::util::is_uretprobe_trampoline(sig.ip) {
        return Some(Diagnosis {
            kind: DiagKind::ProbeReturn,
            summary: format!(
                "SIGILL at the kernel's uretprobe trampoline: a return-probed call ran on \
                 another stack (sigaltstack, coroutine) and the kernel lost its return; \
                 tm-tui's --probe killed the program{}: use --probe-entry there",
                match probed.last() {
                    Some(f) => format!(" (innermost probed call: {f})"),
                    None => String::new(),
                }
            ),
            block: None,
            offset: None,
            alloc: None,
            free: None,
            access: Some(access),
            notes: Vec::new(),
        });
    }
    let unwinding = tl.stack(sig.stack).is_some_and(|s| {
        s.frames.iter().any(|f| {
            f.func
                .as_deref()
                .is_some_and(|n| n.contains("_Unwind_RaiseException") || n.contains("__cxa_throw"))
        })
    });
    let mut notes = Vec::new();
    if sig.signo == SIGABRT && unwinding && !probed.is_empty() {
        notes.push(format!(
            "an exception was unwinding through return-probed calls ({}): their return \
             addresses are the kernel's trampoline, which the unwinder cannot pass, so it \
             terminated the program; use --probe-entry for functions exceptions cross",
            probed.join(" → ")
        ));
    }
    Some(Diagnosis {
        kind: DiagKind::Unknown,
        summary: format!(
            "{} ({}) in {}",
            signal_name(sig.signo),
            si_code_name(sig.signo, sig.code),
            at(tl, sig.stack)
        ),
        block: None,
        offset: None,
        alloc: None,
        free: None,
        access: Some(access),
        notes,
    })
}

/// SIGABRT (or a fault in free): the last free on the crashing thread was
/// of a block already freed, or of an address never handed out.
fn free_rule(tl: &Timeline, crash: Idx, tid: u32, sig: &SignalInfo) -> Option<Diagnosis> {
    let lo = crash.saturating_sub(FREE_LOOKBACK).max(tl.store.first());
    let (fi, ptr) = (lo..crash).rev().find_map(|i| {
        if tl.store.tid(i) != Some(tid) {
            return None;
        }
        match tl.store.heap_op(i)? {
            HeapOp::Free { ptr } => Some((i, ptr)),
            HeapOp::Realloc { old, .. } if old != 0 => Some((i, old)),
            _ => None,
        }
    })?;
    let second = site(tl, fi)?;
    let h = history::at_start(&tl.store, &tl.heap, ptr);
    let head = signal_name(sig.signo);
    if let Some(life) = h.lives.iter().find(|l| l.extra_frees.contains(&fi)) {
        let first = life.end.and_then(|e| site(tl, e));
        let b = life.block;
        let mut notes = vec![format!(
            "{head} raised by the allocator on the second free (tid {})",
            second.tid
        )];
        if life.extra_frees.len() > 1 {
            notes.push(format!(
                "the block was freed {} times after its first free",
                life.extra_frees.len()
            ));
        }
        let summary = format!(
            "double free of {:#x}, a {}-byte block allocated at {}: freed at {}, then again at {}{}",
            untag(ptr),
            b.size,
            at(tl, b.stack),
            first
                .as_ref()
                .map_or_else(|| "an unrecorded site".to_string(), |f| at(tl, f.stack)),
            at(tl, second.stack),
            first
                .as_ref()
                .map(|f| format!(" ({} later)", fmt_ns(second.ts.saturating_sub(f.ts))))
                .unwrap_or_default()
        );
        return Some(Diagnosis {
            kind: DiagKind::DoubleFree,
            summary,
            block: Some((untag(b.ptr), b.size)),
            offset: Some(0),
            alloc: Some(alloc_site(tl, &b)),
            free: first,
            access: Some(second),
            notes,
        });
    }
    if !h.stray_frees.contains(&fi) {
        // That free was of a live block: the abort has another cause.
        return None;
    }
    let covering = history::covering(&tl.store, &tl.heap, ptr);
    let inside = covering
        .iter()
        .rev()
        .find(|l| l.block.alloc < fi && l.block.ptr != ptr);
    let mut notes = Vec::new();
    let (summary, block, offset, alloc, free) = match inside {
        Some(l) => {
            let off = ptr - l.block.ptr;
            let state = match l.end {
                Some(e) if e < fi => format!(", freed at {}", at(tl, tl.store.stack(e))),
                _ => String::new(),
            };
            (
                format!(
                    "invalid free of {:#x}: {off} bytes inside a {}-byte block allocated at {}{state}; called at {}",
                    untag(ptr),
                    l.block.size,
                    at(tl, l.block.stack),
                    at(tl, second.stack)
                ),
                Some((untag(l.block.ptr), l.block.size)),
                i64::try_from(off).ok(),
                Some(alloc_site(tl, &l.block)),
                l.end.filter(|&e| e < fi).and_then(|e| site(tl, e)),
            )
        }
        None => {
            if !tl.meta.launched || h.truncated {
                notes.push(
                    "the recording does not reach the start of the process: the address may \
                     have been allocated before it"
                        .to_string(),
                );
            }
            (
                format!(
                    "invalid free of {:#x}: the allocator never returned this address in the recording; called at {}",
                    untag(ptr),
                    at(tl, second.stack)
                ),
                None,
                None,
                None,
                None,
            )
        }
    };
    notes.push(format!("{head} raised by the allocator on this free"));
    Some(Diagnosis {
        kind: DiagKind::InvalidFree,
        summary,
        block,
        offset,
        alloc,
        free,
        access: Some(second),
        notes,
    })
}

fn addr_rule(tl: &Timeline, crash: Idx, sig: &SignalInfo, access: Site) -> Diagnosis {
    let a = sig.addr;
    // The heap of the crashing process: its addresses carry its tag.
    let tag = tl.store.pid(crash).map_or(0, |p| tl.tag_of(p));
    let ta = untag(a) | tag << crate::model::TAG_SHIFT;
    let head = format!("{} at {a:#x}", signal_name(sig.signo));
    let mut d = Diagnosis {
        kind: DiagKind::Unknown,
        summary: String::new(),
        block: None,
        offset: None,
        alloc: None,
        free: None,
        access: Some(access.clone()),
        notes: Vec::new(),
    };
    let where_ = at(tl, sig.stack);
    if a < NULL_LIMIT {
        d.kind = DiagKind::NullDeref;
        d.summary = if a == 0 {
            format!("{head}: NULL pointer dereference in {where_}")
        } else {
            format!("{head}: NULL pointer dereference ({a} bytes past NULL) in {where_}")
        };
        return d;
    }
    let live = tl.heap.at(&tl.store, crash).unwrap_or_default();
    let live_allocs: crate::util::hash::FxSet<Idx> = live.iter().map(|b| b.alloc).collect();
    let lives: Vec<history::Life> = history::covering(&tl.store, &tl.heap, ta)
        .into_iter()
        .filter(|l| l.block.alloc < crash)
        .collect();
    if let Some(l) = lives.iter().find(|l| live_allocs.contains(&l.block.alloc)) {
        let off = ta - l.block.ptr;
        d.summary = format!(
            "{head} is {off} bytes inside a live {}-byte block allocated at {}: the memory was unmapped or protected behind the allocator",
            l.block.size,
            at(tl, l.block.stack)
        );
        d.block = Some((untag(l.block.ptr), l.block.size));
        d.offset = i64::try_from(off).ok();
        d.alloc = Some(alloc_site(tl, &l.block));
        if lives.iter().any(|o| o.end.is_some_and(|e| e < crash)) {
            d.notes.push(format!(
                "{} earlier block(s) at this address were freed: it was reused, so this is not a use-after-free",
                lives.iter().filter(|o| o.end.is_some_and(|e| e < crash)).count()
            ));
        }
        return d;
    }
    // A freed block whose start was handed out again to a smaller live
    // block: the fault is past that live block's end, not in freed memory.
    let reused = |start: u64| live.iter().any(|b| b.ptr == start);
    if let Some((l, end)) = lives
        .iter()
        .rev()
        .find_map(|l| l.end.filter(|&e| e < crash).map(|e| (l, e)))
        .filter(|(l, _)| !reused(l.block.ptr))
    {
        let off = ta - l.block.ptr;
        let free = site(tl, end);
        let ago = free
            .as_ref()
            .map(|f| fmt_ns(access.ts.saturating_sub(f.ts)))
            .unwrap_or_default();
        d.kind = DiagKind::UseAfterFree;
        d.summary = format!(
            "use-after-free: {head} is {off} bytes inside a {}-byte block allocated at {} and freed at {} ({ago} before the access in {where_})",
            l.block.size,
            at(tl, l.block.stack),
            at(tl, tl.store.stack(end)),
        );
        d.block = Some((untag(l.block.ptr), l.block.size));
        d.offset = i64::try_from(off).ok();
        d.alloc = Some(alloc_site(tl, &l.block));
        d.free = free;
        if lives.len() > 1 {
            d.notes.push(format!(
                "{} blocks covered this address in the recording; this is the last one",
                lives.len()
            ));
        }
        return d;
    }
    if sig.sp != 0 && a.abs_diff(sig.sp) < STACK_REACH {
        d.kind = DiagKind::StackOverflow;
        let depth = tl.stack(sig.stack).map(|s| {
            let mut counts: std::collections::HashMap<&str, usize> = Default::default();
            for f in &s.frames {
                if let Some(n) = f.func.as_deref() {
                    *counts.entry(n).or_default() += 1;
                }
            }
            counts.into_iter().max_by_key(|(_, c)| *c)
        });
        d.summary = format!(
            "stack overflow: {head} is {} bytes {} the stack pointer {:#x}, on the stack's guard, in {where_}",
            a.abs_diff(sig.sp),
            if a < sig.sp { "below" } else { "above" },
            sig.sp
        );
        if let Some(Some((f, n))) = depth {
            if n > 1 {
                d.notes.push(format!(
                    "{f} appears {n} times in the unwound frames: runaway recursion"
                ));
            }
        }
        return d;
    }
    // Just past the end of a live block, or just before its start.
    let past = live
        .iter()
        .filter(|b| b.ptr.saturating_add(b.size) <= a && a - (b.ptr + b.size) < OOB_REACH)
        .min_by_key(|b| a - (b.ptr + b.size));
    let before = live
        .iter()
        .filter(|b| b.ptr > a && b.ptr - a <= UNDERFLOW_REACH)
        .min_by_key(|b| b.ptr - a);
    let pick = match (past, before) {
        (Some(p), Some(b)) => {
            if a - (p.ptr + p.size) <= b.ptr - a {
                Some((p, true))
            } else {
                Some((b, false))
            }
        }
        (Some(p), None) => Some((p, true)),
        (None, Some(b)) => Some((b, false)),
        (None, None) => None,
    };
    if let Some((b, is_past)) = pick {
        d.kind = DiagKind::OutOfBounds;
        let rel = if is_past {
            format!("{} bytes past the end of", a - (b.ptr + b.size))
        } else {
            format!("{} bytes before the start of", b.ptr - a)
        };
        d.summary = format!(
            "out-of-bounds: {head} is {rel} a live {}-byte block allocated at {}; access in {where_}",
            b.size,
            at(tl, b.stack)
        );
        d.block = Some((b.ptr, b.size));
        d.offset = Some(a as i64 - b.ptr as i64);
        d.alloc = Some(alloc_site(tl, b));
        return d;
    }
    d.summary = format!(
        "{head} ({}): not in any heap block of the recording; in {where_}",
        si_code_name(sig.signo, sig.code)
    );
    let below = live.iter().filter(|b| b.ptr <= a).max_by_key(|b| b.ptr);
    let above = live.iter().filter(|b| b.ptr > a).min_by_key(|b| b.ptr);
    for (b, dir) in [(below, "below"), (above, "above")] {
        if let Some(b) = b {
            d.notes.push(format!(
                "nearest live block {dir}: {:#x} ({} bytes) allocated at {}",
                b.ptr,
                b.size,
                at(tl, b.stack)
            ));
        }
    }
    let start = tl.meta.start_mono_ns;
    for (i, k) in tl.store.others().rev().filter(|(i, _)| *i < crash) {
        let (lo, len, what) = match k {
            EventKind::Munmap { addr, len, ret: 0 } => (*addr, *len, "unmapped by munmap"),
            EventKind::Mmap { ret, len, .. } if *ret > 0 => (*ret as u64, *len, "mapped by mmap"),
            _ => continue,
        };
        if a >= lo && a - lo < len {
            let t = tl.store.ts(i).unwrap_or(start).saturating_sub(start);
            d.notes.push(format!(
                "the address was {what} [{lo:#x}, {:#x}) at +{}",
                lo.saturating_add(len),
                fmt_ns(t)
            ));
            break;
        }
    }
    if d.notes.is_empty() {
        d.notes
            .push("no recorded block or mapping is near the address".to_string());
    }
    d
}

impl Diagnosis {
    /// The ASan-style text: verdict, summary, then each stack of evidence.
    pub fn text(&self, tl: &Timeline) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "DIAGNOSIS  {}", self.kind.name());
        let _ = writeln!(out, "  {}", self.summary);
        let start = tl.meta.start_mono_ns;
        let access_label = match self.kind {
            DiagKind::DoubleFree => "freed again",
            DiagKind::InvalidFree => "invalid free",
            DiagKind::UseAfterFree | DiagKind::OutOfBounds => "access",
            _ => "crash",
        };
        let first_free = if self.kind == DiagKind::DoubleFree {
            "first freed"
        } else {
            "freed"
        };
        let mp = module_path(&tl.modules);
        for (label, s) in [
            (access_label, &self.access),
            (first_free, &self.free),
            ("allocated", &self.alloc),
        ] {
            let Some(s) = s else { continue };
            if label == "crash" {
                // The crash stack is printed with the crash itself.
                continue;
            }
            let _ = writeln!(
                out,
                "  {label} by tid {} at +{}:",
                s.tid,
                fmt_ns(s.ts.saturating_sub(start))
            );
            match tl.stack(s.stack) {
                Some(st) => {
                    for l in stack_lines(st, &mp) {
                        let _ = writeln!(out, "      {l}");
                    }
                }
                None => {
                    let _ = writeln!(out, "      (no stack)");
                }
            }
        }
        for n in &self.notes {
            let _ = writeln!(out, "  note: {n}");
        }
        out
    }
}
