//! The model's rows by connection id, stored side by side: a pass over all of them (a batch
//! table of a million rows, a filter) reads memory in order, and growing the table moves no
//! row but by a reallocation of the one array.

use std::collections::HashMap;

use super::ConnRow;

/// The hasher of the maps keyed by ids (connection ids, socket inodes, cgroup ids) that a
/// read touches per row: foldhash costs a fraction of SipHash.
pub type ById = foldhash::fast::RandomState;

/// Rows by `conn.id`.
#[derive(Clone, Debug, Default)]
pub struct Table {
    /// Where each id's row is in `rows`.
    index: HashMap<u64, usize, ById>,
    rows: Vec<ConnRow>,
}

impl Table {
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Room for `additional` more rows.
    pub fn reserve(&mut self, additional: usize) {
        self.index.reserve(additional);
        self.rows.reserve_exact(additional);
    }

    pub fn get(&self, id: u64) -> Option<&ConnRow> {
        self.index.get(&id).map(|&at| &self.rows[at])
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut ConnRow> {
        self.index.get(&id).map(|&at| &mut self.rows[at])
    }

    /// The row of `id`, made by `new` if there is none.
    pub fn get_or_insert_with(&mut self, id: u64, new: impl FnOnce() -> ConnRow) -> &mut ConnRow {
        let at = *self.index.entry(id).or_insert_with(|| {
            self.rows.push(new());
            self.rows.len() - 1
        });
        &mut self.rows[at]
    }

    /// Takes out the row of `id`; the last row moves into its place.
    pub fn remove(&mut self, id: u64) -> Option<ConnRow> {
        let at = self.index.remove(&id)?;
        let row = self.rows.swap_remove(at);
        if let Some(moved) = self.rows.get(at) {
            self.index.insert(moved.conn.id, at);
        }
        Some(row)
    }

    /// Every row, in the order they are stored.
    pub fn iter(&self) -> std::slice::Iter<'_, ConnRow> {
        self.rows.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, ConnRow> {
        self.rows.iter_mut()
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

    #[test]
    fn rows_stay_found_by_id_as_others_leave() {
        let mut table = Table::default();
        for id in [10, 20, 30, 40] {
            table.get_or_insert_with(id, || row(id));
        }
        table.get_or_insert_with(20, || panic!("20 is there"));
        assert_eq!(table.remove(20).map(|r| r.conn.id), Some(20));
        assert_eq!(table.remove(20).map(|r| r.conn.id), None);
        assert_eq!(table.remove(40).map(|r| r.conn.id), Some(40));
        for id in [10, 30] {
            assert_eq!(table.get(id).map(|r| r.conn.id), Some(id));
        }
        assert_eq!((table.len(), table.get(40).is_none()), (2, true));
        let stored: Vec<u64> = table.iter().map(|r| r.conn.id).collect();
        assert_eq!(stored, [10, 30]);
    }
}
