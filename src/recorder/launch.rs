//! Launch mode: start a program held before its exec, so probes are
//! attached before it runs its first instruction, then let it go; and the
//! tracer thread of both modes, which follows children.
//!
//! The child is ptrace-seized with PTRACE_O_TRACEEXIT: it stops at the
//! start of its exit while its address space still exists, so the recorder
//! can read /proc/PID/maps and normalize the last stacks (a short-lived
//! program is often gone before its records are read). With children
//! followed, every thread is a tracee (PTRACE_O_TRACECLONE) and a fork's
//! child starts stopped: the recorder attaches its probes before it runs
//! its first instruction; an exec stops until the new image's allocator is
//! probed. Signals are passed through unchanged.

use std::ffi::{CString, OsStr};
use std::io::{self, PipeWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::waitpid;
use nix::unistd::{self, getpid, Pid};

use crate::event::ExitStatus;

/// Why a tracee is held for the recorder.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldWhy {
    /// At the program's entry point, libraries mapped: load their tables.
    Entry,
    /// In its exit, maps and memory still there: drain what it produced;
    /// the leader's general registers (see
    /// [`crate::recorder::scan::gp_regs`]), for a leak scan.
    Exit { regs: Vec<u64> },
    /// A new child process, stopped before its first instruction: attach
    /// its probes.
    Fork { parent: u32 },
    /// Just after an exec (the new image mapped, the loader not run yet):
    /// probe the new image's allocator.
    Exec,
}

/// A tracee held until the recorder answers on `done` (bounded: a stuck
/// recorder cannot hang the target).
pub struct Hold {
    pub pid: u32,
    pub why: HoldWhy,
    pub done: Sender<()>,
}

/// The recorder's side of the tracer thread: its holds, and an eventfd
/// written after each (the recorder waits on it with the ring buffer, so
/// a held child is answered at once).
pub struct ExitHold {
    pub holds: Receiver<Hold>,
    pub wake: std::sync::Arc<std::os::fd::OwnedFd>,
    /// Nobody answers holds any more (the recorder ended).
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for ExitHold {
    /// The recorder is gone: holds sent and not taken are answered, and a
    /// hold sent after this is not waited for (a channel keeps a message
    /// its receivers left, and with it the `done` its sender waits on: the
    /// user's quit held a dying program 30 s).
    fn drop(&mut self) {
        self.closed.store(true, std::sync::atomic::Ordering::SeqCst);
        while let Ok(h) = self.holds.try_recv() {
            let _ = h.done.send(());
        }
    }
}

/// The tracer thread's side: where holds go, and the eventfd to write.
#[derive(Clone)]
pub struct Holds {
    tx: Sender<Hold>,
    wake: std::sync::Arc<std::os::fd::OwnedFd>,
    closed: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// A channel of holds and its eventfd.
fn holds_channel() -> Result<(Holds, ExitHold)> {
    use std::os::fd::FromRawFd;
    // SAFETY: eventfd returns a new fd we own (or -1, checked).
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error()).context("cannot create an eventfd");
    }
    // SAFETY: fd is valid and owned by nothing else.
    let wake = std::sync::Arc::new(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    let (tx, rx) = bounded::<Hold>(16);
    let closed = std::sync::Arc::default();
    Ok((
        Holds {
            tx,
            wake: std::sync::Arc::clone(&wake),
            closed: std::sync::Arc::clone(&closed),
        },
        ExitHold {
            holds: rx,
            wake,
            closed,
        },
    ))
}

/// How long a tracee waits for the recorder at most; in its exit, for the
/// recorder and a leak scan.
const HOLD_LIMIT: Duration = Duration::from_secs(5);
const EXIT_HOLD: Duration = Duration::from_secs(30);

/// A launched child, held before exec until [`Child::resume`].
pub struct Child {
    pub pid: u32,
    go: Sender<bool>,
    started: Receiver<Result<()>>,
    done: Receiver<ExitStatus>,
    status: Option<ExitStatus>,
    hold: Option<ExitHold>,
}

/// Resolve `prog` as execvp would: a path with a slash as is, else the
/// first executable match in $PATH.
pub fn resolve_program(prog: &str) -> Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if prog.is_empty() {
        bail!("no program to launch");
    }
    if prog.contains('/') {
        let p = PathBuf::from(prog);
        if !p.exists() {
            bail!("cannot run {prog}: no such file");
        }
        if !is_exec(&p) {
            bail!("cannot run {prog}: not an executable file");
        }
        return Ok(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(prog))
        .find(|p| is_exec(p))
        .ok_or_else(|| anyhow!("cannot run {prog}: command not found in PATH"))
}

/// Start `argv` from `exe` (from [`resolve_program`]), held before its
/// exec until [`Child::resume`]. All ptrace calls must come from the
/// thread that seized the child, so one thread owns it for its lifetime.
pub fn spawn_stopped(
    exe: &Path,
    argv: &[String],
    stdio: Option<Stdio>,
    follow: bool,
    watch: Option<crate::recorder::watch::WatchCell>,
    run_as: Option<RunAs>,
) -> Result<Child> {
    let c_exe = CString::new(exe.as_os_str().as_bytes()).context("program path has a NUL byte")?;
    let c_args: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .context("an argument has a NUL byte")?;

    let (pid_tx, pid_rx) = bounded::<Result<u32>>(1);
    let (go_tx, go_rx) = bounded::<bool>(1);
    let (started_tx, started_rx) = bounded::<Result<()>>(1);
    let (done_tx, done_rx) = bounded::<ExitStatus>(1);
    let (holds_tx, exit_hold) = holds_channel()?;
    let exe2 = exe.to_path_buf();
    thread::Builder::new()
        .name("tm-launch".into())
        .spawn(move || {
            let held = match spawn_held(c_exe, c_args, stdio, follow, run_as) {
                Ok(h) => h,
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                    return;
                }
            };
            let _ = pid_tx.send(Ok(held.pid.as_raw() as u32));
            supervise(held, &exe2, &go_rx, &started_tx, &done_tx, &holds_tx, watch);
        })
        .context("cannot start the launcher thread")?;
    let pid = pid_rx
        .recv()
        .map_err(|_| anyhow!("the launcher thread died"))??;
    Ok(Child {
        pid,
        go: go_tx,
        started: started_rx,
        done: done_rx,
        status: None,
        hold: Some(exit_hold),
    })
}

/// Where a launched program's standard streams go instead of ours (the UI
/// owns the terminal: output would garble it, input would steal keys).
pub struct Stdio {
    /// `None`: tm-tui's own.
    pub stdin: Option<std::fs::File>,
    /// stdout and stderr.
    pub output: std::fs::File,
}

/// The user a launched program runs as instead of tm-tui's (root under
/// sudo: the user who ran sudo), set in the child between fork and exec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunAs {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one among them).
    pub groups: Vec<u32>,
    /// The user's name and home, for USER, LOGNAME and HOME (`None`: not
    /// in the user database; the environment is left as it is).
    pub name: Option<String>,
    pub home: Option<PathBuf>,
}

/// A forked child held before its exec, seized by the calling thread.
struct Held {
    pid: Pid,
    /// One byte lets it exec.
    go: PipeWriter,
}

/// Forks with `Command` (its stdio redirected, its signal mask and
/// dispositions reset as std does) a child that tells its pid and waits in
/// `pre_exec` for the byte that lets it exec; seizes it meanwhile, so it
/// is traced from its exec on.
///
/// The exec is the closure's own, and `Command::spawn` runs on a thread
/// of its own, because spawn returns only once the child has exec'd (or
/// died) and, after a failed exec, reaps the child itself: it would race
/// this thread, the tracer, for the child's stops and status. Here the
/// child never returns to std after its pid is told: std sees its pipe
/// close at the exec (or the `_exit`) and returns without waiting.
fn spawn_held(
    exe: CString,
    args: Vec<CString>,
    stdio: Option<Stdio>,
    follow: bool,
    run_as: Option<RunAs>,
) -> Result<Held> {
    let mut cmd = Command::new(OsStr::from_bytes(exe.as_bytes()));
    // Run as another user, the program gets that user's USER, LOGNAME and
    // HOME (sudo's are root's). The closure execs itself, so std's own
    // environment handling (applied after the closures) would not be:
    // the environment is passed to execve. `None`: tm-tui's, as it is.
    let env: Option<Vec<CString>> = run_as.as_ref().map(|r| {
        let mut vars: Vec<(std::ffi::OsString, std::ffi::OsString)> = std::env::vars_os()
            .filter(|(k, _)| !matches!(k.to_str(), Some("USER" | "LOGNAME" | "HOME")))
            .collect();
        if let Some(name) = &r.name {
            vars.push(("USER".into(), name.into()));
            vars.push(("LOGNAME".into(), name.into()));
        }
        if let Some(home) = &r.home {
            vars.push(("HOME".into(), home.into()));
        }
        vars.into_iter()
            .filter_map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                CString::new(kv).ok()
            })
            .collect()
    });
    let envp: Option<Vec<usize>> = env
        .as_ref()
        .map(|e| e.iter().map(|v| v.as_ptr() as usize).chain([0]).collect());
    // The ids and groups to take, prepared before the fork (the child may
    // not allocate).
    let ids = run_as.as_ref().map(|r| {
        (
            r.uid as libc::uid_t,
            r.gid as libc::gid_t,
            r.groups
                .iter()
                .map(|&g| g as libc::gid_t)
                .collect::<Vec<_>>(),
        )
    });
    if let Some(s) = stdio {
        let stderr = s
            .output
            .try_clone()
            .context("cannot duplicate the output file")?;
        if let Some(stdin) = s.stdin {
            cmd.stdin(stdin);
        }
        cmd.stdout(s.output).stderr(stderr);
    }
    let (mut pid_r, pid_w) = io::pipe().context("cannot create a pipe")?;
    let (go_r, go) = io::pipe().context("cannot create a pipe")?;
    let go_fd = go.as_raw_fd();
    // execv's argv as addresses (the closure must be Send and Sync): of
    // the strings in `args`, which the closure owns, and the final NULL.
    let argv: Vec<usize> = args
        .iter()
        .map(|a| a.as_ptr() as usize)
        .chain([0])
        .collect();
    let hold = move || -> io::Result<()> {
        let _own = (&args, &env);
        // The user's ids, groups first (setgroups needs root), the user
        // id last (after it nothing can be changed back). The tracer
        // stays root: it may ptrace a process of any user.
        if let Some((uid, gid, groups)) = &ids {
            // SAFETY: setgroups, setresgid and setresuid are
            // async-signal-safe system calls; `groups` is owned by this
            // closure and outlives the call.
            let failed = unsafe {
                libc::setgroups(groups.len(), groups.as_ptr()) != 0
                    || libc::setresgid(*gid, *gid, *gid) != 0
                    || libc::setresuid(*uid, *uid, *uid) != 0
            };
            if failed {
                return Err(io::Error::last_os_error());
            }
        }
        // tm-tui's own handlers (a flag set in memory this copy does not
        // share) would swallow a Ctrl-C meant for the program while it
        // waits here: back to the defaults the program would have had.
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT] {
            // SAFETY: signal() with SIG_DFL is async-signal-safe.
            unsafe { libc::signal(sig, libc::SIG_DFL) };
        }
        // Its copy of the go pipe's writer: the read below ends at EOF if
        // tm-tui dies first.
        let _ = unistd::close(go_fd);
        let pid = getpid().as_raw().to_ne_bytes();
        if unistd::write(&pid_w, &pid)? != pid.len() {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let mut byte = [0u8];
        loop {
            match unistd::read(&go_r, &mut byte) {
                Ok(1) => break,
                Err(Errno::EINTR) => {}
                _ => break,
            }
        }
        if byte[0] == 1 {
            match &envp {
                // SAFETY: a NUL-terminated path and NULL-terminated arrays
                // of NUL-terminated strings, all owned by this closure.
                Some(envp) => unsafe {
                    libc::execve(exe.as_ptr(), argv.as_ptr().cast(), envp.as_ptr().cast())
                },
                // SAFETY: as above.
                None => unsafe { libc::execv(exe.as_ptr(), argv.as_ptr().cast()) },
            };
        }
        // SAFETY: _exit is async-signal-safe; nothing of std's is left to
        // run in this child.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: between fork and exec the child runs only `hold`: setgroups,
    // setresgid, setresuid, close, getpid, write, read and execv on memory
    // prepared before the fork, no
    // allocation and no lock (async-signal-safe).
    unsafe { cmd.pre_exec(hold) };
    let spawner = thread::Builder::new()
        .name("tm-spawn".into())
        // The child is not waited for here: the launcher thread reaps it.
        .spawn(move || cmd.spawn().map(drop))
        .context("cannot start the spawner thread")?;
    let mut pid = [0u8; 4];
    if pid_r.read_exact(&mut pid).is_err() {
        // The child never said its pid (the pipe closed with the command,
        // once spawn returned): spawn says why.
        let e = match spawner.join() {
            Ok(Err(e)) => anyhow!(e),
            _ => anyhow!("the launched program did not start"),
        };
        return Err(match &run_as {
            Some(r) => e.context(format!(
                "cannot start the program as user {} (uid {}, gid {}; --as-root keeps root)",
                r.name.as_deref().unwrap_or("?"),
                r.uid,
                r.gid
            )),
            None => e.context("cannot start the program"),
        });
    }
    let pid = Pid::from_raw(i32::from_ne_bytes(pid));
    if let Err(e) = ptrace::seize(pid, options(follow)) {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(e).context("cannot ptrace the launched program");
    }
    Ok(Held { pid, go })
}

/// `ptrace(request, pid, 0, data)` for the requests nix lacks
/// (PTRACE_LISTEN) or restricts (PTRACE_CONT with any signal number).
fn ptrace_raw(request: libc::c_uint, pid: Pid, data: libc::c_long) {
    // SAFETY: CONT and LISTEN on our tracee in a ptrace stop: no memory is
    // passed (addr is 0, data a signal number).
    unsafe { libc::ptrace(request, pid.as_raw(), 0, data) };
}

/// The ptrace options of every tracee.
fn options(follow: bool) -> ptrace::Options {
    use ptrace::Options as O;
    let base = O::PTRACE_O_TRACEEXIT | O::PTRACE_O_TRACEEXEC;
    if follow {
        base | O::PTRACE_O_TRACEFORK | O::PTRACE_O_TRACEVFORK | O::PTRACE_O_TRACECLONE
    } else {
        base
    }
}

/// Hold a tracee for the recorder until it answers (or the limit).
fn hold(holds: &Holds, pid: u32, why: HoldWhy) {
    let limit = if matches!(why, HoldWhy::Exit { .. }) {
        EXIT_HOLD
    } else {
        HOLD_LIMIT
    };
    let (done, wait) = bounded(1);
    if holds
        .tx
        .send_timeout(Hold { pid, why, done }, HOLD_LIMIT)
        .is_ok()
    {
        let one = 1u64.to_ne_bytes();
        let _ = unistd::write(&*holds.wake, &one);
        // Answered, or the recorder gone (see `ExitHold`'s drop), or the
        // limit.
        let t0 = std::time::Instant::now();
        while let Err(crossbeam_channel::RecvTimeoutError::Timeout) =
            wait.recv_timeout(Duration::from_millis(50))
        {
            if holds.closed.load(std::sync::atomic::Ordering::SeqCst) || t0.elapsed() >= limit {
                break;
            }
        }
    }
}

/// si_code of a SIGTRAP from a debug register (a hardware breakpoint),
/// and from a debug exception whose cause was cleared.
const TRAP_HWBKPT: i32 = 4;
const TRAP_BRKPT: i32 = 1;
/// A debug trap with the single-step bit (a uprobe's stepped instruction
/// meeting a breakpoint): nobody else single-steps a tracee of ours.
const TRAP_TRACE: i32 = 2;

/// The thread group of a task, and its parent process, from /proc.
fn tgid_ppid(tid: Pid) -> Option<(u32, u32)> {
    let status = std::fs::read_to_string(format!("/proc/{tid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<u32>().ok())
    };
    Some((field("Tgid:")?, field("PPid:")?))
}

/// Every tracee of the tracer thread: by tid, its process and (once its
/// process exec'd) the entry breakpoint to stop at.
#[derive(Default)]
struct Tracees {
    tasks: std::collections::HashMap<i32, u32>,
    /// Per process: the entry breakpoint (address, the word it replaced).
    entries: std::collections::HashMap<u32, (u64, libc::c_long)>,
    /// Children announced by a fork event whose first stop is still to
    /// come: child → parent process.
    forked: std::collections::HashMap<i32, u32>,
    /// The watchpoints, once the recorder made them: each new task gets
    /// its breakpoints at its first stop, a stop for arming arms.
    watch: Option<crate::recorder::watch::WatchCell>,
}

/// What one wait of the tracer loop saw, for its caller.
enum Seen {
    /// A tracee's process (`pid`) ended with `status` (its last task).
    Ended {
        pid: u32,
        status: ExitStatus,
    },
    /// The root's exec (launch mode's first): `entry` was set.
    RootExec,
    Nothing,
}

impl Tracees {
    /// Handle one stop or end of task `tid` (raw wait status). `root`: the
    /// recording's first process.
    fn watcher(&self) -> Option<&crate::recorder::watch::Watcher> {
        self.watch.as_ref().and_then(|c| c.get()).map(|w| &**w)
    }

    fn on_wait(&mut self, tid: Pid, status: libc::c_int, root: u32, holds: &Holds) -> Seen {
        let t = tid.as_raw();
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            if let Some(w) = self.watcher() {
                w.remove_thread(t as u32);
            }
            return match self.tasks.remove(&t) {
                // The leader's end is the process's (it is reaped last).
                Some(pid) if pid == t as u32 => {
                    self.tasks.retain(|_, p| *p != pid);
                    if let Some(w) = self.watcher() {
                        w.forget_process(pid);
                    }
                    self.entries.remove(&pid);
                    Seen::Ended {
                        pid,
                        status: decode_exit(status),
                    }
                }
                _ => Seen::Nothing,
            };
        }
        if !libc::WIFSTOPPED(status) {
            return Seen::Nothing;
        }
        let event = (status >> 16) & 0xff;
        let mut seen = Seen::Nothing;
        let pid = match self.tasks.get(&t) {
            Some(&p) => p,
            None => {
                // A new task's first stop (auto-attached at fork or clone;
                // it may come before the event that announces it).
                let (tgid, ppid) = tgid_ppid(tid).unwrap_or((t as u32, 0));
                self.tasks.insert(t, tgid);
                if let Some(w) = self.watcher() {
                    w.add_thread(t as u32, tgid);
                }
                if tgid == t as u32 && tgid != root {
                    let parent = self.forked.remove(&t).unwrap_or(ppid);
                    hold(holds, tgid, HoldWhy::Fork { parent });
                }
                // Whatever the stop was, its only job was to start.
                ptrace_raw(libc::PTRACE_CONT, tid, 0);
                return Seen::Nothing;
            }
        };
        let mut inject = 0;
        match event {
            libc::PTRACE_EVENT_FORK | libc::PTRACE_EVENT_VFORK => {
                if let Ok(child) = ptrace::getevent(tid) {
                    if !self.tasks.contains_key(&(child as i32)) {
                        self.forked.insert(child as i32, pid);
                    }
                }
            }
            libc::PTRACE_EVENT_CLONE => {}
            libc::PTRACE_EVENT_EXEC => {
                // A non-leader's exec takes the leader's tid: the old one is
                // gone.
                if let Ok(old) = ptrace::getevent(tid) {
                    if old as i32 != t {
                        self.tasks.remove(&(old as i32));
                    }
                }
                self.tasks.retain(|task, p| *p != pid || *task == t);
                // The old image's watched addresses mean nothing now.
                if let Some(w) = self.watcher() {
                    w.forget_process(pid);
                    w.add_thread(t as u32, pid);
                }
                if pid != root || self.entries.contains_key(&u32::MAX) {
                    hold(holds, pid, HoldWhy::Exec);
                } else {
                    seen = Seen::RootExec;
                    // Marks the root's first exec as seen.
                    self.entries.insert(u32::MAX, (0, 0));
                }
                // Stop again at the program's entry point, once the dynamic
                // loader has mapped its libraries: the recorder loads their
                // unwind tables before the program runs.
                if let Some(e) = break_at_entry(tid) {
                    self.entries.insert(pid, e);
                }
            }
            // Maps are readable until we let it go: have the recorder drain
            // now (the leader's exit: the process's last look).
            libc::PTRACE_EVENT_EXIT if t as u32 == pid => {
                let regs = ptrace::getregs(tid)
                    .map(|r| crate::recorder::scan::gp_regs(&r))
                    .unwrap_or_default();
                hold(holds, pid, HoldWhy::Exit { regs });
            }
            libc::PTRACE_EVENT_EXIT => {}
            // Group-stop (SIGSTOP, SIGTSTP): stay stopped as untraced. The
            // same event with SIGTRAP is the SIGCONT that ended it: run on
            // (PTRACE_CONT below).
            libc::PTRACE_EVENT_STOP if libc::WSTOPSIG(status) != libc::SIGTRAP => {
                ptrace_raw(libc::PTRACE_LISTEN, tid, 0);
                return seen;
            }
            0 if libc::WSTOPSIG(status) == libc::SIGTRAP
                && self
                    .entries
                    .get(&pid)
                    .is_some_and(|(at, _)| at_breakpoint(tid, *at)) =>
            {
                if let Some((at, word)) = self.entries.remove(&pid) {
                    leave_breakpoint(tid, at, word);
                }
                hold(holds, pid, HoldWhy::Entry);
            }
            // The tracer stopped the thread to arm a watchpoint: not the
            // program's signal.
            0 if libc::WSTOPSIG(status) == crate::recorder::watch::SIGNAL
                && self.watcher().is_some_and(|w| w.on_signal_stop(t as u32)) => {}
            // A debug trap of one of the watchpoints (a breakpoint moved
            // or disabled as it fired leaves its trap bit for the kernel
            // to send as SIGTRAP): not the program's.
            0 if libc::WSTOPSIG(status) == libc::SIGTRAP
                && self.watcher().is_some()
                && ptrace::getsiginfo(tid)
                    .is_ok_and(|i| matches!(i.si_code, TRAP_HWBKPT | TRAP_BRKPT | TRAP_TRACE)) => {}
            // A signal: passed on.
            0 => inject = libc::WSTOPSIG(status),
            _ => {}
        }
        ptrace_raw(libc::PTRACE_CONT, tid, inject.into());
        seen
    }
}

/// `waitpid(-1, __WALL | __WNOTHREAD)`: any tracee of this thread (never
/// a child another thread of tm-tui started), with `WNOHANG` when `poll`.
fn wait_any(poll: bool) -> io::Result<Option<(Pid, libc::c_int)>> {
    let mut status = 0;
    let flags = libc::__WALL | libc::__WNOTHREAD | if poll { libc::WNOHANG } else { 0 };
    // SAFETY: waiting for our own tracees into a status we own.
    match unsafe { libc::waitpid(-1, &mut status, flags) } {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        t => Ok(Some((Pid::from_raw(t), status))),
    }
}

fn supervise(
    mut held: Held,
    exe: &Path,
    go: &Receiver<bool>,
    started: &Sender<Result<()>>,
    done: &Sender<ExitStatus>,
    holds: &Holds,
    watch: Option<crate::recorder::watch::WatchCell>,
) {
    let pid = held.pid;
    if go.recv().unwrap_or(false) {
        let _ = held.go.write_all(&[1]);
    } else {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let root = pid.as_raw() as u32;
    let mut t = Tracees {
        watch,
        ..Tracees::default()
    };
    t.tasks.insert(pid.as_raw(), root);
    let mut execed = false;
    loop {
        let (tid, status) = match wait_any(false) {
            Ok(Some(s)) => s,
            Ok(None) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            // No tracee left.
            Err(_) => break,
        };
        match t.on_wait(tid, status, root, holds) {
            Seen::RootExec => {
                execed = true;
                let _ = started.send(Ok(()));
            }
            Seen::Ended { pid, status } if pid == root => {
                if !execed {
                    let _ = started.send(Err(anyhow!("cannot execute {}", exe.display())));
                }
                let _ = done.send(status);
            }
            _ => {}
        }
    }
}

/// Ends the attached target's follower thread. The thread waits for its
/// tracees blocked in waitpid (a stop to arm a watchpoint is answered at
/// once, where polling took ~1 ms); a signal with an empty handler (no
/// SA_RESTART) interrupts the wait to make it look at the flag.
#[derive(Clone, Default)]
pub struct FollowerStop {
    flag: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::sync::Arc<std::sync::Mutex<Option<libc::pthread_t>>>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

/// The signal that interrupts the follower's wait.
const FOLLOWER_WAKE: libc::c_int = libc::SIGUSR2;

extern "C" fn wake_handler(_: libc::c_int) {}

impl FollowerStop {
    fn stopping(&self) -> bool {
        self.flag.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Asks the follower to end and waits for it (at most ~0.5 s): its
    /// tracees are released when it ends.
    pub fn stop(&self) {
        use std::sync::atomic::Ordering;
        self.flag.store(true, Ordering::Relaxed);
        let t = *self.thread.lock().unwrap_or_else(|p| p.into_inner());
        let Some(t) = t else { return };
        for _ in 0..250 {
            if self.done.load(Ordering::Relaxed) {
                return;
            }
            // SAFETY: `t` is the follower thread, which marks `done` before
            // it ends; until then its id is valid.
            unsafe { libc::pthread_kill(t, FOLLOWER_WAKE) };
            thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Follows an attached process's children: seizes every thread of `pid`
/// (with fork, vfork, clone and exec events) on a thread of its own, which
/// holds each new child until its probes are attached. The tracees are
/// released (detached by the kernel) when the thread ends, on `stop`.
pub fn follow_attached(
    pid: u32,
    adopt: &[u32],
    stop: FollowerStop,
    watch: Option<crate::recorder::watch::WatchCell>,
) -> Result<ExitHold> {
    let adopt = adopt.to_vec();
    static HANDLER: std::sync::Once = std::sync::Once::new();
    HANDLER.call_once(|| {
        // SAFETY: an empty handler, installed once, without SA_RESTART so
        // that it interrupts the follower's waitpid.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = wake_handler as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(FOLLOWER_WAKE, &sa, std::ptr::null_mut());
        }
    });
    let (holds_tx, exit_hold) = holds_channel()?;
    let (ready_tx, ready_rx) = bounded::<Result<()>>(1);
    thread::Builder::new()
        .name("tm-follow".into())
        .spawn(move || {
            let mut t = Tracees {
                watch,
                ..Tracees::default()
            };
            // The target's threads (and its adopted children's); threads
            // started while seizing: list again until none is new.
            for (i, proc_pid) in std::iter::once(pid).chain(adopt).enumerate() {
                loop {
                    let mut new = 0;
                    let tasks = match std::fs::read_dir(format!("/proc/{proc_pid}/task")) {
                        Ok(d) => d,
                        // An adopted child gone meanwhile: fine.
                        Err(_) if i > 0 => break,
                        Err(e) => {
                            let _ = ready_tx
                                .send(Err(anyhow!("cannot list the threads of {proc_pid}: {e}")));
                            return;
                        }
                    };
                    for e in tasks.flatten() {
                        let Some(tid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok())
                        else {
                            continue;
                        };
                        if t.tasks.contains_key(&tid) {
                            continue;
                        }
                        match ptrace::seize(Pid::from_raw(tid), options(true)) {
                            Ok(()) => {
                                t.tasks.insert(tid, proc_pid);
                                new += 1;
                            }
                            // Gone meanwhile: fine.
                            Err(Errno::ESRCH) => {}
                            Err(e) => {
                                let _ = ready_tx.send(Err(anyhow!(
                                    "cannot ptrace thread {tid} of {proc_pid} to follow its children: {e} \
                                     (another debugger? --no-follow records without)"
                                )));
                                return;
                            }
                        }
                    }
                    if new == 0 {
                        break;
                    }
                }
            }
            // Marks the root's exec as not the launch's first.
            t.entries.insert(u32::MAX, (0, 0));
            // SAFETY: the calling thread's own id.
            *stop.thread.lock().unwrap_or_else(|p| p.into_inner()) =
                Some(unsafe { libc::pthread_self() });
            let _ = ready_tx.send(Ok(()));
            while !stop.stopping() {
                match wait_any(false) {
                    Ok(Some((tid, status))) => {
                        t.on_wait(tid, status, pid, &holds_tx);
                    }
                    Ok(None) => {}
                    // Woken to look at the flag.
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    // No tracee left.
                    Err(_) => break,
                }
            }
            // What stops now is answered a moment longer before the
            // tracees are let go: a SIGTRAP of a breakpoint taken away as
            // it fired reaches its thread when it next returns to user
            // space, and delivered after the detach it would kill the
            // process.
            let until = std::time::Instant::now() + Duration::from_millis(50);
            while std::time::Instant::now() < until {
                match wait_any(true) {
                    Ok(Some((tid, status))) => {
                        t.on_wait(tid, status, pid, &holds_tx);
                    }
                    Ok(None) => thread::sleep(Duration::from_millis(2)),
                    Err(_) => break,
                }
            }
            stop.done.store(true, std::sync::atomic::Ordering::Relaxed);
            // Returning detaches every tracee (the kernel restarts those in
            // a ptrace stop).
        })
        .context("cannot start the follower thread")?;
    ready_rx
        .recv()
        .map_err(|_| anyhow!("the follower thread died"))??;
    Ok(exit_hold)
}

/// How a child ended, from its wait status.
fn decode_exit(status: libc::c_int) -> ExitStatus {
    if libc::WIFSIGNALED(status) {
        ExitStatus::Signal {
            signo: libc::WTERMSIG(status),
            core: libc::WCOREDUMP(status),
        }
    } else {
        ExitStatus::Code(libc::WEXITSTATUS(status))
    }
}

/// The program's entry point (AT_ENTRY of its auxiliary vector), with an
/// int3 written over its first byte; the replaced word to restore it.
fn break_at_entry(pid: Pid) -> Option<(u64, libc::c_long)> {
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    let at = auxv.chunks_exact(16).find_map(|kv| {
        let k = u64::from_ne_bytes(kv[..8].try_into().ok()?);
        let v = u64::from_ne_bytes(kv[8..].try_into().ok()?);
        (k == libc::AT_ENTRY).then_some(v)
    })?;
    let addr = at as ptrace::AddressType;
    let word = ptrace::read(pid, addr).ok()?;
    let trap = (word & !0xff) | 0xcc;
    ptrace::write(pid, addr, trap).ok()?;
    Some((at, word))
}

/// Whether the tracee stopped on the entry breakpoint at `at`.
fn at_breakpoint(pid: Pid, at: u64) -> bool {
    ptrace::getregs(pid).is_ok_and(|r| r.rip == at + 1)
}

/// Put the entry's first word back and restart it at its first byte.
fn leave_breakpoint(pid: Pid, at: u64, word: libc::c_long) {
    let _ = ptrace::write(pid, at as ptrace::AddressType, word);
    if let Ok(mut regs) = ptrace::getregs(pid) {
        regs.rip = at;
        let _ = ptrace::setregs(pid, regs);
    }
}

impl Child {
    /// The recorder's half of the exit hold (taken once).
    pub fn take_exit_hold(&mut self) -> Option<ExitHold> {
        self.hold.take()
    }

    /// Let the held child exec; fails if exec failed.
    pub fn resume(&mut self) -> Result<()> {
        let _ = self.go.send(true);
        match self.started.recv() {
            Ok(r) => r,
            Err(_) => Err(anyhow!("the launcher thread died")),
        }
    }

    /// Wait for the child to end.
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let s = self
            .done
            .recv()
            .map_err(|_| anyhow!("the launcher thread died"))?;
        self.status = Some(s);
        Ok(s)
    }

    /// Wait for the child to end, at most `limit`; `None` if it runs on.
    pub fn wait_for(&mut self, limit: std::time::Duration) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.done.recv_timeout(limit).ok();
        }
        self.status
    }

    /// End a running child (the user quit before it ended): SIGKILL. Its
    /// status still comes from [`Self::wait`].
    pub fn terminate(&mut self) {
        if self.status.is_some() {
            return;
        }
        // Our own child, which only the launcher thread reaps (after this
        // call, or it is a zombie): the pid is not reused.
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
    }

    /// Kill a child that never got to run (attaching failed).
    pub fn kill(&mut self) {
        let _ = self.go.send(false);
        let _ = self.wait();
    }
}
