//! libbpf's messages, kept rather than printed: a load that the kernel refuses names the program
//! it refused only there, and the plan needs that name to know which part to change.

use std::sync::Mutex;

use libbpf_rs::PrintLevel;

/// The program of the last refused load, and the error libbpf gave for it ("-EPERM").
#[derive(Debug, PartialEq, Eq)]
pub struct FailedProgram {
    pub program: String,
    pub error: String,
}

/// The errors, as libbpf names them, and their numbers, of a kernel that refuses a kind of
/// program itself (EPERM: a policy or a lockdown) or lacks its attach point (ESRCH, ENOENT),
/// rather than the verifier something the program does. 524 is the kernel's own ENOTSUPP.
pub const DENIALS: [(&str, i32); 5] = [
    ("-EPERM", libc::EPERM),
    ("-ESRCH", libc::ESRCH),
    ("-ENOENT", libc::ENOENT),
    ("-EOPNOTSUPP", libc::EOPNOTSUPP),
    ("-ENOTSUP", 524),
];

impl FailedProgram {
    /// Whether the error is one of `DENIALS`.
    pub fn denied(&self) -> bool {
        DENIALS.iter().any(|(name, _)| *name == self.error)
    }
}

static FAILED: Mutex<Option<FailedProgram>> = Mutex::new(None);
/// libbpf's last message, which says why an attach failed where its error does not.
static LAST: Mutex<Option<String>> = Mutex::new(None);

/// Routes libbpf's messages here from now on. With `TCPTOP_LIBBPF_LOG` set they are printed
/// too, at libbpf's debug level, verifier logs included: for whoever extends the probes.
pub fn capture() {
    let level =
        if std::env::var_os("TCPTOP_LIBBPF_LOG").is_some() { PrintLevel::Debug } else { PrintLevel::Warn };
    libbpf_rs::set_print(Some((level, record)));
}

/// The program of the last refused load since the last call, if any.
pub fn take_failed_program() -> Option<FailedProgram> {
    FAILED.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
}

/// libbpf's last message since the last call, without its "libbpf: " prefix.
pub fn take_last() -> Option<String> {
    LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take()
}

fn record(_level: PrintLevel, message: String) {
    if std::env::var_os("TCPTOP_LIBBPF_LOG").is_some() {
        // Never a panic (a closed stderr) inside libbpf's call.
        let _ = std::io::Write::write_all(&mut std::io::stderr(), message.as_bytes());
    }
    if let Some(failed) = parse(&message) {
        *FAILED.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(failed);
    }
    let text = message.trim().trim_start_matches("libbpf: ").to_string();
    *LAST.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(text);
}

/// "libbpf: prog 'NAME': failed to load: -EPERM"
fn parse(message: &str) -> Option<FailedProgram> {
    let (_, rest) = message.split_once("prog '")?;
    let (program, error) = rest.split_once("': failed to load: ")?;
    Some(FailedProgram { program: program.to_string(), error: error.trim().to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_load_names_its_program_and_error() {
        let failed = parse("libbpf: prog 'dump_sk_conns': failed to load: -EPERM\n").unwrap();
        assert_eq!((failed.program.as_str(), failed.denied()), ("dump_sk_conns", true));
        assert!(!parse("libbpf: prog 'x': failed to load: -EINVAL").unwrap().denied());
        assert_eq!(parse("libbpf: prog 'dump_sk_conns': BPF program load failed: -EPERM"), None);
    }
}
