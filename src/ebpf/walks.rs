//! When the kernel side samples every connection (a walk), where the hooks sample at each call.
//!
//! The hooks there see every send and read but those of paths they are not on (splice reads
//! under the tracepoint hooks, kTLS sends under fentry). A walk costs what the sockets number, so
//! walks come as often as a small share of the time pays for, and more often for a while after
//! one found bytes that no hook had counted.

use std::time::{Duration, Instant};

/// A walk may take this share of the time (1/N), while no walk finds unhooked bytes: 0.25%.
const IDLE_SHARE: u32 = 400;
/// Its share for `UNHOOKED_WATCH` after a walk found bytes no hook counted: 5%.
const UNHOOKED_SHARE: u32 = 20;
const UNHOOKED_WATCH: Duration = Duration::from_secs(60);
/// The longest time between two walks: how late an idle connection's RTT may be.
const LONGEST_GAP: Duration = Duration::from_secs(60);

/// The walks so far, as the collector tells them.
#[derive(Debug)]
pub struct WalkSchedule {
    last: Instant,
    /// How long the last walk took.
    took: Duration,
    /// The kernel's count of walks that found unhooked bytes, at the last walk.
    unhooked_moves: u64,
    /// When a walk last found some.
    unhooked_at: Option<Instant>,
}

impl WalkSchedule {
    /// The first walk (adoption) began at `started` and ended at `now`.
    pub fn new(started: Instant, now: Instant) -> WalkSchedule {
        WalkSchedule { last: now, took: now - started, unhooked_moves: 0, unhooked_at: None }
    }

    /// A walk began at `started` and ended at `now`; the kernel counts `unhooked_moves`.
    pub fn walked(&mut self, started: Instant, now: Instant, unhooked_moves: u64) {
        if unhooked_moves != self.unhooked_moves {
            self.unhooked_at = Some(now);
        }
        (self.last, self.took, self.unhooked_moves) = (now, now - started, unhooked_moves);
    }

    /// Whether a read of the table at `now` walks first.
    pub fn due(&self, now: Instant) -> bool {
        let unhooked = self.unhooked_at.is_some_and(|at| now - at < UNHOOKED_WATCH);
        let share = if unhooked { UNHOOKED_SHARE } else { IDLE_SHARE };
        now - self.last >= (self.took * share).min(LONGEST_GAP)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn walks_come_as_often_as_their_share_of_the_time_pays_for() {
        let start = Instant::now();
        let schedule = WalkSchedule::new(start, start + MS);
        assert!(!schedule.due(start + 300 * MS));
        assert!(schedule.due(start + 401 * MS));
        // A walk of 100,000 sockets: no more than a minute apart.
        let schedule = WalkSchedule::new(start, start + 200 * MS);
        assert!(!schedule.due(start + 59 * 1000 * MS));
        assert!(schedule.due(start + 61 * 1000 * MS));
    }

    #[test]
    fn a_walk_that_finds_unhooked_bytes_brings_the_next_ones_closer_for_a_while() {
        let start = Instant::now();
        let mut schedule = WalkSchedule::new(start, start + 10 * MS);
        schedule.walked(start + 1000 * MS, start + 1010 * MS, 1);
        assert!(schedule.due(start + 1210 * MS), "every 200 ms, a 5% share");
        schedule.walked(start + 1210 * MS, start + 1220 * MS, 1);
        assert!(!schedule.due(start + 1400 * MS));
        assert!(schedule.due(start + 1420 * MS));
        // A minute after the last finding, back to the idle share.
        let later = start + 1010 * MS + UNHOOKED_WATCH;
        schedule.walked(later, later + 10 * MS, 1);
        assert!(!schedule.due(later + 3000 * MS));
        assert!(schedule.due(later + 4011 * MS));
    }
}
