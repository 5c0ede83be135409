//! The one kernel facility aya does not offer: waiting for running BPF
//! programs to finish.
//!
//! After the controller points the datapath at a new policy slot, a program
//! run that started a moment earlier may still be judging a frame against the
//! old slot. The old slot may only be cleared once every such run is over, which
//! is what an RCU grace period guarantees: XDP programs run inside an RCU
//! read-side critical section.
//!
//! User space cannot call `synchronize_rcu()` directly, but the kernel calls it
//! on behalf of user space whenever an element of a map-in-map (array or hash
//! of maps) is updated, so that the caller knows no program still sees the old
//! inner map when the update returns. [`RcuBarrier`] keeps a one-slot array of
//! maps for exactly that purpose. Minimum kernel version: 5.0.

use std::{
    io,
    os::fd::{AsRawFd as _, FromRawFd as _, OwnedFd, RawFd},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
const BPF_MAP_TYPE_ARRAY_OF_MAPS: u32 = 12;

/// The leading fields of `union bpf_attr` for `BPF_MAP_CREATE`. The kernel
/// treats the fields a shorter attribute leaves out as zero.
#[repr(C)]
#[derive(Default)]
struct MapCreateAttr {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
}

/// `union bpf_attr` for `BPF_MAP_UPDATE_ELEM`.
#[repr(C)]
struct MapUpdateAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// Waits for every BPF program run that is in progress to finish.
#[derive(Debug)]
pub struct RcuBarrier {
    outer: OwnedFd,
    inner: OwnedFd,
}

impl RcuBarrier {
    /// Creates the two small maps the barrier uses.
    ///
    /// # Errors
    ///
    /// Returns the `bpf(BPF_MAP_CREATE)` error, for example `EPERM` without
    /// `CAP_BPF`.
    pub fn new() -> io::Result<Self> {
        let inner = create_map(&MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            ..Default::default()
        })?;
        let inner_map_fd = u32::try_from(inner.as_raw_fd())
            .map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
        let outer = create_map(&MapCreateAttr {
            map_type: BPF_MAP_TYPE_ARRAY_OF_MAPS,
            key_size: 4,
            value_size: 4,
            max_entries: 1,
            inner_map_fd,
            ..Default::default()
        })?;
        Ok(Self { outer, inner })
    }

    /// Returns once every program run that began before the call has ended.
    ///
    /// # Errors
    ///
    /// Returns the `bpf(BPF_MAP_UPDATE_ELEM)` error.
    pub fn wait(&self) -> io::Result<()> {
        let key: u32 = 0;
        let value = self.inner.as_raw_fd();
        let attr = MapUpdateAttr {
            map_fd: fd_u32(self.outer.as_raw_fd())?,
            _pad: 0,
            key: std::ptr::from_ref(&key) as u64,
            value: std::ptr::from_ref(&value) as u64,
            flags: 0,
        };
        // SAFETY: `attr` is a valid BPF_MAP_UPDATE_ELEM attribute whose key and
        // value pointers refer to live locals of the sizes the map declares.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_UPDATE_ELEM,
                std::ptr::from_ref(&attr),
                size_of::<MapUpdateAttr>(),
            )
        };
        if ret < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

fn fd_u32(fd: RawFd) -> io::Result<u32> {
    u32::try_from(fd).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))
}

fn create_map(attr: &MapCreateAttr) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a valid BPF_MAP_CREATE attribute and outlives the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_CREATE,
            std::ptr::from_ref(attr),
            size_of::<MapCreateAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = RawFd::try_from(ret).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: the kernel just returned this descriptor and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
