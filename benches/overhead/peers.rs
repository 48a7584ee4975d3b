//! The tools a user would run instead of tcptop (nethogs, bandwhich, iftop), each started in
//! its text mode on loopback for the same runs as tcptop; `setup` beside this file installs them.

use std::env;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::measure;

/// Time a peer gets to open its capture before the traffic starts; none says when it is ready.
const SETTLE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Peer {
    Nethogs,
    Bandwhich,
    Iftop,
}

impl Peer {
    pub const ALL: [Peer; 3] = [Peer::Nethogs, Peer::Bandwhich, Peer::Iftop];

    pub fn program(self) -> &'static str {
        match self {
            Peer::Nethogs => "nethogs",
            Peer::Bandwhich => "bandwhich",
            Peer::Iftop => "iftop",
        }
    }

    /// Text output, loopback only, no name look-ups.
    fn args(self) -> &'static [&'static str] {
        match self {
            Peer::Nethogs => &["-t", "-a", "lo"],
            Peer::Bandwhich => &["--raw", "-n", "-i", "lo"],
            Peer::Iftop => &["-t", "-n", "-i", "lo"],
        }
    }

    pub fn label(self) -> String {
        format!("`{} {}`", self.program(), self.args().join(" "))
    }

    /// Where it is installed: on PATH, in the sbin directories a non-login shell may leave
    /// out, or where `cargo install` puts it.
    pub fn binary(self) -> Option<PathBuf> {
        let path = env::var_os("PATH").unwrap_or_default();
        let cargo_bin = env::var_os("HOME").map(|home| Path::new(&home).join(".cargo/bin"));
        env::split_paths(&path)
            .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
            .chain(cargo_bin)
            .map(|dir| dir.join(self.program()))
            .find(|binary| binary.is_file())
    }
}

/// A peer at work, its output discarded (its errors kept in a file to name on failure).
pub struct Running {
    child: Child,
    pub pid: u32,
    pub cpu: measure::CpuAccount,
}

impl Running {
    pub fn start(peer: Peer) -> Result<Running> {
        let binary = peer.binary().with_context(|| format!("{} is not installed", peer.program()))?;
        let errors = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{}.stderr", peer.program()));
        let mut child = Command::new(&binary)
            .args(peer.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&errors)?)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let cpu = measure::CpuAccount::of(child.id()).inspect_err(|_| {
            let _ = child.kill().and_then(|()| child.wait());
        })?;
        thread::sleep(SETTLE);
        if let Some(status) = child.try_wait()? {
            let said = std::fs::read_to_string(&errors).unwrap_or_default();
            bail!("{} exited ({status}): {}", peer.label(), said.lines().last().unwrap_or(""));
        }
        let pid = child.id();
        Ok(Running { child, pid, cpu })
    }

    pub fn stop(mut self) -> Result<()> {
        crate::child::terminate(&mut self.child, "a peer")
    }
}
