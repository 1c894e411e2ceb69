//! /proc/PID/maps: reading it, and the cache that keeps addresses
//! resolvable to (file, offset) after the target has exited.

use std::fs;
use std::io;
use std::path::PathBuf;

/// One line of /proc/PID/maps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub read: bool,
    pub write: bool,
    pub exec: bool,
    /// The file, for file-backed mappings; pseudo names like `[stack]` are
    /// kept in `name`, not here.
    pub path: Option<PathBuf>,
    /// The raw name column: a path, `[heap]`, `[stack]`, `[vdso]`, or empty.
    pub name: String,
}

impl MapEntry {
    pub fn contains(&self, addr: u64) -> bool {
        self.start <= addr && addr < self.end
    }

    /// File offset of a runtime address inside this mapping.
    pub fn file_offset(&self, addr: u64) -> u64 {
        addr - self.start + self.offset
    }
}

pub fn parse_maps(text: &str) -> Vec<MapEntry> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<MapEntry> {
    let mut it = line.splitn(6, ' ');
    let range = it.next()?;
    let perms = it.next()?.as_bytes();
    let offset = u64::from_str_radix(it.next()?, 16).ok()?;
    let _dev = it.next()?;
    let _inode = it.next()?;
    let name = it.next().unwrap_or("").trim_start().to_string();
    let (start, end) = range.split_once('-')?;
    let path = name
        .starts_with('/')
        .then(|| PathBuf::from(name.trim_end_matches(" (deleted)")));
    Some(MapEntry {
        start: u64::from_str_radix(start, 16).ok()?,
        end: u64::from_str_radix(end, 16).ok()?,
        offset,
        read: perms.first() == Some(&b'r'),
        write: perms.get(1) == Some(&b'w'),
        exec: perms.get(2) == Some(&b'x'),
        path,
        name,
    })
}

pub fn read_maps(pid: u32) -> io::Result<Vec<MapEntry>> {
    Ok(parse_maps(&fs::read_to_string(format!(
        "/proc/{pid}/maps"
    ))?))
}

/// The mapping containing `addr`, if any (`maps` sorted by address, as the
/// kernel lists them).
pub fn find(maps: &[MapEntry], addr: u64) -> Option<&MapEntry> {
    let i = maps.partition_point(|m| m.end <= addr);
    maps.get(i).filter(|m| m.contains(addr))
}

/// The last good view of a process's mappings. A zombie's maps read empty:
/// such a read never replaces what was known.
#[derive(Debug, Default)]
pub struct MapsCache {
    pid: u32,
    maps: Vec<MapEntry>,
}

impl MapsCache {
    pub fn new(pid: u32) -> Self {
        let mut c = MapsCache {
            pid,
            maps: Vec::new(),
        };
        c.refresh();
        c
    }

    /// Re-read /proc/PID/maps; returns whether anything was read.
    pub fn refresh(&mut self) -> bool {
        match read_maps(self.pid) {
            Ok(m) if !m.is_empty() => {
                self.maps = m;
                true
            }
            _ => false,
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn entries(&self) -> &[MapEntry] {
        &self.maps
    }

    /// The mapping of `addr`, re-reading the maps once if it is unknown
    /// (a library loaded since the last read).
    pub fn lookup(&mut self, addr: u64) -> Option<&MapEntry> {
        if find(&self.maps, addr).is_none() {
            self.refresh();
        }
        find(&self.maps, addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
55d0c0a00000-55d0c0a01000 r--p 00000000 fe:01 1234 /usr/bin/demo
55d0c0a01000-55d0c0a02000 r-xp 00001000 fe:01 1234 /usr/bin/demo
7f12c0000000-7f12c0021000 rw-p 00000000 00:00 0 
7f12c0a00000-7f12c0a28000 r--p 00000000 fe:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7f12c0a28000-7f12c0b9d000 r-xp 00028000 fe:01 99 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd5a000000-7ffd5a021000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn parses_and_finds() {
        let maps = parse_maps(SAMPLE);
        assert_eq!(maps.len(), 6);
        let libc = find(&maps, 0x7f12c0a28010).expect("libc text");
        assert!(libc.exec);
        assert_eq!(libc.file_offset(0x7f12c0a28010), 0x28010);
        assert_eq!(
            libc.path.as_deref(),
            Some(std::path::Path::new("/usr/lib/x86_64-linux-gnu/libc.so.6"))
        );
        assert_eq!(
            find(&maps, 0x7ffd5a000010).map(|m| m.name.as_str()),
            Some("[stack]")
        );
        assert!(find(&maps, 0x7f12c0a27fff).is_some_and(|m| !m.exec));
        assert!(find(&maps, 0x1000).is_none());
        assert!(maps[2].path.is_none());
    }
}
