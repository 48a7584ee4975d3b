//! Which action a key press or mouse gesture asks for, following htop and bottom habits.

use crossterm::event::{Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers, MouseButton, MouseEventKind};

use super::state::{Action, TuiState};
use crate::model::group::Grouping;

/// Rows the mouse wheel moves per notch.
const WHEEL_ROWS: isize = 3;

/// The action `input` asks for in `state`, if any.
pub fn action(input: &Event, state: &TuiState) -> Option<Action> {
    match input {
        Event::Key(key) if key.kind != KeyEventKind::Release => key_action(key, state),
        Event::Mouse(mouse) => match mouse.kind {
            MouseEventKind::ScrollDown => Some(Action::Move(WHEEL_ROWS)),
            MouseEventKind::ScrollUp => Some(Action::Move(-WHEEL_ROWS)),
            MouseEventKind::Down(MouseButton::Left) => click(mouse.column, mouse.row, state),
            _ => None,
        },
        _ => None,
    }
}

/// A click on a heading sorts by it; one on a row selects it.
fn click(x: u16, y: u16, state: &TuiState) -> Option<Action> {
    if y + 1 == state.table_top {
        let (_, key) = state.headings.iter().find(|(columns, _)| columns.contains(&x))?;
        return Some(Action::SortBy(*key));
    }
    let row = y.checked_sub(state.table_top)? as usize;
    (row < state.page).then_some(Action::Select(state.offset + row))
}

fn key_action(key: &KeyEvent, state: &TuiState) -> Option<Action> {
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    if ctrl && key.code == KeyCode::Char('c') {
        // Raw mode turns Ctrl-C into a key instead of SIGINT.
        return Some(Action::Quit);
    }
    if state.help {
        // Any key closes the help, as in htop.
        return Some(Action::ToggleHelp);
    }
    if key.code == KeyCode::F(10) {
        return Some(Action::Quit);
    }
    if state.sort_menu.is_some() {
        return sort_menu_key(key.code);
    }
    if let Some(action) = movement(key.code) {
        return Some(action);
    }
    if state.editing_filter {
        return match key.code {
            KeyCode::Char(c) if !ctrl => Some(Action::FilterPush(c)),
            KeyCode::Backspace => Some(Action::FilterPop),
            KeyCode::Enter => Some(Action::FilterDone),
            KeyCode::Esc => Some(Action::FilterClear),
            _ => None,
        };
    }
    match key.code {
        KeyCode::Char('j') => Some(Action::Move(1)),
        KeyCode::Char('k') => Some(Action::Move(-1)),
        KeyCode::Char('s' | '>') => Some(Action::NextSort),
        KeyCode::Char('S' | '<') => Some(Action::PreviousSort),
        KeyCode::Char('r') => Some(Action::Reverse),
        KeyCode::Char('/') | KeyCode::F(3 | 4) => Some(Action::EditFilter),
        KeyCode::F(6) => Some(Action::OpenSortMenu),
        KeyCode::Char('[') => Some(Action::ScrollDetail(-1)),
        KeyCode::Char(']') => Some(Action::ScrollDetail(1)),
        KeyCode::Esc if !state.filter.is_empty() => Some(Action::FilterClear),
        KeyCode::Char(' ') => Some(Action::TogglePause),
        KeyCode::Char('g') | KeyCode::Tab => Some(Action::NextGrouping),
        KeyCode::Char(digit @ '1'..='9') => tab(digit),
        KeyCode::Char('a') => Some(Action::NextAveraging),
        KeyCode::Char('L') => Some(Action::ToggleFolding),
        KeyCode::Char('F') => Some(Action::ToggleFollow),
        KeyCode::Char('c') => Some(Action::ToggleClosed),
        KeyCode::Char('i') => Some(Action::ToggleIdle),
        KeyCode::Char('d') | KeyCode::Enter => Some(Action::ToggleDetail),
        KeyCode::Char('n') => Some(Action::ToggleNames),
        KeyCode::Char('b') => Some(Action::ToggleBits),
        KeyCode::Char('?') | KeyCode::F(1) => Some(Action::ToggleHelp),
        KeyCode::Char('q') => Some(Action::Quit),
        _ => None,
    }
}

/// The tab of the view a digit key names, counted from 1.
fn tab(digit: char) -> Option<Action> {
    let index = digit.to_digit(10)?.checked_sub(1)? as usize;
    Grouping::ALL.get(index).map(|grouping| Action::SetGrouping(*grouping))
}

/// Keys of the open sort menu: it moves, chooses or closes, and nothing else happens.
fn sort_menu_key(code: KeyCode) -> Option<Action> {
    match code {
        KeyCode::Up | KeyCode::Char('k') => Some(Action::SortMenuMove(-1)),
        KeyCode::Down | KeyCode::Char('j') => Some(Action::SortMenuMove(1)),
        KeyCode::Home => Some(Action::SortMenuMove(-isize::MAX)),
        KeyCode::End => Some(Action::SortMenuMove(isize::MAX)),
        KeyCode::Enter => Some(Action::SortMenuChoose),
        KeyCode::Esc | KeyCode::F(6) | KeyCode::Char('q') => Some(Action::SortMenuClose),
        _ => None,
    }
}

/// Keys that move the selection, also while typing a filter.
fn movement(code: KeyCode) -> Option<Action> {
    match code {
        KeyCode::Up => Some(Action::Move(-1)),
        KeyCode::Down => Some(Action::Move(1)),
        KeyCode::PageUp => Some(Action::Page(-1)),
        KeyCode::PageDown => Some(Action::Page(1)),
        KeyCode::Home => Some(Action::Top),
        KeyCode::End => Some(Action::Bottom),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossterm::event::{MouseEvent, MouseEventKind};

    fn key(code: KeyCode) -> Event {
        Event::Key(KeyEvent::new(code, KeyModifiers::NONE))
    }

    fn char(c: char) -> Event {
        key(KeyCode::Char(c))
    }

    fn ctrl_c() -> Event {
        Event::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL))
    }

    #[test]
    fn browsing_keys() {
        let s = TuiState::default();
        let cases = [
            (key(KeyCode::Down), Action::Move(1)),
            (char('j'), Action::Move(1)),
            (key(KeyCode::Up), Action::Move(-1)),
            (char('k'), Action::Move(-1)),
            (key(KeyCode::PageDown), Action::Page(1)),
            (key(KeyCode::PageUp), Action::Page(-1)),
            (key(KeyCode::Home), Action::Top),
            (key(KeyCode::End), Action::Bottom),
            (char('s'), Action::NextSort),
            (char('>'), Action::NextSort),
            (char('S'), Action::PreviousSort),
            (char('<'), Action::PreviousSort),
            (char('r'), Action::Reverse),
            (char('/'), Action::EditFilter),
            (key(KeyCode::F(3)), Action::EditFilter),
            (key(KeyCode::F(4)), Action::EditFilter),
            (key(KeyCode::F(6)), Action::OpenSortMenu),
            (char('['), Action::ScrollDetail(-1)),
            (char(']'), Action::ScrollDetail(1)),
            (key(KeyCode::F(10)), Action::Quit),
            (char(' '), Action::TogglePause),
            (char('g'), Action::NextGrouping),
            (key(KeyCode::Tab), Action::NextGrouping),
            (char('1'), Action::SetGrouping(Grouping::Connection)),
            (char('2'), Action::SetGrouping(Grouping::Process)),
            (char('3'), Action::SetGrouping(Grouping::RemoteHost)),
            (char('4'), Action::SetGrouping(Grouping::Container)),
            (char('a'), Action::NextAveraging),
            (char('L'), Action::ToggleFolding),
            (char('F'), Action::ToggleFollow),
            (char('c'), Action::ToggleClosed),
            (char('i'), Action::ToggleIdle),
            (char('d'), Action::ToggleDetail),
            (key(KeyCode::Enter), Action::ToggleDetail),
            (char('n'), Action::ToggleNames),
            (char('b'), Action::ToggleBits),
            (char('?'), Action::ToggleHelp),
            (char('q'), Action::Quit),
            (ctrl_c(), Action::Quit),
        ];
        for (input, expected) in cases {
            assert_eq!(action(&input, &s), Some(expected), "{input:?}");
        }
        assert_eq!((action(&char('x'), &s), action(&char('5'), &s)), (None, None));
        // Esc clears a kept filter, and does nothing without one.
        assert_eq!(action(&key(KeyCode::Esc), &s), None);
        let filtered = TuiState { filter: "ssh".into(), ..TuiState::default() };
        assert_eq!(action(&key(KeyCode::Esc), &filtered), Some(Action::FilterClear));
    }

    #[test]
    fn typing_a_filter_takes_every_character() {
        let s = TuiState { editing_filter: true, ..TuiState::default() };
        for c in ['q', 'g', 's', ' ', '/', '?', 'j', '.', '1'] {
            assert_eq!(action(&char(c), &s), Some(Action::FilterPush(c)));
        }
        assert_eq!(action(&key(KeyCode::Backspace), &s), Some(Action::FilterPop));
        assert_eq!(action(&key(KeyCode::Enter), &s), Some(Action::FilterDone));
        assert_eq!(action(&key(KeyCode::Esc), &s), Some(Action::FilterClear));
        assert_eq!(action(&key(KeyCode::Down), &s), Some(Action::Move(1)));
        assert_eq!(action(&ctrl_c(), &s), Some(Action::Quit));
    }

    #[test]
    fn the_sort_menu_takes_its_keys_and_nothing_else_happens() {
        let s = TuiState { sort_menu: Some(3), ..TuiState::default() };
        let cases = [
            (key(KeyCode::Up), Some(Action::SortMenuMove(-1))),
            (char('k'), Some(Action::SortMenuMove(-1))),
            (key(KeyCode::Down), Some(Action::SortMenuMove(1))),
            (char('j'), Some(Action::SortMenuMove(1))),
            (key(KeyCode::Home), Some(Action::SortMenuMove(-isize::MAX))),
            (key(KeyCode::End), Some(Action::SortMenuMove(isize::MAX))),
            (key(KeyCode::Enter), Some(Action::SortMenuChoose)),
            (key(KeyCode::Esc), Some(Action::SortMenuClose)),
            (key(KeyCode::F(6)), Some(Action::SortMenuClose)),
            (char('q'), Some(Action::SortMenuClose)),
            (key(KeyCode::F(10)), Some(Action::Quit)),
            (ctrl_c(), Some(Action::Quit)),
            (char('g'), None),
            (char('/'), None),
        ];
        for (input, expected) in cases {
            assert_eq!(action(&input, &s), expected, "{input:?}");
        }
    }

    /// The name the help gives `code`.
    fn key_name(code: KeyCode) -> String {
        match code {
            KeyCode::Char(' ') => "space".into(),
            KeyCode::Char(c) => c.to_string(),
            KeyCode::F(n) => format!("F{n}"),
            KeyCode::PageUp => "PgUp".into(),
            KeyCode::PageDown => "PgDn".into(),
            code => format!("{code:?}"),
        }
    }

    #[test]
    fn the_help_names_every_key_that_does_something() {
        let named: Vec<&str> =
            super::super::render::HELP.iter().flat_map(|(keys, _)| keys.split_whitespace()).collect();
        let mut codes: Vec<KeyCode> =
            (' '..='~').map(KeyCode::Char).chain((1..=12).map(KeyCode::F)).collect();
        codes.extend([
            KeyCode::Up,
            KeyCode::Down,
            KeyCode::Left,
            KeyCode::Right,
            KeyCode::PageUp,
            KeyCode::PageDown,
            KeyCode::Home,
            KeyCode::End,
            KeyCode::Enter,
            KeyCode::Esc,
            KeyCode::Backspace,
            KeyCode::Tab,
            KeyCode::Delete,
            KeyCode::Insert,
        ]);
        // Esc does something once a filter is kept.
        let filtered = TuiState { filter: "ssh".into(), ..TuiState::default() };
        for state in [TuiState::default(), filtered] {
            for &code in &codes {
                if action(&key(code), &state).is_some() {
                    assert!(named.contains(&&*key_name(code)), "{code:?} is not in the help");
                }
            }
        }
        assert!(named.contains(&"Ctrl-C") && action(&ctrl_c(), &TuiState::default()).is_some());
        // And the help names no key that does nothing.
        for name in named.iter().filter(|name| !["mouse", "Ctrl-C"].contains(name)) {
            assert!(codes.iter().any(|&code| key_name(code) == *name), "{name} is no key");
        }
    }

    #[test]
    fn help_closes_on_any_key_but_ctrl_c_still_quits() {
        let s = TuiState { help: true, ..TuiState::default() };
        assert_eq!(action(&char('x'), &s), Some(Action::ToggleHelp));
        assert_eq!(action(&key(KeyCode::Esc), &s), Some(Action::ToggleHelp));
        assert_eq!(action(&ctrl_c(), &s), Some(Action::Quit));
    }

    #[test]
    fn wheel_scrolls_and_releases_are_ignored() {
        let s = TuiState::default();
        let wheel =
            |kind| Event::Mouse(MouseEvent { kind, column: 0, row: 0, modifiers: KeyModifiers::NONE });
        assert_eq!(action(&wheel(MouseEventKind::ScrollDown), &s), Some(Action::Move(3)));
        assert_eq!(action(&wheel(MouseEventKind::ScrollUp), &s), Some(Action::Move(-3)));
        let mut release = KeyEvent::new(KeyCode::Char('q'), KeyModifiers::NONE);
        release.kind = KeyEventKind::Release;
        assert_eq!(action(&Event::Key(release), &s), None);
        assert_eq!(action(&Event::Resize(80, 24), &s), None);
    }

    #[test]
    fn clicks_on_headings_sort_and_on_rows_select() {
        let s = TuiState {
            table_top: 3,
            page: 10,
            offset: 20,
            headings: vec![(0..7, crate::model::SortKey::Pid), (8..15, crate::model::SortKey::Comm)],
            ..TuiState::default()
        };
        let click = |column, row| {
            let kind = MouseEventKind::Down(crossterm::event::MouseButton::Left);
            action(&Event::Mouse(MouseEvent { kind, column, row, modifiers: KeyModifiers::NONE }), &s)
        };
        assert_eq!(click(9, 2), Some(Action::SortBy(crate::model::SortKey::Comm)));
        assert_eq!(click(7, 2), None);
        assert_eq!(click(40, 3), Some(Action::Select(20)));
        assert_eq!(click(40, 12), Some(Action::Select(29)));
        assert_eq!((click(40, 13), click(40, 1)), (None, None));
    }

    /// Key -> action -> state, end to end.
    #[test]
    fn a_typed_filter_ends_in_the_state() {
        let mut s = TuiState::default();
        for input in [char('/'), char('s'), char('s'), char('h'), key(KeyCode::Enter), char('g')] {
            let a = action(&input, &s).unwrap();
            s.apply(a, &[]);
        }
        assert_eq!(
            (s.filter.as_str(), s.editing_filter, s.grouping),
            ("ssh", false, crate::model::group::Grouping::Process)
        );
    }
}
