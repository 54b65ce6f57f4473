//! A pool's memory: one memfd (`memfd_create` + `ftruncate`, nothing written, so its
//! pages come zeroed on first touch and a pool costs only what its payloads use),
//! mapped `MAP_SHARED` by the supervisor that made it and by every process that reads
//! or writes it. Other processes open it as `/proc/<maker's pid>/fd/<fd>` (a
//! [`PoolHandle`] in their setup or attach message): no fd has to travel, the same
//! way for the stages the supervisor spawns and for a node's shared agent that is
//! already running; the file has no name in `/dev/shm`, so nothing is left behind when
//! the processes are killed.

use super::ShmError;
use crate::ids::PoolId;
use nix::sys::mman::{mmap, munmap, MapFlags, ProtFlags};
use nix::sys::stat::fstat;
use serde::{Deserialize, Serialize};
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::NonNull;

/// Where another process finds a pool's memory: the fd `fd` of process `pid` (the
/// supervisor that made the pool, which keeps it open for the pool's life).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolHandle {
    pub pid: u32,
    pub fd: i32,
}

/// A mapped memfd; unmapped (and its fd closed) on drop.
pub struct Region {
    fd: OwnedFd,
    ptr: NonNull<u8>,
    len: usize,
}

impl std::fmt::Debug for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Region")
            .field("fd", &self.fd.as_raw_fd())
            .field("len", &self.len)
            .finish()
    }
}

fn os(pool: PoolId, what: &str) -> impl Fn(nix::errno::Errno) -> ShmError + '_ {
    move |errno| ShmError::Os {
        pool,
        what: what.to_string(),
        errno,
    }
}

impl Region {
    /// A new zero-filled region of `len` bytes for pool `pool`: no page is written
    /// (or taken) until it is touched.
    pub fn create(pool: PoolId, len: usize) -> Result<Region, ShmError> {
        // Named after the creating process, as ipc-channel names its regions (tools and
        // tests find a process's pools by it).
        let name = format!("smartpipe-pool.{}.{pool}", std::process::id());
        let fd =
            nix::sys::memfd::memfd_create(name.as_str(), nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
                .map_err(os(pool, "memfd_create"))?;
        let size = i64::try_from(len).map_err(|_| ShmError::TooLarge {
            pool,
            slots: 0,
            slot_size: 0,
            detail: format!("{len} bytes do not fit a file size"),
        })?;
        nix::unistd::ftruncate(&fd, size).map_err(os(pool, "ftruncate"))?;
        Region::map(pool, fd, len)
    }

    /// The region of pool `pool` that `handle` points at (another process's fd).
    pub fn open(pool: PoolId, handle: PoolHandle) -> Result<Region, ShmError> {
        let path = format!("/proc/{}/fd/{}", handle.pid, handle.fd);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| ShmError::Open {
                pool,
                path: path.clone(),
                detail: e.to_string(),
            })?;
        Region::from_fd(pool, OwnedFd::from(file))
    }

    /// The region behind `fd` (its whole file), mapped for pool `pool`.
    pub fn from_fd(pool: PoolId, fd: OwnedFd) -> Result<Region, ShmError> {
        let st = fstat(&fd).map_err(os(pool, "fstat"))?;
        let len = usize::try_from(st.st_size).unwrap_or(0);
        Region::map(pool, fd, len)
    }

    fn map(pool: PoolId, fd: OwnedFd, len: usize) -> Result<Region, ShmError> {
        let Some(size) = NonZeroUsize::new(len) else {
            return Err(ShmError::TooSmall { pool, len });
        };
        // SAFETY: a fresh shared mapping of a file we hold open; nothing else in this
        // process refers to its address range yet.
        let ptr = unsafe {
            mmap(
                None,
                size,
                ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
                MapFlags::MAP_SHARED,
                &fd,
                0,
            )
        }
        .map_err(os(pool, "mmap"))?;
        Ok(Region {
            fd,
            ptr: ptr.cast(),
            len,
        })
    }

    /// How other processes open this region.
    pub fn handle(&self) -> PoolHandle {
        PoolHandle {
            pid: std::process::id(),
            fd: self.fd.as_raw_fd(),
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: our own mapping of `len` bytes; the pool that used it is being dropped.
        // Failing only leaves the mapping until the process ends.
        let _ = unsafe { munmap(self.ptr.cast(), self.len) };
    }
}
