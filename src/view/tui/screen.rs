//! What one frame of the live screen shows: the table's rows for the state's filter, sort and
//! grouping, and the figures around them. Built from the model; drawing only reads it.

use std::collections::VecDeque;
use std::time::Duration;

use crate::model::group::{group, Group, GroupKey, Grouping};
use crate::model::{ConnRow, Model, Query};

use super::state::TuiState;

/// What does not change while tcptop runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    pub host: String,
    pub backend: String,
    pub interval: Duration,
}

/// The table's rows, filtered and sorted: connections, or their sums per group.
#[derive(Debug)]
pub enum Rows<'m> {
    Conns(Vec<&'m ConnRow>),
    Groups(Vec<Group>),
}

impl<'m> Rows<'m> {
    /// The rows `state` asks for: every connection (idle ones too) matching the filter,
    /// grouped and sorted.
    pub fn build(model: &'m Model, state: &TuiState) -> Rows<'m> {
        let query =
            Query { all: true, text: state.filter.clone(), sort: state.sort(), reverse: state.reverse };
        let conns = model.select(&query);
        match state.grouping {
            Grouping::Connection => Rows::Conns(conns),
            grouping => Rows::Groups(group(&conns, grouping, query.sort, query.reverse)),
        }
    }

    pub fn len(&self) -> usize {
        match self {
            Rows::Conns(rows) => rows.len(),
            Rows::Groups(groups) => groups.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// What identifies each row across frames, in order.
    pub fn keys(&self) -> Vec<GroupKey> {
        match self {
            Rows::Conns(rows) => rows.iter().map(|r| GroupKey::Connection(r.conn.id)).collect(),
            Rows::Groups(groups) => groups.iter().map(|g| g.key.clone()).collect(),
        }
    }

    /// The process of row `index`, where the row has one.
    pub fn pid(&self, index: usize) -> Option<u32> {
        match self {
            Rows::Conns(rows) => rows.get(index)?.conn.pid,
            Rows::Groups(groups) => match &groups.get(index)?.key {
                GroupKey::Process { pid, .. } => *pid,
                GroupKey::Connection(_) | GroupKey::RemoteHost(_) => None,
            },
        }
    }
}

/// Everything a frame draws besides the state.
pub struct Screen<'a> {
    pub header: &'a Header,
    /// The model as shown: the live one, or the copy frozen by a pause.
    pub model: &'a Model,
    pub rows: &'a Rows<'a>,
    /// Total bytes per second of each interval over the last minute, oldest first.
    pub throughput: &'a VecDeque<u64>,
    /// The selected process's command line, when known.
    pub cmdline: Option<&'a str>,
    /// Whether the model has seen only its first sample, when every connection is new to it
    /// and "opened" says nothing.
    pub first_interval: bool,
}
