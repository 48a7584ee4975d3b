//! Draws one frame of the live screen from the state and the screen data; reads, never changes.

use std::ops::Range;

use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style, Stylize};
use ratatui::text::{Line, Span};
use ratatui::widgets::RenderDirection;
use ratatui::widgets::{Block, Borders, Clear, Paragraph, Row, Sparkline, Table, TableState};
use ratatui::Frame;

use crate::model::filter::KEYS as FILTER_KEYS;
use crate::model::group::{Group, GroupKey, Grouping};
use crate::model::{Averaging, Conn, ConnEvent, ConnRow, EventKind, Filter, Model, Proto, SortKey, Window};
use crate::strategy::Strategy;

use super::screen::{address, host, Naming, Rows, Screen};
use super::state::TuiState;

const DETAIL_HEIGHT: u16 = 8;
const HEADER_TEXT_WIDTH: usize = 64;
/// Narrowest column for a byte count: "1023 KiB" and a sort mark.
const BYTES_WIDTH: u16 = 9;
/// Widest an address or name column grows before the room left over is shared out.
const MAX_PREFERRED: u16 = 40;
/// The least width at which the process view has the remote hosts beside it, as bandwhich.
const SIDE_BY_SIDE_WIDTH: u16 = 200;

/// Where each part of the screen goes; parts that do not fit are empty.
pub struct Areas {
    pub header: Rect,
    /// The views' tab bar.
    pub tabs: Rect,
    pub table: Rect,
    pub detail: Rect,
    pub status: Rect,
}

impl Areas {
    /// The parts of `area`, the detail pane only if `detail` asks for it.
    pub fn new(area: Rect, detail: bool) -> Areas {
        let header = if area.height >= 8 { 2 } else { 0 };
        let tabs = if area.height >= 12 { 1 } else { 0 };
        let detail = if detail && area.height >= 20 { DETAIL_HEIGHT } else { 0 };
        let [header, tabs, table, detail, status] = Layout::vertical([
            Constraint::Length(header),
            Constraint::Length(tabs),
            Constraint::Min(0),
            Constraint::Length(detail),
            Constraint::Length(1),
        ])
        .areas(area);
        Areas { header, tabs, table, detail, status }
    }

    /// Table rows that fit under the column headings.
    pub fn page(&self) -> usize {
        self.table.height.saturating_sub(1) as usize
    }
}

pub fn render(state: &TuiState, screen: &Screen, frame: &mut Frame) {
    let areas = Areas::new(frame.area(), state.detail);
    header(state, screen, areas.header, areas.tabs.is_empty(), frame);
    tabs(state, areas.tabs, frame);
    let (main, side) = split(screen, areas.table);
    table(state, screen, main, true, frame);
    if let (Some(beside), Some(beside_state)) = (screen.beside, beside(state, frame.area())) {
        table(&beside_state, beside, side, false, frame);
    }
    detail(state, screen, areas.detail, frame);
    status(state, screen, areas.status, frame);
    if state.sort_menu.is_some() {
        sort_menu(state, frame);
    }
    if state.help {
        help(state, screen, frame);
    }
    if state.no_color {
        strip_colors(frame.buffer_mut());
    }
}

/// Takes the colours out of `buffer` (`NO_COLOR`), keeping what they marked: a coloured
/// background becomes reversed video (bars, flags), grey text dim (closed rows, hints).
fn strip_colors(buffer: &mut Buffer) {
    for cell in &mut buffer.content {
        let mut modifier = cell.modifier;
        if cell.bg != Color::Reset {
            modifier.insert(Modifier::REVERSED);
        }
        if cell.fg == Color::DarkGray {
            modifier.insert(Modifier::DIM);
        }
        cell.set_style(Style::reset().add_modifier(modifier));
    }
}

/// The host, collector and totals; the view by name only where no tab bar shows it.
fn header(state: &TuiState, screen: &Screen, area: Rect, name_view: bool, frame: &mut Frame) {
    if area.is_empty() {
        return;
    }
    let h = screen.header;
    let live = screen.model.rows().filter(|r| !r.is_closed()).count();
    let (rx, tx) = screen.model.total_rates_over(screen.model.window(state.averaging));
    let view = if name_view { format!(" · by {}", state.grouping.name()) } else { String::new() };
    let lines = vec![
        Line::from(vec![
            "tcptop".bold(),
            format!(
                " on {} · probe {} · every {} · {live} connections",
                h.host,
                h.backend,
                humantime::format_duration(h.interval)
            )
            .into(),
            only(&h.filters).black().on_yellow(),
        ]),
        Line::from(vec![
            "RX ".into(),
            per_second(rx, Units::of(state)).green().bold(),
            "  TX ".into(),
            per_second(tx, Units::of(state)).cyan().bold(),
            format!(
                "{view} · avg {} · sort {} {}",
                averaging_name(state.averaging, h.interval),
                sort_name(state),
                sort_arrow(state)
            )
            .into(),
        ]),
    ];
    // At least as wide as usual, so that the sparkline stays put as the figures change.
    let text_width = lines.iter().map(Line::width).max().unwrap_or(0).max(HEADER_TEXT_WIDTH) as u16 + 2;
    let [text, chart] = Layout::horizontal([Constraint::Length(text_width), Constraint::Fill(1)]).areas(area);
    draw_lines(lines, text, frame);
    let peak = screen.throughput.iter().max().copied().unwrap_or(0) as f64;
    sparkline(
        screen.throughput.iter().copied(),
        &per_second(peak, Units::of(state)),
        Color::Yellow,
        chart,
        frame,
    );
}

/// What the rate columns average over, as the header says it ("1s", "10s", "40s").
fn averaging_name(averaging: Averaging, interval: std::time::Duration) -> String {
    humantime::format_duration(averaging.span().unwrap_or(interval)).to_string()
}

/// The views as tabs, each with the key that shows it, the current one marked; then the keys
/// that cycle them, where there is room.
fn tabs(state: &TuiState, area: Rect, frame: &mut Frame) {
    if area.is_empty() {
        return;
    }
    let mut spans = Vec::new();
    for (i, grouping) in Grouping::ALL.into_iter().enumerate() {
        let key = Span::from(format!(" {} ", i + 1)).bold();
        let name = Span::from(format!("{} ", tab_name(grouping)));
        if grouping == state.grouping {
            spans.extend([key.black().on_cyan(), name.black().on_cyan().bold()]);
        } else {
            spans.extend([key.cyan(), name]);
        }
    }
    let hint = [" g".bold(), " Tab".bold(), " next view".dark_gray()];
    if Line::from(spans.clone()).width() + Line::from(hint.to_vec()).width() <= area.width as usize {
        spans.extend(hint);
    }
    draw_lines(vec![Line::from(spans)], area, frame);
}

/// A view's name on its tab.
fn tab_name(grouping: Grouping) -> &'static str {
    match grouping {
        Grouping::Connection => "Connections",
        Grouping::Process => "Processes",
        Grouping::RemoteHost => "Remote hosts",
        Grouping::Container => "Containers",
    }
}

/// A sparkline of `points` (oldest first), newest at the right, scaled to their peak, which
/// `peak` names at the top left; when there are more points than columns, each column shows
/// the largest of its share.
fn sparkline(
    points: impl DoubleEndedIterator<Item = u64> + ExactSizeIterator,
    peak: &str,
    color: Color,
    area: Rect,
    frame: &mut Frame,
) {
    let [scale, area] =
        Layout::horizontal([Constraint::Length(text_width(peak) + 1), Constraint::Fill(1)]).areas(area);
    if area.is_empty() {
        return;
    }
    frame.render_widget(Line::from(peak.to_string()).dark_gray(), scale);
    let per_bar = points.len().div_ceil(area.width as usize).max(1);
    let newest_first: Vec<u64> = points.rev().collect();
    let bars: Vec<u64> = newest_first.chunks(per_bar).map(|c| c.iter().copied().max().unwrap_or(0)).collect();
    let sparkline = Sparkline::default().data(bars).direction(RenderDirection::RightToLeft).fg(color);
    frame.render_widget(sparkline, area);
}

/// A column of the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Column {
    Pid,
    Comm,
    Proto,
    Local,
    Remote,
    State,
    Rtt,
    Retrans,
    RxRate,
    TxRate,
    RxTotal,
    TxTotal,
    Conns,
    Host,
    Processes,
    Container,
}

impl Column {
    fn title(self) -> &'static str {
        match self {
            Column::Pid => "PID",
            Column::Comm => "COMM",
            Column::Proto => "PROTO",
            Column::Local => "LOCAL",
            Column::Remote => "REMOTE",
            Column::State => "STATE",
            Column::Rtt => "RTT",
            Column::Retrans => "RETRANS",
            Column::RxRate => "RX/s",
            Column::TxRate => "TX/s",
            Column::RxTotal => "RX TOTAL",
            Column::TxTotal => "TX TOTAL",
            Column::Conns => "CONNS",
            Column::Host => "REMOTE HOST",
            Column::Processes => "PROCESSES",
            Column::Container => "CONTAINER",
        }
    }

    /// The least width the column is drawn at; text beyond it is cut with `…`.
    fn min_width(self) -> u16 {
        match self {
            // "PID" and a sort mark; as wide as the widest pid on screen.
            Column::Pid => 4,
            Column::Comm => 10,
            Column::Proto | Column::Conns => 5,
            // "…:51000": the port survives.
            Column::Local => 8,
            Column::Remote => 14,
            Column::State => 11,
            // "1023 ms" and a sort mark; "RETRANS" and one.
            Column::Rtt | Column::Retrans => 8,
            Column::RxRate | Column::TxRate | Column::RxTotal | Column::TxTotal => BYTES_WIDTH,
            Column::Host => 11,
            Column::Processes => 15,
            // A container's short id.
            Column::Container => 12,
        }
    }

    /// The width the column grows to when there is room, given its widest cell on screen.
    fn preferred_width(self, widest: u16) -> u16 {
        match self {
            // The kernel's comm is at most 15 characters.
            Column::Comm => widest.min(15),
            Column::Local | Column::Remote | Column::Host | Column::Processes | Column::Container => {
                widest.min(MAX_PREFERRED)
            }
            column if column.is_bytes() => widest,
            column => column.min_width(),
        }
        .max(self.min_width())
    }

    /// The sort this column's heading asks for in `grouping`, if any.
    fn sort_key(self, grouping: Grouping) -> Option<SortKey> {
        let key = match self {
            Column::Pid => SortKey::Pid,
            Column::Comm => SortKey::Comm,
            Column::Local => SortKey::Local,
            Column::Remote | Column::Host => SortKey::Remote,
            Column::State => SortKey::State,
            Column::Rtt => SortKey::Rtt,
            Column::Retrans => SortKey::Retrans,
            Column::RxRate => SortKey::Rx,
            Column::TxRate => SortKey::Tx,
            Column::RxTotal => SortKey::RxTotal,
            Column::TxTotal => SortKey::TxTotal,
            Column::Proto | Column::Conns | Column::Processes | Column::Container => return None,
        };
        grouping.sort_keys().contains(&key).then_some(key)
    }

    /// Whether the column takes the room left over.
    fn fills(self) -> bool {
        matches!(self, Column::Remote | Column::Processes)
    }

    /// Whether the column is never narrower than its widest cell on screen (pids, counts).
    fn widens(self) -> bool {
        self.is_bytes() || self == Column::Pid
    }

    fn right_aligned(self) -> bool {
        matches!(self, Column::Pid | Column::Conns | Column::Rtt | Column::Retrans) || self.is_bytes()
    }

    fn is_bytes(self) -> bool {
        matches!(self, Column::RxRate | Column::TxRate | Column::RxTotal | Column::TxTotal)
    }

    /// Whether the table is sorted by this column (the total sort marks both rates).
    fn sorted_by(self, key: SortKey, grouping: Grouping) -> bool {
        match sort_column(key, grouping) {
            Some(column) => column == self,
            None => matches!(self, Column::RxRate | Column::TxRate),
        }
    }
}

/// The column that shows `key`; none for the total, which the two rate columns add up to.
fn sort_column(key: SortKey, grouping: Grouping) -> Option<Column> {
    Some(match key {
        SortKey::Total => return None,
        SortKey::Rx => Column::RxRate,
        SortKey::Tx => Column::TxRate,
        SortKey::RxTotal => Column::RxTotal,
        SortKey::TxTotal => Column::TxTotal,
        SortKey::Pid => Column::Pid,
        SortKey::Comm => Column::Comm,
        SortKey::Local => Column::Local,
        SortKey::Remote if grouping == Grouping::RemoteHost => Column::Host,
        SortKey::Remote => Column::Remote,
        SortKey::State => Column::State,
        SortKey::Rtt => Column::Rtt,
        SortKey::Retrans => Column::Retrans,
    })
}

/// The columns of a grouping: in screen order, and in the order they are given room on a
/// narrow screen, the first `essential` of them before any other grows past its least width.
struct Columns {
    shown: &'static [Column],
    kept: &'static [Column],
    essential: usize,
}

fn columns(grouping: Grouping) -> Columns {
    use Column::*;
    match grouping {
        Grouping::Connection => Columns {
            shown: &[Pid, Comm, Proto, Local, Remote, State, Rtt, Retrans, RxRate, TxRate, RxTotal, TxTotal],
            kept: &[RxRate, TxRate, Comm, Remote, Pid, Local, Proto, State, RxTotal, TxTotal, Rtt, Retrans],
            essential: 8,
        },
        Grouping::Process => Columns {
            shown: &[Pid, Comm, Conns, RxRate, TxRate, RxTotal, TxTotal],
            kept: &[RxRate, TxRate, Comm, Pid, Conns, RxTotal, TxTotal],
            essential: 5,
        },
        Grouping::RemoteHost => Columns {
            shown: &[Host, Conns, Processes, RxRate, TxRate, RxTotal, TxTotal],
            kept: &[RxRate, TxRate, Host, Conns, Processes, RxTotal, TxTotal],
            essential: 5,
        },
        Grouping::Container => Columns {
            shown: &[Container, Conns, Processes, RxRate, TxRate, RxTotal, TxTotal],
            kept: &[RxRate, TxRate, Container, Conns, Processes, RxTotal, TxTotal],
            essential: 5,
        },
    }
}

/// The width of each column in `kept` order (zero: left out) for a table `room` wide, one
/// space between columns: the essential ones at their least width, then grown towards their
/// preferred width, then the others while they fit, and what is left to the filling column.
fn column_widths(columns: &Columns, min: &[u16], preferred: &[u16], room: u16) -> Vec<u16> {
    let mut widths = vec![0; columns.kept.len()];
    // The last column needs no space after it.
    let mut room = room + 1;
    for (i, &least) in min.iter().enumerate().take(columns.essential) {
        if least + 1 > room {
            return widths;
        }
        room -= least + 1;
        widths[i] = least;
    }
    for i in 0..columns.essential {
        let grow = (preferred[i] - widths[i]).min(room);
        widths[i] += grow;
        room -= grow;
    }
    for i in columns.essential..columns.kept.len() {
        if preferred[i] + 1 > room {
            break;
        }
        room -= preferred[i] + 1;
        widths[i] = preferred[i];
    }
    if let Some(fill) = columns.kept.iter().position(|c| c.fills()).filter(|&i| widths[i] > 0) {
        widths[fill] += room;
    }
    widths
}

/// What the frame's cells need besides the row: units, names, the averaging window.
#[derive(Clone, Copy)]
struct Cells<'a> {
    units: Units,
    naming: Option<&'a Naming<'a>>,
    window: Window,
}

/// A cell of connection `row`, with `peer`'s process too where the other end is folded in.
fn conn_cell(row: &ConnRow, peer: Option<&ConnRow>, column: Column, cells: Cells) -> String {
    let Cells { units, naming, window } = cells;
    let raw = units.raw;
    let c = &row.conn;
    let both = |of: &dyn Fn(&Conn) -> String| match peer {
        Some(peer) => format!("{}↔{}", of(c), of(&peer.conn)),
        None => of(c),
    };
    match column {
        Column::Pid => both(&|c| pid_text(c.pid)),
        Column::Comm => both(&|c| or_dash(&c.comm)),
        Column::Proto => c.proto.to_string(),
        Column::Local => address(c.local, c.proto, naming),
        Column::Remote | Column::Host => address(c.remote, c.proto, naming),
        Column::State => state_text(c),
        Column::Rtt => c
            .health
            .and_then(|h| h.rtt)
            .map_or_else(|| "-".into(), |rtt| format!("{}{}", estimate_mark(c), micros(rtt.smoothed_us))),
        Column::Retrans => {
            row.retransmits().map_or_else(|| "-".into(), |n| format!("{}{n}", estimate_mark(c)))
        }
        Column::RxRate => rate(window.rate(row.rx_history.iter()), units),
        Column::TxRate => rate(window.rate(row.tx_history.iter()), units),
        Column::RxTotal => bytes(c.rx_bytes, raw),
        Column::TxTotal => bytes(c.tx_bytes, raw),
        Column::Conns => "1".into(),
        Column::Processes => or_dash(&c.comm),
        Column::Container => c.container().unwrap_or_else(|| "-".into()),
    }
}

fn group_cell(group: &Group, model: &Model, column: Column, cells: Cells) -> String {
    let Cells { units, naming, window } = cells;
    let raw = units.raw;
    match (column, &group.key) {
        (Column::Pid, GroupKey::Process { pid, .. }) => pid_text(*pid),
        (Column::Comm, GroupKey::Process { comm, .. }) => or_dash(comm),
        (Column::Host, GroupKey::RemoteHost(ip)) => host(*ip, naming),
        (Column::Container, GroupKey::Container(name)) => name.clone().unwrap_or_else(|| "-".into()),
        (Column::Conns, _) => group.members.len().to_string(),
        (Column::Processes, _) => processes(group, model).join(", "),
        (Column::RxRate, _) => rate(window.rate(group.rx_history.iter().copied()), units),
        (Column::TxRate, _) => rate(window.rate(group.tx_history.iter().copied()), units),
        (Column::RxTotal, _) => bytes(group.rx_total, raw),
        (Column::TxTotal, _) => bytes(group.tx_total, raw),
        _ => "-".into(),
    }
}

/// The distinct processes of a group's members, as "comm (pid)", in member order.
fn processes(group: &Group, model: &Model) -> Vec<String> {
    let conns = group.members.iter().filter_map(|id| model.row(*id)).map(|r| &r.conn);
    distinct(conns.map(|c| match c.pid {
        Some(pid) => format!("{} ({pid})", or_dash(&c.comm)),
        None => or_dash(&c.comm),
    }))
}

/// `items` without repeats, in first-seen order.
fn distinct(items: impl Iterator<Item = String>) -> Vec<String> {
    let mut seen = Vec::new();
    for item in items {
        if !seen.contains(&item) {
            seen.push(item);
        }
    }
    seen
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "-".into(), |pid| pid.to_string())
}

fn state_text(conn: &Conn) -> String {
    conn.state_label().unwrap_or("-").to_string()
}

/// A time of `us` microseconds with three significant digits at most, in µs, ms or s.
fn micros(us: u32) -> String {
    let ms = f64::from(us) / 1000.0;
    match us {
        0..1_000 => format!("{us} µs"),
        1_000..10_000 => format!("{ms:.2} ms"),
        10_000..100_000 => format!("{ms:.1} ms"),
        100_000..1_000_000 => format!("{ms:.0} ms"),
        _ => format!("{:.2} s", ms / 1000.0),
    }
}

/// The detail pane's health figures of a TCP connection: the handshake, which ends the pid
/// line, and a line of RTT, retransmits and resets ("-" for each one unknown).
fn health_text(row: &ConnRow) -> (String, String) {
    let h = row.conn.health.unwrap_or_default();
    let mark = estimate_mark(&row.conn);
    let known = |n: Option<u32>| n.map_or_else(|| "-".into(), |n| n.to_string());
    let connect = match h.connect {
        Some(c) => {
            let took = micros(c.took.as_micros().try_into().unwrap_or(u32::MAX));
            format!("{} {took}", if c.failed { "tried" } else { "connect" })
        }
        None => "connect -".into(),
    };
    let rtt = h.rtt.map_or_else(
        || "RTT -".into(),
        |r| {
            format!(
                "RTT {mark}{} ±{} min {}",
                micros(r.smoothed_us),
                micros(r.variation_us),
                micros(r.min_us)
            )
        },
    );
    let retrans = match (h.retrans, row.retransmits()) {
        (Some(total), Some(now)) => format!("retrans {mark}{total} ({now} now)"),
        _ => "retrans -".into(),
    };
    let resets = format!("RST {} out {} in", known(h.resets_sent), known(h.resets_received));
    (format!(" · {connect}"), format!("{rtt} · {retrans} · {resets}"))
}

/// `~` before a health figure estimated from packets (capture), as the batch table marks it.
fn estimate_mark(conn: &Conn) -> &'static str {
    if conn.health.is_some_and(|h| h.estimated) {
        "~"
    } else {
        ""
    }
}

fn or_dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.into()
    }
}

/// The table of a frame: the cells of the rows on screen and the columns that fit.
struct TablePlan {
    /// Each row's cells, one per column of `shown`, and its style.
    lines: Vec<(Vec<String>, Style)>,
    shown: &'static [Column],
    /// The columns drawn, as indices into `shown`, with their widths.
    chosen: Vec<(usize, u16)>,
}

impl TablePlan {
    fn new(state: &TuiState, screen: &Screen, area: Rect) -> TablePlan {
        let columns = columns(state.grouping);
        let shown = columns.shown;
        let cells = Cells {
            units: Units::of(state),
            naming: screen.naming.as_ref(),
            window: screen.model.window(state.averaging),
        };
        let len = screen.rows.len();
        let visible = state.offset.min(len)..(state.offset + area.height.saturating_sub(1) as usize).min(len);
        let style = |closed_for: Option<u32>, opened: bool| {
            if let Some(intervals) = closed_for {
                fade(intervals)
            } else if opened && !screen.first_interval {
                Style::new().fg(Color::Green).add_modifier(Modifier::BOLD)
            } else {
                Style::new()
            }
        };
        let lines: Vec<(Vec<String>, Style)> = match screen.rows {
            Rows::Conns(rows, peers) => rows[visible.clone()]
                .iter()
                .map(|row| {
                    let peer = peers.get(&row.conn.id).copied();
                    let line = shown.iter().map(|c| conn_cell(row, peer, *c, cells)).collect();
                    (line, style(row.closed_for, row.opened))
                })
                .collect(),
            Rows::Groups(groups) => groups[visible.clone()]
                .iter()
                .map(|group| {
                    let line = shown.iter().map(|c| group_cell(group, screen.model, *c, cells)).collect();
                    (line, style(group.closed_for, group.opened))
                })
                .collect(),
        };
        let index_of = |column: &Column| shown.iter().position(|c| c == column).unwrap();
        let widest = |column: &Column| {
            let i = index_of(column);
            lines.iter().map(|(cells, _)| text_width(&cells[i])).max().unwrap_or(0)
        };
        let min: Vec<u16> =
            columns.kept.iter().map(|c| c.min_width().max(if c.widens() { widest(c) } else { 0 })).collect();
        let preferred: Vec<u16> = columns
            .kept
            .iter()
            .zip(&min)
            .map(|(c, &least)| c.preferred_width(widest(c)).max(least))
            .collect();
        let kept_widths = column_widths(&columns, &min, &preferred, area.width);
        let width_of = |i: usize| kept_widths[columns.kept.iter().position(|c| *c == shown[i]).unwrap()];
        let chosen = (0..shown.len()).map(|i| (i, width_of(i))).filter(|&(_, width)| width > 0).collect();
        TablePlan { lines, shown, chosen }
    }

    /// Where each sortable column's heading is, from the table's left edge.
    fn headings(&self, grouping: Grouping) -> Vec<(Range<u16>, SortKey)> {
        let mut x = 0;
        let mut headings = Vec::new();
        for &(i, width) in &self.chosen {
            if let Some(key) = self.shown[i].sort_key(grouping) {
                headings.push((x..x + width, key));
            }
            x += width + 1;
        }
        headings
    }
}

/// The state of the table shown beside the process view on a screen of `area` as wide as
/// `SIDE_BY_SIDE_WIDTH`: the remote hosts, sorted alike, from the top, no cursor.
pub fn beside(state: &TuiState, area: Rect) -> Option<TuiState> {
    (state.grouping == Grouping::Process && area.width >= SIDE_BY_SIDE_WIDTH).then(|| TuiState {
        grouping: Grouping::RemoteHost,
        offset: 0,
        ..state.clone()
    })
}

/// The table's area, and the one beside it (empty where none is shown).
fn split(screen: &Screen, area: Rect) -> (Rect, Rect) {
    if screen.beside.is_none() {
        return (area, Rect { width: 0, ..area });
    }
    let [main, side] = Layout::horizontal([Constraint::Fill(1); 2]).spacing(2).areas(area);
    (main, side)
}

/// Where the sortable headings of the table are on a screen of `area`, for clicks.
pub fn headings(state: &TuiState, screen: &Screen, area: Rect) -> Vec<(Range<u16>, SortKey)> {
    let (table, _) = split(screen, Areas::new(area, state.detail).table);
    let plan = TablePlan::new(state, screen, table);
    plan.headings(state.grouping)
        .into_iter()
        .map(|(x, key)| (x.start + table.x..x.end + table.x, key))
        .collect()
}

/// The table of `screen`'s rows in `area`, the selected row marked if `cursor`.
fn table(state: &TuiState, screen: &Screen, area: Rect, cursor: bool, frame: &mut Frame) {
    if area.is_empty() {
        return;
    }
    let TablePlan { lines, shown, chosen } = TablePlan::new(state, screen, area);
    let sort = state.sort();
    let header = Row::new(chosen.iter().map(|&(i, width)| {
        let column = shown[i];
        if column.sorted_by(sort, state.grouping) {
            let title = format!("{}{}", column.title(), sort_arrow(state));
            let marked = Modifier::BOLD | Modifier::UNDERLINED;
            aligned(cut(&title, width), column)
                .style(Style::new().fg(Color::Black).bg(Color::Cyan).add_modifier(marked))
        } else {
            aligned(cut(column.title(), width), column)
        }
    }))
    .style(Style::new().fg(Color::Black).bg(Color::Gray).bold());
    let rows = lines.iter().map(|(cells, style)| {
        Row::new(chosen.iter().map(|&(i, width)| aligned(cut_cell(&cells[i], shown[i], width), shown[i])))
            .style(*style)
    });
    let constraints = chosen.iter().map(|&(_, width)| Constraint::Length(width));
    let table = Table::new(rows, constraints)
        .header(header)
        .column_spacing(1)
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let first = state.offset.min(screen.rows.len());
    let selected = state.selected.checked_sub(first).filter(|_| cursor && !screen.rows.is_empty());
    frame.render_stateful_widget(table, area, &mut TableState::new().with_selected(selected));

    if screen.rows.is_empty() {
        let mut message = match Filter::parse(&state.filter) {
            Err(error) => format!("bad filter: {error}"),
            Ok(filter) if filter.is_empty() => "no connections".to_string(),
            Ok(_) => format!("no connection matches “{}”", state.filter),
        };
        let filters = &screen.header.filters;
        if !filters.is_empty() {
            message += &format!(" with {}", filters.join(", "));
        }
        let hidden: Vec<&str> = [(state.hide_closed, "closed"), (state.hide_idle, "idle")]
            .into_iter()
            .filter_map(|(hidden, what)| hidden.then_some(what))
            .collect();
        if !hidden.is_empty() {
            message += &format!(" ({} hidden)", hidden.join(" and "));
        }
        message += if screen.model.is_empty() && state.filter.is_empty() { " yet" } else { "" };
        let body = Rect { y: area.y + 1, height: area.height.saturating_sub(1), ..area };
        frame.render_widget(Paragraph::new(message).dark_gray().centered(), body);
    }
}

/// A closed row's style: the theme's dark grey (bright black), dimmed after its first
/// interval, until the row leaves the table. The 16-colour palette follows a light or dark
/// theme, where fixed greys of the 256-colour one would grow darker on a light background.
fn fade(closed_for: u32) -> Style {
    let style = Style::new().fg(Color::DarkGray);
    if closed_for == 0 {
        style
    } else {
        style.add_modifier(Modifier::DIM)
    }
}

/// `text` cut to `width` columns, with `…` where it was cut; an address keeps its port.
fn cut_cell(text: &str, column: Column, width: u16) -> String {
    let address = matches!(column, Column::Local | Column::Remote);
    match text.rsplit_once(':').filter(|_| address && text_width(text) > width) {
        Some((host, port)) => {
            let host_room = width.saturating_sub(text_width(port) + 1);
            if host_room == 0 {
                cut(text, width)
            } else {
                format!("{}:{port}", cut(host, host_room))
            }
        }
        None => cut(text, width),
    }
}

/// `text` cut to `width` columns, its last one `…` where it was cut.
pub fn cut(text: &str, width: u16) -> String {
    if text_width(text) <= width {
        return text.to_string();
    }
    let kept: String = text.chars().take(width.saturating_sub(1) as usize).collect();
    if width == 0 {
        kept
    } else {
        kept + "…"
    }
}

/// Draws `lines` in `area`, each cut to its width with `…`.
fn draw_lines(lines: Vec<Line<'static>>, area: Rect, frame: &mut Frame) {
    let lines: Vec<Line> = lines.into_iter().map(|line| cut_line(line, area.width)).collect();
    frame.render_widget(Paragraph::new(lines), area);
}

/// `line` cut to `width` columns, its last one `…` where it was cut; styles are kept.
fn cut_line(line: Line<'static>, width: u16) -> Line<'static> {
    if line.width() <= width as usize {
        return line;
    }
    let mut room = width;
    let mut spans = Vec::new();
    for span in line.spans {
        let span_width = text_width(&span.content);
        if span_width < room {
            room -= span_width;
            spans.push(span);
            continue;
        }
        let kept: String = span.content.chars().take(room.saturating_sub(1) as usize).collect();
        spans.push(Span::styled(kept + "…", span.style));
        break;
    }
    Line { spans, ..line }
}

/// Terminal columns of `text` (what tcptop shows has no wide characters).
fn text_width(text: &str) -> u16 {
    text.chars().count().try_into().unwrap_or(u16::MAX)
}

fn aligned(text: String, column: Column) -> Line<'static> {
    if column.right_aligned() {
        Line::from(text).right_aligned()
    } else {
        Line::from(text)
    }
}

fn detail(state: &TuiState, screen: &Screen, area: Rect, frame: &mut Frame) {
    if area.is_empty() {
        return;
    }
    let units = Units::of(state);
    let window = screen.model.window(state.averaging);
    let cmdline = || format!("cmd: {}", screen.cmdline.unwrap_or("-"));
    let mut rtt = None;
    let (title, lines, rx, tx) = match screen.rows {
        Rows::Conns(rows, peers) => {
            let Some(row) = rows.get(state.selected) else {
                return empty_detail(area, frame);
            };
            let c = &row.conn;
            let health = (c.proto == Proto::Tcp).then(|| health_text(row));
            let owner = |c: &Conn| format!("pid {} · {}", pid_text(c.pid), or_dash(&c.comm));
            let mut lines = vec![
                Line::from(format!("{} {} → {}", c.proto, c.local, c.remote)),
                Line::from(format!(
                    "{} · {}{}",
                    owner(c),
                    state_text(c),
                    health.as_ref().map_or("", |(handshake, _)| handshake)
                )),
            ];
            // A folded row's other end, within the host too.
            lines
                .extend(peers.get(&c.id).map(|peer| Line::from(format!("other end: {}", owner(&peer.conn)))));
            lines.extend([
                Line::from(cmdline()),
                Line::from(format!(
                    "container {} · netns {}",
                    c.container().as_deref().unwrap_or("-"),
                    c.netns.map_or_else(|| "-".to_string(), |ns| ns.to_string())
                )),
            ]);
            lines.extend(health.map(|(_, figures)| Line::from(figures)));
            lines.extend(history(&row.events, history_room(lines.len()), state.detail_scroll));
            let rx = Flow { name: "RX", history: row.rx_history.iter().collect(), total: c.rx_bytes };
            let tx = Flow { name: "TX", history: row.tx_history.iter().collect(), total: c.tx_bytes };
            rtt = Some(row).filter(|row| !row.rtt_history.is_empty());
            (" connection ".to_string(), lines, rx, tx)
        }
        Rows::Groups(groups) => {
            let Some(group) = groups.get(state.selected) else {
                return empty_detail(area, frame);
            };
            let (title, mut lines) = group_detail(group, screen.model, cmdline());
            lines.insert(0, Line::from(format!("{} connections", group.members.len())));
            let rx = Flow {
                name: "RX",
                history: group.rx_history.iter().copied().collect(),
                total: group.rx_total,
            };
            let tx = Flow {
                name: "TX",
                history: group.tx_history.iter().copied().collect(),
                total: group.tx_total,
            };
            (title, lines, rx, tx)
        }
    };
    let block = Block::new().borders(Borders::TOP).title(title.bold());
    let inner = block.inner(area);
    frame.render_widget(block, area);
    let [text, charts] =
        Layout::horizontal([Constraint::Fill(3), Constraint::Fill(2)]).spacing(2).areas(inner);
    draw_lines(lines, text, frame);
    let mut plots = Vec::new();
    for (flow, color) in [(rx, Color::Green), (tx, Color::Cyan)] {
        let text = format!(
            "{} {} · {} total",
            flow.name,
            per_second(window.rate(flow.history.iter().copied()), units),
            amount(flow.total, units.raw)
        );
        let peak =
            flow.history.iter().max().copied().unwrap_or(0) as f64 / screen.header.interval.as_secs_f64();
        plots.push((text, flow.history, per_second(peak, units), color));
    }
    if let Some(row) = rtt {
        let (now, mark) = (row.conn.health.and_then(|h| h.rtt), estimate_mark(&row.conn));
        let text = now.map_or_else(
            || "RTT -".to_string(),
            |rtt| format!("RTT {mark}{} ±{}", micros(rtt.smoothed_us), micros(rtt.variation_us)),
        );
        let peak = row.rtt_history.iter().max().unwrap_or(0);
        plots.push((
            text,
            row.rtt_history.iter().collect(),
            micros(peak.try_into().unwrap_or(u32::MAX)),
            Color::Magenta,
        ));
    }
    let areas = Layout::vertical(vec![Constraint::Fill(1); plots.len()]).split(charts);
    for ((text, points, peak, color), &area) in plots.into_iter().zip(areas.iter()) {
        let [label, chart] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
        draw_lines(vec![Line::from(text).fg(color)], label, frame);
        sparkline(points.iter().copied(), &peak, color, chart, frame);
    }
}

/// Lines of the detail pane left for the history under `lines` of figures.
fn history_room(lines: usize) -> usize {
    (DETAIL_HEIGHT as usize - 1).saturating_sub(lines)
}

/// How far back the selected connection's history can scroll: past all but the events
/// that fit. Nothing for a group.
pub fn history_scroll_limit(state: &TuiState, screen: &Screen) -> usize {
    let Rows::Conns(rows, _) = screen.rows else { return 0 };
    let Some(row) = rows.get(state.selected) else { return 0 };
    // As `detail` draws them: addresses, pid, command line, container, and TCP's health.
    let figures = if row.conn.proto == Proto::Tcp { 5 } else { 4 };
    row.events.len().saturating_sub(history_room(figures).saturating_sub(1))
}

/// The title and first lines of a group's detail pane.
fn group_detail(group: &Group, model: &Model, cmdline: String) -> (String, Vec<Line<'static>>) {
    let members = || group.members.iter().filter_map(|id| model.row(*id)).map(|r| &r.conn);
    match &group.key {
        GroupKey::Process { pid, comm } => {
            let peers = distinct(members().map(|c| c.remote.to_string()));
            let pid = pid_text(*pid);
            let lines = vec![Line::from(cmdline), Line::from(format!("peers: {}", peers.join(", ")))];
            (format!(" {} (pid {pid}) ", or_dash(comm)), lines)
        }
        GroupKey::RemoteHost(ip) => {
            let mut ports: Vec<u16> = members().map(|c| c.remote.port()).collect();
            ports.sort_unstable();
            ports.dedup();
            let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
            let lines = vec![
                Line::from(format!("processes: {}", processes(group, model).join(", "))),
                Line::from(format!("remote ports: {}", ports.join(", "))),
            ];
            (format!(" {ip} "), lines)
        }
        GroupKey::Container(name) => {
            let hosts = distinct(members().map(|c| c.remote.ip().to_string()));
            let lines = vec![
                Line::from(format!("processes: {}", processes(group, model).join(", "))),
                Line::from(format!("remote hosts: {}", hosts.join(", "))),
            ];
            (format!(" container {} ", name.as_deref().unwrap_or("unknown")), lines)
        }
        GroupKey::Connection(_) => (" connection ".to_string(), Vec::new()),
    }
}

/// One direction of a connection or group, for its sparkline.
struct Flow {
    name: &'static str,
    history: Vec<u64>,
    total: u64,
}

fn empty_detail(area: Rect, frame: &mut Frame) {
    let block = Block::new().borders(Borders::TOP);
    frame.render_widget(Paragraph::new("nothing selected").dark_gray().block(block), area);
}

/// The state changes that fit in `room` lines, the newest but the last `scroll`, times
/// relative to the first one.
fn history(events: &[ConnEvent], room: usize, scroll: usize) -> Vec<Line<'static>> {
    let Some(first) = events.first() else {
        return vec![Line::from("history: no state change seen yet").dark_gray()];
    };
    let shown = events.len().min(room.saturating_sub(1));
    let later = scroll.min(events.len() - shown);
    let end = events.len() - later;
    let earlier = end - shown;
    let mut lines = vec![Line::from(match (earlier, later) {
        (0, 0) => "history:".to_string(),
        (earlier, 0) => format!("history ({earlier} earlier, [ scrolls):"),
        (earlier, later) => format!("history ({earlier} earlier, {later} later, [ ] scroll):"),
    })];
    lines.extend(events[earlier..end].iter().map(|event| {
        let at = event.at.saturating_sub(first.at).as_secs_f64();
        let what = match event.kind {
            EventKind::State { old, new } => format!("{old} → {new}"),
            EventKind::Closed => "closed".to_string(),
        };
        Line::from(format!("  +{at:.3}s {what}"))
    }));
    lines
}

fn status(state: &TuiState, screen: &Screen, area: Rect, frame: &mut Frame) {
    let mut flags: Vec<Span> = Vec::new();
    let filter_error = Filter::parse(&state.filter).err();
    if !state.filter.is_empty() && !state.editing_filter {
        flags.push(match &filter_error {
            Some(error) => format!(" bad filter: {error} ").white().on_red(),
            None => format!(" filter: {} ", state.filter).black().on_yellow(),
        });
    }
    if state.following {
        flags.push(" following ".black().on_light_blue());
    }
    let shown = [
        (state.hide_closed, " closed hidden "),
        (state.hide_idle, " idle hidden "),
        (state.fold_pairs && state.grouping == Grouping::Connection, " local pairs folded "),
    ];
    for (hidden, what) in shown {
        if hidden {
            flags.push(what.black().on_light_blue());
        }
    }
    if state.paused {
        flags.push(" PAUSED ".black().on_light_blue().bold());
    }
    let overflow = screen.model.overflow();
    if !overflow.is_zero() {
        flags.push(
            format!(
                " OVERFLOW untracked {} · lost events {} · dropped packets {} ",
                overflow.untracked_conns, overflow.lost_events, overflow.dropped_packets
            )
            .white()
            .on_red()
            .bold(),
        );
    }
    flags.push(collector_flag(state, &screen.header.backend, area.width));
    let flags = Line::from(flags.into_iter().flat_map(|s| [Span::raw(" "), s]).collect::<Vec<_>>());
    let [left, right] =
        Layout::horizontal([Constraint::Fill(1), Constraint::Length(flags.width() as u16)]).areas(area);
    let left_line = if state.editing_filter {
        let mut line = Line::from(vec!["/".bold(), state.filter.clone().into(), "█".into()]);
        line.push_span(match filter_error {
            Some(error) => format!("  {error}").red(),
            None => format!("  Enter keep · Esc clear · {}:", FILTER_KEYS.join(": ")).dark_gray(),
        });
        line
    } else {
        let hints = [
            ("q", "quit"),
            ("?", "help"),
            ("/", "filter"),
            ("s", "sort"),
            ("F", "follow"),
            ("d", "detail"),
            ("n", "names"),
            ("b", "bits"),
            ("space", "pause"),
        ];
        Line::from(
            hints
                .iter()
                .flat_map(|(key, what)| [key.bold(), format!(" {what}  ").dark_gray()])
                .collect::<Vec<_>>(),
        )
    };
    draw_lines(vec![left_line], left, frame);
    draw_lines(vec![flags], right, frame);
}

/// The collector in use, and why it is not the best one where it fell back (cut to half a
/// status line `width` wide at most; the help shows it whole).
fn collector_flag(state: &TuiState, backend: &str, width: u16) -> Span<'static> {
    let label = collector_label(backend);
    match &state.collector_notice {
        Some(notice) => {
            let room = (width / 2).max(30);
            format!(" {} ", cut(&format!("{label}: {notice}"), room.saturating_sub(2))).black().on_yellow()
        }
        None => format!(" {label} ").dark_gray(),
    }
}

/// The collector's name as the screen shows it: an eBPF plan (named after its counting
/// hooks) says eBPF; sock_diag and capture name themselves.
fn collector_label(backend: &str) -> String {
    let hooks = backend.split('/').next();
    if Strategy::AUTO_ORDER.iter().any(|strategy| Some(strategy.name()) == hooks) {
        format!("eBPF {backend}")
    } else {
        backend.to_string()
    }
}

/// Each key and what it does; the keys column names keys as `keys::tests` checks them.
pub(super) const HELP: &[(&str, &str)] = &[
    ("Up Down j k", "move (the cursor keeps its row as rows re-sort)"),
    ("PgUp PgDn", "move a page"),
    ("Home End", "first, last row"),
    ("F", "follow the selected row as it moves"),
    ("s > S < r", "next, previous sort column; reverse the sort"),
    ("F6", "sort menu: Up Down, Enter sorts, Esc closes"),
    ("/ F3 F4", "filter: port:443 pid:1234 comm:curl state:est"),
    ("", "host:example proto:udp, or words; all must match"),
    ("Enter Esc", "keep the typed filter; clear the filter"),
    ("space", "pause the display (collection goes on)"),
    ("1 2 3 4 g Tab", "views: connection, process, remote host, container; next"),
    ("a L", "rates over 1 interval, 10 s, 40 s; local pairs in one row"),
    ("c i", "hide closed, idle rows"),
    ("Enter d [ ]", "detail pane; scroll its history: older, newer"),
    ("n b", "names or numbers; rates in bits or bytes"),
    ("mouse", "wheel scrolls; click a row, or a heading to sort"),
    ("? F1", "this help"),
    ("q F10 Ctrl-C", "quit"),
];

fn help(state: &TuiState, screen: &Screen, frame: &mut Frame) {
    /// Room for a fallback's reason in three lines.
    const WIDTH: u16 = 76;
    let mut lines: Vec<Line> = HELP
        .iter()
        .map(|(keys, what)| Line::from(vec![format!("{keys:>13}  ").bold(), (*what).into()]))
        .collect();
    lines.push(Line::from(vec![
        "  green".green().bold(),
        ": opened in the last interval · ".into(),
        "grey".dark_gray(),
        ": closed".into(),
    ]));
    let collector = format!("collector: {}", collector_label(&screen.header.backend));
    match &state.collector_notice {
        Some(notice) => lines.extend(
            wrap(&format!("{collector} · {notice}"), WIDTH as usize - 4)
                .into_iter()
                .map(|line| Line::from(format!("  {line}")).yellow()),
        ),
        None => lines.push(Line::from(format!("  {collector}"))),
    }
    let height = lines.len() as u16 + 2;
    let area = frame.area().centered(Constraint::Max(WIDTH), Constraint::Max(height));
    frame.render_widget(Clear, area);
    let block = Block::bordered().title(" tcptop keys ".bold()).title_bottom(" any key closes ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// `text` in lines of at most `width` columns, broken between words.
fn wrap(text: &str, width: usize) -> Vec<String> {
    let mut lines: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        match lines.last_mut() {
            Some(line) if line.chars().count() + 1 + word.chars().count() <= width => {
                line.push(' ');
                line.push_str(word);
            }
            _ => lines.push(word.to_string()),
        }
    }
    lines
}

/// The sort menu (htop's F6): the grouping's sort keys, the cursor's reversed, the one in
/// effect marked.
fn sort_menu(state: &TuiState, frame: &mut Frame) {
    let keys = state.grouping.sort_keys();
    let lines: Vec<Line> = keys
        .iter()
        .enumerate()
        .map(|(i, &key)| {
            let mark = if key == state.sort() { sort_arrow(state) } else { " " };
            let line = Line::from(format!(" {mark} {:<10}", sort_key_name(key, state.grouping)));
            if state.sort_menu == Some(i) {
                line.reversed()
            } else {
                line
            }
        })
        .collect();
    let area = frame.area().centered(Constraint::Max(26), Constraint::Max(lines.len() as u16 + 2));
    frame.render_widget(Clear, area);
    let block = Block::bordered().title(" sort by ".bold()).title_bottom(" Enter · Esc ");
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

/// The command-line filters as the header shows them, or nothing.
fn only(filters: &[String]) -> String {
    if filters.is_empty() {
        String::new()
    } else {
        format!(" only {} ", filters.join(" · "))
    }
}

fn sort_name(state: &TuiState) -> &'static str {
    sort_key_name(state.sort(), state.grouping)
}

fn sort_key_name(key: SortKey, grouping: Grouping) -> &'static str {
    sort_column(key, grouping).map_or("RX+TX/s", Column::title)
}

/// ▼ for largest (or last) first.
fn sort_arrow(state: &TuiState) -> &'static str {
    let descending = matches!(
        state.sort(),
        SortKey::Total
            | SortKey::Rx
            | SortKey::Tx
            | SortKey::RxTotal
            | SortKey::TxTotal
            | SortKey::Rtt
            | SortKey::Retrans
    );
    if descending != state.reverse {
        "▼"
    } else {
        "▲"
    }
}

/// `n` bytes with three significant digits in B, KiB, MiB, GiB or TiB; or the bare count.
pub fn bytes(n: u64, raw: bool) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if raw {
        return n.to_string();
    }
    if n < 1024 {
        return format!("{n} B");
    }
    three_digits(n as f64, 1024.0, &UNITS)
}

/// `n` in the largest of `units` it reaches (the first is `step` ones, each next `step` of
/// the last), with three significant digits.
fn three_digits(n: f64, step: f64, units: &[&str]) -> String {
    let mut value = n / step;
    let mut unit = 0;
    while value >= step && unit + 1 < units.len() {
        value /= step;
        unit += 1;
    }
    let decimals = if value < 10.0 {
        2
    } else if value < 100.0 {
        1
    } else {
        0
    };
    format!("{value:.decimals$} {}", units[unit])
}

/// `n` bytes with their unit.
fn amount(n: u64, raw: bool) -> String {
    if raw {
        format!("{n} B")
    } else {
        bytes(n, false)
    }
}

/// How rates are shown: bytes (human or exact) or bits.
#[derive(Clone, Copy, Debug)]
struct Units {
    raw: bool,
    bits: bool,
}

impl Units {
    fn of(state: &TuiState) -> Units {
        Units { raw: state.raw_bytes, bits: state.bits }
    }
}

/// A rate of `bytes_per_second` for a rate column (which says /s).
fn rate(bytes_per_second: f64, units: Units) -> String {
    if units.bits {
        bits(bytes_per_second * 8.0)
    } else {
        bytes(bytes_per_second.round() as u64, units.raw)
    }
}

fn per_second(bytes_per_second: f64, units: Units) -> String {
    if units.bits {
        format!("{}/s", bits(bytes_per_second * 8.0))
    } else {
        format!("{}/s", amount(bytes_per_second.round() as u64, units.raw))
    }
}

/// `n` bits with three significant digits in bit, kbit, Mbit, Gbit or Tbit (SI, as links
/// are rated).
fn bits(n: f64) -> String {
    const UNITS: [&str; 4] = ["kbit", "Mbit", "Gbit", "Tbit"];
    if n < 1000.0 {
        return format!("{n:.0} bit");
    }
    three_digits(n, 1000.0, &UNITS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_are_human_with_three_digits_or_raw() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.00 KiB"),
            (1536, "1.50 KiB"),
            (12_345, "12.1 KiB"),
            (1_048_575, "1024 KiB"),
            (5 << 20, "5.00 MiB"),
            (300 << 30, "300 GiB"),
            (3 << 40, "3.00 TiB"),
            (5000 << 40, "5000 TiB"),
        ];
        for (n, text) in cases {
            assert_eq!(bytes(n, false), text, "{n}");
        }
        assert_eq!(bytes(1_048_575, true), "1048575");
        let units = |raw, bits| Units { raw, bits };
        assert_eq!(per_second(2047.6, units(false, false)), "2.00 KiB/s");
        assert_eq!(per_second(2047.6, units(true, false)), "2048 B/s");
        assert_eq!(per_second(2047.6, units(false, true)), "16.4 kbit/s");
        assert_eq!(rate(125_000_000.0, units(true, true)), "1.00 Gbit");
        let cases = [
            (0.0, "0 bit"),
            (999.0, "999 bit"),
            (1000.0, "1.00 kbit"),
            (123_456.0, "123 kbit"),
            (5e15, "5000 Tbit"),
        ];
        for (n, text) in cases {
            assert_eq!(bits(n), text, "{n}");
        }
    }

    #[test]
    fn times_have_three_digits_at_most() {
        let cases =
            [(0, "0 µs"), (999, "999 µs"), (1_234, "1.23 ms"), (45_678, "45.7 ms"), (999_999, "1000 ms")];
        for (us, text) in cases {
            assert_eq!(micros(us), text, "{us}");
        }
        assert_eq!(micros(1_500_000), "1.50 s");
    }
}
