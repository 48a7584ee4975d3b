//! What this kernel offers, found before the object loads: facts from its BTF (read once), and
//! test loads of a two-instruction program of each kind a kernel may refuse outright (a policy's
//! EPERM, a missing attach point). A refused plan's load makes every map first, which at a
//! million sockets is seconds of zeroed pages; a test load takes a millisecond.

use std::os::fd::{FromRawFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

use libbpf_rs::btf::types::{Func, FuncProto};
use libbpf_rs::btf::Btf;
use libbpf_rs::libbpf_sys as sys;

use super::libbpf_log::DENIALS;
use super::plan::{Feature, Refusals};

/// The kernel's answers, the same for every plan tried.
pub struct KernelFacts {
    /// What it lacks, each with why: the kinds of program it refuses to load, and the hooks'
    /// sampling at each call (`Feature::HookSample`).
    pub refused: Refusals,
    /// Whether udp_recvmsg takes a `noblock` argument before its flags (before Linux 5.19).
    pub udp_recvmsg_has_noblock: bool,
}

/// This kernel's facts, found on the first call.
pub fn kernel_facts() -> &'static KernelFacts {
    static FACTS: OnceLock<KernelFacts> = OnceLock::new();
    FACTS.get_or_init(|| {
        let btf = Btf::from_vmlinux().ok();
        let btf = btf.as_ref();
        let func_id =
            |name: &str| btf.and_then(|btf| btf.type_by_name::<Func<'_>>(name)).map(|f| f.type_id().into());
        let mut refused = Refusals::new();
        let tests = [
            (Feature::Fentry, sys::BPF_TRACE_FENTRY, "fentry", "tcp_sendmsg"),
            (Feature::Fentry, sys::BPF_TRACE_FEXIT, "fexit", "tcp_sendmsg"),
            (Feature::MapIter, sys::BPF_TRACE_ITER, "iter", "bpf_map_elem"),
            (Feature::MapIter, sys::BPF_TRACE_ITER, "iter", "bpf_sk_storage_map"),
        ];
        for (feature, attach, kind, target) in tests {
            if refused.contains_key(&feature) {
                continue;
            }
            // libbpf's name for an iterator's attach point.
            let btf_name =
                if attach == sys::BPF_TRACE_ITER { format!("bpf_iter_{target}") } else { target.into() };
            if let Some(error) = func_id(&btf_name).and_then(|id| refusal_of_test_load(attach, id)) {
                refused.insert(
                    feature,
                    format!("a test {kind}/{target} program: the kernel refused to load it ({error})"),
                );
            }
        }
        if let Some(why) = kprobes_missing() {
            refused.insert(Feature::Kprobe, why);
        }
        if let Some(why) = btf.and_then(hooks_cannot_sample) {
            refused.insert(Feature::HookSample, why);
        }
        KernelFacts { refused, udp_recvmsg_has_noblock: btf.is_some_and(udp_recvmsg_has_noblock) }
    })
}

/// The error of a load of `return 0` as a tracing program of `attach` at BTF type `btf_id`,
/// where the kernel refuses the kind itself; `None` where it loads, or fails for a reason the
/// real programs may not share (those are left to their own load).
fn refusal_of_test_load(attach: sys::bpf_attach_type, btf_id: u32) -> Option<&'static str> {
    let instruction = |code: u32| sys::bpf_insn { code: code as u8, ..Default::default() };
    let program = [
        instruction(sys::BPF_ALU64 | sys::BPF_MOV | sys::BPF_K), // r0 = 0
        instruction(sys::BPF_JMP | sys::BPF_EXIT),
    ];
    let mut opts = sys::bpf_prog_load_opts {
        sz: size_of::<sys::bpf_prog_load_opts>() as _,
        expected_attach_type: attach,
        attach_btf_id: btf_id,
        ..Default::default()
    };
    // SAFETY: the name, license and instructions outlive the call, which copies them; opts
    // is sized as libbpf expects.
    let fd = unsafe {
        sys::bpf_prog_load(
            sys::BPF_PROG_TYPE_TRACING,
            c"tcptop_test".as_ptr(),
            c"GPL".as_ptr(),
            program.as_ptr(),
            program.len() as _,
            &mut opts,
        )
    };
    if fd >= 0 {
        // SAFETY: the descriptor is new and ours alone.
        drop(unsafe { OwnedFd::from_raw_fd(fd) });
        return None;
    }
    DENIALS.iter().find(|(_, errno)| *errno == -fd).map(|(name, _)| *name)
}

/// Why no kprobe can be made, if none can: libbpf makes one through the kprobe PMU, else
/// through tracefs's kprobe_events, and this kernel may have neither (or tracefs unmounted).
fn kprobes_missing() -> Option<String> {
    const WAYS: [&str; 3] = [
        "/sys/bus/event_source/devices/kprobe/type",
        "/sys/kernel/tracing/kprobe_events",
        "/sys/kernel/debug/tracing/kprobe_events",
    ];
    if WAYS.iter().any(|way| Path::new(way).exists()) {
        return None;
    }
    Some("this kernel has no kprobe PMU (/sys/bus/event_source/devices/kprobe), and no kprobe_events in a mounted tracefs".to_string())
}

/// Why the hooks cannot sample at each call on this kernel, if they cannot.
fn hooks_cannot_sample(btf: &Btf) -> Option<String> {
    let has = |name: &str| btf.type_by_name::<Func<'_>>(name).is_some();
    if !has("bpf_rdonly_cast") {
        Some("this kernel has no bpf_rdonly_cast kfunc (Linux 6.2+)".to_string())
    } else if has("tcp_sendpage") {
        Some("this kernel's sendfile path (tcp_sendpage, before Linux 6.5) passes no send hook".to_string())
    } else {
        None
    }
}

/// Whether udp_recvmsg has a parameter named `noblock`.
fn udp_recvmsg_has_noblock(btf: &Btf) -> bool {
    let params = btf
        .type_by_name::<Func<'_>>("udp_recvmsg")
        .and_then(|func| func.next_type())
        .and_then(|proto| FuncProto::try_from(proto).ok());
    params.is_some_and(|params| params.iter().any(|param| param.name == Some("noblock".as_ref())))
}
