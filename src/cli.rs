//! Command-line flags.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};

use crate::collector::{Family, Filters};
use crate::exporter::{Label, DEFAULT_MAX_SERIES};
use crate::model::{Proto, SortKey, DEFAULT_UDP_IDLE};
use crate::strategy::{parse_probe, ProbeChoice};

/// top for network connections: which process talks to which peer, how many bytes each
/// connection sends and receives, its rate and its state. Counted in the kernel by eBPF on
/// Linux, from captured packets elsewhere.
#[derive(Clone, Debug, Parser)]
#[command(
    name = "tcptop",
    version,
    after_help = "Examples:\n  sudo tcptop\n  sudo tcptop -b 1 5     five one-second intervals as text\n  sudo tcptop --port 443 --sort rx\n  sudo tcptop --log out.csv     the screen, and every interval in a CSV file\n  sudo tcptop -b --format json | jq\n  sudo tcptop --events     opened, state changes and closes as JSON lines"
)]
pub struct Args {
    /// Seconds between updates, as in bcc's tcptop (`tcptop 2 10`).
    #[arg(value_name = "INTERVAL", value_parser = parse_interval, conflicts_with = "interval")]
    pub interval_arg: Option<Duration>,

    /// Number of updates, then exit (default: run until stopped).
    #[arg(value_name = "COUNT", value_parser = clap::value_parser!(u64).range(1..))]
    pub count: Option<u64>,

    /// Seconds between updates [default: 1].
    #[arg(short, long, value_name = "SECS", value_parser = parse_interval)]
    pub interval: Option<Duration>,

    /// Print text tables instead of the live screen (also when stdout is not a terminal).
    #[arg(short, long)]
    pub batch: bool,

    /// What batch mode prints: text tables, JSON lines or CSV, one record per connection
    /// per interval [default: text]. Implies --batch.
    #[arg(long, value_enum)]
    pub format: Option<Format>,

    /// Also append every interval to this CSV file, while the screen or batch mode runs;
    /// with no terminal and no --batch or --format, only log.
    #[arg(long, value_name = "FILE")]
    pub log: Option<PathBuf>,

    /// Print connection lifecycle events (opened, state changes, closed with final totals)
    /// as JSON lines as they happen, instead of intervals.
    #[arg(long, conflicts_with_all = ["batch", "format", "log", "count"])]
    pub events: bool,

    /// Only connections of this process id.
    #[arg(short, long, value_parser = clap::value_parser!(u32).range(1..))]
    pub pid: Option<u32>,

    /// Only connections with this local or remote port.
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,

    /// Only connections of processes in this cgroup (a path below the cgroup v2 root).
    #[arg(long, value_name = "PATH", value_parser = parse_cgroup)]
    pub cgroup: Option<String>,

    /// Only IPv4 connections.
    #[arg(short = '4', long = "ipv4", conflicts_with = "ipv6")]
    pub ipv4: bool,

    /// Only IPv6 connections.
    #[arg(short = '6', long = "ipv6")]
    pub ipv6: bool,

    /// Only TCP connections (both protocols with --udp too, or with neither).
    #[arg(long)]
    pub tcp: bool,

    /// Only UDP flows, a flow being one socket and one peer (both protocols with --tcp too,
    /// or with neither).
    #[arg(long)]
    pub udp: bool,

    /// Seconds without a datagram after which a UDP flow is over and leaves the table
    /// [default: 10].
    #[arg(long, value_name = "SECS", value_parser = parse_interval)]
    pub udp_idle: Option<Duration>,

    /// Sort by this column (byte columns: largest first).
    #[arg(short, long, value_enum, default_value_t)]
    pub sort: Sort,

    /// Reverse the sort order.
    #[arg(short, long)]
    pub reverse: bool,

    /// Also list connections with no traffic in the interval (the live screen always does).
    #[arg(short, long)]
    pub all: bool,

    /// Show exact byte counts on the live screen instead of KiB, MiB, GiB.
    #[arg(long)]
    pub bytes: bool,

    /// Show addresses and ports as numbers on the live screen: no reverse DNS, no service
    /// names from /etc/services (`n` toggles them).
    #[arg(short, long)]
    pub numeric: bool,

    /// Show both ends of a connection within the host (a loopback one, say) as one row on the
    /// live screen, with both processes (`L` toggles it).
    #[arg(long)]
    pub fold_loopback: bool,

    /// How to hook the kernel: auto (the best this kernel allows: fentry, then kprobe, then
    /// tracepoint), fentry, kprobe or tracepoint.
    #[arg(long, value_name = "HOOKS", default_value = "auto", value_parser = parse_probe)]
    pub probe: ProbeChoice,

    /// Where the numbers come from: eBPF in the kernel (Linux), the kernel's TCP counters
    /// (sockdiag, Linux), or captured packets. auto uses eBPF, then sockdiag, then capture;
    /// on macOS it is capture.
    #[arg(long, value_enum, default_value_t)]
    pub backend: Backend,

    /// Capture packets on this interface only, rather than all of them (implies the
    /// capture backend).
    #[arg(long, value_name = "IFACE")]
    pub interface: Option<String>,

    /// Serve Prometheus metrics at http://ADDR/metrics (OpenMetrics or the Prometheus text
    /// format); a port alone listens on 127.0.0.1. With no terminal and no --batch or
    /// --format, only serve, until stopped.
    #[arg(long, value_name = "ADDR")]
    pub prometheus: Option<String>,

    /// The labels of the per-connection series, any of comm, container, remote_host,
    /// remote_port, local_port, proto, family and netns.
    #[arg(long, value_name = "LABELS", value_enum, value_delimiter = ',', default_values_t = Label::DEFAULT, requires = "prometheus")]
    pub prometheus_labels: Vec<Label>,

    /// Series beyond which the smallest fold into one whose labels are all "other".
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_SERIES, requires = "prometheus", value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub prometheus_max_series: usize,

    /// Say which probe strategy was chosen and why others failed.
    #[arg(short, long)]
    pub verbose: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Text,
    /// One JSON object per line.
    Json,
    Csv,
}

/// `--sort`: the model's sort keys under their flag names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Sort {
    /// Bytes read + written in the last interval.
    #[default]
    Total,
    Rx,
    Tx,
    RxTotal,
    TxTotal,
    Pid,
    Comm,
    Local,
    Remote,
    State,
    /// Smoothed RTT, largest first.
    Rtt,
    /// Retransmits in the last interval.
    Retrans,
}

impl From<Sort> for SortKey {
    fn from(sort: Sort) -> SortKey {
        match sort {
            Sort::Total => SortKey::Total,
            Sort::Rx => SortKey::Rx,
            Sort::Tx => SortKey::Tx,
            Sort::RxTotal => SortKey::RxTotal,
            Sort::TxTotal => SortKey::TxTotal,
            Sort::Pid => SortKey::Pid,
            Sort::Comm => SortKey::Comm,
            Sort::Local => SortKey::Local,
            Sort::Remote => SortKey::Remote,
            Sort::State => SortKey::State,
            Sort::Rtt => SortKey::Rtt,
            Sort::Retrans => SortKey::Retrans,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    #[default]
    Auto,
    Ebpf,
    Sockdiag,
    Capture,
}

impl Args {
    pub fn interval(&self) -> Duration {
        self.interval_arg.or(self.interval).unwrap_or(Duration::from_secs(1))
    }

    pub fn filters(&self) -> Filters {
        let family = match (self.ipv4, self.ipv6) {
            (true, _) => Some(Family::V4),
            (_, true) => Some(Family::V6),
            _ => None,
        };
        let proto = match (self.tcp, self.udp) {
            (true, false) => Some(Proto::Tcp),
            (false, true) => Some(Proto::Udp),
            _ => None,
        };
        Filters {
            pid: self.pid,
            port: self.port,
            family,
            cgroup: self.cgroup.clone(),
            proto,
            udp_idle: self.udp_idle(),
        }
    }

    pub fn udp_idle(&self) -> Duration {
        self.udp_idle.unwrap_or(DEFAULT_UDP_IDLE)
    }
}

fn parse_interval(text: &str) -> Result<Duration, String> {
    match text.parse::<f64>() {
        Ok(secs) if secs.is_finite() && (0.01..=86_400.0).contains(&secs) => {
            Ok(Duration::from_secs_f64(secs))
        }
        _ => Err(format!("`{text}` is not a number of seconds between 0.01 and 86400")),
    }
}

/// A cgroup path stays below the cgroup v2 root: `..` could name any directory.
fn parse_cgroup(text: &str) -> Result<String, String> {
    if text.split('/').any(|name| name == "..") {
        return Err(format!("`{text}` climbs out with `..`: name a cgroup below the cgroup v2 root"));
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Args, clap::Error> {
        Args::try_parse_from(std::iter::once("tcptop").chain(args.iter().copied()))
    }

    #[test]
    fn positional_interval_and_count_as_in_bcc() {
        let args = parse(&["-b", "2", "5"]).unwrap();
        assert_eq!((args.interval(), args.count, args.batch), (Duration::from_secs(2), Some(5), true));
        assert_eq!(parse(&[]).unwrap().interval(), Duration::from_secs(1));
        assert_eq!(parse(&["-i", "0.5"]).unwrap().interval(), Duration::from_millis(500));
    }

    #[test]
    fn bad_values_are_rejected() {
        for bad in [
            &["0"][..],
            &["-i", "abc"],
            &["1", "0"],
            &["-4", "-6"],
            &["--probe", "uprobe"],
            &["--port", "70000"],
            &["2", "-i", "3"],
            &["--format", "xml"],
            &["--events", "--log", "out.csv"],
            &["--events", "-b"],
            &["--backend", "dtrace"],
            &["-p", "0"],
            &["--port", "0"],
            &["--cgroup", "../../../../etc"],
            &["--cgroup", "/system.slice/../.."],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn filters_follow_flags() {
        let args = parse(&["-6", "--pid", "42", "--port", "443"]).unwrap();
        assert_eq!(
            args.filters(),
            Filters { pid: Some(42), port: Some(443), family: Some(Family::V6), ..Filters::default() }
        );
    }

    #[test]
    fn protocol_flags_choose_one_or_both() {
        let proto = |args: &[&str]| parse(args).unwrap().filters().proto;
        assert_eq!(proto(&["--tcp"]), Some(Proto::Tcp));
        assert_eq!(proto(&["--udp"]), Some(Proto::Udp));
        assert_eq!(proto(&["--tcp", "--udp"]), None);
        assert_eq!(proto(&[]), None);
    }

    #[test]
    fn udp_idle_defaults_to_ten_seconds() {
        assert_eq!(parse(&[]).unwrap().filters().udp_idle, Duration::from_secs(10));
        assert_eq!(parse(&["--udp-idle", "2.5"]).unwrap().filters().udp_idle, Duration::from_millis(2500));
        assert!(parse(&["--udp-idle", "0"]).is_err());
    }

    #[test]
    fn every_sort_key_has_one_flag_value() {
        let keys: Vec<SortKey> = Sort::value_variants().iter().map(|&sort| sort.into()).collect();
        let distinct: std::collections::HashSet<SortKey> = keys.iter().copied().collect();
        assert_eq!((keys.len(), distinct.len()), (SortKey::ALL.len(), SortKey::ALL.len()));
        assert!(SortKey::ALL.iter().all(|key| distinct.contains(key)));
        assert_eq!(SortKey::from(parse(&["--sort", "rx-total"]).unwrap().sort), SortKey::RxTotal);
    }

    #[test]
    fn backend_and_interface() {
        let args = parse(&["--backend", "capture", "--interface", "lo"]).unwrap();
        assert_eq!((args.backend, args.interface.as_deref()), (Backend::Capture, Some("lo")));
        assert_eq!(parse(&[]).unwrap().backend, Backend::Auto);
    }
}
