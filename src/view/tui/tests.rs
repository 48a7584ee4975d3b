//! Snapshot tests of the live screen: scripted samples feed the model at explicit times,
//! keys go through the same handling as in a terminal, and frames are drawn on a TestBackend.

use std::collections::VecDeque;
use std::time::Duration;

use crossterm::event::{Event, KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::style::{Color, Modifier};

use tokio::sync::mpsc::UnboundedReceiver;

use super::screen::Header;
use super::state::TuiState;
use super::*;
use crate::model::{
    Conn, ConnEvent, EventKind, Handshake, Overflow, Retention, Rtt, Sample, SortKey, TcpHealth, TcpState,
};
use crate::resolve::tests::{Silent, Table};
use crate::resolve::{Lookup, Names, Resolved, Services};

/// Pids above the kernel's limit (2^22), so that no /proc entry exists for them.
const PID_BASE: u32 = 5_000_000;

/// An established connection of process `PID_BASE + pid`, with these totals.
fn conn(id: u64, pid: u32, comm: &str, ends: (&str, &str), totals: (u64, u64)) -> Conn {
    crate::model::conn::test_conn(id, PID_BASE + pid, comm, ends, totals)
}

/// `conn` with the kernel's RTT (µs), retransmit total and, if seen, handshake time (ms).
fn with_health(conn: Conn, rtt_us: Option<u32>, retrans: u64, connect_ms: Option<u64>) -> Conn {
    let health = TcpHealth {
        rtt: rtt_us.map(|us| Rtt { smoothed_us: us, variation_us: us / 8, min_us: us * 3 / 4 }),
        retrans: Some(retrans),
        connect: connect_ms.map(|ms| Handshake { took: Duration::from_millis(ms), failed: false }),
        resets_sent: Some(0),
        resets_received: Some(0),
        estimated: false,
    };
    Conn { health: Some(health), ..conn }
}

/// A Docker container's cgroup.
const DOCKER: &str =
    "/system.slice/docker-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef.scope";

fn in_cgroup(conn: Conn, path: &str) -> Conn {
    Conn { cgroup: Some(path.into()), ..conn }
}

fn event(at_ms: u64, kind: EventKind, conn: Conn) -> ConnEvent {
    ConnEvent { at: Duration::from_millis(at_ms), kind, conn }
}

/// Two intervals of a small machine: curl downloading over two connections (one closes in
/// the second interval) in a container, an ssh session, an idle database connection, a python
/// client that finishes its handshake (its cgroup unknown), and wget starting in the second
/// interval in a login session.
fn samples() -> VecDeque<Sample> {
    use TcpState::*;
    let curl1 = |rx, tx, retrans| {
        let curl = conn(1, 1201, "curl", ("10.0.0.5:51000", "93.184.216.34:443"), (rx, tx));
        with_health(in_cgroup(curl, DOCKER), Some(18_240), retrans, None)
    };
    let curl2 =
        |rx, tx| in_cgroup(conn(3, 1201, "curl", ("10.0.0.5:51002", "93.184.216.34:443"), (rx, tx)), DOCKER);
    let sshd = |rx, tx| {
        let sshd = conn(2, 880, "sshd", ("10.0.0.5:22", "198.51.100.7:53122"), (rx, tx));
        with_health(in_cgroup(sshd, "/system.slice/ssh.service"), Some(850), 0, None)
    };
    let postgres = in_cgroup(
        conn(4, 77, "postgres", ("[::1]:5432", "[::1]:40112"), (1200, 800)),
        "/system.slice/postgresql.service",
    );
    // Its first SYN was lost: one retransmit, a handshake of a second.
    let python = |state, rx, tx| {
        let python = Conn {
            state: Some(state),
            ..conn(5, 1300, "python3", ("10.0.0.5:48000", "203.0.113.9:8080"), (rx, tx))
        };
        match state {
            SynSent => with_health(python, None, 0, None),
            _ => with_health(python, Some(2_100), 1, Some(1_020)),
        }
    };
    let wget = in_cgroup(
        conn(6, 1450, "wget", ("10.0.0.5:51010", "93.184.216.34:80"), (4096, 150)),
        "/user.slice/user-1000.slice/session-2.scope",
    );
    let first = Sample {
        conns: vec![
            curl1(1_572_864, 800, 2),
            sshd(3_000, 45_000),
            curl2(20_000, 500),
            postgres.clone(),
            python(SynSent, 0, 0),
        ],
        ..Sample::default()
    };
    let second = Sample {
        conns: vec![
            curl1(4_718_592, 1_600, 5),
            sshd(3_600, 52_000),
            postgres,
            python(Established, 0, 64),
            wget.clone(),
        ],
        events: vec![
            event(100_250, EventKind::State { old: SynSent, new: Established }, python(Established, 0, 0)),
            event(100_400, EventKind::State { old: SynSent, new: Established }, wget),
            event(100_900, EventKind::Closed, curl2(52_000, 500)),
        ],
        ..Sample::default()
    };
    VecDeque::from([first, second])
}

struct Harness {
    /// Played back one per interval, then nothing new.
    samples: VecDeque<Sample>,
    model: Model,
    tui: Tui<TestBackend>,
    now: Duration,
}

impl Harness {
    fn new(width: u16, height: u16) -> Harness {
        Harness::with(width, height, TuiState::default())
    }

    fn with(width: u16, height: u16, state: TuiState) -> Harness {
        Harness::with_header(width, height, state, Vec::new())
    }

    /// A screen of a tcptop started with these command-line filters (described).
    fn with_header(width: u16, height: u16, state: TuiState, filters: Vec<String>) -> Harness {
        let header = Header {
            host: "testhost".into(),
            backend: "fentry".into(),
            interval: Duration::from_secs(1),
            filters,
        };
        Harness {
            samples: samples(),
            model: Model::new(Duration::ZERO, Retention::default()),
            tui: Tui::new(TestBackend::new(width, height), header, state).unwrap(),
            now: Duration::ZERO,
        }
    }

    /// Both scripted intervals, drawn after each as the event loop does.
    fn started(width: u16, height: u16) -> Harness {
        let mut h = Harness::new(width, height);
        h.ticks(2);
        h
    }

    fn ticks(&mut self, n: usize) {
        for _ in 0..n {
            self.now += Duration::from_secs(1);
            self.model.update(self.samples.pop_front().unwrap_or_default(), self.now);
            self.tui.interval(&self.model);
            self.tui.draw(&self.model).unwrap();
        }
    }

    fn input(&mut self, input: Event) {
        self.tui.input(&input, &self.model);
        self.tui.draw(&self.model).unwrap();
    }

    fn key(&mut self, code: KeyCode) {
        self.input(Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    }

    fn typed(&mut self, text: &str) {
        for c in text.chars() {
            self.key(KeyCode::Char(c));
        }
    }

    fn screen(&self) -> String {
        self.tui.terminal.backend().to_string()
    }
}

#[test]
fn default_screen() {
    let h = Harness::started(120, 30);
    insta::assert_snapshot!(h.screen());
}

#[test]
fn wide_screen_shows_the_health_columns() {
    let h = Harness::started(160, 30);
    insta::assert_snapshot!(h.screen());
}

#[test]
fn screen_of_80_by_24() {
    let h = Harness::started(80, 24);
    insta::assert_snapshot!(h.screen());
}

#[test]
fn each_sort() {
    for key in SortKey::ALL {
        let mut h = Harness::with(120, 14, TuiState { sort_choice: key, ..TuiState::default() });
        h.ticks(2);
        insta::assert_snapshot!(format!("sort_{key:?}"), h.screen());
    }
}

#[test]
fn sort_keys_cycle_and_reverse() {
    let mut h = Harness::started(120, 14);
    h.typed("sr");
    assert_eq!((h.tui.state.sort(), h.tui.state.reverse), (SortKey::RxTotal, true));
    insta::assert_snapshot!(h.screen());
}

#[test]
fn filter_as_you_type() {
    let mut h = Harness::started(120, 24);
    h.typed("/curl");
    insta::assert_snapshot!("filter_typing", h.screen());
    h.key(KeyCode::Enter);
    insta::assert_snapshot!("filter_kept", h.screen());
    h.key(KeyCode::Esc);
    assert!(h.screen().contains("sshd"));
    h.typed("/nomatch");
    assert!(h.screen().contains("no connection matches “nomatch”"));
}

#[test]
fn each_grouping() {
    let mut h = Harness::started(120, 24);
    h.typed("g");
    insta::assert_snapshot!("group_process", h.screen());
    h.typed("g");
    insta::assert_snapshot!("group_remote_host", h.screen());
    h.key(KeyCode::Tab);
    insta::assert_snapshot!("group_container", h.screen());
    h.typed("g");
    assert_eq!(h.screen(), Harness::started(120, 24).screen());
}

#[test]
fn digits_choose_the_views_tabs_at_each_size() {
    for (width, height) in [(60, 20), (200, 50)] {
        let mut h = Harness::started(width, height);
        for (digit, view) in [('2', "process"), ('3', "remote_host"), ('4', "container")] {
            h.typed(&digit.to_string());
            insta::assert_snapshot!(format!("view_{view}_{width}x{height}"), h.screen());
            // The current view's tab is marked, from its key on.
            let tabs = h.screen().lines().nth(2).unwrap().to_string();
            let x = tabs.find(&format!(" {digit} ")).unwrap() as u16;
            let buffer = h.tui.terminal.backend().buffer();
            assert_eq!((buffer[(x, 2)].bg, buffer[(x + 6, 2)].bg), (Color::Cyan, Color::Cyan), "{tabs}");
            assert_eq!(buffer[(0, 2)].bg, Color::Reset);
        }
        h.typed("1");
        assert_eq!(h.screen(), Harness::started(width, height).screen());
    }
}

#[test]
fn the_process_view_has_the_remote_hosts_beside_it_from_200_columns() {
    let mut narrow = Harness::started(199, 50);
    narrow.typed("2");
    assert!(!narrow.screen().contains("REMOTE HOST"));
    let mut h = Harness::started(200, 50);
    h.typed("2");
    let top = h.tui.state.table_top;
    let headings = h.screen().lines().nth(top as usize - 1).unwrap().to_string();
    let (comm, host) = (headings.find("COMM").unwrap(), headings.find("REMOTE HOST").unwrap());
    assert!(comm < 100 && host > 100, "{headings}");
    // The cursor is in the process table only.
    let buffer = h.tui.terminal.backend().buffer();
    let reversed = |x: u16| buffer[(x, top)].modifier.contains(ratatui::style::Modifier::REVERSED);
    assert!(reversed(0) && !reversed(host as u16), "{}", h.screen());
    // A click on a heading of the process table sorts it; the remote hosts sort alike.
    let kind = crossterm::event::MouseEventKind::Down(crossterm::event::MouseButton::Left);
    let click = crossterm::event::MouseEvent {
        kind,
        column: comm as u16 - 1,
        row: top - 1,
        modifiers: KeyModifiers::NONE,
    };
    h.input(Event::Mouse(click));
    assert_eq!(h.tui.state.sort(), SortKey::Comm);
}

#[test]
fn a_averages_the_rate_columns_over_10_and_40_seconds() {
    let mut h = Harness::new(120, 35);
    h.ticks(2);
    // curl read 1.5 MiB, then 3 MiB: 2.25 MiB/s over the two seconds there are.
    assert!(h.screen().contains("3.00 MiB") && h.screen().contains("avg 1s"), "{}", h.screen());
    h.typed("a");
    insta::assert_snapshot!(h.screen());
    let screen = h.screen();
    assert!(screen.contains("2.25 MiB") && screen.contains("avg 10s"), "{screen}");
    h.typed("a");
    assert!(h.screen().contains("avg 40s"));
    h.typed("a");
    assert_eq!(h.screen(), Harness::started(120, 35).screen());
}

/// A loopback connection seen from both ends, and another local process's connection out.
fn loopback_pair() -> VecDeque<Sample> {
    let ends = |rx, tx| {
        vec![
            conn(10, 2000, "redis-cli", ("127.0.0.1:45678", "127.0.0.1:6379"), (rx, tx)),
            conn(11, 2001, "redis-server", ("127.0.0.1:6379", "127.0.0.1:45678"), (tx, rx)),
            conn(12, 2001, "redis-server", ("10.0.0.5:6379", "10.0.0.8:51234"), (10, 10)),
        ]
    };
    VecDeque::from([
        Sample { conns: ends(1_000, 100), ..Sample::default() },
        Sample { conns: ends(60_000, 2_000), ..Sample::default() },
    ])
}

#[test]
fn l_folds_both_ends_of_a_local_connection_into_one_row() {
    for (width, height) in [(80, 24), (120, 35)] {
        let mut h = Harness::new(width, height);
        h.samples = loopback_pair();
        h.ticks(2);
        assert!(
            h.screen().contains("redis-cli")
                && h.screen().lines().filter(|l| l.contains("6379")).count() >= 3
        );
        h.typed("L");
        insta::assert_snapshot!(format!("folded_{width}x{height}"), h.screen());
        assert_eq!(h.tui.keys.len(), 2);
        assert!(h.screen().contains("local pairs folded"));
        // The detail pane names both ends' processes.
        let screen = h.screen();
        assert!(
            screen.contains("pid 5002000 · redis-cli")
                && screen.contains("other end: pid 5002001 · redis-server"),
            "{screen}"
        );
        h.typed("L");
        assert_eq!(h.tui.keys.len(), 3);
    }
}

#[test]
fn health_estimated_from_packets_is_marked_in_the_table_and_the_detail_pane() {
    let mut h = Harness::with(160, 30, TuiState { detail: true, ..TuiState::default() });
    let curl = with_health(
        conn(1, 1201, "curl", ("10.0.0.5:51000", "93.184.216.34:443"), (500, 50)),
        Some(18_200),
        3,
        None,
    );
    let estimated = Conn { health: curl.health.map(|h| TcpHealth { estimated: true, ..h }), ..curl };
    h.samples = VecDeque::from([Sample { conns: vec![estimated], ..Sample::default() }]);
    h.ticks(1);
    let screen = h.screen();
    let row = screen.lines().nth(h.tui.state.table_top as usize).unwrap();
    assert!(row.contains("~18.2 ms") && row.contains(" ~3 "), "{screen}");
    assert!(screen.contains("RTT ~18.2 ms ±2.27 ms min 13.7 ms · retrans ~3 (3 now)"), "{screen}");
}

#[test]
fn help_overlay() {
    let mut h = Harness::started(100, 30);
    h.typed("?");
    insta::assert_snapshot!(h.screen());
    h.typed("x");
    assert!(!h.screen().contains("tcptop keys"));
}

#[test]
fn tiny_terminals_stay_usable() {
    let h = Harness::started(50, 10);
    insta::assert_snapshot!("tiny_50x10", h.screen());
    for (width, height) in [(1, 1), (10, 2), (20, 4)] {
        let mut h = Harness::started(width, height);
        h.typed("?");
        h.key(KeyCode::Down);
    }
}

#[test]
fn paused_screen_keeps_its_interval_while_collection_goes_on() {
    let mut h = Harness::new(120, 24);
    h.ticks(1);
    h.typed(" ");
    h.ticks(1);
    // The second interval reached the model, but the screen still shows the first.
    assert!(h.model.row(6).is_some());
    insta::assert_snapshot!(h.screen());
    h.typed(" ");
    assert!(h.screen().contains("wget"));
}

#[test]
fn overflow_is_shown() {
    let mut h = Harness::started(120, 24);
    let overflow = Overflow { untracked_conns: 3, lost_events: 2, dropped_packets: 0 };
    let conns = h.model.rows().filter(|row| !row.is_closed()).map(|row| row.conn.clone()).collect();
    h.samples.push_back(Sample { conns, overflow, ..Sample::default() });
    h.ticks(1);
    let screen = h.screen();
    let status = screen.lines().last().unwrap();
    assert!(status.contains("OVERFLOW untracked 3 · lost events 2 · dropped packets 0"), "{status}");
}

#[test]
fn selection_moves_scrolls_and_drives_the_detail_pane() {
    let mut h = Harness::started(120, 24);
    h.key(KeyCode::End);
    insta::assert_snapshot!("selected_last", h.screen());
    h.key(KeyCode::Home);
    h.typed("jj");
    assert_eq!(h.tui.state.selected_key, Some(GroupKey::Connection(6)));
    insta::assert_snapshot!("selected_new_connection", h.screen());
    // The cursor keeps its place when the order changes, as in htop: the second row was
    // sshd, it is curl by TX/s.
    h.typed("kS");
    assert_eq!((h.tui.state.sort(), h.tui.state.selected), (SortKey::Tx, 1));
    assert_eq!(h.tui.state.selected_key, Some(GroupKey::Connection(1)));
}

#[test]
fn f_follows_the_selected_connection_as_rows_re_sort() {
    let mut h = Harness::started(120, 24);
    h.typed("jF");
    assert_eq!(h.tui.state.selected_key, Some(GroupKey::Connection(2)));
    h.typed("S");
    assert_eq!((h.tui.state.selected, h.tui.state.selected_key.clone()), (0, Some(GroupKey::Connection(2))));
    assert!(h.screen().contains("following"), "{}", h.screen());
    // Home goes to the top and stays there: following ends.
    h.key(KeyCode::Home);
    h.typed("s");
    assert_eq!((h.tui.state.selected, h.tui.state.following), (0, false));
}

#[test]
fn closed_rows_go_below_live_ones_and_keys_hide_closed_and_idle_rows() {
    let mut h = Harness::started(120, 24);
    let table = |h: &Harness| -> Vec<String> {
        let top = h.tui.state.table_top as usize;
        h.screen().lines().skip(top).take_while(|l| l.starts_with("\"5")).map(String::from).collect()
    };
    assert!(table(&h).last().unwrap().contains("CLOSE"), "{:#?}", table(&h));
    h.typed("c");
    assert!(!h.screen().contains("CLOSE"));
    assert_eq!(table(&h).len(), 5);
    // postgres moved nothing in the last interval.
    h.typed("i");
    assert!(!h.screen().contains("postgres"));
    assert_eq!(table(&h).len(), 4);
    insta::assert_snapshot!(h.screen());
    h.typed("ci");
    assert_eq!(table(&h).len(), 6);
}

#[test]
fn enter_and_d_toggle_the_detail_pane() {
    let mut h = Harness::started(120, 24);
    assert!(h.screen().contains(" connection ─"));
    h.key(KeyCode::Enter);
    assert!(!h.screen().contains(" connection ─"));
    // The table takes the room: all but the header, tabs, headings and status line.
    assert_eq!(h.tui.state.page, 19);
    h.typed("d");
    assert!(h.screen().contains(" connection ─"));
}

#[test]
fn new_rows_are_highlighted_and_closed_ones_dimmed() {
    let h = Harness::started(120, 24);
    let buffer = h.tui.terminal.backend().buffer();
    let row_of = |text: &str| {
        (0..buffer.area.height).find(|y| h.screen().lines().nth(*y as usize).unwrap().contains(text)).unwrap()
    };
    let style_at = |y: u16| buffer[(0, y)].style();
    assert_eq!(style_at(row_of("wget")).fg, Some(Color::Green));
    assert_eq!(style_at(row_of("51002")).fg, Some(Color::DarkGray));
    assert_eq!(style_at(row_of("sshd")).fg, Some(Color::Reset));
}

#[test]
fn closed_rows_fade_until_they_leave() {
    let mut h = Harness::started(120, 24);
    let style_of_closed = |h: &Harness| {
        let y = h.screen().lines().position(|l| l.contains("51002"))? as u16;
        Some(h.tui.terminal.backend().buffer()[(0, y)].style())
    };
    let faded = |h: &Harness| {
        let style = style_of_closed(h).unwrap();
        style.fg == Some(Color::DarkGray) && style.add_modifier.contains(Modifier::DIM)
    };
    assert!(!faded(&h));
    h.ticks(1);
    assert!(faded(&h));
    h.ticks(1);
    assert!(faded(&h));
    h.ticks(2);
    assert_eq!(style_of_closed(&h), None);
}

#[test]
fn nothing_is_new_in_the_first_interval() {
    let h = {
        let mut h = Harness::new(120, 24);
        h.ticks(1);
        h
    };
    let buffer = h.tui.terminal.backend().buffer();
    let y = h.screen().lines().position(|l| l.contains("sshd")).unwrap() as u16;
    assert_eq!(buffer[(0, y)].style().fg, Some(Color::Reset));
}

#[test]
fn command_line_filters_show_in_the_header_and_the_empty_table() {
    let filters = vec!["port 7800".to_string(), "pid 42".to_string()];
    let mut h = Harness::with_header(100, 24, TuiState::default(), filters);
    h.samples.clear();
    h.ticks(1);
    let screen = h.screen();
    assert!(screen.lines().next().unwrap().contains(" only port 7800 · pid 42 "), "{screen}");
    assert!(screen.contains("no connections with port 7800, pid 42 yet"), "{screen}");
}

#[test]
fn every_cut_shows_an_ellipsis_and_addresses_keep_their_port() {
    for (width, height) in [(60, 20), (80, 24), (120, 35), (200, 50)] {
        let h = Harness::started(width, height);
        insta::assert_snapshot!(format!("size_{width}x{height}"), h.screen());
    }
}

/// A harness whose screen names addresses through `lookup` on a resolver thread, and
/// services from a small services file.
fn named(width: u16, height: u16, lookup: impl Lookup) -> (Harness, UnboundedReceiver<Resolved>) {
    let h = Harness::new(width, height);
    let (names, answers) = Names::start(lookup).unwrap();
    let services = Services::parse("ssh 22/tcp\nhttp 80/tcp\nhttps 443/tcp\npostgresql 5432/tcp\n");
    (Harness { tui: h.tui.with_names(names, services), ..h }, answers)
}

#[test]
fn host_and_service_names_arrive_from_the_resolver_and_n_toggles_them() {
    let hosts = vec![("93.184.216.34", "example.com"), ("10.0.0.5", "testhost"), ("::1", "localhost")];
    let (mut h, mut answers) = named(120, 24, Table(hosts));
    h.ticks(2);
    // Service names at once, host names once answered.
    assert!(h.screen().contains("93.184.216.34:https"), "{}", h.screen());
    while h.tui.names.as_ref().unwrap().pending() > 0 {
        h.tui.resolved(answers.blocking_recv().unwrap());
    }
    h.tui.draw(&h.model).unwrap();
    insta::assert_snapshot!(h.screen());
    h.typed("n");
    assert!(h.screen().contains("93.184.216.34:443") && !h.screen().contains("example.com"));
    h.typed("n");
    assert!(h.screen().contains("example.com:https"));
}

#[test]
fn a_resolver_that_never_answers_does_not_slow_a_frame() {
    let (_never, silence) = std::sync::mpsc::channel();
    let (mut h, _answers) = named(200, 50, Silent(silence));
    h.ticks(2);
    // A frame that waited for the lookup would never end; the median (not the slowest, on
    // a machine shared with other work) shows that none waits for a timeout either.
    let mut frames: Vec<Duration> = (0..200)
        .map(|_| {
            let start = std::time::Instant::now();
            h.key(KeyCode::Down);
            start.elapsed()
        })
        .collect();
    frames.sort();
    assert!(frames[100] < Duration::from_millis(50), "{:?}", frames[100]);
    assert!(h.screen().contains("93.184.216.34:https"), "{}", h.screen());
}

#[test]
fn b_shows_rates_in_bits_and_totals_stay_in_bytes() {
    let mut h = Harness::started(120, 24);
    h.typed("b");
    let screen = h.screen();
    // curl's 3 MiB in the last second.
    assert!(screen.contains("25.2 Mbit ") && screen.contains("4.50 MiB"), "{screen}");
    insta::assert_snapshot!(screen);
    h.typed("b");
    assert!(!h.screen().contains("Mbit"));
}

#[test]
fn a_click_on_a_heading_sorts_by_it_and_one_on_a_row_selects_it() {
    let mut h = Harness::started(120, 24);
    let click = |column, row| {
        let kind = crossterm::event::MouseEventKind::Down(crossterm::event::MouseButton::Left);
        Event::Mouse(crossterm::event::MouseEvent { kind, column, row, modifiers: KeyModifiers::NONE })
    };
    // The headings are on the line above the table's first row.
    let top = h.tui.state.table_top;
    let heading = |h: &Harness, title: &str| {
        h.screen().lines().nth(top as usize - 1).unwrap().find(title).unwrap() as u16
    };
    // The quoted line starts one character early.
    let comm = heading(&h, "COMM") - 1;
    h.input(click(comm, top - 1));
    assert_eq!((h.tui.state.sort(), h.tui.state.reverse), (SortKey::Comm, false));
    h.input(click(comm, top - 1));
    assert!(h.tui.state.reverse);
    let tx = heading(&h, "TX/s") - 1;
    h.input(click(tx, top - 1));
    assert_eq!((h.tui.state.sort(), h.tui.state.reverse), (SortKey::Tx, false));
    // The fourth row by TX/s: python3.
    h.input(click(50, top + 3));
    assert_eq!(h.tui.state.selected_key, Some(GroupKey::Connection(5)));
    assert!(h.screen().contains("pid 5001300 · python3"));
}

/// The sizes the screen is checked at.
const SIZES: [(u16, u16); 4] = [(60, 20), (80, 24), (120, 35), (200, 50)];

#[test]
fn structured_filters_and_a_bad_one_say_what_they_match() {
    let mut h = Harness::started(120, 24);
    h.typed("/port:443 comm:cu");
    h.key(KeyCode::Enter);
    let screen = h.screen();
    assert!(screen.contains(" filter: port:443 comm:cu "), "{screen}");
    let table: Vec<&str> = screen.lines().filter(|l| l.contains(" TCP ")).collect();
    assert_eq!(table.len(), 2, "{screen}");
    assert!(table.iter().all(|l| l.contains("curl") && l.contains(":443")), "{screen}");
    // A port is a whole number: 5432 is postgres's, 543 nobody's.
    h.key(KeyCode::Esc);
    h.typed("/543");
    assert!(h.screen().contains("no connection matches “543”"), "{}", h.screen());
    h.typed("2");
    assert!(h.screen().contains("postgres"));
    h.key(KeyCode::Esc);
    h.typed("/state:syn");
    assert!(h.screen().contains("no connection matches “state:syn”"));
    h.key(KeyCode::Esc);
    h.typed("/port:x");
    insta::assert_snapshot!("filter_bad", h.screen());
    h.key(KeyCode::Enter);
    let screen = h.screen();
    assert!(screen.contains("bad filter: port:x: a port is a number up to 65535"), "{screen}");
    assert!(screen.lines().last().unwrap().contains(" bad filter: port:x: "), "{screen}");
}

#[test]
fn a_host_filter_matches_resolved_names_of_rows_off_screen_too() {
    let hosts = vec![("93.184.216.34", "example.com"), ("198.51.100.7", "jump.example.org")];
    let (mut h, mut answers) = named(120, 24, Table(hosts));
    h.ticks(2);
    // Nothing is shown under the filter before the names came.
    h.typed("/host:example.com");
    h.key(KeyCode::Enter);
    while h.tui.names.as_ref().unwrap().pending() > 0 {
        h.tui.resolved(answers.blocking_recv().unwrap());
    }
    h.tui.draw(&h.model).unwrap();
    let screen = h.screen();
    let table: Vec<&str> = screen.lines().filter(|l| l.contains(" TCP ")).collect();
    assert_eq!(table.len(), 3, "curl twice and wget: {screen}");
    assert!(table.iter().all(|l| l.contains("example.com:")), "{screen}");
    // Or by address, whatever the names.
    h.key(KeyCode::Esc);
    h.typed("/host:198.51");
    assert!(h.screen().contains("jump.example.org:53122") && !h.screen().contains("curl"));
}

#[test]
fn f6_opens_a_sort_menu_that_arrows_and_enter_choose_from() {
    for (width, height) in SIZES {
        let mut h = Harness::started(width, height);
        h.key(KeyCode::F(6));
        insta::assert_snapshot!(format!("sort_menu_{width}x{height}"), h.screen());
    }
    let mut h = Harness::started(120, 35);
    h.key(KeyCode::F(6));
    // From RX+TX/s up to RETRANS: the health sort.
    h.key(KeyCode::Up);
    h.key(KeyCode::Up);
    h.key(KeyCode::Up);
    h.key(KeyCode::Enter);
    assert_eq!((h.tui.state.sort(), h.tui.state.sort_menu), (SortKey::Retrans, None));
    assert!(h.screen().contains("sort RETRANS ▼"), "{}", h.screen());
    h.key(KeyCode::F(6));
    h.key(KeyCode::Down);
    h.key(KeyCode::Esc);
    assert_eq!((h.tui.state.sort(), h.tui.state.sort_menu), (SortKey::Retrans, None));
    assert!(!h.screen().contains(" sort by "));
    h.key(KeyCode::F(10));
    assert!(h.tui.quit());
}

#[test]
fn s_cycles_in_column_order_through_the_health_columns() {
    let mut h = Harness::with(160, 30, TuiState { sort_choice: SortKey::State, ..TuiState::default() });
    h.ticks(2);
    h.typed("s");
    assert!(h.screen().contains("sort RTT ▼"));
    h.typed("s");
    // curl retransmitted 3 in the last interval, python3 none (one before): curl first.
    let screen = h.screen();
    assert!(screen.contains("sort RETRANS ▼"), "{screen}");
    let first = screen.lines().nth(h.tui.state.table_top as usize).unwrap();
    assert!(first.contains("curl"), "{screen}");
    h.typed("s");
    assert!(h.screen().contains("sort RX/s ▼"));
}

/// The connection of id 1 (curl) once more, with `events` and this RTT (µs).
fn curl_again(rx: u64, rtt_us: u32, events: Vec<ConnEvent>) -> Sample {
    let curl = conn(1, 1201, "curl", ("10.0.0.5:51000", "93.184.216.34:443"), (rx, 1_600));
    Sample { conns: vec![with_health(curl, Some(rtt_us), 5, None)], events, ..Sample::default() }
}

#[test]
fn the_detail_pane_scrolls_its_history_and_charts_the_rtt_with_its_peak() {
    use TcpState::*;
    let mut h = Harness::started(120, 35);
    let changes =
        [(Established, CloseWait), (CloseWait, LastAck), (LastAck, Established), (Established, FinWait1)];
    let curl = conn(1, 1201, "curl", ("10.0.0.5:51000", "93.184.216.34:443"), (4_718_592, 1_600));
    let events: Vec<ConnEvent> = changes
        .iter()
        .enumerate()
        .map(|(i, &(old, new))| event(102_000 + i as u64 * 10, EventKind::State { old, new }, curl.clone()))
        .collect();
    for (i, rtt) in [40_000, 90_000, 30_000].into_iter().enumerate() {
        let events = if i == 0 { events.clone() } else { Vec::new() };
        h.samples.push_back(curl_again(4_718_592 + i as u64 * 100_000, rtt, events));
    }
    h.ticks(3);
    assert_eq!(h.tui.state.selected_key, Some(GroupKey::Connection(1)));
    let screen = h.screen();
    assert!(screen.contains("history (3 earlier, [ scrolls):") && screen.contains("ESTABLISHED → FIN_WAIT1"));
    // The RTT peak labels its sparkline.
    assert!(screen.contains("RTT 30.0 ms ±3.75 ms") && screen.contains("90.0 ms "), "{screen}");
    insta::assert_snapshot!("detail_history_newest", screen);
    h.typed("[[");
    let screen = h.screen();
    assert!(screen.contains("history (1 earlier, 2 later, [ ] scroll):"), "{screen}");
    assert!(screen.contains("CLOSE_WAIT → LAST_ACK") && !screen.contains("FIN_WAIT1"), "{screen}");
    insta::assert_snapshot!("detail_history_scrolled", screen);
    // Scrolling stops at the oldest, and comes back at once.
    h.typed("[[[[[");
    assert!(h.screen().contains("ESTABLISHED → CLOSE_WAIT"));
    assert_eq!(h.tui.state.detail_scroll, 3);
    h.typed("]]]");
    assert!(h.screen().contains("ESTABLISHED → FIN_WAIT1"));
}

#[test]
fn no_color_keeps_the_selection_bars_and_sort_column_visible_by_attributes() {
    let mut h = Harness::with(120, 24, TuiState { no_color: true, ..TuiState::default() });
    h.ticks(2);
    h.typed("c");
    let buffer = h.tui.terminal.backend().buffer().clone();
    assert!(buffer.content.iter().all(|cell| cell.fg == Color::Reset && cell.bg == Color::Reset));
    let line = |y: u16| (0..buffer.area.width).map(|x| buffer[(x, y)].clone()).collect::<Vec<_>>();
    let has = |y: u16, x: u16, modifier: Modifier| buffer[(x, y)].modifier.contains(modifier);
    // The headings' bar, the selected first row, the sort column, the status flag.
    let top = h.tui.state.table_top;
    assert!(line(top - 1).iter().all(|cell| cell.modifier.contains(Modifier::REVERSED)));
    assert!(line(top).iter().all(|cell| cell.modifier.contains(Modifier::REVERSED)));
    let rx = h.screen().lines().nth(top as usize - 1).unwrap().find("RX/s").unwrap() as u16 - 1;
    assert!(has(top - 1, rx, Modifier::UNDERLINED) && !has(top - 1, 1, Modifier::UNDERLINED));
    let status = h.screen().lines().last().unwrap().find("closed hidden").unwrap() as u16 - 1;
    assert!(has(23, status, Modifier::REVERSED));
    // Same text as in colour.
    let mut coloured = Harness::started(120, 24);
    coloured.typed("c");
    assert_eq!(h.screen(), coloured.screen());
}

#[test]
fn the_collector_and_why_it_fell_back_show_in_the_status_line_and_the_help() {
    let notice = "eBPF cannot run here (needs root, or the CAP_BPF and CAP_PERFMON capabilities); \
                  reading the kernel's TCP counters through sock_diag instead (TCP only)";
    let state = TuiState { collector_notice: Some(notice.into()), ..TuiState::default() };
    for (width, height) in SIZES {
        let mut h = Harness::with(width, height, state.clone());
        h.ticks(2);
        insta::assert_snapshot!(format!("collector_notice_{width}x{height}"), h.screen());
    }
    let mut h = Harness::with(80, 24, state);
    h.ticks(2);
    h.typed("?");
    let screen = h.screen();
    assert!(screen.contains("collector: eBPF fentry") && screen.contains("CAP_PERFMON"), "{screen}");
    insta::assert_snapshot!("help_with_notice_80x24", screen);
}

#[test]
fn the_help_fits_80_by_24() {
    let mut h = Harness::started(80, 24);
    h.typed("?");
    let screen = h.screen();
    assert!(screen.contains("any key closes") && screen.contains("Ctrl-C  quit"), "{screen}");
}

#[test]
fn a_click_on_the_health_headings_sorts_by_them() {
    let mut h = Harness::started(200, 50);
    let row = h.tui.state.table_top - 1;
    let click = |column| {
        let kind = crossterm::event::MouseEventKind::Down(crossterm::event::MouseButton::Left);
        Event::Mouse(crossterm::event::MouseEvent { kind, column, row, modifiers: KeyModifiers::NONE })
    };
    for (title, key) in [("RETRANS", SortKey::Retrans), ("RTT", SortKey::Rtt)] {
        let x = h.screen().lines().nth(row as usize).unwrap().find(&format!(" {title}")).unwrap() as u16 + 1;
        h.input(click(x));
        assert_eq!((h.tui.state.sort(), h.tui.state.reverse), (key, false), "{title}");
    }
}
