//! Front ends: each one only reads the model (and the events the loop hands on).

pub mod batch;
pub mod events;
pub mod log;
pub mod record;
pub mod tui;

use std::io;
use std::time::SystemTime;

use crate::model::{ConnEvent, Model};

/// Something the event loop feeds: the batch table, a log file, JSON lines, `--events`.
pub trait Sink {
    /// Records the interval that just ended, after the model took its sample; `wall` is
    /// when it ended.
    fn interval(&mut self, model: &Model, backend: &str, wall: SystemTime) -> io::Result<()>;

    /// Lifecycle events as they arrived at `wall`, oldest first, for a sink that shows them
    /// as they happen; the others see them in the model with their interval.
    fn events(&mut self, _events: &[ConnEvent], _backend: &str, _wall: SystemTime) -> io::Result<()> {
        Ok(())
    }
}
