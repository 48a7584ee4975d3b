//! The `--log` file: a CSV of every interval, opened so that tcptop (which runs as root)
//! cannot be made to write where it should not, and continued when it already is a tcptop log.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags, Stat, CWD};
use rustix::io::Errno;

use crate::model::Query;
use crate::view::record::{csv_header, Encoding, RecordSink};

/// The longest tail searched for the end of the last complete row.
const TAIL: u64 = 64 << 10;
/// Symbolic links followed on the way to the log's directory, as the kernel allows.
const MAX_LINKS: usize = 40;

/// Opens `path` for appending: creates it (mode 0644 less the umask) with the CSV header,
/// or continues a tcptop log with the same header, and holds its lock while tcptop runs.
/// Refuses a symbolic link, a link of another user's on the way to it, anything that is not
/// a regular file, a file of another user's, procfs, sysfs and their kind, and a file with
/// another first line.
pub fn open(path: &Path) -> Result<RecordSink<LogFile>> {
    let cannot = || format!("cannot log to {}", path.display());
    let (dir, name) = split(path).with_context(cannot)?;
    let dir = open_directory(&dir).with_context(cannot)?;
    let file = open_file(&dir, &name).with_context(cannot)?;
    let mut log = LogFile { file, path: path.to_path_buf() };
    let header = csv_header();
    let continued = log.continue_log(&dir, &name, &header).with_context(cannot)?;
    if !continued {
        log.write_all(&header)?;
    }
    Ok(RecordSink::new(log, Encoding::Csv, Query::default(), false))
}

/// The log, written an interval at a time.
pub struct LogFile {
    file: File,
    path: PathBuf,
}

impl Write for LogFile {
    /// All of `buf` or nothing: should the disk fill up half way, the file is cut back to
    /// its last whole row, and the error names it.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let written = self.file.metadata()?.len();
        if let Err(error) = self.file.write_all(buf) {
            let kept = match self.file.set_len(written) {
                Ok(()) => "it keeps every whole interval before",
                Err(_) => "its last row may be cut short",
            };
            let message = format!("writing to {}: {error}; {kept}", self.path.display());
            return Err(io::Error::new(error.kind(), message));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The directory `path` is in, and its name there.
fn split(path: &Path) -> Result<(PathBuf, OsString)> {
    let name = path.file_name().ok_or_else(|| anyhow!("it names no file"))?;
    let dir = path.parent().filter(|dir| !dir.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok((dir.to_path_buf(), name.to_os_string()))
}

/// Opens the directory `path` one name at a time, following only the symbolic links that root
/// or tcptop's own user own: another user's link could lead anywhere.
fn open_directory(path: &Path) -> Result<OwnedFd> {
    let mut dir = open_dir_at(CWD, ".")?;
    // The names still to walk, the next last; `/` starts again at the root.
    let mut pending: Vec<OsString> = Vec::new();
    push_components(&mut pending, path);
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == "/" {
            dir = open_dir_at(CWD, "/")?;
            continue;
        }
        let stat = rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW)
            .with_context(|| format!("{}", Path::new(&name).display()))?;
        if FileType::from_raw_mode(stat.st_mode) != FileType::Symlink {
            // O_NOFOLLOW: a link put in its place since is refused, not followed.
            dir = open_dir_at(&dir, &name)?;
            continue;
        }
        if !trusted_owner(stat.st_uid) {
            bail!(
                "{} on its way is a symbolic link of uid {}'s, and tcptop follows only root's and its own",
                Path::new(&name).display(),
                stat.st_uid
            );
        }
        links += 1;
        if links > MAX_LINKS {
            bail!("its directory is behind more than {MAX_LINKS} symbolic links");
        }
        let target = rustix::fs::readlinkat(&dir, &name, Vec::new())?;
        push_components(&mut pending, Path::new(OsStr::from_bytes(target.as_bytes())));
    }
    Ok(dir)
}

fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    let names = path.components().filter_map(|component| match component {
        Component::RootDir => Some(OsString::from("/")),
        Component::ParentDir => Some(OsString::from("..")),
        Component::Normal(name) => Some(name.to_os_string()),
        Component::CurDir | Component::Prefix(_) => None,
    });
    let start = pending.len();
    pending.extend(names);
    pending[start..].reverse();
}

fn open_dir_at<Fd: AsFd>(dir: Fd, name: impl AsRef<OsStr>) -> Result<OwnedFd> {
    let name = name.as_ref();
    let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | DIRECTORY_ACCESS;
    rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|errno| match errno {
        Errno::NOTDIR | Errno::LOOP => anyhow!("{} on its way is not a directory", Path::new(name).display()),
        _ => anyhow::Error::from(io::Error::from(errno)).context(Path::new(name).display().to_string()),
    })
}

/// A directory is only walked through: Linux can open it for that alone.
#[cfg(target_os = "linux")]
const DIRECTORY_ACCESS: OFlags = OFlags::PATH;
#[cfg(not(target_os = "linux"))]
const DIRECTORY_ACCESS: OFlags = OFlags::RDONLY;

/// Opens (or creates) `name` in `dir` for appending, once it is known to be a regular file:
/// opening a device or a FIFO may already do something.
fn open_file(dir: &OwnedFd, name: &OsStr) -> Result<File> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(stat) => refuse_unless_regular(&stat)?,
        Err(Errno::NOENT) => {}
        Err(errno) => return Err(io::Error::from(errno).into()),
    }
    // O_NONBLOCK: a FIFO put there since is refused below instead of blocking the open.
    let flags = OFlags::RDWR
        | OFlags::APPEND
        | OFlags::NOFOLLOW
        | OFlags::NOCTTY
        | OFlags::NONBLOCK
        | OFlags::CLOEXEC;
    let opened = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        // O_EXCL: never someone else's file that appeared meanwhile.
        Err(Errno::NOENT) => {
            rustix::fs::openat(dir, name, flags | OFlags::CREATE | OFlags::EXCL, Mode::from_raw_mode(0o644))
        }
        opened => opened,
    };
    let file = File::from(opened.map_err(|errno| match errno {
        Errno::LOOP => anyhow!("it is a symbolic link, and tcptop does not follow those"),
        Errno::ISDIR => anyhow!("it is a directory"),
        _ => io::Error::from(errno).into(),
    })?);
    let stat = rustix::fs::fstat(&file)?;
    refuse_unless_regular(&stat)?;
    if !trusted_owner(stat.st_uid) {
        bail!("it belongs to uid {}, and tcptop logs only to its own user's files or root's", stat.st_uid);
    }
    refuse_pseudo_filesystem(&file)?;
    rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(|errno| match errno {
        Errno::WOULDBLOCK => anyhow!("another tcptop is logging to it (it holds the file's lock)"),
        _ => io::Error::from(errno).into(),
    })?;
    Ok(file)
}

fn refuse_unless_regular(stat: &Stat) -> Result<()> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile => Ok(()),
        FileType::Symlink => bail!("it is a symbolic link, and tcptop does not follow those"),
        FileType::Directory => bail!("it is a directory"),
        _ => bail!("it is not a regular file"),
    }
}

/// Whether a file or link of `uid`'s can be trusted: tcptop's own user's, or root's.
fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == rustix::process::geteuid().as_raw()
}

/// Kernel interfaces that look like files: procfs and sysfs files seem empty and regular, and
/// what is written to them changes the system (`/proc/sys/kernel/hostname`).
#[cfg(target_os = "linux")]
fn refuse_pseudo_filesystem(file: &File) -> Result<()> {
    const PSEUDO: [(u64, &str); 13] = [
        (0x9fa0, "procfs"),
        (0x6265_6572, "sysfs"),
        (0x6367_7270, "cgroup2"),
        (0x0027_e0eb, "cgroup"),
        (0x6462_6720, "debugfs"),
        (0x7472_6163, "tracefs"),
        (0x7363_6673, "securityfs"),
        (0xcafe_4a11, "bpffs"),
        (0x6265_6570, "configfs"),
        (0x6165_676c, "pstore"),
        (0xde5e_81e4, "efivarfs"),
        (0xf97c_ff8c, "selinuxfs"),
        (0x4249_4e4d, "binfmt_misc"),
    ];
    let magic = rustix::fs::fstatfs(file)?.f_type as u64;
    match PSEUDO.iter().find(|(known, _)| *known == magic) {
        Some((_, kind)) => bail!("it is on {kind}, a kernel interface rather than a file system"),
        None => Ok(()),
    }
}

#[cfg(not(target_os = "linux"))]
fn refuse_pseudo_filesystem(_file: &File) -> Result<()> {
    Ok(())
}

impl LogFile {
    /// Whether the file is a tcptop log beginning with `header` (false: it is empty). A row
    /// that a killed tcptop left unfinished is moved to a file of its own beside it, and said so.
    fn continue_log(&self, dir: &OwnedFd, name: &OsStr, header: &[u8]) -> Result<bool> {
        let file = &self.file;
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
            let unfinished = &tail[complete + 1..];
            let aside = keep_aside(dir, name, complete_len, unfinished)?;
            file.set_len(complete_len)?;
            eprintln!(
                "tcptop: {} ended in an unfinished row ({} bytes, from a tcptop stopped while writing): \
                 moved to {}",
                self.path.display(),
                unfinished.len(),
                self.path.with_file_name(&aside).display()
            );
        }
        Ok(true)
    }
}

/// Writes `unfinished`, found at `offset` of the log `name`, to a new file beside it, and
/// returns that file's name.
fn keep_aside(dir: &OwnedFd, name: &OsStr, offset: u64, unfinished: &[u8]) -> Result<OsString> {
    let mut aside = name.to_os_string();
    aside.push(format!(".unfinished-at-{offset}"));
    let flags = OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, &aside, flags, Mode::from_raw_mode(0o600))
        .map_err(io::Error::from)
        .with_context(|| format!("keeping its unfinished last row in {}", Path::new(&aside).display()))?;
    File::from(fd).write_all(unfinished)?;
    Ok(aside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    fn header() -> String {
        String::from_utf8(csv_header()).unwrap()
    }

    fn refusal(path: &Path) -> String {
        format!("{:#}", open(path).err().expect("refused"))
    }

    fn is_root() -> bool {
        rustix::process::geteuid().is_root()
    }

    /// Hands `path` (not following it) to nobody, as a local attacker would have made it.
    fn give_to_nobody(path: &Path) {
        let nobody = rustix::process::Uid::from_raw(65534);
        rustix::fs::chownat(CWD, path, Some(nobody), None, AtFlags::SYMLINK_NOFOLLOW).unwrap();
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
    fn an_unfinished_row_is_moved_aside_and_the_log_continued() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.csv");
        let row =
            "2024-01-01T00:00:00.000Z,1000,1,curl,tcp,ipv4,127.0.0.1,1,127.0.0.1,2,ESTABLISHED,1,2,3,4,\n";
        let complete = format!("{}{row}", header());
        fs::write(&path, format!("{complete}2024-01-01T00:00:01.000Z,10")).unwrap();
        drop(open(&path).unwrap());
        assert_eq!(fs::read_to_string(&path).unwrap(), complete);
        let aside = dir.path().join(format!("old.csv.unfinished-at-{}", complete.len()));
        assert_eq!(fs::read_to_string(aside).unwrap(), "2024-01-01T00:00:01.000Z,10");
    }

    #[test]
    fn a_file_with_another_header_is_refused_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        for content in ["name,size\nx,1\n", "timestamp,interval_ms\n", "timestamp"] {
            let path = dir.path().join("other.csv");
            fs::write(&path, content).unwrap();
            let error = refusal(&path);
            assert!(error.contains("not a tcptop CSV log"), "{error}");
            assert_eq!(fs::read_to_string(&path).unwrap(), content);
        }
    }

    /// Symbolic links and directories: see the integration tests, which run the binary.
    #[test]
    fn fifos_and_devices_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(CWD, &fifo, Mode::from_raw_mode(0o644)).unwrap();
        for path in [fifo.as_path(), Path::new("/dev/null")] {
            let error = refusal(path);
            assert!(error.ends_with("it is not a regular file"), "{error}");
        }
    }

    /// Writing there would rename this very thread.
    #[cfg(target_os = "linux")]
    #[test]
    fn procfs_is_refused() {
        let comm = fs::read_to_string("/proc/thread-self/comm").unwrap();
        let error = refusal(Path::new("/proc/thread-self/comm"));
        assert!(error.ends_with("it is on procfs, a kernel interface rather than a file system"), "{error}");
        assert_eq!(fs::read_to_string("/proc/thread-self/comm").unwrap(), comm);
    }

    #[test]
    fn a_second_tcptop_on_the_same_log_is_refused_while_the_first_runs() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shared.csv");
        let first = open(&path).unwrap();
        let error = refusal(&path);
        assert!(error.ends_with("another tcptop is logging to it (it holds the file's lock)"), "{error}");
        drop(first);
        assert!(open(&path).is_ok());
        assert_eq!(fs::read_to_string(&path).unwrap(), header());
    }

    /// Another user's empty file in a world-writable directory, waiting for root's rows.
    #[test]
    fn another_users_file_is_refused_and_left_alone() {
        if !is_root() {
            return eprintln!("SKIPPED: handing a file to another user needs root");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("trap.csv");
        fs::write(&path, "").unwrap();
        give_to_nobody(&path);
        let error = refusal(&path);
        assert!(
            error
                .ends_with("it belongs to uid 65534, and tcptop logs only to its own user's files or root's"),
            "{error}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"");
    }

    #[test]
    fn another_users_link_to_a_directory_is_not_followed_and_roots_is() {
        if !is_root() {
            return eprintln!("SKIPPED: handing a link to another user needs root");
        }
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        fs::create_dir(&real).unwrap();
        let theirs = dir.path().join("theirs");
        std::os::unix::fs::symlink(&real, &theirs).unwrap();
        give_to_nobody(&theirs);
        let error = refusal(&theirs.join("x.csv"));
        assert!(error.contains("theirs on its way is a symbolic link of uid 65534's"), "{error}");
        assert_eq!(fs::read_dir(&real).unwrap().count(), 0);
        let ours = dir.path().join("ours");
        std::os::unix::fs::symlink("real", &ours).unwrap();
        drop(open(&ours.join("x.csv")).unwrap());
        assert_eq!(fs::read_to_string(real.join("x.csv")).unwrap(), header());
    }
}
