//! The UI subcommands: `tm-tui PID`, `tm-tui -- CMD` and `demo` record
//! and show live; `open` shows a saved recording.

use std::path::PathBuf;

use anyhow::{Context, Result};

use crossbeam_channel::Receiver;
use crossterm::event::EnableMouseCapture;

use crate::cmd::require_tty;
use crate::cmd::session::{self, Ingest, Target, Tracing};
use crate::model::Timeline;
use crate::recorder::{now_mono_ns, EndReason, Msg};
use crate::trace::TraceWriter;
use crate::ui::app::{App, Mode};
use crate::ui::view::Theme;
use crate::ui::{input_thread, run, Feed, Lag, TermGuard};

/// `tm-tui open FILE`: the UI over a saved recording, shown at once and
/// filled as a loader thread reads it (the events never all in memory:
/// the timeline keeps `memory` bytes of them). The view follows the
/// reading and stops at a crash, as it does live.
pub fn open(file: &std::path::Path, memory: usize, at: Option<std::time::Duration>) -> Result<()> {
    // The file first: a bad file is an error even without a terminal.
    let at = at.map(crate::cmd::report::nanos);
    let part = match at {
        // Past the moment only while what was taken from the part's start
        // (events and carried blocks) is under half the timeline's budget
        // (~32 bytes an event): more would drop the moment itself.
        Some(a) => crate::cmd::load::Part::at(file, a, a, (memory / 64) as u64)?,
        None => crate::cmd::load::Part::default(),
    };
    let loader = crate::cmd::load::Loader::start_part(file, part)?;
    if crate::trace::is_std(file) {
        // The trace came on stdin: the keys come from the terminal
        // (crossterm reads /dev/tty when stdin is not one).
        use std::io::IsTerminal;
        if !std::io::stdout().is_terminal() || std::fs::File::open("/dev/tty").is_err() {
            anyhow::bail!("the UI needs a terminal; to read a trace from stdin without one use `tm-tui report -`");
        }
    } else {
        require_tty()?;
    }
    // SIGTERM, SIGHUP: quit as q does, the terminal restored.
    session::install_sigint()?;
    let tl = Timeline::with_budget(loader.meta.clone(), memory);
    let mut app = App::new(tl, Mode::Live);
    app.stop_at = at.map(|a| loader.meta.start_mono_ns.saturating_add(a));
    app.stop_from_part = part.from.is_some();
    let mut feed = FileFeed {
        name: PathBuf::from(crate::trace::name(file, false)),
        loader,
        done: None,
        stopped: false,
    };
    show(&mut app, &mut feed)?;
    Ok(())
}

/// The UI in the terminal over `feed` until it quits or the feed ends;
/// the terminal is restored on every path.
fn show<F: Feed>(app: &mut App, feed: &mut F) -> Result<Option<F::End>> {
    let mut terminal = ratatui::try_init().context("cannot open the terminal")?;
    let _guard = TermGuard;
    let _ = crossterm::execute!(std::io::stdout(), EnableMouseCapture);
    let input = input_thread();
    run(&mut terminal, app, &input, Some(feed), Theme::from_env())
}

/// A saved recording read by the loader thread, fed to the UI.
struct FileFeed {
    name: PathBuf,
    loader: crate::cmd::load::Loader,
    /// What to say once the file is read.
    done: Option<String>,
    /// The read stopped before the end (`--at`).
    stopped: bool,
}

impl Feed for FileFeed {
    type Update = crate::cmd::load::Load;
    type End = ();

    fn updates(&self) -> &Receiver<Self::Update> {
        &self.loader.rx
    }

    fn apply(&mut self, tl: &mut Timeline, m: Self::Update) -> Result<Option<()>> {
        let Some(t) = self.loader.apply(tl, m)? else {
            return Ok(None);
        };
        self.stopped = t.stopped;
        // The worst of what is wrong with the file (the damage: the end of
        // the recording is missing), else how long reading it took; said
        // once the UI took the end.
        self.done = crate::cmd::damage_notes(&self.name, &t, "showing what was read")
            .into_iter()
            .next()
            .or_else(|| {
                let dropped = tl.store().first();
                Some(format!(
                    "read {} events in {}{}",
                    t.event_count,
                    crate::model::diagnose::fmt_ns(self.loader.started.elapsed().as_nanos() as u64),
                    if dropped > 0 {
                        format!(
                            "; the oldest {dropped} dropped to stay within --memory (heap exact)"
                        )
                    } else {
                        String::new()
                    }
                ))
            });
        Ok(Some(()))
    }

    fn gone(&mut self) {
        self.done = Some("the loader thread ended before the end of the file".into());
    }

    fn tick(&mut self) -> bool {
        session::interrupted()
    }

    fn lag(&self, _: &Timeline) -> Lag {
        Lag::default()
    }

    fn loading(&self) -> Option<crate::ui::app::Loading> {
        Some(crate::ui::app::Loading {
            events: self.loader.events,
            fraction: self.loader.fraction(),
        })
    }

    fn ended(&mut self, app: &mut App) {
        // Where the reading left the cursor: at the crash (it stopped
        // there), on the newest event, or where the user moved it.
        app.mode = Mode::Replay;
        app.read_stopped = self.stopped;
        let crash = app.tl.crash().is_some() && app.cursor == app.tl.crash();
        // Held at `--at`: said with the end.
        let at = app.message.take().filter(|m| m.contains("(--at)"));
        let done = self.done.take().map(|m| {
            if self.stopped {
                format!("{m}; stopped past --at, within --memory")
            } else {
                m
            }
        });
        app.message = done.map(|m| match at {
            _ if crash => format!("at the crash, scrub back with ←; {m}"),
            Some(at) => format!("{at}; {m}"),
            None => m,
        });
    }
}

pub struct LiveArgs {
    pub target: Target,
    pub output: Option<PathBuf>,
    /// A bounded recording (`--max-size`, `--keep`, attached by default):
    /// `output` is a directory of segments.
    pub limits: crate::trace::Limits,
    pub ringbuf_bytes: u64,
    pub memory: usize,
    pub tracing: Tracing,
}

/// The session's messages, fed to the UI as timeline updates.
struct LiveFeed<'a> {
    rx: &'a Receiver<Msg>,
    ing: &'a mut Ingest,
    backlog: std::sync::Arc<crate::recorder::Backlog>,
    /// Events taken from the channel.
    taken: u64,
    pid: u32,
    /// Launched targets are traced by the launcher thread (and scanned at
    /// their exit); only an attached one can be paused from here.
    attached: bool,
    /// Paused for a leak scan, waiting for the recorder's sync.
    paused: Option<crate::recorder::pause::Paused>,
    message: Option<String>,
    recorder: &'a crate::recorder::Recorder,
    meta: &'a crate::event::Meta,
    /// The trace could not be written on: the probes are being detached.
    write_stopped: bool,
}

impl LiveFeed<'_> {
    /// The trace could not be written on: detach (the target runs on
    /// untraced) and say why.
    fn check_writer(&mut self) {
        if self.write_stopped || self.ing.failure().is_none() {
            return;
        }
        self.write_stopped = true;
        self.recorder.stop();
        self.message = self.ing.failure_line(self.meta);
    }
}

impl Feed for LiveFeed<'_> {
    type Update = Msg;
    type End = EndReason;

    fn updates(&self) -> &Receiver<Msg> {
        self.rx
    }

    fn apply(&mut self, tl: &mut Timeline, m: Msg) -> Result<Option<EndReason>> {
        if let Msg::Events(b) = &m {
            self.taken += b.len() as u64;
        }
        let end = self.ing.handle(tl, m)?;
        self.check_writer();
        if self.ing.synced > 0 || end.is_some() {
            if let Some(p) = self.paused.take() {
                let r = self.ing.leak_scan(tl, &p.request());
                let took = p.resume();
                r?;
                self.message = Some(match tl.leak_scan() {
                    Some(k) => {
                        use crate::event::LeakKind as K;
                        let t = |kind| k.total(kind);
                        format!(
                            "leak scan (pid {} paused {}): definitely lost {} B in {}, indirectly {} B in {}, possibly {} B in {}, reachable {} B in {}",
                            self.pid,
                            crate::model::diagnose::fmt_ns(took.as_nanos() as u64),
                            t(K::DefinitelyLost).bytes,
                            t(K::DefinitelyLost).blocks,
                            t(K::IndirectlyLost).bytes,
                            t(K::IndirectlyLost).blocks,
                            t(K::PossiblyLost).bytes,
                            t(K::PossiblyLost).blocks,
                            t(K::StillReachable).bytes,
                            t(K::StillReachable).blocks,
                        )
                    }
                    None => self
                        .ing
                        .notes
                        .last()
                        .cloned()
                        .unwrap_or_else(|| "the leak scan failed".into()),
                });
            }
        }
        Ok(end)
    }

    fn leak_scan(&mut self) -> String {
        if !self.attached {
            return "a launched program is scanned for leak kinds at its exit (report shows them)"
                .into();
        }
        if self.paused.is_some() {
            return "a leak scan is under way".into();
        }
        match crate::recorder::pause::pause(self.pid) {
            Ok(p) => {
                self.paused = Some(p);
                self.ing.synced = 0;
                self.backlog.request_sync();
                format!("pid {} paused for a leak scan…", self.pid)
            }
            Err(e) => format!("no leak scan: {e:#}"),
        }
    }

    fn take_message(&mut self) -> Option<String> {
        self.message.take()
    }

    fn gone(&mut self) -> EndReason {
        EndReason::TargetGone
    }

    fn ended(&mut self, app: &mut App) {
        if app.mode != Mode::Live {
            return;
        }
        app.mode = Mode::Frozen;
        // Detached because the trace could not be written: the target
        // runs on, and the why stays on screen (not "the target exited").
        app.message = Some(match self.write_stopped {
            true => format!(
                "{}; scrub with ←/→, q quits",
                self.ing.failure_line(self.meta).unwrap_or_default()
            ),
            false => "the target exited; scrub with ←/→, q quits".into(),
        });
    }

    fn tick(&mut self) -> bool {
        self.ing.idle();
        self.check_writer();
        session::interrupted()
    }

    fn lag(&self, tl: &Timeline) -> Lag {
        use std::sync::atomic::Ordering;
        let queued = self
            .backlog
            .sent
            .load(Ordering::Relaxed)
            .saturating_sub(self.taken);
        let ring_bytes = self.backlog.ring_bytes.load(Ordering::Relaxed);
        let newest = tl
            .store()
            .end()
            .checked_sub(1)
            .and_then(|i| tl.store().ts(i));
        let behind_ns = match newest {
            Some(t) if queued > 0 || ring_bytes > 0 => now_mono_ns().saturating_sub(t),
            _ => 0,
        };
        Lag {
            queued,
            ring_bytes,
            behind_ns,
        }
    }
}

/// `tm-tui PID`, `tm-tui -- CMD`, `tm-tui demo NAME`: record and show.
/// Returns the launched target's status (as `record` does).
pub fn live(args: LiveArgs) -> Result<i32> {
    session::install_sigint()?;
    let timeline = session::timeline_budget(args.memory, args.ringbuf_bytes)?;
    let mut held = None;
    if let Some(p) = &args.output {
        if crate::trace::is_std(p) {
            anyhow::bail!(
                "the UI owns the terminal: -o - (the trace on stdout) is for `tm-tui record`"
            );
        }
        if args.limits.bounded() {
            session::check_ring_output(p)?;
        } else {
            held = session::check_output(p)?;
        }
    }
    // A launched program's output would garble the UI and its input would
    // steal our keys: it gets /dev/null and a log file instead.
    let (stdio, log) = match &args.target {
        Target::Command(_) => {
            // Unguessable, readable by its owner only: the user who ran
            // sudo when the program runs as that user.
            let owner = session::sudo_user(args.tracing.as_root)?.map(|r| (r.uid, r.gid));
            let (output, log) = crate::cmd::private_file("tm-tui-", ".out", owner)?;
            let stdio = crate::recorder::launch::Stdio {
                stdin: Some(std::fs::File::open("/dev/null").context("cannot open /dev/null")?),
                output,
            };
            (Some(stdio), Some(log))
        }
        Target::Pid(_) => (None, None),
    };
    // Attach before the terminal changes: errors print as plain lines.
    let session = session::start(
        &args.target,
        args.ringbuf_bytes,
        session::ProbeMode::Normal,
        stdio,
        &args.tracing,
    );
    let mut session = match session {
        Ok(s) => s,
        Err(e) => {
            if let Some(l) = &log {
                let _ = std::fs::remove_file(l);
            }
            return Err(e);
        }
    };
    let writer = match (&args.output, held) {
        (Some(p), _) if args.limits.bounded() => {
            Some(TraceWriter::create_ring(p, &session.meta, args.limits)?)
        }
        (Some(p), Some(fifo)) => Some(TraceWriter::create_on(fifo, p, &session.meta)?),
        (Some(p), None) => {
            let mut w = TraceWriter::create(p, &session.meta)?;
            w.checkpoint_every(&session.meta, args.limits.checkpoint);
            Some(w)
        }
        (None, _) => None,
    };
    let (mut ing, tl) = session.ingest(writer, timeline)?;
    let mut app = App::new(tl, Mode::Live);
    app.watcher = session.watcher.clone();
    if let Some(l) = &log {
        app.message = Some(format!("the program's output goes to {}", l.display()));
    }
    if let (Some(p), Some(b)) = (&args.output, session::bound_words(&args.limits)) {
        app.message = Some(format!("recording into {}, {b}", p.display()));
    }
    if let Some(w) = session.warnings.first() {
        app.message = Some(w.clone());
    }
    let launched = session.child.is_some();
    let result = {
        let mut feed = LiveFeed {
            rx: &session.rx,
            ing: &mut ing,
            backlog: session.recorder.backlog(),
            taken: 0,
            pid: session.meta.pid,
            attached: !launched,
            paused: None,
            message: None,
            recorder: &session.recorder,
            meta: &session.meta,
            write_stopped: false,
        };
        show(&mut app, &mut feed)
    };
    let ended = matches!(result, Ok(Some(_)));
    let meta = session.meta.clone();
    let (status, _) = session.finish(&mut ing, &mut app.tl, ended)?;
    result?;
    if let Some(line) = ing.failure_line(&meta) {
        anyhow::bail!("{line}");
    }
    if let Some(l) = &log {
        eprintln!("tm-tui: the program's output is in {}", l.display());
    }
    if let Some(p) = &args.output {
        eprintln!("tm-tui: trace kept in {}", p.display());
    }
    Ok(match (launched, status) {
        (true, Some(s)) => s.shell_code(),
        _ => 0,
    })
}
