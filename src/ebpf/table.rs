//! The kernel's arrays mapped into our memory: the TCP connections' slots (`conns`), which the
//! hooks keep up to date, and the rows of the last UDP flow read (`table`), where
//! dump_udp_flows puts them (see `report` in tcptop.bpf.c for why not through read()).

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{self, NonNull};

/// Slots there are at least (about 3 MiB): room for the host's new connections.
const MIN_SLOTS: u32 = 1 << 14;
/// Slots there are at most (some 800 MiB of kernel memory).
const MAX_SLOTS: u32 = 1 << 22;
/// Rows of UDP flows the mapped table holds; more arrive through the iterator's output.
pub const UDP_ROWS: u32 = 1 << 14;

/// Connection slots for a host with `sockets` sockets in use: a quarter more, for growth.
pub fn slots_for(sockets: u64) -> u32 {
    let wanted = sockets.saturating_add(sockets / 4).saturating_add(u64::from(MIN_SLOTS));
    u32::try_from(wanted).unwrap_or(u32::MAX).min(MAX_SLOTS)
}

/// An mmapable BPF array of `T`, mapped read-only.
pub struct MappedArray<T> {
    values: NonNull<T>,
    len: usize,
    _values: PhantomData<T>,
}

impl<T: Copy> MappedArray<T> {
    /// Maps the whole of `map`, an mmapable array of `len` values of `T`.
    pub fn map(map: BorrowedFd<'_>, len: u32) -> io::Result<MappedArray<T>> {
        let len = len as usize;
        // SAFETY: a fresh shared read-only mapping of the map's values, which start at offset 0.
        let address = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len * size_of::<T>(),
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let values = NonNull::new(address.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(MappedArray { values, len, _values: PhantomData })
    }

    /// A copy of value `index`, if the array has one. Volatile, as the compiler cannot see the
    /// kernel's writes; a value a hook changes during the copy may mix two of its states, each
    /// field whole, which the next read corrects.
    pub fn get(&self, index: usize) -> Option<T> {
        // SAFETY: the index is inside the mapping, which lives as long as self.
        (index < self.len).then(|| unsafe { ptr::read_volatile(self.values.as_ptr().add(index)) })
    }

    /// One field of value `index`, read as `get` reads a value, without copying the rest.
    ///
    /// # Safety
    /// `field` must return the address of a field of the value whose address it is given.
    pub unsafe fn field<F: Copy>(&self, index: usize, field: impl FnOnce(*const T) -> *const F) -> Option<F> {
        // SAFETY: the index is inside the mapping, and the caller's `field` points into that value.
        (index < self.len).then(|| unsafe { ptr::read_volatile(field(self.values.as_ptr().add(index))) })
    }

    /// Copies of the first `count` values (at most the whole array).
    pub fn first(&self, count: usize) -> impl Iterator<Item = T> + '_ {
        (0..count.min(self.len)).filter_map(|i| self.get(i))
    }
}

impl<T> Drop for MappedArray<T> {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made, which nothing uses any more.
        unsafe { libc::munmap(self.values.as_ptr().cast(), self.len * size_of::<T>()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_leave_room_for_a_quarter_more_sockets() {
        assert_eq!(slots_for(0), MIN_SLOTS);
        assert_eq!(slots_for(100_000), 125_000 + MIN_SLOTS);
        assert_eq!(slots_for(u64::MAX), MAX_SLOTS);
    }
}
