//! Attach mode's leak scan: the target paused for it, thread by thread,
//! and let go again on every path.

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::unistd::Pid;

use crate::event::ScanTrigger;
use crate::recorder::scan::Request;

/// An attached target stopped for a leak scan: every thread seized with
/// ptrace and interrupted; let go (detached, running) when dropped, on
/// every path. All of it must happen on one thread (ptrace's rule).
///
/// PTRACE_SEIZE + PTRACE_INTERRUPT rather than SIGSTOP: a SIGSTOP is seen
/// by the target's parent (a shell marks the job stopped) and the SIGCONT
/// that ends it runs the target's SIGCONT handler, or continues a target
/// its user had stopped; an interrupt is invisible to it, stops each
/// thread where it is and gives its registers.
pub struct Paused {
    pub pid: u32,
    pub since: Instant,
    /// Each stopped thread's registers.
    pub regs: Vec<Vec<u64>>,
    /// Seized threads, with a signal that arrived as they stopped (given
    /// back when they are let go).
    tids: Vec<(Pid, i32)>,
}

/// Stops every thread of `pid`.
pub fn pause(pid: u32) -> Result<Paused> {
    let mut p = Paused {
        pid,
        since: Instant::now(),
        regs: Vec::new(),
        tids: Vec::new(),
    };
    // Threads started while the others were being stopped: look again
    // until no new one shows up.
    loop {
        let tids = tasks(pid)?;
        let new: Vec<Pid> = tids
            .into_iter()
            .filter(|t| !p.tids.iter().any(|(s, _)| s == t))
            .collect();
        if new.is_empty() {
            break;
        }
        for t in new {
            match ptrace::seize(t, ptrace::Options::empty()) {
                Ok(()) => {}
                // Gone meanwhile: nothing to stop.
                Err(Errno::ESRCH) => continue,
                Err(e) => bail!(
                    "cannot pause pid {pid} to scan its memory (ptrace thread {t}: {e}; is a debugger attached?)"
                ),
            }
            let mut sig = 0;
            if ptrace::interrupt(t).is_ok() {
                sig = wait_stop(t);
            }
            p.tids.push((t, sig));
            if sig >= 0 {
                if let Ok(r) = ptrace::getregs(t) {
                    p.regs.push(crate::recorder::scan::gp_regs(&r));
                }
            }
        }
    }
    if p.regs.is_empty() {
        bail!("pid {pid} could not be stopped (has it exited?)");
    }
    Ok(p)
}

/// Waits for the interrupted thread to stop; the signal it stopped with
/// when that was a signal's delivery (0 for the interrupt), -1 if it died.
fn wait_stop(t: Pid) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waiting for a thread we trace into a status we own.
        let r = unsafe { libc::waitpid(t.as_raw(), &mut status, libc::__WALL) };
        if r < 0 {
            if Errno::last() == Errno::EINTR {
                continue;
            }
            return -1;
        }
        if !libc::WIFSTOPPED(status) {
            return -1;
        }
        let event = (status >> 16) & 0xff;
        return if event == libc::PTRACE_EVENT_STOP {
            0
        } else {
            libc::WSTOPSIG(status)
        };
    }
}

fn tasks(pid: u32) -> Result<Vec<Pid>> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map_err(|_| anyhow!("pid {pid} has exited: no memory to scan"))?;
    Ok(dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .map(Pid::from_raw)
        .collect())
}

impl Paused {
    /// The scan request for the model's owner.
    pub fn request(&self) -> Request {
        Request {
            pid: self.pid,
            regs: self.regs.clone(),
            trigger: ScanTrigger::Paused,
            since: self.since,
            done: None,
        }
    }

    /// Lets the target run again; how long it was stopped.
    pub fn resume(mut self) -> Duration {
        self.detach();
        self.since.elapsed()
    }

    fn detach(&mut self) {
        for (t, sig) in self.tids.drain(..) {
            let sig = if sig > 0 { sig } else { 0 };
            // SAFETY: PTRACE_DETACH of our tracee, the signal it stopped
            // with given back (0: none); no memory is passed.
            unsafe { libc::ptrace(libc::PTRACE_DETACH, t.as_raw(), 0, sig as libc::c_long) };
        }
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        self.detach();
    }
}
