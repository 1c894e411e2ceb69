//! Launch mode: a launched program runs as it would from a shell, its
//! signals included.

use super::support::*;

#[test]
fn real_time_signals_reach_the_program() {
    if !bpf_or_skip("real_time_signals") {
        return;
    }
    let trace = tmp().join("rt_signal.tmt");
    let out = record_launch(
        &trace,
        &["sh", "-c", "trap 'echo got 34' 34; kill -34 $$; echo done"],
    );
    assert_exit(&out, 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("got 34\ndone"), "{stdout}");
}
