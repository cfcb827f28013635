//! The interactive console (`keyward` with no arguments): a ratatui front end over the same
//! core API as the CLI.
//!
//! - [`state`]: plain data; [`action::Action`]: intents and results;
//! - [`update::update`]: `(&mut State, Action) -> Option<Action>`, pure — work for tokens, the
//!   disk or the network is queued as [`job::Request`]s in `state.outbox`;
//! - [`components`]: widgets that borrow the state and draw it;
//! - [`worker`]: threads that run the jobs (one per token, owning its session) and report back
//!   as actions; PINs are asked through the PIN modal by [`worker::TuiPrompter`];
//! - [`app`]: the event loop and the terminal (raw mode, panic hook).

pub mod action;
pub mod app;
pub mod ceremony;
pub mod components;
pub mod job;
pub mod keymap;
pub mod lifecycle;
pub mod state;
pub mod theme;
pub mod update;
pub mod worker;

#[cfg(test)]
mod tests;

pub use action::Action;
pub use state::State;
pub use update::update;

/// Opens the console on `home` in this terminal and returns when the person quits.
pub fn run(home: crate::home::Home) -> crate::Result<()> {
    app::run(home)
}
