//! A row's per-interval figures (bytes, RTT), oldest first, bounded, each stored in as few
//! bytes as the largest of them needs: a host of many idle connections keeps no history
//! memory for them, and a busy one a byte or two per interval for most.

use std::fmt;

/// At most `cap` figures (given at each push), the oldest pushed out first.
#[derive(Clone, Default)]
pub struct History {
    slots: Slots,
    /// Where the oldest figure is in `slots` (a ring as long as the cap).
    head: u32,
    len: u32,
}

/// The figures' storage, widened when a figure does not fit.
#[derive(Clone, Default)]
enum Slots {
    /// Every figure is 0: nothing stored.
    #[default]
    Zeros,
    /// The one figure of a history of one (batch mode's), kept in place.
    One(u64),
    U8(Box<[u8]>),
    U16(Box<[u16]>),
    U32(Box<[u32]>),
    U64(Box<[u64]>),
}

impl Slots {
    /// Room for `cap` figures up to `largest`, all 0.
    fn for_largest(largest: u64, cap: usize) -> Slots {
        if largest == 0 {
            Slots::Zeros
        } else if cap == 1 {
            Slots::One(0)
        } else if largest <= u64::from(u8::MAX) {
            Slots::U8(vec![0; cap].into())
        } else if largest <= u64::from(u16::MAX) {
            Slots::U16(vec![0; cap].into())
        } else if largest <= u64::from(u32::MAX) {
            Slots::U32(vec![0; cap].into())
        } else {
            Slots::U64(vec![0; cap].into())
        }
    }

    fn largest(&self) -> u64 {
        match self {
            Slots::Zeros => 0,
            Slots::One(_) => u64::MAX,
            Slots::U8(_) => u8::MAX.into(),
            Slots::U16(_) => u16::MAX.into(),
            Slots::U32(_) => u32::MAX.into(),
            Slots::U64(_) => u64::MAX,
        }
    }

    fn get(&self, slot: usize) -> u64 {
        match self {
            Slots::Zeros => 0,
            Slots::One(value) => *value,
            Slots::U8(s) => s[slot].into(),
            Slots::U16(s) => s[slot].into(),
            Slots::U32(s) => s[slot].into(),
            Slots::U64(s) => s[slot],
        }
    }

    /// Stores `value`, which fits (`largest`).
    fn set(&mut self, slot: usize, value: u64) {
        match self {
            Slots::Zeros => {}
            Slots::One(one) => *one = value,
            Slots::U8(s) => s[slot] = value as u8,
            Slots::U16(s) => s[slot] = value as u16,
            Slots::U32(s) => s[slot] = value as u32,
            Slots::U64(s) => s[slot] = value,
        }
    }

    fn cap(&self) -> usize {
        match self {
            Slots::Zeros => 0,
            Slots::One(_) => 1,
            Slots::U8(s) => s.len(),
            Slots::U16(s) => s.len(),
            Slots::U32(s) => s.len(),
            Slots::U64(s) => s.len(),
        }
    }
}

impl History {
    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `value`, dropping the oldest figure beyond `cap` (at least 1).
    pub fn push(&mut self, value: u64, cap: usize) {
        let cap = cap.max(1);
        if value > self.slots.largest() || (self.slots.cap() != cap && !matches!(self.slots, Slots::Zeros)) {
            self.restore(value.max(self.iter().max().unwrap_or(0)), cap);
        }
        let slot = if self.len() < cap {
            self.len += 1;
            wrap(self.head as usize + self.len() - 1, cap)
        } else {
            let oldest = self.head as usize;
            self.head = wrap(oldest + 1, cap) as u32;
            oldest
        };
        self.slots.set(slot, value);
    }

    /// Stores the figures again, oldest first from slot 0, with room for `cap` up to `largest`.
    fn restore(&mut self, largest: u64, cap: usize) {
        let kept: Vec<u64> = self.iter().skip(self.len().saturating_sub(cap)).collect();
        self.slots = Slots::for_largest(largest, cap);
        for (slot, &value) in kept.iter().enumerate() {
            self.slots.set(slot, value);
        }
        (self.head, self.len) = (0, kept.len() as u32);
    }

    /// Frees the storage of a history of zeros.
    pub fn compact(&mut self) {
        if !matches!(self.slots, Slots::Zeros) && self.iter().all(|value| value == 0) {
            (self.slots, self.head) = (Slots::Zeros, 0);
        }
    }

    /// The figures, oldest first.
    pub fn iter(&self) -> impl DoubleEndedIterator<Item = u64> + ExactSizeIterator + '_ {
        let cap = self.slots.cap().max(1);
        (0..self.len()).map(move |i| self.slots.get(wrap(self.head as usize + i, cap)))
    }

    /// The newest figure.
    pub fn last(&self) -> Option<u64> {
        self.iter().next_back()
    }
}

/// `at` (below twice `cap`) as a slot of a ring of `cap`, without the division of `%`, which
/// cost more than the rest of a push.
fn wrap(at: usize, cap: usize) -> usize {
    if at >= cap {
        at - cap
    } else {
        at
    }
}

impl PartialEq for History {
    fn eq(&self, other: &History) -> bool {
        self.iter().eq(other.iter())
    }
}

impl<const N: usize> PartialEq<[u64; N]> for History {
    fn eq(&self, other: &[u64; N]) -> bool {
        self.iter().eq(other.iter().copied())
    }
}

impl fmt::Debug for History {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_figures_widening_as_they_grow() {
        let mut history = History::default();
        for value in [0, 0, 7, 300, 0, 70_000, 5_000_000_000] {
            history.push(value, 4);
        }
        assert_eq!(history, [300, 0, 70_000, 5_000_000_000]);
        assert_eq!((history.len(), history.last()), (4, Some(5_000_000_000)));
        assert_eq!(history.iter().rev().take(2).sum::<u64>(), 5_000_070_000);
    }

    #[test]
    fn zeros_take_no_storage_and_a_history_of_zeros_gives_its_storage_back() {
        let mut history = History::default();
        for _ in 0..10 {
            history.push(0, 3);
        }
        assert!(matches!(history.slots, Slots::Zeros));
        assert_eq!(history, [0, 0, 0]);
        history.push(9, 3);
        history.compact();
        assert_eq!(history.slots.cap(), 3, "a figure other than 0 stays");
        for _ in 0..3 {
            history.push(0, 3);
        }
        history.compact();
        assert!(matches!(history.slots, Slots::Zeros));
        assert_eq!(history, [0, 0, 0]);
        history.push(1, 3);
        assert_eq!(history, [0, 0, 1]);
        let mut one = History::default();
        for value in [0, 300, 5] {
            one.push(value, 1);
        }
        assert!(matches!(one.slots, Slots::One(5)), "{one:?}");
        assert_eq!(one, [5]);
    }
}
