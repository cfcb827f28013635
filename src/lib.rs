//! keyward: a terminal console for the people who hold signing keys.
//!
//! The core (everything but `cli`) is a blocking, UI-free API; front ends only parse input,
//! call the core and render results.
#![forbid(unsafe_code)]

pub mod fsutil;
pub mod secret;
pub mod token;
pub mod audit;
pub mod config;
pub mod error;
pub mod home;
pub mod keys;
pub mod prompt;
pub mod service;

pub use error::{Error, Result};
pub use service::Keyward;
