//! Yardsticks (floor.bpf.c): empty BPF programs on the hooks a tcptop strategy counts on (the
//! floor), one helper call on them, and a bare per-socket counter on them. Compiled here at run time so that the
//! product's build stays free of benchmark code.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libbpf_rs::{Link, Object, ObjectBuilder};

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/overhead/floor.bpf.c");

/// Which pair of programs to attach to the send and receive hooks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Yardstick {
    /// Empty programs on fexit/tcp_sendmsg and fentry/tcp_cleanup_rbuf.
    EmptyFentry,
    /// Empty programs on tp_btf/sock_send_length and tp_btf/sock_recv_length.
    EmptyTracepoint,
    /// One helper call (bpf_get_current_pid_tgid) on the tracepoint strategy's hooks.
    HelperTracepoint,
    /// A call counter in socket-local storage, on the tracepoint strategy's hooks.
    StorageTracepoint,
}

impl Yardstick {
    /// The prefix of the programs' names in floor.bpf.c.
    fn prefix(self) -> &'static str {
        match self {
            Yardstick::EmptyFentry => "empty_fentry_",
            Yardstick::EmptyTracepoint => "empty_tracepoint_",
            Yardstick::HelperTracepoint => "helper_tracepoint_",
            Yardstick::StorageTracepoint => "storage_tracepoint_",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Yardstick::EmptyFentry => "floor: empty fentry programs",
            Yardstick::EmptyTracepoint => "floor: empty tracepoint programs",
            Yardstick::HelperTracepoint => "yardstick: one helper call (tracepoint)",
            Yardstick::StorageTracepoint => "reference: a counter in socket storage (tracepoint)",
        }
    }
}

/// Compiles floor.bpf.c once, with the same headers as the product's BPF code.
pub fn compile() -> Result<PathBuf> {
    let object = Path::new(env!("CARGO_TARGET_TMPDIR")).join("floor.bpf.o");
    let vmlinux = Path::new(env!("CARGO_MANIFEST_DIR")).join("vmlinux").join(std::env::consts::ARCH);
    libbpf_cargo::SkeletonBuilder::new()
        .source(SOURCE)
        .obj(&object)
        .clang_args(["-I".as_ref(), vmlinux.as_os_str()])
        .build()
        .with_context(|| format!("compiling {SOURCE}"))?;
    Ok(object)
}

/// A yardstick attached; dropping this detaches it.
pub struct Floor {
    // Links drop before the object they belong to.
    _links: Vec<Link>,
    _object: Object,
}

impl Floor {
    pub fn attach(object: &Path, yardstick: Yardstick) -> Result<Floor> {
        let mut open = ObjectBuilder::default().open_file(object).context("opening floor.bpf.o")?;
        for mut prog in open.progs_mut() {
            let wanted = prog.name().to_string_lossy().starts_with(yardstick.prefix());
            prog.set_autoload(wanted);
        }
        let object = open.load().context("loading the programs")?;
        let links = object
            .progs_mut()
            .filter(|prog| prog.name().to_string_lossy().starts_with(yardstick.prefix()))
            .map(|prog| prog.attach().context("attaching a floor program"))
            .collect::<Result<_>>()?;
        Ok(Floor { _links: links, _object: object })
    }
}
