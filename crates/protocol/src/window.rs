//! From sightings to exposure windows (SPEC §6).
//!
//! A sighting is one reception of a beacon. Contiguous sightings of one
//! EphID form an [`ObservedWindow`]; its attenuation is only known after a
//! match, because the transmit power travels encrypted in the metadata.

use crate::keys::{EncryptedMetadata, EphId};
use crate::time::{EpochNumber, Timestamp};
use serde::{Deserialize, Serialize};

/// Received signal strength in dBm, already corrected for the receiving
/// phone's calibration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Rssi(pub i8);

/// Signal loss in dB between the sender and the receiver: transmit power − RSSI.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Attenuation(pub u8);

impl Attenuation {
    /// `tx_power − rssi`, clamped to `0..=255` dB.
    pub fn from_signal(tx_power_dbm: i8, rssi: Rssi) -> Attenuation {
        let loss = i16::from(tx_power_dbm) - i16::from(rssi.0);
        Attenuation(loss.clamp(0, 255) as u8)
    }
}

/// One reception of a Greenlight beacon.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sighting {
    /// The EphID heard.
    pub ephid: EphId,
    /// The sealed metadata heard with it.
    pub metadata: EncryptedMetadata,
    /// When it was heard, by the receiver's clock.
    pub at: Timestamp,
    /// Calibrated signal strength.
    pub rssi: Rssi,
}

/// How sightings are grouped (SPEC §6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowConfig {
    /// Sightings further apart than this start a new window.
    pub max_gap_secs: u32,
    /// Time one sighting stands for: the scan period of the duty cycle.
    pub sample_period_secs: u32,
}

impl Default for WindowConfig {
    /// A 5-minute gap and a 1-minute scan period (SPEC §6.1).
    fn default() -> Self {
        WindowConfig {
            max_gap_secs: 300,
            sample_period_secs: 60,
        }
    }
}

/// Contiguous sightings of one EphID with the same metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObservedWindow {
    /// The EphID heard.
    pub ephid: EphId,
    /// Its sealed metadata.
    pub metadata: EncryptedMetadata,
    /// First sighting.
    pub first_seen: Timestamp,
    /// Last sighting.
    pub last_seen: Timestamp,
    /// Every RSSI sample, in time order.
    pub rssi: Vec<Rssi>,
}

impl ObservedWindow {
    /// Duration credited to this window: `last − first + sample period` (SPEC §6.1).
    pub fn duration_secs(&self, config: &WindowConfig) -> u32 {
        let span = self.last_seen.seconds_since(self.first_seen);
        u32::try_from(span)
            .unwrap_or(u32::MAX)
            .saturating_add(config.sample_period_secs)
    }

    /// The epoch of the first sighting, by the receiver's clock.
    pub fn first_epoch(&self) -> EpochNumber {
        self.first_seen.epoch()
    }

    /// The epoch of the last sighting, by the receiver's clock.
    pub fn last_epoch(&self) -> EpochNumber {
        self.last_seen.epoch()
    }

    /// Attenuation statistics once the sender's transmit power is known.
    pub fn attenuation(&self, tx_power_dbm: i8) -> AttenuationStats {
        AttenuationStats::from_samples(
            self.rssi
                .iter()
                .map(|&r| Attenuation::from_signal(tx_power_dbm, r)),
        )
    }
}

/// Attenuation statistics of one window, in dB (SPEC §6.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttenuationStats {
    /// Lowest attenuation: the closest moment.
    pub min: Attenuation,
    /// Lower median of the samples: the value the policy buckets.
    pub median: Attenuation,
    /// Mean, rounded down.
    pub mean: Attenuation,
    /// Highest attenuation.
    pub max: Attenuation,
    /// Number of samples.
    pub samples: u32,
}

impl AttenuationStats {
    /// Statistics of a set of samples; an empty set counts as one sample of
    /// 255 dB (too far to matter).
    pub fn from_samples(samples: impl IntoIterator<Item = Attenuation>) -> AttenuationStats {
        let mut values: Vec<u8> = samples.into_iter().map(|a| a.0).collect();
        if values.is_empty() {
            values.push(u8::MAX);
        }
        values.sort_unstable();
        let n = values.len();
        let sum: u64 = values.iter().map(|&v| u64::from(v)).sum();
        AttenuationStats {
            min: Attenuation(values[0]),
            median: Attenuation(values[(n - 1) / 2]),
            mean: Attenuation((sum / n as u64) as u8),
            max: Attenuation(values[n - 1]),
            samples: u32::try_from(n).unwrap_or(u32::MAX),
        }
    }
}

/// Groups sightings into windows: by EphID and metadata, in time order,
/// splitting where two sightings are more than `max_gap_secs` apart.
/// The result is ordered by first sighting, then EphID.
pub fn group_into_windows(sightings: &[Sighting], config: &WindowConfig) -> Vec<ObservedWindow> {
    let mut sorted: Vec<&Sighting> = sightings.iter().collect();
    sorted.sort_by_key(|s| (s.ephid, s.metadata.0, s.at));
    let mut windows: Vec<ObservedWindow> = Vec::new();
    for s in sorted {
        match windows.last_mut() {
            Some(w)
                if w.ephid == s.ephid
                    && w.metadata == s.metadata
                    && s.at.seconds_since(w.last_seen) <= u64::from(config.max_gap_secs) =>
            {
                w.last_seen = s.at;
                w.rssi.push(s.rssi);
            }
            _ => windows.push(ObservedWindow {
                ephid: s.ephid,
                metadata: s.metadata,
                first_seen: s.at,
                last_seen: s.at,
                rssi: vec![s.rssi],
            }),
        }
    }
    windows.sort_by_key(|w| (w.first_seen, w.ephid));
    windows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sighting(id: u8, at: u64, rssi: i8) -> Sighting {
        Sighting {
            ephid: EphId([id; 16]),
            metadata: EncryptedMetadata([0; 4]),
            at: Timestamp(at),
            rssi: Rssi(rssi),
        }
    }

    #[test]
    fn splits_on_gaps_and_ephids() {
        let s = [
            sighting(1, 1000, -60),
            sighting(2, 1010, -80),
            sighting(1, 1060, -70),
            sighting(1, 1120, -50),
            sighting(1, 1500, -65), // 380 s gap: new window
        ];
        let w = group_into_windows(&s, &WindowConfig::default());
        assert_eq!(w.len(), 3);
        assert_eq!(w[0].rssi, vec![Rssi(-60), Rssi(-70), Rssi(-50)]);
        assert_eq!(w[0].duration_secs(&WindowConfig::default()), 180);
        assert_eq!(w[1].ephid, EphId([2; 16]));
        assert_eq!(w[2].first_seen, Timestamp(1500));
    }

    #[test]
    fn attenuation_is_tx_power_minus_rssi() {
        let w = ObservedWindow {
            ephid: EphId([0; 16]),
            metadata: EncryptedMetadata([0; 4]),
            first_seen: Timestamp(0),
            last_seen: Timestamp(0),
            rssi: vec![Rssi(-60), Rssi(-70), Rssi(-50), Rssi(-90)],
        };
        let a = w.attenuation(-10);
        assert_eq!(
            (a.min, a.median, a.mean, a.max),
            (
                Attenuation(40),
                Attenuation(50),
                Attenuation(57),
                Attenuation(80)
            )
        );
        assert_eq!(Attenuation::from_signal(20, Rssi(30)), Attenuation(0));
        assert_eq!(Attenuation::from_signal(127, Rssi(-128)), Attenuation(255));
    }
}
