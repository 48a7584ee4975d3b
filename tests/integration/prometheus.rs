//! `--prometheus` of the real binary: promtool accepts a scrape taken during traffic, a real
//! Prometheus server (Debian's `prometheus`) stores the exact bytes and resets of known
//! connections by label and evaluates every query of the Grafana dashboard, and scrapers
//! that never read do not delay intervals. Tests that load BPF need root.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use crate::health::Netns;
use crate::helpers::{
    as_traffic, start_tcptop, stop_tcptop, tcptop_command, Ip, Pair, Running, TRAFFIC_COMM,
};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

/// How long a test waits for a scrape or a query to show what it expects.
const PATIENCE: Duration = Duration::from_secs(20);

/// Whether Debian's `prometheus` package is installed; where CI requires the BPF tests
/// (`TCPTOP_REQUIRE_BPF` or `CI`), its absence is a failure (`scripts/setup` installs it).
fn prometheus_installed() -> bool {
    let installed = [PROMETHEUS, PROMTOOL].iter().all(|path| fs::metadata(path).is_ok());
    let required = ["TCPTOP_REQUIRE_BPF", "CI"]
        .iter()
        .any(|name| std::env::var(name).is_ok_and(|v| !v.is_empty() && v != "0"));
    assert!(installed || !required, "{PROMETHEUS} and {PROMTOOL} are missing: run scripts/setup");
    if !installed {
        eprintln!("SKIPPED: needs Debian's prometheus package (scripts/setup)");
    }
    installed
}

/// A loopback address with a port free a moment ago.
fn free_address() -> String {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string()
}

/// The status and body of `GET path` (HTTP/1.0: no chunks, the server closes).
fn request(address: &str, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(address).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    Some((head.split(' ').nth(1)?.to_string(), body.to_string()))
}

/// The body of `GET path`, `None` unless 200.
fn get(address: &str, path: &str) -> Option<String> {
    request(address, path).filter(|(status, _)| status == "200").map(|(_, body)| body)
}

/// Polls `probe` until it returns something, for at most PATIENCE.
fn eventually<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if let Some(found) = probe() {
            return found;
        }
        assert!(Instant::now() < deadline, "waited {PATIENCE:?} for {what}");
        thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn promtool_accepts_a_scrape_taken_during_traffic() {
    let address = free_address();
    let Some(mut tcptop) = start_tcptop(&["--prometheus", &address, &this_process()]) else { return };
    if !prometheus_installed() {
        stop_tcptop(&mut tcptop);
        return;
    }
    let mut pair = Pair::connect(Ip::V4);
    as_traffic(|| {
        pair.client.write_all(&[7; 10_000]).unwrap();
        pair.server.read_exact(&mut [0; 10_000]).unwrap();
    });
    let tx = format!(r#"tcptop_bytes_total{{direction="tx",comm="{TRAFFIC_COMM}","#);
    let rtt = format!(r#"tcptop_tcp_rtt_seconds_bucket{{comm="{TRAFFIC_COMM}","#);
    let scrape = eventually("the traffic and its RTT in a scrape", || {
        get(&address, "/metrics").filter(|m| m.contains(&tx) && m.contains(&rtt))
    });
    assert!(scrape.contains("\ntcptop_collection_duration_seconds_bucket{"), "{scrape}");
    let mut promtool = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool.stdin.take().unwrap().write_all(scrape.as_bytes()).unwrap();
    let checked = promtool.wait_with_output().unwrap();
    let said =
        String::from_utf8_lossy(&checked.stderr).into_owned() + &String::from_utf8_lossy(&checked.stdout);
    assert!(checked.status.success() && said.trim().is_empty(), "promtool: {said}\n{scrape}");
    stop_tcptop(&mut tcptop);
}

/// A Prometheus server on loopback scraping one target every second, with a TSDB in a
/// temporary directory; killed when dropped.
struct PrometheusServer {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl PrometheusServer {
    fn start(target: &str) -> PrometheusServer {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        let scrape = format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tcptop\n    static_configs:\n      - targets: ['{target}']\n");
        fs::write(&config, scrape).unwrap();
        let address = free_address();
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={address}"))
            .args(["--log.level=warn"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting prometheus");
        let server = PrometheusServer { child, address, _dir: dir };
        eventually("prometheus to be ready", || get(&server.address, "/-/ready"));
        server
    }

    /// The answer of the query API to `promql`, now: `status` "success" with its `data`, or
    /// "error" with its `error`.
    fn query(&self, promql: &str) -> Option<serde_json::Value> {
        let query: String = promql.bytes().map(|b| format!("%{b:02X}")).collect();
        let (_, body) = request(&self.address, &format!("/api/v1/query?query={query}"))?;
        serde_json::from_str(&body).ok()
    }

    /// The value of the one series `selector` names, now.
    fn value(&self, selector: &str) -> Option<u64> {
        let answer = self.query(selector)?;
        match answer["data"]["result"].as_array()?.as_slice() {
            [series] => series["value"][1].as_str()?.parse().ok(),
            _ => None,
        }
    }

    /// Waits until the series `selector` names holds `expected`.
    fn expect(&self, selector: &str, expected: u64) {
        let mut last = None;
        let found = eventually(&format!("{selector} == {expected} in prometheus"), || {
            last = self.value(selector);
            last.filter(|&value| value == expected)
        });
        assert_eq!(found, expected, "{selector}: last {last:?}");
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The comm of this test's traffic: unlike TRAFFIC_COMM, no other test's.
const PROM_COMM: &str = "tcptop-promio";

/// Runs `work` on a thread named PROM_COMM.
fn as_prom_traffic<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    thread::Builder::new().name(PROM_COMM.into()).spawn(work).unwrap().join().unwrap()
}

/// Connects to a new loopback listener, writes `bytes` from the client and reads them on
/// the server, from a PROM_COMM thread.
fn known_traffic(bytes: usize) -> Pair {
    as_prom_traffic(move || {
        let mut pair = Pair::connect(Ip::V4);
        pair.client.write_all(&vec![5; bytes]).unwrap();
        pair.server.read_exact(&mut vec![0; bytes]).unwrap();
        pair
    })
}

/// tcptop exporting this process's connections by comm and remote port, and a real Prometheus
/// scraping it; `None` where BPF or Prometheus is missing.
fn scraped_by_comm_and_remote_port() -> Option<(Running, PrometheusServer)> {
    let address = free_address();
    let labels = ["--prometheus", &address, "--prometheus-labels", "comm,remote_port", &this_process()];
    let mut tcptop = start_tcptop(&labels)?;
    if !prometheus_installed() {
        stop_tcptop(&mut tcptop);
        return None;
    }
    Some((tcptop, PrometheusServer::start(&address)))
}

#[test]
fn a_real_prometheus_server_stores_the_exact_bytes_by_label_also_of_a_closed_connection() {
    let Some((mut tcptop, prometheus)) = scraped_by_comm_and_remote_port() else { return };
    let series = |metric: &str, direction: &str, remote_port: u16| {
        format!(r#"{metric}{{comm="{PROM_COMM}",direction="{direction}",remote_port="{remote_port}"}}"#)
    };
    let closing = known_traffic(54_321);
    let closing_server_port = closing.client.peer_addr().unwrap().port();
    prometheus.expect(&series("tcptop_bytes_total", "tx", closing_server_port), 54_321);
    drop(closing);
    let kept = known_traffic(123_456);
    let (kept_client, kept_server) = kept.client_ends();
    let closed = format!(
        r#"tcptop_connections_closed_total{{comm="{PROM_COMM}",remote_port="{closing_server_port}"}}"#
    );
    prometheus.expect(&closed, 1);
    prometheus.expect(&series("tcptop_bytes_total", "tx", closing_server_port), 54_321);
    prometheus.expect(&series("tcptop_bytes_total", "tx", kept_server.port()), 123_456);
    // The server's end, whose remote port is the client's.
    prometheus.expect(&series("tcptop_bytes_total", "rx", kept_client.port()), 123_456);
    prometheus.expect(r#"tcptop_collector_info{job="tcptop"}"#, 1);
    drop(prometheus);
    stop_tcptop(&mut tcptop);
}

/// `--pid` of this test's process alone (nextest runs each test in a process of its own):
/// the connections other tests make at the same time neither slow the scrapes nor fold
/// this test's series into `other`.
fn this_process() -> String {
    format!("--pid={}", std::process::id())
}

/// Connects from a PROM_COMM thread to a loopback port nothing listens on (free a moment
/// ago): one reset received, one failed connect. Returns the port.
fn refused_connect() -> u16 {
    let closed: SocketAddr = free_address().parse().unwrap();
    let refused = as_prom_traffic(move || TcpStream::connect(closed).unwrap_err());
    assert_eq!(refused.kind(), ErrorKind::ConnectionRefused);
    closed.port()
}

#[test]
fn a_real_prometheus_server_stores_the_reset_and_the_failure_of_a_refused_connect() {
    let Some((mut tcptop, prometheus)) = scraped_by_comm_and_remote_port() else { return };
    let series = |metric: &str, remote_port: u16, direction: &str| {
        format!(r#"{metric}{{comm="{PROM_COMM}",remote_port="{remote_port}"{direction}}}"#)
    };
    let refused = refused_connect();
    for (metric, direction, count) in [
        ("tcptop_tcp_resets_total", r#",direction="received""#, 1),
        ("tcptop_tcp_resets_total", r#",direction="sent""#, 0),
        ("tcptop_tcp_connect_failures_total", "", 1),
        // A failed connect is no connect duration.
        ("tcptop_tcp_connect_duration_seconds_count", "", 0),
        ("tcptop_tcp_retransmits_total", "", 0),
    ] {
        prometheus.expect(&series(metric, refused, direction), count);
    }
    // A connection that connected: its handshake once, no failure, no reset.
    let kept = known_traffic(1_000);
    let server_port = kept.client.peer_addr().unwrap().port();
    for (metric, direction, count) in [
        ("tcptop_tcp_connect_duration_seconds_count", "", 1),
        ("tcptop_tcp_connect_failures_total", "", 0),
        ("tcptop_tcp_resets_total", r#",direction="received""#, 0),
    ] {
        prometheus.expect(&series(metric, server_port, direction), count);
    }
    drop(prometheus);
    stop_tcptop(&mut tcptop);
}

#[test]
fn a_real_prometheus_server_stores_the_retransmit_and_the_long_handshake_of_a_lost_first_syn() {
    const PORT: u16 = 5565;
    let Some((mut tcptop, prometheus)) = scraped_by_comm_and_remote_port() else { return };
    // numgen counts from 0: only the first SYN is dropped, on input (see health.rs).
    let ns = Netns::new(
        "p",
        &format!("tcp dport {PORT} tcp flags & (syn | ack) == syn numgen inc mod 1000000 == 0 drop"),
    );
    let _connected = ns.inside(|| {
        let listener = TcpListener::bind(("127.0.0.1", PORT)).unwrap();
        let client = TcpStream::connect(("127.0.0.1", PORT)).unwrap();
        (client, listener.accept().unwrap())
    });
    let series =
        |metric: &str, le: &str| format!(r#"{metric}{{comm="{TRAFFIC_COMM}",remote_port="{PORT}"{le}}}"#);
    // The SYN resent after the retransmit timeout of 1 s: the handshake took 1 to 3 s.
    for (metric, le, count) in [
        ("tcptop_tcp_retransmits_total", "", 1),
        ("tcptop_tcp_connect_duration_seconds_count", "", 1),
        ("tcptop_tcp_connect_duration_seconds_bucket", r#",le=~"1(\\.0)?""#, 0),
        ("tcptop_tcp_connect_duration_seconds_bucket", r#",le=~"3(\\.0)?""#, 1),
        ("tcptop_tcp_connect_failures_total", "", 0),
    ] {
        prometheus.expect(&series(metric, le), count);
    }
    drop(prometheus);
    stop_tcptop(&mut tcptop);
}

/// Every PromQL expression of the dashboard's panels, and the metric its host variable is
/// taken from, with Grafana's variables replaced by what Grafana would send here.
fn dashboard_queries() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/contrib/grafana/tcptop.json");
    let dashboard: serde_json::Value = serde_json::from_str(&fs::read_to_string(path).unwrap()).unwrap();
    fn exprs(value: &serde_json::Value, found: &mut Vec<String>) {
        match value {
            serde_json::Value::Object(fields) => {
                found.extend(fields.get("expr").and_then(|expr| expr.as_str()).map(String::from));
                fields.values().for_each(|field| exprs(field, found));
            }
            serde_json::Value::Array(items) => items.iter().for_each(|item| exprs(item, found)),
            _ => {}
        }
    }
    let mut queries = Vec::new();
    exprs(&dashboard["panels"], &mut queries);
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        // label_values(METRIC, LABEL) asks for the LABEL values of METRIC's series.
        let definition = variable["definition"].as_str().unwrap();
        let inner = definition.strip_prefix("label_values(").and_then(|rest| rest.strip_suffix(')'));
        let (metric, _label) = inner.and_then(|inner| inner.split_once(',')).expect(definition);
        queries.push(metric.trim().to_string());
    }
    let queries: Vec<String> = queries
        .iter()
        .map(|query| query.replace("$__rate_interval", "1m").replace("$instance", ".*"))
        .collect();
    for query in &queries {
        assert!(!query.contains('$'), "a Grafana variable this test does not know: {query}");
    }
    queries
}

#[test]
fn a_real_prometheus_server_evaluates_every_query_of_the_grafana_dashboard_and_each_has_data() {
    let queries = dashboard_queries();
    assert!(queries.len() >= 15, "{queries:?}");
    let address = free_address();
    let Some(mut tcptop) = start_tcptop(&["--prometheus", &address, &this_process()]) else { return };
    if !prometheus_installed() {
        stop_tcptop(&mut tcptop);
        return;
    }
    let prometheus = PrometheusServer::start(&address);
    let _kept = known_traffic(10_000);
    refused_connect();
    for query in &queries {
        eventually(&format!("data for {query}"), || {
            let answer = prometheus.query(query)?;
            assert_eq!(answer["status"], "success", "{query}: {answer}");
            answer["data"]["result"].as_array().filter(|result| !result.is_empty()).map(|_| ())
        });
    }
    drop(prometheus);
    stop_tcptop(&mut tcptop);
}

/// 100 scrapers: half send nothing, half send requests and never read the answers. A loop
/// they held up would stop printing; the bound on the gaps is generous for a busy machine.
#[test]
fn scrapers_that_never_read_do_not_delay_intervals() {
    let address = free_address();
    let Some(mut tcptop) = start_tcptop(&["-b", "--prometheus", &address, &this_process(), "0.5", "8"])
    else {
        return;
    };
    let stdout = BufReader::new(tcptop.stdout.take().unwrap());
    let (arrived, arrivals) = mpsc::channel();
    let reader = thread::spawn(move || {
        for _header in stdout.lines().map_while(Result::ok).filter(|line| line.contains(" probe=")) {
            let _ = arrived.send(Instant::now());
        }
    });
    let first = arrivals.recv_timeout(PATIENCE).expect("a first interval");
    let scrapers: Vec<TcpStream> = (0..100)
        .map(|n| {
            let mut scraper = TcpStream::connect(&address).unwrap();
            if n % 2 == 0 {
                // Pipelined: each answer waits for the one before it to be read.
                let requests = "GET /metrics HTTP/1.1\r\nHost: tcptop\r\n\r\n".repeat(100);
                scraper.write_all(requests.as_bytes()).unwrap();
            }
            scraper
        })
        .collect();
    let mut last = first;
    for n in 2..=8 {
        let at = arrivals
            .recv_timeout(Duration::from_secs(3))
            .unwrap_or_else(|_| panic!("interval {n} of 0.5 s came more than 3 s after the one before it"));
        eprintln!("interval {n}: {:?} after the one before", at - last);
        last = at;
    }
    assert_eq!(tcptop.wait().unwrap().code(), Some(0));
    reader.join().unwrap();
    drop(scrapers);
}

#[test]
fn a_bad_address_is_one_line_and_exit_1() {
    let out = tcptop_command().args(["--prometheus", "localhost:9494"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.lines().collect::<Vec<_>>(), ["tcptop: --prometheus localhost:9494: expected PORT or IP:PORT, as in 9494, 127.0.0.1:9494 or [::1]:9494"]);
}
