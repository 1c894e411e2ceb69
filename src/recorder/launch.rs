//! Launch mode: start a program held before its exec, so probes are
//! attached before it runs its first instruction, then let it go.
//!
//! The child is also ptrace-seized with PTRACE_O_TRACEEXIT: it stops at the
//! start of its exit while its address space still exists, so the recorder
//! can read /proc/PID/maps and normalize the last stacks (a short-lived
//! program is often gone before its records are read). Signals are passed
//! through unchanged.

use std::ffi::{CString, OsStr};
use std::io::{self, PipeWriter, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
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

/// The recorder's side of the exit hold: a message on `exiting` says the
/// target is stopped (at its entry, or in its exit with maps readable);
/// the recorder drains and answers on `drained`.
pub struct ExitHold {
    pub exiting: Receiver<Hold>,
    pub drained: Sender<()>,
}

/// Where a held target is stopped.
#[derive(Debug)]
pub enum Hold {
    Entry,
    /// In its exit, its memory still there: the stopped thread's general
    /// registers (see [`crate::recorder::scan::gp_regs`]), for a leak scan.
    Exit {
        regs: Vec<u64>,
    },
}

/// How long the target waits at its entry for the recorder, and in its
/// exit for the recorder and a leak scan: bounded, so a stuck consumer
/// cannot hang it.
const ENTRY_HOLD: Duration = Duration::from_secs(5);
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
pub fn spawn_stopped(exe: &Path, argv: &[String], stdio: Option<Stdio>) -> Result<Child> {
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
    let (exiting_tx, exiting_rx) = bounded::<Hold>(1);
    let (drained_tx, drained_rx) = bounded::<()>(1);
    let exe2 = exe.to_path_buf();
    thread::Builder::new()
        .name("tm-launch".into())
        .spawn(move || {
            let held = match spawn_held(c_exe, c_args, stdio) {
                Ok(h) => h,
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                    return;
                }
            };
            let _ = pid_tx.send(Ok(held.pid.as_raw() as u32));
            supervise(
                held,
                &exe2,
                &go_rx,
                &started_tx,
                &done_tx,
                &exiting_tx,
                &drained_rx,
            );
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
        hold: Some(ExitHold {
            exiting: exiting_rx,
            drained: drained_tx,
        }),
    })
}

/// Where a launched program's standard streams go instead of ours (the UI
/// owns the terminal: output would garble it, input would steal keys).
pub struct Stdio {
    pub stdin: std::fs::File,
    /// stdout and stderr.
    pub output: std::fs::File,
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
fn spawn_held(exe: CString, args: Vec<CString>, stdio: Option<Stdio>) -> Result<Held> {
    let mut cmd = Command::new(OsStr::from_bytes(exe.as_bytes()));
    if let Some(s) = stdio {
        let stderr = s
            .output
            .try_clone()
            .context("cannot duplicate the output file")?;
        cmd.stdin(s.stdin).stdout(s.output).stderr(stderr);
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
        let _own = &args;
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
            // SAFETY: a NUL-terminated path and a NULL-terminated array of
            // NUL-terminated strings, all owned by this closure.
            unsafe { libc::execv(exe.as_ptr(), argv.as_ptr().cast()) };
        }
        // SAFETY: _exit is async-signal-safe; nothing of std's is left to
        // run in this child.
        unsafe { libc::_exit(127) }
    };
    // SAFETY: between fork and exec the child runs only `hold`: close,
    // getpid, write, read and execv on memory prepared before the fork, no
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
        return Err(e.context("cannot start the program"));
    }
    let pid = Pid::from_raw(i32::from_ne_bytes(pid));
    let opts = ptrace::Options::PTRACE_O_TRACEEXIT | ptrace::Options::PTRACE_O_TRACEEXEC;
    if let Err(e) = ptrace::seize(pid, opts) {
        let _ = kill(pid, Signal::SIGKILL);
        let _ = waitpid(pid, None);
        return Err(e).context("cannot ptrace the launched program");
    }
    Ok(Held { pid, go })
}

/// `waitpid(pid, __WALL)`, the raw status: nix's `WaitStatus` cannot hold
/// a real-time signal, which the target may get and must be passed on.
fn wait_raw(pid: Pid) -> io::Result<libc::c_int> {
    let mut status = 0;
    // SAFETY: waiting for our own (traced) child into a status we own.
    if unsafe { libc::waitpid(pid.as_raw(), &mut status, libc::__WALL) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(status)
}

/// `ptrace(request, pid, 0, data)` for the requests nix lacks
/// (PTRACE_LISTEN) or restricts (PTRACE_CONT with any signal number).
fn ptrace_raw(request: libc::c_uint, pid: Pid, data: libc::c_long) {
    // SAFETY: CONT and LISTEN on our tracee in a ptrace stop: no memory is
    // passed (addr is 0, data a signal number).
    unsafe { libc::ptrace(request, pid.as_raw(), 0, data) };
}

fn supervise(
    mut held: Held,
    exe: &Path,
    go: &Receiver<bool>,
    started: &Sender<Result<()>>,
    done: &Sender<ExitStatus>,
    exiting: &Sender<Hold>,
    drained: &Receiver<()>,
) {
    let pid = held.pid;
    if go.recv().unwrap_or(false) {
        let _ = held.go.write_all(&[1]);
    } else {
        let _ = kill(pid, Signal::SIGKILL);
    }
    let mut execed = false;
    // The entry breakpoint: (address, the word it replaced).
    let mut entry: Option<(u64, libc::c_long)> = None;
    loop {
        let status = match wait_raw(pid) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            if !execed {
                let _ = started.send(Err(anyhow!("cannot execute {}", exe.display())));
            }
            let _ = done.send(decode_exit(status));
            return;
        }
        if !libc::WIFSTOPPED(status) {
            continue;
        }
        let event = (status >> 16) & 0xff;
        let mut inject = 0;
        match event {
            libc::PTRACE_EVENT_EXEC => {
                execed = true;
                // Stop again at the program's entry point, once the
                // dynamic loader has mapped its libraries: the recorder
                // loads their unwind tables before the program runs.
                entry = break_at_entry(pid);
                let _ = started.send(Ok(()));
            }
            // Maps are readable until we let it go: have the recorder drain
            // now. Bounded, so a stuck consumer cannot hang the target.
            libc::PTRACE_EVENT_EXIT => {
                let regs = ptrace::getregs(pid)
                    .map(|r| crate::recorder::scan::gp_regs(&r))
                    .unwrap_or_default();
                if exiting.try_send(Hold::Exit { regs }).is_ok() {
                    let _ = drained.recv_timeout(EXIT_HOLD);
                }
            }
            // Group-stop (SIGSTOP, SIGTSTP): stay stopped as untraced. The
            // same event with SIGTRAP is the SIGCONT that ended it: run on
            // (PTRACE_CONT below).
            libc::PTRACE_EVENT_STOP if libc::WSTOPSIG(status) != libc::SIGTRAP => {
                ptrace_raw(libc::PTRACE_LISTEN, pid, 0);
                continue;
            }
            0 if libc::WSTOPSIG(status) == libc::SIGTRAP
                && entry.is_some_and(|(at, _)| at_breakpoint(pid, at)) =>
            {
                if let Some((at, word)) = entry.take() {
                    leave_breakpoint(pid, at, word);
                }
                // Bounded, as the exit hold: the program runs on anyway.
                if exiting.try_send(Hold::Entry).is_ok() {
                    let _ = drained.recv_timeout(ENTRY_HOLD);
                }
            }
            // A signal: passed on.
            0 => inject = libc::WSTOPSIG(status),
            _ => {}
        }
        ptrace_raw(libc::PTRACE_CONT, pid, inject.into());
    }
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
