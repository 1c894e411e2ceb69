//! Helpers shared by every layer: a fast hasher for integer keys, a
//! deterministic random generator for tests and benches, and the two
//! address-space rules the recorder and the model must agree on.

pub mod hash;
pub mod xorshift;

/// Libraries of the system (libc, libstdc++, …): their frames are where
/// the program's call went, not where it came from.
pub fn is_system_path(p: &str) -> bool {
    [
        "/lib/",
        "/lib64/",
        "/usr/lib/",
        "/usr/lib64/",
        "/usr/libexec/",
    ]
    .iter()
    .any(|d| p.starts_with(d))
}

/// The page of the kernel's uretprobe trampoline on x86-64 (the tracer
/// gets it from here too).
pub const URETPROBE_PAGE: u64 = 0x7fff_ffff_e000;

/// A return address in the uretprobe trampoline's page is a probed
/// call's, replaced until it returns.
pub fn is_uretprobe_trampoline(addr: u64) -> bool {
    (URETPROBE_PAGE..URETPROBE_PAGE + 4096).contains(&addr)
}
