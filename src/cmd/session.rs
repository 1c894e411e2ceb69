//! A recording session, the same for `record` and the live UI: the
//! checks, the attach (or the stopped launch) and the start of the
//! recorder; the ingest of its messages into the timeline and the trace
//! file; and the teardown.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};

use crate::event::{EventKind, ExitStatus, Families, Family, Meta, Probe};
use crate::model::Timeline;
use crate::recorder::discover;
use crate::recorder::launch::{self, Child};
use crate::recorder::symbols::Symbols;
use crate::recorder::{now_mono_ns, now_wall_ns, Config, EndReason, Msg, Recorder, WatchConfig};
use crate::trace::sink::Failure;
use crate::trace::TraceWriter;

/// What to record.
#[derive(Clone, Debug)]
pub enum Target {
    Pid(u32),
    Command(Vec<String>),
}

/// The allocator of a running process. A process started a moment ago
/// may still be in the dynamic loader, its libraries not mapped yet: it is
/// given up to a second to get there.
fn allocator_of_pid(pid: u32) -> Result<discover::Allocator> {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    loop {
        match discover::for_pid(pid) {
            Ok(a) => return Ok(a),
            Err(e) if std::time::Instant::now() < deadline && loading(pid) => {
                let _ = e;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The process is still loading: libc is not mapped yet and either the
/// dynamic loader is (it maps the libraries next) or the process is
/// younger than a second. A process just started by `execve` can be seen
/// before its image is mapped at all: the kernel lets a vfork parent (as
/// posix_spawn is) run on before it maps the program and its loader, and
/// /proc/PID/exe already names the new program (CI saw the maps hold the
/// program alone).
fn loading(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/maps")).is_ok_and(|m| {
        let libc = m
            .lines()
            .any(|l| l.contains("/libc.so") || l.contains("/libc-"));
        !libc && (m.contains("/ld-linux") || age(pid).is_some_and(|a| a < Duration::from_secs(1)))
    })
}

/// How long ago the process started (its start time in /proc/PID/stat
/// against /proc/uptime).
fn age(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command, which may hold spaces and parentheses.
    let rest = stat.rsplit_once(") ")?.1;
    let start_ticks: u64 = rest.split_whitespace().nth(19)?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|&h| h > 0)? as f64;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let since = uptime - start_ticks as f64 / hz;
    Some(Duration::from_secs_f64(since.max(0.0)))
}

/// Each thread of the target takes four perf events (watchpoints), and
/// each probed process its uprobe links: the soft limit of open files
/// (1024) is raised to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// The default bound of an attached process's recording: a server runs
/// for days, and an unbounded trace of one fills its disk (at 100,000
/// heap events a second, ~27 B each, 10 GB an hour). 2 GiB holds the
/// last 13 minutes of that, hours of a quieter process, and is small
/// next to a disk. A launched program's recording ends with it (a test,
/// a reproduction, whose start matters): unbounded.
pub const ATTACH_MAX_SIZE: u64 = 2 << 30;

/// `path` can take a bounded recording by default: a file or directory,
/// or nothing yet; not stdout, a FIFO, a socket or a device (a reader,
/// not a disk, keeps what it wants of those).
pub fn boundable(path: &std::path::Path) -> bool {
    crate::trace::seekable(path)
        || !crate::trace::is_std(path)
            && std::fs::metadata(path).is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
}

/// `a directory of segments bounded to 2.0 GiB / the last 1h`, as the
/// start-up line says it (`None`: one file).
pub fn bound_words(l: &crate::trace::Limits) -> Option<String> {
    let size = l
        .max_bytes
        .map(|b| format!("bounded to {}", crate::model::present::bytes(b)));
    let time = l
        .keep_ns
        .map(|k| format!("the last {}", crate::model::diagnose::fmt_ns(k)));
    let both: Vec<String> = size.into_iter().chain(time).collect();
    (!both.is_empty()).then(|| {
        format!(
            "a directory of segments {} (one unbounded file instead: --max-size 0, no --keep)",
            both.join(", ")
        )
    })
}

/// A bounded recording's directory can be made at `path` (its parent
/// exists and is writable); checked, like [`check_output`], before a
/// program is started or a process attached.
pub fn check_ring_output(path: &std::path::Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    if !parent.is_dir() {
        anyhow::bail!(
            "cannot write the recording to {}: {} {}",
            path.display(),
            parent.display(),
            if parent.exists() {
                "is not a directory"
            } else {
                "does not exist"
            }
        );
    }
    crate::trace::check_ring_dir(path)?;
    if path.is_dir() {
        return Ok(());
    }
    // Writable: the directory can be made (and is made again by the
    // writer; none is left behind if the recording does not start).
    let made = std::fs::create_dir(path);
    if made.is_ok() {
        let _ = std::fs::remove_dir(path);
    }
    made.or_else(|e| if path.is_file() { Ok(()) } else { Err(e) })
        .map_err(|e| anyhow::anyhow!("cannot write the recording to {}: {e}", path.display()))
}

/// The trace can be written at `path`: checked before a program is
/// started or a process attached (an error after that would leave it
/// running unrecorded). A file created by the check is removed; a FIFO
/// without a reader is refused (writing would block). A FIFO with one is
/// returned open, to be written (closing it would end its reader's
/// input, and opening it again could wait for another).
pub fn check_output(path: &std::path::Path) -> Result<Option<std::fs::File>> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    if crate::trace::is_std(path) {
        // Standard output: not a terminal.
        return crate::trace::stdout_file().map(|_| None);
    }
    let existed = path.exists();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ENXIO) => anyhow::anyhow!(
                "cannot write the trace to {}: a FIFO with no reader",
                path.display()
            ),
            _ => anyhow::anyhow!("cannot write the trace to {}: {e}", path.display()),
        })?;
    if !existed {
        let _ = std::fs::remove_file(path);
    }
    if !file.metadata().is_ok_and(|m| m.file_type().is_fifo()) {
        return Ok(None);
    }
    // Written by the writer thread, which may block in it.
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let flags = fcntl(&file, FcntlArg::F_GETFL)
        .with_context(|| format!("cannot set up {}", path.display()))?;
    fcntl(
        &file,
        FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) - OFlag::O_NONBLOCK),
    )
    .with_context(|| format!("cannot set up {}", path.display()))?;
    Ok(Some(file))
}

/// Watchpoints armed per second at most, of each sort, by default.
pub const DEFAULT_WATCH_RATE: u32 = 20;

/// What is traced beyond fatal signals and the process lifecycle.
#[derive(Clone, Debug, Default)]
pub struct Tracing {
    pub families: Families,
    /// Follow child processes (fork, vfork, exec).
    pub follow: bool,
    /// Attached: include the child processes already running.
    pub children: bool,
    /// `--probe` specs, resolved when the target's modules are known.
    pub probes: Vec<crate::recorder::probes::Spec>,
    /// Watchpoints on sampled frees and block ends, at most this many
    /// armed per second of each sort (`None`: off).
    pub watch: Option<u32>,
    /// Addresses and variables to watch for the whole recording.
    pub watch_addrs: Vec<crate::recorder::watch::Asked>,
    pub watch_vars: Vec<String>,
    /// Under sudo, run a launched program as root, not as the user who
    /// ran sudo.
    pub as_root: bool,
}

/// Under sudo (root, SUDO_UID of another user), the user a launched
/// program runs as, as it would have without tm-tui: SUDO_UID, SUDO_GID
/// and SUDO_USER's supplementary groups. `None` otherwise.
pub fn sudo_user(as_root: bool) -> Result<Option<launch::RunAs>> {
    if as_root || !nix::unistd::geteuid().is_root() {
        return Ok(None);
    }
    let id = |var: &str| -> Result<Option<u32>> {
        match std::env::var(var) {
            Ok(v) => v.trim().parse::<u32>().map(Some).map_err(|_| {
                anyhow::anyhow!("{var}={v:?} is not a numeric id (--as-root ignores it)")
            }),
            Err(_) => Ok(None),
        }
    };
    let Some(uid) = id("SUDO_UID")?.filter(|&u| u != 0) else {
        return Ok(None);
    };
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten();
    let gid = match (id("SUDO_GID")?, &user) {
        (Some(g), _) => g,
        (None, Some(u)) => u.gid.as_raw(),
        (None, None) => bail!("SUDO_UID={uid} without SUDO_GID, and no such user: cannot tell the group to run the program as (--as-root keeps root)"),
    };
    // SUDO_USER's groups (as login gives them), else the one group.
    let name = std::env::var("SUDO_USER")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| user.as_ref().map(|u| u.name.clone()));
    let mut groups: Vec<u32> = name
        .as_deref()
        .and_then(|n| std::ffi::CString::new(n).ok())
        .and_then(|n| nix::unistd::getgrouplist(&n, nix::unistd::Gid::from_raw(gid)).ok())
        .map(|gs| gs.into_iter().map(|g| g.as_raw()).collect())
        .unwrap_or_default();
    if !groups.contains(&gid) {
        groups.insert(0, gid);
    }
    Ok(Some(launch::RunAs {
        uid,
        gid,
        groups,
        name,
        home: user.map(|u| u.dir),
    }))
}

/// How the allocator is probed. The other modes exist for `tm-tui bench`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ProbeMode {
    #[default]
    Normal,
    /// every allocator probe at its function's first instruction, as
    /// placed by nothing (what placement saves).
    AtEntry,
    /// The same probes doing nothing: the kernel's trap cost alone.
    Bare,
}

/// Set by SIGINT and SIGTERM once [`install_sigint`] ran.
static INTERRUPTED: LazyLock<Arc<AtomicBool>> = LazyLock::new(Arc::default);

/// SIGINT and SIGTERM end the recording (as the user quitting would)
/// instead of tm-tui.
pub fn install_sigint() -> Result<()> {
    // SIGHUP too (the terminal went away): the recording ends cleanly and
    // the terminal, if any is left, is restored.
    for sig in [SIGINT, SIGTERM, signal_hook::consts::SIGHUP] {
        signal_hook::flag::register(sig, Arc::clone(&INTERRUPTED))
            .with_context(|| format!("cannot handle signal {sig}"))?;
    }
    Ok(())
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::Relaxed)
}

/// The capabilities recording needs (not root itself): CAP_BPF and
/// CAP_PERFMON; CAP_SYS_PTRACE too to attach to `pid` if it is another
/// user's (see [`crate::cmd::caps`]).
pub fn require_caps(pid: Option<u32>) -> Result<()> {
    crate::cmd::caps::check(crate::cmd::caps::effective(), pid)
}

/// The processes descended from `pid` now, parents before children:
/// (pid, ppid).
pub fn descendants(pid: u32) -> Vec<(u32, u32)> {
    let mut ppid_of: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
                continue;
            };
            // Field 4 (ppid), after the parenthesized command name.
            if let Some(pp) = stat
                .rsplit_once(") ")
                .and_then(|(_, rest)| rest.split(' ').nth(1))
                .and_then(|f| f.parse::<u32>().ok())
            {
                ppid_of.push((p, pp));
            }
        }
    }
    let mut out: Vec<(u32, u32)> = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(p, pp) in &ppid_of {
            if pp == parent && !out.iter().any(|(q, _)| *q == p) {
                out.push((p, pp));
                frontier.push(p);
            }
        }
    }
    out
}

/// The command line of a running process, or why it cannot be traced.
pub fn check_pid(pid: u32) -> Result<String> {
    if pid == std::process::id() {
        bail!("refusing to trace tm-tui itself (pid {pid})");
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|_| anyhow::anyhow!("no process with pid {pid}"))?;
    // A thread's id works in /proc too: say whose it is.
    let tgid = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|st| {
            st.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<u32>().ok())
        });
    if let Some(tgid) = tgid.filter(|&t| t != pid) {
        bail!("{pid} is a thread of process {tgid}: give the process's pid ({tgid})");
    }
    // The tracer's programs read 64-bit x86 registers and stacks.
    if let Ok(mut exe) = std::fs::File::open(format!("/proc/{pid}/exe")) {
        let mut ident = [0u8; 5];
        if std::io::Read::read_exact(&mut exe, &mut ident).is_ok()
            && &ident[..4] == b"\x7fELF"
            && ident[4] == 1
        {
            bail!(
                "process {pid} is a 32-bit program: tm-tui records 64-bit (x86-64) processes only"
            );
        }
    }
    if !crate::recorder::process_alive(pid) {
        bail!("process {pid} has already exited");
    }
    // Field 9 (flags), counted after the parenthesized command name.
    const PF_KTHREAD: u64 = 0x0020_0000;
    let flags: u64 = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.split(' ').nth(6))
        .and_then(|f| f.parse().ok())
        .unwrap_or(0);
    if flags & PF_KTHREAD != 0 {
        bail!("process {pid} is a kernel thread: it has no user-space heap to record");
    }
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    if cmd.is_empty() && !crate::recorder::process_alive(pid) {
        bail!("process {pid} has already exited");
    }
    Ok(cmd.join(" "))
}

/// A target that is attached and being recorded.
pub struct Session {
    pub meta: Meta,
    pub recorder: Recorder,
    pub rx: crossbeam_channel::Receiver<Msg>,
    pub child: Option<Child>,
    /// The function probes attached, by id.
    pub probes: Vec<Probe>,
    /// Said before the recording starts (also shown by the UI).
    pub warnings: Vec<String>,
    /// Ends the attached target's follower thread (its tracees are
    /// released as it ends).
    follower_stop: launch::FollowerStop,
    /// The watchpoints (none with --watch off).
    pub watcher: Option<crate::recorder::watch::WatchCell>,
}

impl Session {
    /// What the recording feeds: the ingest (writing `writer`, if any) and
    /// the timeline, the probe table in both before any event.
    pub fn ingest(
        &mut self,
        mut writer: Option<TraceWriter>,
        memory: usize,
    ) -> Result<(Ingest, Timeline)> {
        // The writer's queue is part of the memory budget: an eighth of
        // what `timeline_budget` left, at most 64 MiB, the rest the
        // timeline's.
        let queue = crate::trace::sink::QUEUE_BYTES.min(memory as u64 / 8);
        let memory = match &mut writer {
            Some(w) => {
                w.set_queue_limit(queue);
                memory - queue as usize
            }
            None => memory,
        };
        let mut ing = Ingest::new(writer);
        let mut tl = Timeline::with_budget(self.meta.clone(), memory);
        ing.add_probes(&mut tl, std::mem::take(&mut self.probes))?;
        Ok((ing, tl))
    }
}

/// What of a recording's `--memory` is not the timeline's: the kernel's
/// ring buffer, mapped into tm-tui twice (its pages are seen once more
/// past its end, so a record never wraps), hence counted twice in RSS;
/// the unwind tables' arrays (`cfi_rows`, `cfi_pages`: 40 MiB, mapped);
/// and the rest tm-tui holds besides the timeline (symbols, the stack
/// table, the channel's batches, buffers), measured under 48 MiB.
pub fn fixed_memory(ringbuf_bytes: u64) -> u64 {
    const CFI_MAPS: u64 = 40 << 20;
    const REST: u64 = 48 << 20;
    2 * ringbuf_bytes + CFI_MAPS + REST
}

/// The timeline's share of a recording's `--memory`: the whole of
/// tm-tui's memory (RSS) is held within it. Too little is an error naming
/// where it goes, before anything starts.
pub fn timeline_budget(memory: usize, ringbuf_bytes: u64) -> Result<usize> {
    const MIN: u64 = 16 << 20;
    let fixed = fixed_memory(ringbuf_bytes);
    let mib = |b: u64| b >> 20;
    match (memory as u64).checked_sub(fixed) {
        Some(left) if left >= MIN => Ok(usize::try_from(left).unwrap_or(usize::MAX)),
        _ => bail!(
            "--memory {} MiB is too little to record: the kernel's ring buffer takes {} MiB of it ({} MiB mapped twice; --ringbuf), the unwind tables 40 MiB, tm-tui's own 48 MiB, and the timeline needs 16 MiB: give at least --memory {}MiB, or a smaller --ringbuf",
            mib(memory as u64),
            mib(2 * ringbuf_bytes),
            mib(ringbuf_bytes),
            mib(fixed + MIN),
        ),
    }
}

/// Attach to the pid, or launch the command stopped and attach before it
/// runs; on return the target is running and every probe is in place.
pub fn start(
    target: &Target,
    ringbuf_bytes: u64,
    probes: ProbeMode,
    stdio: Option<launch::Stdio>,
    tracing: &Tracing,
) -> Result<Session> {
    require_caps(match target {
        Target::Pid(p) => Some(*p),
        Target::Command(_) => None,
    })?;
    raise_fd_limit();
    // Without the alloc family no allocator is looked for (a target
    // without malloc can still be traced).
    let alloc_on = tracing.families.has(Family::Alloc);
    // Watchpoints need the tracer thread on every thread (followed): it
    // gives each new thread its breakpoints and stops one to arm.
    let asked_n = tracing.watch_addrs.len() + tracing.watch_vars.len();
    if asked_n > crate::recorder::watch::SLOTS {
        bail!(
            "--watch-addr and --watch-var: {asked_n} asked, the hardware has {} debug registers",
            crate::recorder::watch::SLOTS
        );
    }
    if asked_n > 0 && !tracing.follow {
        bail!("--watch-addr and --watch-var need children followed (drop --no-follow): the tracer gives each new thread its breakpoints");
    }
    let sampled = tracing
        .watch
        .filter(|_| alloc_on && tracing.follow && probes == ProbeMode::Normal);
    let watch_modules = || match target {
        Target::Pid(pid) => discover::modules_of_pid(*pid),
        Target::Command(argv) => launch::resolve_program(argv.first().map_or("", String::as_str))
            .and_then(|exe| discover::modules_of_program(&exe)),
    };
    let mut asked = tracing.watch_addrs.clone();
    if !tracing.watch_vars.is_empty() {
        let modules = watch_modules()?;
        for v in &tracing.watch_vars {
            asked.push(crate::recorder::watch::resolve_var(v, &modules)?);
        }
    }
    let usable_size = sampled.is_some()
        && watch_modules().is_ok_and(|m| {
            m.iter()
                .any(|f| crate::recorder::watch::imports(&f.open_path, "malloc_usable_size"))
        });
    let watch = (sampled.is_some() || !asked.is_empty()).then(|| WatchConfig {
        rate: sampled,
        asked,
        usable_size,
        cell: Arc::default(),
    });
    let mut run_as = None;
    let (pid, command, mut allocator, mut child, resolved, warning) = match target {
        Target::Pid(pid) => {
            let command = check_pid(*pid)?;
            let allocator = alloc_on.then(|| allocator_of_pid(*pid)).transpose()?;
            let (resolved, warning) =
                resolve_probes(&tracing.probes, || discover::modules_of_pid(*pid))?;
            (*pid, command, allocator, None, resolved, warning)
        }
        Target::Command(argv) => {
            let exe = launch::resolve_program(argv.first().map_or("", String::as_str))?;
            run_as = sudo_user(tracing.as_root)?;
            let allocator = alloc_on.then(|| discover::for_program(&exe)).transpose()?;
            let (resolved, warning) =
                resolve_probes(&tracing.probes, || discover::modules_of_program(&exe))?;
            let child = launch::spawn_stopped(
                &exe,
                argv,
                stdio,
                tracing.follow,
                watch.as_ref().map(|w| Arc::clone(&w.cell)),
                run_as.clone(),
            )?;
            (
                child.pid,
                argv.join(" "),
                allocator,
                Some(child),
                resolved,
                warning,
            )
        }
    };
    if probes == ProbeMode::AtEntry {
        for p in allocator.iter_mut().flat_map(|a| &mut a.probes) {
            p.at_entry();
        }
    }
    let mut meta = Meta {
        follow: tracing.follow,
        families: tracing.families,
        pid,
        command,
        start_mono_ns: now_mono_ns(),
        start_wall_ns: now_wall_ns(),
        allocator: allocator
            .as_ref()
            .map(|a| a.path.display().to_string())
            .unwrap_or_default(),
        launched: child.is_some(),
    };
    let stepped = if probes == ProbeMode::Normal {
        stepped_warnings(&meta.allocator, allocator.as_ref())
    } else {
        Vec::new()
    };
    let mut cfg = Config::new(pid, allocator);
    cfg.ringbuf_bytes = ringbuf_bytes;
    cfg.bare_probes = probes == ProbeMode::Bare;
    cfg.await_exec = child.is_some();
    cfg.exit_hold = child.as_mut().and_then(Child::take_exit_hold);
    cfg.follow = tracing.follow;
    cfg.watch = watch.clone();
    let follower_stop = launch::FollowerStop::default();
    let mut follow_warning = None;
    let mut follow_warning_children = None;
    let running = if child.is_none() {
        descendants(pid)
    } else {
        Vec::new()
    };
    if !(running.is_empty() || tracing.children && tracing.follow) {
        let pids: Vec<String> = running.iter().take(8).map(|(p, _)| p.to_string()).collect();
        follow_warning_children = Some(format!(
            "pid {pid} has {} child process(es) already running (pid {}{}): they are not recorded; --children includes them",
            running.len(),
            pids.join(", "),
            if running.len() > 8 { ", …" } else { "" }
        ));
    }
    if tracing.follow && tracing.children {
        cfg.adopt = running.clone();
    }
    if tracing.follow && child.is_none() {
        // Attached: seize the target's threads (and its adopted children's)
        // to hold its children at their fork (released when the recording
        // ends).
        let adopt: Vec<u32> = cfg.adopt.iter().map(|(p, _)| *p).collect();
        match launch::follow_attached(
            pid,
            &adopt,
            follower_stop.clone(),
            watch.as_ref().map(|w| Arc::clone(&w.cell)),
        ) {
            Ok(h) => cfg.exit_hold = Some(h),
            Err(e) => {
                cfg.follow = false;
                meta.follow = false;
                cfg.watch = None;
                follow_warning = Some(format!("children are not followed: {e:#}"));
            }
        }
    }
    // Held in its exit, a launched target's memory is scanned for leak
    // kinds (it costs the scan's time at its exit, nothing before).
    cfg.exit_scan = alloc_on;
    cfg.families = tracing.families;
    let probe_table: Vec<Probe> = resolved.iter().map(|r| r.probe.clone()).collect();
    cfg.probes = resolved;
    let (recorder, rx) = match Recorder::start(cfg) {
        Ok(v) => v,
        Err(e) => {
            follower_stop.stop();
            if let Some(c) = child.as_mut() {
                c.kill();
            }
            return Err(e);
        }
    };
    if let Some(c) = child.as_mut() {
        if interrupted() {
            // Ctrl-C (or SIGTERM) while attaching: the program never ran,
            // and does not run now.
            c.kill();
            bail!("interrupted before the program started");
        }
        c.resume().map_err(|e| match &run_as {
            Some(r) => anyhow::anyhow!(
                "{e:#} as user {} (uid {}, who ran sudo; --as-root runs it as root)",
                r.name.as_deref().unwrap_or("?"),
                r.uid
            ),
            None => e,
        })?;
    }
    let warnings: Vec<String> = warning
        .into_iter()
        .chain(stepped)
        .chain(follow_warning)
        .chain(follow_warning_children)
        .collect();
    for w in &warnings {
        crate::util::log::line("warning", w);
    }
    Ok(Session {
        meta,
        recorder,
        rx,
        child,
        probes: probe_table,
        warnings,
        follower_stop,
        watcher: watch.map(|w| w.cell),
    })
}

/// How long a launched program has to end after Ctrl-C or SIGTERM before
/// tm-tui ends without it.
const STOP_GRACE: Duration = Duration::from_secs(2);

impl Session {
    /// Ends the recording and finishes the trace file. When it has not
    /// ended by itself (the user quit), a launched program still running
    /// ends with it (an attached process is left running), the probes are
    /// detached and what is queued is drained so the file is complete.
    /// Returns the target's status (a launched one's as reaped) and the
    /// file's size.
    pub fn finish(
        mut self,
        ing: &mut Ingest,
        tl: &mut Timeline,
        ended: bool,
    ) -> Result<(Option<ExitStatus>, u64)> {
        if !ended {
            if let (Some(c), None) = (self.child.as_mut(), ing.exit_status) {
                c.terminate();
            }
            self.recorder.stop();
            while let Ok(msg) = self.rx.recv_timeout(Duration::from_millis(500)) {
                if ing.handle(tl, msg)?.is_some() {
                    break;
                }
            }
        }
        self.recorder.join()?;
        self.follower_stop.stop();
        let mut status = ing.exit_status;
        if let Some(c) = self.child.as_mut() {
            status = if ing.failure().is_some() {
                // The trace could not be written on: the program runs on,
                // untraced (its status is not waited for).
                c.wait_for(Duration::ZERO).or(status)
            } else if interrupted() {
                // Ctrl-C or SIGTERM: the program got the same Ctrl-C (its
                // process group) and may take a moment to shut down; one
                // that ignores it is not killed but released, unrecorded.
                let s = c.wait_for(STOP_GRACE);
                if s.is_none() {
                    eprintln!(
                        "tm-tui: the program (pid {}) did not end within {STOP_GRACE:?} of the signal; it runs on, no longer recorded",
                        c.pid
                    );
                }
                s.or(status)
            } else {
                c.wait().ok().or(status)
            };
        }
        let written = ing.finish(tl, status)?;
        Ok((status, written))
    }
}

/// The hot allocator functions whose probe the kernel single-steps (no
/// emulated instruction found on their way in), and what that costs.
fn stepped_warnings(
    path: &str,
    allocator: Option<&crate::recorder::discover::Allocator>,
) -> Vec<String> {
    use crate::event::AllocFn;
    allocator
        .iter()
        .flat_map(|a| &a.probes)
        .filter(|p| matches!(p.func, AllocFn::Malloc | AllocFn::Free | AllocFn::Calloc | AllocFn::Realloc))
        .filter_map(|p| {
            let why = p.stepped.as_ref()?;
            Some(format!(
                "{} in {path} is probed on an instruction the kernel single-steps ({why}): ~10 µs a call instead of ~2.5",
                p.name
            ))
        })
        .collect()
}

/// The probes resolved against the target's modules, and a warning if
/// return probes could break its unwinding.
fn resolve_probes(
    specs: &[crate::recorder::probes::Spec],
    modules: impl FnOnce() -> Result<Vec<crate::recorder::probes::ModuleFile>>,
) -> Result<(Vec<crate::recorder::probes::Resolved>, Option<String>)> {
    if specs.is_empty() {
        return Ok((Vec::new(), None));
    }
    let modules = modules()?;
    let resolved = crate::recorder::probes::resolve(specs, &modules)?;
    let warning = crate::recorder::probes::unwind_warning(&resolved);
    Ok((resolved, warning))
}

/// Takes the recorder's messages: symbolizes stacks, writes the trace
/// file (if any) and feeds the timeline. Shared by `record` and the live
/// UI.
pub struct Ingest {
    writer: Option<TraceWriter>,
    /// Why the trace could not be written on (nothing is written after).
    failure: Option<Failure>,
    symbols: Symbols,
    pub exit_status: Option<ExitStatus>,
    /// [`Msg::Synced`] markers received.
    pub synced: u64,
    /// What the user should know once: modules without unwind info or
    /// symbols, from the recorder and the symbolizer.
    pub notes: Vec<String>,
}

/// Before a bounded recording's event `e`: the next segment begun if this
/// one is full (with the blocks live now), and `e`'s stack written if the
/// segment does not hold it yet.
fn segment_before(w: &mut TraceWriter, tl: &Timeline, e: &crate::event::Event) -> Result<()> {
    if w.wants_rotation_live(e.ts, || tl.heap().live_blocks()) {
        let tables = crate::trace::Tables {
            modules: tl.modules(),
            probes: tl.probes(),
            stacks: tl.stacks(),
            lost: tl.lost(),
        };
        w.rotate(e.ts, tables, &carried_blocks(tl))?;
    }
    if let Some(id) = e.kind.stack().filter(|&id| w.needs_stack(id)) {
        if let Some(st) = crate::event::find_stack(tl.stacks(), id) {
            w.write_stack(st)?;
        }
    }
    Ok(())
}

/// ` (from +a: 0.49 s of the 2 s asked, …)`: a window kept before a
/// hit at `ts` shorter than `--on-crash-keep`.
fn short_words(s: &crate::trace::Short, ts: u64, start: u64) -> String {
    use crate::model::diagnose::fmt_ns;
    let by = match (s.by.max_bytes.is_some(), s.by.keep_ns.is_some()) {
        (true, true) => "--max-size or --keep",
        (false, true) => "--keep",
        _ => "--max-size",
    };
    format!(
        " (from {}: {} of the {} asked; older segments were already dropped by {by})",
        crate::model::present::rel(s.from, start),
        fmt_ns(ts.saturating_sub(s.from)),
        fmt_ns(s.asked)
    )
}

/// What `--checkpoint` became for a big live heap.
fn widened_note(w: &crate::trace::Widened) -> String {
    use crate::model::present::bytes;
    let k = crate::trace::PART_COPIES;
    format!(
        "--checkpoint {}: parts spaced up to {} apart for the live heap's size (a part ends once its events are {k}x the copy of the live blocks and tables the next starts with, {} there), so the copies stay within about 1/{} of the file",
        bytes(w.asked),
        bytes(w.spacing),
        bytes(w.copy),
        k + 1
    )
}

/// The blocks live now, as a new segment starts with them.
fn carried_blocks(tl: &Timeline) -> Vec<crate::trace::CarriedBlock> {
    let procs = tl.processes();
    let mut blocks: Vec<crate::trace::CarriedBlock> = tl
        .heap()
        .now(tl.store())
        .into_iter()
        // A process gone has no heap to carry (its blocks stay "live" in
        // the model, which has no free for them).
        .filter(|b| {
            procs
                .get((b.ptr >> crate::model::TAG_SHIFT) as usize)
                .is_none_or(|p| p.exit.is_none())
        })
        .map(|b| crate::trace::CarriedBlock {
            pid: procs
                .get((b.ptr >> crate::model::TAG_SHIFT) as usize)
                .map_or(tl.meta().pid, |p| p.pid),
            tid: b.tid,
            ts: b.ts,
            ptr: crate::model::untag(b.ptr),
            size: b.size,
            stack: b.stack,
        })
        .collect();
    blocks.sort_by_key(|b| b.ts);
    blocks
}

impl Ingest {
    pub fn new(writer: Option<TraceWriter>) -> Self {
        Ingest {
            writer,
            failure: None,
            symbols: Symbols::new(),
            exit_status: None,
            synced: 0,
            notes: Vec::new(),
        }
    }

    /// Runs `f` on the writer, unless the trace failed; a [`Failure`]
    /// (stalled, behind, a write error) ends the writing, not the session.
    fn write(&mut self, f: impl FnOnce(&mut TraceWriter) -> Result<()>) -> Result<()> {
        let Some(w) = self.writer.as_mut().filter(|_| self.failure.is_none()) else {
            return Ok(());
        };
        match f(w) {
            Err(e) => match e.downcast::<Failure>() {
                Ok(f) => {
                    self.failure = Some(f);
                    Ok(())
                }
                Err(e) => Err(e),
            },
            ok => ok,
        }
    }

    /// Why the trace cannot be written on, if it cannot: a failure seen,
    /// or the writer stuck now for [`crate::trace::sink::STALL_LIMIT`].
    /// Then the caller detaches.
    pub fn failure(&mut self) -> Option<&Failure> {
        if self.failure.is_none() {
            if let Some(Err(f)) = self.writer.as_ref().map(TraceWriter::check) {
                self.failure = Some(f);
            }
        }
        self.failure.as_ref()
    }

    /// The one line that says why the recording detached: the failure,
    /// the target and where the trace ends.
    pub fn failure_line(&self, meta: &Meta) -> Option<String> {
        let f = self.failure.as_ref()?;
        let end = match self.writer.as_ref().map_or(0, TraceWriter::written_ts) {
            0 => "the trace ends before its first event".to_string(),
            ts => format!(
                "the trace ends at {}",
                crate::model::present::rel(ts, meta.start_mono_ns)
            ),
        };
        Some(format!("{f}: detached from pid {}; {end}", meta.pid))
    }

    /// The probe table, before any event refers to it.
    pub fn add_probes(&mut self, tl: &mut Timeline, probes: Vec<Probe>) -> Result<()> {
        for p in probes {
            self.write(|w| w.write_probe(&p))?;
            tl.add_probe(p);
        }
        Ok(())
    }

    /// Takes one message; `Some` when the recording ended.
    pub fn handle(&mut self, tl: &mut Timeline, msg: Msg) -> Result<Option<EndReason>> {
        self.failure();
        match msg {
            Msg::Note(n) => self.note(n),
            Msg::Module(m, file) => {
                self.symbols.add_module(&m, file);
                self.take_symbol_notes(false);
                self.write(|w| w.write_module(&m))?;
                tl.add_module(m);
            }
            Msg::Stack(mut s) => {
                self.symbols.symbolize(&mut s.frames);
                self.take_symbol_notes(false);
                self.write(|w| w.write_stack(&s))?;
                tl.add_stack(s);
            }
            Msg::Events(batch) => {
                for e in batch {
                    self.write(|w| {
                        if w.segmented() {
                            segment_before(w, tl, &e)?;
                        }
                        w.write_event(&e)
                    })?;
                    let idx = tl.push(&e);
                    if matches!(e.kind, EventKind::Signal(_) | EventKind::Watch(_)) {
                        self.keep_window(tl, &e, idx);
                    }
                    // The root's exit is the target's (a child's is its own).
                    if let EventKind::ProcessExit { status } = &e.kind {
                        if e.pid == tl.meta().pid {
                            self.exit_status = Some(*status);
                        }
                    }
                }
                self.idle();
            }
            Msg::Lost(l) => {
                self.write(|w| w.write_lost(&l))?;
                tl.note_lost(l);
            }
            Msg::LeakScan(req) => {
                self.leak_scan(tl, &req)?;
                if let Some(done) = &req.done {
                    let _ = done.send(());
                }
            }
            Msg::Synced => self.synced += 1,
            Msg::End(reason) => return Ok(Some(reason)),
        }
        Ok(None)
    }

    /// Scans the stopped target for the kinds of the blocks live now, into
    /// the trace file and the timeline; a scan that fails is a note.
    pub fn leak_scan(
        &mut self,
        tl: &mut Timeline,
        req: &crate::recorder::scan::Request,
    ) -> Result<()> {
        match crate::cmd::leakscan::run(tl, req) {
            Ok(scan) => {
                self.write(|w| w.write_leak_scan(&scan))?;
                tl.add_leak_scan(scan);
            }
            Err(e) => self.note(format!("no leak scan: {e:#}")),
        }
        Ok(())
    }

    fn take_symbol_notes(&mut self, ending: bool) {
        for n in self.symbols.take_notes(ending) {
            self.note(n.note());
        }
    }

    /// A note for the user, once (in the --log file as it comes).
    fn note(&mut self, n: String) {
        if !self.notes.contains(&n) {
            crate::util::log::line("note", &n);
            self.notes.push(n);
        }
    }

    /// A crash, or a watchpoint hit the model calls a finding (`e`, event
    /// `idx`): a bounded recording keeps the window before it apart from
    /// its bounds.
    fn keep_window(
        &mut self,
        tl: &Timeline,
        e: &crate::event::Event,
        idx: crate::model::store::Idx,
    ) {
        let Some(w) = self
            .writer
            .as_mut()
            .filter(|w| w.keeps_windows() && self.failure.is_none())
        else {
            return;
        };
        let what = match &e.kind {
            EventKind::Signal(s) if !s.handled => "crash",
            // This hit alone judged (not every hit so far).
            EventKind::Watch(_) if tl.diagnosis_at(idx).is_some() => "finding",
            _ => return,
        };
        let at = crate::model::present::rel(e.ts, tl.meta().start_mono_ns);
        match w.pin(e.ts) {
            crate::trace::Pinned::New { dir, short } => self.notes.push(format!(
                "the recording before the {what} at {at} is kept in {}{}",
                dir.display(),
                short
                    .map(|s| short_words(&s, e.ts, tl.meta().start_mono_ns))
                    .unwrap_or_default()
            )),
            crate::trace::Pinned::Full { first: true } => self.notes.push(format!(
                "the {what} at {at} and any later ones are not kept apart: {} windows already are",
                crate::trace::MAX_PINS
            )),
            _ => {}
        }
    }

    /// A bounded recording: the segments dropped so far.
    pub fn segments_dropped(&self) -> Option<u64> {
        self.writer.as_ref().and_then(TraceWriter::segments_dropped)
    }

    /// Nothing arrived for a while: flush the file at most once a second.
    pub fn idle(&mut self) {
        if self.failure().is_none() {
            if let Some(w) = &mut self.writer {
                w.maybe_flush();
            }
        }
    }

    /// Ends the trace file; returns its size in bytes.
    pub fn finish(&mut self, tl: &mut Timeline, status: Option<ExitStatus>) -> Result<u64> {
        tl.set_end_ns(Some(now_mono_ns()));
        self.take_symbol_notes(true);
        if let Some(w) = self.writer.as_ref().and_then(TraceWriter::widened_parts) {
            self.note(widened_note(&w));
        }
        if let Some(s) = status {
            self.exit_status = Some(s);
        }
        // The end is written and waited for (bounded); a failure then
        // is said as one before.
        self.write(|w| w.write_end(now_mono_ns(), status))?;
        Ok(self.writer.as_ref().map_or(0, TraceWriter::bytes_written))
    }
}
