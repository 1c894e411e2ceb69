//! Helpers shared by every layer: a fast hasher for integer keys, a
//! deterministic random generator for tests and benches, the two
//! address-space rules the recorder and the model must agree on, and the
//! glob of `--probe` and of the `call=` filter.

pub mod hash;
pub mod log;
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

/// `pat` matches all of `s`, `*` standing for any run of bytes and `?` for
/// one byte: the rule of `--probe` patterns and of the `call=` filter.
pub fn glob_match(pat: &str, s: &str) -> bool {
    let (p, s) = (pat.as_bytes(), s.as_bytes());
    let (mut pi, mut si) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while si < s.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == s[si]) {
            pi += 1;
            si += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = si;
            pi += 1;
        } else if let Some(st) = star {
            pi = st + 1;
            mark += 1;
            si = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == b'*')
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        assert!(glob_match("parse_*", "parse_request"));
        assert!(glob_match("*_req*", "parse_request"));
        assert!(glob_match("p?rse", "parse"));
        assert!(!glob_match("p?rse", "prse"));
        assert!(!glob_match("parse_*", "xparse_request"));
        assert!(glob_match("*", ""));
        assert!(!glob_match("a*b", "acbx"));
        assert!(glob_match("a*b*b", "abxbb"));
        assert!(glob_match("parse", "parse"));
        assert!(!glob_match("pars", "parse"));
        assert!(!glob_match("", "parse"));
    }
}
