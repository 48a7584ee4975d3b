//! Batch mode: one timestamped text table per interval, for scripts, logs and tests.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::time::SystemTime;

use crate::model::{Conn, ConnRow, Model, Order, Query};
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
    let rows = model.matching(query, &HashMap::new());
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

    // Every cell of every row in one buffer, in the order the rows lie in memory (one visit
    // each: on a host of many rows, visits in sorted order wait on the memory of each), then
    // the lines from the buffer, sorted.
    let mut text = String::new();
    let mut cells: Vec<(usize, [u16; 9])> = Vec::with_capacity(rows.len());
    let mut widths = HEADINGS.map(str::len);
    for row in &rows {
        let start = text.len();
        let lengths = std::array::from_fn(|column| {
            let cell_start = text.len();
            write_cell(&mut text, row, column);
            let length = text.len() - cell_start;
            widths[column] = widths[column].max(length);
            // A cell is a name of at most 16 bytes, an address or a number.
            length as u16
        });
        cells.push((start, lengths));
    }
    let mut line = String::new();
    push_line(&mut line, &HEADINGS, &widths);
    out.write_all(line.as_bytes())?;
    let order = Order {
        key: query.sort,
        reverse: query.reverse,
        intervals: query.rate_intervals,
        closed_last: false,
    };
    for i in order.positions(&rows) {
        let (mut at, lengths) = cells[i];
        let row_cells = lengths.map(|length| {
            let cell = &text[at..at + usize::from(length)];
            at += usize::from(length);
            cell
        });
        line.clear();
        push_line(&mut line, &row_cells, &widths);
        out.write_all(line.as_bytes())?;
    }
    writeln!(out)
}

/// Appends the text of `row`'s cell in `column` (of HEADINGS).
fn write_cell(text: &mut impl fmt::Write, row: &ConnRow, column: usize) {
    let c = &row.conn;
    // Writing to a String cannot fail.
    let _ = match column {
        0 => match c.pid {
            Some(pid) => write_number(text, pid.into()),
            None => text.write_str("-"),
        },
        1 => text.write_str(if c.comm.is_empty() { "-" } else { &c.comm }),
        2 => write_address(text, c.local),
        3 => write_address(text, c.remote),
        4 => text.write_str(c.state_label().unwrap_or("-")),
        5 => write_number(text, row.rx_bytes),
        6 => write_number(text, row.tx_bytes),
        7 => write_health(text, c.health.and_then(|h| h.rtt).map(|rtt| rtt.smoothed_us.into()), c),
        _ => write_health(text, row.retransmits(), c),
    };
}

/// A health figure: `-` where unknown, `~` before one estimated from packets (capture).
fn write_health(text: &mut impl fmt::Write, figure: Option<u64>, c: &Conn) -> fmt::Result {
    match figure {
        Some(n) if c.health.is_some_and(|h| h.estimated) => {
            text.write_str("~")?;
            write_number(text, n)
        }
        Some(n) => write_number(text, n),
        None => text.write_str("-"),
    }
}

/// `n` in decimal, without the formatting machinery, which most of a row's time went to.
fn write_number(text: &mut impl fmt::Write, mut n: u64) -> fmt::Result {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    text.write_str(std::str::from_utf8(&digits[start..]).expect("ASCII digits"))
}

/// As `SocketAddr` shows itself, an IPv4 one written directly.
fn write_address(text: &mut impl fmt::Write, address: SocketAddr) -> fmt::Result {
    let SocketAddr::V4(v4) = address else { return write!(text, "{address}") };
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text.write_str(".")?;
        }
        write_number(text, octet.into())?;
    }
    text.write_str(":")?;
    write_number(text, v4.port().into())
}

/// Appends one line of `cells`: text columns left-aligned, the number columns right-aligned,
/// each padded to its width in characters.
fn push_line(line: &mut String, cells: &[&str; 9], widths: &[usize; 9]) {
    for (i, (cell, &width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            line.push(' ');
        }
        let padding = width.saturating_sub(cell.chars().count());
        let spaces = std::iter::repeat_n(' ', padding);
        if i >= 5 {
            line.extend(spaces);
            line.push_str(cell);
        } else {
            line.push_str(cell);
            line.extend(spaces);
        }
    }
    line.push('\n');
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

    #[test]
    fn numbers_and_addresses_read_as_their_display() {
        for n in [0, 7, 10, 4_294_967_296, u64::MAX] {
            let mut text = String::new();
            write_number(&mut text, n).unwrap();
            assert_eq!(text, n.to_string());
        }
        for address in ["0.0.0.0:0", "127.0.12.1:65535", "[2001:db8::1]:443", "[::ffff:10.0.0.1]:80"] {
            let address: SocketAddr = address.parse().unwrap();
            let mut text = String::new();
            write_address(&mut text, address).unwrap();
            assert_eq!(text, address.to_string());
        }
    }
}
