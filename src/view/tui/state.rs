//! What the live screen remembers between frames (selection, scroll, sort, filter, grouping,
//! pause, help, what is hidden) and how each action changes it. No drawing, no terminal.

use crate::model::group::{GroupKey, Grouping};
use std::ops::Range;

use crate::model::{Averaging, SortKey};

/// Something the user asked for, whichever key or mouse gesture it came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Moves the selection by this many rows (negative: up).
    Move(isize),
    /// Moves the selection by this many pages.
    Page(isize),
    Top,
    Bottom,
    /// Selects the row at this index of the view (a click).
    Select(usize),
    /// Sorts by this key, or reverses the sort if it is the one in effect (a heading click).
    SortBy(SortKey),
    NextSort,
    PreviousSort,
    Reverse,
    /// Starts typing a filter.
    EditFilter,
    FilterPush(char),
    FilterPop,
    /// Stops typing and keeps the filter.
    FilterDone,
    /// Stops typing and drops the filter.
    FilterClear,
    TogglePause,
    NextGrouping,
    /// Shows this grouping's tab.
    SetGrouping(Grouping),
    /// The next window the rate columns average over.
    NextAveraging,
    /// Shows both ends of a connection within the host as one row, or each apart.
    ToggleFolding,
    /// Starts or stops following the selected row as rows re-sort (htop's `F`).
    ToggleFollow,
    ToggleClosed,
    ToggleIdle,
    ToggleDetail,
    ToggleNames,
    ToggleBits,
    ToggleHelp,
    /// Opens the sort menu (htop's F6) at the sort in effect.
    OpenSortMenu,
    /// Moves the sort menu's cursor by this many entries.
    SortMenuMove(isize),
    /// Sorts by the sort menu's entry and closes it.
    SortMenuChoose,
    SortMenuClose,
    /// Scrolls the detail pane's history by this many lines (negative: older).
    ScrollDetail(isize),
    Quit,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TuiState {
    /// The chosen sort; a grouping it means nothing for sorts by total instead (see `sort`).
    pub sort_choice: SortKey,
    pub reverse: bool,
    /// Matched against comm, pid, addresses and ports (`ConnRow::matches`).
    pub filter: String,
    /// Whether keys are typing into the filter.
    pub editing_filter: bool,
    pub grouping: Grouping,
    /// How far back the rate columns (and the sorts by them) look.
    pub averaging: Averaging,
    /// Whether both ends of a connection within the host show as one row.
    pub fold_pairs: bool,
    /// Whether the display is frozen (collection goes on).
    pub paused: bool,
    pub help: bool,
    /// Raw byte counts instead of KiB/MiB/GiB.
    pub raw_bytes: bool,
    /// Host and service names instead of addresses and port numbers.
    pub names: bool,
    /// Rates in bits per second (SI), as links are rated, instead of bytes.
    pub bits: bool,
    /// Hides closed connections (and groups whose connections all closed).
    pub hide_closed: bool,
    /// Hides rows that moved no bytes and changed no state in the last interval.
    pub hide_idle: bool,
    /// Whether the detail pane is shown (where the terminal is tall enough).
    pub detail: bool,
    /// Index of the selected row in the current view: the cursor keeps this position while
    /// rows re-sort, as in htop, unless `following`.
    pub selected: usize,
    /// The selected row's key.
    pub selected_key: Option<GroupKey>,
    /// Whether the cursor follows `selected_key` as rows move between frames.
    pub following: bool,
    /// Index of the first row shown.
    pub offset: usize,
    /// How many table rows fit on the screen.
    pub page: usize,
    /// The screen row of the table's first row, and the columns of its sortable headings
    /// (just above), as last drawn: where clicks land.
    pub table_top: u16,
    pub headings: Vec<(Range<u16>, SortKey)>,
    /// The sort menu's cursor, as an index into the grouping's sort keys, while it is open.
    pub sort_menu: Option<usize>,
    /// How many of the selected row's newest history lines the detail pane scrolled past.
    pub detail_scroll: usize,
    /// Whether to draw without colours (`NO_COLOR`): attributes alone mark what colours would.
    pub no_color: bool,
    /// Why the collector in use is not the best one, where it fell back (for the status line).
    pub collector_notice: Option<String>,
    pub quit: bool,
}

impl Default for TuiState {
    fn default() -> TuiState {
        TuiState {
            sort_choice: SortKey::default(),
            reverse: false,
            filter: String::new(),
            editing_filter: false,
            grouping: Grouping::default(),
            averaging: Averaging::default(),
            fold_pairs: false,
            paused: false,
            help: false,
            raw_bytes: false,
            names: true,
            bits: false,
            hide_closed: false,
            hide_idle: false,
            detail: true,
            selected: 0,
            selected_key: None,
            following: false,
            offset: 0,
            page: 0,
            table_top: 0,
            headings: Vec::new(),
            sort_menu: None,
            detail_scroll: 0,
            no_color: false,
            collector_notice: None,
            quit: false,
        }
    }
}

impl TuiState {
    /// The sort in effect for the current grouping.
    pub fn sort(&self) -> SortKey {
        let keys = self.grouping.sort_keys();
        if keys.contains(&self.sort_choice) {
            self.sort_choice
        } else {
            SortKey::Total
        }
    }

    /// Applies `action`; `rows` are the keys of the rows on screen, in order.
    pub fn apply(&mut self, action: Action, rows: &[GroupKey]) {
        let page = self.page.max(1) as isize;
        match action {
            Action::Move(by) => self.move_to(self.selected as isize + by, rows),
            Action::Page(by) => self.move_to(self.selected as isize + by * page, rows),
            Action::Top => self.move_to(0, rows),
            Action::Bottom => self.move_to(rows.len() as isize - 1, rows),
            Action::Select(index) => self.move_to(index as isize, rows),
            Action::SortBy(key) if key == self.sort() => self.reverse = !self.reverse,
            Action::SortBy(key) => (self.sort_choice, self.reverse) = (key, false),
            Action::NextSort => self.sort_choice = self.sort_step(1),
            Action::PreviousSort => self.sort_choice = self.sort_step(-1),
            Action::Reverse => self.reverse = !self.reverse,
            Action::EditFilter => self.editing_filter = true,
            Action::FilterPush(c) => self.filter.push(c),
            Action::FilterPop => {
                self.filter.pop();
            }
            Action::FilterDone => self.editing_filter = false,
            Action::FilterClear => {
                self.editing_filter = false;
                self.filter.clear();
            }
            Action::TogglePause => self.paused = !self.paused,
            Action::NextGrouping => self.grouping = self.grouping.next(),
            Action::SetGrouping(grouping) => self.grouping = grouping,
            Action::NextAveraging => self.averaging = self.averaging.next(),
            Action::ToggleFolding => self.fold_pairs = !self.fold_pairs,
            Action::ToggleFollow => self.following = !self.following && self.selected_key.is_some(),
            Action::ToggleClosed => self.hide_closed = !self.hide_closed,
            Action::ToggleIdle => self.hide_idle = !self.hide_idle,
            Action::ToggleDetail => self.detail = !self.detail,
            Action::ToggleNames => self.names = !self.names,
            Action::ToggleBits => self.bits = !self.bits,
            Action::ToggleHelp => self.help = !self.help,
            Action::OpenSortMenu => self.sort_menu = Some(self.sort_index()),
            Action::SortMenuMove(by) => {
                let last = self.grouping.sort_keys().len().saturating_sub(1) as isize;
                self.sort_menu =
                    self.sort_menu.map(|at| (at as isize).saturating_add(by).clamp(0, last) as usize);
            }
            Action::SortMenuChoose => {
                let key = self.sort_menu.take().and_then(|at| self.grouping.sort_keys().get(at).copied());
                if let Some(key) = key.filter(|&key| key != self.sort()) {
                    (self.sort_choice, self.reverse) = (key, false);
                }
            }
            Action::SortMenuClose => self.sort_menu = None,
            Action::ScrollDetail(by) => self.detail_scroll = self.detail_scroll.saturating_add_signed(-by),
            Action::Quit => self.quit = true,
        }
    }

    fn sort_step(&self, by: isize) -> SortKey {
        let keys = self.grouping.sort_keys();
        keys[(self.sort_index() as isize + by).rem_euclid(keys.len() as isize) as usize]
    }

    /// Where the sort in effect is among the grouping's sort keys.
    fn sort_index(&self) -> usize {
        self.grouping.sort_keys().iter().position(|k| *k == self.sort()).unwrap_or(0)
    }

    /// Moves the cursor by hand, which stops following, as in htop.
    fn move_to(&mut self, index: isize, rows: &[GroupKey]) {
        self.following = false;
        self.select(index, rows);
    }

    fn select(&mut self, index: isize, rows: &[GroupKey]) {
        self.selected = index.clamp(0, rows.len().saturating_sub(1) as isize) as usize;
        let key = rows.get(self.selected).cloned();
        if key != self.selected_key {
            // Another row's history starts at its newest line.
            self.detail_scroll = 0;
        }
        self.selected_key = key;
        self.scroll_to_selection(rows.len());
    }

    /// Places the cursor in a new frame's `rows`: at the same position, or on the followed
    /// row while it is there (following ends when it leaves).
    pub fn refresh(&mut self, rows: &[GroupKey]) {
        let followed = self
            .selected_key
            .as_ref()
            .filter(|_| self.following)
            .and_then(|key| rows.iter().position(|k| k == key));
        self.following = followed.is_some();
        self.select(followed.unwrap_or(self.selected) as isize, rows);
    }

    /// Scrolls as little as keeps the selection on screen, and the screen full when it can be.
    fn scroll_to_selection(&mut self, len: usize) {
        let page = self.page.max(1);
        self.offset = self.offset.min(len.saturating_sub(page)).min(self.selected);
        if self.selected >= self.offset + page {
            self.offset = self.selected + 1 - page;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: u64) -> Vec<GroupKey> {
        (0..n).map(GroupKey::Connection).collect()
    }

    fn state(page: usize) -> TuiState {
        TuiState { page, ..TuiState::default() }
    }

    #[test]
    fn moving_clamps_to_the_rows_and_scrolls_as_little_as_needed() {
        let rows = rows(10);
        let mut s = state(4);
        s.apply(Action::Move(-1), &rows);
        assert_eq!((s.selected, s.offset), (0, 0));
        s.apply(Action::Move(4), &rows);
        assert_eq!((s.selected, s.offset, s.selected_key.clone()), (4, 1, Some(GroupKey::Connection(4))));
        s.apply(Action::Move(-2), &rows);
        assert_eq!((s.selected, s.offset), (2, 1));
        s.apply(Action::Page(1), &rows);
        assert_eq!((s.selected, s.offset), (6, 3));
        s.apply(Action::Bottom, &rows);
        assert_eq!((s.selected, s.offset), (9, 6));
        s.apply(Action::Page(-1), &rows);
        assert_eq!((s.selected, s.offset), (5, 5));
        s.apply(Action::Top, &rows);
        assert_eq!((s.selected, s.offset), (0, 0));
    }

    #[test]
    fn the_cursor_keeps_its_position_while_rows_re_sort() {
        let mut s = state(3);
        s.apply(Action::Move(2), &rows(5));
        let reordered: Vec<GroupKey> = [4, 2, 3, 1, 0].map(GroupKey::Connection).to_vec();
        s.refresh(&reordered);
        assert_eq!((s.selected, s.selected_key.clone()), (2, Some(GroupKey::Connection(3))));
        // Home stays at the top whatever comes there.
        s.apply(Action::Top, &reordered);
        s.refresh(&rows(5));
        assert_eq!((s.selected, s.selected_key.clone()), (0, Some(GroupKey::Connection(0))));
        // The table shrank: the nearest position is kept.
        s.apply(Action::Bottom, &rows(5));
        s.refresh(&[GroupKey::Connection(7), GroupKey::Connection(8)]);
        assert_eq!((s.selected, s.offset, s.selected_key.clone()), (1, 0, Some(GroupKey::Connection(8))));
        s.refresh(&[]);
        assert_eq!((s.selected, s.offset, s.selected_key.clone()), (0, 0, None));
    }

    #[test]
    fn follow_keeps_the_selected_row_until_it_leaves_or_the_cursor_moves() {
        let mut s = state(3);
        s.apply(Action::Move(2), &rows(5));
        s.apply(Action::ToggleFollow, &rows(5));
        let reordered: Vec<GroupKey> = [4, 3, 1, 0, 2].map(GroupKey::Connection).to_vec();
        s.refresh(&reordered);
        assert_eq!((s.selected, s.offset, s.following), (4, 2, true));
        // Moving by hand stops following: the cursor stays where it was moved to.
        s.apply(Action::Move(-1), &reordered);
        s.refresh(&rows(5));
        assert_eq!(
            (s.selected, s.selected_key.clone(), s.following),
            (3, Some(GroupKey::Connection(3)), false)
        );
        // A followed row that leaves ends the following where it was.
        s.apply(Action::ToggleFollow, &rows(5));
        s.refresh(&rows(2));
        assert_eq!((s.selected, s.following), (1, false));
        // Nothing to follow in an empty table.
        s.refresh(&[]);
        s.apply(Action::ToggleFollow, &[]);
        assert!(!s.following);
    }

    #[test]
    fn sort_cycles_through_the_keys_of_the_grouping() {
        let mut s = TuiState::default();
        assert_eq!(s.sort(), SortKey::Total);
        s.apply(Action::NextSort, &[]);
        assert_eq!(s.sort(), SortKey::RxTotal);
        s.apply(Action::PreviousSort, &[]);
        s.apply(Action::PreviousSort, &[]);
        assert_eq!(s.sort(), SortKey::Tx);
        for _ in 0..8 {
            s.apply(Action::PreviousSort, &[]);
        }
        assert_eq!(s.sort(), SortKey::Pid);
        s.apply(Action::PreviousSort, &[]);
        assert_eq!(s.sort(), SortKey::TxTotal);
        // State means nothing for process groups: they sort by total, and the choice is kept.
        s.sort_choice = SortKey::State;
        s.apply(Action::NextGrouping, &[]);
        assert_eq!((s.grouping, s.sort()), (Grouping::Process, SortKey::Total));
        s.apply(Action::NextSort, &[]);
        assert_eq!(s.sort(), SortKey::RxTotal);
        s.apply(Action::Reverse, &[]);
        assert!(s.reverse);
    }

    #[test]
    fn a_click_selects_a_row_and_a_heading_sorts_then_reverses() {
        let mut s = state(3);
        s.apply(Action::Select(4), &rows(10));
        assert_eq!((s.selected, s.offset), (4, 2));
        s.apply(Action::SortBy(SortKey::Pid), &[]);
        assert_eq!((s.sort(), s.reverse), (SortKey::Pid, false));
        s.apply(Action::SortBy(SortKey::Pid), &[]);
        assert_eq!((s.sort(), s.reverse), (SortKey::Pid, true));
        s.apply(Action::SortBy(SortKey::Rx), &[]);
        assert_eq!((s.sort(), s.reverse), (SortKey::Rx, false));
    }

    #[test]
    fn the_sort_menu_opens_at_the_sort_in_effect_and_enter_sorts() {
        let mut s = TuiState { sort_choice: SortKey::State, ..TuiState::default() };
        s.apply(Action::OpenSortMenu, &[]);
        assert_eq!(s.sort_menu, Some(4));
        s.apply(Action::SortMenuMove(2), &[]);
        s.apply(Action::SortMenuChoose, &[]);
        assert_eq!((s.sort_menu, s.sort(), s.reverse), (None, SortKey::Retrans, false));
        // Choosing the sort in effect keeps its order; the cursor stops at either end.
        s.reverse = true;
        s.apply(Action::OpenSortMenu, &[]);
        s.apply(Action::SortMenuChoose, &[]);
        assert_eq!((s.sort(), s.reverse), (SortKey::Retrans, true));
        s.apply(Action::OpenSortMenu, &[]);
        s.apply(Action::SortMenuMove(isize::MAX), &[]);
        assert_eq!(s.sort_menu, Some(SortKey::ALL.len() - 1));
        s.apply(Action::SortMenuMove(-isize::MAX), &[]);
        assert_eq!(s.sort_menu, Some(0));
        s.apply(Action::SortMenuClose, &[]);
        assert_eq!((s.sort_menu, s.sort()), (None, SortKey::Retrans));
        // A process view's menu lists its own keys, from the total it sorts by.
        s.apply(Action::NextGrouping, &[]);
        s.apply(Action::OpenSortMenu, &[]);
        s.apply(Action::SortMenuMove(1), &[]);
        s.apply(Action::SortMenuChoose, &[]);
        assert_eq!(s.sort(), SortKey::RxTotal);
    }

    #[test]
    fn the_detail_history_scrolls_back_and_starts_anew_for_another_row() {
        let mut s = state(3);
        s.refresh(&rows(3));
        s.apply(Action::ScrollDetail(-1), &rows(3));
        s.apply(Action::ScrollDetail(-1), &rows(3));
        s.apply(Action::ScrollDetail(1), &rows(3));
        assert_eq!(s.detail_scroll, 1);
        s.apply(Action::ScrollDetail(5), &rows(3));
        assert_eq!(s.detail_scroll, 0);
        s.apply(Action::ScrollDetail(-2), &rows(3));
        s.refresh(&rows(3));
        assert_eq!(s.detail_scroll, 2);
        s.apply(Action::Move(1), &rows(3));
        assert_eq!(s.detail_scroll, 0);
    }

    #[test]
    fn filter_is_typed_kept_and_cleared() {
        let mut s = TuiState::default();
        s.apply(Action::EditFilter, &[]);
        for c in "curlx".chars() {
            s.apply(Action::FilterPush(c), &[]);
        }
        s.apply(Action::FilterPop, &[]);
        s.apply(Action::FilterDone, &[]);
        assert_eq!((s.filter.as_str(), s.editing_filter), ("curl", false));
        s.apply(Action::FilterClear, &[]);
        assert_eq!((s.filter.as_str(), s.editing_filter), ("", false));
    }

    #[test]
    fn toggles_and_quit() {
        let mut s = TuiState::default();
        assert!(s.detail && s.names);
        let toggles = [
            Action::TogglePause,
            Action::ToggleHelp,
            Action::ToggleClosed,
            Action::ToggleIdle,
            Action::ToggleDetail,
            Action::ToggleNames,
            Action::ToggleBits,
            Action::ToggleFolding,
        ];
        for action in toggles.into_iter().chain([Action::Quit]) {
            s.apply(action, &[]);
        }
        assert!(
            s.paused
                && s.help
                && s.hide_closed
                && s.hide_idle
                && !s.detail
                && !s.names
                && s.bits
                && s.fold_pairs
                && s.quit
        );
        for action in toggles {
            s.apply(action, &[]);
        }
        assert!(
            !s.paused
                && !s.help
                && !s.hide_closed
                && !s.hide_idle
                && s.detail
                && s.names
                && !s.bits
                && !s.fold_pairs
        );
    }

    #[test]
    fn tabs_are_chosen_or_cycled_and_the_averaging_cycles() {
        let mut s = TuiState::default();
        s.apply(Action::SetGrouping(Grouping::Container), &[]);
        assert_eq!(s.grouping, Grouping::Container);
        s.apply(Action::NextGrouping, &[]);
        assert_eq!(s.grouping, Grouping::Connection);
        s.apply(Action::NextAveraging, &[]);
        assert_eq!(s.averaging, Averaging::TenSeconds);
        s.apply(Action::NextAveraging, &[]);
        s.apply(Action::NextAveraging, &[]);
        assert_eq!(s.averaging, Averaging::Interval);
    }
}
