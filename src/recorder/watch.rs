//! Hardware watchpoints on the target's threads: four slots (x86's debug
//! registers), each one perf breakpoint event per thread, all running the
//! tracer's `tm_watch_hit` program on a hit.
//!
//! The tracer claims a slot at a sampled free or allocation (see
//! `enum tm_watch_limit` in `bpf/tracer.h`) and signals the thread, which
//! stops under ptrace before it runs on: the tracer thread calls
//! [`Watcher::on_signal_stop`], which moves the slot's breakpoints to the
//! claimed address on every thread of the process
//! (`PERF_EVENT_IOC_MODIFY_ATTRIBUTES`, ~1 µs each) and has the signal
//! suppressed. A release (the block handed out again, freed, the image
//! replaced) comes back through the ring buffer and disables them.
//!
//! Breakpoints are per thread: every thread gets its four events at its
//! first stop (the tracer thread sees each new one), before it runs.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use libbpf_rs::{MapCore, MapFlags, MapHandle};

use super::types;

/// Where the tracer thread finds the watcher once the recorder made it
/// (the tracer runs before the BPF object is loaded).
pub type WatchCell = Arc<OnceLock<Arc<Watcher>>>;

pub const SLOTS: usize = types::tm_watch_limit::TM_WATCH_SLOTS.0 as usize;
/// The signal that stops a thread for arming (SIGURG: ignored by default,
/// so a stop nobody intercepts does nothing).
pub const SIGNAL: i32 = types::tm_watch_limit::TM_WATCH_SIGNAL.0 as i32;

const PERF_TYPE_BREAKPOINT: u32 = 5;
const PERF_EVENT_IOC_SET_BPF: libc::c_ulong = 0x4004_2408;
const PERF_EVENT_IOC_MODIFY_ATTRIBUTES: libc::c_ulong = 0x4008_240b;
const PERF_FLAG_FD_CLOEXEC: libc::c_ulong = 8;
/// Where an idle slot's breakpoint points (disabled, never hit).
const IDLE: (u64, u32, u32) = (0x1000, 8, types::tm_watch_rw::TM_WATCH_W.0);

/// `disabled`, `exclude_kernel`, `exclude_hv` (bits 0, 5, 6 of the flags
/// word).
const FLAG_DISABLED: u64 = 1;
const FLAGS: u64 = 1 << 5 | 1 << 6;

/// `struct perf_event_attr` up to PERF_ATTR_SIZE_VER7, the fields a
/// breakpoint uses at their offsets.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct PerfAttr {
    kind: u32,
    size: u32,
    config: u64,
    sample_period: u64,
    sample_type: u64,
    read_format: u64,
    flags: u64,
    wakeup_events: u32,
    bp_type: u32,
    bp_addr: u64,
    bp_len: u64,
    rest: [u64; 7],
}
const _: () = assert!(std::mem::size_of::<PerfAttr>() == 128);

/// The attributes of a slot's breakpoint: identical at creation and at
/// every move but for the address, length, type and `disabled` (the
/// kernel refuses a modification that changes anything else).
fn attr(addr: u64, len: u32, bp_type: u32, enabled: bool) -> PerfAttr {
    PerfAttr {
        kind: PERF_TYPE_BREAKPOINT,
        size: std::mem::size_of::<PerfAttr>() as u32,
        sample_period: 1,
        flags: FLAGS | if enabled { 0 } else { FLAG_DISABLED },
        bp_type,
        bp_addr: addr,
        bp_len: len.into(),
        ..PerfAttr::default()
    }
}

fn perf_open(tid: u32, a: &PerfAttr) -> std::io::Result<OwnedFd> {
    // SAFETY: a valid attr of the size it says; the fd returned is ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            a as *const PerfAttr,
            tid as libc::pid_t,
            -1 as libc::c_int,
            -1 as libc::c_int,
            PERF_FLAG_FD_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a new fd nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn ioctl(fd: &OwnedFd, req: libc::c_ulong, arg: libc::c_ulong) -> std::io::Result<()> {
    // SAFETY: a perf event fd and a request whose argument we own.
    if unsafe { libc::ioctl(fd.as_raw_fd(), req, arg) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn modify(fd: &OwnedFd, a: &PerfAttr) -> std::io::Result<()> {
    ioctl(
        fd,
        PERF_EVENT_IOC_MODIFY_ATTRIBUTES,
        a as *const PerfAttr as libc::c_ulong,
    )
}

/// One slot as armed on the threads of `pid`.
#[derive(Clone, Copy, Debug)]
struct Armed {
    gen: u64,
    pid: u32,
    addr: u64,
    len: u32,
    bp_type: u32,
}

/// A thread and its breakpoint events, one per slot (disabled while the
/// slot is not armed in its process).
struct Thread {
    pid: u32,
    fds: [Option<OwnedFd>; SLOTS],
}

#[derive(Default)]
struct Inner {
    threads: HashMap<u32, Thread>,
    armed: [Option<Armed>; SLOTS],
    /// The recording is over: nothing is armed again (a stop still
    /// pending from a last claim is suppressed, not armed).
    closed: bool,
}

/// Counts for the status line and the record summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WatchStats {
    /// Slots armed (at a thread's stop).
    pub arms: u64,
    /// Threads given their breakpoints, and those that could not be (no
    /// debug register free: another debugger, or out of file descriptors).
    pub threads: u64,
    pub threads_failed: u64,
    /// Nanoseconds from each claim to its slot armed (the claiming
    /// thread stopped all along).
    pub arm_ns: u64,
}

/// The watchpoints of a recording (see the module's text).
pub struct Watcher {
    prog: OwnedFd,
    slots: MapHandle,
    signalled: MapHandle,
    inner: Mutex<Inner>,
    arms: AtomicU64,
    arm_ns: AtomicU64,
    threads: AtomicU64,
    threads_failed: AtomicU64,
}

impl Watcher {
    pub fn new(prog: OwnedFd, slots: MapHandle, signalled: MapHandle) -> Watcher {
        Watcher {
            prog,
            slots,
            signalled,
            inner: Mutex::new(Inner::default()),
            arms: AtomicU64::new(0),
            arm_ns: AtomicU64::new(0),
            threads: AtomicU64::new(0),
            threads_failed: AtomicU64::new(0),
        }
    }

    pub fn stats(&self) -> WatchStats {
        WatchStats {
            arms: self.arms.load(Ordering::Relaxed),
            threads: self.threads.load(Ordering::Relaxed),
            threads_failed: self.threads_failed.load(Ordering::Relaxed),
            arm_ns: self.arm_ns.load(Ordering::Relaxed),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives thread `tid` of process `pid` its breakpoints (again: a no-op),
    /// armed where its process's slots are.
    pub fn add_thread(&self, tid: u32, pid: u32) {
        let mut inner = self.lock();
        if inner.closed || inner.threads.contains_key(&tid) {
            return;
        }
        // Made now, while nothing waits on it (perf_event_open on another
        // task takes ~270 µs here: too slow for a stop), disabled until
        // armed (moved in place: ~1 µs).
        let prog = self.prog.as_raw_fd();
        let fds = std::array::from_fn(|_| {
            let (addr, len, t) = IDLE;
            let a = attr(addr, len, t, false);
            perf_open(tid, &a)
                .and_then(|f| {
                    ioctl(&f, PERF_EVENT_IOC_SET_BPF, prog as libc::c_ulong)?;
                    Ok(f)
                })
                .ok()
        });
        let fds: [Option<OwnedFd>; SLOTS] = fds;
        if fds.iter().any(Option::is_none) {
            // No debug register left (another debugger), or out of fds.
            self.threads_failed.fetch_add(1, Ordering::Relaxed);
        } else {
            self.threads.fetch_add(1, Ordering::Relaxed);
        }
        // Armed where its process's slots are.
        for (fd, a) in fds.iter().zip(inner.armed) {
            if let (Some(fd), Some(a)) = (fd, a.filter(|a| a.pid == pid)) {
                let _ = modify(fd, &attr(a.addr, a.len, a.bp_type, true));
            }
        }
        inner.threads.insert(tid, Thread { pid, fds });
    }

    /// Thread `tid` is gone: its events go with it.
    pub fn remove_thread(&self, tid: u32) {
        self.lock().threads.remove(&tid);
    }

    /// Thread `tid` stopped with [`SIGNAL`]: arms the slots it claimed.
    /// True when the stop was the tracer's (the signal is not the
    /// program's and must not be delivered).
    pub fn on_signal_stop(&self, tid: u32) -> bool {
        if !matches!(
            self.signalled.lookup_and_delete(&tid.to_ne_bytes()),
            Ok(Some(_))
        ) {
            return false;
        }
        let mut inner = self.lock();
        if inner.closed {
            return true;
        }
        for slot in 0..SLOTS {
            let Some(w) = self.slot(slot) else { continue };
            let live = w.state == u64::from(types::tm_watch_state::TM_WS_ARMED.0);
            // A slot released (or claimed anew) whose breakpoints are still
            // where they were: the thread stopped on one of them.
            let moved = live && w.tid != tid;
            if inner.armed[slot].is_some_and(|a| !live || (moved && a.gen != w.gen)) {
                arm(&mut inner, slot, None);
            }
            if !live || w.tid != tid {
                continue;
            }
            if inner.armed[slot].is_some_and(|a| a.gen == w.gen) {
                continue;
            }
            let a = Armed {
                gen: w.gen,
                pid: w.tgid,
                addr: w.addr,
                len: w.len,
                bp_type: w.r#type,
            };
            arm(&mut inner, slot, Some(a));
            self.arms.fetch_add(1, Ordering::Relaxed);
            // From the claim (the signal sent) to armed: the thread's stop
            // but for its resumption.
            let now = super::now_mono_ns();
            self.arm_ns
                .fetch_add(now.saturating_sub(w.claimed_ns), Ordering::Relaxed);
        }
        true
    }

    /// The tracer released `slot`'s arming `gen` (or a newer one replaced
    /// it): its breakpoints go quiet.
    pub fn on_release(&self, slot: usize, gen: u64) {
        let mut inner = self.lock();
        if slot < SLOTS && inner.armed[slot].is_some_and(|a| a.gen == gen) {
            arm(&mut inner, slot, None);
        }
    }

    /// The recording ends: every breakpoint goes quiet.
    pub fn disarm_all(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        // Closed, the events free the debug registers for a debugger.
        inner.threads.clear();
        inner.armed = [None; SLOTS];
    }

    /// Process `pid` exec'd or ended: none of its slots means anything.
    pub fn forget_process(&self, pid: u32) {
        let mut inner = self.lock();
        for slot in 0..SLOTS {
            if inner.armed[slot].is_some_and(|a| a.pid == pid) {
                arm(&mut inner, slot, None);
            }
        }
        inner.threads.retain(|_, t| t.pid != pid);
    }

    fn slot(&self, slot: usize) -> Option<types::tm_watch> {
        let v = self
            .slots
            .lookup(&(slot as u32).to_ne_bytes(), MapFlags::ANY)
            .ok()??;
        let mut w = types::tm_watch::default();
        plain::copy_from_bytes(&mut w, &v).ok()?;
        Some(w)
    }
}

/// Moves `slot` to `to` on its process's threads (and off the threads of
/// the process it was on before), or disables it (`None`).
fn arm(inner: &mut Inner, slot: usize, to: Option<Armed>) {
    let before = inner.armed[slot];
    for t in inner.threads.values() {
        let Some(fd) = &t.fds[slot] else { continue };
        match to {
            Some(a) if a.pid == t.pid => {
                let _ = modify(fd, &attr(a.addr, a.len, a.bp_type, true));
            }
            // Quiet where it was armed (elsewhere it is already).
            _ if before.is_some_and(|b| b.pid == t.pid) => {
                let (addr, len, ty) = IDLE;
                let _ = modify(fd, &attr(addr, len, ty, false));
            }
            _ => {}
        }
    }
    inner.armed[slot] = to;
}

/// An address the user asked to watch (`--watch-addr`, `--watch-var`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Asked {
    pub at: AskedAt,
    /// Bytes watched: 1, 2, 4 or 8, the address aligned to it.
    pub len: u32,
    /// Reads too (else writes only, as gdb's `watch`).
    pub rw: bool,
    /// As the user wrote it.
    pub text: String,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AskedAt {
    /// An address in the target.
    Addr(u64),
    /// A global of a module: its address in the ELF file, placed where
    /// the module is mapped (its first loadable segment at `first_load`).
    Var {
        /// The module as /proc/PID/maps names it, and where tm-tui reads it.
        path: PathBuf,
        vaddr: u64,
        first_load: u64,
    },
}

/// The ELF file at `path` calls `symbol` from another module (an undefined
/// dynamic symbol).
pub fn imports(path: &std::path::Path, symbol: &str) -> bool {
    use object::{Object, ObjectSymbol};
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    object::File::parse(&*data).is_ok_and(|f| {
        f.dynamic_symbols()
            .any(|s| s.is_undefined() && s.name() == Ok(symbol))
    })
}

/// `--watch-addr ADDR[:LEN][:w|rw]`.
pub fn parse_addr(s: &str) -> Result<Asked, String> {
    let mut parts = s.split(':');
    let addr = parts.next().unwrap_or("");
    let addr = u64::from_str_radix(addr.trim_start_matches("0x"), 16).map_err(|_| {
        format!("'{addr}' is not a hex address (--watch-addr 0x7f12…[:LEN][:w|rw])")
    })?;
    let (mut len, mut rw) = (8, false);
    for p in parts {
        match p {
            "w" => rw = false,
            "rw" => rw = true,
            n => {
                len = n
                    .parse()
                    .ok()
                    .filter(|l| [1, 2, 4, 8].contains(l))
                    .ok_or_else(|| {
                        format!("'{n}' is not a length of 1, 2, 4 or 8 bytes, nor w or rw")
                    })?
            }
        }
    }
    if addr % u64::from(len) != 0 {
        return Err(format!(
            "{addr:#x} is not aligned to its length {len} (the hardware watches aligned words)"
        ));
    }
    Ok(Asked {
        at: AskedAt::Addr(addr),
        len,
        rw,
        text: s.to_string(),
    })
}

/// `--watch-var NAME[:w|rw]`: the global `NAME` of the target's modules
/// (the executable first), its first bytes up to 8, aligned.
pub fn resolve_var(s: &str, modules: &[super::probes::ModuleFile]) -> anyhow::Result<Asked> {
    use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
    let (name, rw) = match s.rsplit_once(':') {
        Some((n, "rw")) => (n, true),
        Some((n, "w")) => (n, false),
        _ => (s, false),
    };
    for m in modules {
        let Ok(data) = std::fs::read(&m.open_path) else {
            continue;
        };
        let Ok(file) = object::File::parse(&*data) else {
            continue;
        };
        let found = file
            .symbols()
            .chain(file.dynamic_symbols())
            .find(|sym| sym.kind() == SymbolKind::Data && sym.name() == Ok(name));
        let Some(sym) = found else { continue };
        let first_load = file.segments().map(|seg| seg.address()).min().unwrap_or(0);
        let (vaddr, size) = (sym.address(), sym.size().max(1));
        // The widest aligned word at its start, within it.
        let len = [8u64, 4, 2, 1]
            .into_iter()
            .find(|&l| l <= size && vaddr % l == 0)
            .unwrap_or(1) as u32;
        return Ok(Asked {
            at: AskedAt::Var {
                path: m.path.clone(),
                vaddr,
                first_load,
            },
            len,
            rw,
            text: s.to_string(),
        });
    }
    anyhow::bail!("--watch-var {name}: no global variable named {name} in the target's executable or libraries (a static or local variable needs its symbol table: not stripped, or its debug package)")
}

impl Asked {
    /// Its address in process `pid` now (a variable's module must be mapped).
    pub fn address(&self, pid: u32) -> Option<u64> {
        match &self.at {
            AskedAt::Addr(a) => Some(*a),
            AskedAt::Var {
                path,
                vaddr,
                first_load,
            } => {
                let maps = super::maps::read_maps(pid).ok()?;
                // /lib and /usr/lib are one directory on a merged /usr.
                let same = |p: &std::path::Path| {
                    p == path.as_path()
                        || std::fs::canonicalize(p).ok() == std::fs::canonicalize(path).ok()
                };
                let base = maps
                    .iter()
                    .filter(|e| e.offset == 0 && e.path.as_deref().is_some_and(same))
                    .map(|e| e.start)
                    .min()?;
                Some(base - (first_load & !0xfff) + vaddr)
            }
        }
    }
}

impl Watcher {
    /// Arms `slot` on `asked` in process `pid` for the whole recording
    /// (the tracer never claims it). False when its address is not known.
    pub fn arm_asked(&self, slot: usize, pid: u32, asked: &Asked) -> bool {
        let Some(addr) = asked.address(pid) else {
            return false;
        };
        let bp_type = if asked.rw {
            types::tm_watch_rw::TM_WATCH_RW.0
        } else {
            types::tm_watch_rw::TM_WATCH_W.0
        };
        // What is there now: a read leaves it, a write changes it.
        let mut snap = [0u8; 8];
        let _ = std::fs::File::open(format!("/proc/{pid}/mem")).and_then(|f| {
            std::os::unix::fs::FileExt::read_exact_at(&f, &mut snap[..asked.len as usize], addr)
        });
        let w = types::tm_watch {
            snap: u64::from_le_bytes(snap),
            state: u64::from(types::tm_watch_state::TM_WS_ARMED.0),
            kind: types::tm_watch_kind::TM_WK_EXPLICIT.0,
            tgid: pid,
            len: asked.len,
            addr,
            r#type: bp_type,
            gen: 2,
            ..Default::default()
        };
        // SAFETY: plain old data, viewed as its bytes.
        let bytes = unsafe { plain::as_bytes(&w) };
        if self
            .slots
            .update(&(slot as u32).to_ne_bytes(), bytes, MapFlags::ANY)
            .is_err()
        {
            return false;
        }
        let mut inner = self.lock();
        arm(
            &mut inner,
            slot,
            Some(Armed {
                gen: 2,
                pid,
                addr,
                len: asked.len,
                bp_type,
            }),
        );
        true
    }
}
