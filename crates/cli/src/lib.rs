//! # greenlight-cli
//!
//! The programs a phone user and a newcomer run: `greenlightd` (the
//! daemon), `greenlight` (its command line: status, QR card, check-in,
//! report-positive, sync, export, forget) and `greenlight demo`, which
//! runs a real server and four phones on a simulated air and clock.
//!
//! Depends on the daemon crate for everything a phone does, and on the
//! server crate only for the demo's in-process server.

#![warn(missing_docs)]

pub mod card;
pub mod demo;
