//! The UI subcommands: `tm-tui PID`, `tm-tui -- CMD` and `demo` record
//! and show live; `open` shows a saved recording.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cmd::record::{self, Target};
use crate::cmd::require_tty;
use crate::recorder::EndReason;
use crate::trace::TraceWriter;
use crate::ui::app::{App, Mode};
use crate::ui::view::Theme;
use crate::ui::{input_thread, run, TermGuard};
use crossterm::event::EnableMouseCapture;

/// `tm-tui open FILE`: the UI over a saved recording.
pub fn open(file: &std::path::Path, memory: usize) -> Result<()> {
    let t = crate::trace::read_trace(file)?;
    // The file first: a bad file is an error even without a terminal.
    require_tty()?;
    let tl = crate::cmd::timeline_of(&t, memory);
    let mut app = App::new(tl, Mode::Replay);
    if let Some(d) = &t.damage {
        app.message = Some(format!(
            "{} is damaged from byte {}: {} (showing what was read)",
            file.display(),
            d.offset,
            d.reason
        ));
    }
    let mut terminal = ratatui::try_init().context("cannot open the terminal")?;
    let _guard = TermGuard;
    let _ = crossterm::execute!(std::io::stdout(), EnableMouseCapture);
    let input = input_thread();
    run(&mut terminal, &mut app, &input, None, Theme::from_env())?;
    Ok(())
}

pub struct LiveArgs {
    pub target: Target,
    pub output: Option<PathBuf>,
    pub ringbuf_bytes: u64,
    pub memory: usize,
    pub tracing: record::Tracing,
}

/// `tm-tui PID`, `tm-tui -- CMD`, `tm-tui demo NAME`: record and show.
/// Returns the launched target's status (as `record` does).
pub fn live(args: LiveArgs) -> Result<i32> {
    record::install_sigint();
    // A launched program's output would garble the UI and its input would
    // steal our keys: it gets /dev/null and a log file instead.
    let (stdio, log) = match &args.target {
        Target::Command(_) => {
            let log = std::env::temp_dir().join(format!("tm-tui-{}.out", std::process::id()));
            let stdio = crate::recorder::launch::Stdio {
                stdin: std::fs::File::open("/dev/null").context("cannot open /dev/null")?,
                output: std::fs::File::create(&log)
                    .with_context(|| format!("cannot create {}", log.display()))?,
            };
            (Some(stdio), Some(log))
        }
        Target::Pid(_) => (None, None),
    };
    // Attach before the terminal changes: errors print as plain lines.
    let mut session = record::start(
        &args.target,
        args.ringbuf_bytes,
        record::ProbeMode::Normal,
        stdio,
        &args.tracing,
    )?;
    let writer = match &args.output {
        Some(p) => Some(TraceWriter::create(p, &session.meta)?),
        None => None,
    };
    let (mut ing, tl) = session.ingest(writer, args.memory)?;
    let record::Session {
        recorder,
        rx,
        mut child,
        warnings,
        ..
    } = session;
    let mut app = App::new(tl, Mode::Live);
    if let Some(l) = &log {
        app.message = Some(format!("the program's output goes to {}", l.display()));
    }
    if let Some(w) = warnings.first() {
        app.message = Some(w.clone());
    }
    let result = (|| -> Result<Option<EndReason>> {
        let mut terminal = ratatui::try_init().context("cannot open the terminal")?;
        let _guard = TermGuard;
        let _ = crossterm::execute!(std::io::stdout(), EnableMouseCapture);
        let input = input_thread();
        run(
            &mut terminal,
            &mut app,
            &input,
            Some((&rx, &mut ing)),
            Theme::from_env(),
        )
    })();
    // The user quit before a launched program ended: it goes with us
    // (an attached process is left running).
    if let (Some(c), None) = (child.as_mut(), ing.exit_status) {
        c.terminate();
    }
    recorder.stop();
    // Drain what is left so the trace file is complete.
    while let Ok(msg) = rx.recv_timeout(Duration::from_millis(500)) {
        if ing.handle(&mut app.tl, msg)?.is_some() {
            break;
        }
    }
    recorder.join()?;
    let mut status = ing.exit_status;
    if let Some(c) = child.as_mut() {
        status = c.wait().ok().or(status);
    }
    ing.finish(&mut app.tl, status)?;
    result?;
    if let Some(l) = &log {
        eprintln!("tm-tui: the program's output is in {}", l.display());
    }
    if let Some(p) = &args.output {
        eprintln!("tm-tui: trace kept in {}", p.display());
    }
    Ok(match (&child, status) {
        (Some(_), Some(s)) => s.shell_code(),
        _ => 0,
    })
}
