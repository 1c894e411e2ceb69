//! io/net/lock records decoded into [`SysInfo`] events, with what each file
//! descriptor is: the path it was opened with, the peer it is connected
//! to, or (for fds older than the recording) what /proc/PID/fd says.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::bpf::types::tm_nr;
use crate::event::{EventKind, SysCall, SysInfo};

pub struct FdTable {
    pid: u32,
    known: HashMap<i32, Option<String>>,
}

/// What a traced system call is, by its number (from the header).
fn syscall_of(nr: tm_nr) -> Option<SysCall> {
    Some(match nr {
        tm_nr::TM_NR_READ => SysCall::Read,
        tm_nr::TM_NR_WRITE => SysCall::Write,
        tm_nr::TM_NR_OPEN | tm_nr::TM_NR_OPENAT => SysCall::Open,
        tm_nr::TM_NR_CLOSE => SysCall::Close,
        tm_nr::TM_NR_PREAD => SysCall::Pread,
        tm_nr::TM_NR_PWRITE => SysCall::Pwrite,
        tm_nr::TM_NR_READV => SysCall::Readv,
        tm_nr::TM_NR_WRITEV => SysCall::Writev,
        tm_nr::TM_NR_FSYNC => SysCall::Fsync,
        tm_nr::TM_NR_FDATASYNC => SysCall::Fdatasync,
        tm_nr::TM_NR_CONNECT => SysCall::Connect,
        tm_nr::TM_NR_ACCEPT | tm_nr::TM_NR_ACCEPT4 => SysCall::Accept,
        tm_nr::TM_NR_SENDTO => SysCall::Send,
        tm_nr::TM_NR_RECVFROM => SysCall::Recv,
        tm_nr::TM_NR_SENDMSG => SysCall::Sendmsg,
        tm_nr::TM_NR_RECVMSG => SysCall::Recvmsg,
        tm_nr::TM_NR_FUTEX | tm_nr::TM_NR_FUTEX_WAITV => SysCall::FutexWait,
        tm_nr::TM_NR_DUP | tm_nr::TM_NR_DUP2 | tm_nr::TM_NR_FCNTL | tm_nr::TM_NR_DUP3 => {
            SysCall::Dup
        }
        _ => return None,
    })
}

/// `127.0.0.1:8080`, `[::1]:443`, `/run/x.sock`, `@abstract`.
pub fn format_sockaddr(b: &[u8]) -> Option<String> {
    let family = u16::from_ne_bytes([*b.first()?, *b.get(1)?]);
    let port = |b: &[u8]| Some(u16::from_be_bytes([*b.get(2)?, *b.get(3)?]));
    match family {
        2 => {
            let a = b.get(4..8)?;
            Some(format!(
                "{}:{}",
                Ipv4Addr::new(a[0], a[1], a[2], a[3]),
                port(b)?
            ))
        }
        10 => {
            let a: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            Some(format!("[{}]:{}", Ipv6Addr::from(a), port(b)?))
        }
        1 => {
            let path = b.get(2..)?;
            if path.first() == Some(&0) {
                let name: Vec<u8> = path[1..].iter().copied().take_while(|c| *c != 0).collect();
                Some(format!("@{}", String::from_utf8_lossy(&name)))
            } else {
                let name: Vec<u8> = path.iter().copied().take_while(|c| *c != 0).collect();
                Some(String::from_utf8_lossy(&name).into_owned())
            }
        }
        f => Some(format!("address family {f}")),
    }
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

impl FdTable {
    pub fn new(pid: u32) -> Self {
        FdTable {
            pid,
            known: HashMap::new(),
        }
    }

    /// Every fd open now, from /proc (at attach: what the recording starts
    /// with; later changes come from the traced calls).
    pub fn seed(&mut self) {
        let Ok(dir) = std::fs::read_dir(format!("/proc/{}/fd", self.pid)) else {
            return;
        };
        for e in dir.flatten() {
            if let Some(fd) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
                let target = std::fs::read_link(e.path())
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned());
                self.known.insert(fd, target);
            }
        }
    }

    /// What `fd` is; asks /proc for an fd the recording has not seen open.
    fn target(&mut self, fd: i32) -> Option<String> {
        if fd < 0 {
            return None;
        }
        let pid = self.pid;
        self.known
            .entry(fd)
            .or_insert_with(|| {
                std::fs::read_link(format!("/proc/{pid}/fd/{fd}"))
                    .ok()
                    .map(|p| p.to_string_lossy().into_owned())
            })
            .clone()
    }

    pub fn decode(
        &mut self,
        nr: tm_nr,
        ret: i64,
        dur_ns: u64,
        a: &[u64; 6],
        data: &[u8],
        stack: Option<crate::event::StackId>,
    ) -> Option<EventKind> {
        let call = syscall_of(nr)?;
        let fd0 = a[0] as i32;
        let (fd, len, arg, target) = match call {
            SysCall::Open => {
                let path = Some(c_string(data)).filter(|p| !p.is_empty());
                let flags = if nr == tm_nr::TM_NR_OPEN { a[1] } else { a[2] };
                let fd = i32::try_from(ret).ok().filter(|f| *f >= 0).unwrap_or(-1);
                if fd >= 0 {
                    self.known.insert(fd, path.clone());
                }
                (fd, 0, flags, path)
            }
            SysCall::Close => {
                let t = self.target(fd0);
                if ret == 0 {
                    self.known.remove(&fd0);
                }
                (fd0, 0, 0, t)
            }
            SysCall::Connect => {
                let peer = format_sockaddr(data);
                // 0, or EINPROGRESS for a non-blocking connect.
                if ret == 0 || ret == -115 {
                    if let Some(p) = &peer {
                        self.known.insert(fd0, Some(p.clone()));
                    }
                }
                (fd0, 0, 0, peer.or_else(|| self.target(fd0)))
            }
            SysCall::Dup => {
                let t = self.target(fd0);
                let fd = i32::try_from(ret).ok().filter(|f| *f >= 0).unwrap_or(-1);
                if fd >= 0 {
                    self.known.insert(fd, t.clone());
                }
                (fd, 0, a[0], t)
            }
            SysCall::Accept => {
                let fd = i32::try_from(ret).ok().filter(|f| *f >= 0).unwrap_or(-1);
                let peer = format_sockaddr(data);
                // Without an address buffer, /proc names it when used.
                if fd >= 0 && peer.is_some() {
                    self.known.insert(fd, peer.clone());
                }
                (fd, 0, 0, peer)
            }
            SysCall::Send | SysCall::Recv | SysCall::Sendmsg | SysCall::Recvmsg => {
                let t = format_sockaddr(data).or_else(|| self.target(fd0));
                // sendmsg/recvmsg: the length is spread over an iovec.
                let len = if matches!(call, SysCall::Send | SysCall::Recv) {
                    a[2]
                } else {
                    0
                };
                (fd0, len, 0, t)
            }
            SysCall::Pread | SysCall::Pwrite => (fd0, a[2], a[3], self.target(fd0)),
            SysCall::Read | SysCall::Write => (fd0, a[2], 0, self.target(fd0)),
            SysCall::FutexWait => (-1, 0, a[0], None),
            _ => (fd0, 0, 0, self.target(fd0)),
        };
        Some(EventKind::Sys(Box::new(SysInfo {
            call,
            fd,
            ret,
            dur_ns,
            len,
            arg,
            target,
            stack,
        })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_addresses() {
        let mut v4 = vec![2, 0, 0x1f, 0x90, 127, 0, 0, 1];
        v4.extend([0; 8]);
        assert_eq!(format_sockaddr(&v4).as_deref(), Some("127.0.0.1:8080"));
        let mut v6 = vec![10, 0, 0x01, 0xbb, 0, 0, 0, 0];
        v6.extend([0; 15]);
        v6.push(1);
        v6.extend([0; 4]);
        assert_eq!(format_sockaddr(&v6).as_deref(), Some("[::1]:443"));
        let mut un = vec![1, 0];
        un.extend(b"/run/x.sock\0");
        assert_eq!(format_sockaddr(&un).as_deref(), Some("/run/x.sock"));
        assert_eq!(
            format_sockaddr(&[1, 0, 0, b'a', b'b']).as_deref(),
            Some("@ab")
        );
        assert_eq!(format_sockaddr(&[2]), None);
    }

    #[test]
    fn fds_carry_their_path_until_closed() {
        let mut t = FdTable::new(u32::MAX);
        let open = t.decode(
            tm_nr::TM_NR_OPENAT,
            7,
            10,
            &[0, 0, 0o101, 0, 0, 0],
            b"/tmp/out\0",
            None,
        );
        let Some(EventKind::Sys(s)) = open else {
            panic!("{open:?}")
        };
        assert_eq!((s.call, s.fd, s.arg), (SysCall::Open, 7, 0o101));
        assert_eq!(s.target.as_deref(), Some("/tmp/out"));
        let w = t.decode(tm_nr::TM_NR_WRITE, 5, 10, &[7, 0, 5, 0, 0, 0], b"", None);
        let Some(EventKind::Sys(s)) = w else { panic!() };
        assert_eq!((s.call, s.fd, s.len, s.ret), (SysCall::Write, 7, 5, 5));
        assert_eq!(s.target.as_deref(), Some("/tmp/out"));
        t.decode(tm_nr::TM_NR_CLOSE, 0, 10, &[7, 0, 0, 0, 0, 0], b"", None);
        let w = t.decode(tm_nr::TM_NR_WRITE, -9, 10, &[7, 0, 5, 0, 0, 0], b"", None);
        let Some(EventKind::Sys(s)) = w else { panic!() };
        assert_eq!(s.target, None, "closed: no stale path (pid has no fd 7)");
        assert!(t.decode(tm_nr(60), 0, 0, &[0; 6], b"", None).is_none());
    }
}
