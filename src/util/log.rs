//! `--log FILE`: diagnostic lines (libbpf's messages, tm-tui's warnings
//! and notes, the error it ends with) appended to a file, each stamped
//! with the seconds since tm-tui started. Without `--log` nothing is kept.

use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

static LOG: OnceLock<(Mutex<std::fs::File>, Instant)> = OnceLock::new();

/// Opens (creates or truncates) the log file; once.
pub fn open(path: &std::path::Path) -> std::io::Result<()> {
    let file = std::fs::File::create(path)?;
    let _ = LOG.set((Mutex::new(file), Instant::now()));
    Ok(())
}

/// Whether `--log` was given.
pub fn enabled() -> bool {
    LOG.get().is_some()
}

/// One line (or several, each stamped) at `level`: debug, info, warning,
/// note, error.
pub fn line(level: &str, msg: &str) {
    let Some((file, start)) = LOG.get() else {
        return;
    };
    let t = start.elapsed().as_secs_f64();
    let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
    for l in msg.trim_end().lines() {
        // A log that cannot be written is not worth stopping a recording.
        let _ = writeln!(f, "[{t:10.6}] {level}: {l}");
    }
    let _ = f.flush();
}

#[cfg(test)]
mod tests {
    #[test]
    fn lines_are_stamped_and_split() {
        let dir = std::env::temp_dir().join(format!("tm-log-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("log");
        super::open(&p).expect("open");
        assert!(super::enabled());
        super::line("warning", "one\ntwo\n");
        let text = std::fs::read_to_string(&p).expect("read");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(lines[0].starts_with('[') && lines[0].ends_with("] warning: one"));
        assert!(lines[1].ends_with("] warning: two"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
