//! Compiles `bpf/tracer.bpf.c` and generates its Rust skeleton into OUT_DIR,
//! and names the git commit built for `tm-tui --version` (TM_GIT_COMMIT).

use std::env;
use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "bpf/tracer.bpf.c";
const HEADERS: &[&str] = &["bpf/tracer.h", "bpf/vmlinux.h"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"))
        .join("tracer.skel.rs");
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args(["-Wall", "-Wno-unused-function", "-Ibpf"])
        .build_and_generate(&out)
        .expect("failed to build and generate the BPF skeleton");
    println!("cargo:rerun-if-changed={SRC}");
    for h in HEADERS {
        println!("cargo:rerun-if-changed={h}");
    }
    git_commit();
}

/// `git rev-parse --short HEAD`, or "unknown" (a source tarball, no git).
/// Rebuilt when HEAD moves: HEAD itself (a checkout) and the branch it
/// names (a commit), wherever this work tree keeps them.
fn git_commit() {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=TM_GIT_COMMIT={commit}");
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    // Only paths that exist: a missing one would rerun this every build.
    for p in watched.into_iter().flatten() {
        if std::path::Path::new(&p).exists() {
            println!("cargo:rerun-if-changed={p}");
        }
    }
}
