//! Machine-readable records: one per connection per interval, the single definition behind
//! the CSV log, batch mode's JSON lines and CSV, and (with the event's fields) `--events`.

use std::io::{self, Write};
use std::time::SystemTime;

use serde::Serialize;

use crate::model::{Conn, ConnRow, Model, Overflow, Query, TcpState};
use crate::view::Sink;

/// One connection in one interval. The field order is the CSV column order, the field names
/// are the CSV header and the JSON keys.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Record<'a> {
    /// When the interval ended (or the event happened): RFC 3339, milliseconds, UTC.
    pub timestamp: &'a str,
    /// Null for a lifecycle event, which belongs to no interval.
    pub interval_ms: Option<u128>,
    /// Empty (null) until a process was seen sending or reading.
    pub pid: Option<u32>,
    pub comm: &'a str,
    /// "tcp" or "udp".
    pub proto: String,
    /// "ipv4" or "ipv6" (IPv4-mapped IPv6 addresses count as IPv4).
    pub family: &'static str,
    pub local_addr: String,
    pub local_port: u16,
    pub remote_addr: String,
    pub remote_port: u16,
    /// Empty (null) for UDP.
    pub state: Option<TcpState>,
    /// Bytes read and written in this interval; null for a lifecycle event.
    pub rx_bytes: Option<u64>,
    pub tx_bytes: Option<u64>,
    /// Bytes read and written since tcptop first saw the connection.
    pub rx_total: u64,
    pub tx_total: u64,
    /// Inode number of the connection's network namespace, when known.
    pub netns: Option<u32>,
    /// The owner's container id or systemd unit, from its cgroup, when known.
    pub container: Option<String>,
    /// What happened to the connection in this interval (or the event): "opened", "closed",
    /// "state", or empty (null) when it only moved bytes.
    pub event: Option<&'static str>,
    /// Where the numbers come from: the eBPF plan ("tracepoint/tcp-iter/udp-lookup"), or
    /// "capture".
    pub probe: &'a str,
    // TCP health, appended so that the columns before keep their places; each is empty
    // (null) where unknown: UDP, no RTT sample yet, what capture cannot see.
    /// The smoothed RTT, its mean deviation and its windowed minimum, in µs.
    pub rtt_us: Option<u32>,
    pub rttvar_us: Option<u32>,
    pub min_rtt_us: Option<u32>,
    /// Segments retransmitted in this interval (null for a lifecycle event) and in all.
    pub retrans: Option<u64>,
    pub retrans_total: Option<u64>,
    /// The handshake's time, SYN_SENT or SYN_RECV to ESTABLISHED; for a failed connect
    /// (`connect_failed`), how long it tried.
    pub connect_us: Option<u128>,
    pub connect_failed: Option<bool>,
    pub resets_sent: Option<u32>,
    pub resets_received: Option<u32>,
    /// Whether the health figures are estimated from packets (capture) rather than the
    /// kernel's own; null where there are none (UDP).
    pub health_estimated: Option<bool>,
    /// What the collector could not record since tcptop started (cumulative, as in the batch
    /// summary's OVERFLOW): connections without room, lost lifecycle events, dropped packets.
    pub untracked_conns: u64,
    pub lost_events: u64,
    pub dropped_packets: u64,
}

impl<'a> Record<'a> {
    /// A connection's row in the interval that ended at `timestamp`.
    pub fn new(
        row: &'a ConnRow,
        timestamp: &'a str,
        interval_ms: u128,
        probe: &'a str,
        overflow: Overflow,
    ) -> Record<'a> {
        Record {
            interval_ms: Some(interval_ms),
            rx_bytes: Some(row.rx_bytes),
            tx_bytes: Some(row.tx_bytes),
            retrans: row.retransmits(),
            event: row.event_label(),
            ..Record::of_conn(&row.conn, timestamp, probe, overflow)
        }
    }

    /// A connection as it stood at `timestamp`, outside any interval: its totals and state.
    pub fn of_conn(conn: &'a Conn, timestamp: &'a str, probe: &'a str, overflow: Overflow) -> Record<'a> {
        let health = conn.health.unwrap_or_default();
        let rtt = health.rtt;
        Record {
            timestamp,
            interval_ms: None,
            pid: conn.pid,
            comm: &conn.comm,
            proto: conn.proto.to_string().to_lowercase(),
            family: if conn.local.is_ipv4() { "ipv4" } else { "ipv6" },
            local_addr: conn.local.ip().to_string(),
            local_port: conn.local.port(),
            remote_addr: conn.remote.ip().to_string(),
            remote_port: conn.remote.port(),
            state: conn.state,
            rx_bytes: None,
            tx_bytes: None,
            rx_total: conn.rx_bytes,
            tx_total: conn.tx_bytes,
            netns: conn.netns,
            container: conn.container(),
            event: None,
            probe,
            rtt_us: rtt.map(|r| r.smoothed_us),
            rttvar_us: rtt.map(|r| r.variation_us),
            min_rtt_us: rtt.map(|r| r.min_us),
            retrans: None,
            retrans_total: health.retrans,
            connect_us: health.connect.map(|c| c.took.as_micros()),
            connect_failed: health.connect.map(|c| c.failed),
            resets_sent: health.resets_sent,
            resets_received: health.resets_received,
            health_estimated: conn.health.map(|h| h.estimated),
            untracked_conns: overflow.untracked_conns,
            lost_events: overflow.lost_events,
            dropped_packets: overflow.dropped_packets,
        }
    }
}

/// The CSV header row, newline included: the record's field names as serde gives them.
pub fn csv_header() -> Vec<u8> {
    let mut header = csv::Writer::from_writer(Vec::new());
    header.serialize(Record::default()).expect("a record serializes");
    let mut text = header.into_inner().expect("writing to memory");
    // `Record::default()` wrote its (empty) values after the names: keep the first line.
    let end = text.iter().position(|&b| b == b'\n').expect("the header ends with a newline");
    text.truncate(end + 1);
    text
}

/// How a `RecordSink` writes records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Csv,
    /// One JSON object per line.
    JsonLines,
}

/// Writes each interval's records (the rows `query` selects) to `out`. An interval goes out
/// in one write call and is flushed at once, so that a reader never sees it half written.
pub struct RecordSink<W: Write> {
    out: W,
    encoding: Encoding,
    query: Query,
    /// Whether the CSV header still has to go out, with the first interval.
    header_pending: bool,
    buf: Vec<u8>,
}

impl<W: Write> RecordSink<W> {
    /// `header`: whether CSV output begins with the header row; ignored for JSON lines.
    pub fn new(out: W, encoding: Encoding, query: Query, header: bool) -> RecordSink<W> {
        let header_pending = header && encoding == Encoding::Csv;
        RecordSink { out, encoding, query, header_pending, buf: Vec::new() }
    }
}

impl<W: Write> Sink for RecordSink<W> {
    fn interval(&mut self, model: &Model, backend: &str, wall: SystemTime) -> io::Result<()> {
        self.buf.clear();
        if std::mem::take(&mut self.header_pending) {
            self.buf.extend(csv_header());
        }
        let timestamp = humantime::format_rfc3339_millis(wall).to_string();
        let interval_ms = model.elapsed().as_millis();
        let records = model
            .select(&self.query)
            .into_iter()
            .map(|row| Record::new(row, &timestamp, interval_ms, backend, model.overflow()));
        encode(&mut self.buf, self.encoding, records)?;
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }
}

fn encode<'a>(
    buf: &mut Vec<u8>,
    encoding: Encoding,
    records: impl Iterator<Item = Record<'a>>,
) -> io::Result<()> {
    match encoding {
        Encoding::Csv => {
            let mut csv = csv::WriterBuilder::new().has_headers(false).from_writer(buf);
            for record in records {
                csv.serialize(record)?;
            }
            csv.flush()
        }
        Encoding::JsonLines => records.into_iter().try_for_each(|record| json_line(buf, &record)),
    }
}

/// Appends `value` as one JSON line.
pub fn json_line(buf: &mut Vec<u8>, value: &impl Serialize) -> io::Result<()> {
    serde_json::to_writer(&mut *buf, value)?;
    buf.push(b'\n');
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::conn::test_conn;
    use crate::model::Retention;
    use crate::model::{Conn, ConnEvent, EventKind, Handshake, Rtt, Sample, TcpHealth};
    use std::time::{Duration, UNIX_EPOCH};

    /// An established TCP connection with a comm that CSV has to quote.
    pub(crate) fn conn(id: u64, rx: u64, tx: u64, local: &str, remote: &str) -> Conn {
        test_conn(id, 4242, "curl, \"the\" client", (local, remote), (rx, tx))
    }

    /// Three intervals: both connections open (from before the first sample: no "opened"); only the first moves bytes; the second closes,
    /// its close event carrying its final totals.
    fn write(encoding: Encoding, header: bool) -> String {
        let one = |rx| conn(1, rx, 7, "10.0.0.1:50000", "93.184.216.34:443");
        let health = TcpHealth {
            rtt: Some(Rtt { smoothed_us: 120, variation_us: 30, min_us: 95 }),
            retrans: None,
            connect: Some(Handshake { took: Duration::from_micros(1_020_400), failed: false }),
            resets_sent: Some(0),
            resets_received: Some(1),
            estimated: false,
        };
        let two = |rx| Conn {
            netns: Some(4026531840),
            cgroup: Some("/system.slice/nginx.service".into()),
            health: Some(TcpHealth { retrans: Some(rx / 3), ..health }),
            ..conn(2, rx, 0, "[2001:db8::1]:50001", "[2001:db8::2]:22")
        };
        let close = ConnEvent { at: Duration::from_secs(3), kind: EventKind::Closed, conn: two(9) };
        let samples = [
            Sample { conns: vec![one(100), two(5)], ..Sample::default() },
            Sample { conns: vec![one(350), two(5)], ..Sample::default() },
            Sample {
                conns: vec![one(350)],
                events: vec![close],
                overflow: Overflow { lost_events: 2, ..Overflow::default() },
            },
        ];
        let mut model = Model::new(Duration::ZERO, Retention::default());
        let mut sink = RecordSink::new(Vec::new(), encoding, Query::default(), header);
        for (i, sample) in (1..).zip(samples) {
            model.update(sample, Duration::from_millis(1_000 * i));
            sink.interval(&model, "fentry", UNIX_EPOCH + Duration::from_millis(1_000 * i + 1)).unwrap();
        }
        String::from_utf8(sink.out).unwrap()
    }

    #[test]
    fn csv_has_the_header_once_and_one_row_per_active_connection_per_interval() {
        let expected = "\
timestamp,interval_ms,pid,comm,proto,family,local_addr,local_port,remote_addr,remote_port,state,rx_bytes,tx_bytes,rx_total,tx_total,netns,container,event,probe,rtt_us,rttvar_us,min_rtt_us,retrans,retrans_total,connect_us,connect_failed,resets_sent,resets_received,health_estimated,untracked_conns,lost_events,dropped_packets
1970-01-01T00:00:01.001Z,1000,4242,\"curl, \"\"the\"\" client\",tcp,ipv4,10.0.0.1,50000,93.184.216.34,443,ESTABLISHED,100,7,100,7,,,,fentry,,,,,,,,,,,0,0,0
1970-01-01T00:00:01.001Z,1000,4242,\"curl, \"\"the\"\" client\",tcp,ipv6,2001:db8::1,50001,2001:db8::2,22,ESTABLISHED,5,0,5,0,4026531840,nginx.service,,fentry,120,30,95,1,1,1020400,false,0,1,false,0,0,0
1970-01-01T00:00:02.001Z,1000,4242,\"curl, \"\"the\"\" client\",tcp,ipv4,10.0.0.1,50000,93.184.216.34,443,ESTABLISHED,250,0,350,7,,,,fentry,,,,,,,,,,,0,0,0
1970-01-01T00:00:03.001Z,1000,4242,\"curl, \"\"the\"\" client\",tcp,ipv6,2001:db8::1,50001,2001:db8::2,22,CLOSE,4,0,9,0,4026531840,nginx.service,closed,fentry,120,30,95,2,3,1020400,false,0,1,false,0,2,0
";
        assert_eq!(write(Encoding::Csv, true), expected);
        let without_header = expected.split_once('\n').unwrap().1;
        assert_eq!(write(Encoding::Csv, false), without_header);
    }

    #[test]
    fn json_lines_have_the_csv_fields() {
        let out = write(Encoding::JsonLines, true);
        let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
        assert_eq!(lines.len(), 4);
        assert_eq!(
            lines[3],
            serde_json::json!({
                "timestamp": "1970-01-01T00:00:03.001Z", "interval_ms": 1000, "pid": 4242,
                "comm": "curl, \"the\" client", "proto": "tcp", "family": "ipv6",
                "local_addr": "2001:db8::1", "local_port": 50001, "remote_addr": "2001:db8::2",
                "remote_port": 22, "state": "CLOSE", "rx_bytes": 4, "tx_bytes": 0, "rx_total": 9,
                "tx_total": 0, "netns": 4026531840u32, "container": "nginx.service", "event": "closed",
                "probe": "fentry", "rtt_us": 120, "rttvar_us": 30, "min_rtt_us": 95, "retrans": 2,
                "retrans_total": 3, "connect_us": 1020400, "connect_failed": false,
                "resets_sent": 0, "resets_received": 1, "health_estimated": false, "untracked_conns": 0, "lost_events": 2,
                "dropped_packets": 0
            })
        );
        assert_eq!(lines[2]["event"], serde_json::Value::Null);
        // Same keys as the CSV columns, in the same order.
        let first_line = out.lines().next().unwrap();
        let header = String::from_utf8(csv_header()).unwrap();
        let keys: Vec<String> = header.trim_end().split(',').map(|c| format!("\"{c}\":")).collect();
        let positions: Vec<usize> = keys.iter().map(|k| first_line.find(k.as_str()).unwrap()).collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{first_line}");
    }
}
