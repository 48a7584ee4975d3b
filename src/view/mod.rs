//! Front ends: each one only reads the model.

pub mod batch;
pub mod events;
pub mod log;
pub mod record;
pub mod tui;

use std::io;
use std::time::SystemTime;

use crate::model::Model;

/// Something that records every interval: the batch table, a log file, a JSON stream.
/// The event loop calls each sink once per interval, after the model took the sample.
pub trait IntervalSink {
    /// Records the interval that just ended; `wall` is when it ended.
    fn interval(&mut self, model: &Model, backend: &str, wall: SystemTime) -> io::Result<()>;
}
