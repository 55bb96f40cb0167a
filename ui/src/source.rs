//! The one interface behind which the live run and a recording feed the
//! dashboard. The terminal loop (`terminal::drive`, which depends on this
//! module, never the other way) runs either of them, so keys, mouse,
//! frames and the `e` export work the same way over both.

use std::path::Path;

use crossterm::event::KeyCode;

use crate::model::{Action, App};

/// Where the dashboard's model gets its data.
pub trait Source {
    /// The model this source feeds.
    fn app(&mut self) -> &mut App;
    /// Brings the model up to date; called before every frame.
    fn pump(&mut self);
    /// Handles a key that means something to this source only (a replay's
    /// play, seek and speed keys, say); true if it did.
    fn on_key(&mut self, key: KeyCode) -> bool;
    /// Where `e` writes its files (the recording's directory), if anywhere
    /// but the current directory.
    fn export_dir(&self) -> Option<&Path>;
    /// Whether the model's action is one this source cannot carry out;
    /// returns the status line that says so.
    fn refuses(&self, action: &Action) -> Option<String> {
        let _ = action;
        None
    }
}
