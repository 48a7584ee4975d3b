//! `--events`: connection lifecycle events as JSON lines, written as the event loop hands
//! them on rather than once per interval; each line is a `Record` of the connection plus the
//! event's fields. The overflow counters, read from the model, get a line when they change.

use std::io::{self, Write};
use std::time::SystemTime;

use serde::Serialize;

use crate::model::{ConnEvent, EventKind, Model, Overflow, TcpState};
use crate::view::record::{json_line, Record};
use crate::view::Sink;

/// One lifecycle event.
#[derive(Debug, Serialize)]
struct EventRecord<'a> {
    /// The connection at that moment, its byte counts totals; `event` is "opened" (the
    /// handshake completed), "state" (another state change) or "closed" (the socket is gone;
    /// the totals are final).
    #[serde(flatten)]
    record: Record<'a>,
    /// The collector's key for the connection, which matches its events before its local
    /// port is known.
    conn_id: u64,
    /// Null for "closed".
    old_state: Option<TcpState>,
    new_state: Option<TcpState>,
}

/// The collector's overflow counters.
#[derive(Debug, Serialize)]
struct OverflowLine {
    timestamp: String,
    /// Always "overflow".
    event: &'static str,
    #[serde(flatten)]
    overflow: Overflow,
}

/// Writes event lines to `out`, each batch in one write, flushed at once.
pub struct EventLines<W: Write> {
    out: W,
    /// The counters as last written.
    overflow: Overflow,
    buf: Vec<u8>,
}

impl<W: Write> EventLines<W> {
    pub fn new(out: W) -> EventLines<W> {
        EventLines { out, overflow: Overflow::default(), buf: Vec::new() }
    }

    fn write_buf(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.out.write_all(&self.buf)?;
        self.out.flush()
    }
}

impl<W: Write> Sink for EventLines<W> {
    fn interval(&mut self, model: &Model, _backend: &str, wall: SystemTime) -> io::Result<()> {
        self.buf.clear();
        if model.overflow() != self.overflow {
            self.overflow = model.overflow();
            let line = OverflowLine { timestamp: rfc3339(wall), event: "overflow", overflow: self.overflow };
            json_line(&mut self.buf, &line)?;
        }
        self.write_buf()
    }

    fn events(&mut self, events: &[ConnEvent], backend: &str, wall: SystemTime) -> io::Result<()> {
        self.buf.clear();
        write_lines(&mut self.buf, events, backend, self.overflow, wall)?;
        self.write_buf()
    }
}

/// The JSON lines of `events` (oldest first), which have just arrived at `wall`. The newest
/// event is dated `wall`, the others by their distance from it on the collector's clock:
/// events are handed on as soon as they arrive.
/// Each line carries `overflow`, the counters as the last interval left them.
fn write_lines(
    buf: &mut Vec<u8>,
    events: &[ConnEvent],
    backend: &str,
    overflow: Overflow,
    wall: SystemTime,
) -> io::Result<()> {
    let newest = events.iter().map(|e| e.at).max().unwrap_or_default();
    for event in events {
        let (label, old_state, new_state) = match event.kind {
            EventKind::Closed => ("closed", None, None),
            EventKind::State {
                old: old @ (TcpState::SynSent | TcpState::SynRecv),
                new: TcpState::Established,
            } => ("opened", Some(old), Some(TcpState::Established)),
            EventKind::State { old, new } => ("state", Some(old), Some(new)),
        };
        let timestamp = rfc3339(wall - (newest - event.at));
        let record =
            Record { event: Some(label), ..Record::of_conn(&event.conn, &timestamp, backend, overflow) };
        json_line(buf, &EventRecord { record, conn_id: event.conn.id, old_state, new_state })?;
    }
    Ok(())
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Retention, Sample};
    use std::time::{Duration, UNIX_EPOCH};

    fn event(at_ms: u64, kind: EventKind) -> ConnEvent {
        let conn = crate::view::record::tests::conn(9, 3, 10, "127.0.0.1:40000", "127.0.0.1:8080");
        ConnEvent { at: Duration::from_millis(at_ms), kind, conn }
    }

    fn state(at_ms: u64, old: TcpState, new: TcpState) -> ConnEvent {
        event(at_ms, EventKind::State { old, new })
    }

    fn parse(out: &[u8]) -> Vec<serde_json::Value> {
        String::from_utf8(out.to_vec()).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    }

    #[test]
    fn lines_are_labelled_and_dated_back_from_the_newest_event() {
        let events = [
            state(1_000, TcpState::Close, TcpState::SynSent),
            state(1_250, TcpState::SynSent, TcpState::Established),
            state(2_000, TcpState::Established, TcpState::FinWait1),
            event(3_000, EventKind::Closed),
        ];
        let mut buf = Vec::new();
        write_lines(&mut buf, &events, "fentry", Overflow::default(), UNIX_EPOCH + Duration::from_secs(60))
            .unwrap();
        let lines = parse(&buf);
        let summary: Vec<(&str, &str, &serde_json::Value)> = lines
            .iter()
            .map(|l| (l["timestamp"].as_str().unwrap(), l["event"].as_str().unwrap(), &l["new_state"]))
            .collect();
        assert_eq!(
            summary,
            [
                ("1970-01-01T00:00:58.000Z", "state", &serde_json::json!("SYN_SENT")),
                ("1970-01-01T00:00:58.250Z", "opened", &serde_json::json!("ESTABLISHED")),
                ("1970-01-01T00:00:59.000Z", "state", &serde_json::json!("FIN_WAIT1")),
                ("1970-01-01T00:01:00.000Z", "closed", &serde_json::Value::Null),
            ]
        );
        assert_eq!(lines[3]["rx_total"], 3);
        assert_eq!(lines[3]["tx_total"], 10);
        assert_eq!((&lines[3]["local_addr"], &lines[3]["local_port"]), (&"127.0.0.1".into(), &40000.into()));
    }

    #[test]
    fn event_lines_have_the_fields_of_json_records_and_the_event_s() {
        let mut buf = Vec::new();
        write_lines(&mut buf, &[event(5, EventKind::Closed)], "fentry", Overflow::default(), UNIX_EPOCH)
            .unwrap();
        let line = String::from_utf8(buf).unwrap();
        let keys = |json: &str| {
            let value: serde_json::Map<String, serde_json::Value> = serde_json::from_str(json).unwrap();
            value.keys().cloned().collect::<Vec<String>>()
        };
        let mut record = Vec::new();
        json_line(&mut record, &Record::default()).unwrap();
        let mut expected = keys(std::str::from_utf8(&record).unwrap());
        expected.extend(["conn_id", "old_state", "new_state"].map(String::from));
        let mut got = keys(&line);
        expected.sort();
        got.sort();
        assert_eq!(got, expected);
        assert!(line.contains("\"interval_ms\":null") && line.contains("\"conn_id\":9"), "{line}");
    }

    #[test]
    fn overflow_gets_a_line_when_the_model_s_counters_change() {
        let mut sink = EventLines::new(Vec::new());
        let mut model = Model::new(Duration::ZERO, Retention::default());
        let overflow = Overflow { lost_events: 2, ..Overflow::default() };
        for (secs, overflow) in [(1, Overflow::default()), (2, overflow), (3, overflow)] {
            model.update(Sample { overflow, ..Sample::default() }, Duration::from_secs(secs));
            sink.interval(&model, "fentry", UNIX_EPOCH).unwrap();
        }
        sink.events(&[state(1, TcpState::SynRecv, TcpState::Established)], "scripted", UNIX_EPOCH).unwrap();
        let lines = parse(&sink.out);
        let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["overflow", "opened"]);
        assert_eq!(lines[0]["lost_events"], 2);
    }
}
