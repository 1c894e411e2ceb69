//! Where glibc keeps its abort message in a process: `__abort_msg`, a
//! GLIBC_PRIVATE data symbol of libc.so.6 (`struct abort_msg_s *`), set by
//! malloc_printerr and assert() just before abort(). The tracer reads the
//! message at SIGABRT from the address found here.

use std::path::{Path, PathBuf};

use object::{Object, ObjectSegment, ObjectSymbol};

use super::maps::MapEntry;

/// The runtime address of `__abort_msg` in a process with these mappings,
/// with the libc it was found in; `None` without a glibc.
pub fn locate(entries: &[MapEntry]) -> Option<(PathBuf, u64)> {
    // The mapping of libc's first page: its start is the load base plus
    // the first PT_LOAD's (page-aligned) address.
    let first = entries.iter().find(|m| {
        m.offset == 0
            && m.path
                .as_deref()
                .and_then(Path::file_name)
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libc.so"))
    })?;
    let path = first.path.clone()?;
    let (value, low) = symbol_in(&path)?;
    Some((path, first.start.checked_sub(low)?.checked_add(value)?))
}

/// `__abort_msg`'s address in the file (its dynamic symbol's value), and
/// the file's lowest (page-aligned) load address.
fn symbol_in(path: &Path) -> Option<(u64, u64)> {
    let data = std::fs::read(path).ok()?;
    let obj = object::File::parse(&*data).ok()?;
    let value = obj
        .dynamic_symbols()
        .find(|s| s.name() == Ok("__abort_msg"))
        .map(|s| s.address())
        .filter(|&a| a != 0)?;
    let low = obj
        .segments()
        .map(|s| s.address() & !0xfff)
        .min()
        .unwrap_or(0);
    Some((value, low))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_abort_msg_in_the_system_libc() {
        let libc = ["/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib64/libc.so.6"]
            .into_iter()
            .map(Path::new)
            .find(|p| p.exists());
        let Some(libc) = libc else {
            eprintln!("SKIPPED: no glibc at a known path");
            return;
        };
        let (value, low) = symbol_in(libc).expect("glibc exports __abort_msg");
        let entries = vec![MapEntry {
            start: 0x7f00_0000_0000,
            end: 0x7f00_0002_6000,
            offset: 0,
            read: true,
            write: false,
            exec: false,
            path: Some(libc.to_path_buf()),
            name: libc.display().to_string(),
        }];
        let (p, at) = locate(&entries).expect("located");
        assert_eq!(p, libc);
        assert_eq!(at, 0x7f00_0000_0000 - low + value);
    }
}
