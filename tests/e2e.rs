//! End-to-end tests: build the demo programs, record them with the real
//! binary (real BPF, real kernel), and check what was recorded. They need
//! root and BPF; with TM_REQUIRE_BPF=1 (as in CI) a missing BPF fails them.

mod e2e {
    pub mod allocators;
    pub mod bad_input;
    pub mod bounded;
    pub mod children;
    pub mod conventions;
    pub mod crash;
    pub mod diagnosis;
    pub mod export;
    pub mod field;
    pub mod heap;
    pub mod launch;
    pub mod leakkinds;
    pub mod probes;
    pub mod signals;
    pub mod stacks;
    pub mod support;
    pub mod symbols;
    pub mod ui;
    pub mod watch;
    pub mod writes;
}
