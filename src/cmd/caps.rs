//! The privileges a recording needs, as capabilities rather than root: a
//! user granted them (setcap on the binary, ambient capabilities, a
//! container's capability set) records as root does; one without gets a
//! line naming what is missing.
//!
//! Found by running tm-tui as `nobody` with capability sets given by
//! `setpriv --inh-caps … --ambient-caps …` (the README lists the runs):
//! - CAP_BPF and CAP_PERFMON: loading the tracer (tp_btf, uprobe and
//!   perf_event programs, maps), attaching its uprobes and raw
//!   tracepoints, the watchpoints' perf events. Always.
//! - CAP_SYS_PTRACE: attaching to a process of another user (reading its
//!   maps, memory and files under /proc/PID, seizing its threads). A
//!   launched program, or a process of the same user, needs none (unless
//!   Yama's ptrace_scope forbids attaching to a non-child: then it does).

use anyhow::{bail, Result};

/// Capability numbers (linux/capability.h).
pub const CAP_SYS_PTRACE: u32 = 19;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

fn cap_name(cap: u32) -> &'static str {
    match cap {
        CAP_SYS_PTRACE => "CAP_SYS_PTRACE",
        CAP_PERFMON => "CAP_PERFMON",
        CAP_BPF => "CAP_BPF",
        _ => "CAP_?",
    }
}

/// A hexadecimal capability mask of /proc/PID/status (`CapEff:`).
fn status_mask(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

/// tm-tui's effective capabilities (none if they cannot be read).
pub fn effective() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| status_mask(&s, "CapEff:"))
        .unwrap_or(0)
}

/// The effective user id of a process (`Uid:`'s second field).
fn euid_of(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Whether the process `pid` is one tm-tui may ptrace without
/// CAP_SYS_PTRACE: its user and group are ours (real, effective and saved
/// ids alike) and Yama does not restrict attaching.
fn ptraceable_unprivileged(pid: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        // Gone, or hidden (hidepid): the attach says which.
        return true;
    };
    let all = |field: &str, me: u32| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .is_some_and(|ids| ids.split_whitespace().all(|id| id.parse() == Ok(me)))
    };
    // The kernel's rule (ptrace_may_access): the caller's ids are the
    // target's real, effective and saved user and group ids.
    let same_user =
        all("Uid:", nix::unistd::getuid().as_raw()) && all("Gid:", nix::unistd::getgid().as_raw());
    let yama = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(0);
    same_user && yama == 0
}

/// What recording `pid` (`None`: a program tm-tui launches) needs, given
/// the effective capabilities `have`; an error naming what is missing.
pub fn check(have: u64, pid: Option<u32>) -> Result<()> {
    let missing = |caps: &[u32]| -> Vec<&'static str> {
        caps.iter()
            .filter(|&&c| have & (1 << c) == 0)
            .map(|&c| cap_name(c))
            .collect()
    };
    let hint = "run as root or `sudo setcap cap_bpf,cap_perfmon,cap_sys_ptrace+ep $(which tm-tui)`";
    let m = missing(&[CAP_BPF, CAP_PERFMON]);
    if !m.is_empty() {
        bail!(
            "recording needs CAP_BPF and CAP_PERFMON (missing: {}); {hint}",
            m.join(", ")
        );
    }
    if let Some(pid) = pid {
        if have & (1 << CAP_SYS_PTRACE) == 0 && !ptraceable_unprivileged(pid) {
            let whose = match euid_of(pid) {
                Some(uid) if uid != nix::unistd::getuid().as_raw() => {
                    format!("a process of user {uid}")
                }
                _ => {
                    "not a child of tm-tui and of another group or under Yama's ptrace_scope".into()
                }
            };
            bail!(
                "attaching to pid {pid}, {whose}, needs CAP_SYS_PTRACE (missing: CAP_SYS_PTRACE); {hint}"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_missing_capabilities() {
        assert_eq!(
            status_mask("CapInh:\t0\nCapEff:\t000000c000000000\n", "CapEff:"),
            Some(0xc0_0000_0000)
        );
        let bpf_perfmon = (1 << CAP_BPF) | (1 << CAP_PERFMON);
        assert!(check(bpf_perfmon, None).is_ok());
        let e = check(1 << CAP_BPF, None)
            .expect_err("no CAP_PERFMON")
            .to_string();
        assert!(
            e.starts_with(
                "recording needs CAP_BPF and CAP_PERFMON (missing: CAP_PERFMON); run as root or `"
            ),
            "{e}"
        );
        let e = check(0, None).expect_err("none").to_string();
        assert!(e.contains("(missing: CAP_BPF, CAP_PERFMON)"), "{e}");
        // pid 1 is root's: without CAP_SYS_PTRACE only root itself may.
        if !nix::unistd::getuid().is_root() {
            let e = check(bpf_perfmon, Some(1))
                .expect_err("no ptrace")
                .to_string();
            assert!(e.contains("needs CAP_SYS_PTRACE"), "{e}");
        }
        assert!(check(bpf_perfmon | (1 << CAP_SYS_PTRACE), Some(1)).is_ok());
    }
}
