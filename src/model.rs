//! The timeline model: pure Rust over owned events, no terminal code.
//! Testable without root.

pub mod heap;
