//! `--events`: connection lifecycle events as JSON lines, written as the collector delivers
//! them from its event stream rather than once per interval.

use std::io::{self, Write};
use std::sync::mpsc::Receiver;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use serde::Serialize;

use crate::collector::{Collector, Conn, ConnEvent, EventKind, Overflow, TcpState};
use crate::event::Event;

/// The longest wait for events: how late a stop may be noticed.
const WAIT: Duration = Duration::from_millis(100);

/// One lifecycle event.
#[derive(Debug, Serialize)]
struct EventLine<'a> {
    /// When it happened: RFC 3339, milliseconds, UTC.
    timestamp: String,
    /// "opened" (the handshake completed), "state" (another state change) or "closed" (the
    /// socket is gone; `conn` carries its final totals).
    event: &'static str,
    /// Null for "closed".
    old_state: Option<TcpState>,
    new_state: Option<TcpState>,
    /// The connection at that moment; its byte counts are totals.
    conn: &'a Conn,
}

/// The collector's overflow counters, written whenever they change: what was lost is shown.
#[derive(Debug, Serialize)]
struct OverflowLine {
    timestamp: String,
    /// Always "overflow".
    event: &'static str,
    #[serde(flatten)]
    overflow: Overflow,
}

/// Writes events to `out` as they arrive until `Event::Stop`, then the ones still queued.
/// Each `Event::Tick` also reads the overflow counters (and the events `collect` drains).
pub fn run(collector: &mut dyn Collector, events: &Receiver<Event>, out: &mut dyn Write) -> Result<()> {
    let mut overflow = Overflow::default();
    let mut buf = Vec::new();
    loop {
        let mut arrived = collector.wait_events(WAIT)?;
        let (mut tick, mut stop) = (false, false);
        for event in events.try_iter() {
            match event {
                Event::Tick => tick = true,
                Event::Stop => stop = true,
                // Only the live screen reads the terminal.
                Event::Input(_) => {}
            }
        }
        let mut changed = None;
        if tick || stop {
            let sample = collector.collect()?;
            arrived.extend(sample.events);
            if sample.overflow != overflow {
                overflow = sample.overflow;
                changed = Some(overflow);
            }
        }
        buf.clear();
        write_lines(&mut buf, &arrived, changed, SystemTime::now())?;
        if !buf.is_empty() {
            out.write_all(&buf)?;
            out.flush()?;
        }
        if stop {
            return Ok(());
        }
    }
}

/// The JSON lines of `events` (oldest first), which have just arrived at `wall`, then the
/// overflow counters if they changed. The newest event is dated `wall`, the others by their
/// distance from it on the collector's clock: the wait returns as soon as events arrive.
fn write_lines(
    buf: &mut Vec<u8>,
    events: &[ConnEvent],
    overflow: Option<Overflow>,
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
        let line = EventLine {
            timestamp: rfc3339(wall - (newest - event.at)),
            event: label,
            old_state,
            new_state,
            conn: &event.conn,
        };
        serde_json::to_writer(&mut *buf, &line)?;
        buf.push(b'\n');
    }
    if let Some(overflow) = overflow {
        serde_json::to_writer(
            &mut *buf,
            &OverflowLine { timestamp: rfc3339(wall), event: "overflow", overflow },
        )?;
        buf.push(b'\n');
    }
    Ok(())
}

fn rfc3339(time: SystemTime) -> String {
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Sample;
    use std::sync::mpsc;
    use std::time::UNIX_EPOCH;

    fn event(at_ms: u64, kind: EventKind) -> ConnEvent {
        let conn = crate::view::record::tests::conn(9, 3, 10, "127.0.0.1:40000", "127.0.0.1:8080");
        ConnEvent { at: Duration::from_millis(at_ms), kind, conn }
    }

    fn state(at_ms: u64, old: TcpState, new: TcpState) -> ConnEvent {
        event(at_ms, EventKind::State { old, new })
    }

    /// Hands out its events at the first wait, without waiting; `collect` finds one more
    /// event, and lost events.
    struct Scripted {
        waiting: Vec<ConnEvent>,
        collected: usize,
    }

    impl Collector for Scripted {
        fn backend(&self) -> &str {
            "scripted"
        }

        fn collect(&mut self) -> Result<Sample> {
            self.collected += 1;
            let events = vec![event(5_000, EventKind::Closed)];
            Ok(Sample {
                events,
                overflow: Overflow { lost_events: 2, ..Overflow::default() },
                ..Sample::default()
            })
        }

        fn wait_events(&mut self, _timeout: Duration) -> Result<Vec<ConnEvent>> {
            Ok(std::mem::take(&mut self.waiting))
        }
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
        write_lines(&mut buf, &events, None, UNIX_EPOCH + Duration::from_secs(60)).unwrap();
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
        assert_eq!(lines[3]["conn"]["rx_bytes"], 3);
        assert_eq!(lines[3]["conn"]["tx_bytes"], 10);
        assert_eq!(lines[3]["conn"]["local"], "127.0.0.1:40000");
    }

    #[test]
    fn a_stop_writes_what_arrived_and_what_is_still_queued_then_returns() {
        let opened = state(1, TcpState::SynRecv, TcpState::Established);
        let mut collector = Scripted { waiting: vec![opened], collected: 0 };
        let (sender, receiver) = mpsc::channel();
        sender.send(Event::Stop).unwrap();
        let mut out = Vec::new();
        run(&mut collector, &receiver, &mut out).unwrap();
        let lines = parse(&out);
        let events: Vec<&str> = lines.iter().map(|l| l["event"].as_str().unwrap()).collect();
        assert_eq!(events, ["opened", "closed", "overflow"]);
        assert_eq!(lines[2]["lost_events"], 2);
        assert_eq!(collector.collected, 1);
    }
}
