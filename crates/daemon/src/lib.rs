//! # greenlight-daemon
//!
//! The phone side of Greenlight: the daemon `greenlightd` and its CLI. So
//! far it holds the local store, encrypted at rest, the key ring that
//! decides what the phone broadcasts, and the advertise/scan cycle.
//!
//! Depends on the protocol crate for every format and rule, and on the
//! analytics crate for the daily aggregate report. Must never send anything
//! but the user's own keys (after explicit consent) and, if configured, the
//! daily report's sealed shares (SPEC §19) to a server,
//! and never log a key, an EphID or a code.

#![warn(missing_docs)]

pub mod api;
pub mod error;
pub mod keyring;
pub mod phone;
pub mod radio_loop;
pub mod report;
pub mod runtime;
pub mod store;
pub mod sync;

pub use error::{Error, Result};
pub use phone::Phone;
