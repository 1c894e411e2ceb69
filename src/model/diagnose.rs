//! Crash diagnosis: deterministic rules over the timeline, each verdict
//! with its evidence — the block, the allocation, free and crash stacks,
//! the offset and the times — as ASan would say it.
//!
//! Rules hold under address reuse: a fault in a block that was freed and
//! handed out again is an access to the live block, not a use-after-free.

use std::fmt::Write as _;

use crate::event::{si_code_name, signal_name, EventKind, SignalInfo, SignalSender, StackId};
use crate::model::history;
use crate::model::names::{module_path, stack_lines};
use crate::model::operand::{self, Operand};
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
/// si_code of a fault the kernel raised without a cause code: on x86 a
/// general-protection fault (a non-canonical address, among others).
const SI_KERNEL: i32 = 128;
/// glibc's default mmap threshold: smaller blocks come from an arena.
const MMAP_THRESHOLD: u64 = 128 * 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::EnumIter, strum::IntoStaticStr)]
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
    /// A process sent the signal (kill, tkill, sigqueue): no fault.
    SentSignal,
    /// A general-protection fault: an address the CPU refused (a
    /// non-canonical value, often text written over a pointer).
    WildPointer,
    /// The allocator found its metadata overwritten and aborted.
    HeapCorruption,
    /// A watchpoint saw a write just past a live block's end (or just
    /// before its start): no crash, caught as it happened.
    HeapBufferOverflow,
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
    pub extra: Extra,
}

/// Evidence some verdicts carry besides the block and its sites.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extra {
    /// Who sent the signal (sent-signal).
    pub sender: Option<SignalSender>,
    /// The fatal delivery, when the cause is an earlier delivery that the
    /// program's handler caught and re-raised (`access` is that earlier one).
    pub reraised: Option<Site>,
    /// The faulting instruction's memory operand (wild-pointer).
    pub operand: Option<Operand>,
    /// What the program said as it aborted (glibc's abort message).
    pub message: Option<String>,
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

/// The signal event `i`, its signal, and where it hit.
fn signal_at(tl: &Timeline, i: Idx) -> Option<(crate::event::Event, Box<SignalInfo>, Site)> {
    let ev = tl.store.get(i)?;
    let EventKind::Signal(sig) = &ev.kind else {
        return None;
    };
    let sig = sig.clone();
    let access = Site {
        idx: Some(i),
        ts: ev.ts,
        tid: ev.tid,
        stack: sig.stack,
    };
    Some((ev, sig, access))
}

/// The crash (or watchpoint finding) at event `crash`, explained.
pub fn diagnose(tl: &Timeline, crash: Idx) -> Option<Diagnosis> {
    if let Some(EventKind::Watch(w)) = tl.store.get(crash).map(|e| e.kind) {
        return watch_rule(tl, crash, &w);
    }
    let mut d = diagnose_crash(tl, crash)?;
    // A watchpoint saw this block misused before: say so.
    if let Some((addr, _)) = d.block {
        let start = tl.meta.start_mono_ns;
        for &h in tl.watch_hits.iter().filter(|&&h| h < crash) {
            let Some(EventKind::Watch(w)) = tl.store.get(h).map(|e| e.kind) else {
                continue;
            };
            if let Some(f) = watch_rule(tl, h, &w).filter(|f| f.block.map(|b| b.0) == Some(addr)) {
                d.notes.push(format!(
                    "a watchpoint saw this block misused {} before the crash, at {}: {}",
                    fmt_ns(
                        tl.store
                            .ts(crash)
                            .unwrap_or(0)
                            .saturating_sub(tl.store.ts(h).unwrap_or(0))
                    ),
                    crate::model::present::rel(tl.store.ts(h).unwrap_or(0), start),
                    f.summary
                ));
                break;
            }
        }
    }
    Some(d)
}

fn diagnose_crash(tl: &Timeline, crash: Idx) -> Option<Diagnosis> {
    let (ev, sig, access) = signal_at(tl, crash)?;
    let sig = &*sig;
    if sig.code <= 0 {
        // Recordings before trace format 5 have no sender: their SIGABRT
        // is abort()'s, as it was read then.
        let own = match &sig.sender {
            Some(s) => s.pid == ev.pid,
            None => sig.signo == SIGABRT,
        };
        // A handler that caught a fault and raised it again: the cause is
        // the caught fault.
        if own {
            if let Some(first) = caught_fault(tl, crash, ev.pid, ev.tid) {
                if let Some(mut d) = diagnose_signal(tl, first) {
                    reraised(tl, &mut d, first, &access, sig);
                    return Some(d);
                }
            }
        }
        // abort() raises its own SIGABRT: the allocator's checks and
        // assert() are told apart by what happened before.
        if !(own && sig.signo == SIGABRT) {
            return Some(sent_rule(tl, sig, access));
        }
    }
    diagnose_signal(tl, crash)
}

/// A stack whose every frame is in the allocator's own module, walked to
/// its end: the allocator's internal work (glibc's tcache flushed at a
/// thread's exit reads freed blocks), not the program's.
fn allocator_only(tl: &Timeline, stack: Option<StackId>) -> bool {
    let Some(st) = tl.stack(stack) else {
        return false;
    };
    // By file name: the recorder and the maps may name it by another
    // path (/lib and /usr/lib are one directory on a merged /usr).
    let name = |p: &str| p.rsplit('/').next().unwrap_or(p).to_string();
    let alloc = name(&tl.meta.allocator);
    !alloc.is_empty()
        && st.end == crate::event::StackEnd::Complete
        && !st.frames.is_empty()
        && st.frames.iter().all(|f| {
            f.module
                .and_then(|m| tl.modules.iter().find(|x| x.id == m))
                .is_some_and(|m| name(&m.path) == alloc)
        })
}

/// A watchpoint's hit at `i`: a use after free or an overflow the program
/// survived, with the block's allocation and free. `None` when it is not
/// the program's bug (the allocator's own access, a block handed out
/// again before the hit was seen).
fn watch_rule(tl: &Timeline, i: Idx, w: &crate::event::WatchHit) -> Option<Diagnosis> {
    use crate::event::WatchWhat;
    // An asked address's accesses are events, not findings.
    if w.what == WatchWhat::Asked {
        return None;
    }
    let ev = tl.store.get(i)?;
    if allocator_only(tl, w.stack) {
        return None;
    }
    let tag = tl.tag_of(ev.pid);
    let tagged = |a: u64| untag(a) | tag << crate::model::TAG_SHIFT;
    let access = Site {
        idx: Some(i),
        ts: ev.ts,
        tid: ev.tid,
        stack: w.stack,
    };
    let how = if w.write { "WRITE" } else { "READ" };
    let where_ = at(tl, w.stack);
    let lives = history::at_start(&tl.store, &tl.heap, tagged(w.block)).lives;
    let mut d = Diagnosis::blank(DiagKind::UseAfterFree, access.clone());
    // Where in the watched bytes: the access itself, decoded from the
    // instruction before the trap and the registers (its address and
    // width, within the watched bytes); else the bytes a write changed
    // (a byte written with the value it had is not among them: it read
    // as offset 1 for a write at 0 when the old pointer's low byte was the
    // new value's); else all of them.
    let base = w.addr as i64 - w.block as i64;
    let watched_end = w.addr + u64::from(w.len);
    let decoded = operand::access_before(w.ip, &w.code, &w.regs, w.addr)
        .map(|(ea, size, _)| (ea.max(w.addr), ea.saturating_add(size).min(watched_end)))
        .filter(|(a, b)| a < b);
    let changed = match decoded {
        Some((a, b)) => (a - w.addr) as u32..(b - w.addr) as u32,
        None => w.changed(),
    };
    let (lo, hi) = if changed.is_empty() {
        (base, base + i64::from(w.len))
    } else {
        (
            base + i64::from(changed.start),
            base + i64::from(changed.end),
        )
    };
    let span = if hi - lo == 1 {
        format!("offset {lo}")
    } else if changed.is_empty() {
        format!("bytes [{lo}, {hi})")
    } else {
        format!("offsets {lo}..{}", hi - 1)
    };
    // A wide load that began below the watched block, or through a
    // pointer below it (glibc's SIMD string routines read whole vectors
    // past a string's end into the next chunk, `vmovdqu 0x20(%rsi)` with
    // rsi in the neighbour) read nothing the program uses of this block.
    if !w.write && w.what == WatchWhat::Freed {
        if let Some((ea, _, base)) = operand::access_before(w.ip, &w.code, &w.regs, w.addr) {
            if ea < w.block || base.is_some_and(|b| b < w.block) {
                return None;
            }
        }
    }
    match w.what {
        WatchWhat::Freed => {
            // The last block at that start before the hit, ended before it.
            let l = lives.iter().rev().find(|l| l.block.alloc < i)?;
            let end = l.end.filter(|&e| e < i)?;
            let free = site(tl, end)?;
            d.summary = format!(
                "use-after-free: {how} of {span} of a {}-byte block allocated at {} and freed at {} ({} before the access in {where_}); the program did not crash",
                l.block.size,
                at(tl, l.block.stack),
                at(tl, free.stack),
                fmt_ns(ev.ts.saturating_sub(free.ts)),
            );
            d.block = Some((untag(l.block.ptr), l.block.size));
            d.alloc = Some(alloc_site(tl, &l.block));
            d.free = Some(free);
        }
        WatchWhat::PastEnd | WatchWhat::BeforeStart => {
            let l = lives
                .iter()
                .rev()
                .find(|l| l.block.alloc < i && l.end.is_none_or(|e| e > i))?;
            d.kind = DiagKind::HeapBufferOverflow;
            let size = l.block.size as i64;
            let rel = match (w.what == WatchWhat::PastEnd, changed.is_empty()) {
                (true, false) => format!("{} bytes after the {size}-byte block", lo - size),
                (true, true) => format!("just after the {size}-byte block"),
                (false, false) => format!("{} bytes before the {size}-byte block", -hi),
                (false, true) => format!("just before the {size}-byte block"),
            };
            d.summary = format!(
                "heap-buffer-overflow: {how} of {span} ({rel}) allocated at {}, in {where_}; the program did not crash",
                at(tl, l.block.stack),
            );
            d.block = Some((untag(l.block.ptr), l.block.size));
            d.alloc = Some(alloc_site(tl, &l.block));
        }
        WatchWhat::Asked => return None,
    }
    d.offset = Some(lo);
    d.notes.push(format!(
        "seen by a hardware watchpoint on bytes [{base}, {}) of the block{}",
        base + i64::from(w.len),
        if changed.is_empty() && w.len > 1 {
            " (the access touched some of them; which, the hardware does not say)"
        } else {
            ""
        }
    ));
    Some(d)
}

/// The method a sent signal's si_code names.
fn send_call(code: i32) -> String {
    match code {
        0 => "kill()".to_string(),
        -6 => "tkill()/tgkill()".to_string(),
        -1 => "sigqueue()".to_string(),
        -2 => "a POSIX timer".to_string(),
        -3 => "a message queue notification".to_string(),
        -4 => "asynchronous I/O completion".to_string(),
        -5 => "queued SIGIO".to_string(),
        c => format!("si_code {c}"),
    }
}

fn sender_text(s: Option<&SignalSender>, own_pid: u32) -> String {
    match s {
        Some(s) => {
            let comm = if s.comm.is_empty() {
                "command unknown".to_string()
            } else {
                s.comm.clone()
            };
            let own = if s.pid == own_pid {
                ", the process itself"
            } else {
                ""
            };
            format!("pid {} ({comm}{own}, uid {})", s.pid, s.uid)
        }
        None => "a process (the recording does not say which)".to_string(),
    }
}

/// A signal a process sent: there is no fault address, so no address rule
/// applies; what the target was doing is its stack.
fn sent_rule(tl: &Timeline, sig: &SignalInfo, access: Site) -> Diagnosis {
    let pid = access
        .idx
        .and_then(|i| tl.store.pid(i))
        .unwrap_or(tl.meta.pid);
    let mut notes = vec![format!(
        "no fault: the signal did not come from the program's own memory access ({}), so the \
         fault-address rules do not apply",
        si_code_name(sig.signo, sig.code)
    )];
    if sig.handled {
        notes.push("the program had a handler installed for it".to_string());
    }
    Diagnosis {
        kind: DiagKind::SentSignal,
        summary: format!(
            "{} sent by {} with {}; the target was in {}",
            signal_name(sig.signo),
            sender_text(sig.sender.as_ref(), pid),
            send_call(sig.code),
            at(tl, sig.stack)
        ),
        block: None,
        offset: None,
        alloc: None,
        free: None,
        access: Some(access),
        notes,
        extra: Extra {
            sender: sig.sender.clone(),
            ..Extra::default()
        },
    }
}

/// The last fault the kernel raised in process `pid` before `crash` that
/// the program's handler caught (on thread `tid` if there is one there).
fn caught_fault(tl: &Timeline, crash: Idx, pid: u32, tid: u32) -> Option<Idx> {
    let caught: Vec<Idx> = tl
        .store
        .others()
        .rev()
        .filter(|(i, k)| {
            *i < crash
                && tl.store.pid(*i) == Some(pid)
                && matches!(k, EventKind::Signal(s) if s.handled && s.code > 0)
        })
        .map(|(i, _)| i)
        .collect();
    caught
        .iter()
        .copied()
        .find(|&i| tl.store.tid(i) == Some(tid))
        .or_else(|| caught.first().copied())
}

/// `d` explains the caught fault `first`; the handler re-raised it as
/// the fatal `last`.
fn reraised(tl: &Timeline, d: &mut Diagnosis, first: Idx, last: &Site, sig: &SignalInfo) {
    let start = tl.meta.start_mono_ns;
    let first_ts = tl.store.ts(first).unwrap_or(start);
    let first_tid = tl.store.tid(first).unwrap_or(last.tid);
    let first_sig = match tl.store.get(first).map(|e| e.kind) {
        Some(EventKind::Signal(s)) => signal_name(s.signo),
        _ => "the fault",
    };
    d.summary = format!(
        "{} (caught by the program's {first_sig} handler, which then raised {} itself)",
        d.summary,
        signal_name(sig.signo)
    );
    d.notes.insert(
        0,
        format!(
            "the first delivery (tid {first_tid} at {}) went to the program's handler, which \
             raised {} with {} at {} (tid {}): that one killed the process; the cause is the first",
            crate::model::present::rel(first_ts, start),
            signal_name(sig.signo),
            send_call(sig.code),
            crate::model::present::rel(last.ts, start),
            last.tid
        ),
    );
    d.extra.reraised = Some(last.clone());
}

/// The rules for the signal at `crash` as the kernel delivered it.
fn diagnose_signal(tl: &Timeline, crash: Idx) -> Option<Diagnosis> {
    let (ev, sig, access) = signal_at(tl, crash)?;
    let sig = &*sig;
    // Crashed inside the allocator's free path: glibc aborts on a bad free,
    // and a wild pointer can fault in free itself.
    let in_free = tl.stack(sig.stack).is_some_and(|s| {
        s.frames
            .iter()
            .take(8)
            .any(|f| f.func.as_deref().is_some_and(is_free_frame))
    });
    if sig.signo == SIGABRT || (in_free && sig.signo != SIGILL) {
        if let Some(mut d) = free_rule(tl, crash, ev.tid, sig) {
            if let Some(m) = &sig.message {
                d.notes.insert(0, format!("the allocator said: \"{m}\""));
                d.extra.message = Some(m.clone());
            }
            return Some(d);
        }
    }
    if sig.signo == SIGABRT {
        if let Some(m) = &sig.message {
            if let Some(d) = corruption_rule(tl, crash, ev.tid, sig, m, &access) {
                return Some(d);
            }
        }
    }
    if sig.signo == SIGSEGV && sig.code == SI_KERNEL && sig.addr == 0 {
        return Some(wild_rule(tl, crash, sig, access));
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
        let mut d = Diagnosis::blank(DiagKind::ProbeReturn, access);
        d.summary = format!(
            "SIGILL at the kernel's uretprobe trampoline: a return-probed call ran on \
             another stack (sigaltstack, coroutine) and the kernel lost its return; \
             tm-tui's --probe killed the program{}: use --probe-entry there",
            match probed.last() {
                Some(f) => format!(" (innermost probed call: {f})"),
                None => String::new(),
            }
        );
        return Some(d);
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
        summary: match &sig.message {
            Some(m) => format!(
                "{} ({}) in {}: the program aborted saying \"{m}\"",
                signal_name(sig.signo),
                si_code_name(sig.signo, sig.code),
                at(tl, sig.stack)
            ),
            None => format!(
                "{} ({}) in {}",
                signal_name(sig.signo),
                si_code_name(sig.signo, sig.code),
                at(tl, sig.stack)
            ),
        },
        block: None,
        offset: None,
        alloc: None,
        free: None,
        access: Some(access),
        notes,
        extra: Extra {
            message: sig.message.clone(),
            ..Extra::default()
        },
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
            extra: Extra::default(),
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
        extra: Extra::default(),
    })
}

fn addr_rule(tl: &Timeline, crash: Idx, sig: &SignalInfo, access: Site) -> Diagnosis {
    let a = sig.addr;
    // The heap of the crashing process: its addresses carry its tag.
    let tag = tl.store.pid(crash).map_or(0, |p| tl.tag_of(p));
    let ta = untag(a) | tag << crate::model::TAG_SHIFT;
    let head = format!("{} at {a:#x}", signal_name(sig.signo));
    let mut d = Diagnosis::blank(DiagKind::Unknown, access.clone());
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
    // The crashing process's blocks only (a child's carry its tag).
    let mine = |b: &&LiveBlock| b.ptr >> crate::model::TAG_SHIFT == tag;
    let below = live
        .iter()
        .filter(mine)
        .filter(|b| b.ptr <= ta)
        .max_by_key(|b| b.ptr);
    let above = live
        .iter()
        .filter(mine)
        .filter(|b| b.ptr > ta)
        .min_by_key(|b| b.ptr);
    for (b, dir) in [(below, "below"), (above, "above")] {
        if let Some(b) = b {
            d.notes.push(format!(
                "nearest live block {dir}: {:#x} ({} bytes) allocated at {}",
                untag(b.ptr),
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
            let t = tl.store.ts(i).unwrap_or(start);
            d.notes.push(format!(
                "the address was {what} [{lo:#x}, {:#x}) at {}",
                lo.saturating_add(len),
                crate::model::present::rel(t, start)
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

/// glibc's chunk size for a request of `size` bytes (x86-64): the request
/// plus the 8-byte size field, rounded up to 16, at least 32.
/// The live blocks of the crashing process just before `crash`, with the
/// addresses it used (a child's tag removed): what registers and glibc's
/// chunk headers are compared with.
fn process_live(tl: &Timeline, crash: Idx) -> Vec<LiveBlock> {
    let tag = tl.store.pid(crash).map_or(0, |p| tl.tag_of(p));
    tl.heap
        .at(&tl.store, crash)
        .unwrap_or_default()
        .into_iter()
        .filter(|b| b.ptr >> crate::model::TAG_SHIFT == tag)
        .map(|b| LiveBlock {
            ptr: untag(b.ptr),
            ..b
        })
        .collect()
}

fn chunk_size(size: u64) -> u64 {
    (size.saturating_add(8 + 15) & !15).max(32)
}

/// Bytes a block can hold before its chunk ends: its request rounded up
/// by glibc; the next chunk's size field follows at once.
fn usable(size: u64) -> u64 {
    chunk_size(size) - 8
}

fn block_text(tl: &Timeline, b: &LiveBlock) -> String {
    format!(
        "the {}-byte block {:#x} allocated at {}",
        b.size,
        b.ptr,
        at(tl, b.stack)
    )
}

/// The main arena's extent, from the program's brk calls (`None` when the
/// recording has none).
fn brk_range(tl: &Timeline, before: Idx) -> Option<(u64, u64)> {
    let rets = tl.store.others().filter_map(|(i, k)| match k {
        EventKind::Brk { ret, .. } if i < before && *ret > 0 => Some(*ret as u64),
        _ => None,
    });
    let (lo, hi) = rets.fold((u64::MAX, 0), |(lo, hi), r| (lo.min(r), hi.max(r)));
    (hi > 0).then_some((lo, hi))
}

/// SIGABRT after glibc's heap checks ("malloc(): corrupted top size",
/// "free(): invalid next size (fast)", …): its message says which header
/// was bad; the blocks around it say whose overflow reaches there.
fn corruption_rule(
    tl: &Timeline,
    crash: Idx,
    tid: u32,
    sig: &SignalInfo,
    m: &str,
    access: &Site,
) -> Option<Diagnosis> {
    // How glibc's malloc_printerr messages begin (2.26 to 2.41); an
    // assert() message begins with the program's name instead.
    const GLIBC_HEAP: [&str; 14] = [
        "malloc(): ",
        "malloc_consolidate(): ",
        "free(): ",
        "_int_free(): ",
        "realloc(): ",
        "double free or corruption",
        "corrupted size vs. prev_size",
        "corrupted double-linked list",
        "munmap_chunk(): ",
        "mremap_chunk(): ",
        "tcache_thread_shutdown(): ",
        "malloc_check_get_size: ",
        "memalign(): ",
        "_int_realloc(): ",
    ];
    if !GLIBC_HEAP.iter().any(|w| m.starts_with(w)) {
        return None;
    }
    let live = process_live(tl, crash);
    let mut d = Diagnosis {
        kind: DiagKind::HeapCorruption,
        summary: String::new(),
        block: None,
        offset: None,
        alloc: None,
        free: None,
        access: Some(access.clone()),
        notes: vec![format!(
            "glibc checked its own bookkeeping (the chunk headers beside the blocks), found it \
             overwritten and aborted saying \"{m}\""
        )],
        extra: Extra {
            message: Some(m.to_string()),
            ..Extra::default()
        },
    };
    let head = format!(
        "heap corruption: glibc aborted with \"{m}\" in {}",
        at(tl, sig.stack)
    );
    let set_block = |d: &mut Diagnosis, b: &LiveBlock| {
        d.block = Some((b.ptr, b.size));
        d.alloc = Some(alloc_site(tl, b));
    };
    if m.contains("corrupted top size") {
        // The top chunk (the arena's unused end) starts where the chunk
        // of the block carved last from it ends.
        let range = brk_range(tl, crash);
        let in_arena = |p: u64| range.is_none_or(|(lo, hi)| lo <= p && p < hi);
        let last = live
            .iter()
            .filter(|b| b.size < MMAP_THRESHOLD && in_arena(b.ptr))
            .max_by_key(|b| b.ptr);
        let Some(b) = last else {
            d.summary = format!(
                "{head}: the size of the top chunk (the arena's free end) was overwritten; no \
                 live block of the recording lies below it"
            );
            return Some(d);
        };
        let top_size_at = b.ptr + usable(b.size);
        d.summary = format!(
            "{head}: the top chunk's size field (the arena's free end, at {top_size_at:#x}) was \
             overwritten; the block just before the top chunk is {}: writing past its end \
             (byte {} on) overwrites that field",
            block_text(tl, b),
            usable(b.size)
        );
        set_block(&mut d, b);
        d.offset = i64::try_from(top_size_at - b.ptr).ok();
        d.notes.push(match range {
            Some((lo, hi)) => format!(
                "it is the highest live block of the main arena [{lo:#x}, {hi:#x}) at the abort; \
                 its chunk ends at {:#x}, where the top chunk's header begins",
                b.ptr - 16 + chunk_size(b.size)
            ),
            None => "it is the highest live block below 128 KiB at the abort (the recording \
                     has no brk calls to bound the main arena)"
                .to_string(),
        });
        if !tl.meta.launched {
            d.notes.push(
                "tm-tui attached to a running process: blocks allocated before the recording \
                 are unknown, and one of them could lie above this block"
                    .to_string(),
            );
        }
        // A freed chunk glibc kept (tcache, fastbins) can sit between.
        let mut freed_above = 0u64;
        tl.store.heap_ops(tl.store.first()..crash, |_, op| {
            if let HeapOp::Alloc { ptr, size } = op {
                if ptr > b.ptr && size < MMAP_THRESHOLD && in_arena(ptr) {
                    freed_above += 1;
                }
            }
        });
        if freed_above > 0 {
            d.notes.push(format!(
                "{freed_above} block(s) above it were allocated and freed earlier: if glibc kept \
                 one of their chunks (tcache, fastbins) it, not this block, borders the top \
                 chunk, and a write after its free would be the cause"
            ));
        }
        return Some(d);
    }
    // The messages of free(): the chunk being freed is the free this
    // thread made last (recorded at entry, so the one that aborted), of a
    // live block (else free_rule would have spoken). Other messages (the
    // bins' lists checked inside malloc) name no chunk tm-tui can find.
    const FREE_PATH: [&str; 4] = [
        "free(): ",
        "double free or corruption",
        "munmap_chunk(): ",
        "_int_free(): ",
    ];
    let lo = crash.saturating_sub(FREE_LOOKBACK).max(tl.store.first());
    let freed = FREE_PATH
        .iter()
        .any(|w| m.starts_with(w))
        .then(|| {
            (lo..crash).rev().find_map(|i| {
                if tl.store.tid(i) != Some(tid) {
                    return None;
                }
                // The thread's last heap event, whatever it is.
                Some(match tl.store.heap_op(i)? {
                    HeapOp::Free { ptr } => Some((i, ptr)),
                    HeapOp::Realloc { old, .. } if old != 0 => Some((i, old)),
                    _ => None,
                })
            })
        })
        .flatten()
        .flatten();
    let before_crash = tl
        .heap
        .at(&tl.store, freed.map_or(crash, |(i, _)| i))
        .unwrap_or_default();
    let block = freed.and_then(|(_, p)| before_crash.iter().find(|b| b.ptr == p).cloned());
    let (Some((fi, _)), Some(p)) = (freed, block) else {
        d.summary = format!(
            "{head}: the allocator's bookkeeping was overwritten; tm-tui cannot tell from the \
             message and the recording which chunk"
        );
        return Some(d);
    };
    d.free = site(tl, fi);
    let next_header = m.contains("invalid next size") || m.contains("(!prev)");
    if next_header {
        d.summary = format!(
            "{head}: freeing {}, glibc found the header of the chunk after it overwritten: \
             writing past its end (byte {} on) reaches that header",
            block_text(tl, &p),
            usable(p.size)
        );
        set_block(&mut d, &p);
        d.offset = i64::try_from(usable(p.size)).ok();
        return Some(d);
    }
    let prev = before_crash
        .iter()
        .filter(|b| b.ptr < p.ptr && b.size < MMAP_THRESHOLD)
        .max_by_key(|b| b.ptr)
        .filter(|b| b.ptr - 16 + chunk_size(b.size) == p.ptr - 16);
    match prev {
        Some(q) => {
            d.summary = format!(
                "{head}: freeing {}, glibc found its own chunk header (the 16 bytes before it) \
                 invalid; the block just before it is {}: writing past its end (byte {} on) \
                 overwrites that header",
                block_text(tl, &p),
                block_text(tl, q),
                usable(q.size)
            );
            set_block(&mut d, q);
            d.offset = i64::try_from(usable(q.size)).ok();
            d.notes.push(format!(
                "the block being freed: {:#x} ({} bytes) allocated at {}",
                p.ptr,
                p.size,
                at(tl, p.stack)
            ));
        }
        None => {
            d.summary = format!(
                "{head}: freeing {}, glibc found its chunk header (the 16 bytes before it) \
                 invalid; no live block of the recording ends right before it",
                block_text(tl, &p)
            );
            set_block(&mut d, &p);
        }
    }
    Some(d)
}

/// SIGSEGV with SI_KERNEL and no address: a general-protection fault. The
/// faulting instruction and the saved registers say what it tried.
fn wild_rule(tl: &Timeline, crash: Idx, sig: &SignalInfo, access: Site) -> Diagnosis {
    let where_ = at(tl, sig.stack);
    let op = operand::decode(sig.ip, &sig.insn, &sig.regs);
    let mut notes = vec![
        "the kernel reported a general-protection fault (si_code SI_KERNEL, address 0): it gives \
         no fault address, so tm-tui decoded the faulting instruction with the registers saved \
         at the fault"
            .to_string(),
    ];
    let summary = match &op {
        Some(o) => {
            let tried = match o.addr {
                Some(a) if operand::non_canonical(a) => format!(
                    "the address it tried, {a:#x}, is non-canonical (bits 63-47 not all equal), \
                     which the CPU refuses"
                ),
                Some(a) => format!(
                    "the address it tried, {a:#x}, is canonical: the fault comes from something \
                     else than the address's form (an alignment rule, a privileged instruction)"
                ),
                None => "its address uses a segment base (fs/gs) that was not saved".to_string(),
            };
            let val = o
                .reg
                .map(|(r, v)| {
                    let text = operand::as_text(v)
                        .map(|t| format!(", the bytes of the text \"{t}\""))
                        .unwrap_or_default();
                    format!("; {r} = {v:#x}{text}")
                })
                .unwrap_or_default();
            if o.reg.is_some_and(|(_, v)| operand::as_text(v).is_some()) {
                notes.push(
                    "a pointer holding text: something wrote a string over the memory the \
                     pointer was loaded from (a buffer overflow in a neighbouring block, a \
                     use-after-free)"
                        .to_string(),
                );
            }
            format!(
                "wild pointer: SIGSEGV at `{}` in {where_}: {tried}{val}",
                o.text
            )
        }
        None => format!(
            "wild pointer: SIGSEGV (general-protection fault, no address) in {where_}: the \
             faulting instruction {}",
            if sig.insn.is_empty() {
                "was not recorded"
            } else {
                "has no memory operand tm-tui can decode"
            }
        ),
    };
    let mut d = Diagnosis {
        kind: DiagKind::WildPointer,
        summary,
        block: None,
        offset: None,
        alloc: None,
        free: None,
        access: Some(access),
        notes,
        extra: Extra {
            operand: op.clone(),
            ..Extra::default()
        },
    };
    // Where the bad value may have come from: heap blocks the other
    // registers point into (the pointer loaded from one of them, a
    // neighbour's overflow overwriting it).
    let live = process_live(tl, crash);
    let bad = op.as_ref().and_then(|o| o.reg).map(|(r, _)| r);
    let mut seen = Vec::new();
    for (i, &v) in sig.regs.iter().enumerate().take(16) {
        let name = operand::REG_NAMES[i];
        if name == "rsp" || Some(name) == bad {
            continue;
        }
        let Some(b) = live.iter().find(|b| b.ptr <= v && v < b.ptr + b.size) else {
            continue;
        };
        if seen.contains(&b.ptr) {
            continue;
        }
        seen.push(b.ptr);
        d.notes.push(format!(
            "{name} = {v:#x} points {} bytes into {}: the bad value may have been loaded from it",
            v - b.ptr,
            block_text(tl, b)
        ));
        if d.block.is_none() {
            d.block = Some((b.ptr, b.size));
            d.offset = i64::try_from(v - b.ptr).ok();
            d.alloc = Some(alloc_site(tl, b));
        }
        let prev = live
            .iter()
            .filter(|p| p.ptr < b.ptr && p.size < MMAP_THRESHOLD)
            .max_by_key(|p| p.ptr)
            .filter(|p| p.ptr - 16 + chunk_size(p.size) == b.ptr - 16);
        if let Some(p) = prev {
            d.notes.push(format!(
                "the block just before it in memory is {}: writing past its end (byte {} on) \
                 overwrites that block's chunk header, then its bytes",
                block_text(tl, p),
                usable(p.size)
            ));
        }
    }
    if seen.is_empty() && !sig.regs.is_empty() {
        d.notes.push(
            "no saved register points into a live heap block: the recording does not show \
             where the bad value was loaded from"
                .to_string(),
        );
    }
    d
}

impl Diagnosis {
    /// A verdict of `kind` on `access`, its evidence still to fill in.
    fn blank(kind: DiagKind, access: Site) -> Diagnosis {
        Diagnosis {
            kind,
            summary: String::new(),
            block: None,
            offset: None,
            alloc: None,
            free: None,
            access: Some(access),
            notes: Vec::new(),
            extra: Extra::default(),
        }
    }

    /// The ASan-style text: verdict, summary, then each stack of evidence.
    pub fn text(&self, tl: &Timeline) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "DIAGNOSIS  {}", self.kind.name());
        let _ = writeln!(out, "  {}", self.summary);
        let start = tl.meta.start_mono_ns;
        let access_label = match self.kind {
            // The crash block shows the fatal delivery; this is the cause.
            _ if self.extra.reraised.is_some() => "first delivered (caught by the handler)",
            DiagKind::DoubleFree => "freed again",
            DiagKind::InvalidFree => "invalid free",
            DiagKind::UseAfterFree | DiagKind::OutOfBounds | DiagKind::HeapBufferOverflow => {
                "access"
            }
            _ => "crash",
        };
        let first_free = match self.kind {
            DiagKind::DoubleFree => "first freed",
            DiagKind::HeapCorruption => "the free that aborted",
            _ => "freed",
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
                "  {label} by tid {} at {}:",
                s.tid,
                crate::model::present::rel(s.ts, start)
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
