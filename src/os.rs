//! Everything tcptop takes from or gives to the operating system, in one struct that tests
//! replace (after bandwhich's `OsInputOutput`): the collector, process command lines, the
//! clock, standard output, the terminal and the stop signals.

use std::io::{self, IsTerminal, Stdout, Write};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;
use futures_util::stream::{self, LocalBoxStream, StreamExt};
use ratatui::backend::CrosstermBackend;
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::Args;
use crate::collector::Collector;
use crate::platform;
use crate::view::tui::TerminalSession;

/// Builds the collector; called on the collection thread, where it then lives.
pub type CollectorFactory = Box<dyn FnOnce() -> Result<Box<dyn Collector>> + Send>;

/// A process's command line by pid, `None` where the system does not say.
pub type CmdlineReader = Box<dyn FnMut(u32) -> Option<String> + Send>;

/// Time as tcptop reads it.
pub trait Clock: Send + Sync {
    /// Monotonic time since a fixed start: what intervals are measured on.
    fn now(&self) -> Duration;
    /// The time of day: what records are stamped with.
    fn wall(&self) -> SystemTime;
}

/// The system's clocks.
pub struct SystemClock(Instant);

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.0.elapsed()
    }

    fn wall(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The live screen's terminal: where it draws, what the user types, and the guard that
/// restores the terminal when dropped.
pub struct TerminalIo<B> {
    pub backend: B,
    pub input: LocalBoxStream<'static, io::Result<crossterm::event::Event>>,
    pub session: Option<TerminalSession>,
}

pub struct Os<B> {
    pub open_collector: CollectorFactory,
    pub read_cmdline: CmdlineReader,
    pub clock: Arc<dyn Clock>,
    pub stdout: Box<dyn Write>,
    pub stdout_is_terminal: bool,
    pub hostname: String,
    /// One item per SIGINT, SIGTERM, SIGHUP or SIGQUIT.
    pub stop_signals: LocalBoxStream<'static, ()>,
    /// Takes the terminal over for the live screen.
    pub open_terminal: Box<dyn FnOnce() -> io::Result<TerminalIo<B>>>,
    /// Why the collector is not the preferred one, if it is not: set by `open_collector`
    /// before the collection thread reports its start.
    pub collector_notice: Arc<Mutex<Option<String>>>,
    /// Whether `NO_COLOR` asks for no colours (set and not empty, as no-color.org says).
    pub no_color: bool,
}

impl Os<CrosstermBackend<Stdout>> {
    /// The real system. Inside the tokio runtime: the signal handlers are installed here,
    /// before the probes load, so that a Ctrl-C during start-up still ends cleanly.
    pub fn real(args: &Args) -> Result<Self> {
        #[cfg(target_os = "linux")]
        crate::privilege::forbid_core_dumps()?;
        let args = args.clone();
        let collector_notice = Arc::new(Mutex::new(None));
        let notice = Arc::clone(&collector_notice);
        let open_collector: CollectorFactory = Box::new(move || {
            let mut note = |note: &str| {
                if args.verbose {
                    eprintln!("tcptop: {note}");
                }
            };
            let mut fallback = |why: &str| {
                // Also on stderr: the live screen may never open, or end before it is read.
                eprintln!("tcptop: {why}");
                *notice.lock().unwrap_or_else(|e| e.into_inner()) = Some(why.to_string());
            };
            let collector = platform::open_collector(&args, &mut note, &mut fallback)?;
            if args.verbose {
                eprintln!("tcptop: using the {} probe strategy", collector.backend());
            }
            Ok(collector)
        });
        Ok(Os {
            open_collector,
            read_cmdline: Box::new(read_cmdline),
            clock: Arc::new(SystemClock(Instant::now())),
            stdout: Box::new(io::stdout()),
            stdout_is_terminal: io::stdout().is_terminal(),
            hostname: gethostname::gethostname().to_string_lossy().into_owned(),
            stop_signals: stop_signals()?,
            open_terminal: Box::new(|| {
                let session = TerminalSession::enter()?;
                let input = terminal_input()?;
                Ok(TerminalIo { backend: CrosstermBackend::new(io::stdout()), input, session: Some(session) })
            }),
            collector_notice,
            no_color: std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty()),
        })
    }
}

/// Terminal input, read on a thread of its own: once the terminal is gone (a closed ssh
/// session, a killed tmux), crossterm's reader retries its read without end (crossterm
/// issue 793), and it must not hold up the loop that hears the SIGHUP and ends tcptop.
fn terminal_input() -> io::Result<LocalBoxStream<'static, io::Result<crossterm::event::Event>>> {
    let (sender, mut events) = tokio::sync::mpsc::unbounded_channel();
    std::thread::Builder::new().name("tcptop-input".into()).spawn(move || loop {
        let event = crossterm::event::read();
        let failed = event.is_err();
        if sender.send(event).is_err() || failed {
            return;
        }
    })?;
    Ok(stream::poll_fn(move |cx| events.poll_recv(cx)).boxed_local())
}

#[cfg(target_os = "linux")]
fn read_cmdline(pid: u32) -> Option<String> {
    crate::procfs::read_cmdline(pid)
}

#[cfg(not(target_os = "linux"))]
fn read_cmdline(_pid: u32) -> Option<String> {
    None
}

/// SIGINT, SIGTERM, SIGHUP and SIGQUIT as one stream: SIGQUIT too ends tcptop cleanly, with
/// the terminal restored and no core file.
fn stop_signals() -> io::Result<LocalBoxStream<'static, ()>> {
    let mut signals =
        [SignalKind::interrupt(), SignalKind::terminate(), SignalKind::hangup(), SignalKind::quit()]
            .into_iter()
            .map(signal)
            .collect::<io::Result<Vec<_>>>()?;
    let any = stream::poll_fn(move |cx| {
        let arrived = signals.iter_mut().any(|signal| signal.poll_recv(cx).is_ready());
        if arrived {
            Poll::Ready(Some(()))
        } else {
            Poll::Pending
        }
    });
    Ok(any.boxed_local())
}
