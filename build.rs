//! Compiles the BPF programs into a libbpf-rs skeleton, for Linux targets only.
use std::env;
use std::path::PathBuf;
use std::process::{Command, Stdio};

const SRC: &str = "src/bpf/tcptop.bpf.c";

fn main() {
    println!("cargo:rerun-if-changed=src/bpf");
    // The target, not the host: a macOS build skips BPF even when run on Linux.
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("linux") {
        return;
    }
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let vmlinux = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").unwrap()).join("vmlinux").join(&arch);
    assert!(
        vmlinux.join("vmlinux.h").exists(),
        "no vmlinux/{arch}/vmlinux.h: see README.md, section 'Another architecture'"
    );
    // libbpf-cargo runs `clang` from PATH; without it, say which package brings it, in one line.
    // (libelf-dev, zlib1g-dev and pkg-config are looked for by libbpf-sys's build, before this one.)
    let clang = Command::new("clang").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status();
    if clang.is_err() {
        println!("cargo::error=clang is missing: it compiles the BPF programs (Debian and Ubuntu: apt install clang, or run scripts/setup)");
        return;
    }
    let out = PathBuf::from(env::var_os("OUT_DIR").unwrap()).join("tcptop.skel.rs");
    #[cfg(target_os = "linux")] // build-dependencies follow the host
    libbpf_cargo::SkeletonBuilder::new()
        .source(SRC)
        .clang_args(["-I".as_ref(), vmlinux.as_os_str(), "-mcpu=v3".as_ref(), "-Wall".as_ref()])
        .build_and_generate(&out)
        .unwrap_or_else(|e| panic!("compiling {SRC}: {e:#}"));
}
