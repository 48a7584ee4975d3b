//! The attach strategies: which programs of tcptop.bpf.c each one loads, and in what order
//! `--probe auto` tries them.

use std::fmt;

use clap::ValueEnum;

/// One way of hooking the same counting handlers into the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// fexit/tcp_sendmsg and fentry/tcp_cleanup_rbuf (BPF trampolines, Linux 5.5+).
    Fentry,
    /// kprobes on the same functions (any kernel with kprobes).
    Kprobe,
    /// The sock:sock_send_length and sock:sock_recv_length tracepoints (Linux 6.3+).
    Tracepoint,
}

/// Where a strategy keeps its per-connection state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Table {
    /// Socket-local storage (`sk_conns`), for BTF-typed programs.
    SocketStorage,
    /// A hash keyed by socket address (`hash_conns`), for kprobe and raw_tp programs.
    Hash,
}

impl Table {
    /// The maps only this table needs: the others are not created.
    pub fn maps(self) -> &'static [&'static str] {
        match self {
            Table::SocketStorage => &["sk_conns"],
            Table::Hash => &["hash_conns", "sendmsg_sockets"],
        }
    }

    /// The iterator program that dumps every live connection of this table.
    pub fn dump_program(self) -> &'static str {
        match self {
            Table::SocketStorage => "dump_sk_conns",
            Table::Hash => "dump_hash_conns",
        }
    }

    /// The iterator program that claims, at start, the connections that predate tcptop.
    pub fn adopt_program(self) -> &'static str {
        match self {
            Table::SocketStorage => "adopt_tcp_socks",
            Table::Hash => "adopt_tcp_socks_hash",
        }
    }
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

    /// The hook programs to load and attach, by their function names in tcptop.bpf.c.
    pub fn hooks(self) -> &'static [&'static str] {
        match self {
            Strategy::Fentry => &[
                "fexit_tcp_sendmsg",
                "fentry_tcp_cleanup_rbuf",
                "tp_inet_sock_set_state",
                "tp_tcp_destroy_sock",
            ],
            Strategy::Kprobe => &[
                "kprobe_tcp_sendmsg",
                "kretprobe_tcp_sendmsg",
                "kprobe_tcp_cleanup_rbuf",
                "raw_tp_inet_sock_set_state",
                "raw_tp_tcp_destroy_sock",
            ],
            Strategy::Tracepoint => &[
                "tp_sock_send_length",
                "tp_sock_recv_length",
                "tp_inet_sock_set_state",
                "tp_tcp_destroy_sock",
            ],
        }
    }

    pub fn table(self) -> Table {
        match self {
            Strategy::Fentry | Strategy::Tracepoint => Table::SocketStorage,
            Strategy::Kprobe => Table::Hash,
        }
    }

    /// Whether the program named `name` belongs to this strategy.
    pub fn loads(self, name: &str) -> bool {
        let table = self.table();
        self.hooks().contains(&name) || table.dump_program() == name || table.adopt_program() == name
    }

    /// Whether the map named `name` is needed: shared maps always, table maps for our table.
    pub fn creates(self, map: &str) -> bool {
        let other = match self.table() {
            Table::SocketStorage => Table::Hash,
            Table::Hash => Table::SocketStorage,
        };
        !other.maps().contains(&map)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_strategy_has_send_read_state_and_destroy_hooks() {
        for strategy in Strategy::AUTO_ORDER {
            let hooks = strategy.hooks().join(" ");
            for needles in [
                ["sendmsg", "send_length"],
                ["cleanup_rbuf", "recv_length"],
                ["inet_sock_set_state"; 2],
                ["tcp_destroy_sock"; 2],
            ] {
                assert!(needles.iter().any(|n| hooks.contains(n)), "{strategy}: {hooks}");
            }
            assert!(strategy.loads(strategy.table().dump_program()));
            assert!(strategy.loads(strategy.table().adopt_program()));
        }
    }

    #[test]
    fn each_strategy_creates_only_its_own_table() {
        assert!(Strategy::Fentry.creates("sk_conns") && !Strategy::Fentry.creates("hash_conns"));
        assert!(Strategy::Kprobe.creates("sendmsg_sockets") && !Strategy::Kprobe.creates("sk_conns"));
        assert!(Strategy::Tracepoint.creates("events"));
    }
}
