//! The key maps, the live one and the replay's: they turn keys into
//! actions, and give the help overlay its lines.

use crossterm::event::KeyCode;

use crate::model::Action;

/// A key binding.
pub struct Binding {
    /// The keys, as shown in the help.
    pub keys: &'static str,
    /// What they do, as shown in the help.
    pub help: &'static str,
    /// Whether a key code triggers it.
    pub matches: fn(KeyCode) -> bool,
    /// The action it sends.
    pub action: fn() -> Action,
    /// It acts on a live run only (not on a replay).
    pub live_only: bool,
}

/// Every key the dashboard knows.
pub const KEYMAP: &[Binding] = &[
    Binding {
        keys: "q",
        help: "quit (a traced server we started is stopped)",
        matches: |k| k == KeyCode::Char('q'),
        action: || Action::Quit,
        live_only: false,
    },
    Binding {
        keys: "space",
        help: "pause the view (data keeps coming)",
        matches: |k| k == KeyCode::Char(' '),
        action: || Action::TogglePause,
        live_only: false,
    },
    Binding {
        keys: "↓, tab, j",
        help: "select the next thread",
        matches: |k| matches!(k, KeyCode::Down | KeyCode::Tab | KeyCode::Char('j')),
        action: || Action::SelectNext,
        live_only: false,
    },
    Binding {
        keys: "↑, k",
        help: "select the previous thread",
        matches: |k| matches!(k, KeyCode::Up | KeyCode::BackTab | KeyCode::Char('k')),
        action: || Action::SelectPrevious,
        live_only: false,
    },
    Binding {
        keys: "enter",
        help: "events of the selected thread only, or of all",
        matches: |k| k == KeyCode::Enter,
        action: || Action::ToggleFilter,
        live_only: false,
    },
    Binding {
        keys: "f",
        help: "futex words (waits, wakes, herds) or events",
        matches: |k| k == KeyCode::Char('f'),
        action: || Action::ToggleFutexPane,
        live_only: false,
    },
    Binding {
        keys: "o",
        help: "the program's output (stdout, stderr) or events",
        matches: |k| k == KeyCode::Char('o'),
        action: || Action::ToggleOutputPane,
        live_only: false,
    },
    Binding {
        keys: "/",
        help: "show only threads whose name holds what you type",
        matches: |k| k == KeyCode::Char('/'),
        action: || Action::StartSearch,
        live_only: false,
    },
    Binding {
        keys: "s",
        help: "sort: tid, state, cpu, syscalls, served, name",
        matches: |k| k == KeyCode::Char('s'),
        action: || Action::NextSort,
        live_only: false,
    },
    Binding {
        keys: "g",
        help: "exited threads: one row per name (conn-*) or each",
        matches: |k| k == KeyCode::Char('g'),
        action: || Action::ToggleGroups,
        live_only: false,
    },
    Binding {
        keys: "x",
        help: "list threads that exited in the last minute, or 5 s",
        matches: |k| k == KeyCode::Char('x'),
        action: || Action::ToggleExited,
        live_only: false,
    },
    Binding {
        keys: "+, =",
        help: "timeline: show a shorter stretch",
        matches: |k| matches!(k, KeyCode::Char('+') | KeyCode::Char('=')),
        action: || Action::ZoomIn,
        live_only: false,
    },
    Binding {
        keys: "-",
        help: "timeline: show a longer stretch",
        matches: |k| k == KeyCode::Char('-'),
        action: || Action::ZoomOut,
        live_only: false,
    },
    Binding {
        keys: "]",
        help: "more load: more connections",
        matches: |k| k == KeyCode::Char(']'),
        action: || Action::MoreLoad,
        live_only: true,
    },
    Binding {
        keys: "[",
        help: "less load: fewer connections",
        matches: |k| k == KeyCode::Char('['),
        action: || Action::LessLoad,
        live_only: true,
    },
    Binding {
        keys: "m",
        help: "restart the server in the next mode",
        matches: |k| k == KeyCode::Char('m'),
        action: || Action::NextMode,
        live_only: true,
    },
    Binding {
        keys: "r",
        help: "latency from here on only (a range); r again: all",
        matches: |k| k == KeyCode::Char('r'),
        action: || Action::MarkRange,
        live_only: false,
    },
    Binding {
        keys: "e",
        help: "export the latency histogram (CSV, .hgrm)",
        matches: |k| k == KeyCode::Char('e'),
        action: || Action::Export,
        live_only: false,
    },
    Binding {
        keys: "?",
        help: "show or hide this help",
        matches: |k| k == KeyCode::Char('?'),
        action: || Action::ToggleHelp,
        live_only: false,
    },
    // Esc closes what is open; it never quits, which would stop the server.
    Binding {
        keys: "Esc",
        help: "hide this help",
        matches: |k| k == KeyCode::Esc,
        action: || Action::HideHelp,
        live_only: false,
    },
];

/// The action a key sends while a search is typed: text, until Enter
/// keeps it or Esc drops it.
pub fn search_action_for(key: KeyCode) -> Option<Action> {
    match key {
        KeyCode::Char(c) => Some(Action::SearchType(c)),
        KeyCode::Backspace => Some(Action::SearchBackspace),
        KeyCode::Enter => Some(Action::EndSearch(true)),
        KeyCode::Esc => Some(Action::EndSearch(false)),
        _ => None,
    }
}

/// The action a key sends, if any.
pub fn action_for(key: KeyCode) -> Option<Action> {
    KEYMAP
        .iter()
        .find(|b| (b.matches)(key))
        .map(|b| (b.action)())
}

/// What a replay key does to the playhead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayAction {
    /// Play, or pause.
    PlayPause,
    /// Play faster.
    Faster,
    /// Play slower.
    Slower,
    /// Seek by this many seconds (back if negative).
    Seek(i64),
    /// Seek to the start of the recording.
    ToStart,
    /// Seek to the end of the recording.
    ToEnd,
    /// Step to the next event (of the selected thread, if one is).
    NextEvent,
    /// Step back to the previous event (of the selected thread, if one is).
    PreviousEvent,
}

/// A line of the replay's keys: what the help shows, and the action each
/// of its keys sends.
pub struct ReplayBinding {
    /// The keys, as shown in the help.
    pub keys: &'static str,
    /// What they do, as shown in the help.
    pub help: &'static str,
    /// The action a key code sends, if it is one of these keys.
    pub action: fn(KeyCode) -> Option<ReplayAction>,
}

/// Every key a replay adds to [`KEYMAP`] (space among them: in a replay it
/// plays and pauses instead of freezing the view).
pub const REPLAY_KEYMAP: &[ReplayBinding] = &[
    ReplayBinding {
        keys: "space",
        help: "play or pause",
        action: |k| (k == KeyCode::Char(' ')).then_some(ReplayAction::PlayPause),
    },
    ReplayBinding {
        keys: "< >",
        help: "slower / faster (x0.25 to x16, max)",
        action: |k| match k {
            KeyCode::Char('<' | ',') => Some(ReplayAction::Slower),
            KeyCode::Char('>' | '.') => Some(ReplayAction::Faster),
            _ => None,
        },
    },
    ReplayBinding {
        keys: "← →",
        help: "seek 1 s back / forward",
        action: |k| match k {
            KeyCode::Left => Some(ReplayAction::Seek(-1)),
            KeyCode::Right => Some(ReplayAction::Seek(1)),
            _ => None,
        },
    },
    ReplayBinding {
        keys: "PgUp PgDn",
        help: "seek 10 s back / forward",
        action: |k| match k {
            KeyCode::PageUp => Some(ReplayAction::Seek(-10)),
            KeyCode::PageDown => Some(ReplayAction::Seek(10)),
            _ => None,
        },
    },
    ReplayBinding {
        keys: "Home End",
        help: "to the start / the end",
        action: |k| match k {
            KeyCode::Home => Some(ReplayAction::ToStart),
            KeyCode::End => Some(ReplayAction::ToEnd),
            _ => None,
        },
    },
    ReplayBinding {
        keys: "n p",
        help: "to the next / previous event (the selected thread's)",
        action: |k| match k {
            KeyCode::Char('n') => Some(ReplayAction::NextEvent),
            KeyCode::Char('p') => Some(ReplayAction::PreviousEvent),
            _ => None,
        },
    },
];

/// The replay action a key sends, if any.
pub fn replay_action_for(key: KeyCode) -> Option<ReplayAction> {
    REPLAY_KEYMAP.iter().find_map(|b| (b.action)(key))
}

/// The help overlay's lines, (keys, what they do): a replay's own keys
/// first, then the live keys that also work in a replay (or all of them
/// in a live run).
pub fn help_lines(replay: bool) -> Vec<(&'static str, &'static str)> {
    let replay_keys: &[ReplayBinding] = if replay { REPLAY_KEYMAP } else { &[] };
    replay_keys
        .iter()
        .map(|b| (b.keys, b.help))
        .chain(
            KEYMAP
                .iter()
                // In a replay, space plays and pauses instead of freezing
                // the view.
                .filter(|b| !(replay && (b.live_only || b.keys == "space")))
                .map(|b| (b.keys, b.help)),
        )
        // Not a key: how to read the table's state column.
        .chain([("state~", "seen in /proc, not proven by the trace")])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_to_actions() {
        assert!(matches!(action_for(KeyCode::Char('q')), Some(Action::Quit)));
        assert!(matches!(
            action_for(KeyCode::Char(' ')),
            Some(Action::TogglePause)
        ));
        assert!(matches!(action_for(KeyCode::Tab), Some(Action::SelectNext)));
        assert!(action_for(KeyCode::Char('z')).is_none());
        assert!(
            matches!(action_for(KeyCode::Esc), Some(Action::HideHelp)),
            "Esc must not quit: quitting stops the traced server"
        );
    }
}
