//! The one event stream a front end loops over: interval ticks, stop signals and terminal
//! input.

use std::sync::mpsc::Sender;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

#[derive(Debug)]
pub enum Event {
    /// An interval ended: time to collect and show.
    Tick,
    /// Ctrl-C, SIGTERM or SIGHUP: finish the interval and leave.
    Stop,
    /// A key, mouse or resize event from the terminal (live screen only).
    Input(crossterm::event::Event),
}

/// Sends `Event::Tick` every `interval`, on a fixed schedule that does not drift.
pub fn spawn_ticker(events: Sender<Event>, interval: Duration) {
    thread::spawn(move || {
        let mut next = Instant::now() + interval;
        loop {
            thread::sleep(next.saturating_duration_since(Instant::now()));
            next += interval;
            if events.send(Event::Tick).is_err() {
                return;
            }
        }
    });
}

/// Turns SIGINT, SIGTERM and SIGHUP into `Event::Stop`.
pub fn spawn_signal_listener(events: Sender<Event>) -> Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM, SIGHUP]).context("installing signal handlers")?;
    thread::spawn(move || {
        for _ in signals.forever() {
            if events.send(Event::Stop).is_err() {
                return;
            }
        }
    });
    Ok(())
}

/// Forwards terminal input as `Event::Input` until the terminal or the loop goes away.
pub fn spawn_input_reader(events: Sender<Event>) {
    thread::spawn(move || {
        while let Ok(input) = crossterm::event::read() {
            if events.send(Event::Input(input)).is_err() {
                return;
            }
        }
    });
}
