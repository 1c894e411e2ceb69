//! The terminal UI: one loop over key/mouse input, a live feed's
//! timeline updates (when live: see [`Feed`]) and a tick; it drains what arrived, then draws
//! once. Rendering never waits on the recording. The loop is generic over
//! the backend so tests drive it on `TestBackend`.
//!
//! - `app`: state and keys; `view`: rendering.

pub mod app;
pub mod view;

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use crossbeam_channel::{bounded, select, tick, Receiver};
use crossterm::event::{
    DisableMouseCapture, Event as TermEvent, KeyEvent, KeyEventKind, MouseButton, MouseEventKind,
};
use ratatui::backend::Backend;
use ratatui::Terminal;

use crate::model::Timeline;
use app::{App, Mode};
use view::Theme;

/// What the input thread forwards.
#[derive(Clone, Copy, Debug)]
pub enum Input {
    Key(KeyEvent),
    /// A click or drag at (column, row).
    Click(u16, u16),
    Resize,
}

/// How long the loop waits before redrawing without input (live rate,
/// clock).
const TICK: Duration = Duration::from_millis(100);
/// The shortest time between two frames drawn for ingest alone.
const FRAME: Duration = Duration::from_millis(33);
/// Events counted against the filter between two frames.
pub const COUNT_SLICE: u64 = 400_000;
/// Recorder messages taken per loop turn before drawing (so a flood of
/// events never starves the keyboard).
const DRAIN: usize = 256;

/// Restores the terminal however the UI ends (return, error, panic —
/// ratatui's panic hook covers the last).
pub struct TermGuard;

impl Drop for TermGuard {
    fn drop(&mut self) {
        let _ = crossterm::execute!(std::io::stdout(), DisableMouseCapture);
        ratatui::restore();
    }
}

pub fn input_thread() -> Receiver<Input> {
    let (tx, rx) = bounded(256);
    std::thread::Builder::new()
        .name("tm-input".into())
        .spawn(move || loop {
            let ev = match crossterm::event::read() {
                Ok(e) => e,
                Err(_) => return,
            };
            let msg = match ev {
                TermEvent::Key(k) if k.kind != KeyEventKind::Release => Input::Key(k),
                TermEvent::Mouse(m)
                    if matches!(
                        m.kind,
                        MouseEventKind::Down(MouseButton::Left)
                            | MouseEventKind::Drag(MouseButton::Left)
                    ) =>
                {
                    Input::Click(m.column, m.row)
                }
                TermEvent::Resize(..) => Input::Resize,
                _ => continue,
            };
            if tx.send(msg).is_err() {
                return;
            }
        })
        .ok();
    rx
}

/// Applies one input to the app.
pub fn on_input(app: &mut App, input: Input, width: u16) {
    match input {
        Input::Key(k) => app.on_key(k),
        // Rows 1 and 2 are the timeline bar and its axis.
        Input::Click(col, row) if (1..=2).contains(&row) => {
            if let Some(t) = view::bar_time(app, col, width) {
                app.click_time(t);
            }
        }
        Input::Click(..) | Input::Resize => {}
    }
}

/// How far a live view is behind what the target is doing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lag {
    /// Events recorded but not in the timeline yet (on their way from
    /// the recorder).
    pub queued: u64,
    /// Bytes of records still in the kernel's ring buffer.
    pub ring_bytes: u64,
    /// Now minus the newest event shown, while anything is queued.
    pub behind_ns: u64,
}

/// A live recording as the UI sees it: updates that arrive on a channel
/// and that the feed applies to the timeline. The UI never sees the
/// recorder or the trace file behind them.
pub trait Feed {
    type Update;
    /// How the recording ended.
    type End;
    fn updates(&self) -> &Receiver<Self::Update>;
    /// Applies one update; `Some` when the recording is over.
    fn apply(&mut self, tl: &mut Timeline, u: Self::Update) -> Result<Option<Self::End>>;
    /// The channel closed without an end.
    fn gone(&mut self) -> Self::End;
    /// Called on every tick (nothing arrived for a while); `true` asks the
    /// UI to quit (a SIGINT or SIGTERM from outside).
    fn tick(&mut self) -> bool;
    /// How far `tl` is behind the recording.
    fn lag(&self, tl: &Timeline) -> Lag;
    /// The user asked for a leak scan now; what to tell them at once.
    fn leak_scan(&mut self) -> String {
        "no live target to scan".into()
    }
    /// A notice for the user once something the feed did finished (the
    /// leak scan's result).
    fn take_message(&mut self) -> Option<String> {
        None
    }
    /// A saved recording still being read: how far.
    fn loading(&self) -> Option<app::Loading> {
        None
    }
    /// The recording is over (the target exited, the file was read):
    /// what the UI turns into.
    fn ended(&mut self, app: &mut App) {
        if app.mode == Mode::Live {
            app.mode = Mode::Frozen;
            app.message = Some("the target exited; scrub with ←/→, q quits".into());
        }
    }
}

/// No feed: a test's timeline, all there.
#[cfg(test)]
pub enum Replay {}

#[cfg(test)]
impl Feed for Replay {
    type Update = ();
    type End = ();
    fn updates(&self) -> &Receiver<()> {
        match *self {}
    }
    fn apply(&mut self, _: &mut Timeline, _: ()) -> Result<Option<()>> {
        match *self {}
    }
    fn gone(&mut self) {
        match *self {}
    }
    fn tick(&mut self) -> bool {
        match *self {}
    }
    fn lag(&self, _: &Timeline) -> Lag {
        match *self {}
    }
}

/// The loop: draw, then wait for input, the feed's updates or the tick.
/// Returns when the user quits, with how the live recording ended (if it
/// did).
pub fn run<B: Backend, F: Feed>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    input: &Receiver<Input>,
    mut live: Option<&mut F>,
    theme: Theme,
) -> Result<Option<F::End>> {
    let ticker = tick(TICK);
    let never = crossbeam_channel::never();
    let mut end = None;
    let mut rate_mark = (Instant::now(), app.tl.store().end());
    // Input is drawn at once; ingest and ticks at most once a FRAME, so a
    // flood of events costs no more frames than a quiet recording.
    let (mut dirty, mut urgent) = (true, true);
    let mut last_draw = Instant::now();
    let mut size = terminal
        .size()
        .map_err(|e| anyhow!("cannot size the terminal: {e}"))?;
    while !app.quit {
        if dirty && (urgent || last_draw.elapsed() >= FRAME) {
            // A few ms a frame at most: the UI never waits on a count.
            app.count_matches(COUNT_SLICE);
            let area = terminal
                .draw(|f| view::render(app, f, theme))
                .map_err(|e| anyhow!("cannot draw: {e}"))?
                .area;
            size = ratatui::layout::Size::new(area.width, area.height);
            last_draw = Instant::now();
            (dirty, urgent) = (false, false);
        }
        let rx = match (&live, end.is_some()) {
            (Some(f), false) => f.updates().clone(),
            _ => never.clone(),
        };
        let wait = if dirty {
            FRAME.saturating_sub(last_draw.elapsed())
        } else {
            Duration::from_secs(3600)
        };
        dirty = true;
        select! {
            recv(input) -> i => match i {
                Ok(Input::Key(k))
                    if k.code == crossterm::event::KeyCode::Char('l')
                        && k.modifiers.contains(crossterm::event::KeyModifiers::CONTROL) =>
                {
                    // Ctrl-L: repaint everything (something wrote over us).
                    terminal.clear().map_err(|e| anyhow!("cannot clear: {e}"))?;
                }
                Ok(i) => {
                    on_input(app, i, size.width);
                    if std::mem::take(&mut app.leak_scan) {
                        app.message = Some(match (live.as_mut(), &end) {
                            (Some(f), None) => f.leak_scan(),
                            _ => "the recording is over: nothing left to scan".into(),
                        });
                    }
                    urgent = true;
                }
                Err(_) => app.quit = true,
            },
            recv(rx) -> m => {
                if let Some(feed) = live.as_mut() {
                    match m {
                        Err(_) => end = Some(feed.gone()),
                        Ok(first) => {
                            let mut next = Some(first);
                            let mut n = 0;
                            while let Some(u) = next {
                                if let Some(r) = feed.apply(&mut app.tl, u)? {
                                    end = Some(r);
                                    break;
                                }
                                n += 1;
                                next = if n < DRAIN { rx.try_recv().ok() } else { None };
                            }
                        }
                    }
                    if let Some(m) = feed.take_message() {
                        app.message = Some(m);
                    }
                    app.after_ingest();
                    app.lag = if end.is_some() { Lag::default() } else { feed.lag(&app.tl) };
                    app.loading = feed.loading();
                    if end.is_some() {
                        app.ended = true;
                        app.loading = None;
                        feed.ended(app);
                    }
                }
            },
            recv(ticker) -> _ => {

                let (t, n) = rate_mark;
                let dt = t.elapsed().as_secs_f64();
                if dt >= 1.0 {
                    let now_n = app.tl.store().end();
                    app.rate = (now_n - n) as f64 / dt;
                    rate_mark = (Instant::now(), now_n);
                }
                // SIGINT/SIGTERM from outside (Ctrl-C inside is a key).
                if live.as_mut().is_some_and(|f| f.tick()) {
                    app.quit = true;
                }
                // What the tick found (the trace could not be written on).
                if let Some(m) = live.as_mut().and_then(|f| f.take_message()) {
                    app.message = Some(m);
                }
                if let (Some(f), None) = (live.as_ref(), &end) {
                    app.lag = f.lag(&app.tl);
                    app.loading = f.loading();
                }
            },
            default(wait) => {},
        }
        app.refresh();
    }
    Ok(end)
}

#[cfg(test)]
mod tests;
