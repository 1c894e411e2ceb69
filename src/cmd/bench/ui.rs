//! `tm-tui bench ui`: the UI over a synthetic recording on `TestBackend` —
//! frame time and keypress-to-screen time against the budget
//! (a frame ≤ 10 ms, a key to its screen ≤ 30 ms, with 10 M events).

use std::time::{Duration, Instant};

use anyhow::{anyhow, Result};
use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::cmd::bench::model::{add_stacks, fill, ms, stats, verdict, Rng, Synth};
use crate::event::Meta;
use crate::model::Timeline;
use crate::ui::app::{App, HeapView, Mode};
use crate::ui::view::{self, Theme};

pub fn run(events: u64, frames: usize, live: u64) -> Result<i32> {
    let mut tl = Timeline::with_budget(Meta::default(), usize::MAX);
    add_stacks(&mut tl);
    fill(&mut tl, &mut Synth::with_live(live), events);
    let t0 = Instant::now();
    let mut app = App::new(tl, Mode::Replay);
    let open = t0.elapsed();
    let theme = Theme { color: true };
    let mut rng = Rng(7);
    let mut results = Vec::new();
    for (w, h) in [(80u16, 24u16), (200, 60)] {
        let mut term =
            Terminal::new(TestBackend::new(w, h)).map_err(|e| anyhow!("test backend: {e}"))?;
        let mut draw = |app: &App| -> Result<Duration> {
            let t0 = Instant::now();
            term.draw(|f| view::render(app, f, theme))
                .map_err(|e| anyhow!("draw: {e}"))?;
            Ok(t0.elapsed())
        };
        // A frame: the screen redrawn with nothing changed.
        let mut frame_t = Vec::with_capacity(frames);
        // A key: the key handled (heap recomputed) and the screen drawn.
        let mut key_t = Vec::with_capacity(frames);
        let keys = [
            KeyCode::Left,
            KeyCode::Right,
            KeyCode::PageUp,
            KeyCode::Char('['),
            KeyCode::Char(']'),
            KeyCode::Char('g'),
            KeyCode::Char('+'),
            KeyCode::Char('-'),
            KeyCode::Char('s'),
        ];
        for i in 0..frames {
            // Jump somewhere random first (a click on the bar).
            if i % 8 == 0 {
                let (a, b) = app.tl.span().unwrap_or((0, 0));
                let t = a + rng.below((b - a).max(1));
                let t0 = Instant::now();
                app.click_time(t);
                let d = t0.elapsed() + draw(&app)?;
                key_t.push(d);
            }
            frame_t.push(draw(&app)?);
            let k = keys[rng.below(keys.len() as u64) as usize];
            let t0 = Instant::now();
            app.on_key(KeyEvent::new(k, KeyModifiers::NONE));
            let d = t0.elapsed() + draw(&app)?;
            key_t.push(d);
        }
        app.heap_view = HeapView::Blocks;
        results.push((w, h, stats(frame_t), stats(key_t)));
    }
    // The filter's match count, a slice of events between two frames.
    app.filter = app
        .tl
        .parse_filter("kind=free")
        .ok()
        .map(|f| ("kind=free".to_string(), f));
    app.matches = None;
    let mut slices = Vec::new();
    let t_count = Instant::now();
    while app
        .matches
        .is_none_or(|(_, next, _)| next < app.tl.store().end())
    {
        let t0 = Instant::now();
        app.count_matches(crate::ui::COUNT_SLICE);
        slices.push(t0.elapsed());
    }
    let counted = t_count.elapsed();
    println!(
        "UI on {events} synthetic events, {live} long-lived blocks held (TestBackend); opening the recording took {}",
        ms(open)
    );
    for (w, h, (f50, f99, fmax), (k50, k99, kmax)) in results {
        println!(
            "{w}x{h}: frame median {} p99 {} max {} (target <= 10 ms) {}  |  key to screen median {} p99 {} max {} (target <= 30 ms) {}",
            ms(f50),
            ms(f99),
            ms(fmax),
            verdict(f99 <= Duration::from_millis(10)),
            ms(k50),
            ms(k99),
            ms(kmax),
            verdict(k99 <= Duration::from_millis(30)),
        );
    }
    let (s50, s99, smax) = stats(slices);
    println!(
        "filter match count ({}): {} in {} slices of {} events, slice median {} p99 {} max {} (one per frame)",
        app.matches_text().unwrap_or_default(),
        ms(counted),
        (events / crate::ui::COUNT_SLICE) + 1,
        crate::ui::COUNT_SLICE,
        ms(s50),
        ms(s99),
        ms(smax)
    );
    Ok(0)
}
