//! The plan: for each part of the kernel side (counting hooks, lifecycle hooks, where TCP state
//! lives, how the table is read, the UDP hooks and table, the atomics), the best way this kernel
//! allows. Each part is chosen on its own: a refused program refuses its feature, and only the
//! parts that need that feature move to their next way.

use std::collections::BTreeMap;
use std::fmt;

use crate::collector::Proto;
pub use crate::strategy::Strategy;

/// A kernel feature that a part of the plan may need; a kernel allows or refuses each on its
/// own. The names are those of `TCPTOP_DISABLE`, the test switch that refuses features.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Feature {
    /// fentry/fexit programs (BPF trampolines).
    Fentry,
    Kprobe,
    /// tp_btf on sock:sock_send_length and sock:sock_recv_length.
    Tracepoint,
    /// tp_btf on the lifecycle tracepoints (inet_sock_set_state, tcp_destroy_sock).
    TpBtf,
    /// Socket-local storage from tracing programs (Linux 5.11+).
    SkStorage,
    /// Map iterators (iter/bpf_sk_storage_map, iter/bpf_map_elem).
    MapIter,
    /// iter/tcp, run in each network namespace.
    TcpIter,
    /// bpf_get_func_ret, which fexit on the UDP receive functions needs (Linux 5.17+).
    FuncRet,
    /// cgroup sock_addr programs, for the peers of unconnected UDP sockets.
    CgroupSockAddr,
    /// The programs on tcp:tcp_send_reset and tcp:tcp_receive_reset (resets are unknown
    /// without them), and on tcp:tcp_retransmit_skb (an idle connection's retransmits then
    /// show at the next walk).
    Resets,
    /// The send and read hooks sample the socket at each call: plain loads of tcp_sock through
    /// the bpf_rdonly_cast kfunc (Linux 6.2+), on a kernel whose every send path the hooks see
    /// (no tcp_sendpage, which Linux 6.5 removed). Without it every connection is sampled at
    /// each read of the table.
    HookSample,
}

impl Feature {
    pub const ALL: [Feature; 11] = [
        Feature::Fentry,
        Feature::Kprobe,
        Feature::Tracepoint,
        Feature::TpBtf,
        Feature::SkStorage,
        Feature::MapIter,
        Feature::TcpIter,
        Feature::FuncRet,
        Feature::CgroupSockAddr,
        Feature::Resets,
        Feature::HookSample,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Feature::Fentry => "fentry",
            Feature::Kprobe => "kprobe",
            Feature::Tracepoint => "tracepoint",
            Feature::TpBtf => "tp-btf",
            Feature::SkStorage => "sk-storage",
            Feature::MapIter => "map-iter",
            Feature::TcpIter => "tcp-iter",
            Feature::FuncRet => "func-ret",
            Feature::CgroupSockAddr => "cgroup-sock-addr",
            Feature::Resets => "resets",
            Feature::HookSample => "hook-sample",
        }
    }

    /// The features a `TCPTOP_DISABLE` list names ("map-iter,func-ret").
    pub fn parse_list(list: &str) -> Result<Vec<Feature>, String> {
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(|name| {
                Feature::ALL.into_iter().find(|f| f.name() == name).ok_or_else(|| {
                    let known: Vec<&str> = Feature::ALL.iter().map(|f| f.name()).collect();
                    format!("unknown feature `{name}` (known: {})", known.join(", "))
                })
            })
            .collect()
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The kernel feature a set of hooks is made of.
fn feature_of(hooks: Strategy) -> Feature {
    match hooks {
        Strategy::Fentry => Feature::Fentry,
        Strategy::Kprobe => Feature::Kprobe,
        Strategy::Tracepoint => Feature::Tracepoint,
    }
}

/// What the kernel refused so far, and why, in its own words.
pub type Refusals = BTreeMap<Feature, String>;

/// Where TCP state lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    /// Socket-local storage (`sk_conns`): freed with the socket, no size limit.
    SocketStorage,
    /// A preallocated hash keyed by socket address (`hash_conns`).
    Hash,
}

/// Which programs see state changes and destruction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    TpBtf,
    /// raw_tp on the same tracepoints; these programs may not use socket storage.
    RawTp,
}

/// How the kernel table is read each interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableRead {
    /// A map iterator over the table: one walk for all namespaces.
    MapIter,
    /// iter/tcp in each network namespace, looking each socket up.
    TcpIter,
}

/// How UDP flows are read each interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpRead {
    /// A map iterator, which also expires idle flows in the kernel.
    MapIter,
    /// Batch lookups from user space, which also deletes idle flows.
    Lookup,
}

/// One way of running the kernel side, part by part.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Plan {
    /// The TCP counting hooks.
    pub hooks: Strategy,
    pub lifecycle: Lifecycle,
    pub storage: Storage,
    pub table: TableRead,
    /// The UDP counting hooks; `None` when no set of them runs here (UDP is not counted).
    pub udp: Option<Strategy>,
    pub udp_table: UdpRead,
    /// Whether iter/tcp claims the connections older than tcptop at start (else they show
    /// from their first send or read).
    pub adopt: bool,
    /// Whether resets are counted (on the lifecycle hooks' kind of tracepoint program).
    pub resets: bool,
    /// Whether the TCP send and read hooks sample at each call, so that a read of the table
    /// looks only at the connections that changed; else every one is sampled (walked) at
    /// each read.
    pub hooks_sample: bool,
}

impl Plan {
    /// The best plan with the first of `hooks` that is not refused, or why there is none.
    pub fn best(hooks: &[Strategy], refused: &Refusals) -> Result<Plan, String> {
        let allowed = |f: Feature| !refused.contains_key(&f);
        let Some(&tcp) = hooks.iter().find(|h| allowed(feature_of(**h))) else {
            let why: Vec<String> =
                hooks.iter().map(|h| format!("{h}: {}", refused[&feature_of(*h)])).collect();
            return Err(why.join("; "));
        };
        let lifecycle = if allowed(Feature::TpBtf) { Lifecycle::TpBtf } else { Lifecycle::RawTp };
        let storage =
            if tcp == Strategy::Kprobe || lifecycle == Lifecycle::RawTp || !allowed(Feature::SkStorage) {
                Storage::Hash
            } else {
                Storage::SocketStorage
            };
        let table = match (allowed(Feature::MapIter), allowed(Feature::TcpIter)) {
            (true, _) => TableRead::MapIter,
            (false, true) => TableRead::TcpIter,
            (false, false) => {
                return Err(format!(
                    "no way to read the connection table (map-iter: {}; tcp-iter: {})",
                    refused[&Feature::MapIter],
                    refused[&Feature::TcpIter]
                ))
            }
        };
        let udp_allowed = |h: &Strategy| {
            allowed(feature_of(*h))
                && match h {
                    Strategy::Fentry => allowed(Feature::FuncRet),
                    Strategy::Kprobe => true,
                    Strategy::Tracepoint => allowed(Feature::CgroupSockAddr),
                }
        };
        let udp = std::iter::once(tcp).chain(Strategy::AUTO_ORDER).find(udp_allowed);
        Ok(Plan {
            hooks: tcp,
            lifecycle,
            storage,
            table,
            udp,
            udp_table: if allowed(Feature::MapIter) { UdpRead::MapIter } else { UdpRead::Lookup },
            adopt: allowed(Feature::TcpIter),
            resets: allowed(Feature::Resets),
            hooks_sample: tcp != Strategy::Kprobe && allowed(Feature::HookSample),
        })
    }

    /// Every program this plan loads to count `protos`, by its function name in tcptop.bpf.c.
    pub fn programs(&self, protos: &[Proto]) -> Vec<&'static str> {
        let mut programs = Vec::new();
        if protos.contains(&Proto::Tcp) {
            programs.extend(tcp_hooks(self.hooks));
            programs.extend(match self.lifecycle {
                Lifecycle::TpBtf => ["tp_inet_sock_set_state", "tp_tcp_destroy_sock"],
                Lifecycle::RawTp => ["raw_tp_inet_sock_set_state", "raw_tp_tcp_destroy_sock"],
            });
            programs.push(match (self.table, self.storage) {
                (TableRead::MapIter, Storage::SocketStorage) => "dump_sk_conns",
                (TableRead::MapIter, Storage::Hash) => "dump_hash_conns",
                (TableRead::TcpIter, _) => "dump_tcp_socks",
            });
            if self.adopt {
                programs.push("adopt_tcp_socks");
            }
            if self.resets {
                programs.extend(match self.lifecycle {
                    Lifecycle::TpBtf => {
                        ["tp_tcp_send_reset", "tp_tcp_receive_reset", "tp_tcp_retransmit_skb"]
                    }
                    Lifecycle::RawTp => {
                        ["raw_tp_tcp_send_reset", "raw_tp_tcp_receive_reset", "raw_tp_tcp_retransmit_skb"]
                    }
                });
            }
        }
        if protos.contains(&Proto::Udp) {
            programs.extend(self.udp.map_or(&[][..], udp_hooks));
            if self.udp_table == UdpRead::MapIter {
                programs.push("dump_udp_flows");
            }
        }
        programs.sort_unstable();
        programs.dedup();
        programs
    }

    /// The programs of `programs(protos)` that are attached as hooks (the rest are iterators).
    pub fn hooks(&self, protos: &[Proto]) -> Vec<&'static str> {
        self.programs(protos)
            .into_iter()
            .filter(|p| !p.starts_with("dump_") && !p.starts_with("adopt_"))
            .collect()
    }

    /// Whether the sock_*_length tracepoints count TCP: they may be loaded for UDP alone.
    pub fn tracepoints_count_tcp(&self) -> bool {
        self.hooks == Strategy::Tracepoint
    }

    /// Whether the sock_*_length tracepoints count UDP: they may be loaded for TCP alone.
    pub fn tracepoints_count_udp(&self) -> bool {
        self.udp == Some(Strategy::Tracepoint)
    }

    /// Whether the map named `map` is needed: a table only where TCP state lives, the
    /// per-thread stashes only for the hooks that use them, shared maps always.
    pub fn creates(&self, map: &str) -> bool {
        let kprobe_udp = self.udp == Some(Strategy::Kprobe);
        match map {
            "sk_conns" => self.storage == Storage::SocketStorage,
            "hash_conns" => self.storage == Storage::Hash,
            "sendmsg_sockets" => self.hooks == Strategy::Kprobe,
            "udp_calls" => kprobe_udp,
            "udp_peers" => self.udp == Some(Strategy::Tracepoint),
            _ => true,
        }
    }

    /// The feature that program `program` stands for when the kernel refuses it: the one
    /// that the plan's next try must do without. `denied` is a refusal of the program's kind
    /// itself (EPERM), as opposed to the verifier's refusal of something it does.
    pub fn blame(&self, program: &str, denied: bool) -> Option<Feature> {
        // Whatever the kernel has against them, only the reset counts do without.
        if program.ends_with("_reset") || program.ends_with("_retransmit_skb") {
            return Some(Feature::Resets);
        }
        let uses_storage = !program.contains("udp") && !program.starts_with("note_");
        if !denied && self.storage == Storage::SocketStorage && uses_storage && program != "dump_sk_conns" {
            return Some(Feature::SkStorage);
        }
        Some(match program {
            "fexit_udp_recvmsg" | "fexit_udpv6_recvmsg" if !denied => Feature::FuncRet,
            "tp_sock_send_length" | "tp_sock_recv_length" => Feature::Tracepoint,
            "tp_inet_sock_set_state" | "tp_tcp_destroy_sock" => Feature::TpBtf,
            "dump_sk_conns" | "dump_hash_conns" | "dump_udp_flows" => Feature::MapIter,
            "dump_tcp_socks" | "adopt_tcp_socks" => Feature::TcpIter,
            p if p.starts_with("note_") => Feature::CgroupSockAddr,
            p if p.starts_with("fentry_") || p.starts_with("fexit_") => Feature::Fentry,
            p if p.starts_with("kprobe_") || p.starts_with("kretprobe_") => Feature::Kprobe,
            _ => return None,
        })
    }
}

fn tcp_hooks(hooks: Strategy) -> &'static [&'static str] {
    match hooks {
        Strategy::Fentry => &["fexit_tcp_sendmsg", "fentry_tcp_cleanup_rbuf"],
        Strategy::Kprobe => &["kprobe_tcp_sendmsg", "kretprobe_tcp_sendmsg", "kprobe_tcp_cleanup_rbuf"],
        Strategy::Tracepoint => &["tp_sock_send_length", "tp_sock_recv_length"],
    }
}

fn udp_hooks(hooks: Strategy) -> &'static [&'static str] {
    match hooks {
        Strategy::Fentry => {
            &["fexit_udp_sendmsg", "fexit_udpv6_sendmsg", "fexit_udp_recvmsg", "fexit_udpv6_recvmsg"]
        }
        Strategy::Kprobe => &[
            "kprobe_udp_sendmsg",
            "kretprobe_udp_sendmsg",
            "kprobe_udpv6_sendmsg",
            "kretprobe_udpv6_sendmsg",
            "kprobe_udp_recvmsg",
            "kretprobe_udp_recvmsg",
            "kprobe_udpv6_recvmsg",
            "kretprobe_udpv6_recvmsg",
        ],
        Strategy::Tracepoint => &[
            "tp_sock_send_length",
            "tp_sock_recv_length",
            "note_sendmsg4_peer",
            "note_sendmsg6_peer",
            "note_recvmsg4_peer",
            "note_recvmsg6_peer",
        ],
    }
}

/// One token for summary lines and records: the counting hooks, then every part that is not
/// the best way ("tracepoint/tcp-iter/udp-lookup").
impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.hooks)?;
        let degraded = [
            (self.lifecycle == Lifecycle::RawTp, "raw-tp"),
            (self.storage == Storage::Hash, "hash"),
            (self.table == TableRead::TcpIter, "tcp-iter"),
            (self.udp.is_none(), "no-udp"),
            (self.udp.is_some_and(|udp| udp != self.hooks), "udp-other"),
            (self.udp_table == UdpRead::Lookup, "udp-lookup"),
            (!self.adopt, "no-adopt"),
            (!self.resets, "no-resets"),
            (!self.hooks_sample, "walked"),
        ];
        for (_, name) in degraded.iter().filter(|(on, _)| *on) {
            write!(f, "/{name}")?;
        }
        Ok(())
    }
}

impl Plan {
    /// Each part, one per line, with why the better ways were refused: what `-v` prints.
    pub fn describe(&self, refused: &Refusals) -> Vec<String> {
        let why = |features: &[Feature]| -> String {
            let reasons: Vec<String> = features
                .iter()
                .filter_map(|f| refused.get(f).map(|reason| format!("{f} refused: {reason}")))
                .collect();
            if reasons.is_empty() {
                String::new()
            } else {
                format!(" ({})", reasons.join("; "))
            }
        };
        let better_hooks: Vec<Feature> =
            Strategy::AUTO_ORDER.iter().take_while(|&&h| h != self.hooks).map(|h| feature_of(*h)).collect();
        let udp = match self.udp {
            Some(udp) => udp.name(),
            None => "not counted",
        };
        vec![
            format!("counting hooks: {}{}", self.hooks, why(&better_hooks)),
            format!(
                "lifecycle hooks: {}{}",
                match self.lifecycle {
                    Lifecycle::TpBtf => "tp_btf",
                    Lifecycle::RawTp => "raw_tp",
                },
                why(&[Feature::TpBtf])
            ),
            format!(
                "connection state: {}{}",
                match self.storage {
                    Storage::SocketStorage => "socket storage",
                    Storage::Hash => "hash by socket address",
                },
                if self.hooks == Strategy::Kprobe { String::new() } else { why(&[Feature::SkStorage]) }
            ),
            format!(
                "table read: {}{}",
                match self.table {
                    TableRead::MapIter => "map iterator",
                    TableRead::TcpIter => "iter/tcp in each network namespace",
                },
                why(&[Feature::MapIter])
            ),
            format!(
                "sampling: {}{}",
                if self.hooks_sample {
                    "at each send and read; a read of the table lists what changed"
                } else {
                    "every connection at each read of the table"
                },
                why(&[Feature::HookSample])
            ),
            format!(
                "UDP hooks: {udp}{}",
                why(&[
                    Feature::Fentry,
                    Feature::FuncRet,
                    Feature::Kprobe,
                    Feature::Tracepoint,
                    Feature::CgroupSockAddr
                ])
            ),
            format!(
                "UDP table read: {}{}",
                match self.udp_table {
                    UdpRead::MapIter => "map iterator",
                    UdpRead::Lookup => "batch lookups from user space",
                },
                why(&[Feature::MapIter])
            ),
            format!(
                "connections older than tcptop: {}{}",
                if self.adopt { "iter/tcp at start" } else { "shown from their first send or read" },
                why(&[Feature::TcpIter])
            ),
            format!("resets: {}{}", if self.resets { "counted" } else { "unknown" }, why(&[Feature::Resets])),
        ]
    }
}

/// The protocols a run counts: both, unless `--tcp` or `--udp` chose one.
pub fn counted(proto: Option<Proto>) -> &'static [Proto] {
    match proto {
        None => &[Proto::Tcp, Proto::Udp],
        Some(Proto::Tcp) => &[Proto::Tcp],
        Some(Proto::Udp) => &[Proto::Udp],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusing(features: &[Feature]) -> Refusals {
        features.iter().map(|&f| (f, "refused".to_string())).collect()
    }

    #[test]
    fn with_nothing_refused_every_part_takes_its_best_way() {
        let plan = Plan::best(&Strategy::AUTO_ORDER, &Refusals::new()).unwrap();
        assert_eq!(plan.to_string(), "fentry");
        assert_eq!(
            (plan.storage, plan.table, plan.udp),
            (Storage::SocketStorage, TableRead::MapIter, Some(Strategy::Fentry))
        );
    }

    #[test]
    fn this_sandbox_kernel_counts_with_tracepoints_and_reads_the_table_with_iter_tcp() {
        let refused = refusing(&[Feature::Fentry, Feature::Kprobe, Feature::MapIter]);
        let plan = Plan::best(&Strategy::AUTO_ORDER, &refused).unwrap();
        assert_eq!(plan.to_string(), "tracepoint/tcp-iter/udp-lookup");
        let programs = plan.programs(counted(None));
        assert!(
            programs.contains(&"dump_tcp_socks") && !programs.contains(&"dump_udp_flows"),
            "{programs:?}"
        );
        assert!(plan.creates("sk_conns") && !plan.creates("hash_conns") && plan.creates("udp_peers"));
    }

    #[test]
    fn a_kernel_before_5_11_keeps_tcp_state_in_the_hash() {
        let refused = refusing(&[Feature::SkStorage, Feature::FuncRet]);
        let plan = Plan::best(&Strategy::AUTO_ORDER, &refused).unwrap();
        assert_eq!(plan.to_string(), "fentry/hash/udp-other");
        assert_eq!(plan.udp, Some(Strategy::Kprobe));
        assert!(plan.programs(counted(None)).contains(&"dump_hash_conns"));
    }

    #[test]
    fn kprobes_keep_state_in_the_hash_and_tracepoints_count_udp_alone_for_other_hooks() {
        let plan = Plan::best(&[Strategy::Kprobe], &Refusals::new()).unwrap();
        assert_eq!((plan.storage, plan.udp), (Storage::Hash, Some(Strategy::Kprobe)));
        let plan =
            Plan::best(&Strategy::AUTO_ORDER, &refusing(&[Feature::FuncRet, Feature::Kprobe])).unwrap();
        assert_eq!(
            (plan.hooks, plan.udp, plan.tracepoints_count_tcp()),
            (Strategy::Fentry, Some(Strategy::Tracepoint), false)
        );
    }

    #[test]
    fn forced_hooks_that_are_refused_say_why() {
        let why = Plan::best(&[Strategy::Fentry], &refusing(&[Feature::Fentry])).unwrap_err();
        assert_eq!(why, "fentry: refused");
    }

    #[test]
    fn a_refused_program_blames_its_own_part() {
        let plan = Plan::best(&Strategy::AUTO_ORDER, &Refusals::new()).unwrap();
        assert_eq!(plan.blame("fexit_tcp_sendmsg", true), Some(Feature::Fentry));
        assert_eq!(plan.blame("fexit_tcp_sendmsg", false), Some(Feature::SkStorage));
        assert_eq!(plan.blame("fexit_udp_recvmsg", false), Some(Feature::FuncRet));
        assert_eq!(plan.blame("dump_sk_conns", true), Some(Feature::MapIter));
        assert_eq!(plan.blame("dump_udp_flows", false), Some(Feature::MapIter));
        assert_eq!(plan.blame("note_sendmsg4_peer", true), Some(Feature::CgroupSockAddr));
        assert_eq!(plan.blame("tp_tcp_receive_reset", false), Some(Feature::Resets));
    }

    #[test]
    fn refused_reset_hooks_leave_every_other_part_as_it_was() {
        let plan = Plan::best(&Strategy::AUTO_ORDER, &refusing(&[Feature::Resets])).unwrap();
        assert_eq!(plan.to_string(), "fentry/no-resets");
        assert!(!plan.programs(counted(None)).iter().any(|p| p.contains("reset")));
        let raw = Plan::best(&Strategy::AUTO_ORDER, &refusing(&[Feature::TpBtf])).unwrap();
        assert!(raw.hooks(counted(None)).contains(&"raw_tp_tcp_receive_reset"));
    }

    #[test]
    fn every_plan_has_send_read_state_destroy_and_table_programs() {
        for hooks in Strategy::AUTO_ORDER {
            let plan = Plan::best(&[hooks], &Refusals::new()).unwrap();
            let programs = plan.programs(counted(Some(Proto::Tcp))).join(" ");
            for needle in ["send", "r", "inet_sock_set_state", "tcp_destroy_sock", "dump_", "adopt_"] {
                assert!(programs.contains(needle), "{hooks}: {programs}");
            }
            assert!(!programs.contains("udp"), "{programs}");
        }
    }

    #[test]
    fn disable_lists_name_features() {
        assert_eq!(Feature::parse_list("map-iter, func-ret,"), Ok(vec![Feature::MapIter, Feature::FuncRet]));
        assert!(Feature::parse_list("maps").unwrap_err().contains("unknown feature `maps`"));
    }
}
