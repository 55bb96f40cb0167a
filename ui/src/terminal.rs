//! The terminal: taking it over and giving it back, and the one loop that
//! draws a [`Source`]'s model and turns keys and the mouse into its actions.

use std::io;
use std::path::Path;
use std::time::Duration;

use crossterm::event::{self, Event as TermEvent, KeyCode, KeyEventKind, KeyModifiers};
use tracebench_trace::signals::Noticed;

use crate::keys::action_for;
use crate::model::Action;
use crate::source::Source;

/// Takes over the terminal: raw mode, the alternate screen, and mouse
/// reports (the wheel selects threads). Every exit path gives it back: the
/// caller calls [`restore`], and a panic of this (the drawing)
/// thread does through the hooks installed here (ratatui's restores the
/// rest). A panic on another thread leaves the terminal to the drawing
/// thread, which is still using it, and is reported as usual.
pub fn init() -> io::Result<ratatui::DefaultTerminal> {
    type Hook = Box<dyn Fn(&std::panic::PanicHookInfo<'_>) + Sync + Send + 'static>;
    let original: std::sync::Arc<Hook> = std::sync::Arc::new(std::panic::take_hook());
    let report = std::sync::Arc::clone(&original);
    std::panic::set_hook(Box::new(move |info| report(info)));
    // ratatui wraps the hook in place with its own restoring one.
    let terminal = ratatui::try_init()?;
    if let Err(e) = crossterm::execute!(io::stdout(), crossterm::event::EnableMouseCapture) {
        restore();
        return Err(e);
    }
    let restoring = std::panic::take_hook();
    let drawing_thread = std::thread::current().id();
    std::panic::set_hook(Box::new(move |info| {
        if std::thread::current().id() == drawing_thread {
            let _ = crossterm::execute!(io::stdout(), crossterm::event::DisableMouseCapture);
            restoring(info);
        } else {
            original(info);
        }
    }));
    Ok(terminal)
}

/// Gives the terminal back as it was before [`init`].
pub fn restore() {
    let _ = crossterm::execute!(io::stdout(), crossterm::event::DisableMouseCapture);
    ratatui::restore();
}

/// How long to wait for input between two frames: about 10 frames a
/// second, the rate a person reads a changing table at.
const FRAME: Duration = Duration::from_millis(100);

/// The controlling terminal, watched for input and hang-up before
/// crossterm is asked for events: crossterm 0.29's reader spins for ever
/// on a terminal that hung up (its read loop takes a 0-byte read for "more
/// to come"), so a closed terminal window would leave the dashboard
/// spinning, its server traced and its load running.
struct TerminalWatch {
    tty: Option<std::fs::File>,
}

impl TerminalWatch {
    fn open() -> TerminalWatch {
        TerminalWatch {
            tty: std::fs::File::open("/dev/tty").ok(),
        }
    }

    /// Waits up to `timeout` for input: true when some is pending; an
    /// error (BrokenPipe) once the terminal has hung up.
    fn wait(&self, timeout: Duration) -> io::Result<bool> {
        use std::os::fd::AsRawFd;
        let Some(tty) = &self.tty else {
            return event::poll(timeout);
        };
        let mut watched = libc::pollfd {
            fd: tty.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let millis = timeout.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: one valid pollfd, for the duration of the call.
        let ready = unsafe { libc::poll(&mut watched, 1, millis) };
        if ready < 0 {
            let error = io::Error::last_os_error();
            return match error.kind() {
                io::ErrorKind::Interrupted => Ok(false),
                _ => Err(error),
            };
        }
        if watched.revents & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the terminal hung up",
            ));
        }
        Ok(ready > 0)
    }
}

/// Draws `source`'s model and answers keys until the user quits (or asks
/// for a restart, or a signal or a hang-up ends the dashboard); the
/// terminal must be set up by the caller.
pub fn drive(
    terminal: &mut ratatui::DefaultTerminal,
    source: &mut dyn Source,
    noticed: &Noticed,
) -> io::Result<()> {
    // Test hook: panic after this many frames, to check that a panic gives
    // the terminal back and leaves no traced program behind.
    let panic_after: Option<u64> = std::env::var("TRACEBENCH_TEST_PANIC_AFTER_FRAMES")
        .ok()
        .and_then(|n| n.parse().ok());
    let watch = TerminalWatch::open();
    let mut frames = 0u64;
    loop {
        frames += 1;
        if panic_after.is_some_and(|n| frames > n) {
            panic!("test: the dashboard panics on purpose (TRACEBENCH_TEST_PANIC_AFTER_FRAMES)");
        }
        source.pump();
        let app = source.app();
        // SIGTERM, SIGHUP or a SIGINT from outside: stop as `q` does, the
        // load first, the traced program after.
        if app.quit || app.restart || noticed.first().is_some() {
            return Ok(());
        }
        terminal.draw(|frame| crate::view::draw(frame, app))?;
        match watch.wait(FRAME) {
            Ok(_) => {}
            // Nobody is left to draw for: stop as `q` does.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(e),
        }
        // Every event crossterm has for us, while the terminal is still
        // there: input, and resizes, which come by a signal, not the
        // terminal (asked every frame: crossterm's readiness is
        // edge-triggered, and an edge left unread can hide the next key).
        while watch.wait(Duration::ZERO).is_ok() && event::poll(Duration::ZERO)? {
            handle(source, event::read()?);
        }
    }
}

/// Turns one terminal event into the model's action (or the source's).
fn handle(source: &mut dyn Source, event: TermEvent) {
    match event {
        TermEvent::Key(key) if key.kind == KeyEventKind::Press => {
            let ctrl_c =
                key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL);
            if ctrl_c {
                source.app().update(Action::Quit);
            } else if source.app().view_state.search_editing
                && !key.modifiers.contains(KeyModifiers::ALT)
            {
                if let Some(action) = crate::keys::search_action_for(key.code) {
                    source.app().update(action);
                }
            } else if source.app().view_state.search_editing {
                // Esc then a key, typed fast, reaches us as Alt+key: the
                // search ends, dropped, and the key is a key.
                source.app().update(Action::EndSearch(false));
                handle(
                    source,
                    TermEvent::Key(event::KeyEvent::new(key.code, KeyModifiers::NONE)),
                );
            } else if !source.on_key(key.code)
                && let Some(action) = action_for(key.code)
            {
                if let Some(refusal) = source.refuses(&action) {
                    source.app().update(Action::Status(refusal));
                } else if matches!(action, Action::Export) {
                    let dir = source.export_dir().map(Path::to_path_buf);
                    let status = crate::export::write_latency(source.app(), dir.as_deref());
                    source.app().update(Action::Status(status));
                } else {
                    source.app().update(action);
                }
            }
        }
        TermEvent::Mouse(mouse) => match mouse.kind {
            event::MouseEventKind::ScrollDown => source.app().update(Action::SelectNext),
            event::MouseEventKind::ScrollUp => source.app().update(Action::SelectPrevious),
            _ => {}
        },
        _ => {}
    }
}
