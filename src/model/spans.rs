//! Calls as spans: each probed function's entry paired with its return,
//! per thread, by stack pointer, nested into call trees, with per-probe
//! statistics.
//!
//! The pairing trusts the stack pointer, not the order of events: a
//! return with sp `Y` closes the open call entered at `Y - 8`; open calls
//! deeper than that lost their frames without a return (longjmp, C++
//! exceptions: the kernel fires no uretprobe for them), and so did open
//! calls at or below the sp of a new call. Recursion needs nothing more:
//! each level has its own sp.

use std::collections::VecDeque;

use crate::event::{Event, EventKind, Probe, ProbeId};
use crate::model::store::Idx;
use crate::util::hash::FxMap;

/// The number of a span, in order of its call; valid for the whole
/// recording, dropped or not.
pub type SpanId = u64;

/// How a call ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Returned,
    /// Its frame went without a return (longjmp, exception): a return
    /// further out, or a new call at or above its frame, showed it gone.
    Abandoned,
    /// Its thread (or the process, or an exec) ended inside it.
    ThreadExit,
    /// Not ended (yet).
    Open,
    /// An entry-only probe (`--probe-entry`): its return is not watched.
    EntryOnly,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Returned => "returned",
            Outcome::EntryOnly => "entry only",
            Outcome::Abandoned => "no return",
            Outcome::ThreadExit => "unfinished (thread exit)",
            Outcome::Open => "open",
        }
    }
}

/// One call of a probed function.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub id: SpanId,
    pub probe: ProbeId,
    pub tid: u32,
    /// The Call event.
    pub begin: Idx,
    pub begin_ts: u64,
    /// The event that ended it: its Return, or the event that showed it
    /// abandoned or ended its thread.
    pub end: Option<Idx>,
    pub end_ts: Option<u64>,
    /// The raw return register, when it returned.
    pub ret: Option<u64>,
    /// The innermost call open on the thread when this one began.
    pub parent: Option<SpanId>,
    /// Open calls outside it on its thread (0: outermost).
    pub depth: u32,
    pub outcome: Outcome,
    /// The stack pointer at entry.
    pub sp: u64,
}

impl Span {
    /// Entry to return, for a call that returned.
    pub fn duration_ns(&self) -> Option<u64> {
        match (self.outcome, self.end_ts) {
            (Outcome::Returned, Some(e)) => Some(e.saturating_sub(self.begin_ts)),
            _ => None,
        }
    }

    /// Event `i` (of its thread) happened inside the call: from the Call
    /// to the Return included; an unreturned call ends just before the
    /// event that ended it.
    pub fn contains(&self, i: Idx) -> bool {
        i >= self.begin
            && match (self.outcome, self.end) {
                (Outcome::Returned, Some(e)) => i <= e,
                (_, Some(e)) => i < e,
                (_, None) => true,
            }
    }
}

/// Calls of one probe over the whole recording (retention drops events,
/// not these counts).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProbeStats {
    pub calls: u64,
    pub returned: u64,
    pub abandoned: u64,
    /// Ended by the end of their thread (or process, or an exec).
    pub thread_exit: u64,
    /// Calls of an entry-only probe (no return is expected).
    pub entry_only: u64,
    /// Returns that [`Probe::is_error`] calls errors.
    pub errors: u64,
    /// Sum of the durations of the calls that returned.
    pub total_ns: u64,
    durations: Vec<u64>,
}

impl ProbeStats {
    /// Calls without a return: abandoned, ended by their thread, or open.
    pub fn unfinished(&self) -> u64 {
        self.calls - self.returned - self.entry_only
    }

    pub fn mean_ns(&self) -> Option<u64> {
        (self.returned > 0).then(|| self.total_ns / self.returned)
    }

    /// The 99th percentile duration (nearest rank) of the calls that
    /// returned.
    pub fn p99_ns(&self) -> Option<u64> {
        self.percentile(99)
    }

    /// The `p`th percentile duration (nearest rank, `p` in 1..=100).
    pub fn percentile(&self, p: u64) -> Option<u64> {
        let n = self.durations.len() as u64;
        if n == 0 {
            return None;
        }
        let rank = (n * p.clamp(1, 100)).div_ceil(100).max(1);
        let mut d = self.durations.clone();
        let (_, v, _) = d.select_nth_unstable(usize::try_from(rank - 1).ok()?);
        Some(*v)
    }

    fn bytes(&self) -> usize {
        self.durations.capacity() * 8 + std::mem::size_of::<Self>()
    }
}

#[derive(Default)]
struct Thread {
    /// Open calls, outermost first (entry sp decreasing).
    open: Vec<SpanId>,
    /// Its held spans, in call order.
    spans: VecDeque<SpanId>,
}

/// Spans by id: those begun in the held part of the recording, and the
/// older ones that still overlap it (an outer call begun before the
/// oldest held event, `main` say).
#[derive(Default)]
struct Table {
    held: VecDeque<Span>,
    /// The id of `held[0]`.
    first_id: SpanId,
    pinned: FxMap<SpanId, Span>,
}

impl Table {
    fn get(&self, id: SpanId) -> Option<&Span> {
        match id.checked_sub(self.first_id) {
            Some(o) => self.held.get(usize::try_from(o).ok()?),
            None => self.pinned.get(&id),
        }
    }

    fn get_mut(&mut self, id: SpanId) -> Option<&mut Span> {
        match id.checked_sub(self.first_id) {
            Some(o) => self.held.get_mut(usize::try_from(o).ok()?),
            None => self.pinned.get_mut(&id),
        }
    }
}

/// The spans of a recording; fed event by event, O(1) amortized each.
#[derive(Default)]
pub struct Spans {
    table: Table,
    next_id: SpanId,
    threads: FxMap<u32, Thread>,
    /// Return events and the span each closed, in event order.
    returns: VecDeque<(Idx, SpanId)>,
    stats: FxMap<ProbeId, ProbeStats>,
    /// Returns that matched no open call (their call was lost, or began
    /// before the recording): counted, never made into spans.
    pub unmatched_returns: u64,
}

fn find_probe(probes: &[Probe], id: ProbeId) -> Option<&Probe> {
    match usize::try_from(id).ok().and_then(|i| probes.get(i)) {
        Some(p) if p.id == id => Some(p),
        _ => probes.iter().find(|p| p.id == id),
    }
}

#[derive(Clone, Copy)]
struct End {
    idx: Idx,
    ts: u64,
    outcome: Outcome,
    ret: Option<u64>,
}

impl Spans {
    /// Takes event number `idx`; `probes` types return values (errors).
    pub fn on_event(&mut self, idx: Idx, e: &Event, probes: &[Probe]) {
        let end = |outcome, ret| End {
            idx,
            ts: e.ts,
            outcome,
            ret,
        };
        match &e.kind {
            EventKind::Call(c) => {
                let th = self.threads.entry(e.tid).or_default();
                // Frames at or below the new call's are gone, but for the
                // return-probed call that jumped to it (a tail call).
                end_open(
                    &mut th.open,
                    &mut self.table,
                    &mut self.stats,
                    end(Outcome::Abandoned, None),
                    probes,
                    |s| c.ends_open_call(s.sp),
                );
                let id = self.next_id;
                self.next_id += 1;
                let returns = find_probe(probes, c.probe).is_none_or(|p| p.returns);
                self.table.held.push_back(Span {
                    id,
                    probe: c.probe,
                    tid: e.tid,
                    begin: idx,
                    begin_ts: e.ts,
                    end: None,
                    end_ts: None,
                    ret: None,
                    parent: th.open.last().copied(),
                    depth: u32::try_from(th.open.len()).unwrap_or(u32::MAX),
                    outcome: Outcome::Open,
                    sp: c.sp,
                });
                th.spans.push_back(id);
                self.stats.entry(c.probe).or_default().calls += 1;
                if returns {
                    th.open.push(id);
                } else {
                    // Nothing will close it: it is a point, not a span.
                    finish(
                        &mut self.table,
                        &mut self.stats,
                        id,
                        end(Outcome::EntryOnly, None),
                        probes,
                    );
                }
            }
            EventKind::Return { probe, ret, sp } => {
                let entry = crate::event::return_entry_sp(*sp);
                let Some(th) = self.threads.get_mut(&e.tid) else {
                    self.unmatched_returns += 1;
                    return;
                };
                // Frames deeper than the returning one are gone.
                end_open(
                    &mut th.open,
                    &mut self.table,
                    &mut self.stats,
                    end(Outcome::Abandoned, None),
                    probes,
                    |s| s.sp < entry,
                );
                let hit = th.open.last().copied().filter(|&top| {
                    self.table
                        .get(top)
                        .is_some_and(|s| s.sp == entry && s.probe == *probe)
                });
                match hit {
                    Some(top) => {
                        th.open.pop();
                        finish(
                            &mut self.table,
                            &mut self.stats,
                            top,
                            end(Outcome::Returned, Some(*ret)),
                            probes,
                        );
                        self.returns.push_back((idx, top));
                    }
                    None => self.unmatched_returns += 1,
                }
            }
            EventKind::ThreadExit { .. } => {
                if let Some(th) = self.threads.get_mut(&e.tid) {
                    let (table, stats) = (&mut self.table, &mut self.stats);
                    let end = end(Outcome::ThreadExit, None);
                    end_open(&mut th.open, table, stats, end, probes, |_| true);
                }
            }
            EventKind::ProcessExit { .. } | EventKind::Exec { .. } => {
                for th in self.threads.values_mut() {
                    let (table, stats) = (&mut self.table, &mut self.stats);
                    let end = end(Outcome::ThreadExit, None);
                    end_open(&mut th.open, table, stats, end, probes, |_| true);
                }
            }
            _ => {}
        }
    }

    /// Forgets what lies wholly before event `first` (the oldest held
    /// after retention dropped a chunk); statistics stay whole.
    pub fn retain_from(&mut self, first: Idx) {
        let t = &mut self.table;
        t.pinned.retain(|_, s| s.end.is_none_or(|e| e >= first));
        while t.held.front().is_some_and(|s| s.begin < first) {
            if let Some(s) = t.held.pop_front() {
                if s.end.is_none_or(|e| e >= first) {
                    t.pinned.insert(s.id, s);
                }
            }
            t.first_id += 1;
        }
        while self.returns.front().is_some_and(|(i, _)| *i < first) {
            self.returns.pop_front();
        }
        let first_id = t.first_id;
        self.threads.retain(|_, th| {
            while th.spans.front().is_some_and(|&id| id < first_id) {
                th.spans.pop_front();
            }
            !(th.open.is_empty() && th.spans.is_empty())
        });
    }

    /// Resident bytes (approximate for the hash tables).
    pub fn bytes(&self) -> usize {
        let span = std::mem::size_of::<Span>();
        let threads: usize = self
            .threads
            .values()
            .map(|th| {
                std::mem::size_of::<Thread>() + 8 + th.open.capacity() * 8 + th.spans.capacity() * 8
            })
            .sum();
        self.table.held.capacity() * span
            + self.table.pinned.capacity() * (span + 9)
            + self.returns.capacity() * 16
            + threads
            + self.stats.values().map(|s| s.bytes() + 4).sum::<usize>()
    }

    pub fn get(&self, id: SpanId) -> Option<&Span> {
        self.table.get(id)
    }

    /// The span a Call event began.
    pub fn of_call(&self, i: Idx) -> Option<&Span> {
        let held = &self.table.held;
        let at = held.partition_point(|s| s.begin < i);
        held.get(at).filter(|s| s.begin == i)
    }

    /// The span a Return event closed (none for an unmatched return).
    pub fn of_return(&self, i: Idx) -> Option<&Span> {
        let at = self.returns.partition_point(|(j, _)| *j < i);
        match self.returns.get(at) {
            Some(&(j, id)) if j == i => self.get(id),
            _ => None,
        }
    }

    /// The calls of thread `tid` that event `i` (of that thread) is
    /// inside, outermost first: O(depth).
    pub fn path(&self, tid: u32, i: Idx) -> Vec<&Span> {
        let Some(th) = self.threads.get(&tid) else {
            return self.pinned_path(tid, i);
        };
        // The last call begun at or before `i`: the innermost call
        // containing `i`, or a call nested in it that ended before `i`
        // (calls nest), so the containing ones are on its parent chain.
        let at = th
            .spans
            .partition_point(|&id| self.get(id).is_some_and(|s| s.begin <= i));
        let Some(&last) = at.checked_sub(1).and_then(|a| th.spans.get(a)) else {
            return self.pinned_path(tid, i);
        };
        let mut out = Vec::new();
        let mut cur = self.get(last);
        while let Some(s) = cur {
            if s.contains(i) {
                out.push(s);
            }
            cur = s.parent.and_then(|p| self.get(p));
        }
        out.reverse();
        out
    }

    /// `path` for an event before any held call of its thread: only calls
    /// begun before the held range can contain it.
    fn pinned_path(&self, tid: u32, i: Idx) -> Vec<&Span> {
        let mut v: Vec<&Span> = self
            .table
            .pinned
            .values()
            .filter(|s| s.tid == tid && s.contains(i))
            .collect();
        v.sort_by_key(|s| s.id);
        v
    }

    /// Statistics of one probe.
    pub fn stats(&self, probe: ProbeId) -> Option<&ProbeStats> {
        self.stats.get(&probe)
    }

    /// Statistics of every probe called, by probe id.
    pub fn all_stats(&self) -> Vec<(ProbeId, &ProbeStats)> {
        let mut v: Vec<(ProbeId, &ProbeStats)> = self.stats.iter().map(|(p, s)| (*p, s)).collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    /// Spans begun in the held range, in call order.
    #[cfg(test)]
    pub fn held(&self) -> impl DoubleEndedIterator<Item = &Span> + '_ {
        self.table.held.iter()
    }
}

/// Ends a thread's innermost open calls, each with `end`, for as long as
/// `gone` says their frames are (a call retention forgot is gone too).
fn end_open(
    open: &mut Vec<SpanId>,
    table: &mut Table,
    stats: &mut FxMap<ProbeId, ProbeStats>,
    end: End,
    probes: &[Probe],
    gone: impl Fn(&Span) -> bool,
) {
    while let Some(&top) = open.last() {
        if table.get(top).is_some_and(|s| !gone(s)) {
            break;
        }
        open.pop();
        finish(table, stats, top, end, probes);
    }
}

fn finish(
    table: &mut Table,
    stats: &mut FxMap<ProbeId, ProbeStats>,
    id: SpanId,
    end: End,
    probes: &[Probe],
) {
    let Some(s) = table.get_mut(id) else {
        return;
    };
    s.end = Some(end.idx);
    s.end_ts = Some(end.ts);
    s.ret = end.ret;
    s.outcome = end.outcome;
    let st = stats.entry(s.probe).or_default();
    match end.outcome {
        Outcome::Returned => {
            let d = end.ts.saturating_sub(s.begin_ts);
            st.returned += 1;
            st.total_ns = st.total_ns.saturating_add(d);
            st.durations.push(d);
            let err = match (end.ret, find_probe(probes, s.probe)) {
                (Some(r), Some(p)) => p.is_error(r),
                _ => false,
            };
            st.errors += u64::from(err);
        }
        Outcome::Abandoned => st.abandoned += 1,
        Outcome::ThreadExit => st.thread_exit += 1,
        Outcome::Open => {}
        Outcome::EntryOnly => st.entry_only += 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{CallInfo, ExitStatus, ValueType};
    use crate::util::xorshift::Rng;

    /// Feeds events to a `Spans` at 1 µs steps.
    struct Feed {
        spans: Spans,
        probes: Vec<Probe>,
        idx: Idx,
        ts: u64,
    }

    impl Feed {
        fn new() -> Self {
            let probes = ["main", "f", "g", "h"]
                .iter()
                .enumerate()
                .map(|(i, name)| Probe {
                    id: i as ProbeId,
                    func: name.to_string(),
                    module: "/srv/app".into(),
                    offset: 0x1000 * i as u64,
                    args: Vec::new(),
                    ret: ValueType::Int,
                    returns: true,
                })
                .collect();
            Feed {
                spans: Spans::default(),
                probes,
                idx: 0,
                ts: 0,
            }
        }

        fn push(&mut self, tid: u32, kind: EventKind) -> Idx {
            self.ts += 1_000;
            let i = self.idx;
            self.spans.on_event(
                i,
                &Event {
                    ts: self.ts,
                    pid: tid,
                    tid,
                    kind,
                },
                &self.probes,
            );
            self.idx += 1;
            i
        }

        fn call(&mut self, tid: u32, probe: ProbeId, sp: u64) -> Idx {
            self.push(
                tid,
                EventKind::Call(Box::new(CallInfo {
                    probe,
                    args: Vec::new(),
                    sp,
                    stack: None,
                    ret_addr: 0,
                })),
            )
        }

        fn ret(&mut self, tid: u32, probe: ProbeId, entry_sp: u64, ret: u64) -> Idx {
            self.push(
                tid,
                EventKind::Return {
                    probe,
                    ret,
                    sp: entry_sp + 8,
                },
            )
        }

        fn other(&mut self, tid: u32) -> Idx {
            self.push(
                tid,
                EventKind::OffCpu {
                    dur_ns: 5,
                    preempted: false,
                    stack: None,
                },
            )
        }

        fn span(&self, call: Idx) -> &Span {
            match self.spans.of_call(call) {
                Some(s) => s,
                None => panic!("no span begun at {call}"),
            }
        }

        fn path(&self, tid: u32, i: Idx) -> Vec<ProbeId> {
            self.spans.path(tid, i).iter().map(|s| s.probe).collect()
        }
    }

    #[test]
    fn calls_nest_and_pair_with_their_returns() {
        let mut f = Feed::new();
        let main = f.call(1, 0, 0x7000);
        let a = f.call(1, 1, 0x6f00);
        let b = f.call(1, 2, 0x6e00);
        let inside_b = f.other(1);
        let rb = f.ret(1, 2, 0x6e00, (-2i32) as u32 as u64);
        let between = f.other(1);
        let ra = f.ret(1, 1, 0x6f00, 7);
        assert_eq!(f.path(1, inside_b), vec![0, 1, 2]);
        assert_eq!(f.path(1, between), vec![0, 1]);
        assert_eq!(f.path(1, rb), vec![0, 1, 2], "a return is inside its call");
        assert_eq!(f.path(1, ra + 1), vec![0]);
        assert_eq!(f.path(2, inside_b), Vec::<ProbeId>::new(), "other thread");
        let sb = f.span(b).clone();
        assert_eq!(
            (sb.depth, sb.outcome, sb.end),
            (2, Outcome::Returned, Some(rb))
        );
        assert_eq!(sb.parent, Some(f.span(a).id));
        assert_eq!(sb.duration_ns(), Some(2_000));
        assert_eq!(f.spans.of_return(rb).map(|s| s.begin), Some(b));
        assert_eq!(f.spans.of_return(ra).map(|s| s.begin), Some(a));
        assert_eq!(
            f.spans.of_call(between).or(f.spans.of_return(between)),
            None
        );
        assert_eq!(f.span(main).outcome, Outcome::Open);
        assert_eq!(f.span(main).duration_ns(), None);
        // g returned -2 (an int error), f returned 7.
        let g = f.spans.stats(2).cloned().unwrap_or_default();
        assert_eq!(
            (g.calls, g.returned, g.errors, g.total_ns),
            (1, 1, 1, 2_000)
        );
        let fs = f.spans.stats(1).cloned().unwrap_or_default();
        assert_eq!(
            (fs.errors, fs.total_ns, fs.mean_ns()),
            (0, 5_000, Some(5_000))
        );
        assert_eq!(f.spans.stats(0).map(|s| s.unfinished()), Some(1));
        assert_eq!(f.spans.unmatched_returns, 0);
    }

    #[test]
    fn recursion_pairs_each_level_by_its_stack_pointer() {
        let mut f = Feed::new();
        let depth = 50u64;
        let sp = |k: u64| 0x8000 - 0x40 * k;
        let calls: Vec<Idx> = (0..depth).map(|k| f.call(1, 1, sp(k))).collect();
        let deepest = f.other(1);
        let rets: Vec<Idx> = (0..depth).rev().map(|k| f.ret(1, 1, sp(k), k)).collect();
        assert_eq!(f.path(1, deepest).len(), depth as usize);
        for (k, &c) in calls.iter().enumerate() {
            let s = f.span(c);
            assert_eq!(s.depth, k as u32);
            assert_eq!(s.ret, Some(k as u64));
            // Level k returns (depth - 1 - k)-th among the returns.
            assert_eq!(s.end, Some(rets[depth as usize - 1 - k]));
        }
        let st = f.spans.stats(1).cloned().unwrap_or_default();
        assert_eq!((st.calls, st.returned, st.unfinished()), (depth, depth, 0));
    }

    /// f ends in `jmp g`: g enters at f's stack pointer with the
    /// trampoline of f's return probe in the slot; g returns, then f, both
    /// at that sp.
    #[test]
    fn tail_calls_nest_in_their_caller() {
        let mut f = Feed::new();
        let main = f.call(1, 0, 0x7000);
        let outer = f.call(1, 1, 0x6f00);
        let inner = f.push(
            1,
            EventKind::Call(Box::new(CallInfo {
                probe: 2,
                args: Vec::new(),
                sp: 0x6f00,
                stack: None,
                ret_addr: 0x7fff_ffff_e000,
            })),
        );
        let ri = f.ret(1, 2, 0x6f00, 7);
        let ro = f.ret(1, 1, 0x6f00, 7);
        assert_eq!(f.path(1, ri), vec![0, 1, 2]);
        assert_eq!(f.span(inner).depth, 2);
        assert_eq!(f.span(inner).parent, Some(f.span(outer).id));
        assert_eq!(
            (f.span(inner).outcome, f.span(inner).end),
            (Outcome::Returned, Some(ri))
        );
        assert_eq!(
            (f.span(outer).outcome, f.span(outer).end),
            (Outcome::Returned, Some(ro))
        );
        assert_eq!(f.span(main).outcome, Outcome::Open);
        assert_eq!(f.spans.unmatched_returns, 0);
        // The same sp without the trampoline is a sibling: outer is gone.
        let o2 = f.call(1, 1, 0x6f00);
        let sib = f.call(1, 2, 0x6f00);
        assert_eq!(f.span(o2).outcome, Outcome::Abandoned);
        assert_eq!(f.span(sib).depth, 1);
    }

    #[test]
    fn longjmp_abandons_deeper_calls() {
        let mut f = Feed::new();
        let main = f.call(1, 0, 0x7000);
        let a = f.call(1, 1, 0x6f00);
        let b = f.call(1, 2, 0x6e00);
        let c = f.call(1, 3, 0x6d00);
        // c and b longjmp'ed out; a returns normally.
        let ra = f.ret(1, 1, 0x6f00, 0);
        for (call, outcome) in [(b, Outcome::Abandoned), (c, Outcome::Abandoned)] {
            assert_eq!(
                (f.span(call).outcome, f.span(call).end),
                (outcome, Some(ra))
            );
            assert_eq!(f.span(call).duration_ns(), None);
        }
        assert_eq!(f.span(a).outcome, Outcome::Returned);
        assert_eq!(f.path(1, ra), vec![0, 1]);
        // A longjmp back into main, then a new call at a's old sp: a2
        // abandons d (deeper, its frame reused) and nests in main.
        let d = f.call(1, 1, 0x6f00);
        let e = f.call(1, 2, 0x6e80);
        let d2 = f.call(1, 1, 0x6f00);
        assert_eq!(f.span(d).outcome, Outcome::Abandoned);
        assert_eq!(f.span(e).outcome, Outcome::Abandoned);
        assert_eq!(f.span(d2).parent, Some(f.span(main).id));
        assert_eq!(f.span(d2).depth, 1);
        assert_eq!(f.spans.stats(2).map(|s| s.abandoned), Some(2));
        assert_eq!(f.spans.unmatched_returns, 0);
    }

    #[test]
    fn thread_and_process_exit_end_open_calls() {
        let mut f = Feed::new();
        let m1 = f.call(1, 0, 0x7000);
        let a2 = f.call(2, 1, 0x5000);
        let b2 = f.call(2, 2, 0x4f00);
        let exit2 = f.push(2, EventKind::ThreadExit { code: 0 });
        for c in [a2, b2] {
            assert_eq!(
                (f.span(c).outcome, f.span(c).end),
                (Outcome::ThreadExit, Some(exit2))
            );
        }
        assert_eq!(f.span(m1).outcome, Outcome::Open);
        assert_eq!(f.path(2, exit2), Vec::<ProbeId>::new());
        let a3 = f.call(3, 1, 0x5000);
        f.push(
            1,
            EventKind::ProcessExit {
                status: ExitStatus::Code(0),
            },
        );
        assert_eq!(f.span(m1).outcome, Outcome::ThreadExit);
        assert_eq!(f.span(a3).outcome, Outcome::ThreadExit);
        let st = f.spans.stats(1).cloned().unwrap_or_default();
        assert_eq!((st.calls, st.thread_exit, st.unfinished()), (2, 2, 2));
    }

    #[test]
    fn unmatched_returns_are_counted_not_invented() {
        let mut f = Feed::new();
        // Return of a call before the recording, on an unknown thread.
        f.ret(1, 1, 0x6000, 0);
        let a = f.call(1, 1, 0x5000);
        // Right sp, wrong probe: not a's return.
        let r = f.ret(1, 2, 0x5000, 0);
        assert_eq!(f.spans.unmatched_returns, 2);
        assert_eq!(f.spans.of_return(r), None);
        assert_eq!(f.span(a).outcome, Outcome::Open);
        assert_eq!(f.spans.held().count(), 1);
    }

    #[test]
    fn p99_is_exact() {
        let mut f = Feed::new();
        let mut rng = Rng(0x5eed);
        let mut durations = Vec::new();
        for _ in 0..1000 {
            f.call(1, 1, 0x5000);
            let before = f.ts;
            let d = rng.below(10) * 1_000;
            f.ts += d;
            f.ret(1, 1, 0x5000, 0);
            durations.push(f.ts - before);
        }
        durations.sort_unstable();
        let st = f.spans.stats(1).cloned().unwrap_or_default();
        // Nearest rank: the 990th of 1000.
        assert_eq!(st.p99_ns(), Some(durations[989]));
        assert_eq!(st.percentile(100), durations.last().copied());
        assert_eq!(st.total_ns, durations.iter().sum::<u64>());
        assert_eq!(ProbeStats::default().p99_ns(), None);
    }

    /// Random call trees on several threads, with longjmps, against the
    /// pairing the generator intended.
    #[test]
    fn random_call_trees_pair_as_generated() {
        let mut f = Feed::new();
        let mut rng = Rng(0xca11);
        // Per thread: the intended open calls (call event, probe, sp).
        let mut open: Vec<Vec<(Idx, ProbeId, u64)>> = vec![Vec::new(); 3];
        // Call event → intended (end event, outcome).
        let mut expect: Vec<(Idx, Option<Idx>, Outcome)> = Vec::new();
        for _ in 0..5000 {
            let t = rng.below(3) as usize;
            let tid = t as u32 + 10;
            let stack = &mut open[t];
            let sp = 0x10_0000 - 0x100 * stack.len() as u64;
            match rng.below(10) {
                0..=4 if stack.len() < 40 => {
                    let probe = rng.below(4) as ProbeId;
                    let i = f.call(tid, probe, sp);
                    stack.push((i, probe, sp));
                }
                0..=7 if !stack.is_empty() => {
                    let (c, p, s) = stack[stack.len() - 1];
                    let r = f.ret(tid, p, s, 0);
                    stack.pop();
                    expect.push((c, Some(r), Outcome::Returned));
                }
                8 if stack.len() > 2 => {
                    // longjmp out of the top two frames, then return.
                    let n = stack.len();
                    let (c, p, s) = stack[n - 3];
                    let r = f.ret(tid, p, s, 0);
                    for &(a, _, _) in &stack[n - 2..] {
                        expect.push((a, Some(r), Outcome::Abandoned));
                    }
                    expect.push((c, Some(r), Outcome::Returned));
                    stack.truncate(n - 3);
                }
                _ => {
                    f.other(tid);
                }
            }
        }
        assert!(expect.len() > 1000, "{}", expect.len());
        for (c, end, outcome) in expect {
            let s = f.span(c);
            assert_eq!((s.end, s.outcome), (end, outcome), "call at {c}");
        }
        for (t, stack) in open.iter().enumerate() {
            let tid = t as u32 + 10;
            let path: Vec<Idx> = f.spans.path(tid, f.idx).iter().map(|s| s.begin).collect();
            let want: Vec<Idx> = stack.iter().map(|o| o.0).collect();
            assert_eq!(path, want, "thread {tid}");
        }
        assert_eq!(f.spans.unmatched_returns, 0);
    }

    #[test]
    fn retention_keeps_outer_calls_and_stats() {
        let mut f = Feed::new();
        let main = f.call(1, 0, 0x7000);
        let mut last = 0;
        for _ in 0..100 {
            f.call(1, 1, 0x6000);
            last = f.ret(1, 1, 0x6000, 1);
        }
        let inner = f.call(1, 2, 0x6000);
        let now = f.other(1);
        f.spans.retain_from(last);
        // Dropped calls are gone, main (begun before, still open) is not.
        assert_eq!(f.spans.of_call(main), None);
        assert_eq!(f.spans.of_call(1), None);
        assert_eq!(f.spans.of_return(2), None);
        assert_eq!(f.spans.of_return(last).map(|s| s.probe), Some(1));
        assert_eq!(f.path(1, now), vec![0, 2]);
        assert_eq!(f.span(inner).parent, Some(0));
        assert_eq!(f.spans.stats(1).map(|s| s.returned), Some(100));
        // main returns after the drop: found and closed.
        let r = f.ret(1, 0, 0x7000, 0);
        assert_eq!(f.spans.of_return(r).map(|s| s.begin), Some(main));
        assert_eq!(f.spans.stats(0).map(|s| s.returned), Some(1));
        // Queries before the held range answer empty, not panic.
        assert!(f.spans.path(1, 0).iter().all(|s| s.probe == 0));
        f.spans.retain_from(f.idx);
        assert_eq!(f.path(1, f.idx), Vec::<ProbeId>::new());
        assert!(f.spans.bytes() > 0);
    }
}
