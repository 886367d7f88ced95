//! From a contact to the RSSI a phone records.
//!
//! ```text
//! distance d  = median(kind) · exp(σ_d · z)                 log-normal around the kind's median
//! path loss   = PL₀ + 10 · n · log₁₀(max(d, 0.1 m) / 1 m) + X   X ~ N(0, σ_s²), one draw per window
//! RSSI        = tx_power + tx_error(sender) − path loss + rx_error(receiver)
//! ```
//!
//! The phone computes attenuation as declared transmit power − RSSI, so the
//! two calibration errors and the shadowing are what separate the measured
//! attenuation from the true path loss. Defaults: PL₀ = 55 dB and n = 2.0
//! as greenlight-ble's simulated air (Leith & Farrell 2020 measured
//! exponents of 1.8–2.5 between phones), σ_s = 4 dB, calibration errors
//! uniform in ±3 dB for each direction; median distances of 1.5 m at home,
//! 2 m at work and at random, 3 m in venues, 1.2 m in transit.

use crate::contacts::ContactKind;
use crate::rng::{self, Stream};
use crate::scenario::RadioParams;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, StandardNormal};

/// The median distance of a contact kind, metres.
pub fn median_distance(p: &RadioParams, kind: ContactKind) -> f64 {
    match kind {
        ContactKind::Household => p.household_distance_m,
        ContactKind::Work => p.work_distance_m,
        ContactKind::Random => p.random_distance_m,
        ContactKind::Venue => p.venue_distance_m,
        ContactKind::Transit => p.transit_distance_m,
    }
}

/// The log₁₀ of each contact kind's median distance in metres, computed
/// once for a scenario.
#[derive(Clone, Copy, Debug)]
pub struct Distances {
    log10_median: [f64; 5],
}

impl Distances {
    /// The scenario's median distances.
    pub fn new(p: &RadioParams) -> Distances {
        let kinds = [
            ContactKind::Household,
            ContactKind::Work,
            ContactKind::Random,
            ContactKind::Venue,
            ContactKind::Transit,
        ];
        Distances {
            log10_median: kinds.map(|k| median_distance(p, k).log10()),
        }
    }
}

/// The radio channel of one contact: its distance, then the shadowing of
/// each window, drawn in sequence from the contact's coordinates (`key`),
/// so both phones see the same channel (it is reciprocal).
#[derive(Debug)]
pub struct Channel {
    rng: SmallRng,
    mean_loss: f64,
    shadowing_db: f64,
}

impl Channel {
    /// The channel of the contact `key` of kind `kind` on `day`.
    pub fn new(
        p: &RadioParams,
        distances: &Distances,
        seed: u64,
        day: u32,
        key: u64,
        kind: ContactKind,
    ) -> Channel {
        let mut rng = rng::small_rng(seed, Stream::Channel, u64::from(day), key, kind as u64);
        let z: f64 = StandardNormal.sample(&mut rng);
        // log₁₀ max(median · e^(σ·z), 0.1 m), without exp and log.
        let log10_distance = (distances.log10_median[kind as usize]
            + p.distance_log_sd * z * std::f64::consts::LOG10_E)
            .max(-1.0);
        Channel {
            rng,
            mean_loss: p.loss_at_1m_db + 10.0 * p.exponent * log10_distance,
            shadowing_db: p.shadowing_db,
        }
    }

    /// The path loss of the contact's next window, dB.
    pub fn next_loss(&mut self) -> f64 {
        let x: f64 = StandardNormal.sample(&mut self.rng);
        self.mean_loss + x * self.shadowing_db
    }
}

/// The calibrated RSSI the receiver records.
pub fn rssi(p: &RadioParams, loss: f64, tx_error: f32, rx_error: f32) -> i8 {
    let v = f64::from(p.tx_power_dbm) + f64::from(tx_error) - loss + f64::from(rx_error);
    v.round().clamp(-127.0, 20.0) as i8
}
