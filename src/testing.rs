//! Test doubles for the OS inputs: a clock that moves only when told, a scripted collector
//! whose waits move that clock, and an `Os` whose stdout, terminal and signals are channels.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::io::{self, Write};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use futures_util::stream::{self, LocalBoxStream, StreamExt};
use ratatui::backend::{Backend, ClearType, TestBackend, WindowSize};
use ratatui::buffer::Cell;
use ratatui::layout::{Position, Size};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use crate::collector::Collector;
use crate::model::{ConnEvent, Sample};
use crate::os::{Clock, Os, TerminalIo};

/// Starts at 0 (the Unix epoch on the wall) and moves only by `advance`.
#[derive(Debug, Default)]
pub struct FakeClock {
    now: Mutex<Duration>,
}

impl FakeClock {
    pub fn advance(&self, by: Duration) {
        *self.now.lock().unwrap() += by;
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        *self.now.lock().unwrap()
    }

    fn wall(&self) -> SystemTime {
        UNIX_EPOCH + self.now()
    }
}

/// Plays a script on a fake clock: each wait moves the clock by its whole timeout and hands
/// on the events due by then. Once the last sample is taken the clock stands still; later
/// collections see the same table with nothing new.
pub struct Scripted {
    pub clock: Arc<FakeClock>,
    /// What each `collect` returns, in order.
    pub samples: VecDeque<Sample>,
    /// What `wait_events` hands on, each once the clock reaches its `at`.
    pub events: VecDeque<ConnEvent>,
    pub max_gap: Option<Duration>,
    /// When set, every `collect` waits for a message (or the sender's drop): a slow read of
    /// a large table.
    pub gate: Option<Receiver<()>>,
    /// Hears the clock's time as each `collect` starts.
    pub collecting: Option<UnboundedSender<Duration>>,
    /// What `collect_last` returns, if not what `collect` would.
    pub last_read: Option<Sample>,
    last: Sample,
}

impl Scripted {
    pub fn new(clock: Arc<FakeClock>, samples: impl IntoIterator<Item = Sample>) -> Scripted {
        Scripted {
            clock,
            samples: samples.into_iter().collect(),
            events: VecDeque::new(),
            max_gap: None,
            gate: None,
            collecting: None,
            last_read: None,
            last: Sample::default(),
        }
    }
}

impl Collector for Scripted {
    fn backend(&self) -> &str {
        "scripted"
    }

    fn collect(&mut self) -> Result<Sample> {
        if let Some(collecting) = &self.collecting {
            let _ = collecting.send(self.clock.now());
        }
        if let Some(gate) = &self.gate {
            let _ = gate.recv();
        }
        let sample = self.samples.pop_front().unwrap_or_else(|| Sample {
            conns: self.last.conns.clone(),
            overflow: self.last.overflow,
            ..Sample::default()
        });
        self.last = sample.clone();
        Ok(sample)
    }

    fn collect_last(&mut self) -> Result<Sample> {
        match self.last_read.take() {
            Some(sample) => Ok(sample),
            None => self.collect(),
        }
    }

    fn wait_events(&mut self, timeout: Duration) -> Result<Vec<ConnEvent>> {
        if self.samples.is_empty() {
            // Played: wait (unmoved) for the collection thread to be asked to finish, which
            // unparks it.
            thread::park_timeout(timeout);
            return Ok(Vec::new());
        }
        self.clock.advance(timeout);
        let now = self.clock.now();
        let due = self.events.iter().take_while(|event| event.at <= now).count();
        Ok(self.events.drain(..due).collect())
    }

    fn max_collect_gap(&self) -> Option<Duration> {
        self.max_gap
    }
}

/// Sends each write as one chunk: a sink writes (and flushes) an interval at once.
struct ChunkWriter(UnboundedSender<Vec<u8>>);

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let _ = self.0.send(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A `TestBackend` that sends the screen's text at every flush, once per frame.
pub struct RecordingBackend {
    inner: TestBackend,
    frames: UnboundedSender<String>,
}

impl Backend for RecordingBackend {
    type Error = Infallible;

    fn draw<'a, I: Iterator<Item = (u16, u16, &'a Cell)>>(&mut self, content: I) -> Result<(), Infallible> {
        self.inner.draw(content)
    }

    fn hide_cursor(&mut self) -> Result<(), Infallible> {
        self.inner.hide_cursor()
    }

    fn show_cursor(&mut self) -> Result<(), Infallible> {
        self.inner.show_cursor()
    }

    fn get_cursor_position(&mut self) -> Result<Position, Infallible> {
        self.inner.get_cursor_position()
    }

    fn set_cursor_position<P: Into<Position>>(&mut self, position: P) -> Result<(), Infallible> {
        self.inner.set_cursor_position(position)
    }

    fn clear(&mut self) -> Result<(), Infallible> {
        self.inner.clear()
    }

    fn clear_region(&mut self, clear_type: ClearType) -> Result<(), Infallible> {
        self.inner.clear_region(clear_type)
    }

    fn size(&self) -> Result<Size, Infallible> {
        self.inner.size()
    }

    fn window_size(&mut self) -> Result<WindowSize, Infallible> {
        self.inner.window_size()
    }

    fn flush(&mut self) -> Result<(), Infallible> {
        let _ = self.frames.send(self.inner.to_string());
        Ok(())
    }
}

/// What a test sees of and does to the app it runs.
pub struct Io {
    pub stdout: UnboundedReceiver<Vec<u8>>,
    pub frames: UnboundedReceiver<String>,
    pub keys: UnboundedSender<io::Result<crossterm::event::Event>>,
    pub stop_signals: UnboundedSender<()>,
    /// What a test took from `stdout`, oldest first.
    taken: Vec<u8>,
}

impl Io {
    /// Everything written to stdout so far and not taken, as text.
    pub fn written(&mut self) -> String {
        let mut out = std::mem::take(&mut self.taken);
        while let Ok(chunk) = self.stdout.try_recv() {
            out.extend(chunk);
        }
        String::from_utf8(out).unwrap()
    }

    /// Puts back what a test took from `stdout`, for `written`.
    pub fn unread(&mut self, taken: Vec<u8>) {
        self.taken.extend(taken);
    }

    /// The next frame that contains `text`.
    pub async fn frame_with(&mut self, text: &str) -> String {
        loop {
            let frame = self.frames.recv().await.expect("the screen is gone");
            if frame.contains(text) {
                return frame;
            }
        }
    }

    pub fn key(&self, c: char) {
        let key = crossterm::event::KeyEvent::from(crossterm::event::KeyCode::Char(c));
        self.keys.send(Ok(crossterm::event::Event::Key(key))).unwrap();
    }
}

/// An `Os` around `collector` (built on the collection thread like the real one), with a
/// `width` x `height` terminal when `terminal` is true, and `read_cmdline` for /proc.
pub fn os(
    collector: Scripted,
    clock: Arc<FakeClock>,
    terminal: bool,
    read_cmdline: impl FnMut(u32) -> Option<String> + Send + 'static,
) -> (Os<RecordingBackend>, Io) {
    let (stdout, written) = mpsc::unbounded_channel();
    let (frame_sender, frames) = mpsc::unbounded_channel();
    let (keys, key_presses) = mpsc::unbounded_channel();
    let (stop_signals, signals) = mpsc::unbounded_channel();
    let os = Os {
        open_collector: Box::new(move || Ok(Box::new(collector) as Box<dyn Collector>)),
        read_cmdline: Box::new(read_cmdline),
        clock,
        stdout: Box::new(ChunkWriter(stdout)),
        stdout_is_terminal: terminal,
        hostname: "testhost".into(),
        stop_signals: receiver_stream(signals),
        open_terminal: Box::new(move || {
            let backend = RecordingBackend { inner: TestBackend::new(120, 24), frames: frame_sender };
            Ok(TerminalIo { backend, input: receiver_stream(key_presses), session: None })
        }),
        collector_notice: Arc::default(),
        no_color: false,
    };
    (os, Io { stdout: written, frames, keys, stop_signals, taken: Vec::new() })
}

/// A tokio receiver as a stream.
fn receiver_stream<T: 'static>(receiver: UnboundedReceiver<T>) -> LocalBoxStream<'static, T> {
    stream::unfold(receiver, |mut receiver| async move { Some((receiver.recv().await?, receiver)) })
        .boxed_local()
}
