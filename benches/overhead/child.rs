//! Ending a watcher the benchmark started: as Ctrl-C would, then by force if it hangs.

use std::process::Child;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// How long a watcher may take to exit after SIGTERM (tcptop prints the interval it cuts
/// short, which at a million sockets is a long table).
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Sends SIGTERM and waits; one still running `STOP_TIMEOUT` later is killed, and that is
/// an error naming `what`.
pub fn terminate(child: &mut Child, what: &str) -> Result<()> {
    // SAFETY: kill only sends a signal to our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + STOP_TIMEOUT;
    while child.try_wait()?.is_none() {
        if Instant::now() >= deadline {
            child.kill()?;
            child.wait()?;
            bail!("{what} did not exit within {} s of SIGTERM", STOP_TIMEOUT.as_secs());
        }
        thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}
