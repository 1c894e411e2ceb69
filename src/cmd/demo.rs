//! The bundled demo programs (assets/*.c), compiled on first use with the
//! system C compiler so every user gets binaries with symbols and frame
//! pointers.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};

pub struct Demo {
    pub name: &'static str,
    pub file: &'static str,
    pub source: &'static str,
    pub about: &'static str,
    /// Arguments the demo runs with under `tm-tui demo`.
    pub args: &'static [&'static str],
}

pub const DEMOS: &[Demo] = &[
    Demo {
        name: "uaf",
        file: "uaf.c",
        source: include_str!("../../assets/uaf.c"),
        about: "use-after-free of a 300000-byte block: SIGSEGV",
        args: &[],
    },
    Demo {
        name: "double-free",
        file: "double_free.c",
        source: include_str!("../../assets/double_free.c"),
        about: "double free: glibc aborts with SIGABRT",
        args: &[],
    },
    Demo {
        name: "leak",
        file: "leak.c",
        source: include_str!("../../assets/leak.c"),
        about: "steady leak of 64-byte records from one call site",
        args: &["2000", "1000"],
    },
    Demo {
        name: "threads",
        file: "threads.c",
        source: include_str!("../../assets/threads.c"),
        about: "two threads churning malloc/free",
        args: &["2", "200000"],
    },
    Demo {
        name: "calls",
        file: "calls.c",
        source: include_str!("../../assets/calls.c"),
        about: "requests through a parser: nesting, recursion, longjmp (try --probe 'process_request(int, str)' --probe parse_body --probe checksum)",
        args: &["10"],
    },
    Demo {
        name: "netio",
        file: "netio.c",
        source: include_str!("../../assets/netio.c"),
        about: "a file written and read, a loopback TCP ping-pong, a contended mutex (try --trace io,net,lock)",
        args: &[],
    },
    Demo {
        name: "callbench",
        file: "callbench.c",
        source: include_str!("../../assets/callbench.c"),
        about: "the call and write loops `tm-tui bench probes` times",
        args: &["call", "100000", "/dev/null"],
    },
];

pub fn find(name: &str) -> Result<&'static Demo> {
    DEMOS.iter().find(|d| d.name == name).with_context(|| {
        let names: Vec<&str> = DEMOS.iter().map(|d| d.name).collect();
        format!("unknown demo '{name}' (try one of: {})", names.join(", "))
    })
}

/// How a demo is compiled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    /// -O0 with frame pointers: every frame where the source says.
    Lab,
    /// As distributions build: -O2, no frame pointers.
    Distro,
    /// As `Distro`, linked with the allocator library at this path
    /// (jemalloc, tcmalloc, mimalloc), named after it: `tag`.
    Linked {
        lib: &'static str,
        tag: &'static str,
    },
}

/// Compile the demo into `dir` (default: a per-user cache directory) and
/// return the binary's path. Rebuilds when the source changed.
pub fn build(demo: &Demo, dir: Option<PathBuf>) -> Result<PathBuf> {
    build_as(demo, dir, Flavor::Lab)
}

/// [`build`] with a choice of flags; the Distro build is `NAME-O2`.
pub fn build_as(demo: &Demo, dir: Option<PathBuf>, flavor: Flavor) -> Result<PathBuf> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(std::env::temp_dir)
            .join("tm-tui")
            .join("demos"),
    };
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // Concurrent builds (parallel tests, two terminals) take turns: one
    // must never run a binary another is still writing.
    let lock_path = dir.join(".lock");
    let lock = std::fs::File::create(&lock_path)
        .with_context(|| format!("cannot create {}", lock_path.display()))?;
    lock.lock()
        .with_context(|| format!("cannot lock {}", lock_path.display()))?;
    let src = dir.join(demo.file);
    let (bin, flags, lib): (_, &[&str], _) = match flavor {
        Flavor::Lab => (
            dir.join(demo.name),
            &["-g", "-O0", "-fno-omit-frame-pointer"],
            None,
        ),
        Flavor::Distro => (
            dir.join(format!("{}-O2", demo.name)),
            &["-g", "-O2", "-fomit-frame-pointer"],
            None,
        ),
        Flavor::Linked { lib, tag } => (
            dir.join(format!("{}-O2-{tag}", demo.name)),
            &["-g", "-O2", "-fomit-frame-pointer"],
            Some(lib),
        ),
    };
    // Fresh: the source is this one and the binary was built after it was
    // written (an interrupted build leaves an older binary).
    let mtime = |p: &PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let same_source = std::fs::read_to_string(&src).is_ok_and(|s| s == demo.source);
    let fresh = same_source && matches!((mtime(&src), mtime(&bin)), (Some(s), Some(b)) if b >= s);
    if fresh {
        return Ok(bin);
    }
    if !same_source {
        std::fs::write(&src, demo.source)
            .with_context(|| format!("cannot write {}", src.display()))?;
    }
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let tmp = dir.join(format!(".{}.{}", demo.name, std::process::id()));
    let out = Command::new(&cc)
        .args(flags)
        .args(["-pthread", "-o"])
        .arg(&tmp)
        .arg(&src)
        .args(lib)
        .output()
        .with_context(|| {
            format!("cannot run the C compiler '{cc}' to build the demo (install gcc)")
        })?;
    if !out.status.success() {
        bail!(
            "building {} failed: {}",
            src.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    std::fs::rename(&tmp, &bin).with_context(|| format!("cannot write {}", bin.display()))?;
    Ok(bin)
}
