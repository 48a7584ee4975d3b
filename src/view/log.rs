//! The `--log` file: a CSV of every interval, opened so that tcptop (which runs as root)
//! cannot be made to clobber a file, and continued when it already is a tcptop log.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

use crate::model::Query;
use crate::view::record::{csv_header, Encoding, RecordSink};

/// The longest tail searched for the end of the last complete row.
const TAIL: u64 = 64 << 10;

/// Opens `path` for appending: creates it (mode 0644 less the umask) with the CSV header,
/// or continues a tcptop log with the same header. Refuses a symbolic link, a directory,
/// anything else that is not a regular file, and a file with another first line.
pub fn open(path: &Path) -> Result<RecordSink<File>> {
    let mut file = open_regular(path).with_context(|| format!("cannot log to {}", path.display()))?;
    let header = csv_header();
    let continued =
        continue_log(&file, &header).with_context(|| format!("cannot log to {}", path.display()))?;
    if !continued {
        file.write_all(&header).with_context(|| format!("writing to {}", path.display()))?;
    }
    Ok(RecordSink::new(file, Encoding::Csv, Query::default(), false))
}

fn open_regular(path: &Path) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        // O_NONBLOCK: a FIFO at the path is refused below instead of blocking the open; it
        // means nothing for regular files. O_NOCTTY: a terminal never becomes ours.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => anyhow!("it is a symbolic link, and tcptop does not follow those"),
            Some(libc::EISDIR) => anyhow!("it is a directory"),
            _ => e.into(),
        })?;
    if !file.metadata()?.is_file() {
        bail!("it is not a regular file");
    }
    Ok(file)
}

/// Whether `file` is a tcptop log beginning with `header` (false: it is empty). A row that
/// a killed tcptop left unfinished is cut, so that the next row starts on a line of its own.
fn continue_log(file: &File, header: &[u8]) -> Result<bool> {
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(false);
    }
    let mut first = vec![0; header.len()];
    if len < first.len() as u64 || file.read_exact_at(&mut first, 0).is_err() || first != header {
        bail!("it is not a tcptop CSV log with the current columns (its first line differs)");
    }
    let tail_start = len.saturating_sub(TAIL);
    let mut tail = vec![0; (len - tail_start) as usize];
    file.read_exact_at(&mut tail, tail_start)?;
    let complete = tail.iter().rposition(|&b| b == b'\n').ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidData, "its last line is far too long to be a tcptop row")
    })?;
    let complete_len = tail_start + complete as u64 + 1;
    if complete_len < len {
        file.set_len(complete_len)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn header() -> String {
        String::from_utf8(csv_header()).unwrap()
    }

    #[test]
    fn a_new_log_gets_the_header_and_mode_0644_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new.csv");
        drop(open(&path).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), header());
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o644, 0, "mode {mode:o}");
    }

    #[test]
    fn a_log_with_the_same_header_is_continued_and_an_unfinished_row_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.csv");
        let row =
            "2024-01-01T00:00:00.000Z,1000,1,curl,tcp,ipv4,127.0.0.1,1,127.0.0.1,2,ESTABLISHED,1,2,3,4,\n";
        fs::write(&path, format!("{}{row}2024-01-01T00:00:01.000Z,10", header())).unwrap();
        drop(open(&path).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), format!("{}{row}", header()));
    }

    #[test]
    fn a_file_with_another_header_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        for content in ["name,size\nx,1\n", "timestamp,interval_ms\n", "timestamp"] {
            let path = dir.path().join("other.csv");
            fs::write(&path, content).unwrap();
            let error = format!("{:#}", open(&path).err().unwrap());
            assert!(error.contains("not a tcptop CSV log"), "{error}");
            assert_eq!(fs::read_to_string(&path).unwrap(), content);
        }
    }

    /// Symbolic links and directories: see the integration tests, which run the binary.
    #[test]
    fn fifos_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        for path in [fifo.as_path(), Path::new("/dev/null")] {
            let error = format!("{:#}", open(path).err().unwrap());
            assert!(error.ends_with("it is not a regular file"), "{error}");
        }
    }
}
