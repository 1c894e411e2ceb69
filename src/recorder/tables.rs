//! The tracer's unwind tables, kept in step with the target's mappings:
//! each executable module's compiled CFI ([`super::cfi`]) is written once
//! into the mmapped row array, and the process's list of executable
//! mappings (with the row range of each) is replaced whole in the
//! `cfi_procs` map whenever it changes: at attach, exec and every mmap of
//! code. Rows of modules no longer mapped are reused, one sync later (a
//! walk under way may still read the old list).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use libbpf_rs::{MapCore, MapFlags};

use super::bpf::types;
use super::cfi::{Cache, NoTable, Table};
use super::maps::MapEntry;

/// A module's rows in the array, and what maps its addresses to them.
struct Loaded {
    table: Table,
    lo: u32,
    hi: u32,
}

/// The modules of one process seen so far, by path and identity.
type Key = (PathBuf, u64);

pub struct Tables {
    procs: libbpf_rs::MapHandle,
    rows: *mut types::tm_cfi_row,
    capacity: u32,
    /// Next never-used row, and ranges free for reuse.
    top: u32,
    free: Vec<(u32, u32)>,
    /// Freed at the last sync: reusable from the next one.
    quarantine: Vec<(u32, u32)>,
    cache: Cache,
    modules: HashMap<Key, Result<Loaded, String>>,
    /// The list last written, to skip rewriting an unchanged one.
    last: Vec<(u64, u64, u64, u32, u32)>,
    /// Modules without usable CFI, to be told once each.
    pub notes: Vec<String>,
}

impl Tables {
    /// Map the row array (`rows`, an mmapable BPF array) into memory.
    pub fn new(
        rows: &libbpf_rs::MapMut<'_>,
        procs: &libbpf_rs::MapMut<'_>,
    ) -> anyhow::Result<Tables> {
        let procs = libbpf_rs::MapHandle::try_from(procs)?;
        let capacity = rows.max_entries();
        let len = capacity as usize * std::mem::size_of::<types::tm_cfi_row>();
        let fd = rows.as_fd().as_raw_fd();
        // SAFETY: mmap of a BPF_F_MMAPABLE array map's fd at offset 0 for
        // its whole size, shared: the kernel backs it with the map's own
        // pages. The mapping is unmapped in Drop; nothing else aliases it
        // on our side (the tracer reads it concurrently, and writes are
        // whole rows to ranges no published list refers to yet).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            anyhow::bail!(
                "cannot map the unwind table: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Tables {
            procs,
            rows: p.cast(),
            capacity,
            top: 0,
            free: Vec::new(),
            quarantine: Vec::new(),
            cache: Cache::new(),
            modules: HashMap::new(),
            last: Vec::new(),
            notes: Vec::new(),
        })
    }

    fn alloc(&mut self, n: u32) -> Option<u32> {
        if let Some(i) = self.free.iter().position(|&(lo, hi)| hi - lo >= n) {
            let (lo, hi) = self.free[i];
            if hi - lo == n {
                self.free.swap_remove(i);
            } else {
                self.free[i].0 = lo + n;
            }
            return Some(lo);
        }
        let lo = self.top;
        if self.capacity - lo < n {
            return None;
        }
        self.top += n;
        Some(lo)
    }

    fn load(&mut self, pid: u32, path: &Path) -> Result<Loaded, String> {
        // The target's own view of the path (another mount namespace: a
        // container) first, ours if that is not readable.
        let theirs =
            PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path));
        let table = match self.cache.table(&theirs) {
            Ok(t) => Ok(t),
            Err(NoTable::Io(_)) => self.cache.table(path),
            Err(e) => Err(e),
        }
        .map_err(|e| e.to_string())?;
        let n = u32::try_from(table.rows.len()).map_err(|_| "too many unwind rows".to_string())?;
        let lo = self
            .alloc(n)
            .ok_or_else(|| "the unwind table is full".to_string())?;
        for (i, r) in table.rows.iter().enumerate() {
            let row = types::tm_cfi_row {
                pc: r.pc,
                off: r.off,
                cfa: r.cfa,
                rbp: r.rbp,
            };
            // SAFETY: lo + i < lo + n <= capacity, inside the mapping; the
            // range is ours (allocated above) and no published list points
            // into it yet.
            unsafe { self.rows.add(lo as usize + i).write_volatile(row) };
        }
        let mut table = table;
        table.rows = Vec::new();
        Ok(Loaded {
            table,
            lo,
            hi: lo + n,
        })
    }

    /// Bring the tracer's list for `pid` in line with `maps`.
    pub fn sync(&mut self, pid: u32, maps: &[MapEntry]) {
        self.free.append(&mut self.quarantine);
        let mut list = Vec::new();
        let mut used: Vec<Key> = Vec::new();
        for m in maps.iter().filter(|m| m.exec) {
            let (lo, hi, adj) = match &m.path {
                Some(path) => {
                    let key = (path.clone(), module_identity(pid, m));
                    if !self.modules.contains_key(&key) {
                        let loaded = self.load(pid, path);
                        if let Err(e) = &loaded {
                            self.notes.push(format!(
                                "no unwind info for {}: {e}; its frames are followed by frame pointers only",
                                path.display()
                            ));
                        }
                        self.modules.insert(key.clone(), loaded);
                    }
                    used.push(key.clone());
                    match &self.modules[&key] {
                        Ok(l) => match l.table.adj(m.offset) {
                            Some(adj) => (l.lo, l.hi, adj),
                            None => (0, 0, 0),
                        },
                        Err(_) => (0, 0, 0),
                    }
                }
                // [vdso], JIT code: frame pointers.
                None => (0, 0, 0),
            };
            if list.len() < types::tm_cfi_limit::TM_CFI_MAPS.0 as usize {
                list.push(types::tm_cfi_map {
                    start: m.start,
                    end: m.end,
                    adj,
                    lo,
                    hi,
                });
            }
        }
        let key: Vec<_> = list
            .iter()
            .map(|m| (m.start, m.end, m.adj, m.lo, m.hi))
            .collect();
        if key != self.last {
            let mut proc = types::tm_cfi_proc {
                n: list.len() as u32,
                ..Default::default()
            };
            proc.maps[..list.len()].copy_from_slice(&list);
            // SAFETY: tm_cfi_proc is plain old data generated from the
            // header: viewing it as bytes for the map update is sound.
            let bytes = unsafe {
                std::slice::from_raw_parts(
                    (&raw const proc).cast::<u8>(),
                    std::mem::size_of::<types::tm_cfi_proc>(),
                )
            };
            if self
                .procs
                .update(&pid.to_ne_bytes(), bytes, MapFlags::ANY)
                .is_ok()
            {
                self.last = key;
            }
        }
        // Modules gone from the maps: their rows are reused later.
        let gone: Vec<Key> = self
            .modules
            .keys()
            .filter(|k| !used.contains(k))
            .cloned()
            .collect();
        for k in gone {
            if let Some(Ok(l)) = self.modules.remove(&k) {
                if l.hi > l.lo {
                    self.quarantine.push((l.lo, l.hi));
                }
            }
        }
    }
}

/// What tells two files of one path apart (a rebuilt library): the
/// mapping's inode as /proc/PID/maps lists it is not in MapEntry, so the
/// file's inode and mtime, read through the target's root.
fn module_identity(pid: u32, m: &MapEntry) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Some(path) = &m.path else { return 0 };
    let theirs =
        PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path));
    std::fs::metadata(&theirs)
        .or_else(|_| std::fs::metadata(path))
        .map_or(0, |md| md.ino() ^ (md.mtime() as u64).rotate_left(32))
}

impl Drop for Tables {
    fn drop(&mut self) {
        let len = self.capacity as usize * std::mem::size_of::<types::tm_cfi_row>();
        // SAFETY: the mapping made in `new`, of this length, unmapped once.
        unsafe { libc::munmap(self.rows.cast(), len) };
    }
}
