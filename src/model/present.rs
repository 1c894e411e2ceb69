//! Events as people read them, one rendering for the report and the UI:
//! labels, times, byte counts, calls and system calls as text, and the
//! columns of an event row.

use std::fmt::Write as _;

use crate::event::{signal_name, sys_result, AllocFn, Arg, CallInfo, Event, EventKind, Kind};
use crate::event::{ProbeId, SysCall, SysInfo};
pub use crate::model::diagnose::fmt_ns;
use crate::model::spans::Span;
use crate::model::store::Idx;
use crate::model::{untag, Timeline};

/// `+1.250000s`: a time from the start of the recording.
pub fn rel(ts: u64, start: u64) -> String {
    let d = ts.saturating_sub(start);
    format!("+{}.{:06}s", d / 1_000_000_000, (d % 1_000_000_000) / 1000)
}

/// An age in at most 6 columns, 3 significant digits: `812ns`, `45.2µs`,
/// `501ms`, `2.70s`, `3m05s`, `2h03m`.
pub fn age(ns: u64) -> String {
    // Three digits in the unit the value reads best in, chosen after
    // rounding (999.6µs is 1.00ms, not 1000µs).
    let digits = |v: f64, unit: &str| match v {
        v if v < 9.995 => format!("{v:.2}{unit}"),
        v if v < 99.95 => format!("{v:.1}{unit}"),
        v => format!("{v:.0}{unit}"),
    };
    let f = ns as f64;
    match ns {
        0..1_000 => format!("{ns}ns"),
        _ if f < 999_500.0 => digits(f / 1e3, "µs"),
        _ if f < 999_500_000.0 => digits(f / 1e6, "ms"),
        _ if f < 59_950_000_000.0 => digits(f / 1e9, "s"),
        _ if ns < 3_600_000_000_000 => {
            let s = ns / 1_000_000_000;
            format!("{}m{:02}s", s / 60, s % 60)
        }
        _ if ns < 360_000_000_000_000 => {
            let m = ns / 60_000_000_000;
            format!("{}h{:02}m", m / 60, m % 60)
        }
        _ => {
            let h = ns / 3_600_000_000_000;
            format!("{}d{:02}h", h / 24, h % 24)
        }
    }
}

/// `1.2 KiB`, `300 B`.
pub fn bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < U.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[u])
    }
}

/// `func(42, "GET /")`: a call with its arguments.
pub fn call_text(tl: &Timeline, c: &CallInfo) -> String {
    let args: Vec<String> = c.args.iter().map(ToString::to_string).collect();
    format!("{}({})", probe_name(tl, c.probe), args.join(", "))
}

/// The probed function's name (`probe N` when the table lacks it).
pub fn probe_name(tl: &Timeline, id: ProbeId) -> String {
    tl.probe(id)
        .map_or_else(|| format!("probe {id}"), |p| p.func.clone())
}

/// A return value as the probe's signature types it.
pub fn ret_text(tl: &Timeline, probe: ProbeId, ret: u64) -> String {
    match tl.probe(probe) {
        Some(p) => p.ret_value(ret).to_string(),
        None => Arg::guess(ret).to_string(),
    }
}

/// `read fd=3 /tmp/x 4096 -> 4096  12.0µs`.
pub fn sys_text(s: &SysInfo) -> String {
    let mut out = s.call.name().to_string();
    if s.call == SysCall::Dup {
        let _ = write!(out, " fd={}", s.arg as i64);
    } else if s.fd >= 0 && !matches!(s.call, SysCall::Open | SysCall::Accept) {
        let _ = write!(out, " fd={}", s.fd);
    }
    if let Some(t) = &s.target {
        let _ = write!(out, " {t}");
    }
    if s.call == SysCall::FutexWait {
        let _ = write!(out, " {:#x}", s.arg);
    }
    if s.len > 0 {
        let _ = write!(out, " {}", s.len);
    }
    if matches!(s.call, SysCall::Pread | SysCall::Pwrite) {
        let _ = write!(out, " @{}", s.arg);
    }
    let _ = write!(out, " -> {}  {}", sys_result(s.ret), fmt_ns(s.dur_ns));
    out
}

/// `off-cpu 3.10ms preempted`.
pub fn off_cpu_text(dur_ns: u64, preempted: bool) -> String {
    format!(
        "off-cpu {} {}",
        fmt_ns(dur_ns),
        if preempted { "preempted" } else { "blocked" }
    )
}

/// The label of event `i` in the lists: its kind's, and `CRASH` for the
/// fatal signal the timeline took for the crash.
pub fn label(tl: &Timeline, i: Idx, k: Kind) -> &'static str {
    if k == Kind::Signal && tl.crash() == Some(i) {
        "CRASH"
    } else {
        k.label()
    }
}

pub fn call_path_text(tl: &Timeline, path: &[&Span]) -> String {
    path.iter()
        .map(|s| match tl.store().get(s.begin).map(|e| e.kind) {
            Some(EventKind::Call(c)) => call_text(tl, &c),
            _ => probe_name(tl, s.probe),
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Two spaces a level of call depth, up to a limit (then the depth).
pub fn indent(depth: u32) -> String {
    const MAX: u32 = 12;
    if depth <= MAX {
        "  ".repeat(depth as usize)
    } else {
        format!("{}+{} ", "  ".repeat(MAX as usize - 2), depth - MAX + 2)
    }
}

/// An event's row: the address and size columns, what it is when those
/// do not say it, and whether `what` says more than the stack's site (the
/// probe and syscall rows, whose text replaces the columns).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cols {
    pub addr: String,
    pub size: String,
    /// What `size` counts: `size` of a block, `len` of a mapping.
    pub size_name: &'static str,
    pub what: String,
    /// Before `what` in the UI's list: a call's depth as indentation, and
    /// the arrow of a return.
    pub nest: String,
    pub own: bool,
}

/// The "where" text of the probe and syscall families' events, in place
/// of a stack site, and its nesting: the call and its depth, the return
/// with its duration, the system call with its result.
fn probe_what(tl: &Timeline, i: Idx, e: &Event) -> Option<(String, String)> {
    Some(match &e.kind {
        EventKind::Call(c) => {
            let depth = tl.spans().of_call(i).map_or(0, |s| s.depth);
            (indent(depth), call_text(tl, c))
        }
        EventKind::Return { probe, ret, .. } => {
            let span = tl.spans().of_return(i);
            let tail = match span.and_then(|s| s.duration_ns()) {
                Some(d) => format!("  {}", fmt_ns(d)),
                None => "  (no recorded call)".to_string(),
            };
            (
                format!("{}← ", indent(span.map_or(0, |s| s.depth))),
                format!(
                    "{} -> {}{tail}",
                    probe_name(tl, *probe),
                    ret_text(tl, *probe, *ret)
                ),
            )
        }
        EventKind::Sys(s) => (String::new(), sys_text(s)),
        EventKind::OffCpu {
            dur_ns, preempted, ..
        } => (String::new(), off_cpu_text(*dur_ns, *preempted)),
        _ => return None,
    })
}

/// The columns of event `i` (`e`) of `tl`.
pub fn columns(tl: &Timeline, i: Idx, e: &Event) -> Cols {
    if let Some((nest, what)) = probe_what(tl, i, e) {
        return Cols {
            what,
            nest,
            own: true,
            ..Cols::default()
        };
    }
    let none = String::new;
    let (addr, size, size_name, what) = match &e.kind {
        EventKind::Alloc {
            func, ptr, size, ..
        } => (
            format!("{:#x}", untag(*ptr)),
            size.to_string(),
            "size",
            if *func == AllocFn::Malloc {
                none()
            } else {
                func.name().to_string()
            },
        ),
        EventKind::Free { ptr, .. } => (format!("{:#x}", untag(*ptr)), none(), "", none()),
        EventKind::Realloc { old, ptr, size, .. } => (
            format!("{:#x}", untag(*ptr)),
            size.to_string(),
            "size",
            format!("from {:#x}", untag(*old)),
        ),
        EventKind::Inherit { ptr, size, .. } => (
            format!("{:#x}", untag(*ptr)),
            size.to_string(),
            "size",
            // A forked child's blocks come from its parent; a process with
            // none followed had them before the held window began (a
            // bounded recording carried them in).
            match tl
                .processes()
                .get(tl.tag_of(e.pid) as usize)
                .and_then(|p| p.ppid)
            {
                Some(_) => "from the parent".to_string(),
                None => "live before the window".to_string(),
            },
        ),
        EventKind::Discard { ptr } => (
            format!("{:#x}", untag(*ptr)),
            none(),
            "",
            "gone with exec".to_string(),
        ),
        EventKind::Watch(w) => (
            format!("{:#x}", w.addr),
            w.len.to_string(),
            "len",
            watch_what(w),
        ),
        EventKind::Mmap { ret, len, prot, .. } => (
            format!("{ret:#x}"),
            len.to_string(),
            "len",
            format!("prot {prot:#x}"),
        ),
        EventKind::Munmap { addr, len, .. } => {
            (format!("{addr:#x}"), len.to_string(), "len", none())
        }
        EventKind::Mremap {
            old, ret, new_len, ..
        } => (
            format!("{ret:#x}"),
            new_len.to_string(),
            "len",
            format!("from {old:#x}"),
        ),
        EventKind::Brk { ret, .. } => (format!("{ret:#x}"), none(), "", none()),
        EventKind::Signal(s) => (
            s.fault_addr()
                .map(|a| format!("{a:#x}"))
                .unwrap_or_default(),
            none(),
            "",
            match &s.sender {
                Some(snd) if s.code <= 0 && !snd.comm.is_empty() => {
                    format!(
                        "{} from pid {} ({})",
                        signal_name(s.signo),
                        snd.pid,
                        snd.comm
                    )
                }
                Some(snd) if s.code <= 0 => {
                    format!("{} from pid {}", signal_name(s.signo), snd.pid)
                }
                _ => signal_name(s.signo).to_string(),
            },
        ),
        EventKind::Spawn {
            child,
            thread: true,
        } => (none(), none(), "", format!("tid {child}")),
        EventKind::Spawn {
            child,
            thread: false,
        } => (none(), none(), "", format!("pid {child}")),
        EventKind::Exec { filename } => (none(), none(), "", filename.clone()),
        EventKind::ThreadExit { code } => (none(), none(), "", format!("code {code}")),
        EventKind::ProcessExit { status } => (none(), none(), "", status.to_string()),
        // Rendered by `probe_what`.
        EventKind::Call(_)
        | EventKind::Return { .. }
        | EventKind::Sys(_)
        | EventKind::OffCpu { .. } => (none(), none(), "", none()),
    };
    Cols {
        addr,
        size,
        size_name,
        what,
        nest: String::new(),
        own: false,
    }
}

/// A watchpoint hit in a few words: what was touched, how, where.
pub fn watch_what(w: &crate::event::WatchHit) -> String {
    use crate::event::WatchWhat;
    let how = if w.write { "write" } else { "read" };
    match w.what {
        WatchWhat::Freed => format!(
            "{how} of freed block {:#x} at +{}",
            w.block,
            w.addr.wrapping_sub(w.block)
        ),
        WatchWhat::PastEnd => format!(
            "{how} past the end of block {:#x} (at +{})",
            w.block,
            w.addr.wrapping_sub(w.block)
        ),
        WatchWhat::BeforeStart => format!(
            "{how} before the start of block {:#x} (at -{})",
            w.block,
            w.block.wrapping_sub(w.addr)
        ),
        WatchWhat::Asked if w.write => format!(
            "write of watched {:#x}: {:#x} -> {:#x}",
            w.addr, w.before, w.value
        ),
        WatchWhat::Asked => format!("read of watched {:#x} ({:#x})", w.addr, w.value),
    }
}

#[cfg(test)]
mod tests {
    use super::age;

    #[test]
    fn ages_fit_six_columns_with_three_digits() {
        let cases = [
            (812, "812ns"),
            (45_210, "45.2µs"),
            (500_880_000, "501ms"),
            (2_696_000_000, "2.70s"),
            (12_340_000_000, "12.3s"),
            (185_000_000_000, "3m05s"),
            (7_380_000_000_000, "2h03m"),
        ];
        for (ns, want) in cases {
            assert_eq!(age(ns), want);
        }
        // Up to 99 days.
        for p in 0..16 {
            for m in [1u64, 3, 9, 10] {
                let ns = 10u64.pow(p) * m - 1;
                if ns >= 99 * 86_400_000_000_000 {
                    continue;
                }
                assert!(age(ns).chars().count() <= 6, "{ns}: {}", age(ns));
            }
        }
    }
}
