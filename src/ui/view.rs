//! Rendering: status line, timeline bar, event list, heap table, stack or
//! diagnosis pane, key hints, help overlay. Reads the [`App`]; no I/O.

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Clear, Paragraph, Row, Table, Wrap};
use ratatui::Frame;

use crate::event::{signal_name, EventKind};
use crate::model::diagnose::{fmt_ns, Diagnosis};
use crate::model::names::{module_path, stack_lines};
use crate::model::present::{self, bytes, rel};
use crate::model::spans::Outcome;
use crate::model::store::{Idx, Kind};
use crate::ui::app::{App, HeapView, Mode, Pane};

/// Colours, or none when NO_COLOR is set: then emphasis is bold/reverse.
#[derive(Clone, Copy)]
pub struct Theme {
    pub color: bool,
}

impl Theme {
    pub fn from_env() -> Self {
        Theme {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn fg(self, c: Color) -> Style {
        if self.color {
            Style::default().fg(c)
        } else {
            Style::default()
        }
    }

    fn alert(self) -> Style {
        if self.color {
            Style::default().fg(Color::Red).add_modifier(Modifier::BOLD)
        } else {
            Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED)
        }
    }

    fn kind(self, k: Kind) -> Style {
        match k {
            Kind::Alloc | Kind::Inherit => self.fg(Color::Green),
            Kind::Free | Kind::Discard => self.fg(Color::Blue),
            Kind::Realloc => self.fg(Color::Cyan),
            Kind::Mmap | Kind::Munmap | Kind::Mremap | Kind::Brk => self.fg(Color::Magenta),
            Kind::Signal | Kind::Watch => self.alert(),
            Kind::Call | Kind::Return => self.fg(Color::LightBlue),
            Kind::ThreadStart
            | Kind::ChildProcess
            | Kind::Exec
            | Kind::ThreadExit
            | Kind::Exit
            | Kind::Io
            | Kind::Net
            | Kind::Lock
            | Kind::Sched => self.fg(Color::Yellow),
        }
    }
}

/// A site label made to fit `width` columns: `func (file:line)`, else
/// `func:line`, else cut with `…` — never silently cut (a cut line number
/// is a wrong line number).
pub fn fit(label: &str, width: usize) -> String {
    let n = label.chars().count();
    if n <= width {
        return label.to_string();
    }
    let compact = label
        .strip_suffix(')')
        .and_then(|l| l.rsplit_once(" ("))
        .map(|(func, loc)| match loc.rsplit_once(':') {
            Some((_, line)) => format!("{func}:{line}"),
            None => func.to_string(),
        });
    if let Some(c) = compact {
        if c.chars().count() <= width {
            return c;
        }
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = label.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// Cut at `width` columns with `…` (a call's text: its start, the
/// indent and the name, matters most).
fn fit_end(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        return text.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(width - 1).collect();
    out.push('…');
    out
}

/// `1 block`, `2 blocks`.
pub fn plural(n: u64, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Bytes in at most 6 columns: `812B`, `4.0K`, `37K`, `1023K`, `1.2M`.
pub(crate) fn short_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "K", "M", "G", "T"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1023.5 && u + 1 < U.len() {
        v /= 1024.0;
        u += 1;
    }
    match (u, v) {
        (0, _) => format!("{n}B"),
        (_, v) if v < 9.95 => format!("{v:.1}{}", U[u]),
        (_, v) => format!("{v:.0}{}", U[u]),
    }
}

/// Growth in bytes per second, compact: `+12.5K/s`, `0/s`.
pub(crate) fn growth(b_per_s: f64) -> String {
    let a = b_per_s.abs();
    let sign = if b_per_s < 0.0 { "-" } else { "+" };
    // At most 8 columns: 3 significant digits.
    let scaled = |v: f64, unit: &str| {
        if v < 99.95 {
            format!("{sign}{v:.1}{unit}/s")
        } else {
            format!("{sign}{v:.0}{unit}/s")
        }
    };
    match a {
        a if a < 0.5 => "0/s".to_string(),
        a if a < 999.5 => format!("{sign}{a:.0}/s"),
        a if a < 999_500.0 => scaled(a / 1e3, "K"),
        a if a < 999_500_000.0 => scaled(a / 1e6, "M"),
        a if a < 999_500_000_000.0 => scaled(a / 1e9, "G"),
        a => scaled(a / 1e12, "T"),
    }
}

/// The command without its directory, cut to 32 characters.
fn short_command(cmd: &str) -> String {
    let (prog, args) = cmd.split_once(' ').unwrap_or((cmd, ""));
    let prog = prog.rsplit('/').next().unwrap_or(prog);
    let s = if args.is_empty() {
        prog.to_string()
    } else {
        format!("{prog} {args}")
    };
    if s.chars().count() > 32 {
        format!("{}…", s.chars().take(31).collect::<String>())
    } else {
        s
    }
}

pub fn render(app: &App, frame: &mut Frame, theme: Theme) {
    let area = frame.area();
    let [status, bar, axis, main, hints] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Length(1),
        Constraint::Min(6),
        Constraint::Length(1),
    ])
    .areas(area);
    let [events, bottom] =
        Layout::vertical([Constraint::Percentage(45), Constraint::Percentage(55)]).areas(main);
    let [heap, stack] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(bottom);
    render_status(app, frame, status, theme);
    render_bar(app, frame, bar, axis, theme);
    render_events(app, frame, events, theme);
    render_heap(app, frame, heap, theme);
    render_stack(app, frame, stack, theme);
    render_hints(app, frame, hints, theme);
    if app.help {
        render_help(frame, area);
    }
}

/// What one recorded event costs the target, traps and tm-tui's own work
/// together: `tm-tui bench`, -O2 churner without frame pointers, +3.7 µs
/// per malloc+free pair (docs/PERF.md). An estimate: shown with "≈".
const COST_PER_EVENT_NS: f64 = 1850.0;

/// "2.3s behind (1.2M queued)" while the live view trails the recording;
/// red once the kernel's ring buffer or the channel dropped events.
fn lag_span(app: &App, theme: Theme) -> Span<'static> {
    let lag = app.lag;
    if app.mode != Mode::Live || (lag.behind_ns < 250_000_000 && lag.queued < 100_000) {
        return Span::raw("");
    }
    let lost = app.tl.lost();
    let style = if lost.ringbuf > 0 || lost.channel > 0 {
        theme.alert()
    } else {
        theme.fg(Color::Yellow).add_modifier(Modifier::BOLD)
    };
    let mut text = format!(
        "  {:.1}s behind ({} queued",
        lag.behind_ns as f64 / 1e9,
        count(lag.queued)
    );
    if lag.ring_bytes > 0 {
        text.push_str(&format!(", {} in the kernel", bytes(lag.ring_bytes)));
    }
    text.push(')');
    Span::styled(text, style)
}

/// "probes ≈37% CPU": what recording costs the target, from the event rate.
/// Findings of the watchpoints, and (live) how many were armed.
fn watch_span(app: &App, theme: Theme) -> Span<'static> {
    let armed = app
        .watcher
        .as_ref()
        .and_then(|c| c.get())
        .map(|w| w.stats().arms);
    match (app.findings_seen().len(), armed) {
        (0, None) => Span::raw(""),
        (0, Some(a)) => Span::raw(format!("  watched {}", count(a))),
        (n, a) => Span::styled(
            format!(
                "  {n} FINDING{}{} (w)",
                if n == 1 { "" } else { "S" },
                a.map(|a| format!(" of {} watched", count(a)))
                    .unwrap_or_default()
            ),
            theme.alert(),
        ),
    }
}

fn cost_span(app: &App) -> Span<'static> {
    if app.mode != Mode::Live || app.rate <= 0.0 || app.loading.is_some() {
        return Span::raw("");
    }
    let pct = app.rate * COST_PER_EVENT_NS / 1e9 * 100.0;
    Span::raw(format!("  probes ≈{pct:.0}% CPU"))
}

/// 1234567 as "1.2M".
fn count(n: u64) -> String {
    match n {
        0..=9_999 => n.to_string(),
        10_000..=999_999 => format!("{:.0}k", n as f64 / 1e3),
        _ => format!("{:.1}M", n as f64 / 1e6),
    }
}

fn render_status(app: &App, frame: &mut Frame, area: Rect, theme: Theme) {
    let tl = &app.tl;
    let start = tl.meta().start_mono_ns;
    let loading = app.loading.map(|l| {
        format!(
            "{} LOADING{}",
            if app.mode == Mode::Live { "▶" } else { "■" },
            l.fraction
                .map(|f| format!(" {:.0}%", f * 100.0))
                .unwrap_or_default()
        )
    });
    let (mode, mode_style) = match app.mode {
        _ if loading.is_some() => (
            loading.as_deref().unwrap_or_default(),
            theme.fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ),
        Mode::Live => (
            "● LIVE",
            theme.fg(Color::Green).add_modifier(Modifier::BOLD),
        ),
        Mode::Frozen if tl.crash().is_some() => ("■ FROZEN (crash)", theme.alert()),
        Mode::Frozen => (
            "■ FROZEN",
            theme.fg(Color::Yellow).add_modifier(Modifier::BOLD),
        ),
        Mode::Replay => (
            "▶ REPLAY",
            theme.fg(Color::Cyan).add_modifier(Modifier::BOLD),
        ),
    };
    let l = tl.lost();
    // Events and stacks: every loss counts; the reasons are in the report.
    let lost = match (l.events(), l.stacks()) {
        (0, 0) => "0".to_string(),
        (e, 0) => e.to_string(),
        (e, s) => format!("{e} (+{s} stacks)"),
    };
    let lost_style = if l.events() + l.stacks() > 0 {
        theme.alert()
    } else {
        Style::default()
    };
    let at = app
        .cursor
        .and_then(|c| tl.store().ts(c))
        .map(|t| rel(t, start))
        .unwrap_or_else(|| "-".into());
    let mut spans = vec![
        Span::styled(
            " tm-tui ",
            Style::default().add_modifier(Modifier::REVERSED),
        ),
        Span::raw(" "),
        Span::styled(mode, mode_style),
        Span::styled(
            format!("  at {at}"),
            Style::default().add_modifier(Modifier::BOLD),
        ),
        Span::raw(format!(
            "  {} ev{}",
            tl.store().end(),
            // The target's rate; a file's reading speed is not one.
            if app.mode == Mode::Live && app.rate > 0.0 && app.loading.is_none() {
                format!(" ({:.0}/s)", app.rate)
            } else {
                String::new()
            }
        )),
        Span::styled(format!("  lost {lost}"), lost_style),
        Span::raw(match tl.processes().len() {
            1 => String::new(),
            n => format!("  {n} procs"),
        }),
        watch_span(app, theme),
        lag_span(app, theme),
        cost_span(app),
        Span::raw(if tl.meta().families.has(crate::event::Family::Alloc) {
            format!(
                "  heap {} {} ({})",
                // Frozen while the target runs on: the heap is still now's.
                if app.loading.is_some() {
                    "as read".to_string()
                } else if app.mode == Mode::Live || (app.mode == Mode::Frozen && !app.ended) {
                    "now".to_string()
                } else if app.read_stopped {
                    // `open --at`: the read stopped past the moment.
                    let last = tl
                        .store()
                        .end()
                        .checked_sub(1)
                        .and_then(|i| tl.store().ts(i));
                    format!(
                        "where the read stopped ({})",
                        crate::model::present::rel(
                            last.unwrap_or(tl.meta().start_mono_ns),
                            tl.meta().start_mono_ns
                        )
                    )
                } else {
                    "at end".to_string()
                },
                bytes(tl.heap().live_bytes()),
                tl.heap().live_blocks()
            )
        } else {
            "  heap not traced".to_string()
        }),
    ];
    // The target last, whole or not at all.
    let used: usize = spans.iter().map(|s| s.content.chars().count()).sum();
    for target in [
        format!(
            "  pid {} {}",
            tl.meta().pid,
            short_command(&tl.meta().command)
        ),
        format!("  pid {}", tl.meta().pid),
    ] {
        if used + target.chars().count() <= area.width as usize {
            spans.push(Span::raw(target));
            break;
        }
    }
    if tl.store().dropped > 0 {
        spans.push(Span::raw(format!(
            "  ({} oldest dropped)",
            tl.store().dropped
        )));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

const LEVELS: [char; 9] = [' ', '▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

fn render_bar(app: &App, frame: &mut Frame, bar: Rect, axis: Rect, theme: Theme) {
    let Some((t0, t1)) = app.span() else {
        frame.render_widget(Paragraph::new(" waiting for the first event…"), bar);
        return;
    };
    let w = bar.width as usize;
    let hist = app.tl.store().histogram(t0, t1, w);
    let max = hist.iter().copied().max().unwrap_or(0).max(1);
    // Log scale: a burst must not flatten everything else.
    let level = |n: u64| {
        if n == 0 {
            0
        } else {
            let f = ((n as f64).ln_1p() / (max as f64).ln_1p() * 8.0).ceil() as usize;
            f.clamp(1, 8)
        }
    };
    let col = |t: u64| -> Option<usize> {
        if t < t0 || t > t1 || w == 0 {
            return None;
        }
        let span = (t1 - t0).max(1) as u128;
        Some((((t - t0) as u128 * w as u128 / (span + 1)) as usize).min(w - 1))
    };
    let cursor_col = app.cursor.and_then(|c| app.tl.store().ts(c)).and_then(col);
    let crash_col = app
        .tl
        .crash()
        .and_then(|c| app.tl.store().ts(c))
        .and_then(col);
    // Each finding of the watchpoints, marked as the crash is.
    let finding_cols: Vec<usize> = app
        .findings_seen()
        .iter()
        .filter_map(|&i| app.tl.store().ts(i).and_then(col))
        .collect();
    // Where events were lost: at the last event before each loss report.
    let held = app.tl.store().held();
    let loss_cols: Vec<usize> = app
        .tl
        .loss_marks()
        .iter()
        .filter_map(|(at, _)| {
            let i = at
                .saturating_sub(1)
                .clamp(held.start, held.end.saturating_sub(1));
            app.tl.store().ts(i).and_then(col)
        })
        .collect();
    let spans: Vec<Span> = hist
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let ch = LEVELS[level(*n)].to_string();
            if Some(i) == cursor_col {
                Span::styled(ch, Style::default().add_modifier(Modifier::REVERSED))
            } else if Some(i) == crash_col {
                Span::styled(ch, theme.alert())
            } else if finding_cols.contains(&i) {
                Span::styled("!".to_string(), theme.alert())
            } else {
                Span::styled(ch, theme.fg(Color::Cyan))
            }
        })
        .collect();
    frame.render_widget(Paragraph::new(Line::from(spans)), bar);

    let start = app.tl.meta().start_mono_ns;
    let mut axis_chars: Vec<char> = vec![' '; w];
    let left = rel(t0, start);
    let right = rel(t1, start);
    let zoom = if app.zoom.is_some() { " zoomed" } else { "" };
    let left = format!("{left}{zoom}");
    // A label is drawn only where no marker falls: a marker inside a
    // label would turn `+0.187` into `+0.1▲7`.
    let markers: Vec<usize> = cursor_col
        .into_iter()
        .chain(crash_col)
        .chain(loss_cols.iter().copied())
        .collect();
    let free = |from: usize, len: usize| !markers.iter().any(|m| (from..from + len).contains(m));
    let ll = left.chars().count();
    let rl = right.chars().count();
    if ll <= w && free(0, ll) {
        for (i, ch) in left.chars().enumerate() {
            axis_chars[i] = ch;
        }
    }
    if w > rl + ll + 1 && free(w - rl, rl) {
        for (i, ch) in right.chars().enumerate() {
            axis_chars[w - rl + i] = ch;
        }
    }
    let mut spans: Vec<Span> = Vec::new();
    for (i, ch) in axis_chars.into_iter().enumerate() {
        if Some(i) == cursor_col {
            spans.push(Span::styled(
                "▲",
                Style::default().add_modifier(Modifier::BOLD),
            ));
        } else if Some(i) == crash_col {
            spans.push(Span::styled("X", theme.alert()));
        } else if loss_cols.contains(&i) {
            spans.push(Span::styled("!", theme.alert()));
        } else {
            spans.push(Span::raw(ch.to_string()));
        }
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), axis);
}

fn pane_block(title: String, focused: bool) -> Block<'static> {
    if focused {
        Block::bordered()
            .border_type(ratatui::widgets::BorderType::Thick)
            .title(format!("▶{title}"))
            .border_style(Style::default().add_modifier(Modifier::BOLD))
            .title_style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED))
    } else {
        Block::bordered().title(title)
    }
}

/// The text of a probe or syscall row, from the address column to the
/// edge (those rows have no address or size): what happened, how a call
/// ended when it did not return, and where the program made it.
fn own_row_line(app: &App, i: Idx, what: String, width: usize, theme: Theme) -> Line<'static> {
    let tl = &app.tl;
    let mut style = Style::default();
    let mut note = String::new();
    match tl.store().kind(i) {
        Some(Kind::Return) => {
            let err = tl
                .span_of(i)
                .and_then(|s| Some((tl.probe(s.probe)?, s.ret?)))
                .is_some_and(|(p, r)| p.is_error(r));
            if err {
                style = theme.alert();
            }
        }
        Some(Kind::Call) => {
            note = match tl.spans().of_call(i) {
                Some(s) if s.outcome == Outcome::Abandoned => {
                    "  ✗ no return (longjmp/exception)".into()
                }
                Some(s)
                    if matches!(s.outcome, Outcome::ThreadExit | Outcome::Open)
                        && crashed_inside(app, s) =>
                {
                    "  ✗ crashed inside".into()
                }
                Some(s) if s.outcome == Outcome::ThreadExit => {
                    "  ✗ no return (its thread ended)".into()
                }
                _ => String::new(),
            };
        }
        _ => {}
    }
    let site = match tl.store().kind(i) {
        Some(Kind::Return | Kind::Sched) => None,
        _ => tl.site(tl.store().stack(i)),
    };
    // What happened first; the site gives way before it does, compacted
    // (`main:133`) rather than cut.
    let n = what.chars().count() + note.chars().count();
    let room = width.saturating_sub(n + 2);
    let site = match site {
        Some(s) => {
            let func = s.split(" (").next().unwrap_or(&s).to_string();
            let fitted = fit(&s, room);
            if !fitted.ends_with('…') {
                format!("  {fitted}")
            } else if func.chars().count() <= room {
                format!("  {func}")
            } else {
                String::new()
            }
        }
        None => String::new(),
    };
    let what = fit_end(&what, width);
    let note = fit_end(&note, width.saturating_sub(what.chars().count()));
    Line::from(vec![
        Span::styled(what, style),
        Span::styled(note, theme.fg(Color::Yellow)),
        Span::styled(site, theme.fg(Color::DarkGray)),
    ])
}

/// The event list's fixed columns: marker, time, tid, kind, address,
/// size (then "where" takes the rest), one column apart.
const EVENT_COLS: [u16; 6] = [1, 11, 7, 7, 14, 8];

fn render_events(app: &App, frame: &mut Frame, area: Rect, theme: Theme) {
    let rows_n = area.height.saturating_sub(3) as usize;
    // Borders, the fixed columns and the gaps between the 7 columns.
    // Borders, the fixed columns and a gap after each.
    let fixed: u16 = EVENT_COLS.iter().map(|w| w + 1).sum();
    let where_w = area.width.saturating_sub(2 + fixed) as usize;
    // Probe and syscall rows are written over the address, size and where
    // columns, from here (the table lays those out at fixed widths).
    let own_x = area.x + 1 + EVENT_COLS[..4].iter().map(|w| w + 1).sum::<u16>();
    let own_w = (area.x + area.width).saturating_sub(own_x + 1) as usize;
    let mut overlays: Vec<(usize, Line<'static>, Style)> = Vec::new();
    app.page.set(rows_n.max(1));
    let start = app.tl.meta().start_mono_ns;
    let ids = app.visible_events(rows_n);
    let rows: Vec<Row> = ids
        .iter()
        .enumerate()
        .map(|(row, &i)| {
            let kind = app.tl.store().kind(i).unwrap_or(Kind::Exit);
            let label = present::label(&app.tl, i, kind);
            let present::Cols {
                addr,
                size,
                what,
                nest,
                own,
                ..
            } = app
                .tl
                .store()
                .get(i)
                .map(|e| present::columns(&app.tl, i, &e))
                .unwrap_or_default();
            let site = if own {
                String::new()
            } else {
                fit(
                    &app.tl.site(app.tl.store().stack(i)).unwrap_or(what.clone()),
                    where_w,
                )
            };
            let ts = app
                .tl
                .store()
                .ts(i)
                .map(|t| rel(t, start))
                .unwrap_or_default();
            let hit = app
                .filter
                .as_ref()
                .is_some_and(|(_, f)| app.tl.store().matches(i, f));
            let mark = match (Some(i) == app.cursor, hit) {
                (true, _) => "▶",
                (false, true) => "•",
                _ => " ",
            };
            let mut r = Row::new(vec![
                Cell::from(mark),
                Cell::from(ts),
                Cell::from({
                    // A child's thread names its process too.
                    let s = app.tl.store();
                    match (s.tid(i), s.pid(i)) {
                        (Some(t), Some(p)) if p != app.tl.meta().pid && p != t => {
                            format!("{p}/{t}")
                        }
                        (Some(t), _) => t.to_string(),
                        _ => String::new(),
                    }
                }),
                Cell::from(Span::styled(label, theme.kind(kind))),
                Cell::from(addr),
                Cell::from(size),
                Cell::from(site),
            ]);
            let row_style = if Some(i) == app.cursor {
                Style::default().add_modifier(Modifier::REVERSED)
            } else if hit {
                Style::default().add_modifier(Modifier::BOLD)
            } else {
                Style::default()
            };
            r = r.style(row_style);
            if own {
                let what = format!("{nest}{what}");
                overlays.push((row, own_row_line(app, i, what, own_w, theme), row_style));
            }
            r
        })
        .collect();
    let title = format!(
        " Events {} of {}{} ",
        app.cursor.map_or(0, |c| c + 1),
        app.tl.store().end(),
        app.filter
            .as_ref()
            .map(|(s, _)| format!(
                "  filter: {s} ({}, n/N)",
                app.matches_text().unwrap_or_else(|| "• matches".into())
            ))
            .unwrap_or_default()
    );
    let widths = EVENT_COLS
        .iter()
        .map(|w| Constraint::Length(*w))
        .chain([Constraint::Min(10)]);
    let table = Table::new(rows, widths)
        .column_spacing(1)
        .header(
            Row::new(["", "time", "tid", "kind", "address", "size", "where"])
                .style(Style::default().add_modifier(Modifier::UNDERLINED)),
        )
        .block(pane_block(title, app.pane == Pane::Events));
    frame.render_widget(table, area);
    // Below the borders, the header and the fixed columns' minimum there
    // is no room: the where column alone shows them (cut).
    let buf = frame.buffer_mut();
    for (row, line, row_style) in overlays {
        let y = area.y + 2 + row as u16;
        if y + 1 >= area.y + area.height || own_w < 10 {
            continue;
        }
        let line = line.patch_style(row_style);
        buf.set_line(own_x, y, &line, own_w as u16);
    }
}

fn render_heap(app: &App, frame: &mut Frame, area: Rect, theme: Theme) {
    let now = app.cursor.and_then(|c| app.tl.store().ts(c)).unwrap_or(0);
    let (count, total) = app.heap_totals();
    let rows_n = area.height.saturating_sub(3) as usize;
    app.heap_page.set(rows_n);
    let first = app.heap_sel.saturating_sub(rows_n.saturating_sub(1));
    let focused = app.pane == Pane::Heap;
    let site_w = (area.width as usize).saturating_sub(
        2 + match app.heap_view {
            HeapView::Blocks => 14 + 7 + 7 + 3,
            HeapView::Sites => 6 + 6 + 6 + 8 + 4,
        },
    );
    let sel_style = |i: usize| {
        if focused && i == app.heap_sel {
            Style::default().add_modifier(Modifier::REVERSED)
        } else {
            Style::default()
        }
    };
    if !app.tl.meta().families.has(crate::event::Family::Alloc) {
        let text = "The heap is not traced in this recording: --trace without alloc.";
        frame.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: true })
                .block(Block::bordered().title(" Heap ")),
            area,
        );
        return;
    }
    // Before a bounded recording's window only the blocks carried into
    // it are known.
    let partial = match (
        app.tl.window_start(),
        app.cursor.and_then(|c| app.tl.store().ts(c)),
    ) {
        (Some(w), Some(t)) if t < w => " (before the window: partial)",
        _ => "",
    };
    let title = format!(
        " Heap here{partial}: {} in {}{}  [g] {}  [s] by {} ",
        bytes(total),
        plural(count, "block"),
        // Rows past the summaries' lists: every live block was read.
        if app.heap_view == HeapView::Blocks && app.rows_full() {
            ", all read"
        } else {
            ""
        },
        match app.heap_view {
            HeapView::Blocks => "blocks",
            HeapView::Sites => "sites",
        },
        match app.heap_view {
            HeapView::Blocks => app.block_order().name(),
            HeapView::Sites => app.sort.name(),
        },
    );
    let table = match app.heap_view {
        HeapView::Blocks => {
            let rows: Vec<Row> = app
                .blocks()
                .iter()
                .enumerate()
                .skip(first)
                .take(rows_n)
                .map(|(i, b)| {
                    Row::new(vec![
                        Cell::from(format!("{:#x}", crate::model::untag(b.ptr))),
                        Cell::from(b.size.to_string()),
                        Cell::from(crate::model::present::age(now.saturating_sub(b.ts))),
                        Cell::from(fit(
                            &{
                                let site = app.tl.site(b.stack).unwrap_or_else(|| "?".into());
                                // A child's block names its process.
                                match app
                                    .tl
                                    .processes()
                                    .get((b.ptr >> crate::model::TAG_SHIFT) as usize)
                                {
                                    Some(p) if b.ptr >> crate::model::TAG_SHIFT != 0 => {
                                        format!("[pid {}] {site}", p.pid)
                                    }
                                    _ => site,
                                }
                            },
                            site_w,
                        )),
                    ])
                    .style(sel_style(i))
                })
                .collect();
            let aw = app
                .blocks()
                .iter()
                .skip(first)
                .take(rows_n)
                .map(|b| format!("{:#x}", crate::model::untag(b.ptr)).len())
                .max()
                .unwrap_or(7)
                .max(7) as u16;
            Table::new(
                rows,
                [
                    Constraint::Length(aw),
                    Constraint::Length(7),
                    Constraint::Length(7),
                    Constraint::Min(10),
                ],
            )
            .header(
                Row::new(["address", "size", "age", "allocated at"])
                    .style(Style::default().add_modifier(Modifier::UNDERLINED)),
            )
        }
        HeapView::Sites => {
            let rows: Vec<Row> = app
                .sites()
                .iter()
                .enumerate()
                .skip(first)
                .take(rows_n)
                .map(|(i, s)| {
                    let flag = s.flag();
                    let site = fit(
                        &app.tl.site(s.stack).unwrap_or_else(|| "?".into()),
                        site_w.saturating_sub(flag.chars().count()),
                    );
                    let style = if !flag.is_empty() {
                        theme.alert()
                    } else {
                        Style::default()
                    };
                    Row::new(vec![
                        Cell::from(short_bytes(s.bytes)),
                        Cell::from(s.blocks.to_string()),
                        Cell::from(crate::model::present::age(now.saturating_sub(s.oldest_ts))),
                        Cell::from(growth(s.growth)),
                        Cell::from(Span::styled(format!("{flag}{site}"), style)),
                    ])
                    .style(sel_style(i))
                })
                .collect();
            Table::new(
                rows,
                // 40 columns (an 80-column terminal's heap pane) hold
                // them all with a 10-column site.
                [
                    Constraint::Length(6),
                    Constraint::Length(6),
                    Constraint::Length(6),
                    Constraint::Length(8),
                    Constraint::Min(10),
                ],
            )
            .header(
                Row::new(["bytes", "blocks", "oldest", "growth", "allocation site"])
                    .style(Style::default().add_modifier(Modifier::UNDERLINED)),
            )
        }
    };
    frame.render_widget(table.block(pane_block(title, focused)), area);
}

fn diagnosis_lines(app: &App, d: &Diagnosis, theme: Theme) -> Vec<Line<'static>> {
    let mut lines = vec![
        Line::from(Span::styled(d.kind.name().to_uppercase(), theme.alert())),
        Line::from(d.summary.clone()),
    ];
    // The probed calls open at the crash (or the watched access).
    if let Some(c) = app.cursor {
        lines.extend(call_lines(app, c, theme));
    }
    let mp = module_path(app.tl.modules());
    let start = app.tl.meta().start_mono_ns;
    let on_watch =
        app.cursor.and_then(|c| app.tl.store().kind(c)) == Some(crate::event::Kind::Watch);
    let access = if d.extra.reraised.is_some() {
        "first delivered (caught by the handler)"
    } else if on_watch {
        "access"
    } else {
        "access / crash"
    };
    for (label, s) in [
        (access, &d.access),
        ("freed", &d.free),
        ("allocated", &d.alloc),
    ] {
        let Some(s) = s else { continue };
        lines.push(Line::from(Span::styled(
            format!("{label} by tid {} at {}:", s.tid, rel(s.ts, start)),
            Style::default().add_modifier(Modifier::BOLD),
        )));
        match app.tl.stack(s.stack) {
            Some(st) => {
                // Frames below main (libc's start-up) say nothing here.
                let n = st
                    .frames
                    .iter()
                    .position(|f| f.func.as_deref() == Some("main"))
                    .map_or(st.frames.len(), |m| m + 1);
                lines.extend(
                    stack_lines(st, &mp)
                        .into_iter()
                        .take(n)
                        .map(|l| Line::from(format!("  {l}"))),
                )
            }
            None => lines.push(Line::from("  (no stack)")),
        }
    }
    lines.extend(d.notes.iter().map(|n| Line::from(format!("note: {n}"))));
    lines
}

/// The process crashed on the call's thread while the call was open.
fn crashed_inside(app: &App, s: &crate::model::spans::Span) -> bool {
    let tl = &app.tl;
    tl.crash().is_some_and(|c| {
        tl.store().tid(c) == Some(s.tid) && c > s.begin && s.end.is_none_or(|e| c <= e)
    })
}

/// The probed calls the event is inside, and for a CALL or RET row how
/// that call ended.
fn call_lines(app: &App, c: Idx, theme: Theme) -> Vec<Line<'static>> {
    let tl = &app.tl;
    let mut lines = Vec::new();
    let path = tl.call_path(c);
    if !path.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("inside: ", Style::default().add_modifier(Modifier::BOLD)),
            Span::raw(present::call_path_text(tl, &path)),
        ]));
    }
    let Some(s) = tl.span_of(c) else {
        return lines;
    };
    let start = tl.meta().start_mono_ns;
    let at = |i: Option<Idx>| {
        i.and_then(|i| tl.store().ts(i))
            .map(|t| rel(t, start))
            .unwrap_or_default()
    };
    let name = present::probe_name(tl, s.probe);
    let (text, style) = match (s.outcome, s.ret, s.duration_ns()) {
        (Outcome::Returned, Some(r), Some(d)) => {
            let err = tl.probe(s.probe).is_some_and(|p| p.is_error(r));
            (
                format!(
                    "{name} returned {} after {} ({} → {}; % jumps)",
                    present::ret_text(tl, s.probe, r),
                    fmt_ns(d),
                    at(Some(s.begin)),
                    at(s.end),
                ),
                if err { theme.alert() } else { Style::default() },
            )
        }
        (Outcome::Abandoned, ..) => (
            format!(
                "{name}: no return (unwound by longjmp or an exception; gone by {})",
                at(s.end)
            ),
            theme.fg(Color::Yellow),
        ),
        (Outcome::EntryOnly, ..) => (
            format!("{name}: entry-only probe (--probe-entry), its return is not watched"),
            Style::default(),
        ),
        (Outcome::ThreadExit | Outcome::Open, ..) if crashed_inside(app, s) => {
            let sig = tl
                .crash()
                .and_then(|i| tl.store().get(i))
                .map(|e| match e.kind {
                    EventKind::Signal(sig) => signal_name(sig.signo).to_string(),
                    _ => "the crash".to_string(),
                })
                .unwrap_or_default();
            (
                format!(
                    "{name}: did not return, the process crashed inside it ({sig} at {})",
                    at(tl.crash())
                ),
                theme.alert(),
            )
        }
        (Outcome::ThreadExit, ..) => (
            format!("{name}: did not return, its thread ended at {}", at(s.end)),
            theme.fg(Color::Yellow),
        ),
        _ if app.mode == crate::ui::app::Mode::Live => {
            (format!("{name}: not returned yet"), Style::default())
        }
        _ => (
            format!("{name}: had not returned when the recording ended"),
            Style::default(),
        ),
    };
    lines.push(Line::from(Span::styled(text, style)));
    lines
}

fn render_stack(app: &App, frame: &mut Frame, area: Rect, theme: Theme) {
    let focused = app.pane == Pane::Stack;
    let (title, lines) = match (app.diagnosis(), app.cursor) {
        (Some(d), _) => (" Diagnosis ".to_string(), diagnosis_lines(app, d, theme)),
        (None, Some(c)) => {
            let mut lines = Vec::new();
            if let Some(op) = app.tl.store().heap_op(c) {
                let ptr = match op {
                    crate::model::store::HeapOp::Alloc { ptr, .. }
                    | crate::model::store::HeapOp::Free { ptr }
                    | crate::model::store::HeapOp::Realloc { ptr, .. } => ptr,
                };
                if ptr != 0 {
                    let a = app.tl.around(ptr, c);
                    lines.push(Line::from(match (&a.life, a.double_free) {
                        (Some(_), true) => Span::styled(
                            format!("{:#x}: DOUBLE FREE of an already freed block", crate::model::untag(ptr)),
                            theme.alert(),
                        ),
                        (Some(_), false) => Span::raw(match (a.nth, a.of) {
                            (Some(k), Some(n)) => format!(
                                "{:#x}: block #{k} of {n} that lived here  (a/f: its alloc/free)",
                                crate::model::untag(ptr)
                            ),
                            _ => format!(
                                "{:#x}: one of the many blocks that lived here  (a/f: its alloc/free)",
                                crate::model::untag(ptr)
                            ),
                        }),
                        (None, _) => Span::raw(format!("{:#x}: no recorded block here", crate::model::untag(ptr))),
                    }));
                }
            }
            lines.extend(call_lines(app, c, theme));
            let mp = module_path(app.tl.modules());
            match app.tl.stack(app.tl.store().stack(c)) {
                Some(st) => lines.extend(stack_lines(st, &mp).into_iter().map(Line::from)),
                None => lines.push(Line::from("(no stack recorded for this event)")),
            }
            (" Stack ".to_string(), lines)
        }
        (None, None) => (" Stack ".to_string(), Vec::new()),
    };
    let para = Paragraph::new(lines).wrap(Wrap { trim: false });
    // Say when there is more than the pane shows (↑/↓ scroll it).
    let inner = area.height.saturating_sub(2) as usize;
    let total = para.line_count(area.width.saturating_sub(2));
    let shown = app.stack_scroll as usize;
    let below = total.saturating_sub(shown + inner);
    app.stack_max
        .set(u16::try_from(total.saturating_sub(inner)).unwrap_or(u16::MAX));
    let title = match (shown > 0, below > 0) {
        (false, false) => title,
        (true, false) => format!("{title}↑ "),
        (false, true) => format!("{title}↓ {below} more "),
        (true, true) => format!("{title}↑ ↓ {below} more "),
    };
    frame.render_widget(
        para.scroll((app.stack_scroll, 0))
            .block(pane_block(title, focused)),
        area,
    );
}

fn render_hints(app: &App, frame: &mut Frame, area: Rect, theme: Theme) {
    let line = if let Some(buf) = &app.input {
        let tail = match &app.message {
            // The filter did not parse: say why, next to what was typed.
            Some(m) => Span::styled(format!("{buf}█   {m}"), theme.fg(Color::Yellow)),
            None => Span::raw(format!(
                "{buf}█   kind=free,call,io… tid=N pid=N func=NAME call=NAME addr=0x…  Enter apply  Esc cancel"
            )),
        };
        Line::from(vec![
            Span::styled(" / ", Style::default().add_modifier(Modifier::REVERSED)),
            tail,
        ])
    } else if let Some(m) = &app.message {
        Line::from(Span::styled(format!(" {m}"), theme.fg(Color::Yellow)))
    } else if !app.tl.meta().families.has(crate::event::Family::Alloc) {
        Line::from(format!(
            " ? help  ←/→ event  [/] ±{}  c crash  / filter  % call↔return  Tab pane  q quit",
            fmt_ns(app.step_ns())
        ))
    } else {
        // g switches the heap pane: it says to what.
        let g = match app.heap_view {
            HeapView::Blocks => "g sites",
            HeapView::Sites => "g blocks",
        };
        Line::from(format!(
            " ? help  ←/→ event  [/] ±{}  c crash  / filter  a/f alloc/free  Tab pane  {g}  q quit",
            fmt_ns(app.step_ns())
        ))
    };
    frame.render_widget(Paragraph::new(line), area);
}

const HELP: &[(&str, &str)] = &[
    ("← / →", "previous / next event"),
    ("Shift+←/→ PgUp PgDn", "a screen of events"),
    ("[ / ]", "a time step back / on (bar / 10)"),
    ("Home / End", "first / last event (End: follow)"),
    ("c", "the crash and its diagnosis"),
    ("w / W", "next / previous watchpoint finding"),
    ("space", "freeze / follow (live)"),
    ("/", "filter kind pid tid func call addr"),
    ("", "kinds: alloc free call io net lock"),
    ("n / N", "next / previous match"),
    ("a / f", "allocation / free of the block"),
    ("%", "from a CALL to its RET and back"),
    ("Tab", "next pane: events, heap, stack"),
    ("↑ / ↓ (stack pane)", "scroll the stack"),
    ("↑ / ↓, Enter (heap)", "pick a row; go to its allocation"),
    ("g / s", "heap by block or site / sort"),
    ("+ / -", "zoom the bar around the cursor"),
    ("click on the bar", "go to that moment"),
    ("L", "leak kinds now (attached: pauses it)"),
    ("Ctrl-L", "repaint the screen"),
    ("q, Ctrl-C", "quit"),
];

fn render_help(frame: &mut Frame, area: Rect) {
    let w = 60.min(area.width);
    let h = (HELP.len() as u16 + 2).min(area.height);
    let r = Rect {
        x: area.x + (area.width - w) / 2,
        y: area.y + (area.height - h) / 2,
        width: w,
        height: h,
    };
    let lines: Vec<Line> = HELP
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:>20}  "),
                    Style::default().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*v),
            ])
        })
        .collect();
    frame.render_widget(Clear, r);
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys (any key closes) ")),
        r,
    );
}

/// The column of the timeline bar → the time it stands for.
pub fn bar_time(app: &App, col: u16, width: u16) -> Option<u64> {
    let (t0, t1) = app.span()?;
    let w = u128::from(width.max(1));
    Some(t0 + ((u128::from(t1 - t0) * u128::from(col) + w / 2) / w) as u64)
}
