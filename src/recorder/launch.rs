//! Launch mode: start a program stopped, so probes are attached before it
//! runs its first instruction, then let it go.
//!
//! The child is also ptrace-seized with PTRACE_O_TRACEEXIT: it stops at the
//! start of its exit while its address space still exists, so the recorder
//! can read /proc/PID/maps and normalize the last stacks (a short-lived
//! program is often gone before its records are read). Signals are passed
//! through unchanged.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use crossbeam_channel::{bounded, Receiver, Sender};

use crate::event::ExitStatus;

/// The recorder's side of the exit hold: a message on `exiting` says the
/// target is stopped in its exit with maps readable; the recorder drains
/// and answers on `drained`.
pub struct ExitHold {
    pub exiting: Receiver<()>,
    pub drained: Sender<()>,
}

/// A launched child, stopped before exec until [`Child::resume`].
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

/// Fork `argv` stopped before exec'ing `exe` (from [`resolve_program`]).
/// All ptrace calls must come from the thread that seized the child, so
/// one thread owns it for its lifetime.
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
    let (exiting_tx, exiting_rx) = bounded::<()>(1);
    let (drained_tx, drained_rx) = bounded::<()>(1);
    let exe2 = exe.to_path_buf();
    thread::Builder::new()
        .name("tm-launch".into())
        .spawn(move || {
            let pid = match fork_stopped(&c_exe, &c_args, stdio.as_ref()) {
                Ok(p) => p,
                Err(e) => {
                    let _ = pid_tx.send(Err(e));
                    return;
                }
            };
            let _ = pid_tx.send(Ok(pid as u32));
            supervise(
                pid,
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

/// Fork; the child stops itself, then execs. Returns once it is stopped
/// and seized.
fn fork_stopped(exe: &CString, args: &[CString], stdio: Option<&Stdio>) -> Result<i32> {
    use std::os::fd::AsRawFd;
    let fds = stdio.map(|s| (s.stdin.as_raw_fd(), s.output.as_raw_fd()));
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: between fork and exec the child only calls async-signal-safe
    // functions (raise, execv, _exit) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error()).context("fork failed");
    }
    if pid == 0 {
        // SAFETY: see above; the pointers stay valid until exec or _exit,
        // and dup2 is async-signal-safe on descriptors opened before fork.
        unsafe {
            if let Some((input, output)) = fds {
                libc::dup2(input, 0);
                libc::dup2(output, 1);
                libc::dup2(output, 2);
            }
            libc::raise(libc::SIGSTOP);
            libc::execv(exe.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
    }
    let mut status = 0;
    // SAFETY: waiting for our own child to stop.
    let r = unsafe { libc::waitpid(pid, &mut status, libc::WUNTRACED) };
    if r != pid || !libc::WIFSTOPPED(status) {
        bail!("the launched program did not stop as expected");
    }
    let opts = libc::PTRACE_O_TRACEEXIT | libc::PTRACE_O_TRACEEXEC;
    // SAFETY: seizing our own stopped child; no memory is passed.
    if unsafe { libc::ptrace(libc::PTRACE_SEIZE, pid, 0, opts as libc::c_long) } != 0 {
        let e = io::Error::last_os_error();
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, &mut status, 0);
        }
        return Err(e).context("cannot ptrace the launched program");
    }
    Ok(pid)
}

fn supervise(
    pid: i32,
    exe: &Path,
    go: &Receiver<bool>,
    started: &Sender<Result<()>>,
    done: &Sender<ExitStatus>,
    exiting: &Sender<()>,
    drained: &Receiver<()>,
) {
    let run = go.recv().unwrap_or(false);
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, if run { libc::SIGCONT } else { libc::SIGKILL }) };
    let mut execed = false;
    // The entry breakpoint: (address, the word it replaced).
    let mut entry: Option<(u64, libc::c_long)> = None;
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own (traced) child.
        let r = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
        if r < 0 {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            break;
        }
        if libc::WIFEXITED(status) || libc::WIFSIGNALED(status) {
            let s = if libc::WIFSIGNALED(status) {
                ExitStatus::Signal {
                    signo: libc::WTERMSIG(status),
                    core: libc::WCOREDUMP(status),
                }
            } else {
                ExitStatus::Code(libc::WEXITSTATUS(status))
            };
            if !execed {
                let _ = started.send(Err(anyhow!("cannot execute {}", exe.display())));
            }
            let _ = done.send(s);
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
            libc::PTRACE_EVENT_EXIT if execed && exiting.try_send(()).is_ok() => {
                let _ = drained.recv_timeout(Duration::from_secs(5));
            }
            libc::PTRACE_EVENT_STOP if execed => {
                // Group-stop (SIGSTOP, SIGTSTP): stay stopped as untraced.
                // SAFETY: our tracee, in a ptrace stop.
                unsafe { libc::ptrace(libc::PTRACE_LISTEN, pid, 0, 0) };
                continue;
            }
            // Before exec this is the stop it put itself in: we want it to
            // run now (PTRACE_CONT below).
            libc::PTRACE_EVENT_STOP => {}
            0 if libc::WSTOPSIG(status) == libc::SIGTRAP
                && entry.is_some_and(|(at, _)| at_breakpoint(pid, at)) =>
            {
                if let Some((at, word)) = entry.take() {
                    leave_breakpoint(pid, at, word);
                }
                // Bounded, as the exit hold: the program runs on anyway.
                if exiting.try_send(()).is_ok() {
                    let _ = drained.recv_timeout(Duration::from_secs(5));
                }
            }
            0 => {
                let sig = libc::WSTOPSIG(status);
                // The SIGSTOP it sent itself before exec is spent.
                if sig != libc::SIGSTOP || execed {
                    inject = sig;
                }
            }
            _ => {}
        }
        // SAFETY: our tracee, in a ptrace stop; passes the signal on.
        unsafe { libc::ptrace(libc::PTRACE_CONT, pid, 0, inject as libc::c_long) };
    }
}

/// The program's entry point (AT_ENTRY of its auxiliary vector), with an
/// int3 written over its first byte; the replaced word to restore it.
fn break_at_entry(pid: i32) -> Option<(u64, libc::c_long)> {
    let auxv = std::fs::read(format!("/proc/{pid}/auxv")).ok()?;
    let at = auxv.chunks_exact(16).find_map(|kv| {
        let k = u64::from_ne_bytes(kv[..8].try_into().ok()?);
        let v = u64::from_ne_bytes(kv[8..].try_into().ok()?);
        (k == libc::AT_ENTRY).then_some(v)
    })?;
    // SAFETY: peek and poke of our tracee's text while it is in a ptrace
    // stop; errno tells a failed peek from a word of -1.
    unsafe {
        *libc::__errno_location() = 0;
        let word = libc::ptrace(libc::PTRACE_PEEKTEXT, pid, at as usize, 0);
        if word == -1 && *libc::__errno_location() != 0 {
            return None;
        }
        let trap = (word & !0xff) | 0xcc;
        if libc::ptrace(libc::PTRACE_POKETEXT, pid, at as usize, trap) != 0 {
            return None;
        }
        Some((at, word))
    }
}

/// Whether the tracee stopped on the entry breakpoint at `at`.
fn at_breakpoint(pid: i32, at: u64) -> bool {
    // SAFETY: reading our stopped tracee's registers into a struct we own.
    unsafe {
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs as *mut _ as usize) == 0
            && regs.rip == at + 1
    }
}

/// Put the entry's first word back and restart it at its first byte.
fn leave_breakpoint(pid: i32, at: u64, word: libc::c_long) {
    // SAFETY: as in `break_at_entry` and `at_breakpoint`.
    unsafe {
        libc::ptrace(libc::PTRACE_POKETEXT, pid, at as usize, word);
        let mut regs: libc::user_regs_struct = std::mem::zeroed();
        if libc::ptrace(libc::PTRACE_GETREGS, pid, 0, &mut regs as *mut _ as usize) == 0 {
            regs.rip = at;
            libc::ptrace(libc::PTRACE_SETREGS, pid, 0, &regs as *const _ as usize);
        }
    }
}

impl Child {
    /// The recorder's half of the exit hold (taken once).
    pub fn take_exit_hold(&mut self) -> Option<ExitHold> {
        self.hold.take()
    }

    /// Let the stopped child exec; fails if exec failed.
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

    /// End a running child (the user quit before it ended): SIGKILL. Its
    /// status still comes from [`Self::wait`].
    pub fn terminate(&mut self) {
        if self.status.is_some() {
            return;
        }
        // SAFETY: signalling our own child, which only the launcher thread
        // reaps (after this call, or it is a zombie): the pid is not reused.
        unsafe { libc::kill(self.pid as libc::pid_t, libc::SIGKILL) };
    }

    /// Kill a child that never got to run (attaching failed).
    pub fn kill(&mut self) {
        let _ = self.go.send(false);
        let _ = self.wait();
    }
}
