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

/// A module's rows and page index in the arrays, and what maps its
/// addresses to them.
struct Loaded {
    table: Table,
    rows: (u32, u32),
    pages: (u32, u32),
}

/// The modules of one process seen so far, by path and identity.
type Key = (PathBuf, u64);

/// An mmapped BPF array of `T`, handed out in ranges. The kernel lays an
/// array's elements out 8-byte aligned: `T` must be a multiple of 8 bytes.
struct Arena<T> {
    base: *mut T,
    capacity: u32,
    /// Next never-used slot, and ranges free for reuse.
    top: u32,
    free: Vec<(u32, u32)>,
    /// Freed at the last sync: reusable from the next one (a walk under
    /// way may still read the old list).
    quarantine: Vec<(u32, u32)>,
}

impl<T: Copy> Arena<T> {
    fn new(map: &libbpf_rs::MapMut<'_>) -> anyhow::Result<Arena<T>> {
        const { assert!(std::mem::size_of::<T>().is_multiple_of(8)) };
        let capacity = map.max_entries();
        let len = capacity as usize * std::mem::size_of::<T>();
        let fd = map.as_fd().as_raw_fd();
        // SAFETY: mmap of a BPF_F_MMAPABLE array map's fd at offset 0 for
        // its whole size, shared: the kernel backs it with the map's own
        // pages. The mapping is unmapped in Drop; nothing else aliases it
        // on our side (the tracer reads it concurrently, and writes go to
        // ranges no published list refers to yet).
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
                "cannot map the unwind tables: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Arena {
            base: p.cast(),
            capacity,
            top: 0,
            free: Vec::new(),
            quarantine: Vec::new(),
        })
    }

    /// A range holding `items`, or None when the array is full.
    fn put(&mut self, items: impl ExactSizeIterator<Item = T>) -> Option<(u32, u32)> {
        let n = u32::try_from(items.len()).ok()?;
        let lo = match self.free.iter().position(|&(lo, hi)| hi - lo >= n) {
            Some(i) => {
                let (lo, hi) = self.free[i];
                if hi - lo == n {
                    self.free.swap_remove(i);
                } else {
                    self.free[i].0 = lo + n;
                }
                lo
            }
            None => {
                if self.capacity - self.top < n {
                    return None;
                }
                self.top += n;
                self.top - n
            }
        };
        for (i, v) in items.enumerate() {
            // SAFETY: lo + i < lo + n <= capacity, inside the mapping; the
            // range was just taken from the free space: no published list
            // points into it.
            unsafe { self.base.add(lo as usize + i).write_volatile(v) };
        }
        Some((lo, lo + n))
    }

    fn release(&mut self, r: (u32, u32)) {
        if r.1 > r.0 {
            self.quarantine.push(r);
        }
    }

    fn new_sync(&mut self) {
        self.free.append(&mut self.quarantine);
    }
}

impl<T> Drop for Arena<T> {
    fn drop(&mut self) {
        let len = self.capacity as usize * std::mem::size_of::<T>();
        // SAFETY: the mapping made in `new`, of this length, unmapped once.
        unsafe { libc::munmap(self.base.cast(), len) };
    }
}

/// What a written map entry is compared by: start, end, adj, rows, pages.
type MapKey = (u64, u64, u64, u32, u32, u32, u32);

pub struct Tables {
    procs: libbpf_rs::MapHandle,
    rows: Arena<types::tm_cfi_row>,
    pages: Arena<types::tm_cfi_page>,
    cache: Cache,
    modules: HashMap<Key, Result<Loaded, String>>,
    /// Per process: the list last written (to skip rewriting an
    /// unchanged one) and the modules it uses.
    last: HashMap<u32, (Vec<MapKey>, Vec<Key>)>,
    /// The generation of the list last written: the tracer's cached rules
    /// of other generations are not used.
    gen: u32,
    /// Modules without usable CFI, to be told once each.
    pub notes: Vec<String>,
}

impl Tables {
    pub fn new(
        rows: &libbpf_rs::MapMut<'_>,
        pages: &libbpf_rs::MapMut<'_>,
        procs: &libbpf_rs::MapMut<'_>,
    ) -> anyhow::Result<Tables> {
        Ok(Tables {
            procs: libbpf_rs::MapHandle::try_from(procs)?,
            rows: Arena::new(rows)?,
            pages: Arena::new(pages)?,
            cache: Cache::new(),
            modules: HashMap::new(),
            last: HashMap::new(),
            gen: 0,
            notes: Vec::new(),
        })
    }

    fn load(&mut self, pid: u32, path: &Path, m: &MapEntry) -> Result<Loaded, String> {
        // The target's own view of the path (another mount namespace: a
        // container) first, ours if that is not readable, and the mapping
        // itself for a file deleted since (an upgraded binary).
        let theirs =
            PathBuf::from(format!("/proc/{pid}/root")).join(path.strip_prefix("/").unwrap_or(path));
        let mapped = PathBuf::from(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end));
        let mut table = match self.cache.table(&theirs) {
            Ok(t) => Ok(t),
            Err(NoTable::Io(_)) => match self.cache.table(path) {
                Err(NoTable::Io(e)) if m.name.ends_with(" (deleted)") => {
                    self.cache.table(&mapped).map_err(|_| NoTable::Io(e))
                }
                r => r,
            },
            Err(e) => Err(e),
        }
        .map_err(|e| e.to_string())?;
        let index = table.page_index();
        let rows = self
            .rows
            .put(table.rows.iter().map(|r| types::tm_cfi_row {
                pc: r.pc,
                off: r.off,
                cfa: r.cfa,
                rbp: r.rbp,
            }))
            .ok_or_else(|| "the unwind table is full".to_string())?;
        let Some(pages) = self.pages.put(
            index
                .into_iter()
                .map(|(first, last)| types::tm_cfi_page { first, last }),
        ) else {
            self.rows.release(rows);
            return Err("the unwind table's page index is full".to_string());
        };
        table.rows = Vec::new();
        Ok(Loaded { table, rows, pages })
    }

    /// Bring the tracer's list for `pid` in line with `maps`.
    pub fn sync(&mut self, pid: u32, maps: &[MapEntry]) {
        self.rows.new_sync();
        self.pages.new_sync();
        let mut list = Vec::new();
        let mut used: Vec<Key> = Vec::new();
        for m in maps.iter().filter(|m| m.exec) {
            let mut entry = types::tm_cfi_map {
                start: m.start,
                end: m.end,
                ..Default::default()
            };
            // [vdso], JIT code (no path): frame pointers.
            if let Some(path) = &m.path {
                let key = (path.clone(), module_identity(pid, m));
                if !self.modules.contains_key(&key) {
                    let loaded = self.load(pid, path, m);
                    if let Err(e) = &loaded {
                        self.notes.push(format!(
                            "no unwind info for {}: {e}; its frames are followed by frame pointers only",
                            path.display()
                        ));
                    }
                    self.modules.insert(key.clone(), loaded);
                }
                if let Some(Ok(l)) = self.modules.get(&key) {
                    if let Some(adj) = l.table.adj(m.offset) {
                        entry.adj = adj;
                        (entry.lo, entry.hi) = l.rows;
                        entry.pg = l.pages.0;
                        entry.npg = l.pages.1 - l.pages.0;
                    }
                }
                used.push(key);
            }
            if list.len() < types::tm_cfi_limit::TM_CFI_MAPS.0 as usize {
                list.push(entry);
            }
        }
        let key: Vec<_> = list
            .iter()
            .map(|m| (m.start, m.end, m.adj, m.lo, m.hi, m.pg, m.npg))
            .collect();
        let prev = self.last.entry(pid).or_default();
        prev.1 = used;
        if key != prev.0 {
            self.gen = self.gen.wrapping_add(1).max(1);
            let mut proc = types::tm_cfi_proc {
                n: list.len() as u32,
                gen: self.gen,
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
                prev.0 = key;
            }
        }
        self.release_unused();
    }

    /// A process is gone (or its image replaced and not yet synced): its
    /// list leaves the tracer, and modules no other process maps go.
    pub fn forget(&mut self, pid: u32) {
        if self.last.remove(&pid).is_some() {
            let _ = self.procs.delete(&pid.to_ne_bytes());
            self.release_unused();
        }
    }

    /// The tracer copied the parent's list to a forked child (same
    /// mappings): the child uses the same modules until it syncs.
    pub fn inherit(&mut self, parent: u32, child: u32) {
        if let Some(p) = self.last.get(&parent).cloned() {
            self.last.insert(child, p);
        }
    }

    fn release_unused(&mut self) {
        // Modules no process maps any more: their ranges are reused later.
        let gone: Vec<Key> = self
            .modules
            .keys()
            .filter(|k| !self.last.values().any(|(_, used)| used.contains(k)))
            .cloned()
            .collect();
        for k in gone {
            if let Some(Ok(l)) = self.modules.remove(&k) {
                self.rows.release(l.rows);
                self.pages.release(l.pages);
            }
        }
    }
}

/// What tells two files of one path apart (a rebuilt library): the
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
