//! The app with `--prometheus` and no terminal: it prints nothing, and a scrape over
//! loopback sees the scripted connection's exact totals and health, kept after it closed,
//! and the time of each collection.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use super::*;
use crate::model::{Conn, Rtt, TcpHealth};

/// A loopback address with a port free a moment ago.
fn free_address() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().to_string()
}

/// The response to `GET /metrics` with this `Accept` header, headers and body as text.
async fn scrape(address: &str, accept: &'static str) -> String {
    let address = address.to_string();
    // Blocking I/O off the loop's thread, which runs the app.
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(&address).unwrap();
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: tcptop\r\nAccept: {accept}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        response
    })
    .await
    .unwrap()
}

/// The first scrape whose body has `line`, trying for up to 5 s.
async fn scrape_until(address: &str, accept: &'static str, line: &str) -> String {
    for _ in 0..500 {
        let response = scrape(address, accept).await;
        if response.lines().any(|l| l == line) {
            return response;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("no scrape had {line}");
}

#[test]
fn scrapes_see_exact_totals_by_label_and_a_closed_connection_keeps_its_bytes() {
    let address = free_address();
    let health = |resets_received| TcpHealth {
        rtt: Some(Rtt { smoothed_us: 250, variation_us: 50, min_us: 200 }),
        retrans: Some(2),
        connect: None,
        resets_sent: Some(0),
        resets_received: Some(resets_received),
        estimated: false,
    };
    let curl = |rx, resets_received| Conn { health: Some(health(resets_received)), ..curl(rx) };
    let closed = ConnEvent { at: Duration::from_millis(1500), kind: EventKind::Closed, conn: curl(350, 1) };
    let script = |clock| {
        let overflow = Overflow { lost_events: 3, ..Overflow::default() };
        let samples = [
            Sample { conns: vec![curl(100, 0)], ..Sample::default() },
            Sample { events: vec![closed], overflow, ..Sample::default() },
        ];
        Scripted::new(clock, samples)
    };
    let flags = ["--prometheus", &address, "--prometheus-labels", "comm,remote_port"];
    let (result, mut io) = run_app(&flags, false, script, |io| async {
        let closed_line = r#"tcptop_connections_closed_total{comm="curl",remote_port="8080"} 1"#;
        let text = scrape_until(&address, "text/plain;version=0.0.4", closed_line).await;
        for line in [
            "content-type: text/plain; version=0.0.4; charset=utf-8",
            r#"tcptop_bytes_total{direction="rx",comm="curl",remote_port="8080"} 350"#,
            r#"tcptop_bytes_total{direction="tx",comm="curl",remote_port="8080"} 7"#,
            r#"tcptop_collector_info{probe="scripted"} 1"#,
            "tcptop_lost_events_total 3",
            "tcptop_folded_series_total 0",
            r#"tcptop_tcp_retransmits_total{comm="curl",remote_port="8080"} 2"#,
            r#"tcptop_tcp_resets_total{direction="sent",comm="curl",remote_port="8080"} 0"#,
            r#"tcptop_tcp_resets_total{direction="received",comm="curl",remote_port="8080"} 1"#,
            // Data moved in both intervals.
            r#"tcptop_tcp_rtt_seconds_count{comm="curl",remote_port="8080"} 2"#,
            r#"tcptop_tcp_rtt_seconds_bucket{comm="curl",remote_port="8080",le="0.0001"} 0"#,
            r#"tcptop_tcp_rtt_seconds_bucket{comm="curl",remote_port="8080",le="0.0003"} 2"#,
            r#"tcptop_tcp_rtt_seconds_sum{comm="curl",remote_port="8080"} 0.0005"#,
            // A scripted read takes no time on the fake clock.
            "tcptop_collection_duration_seconds_count 2",
            r#"tcptop_collection_duration_seconds_bucket{le="0.0001"} 2"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        // Closed, so no longer open; no handshake was seen, so nothing is known of connects.
        assert!(!text.contains("tcptop_connections{"), "{text}");
        assert!(!text.contains("tcptop_tcp_connect"), "{text}");
        let openmetrics = scrape(&address, "application/openmetrics-text;version=1.0.0").await;
        assert!(
            openmetrics.contains("content-type: application/openmetrics-text; version=1.0.0"),
            "{openmetrics}"
        );
        assert!(openmetrics.contains("# TYPE tcptop_collector info\n"), "{openmetrics}");
        assert!(openmetrics.ends_with("# EOF\n"), "{openmetrics}");
        io.stop_signals.send(()).unwrap();
        io
    });
    result.unwrap();
    assert_eq!(io.written(), "", "headless with --prometheus prints nothing");
}

#[test]
fn a_port_in_use_ends_the_app_before_the_probes_load() {
    let busy = TcpListener::bind("127.0.0.1:0").unwrap();
    let address = busy.local_addr().unwrap().to_string();
    let clock = Arc::new(FakeClock::default());
    let (mut os, _io) = os(Scripted::new(Arc::clone(&clock), []), clock, false, |_| None);
    os.open_collector = Box::new(|| panic!("the probes load after the port is taken"));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let error = runtime.block_on(run(&args(&["--prometheus", &address]), os)).unwrap_err();
    let message = format!("{error:#}");
    assert!(message.starts_with(&format!("--prometheus {address}: Address already in use")), "{message}");
}
