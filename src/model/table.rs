//! The model's rows by connection id, side by side in slots that keep their place while the
//! row is in the table: a pass over all of them (a batch table of a million rows, a filter)
//! reads memory in order, and the model keeps the slots of the rows it visits, so that a
//! busy row is found without a lookup by id.

use std::collections::HashMap;

use super::ConnRow;

/// The hasher of the maps keyed by ids (connection ids, socket inodes, cgroup ids) that a
/// read touches per row: foldhash costs a fraction of SipHash.
pub type ById = foldhash::fast::RandomState;

/// Where a row lies in its `Table`, until it is taken out or the table compacted.
pub type Slot = u32;

/// Rows by `conn.id`.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Where each id's row is in `slots`.
    index: HashMap<u64, Slot, ById>,
    /// The rows; `None` for the free slots, which `free` lists.
    slots: Vec<Option<ConnRow>>,
    free: Vec<Slot>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Room for `additional` more rows.
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional);
        self.slots.reserve_exact(additional.saturating_sub(self.free.len()));
    }

    pub fn get(&self, id: u64) -> Option<&ConnRow> {
        self.slot(id).map(|slot| self.at(slot))
    }

    /// The slot of `id`'s row.
    pub fn slot(&self, id: u64) -> Option<Slot> {
        self.index.get(&id).copied()
    }

    /// The row in `slot`, which is in use.
    pub fn at(&self, slot: Slot) -> &ConnRow {
        self.slots[slot as usize].as_ref().expect("a slot in use")
    }

    pub fn at_mut(&mut self, slot: Slot) -> &mut ConnRow {
        self.slots[slot as usize].as_mut().expect("a slot in use")
    }

    /// The row of `id` and its slot, made by `new` if there is none.
    pub fn get_or_insert_with(&mut self, id: u64, new: impl FnOnce() -> ConnRow) -> (Slot, &mut ConnRow) {
        let slot = *self.index.entry(id).or_insert_with(|| match self.free.pop() {
            Some(slot) => {
                self.slots[slot as usize] = Some(new());
                slot
            }
            None => {
                self.slots.push(Some(new()));
                Slot::try_from(self.slots.len() - 1).expect("fewer than 2^32 rows")
            }
        });
        (slot, self.at_mut(slot))
    }

    /// Takes out the row in `slot`, which is in use; no other row moves.
    pub fn remove(&mut self, slot: Slot) -> ConnRow {
        let row = self.slots[slot as usize].take().expect("a slot in use");
        self.index.remove(&row.conn.id);
        self.free.push(slot);
        row
    }

    /// Every row, in the order they are stored.
    pub fn iter(&self) -> impl Iterator<Item = &ConnRow> {
        self.slots.iter().flatten()
    }

    /// Every row with its slot, in the order they are stored.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (Slot, &mut ConnRow)> {
        (0..).zip(&mut self.slots).filter_map(|(slot, row)| Some((slot, row.as_mut()?)))
    }

    /// Where most slots are free (after many rows left), moves the rows together so that a
    /// pass over them does not walk the gaps; `held`, slots kept outside, follow their rows.
    pub fn compact(&mut self, held: &mut [Slot]) {
        if self.free.len() <= self.slots.len() / 2 {
            return;
        }
        let mut moved_to = vec![Slot::MAX; self.slots.len()];
        let mut rows = Vec::with_capacity(self.len());
        for (old, row) in self.slots.drain(..).enumerate() {
            let Some(row) = row else { continue };
            let slot = rows.len() as Slot;
            moved_to[old] = slot;
            *self.index.get_mut(&row.conn.id).expect("every row is indexed") = slot;
            rows.push(Some(row));
        }
        (self.slots, self.free) = (rows, Vec::new());
        for slot in held {
            *slot = moved_to[*slot as usize];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::conn::test_conn;
    use std::time::Duration;

    fn row(id: u64) -> ConnRow {
        ConnRow::new(test_conn(id, 1, "a", ("127.0.0.1:1", "127.0.0.1:2"), (0, 0)), Duration::ZERO)
    }

    fn ids(table: &Table) -> Vec<u64> {
        table.iter().map(|r| r.conn.id).collect()
    }

    #[test]
    fn rows_keep_their_slots_as_others_leave_and_come() {
        let mut table = Table::default();
        let slots: Vec<Slot> = [10, 20, 30, 40].map(|id| table.get_or_insert_with(id, || row(id)).0).into();
        assert_eq!(table.get_or_insert_with(20, || panic!("20 is there")).0, slots[1]);
        assert_eq!(table.remove(slots[1]).conn.id, 20);
        assert_eq!(table.remove(slots[3]).conn.id, 40);
        assert!(table.get(20).is_none() && table.get(40).is_none());
        for (id, slot) in [(10, slots[0]), (30, slots[2])] {
            assert_eq!((table.get(id).map(|r| r.conn.id), table.at(slot).conn.id), (Some(id), id));
        }
        assert_eq!((table.len(), ids(&table)), (2, vec![10, 30]));
        // A new row takes a free slot.
        let (slot, _) = table.get_or_insert_with(50, || row(50));
        assert!(slot == slots[1] || slot == slots[3]);
        assert_eq!(table.at(slot).conn.id, 50);
        assert!(table.iter_mut().any(|(at, row)| at == slot && row.conn.id == 50));
        assert_eq!(table.iter_mut().count(), 3);
    }

    #[test]
    fn compacting_moves_rows_together_and_the_held_slots_with_them() {
        let mut table = Table::default();
        let slots: Vec<Slot> = (0..10).map(|id| table.get_or_insert_with(id, || row(id)).0).collect();
        for &slot in &slots[..5] {
            table.remove(slot);
        }
        let mut held = vec![slots[9], slots[6]];
        table.compact(&mut held);
        assert_eq!(held, [slots[9], slots[6]], "half the slots free: left as they are");
        table.remove(slots[5]);
        table.compact(&mut held);
        assert_eq!(ids(&table), [6, 7, 8, 9]);
        assert_eq!(held.iter().map(|&slot| table.at(slot).conn.id).collect::<Vec<_>>(), [9, 6]);
        for id in 6..10 {
            assert_eq!(table.get(id).map(|r| r.conn.id), Some(id));
        }
        let (slot, _) = table.get_or_insert_with(11, || row(11));
        assert_eq!((slot, table.len()), (4, 5));
    }
}
