//! Interning of user stacks: each distinct stack is read from the BPF
//! stack table once, normalized to (module, file offset) while the target
//! is alive, and announced to the consumer before the first event using it.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use crossbeam_channel::Sender;

use crate::event::{Frame, Module, ModuleId, Stack, StackEnd, StackId};
use crate::recorder::maps::{MapEntry, MapsCache};
use crate::recorder::symbols::ElfInfo;

use super::Msg;

#[derive(Default)]
pub struct StackTable {
    by_key: HashMap<u64, StackId>,
    modules: HashMap<PathBuf, ModuleId>,
    next_stack: StackId,
}

impl StackTable {
    /// The id of the stack with BPF hash `key`, interning `addrs` (read
    /// from the BPF table by the caller, only on a miss) the first time.
    pub fn intern(
        &mut self,
        key: u64,
        addrs: impl FnOnce() -> Option<(Vec<u64>, StackEnd)>,
        first_is_ip: bool,
        maps: &mut MapsCache,
        tx: &Sender<Msg>,
    ) -> Option<StackId> {
        if let Some(id) = self.by_key.get(&key) {
            return Some(*id);
        }
        let (addrs, end) = addrs()?;
        let id = self.next_stack;
        self.next_stack += 1;
        let frames = addrs
            .iter()
            .enumerate()
            .map(|(i, &addr)| self.normalize(addr, i == 0 && first_is_ip, maps, tx))
            .collect();
        // Stacks must not be dropped: events refer to them. They are rare
        // (one per distinct call path), so a blocking send is fine here.
        let _ = tx.send(Msg::Stack(Stack { id, frames, end }));
        self.by_key.insert(key, id);
        Some(id)
    }

    /// Intern a stack unwound or mended in user space (a signal's; one
    /// whose uretprobe trampolines were replaced): keyed by the hash of
    /// its addresses, in a space apart from the BPF keys.
    pub fn intern_addrs(
        &mut self,
        addrs: &[u64],
        first_is_ip: bool,
        maps: &mut MapsCache,
        tx: &Sender<Msg>,
    ) -> Option<StackId> {
        if addrs.is_empty() {
            return None;
        }
        let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
        for a in addrs {
            h = (h ^ a).wrapping_mul(0x0100_0000_01b3).rotate_left(17);
        }
        let key = h | 1 << 63;
        self.intern(
            key,
            || Some((addrs.to_vec(), StackEnd::Unknown)),
            first_is_ip,
            maps,
            tx,
        )
    }

    /// (module, file offset) of an address. Return addresses point after
    /// the call: symbolize one byte back so the line is the call's.
    fn normalize(
        &mut self,
        addr: u64,
        is_ip: bool,
        maps: &mut MapsCache,
        tx: &Sender<Msg>,
    ) -> Frame {
        let lookup_addr = if is_ip { addr } else { addr.saturating_sub(1) };
        let pid = maps.pid();
        let Some((m, offset)) = maps
            .lookup(lookup_addr)
            .filter(|m| m.path.is_some())
            .map(|m| (m.clone(), m.file_offset(lookup_addr)))
        else {
            return Frame {
                addr,
                ..Frame::default()
            };
        };
        let path = m.path.clone().unwrap_or_default();
        let next = self.modules.len() as ModuleId;
        let module = *self.modules.entry(path.clone()).or_insert_with(|| {
            let file = open_mapped(pid, &m);
            let info = file.as_ref().and_then(ElfInfo::read).unwrap_or_default();
            let _ = tx.send(Msg::Module(
                Module {
                    id: next,
                    path: path.to_string_lossy().into_owned(),
                    build_id: info.build_id,
                    segments: info.segments,
                },
                file,
            ));
            next
        });
        Frame {
            addr,
            module: Some(module),
            offset,
            ..Frame::default()
        }
    }
}

/// The file a mapping maps, as the target sees it: through
/// /proc/PID/map_files (the very file, also when it was deleted or lives
/// in another mount namespace), else through the target's root.
fn open_mapped(pid: u32, m: &MapEntry) -> Option<File> {
    File::open(format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end))
        .or_else(|_| {
            let p = m.path.as_deref().unwrap_or(Path::new("/"));
            File::open(
                Path::new(&format!("/proc/{pid}/root")).join(p.strip_prefix("/").unwrap_or(p)),
            )
        })
        .ok()
}
