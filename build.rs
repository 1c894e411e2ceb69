//! Compiles `bpf/tracer.bpf.c` and generates its Rust skeleton into OUT_DIR.

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
}
