//! The live screen: a ratatui dashboard of the connection table, fed by the one event loop in
//! app.rs. This module owns the terminal session; `state` and `keys` decide, `screen` and
//! `render` only read.

pub mod keys;
pub mod render;
pub mod screen;
pub mod state;

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::panic;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;
use std::time::Duration;

use anyhow::Result;
use crossterm::cursor::Show;
use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
use crossterm::execute;
use crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, Clear, ClearType, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::backend::Backend;
use ratatui::layout::Rect;
use ratatui::Terminal;

use crate::model::group::GroupKey;
use crate::model::{Filter, Model};
use crate::resolve::{Names, Resolved, Services};
use render::{render, Areas};
use screen::{Header, Naming, Rows, Screen};
use state::TuiState;

/// How far back the header's throughput sparkline reaches.
const THROUGHPUT_SPAN: Duration = Duration::from_secs(60);

/// What a paused display keeps showing.
struct Frozen {
    model: Model,
    throughput: VecDeque<u64>,
    first_interval: bool,
}

/// The live screen on a ratatui backend: the state, the figures it keeps across intervals, and
/// the terminal it draws on.
pub struct Tui<B: Backend> {
    terminal: Terminal<B>,
    state: TuiState,
    header: Header,
    /// Total bytes per second of each interval, oldest first.
    throughput: VecDeque<u64>,
    throughput_len: usize,
    intervals: u64,
    frozen: Option<Frozen>,
    /// The keys of the rows last drawn, which keys and the mouse act on.
    keys: Vec<GroupKey>,
    /// Host names as the resolver answers; `None`: addresses only.
    names: Option<Names>,
    services: Services,
}

impl<B: Backend> Tui<B>
where
    B::Error: Send + Sync + 'static,
{
    /// A screen starting from `state` (its sort, order and units).
    pub fn new(backend: B, header: Header, state: TuiState) -> Result<Tui<B>> {
        let throughput_len = (THROUGHPUT_SPAN.as_secs_f64() / header.interval.as_secs_f64()).ceil() as usize;
        Ok(Tui {
            terminal: Terminal::new(backend)?,
            state,
            header,
            throughput: VecDeque::new(),
            throughput_len,
            intervals: 0,
            frozen: None,
            keys: Vec::new(),
            names: None,
            services: Services::default(),
        })
    }

    /// The screen with host names from `names` and service names from `services`, shown
    /// while the state's `names` is on.
    pub fn with_names(self, names: Names, services: Services) -> Tui<B> {
        Tui { names: Some(names), services, ..self }
    }

    /// Takes in the resolver's answer; the next frame shows it.
    pub fn resolved(&mut self, answer: Resolved) {
        if let Some(names) = &mut self.names {
            names.answered(answer);
        }
    }

    /// Takes in the interval `model` just recorded.
    pub fn interval(&mut self, model: &Model) {
        let (rx, tx) = model.total_rates();
        if self.throughput.len() == self.throughput_len {
            self.throughput.pop_front();
        }
        self.throughput.push_back((rx + tx).round() as u64);
        self.intervals += 1;
    }

    /// Acts on a key press, mouse gesture or resize; `live` is frozen if this pauses.
    pub fn input(&mut self, input: &crossterm::event::Event, live: &Model) {
        if let Some(action) = keys::action(input, &self.state) {
            self.state.apply(action, &self.keys);
        }
        if self.state.paused != self.frozen.is_some() {
            self.frozen = self.state.paused.then(|| Frozen {
                model: live.clone(),
                throughput: self.throughput.clone(),
                first_interval: self.intervals == 1,
            });
        }
    }

    /// Whether the user asked to quit.
    pub fn quit(&self) -> bool {
        self.state.quit
    }

    /// Draws `live`, or what the pause froze.
    pub fn draw(&mut self, live: &Model) -> Result<()> {
        if TerminalSession::resumed() {
            // The screen was cleared: forgetting the last frame draws every cell again.
            self.terminal.swap_buffers();
        }
        let size = self.terminal.size()?;
        let area = Rect::new(0, 0, size.width, size.height);
        self.state.page = Areas::new(area, self.state.detail).page();
        let (model, throughput, first_interval) = match &self.frozen {
            Some(frozen) => (&frozen.model, &frozen.throughput, frozen.first_interval),
            None => (live, &self.throughput, self.intervals == 1),
        };
        let filter_names = match &mut self.names {
            // Only a filter that looks at names asks for those of rows off screen.
            Some(names)
                if self.state.names && Filter::parse(&self.state.filter).is_ok_and(|f| f.wants_names()) =>
            {
                names.of(model.rows().flat_map(|row| [row.conn.local.ip(), row.conn.remote.ip()]))
            }
            _ => HashMap::new(),
        };
        let rows = Rows::build(model, &self.state, &filter_names, self.state.offset + self.state.page);
        self.keys = rows.keys();
        self.state.refresh(&self.keys);
        let cmdline = rows.pid(self.state.selected).and_then(|pid| model.cmdline(pid));
        let shown = self.state.offset..self.state.offset + self.state.page;
        let naming = naming_of(&mut self.names, self.state.names, &self.services, rows.addresses(shown));
        let beside_rows = render::beside(&self.state, area)
            .map(|state| Rows::build(model, &state, &filter_names, state.page));
        let beside = beside_rows.as_ref().map(|rows| Screen {
            header: &self.header,
            model,
            rows,
            throughput,
            cmdline: None,
            first_interval,
            naming: naming_of(
                &mut self.names,
                self.state.names,
                &self.services,
                rows.addresses(0..self.state.page),
            ),
            beside: None,
        });
        let screen = Screen {
            header: &self.header,
            model,
            rows: &rows,
            throughput,
            cmdline,
            first_interval,
            naming,
            beside: beside.as_ref(),
        };
        self.state.detail_scroll =
            self.state.detail_scroll.min(render::history_scroll_limit(&self.state, &screen));
        let state = &self.state;
        self.terminal.draw(|frame| render(state, &screen, frame))?;
        self.state.headings = render::headings(&self.state, &screen, area);
        self.state.table_top = Areas::new(area, self.state.detail).table.y + 1;
        Ok(())
    }
}

/// Names for `ips` while `on`: those `names` knows (it is asked for the others), and
/// `services`.
fn naming_of<'s>(
    names: &mut Option<Names>,
    on: bool,
    services: &'s Services,
    ips: Vec<IpAddr>,
) -> Option<Naming<'s>> {
    match names {
        Some(names) if on => Some(Naming { hosts: names.of(ips), services }),
        _ => None,
    }
}

/// Whether the terminal is in the live screen's modes and needs restoring.
static TERMINAL_TAKEN: AtomicBool = AtomicBool::new(false);
/// Whether the terminal was taken over again after a stop, and must be drawn anew.
static RESUMED: AtomicBool = AtomicBool::new(false);

/// The terminal in raw mode on the alternate screen with mouse reporting; dropping it, or a
/// panic (before its message prints), puts the terminal back. Ctrl-Z and SIGTSTP suspend
/// tcptop with the terminal given back; SIGCONT takes it over again.
pub struct TerminalSession(());

impl TerminalSession {
    pub fn enter() -> io::Result<TerminalSession> {
        static HOOKS: Once = Once::new();
        let mut suspend_handler = Ok(());
        HOOKS.call_once(|| {
            let print = panic::take_hook();
            panic::set_hook(Box::new(move |info| {
                restore_terminal();
                print(info);
            }));
            suspend_handler = handle_suspend();
        });
        suspend_handler?;
        // From here on a failure drops the session, which restores what was done.
        let session = TerminalSession(());
        take_terminal()?;
        Ok(session)
    }

    /// Whether the terminal came back from a stop since last asked: what it shows is not ours.
    fn resumed() -> bool {
        RESUMED.swap(false, Ordering::SeqCst)
    }
}

impl Drop for TerminalSession {
    fn drop(&mut self) {
        restore_terminal();
    }
}

fn take_terminal() -> io::Result<()> {
    enable_raw_mode()?;
    TERMINAL_TAKEN.store(true, Ordering::SeqCst);
    keep_job_control_keys()?;
    execute!(io::stdout(), EnterAlternateScreen, Clear(ClearType::All), EnableMouseCapture)
}

/// Raw mode, but Ctrl-Z, Ctrl-C and Ctrl-\ still send their signals, which tcptop handles:
/// a suspend, or a stop.
fn keep_job_control_keys() -> io::Result<()> {
    let stdin = io::stdin();
    let mut modes = rustix::termios::tcgetattr(&stdin)?;
    modes.local_modes |= rustix::termios::LocalModes::ISIG;
    rustix::termios::tcsetattr(&stdin, rustix::termios::OptionalActions::Now, &modes)?;
    Ok(())
}

/// Leaves the live screen's modes, once however many exit paths ask.
fn restore_terminal() {
    if TERMINAL_TAKEN.swap(false, Ordering::SeqCst) {
        // Nothing more can be done if the terminal is gone.
        let _ = execute!(io::stdout(), DisableMouseCapture, LeaveAlternateScreen, Show);
        let _ = disable_raw_mode();
    }
}

/// A thread that, on SIGTSTP, gives the terminal back and stops tcptop as the signal would,
/// and on SIGCONT (also after a SIGSTOP, whose shell may have drawn on the screen) takes the
/// terminal over again and has the screen drawn anew.
fn handle_suspend() -> io::Result<()> {
    use signal_hook::consts::{SIGCONT, SIGTSTP, SIGWINCH};

    let mut signals = signal_hook::iterator::Signals::new([SIGTSTP, SIGCONT])?;
    let mut suspended = false;
    std::thread::Builder::new().name("tcptop-suspend".into()).spawn(move || {
        for signal in signals.forever() {
            if signal == SIGTSTP {
                suspended = TERMINAL_TAKEN.load(Ordering::SeqCst);
                restore_terminal();
                // Stops here until SIGCONT.
                let _ = signal_hook::low_level::emulate_default_handler(SIGTSTP);
            } else if (std::mem::take(&mut suspended) || TERMINAL_TAKEN.load(Ordering::SeqCst))
                && take_terminal().is_ok()
            {
                RESUMED.store(true, Ordering::SeqCst);
                // A resize event wakes the loop, which draws.
                let _ = signal_hook::low_level::raise(SIGWINCH);
            }
        }
    })?;
    Ok(())
}

#[cfg(test)]
mod tests;
