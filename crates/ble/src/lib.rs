//! # greenlight-ble
//!
//! The radio a phone uses to broadcast its EphIDs and hear others': the
//! [`Radio`] trait; `bluez::BluezRadio`, the real radio of a Linux phone or
//! laptop (feature `bluez`, on by default, Linux only); and
//! [`sim::SimulatedAir`], many virtual phones sharing one in-memory air with
//! a distance → RSSI path-loss model, for tests, the demo and the simulator.
//!
//! Depends on the protocol crate only for the advertisement format. Must
//! never decide anything about exposure: it moves bytes and signal
//! strengths, nothing else.

#![warn(missing_docs)]

#[cfg(all(target_os = "linux", feature = "bluez"))]
pub mod bluez;
pub mod sim;

use greenlight_protocol::advertisement::LEGACY_ADV_LEN;
use greenlight_protocol::{Rssi, Timestamp};
use std::time::Duration;

/// What can go wrong with a radio.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RadioError {
    /// The radio (or its virtual phone) no longer exists.
    #[error("the radio is gone")]
    Gone,
    /// There is no Bluetooth adapter, or none of the name asked for.
    #[error("no Bluetooth adapter{}", name.as_deref().map(|n| format!(" named {n}")).unwrap_or_default())]
    NoAdapter {
        /// The adapter asked for, if one was named.
        name: Option<String>,
    },
    /// The Bluetooth stack refused an operation.
    #[error("Bluetooth stack refused {operation}: {reason}")]
    Refused {
        /// What was attempted.
        operation: &'static str,
        /// The stack's explanation.
        reason: String,
    },
}

/// One advertisement heard during a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heard {
    /// The raw advertising payload (decode it with
    /// `greenlight_protocol::decode_advertisement`).
    pub payload: Vec<u8>,
    /// Received signal strength, dBm.
    pub rssi: Rssi,
    /// The sender's BLE address at that moment (random, rotating).
    pub address: [u8; 6],
    /// When it was heard, by the receiver's clock.
    pub at: Timestamp,
}

/// A Bluetooth LE radio as the daemon uses it: advertise one legacy
/// payload (replacing the previous one and rotating the random address
/// with it), stop, and scan for a while.
#[allow(async_fn_in_trait)] // Used generically by the daemon, never as `dyn`.
pub trait Radio {
    /// Broadcasts `payload` until replaced or stopped. A new payload comes
    /// with a new random address, so a sniffer cannot link two EphIDs by it
    /// (SPEC §5.2).
    async fn advertise(&self, payload: &[u8; LEGACY_ADV_LEN]) -> Result<(), RadioError>;
    /// Stops broadcasting.
    async fn stop_advertising(&self) -> Result<(), RadioError>;
    /// Listens for `window` and returns what was heard, one entry per
    /// sender and scan at least; duty cycling is the caller's business.
    async fn scan(&self, window: Duration) -> Result<Vec<Heard>, RadioError>;
}
