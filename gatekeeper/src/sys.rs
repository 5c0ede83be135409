//! Two kernel facilities aya does not offer: waiting for running BPF
//! programs to finish, and writing an array map through a shared memory
//! mapping ([`SharedArray`]).
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
    marker::PhantomData,
    os::fd::{AsRawFd as _, BorrowedFd, FromRawFd as _, OwnedFd, RawFd},
    ptr::NonNull,
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

/// An array map created with `BPF_F_MMAPABLE`, mapped into this process:
/// writing a range of it is a memory copy instead of a system call per
/// element. Programs see the writes at once, so only ranges no program
/// reads (an idle policy slot) may be written.
#[derive(Debug)]
pub struct SharedArray<T> {
    ptr: NonNull<T>,
    len: usize,
    _values: PhantomData<T>,
}

// SAFETY: the mapping is owned by the value and only written through
// `&mut self`; `T` is plain data.
unsafe impl<T: Copy + Send> Send for SharedArray<T> {}

impl<T: Copy> SharedArray<T> {
    /// Maps all `len` values of the array map `fd`, read and write.
    ///
    /// `T` must be the map's value type, with a size that is a multiple of
    /// eight (the kernel's stride between array values).
    ///
    /// # Errors
    ///
    /// The `mmap` error, for example `EINVAL` when the map was not created
    /// mappable or is smaller than `len` values.
    pub fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<Self> {
        assert!(
            size_of::<T>().is_multiple_of(8),
            "array values are eight-byte aligned"
        );
        let bytes = len
            .checked_mul(size_of::<T>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EOVERFLOW))?;
        // SAFETY: a fresh shared mapping of a descriptor we borrow; the
        // kernel checks the length and flags against the map.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<T>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Self {
            ptr,
            len,
            _values: PhantomData,
        })
    }

    /// Copies `values` into the array starting at index `at`.
    ///
    /// # Panics
    ///
    /// When the range does not fit in the array.
    pub fn write(&mut self, at: usize, values: &[T]) {
        let end = at.checked_add(values.len()).expect("index overflow");
        assert!(
            end <= self.len,
            "writing values {at}..{end} of {}",
            self.len
        );
        // SAFETY: the range lies inside the mapping (checked above), which
        // cannot overlap `values`, a slice of this process's own memory.
        unsafe {
            std::ptr::copy_nonoverlapping(values.as_ptr(), self.ptr.as_ptr().add(at), values.len());
        }
    }
}

impl<T> Drop for SharedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len * size_of::<T>());
        }
    }
}
