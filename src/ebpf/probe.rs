//! Feature probes that need no program of tcptop.bpf.c: a few raw instructions loaded on their
//! own, as libbpf probes the kernel's features.

use std::os::fd::{FromRawFd, OwnedFd};

/// Whether the kernel takes fetching atomics (BPF_ATOMIC | BPF_FETCH, Linux 5.12+); the
/// kernel's word if not.
pub fn atomic_fetch() -> Result<(), String> {
    const BPF_ADD: i32 = 0x00;
    const BPF_FETCH: i32 = 0x01;
    let insn = |code: u8, regs: u8, off: i16, imm: i32| libbpf_sys::bpf_insn {
        code,
        _bitfield_align_1: [],
        _bitfield_1: libbpf_sys::bpf_insn::new_bitfield_1(regs & 0xf, regs >> 4),
        off,
        imm,
    };
    // dst register in the low nibble of `regs`, src in the high one.
    let program = [
        insn(0xb7, 0x01, 0, 0),                    // r1 = 0
        insn(0x7b, 0x1a, -8, 0),                   // *(u64 *)(r10 - 8) = r1
        insn(0xb7, 0x01, 0, 1),                    // r1 = 1
        insn(0xdb, 0x1a, -8, BPF_ADD | BPF_FETCH), // r1 = atomic_fetch_add((u64 *)(r10 - 8), r1)
        insn(0xb7, 0x00, 0, 0),                    // r0 = 0
        insn(0x95, 0x00, 0, 0),                    // exit
    ];
    // SAFETY: the instructions outlive the call; null name and options are allowed.
    let fd = unsafe {
        libbpf_sys::bpf_prog_load(
            libbpf_sys::BPF_PROG_TYPE_SOCKET_FILTER,
            std::ptr::null(),
            c"GPL".as_ptr(),
            program.as_ptr(),
            program.len() as _,
            std::ptr::null_mut(),
        )
    };
    if fd < 0 {
        return Err(format!("a fetching atomic add: {}", std::io::Error::from_raw_os_error(-fd)));
    }
    // SAFETY: a new descriptor that nothing else owns; closing it unloads the probe.
    drop(unsafe { OwnedFd::from_raw_fd(fd) });
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_kernel_has_fetching_atomics_or_says_why_not() {
        // Root only; elsewhere the load is refused, which must come back as a reason.
        match super::atomic_fetch() {
            Ok(()) => {}
            Err(why) => assert!(why.starts_with("a fetching atomic add: "), "{why}"),
        }
    }
}
