//! keyward: a terminal console for the people who hold signing keys.
//!
//! The core (everything but `cli`) is a blocking, UI-free API; front ends only parse input,
//! call the core and render results.
#![forbid(unsafe_code)]

pub mod audit;
pub mod backup;
pub mod bundle;
pub mod ceremony;
pub mod config;
pub mod error;
pub mod fsutil;
pub mod home;
pub mod images;
pub mod keys;
pub mod oci;
pub mod piv;
pub mod prompt;
pub mod secret;
pub mod service;
pub mod token;
pub mod tui;

pub use error::{Error, Result};
pub use service::Keyward;
