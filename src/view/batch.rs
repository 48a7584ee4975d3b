//! Batch mode: one timestamped text table per interval, for scripts, logs and tests.

use std::fmt;
use std::io::{self, Write};
use std::ops::Range;
use std::time::SystemTime;

use crate::model::{Conn, ConnRow, Model, Query};
use crate::view::Sink;

const HEADINGS: [&str; 9] =
    ["PID", "COMM", "LADDR:LPORT", "RADDR:RPORT", "STATE", "RX_BYTES", "TX_BYTES", "RTT_US", "RETRANS"];

/// The text table on an output stream, flushed every interval.
pub struct BatchTable<W: Write> {
    pub out: W,
    pub query: Query,
}

impl<W: Write> Sink for BatchTable<W> {
    fn interval(&mut self, model: &Model, backend: &str, wall: SystemTime) -> io::Result<()> {
        write_interval(&mut self.out, model, &self.query, backend, wall)?;
        self.out.flush()
    }
}

/// Writes the interval that just ended: a summary line, the column headings, the rows of
/// `query` (bytes are this interval's), and a blank line.
pub fn write_interval(
    out: &mut dyn Write,
    model: &Model,
    query: &Query,
    backend: &str,
    wall: SystemTime,
) -> io::Result<()> {
    let rows = model.select(query);
    let (rx_rate, tx_rate) = model.total_rates();
    write!(
        out,
        "{} probe={backend} interval={:.3}s connections={} rx={rx_rate:.0}B/s tx={tx_rate:.0}B/s",
        humantime::format_rfc3339_millis(wall),
        model.elapsed().as_secs_f64(),
        rows.len(),
    )?;
    let overflow = model.overflow();
    if !overflow.is_zero() {
        write!(
            out,
            " OVERFLOW untracked_conns={} lost_events={} dropped_packets={}",
            overflow.untracked_conns, overflow.lost_events, overflow.dropped_packets
        )?;
    }
    writeln!(out)?;

    // The widths from a pass that only counts what each cell would take, then the rows, each
    // formatted into one buffer: a host may have a million rows, and nothing is kept per row.
    let mut widths = HEADINGS.map(str::len);
    for row in &rows {
        for (column, width) in widths.iter_mut().enumerate() {
            let mut counted = Counted(0);
            write_cell(&mut counted, row, column);
            *width = (*width).max(counted.0);
        }
    }
    write_line(out, &HEADINGS, &widths)?;
    let mut text = String::new();
    for row in &rows {
        text.clear();
        let cells: [Range<usize>; 9] = std::array::from_fn(|column| {
            let start = text.len();
            write_cell(&mut text, row, column);
            start..text.len()
        });
        write_line(out, &cells.map(|cell| &text[cell]), &widths)?;
    }
    writeln!(out)
}

/// A `fmt::Write` that only counts the bytes written to it.
struct Counted(usize);

impl fmt::Write for Counted {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        self.0 += text.len();
        Ok(())
    }
}

/// Appends the text of `row`'s cell in `column` (of HEADINGS).
fn write_cell(text: &mut impl fmt::Write, row: &ConnRow, column: usize) {
    let c = &row.conn;
    // Writing to a String cannot fail.
    let _ = match column {
        0 => match c.pid {
            Some(pid) => write!(text, "{pid}"),
            None => text.write_str("-"),
        },
        1 => text.write_str(if c.comm.is_empty() { "-" } else { &c.comm }),
        2 => write!(text, "{}", c.local),
        3 => write!(text, "{}", c.remote),
        4 => text.write_str(c.state_label().unwrap_or("-")),
        5 => write!(text, "{}", row.rx_bytes),
        6 => write!(text, "{}", row.tx_bytes),
        7 => write_health(text, c.health.and_then(|h| h.rtt).map(|rtt| rtt.smoothed_us.into()), c),
        _ => write_health(text, row.retransmits(), c),
    };
}

/// A health figure: `-` where unknown, `~` before one estimated from packets (capture).
fn write_health(text: &mut impl fmt::Write, figure: Option<u64>, c: &Conn) -> fmt::Result {
    match figure {
        Some(n) if c.health.is_some_and(|h| h.estimated) => write!(text, "~{n}"),
        Some(n) => write!(text, "{n}"),
        None => text.write_str("-"),
    }
}

/// Text columns left-aligned, the number columns right-aligned.
fn write_line(out: &mut dyn Write, cells: &[&str; 9], widths: &[usize; 9]) -> io::Result<()> {
    for (i, (cell, &width)) in cells.iter().zip(widths).enumerate() {
        match i {
            0 => write!(out, "{cell:<width$}")?,
            5.. => write!(out, " {cell:>width$}")?,
            _ => write!(out, " {cell:<width$}")?,
        }
    }
    writeln!(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conn::test_conn;
    use crate::model::Retention;
    use crate::model::{Overflow, Rtt, Sample, TcpHealth};
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn table_has_summary_headings_and_rows_sorted_by_total() {
        let conn = |id: u64, rx: u64, local: &str| {
            test_conn(id, 40 + id as u32, "curl", (local, "93.184.216.34:443"), (rx, 7))
        };
        let mut model = Model::new(Duration::ZERO, Retention::default());
        let estimated = TcpHealth {
            rtt: Some(Rtt { smoothed_us: 120, variation_us: 30, min_us: 95 }),
            retrans: Some(0),
            estimated: true,
            ..TcpHealth::default()
        };
        let sample = Sample {
            conns: vec![
                conn(1, 10, "10.0.0.1:50000"),
                conn(2, 2000, "[2001:db8::1]:50001"),
                Conn { health: Some(estimated), ..conn(3, 5, "10.0.0.1:50002") },
            ],
            overflow: Overflow { lost_events: 3, ..Overflow::default() },
            ..Sample::default()
        };
        model.update(sample, Duration::from_secs(2));
        let mut out = Vec::new();
        write_interval(
            &mut out,
            &model,
            &Query::default(),
            "tracepoint",
            UNIX_EPOCH + Duration::from_millis(1_500),
        )
        .unwrap();
        let expected = "\
1970-01-01T00:00:01.500Z probe=tracepoint interval=2.000s connections=3 rx=1008B/s tx=10B/s OVERFLOW untracked_conns=0 lost_events=3 dropped_packets=0
PID COMM LADDR:LPORT         RADDR:RPORT       STATE       RX_BYTES TX_BYTES RTT_US RETRANS
42  curl [2001:db8::1]:50001 93.184.216.34:443 ESTABLISHED     2000        7      -       -
41  curl 10.0.0.1:50000      93.184.216.34:443 ESTABLISHED       10        7      -       -
43  curl 10.0.0.1:50002      93.184.216.34:443 ESTABLISHED        5        7   ~120      ~0

";
        assert_eq!(String::from_utf8(out).unwrap(), expected);
    }
}
