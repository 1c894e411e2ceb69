//! The trace's writes, off the session's path: a thread owns the file and
//! takes chunks through a queue bounded in bytes, so a reader that stops
//! reading (`-o FIFO`, `-o - | consumer`) or a disk that stalls never
//! blocks the thread that takes the recorder's messages. A writer stuck
//! for [`STALL_LIMIT`], a queue past its bound or a write error is a
//! [`Failure`] the session sees at its next look, and it detaches.
//!
//! A bounded recording's file operations (a new segment, the oldest
//! removed, a crash window's links) go through the same queue, in order.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

/// How long the writer may make no progress before the recording gives
/// up on the trace: longer than the write-back throttling a busy disk
/// imposes (a `write` held a second or two under `dirty_ratio`) and than
/// a consumer's pause for its own work, short enough that a recording
/// whose reader went to sleep is detached before its queue has grown far
/// (at 10 MB/s of events, 50 MB).
pub const STALL_LIMIT: Duration = Duration::from_secs(5);

/// The queue's default bound; [`crate::cmd::session`] takes it out of
/// the `--memory` budget (at most an eighth of it).
pub const QUEUE_BYTES: u64 = 64 << 20;

/// One write to a pipe at most (its default capacity): a reader that
/// drains slowly is seen making progress, one that stopped is not.
const CHUNK: usize = 64 << 10;

/// What the writer does, in order.
enum Op {
    /// Bytes, and the time of the last event they hold.
    Data(Vec<u8>, u64),
    /// The next segment: written from now on.
    Open(PathBuf),
    Remove(PathBuf),
    Link(PathBuf, PathBuf),
    Mkdir(PathBuf),
}

/// Where the trace goes, as a failure names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dest {
    /// A pipe, FIFO or socket: someone reads it.
    Reader,
    /// A file (or a bounded recording's directory).
    File(String),
}

impl Dest {
    fn of(file: &File, name: &str) -> Dest {
        use std::os::unix::fs::FileTypeExt;
        match file.metadata().map(|m| m.file_type()) {
            Ok(t) if t.is_fifo() || t.is_socket() => Dest::Reader,
            _ => Dest::File(name.to_string()),
        }
    }
}

/// Why the trace could not be written on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// No progress for this long.
    Stalled(Dest, Duration),
    /// The queue passed its bound of this many bytes.
    Behind(Dest, u64),
    /// A write failed (ENOSPC, EPIPE, EIO, …).
    Io(Dest, io::ErrorKind, String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mib = |b: &u64| b >> 20;
        match self {
            Failure::Stalled(Dest::Reader, d) => {
                write!(f, "the trace's reader stopped reading for {} s", d.as_secs())
            }
            Failure::Stalled(Dest::File(p), d) => write!(
                f,
                "writing the trace to {p} made no progress for {} s (a stalled disk or file system)",
                d.as_secs()
            ),
            Failure::Behind(Dest::Reader, b) => {
                write!(f, "the trace's reader fell {} MiB behind", mib(b))
            }
            Failure::Behind(Dest::File(p), b) => write!(
                f,
                "writing the trace to {p} fell {} MiB behind (the disk is slower than the recording)",
                mib(b)
            ),
            Failure::Io(Dest::Reader, io::ErrorKind::BrokenPipe, _) => {
                write!(f, "the trace's reader went away (broken pipe)")
            }
            Failure::Io(Dest::Reader, _, e) => write!(f, "cannot write the trace: {e}"),
            Failure::Io(Dest::File(p), _, e) => write!(f, "cannot write the trace to {p}: {e}"),
        }
    }
}

impl std::error::Error for Failure {}

/// What the writer thread and the session both see.
struct Shared {
    base: Instant,
    /// Bytes queued and not written yet.
    queued: AtomicU64,
    /// An operation is under way ...
    busy: AtomicBool,
    /// ... and made progress last at this many ns after `base`.
    progress_ns: AtomicU64,
    /// The time of the last event of the last chunk written whole.
    written_ts: AtomicU64,
    failed: AtomicBool,
    failure: Mutex<Option<Failure>>,
}

impl Shared {
    fn now_ns(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }

    fn fail(&self, f: Failure) {
        if let Ok(mut g) = self.failure.lock() {
            g.get_or_insert(f);
        }
        self.failed.store(true, Ordering::Release);
    }

    fn failure(&self) -> Option<Failure> {
        if !self.failed.load(Ordering::Acquire) {
            return None;
        }
        self.failure.lock().ok().and_then(|g| g.clone())
    }
}

/// The session's handle on the writer thread.
pub struct Sink {
    tx: Option<Sender<Op>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
    cap: u64,
    dest: Dest,
}

impl Sink {
    /// The writer thread, writing `file` (named `name` in failures).
    pub fn start(file: File, name: &str) -> anyhow::Result<Sink> {
        let dest = Dest::of(&file, name);
        let (tx, rx) = crossbeam_channel::unbounded();
        let shared = Arc::new(Shared {
            base: Instant::now(),
            queued: AtomicU64::new(0),
            busy: AtomicBool::new(false),
            progress_ns: AtomicU64::new(0),
            written_ts: AtomicU64::new(0),
            failed: AtomicBool::new(false),
            failure: Mutex::new(None),
        });
        let s2 = Arc::clone(&shared);
        let d2 = dest.clone();
        let thread = std::thread::Builder::new()
            .name("tm-writer".into())
            .spawn(move || writer(file, d2, &rx, &s2))
            .map_err(|e| anyhow::anyhow!("cannot start the trace writer thread: {e}"))?;
        Ok(Sink {
            tx: Some(tx),
            shared,
            thread: Some(thread),
            cap: QUEUE_BYTES,
            dest,
        })
    }

    /// The queue's bound in bytes.
    pub fn set_limit(&mut self, bytes: u64) {
        self.cap = bytes.max(CHUNK as u64);
    }

    /// Queues `bytes` (the last event in them at `last_ts`); never blocks.
    pub fn data(&self, bytes: Vec<u8>, last_ts: u64) -> Result<(), Failure> {
        self.check()?;
        let n = bytes.len() as u64;
        let queued = self.shared.queued.load(Ordering::Acquire);
        if queued > 0 && queued + n > self.cap {
            let f = Failure::Behind(self.dest.clone(), self.cap);
            self.shared.fail(f.clone());
            return Err(f);
        }
        self.shared.queued.fetch_add(n, Ordering::AcqRel);
        self.send(Op::Data(bytes, last_ts));
        Ok(())
    }

    /// From now on the writer writes the file at `path` (made or truncated).
    pub fn open(&self, path: &Path) {
        self.send(Op::Open(path.to_path_buf()));
    }

    pub fn remove(&self, path: &Path) {
        self.send(Op::Remove(path.to_path_buf()));
    }

    pub fn hard_link(&self, from: &Path, to: &Path) {
        self.send(Op::Link(from.to_path_buf(), to.to_path_buf()));
    }

    pub fn mkdir(&self, path: &Path) {
        self.send(Op::Mkdir(path.to_path_buf()));
    }

    fn send(&self, op: Op) {
        if let Some(tx) = &self.tx {
            // The writer ends only when this handle goes.
            let _ = tx.send(op);
        }
    }

    /// The writer's failure, or its being stuck for [`STALL_LIMIT`]:
    /// cheap (an atomic load or two), for every message.
    pub fn check(&self) -> Result<(), Failure> {
        if let Some(f) = self.shared.failure() {
            return Err(f);
        }
        if self.shared.busy.load(Ordering::Acquire) {
            let since = self.shared.progress_ns.load(Ordering::Acquire);
            let stuck = Duration::from_nanos(self.shared.now_ns().saturating_sub(since));
            if stuck >= STALL_LIMIT {
                let f = Failure::Stalled(self.dest.clone(), STALL_LIMIT);
                self.shared.fail(f.clone());
                return Err(f);
            }
        }
        Ok(())
    }

    /// Bytes queued and not written yet.
    pub fn queued(&self) -> u64 {
        self.shared.queued.load(Ordering::Acquire)
    }

    /// The time of the last event the writer wrote whole (0: none).
    pub fn written_ts(&self) -> u64 {
        self.shared.written_ts.load(Ordering::Acquire)
    }

    /// Waits until everything queued is written, or the writer fails or
    /// makes no progress for [`STALL_LIMIT`].
    pub fn drain(&self) -> Result<(), Failure> {
        loop {
            self.check()?;
            if self.queued() == 0 && !self.shared.busy.load(Ordering::Acquire) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

impl Drop for Sink {
    /// What is queued is written (bounded by [`STALL_LIMIT`]) and the
    /// file closed; a writer stuck is left to the process's exit.
    fn drop(&mut self) {
        let ok = self.drain().is_ok();
        self.tx = None;
        if let (true, Some(t)) = (ok, self.thread.take()) {
            let _ = t.join();
        }
    }
}

/// The writer thread: takes the queue in order until the session's
/// handle goes. After a failure it only empties the queue.
fn writer(mut file: File, mut dest: Dest, rx: &Receiver<Op>, s: &Shared) {
    while let Ok(op) = rx.recv() {
        s.progress_ns.store(s.now_ns(), Ordering::Release);
        s.busy.store(true, Ordering::Release);
        let failed = s.failed.load(Ordering::Acquire);
        match op {
            Op::Data(bytes, last_ts) => {
                if !failed {
                    match write_progress(&mut file, &bytes, s) {
                        Ok(()) => s.written_ts.store(last_ts, Ordering::Release),
                        Err(e) => s.fail(Failure::Io(dest.clone(), e.kind(), e.to_string())),
                    }
                }
                s.queued.fetch_sub(bytes.len() as u64, Ordering::AcqRel);
            }
            Op::Open(path) if !failed => match File::create(&path) {
                Ok(f) => {
                    file = f;
                    dest = Dest::of(&file, &path.display().to_string());
                }
                Err(e) => s.fail(Failure::Io(
                    Dest::File(path.display().to_string()),
                    e.kind(),
                    e.to_string(),
                )),
            },
            // A bounded recording's housekeeping: a failure only leaves
            // a segment more, or a crash window shorter.
            Op::Remove(path) => {
                let _ = std::fs::remove_file(path);
            }
            Op::Link(from, to) => {
                let _ = std::fs::hard_link(from, to);
            }
            Op::Mkdir(path) => {
                let _ = std::fs::create_dir(path);
            }
            Op::Open(_) => {}
        }
        s.busy.store(false, Ordering::Release);
    }
}

/// `write_all` in pipe-sized pieces, each one progress (EINTR retried,
/// as `write_all` does).
fn write_progress(file: &mut File, bytes: &[u8], s: &Shared) -> io::Result<()> {
    for piece in bytes.chunks(CHUNK) {
        file.write_all(piece)?;
        s.progress_ns.store(s.now_ns(), Ordering::Release);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (File, File) {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        (File::from(r), File::from(w))
    }

    #[test]
    fn a_reader_that_stops_is_behind_then_never_blocks() {
        let (r, w) = pipe();
        let mut sink = Sink::start(w, "pipe").expect("sink");
        sink.set_limit(256 << 10);
        assert_eq!(sink.dest, Dest::Reader);
        let t0 = Instant::now();
        let mut res = Ok(());
        for _ in 0..64 {
            res = sink.data(vec![7u8; 64 << 10], 1);
            if res.is_err() {
                break;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(1), "never blocks");
        assert_eq!(res, Err(Failure::Behind(Dest::Reader, 256 << 10)));
        assert!(sink.data(vec![1], 2).is_err(), "failed stays failed");
        // The session lets go of a stuck writer without waiting.
        let t0 = Instant::now();
        drop(sink);
        assert!(t0.elapsed() < Duration::from_millis(100));
        drop(r);
    }

    #[test]
    fn a_reader_gone_is_a_broken_pipe() {
        let (r, w) = pipe();
        drop(r);
        let sink = Sink::start(w, "pipe").expect("sink");
        sink.data(vec![1; 10], 5).expect("queued");
        let f = sink.drain().expect_err("EPIPE");
        assert_eq!(f.to_string(), "the trace's reader went away (broken pipe)");
    }

    #[test]
    fn everything_queued_is_written_in_order() {
        let dir = tempfile::tempdir().expect("tmp");
        let a = dir.path().join("a");
        let sink = Sink::start(File::create(&a).expect("create"), "a").expect("sink");
        sink.data(b"one ".to_vec(), 1).expect("q");
        sink.data(b"two".to_vec(), 2).expect("q");
        let b = dir.path().join("b");
        sink.open(&b);
        sink.data(b"three".to_vec(), 3).expect("q");
        sink.hard_link(&b, &dir.path().join("c"));
        sink.drain().expect("drained");
        assert_eq!(sink.written_ts(), 3);
        drop(sink);
        assert_eq!(std::fs::read(&a).expect("a"), b"one two");
        assert_eq!(std::fs::read(dir.path().join("c")).expect("c"), b"three");
    }
}
