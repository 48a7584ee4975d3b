//! The kernel's connection rows, read from the `table` map mapped into our memory, where the
//! dump programs of tcptop.bpf.c put them (see `report` there for why not through read()).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{self, NonNull};

use super::skel::types::conn_info;

/// Rows the table holds at least (1.6 MiB): room for a host's growth before rows overflow
/// into the slower iterator output.
const MIN_ROWS: u32 = 1 << 14;
/// Rows it holds at most (104 MiB of kernel memory).
const MAX_ROWS: u32 = 1 << 20;

/// Rows for a host with `sockets` sockets in use: twice as many, for growth.
pub fn rows_for(sockets: u64) -> u32 {
    let wanted = u32::try_from(sockets.saturating_mul(2)).unwrap_or(u32::MAX);
    wanted.clamp(MIN_ROWS, MAX_ROWS).next_power_of_two()
}

/// The `table` array map, mapped read-only.
pub struct TableView {
    rows: NonNull<conn_info>,
    capacity: usize,
}

impl TableView {
    /// Maps the whole of `map`, an mmapable array of `capacity` conn_info values.
    pub fn map(map: BorrowedFd<'_>, capacity: u32) -> io::Result<TableView> {
        let capacity = capacity as usize;
        // SAFETY: a fresh shared read-only mapping of the map's values, which start at offset 0.
        let address = unsafe {
            libc::mmap(
                ptr::null_mut(),
                capacity * size_of::<conn_info>(),
                libc::PROT_READ,
                libc::MAP_SHARED,
                map.as_raw_fd(),
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let rows = NonNull::new(address.cast()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(TableView { rows, capacity })
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Copies of the first `count` rows (at most the whole table).
    pub fn rows(&self, count: usize) -> impl Iterator<Item = conn_info> + '_ {
        // SAFETY: every index is inside the mapping; the kernel writes rows only while our
        // own read() of the iterator runs, so reads after it see whole rows. Volatile, as
        // the compiler cannot see those writes.
        (0..count.min(self.capacity)).map(|i| unsafe { ptr::read_volatile(self.rows.as_ptr().add(i)) })
    }
}

impl Drop for TableView {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping `map` made, which nothing uses any more.
        unsafe { libc::munmap(self.rows.as_ptr().cast(), self.capacity * size_of::<conn_info>()) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_have_room_for_twice_the_sockets_in_powers_of_two() {
        assert_eq!(rows_for(0), MIN_ROWS);
        assert_eq!(rows_for(8_000), MIN_ROWS);
        assert_eq!(rows_for(8_193), 32_768);
        assert_eq!(rows_for(50_000), 131_072);
        assert_eq!(rows_for(u64::MAX), MAX_ROWS);
    }
}
