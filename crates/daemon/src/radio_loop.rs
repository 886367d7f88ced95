//! The advertise/scan cycle, one step at a time: broadcast the current
//! epoch's advertisement (re-advertising, with a new address, when the
//! epoch turns), scan for a window, keep what decodes as Greenlight, and
//! say when to wake next. The caller owns the clock, so tests and the demo
//! can run it on simulated time, and a suspend or clock change only means
//! the next step sees another `now`.
//!
//! Duty cycle: by default a 4 s scan every 60 s. With BLE scanning at
//! roughly 10–15 mA on a phone radio against ~0.01 mA idle, that is a
//! 6.7 % scan duty, about 1 mA on average, or some 25 mAh a day — around
//! 1 % of a 3,000 mAh battery (advertising at 250 ms intervals adds well
//! under 0.1 mA).

use crate::store::StoreError;
use greenlight_ble::Radio;
use greenlight_protocol::{decode_advertisement, Metadata, Sighting, Timestamp};
use std::time::Duration;

/// What the cycle needs of the phone: the advertisement of the moment
/// (which may draw and store a new daily key) and a place for sightings.
/// The daemon implements it over its shared phone, locking only for these
/// calls and never across a scan.
pub trait PhoneState {
    /// The 31-byte advertisement to broadcast at `now`.
    fn advertisement_at(
        &mut self,
        now: Timestamp,
        metadata: Metadata,
    ) -> Result<[u8; 31], StoreError>;
    /// Stores the sightings of one scan, all or none.
    fn record(&mut self, sightings: &[Sighting]) -> Result<(), StoreError>;
}

/// How the phone uses its radio.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DutyCycle {
    /// Length of one scan.
    pub scan_window: Duration,
    /// Seconds from the start of one scan to the next.
    pub scan_every_secs: u64,
    /// This phone's calibrated transmit power, dBm (goes into the metadata).
    pub tx_power_dbm: i8,
}

impl Default for DutyCycle {
    fn default() -> Self {
        DutyCycle {
            scan_window: Duration::from_secs(4),
            scan_every_secs: 60,
            tx_power_dbm: -8,
        }
    }
}

/// Running counts, for the status display and the logs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RadioStats {
    /// Scans completed.
    pub scans: u64,
    /// Sightings stored.
    pub stored: u64,
    /// Advertisements heard that were not (valid) Greenlight ones.
    pub foreign: u64,
    /// New advertisements started (epoch turns, restarts).
    pub rotations: u64,
    /// Radio operations that failed (the cycle goes on).
    pub radio_errors: u64,
    /// Store writes that failed, e.g. a full disk (the cycle goes on).
    pub store_errors: u64,
}

/// One phone's advertise/scan cycle.
#[derive(Debug)]
pub struct RadioLoop<R> {
    radio: R,
    duty: DutyCycle,
    advertising: Option<[u8; 31]>,
    next_scan: Option<Timestamp>,
    /// Counts since start.
    pub stats: RadioStats,
}

impl<R: Radio> RadioLoop<R> {
    /// A cycle over `radio`; nothing is broadcast until the first step.
    pub fn new(radio: R, duty: DutyCycle) -> RadioLoop<R> {
        RadioLoop {
            radio,
            duty,
            advertising: None,
            next_scan: None,
            stats: RadioStats::default(),
        }
    }

    /// The radio, e.g. to stop it on shutdown.
    pub fn radio(&self) -> &R {
        &self.radio
    }

    /// One cycle at `now`: advertise, scan, store. Returns the time of the
    /// next step: the next scan or the next epoch boundary, whichever is
    /// first. Radio and store failures are counted and the cycle goes on;
    /// only a failure to keep today's key (so it could be uploaded later)
    /// stops broadcasting, as an error.
    pub async fn step(
        &mut self,
        phone: &mut impl PhoneState,
        now: Timestamp,
    ) -> Result<Timestamp, StoreError> {
        let metadata = Metadata {
            tx_power_dbm: self.duty.tx_power_dbm,
        };
        let payload = phone.advertisement_at(now, metadata)?;
        if self.advertising != Some(payload) {
            match self.radio.advertise(&payload).await {
                Ok(()) => {
                    self.advertising = Some(payload);
                    self.stats.rotations += 1;
                }
                Err(_) => self.stats.radio_errors += 1,
            }
        }
        let every = self.duty.scan_every_secs.max(1);
        // Due at the planned time, or at once if the clock jumped back by
        // more than one period (a planned time far ahead is stale).
        let due = self
            .next_scan
            .is_none_or(|t| now >= t || t.0 > now.0 + every);
        if due {
            self.next_scan = Some(Timestamp((now.0 / every + 1) * every));
            match self.radio.scan(self.duty.scan_window).await {
                Ok(heard) => {
                    self.stats.scans += 1;
                    let mut sightings = Vec::with_capacity(heard.len());
                    for h in heard {
                        match decode_advertisement(&h.payload) {
                            Ok(b) => sightings.push(Sighting {
                                ephid: b.ephid,
                                metadata: b.metadata,
                                at: h.at,
                                rssi: h.rssi,
                            }),
                            Err(_) => self.stats.foreign += 1,
                        }
                    }
                    // Our own advertisement is never a contact.
                    if let Some(own) = self
                        .advertising
                        .as_ref()
                        .and_then(|p| decode_advertisement(p).ok())
                    {
                        sightings.retain(|s| s.ephid != own.ephid);
                    }
                    match phone.record(&sightings) {
                        Ok(()) => self.stats.stored += sightings.len() as u64,
                        Err(_) => self.stats.store_errors += 1,
                    }
                }
                Err(_) => self.stats.radio_errors += 1,
            }
        }
        let next_scan = self.next_scan.map_or(now.0 + every, |t| t.0);
        let next_epoch = now.epoch().offset(1).start().0;
        Ok(Timestamp(next_scan.min(next_epoch)))
    }
}
