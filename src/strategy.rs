//! The names of the eBPF counting hooks, one list for the `--probe` flag, the plan and the
//! tests; platform-neutral, as the flag is.

use std::fmt;

use clap::ValueEnum;

/// The hooks that count sends and reads (`--probe`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Strategy {
    /// fexit/tcp_sendmsg, fentry/tcp_cleanup_rbuf and fexit on the UDP send and receive
    /// functions (BPF trampolines).
    Fentry,
    /// kprobes on the same functions (any kernel with kprobes).
    Kprobe,
    /// The sock:sock_send_length and sock:sock_recv_length tracepoints (Linux 6.3+), with
    /// cgroup sock_addr hooks for the peers of unconnected UDP sockets.
    Tracepoint,
}

impl Strategy {
    /// The order `--probe auto` tries them in: cheapest and most precise first.
    pub const AUTO_ORDER: [Strategy; 3] = [Strategy::Fentry, Strategy::Kprobe, Strategy::Tracepoint];

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Fentry => "fentry",
            Strategy::Kprobe => "kprobe",
            Strategy::Tracepoint => "tracepoint",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What `--probe` chose: `None` for auto (the best hooks this kernel allows).
pub type ProbeChoice = Option<Strategy>;

/// Parses a `--probe` value: `auto` or one of the strategies' names.
pub fn parse_probe(text: &str) -> Result<ProbeChoice, String> {
    if text == "auto" {
        return Ok(None);
    }
    Strategy::from_str(text, false).map(Some).map_err(|_| {
        let names: Vec<&str> = Strategy::AUTO_ORDER.iter().map(|s| s.name()).collect();
        format!("`{text}` is not one of auto, {}", names.join(", "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_values_are_auto_or_a_strategy() {
        assert_eq!(parse_probe("auto"), Ok(None));
        assert_eq!(parse_probe("kprobe"), Ok(Some(Strategy::Kprobe)));
        assert!(parse_probe("uprobe").unwrap_err().contains("auto, fentry, kprobe, tracepoint"));
    }
}
