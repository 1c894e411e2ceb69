//! UI tests on `TestBackend`: snapshots of the main screens (a hand-built
//! recording, so addresses and times are fixed) and scripted keys.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::app::{App, HeapView, Mode, Pane};
use super::view::{self, Theme};
use super::{run, Input};
use crate::event::{
    AllocFn, Event, EventKind, ExitStatus, Frame, Meta, Module, SignalInfo, Stack, StackId,
};
use crate::model::Timeline;

const T0: u64 = 1_000_000_000;

fn frame(func: &str, line: u32) -> Frame {
    Frame {
        addr: 0x5555_0000_1000 + u64::from(line),
        module: Some(0),
        offset: 0x1000 + u64::from(line),
        func: Some(func.into()),
        file: Some("/src/uaf.c".into()),
        line,
        inlined: false,
    }
}

/// A use-after-free recording: small requests, a leak, the big block
/// allocated, freed, unmapped and touched.
fn recording() -> Timeline {
    let meta = Meta {
        pid: 4242,
        command: "/opt/demo/uaf --port 8080".into(),
        start_mono_ns: T0,
        launched: true,
        ..Meta::default()
    };
    let mut tl = Timeline::new(meta);
    tl.add_module(Module {
        id: 0,
        path: "/opt/demo/uaf".into(),
        build_id: None,
        segments: Vec::new(),
    });
    let stacks: [(&str, u32); 5] = [
        ("parse_request", 19),
        ("drop_conn", 27),
        ("remember", 40),
        ("process_request", 34),
        ("main", 63),
    ];
    for (id, (f, l)) in stacks.iter().enumerate() {
        tl.add_stack(Stack {
            id: id as StackId,
            frames: vec![frame(f, *l), frame("handle_conn", 46), frame("main", 63)],
            end: crate::event::StackEnd::Complete,
        });
    }
    let big = 0x7f00_0000_0010;
    let alloc = |ptr, size, stack| EventKind::Alloc {
        func: AllocFn::Malloc,
        ptr,
        size,
        stack: Some(stack),
    };
    let free = |ptr| EventKind::Free {
        ptr,
        stack: Some(1),
    };
    let kinds = vec![
        alloc(0x1000, 100, 0),
        free(0x1000),
        alloc(0x2000, 200, 0),
        alloc(0x3000, 64, 2),
        free(0x2000),
        alloc(big, 300_000, 0),
        alloc(0x4000, 64, 2),
        free(big),
        EventKind::Munmap {
            addr: big - 0x10,
            len: 303_104,
            ret: 0,
        },
        EventKind::Signal(Box::new(SignalInfo {
            signo: 11,
            code: 1,
            errno: 0,
            addr: big + 16,
            handled: false,
            ip: 0x5555_0000_1022,
            sp: 0x7ffd_0000_0000,
            stack: Some(3),
            sender: None,
            regs: Vec::new(),
            insn: Vec::new(),
            message: None,
        })),
        EventKind::ProcessExit {
            status: ExitStatus::Signal {
                signo: 11,
                core: false,
            },
        },
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        tl.push(&Event {
            ts: T0 + 1_000_000 * (i as u64 + 1),
            pid: 4242,
            tid: 4242,
            kind,
        });
    }
    tl
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn press(app: &mut App, keys: &[KeyCode]) {
    for k in keys {
        app.on_key(key(*k));
    }
}

fn screen(app: &App, w: u16, h: u16, theme: Theme) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::render(app, f, theme)).unwrap();
    t
}

fn text(t: &Terminal<TestBackend>) -> String {
    let buf = t.backend().buffer();
    let mut s = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

const COLOR: Theme = Theme { color: true };

#[test]
fn opens_on_the_crash_with_the_diagnosis() {
    let app = App::new(recording(), Mode::Replay);
    assert_eq!(app.cursor, Some(9));
    let t = screen(&app, 80, 24, COLOR);
    let s = text(&t);
    assert!(s.contains("USE-AFTER-FREE"), "{s}");
    assert!(s.contains("parse_request"), "{s}");
    assert!(s.contains("drop_conn"), "{s}");
    assert!(s.contains("▶ +0.010000s"), "{s}");
    insta::assert_snapshot!("crash_80x24", t.backend());
}

#[test]
fn scrubbing_back_moves_the_heap_table() {
    let mut app = App::new(recording(), Mode::Replay);
    let at = |app: &App| {
        let mut v: Vec<(u64, u64)> = app.blocks().iter().map(|b| (b.ptr, b.size)).collect();
        v.sort_unstable();
        v
    };
    // At the crash: the two leaked records.
    assert_eq!(at(&app), vec![(0x3000, 64), (0x4000, 64)]);
    press(&mut app, &[KeyCode::Left; 5]);
    assert_eq!(app.cursor, Some(4));
    assert_eq!(at(&app), vec![(0x3000, 64)]);
    press(&mut app, &[KeyCode::Right, KeyCode::Right]);
    assert_eq!(
        at(&app),
        vec![(0x3000, 64), (0x4000, 64), (0x7f00_0000_0010, 300_000)]
    );
    let s = text(&screen(&app, 80, 24, COLOR));
    assert!(s.contains("Heap here: 293.1 KiB in 3 blocks"), "{s}");
    assert!(s.contains("at +0.007000s"), "{s}");
    insta::assert_snapshot!("scrubbed_back_80x24", screen(&app, 80, 24, COLOR).backend());
    press(&mut app, &[KeyCode::Home]);
    assert_eq!(app.cursor, Some(0));
    press(&mut app, &[KeyCode::End]);
    assert_eq!(app.cursor, Some(10));
    press(&mut app, &[KeyCode::Char('c')]);
    assert_eq!((app.cursor, app.pane), (Some(9), Pane::Stack));
}

#[test]
fn filter_then_alloc_and_free_jumps() {
    let mut app = App::new(recording(), Mode::Replay);
    app.on_key(key(KeyCode::Char('/')));
    for ch in "drop_conn".chars() {
        app.on_key(key(KeyCode::Char(ch)));
    }
    app.on_key(key(KeyCode::Enter));
    // No later free by drop_conn after the crash; N finds the earlier one.
    assert_eq!(app.cursor, Some(9));
    assert!(app
        .message
        .as_deref()
        .is_some_and(|m| m.contains("no later match")));
    press(&mut app, &[KeyCode::Char('N')]);
    assert_eq!(app.cursor, Some(7));
    // The title counts the matches, a slice at a time between frames.
    app.count_matches(4);
    assert_eq!(app.matches_text().as_deref(), Some("1+ matches"));
    app.count_matches(1000);
    assert_eq!(app.matches_text().as_deref(), Some("3 matches"), "3 frees");
    assert!(text(&screen(&app, 100, 24, COLOR)).contains("filter: func=drop_conn (3 matches, n/N)"));
    // The other matches on screen are marked.
    let s = text(&screen(&app, 80, 24, COLOR));
    assert!(
        s.lines()
            .any(|l| l.contains("• +0.005000s") && l.contains("FREE")),
        "{s}"
    );
    press(&mut app, &[KeyCode::Char('a')]);
    assert_eq!(app.cursor, Some(5), "the big block's allocation");
    press(&mut app, &[KeyCode::Char('f')]);
    assert_eq!(app.cursor, Some(7), "and its free");
    // `/` reopens the filter; Ctrl-U clears it; a bad filter is a
    // message, not a crash, and the text stays to be corrected.
    app.on_key(key(KeyCode::Char('/')));
    assert_eq!(app.input.as_deref(), Some("func=drop_conn"));
    // The reason shows at the prompt, in place of the hints.
    let s = text(&screen(&app, 100, 24, COLOR));
    assert!(s.contains("/ func=drop_conn█   kind="), "the hints: {s}");
    app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL));
    assert_eq!(app.input.as_deref(), Some(""));
    for ch in "kind=nope".chars() {
        app.on_key(key(KeyCode::Char(ch)));
    }
    app.on_key(key(KeyCode::Enter));
    assert!(app
        .message
        .as_deref()
        .is_some_and(|m| m.contains("unknown event kind")));
    assert_eq!(app.input.as_deref(), Some("kind=nope"));
    let s = text(&screen(&app, 120, 24, COLOR));
    assert!(s.contains("kind=nope█   unknown event kind 'nope'"), "{s}");
    // On the crash, a and f follow the diagnosis to the block.
    app.on_key(key(KeyCode::Esc));
    press(&mut app, &[KeyCode::Char('c'), KeyCode::Char('f')]);
    assert_eq!(app.cursor, Some(7));
    press(&mut app, &[KeyCode::Char('c'), KeyCode::Char('a')]);
    assert_eq!(app.cursor, Some(5));
}

#[test]
fn filters_find_the_free_of_a_faulting_address_and_the_crash_by_function() {
    let mut app = App::new(recording(), Mode::Replay);
    let f = app.tl.parse_filter("addr=0x7f0000000020").unwrap();
    let hits: Vec<u64> = (0..app.tl.store().end())
        .filter(|&i| app.tl.store().matches(i, &f))
        .collect();
    // The allocation covering it, its free, the crash.
    assert_eq!(hits, vec![5, 7, 9]);
    let f = app
        .tl
        .parse_filter("func=process_request kind=crash")
        .unwrap();
    assert!(app.tl.store().matches(9, &f));
    press(
        &mut app,
        &[KeyCode::Home, KeyCode::Char(']'), KeyCode::Char(']')],
    );
    assert_eq!(
        app.cursor,
        Some(2),
        "] moves on even when events are sparse"
    );
}

#[test]
fn heap_by_site_and_help_overlay() {
    let mut app = App::new(recording(), Mode::Replay);
    assert_eq!(app.pane, Pane::Stack);
    press(&mut app, &[KeyCode::Char('g'), KeyCode::Tab]);
    assert_eq!((app.heap_view, app.pane), (HeapView::Sites, Pane::Events));
    let sites = app.sites();
    assert_eq!(sites.len(), 1);
    assert_eq!((sites[0].blocks, sites[0].bytes), (2, 128));
    insta::assert_snapshot!("sites_80x24", screen(&app, 80, 24, COLOR).backend());
    press(&mut app, &[KeyCode::Char('?')]);
    let s = text(&screen(&app, 80, 24, COLOR));
    assert!(s.contains("keys (any key closes)"), "{s}");
    insta::assert_snapshot!("help_80x24", screen(&app, 80, 24, COLOR).backend());
    // Enter on a heap row jumps to its allocation.
    press(&mut app, &[KeyCode::Esc, KeyCode::Tab]);
    assert_eq!(app.pane, Pane::Heap);
    press(&mut app, &[KeyCode::Enter]);
    assert_eq!(app.cursor, Some(3));
}

#[test]
fn no_color_means_no_colors() {
    let app = App::new(recording(), Mode::Replay);
    let t = screen(&app, 100, 30, Theme { color: false });
    let buf = t.backend().buffer();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            let c = &buf[(x, y)];
            assert_eq!(c.fg, ratatui::style::Color::Reset, "colour at {x},{y}");
        }
    }
    // Still readable: the crash is marked with text.
    assert!(text(&t).contains("FROZEN") || text(&t).contains("REPLAY"));
}

#[test]
fn large_terminals_and_zoom() {
    let mut app = App::new(recording(), Mode::Replay);
    press(&mut app, &[KeyCode::Char('+'), KeyCode::Char('+')]);
    assert!(app.zoom.is_some());
    let s = text(&screen(&app, 200, 60, COLOR));
    assert!(s.contains("zoomed"), "{s}");
    press(
        &mut app,
        &[KeyCode::Char('-'), KeyCode::Char('-'), KeyCode::Char('-')],
    );
    assert!(app.zoom.is_none());
    // A click on the bar's first column goes to the first event.
    super::on_input(&mut app, Input::Click(0, 1), 200);
    assert_eq!(app.cursor, Some(0));
}

#[test]
fn the_loop_draws_and_quits() {
    let mut app = App::new(recording(), Mode::Replay);
    let (tx, rx) = crossbeam_channel::unbounded();
    for k in [KeyCode::Left, KeyCode::Left, KeyCode::Char('q')] {
        tx.send(Input::Key(key(k))).unwrap();
    }
    let mut t = Terminal::new(TestBackend::new(80, 24)).unwrap();
    let end = run::<_, super::Replay>(&mut t, &mut app, &rx, None, COLOR).unwrap();
    assert!(end.is_none());
    assert_eq!(app.cursor, Some(7));
    assert!(app.quit);
}

#[test]
fn lost_events_are_marked_on_the_bar_and_in_red() {
    let tl = recording();
    // Losses reported after the 4th event: 7 events gone.
    let mut fresh = Timeline::new(tl.meta().clone());
    for m in tl.modules() {
        fresh.add_module(m.clone());
    }
    for s in tl.stacks() {
        fresh.add_stack(s.clone());
    }
    for i in 0..tl.store().end() {
        if i == 4 {
            fresh.note_lost(crate::event::Lost {
                ringbuf: 7,
                ..Default::default()
            });
        }
        if let Some(e) = tl.store().get(i) {
            fresh.push(&e);
        }
    }
    assert_eq!(fresh.loss_marks(), [(4, 7)]);
    let app = App::new(fresh, Mode::Replay);
    let t = screen(&app, 80, 24, COLOR);
    let s = text(&t);
    let axis = s.lines().nth(2).unwrap_or_default();
    assert!(axis.contains('!'), "{axis}");
    assert!(s.contains("lost 7"), "{s}");
    // "lost 7" is drawn in the alert colour.
    let buf = t.backend().buffer();
    let row: String = (0..80).map(|x| buf[(x, 0)].symbol().to_string()).collect();
    let x = row.find("lost 7").unwrap_or(0);
    let col = row[..x].chars().count() as u16;
    assert_eq!(buf[(col, 0)].fg, ratatui::style::Color::Red);
}

/// A probed server: main → handle(7) → parse("GET /") → parse returns
/// -1 after 1 ms, a refused connect, handle returns; a second handle
/// whose parse longjmps out; then a NULL dereference inside handle.
fn probed() -> Timeline {
    use crate::event::{Arg, CallInfo, Probe, SysCall, SysInfo, ValueType};
    let mut tl = Timeline::new(Meta {
        pid: 77,
        command: "/srv/server".into(),
        start_mono_ns: T0,
        launched: true,
        ..Meta::default()
    });
    for (id, func, ret) in [
        (0, "main", ValueType::Int),
        (1, "handle", ValueType::Int),
        (2, "parse", ValueType::Int),
    ] {
        tl.add_probe(Probe {
            id,
            func: func.into(),
            module: "/srv/server".into(),
            offset: 0x1000 * u64::from(id),
            args: Vec::new(),
            ret,
            returns: true,
        });
    }
    let call = |probe, args, sp| {
        EventKind::Call(Box::new(CallInfo {
            probe,
            args,
            sp,
            stack: None,
            ret_addr: 0,
        }))
    };
    let ret = |probe, ret: i64, sp: u64| EventKind::Return {
        probe,
        ret: ret as u64,
        sp: sp + 8,
    };
    let kinds = vec![
        call(0, vec![], 0x7000),
        call(1, vec![Arg::Int(7)], 0x6f00),
        call(2, vec![Arg::Str("GET /".into())], 0x6e00),
        ret(2, u64::from((-1i32) as u32) as i64, 0x6e00),
        EventKind::Sys(Box::new(SysInfo {
            call: SysCall::Connect,
            fd: 5,
            ret: -111,
            dur_ns: 40_000,
            len: 0,
            arg: 0,
            target: Some("10.0.0.1:80".into()),
            stack: None,
        })),
        ret(1, 0, 0x6f00),
        call(1, vec![Arg::Int(8)], 0x6f00),
        call(2, vec![Arg::Str("POST /".into())], 0x6e00),
        EventKind::OffCpu {
            dur_ns: 3_000_000,
            preempted: false,
            stack: None,
        },
        // parse longjmp'ed back into handle, which calls parse again.
        call(2, vec![Arg::Str("PUT /".into())], 0x6e00),
        EventKind::Signal(Box::new(SignalInfo {
            signo: 11,
            code: 1,
            errno: 0,
            addr: 0,
            handled: false,
            ip: 0x5555_0000_1022,
            sp: 0x6d00,
            stack: None,
            sender: None,
            regs: Vec::new(),
            insn: Vec::new(),
            message: None,
        })),
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        tl.push(&Event {
            ts: T0 + 1_000_000 * (i as u64 + 1),
            pid: 77,
            tid: 77,
            kind,
        });
    }
    tl
}

fn row_with<'a>(s: &'a str, needle: &str) -> &'a str {
    s.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no row with {needle:?} in\n{s}"))
}

#[test]
fn call_rows_nest_and_the_stack_pane_says_where() {
    let mut app = App::new(probed(), Mode::Replay);
    assert_eq!(app.cursor, Some(10), "opens on the crash");
    // The crash is inside main → handle(8) → parse("PUT /").
    let s = text(&screen(&app, 120, 40, COLOR));
    assert!(
        s.contains(r#"inside: main() → handle(8) → parse("PUT /")"#),
        "{s}"
    );
    press(&mut app, &[KeyCode::Home]);
    let t = screen(&app, 120, 40, COLOR);
    let s = text(&t);
    // Indented by depth: main at 0, handle at 1, parse at 2 (2 columns
    // a level); the return of parse at parse's depth, with its duration.
    let col = |needle: &str| {
        let row = row_with(&s, needle);
        row[..row.find(needle).unwrap_or(0)].chars().count()
    };
    let main = col("main()");
    assert_eq!(col("handle(7)"), main + 2);
    assert_eq!(col(r#"parse("GET /")"#), main + 4);
    assert_eq!(col("← parse -> -1  1.00ms"), main + 4);
    assert_eq!(col("← handle -> 0  4.00ms"), main + 2);
    assert!(row_with(&s, "connect fd=5").contains("-111 ECONNREFUSED"));
    assert!(row_with(&s, "off-cpu 3.00ms blocked").contains("SCHED"));
    assert!(row_with(&s, "handle(7)").contains("CALL"));
    assert!(row_with(&s, "← parse").contains("RET"));
    insta::assert_snapshot!("calls_120x40", t.backend());
    // On the RET of parse: its call path and how it ended.
    press(&mut app, &[KeyCode::Right; 3]);
    let s = text(&screen(&app, 120, 40, COLOR));
    assert!(
        s.contains(r#"inside: main() → handle(7) → parse("GET /")"#),
        "{s}"
    );
    assert!(s.contains("parse returned -1 after 1.00ms"), "{s}");
    // The longjmp'ed parse says so.
    press(&mut app, &[KeyCode::Right; 4]);
    assert_eq!(app.cursor, Some(7));
    let s = text(&screen(&app, 120, 40, COLOR));
    assert!(s.contains("parse: no return (unwound by longjmp"), "{s}");
}

#[test]
fn percent_jumps_between_a_call_and_its_return() {
    let mut app = App::new(probed(), Mode::Replay);
    press(&mut app, &[KeyCode::Home, KeyCode::Right]);
    assert_eq!(app.cursor, Some(1), "CALL handle(7)");
    press(&mut app, &[KeyCode::Char('%')]);
    assert_eq!(app.cursor, Some(5), "its RET");
    press(&mut app, &[KeyCode::Char('%')]);
    assert_eq!(app.cursor, Some(1), "and back");
    // A call without a return, and a row that is no call, say why.
    press(&mut app, &[KeyCode::End, KeyCode::Left, KeyCode::Char('%')]);
    assert_eq!(app.cursor, Some(9));
    assert!(app
        .message
        .as_deref()
        .is_some_and(|m| m.contains("has not returned")));
    press(&mut app, &[KeyCode::Left, KeyCode::Char('%')]);
    assert_eq!(app.cursor, Some(8));
    assert!(app
        .message
        .as_deref()
        .is_some_and(|m| m.contains("select one")));
}

#[test]
fn call_filter_selects_calls_and_returns_of_matching_probes() {
    let mut app = App::new(probed(), Mode::Replay);
    let hits = |app: &App, spec: &str| -> Vec<u64> {
        let f = app.tl.parse_filter(spec).unwrap();
        (0..app.tl.store().end())
            .filter(|&i| app.tl.store().matches(i, &f))
            .collect()
    };
    assert_eq!(hits(&app, "call=parse"), vec![2, 3, 7, 9]);
    assert_eq!(hits(&app, "call=*a*"), vec![0, 1, 2, 3, 5, 6, 7, 9]);
    assert_eq!(hits(&app, "call=h* kind=return"), vec![5]);
    // `?` is one character, as in --probe patterns.
    assert_eq!(hits(&app, "call=p?rse"), vec![2, 3, 7, 9]);
    let main = hits(&app, "call=main");
    assert!(!main.is_empty());
    assert_eq!(hits(&app, "call=?ain"), main);
    // Without `*` a name is matched whole.
    assert!(app.tl.parse_filter("call=pars").is_err());
    let err = app.tl.parse_filter("call=nope").unwrap_err();
    assert!(err.contains("probed: main, handle, parse"), "{err}");
    let err = app.tl.parse_filter("bogus=1").unwrap_err();
    assert!(err.contains("call"), "{err}");
    // Typed in the UI: n/N walk the matches.
    press(&mut app, &[KeyCode::Home, KeyCode::Char('/')]);
    for ch in "call=parse".chars() {
        app.on_key(key(KeyCode::Char(ch)));
    }
    app.on_key(key(KeyCode::Enter));
    assert_eq!(app.cursor, Some(2));
    press(&mut app, &[KeyCode::Char('n')]);
    assert_eq!(app.cursor, Some(3));
}

#[test]
fn a_leak_scan_flags_the_heap_sites_with_its_kinds() {
    use crate::event::{LeakKind, LeakScan, ScanTrigger, ScannedBlock};
    let mut tl = recording();
    let scan = |kinds: [LeakKind; 2]| LeakScan {
        pid: 4242,
        ts: T0 + 20_000_000,
        trigger: ScanTrigger::Exit,
        paused_ns: 1_000_000,
        root_bytes: 4096,
        block_bytes: 128,
        caveats: Vec::new(),
        blocks: vec![
            ScannedBlock {
                ptr: 0x3000,
                size: 64,
                kind: kinds[0],
            },
            ScannedBlock {
                ptr: 0x4000,
                size: 64,
                kind: kinds[1],
            },
        ],
    };
    tl.add_leak_scan(scan([LeakKind::StillReachable, LeakKind::StillReachable]));
    let mut app = App::new(tl, Mode::Replay);
    press(&mut app, &[KeyCode::Char('g')]);
    app.refresh();
    // Reachable only: no flag (nor the growth-only guess).
    assert_eq!(app.sites()[0].kind, Some(LeakKind::StillReachable));
    let s = text(&screen(&app, 100, 24, COLOR));
    assert!(!s.contains("LOST"), "{s}");

    let mut tl = recording();
    tl.add_leak_scan(scan([LeakKind::StillReachable, LeakKind::DefinitelyLost]));
    let mut app = App::new(tl, Mode::Replay);
    press(&mut app, &[KeyCode::Char('g')]);
    app.refresh();
    // The worst kind of the site's blocks.
    assert_eq!(app.sites()[0].kind, Some(LeakKind::DefinitelyLost));
    let s = text(&screen(&app, 100, 24, COLOR));
    assert!(s.contains("LOST remember"), "{s}");
}

/// A site that allocates 1 KiB every 100 ms for 5 s, never freeing: the
/// growth and `LEAK?` of the by-site view are as of the cursor.
#[test]
fn site_growth_is_as_of_the_cursor() {
    let mut tl = Timeline::new(Meta {
        pid: 7,
        command: "grower".into(),
        start_mono_ns: T0,
        launched: true,
        ..Meta::default()
    });
    tl.add_stack(Stack {
        id: 0,
        frames: vec![frame("grow", 5), frame("main", 9)],
        end: crate::event::StackEnd::Complete,
    });
    for i in 0..50u64 {
        tl.push(&Event {
            ts: T0 + i * 100_000_000,
            pid: 7,
            tid: 7,
            kind: EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr: 0x10_000 + i * 0x1000,
                size: 1024,
                stack: Some(0),
            },
        });
    }
    let mut app = App::new(tl, Mode::Replay);
    app.heap_view = HeapView::Sites;
    press(&mut app, &[KeyCode::End]);
    app.refresh();
    // At the newest event: the live analysis, a suspected leak growing
    // 50 KiB over 4.9 s.
    let s = &app.sites()[0];
    assert!(s.suspected, "{s:?}");
    assert!((s.growth - 51_200.0 / 4.9).abs() < 1.0, "{}", s.growth);
    // Back at the 6th allocation (+0.5 s): 6 KiB in 0.5 s, not the end's
    // rate, and no suspicion back in time.
    press(&mut app, &[KeyCode::Home]);
    press(&mut app, &[KeyCode::Right; 5]);
    app.refresh();
    let s = &app.sites()[0];
    assert_eq!(s.blocks, 6);
    assert!(!s.suspected, "{s:?}");
    assert!((s.growth - 5.0 * 1024.0 / 0.5).abs() < 1.0, "{}", s.growth);
    let screen = text(&screen(&app, 100, 24, COLOR));
    assert!(!screen.contains("LEAK?"), "{screen}");
}

#[test]
fn heap_site_columns_fit_their_widths() {
    // Up to 1 TB, and 1 TB/s.
    for p in 0..13 {
        for m in [1u64, 5, 9, 10] {
            let n = 10u64.pow(p) * m - 1;
            assert!(
                view::short_bytes(n).chars().count() <= 6,
                "{n}: {}",
                view::short_bytes(n)
            );
            for g in [n as f64, -(n as f64)] {
                assert!(
                    view::growth(g).chars().count() <= 8,
                    "{g}: {}",
                    view::growth(g)
                );
            }
        }
    }
    assert_eq!(view::short_bytes(4096), "4.0K");
    assert_eq!(view::short_bytes(812), "812B");
    assert_eq!(view::growth(19_800.0), "+19.8K/s");
}

/// ↓ stops at the diagnosis's last line: the pane never scrolls to blank.
#[test]
fn the_diagnosis_scrolls_no_further_than_its_end() {
    let mut app = App::new(recording(), Mode::Replay);
    assert_eq!(app.pane, Pane::Stack);
    let _ = screen(&app, 80, 24, COLOR);
    for _ in 0..60 {
        press(&mut app, &[KeyCode::Down]);
        let _ = screen(&app, 80, 24, COLOR);
    }
    let max = app.stack_max.get();
    assert!(max > 0 && max < 60, "{max}");
    assert_eq!(app.stack_scroll, max);
    let s = text(&screen(&app, 80, 24, COLOR));
    assert!(s.contains("Diagnosis ↑"), "{s}");
    // One ↑ scrolls back at once.
    press(&mut app, &[KeyCode::Up]);
    assert_eq!(app.stack_scroll, max - 1);
}

/// More live blocks than the heap summaries list: the blocks table's rows
/// by bytes and by age are the full sort's, from the summaries while the
/// selection is near the top, and from every block read past them (the
/// title says so).
#[test]
fn blocks_table_rows_come_from_the_summaries_then_a_full_read() {
    let mut tl = Timeline::new(Meta {
        pid: 7,
        command: "many".into(),
        start_mono_ns: T0,
        launched: true,
        ..Meta::default()
    });
    for i in 0..3000u64 {
        // Big blocks first, a third of them freed; then small ones that
        // rank after the listed biggest.
        let (ptr, size) = if i < 1500 {
            (0x10_000 + i * 0x1000, 1000 + i * 31 % 997)
        } else {
            (0x9000_0000 + (i % 50) * 0x100, 16)
        };
        let kind = if i % 3 == 2 {
            EventKind::Free {
                ptr: ptr - 0x1000 * u64::from(i < 1500),
                stack: None,
            }
        } else {
            EventKind::Alloc {
                func: AllocFn::Malloc,
                ptr,
                size,
                stack: None,
            }
        };
        tl.push(&Event {
            ts: T0 + i * 1000,
            pid: 7,
            tid: 7,
            kind,
        });
    }
    let mut app = App::new(tl, Mode::Replay);
    // A table of 3 rows (the unit tests' summaries list 6).
    app.heap_page.set(3);
    press(&mut app, &[KeyCode::Tab, KeyCode::Left]);
    let c = app.cursor.unwrap_or(0);
    let mut all = app.tl.heap_after(c).unwrap_or_default();
    assert!(
        all.len() > 3 * crate::model::summary::TOP + 60,
        "{}",
        all.len()
    );
    all.sort_by_key(crate::model::summary::key);
    let n = app.blocks().len();
    assert_eq!(app.blocks(), &all[..n]);
    assert!(!app.rows_full());
    assert_eq!(app.heap_rows(), all.len());
    // Down past the listed rows: every block read.
    press(&mut app, &[KeyCode::Down; 150]);
    app.heap_page.set(21);
    assert!(app.rows_full());
    assert_eq!(app.blocks(), &all[..]);
    let s = text(&screen(&app, 100, 24, COLOR));
    assert!(s.contains("in 534 blocks, all read"), "{s}");
    // By age: allocation order.
    press(&mut app, &[KeyCode::Home, KeyCode::Char('s')]);
    all.sort_by_key(|b| b.alloc);
    let c = app.cursor.unwrap_or(0);
    let want = app.tl.heap_after(c).unwrap_or_default();
    let n = app.blocks().len().min(want.len());
    assert_eq!(&app.blocks()[..n], &want[..n]);
    let s = text(&screen(&app, 160, 24, COLOR));
    assert!(s.contains("[s] by age"), "{s}");
}
