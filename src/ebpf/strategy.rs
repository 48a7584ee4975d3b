//! The attach strategies: which programs of tcptop.bpf.c each one loads, and in what order
//! `--probe auto` tries them.

use std::fmt;

use clap::ValueEnum;

use crate::collector::Proto;

/// One way of hooking the same counting handlers into the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Strategy {
    /// fexit/tcp_sendmsg, fentry/tcp_cleanup_rbuf and fexit on the UDP send and receive
    /// functions (BPF trampolines, Linux 5.17+ for bpf_get_func_ret).
    Fentry,
    /// kprobes on the same functions (any kernel with kprobes).
    Kprobe,
    /// The sock:sock_send_length and sock:sock_recv_length tracepoints (Linux 6.3+), with
    /// cgroup sock_addr hooks for the peers of unconnected UDP sockets.
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
    /// The maps only this table needs.
    pub fn maps(self) -> &'static [&'static str] {
        match self {
            Table::SocketStorage => &["sk_conns"],
            Table::Hash => &["hash_conns"],
        }
    }

    /// The iterator program that dumps every live TCP connection of this table.
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

    /// The hook programs that count `proto`, by their function names in tcptop.bpf.c (the
    /// tracepoint strategy's sock_*_length programs serve both protocols).
    pub fn hooks(self, proto: Proto) -> &'static [&'static str] {
        match (self, proto) {
            (Strategy::Fentry, Proto::Tcp) => &[
                "fexit_tcp_sendmsg",
                "fentry_tcp_cleanup_rbuf",
                "tp_inet_sock_set_state",
                "tp_tcp_destroy_sock",
            ],
            (Strategy::Fentry, Proto::Udp) => {
                &["fexit_udp_sendmsg", "fexit_udpv6_sendmsg", "fexit_udp_recvmsg", "fexit_udpv6_recvmsg"]
            }
            (Strategy::Kprobe, Proto::Tcp) => &[
                "kprobe_tcp_sendmsg",
                "kretprobe_tcp_sendmsg",
                "kprobe_tcp_cleanup_rbuf",
                "raw_tp_inet_sock_set_state",
                "raw_tp_tcp_destroy_sock",
            ],
            (Strategy::Kprobe, Proto::Udp) => &[
                "kprobe_udp_sendmsg",
                "kretprobe_udp_sendmsg",
                "kprobe_udpv6_sendmsg",
                "kretprobe_udpv6_sendmsg",
                "kprobe_udp_recvmsg",
                "kretprobe_udp_recvmsg",
                "kprobe_udpv6_recvmsg",
                "kretprobe_udpv6_recvmsg",
            ],
            (Strategy::Tracepoint, Proto::Tcp) => &[
                "tp_sock_send_length",
                "tp_sock_recv_length",
                "tp_inet_sock_set_state",
                "tp_tcp_destroy_sock",
            ],
            (Strategy::Tracepoint, Proto::Udp) => &[
                "tp_sock_send_length",
                "tp_sock_recv_length",
                "note_sendmsg4_peer",
                "note_sendmsg6_peer",
                "note_recvmsg4_peer",
                "note_recvmsg6_peer",
            ],
        }
    }

    /// Every program that counts `proto`: its hooks, and the iterators that read the table
    /// (and, for TCP, claim the connections that predate tcptop).
    pub fn programs(self, proto: Proto) -> impl Iterator<Item = &'static str> {
        let table = self.table();
        let iterators = match proto {
            Proto::Tcp => vec![table.dump_program(), table.adopt_program()],
            Proto::Udp => vec![UDP_DUMP_PROGRAM],
        };
        self.hooks(proto).iter().copied().chain(iterators)
    }

    /// The per-thread maps that carry a call's arguments or peer from one of this
    /// strategy's hooks to another.
    fn stashes(self) -> &'static [&'static str] {
        match self {
            Strategy::Fentry => &[],
            Strategy::Kprobe => &["sendmsg_sockets", "udp_calls"],
            Strategy::Tracepoint => &["udp_peers"],
        }
    }

    pub fn table(self) -> Table {
        match self {
            Strategy::Fentry | Strategy::Tracepoint => Table::SocketStorage,
            Strategy::Kprobe => Table::Hash,
        }
    }

    /// Whether the program named `name` is loaded to count `protos`.
    pub fn loads(self, name: &str, protos: &[Proto]) -> bool {
        protos.iter().any(|&proto| self.programs(proto).any(|program| program == name))
    }

    /// Whether the map named `map` is needed: shared maps always, a strategy's own maps
    /// (its table, its stashes) only for that strategy.
    pub fn creates(self, map: &str) -> bool {
        let owns = |s: Strategy| s.table().maps().contains(&map) || s.stashes().contains(&map);
        owns(self) || !Strategy::AUTO_ORDER.into_iter().any(owns)
    }
}

/// The iterator program that dumps (and expires) the UDP flows, in every strategy.
pub const UDP_DUMP_PROGRAM: &str = "dump_udp_flows";

/// The protocols a run counts: both, unless `--tcp` or `--udp` chose one.
pub fn counted(proto: Option<Proto>) -> &'static [Proto] {
    match proto {
        None => &[Proto::Tcp, Proto::Udp],
        Some(Proto::Tcp) => &[Proto::Tcp],
        Some(Proto::Udp) => &[Proto::Udp],
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
            let hooks = strategy.hooks(Proto::Tcp).join(" ");
            for needles in [
                ["sendmsg", "send_length"],
                ["cleanup_rbuf", "recv_length"],
                ["inet_sock_set_state"; 2],
                ["tcp_destroy_sock"; 2],
            ] {
                assert!(needles.iter().any(|n| hooks.contains(n)), "{strategy}: {hooks}");
            }
            assert!(strategy.loads(strategy.table().dump_program(), &[Proto::Tcp]));
            assert!(strategy.loads(strategy.table().adopt_program(), &[Proto::Tcp]));
        }
    }

    #[test]
    fn every_strategy_hooks_udp_sends_and_receives_of_both_families() {
        for strategy in Strategy::AUTO_ORDER {
            let hooks = strategy.hooks(Proto::Udp).join(" ");
            let needles: &[&str] = match strategy {
                Strategy::Tracepoint => {
                    &["send_length", "recv_length", "sendmsg4", "sendmsg6", "recvmsg4", "recvmsg6"]
                }
                _ => &["udp_sendmsg", "udpv6_sendmsg", "udp_recvmsg", "udpv6_recvmsg"],
            };
            for needle in needles {
                assert!(hooks.contains(needle), "{strategy}: {hooks}");
            }
            assert!(strategy.loads(UDP_DUMP_PROGRAM, &[Proto::Udp]));
        }
    }

    #[test]
    fn one_protocol_loads_only_its_programs() {
        let tcp_only = counted(Some(Proto::Tcp));
        assert!(!Strategy::Fentry.loads("fexit_udp_sendmsg", tcp_only));
        assert!(!Strategy::Kprobe.loads(UDP_DUMP_PROGRAM, tcp_only));
        let udp_only = counted(Some(Proto::Udp));
        assert!(!Strategy::Tracepoint.loads("tp_inet_sock_set_state", udp_only));
        assert!(!Strategy::Tracepoint.loads("adopt_tcp_socks", udp_only));
        assert!(Strategy::Tracepoint.loads("tp_sock_send_length", udp_only));
        assert!(Strategy::Fentry.loads("fexit_udp_recvmsg", counted(None)));
    }

    #[test]
    fn each_strategy_creates_only_its_own_table_and_stashes() {
        assert!(Strategy::Fentry.creates("sk_conns") && !Strategy::Fentry.creates("hash_conns"));
        assert!(Strategy::Kprobe.creates("sendmsg_sockets") && !Strategy::Kprobe.creates("sk_conns"));
        assert!(Strategy::Kprobe.creates("udp_calls") && !Strategy::Kprobe.creates("udp_peers"));
        assert!(Strategy::Tracepoint.creates("udp_peers") && !Strategy::Tracepoint.creates("udp_calls"));
        assert!(!Strategy::Fentry.creates("udp_peers") && !Strategy::Fentry.creates("sendmsg_sockets"));
        assert!(Strategy::Tracepoint.creates("events") && Strategy::Fentry.creates("udp_flows"));
    }
}
