//! A simulated shared air: virtual phones at positions in a plane, each
//! with a [`SimRadio`]. A scan hears every advertising phone whose signal,
//! after path loss and shadowing, is above the receiver's sensitivity.
//!
//! Channel model (log-distance path loss with log-normal shadowing, the
//! usual indoor BLE model, e.g. Leith & Farrell 2020 measured 1.8–2.5 for
//! the exponent between phones):
//!
//! ```text
//! RSSI = tx_power + tx_error − (PL₀ + 10·n·log₁₀(max(d, 0.1 m) / 1 m)) + X,  X ~ N(0, σ²)
//! ```
//!
//! with PL₀ = 55 dB at 1 m (phone to phone, including antenna and body
//! losses), n = 2.0, σ = 4 dB, a per-phone transmit calibration error drawn
//! once, uniform in ±3 dB, and a sensitivity of −95 dBm. Every draw comes
//! from one seeded generator: the same seed and calls give the same air.

use crate::{Heard, Radio, RadioError};
use greenlight_protocol::advertisement::LEGACY_ADV_LEN;
use greenlight_protocol::{Rssi, Timestamp};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Parameters of the channel model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChannelModel {
    /// Path loss at 1 m, dB.
    pub loss_at_1m_db: f64,
    /// Path-loss exponent.
    pub exponent: f64,
    /// Standard deviation of shadowing, dB.
    pub shadowing_db: f64,
    /// Largest per-phone transmit calibration error, dB (uniform ±).
    pub tx_error_db: f64,
    /// Weakest signal a phone hears, dBm.
    pub sensitivity_dbm: f64,
}

impl Default for ChannelModel {
    fn default() -> Self {
        ChannelModel {
            loss_at_1m_db: 55.0,
            exponent: 2.0,
            shadowing_db: 4.0,
            tx_error_db: 3.0,
            sensitivity_dbm: -95.0,
        }
    }
}

/// A virtual phone's place in the air.
#[derive(Debug, Clone)]
struct Phone {
    position: (f64, f64),
    tx_power_dbm: f64,
    tx_error_db: f64,
    advertising: Option<([u8; LEGACY_ADV_LEN], [u8; 6])>,
}

#[derive(Debug)]
struct Air {
    model: ChannelModel,
    now: Timestamp,
    rng: ChaCha20Rng,
    phones: BTreeMap<u32, Phone>,
}

/// Identifies a virtual phone in the air.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PhoneId(pub u32);

/// The shared air. Cloning shares it.
#[derive(Debug, Clone)]
pub struct SimulatedAir {
    inner: Arc<Mutex<Air>>,
}

impl SimulatedAir {
    /// An empty air with the default channel model, seeded for repeatability.
    pub fn new(seed: u64) -> SimulatedAir {
        SimulatedAir::with_model(seed, ChannelModel::default())
    }

    /// An empty air with a given channel model.
    pub fn with_model(seed: u64, model: ChannelModel) -> SimulatedAir {
        SimulatedAir {
            inner: Arc::new(Mutex::new(Air {
                model,
                now: Timestamp(0),
                rng: ChaCha20Rng::seed_from_u64(seed),
                phones: BTreeMap::new(),
            })),
        }
    }

    fn air(&self) -> MutexGuard<'_, Air> {
        // A panic while holding the lock leaves plain data behind: keep going.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets the air's clock; scans stamp sightings with it.
    pub fn set_time(&self, now: Timestamp) {
        self.air().now = now;
    }

    /// The air's clock.
    pub fn now(&self) -> Timestamp {
        self.air().now
    }

    /// Adds a phone at `position` (metres) transmitting at `tx_power_dbm`,
    /// and returns its radio.
    pub fn add_phone(&self, id: PhoneId, position: (f64, f64), tx_power_dbm: i8) -> SimRadio {
        let mut air = self.air();
        let spread = air.model.tx_error_db;
        let tx_error_db = if spread > 0.0 {
            air.rng.gen_range(-spread..=spread)
        } else {
            0.0
        };
        air.phones.insert(
            id.0,
            Phone {
                position,
                tx_power_dbm: f64::from(tx_power_dbm),
                tx_error_db,
                advertising: None,
            },
        );
        SimRadio {
            air: self.clone(),
            id,
        }
    }

    /// Moves a phone.
    pub fn move_phone(&self, id: PhoneId, position: (f64, f64)) {
        if let Some(p) = self.air().phones.get_mut(&id.0) {
            p.position = position;
        }
    }

    /// Removes a phone: its radio answers [`RadioError::Gone`] from now on.
    pub fn remove_phone(&self, id: PhoneId) {
        self.air().phones.remove(&id.0);
    }
}

/// One virtual phone's radio.
#[derive(Debug, Clone)]
pub struct SimRadio {
    air: SimulatedAir,
    id: PhoneId,
}

impl SimRadio {
    /// This radio's phone.
    pub fn id(&self) -> PhoneId {
        self.id
    }
}

impl Radio for SimRadio {
    async fn advertise(&self, payload: &[u8; LEGACY_ADV_LEN]) -> Result<(), RadioError> {
        let mut air = self.air.air();
        let mut address = [0u8; 6];
        air.rng.fill(&mut address);
        // Static random address format: the two top bits set (Core Vol 6 B §1.3.2.1).
        address[0] |= 0xC0;
        let phone = air.phones.get_mut(&self.id.0).ok_or(RadioError::Gone)?;
        let keep = phone
            .advertising
            .as_ref()
            .filter(|(p, _)| p == payload)
            .map(|(_, a)| *a);
        phone.advertising = Some((*payload, keep.unwrap_or(address)));
        Ok(())
    }

    async fn stop_advertising(&self) -> Result<(), RadioError> {
        let mut air = self.air.air();
        air.phones
            .get_mut(&self.id.0)
            .ok_or(RadioError::Gone)?
            .advertising = None;
        Ok(())
    }

    async fn scan(&self, _window: Duration) -> Result<Vec<Heard>, RadioError> {
        let mut guard = self.air.air();
        let air = &mut *guard;
        let me = air.phones.get(&self.id.0).ok_or(RadioError::Gone)?.position;
        let shadowing =
            Normal::new(0.0, air.model.shadowing_db.max(0.0)).map_err(|e| RadioError::Refused {
                operation: "scan",
                reason: format!("invalid shadowing: {e}"),
            })?;
        let mut heard = Vec::new();
        for (id, phone) in &air.phones {
            let Some((payload, address)) = phone.advertising else {
                continue;
            };
            if *id == self.id.0 {
                continue;
            }
            let d = ((phone.position.0 - me.0).powi(2) + (phone.position.1 - me.1).powi(2))
                .sqrt()
                .max(0.1);
            let loss = air.model.loss_at_1m_db + 10.0 * air.model.exponent * d.log10();
            let rssi =
                phone.tx_power_dbm + phone.tx_error_db - loss + shadowing.sample(&mut air.rng);
            if rssi >= air.model.sensitivity_dbm {
                heard.push(Heard {
                    payload: payload.to_vec(),
                    rssi: Rssi(rssi.round().clamp(-127.0, 20.0) as i8),
                    address,
                    at: air.now,
                });
            }
        }
        Ok(heard)
    }
}
