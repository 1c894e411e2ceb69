//! Model tests on hand-built event sequences: every diagnosis rule
//! (address reuse included), heap-at-T against a naive replay on random
//! sequences, block history, leaks and retention.

use super::*;
use crate::event::{AllocFn, Frame, SignalInfo};
use crate::model::diagnose::DiagKind;
use crate::model::heap::LiveHeap;
use crate::util::xorshift::Rng;

const MS: u64 = 1_000_000;

/// Builds a recording: stacks named after functions, events at 1 ms steps.
struct Rec {
    tl: Timeline,
    t: u64,
}

impl Rec {
    fn new() -> Self {
        let meta = Meta {
            pid: 1,
            command: "test".into(),
            start_mono_ns: 0,
            launched: true,
            ..Meta::default()
        };
        let mut tl = Timeline::new(meta);
        tl.add_module(Module {
            id: 0,
            path: "/srv/app".into(),
            build_id: None,
            segments: Vec::new(),
        });
        Rec { tl, t: 0 }
    }

    /// A stack whose top frame is `func` in app.c at `line`.
    fn stack(&mut self, func: &str, line: u32) -> Option<StackId> {
        let id = self.tl.stacks.len() as StackId;
        self.tl.add_stack(Stack {
            id,
            frames: vec![Frame {
                addr: 0x1000 + u64::from(line),
                module: Some(0),
                offset: u64::from(line),
                func: Some(func.into()),
                file: Some("/src/app.c".into()),
                line,
                inlined: false,
            }],
            end: crate::event::StackEnd::Complete,
        });
        Some(id)
    }

    fn push(&mut self, tid: u32, kind: EventKind) -> Idx {
        self.t += MS;
        self.tl.push(&Event {
            ts: self.t,
            pid: 1,
            tid,
            kind,
        })
    }

    fn alloc(&mut self, ptr: u64, size: u64, func: &str) -> Idx {
        let stack = self.stack(func, 10);
        self.push(
            1,
            EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr,
                size,
                stack,
            },
        )
    }

    fn free(&mut self, ptr: u64, func: &str) -> Idx {
        let stack = self.stack(func, 20);
        self.push(1, EventKind::Free { ptr, stack })
    }

    fn crash(&mut self, signo: i32, addr: u64, func: &str) -> Idx {
        let stack = self.stack(func, 30);
        self.push(
            1,
            EventKind::Signal(Box::new(SignalInfo {
                signo,
                code: 1,
                errno: 0,
                addr,
                handled: false,
                ip: 0x1234,
                sp: 0x7ffd_0000_0000,
                stack,
                sender: None,
                regs: Vec::new(),
                insn: Vec::new(),
                message: None,
            })),
        )
    }

    fn diagnosis(&self) -> Diagnosis {
        match self.tl.diagnosis() {
            Some(d) => d,
            None => panic!("no diagnosis"),
        }
    }
}

fn site_func(tl: &Timeline, s: &Option<diagnose::Site>) -> String {
    let s = s.as_ref().map(|s| s.stack);
    tl.site(s.flatten()).unwrap_or_default()
}

#[test]
fn use_after_free_names_alloc_free_and_access() {
    let mut r = Rec::new();
    r.alloc(0x5000, 64, "small");
    let big = 0x7f00_0000_0000;
    r.alloc(big, 300_000, "parse_request");
    r.free(big, "drop_conn");
    r.crash(11, big + 16, "process_request");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::UseAfterFree);
    assert_eq!(d.block, Some((big, 300_000)));
    assert_eq!(d.offset, Some(16));
    assert!(site_func(&r.tl, &d.alloc).starts_with("parse_request (app.c:10)"));
    assert!(site_func(&r.tl, &d.free).starts_with("drop_conn (app.c:20)"));
    assert!(site_func(&r.tl, &d.access).starts_with("process_request"));
    assert!(
        d.summary
            .contains("16 bytes inside a 300000-byte block allocated at parse_request")
            && d.summary.contains("freed at drop_conn"),
        "{}",
        d.summary
    );
    let text = d.text(&r.tl);
    assert!(text.contains("allocated by tid 1"), "{text}");
}

#[test]
fn reused_address_is_not_a_use_after_free() {
    let mut r = Rec::new();
    let p = 0x7f00_0000_0000;
    r.alloc(p, 300_000, "first_owner");
    r.free(p, "drop_first");
    r.alloc(p, 300_000, "second_owner");
    r.crash(11, p + 16, "reader");
    let d = r.diagnosis();
    assert_ne!(d.kind, DiagKind::UseAfterFree, "{}", d.summary);
    assert!(d
        .summary
        .contains("live 300000-byte block allocated at second_owner"));
}

#[test]
fn use_after_free_of_the_latest_of_several_lives() {
    let mut r = Rec::new();
    let p = 0x7f00_0000_0000;
    r.alloc(p, 100, "a1");
    r.free(p, "f1");
    r.alloc(p, 200, "a2");
    r.free(p, "f2");
    r.crash(11, p + 150, "reader");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::UseAfterFree);
    assert_eq!(d.block, Some((p, 200)));
    assert!(site_func(&r.tl, &d.alloc).starts_with("a2"));
    assert!(site_func(&r.tl, &d.free).starts_with("f2"));
}

#[test]
fn double_free_with_abort() {
    let mut r = Rec::new();
    r.alloc(0x6000, 48, "make_session");
    r.free(0x6000, "close_session");
    r.alloc(0x7000, 16, "other");
    r.free(0x6000, "release_session");
    r.crash(6, 0, "abort");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::DoubleFree, "{}", d.summary);
    assert_eq!(d.block, Some((0x6000, 48)));
    assert!(site_func(&r.tl, &d.alloc).starts_with("make_session"));
    assert!(site_func(&r.tl, &d.free).starts_with("close_session"));
    assert!(site_func(&r.tl, &d.access).starts_with("release_session"));
}

#[test]
fn free_after_reuse_is_not_a_double_free() {
    let mut r = Rec::new();
    r.alloc(0x6000, 48, "a");
    r.free(0x6000, "f");
    r.alloc(0x6000, 48, "b");
    r.free(0x6000, "g");
    r.crash(6, 0, "abort");
    // The abort is not explained by a heap error: an assert, say.
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::Unknown, "{}", d.summary);
}

#[test]
fn invalid_free_inside_a_block_and_of_a_wild_pointer() {
    let mut r = Rec::new();
    r.alloc(0x8000, 64, "make_buf");
    r.free(0x8010, "bad_release");
    r.crash(6, 0, "abort");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::InvalidFree);
    assert_eq!((d.block, d.offset), (Some((0x8000, 64)), Some(16)));
    assert!(d
        .summary
        .contains("16 bytes inside a 64-byte block allocated at make_buf"));

    let mut r = Rec::new();
    r.free(0xdead_0000, "wild");
    r.crash(6, 0, "abort");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::InvalidFree);
    assert!(d.summary.contains("never returned"), "{}", d.summary);
}

#[test]
fn null_and_near_null() {
    let mut r = Rec::new();
    r.crash(11, 0x18, "deref");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::NullDeref);
    assert!(d.summary.contains("(24 bytes past NULL) in deref"));
}

#[test]
fn out_of_bounds_past_the_end_and_before_the_start() {
    let mut r = Rec::new();
    r.alloc(0x90_0000, 64, "make_table");
    r.crash(11, 0x90_0000 + 72, "walk");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::OutOfBounds);
    assert!(
        d.summary
            .contains("8 bytes past the end of a live 64-byte block allocated at make_table"),
        "{}",
        d.summary
    );
    assert_eq!(d.offset, Some(72));

    let mut r = Rec::new();
    r.alloc(0x90_0000, 64, "make_table");
    r.crash(11, 0x90_0000 - 8, "walk");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::OutOfBounds);
    assert_eq!(d.offset, Some(-8));
}

#[test]
fn stack_overflow_near_the_stack_pointer() {
    let mut r = Rec::new();
    let stack = r.stack("recurse", 5);
    if let Some(s) = r.tl.stacks.last_mut() {
        let f = s.frames[0].clone();
        s.frames = vec![f; 40];
    }
    let sp = 0x7ffd_1234_0000;
    r.push(
        1,
        EventKind::Signal(Box::new(SignalInfo {
            signo: 11,
            code: 2,
            errno: 0,
            addr: sp - 8,
            handled: false,
            ip: 0x1000,
            sp,
            stack,
            sender: None,
            regs: Vec::new(),
            insn: Vec::new(),
            message: None,
        })),
    );
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::StackOverflow);
    assert!(d
        .notes
        .iter()
        .any(|n| n.contains("recurse appears 40 times")));
}

#[test]
fn unknown_fault_reports_neighbours_and_mappings() {
    let mut r = Rec::new();
    r.alloc(0x10_0000, 32, "near");
    r.push(
        1,
        EventKind::Munmap {
            addr: 0x7000_0000,
            len: 8192,
            ret: 0,
        },
    );
    r.crash(11, 0x7000_0100, "reader");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::Unknown);
    assert!(d.notes.iter().any(|n| n.contains("unmapped by munmap")));
    assert!(d
        .notes
        .iter()
        .any(|n| n.contains("nearest live block below")));
}

#[test]
fn block_history_across_reuse_and_realloc() {
    let mut r = Rec::new();
    let a = r.alloc(0x100, 8, "a");
    let f = r.free(0x100, "f");
    let b = r.alloc(0x100, 16, "b");
    let stack = r.stack("grow", 1);
    let g = r.push(
        1,
        EventKind::Realloc {
            func: AllocFn::Realloc,
            old: 0x100,
            ptr: 0x200,
            size: 64,
            stack,
        },
    );
    let f2 = r.free(0x100, "double");
    let h = r.tl.block_history(0x100);
    assert_eq!(h.lives.len(), 2);
    assert_eq!((h.lives[0].block.alloc, h.lives[0].end), (a, Some(f)));
    assert_eq!((h.lives[1].block.alloc, h.lives[1].end), (b, Some(g)));
    assert_eq!(h.lives[1].extra_frees, vec![f2]);
    let h = r.tl.block_history(0x200);
    assert_eq!(h.lives.len(), 1);
    assert_eq!((h.lives[0].block.size, h.lives[0].end), (64, None));
    // An interior address finds the block covering it.
    let h = r.tl.block_history(0x210);
    assert_eq!(h.lives.len(), 1);
    assert_eq!(h.lives[0].block.alloc, g);
}

#[test]
fn around_an_event_agrees_with_the_whole_history_and_stays_bounded() {
    let mut r = Rec::new();
    // One address reused 50 times, a double free in the middle.
    let mut evs = Vec::new();
    for k in 0..50 {
        let a = r.alloc(0x100, 8 + k, "a");
        let f = r.free(0x100, "f");
        evs.push((a, f));
        if k == 20 {
            let d = r.free(0x100, "again");
            let around = r.tl.around(0x100, d);
            assert!(around.double_free);
            assert_eq!(around.life.as_ref().map(|l| l.block.alloc), Some(a));
        }
    }
    for (k, &(a, f)) in evs.iter().enumerate() {
        let x = r.tl.around(0x100, a);
        assert_eq!((x.nth, x.of), (Some(k + 1), Some(50)));
        assert!(!x.double_free);
        let y = r.tl.around(0x100, f);
        assert_eq!(y.life.map(|l| l.block.alloc), Some(a));
        assert_eq!(r.tl.end_of(a), Some(f));
    }
    // Capped: the life is still found, the counts are not claimed.
    let (a, f) = evs[40];
    let x = history::around(&r.tl.store, &r.tl.heap, 0x100, f, 3);
    assert_eq!(x.life.map(|l| l.block.alloc), Some(a));
    assert_eq!((x.nth, x.of), (None, None));
    let x = history::around(&r.tl.store, &r.tl.heap, 0x100, evs[48].0, 8);
    assert_eq!((x.nth, x.of), (None, None));
    let x = history::around(&r.tl.store, &r.tl.heap, 0x100, evs[0].0, 500);
    assert_eq!((x.nth, x.of), (Some(1), Some(50)));
}

#[test]
fn leaks_group_by_stack_and_flag_only_growth() {
    let mut r = Rec::new();
    let leak = r.stack("remember_request", 7);
    let churn = r.stack("handle", 8);
    for i in 0..10u64 {
        r.push(
            1,
            EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr: 0x1_0000 + i * 64,
                size: 64,
                stack: leak,
            },
        );
        r.push(
            1,
            EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr: 0x9_0000,
                size: 100,
                stack: churn,
            },
        );
        if i < 9 {
            r.push(
                1,
                EventKind::Free {
                    ptr: 0x9_0000,
                    stack: churn,
                },
            );
        }
    }
    let g = r.tl.leak_groups();
    assert_eq!(g.len(), 2);
    assert_eq!((g[0].stack, g[0].blocks, g[0].bytes), (leak, 10, 640));
    assert!(g[0].suspected);
    assert!(g[0].growth_bytes_per_s > 0.0);
    assert_eq!((g[1].stack, g[1].blocks, g[1].bytes), (churn, 1, 100));
    assert!(!g[1].suspected);
    assert_eq!(g[0].oldest_ts, MS);
}

#[test]
fn diff_between_two_instants() {
    let mut r = Rec::new();
    let a0 = r.alloc(0x100, 10, "early");
    r.alloc(0x200, 20, "mid");
    r.alloc(0x300, 30, "mid");
    r.free(0x200, "x");
    let b = r.alloc(0x400, 40, "late");
    let d = r.tl.diff(a0 + 1, b).unwrap_or_default();
    let total: u64 = d.iter().map(|g| g.bytes).sum();
    assert_eq!(total, 70);
    assert_eq!(d[0].bytes, 40);
}

/// Random allocator traffic over a small address pool, so reuse, double
/// and unknown frees, failed and in-place reallocs all happen.
fn random_events(rng: &mut Rng, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    let mut ts = 0;
    for _ in 0..n {
        ts += 1 + rng.below(1000);
        let ptr = 0x1000 + rng.below(64) * 0x100;
        let stack = Some(rng.below(5) as u32);
        let kind = match rng.below(10) {
            0..=3 => EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr: if rng.below(50) == 0 { 0 } else { ptr },
                size: 1 + rng.below(200),
                stack,
            },
            4..=7 => EventKind::Free { ptr, stack },
            _ => {
                let old = if rng.below(4) == 0 {
                    0
                } else {
                    0x1000 + rng.below(64) * 0x100
                };
                let (p, size) = match rng.below(6) {
                    0 => (0, 0),
                    1 => (0, 1 << 40),
                    2 => (old, 1 + rng.below(300)),
                    _ => (ptr, 1 + rng.below(300)),
                };
                EventKind::Realloc {
                    func: AllocFn::Realloc,
                    old,
                    ptr: p,
                    size,
                    stack,
                }
            }
        };
        out.push(Event {
            ts,
            pid: 0,
            tid: 1 + rng.below(3) as u32,
            kind,
        });
    }
    out
}

fn naive(events: &[Event]) -> Vec<(u64, u64)> {
    let mut h = LiveHeap::default();
    for e in events {
        h.apply(e);
    }
    let mut v: Vec<(u64, u64)> = h.blocks.iter().map(|(p, b)| (*p, b.size)).collect();
    v.sort_unstable();
    v
}

fn sorted(blocks: Vec<LiveBlock>) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = blocks.iter().map(|b| (b.ptr, b.size)).collect();
    v.sort_unstable();
    v
}

#[test]
fn heap_at_any_instant_equals_a_full_replay() {
    for seed in 1..=20u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        // Long enough to span several chunks and checkpoints.
        let events = random_events(&mut rng, CHUNK * 20 + 777);
        let mut tl = Timeline::new(Meta::default());
        for e in &events {
            tl.push(e);
        }
        // One naive replay, compared at random instants on the way.
        let mut at: Vec<u64> = (0..40).map(|_| rng.below(events.len() as u64)).collect();
        at.sort_unstable();
        let mut h = LiveHeap::default();
        let mut next = 0usize;
        for (i, e) in events.iter().enumerate() {
            h.apply(e);
            while at.get(next) == Some(&(i as u64)) {
                let got = sorted(tl.heap_after(i as u64).unwrap_or_default());
                let mut want: Vec<(u64, u64)> =
                    h.blocks.iter().map(|(p, b)| (*p, b.size)).collect();
                want.sort_unstable();
                assert_eq!(got, want, "seed {seed} at {i}");
                next += 1;
            }
        }
        let end = events.len() as u64 - 1;
        assert_eq!(
            sorted(tl.heap_after(end).unwrap_or_default()),
            naive(&events)
        );
        let full = {
            let mut h = LiveHeap::default();
            events.iter().for_each(|e| h.apply(e));
            h
        };
        assert_eq!(tl.heap.live_blocks(), full.live_blocks());
        assert_eq!(tl.heap.totals.live_bytes, full.live_bytes);
        assert_eq!(
            (
                tl.heap.totals.allocs,
                tl.heap.totals.frees,
                tl.heap.totals.unknown_frees
            ),
            (full.allocs, full.frees, full.unknown_frees)
        );
    }
}

#[test]
fn retention_drops_old_events_but_keeps_live_blocks_exact() {
    let mut rng = Rng(77);
    let events = random_events(&mut rng, CHUNK * 6);
    // Room for about three chunks.
    let mut tl = Timeline::with_budget(Meta::default(), CHUNK * 30 * 3);
    for e in &events {
        tl.push(e);
    }
    assert!(tl.store.dropped > 0, "nothing was dropped");
    let first = tl.store.first();
    assert_eq!(sorted(tl.heap.now(&tl.store)), naive(&events));
    for _ in 0..20 {
        let i = first + rng.below(events.len() as u64 - first);
        let got = sorted(tl.heap_after(i).unwrap_or_default());
        assert_eq!(got, naive(&events[..=i as usize]), "at {i} (first {first})");
    }
    assert!(tl.heap_after(first.saturating_sub(2)).is_none());
    // Leak groups stay exact too.
    let live_bytes: u64 = tl.leak_groups().iter().map(|g| g.bytes).sum();
    assert_eq!(live_bytes, tl.heap.totals.live_bytes);
}

/// A recording whose first block is dropped by retention (a survivor),
/// then freed; `first` is the first held event.
fn survivor_recording() -> (Rec, Vec<Event>) {
    let mut r = Rec::new();
    let meta = r.tl.meta.clone();
    r.tl = Timeline::with_budget(meta, CHUNK * 30 * 3);
    r.tl.add_module(Module {
        id: 0,
        path: "/srv/app".into(),
        build_id: None,
        segments: Vec::new(),
    });
    let mut evs = Vec::new();
    let s = r.alloc(0x9000_0000, 100, "make");
    evs.push(r.tl.store.get(s).unwrap_or_else(|| panic!("event {s}")));
    for i in 0..(CHUNK as u64 * 6) {
        let p = 0x1000 + (i % 8) * 0x100;
        let kind = if i % 2 == 0 {
            EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr: p,
                size: 8,
                stack: None,
            }
        } else {
            EventKind::Free {
                ptr: p - 0x100,
                stack: None,
            }
        };
        let i = r.push(1, kind);
        evs.push(r.tl.store.get(i).unwrap_or_else(|| panic!("event {i}")));
    }
    assert!(
        r.tl.store.first() > 0,
        "the survivor's allocation was dropped"
    );
    (r, evs)
}

#[test]
fn survivor_freed_later_is_still_live_before_its_free() {
    let (mut r, evs) = survivor_recording();
    let q = r.tl.store.first() + 3;
    let before = naive(&evs[..=q as usize]);
    assert!(before.contains(&(0x9000_0000, 100)));
    assert_eq!(sorted(r.tl.heap_after(q).unwrap_or_default()), before);
    r.free(0x9000_0000, "drop");
    assert_eq!(sorted(r.tl.heap_after(q).unwrap_or_default()), before);
}

#[test]
fn double_free_of_a_survivor() {
    let (mut r, _) = survivor_recording();
    r.free(0x9000_0000, "first_free");
    r.free(0x9000_0000, "second_free");
    r.crash(6, 0, "abort");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::DoubleFree, "{}", d.summary);
    assert!(site_func(&r.tl, &d.alloc).starts_with("make"));
}

#[test]
fn use_after_free_of_a_survivor() {
    let (mut r, _) = survivor_recording();
    r.free(0x9000_0000, "drop");
    r.crash(11, 0x9000_0010, "use");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::UseAfterFree, "{}", d.summary);
    assert!(site_func(&r.tl, &d.alloc).starts_with("make"));
}

#[test]
fn fault_past_a_smaller_reused_block_is_out_of_bounds() {
    let mut r = Rec::new();
    r.alloc(0x10_0000, 64, "big");
    r.free(0x10_0000, "drop");
    r.alloc(0x10_0000, 16, "small");
    r.crash(11, 0x10_0020, "walk");
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::OutOfBounds, "{}", d.summary);
    assert!(d
        .summary
        .contains("16 bytes past the end of a live 16-byte block allocated at small"));
}

/// A SIGILL at the uretprobe trampoline is tm-tui's own doing (a
/// return-probed call on another stack): said as such, naming the call.
#[test]
fn sigill_at_the_uretprobe_trampoline_blames_the_probe() {
    let mut r = Rec::new();
    r.tl.add_probe(crate::event::Probe {
        id: 0,
        func: "on_signal".into(),
        module: "/srv/app".into(),
        offset: 0x1000,
        args: Vec::new(),
        ret: crate::event::ValueType::Auto,
        returns: true,
    });
    r.push(
        1,
        EventKind::Call(Box::new(crate::event::CallInfo {
            probe: 0,
            args: Vec::new(),
            sp: 0x7ffd_0000_1000,
            stack: None,
            ret_addr: 0x1111,
        })),
    );
    let stack = r.stack("on_signal", 5);
    r.push(
        1,
        EventKind::Signal(Box::new(SignalInfo {
            signo: 4,
            code: 128,
            errno: 0,
            addr: 0,
            handled: false,
            ip: 0x7fff_ffff_e00d,
            sp: 0x7ffd_0000_0f00,
            stack,
            sender: None,
            regs: Vec::new(),
            insn: Vec::new(),
            message: None,
        })),
    );
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::ProbeReturn);
    assert!(d.summary.contains("--probe-entry"), "{}", d.summary);
    assert!(d.summary.contains("on_signal"), "{}", d.summary);
    // Any other SIGILL is not blamed on the probe.
    let mut r = Rec::new();
    r.crash(4, 0, "main");
    assert_eq!(r.diagnosis().kind, DiagKind::Unknown);
}

/// A return lives whole in its row (no side table): it reads back as it
/// was pushed, with no stack and its probe, and touches no heap state.
#[test]
fn returns_are_kept_whole_in_their_rows() {
    let mut r = Rec::new();
    let a = r.alloc(0x1000, 64, "main");
    let ev = EventKind::Return {
        probe: 7,
        ret: 0xdead_beef_0000_0001,
        sp: 0x7ffd_1234_5678,
    };
    let i = r.push(1, ev.clone());
    assert_eq!(r.tl.store.get(i).map(|e| e.kind), Some(ev));
    assert_eq!(r.tl.store.stack(i), None);
    assert_eq!(r.tl.store.probe(i), Some(7));
    assert_eq!(r.tl.store.kind(i), Some(Kind::Return));
    assert_eq!(r.tl.store.heap_op(i), None);
    assert_eq!(r.tl.store.block(i), None);
    assert_eq!(r.tl.heap.live_blocks(), 1);
    assert_eq!(r.tl.store.prev_at(a, 0x1000), None);
    // A stack filter never selects it through the probe in its row.
    let f = Filter {
        stacks: Some([7u32].into_iter().collect()),
        ..Filter::default()
    };
    assert!(!r.tl.store.matches(i, &f));
}

/// `func=NAME` (the UI's bare word) finds a probed function's own calls
/// and returns, whose stacks start at the caller (or are absent); the
/// list's labels work as kind names.
#[test]
fn func_filter_finds_probed_calls_and_labels_name_kinds() {
    let mut r = Rec::new();
    r.tl.add_probe(crate::event::Probe {
        id: 0,
        func: "checksum".into(),
        module: "/srv/app".into(),
        offset: 0x1000,
        args: Vec::new(),
        ret: crate::event::ValueType::Auto,
        returns: true,
    });
    let caller = r.stack("main", 3);
    let call = r.push(
        1,
        EventKind::Call(Box::new(crate::event::CallInfo {
            probe: 0,
            args: Vec::new(),
            sp: 0x7000,
            stack: caller,
            ret_addr: 0x1111,
        })),
    );
    let ret = r.push(
        1,
        EventKind::Return {
            probe: 0,
            ret: 1,
            sp: 0x7008,
        },
    );
    let other = r.alloc(0x2000, 8, "main");
    let f = r.tl.parse_filter("func=checksum").expect("a filter");
    assert!(r.tl.store.matches(call, &f) && r.tl.store.matches(ret, &f));
    assert!(!r.tl.store.matches(other, &f));
    assert!(r.tl.parse_filter("func=nosuch").is_err());
    for (label, kind) in [
        ("ret", Kind::Return),
        ("thread", Kind::ThreadStart),
        ("texit", Kind::ThreadExit),
        ("fork", Kind::ChildProcess),
        ("crash", Kind::Signal),
    ] {
        assert_eq!(Kind::from_name(label), Some(kind), "{label}");
    }
}

/// The diagnosis names are the JSON schema's `crash.diagnosis.kind`.
#[test]
fn diagnosis_names_are_the_stable_ones() {
    use strum::IntoEnumIterator;
    let names: Vec<&str> = DiagKind::iter().map(DiagKind::name).collect();
    assert_eq!(
        names.join(" "),
        "use-after-free double-free invalid-free null-deref out-of-bounds stack-overflow \
         probe-return sent-signal wild-pointer heap-corruption heap-buffer-overflow unknown"
    );
}

#[test]
fn sites_are_symbolized_call_paths_not_stack_ids() {
    let mut r = Rec::new();
    // Three stacks of one call path (other return addresses, one of them
    // ending truncated would look the same): one site; another line is
    // another site.
    let a = r.stack("parse", 10);
    let b = r.stack("parse", 10);
    let c = r.stack("parse", 11);
    for (i, s) in [a, b, b, c].into_iter().enumerate() {
        r.push(
            1,
            EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr: 0x1_0000 + i as u64 * 64,
                size: 64,
                stack: s,
            },
        );
    }
    assert_eq!(r.tl.site_of(b), a);
    let g = r.tl.leak_groups();
    assert_eq!(g.len(), 2);
    assert_eq!((g[0].stack, g[0].blocks), (a, 3));
    assert_eq!((g[1].stack, g[1].blocks), (c, 1));
    let live: Vec<LiveBlock> = r.tl.heap().now(r.tl.store());
    let sites = group_by_site(&live, &r.tl.sites);
    assert_eq!(
        sites
            .iter()
            .map(|s| (s.stack, s.blocks))
            .collect::<Vec<_>>(),
        vec![(a, 3), (c, 1)]
    );
}

/// A signal of thread 1 with every field given.
fn signal(signo: i32, code: i32, addr: u64, handled: bool) -> SignalInfo {
    SignalInfo {
        signo,
        code,
        errno: 0,
        addr,
        handled,
        ip: 0x1000,
        sp: 0x7ffd_0000_0000,
        stack: None,
        sender: None,
        regs: Vec::new(),
        insn: Vec::new(),
        message: None,
    }
}

#[test]
fn a_sent_signal_names_its_sender_and_no_address() {
    let mut r = Rec::new();
    r.alloc(0x5000, 64, "setup");
    let mut s = signal(11, 0, 0x336d, false);
    s.sender = Some(crate::event::SignalSender {
        pid: 0x336d,
        uid: 1000,
        comm: "bash".into(),
    });
    s.stack = r.stack("serve", 40);
    r.push(1, EventKind::Signal(Box::new(s)));
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::SentSignal);
    assert!(
        d.summary
            .starts_with("SIGSEGV sent by pid 13165 (bash, uid 1000) with kill()"),
        "{}",
        d.summary
    );
    assert!(!d.summary.contains("NULL"), "{}", d.summary);
    assert_eq!(d.block, None);
    // tkill and sigqueue are named as such; an unknown sender is said.
    let mut r = Rec::new();
    r.push(1, EventKind::Signal(Box::new(signal(11, -1, 7, false))));
    let d = r.diagnosis();
    assert!(d.summary.contains("sigqueue()"), "{}", d.summary);
    assert!(d.summary.contains("does not say which"), "{}", d.summary);
}

#[test]
fn a_reraised_fault_is_diagnosed_by_the_caught_delivery() {
    let mut r = Rec::new();
    let mut first = signal(11, 1, 0x10, true);
    first.stack = r.stack("parse", 12);
    let f = r.push(1, EventKind::Signal(Box::new(first)));
    r.alloc(0x5000, 64, "log_crash");
    let mut last = signal(11, -6, 1, false);
    last.sender = Some(crate::event::SignalSender {
        pid: 1,
        uid: 0,
        comm: "app".into(),
    });
    let l = r.push(1, EventKind::Signal(Box::new(last)));
    assert_eq!(r.tl.crash(), Some(l));
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::NullDeref);
    assert!(d.summary.contains("16 bytes past NULL"), "{}", d.summary);
    assert_eq!(d.access.as_ref().and_then(|s| s.idx), Some(f));
    assert_eq!(d.extra.reraised.as_ref().and_then(|s| s.idx), Some(l));
    // Sent by another process, a handled fault before is not its cause.
    let mut r = Rec::new();
    r.push(1, EventKind::Signal(Box::new(signal(11, 1, 0x10, true))));
    let mut last = signal(11, 0, 99, false);
    last.sender = Some(crate::event::SignalSender {
        pid: 99,
        uid: 0,
        comm: "sh".into(),
    });
    r.push(1, EventKind::Signal(Box::new(last)));
    assert_eq!(r.diagnosis().kind, DiagKind::SentSignal);
}

#[test]
fn a_general_protection_fault_decodes_the_operand_and_names_blocks() {
    let mut r = Rec::new();
    r.alloc(0x5000, 24, "read_name");
    r.alloc(0x5020, 16, "new_item");
    let mut s = signal(11, 128, 0, false);
    // add rax, [rdi+0x8] with rdi = "AAAAAAAA", rbx -> the item block
    s.insn = vec![0x48, 0x03, 0x47, 0x08];
    s.regs = vec![0; 17];
    s.regs[5] = 0x4141_4141_4141_4141;
    s.regs[1] = 0x5020;
    r.push(1, EventKind::Signal(Box::new(s)));
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::WildPointer);
    assert!(d.summary.contains("0x4141414141414149"), "{}", d.summary);
    assert!(d.summary.contains("non-canonical"), "{}", d.summary);
    assert!(d.summary.contains("\"AAAAAAAA\""), "{}", d.summary);
    assert_eq!(d.block, Some((0x5020, 16)));
    assert!(
        d.notes
            .iter()
            .any(|n| n.contains("just before it") && n.contains("24-byte block 0x5000")),
        "{:#?}",
        d.notes
    );
    // Without instruction bytes it says so, and never calls it NULL.
    let mut r = Rec::new();
    r.push(1, EventKind::Signal(Box::new(signal(11, 128, 0, false))));
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::WildPointer);
    assert!(d.summary.contains("was not recorded"), "{}", d.summary);
}

#[test]
fn corrupted_top_size_names_the_highest_live_block() {
    let mut r = Rec::new();
    r.push(
        1,
        EventKind::Brk {
            req: 0,
            ret: 0x5000,
        },
    );
    r.push(
        1,
        EventKind::Brk {
            req: 0x26000,
            ret: 0x26000,
        },
    );
    r.alloc(0x52a0, 100, "keep");
    r.alloc(0x5310, 40, "make_label");
    let mut s = signal(6, -6, 1, false);
    s.sender = Some(crate::event::SignalSender {
        pid: 1,
        uid: 0,
        comm: "app".into(),
    });
    s.message = Some("malloc(): corrupted top size".into());
    r.push(1, EventKind::Signal(Box::new(s)));
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::HeapCorruption);
    assert_eq!(d.block, Some((0x5310, 40)));
    // 40 bytes asked, a 48-byte chunk: top's size field at +40.
    assert_eq!(d.offset, Some(40));
    assert_eq!(site_func(&r.tl, &d.alloc), "make_label (app.c:10)");
    assert_eq!(
        d.extra.message.as_deref(),
        Some("malloc(): corrupted top size")
    );
    // An assert()'s message is said, not called heap corruption.
    let mut r = Rec::new();
    let mut s = signal(6, -6, 1, false);
    s.sender = Some(crate::event::SignalSender {
        pid: 1,
        uid: 0,
        comm: "app".into(),
    });
    s.message = Some("app: app.c:3: main: Assertion `x' failed.".into());
    r.push(1, EventKind::Signal(Box::new(s)));
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::Unknown);
    assert!(d.summary.contains("Assertion `x' failed"), "{}", d.summary);
}

#[test]
fn a_malloc_list_check_names_no_chunk_an_earlier_free_is_not_blamed() {
    let mut r = Rec::new();
    r.alloc(0x5000, 40, "a");
    r.free(0x5000, "drop_a");
    r.alloc(0x6000, 40, "b");
    let mut s = signal(6, -6, 1, false);
    s.sender = Some(crate::event::SignalSender {
        pid: 1,
        uid: 0,
        comm: "app".into(),
    });
    s.message = Some("malloc(): unsorted double linked list corrupted".into());
    r.push(1, EventKind::Signal(Box::new(s)));
    let d = r.diagnosis();
    assert_eq!(d.kind, DiagKind::HeapCorruption);
    assert_eq!(d.block, None);
    assert!(d.summary.contains("cannot tell"), "{}", d.summary);
}

/// EAGAIN is "would block", and a futex wait that timed out or was
/// interrupted did what it was asked: neither is counted as an error.
#[test]
fn would_block_and_futex_outcomes_are_not_errors() {
    use crate::event::{SysCall, SysInfo};
    let mut tl = Timeline::new(Meta::default());
    let sys = |call, ret| Event {
        ts: 1,
        pid: 0,
        tid: 0,
        kind: EventKind::Sys(Box::new(SysInfo {
            call,
            fd: 3,
            ret,
            dur_ns: 10,
            len: 100,
            arg: 0,
            target: None,
            stack: None,
        })),
    };
    for (call, ret) in [
        (SysCall::FutexWait, -11),
        (SysCall::FutexWait, -110),
        (SysCall::FutexWait, -4),
        (SysCall::FutexWait, 0),
        (SysCall::FutexWait, -22),
        (SysCall::Recv, -11),
        (SysCall::Recv, 40),
        (SysCall::Recv, -104),
    ] {
        tl.push(&sys(call, ret));
    }
    let f = tl.sys_total(SysCall::FutexWait);
    assert_eq!((f.count, f.errors, f.would_block), (5, 1, 1));
    let r = tl.sys_total(SysCall::Recv);
    assert_eq!((r.count, r.errors, r.would_block, r.bytes), (3, 1, 1, 40));
}

/// A bounded recording's window starts with blocks allocated before it:
/// they are outstanding, not growth of the window, and not a suspected
/// leak (the window saw none of their frees).
#[test]
fn carried_blocks_are_not_growth_of_the_window() {
    let mut tl = Timeline::new(Meta::default());
    for i in 0..50u64 {
        tl.carry(&crate::trace::CarriedBlock {
            pid: 0,
            tid: 0,
            ts: 9_000_000_000 + i * 10_000_000,
            ptr: 0x10_000 + i * 0x100,
            size: 1000,
            stack: None,
        });
    }
    // The window: 2 s from +10 s of steady churn, nothing left behind.
    for i in 0..200u64 {
        let ts = 10_000_000_000 + i * 10_000_000;
        tl.push(&Event {
            ts,
            pid: 0,
            tid: 0,
            kind: EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr: 0x90_000,
                size: 64,
                stack: None,
            },
        });
        tl.push(&Event {
            ts: ts + 1,
            pid: 0,
            tid: 0,
            kind: EventKind::Free {
                ptr: 0x90_000,
                stack: None,
            },
        });
    }
    let g = tl.leak_groups();
    assert_eq!(g.len(), 1);
    assert_eq!((g[0].blocks, g[0].bytes), (50, 50_000));
    assert!(!g[0].suspected, "{:?}", g[0]);
    assert!(g[0].growth_bytes_per_s.abs() < 1.0, "{:?}", g[0]);
    assert_eq!(tl.processes()[0].heap.carried, 50);
    assert_eq!(tl.processes()[0].heap.allocs, 200);
    // The window starts at the first recorded event, not the carried ones.
    assert_eq!(tl.window_start(), Some(10_000_000_000));
    assert_eq!(Timeline::new(Meta::default()).window_start(), None);
}

/// Busier traffic for the heap summaries: a pool of 512 addresses (live
/// sets well past the summaries' lists), sizes with ties, reallocs, a
/// child process forked at a quarter (its own heap from its parent's)
/// that execs at half, both allocating from then on.
fn busy_events(rng: &mut Rng, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    let mut ts = 1_000_000;
    for k in 0..n {
        ts += 1 + rng.below(1000);
        let pid = if k > n / 4 && rng.below(3) == 0 { 2 } else { 1 };
        let kind = if k == n / 4 {
            EventKind::Spawn {
                child: 2,
                thread: false,
            }
        } else if k == n / 2 {
            EventKind::Exec {
                filename: "/bin/child".into(),
            }
        } else {
            let ptr = 0x1000 + rng.below(512) * 0x100;
            let stack = Some(rng.below(7) as u32).filter(|&s| s != 6);
            let size = [8, 16, 16, 100, 4096, 1 + rng.below(5000)][rng.below(6) as usize];
            match rng.below(20) {
                0..=9 => EventKind::Alloc {
                    func: AllocFn::Malloc,
                    ptr: if rng.below(100) == 0 { 0 } else { ptr },
                    size,
                    stack,
                },
                10..=17 => EventKind::Free { ptr, stack },
                _ => EventKind::Realloc {
                    func: AllocFn::Realloc,
                    old: 0x1000 + rng.below(512) * 0x100,
                    ptr: if rng.below(2) == 0 { ptr } else { 0 },
                    size,
                    stack,
                },
            }
        };
        out.push(Event {
            ts,
            pid,
            tid: pid,
            kind,
        });
    }
    out
}

/// The fast heap-at-T (summaries plus the replay) against a read of every
/// live block: totals, per stack, the biggest and the oldest.
fn check_view(tl: &Timeline, upto: Idx, what: &str) {
    let heap = &tl.heap;
    let Some(full) = heap.at(&tl.store, upto) else {
        assert!(heap.view_at(&tl.store, upto).is_none(), "{what}");
        return;
    };
    let v = heap
        .view_at(&tl.store, upto)
        .unwrap_or_else(|| panic!("{what}: no view"));
    assert_eq!(
        v.blocks,
        full.len() as u64,
        "{what}: blocks (live now {}, end {})",
        heap.live_blocks(),
        tl.store.end()
    );
    assert_eq!(v.bytes, full.iter().map(|b| b.size).sum::<u64>(), "{what}");
    let mut by: std::collections::BTreeMap<Option<StackId>, (u64, u64, Idx)> = Default::default();
    for b in &full {
        let e = by.entry(b.stack).or_insert((0, 0, Idx::MAX));
        e.0 += 1;
        e.1 += b.size;
        e.2 = e.2.min(b.alloc);
    }
    let got: std::collections::BTreeMap<_, _> = v
        .sites
        .iter()
        .map(|s| (s.stack, (s.blocks, s.bytes, s.oldest.alloc)))
        .collect();
    assert_eq!(got, by, "{what}: sites");
    let mut by_bytes = full.clone();
    by_bytes.sort_by_key(summary::key);
    let mut by_age = full;
    by_age.sort_by_key(|b| b.alloc);
    for n in [1, 3, summary::TOP, 3 * summary::TOP, usize::MAX] {
        for (order, want) in [
            (summary::Order::Bytes, &by_bytes),
            (summary::Order::Age, &by_age),
        ] {
            let want = &want[..n.min(want.len())];
            match v.top(heap, &tl.store, order, n) {
                Some(got) => assert_eq!(got, want, "{what}: {order:?} {n}"),
                // Past the lists, a full read answers.
                None => assert!(n > summary::TOP, "{what}: {order:?} {n} not answered"),
            }
        }
    }
}

#[test]
fn heap_views_equal_a_read_of_every_live_block() {
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
        let events = busy_events(&mut rng, CHUNK * 12 + 333);
        let meta = Meta {
            pid: 1,
            follow: true,
            ..Meta::default()
        };
        // Every other seed under a retention budget that drops chunks.
        let budget = if seed % 2 == 0 {
            CHUNK * 40 * 4
        } else {
            usize::MAX
        };
        let mut tl = Timeline::with_budget(meta, budget);
        // Blocks carried into the window, a few freed in it.
        for i in 0..40u64 {
            tl.carry(&crate::trace::CarriedBlock {
                pid: 1,
                tid: 1,
                ts: 1000 + i,
                ptr: 0x1000 + i * 0x300,
                size: 64 + i,
                stack: Some((i % 3) as u32),
            });
        }
        let mut probes: Vec<Idx> = Vec::new();
        for (k, e) in events.iter().enumerate() {
            tl.push(e);
            // Some queries while the window is still open.
            if k % 997 == 0 {
                let end = tl.store.end();
                check_view(&tl, end, &format!("seed {seed} live at {end}"));
                probes.push(end.saturating_sub(rng.below(3000)));
            }
        }
        if seed % 2 == 0 {
            assert!(tl.store.dropped > 0, "seed {seed}: nothing dropped");
        }
        let held = tl.store.held();
        for _ in 0..60 {
            probes.push(held.start + rng.below(held.end - held.start + 1));
        }
        // Window edges.
        probes.extend([
            held.start,
            held.end,
            summary::WINDOW * 3,
            summary::WINDOW * 3 + 1,
        ]);
        for upto in probes {
            check_view(&tl, upto, &format!("seed {seed} at {upto}"));
        }
    }
}
