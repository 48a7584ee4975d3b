//! The floor: empty BPF programs (floor.bpf.c) on the hooks a tcptop strategy counts on,
//! compiled here at run time so that the product's build stays free of benchmark code.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use libbpf_rs::{Link, Object, ObjectBuilder};

const SOURCE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/overhead/floor.bpf.c");

/// Which strategy's send and receive hooks to occupy; the prefix of the program names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hooks {
    /// tp_btf/sock_send_length and tp_btf/sock_recv_length
    Tracepoint,
    /// fexit/tcp_sendmsg and fentry/tcp_cleanup_rbuf
    Fentry,
}

impl Hooks {
    pub fn name(self) -> &'static str {
        match self {
            Hooks::Tracepoint => "tracepoint",
            Hooks::Fentry => "fentry",
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

/// Empty programs attached; dropping this detaches them.
pub struct Floor {
    // Links drop before the object they belong to.
    _links: Vec<Link>,
    _object: Object,
}

impl Floor {
    pub fn attach(object: &Path, hooks: Hooks) -> Result<Floor> {
        let mut open = ObjectBuilder::default().open_file(object).context("opening floor.bpf.o")?;
        for mut prog in open.progs_mut() {
            let wanted = prog.name().to_string_lossy().starts_with(hooks.name());
            prog.set_autoload(wanted);
        }
        let object = open.load().context("loading the floor programs")?;
        let links = object
            .progs_mut()
            .filter(|prog| prog.name().to_string_lossy().starts_with(hooks.name()))
            .map(|prog| prog.attach().context("attaching a floor program"))
            .collect::<Result<_>>()?;
        Ok(Floor { _links: links, _object: object })
    }
}
