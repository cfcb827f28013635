//! The event loop: one channel merges terminal events, ticks and worker reports; all pending
//! events are handled, then at most one frame is drawn.

use crate::error::{Error, Result};
use crate::home::Home;
use crate::tui::action::Action;
use crate::tui::components;
use crate::tui::keymap::map_key;
use crate::tui::state::State;
use crate::tui::theme::Theme;
use crate::tui::update::{self, update};
use crate::tui::worker::{AppEvent, Workers};
use crossterm::event::{Event, MouseEventKind};
use ratatui::backend::Backend;
use ratatui::Terminal;
use std::io::IsTerminal;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(250);

/// Opens the console on `home` in the current terminal.
pub fn run(home: Home) -> Result<()> {
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        return Err(Error::Other(
            "the console needs a terminal; in scripts use the subcommands (keyward --help)".into(),
        ));
    }
    // Fail before touching the terminal if the home cannot be opened.
    drop(crate::Keyward::open(home.clone())?);
    let (tx, rx) = mpsc::channel();
    let mut terminal = terminal::setup().map_err(|e| Error::Other(format!("terminal: {e}")))?;
    spawn_input(tx.clone());
    let result = event_loop(&mut terminal, home, tx, rx);
    terminal::restore();
    result
}

/// Unix seconds now.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Applies an action and the follow-ups it returns.
pub fn dispatch(state: &mut State, action: Action) {
    let mut next = Some(action);
    while let Some(a) = next {
        next = update(state, a);
    }
}

/// Turns one event into actions; returns whether anything may have changed on screen.
pub fn handle(state: &mut State, ev: AppEvent) -> bool {
    match ev {
        AppEvent::Action(a) => dispatch(state, a),
        AppEvent::Term(Event::Key(k)) => {
            if let Some(a) = map_key(state, k) {
                dispatch(state, a);
            }
        }
        AppEvent::Term(Event::Mouse(m)) => match m.kind {
            MouseEventKind::ScrollDown if state.modals.is_empty() => {
                for _ in 0..3 {
                    dispatch(state, Action::Down);
                }
            }
            MouseEventKind::ScrollUp if state.modals.is_empty() => {
                for _ in 0..3 {
                    dispatch(state, Action::Up);
                }
            }
            MouseEventKind::Down(_) if state.modals.is_empty() => {
                dispatch(state, Action::Click(m.column, m.row))
            }
            _ => return false,
        },
        AppEvent::Term(Event::Resize(w, h)) => dispatch(state, Action::Resize(w, h)),
        AppEvent::Term(_) => return false,
    }
    true
}

fn spawn_input(tx: Sender<AppEvent>) {
    let _ = std::thread::Builder::new()
        .name("keyward-input".into())
        .spawn(move || {
            while let Ok(ev) = crossterm::event::read() {
                if tx.send(AppEvent::Term(ev)).is_err() {
                    break;
                }
            }
        });
}

fn event_loop<B: Backend>(
    terminal: &mut Terminal<B>,
    home: Home,
    tx: Sender<AppEvent>,
    rx: Receiver<AppEvent>,
) -> Result<()>
where
    B::Error: std::fmt::Display,
{
    let draw_err = |e: B::Error| Error::Other(format!("terminal: {e}"));
    let size = terminal.size().map_err(draw_err)?;
    let mut state = State::new(
        home.dir().display().to_string(),
        (size.width, size.height),
        unix_now(),
    );
    state.no_color = Theme::no_color_from_env();
    state.insecure_registries = std::env::var("KEYWARD_INSECURE_REGISTRIES").unwrap_or_default();
    update::init(&mut state);
    let mut workers = Workers::new(home, tx);
    let mut next_tick = Instant::now() + TICK;
    let mut dirty = true;
    loop {
        for req in state.outbox.drain(..) {
            workers.dispatch(req);
        }
        if dirty {
            terminal
                .draw(|f| components::render(f, &state))
                .map_err(draw_err)?;
            dirty = false;
        }
        if state.quit {
            return Ok(());
        }
        let timeout = if state.audit.scan.is_some() {
            Duration::ZERO
        } else {
            next_tick.saturating_duration_since(Instant::now())
        };
        match rx.recv_timeout(timeout) {
            Ok(ev) => {
                dirty |= handle(&mut state, ev);
                // Drain everything pending before drawing again.
                while let Ok(ev) = rx.try_recv() {
                    dirty |= handle(&mut state, ev);
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return Ok(()),
        }
        if state.audit.scan.is_some() {
            dispatch(&mut state, Action::ContinueScan);
            dirty = true;
        }
        if Instant::now() >= next_tick {
            next_tick = Instant::now() + TICK;
            state.now = unix_now();
            dispatch(&mut state, Action::Tick);
            // The spinner moves only while something runs.
            dirty |= state.user_jobs().next().is_some() || state.tick.is_multiple_of(4);
        }
    }
}

/// Raw mode, the alternate screen and a panic hook that gives the terminal back.
pub mod terminal {
    use crossterm::event::{DisableMouseCapture, EnableMouseCapture};
    use crossterm::execute;
    use crossterm::terminal::{
        disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
    };
    use ratatui::backend::CrosstermBackend;
    use ratatui::Terminal;
    use std::io::{stdout, Stdout};

    pub fn setup() -> std::io::Result<Terminal<CrosstermBackend<Stdout>>> {
        install_panic_hook();
        enable_raw_mode()?;
        if let Err(e) = execute!(stdout(), EnterAlternateScreen, EnableMouseCapture) {
            restore();
            return Err(e);
        }
        Terminal::new(CrosstermBackend::new(stdout()))
    }

    /// Leaves raw mode and the alternate screen; safe to call twice.
    pub fn restore() {
        let _ = disable_raw_mode();
        let _ = execute!(
            stdout(),
            DisableMouseCapture,
            LeaveAlternateScreen,
            crossterm::cursor::Show
        );
    }

    fn install_panic_hook() {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            // Workers turn their panics into failed jobs; only the UI thread's panic ends the
            // console, and then the terminal must be usable again before the message prints.
            if std::thread::current().name() == Some("main") {
                restore();
                previous(info);
            }
        }));
    }
}
