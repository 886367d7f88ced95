//! # greenlight-sim
//!
//! An agent-based epidemic simulator for researchers who ask what app
//! adoption, exposure thresholds, delays and compliance do to an epidemic
//! and to the people told to quarantine. Every app user runs the real
//! Greenlight protocol: daily keys and EphIDs from `greenlight-protocol`,
//! exposure windows from simulated sightings, signed key batches, matching
//! with [`greenlight_protocol::MatchIndex`] and colours from
//! [`greenlight_protocol::evaluate`]. No notification is made up: each one
//! is a phone's own match and the status engine's decision.
//!
//! It sits on top of the protocol crate and depends on nothing else of
//! Greenlight. It never reads a clock for its results: the same scenario
//! and seed give byte-identical outputs, whatever the number of threads.
//!
//! ```no_run
//! let scenario = greenlight_sim::Scenario { days: 30, ..Default::default() };
//! let run = greenlight_sim::sim::run(&scenario, |_| {})?;
//! println!("{} infections, {} notifications", run.summary.infections, run.summary.notifications);
//! # Ok::<(), anyhow::Error>(())
//! ```

#![warn(missing_docs)]

pub mod app;
pub mod bench;
pub mod contacts;
pub mod disease;
pub mod grouped;
pub mod plot;
pub mod population;
pub mod radio;
pub mod report;
pub mod rng;
pub mod scenario;
pub mod sim;
pub mod sweep;

pub use scenario::{Scenario, ScenarioError};
pub use sim::{run, DailyRecord, RunResult, Summary};
