//! Batch mode: one timestamped text table per interval, for scripts, logs and tests.

use std::collections::HashMap;
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
/// `query` (bytes are this interval's), and a blank line. The summary line is flushed at once.
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
    // Out before the rows are formatted: on a host of a million rows that takes a while.
    out.flush()?;

    // Every cell of every row in one buffer, in the order the rows lie in memory (one visit
    // each: on a host of many rows, visits in sorted order wait on the memory of each), then
    // the lines from the buffer, sorted, written out in large pieces.
    let mut text = Vec::with_capacity((rows.len() + 1) * ROW_BYTES + PIECE);
    let headings =
        Cells::write(&mut text, |text, column| text.extend_from_slice(HEADINGS[column].as_bytes()));
    let cells: Vec<Cells> = rows
        .iter()
        .map(|row| Cells::write(&mut text, |text, column| write_cell(text, row, column)))
        .collect();
    text.extend_from_slice(&[0; PIECE]);
    let mut widths = [0; 9];
    for cell in cells.iter().chain([&headings]) {
        for (width, column) in widths.iter_mut().zip(0..) {
            *width = (*width).max(cell.width(column));
        }
    }
    let mut lines = Vec::with_capacity(WRITE_BYTES + ROW_BYTES);
    push_line(&mut lines, &text, &headings, &widths);
    let order = Order {
        key: query.sort,
        reverse: query.reverse,
        intervals: query.rate_intervals,
        closed_last: false,
    };
    let (mut gathered, mut gathered_cells) = (Vec::new(), Vec::with_capacity(GATHER));
    for chunk in order.positions(&rows).chunks(GATHER) {
        // The cells of a run of rows copied together first: the loads of many rows are on
        // their way at once, where formatting row by row waited on the memory of each.
        gathered.clear();
        gathered_cells.clear();
        for &i in chunk {
            let cell = cells[i];
            gathered_cells.push(Cells { start: gathered.len(), ..cell });
            copy(&mut gathered, &text, cell.start, cell.lengths.iter().map(|&n| usize::from(n)).sum());
        }
        gathered.extend_from_slice(&[0; PIECE]);
        for cell in &gathered_cells {
            push_line(&mut lines, &gathered, cell, &widths);
        }
        if lines.len() >= WRITE_BYTES {
            out.write_all(&lines)?;
            lines.clear();
        }
    }
    lines.push(b'\n');
    out.write_all(&lines)
}

/// About the bytes of a row's cells, to size the buffer once.
const ROW_BYTES: usize = 128;
/// How much of the table is written at a time.
const WRITE_BYTES: usize = 1 << 16;
/// The piece bytes are copied in (see `copy`).
const PIECE: usize = 16;
/// How many rows' cells are copied together, out of the order they were written in.
const GATHER: usize = 64;

/// Where a row's cells are in the buffer of them all, one after another.
#[derive(Clone, Copy)]
struct Cells {
    start: usize,
    /// Each cell's length in bytes: a cell is a name of at most 16 characters, an address or
    /// a number.
    lengths: [u8; 9],
    /// The command name's length in characters (the other cells are ASCII).
    comm_chars: u8,
}

impl Cells {
    /// Appends the cells `write` writes (by column of HEADINGS) to `text`.
    fn write(text: &mut Vec<u8>, mut write: impl FnMut(&mut Vec<u8>, usize)) -> Cells {
        let start = text.len();
        let lengths = std::array::from_fn(|column| {
            let cell_start = text.len();
            write(text, column);
            (text.len() - cell_start) as u8
        });
        let comm = &text[start + usize::from(lengths[0])..][..usize::from(lengths[1])];
        // Characters are the bytes that do not continue one.
        let comm_chars = comm.iter().filter(|&&byte| byte & 0xC0 != 0x80).count() as u8;
        Cells { start, lengths, comm_chars }
    }

    /// How wide the cell in `column` shows.
    fn width(&self, column: usize) -> usize {
        usize::from(if column == 1 { self.comm_chars } else { self.lengths[column] })
    }
}

/// Appends the text of `row`'s cell in `column` (of HEADINGS).
fn write_cell(text: &mut Vec<u8>, row: &ConnRow, column: usize) {
    let c = &row.conn;
    match column {
        0 => match c.pid {
            Some(pid) => write_number(text, pid.into()),
            None => text.push(b'-'),
        },
        1 => text.extend_from_slice(if c.comm.is_empty() { "-" } else { &c.comm }.as_bytes()),
        2 => write_address(text, c.local),
        3 => write_address(text, c.remote),
        4 => text.extend_from_slice(c.state_label().unwrap_or("-").as_bytes()),
        5 => write_number(text, row.rx_bytes),
        6 => write_number(text, row.tx_bytes),
        7 => write_health(text, c.health.and_then(|h| h.rtt).map(|rtt| rtt.smoothed_us.into()), c),
        _ => write_health(text, row.retransmits(), c),
    }
}

/// A health figure: `-` where unknown, `~` before one estimated from packets (capture).
fn write_health(text: &mut Vec<u8>, figure: Option<u64>, c: &Conn) {
    match figure {
        Some(n) if c.health.is_some_and(|h| h.estimated) => {
            text.push(b'~');
            write_number(text, n);
        }
        Some(n) => write_number(text, n),
        None => text.push(b'-'),
    }
}

/// `n` in decimal, two digits at a time, written in place: neither the formatting machinery
/// nor a copy of a length known only at run time (a call into libc) per number.
fn write_number(text: &mut Vec<u8>, mut n: u64) {
    const PAIRS: [u8; 200] = {
        let mut pairs = [0; 200];
        let mut i = 0;
        while i < 100 {
            (pairs[2 * i], pairs[2 * i + 1]) = (b'0' + (i / 10) as u8, b'0' + (i % 10) as u8);
            i += 1;
        }
        pairs
    };
    let digits = n.checked_ilog10().map_or(1, |log| log as usize + 1);
    let start = text.len();
    text.extend_from_slice(&[0; 20]);
    text.truncate(start + digits);
    let mut digits = &mut text[start..];
    while n >= 10 {
        let pair = (n % 100) as usize * 2;
        let (rest, last) = digits.split_at_mut(digits.len() - 2);
        last.copy_from_slice(&PAIRS[pair..pair + 2]);
        (digits, n) = (rest, n / 100);
    }
    if let Some(first) = digits.first_mut() {
        *first = b'0' + n as u8;
    }
}

/// As `SocketAddr` shows itself, an IPv4 one written directly.
fn write_address(text: &mut Vec<u8>, address: SocketAddr) {
    let SocketAddr::V4(v4) = address else {
        // Writing to a Vec cannot fail.
        let _ = write!(text, "{address}");
        return;
    };
    for (i, octet) in v4.ip().octets().into_iter().enumerate() {
        if i > 0 {
            text.push(b'.');
        }
        write_number(text, octet.into());
    }
    text.push(b':');
    write_number(text, v4.port().into());
}

/// Appends the line of `cells`: text columns left-aligned, the number columns right-aligned,
/// each padded to its width in characters.
fn push_line(line: &mut Vec<u8>, text: &[u8], cells: &Cells, widths: &[usize; 9]) {
    let mut at = cells.start;
    for (column, &width) in widths.iter().enumerate() {
        if column > 0 {
            line.push(b' ');
        }
        let length = usize::from(cells.lengths[column]);
        let padding = width - cells.width(column);
        if column >= 5 {
            pad(line, padding);
            copy(line, text, at, length);
        } else {
            copy(line, text, at, length);
            pad(line, padding);
        }
        at += length;
    }
    line.push(b'\n');
}

/// Appends `text[at..at + length]`, copied in pieces of `PIECE` bytes (`text` has that many
/// past its last cell): a copy of a length known only at run time calls into libc, which was
/// most of a line's time.
fn copy(line: &mut Vec<u8>, text: &[u8], at: usize, length: usize) {
    let end = line.len() + length;
    for piece in (at..at + length).step_by(PIECE) {
        let piece: &[u8; PIECE] = text[piece..piece + PIECE].try_into().expect("a piece");
        line.extend_from_slice(piece);
    }
    line.truncate(end);
}

/// Appends `n` spaces, in pieces as `copy` does.
fn pad(line: &mut Vec<u8>, n: usize) {
    let end = line.len() + n;
    for _ in 0..n.div_ceil(PIECE) {
        line.extend_from_slice(&[b' '; PIECE]);
    }
    line.truncate(end);
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
        for n in [0, 7, 10, 99, 100, 1_000, 65_535, 4_294_967_296, u64::MAX] {
            let mut text = Vec::new();
            write_number(&mut text, n);
            assert_eq!(text, n.to_string().as_bytes());
        }
        for address in ["0.0.0.0:0", "127.0.12.1:65535", "[2001:db8::1]:443", "[::ffff:10.0.0.1]:80"] {
            let address: SocketAddr = address.parse().unwrap();
            let mut text = Vec::new();
            write_address(&mut text, address);
            assert_eq!(text, address.to_string().as_bytes());
        }
    }
}
