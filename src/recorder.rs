//! The recorder: loads the BPF tracer, attaches it to one process, polls
//! the ring buffer and decodes C records into owned [`Event`]s, sent in
//! batches over a bounded channel. The only place with unsafe code and
//! the only place that sees C types.

mod abortmsg;
mod cfi;
pub mod discover;
mod fds;
pub mod launch;
pub mod maps;
pub mod pause;
mod place;
pub mod probes;
pub mod scan;
mod stacks;
pub mod symbols;
mod tables;
pub mod unwind;
pub mod watch;

use crate::util::hash::FxMap;
use std::cell::RefCell;
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{
    Link, MapCore, MapFlags, PrintLevel, RingBufferBuilder, UprobeMultiOpts, UprobeOpts,
};

use crate::event::{
    AllocFn, Arg, CallInfo, Event, EventKind, ExitStatus, Families, Family, LossReason, Lost,
    Module, SignalInfo, SignalSender, Stack, StackEnd, ValueType,
};
use crate::recorder::launch::HoldWhy;
use crate::recorder::maps::MapsCache;
use crate::recorder::unwind::{Regs, Unwinder};
use discover::Allocator;
use stacks::StackTable;

mod bpf {
    #![allow(
        clippy::all,
        clippy::pedantic,
        clippy::unwrap_used,
        clippy::undocumented_unsafe_blocks,
        unused_imports,
        dead_code
    )]
    include!(concat!(env!("OUT_DIR"), "/tracer.skel.rs"));
}
use bpf::types;

// SAFETY: these are the skeleton's plain-old-data record types, generated
// from bpf/tracer.h: integers and arrays of integers only, no padding
// invariants, valid for any bit pattern.
unsafe impl plain::Plain for types::tm_hdr {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_heap_rec {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_syscall_rec {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_signal_rec {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_fork_rec {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_exec_rec {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_exit_rec {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_stack {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_call_rec {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_ret_rec {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_io_rec {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_offcpu_rec {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_watch_rec {}
// SAFETY: as above.
unsafe impl plain::Plain for types::tm_watch {}

use strum::EnumCount as _;

// StackEnd mirrors enum tm_stack_end: same count (Unknown aside), same numbers.
const _: () = {
    assert!(StackEnd::COUNT - 1 == types::tm_stack_end::TM_END_MAX.0 as usize);
    assert!(StackEnd::Unsupported as u32 == types::tm_stack_end::TM_END_UNSUPPORTED.0);
    assert!(StackEnd::NoInfo as u32 == types::tm_stack_end::TM_END_NO_INFO.0);
    assert!(StackEnd::Depth as u32 == types::tm_stack_end::TM_END_DEPTH.0);
};

/// The record kinds, numbered as the header's `enum tm_kind` numbers them
/// (one definition: the numbers come from the skeleton). A kind added in C
/// without a variant here fails the build (the assertion below), and a
/// variant without a decoder fails `handle`'s exhaustive match.
#[derive(Clone, Copy, Debug, strum::FromRepr, strum::EnumCount)]
#[repr(u32)]
enum Rec {
    Heap = types::tm_kind::TM_K_HEAP.0,
    Syscall = types::tm_kind::TM_K_SYSCALL.0,
    Signal = types::tm_kind::TM_K_SIGNAL.0,
    Fork = types::tm_kind::TM_K_FORK.0,
    Exec = types::tm_kind::TM_K_EXEC.0,
    Exit = types::tm_kind::TM_K_EXIT.0,
    Call = types::tm_kind::TM_K_CALL.0,
    Ret = types::tm_kind::TM_K_RET.0,
    Io = types::tm_kind::TM_K_IO.0,
    OffCpu = types::tm_kind::TM_K_OFFCPU.0,
    Watch = types::tm_kind::TM_K_WATCH.0,
}
const _: () = assert!(
    <Rec as strum::EnumCount>::COUNT + 1 == types::tm_kind::TM_K_MAX.0 as usize,
    "every enum tm_kind of bpf/tracer.h needs a Rec variant"
);

/// The C number of each allocator entry point (`enum tm_fn`), the attach
/// cookie of its probe and the `fn` of its records.
fn tm_fn(f: AllocFn) -> types::tm_fn {
    match f {
        AllocFn::Malloc => types::tm_fn::TM_FN_MALLOC,
        AllocFn::Calloc => types::tm_fn::TM_FN_CALLOC,
        AllocFn::Realloc => types::tm_fn::TM_FN_REALLOC,
        AllocFn::Reallocarray => types::tm_fn::TM_FN_REALLOCARRAY,
        AllocFn::PosixMemalign => types::tm_fn::TM_FN_POSIX_MEMALIGN,
        AllocFn::Memalign => types::tm_fn::TM_FN_MEMALIGN,
        AllocFn::Valloc => types::tm_fn::TM_FN_VALLOC,
        AllocFn::Pvalloc => types::tm_fn::TM_FN_PVALLOC,
        AllocFn::Free => types::tm_fn::TM_FN_FREE,
    }
}
const _: () = assert!(
    <AllocFn as strum::EnumCount>::COUNT == types::tm_fn::TM_FN_MAX.0 as usize,
    "every enum tm_fn of bpf/tracer.h needs an AllocFn"
);

fn alloc_fn(c: types::tm_fn) -> Option<AllocFn> {
    <AllocFn as strum::IntoEnumIterator>::iter().find(|f| tm_fn(*f) == c)
}

/// The loss reasons the tracer counts, by their `enum tm_loss` slot.
const KERNEL_LOSSES: [(types::tm_loss, LossReason); 3] = [
    (types::tm_loss::TM_LOST_RINGBUF, LossReason::RingBuffer),
    (types::tm_loss::TM_LOST_STACK_TABLE, LossReason::StackTable),
    (types::tm_loss::TM_LOST_INFLIGHT, LossReason::Inflight),
];
const _: () = assert!(
    KERNEL_LOSSES.len() == types::tm_loss::TM_LOST_MAX.0 as usize,
    "every enum tm_loss of bpf/tracer.h needs a LossReason"
);

/// Bytes of each string argument a call record carries, with its NUL.
const STR_LEN: usize = types::tm_limit::TM_CALL_STR_LEN.0 as usize;

/// What the recorder sends to its consumer, in order: a module or stack is
/// always sent before the first event that refers to it.
#[derive(Debug)]
pub enum Msg {
    /// A module, with its file opened through the target while it is
    /// alive (for symbolizing after it is gone).
    Module(Module, Option<std::fs::File>),
    Stack(Stack),
    Events(Vec<Event>),
    /// Cumulative loss counters, sent whenever they change.
    Lost(Lost),
    /// Something the user should know once (a module without unwind
    /// info): said at the end of a recording.
    Note(String),
    /// The target is held in its exit and every event it produced was
    /// sent: scan its memory for leak kinds now, then answer the request
    /// (the target is let go after that, or after a bound).
    LeakScan(scan::Request),
    /// Everything in the ring buffer when [`Recorder::sync`] was called
    /// was sent before this.
    Synced,
    /// The recording is over; nothing follows.
    End(EndReason),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndReason {
    /// The target exited (the ProcessExit event was sent).
    TargetExited,
    /// The target vanished without an exit event (a loss, counted).
    TargetGone,
    /// [`Recorder::stop`] was called (Ctrl-C).
    Stopped,
}

pub struct Config {
    pub pid: u32,
    /// The allocator to probe; `None` without the alloc family.
    pub allocator: Option<Allocator>,
    /// Ring buffer size in bytes (a power of two, at least a page).
    pub ringbuf_bytes: u64,
    /// Capacity of the channel, in batches.
    pub channel_batches: usize,
    /// The target was launched stopped before exec: ignore what the child
    /// does until it has become the program (execve).
    pub await_exec: bool,
    /// The tracer thread's holds (a launched target's entry and exit,
    /// followed children's forks and execs).
    pub exit_hold: Option<launch::ExitHold>,
    /// Follow child processes (the tracer thread holds each at its fork).
    pub follow: bool,
    /// Attached: child processes already running to record too
    /// (pid, ppid), parents first.
    pub adopt: Vec<(u32, u32)>,
    /// While a launched target is held in its exit, have its memory
    /// scanned for leak kinds ([`Msg::LeakScan`]).
    pub exit_scan: bool,
    /// The allocator probes return at once (the bench's trap-cost baseline).
    pub bare_probes: bool,
    /// Event families: without `alloc` no allocator probe is attached.
    pub families: Families,
    /// Function probes, ids numbered from 0.
    pub probes: Vec<crate::recorder::probes::Resolved>,
    /// Watchpoints on sampled frees and allocations (needs the tracer
    /// thread, which stops the claiming threads).
    pub watch: Option<WatchConfig>,
}

/// What watchpoints watch, and how often (see [`watch`]).
#[derive(Clone)]
pub struct WatchConfig {
    /// Claims per second at most, of each sort (freed blocks, block ends);
    /// `None`: no sampled watchpoint.
    pub rate: Option<u32>,
    /// Addresses asked for, each a slot of its own (the last ones).
    pub asked: Vec<watch::Asked>,
    /// The program calls malloc_usable_size: the slack past the size it
    /// asked is its own (only the next block's header is watched).
    pub usable_size: bool,
    /// Where the tracer thread finds the watcher.
    pub cell: watch::WatchCell,
}

impl Config {
    pub fn new(pid: u32, allocator: Option<Allocator>) -> Self {
        Config {
            pid,
            allocator,
            ringbuf_bytes: 64 << 20,
            channel_batches: 4096,
            await_exec: false,
            exit_hold: None,
            follow: false,
            adopt: Vec::new(),
            exit_scan: false,
            bare_probes: false,
            families: Families::default(),
            probes: Vec::new(),
            watch: None,
        }
    }
}

/// A running recorder thread.
pub struct Recorder {
    stop: Arc<AtomicBool>,
    backlog: Arc<Backlog>,
    thread: Option<JoinHandle<Result<()>>>,
}

/// How far the recorder's consumer is behind, for the status line: what
/// waits in the kernel's ring buffer, and how many events were handed to
/// the channel (the consumer counts what it took).
#[derive(Debug, Default)]
pub struct Backlog {
    /// Bytes unread in the ring buffer at the recorder's last look.
    pub ring_bytes: AtomicU64,
    /// Events sent on the channel so far.
    pub sent: AtomicU64,
    /// [`Recorder::sync`] asked for a [`Msg::Synced`].
    sync: AtomicBool,
}

impl Backlog {
    /// As [`Recorder::sync`], for who holds only the backlog.
    pub fn request_sync(&self) {
        self.sync.store(true, Ordering::Relaxed);
    }
}

impl Recorder {
    /// Load and attach; returns once every probe is attached (so the
    /// caller may then let a stopped target run) or attaching failed.
    pub fn start(cfg: Config) -> Result<(Recorder, Receiver<Msg>)> {
        let (tx, rx) = bounded(cfg.channel_batches);
        let (ready_tx, ready_rx) = bounded::<Result<()>>(1);
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = Arc::clone(&stop);
        let backlog = Arc::new(Backlog::default());
        let backlog2 = Arc::clone(&backlog);
        let thread = thread::Builder::new()
            .name("tm-recorder".into())
            .spawn(move || run(cfg, tx, ready_tx, stop2, backlog2))
            .context("cannot start the recorder thread")?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok((
                Recorder {
                    stop,
                    backlog,
                    thread: Some(thread),
                },
                rx,
            )),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => match thread.join() {
                Ok(Err(e)) => Err(e),
                _ => Err(anyhow!("the recorder thread died while attaching")),
            },
        }
    }

    pub fn backlog(&self) -> Arc<Backlog> {
        Arc::clone(&self.backlog)
    }

    /// Ask the recorder to send everything it has, then [`Msg::Synced`]:
    /// once the target is stopped (every record it made is committed),
    /// what follows is all it did.
    pub fn sync(&self) {
        self.backlog.request_sync();
    }

    /// Ask the recorder to drain what is pending and end.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }

    pub fn join(mut self) -> Result<()> {
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => Err(anyhow!("the recorder thread panicked")),
            None => Ok(()),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// libbpf's own messages, kept to explain a failed load or attach instead
/// of being printed over the user's terminal.
static LIBBPF_LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// `TM_DEBUG=verifier`: how much work the verifier did on each program.
fn verifier_stats() -> bool {
    std::env::var_os("TM_DEBUG").is_some_and(|v| v == "verifier")
}

fn libbpf_print(level: PrintLevel, msg: String) {
    // --log: every message, debug included, as libbpf said it.
    crate::util::log::line(
        match level {
            PrintLevel::Debug => "libbpf debug",
            PrintLevel::Info => "libbpf info",
            PrintLevel::Warn => "libbpf warning",
        },
        &msg,
    );
    if level == PrintLevel::Debug {
        if verifier_stats() && msg.contains("processed ") {
            let prog = msg.split('\'').nth(1).unwrap_or("?");
            for l in msg
                .lines()
                .filter(|l| l.contains("processed ") || l.contains("verification time"))
            {
                eprintln!("tm-tui: debug: {prog}: {l}");
            }
        }
        return;
    }
    if let Ok(mut log) = LIBBPF_LOG.lock() {
        if log.len() > 200 {
            log.remove(0);
        }
        log.push(msg.trim_end().to_string());
    }
}

fn libbpf_log_tail() -> String {
    LIBBPF_LOG
        .lock()
        .map(|l| {
            l.iter()
                .rev()
                .take(8)
                .rev()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n  ")
        })
        .unwrap_or_default()
}

fn run(
    cfg: Config,
    tx: Sender<Msg>,
    ready: Sender<Result<()>>,
    stop: Arc<AtomicBool>,
    backlog: Arc<Backlog>,
) -> Result<()> {
    let level = if verifier_stats() || crate::util::log::enabled() {
        PrintLevel::Debug
    } else {
        PrintLevel::Info
    };
    libbpf_rs::set_print(Some((level, libbpf_print)));
    let mut storage = MaybeUninit::uninit();
    let attached = setup(&cfg, &mut storage);
    let (mut skel, links, root_links, tables) = match attached {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return Ok(());
        }
    };
    let _ = ready.send(Ok(()));
    // The code-range globals are written from the poll loop, which only
    // holds the skeleton shared: take the pointer while it is ours.
    let bss = skel
        .maps
        .bss_data
        .as_deref_mut()
        .map(|b| b as *mut types::bss);
    poll_loop(
        &cfg,
        &skel,
        (links, root_links, tables),
        &tx,
        &stop,
        &backlog,
        bss,
    )
}

fn setup<'obj>(
    cfg: &Config,
    storage: &'obj mut MaybeUninit<libbpf_rs::OpenObject>,
) -> Result<(bpf::TracerSkel<'obj>, Vec<Link>, Vec<Link>, tables::Tables)> {
    let pid = cfg.pid;
    let mut open = bpf::TracerSkelBuilder::default()
        .open(storage)
        .context("failed to open the BPF object")?;
    let rodata = open
        .maps
        .rodata_data
        .as_deref_mut()
        .ok_or_else(|| anyhow!("BPF object has no .rodata"))?;
    rodata.targ_tgid = pid;
    rodata.follow = cfg.follow;
    rodata.bare = cfg.bare_probes;
    rodata.debug = std::env::var_os("TM_DEBUG").is_some();
    rodata.families = u32::from(cfg.families.0);
    // Wake the consumer when a quarter is waiting; below that it reads on
    // its own timer, which keeps the per-event cost free of wakeups.
    rodata.wakeup_bytes = cfg.ringbuf_bytes / 4;
    rodata.uretprobe_page = crate::util::URETPROBE_PAGE;
    open.maps
        .events
        .set_max_entries(cfg.ringbuf_bytes as u32)
        .context("invalid ring buffer size")?;
    // One set of allocator programs is loaded: the uprobe_multi pair where
    // the kernel has it (6.6+), else one program per entry point.
    let multi = uprobe_multi_supported();
    let alloc_on = cfg.allocator.is_some();
    let calls_on = !cfg.probes.is_empty();
    let progs = &mut open.progs;
    for p in [
        &mut progs.tm_malloc,
        &mut progs.tm_calloc,
        &mut progs.tm_realloc,
        &mut progs.tm_reallocarray,
        &mut progs.tm_posix_memalign,
        &mut progs.tm_memalign,
        &mut progs.tm_valloc,
        &mut progs.tm_pvalloc,
        &mut progs.tm_free,
        &mut progs.tm_alloc_ret,
    ] {
        p.set_autoload(alloc_on && !multi);
    }
    progs.tm_alloc_multi.set_autoload(alloc_on && multi);
    progs.tm_alloc_ret_multi.set_autoload(alloc_on && multi);
    progs.tm_call_multi.set_autoload(calls_on && multi);
    progs.tm_call_ret_multi.set_autoload(calls_on && multi);
    progs.tm_call.set_autoload(calls_on && !multi);
    let strs_on = cfg.probes.iter().any(|p| p.str_mask() != 0);
    progs.tm_call_str_multi.set_autoload(strs_on && multi);
    progs.tm_call_str.set_autoload(strs_on && !multi);
    progs.tm_call_ret.set_autoload(calls_on && !multi);
    progs
        .tm_sched_switch
        .set_autoload(cfg.families.has(Family::Sched));
    let syscalls_on = [Family::Io, Family::Net, Family::Lock]
        .iter()
        .any(|f| cfg.families.has(*f));
    progs.tm_sys_enter.set_autoload(syscalls_on);
    progs.tm_sys_exit_fam.set_autoload(syscalls_on);
    let watch_on = cfg.watch.is_some();
    progs.tm_watch_hit.set_autoload(watch_on);
    if let Some((w, rate)) = cfg
        .watch
        .as_ref()
        .and_then(|w| Some((w, w.rate?)))
        .filter(|_| alloc_on)
    {
        let rodata = open
            .maps
            .rodata_data
            .as_deref_mut()
            .ok_or_else(|| anyhow!("BPF object has no .rodata"))?;
        // The slots left by the asked addresses: half rotate over freed
        // blocks, half over block ends (two and two without any asked).
        let glibc = cfg
            .allocator
            .as_ref()
            .is_some_and(|a| discover::is_glibc(&a.path));
        let free = watch::SLOTS.saturating_sub(w.asked.len()) as u32;
        // Block ends only where the allocator keeps a header between
        // blocks (glibc): elsewhere the bytes past a block are its
        // neighbour's, written by its owner.
        let uaf = if glibc { free.div_ceil(2) } else { free };
        rodata.watch_uaf_slots = (1 << uaf) - 1;
        rodata.watch_ovf_slots = ((1 << free) - 1) & !((1 << uaf) - 1);
        rodata.watch_interval_ns = 1_000_000_000 / u64::from(rate.max(1));
        rodata.watch_glibc = glibc;
        rodata.watch_ovf_usable = w.usable_size;
    }
    if verifier_stats() {
        // The kernel's statistics per program (BPF_LOG_STATS), printed
        // by libbpf_print once each is loaded.
        for mut p in open.open_object_mut().progs_mut() {
            p.set_log_level(4);
        }
    }
    let t0 = Instant::now();
    let mut skel = open.load().map_err(|e| {
        anyhow!(
            "failed to load the BPF tracer: {e}{}",
            match libbpf_log_tail() {
                t if t.is_empty() => String::new(),
                t => format!("\n  {t}"),
            }
        )
    })?;

    if let Some(w) = cfg.watch.as_ref().filter(|_| watch_on) {
        start_watcher(cfg, &skel, w)?;
    }

    // Unwind tables before the first probe fires: every stack from the
    // start is walked with them (a launched program gets its own at exec).
    let t1 = Instant::now();
    let mut tables = tables::Tables::new(
        &skel.maps.cfi_rows,
        &skel.maps.cfi_pages,
        &skel.maps.cfi_procs,
    )?;
    if !cfg.await_exec {
        let maps = MapsCache::new(pid);
        tables.sync(pid, maps.entries());
    }
    if std::env::var_os("TM_DEBUG").is_some() {
        eprintln!(
            "tm-tui: debug: BPF load (verifier) {:?}, unwind tables {:?}",
            t1 - t0,
            t1.elapsed()
        );
    }
    let mut links = Vec::new();
    let root_links = attach_process(&skel, pid, cfg.allocator.as_ref(), &cfg.probes)?;
    if syscalls_on {
        for (name, prog) in [
            ("sys_enter", &skel.progs.tm_sys_enter),
            ("sys_exit", &skel.progs.tm_sys_exit_fam),
        ] {
            links.push(
                prog.attach()
                    .with_context(|| format!("failed to attach to the {name} tracepoint"))?,
            );
        }
    }
    if cfg.families.has(Family::Sched) {
        links.push(
            skel.progs
                .tm_sched_switch
                .attach()
                .context("failed to attach to the sched_switch tracepoint")?,
        );
    }
    for (name, prog) in [
        ("sys_exit", &skel.progs.tm_sys_exit),
        ("signal_generate", &skel.progs.tm_signal_generate),
        ("signal_deliver", &skel.progs.tm_signal_deliver),
        ("sched_process_fork", &skel.progs.tm_fork),
        ("sched_process_exec", &skel.progs.tm_exec),
        ("sched_process_exit", &skel.progs.tm_exit),
    ] {
        links.push(
            prog.attach()
                .with_context(|| format!("failed to attach to the {name} tracepoint"))?,
        );
    }
    if !process_alive(pid) {
        bail!("process {pid} exited while tm-tui was attaching");
    }
    // Every probe is in: the allocator is recorded from now on, all of it.
    if let Some(bss) = skel.maps.bss_data.as_deref_mut() {
        bss.armed = 1;
    }
    Ok((skel, links, root_links, tables))
}

/// Whether two allocators are one file probed at the same places (its
/// links serve both images).
fn same_allocator(a: Option<&Allocator>, b: Option<&Allocator>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let id = |p: &Path| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    match (a, b) {
        (Some(a), Some(b)) => {
            id(&a.open_path).is_some()
                && id(&a.open_path) == id(&b.open_path)
                && a.probes
                    .iter()
                    .map(|p| (p.func, p.offset, p.args))
                    .eq(b.probes.iter().map(|p| (p.func, p.offset, p.args)))
        }
        _ => false,
    }
}

/// Dropped newest first: an entry probe before the return probe it
/// needs (they were attached the other way round).
fn drop_links(mut links: Vec<Link>) {
    while links.pop().is_some() {}
}

/// The uprobes of each followed process (the root's too) and the
/// allocator they probe.
#[derive(Default)]
struct Probed {
    links: FxMap<u32, Vec<Link>>,
    allocs: FxMap<u32, Option<Allocator>>,
    /// Threads dropping the links of processes that ended.
    droppers: Vec<JoinHandle<()>>,
}

impl Probed {
    /// Attaches `pid`'s probes and keeps them; says when they could not be
    /// attached (`what`: how it is recorded then).
    fn probe(
        &mut self,
        skel: &bpf::TracerSkel<'_>,
        pid: u32,
        alloc: Option<Allocator>,
        probes: &[crate::recorder::probes::Resolved],
        tx: &Sender<Msg>,
        what: &str,
    ) {
        match attach_process(skel, pid, alloc.as_ref(), probes) {
            Ok(l) => {
                self.links.insert(pid, l);
            }
            Err(e) => {
                let _ = tx.send(Msg::Note(format!("{what}: {e:#}")));
            }
        }
        self.allocs.insert(pid, alloc);
    }

    /// The probes of processes no longer alive go, off the reading thread
    /// (each link waits a grace period, ~10–200 ms).
    fn release_ended(&mut self, alive: &crate::util::hash::FxSet<u32>) {
        let ended: Vec<u32> = self
            .links
            .keys()
            .copied()
            .filter(|p| !alive.contains(p))
            .collect();
        for p in ended {
            if let Some(l) = self.links.remove(&p) {
                self.droppers.push(thread::spawn(move || drop_links(l)));
            }
        }
        self.droppers.retain(|h| !h.is_finished());
    }

    /// Every link, each process's on a thread of its own: their grace
    /// periods overlap instead of adding up.
    fn release_all(&mut self) {
        let hs: Vec<_> = self
            .links
            .drain()
            .map(|(_, l)| thread::spawn(move || drop_links(l)))
            .chain(self.droppers.drain(..))
            .collect();
        for h in hs {
            let _ = h.join();
        }
    }
}

/// The uprobes of one process: its allocator's and the function probes.
fn attach_process(
    skel: &bpf::TracerSkel<'_>,
    pid: u32,
    allocator: Option<&Allocator>,
    probes: &[crate::recorder::probes::Resolved],
) -> Result<Vec<Link>> {
    let multi = uprobe_multi_supported();
    let mut links = Vec::new();
    match allocator {
        Some(alloc) if multi => links.extend(attach_multi(skel, pid, alloc)?),
        Some(alloc) => links.extend(attach_each(skel, pid, alloc)?),
        None => {}
    }
    if !probes.is_empty() {
        links.extend(attach_calls(skel, pid, probes, multi)?);
    }
    Ok(links)
}

/// uprobe_multi links (Linux 6.6+, with cookies and pid filtering).
/// `TM_NO_UPROBE_MULTI=1` forces one link per probe (to test that path).
fn uprobe_multi_supported() -> bool {
    if std::env::var_os("TM_NO_UPROBE_MULTI").is_some_and(|v| v == "1") {
        return false;
    }
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut it = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    (major, minor) >= (6, 6)
}

/// Two links for the whole allocator: every return probe first (an entry
/// that fires must find its return probe in place), then every entry
/// point, each with its function as the cookie.
fn attach_multi(
    skel: &bpf::TracerSkel<'_>,
    pid: u32,
    alloc: &discover::Allocator,
) -> Result<Vec<Link>> {
    let with_ret: Vec<&discover::Probe> = alloc
        .probes
        .iter()
        .filter(|p| p.func != AllocFn::Free)
        .collect();
    // The return probe where the entry probe is: at the entry it would be
    // single-stepped there (the stack pointer is as at entry at both, so
    // [rsp] is the return address it replaces).
    let ret = UprobeMultiOpts {
        offsets: with_ret.iter().map(|p| p.offset as usize).collect(),
        retprobe: true,
        ..Default::default()
    };
    let entries = |frees: bool| {
        let these: Vec<&discover::Probe> = alloc
            .probes
            .iter()
            .filter(|p| (p.func == AllocFn::Free) == frees)
            .collect();
        UprobeMultiOpts {
            offsets: these.iter().map(|p| p.offset as usize).collect(),
            cookies: these
                .iter()
                .map(|p| {
                    let [a0, a1, a2] = p.args.map(u64::from);
                    u64::from(tm_fn(p.func).0) | a0 << 8 | a1 << 16 | a2 << 24
                })
                .collect(),
            ..Default::default()
        }
    };
    let attach = |prog: &libbpf_rs::ProgramMut<'_>, opts: UprobeMultiOpts, what: &str| {
        prog.attach_uprobe_multi_with_opts(pid as i32, &alloc.open_path, "", opts)
            .map_err(|e| {
                if !process_alive(pid) {
                    anyhow!("process {pid} exited while tm-tui was attaching")
                } else {
                    anyhow!(
                        "failed to attach the allocator {what} probes in {}: {e}",
                        alloc.open_path.display()
                    )
                }
            })
    };
    // A link's probes go in (and out) one by one, milliseconds apart on a
    // busy target. free goes in before the allocating functions and out
    // after them (links are dropped newest first): every block allocated
    // while recording has its free seen, and a free of a block allocated
    // before is reported as such; the other way round, a block allocated
    // and freed inside the gap would look leaked.
    Ok(vec![
        attach(&skel.progs.tm_alloc_ret_multi, ret, "return")?,
        attach(&skel.progs.tm_alloc_multi, entries(true), "free")?,
        attach(&skel.progs.tm_alloc_multi, entries(false), "entry")?,
    ])
}

/// The function probes: per module, the return probes first (an entry
/// that fires must find its return probe in place), then the entries.
fn attach_calls(
    skel: &bpf::TracerSkel<'_>,
    pid: u32,
    probes: &[crate::recorder::probes::Resolved],
    multi: bool,
) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    let failed = |e: libbpf_rs::Error, what: String| {
        if !process_alive(pid) {
            anyhow!("process {pid} exited while tm-tui was attaching")
        } else {
            anyhow!("failed to attach {what}: {e}")
        }
    };
    let mut modules: Vec<&Path> = probes.iter().map(|p| p.open_path.as_path()).collect();
    modules.dedup();
    modules.sort();
    modules.dedup();
    for path in modules {
        let here: Vec<&crate::recorder::probes::Resolved> =
            probes.iter().filter(|p| p.open_path == path).collect();
        if multi {
            let with_ret: Vec<&&crate::recorder::probes::Resolved> =
                here.iter().filter(|p| p.probe.returns).collect();
            let ret = UprobeMultiOpts {
                offsets: with_ret.iter().map(|p| p.probe.offset as usize).collect(),
                cookies: with_ret.iter().map(|p| u64::from(p.probe.id)).collect(),
                retprobe: true,
                ..Default::default()
            };
            // Probes with string arguments go to the sleepable program.
            let entry = |strs: bool| {
                let these: Vec<&&crate::recorder::probes::Resolved> = here
                    .iter()
                    .filter(|p| (p.str_mask() != 0) == strs)
                    .collect();
                UprobeMultiOpts {
                    offsets: these.iter().map(|p| p.probe.offset as usize).collect(),
                    cookies: these
                        .iter()
                        .map(|p| u64::from(p.probe.id) | u64::from(p.str_mask()) << 32)
                        .collect(),
                    ..Default::default()
                }
            };
            let what = |dir: &str| format!("the {dir} probes in {}", path.display());
            if !with_ret.is_empty() {
                links.push(
                    skel.progs
                        .tm_call_ret_multi
                        .attach_uprobe_multi_with_opts(pid as i32, path, "", ret)
                        .map_err(|e| failed(e, what("function return")))?,
                );
            }
            for (prog, strs) in [
                (&skel.progs.tm_call_multi, false),
                (&skel.progs.tm_call_str_multi, true),
            ] {
                let opts = entry(strs);
                if opts.offsets.is_empty() {
                    continue;
                }
                links.push(
                    prog.attach_uprobe_multi_with_opts(pid as i32, path, "", opts)
                        .map_err(|e| failed(e, what("function entry")))?,
                );
            }
            continue;
        }
        for (prog, retprobe, strs) in [
            (&skel.progs.tm_call_ret, true, None),
            (&skel.progs.tm_call, false, Some(false)),
            (&skel.progs.tm_call_str, false, Some(true)),
        ] {
            let wanted = |p: &crate::recorder::probes::Resolved| match strs {
                None => p.probe.returns,
                Some(s) => (p.str_mask() != 0) == s,
            };
            for p in here.iter().filter(|p| wanted(p)) {
                let cookie = u64::from(p.probe.id)
                    | if retprobe {
                        0
                    } else {
                        u64::from(p.str_mask()) << 32
                    };
                let opts = UprobeOpts {
                    retprobe,
                    cookie,
                    ..Default::default()
                };
                links.push(
                    prog.attach_uprobe_with_opts(pid as i32, path, p.probe.offset as usize, opts)
                        .map_err(|e| failed(e, format!("a probe to {}", p.probe.func)))?,
                );
            }
        }
    }
    Ok(links)
}

/// One link per probe (kernels without uprobe_multi): return probes
/// first, then entry points.
fn attach_each(
    skel: &bpf::TracerSkel<'_>,
    pid: u32,
    alloc: &discover::Allocator,
) -> Result<Vec<Link>> {
    let mut links = Vec::new();
    // These programs read the arguments from their own registers: a
    // placement that found one moved goes back to the entry.
    let probes: Vec<discover::Probe> = alloc
        .probes
        .iter()
        .cloned()
        .map(|mut p| {
            if p.args != [0, 1, 2] {
                p.at_entry();
            }
            p
        })
        .collect();
    for probe in probes.iter().filter(|p| p.func != AllocFn::Free) {
        links.push(attach_uprobe(
            &skel.progs.tm_alloc_ret,
            pid,
            &alloc.open_path,
            probe.offset,
            true,
            probe.name,
        )?);
    }
    // free first (see attach_multi); links are dropped newest first.
    let frees_first = probes
        .iter()
        .filter(|p| p.func == AllocFn::Free)
        .chain(probes.iter().filter(|p| p.func != AllocFn::Free));
    for probe in frees_first {
        let prog = match probe.func {
            AllocFn::Malloc => &skel.progs.tm_malloc,
            AllocFn::Calloc => &skel.progs.tm_calloc,
            AllocFn::Realloc => &skel.progs.tm_realloc,
            AllocFn::Reallocarray => &skel.progs.tm_reallocarray,
            AllocFn::PosixMemalign => &skel.progs.tm_posix_memalign,
            AllocFn::Memalign => &skel.progs.tm_memalign,
            AllocFn::Valloc => &skel.progs.tm_valloc,
            AllocFn::Pvalloc => &skel.progs.tm_pvalloc,
            AllocFn::Free => &skel.progs.tm_free,
        };
        links.push(attach_uprobe(
            prog,
            pid,
            &alloc.open_path,
            probe.offset,
            false,
            probe.name,
        )?);
    }
    Ok(links)
}

fn attach_uprobe(
    prog: &libbpf_rs::ProgramMut<'_>,
    pid: u32,
    path: &Path,
    offset: u64,
    retprobe: bool,
    name: &str,
) -> Result<Link> {
    let opts = UprobeOpts {
        retprobe,
        ..Default::default()
    };
    prog.attach_uprobe_with_opts(pid as i32, path, offset as usize, opts)
        .map_err(|e| {
            if !process_alive(pid) {
                anyhow!("process {pid} exited while tm-tui was attaching")
            } else {
                anyhow!(
                    "failed to attach {} to {name} in {} (+{offset:#x}): {e}",
                    if retprobe { "uretprobe" } else { "uprobe" },
                    path.display()
                )
            }
        })
}

/// Alive and not a zombie.
pub fn process_alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

/// What the decoder keeps per followed process; the current one's lives in
/// the decoder's own fields (swapped in by [`Decoder::switch_to`]).
struct Proc {
    maps: MapsCache,
    fds: fds::FdTable,
}

impl Proc {
    fn new(pid: u32) -> Self {
        let mut fds = fds::FdTable::new(pid);
        fds.seed();
        Proc {
            maps: MapsCache::new(pid),
            fds,
        }
    }
}

/// Decoding state shared by the ring buffer callback.
struct Decoder<'a> {
    /// The recording's first process.
    root: u32,
    /// The process whose state is in `maps` and `fds`.
    cur: u32,
    /// The other processes' state.
    procs: FxMap<u32, Proc>,
    /// Process of every thread not the root's (threads of followed
    /// children, children's main threads).
    tids: FxMap<u32, u32>,
    /// Followed processes not ended yet (the root included).
    alive: crate::util::hash::FxSet<u32>,
    /// Children are followed.
    follow: bool,
    /// The watchpoints, told of released slots.
    watcher: Option<Arc<watch::Watcher>>,
    stacks_map: &'a libbpf_rs::MapMut<'a>,
    /// tgid → address of glibc's `__abort_msg` in it (see abortmsg.rs).
    abort_msgs: &'a libbpf_rs::MapMut<'a>,
    /// The libc whose `__abort_msg` the tracer was told of, per tgid.
    abort_libc: Option<(u32, std::path::PathBuf)>,
    /// Events handed to the channel (the status line's backlog).
    sent: &'a AtomicU64,
    /// The tracer's .bss (mmapped), for the code-range globals.
    bss: Option<*mut types::bss>,
    /// The program's text as last written.
    code_range: (u64, u64),
    /// The tracer's unwind tables.
    tables: tables::Tables,
    tx: &'a Sender<Msg>,
    table: StackTable,
    maps: MapsCache,
    unwinder: Unwinder,
    batch: Vec<Event>,
    awaiting_exec: bool,
    exited: bool,
    channel_lost: u64,
    undecodable: u64,
    /// The function probes, by id: argument types, return probed or not.
    probes: Vec<crate::event::Probe>,
    /// What each fd of the target is (path or peer).
    fds: fds::FdTable,
    /// Return-probed calls not returned yet, per thread, innermost last:
    /// (entry sp, the real return address the trampoline stands for).
    open_calls: FxMap<u32, Vec<(u64, u64)>>,
}

const BATCH: usize = 4096;

impl Decoder<'_> {
    /// Tells the tracer where the target's code is: the unwind tables of
    /// every executable mapping, and the program's own text (for the
    /// signal-handler test of the allocator probes).
    fn sync_code(&mut self) {
        // A launched program before its exec is still a copy of tm-tui:
        // its maps would overwrite the ranges the tracer sets at exec.
        if self.awaiting_exec && self.cur == self.root {
            return;
        }
        // Notes of modules without unwind info are sent from here.
        self.tables.sync(self.maps.pid(), self.maps.entries());
        for n in self.tables.notes.drain(..) {
            let _ = self.tx.send(Msg::Note(n));
        }
        self.sync_abort_msg();
        // The program-text range is the root's.
        if self.cur != self.root {
            return;
        }
        let exe = format!("/proc/{}/exe", self.maps.pid());
        let exe = std::fs::read_link(exe).ok();
        let (mut lo, mut hi) = (u64::MAX, 0);
        for m in self.maps.entries().iter().filter(|m| m.exec) {
            if m.path.is_some() && m.path == exe {
                lo = lo.min(m.start);
                hi = hi.max(m.end);
            }
        }
        // Nothing readable (the process is gone): keep what the tracer
        // learned by itself.
        if hi == 0 || (lo, hi) == self.code_range {
            return;
        }
        let Some(bss) = self.bss else {
            return;
        };
        // SAFETY: `bss` points into the skeleton's mmapped .bss, which
        // outlives the decoder; the tracer writes the same u64 globals
        // at exec, and aligned u64 stores do not tear on x86-64 (a race
        // only decides whose range wins until the next sync).
        unsafe {
            std::ptr::write_volatile(&raw mut (*bss).code_exe_lo, lo);
            std::ptr::write_volatile(&raw mut (*bss).code_exe_hi, hi);
        }
        self.code_range = (lo, hi);
    }

    /// Make `pid`'s state the current one.
    fn switch_to(&mut self, pid: u32) {
        if pid == self.cur {
            return;
        }
        let next = self.procs.remove(&pid).unwrap_or_else(|| Proc::new(pid));
        let prev = Proc {
            maps: std::mem::replace(&mut self.maps, next.maps),
            fds: std::mem::replace(&mut self.fds, next.fds),
        };
        self.procs.insert(self.cur, prev);
        self.cur = pid;
    }

    /// The process of thread `tid`.
    fn pid_of(&self, tid: u32) -> u32 {
        self.tids.get(&tid).copied().unwrap_or(self.root)
    }

    /// A followed child appeared (fork): fresh state read from it.
    fn new_process(&mut self, pid: u32) {
        self.tids.insert(pid, pid);
        self.alive.insert(pid);
        if pid == self.cur {
            self.switch_to(self.root);
        }
        self.procs.insert(pid, Proc::new(pid));
    }

    /// Tells the tracer where glibc's abort message is in the target, once
    /// its libc is mapped (again after an exec).
    fn sync_abort_msg(&mut self) {
        let pid = self.maps.pid();
        let Some((libc, at)) = abortmsg::locate(self.maps.entries()) else {
            return;
        };
        if self
            .abort_libc
            .as_ref()
            .is_some_and(|(p, l)| *p == pid && *l == libc)
        {
            return;
        }
        // Without it an abort's message is missing, nothing else.
        if self
            .abort_msgs
            .update(&pid.to_ne_bytes(), &at.to_ne_bytes(), MapFlags::ANY)
            .is_ok()
        {
            self.abort_libc = Some((pid, libc));
        }
    }

    fn handle(&mut self, data: &[u8]) {
        let Ok(hdr) = plain::from_bytes::<types::tm_hdr>(data) else {
            self.undecodable += 1;
            return;
        };
        let (kind, tid, ts) = (hdr.kind, hdr.tid, hdr.ts);
        let pid = self.pid_of(tid);
        self.switch_to(pid);
        let Some(kind) = Rec::from_repr(kind.0) else {
            self.undecodable += 1;
            return;
        };
        let decoded = match kind {
            Rec::Heap => self.heap(data),
            Rec::Syscall => self.syscall(data),
            Rec::Signal => self.signal(data),
            Rec::Call => self.call(data),
            Rec::Ret => plain::from_bytes::<types::tm_ret_rec>(data).ok().map(|r| {
                // This call, and any deeper one unwound past, are over.
                let entry = crate::event::return_entry_sp(r.sp);
                if let Some(open) = self.open_calls.get_mut(&tid) {
                    while open.last().is_some_and(|(sp, _)| *sp <= entry) {
                        open.pop();
                    }
                }
                EventKind::Return {
                    probe: r.probe,
                    ret: r.ret,
                    sp: r.sp,
                }
            }),
            Rec::Io => match plain::from_bytes::<types::tm_io_rec>(data) {
                Ok(r) => {
                    let stack = self.stack(r.stack);
                    self.fds.decode(
                        r.nr,
                        r.ret,
                        r.dur,
                        &r.args,
                        &r.data[..(r.data_len as usize).min(r.data.len())],
                        stack,
                    )
                }
                Err(_) => None,
            },
            Rec::Watch => match plain::from_bytes::<types::tm_watch_rec>(data) {
                // A slot released (not an event): its breakpoints go quiet.
                Ok(r) if r.write == 2 => {
                    if let Some(w) = &self.watcher {
                        w.on_release(r.slot as usize, r.gen);
                    }
                    return;
                }
                Ok(r) => Some(self.watch(r)),
                Err(_) => None,
            },
            Rec::OffCpu => plain::from_bytes::<types::tm_offcpu_rec>(data)
                .ok()
                .map(|r| EventKind::OffCpu {
                    dur_ns: r.dur,
                    preempted: r.preempted != 0,
                    stack: self.stack(r.stack),
                }),
            Rec::Fork => plain::from_bytes::<types::tm_fork_rec>(data).ok().map(|r| {
                if r.is_thread != 0 {
                    if pid != self.root {
                        self.tids.insert(r.child, pid);
                    }
                } else if self.follow {
                    self.new_process(r.child);
                }
                EventKind::Spawn {
                    child: r.child,
                    thread: r.is_thread != 0,
                }
            }),
            Rec::Exec => plain::from_bytes::<types::tm_exec_rec>(data).ok().map(|r| {
                let bytes = c_bytes(&r.filename);
                // A new image: nothing of the old mappings is valid (the
                // tracer reset its code ranges at the exec too).
                self.maps = MapsCache::new(self.maps.pid());
                // The old image's address means nothing in the new one.
                let _ = self.abort_msgs.delete(&self.maps.pid().to_ne_bytes());
                self.abort_libc = None;
                self.open_calls.clear();
                if pid == self.root {
                    self.awaiting_exec = false;
                } else {
                    // The tracer dropped the old image's tables.
                    self.tables.forget(pid);
                }
                self.code_range = Default::default();
                self.sync_code();
                EventKind::Exec {
                    filename: String::from_utf8_lossy(&bytes).into_owned(),
                }
            }),
            Rec::Exit => plain::from_bytes::<types::tm_exit_rec>(data).ok().map(|r| {
                self.open_calls.remove(&tid);
                if tid != pid {
                    self.tids.remove(&tid);
                }
                if r.group_dead != 0 {
                    self.alive.remove(&pid);
                    if pid != self.root {
                        self.tids.remove(&pid);
                        self.tables.forget(pid);
                    }
                    self.exited = self.alive.is_empty();
                    let code = if r.group_exit_code != 0 {
                        r.group_exit_code
                    } else {
                        r.exit_code
                    };
                    EventKind::ProcessExit {
                        status: ExitStatus::from_kernel(code),
                    }
                } else {
                    EventKind::ThreadExit { code: r.exit_code }
                }
            }),
        };
        let Some(kind) = decoded else {
            self.undecodable += 1;
            return;
        };
        if self.awaiting_exec && !matches!(kind, EventKind::Exec { .. }) {
            return;
        }
        self.batch.push(Event { ts, pid, tid, kind });
        if self.batch.len() >= BATCH {
            self.flush();
        }
    }

    /// A watchpoint's hit.
    fn watch(&mut self, r: &types::tm_watch_rec) -> EventKind {
        use crate::event::{WatchHit, WatchWhat};
        let what = match r.kind {
            k if k == types::tm_watch_kind::TM_WK_UAF.0 => WatchWhat::Freed,
            k if k == types::tm_watch_kind::TM_WK_OVERFLOW.0 => WatchWhat::PastEnd,
            k if k == types::tm_watch_kind::TM_WK_UNDERFLOW.0 => WatchWhat::BeforeStart,
            _ => WatchWhat::Asked,
        };
        EventKind::Watch(Box::new(WatchHit {
            what,
            addr: r.addr,
            len: r.len,
            write: r.write != 0,
            block: r.block,
            size: r.size,
            ip: r.ip,
            value: r.value,
            before: r.before,
            regs: r.regs.to_vec(),
            code: r.code.to_vec(),
            stack: self.stack(r.stack),
        }))
    }

    /// The id of the stack the tracer interned under `key`. The tracer's
    /// walk already replaced uretprobe trampolines by the addresses they
    /// stand for; the kernel table holds a stack only until it is read
    /// here (the id is kept on this side), so it never fills with stacks
    /// already seen, however long the recording.
    fn stack(&mut self, key: u64) -> Option<u32> {
        if key == 0 {
            return None;
        }
        let map = self.stacks_map;
        self.table.intern(
            key,
            || {
                let k = key.to_ne_bytes();
                let bytes = map.lookup(&k, MapFlags::ANY).ok()??;
                let st = plain::from_bytes::<types::tm_stack>(&bytes).ok()?;
                let n = (st.nr as usize).min(st.ips.len());
                let ips = st.ips[..n].to_vec();
                let end = u8::try_from(st.end.0)
                    .ok()
                    .and_then(StackEnd::from_repr)
                    .unwrap_or(StackEnd::Unknown);
                // Another CPU may be re-adding it: harmless, the key is
                // the same and known here from now on.
                let _ = map.delete(&k);
                Some((ips, end))
            },
            false,
            &mut self.maps,
            self.tx,
        )
    }

    fn heap(&mut self, data: &[u8]) -> Option<EventKind> {
        let r = *plain::from_bytes::<types::tm_heap_rec>(data).ok()?;
        let func = alloc_fn(r.r#fn)?;
        let stack = self.stack(r.stack);
        Some(match func {
            AllocFn::Free => EventKind::Free { ptr: r.ptr, stack },
            AllocFn::Realloc | AllocFn::Reallocarray => EventKind::Realloc {
                func,
                old: r.old_ptr,
                ptr: r.ptr,
                size: r.size,
                stack,
            },
            _ => EventKind::Alloc {
                func,
                ptr: r.ptr,
                size: r.size,
                stack,
            },
        })
    }

    fn syscall(&mut self, data: &[u8]) -> Option<EventKind> {
        let r = plain::from_bytes::<types::tm_syscall_rec>(data).ok()?;
        let a = r.args;
        Some(match r.nr {
            types::tm_nr::TM_NR_MMAP => {
                const PROT_EXEC: u64 = 4;
                if r.ret > 0 && a[2] & PROT_EXEC != 0 {
                    // New code (dlopen): learn its path while it is mapped,
                    // and tell the tracer where code is.
                    self.maps.refresh();
                    self.sync_code();
                }
                EventKind::Mmap {
                    addr: a[0],
                    len: a[1],
                    prot: a[2] as u32,
                    flags: a[3] as u32,
                    fd: a[4] as i32,
                    offset: a[5],
                    ret: r.ret,
                }
            }
            types::tm_nr::TM_NR_MUNMAP => EventKind::Munmap {
                addr: a[0],
                len: a[1],
                ret: r.ret,
            },
            types::tm_nr::TM_NR_MREMAP => EventKind::Mremap {
                old: a[0],
                old_len: a[1],
                new_len: a[2],
                flags: a[3] as u32,
                ret: r.ret,
            },
            types::tm_nr::TM_NR_BRK => EventKind::Brk {
                req: a[0],
                ret: r.ret,
            },
            _ => return None,
        })
    }

    fn call(&mut self, data: &[u8]) -> Option<EventKind> {
        let r = plain::from_bytes::<types::tm_call_rec>(data).ok()?;
        let probe = self.probes.get(r.probe as usize)?;
        let mut slot = 0usize;
        let args = probe
            .args
            .iter()
            .zip(r.args)
            .map(|(t, v)| {
                if *t != ValueType::Str {
                    return Arg::typed(*t, v);
                }
                let s = slot;
                slot += 1;
                let n = STR_LEN;
                match r.strs.get(s * n..(s + 1) * n) {
                    Some(chars) if r.str_bad & (1 << s) == 0 => {
                        let bytes = c_bytes(chars);
                        let mut text = String::from_utf8_lossy(&bytes).into_owned();
                        if bytes.len() == n - 1 {
                            text.push('…');
                        }
                        Arg::Str(text)
                    }
                    _ => Arg::BadStr(v),
                }
            })
            .collect();
        let returns = probe.returns;
        let tid = r.h.tid;
        let mut call = CallInfo {
            probe: r.probe,
            args,
            sp: r.sp,
            stack: None,
            ret_addr: r.ret_addr,
        };
        let open = self.open_calls.entry(tid).or_default();
        while open.last().is_some_and(|(sp, _)| call.ends_open_call(*sp)) {
            open.pop();
        }
        if returns {
            // The real return address: the tail caller's, if tail-called.
            let real = match open.last() {
                Some((sp, ra)) if call.tail_called() && *sp == r.sp => *ra,
                _ => r.ret_addr,
            };
            open.push((r.sp, real));
        }
        call.stack = self.stack(r.stack);
        Some(EventKind::Call(Box::new(call)))
    }

    fn signal(&mut self, data: &[u8]) -> Option<EventKind> {
        let r = plain::from_bytes::<types::tm_signal_rec>(data).ok()?;
        let len = (r.copy_len as usize).min(r.copy.len());
        let regs = Regs {
            ip: r.ip,
            sp: r.sp,
            bp: r.bp,
        };
        self.maps.refresh();
        let mut open = self.open_calls.get(&r.h.tid).cloned().unwrap_or_default();
        // The kernel's pending return probes of the thread (the allocator's
        // included, which open_calls does not track).
        let nrets = (r.nrets as usize).min(r.rets.len());
        open.extend(r.rets[..nrets].iter().map(|[slot, ra]| (*slot, *ra)));
        let real_return = |slot: u64| open.iter().find(|(sp, _)| *sp == slot).map(|(_, ra)| *ra);
        let mut addrs =
            self.unwinder
                .unwind(&regs, &r.copy[..len], self.maps.entries(), 64, &real_return);
        if addrs.is_empty() {
            addrs.push(r.ip);
        }
        let stack = self
            .table
            .intern_addrs(&addrs, true, &mut self.maps, self.tx);
        // si_code <= 0: sent by a process (kill, tkill, sigqueue). Its comm
        // comes from signal_generate (in the sender's context); failing
        // that, /proc now, while a sender like a shell is likely alive.
        let sender = (r.code <= 0).then(|| {
            let comm = if r.sender_known != 0 {
                String::from_utf8_lossy(&c_bytes(&r.sender_comm)).into_owned()
            } else {
                std::fs::read_to_string(format!("/proc/{}/comm", r.sender_pid))
                    .map(|c| c.trim_end().to_string())
                    .unwrap_or_default()
            };
            SignalSender {
                pid: r.sender_pid,
                uid: r.sender_uid,
                comm,
            }
        });
        let insn_len = (r.insn_len as usize).min(r.insn.len());
        let message = (r.msg_len > 0).then(|| {
            let n = (r.msg_len as usize).min(r.msg.len());
            let bytes = c_bytes(&r.msg[..n]);
            String::from_utf8_lossy(&bytes).trim_end().to_string()
        });
        Some(EventKind::Signal(Box::new(SignalInfo {
            signo: r.sig,
            code: r.code,
            errno: r.err,
            addr: r.addr,
            handled: r.handled != 0,
            ip: r.ip,
            sp: r.sp,
            stack,
            sender,
            regs: r.regs.to_vec(),
            insn: r.insn[..insn_len].to_vec(),
            message,
        })))
    }

    fn flush(&mut self) {
        if self.batch.is_empty() {
            return;
        }
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH));
        let n = batch.len() as u64;
        match self.tx.try_send(Msg::Events(batch)) {
            Ok(()) => {
                self.sent.fetch_add(n, Ordering::Relaxed);
            }
            Err(TrySendError::Full(_)) => self.channel_lost += n,
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn read_lost(skel: &bpf::TracerSkel<'_>, d: &Decoder<'_>) -> Lost {
    let mut lost = Lost {
        channel: d.channel_lost,
        undecodable: d.undecodable,
        ..Lost::default()
    };
    if let Some(bss) = skel.maps.bss_data.as_deref() {
        // SAFETY: the .bss map is mmapped and stays valid while `skel`
        // lives; BPF programs update these counters concurrently, so read
        // them volatile (a torn read of a u64 counter cannot happen on
        // x86-64, it is one aligned load).
        let (counters, stack_errors) = unsafe {
            (
                std::ptr::read_volatile(&raw const bss.lost),
                std::ptr::read_volatile(&raw const bss.stack_errors),
            )
        };
        for (slot, why) in KERNEL_LOSSES {
            let n = counters.get(slot.0 as usize).map_or(0, |c| c.iter().sum());
            lost.set(why, n);
        }
        lost.stackless = stack_errors;
    }
    lost
}

/// `TM_DEBUG=1`: how often the kernel ran the free probe, on stderr.
fn debug_probe_hits(skel: &bpf::TracerSkel<'_>) {
    if std::env::var_os("TM_DEBUG").is_none() {
        return;
    }
    if let Some(bss) = skel.maps.bss_data.as_deref() {
        // SAFETY: as in `read_lost`.
        let hits = unsafe { std::ptr::read_volatile(&raw const bss.free_hits) };
        eprintln!(
            "tm-tui: debug: free probe ran {} times in other processes, {} in the target",
            hits[0], hits[1]
        );
        // SAFETY: as above.
        let (claims, ignored, stray, reports, disarms) = unsafe {
            (
                std::ptr::read_volatile(&raw const bss.watch_claims),
                std::ptr::read_volatile(&raw const bss.watch_ignored),
                std::ptr::read_volatile(&raw const bss.watch_stray),
                std::ptr::read_volatile(&raw const bss.watch_reports),
                std::ptr::read_volatile(&raw const bss.watch_disarm_stops),
            )
        };
        eprintln!(
            "tm-tui: debug: watchpoints: claims {claims:?} (by kind), allocator's hits ignored {ignored}, stray hits {stray} (stops to disarm {disarms}), reported {reports}"
        );
    }
}

/// Records taken from the ring buffer between two looks at the stop flag:
/// a flood cannot keep the loop from seeing it.
const CONSUME_STEP: usize = 4096;

/// Waits up to `timeout` for the ring buffer to signal data, without
/// consuming (libbpf's poll would drain all there is in one go). A signal
/// interrupting the wait is a timeout.
fn wait_ring(rb: &libbpf_rs::RingBuffer<'_>, timeout: Duration) {
    let mut ev = libc::epoll_event { events: 0, u64: 0 };
    // SAFETY: epoll_wait writes at most one event into `ev`, which lives
    // across the call; the fd is the ring buffer's own epoll instance.
    unsafe {
        libc::epoll_wait(rb.epoll_fd(), &raw mut ev, 1, timeout.as_millis() as i32);
    }
}

/// Bytes the ring buffer holds unread.
fn ring_unread(rb: &libbpf_rs::RingBuffer<'_>) -> u64 {
    use libbpf_rs::AsRawLibbpf;
    // SAFETY: the ring_buffer pointer is valid while `rb` lives, and it has
    // one ring (index 0); ring__avail_data_size only reads its positions.
    unsafe {
        let ring = libbpf_rs::libbpf_sys::ring_buffer__ring(rb.as_libbpf_object().as_ptr(), 0);
        if ring.is_null() {
            0
        } else {
            libbpf_rs::libbpf_sys::ring__avail_data_size(ring) as u64
        }
    }
}

/// Takes up to `n` records; an interrupted call is retried.
fn consume_n(rb: &libbpf_rs::RingBuffer<'_>, n: usize) -> Result<usize> {
    loop {
        let got = rb.consume_raw_n(n);
        if got >= 0 {
            return Ok(got as usize);
        }
        if got != -libc::EINTR {
            bail!(
                "ring buffer consume failed: {}",
                std::io::Error::from_raw_os_error(-got)
            );
        }
    }
}

/// The allocator stops being recorded everywhere at once (`armed`), then
/// the links go, newest first: every entry probe before its return probe
/// (they were attached the other way round), or calls entered after their
/// return probe went would count as lost.
fn detach(links: &mut Vec<Link>, probed: &mut Probed, bss: Option<*mut types::bss>) {
    if let Some(bss) = bss {
        // SAFETY: `bss` points into the skeleton's mmapped .bss, valid
        // while the skeleton lives (it outlives the poll loop); a 4-byte
        // aligned store the BPF programs read.
        unsafe { std::ptr::write_volatile(&raw mut (*bss).armed, 0) };
    }
    probed.release_all();
    while links.pop().is_some() {}
}

/// Everything left in the ring buffer.
fn drain(rb: &libbpf_rs::RingBuffer<'_>) -> Result<()> {
    while consume_n(rb, CONSUME_STEP)? == CONSUME_STEP {}
    Ok(())
}

/// Makes the watcher the tracer thread arms slots with, and gives every
/// thread of the target (and of children already followed) its
/// breakpoints; threads started later get theirs at their first stop.
fn start_watcher(cfg: &Config, skel: &bpf::TracerSkel<'_>, w: &WatchConfig) -> Result<()> {
    use std::os::fd::AsFd;
    let prog = skel
        .progs
        .tm_watch_hit
        .as_fd()
        .try_clone_to_owned()
        .context("cannot keep the watchpoint program")?;
    let slots = libbpf_rs::MapHandle::try_from(&skel.maps.watches)
        .context("cannot keep the watchpoint map")?;
    let signalled = libbpf_rs::MapHandle::try_from(&skel.maps.watch_signalled)
        .context("cannot keep the watchpoint map")?;
    let watcher = w
        .cell
        .get_or_init(|| Arc::new(watch::Watcher::new(prog, slots, signalled)));
    for pid in std::iter::once(cfg.pid).chain(cfg.adopt.iter().map(|(p, _)| *p)) {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for t in tasks.flatten() {
            if let Some(tid) = t.file_name().to_str().and_then(|n| n.parse().ok()) {
                watcher.add_thread(tid, pid);
            }
        }
    }
    // Attached: the asked addresses are there now (launched: at its entry).
    if !cfg.await_exec {
        arm_asked(cfg, watcher)?;
    }
    Ok(())
}

/// Arms each asked address in the root process, each in a slot of its
/// own from the last one down.
fn arm_asked(cfg: &Config, watcher: &watch::Watcher) -> Result<()> {
    let Some(w) = &cfg.watch else { return Ok(()) };
    for (i, a) in w.asked.iter().enumerate() {
        let slot = watch::SLOTS - 1 - i;
        if !watcher.arm_asked(slot, cfg.pid, a) {
            bail!(
                "cannot watch {}: its address in pid {} is not known (is its module mapped?)",
                a.text,
                cfg.pid
            );
        }
    }
    Ok(())
}

fn poll_loop(
    cfg: &Config,
    skel: &bpf::TracerSkel<'_>,
    (mut links, root_links, tables): (Vec<Link>, Vec<Link>, tables::Tables),
    tx: &Sender<Msg>,
    stop: &AtomicBool,
    backlog: &Backlog,
    bss: Option<*mut types::bss>,
) -> Result<()> {
    let decoder = RefCell::new(Decoder {
        stacks_map: &skel.maps.stacks,
        abort_msgs: &skel.maps.abort_msgs,
        abort_libc: None,
        sent: &backlog.sent,
        bss,
        code_range: (0, 0),
        tables,
        tx,
        table: StackTable::default(),
        maps: MapsCache::new(cfg.pid),
        root: cfg.pid,
        cur: cfg.pid,
        procs: FxMap::default(),
        tids: FxMap::default(),
        alive: [cfg.pid].into_iter().collect(),
        follow: cfg.follow,
        unwinder: Unwinder::new(),
        batch: Vec::with_capacity(BATCH),
        awaiting_exec: cfg.await_exec,
        exited: false,
        channel_lost: 0,
        undecodable: 0,
        probes: cfg.probes.iter().map(|p| p.probe.clone()).collect(),
        open_calls: FxMap::default(),
        fds: fds::FdTable::new(cfg.pid),
        watcher: cfg.watch.as_ref().and_then(|w| w.cell.get().cloned()),
    });
    decoder.borrow_mut().sync_code();
    decoder.borrow_mut().fds.seed();
    let mut builder = RingBufferBuilder::new();
    builder
        .add(&skel.maps.events, |data: &[u8]| {
            if let Ok(mut d) = decoder.try_borrow_mut() {
                d.handle(data);
            }
            0
        })
        .context("failed to set up the ring buffer")?;
    let rb = builder
        .build()
        .context("failed to set up the ring buffer")?;

    // A held tracee waits for this loop: its eventfd wakes the wait on
    // the ring buffer.
    if let Some(h) = &cfg.exit_hold {
        use std::os::fd::AsRawFd;
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: u64::MAX,
        };
        // SAFETY: adds a valid fd we keep open (the Arc in cfg) to the ring
        // buffer's epoll instance, which only our own epoll_wait reads
        // (records are taken with consume, never with libbpf's poll).
        unsafe {
            libc::epoll_ctl(
                rb.epoll_fd(),
                libc::EPOLL_CTL_ADD,
                h.wake.as_raw_fd(),
                &raw mut ev,
            );
        }
    }
    let mut last_lost = Lost::default();
    let mut last_check = Instant::now();
    // Per process: its uprobe links and the allocator they probe (the
    // root's from setup).
    let mut probed = Probed::default();
    probed.links.insert(cfg.pid, root_links);
    probed.allocs.insert(cfg.pid, cfg.allocator.clone());
    // Children already running (--children): followed from now on, with
    // their own allocator and unwind tables.
    for &(pid, _) in &cfg.adopt {
        let one = 1u32.to_ne_bytes();
        if skel
            .maps
            .procs
            .update(&pid.to_ne_bytes(), &one, MapFlags::ANY)
            .is_err()
        {
            let _ = tx.send(Msg::Note(format!(
                "child {pid} is not recorded: too many processes"
            )));
            continue;
        }
        let alloc = if cfg.allocator.is_some() {
            discover::for_pid(pid).ok()
        } else {
            None
        };
        {
            let mut d = decoder.borrow_mut();
            d.new_process(pid);
            d.switch_to(pid);
            d.sync_code();
        }
        probed.probe(
            skel,
            pid,
            alloc,
            &[],
            tx,
            &format!("child {pid} is recorded without its allocator"),
        );
    }
    let end = loop {
        // Records are submitted without wakeups below a fill threshold:
        // take what is there in steps, and wait on a short timer when the
        // buffer is empty.
        let drained = consume_n(&rb, CONSUME_STEP)? < CONSUME_STEP;
        backlog.ring_bytes.store(
            if drained { 0 } else { ring_unread(&rb) },
            Ordering::Relaxed,
        );
        if drained {
            wait_ring(&rb, Duration::from_millis(10));
        }
        if backlog.sync.swap(false, Ordering::Relaxed) {
            drain(&rb)?;
            decoder.borrow_mut().flush();
            let _ = tx.send(Msg::Synced);
        }
        if let Some(h) = &cfg.exit_hold {
            let mut count = [0u8; 8];
            let _ = nix::unistd::read(&*h.wake, &mut count);
            while let Ok(hold) = h.holds.try_recv() {
                let since = Instant::now();
                // The tracee is stopped: decode everything it produced
                // first (its fork or exec record included).
                drain(&rb)?;
                {
                    let mut d = decoder.borrow_mut();
                    let pid = hold.pid;
                    match &hold.why {
                        &HoldWhy::Fork { parent } => {
                            if !d.alive.contains(&pid) {
                                d.new_process(pid);
                            }
                            d.tables.inherit(parent, pid);
                            let alloc = probed.allocs.get(&parent).cloned().flatten();
                            let probes = if parent == cfg.pid {
                                &cfg.probes[..]
                            } else {
                                &[]
                            };
                            let t0 = Instant::now();
                            probed.probe(
                                skel,
                                pid,
                                alloc,
                                probes,
                                tx,
                                &format!("child {pid} is recorded without its allocator"),
                            );
                            if std::env::var_os("TM_DEBUG").is_some() {
                                eprintln!(
                                    "tm-tui: debug: child {pid} probed in {:?} (held {:?})",
                                    t0.elapsed(),
                                    since.elapsed()
                                );
                            }
                        }
                        HoldWhy::Exec => {
                            // The new image's allocator is found and probed
                            // before it runs.
                            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).ok();
                            let alloc = match (&exe, cfg.allocator.is_some()) {
                                (Some(exe), true) => match discover::for_program(exe) {
                                    Ok(a) => Some(a),
                                    Err(e) => {
                                        let _ = tx.send(Msg::Note(format!(
                                            "pid {pid} exec'd {}: its heap is not recorded: {e:#}",
                                            exe.display()
                                        )));
                                        None
                                    }
                                },
                                _ => None,
                            };
                            // The same allocator file probed at the same
                            // places (glibc before and after, the common
                            // case): the links stay, they filter by process
                            // and the new image maps the same file. Dropping
                            // a link waits a grace period (~150 ms).
                            let kept = probed.allocs.get(&pid).and_then(Option::as_ref);
                            if !same_allocator(kept, alloc.as_ref()) {
                                // Now, before it runs: an old link would
                                // fire in the new image too.
                                if let Some(l) = probed.links.remove(&pid) {
                                    drop_links(l);
                                }
                                probed.probe(
                                    skel,
                                    pid,
                                    alloc,
                                    &[],
                                    tx,
                                    &format!("pid {pid} exec'd: its allocator could not be probed"),
                                );
                            }
                        }
                        HoldWhy::Entry | HoldWhy::Exit { .. } => {
                            // At its entry (libraries mapped) or in its exit
                            // (maps still readable): bring the unwind tables
                            // up to date.
                            d.switch_to(pid);
                            d.maps.refresh();
                            d.sync_code();
                            // The launched program's asked addresses, now
                            // that its modules are mapped.
                            if hold.why == HoldWhy::Entry && pid == cfg.pid {
                                if let Some(w) = d.watcher.clone() {
                                    if let Err(e) = arm_asked(cfg, &w) {
                                        let _ = tx.send(Msg::Note(format!("{e:#}")));
                                    }
                                }
                            }
                        }
                    }
                }
                drain(&rb)?;
                // A child killed before it became the program (Ctrl-C while
                // attaching) has nothing to scan, and its killer waits for
                // it instead of taking messages. Only the root is scanned
                // (the model's leak kinds are the root's).
                let ran = !decoder.borrow().awaiting_exec;
                if let HoldWhy::Exit { regs } = &hold.why {
                    if cfg.exit_scan && ran && hold.pid == cfg.pid {
                        exit_scan(cfg.pid, regs.clone(), since, &decoder, tx, stop);
                    }
                }
                let _ = hold.done.send(());
            }
        }
        probed.release_ended(&decoder.borrow().alive);
        let (exited, lost) = {
            let mut d = decoder.borrow_mut();
            d.flush();
            (d.exited, read_lost(skel, &d))
        };
        let stopping = stop.load(Ordering::Relaxed);
        // Gone without an exit record: no followed process is left (the
        // root may have ended before its children).
        let gone = !exited
            && last_check.elapsed() > Duration::from_millis(100)
            && !decoder.borrow().alive.iter().any(|&p| process_alive(p));
        if last_check.elapsed() > Duration::from_millis(100) {
            last_check = Instant::now();
        }
        if lost != last_lost {
            let _ = tx.send(Msg::Lost(lost.clone()));
            last_lost = lost;
        }
        if exited || stopping || gone {
            // Release the target first: with the probes gone it runs at
            // full speed while what it already produced is read. Records
            // reserved on other CPUs just before may not be committed yet:
            // give them a moment, then drain.
            let t0 = Instant::now();
            detach(&mut links, &mut probed, bss);
            // No allocator call is seen any more: no hit can be judged.
            if let Some(w) = decoder.borrow().watcher.as_ref() {
                w.disarm_all();
            }
            if std::env::var_os("TM_DEBUG").is_some() {
                eprintln!("tm-tui: debug: probes detached in {:?}", t0.elapsed());
            }
            thread::sleep(Duration::from_millis(20));
            drain(&rb)?;
            let mut d = decoder.borrow_mut();
            d.flush();
            let lost = read_lost(skel, &d);
            if lost != last_lost {
                let _ = tx.send(Msg::Lost(lost));
            }
            debug_probe_hits(skel);
            break if d.exited {
                EndReason::TargetExited
            } else if stopping {
                EndReason::Stopped
            } else {
                EndReason::TargetGone
            };
        }
    };
    let _ = tx.send(Msg::End(end));
    Ok(())
}

/// Has the consumer scan the target held in its exit, once every event
/// it produced is on the channel; waits for the answer (bounded: the
/// launcher lets the target go after its own bound anyway).
fn exit_scan(
    pid: u32,
    regs: Vec<u64>,
    since: Instant,
    decoder: &RefCell<Decoder<'_>>,
    tx: &Sender<Msg>,
    stop: &AtomicBool,
) {
    decoder.borrow_mut().flush();
    let (done, answered) = bounded(1);
    let req = scan::Request {
        pid,
        regs: vec![regs],
        trigger: crate::event::ScanTrigger::Exit,
        since,
        done: Some(done),
    };
    if tx.send(Msg::LeakScan(req)).is_ok() {
        // Until answered, or asked to stop while the consumer does not
        // answer (it may be waiting for the target).
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(25) {
            match answered.recv_timeout(Duration::from_millis(50)) {
                Err(crossbeam_channel::RecvTimeoutError::Timeout)
                    if !stop.load(Ordering::Relaxed) => {}
                _ => break,
            }
        }
    }
}

/// The bytes of a C `char` array up to its NUL (or its end).
fn c_bytes(chars: &[std::ffi::c_char]) -> Vec<u8> {
    chars
        .iter()
        .take_while(|c| **c != 0)
        .map(|c| *c as u8)
        .collect()
}

pub fn now_wall_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// CLOCK_MONOTONIC, the clock BPF's `bpf_ktime_get_ns` stamps events with.
pub fn now_mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}
