//! The exposure policy: the health authority's published, signed rules
//! that turn matched exposures into a colour (SPEC §9).
//!
//! Every weight is an integer percentage and every duration an integer, so
//! that two implementations reach the same colour to the second.

use crate::error::{Error, Result};
use crate::region::RegionId;
use crate::window::Attenuation;
use crate::wire::{verify_signed, Reader, Writer};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use std::fmt;

/// First bytes of a signed policy.
pub const POLICY_MAGIC: &[u8; 4] = b"GLPL";
/// The policy format version this implementation writes and reads.
pub const POLICY_VERSION: u8 = 1;
/// Days before and after onset that carry an infectiousness weight.
pub const ONSET_RANGE: i8 = 14;
/// Entries in the infectiousness table: days −14 ..= +14.
pub const INFECTIOUSNESS_DAYS: usize = 2 * ONSET_RANGE as usize + 1;
/// Largest weight, in percent.
pub const MAX_WEIGHT_PCT: u16 = 1000;
const WHAT: &str = "exposure policy";

/// How close a window was, from its median attenuation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AttenuationBucket {
    /// At or below the first threshold.
    Immediate,
    /// At or below the second.
    Near,
    /// At or below the third.
    Medium,
    /// Above the third.
    Far,
}

impl AttenuationBucket {
    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for AttenuationBucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttenuationBucket::Immediate => "immediate",
            AttenuationBucket::Near => "near",
            AttenuationBucket::Medium => "medium",
            AttenuationBucket::Far => "far",
        })
    }
}

/// The rules a region publishes. Authored as TOML or JSON, distributed
/// signed in the binary form of SPEC §9.2.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposurePolicy {
    /// The publishing region.
    pub region: RegionId,
    /// Increases with every change; phones refuse a lower serial.
    pub serial: u32,
    /// Upper bounds (dB, inclusive, strictly increasing) of the immediate,
    /// near and medium buckets.
    pub attenuation_thresholds_db: [u8; 3],
    /// Weight of each bucket (immediate, near, medium, far), percent.
    pub attenuation_weights_pct: [u16; 4],
    /// Infectiousness weight by days since symptom onset (or test) from −14
    /// to +14, percent; outside that range the weight is 0.
    pub infectiousness_weights_pct: [u16; INFECTIOUSNESS_DAYS],
    /// Weight when the onset is unknown (unlinkable mode), percent.
    pub unknown_onset_weight_pct: u16,
    /// Windows shorter than this are ignored (a passer-by).
    pub min_window_secs: u32,
    /// Weighted minutes in one day that make a phone yellow.
    pub yellow_threshold_minutes: u16,
    /// Weighted minutes in one day that make a phone red.
    pub red_threshold_minutes: u16,
    /// Home quarantine after a yellow-level exposure, days after the exposure.
    pub yellow_quarantine_days: u8,
    /// Quarantine after a red-level exposure, days after the exposure.
    pub red_quarantine_days: u8,
    /// Isolation after one's own positive test, days after the test.
    pub isolation_days: u8,
    /// Whether each quarantine day after notification needs a check-in;
    /// a missed one extends the quarantine by a day.
    pub daily_checkin: bool,
    /// Epochs of clock skew tolerated between sender and receiver (replay window).
    pub epoch_skew: u8,
    /// Transmit power assumed when it cannot be decrypted (unlinkable mode), dBm.
    pub assumed_tx_power_dbm: i8,
}

impl ExposurePolicy {
    /// The recommended defaults of SPEC §9.3 for `region`.
    pub fn recommended(region: RegionId) -> ExposurePolicy {
        let mut infectiousness = [0u16; INFECTIOUSNESS_DAYS];
        // Days −3 ..= +7 around onset (Ferretti et al. 2020, He et al. 2020):
        // infectiousness peaks around onset and wanes over the first week.
        for (offset, weight) in [
            (-3, 50),
            (-2, 100),
            (-1, 150),
            (0, 150),
            (1, 150),
            (2, 100),
            (3, 100),
            (4, 50),
            (5, 50),
            (6, 50),
            (7, 50),
        ] {
            infectiousness[(offset + ONSET_RANGE as i32) as usize] = weight;
        }
        ExposurePolicy {
            region,
            serial: 1,
            attenuation_thresholds_db: [55, 63, 73],
            attenuation_weights_pct: [150, 100, 50, 0],
            infectiousness_weights_pct: infectiousness,
            unknown_onset_weight_pct: 100,
            min_window_secs: 120,
            yellow_threshold_minutes: 10,
            red_threshold_minutes: 15,
            yellow_quarantine_days: 7,
            red_quarantine_days: 14,
            isolation_days: 14,
            daily_checkin: true,
            epoch_skew: 1,
            assumed_tx_power_dbm: -8,
        }
    }

    /// The bucket an attenuation falls in.
    pub fn bucket(&self, attenuation: Attenuation) -> AttenuationBucket {
        let [t0, t1, t2] = self.attenuation_thresholds_db;
        match attenuation.0 {
            a if a <= t0 => AttenuationBucket::Immediate,
            a if a <= t1 => AttenuationBucket::Near,
            a if a <= t2 => AttenuationBucket::Medium,
            _ => AttenuationBucket::Far,
        }
    }

    /// Weight of a bucket, percent.
    pub fn attenuation_weight(&self, bucket: AttenuationBucket) -> u16 {
        self.attenuation_weights_pct[bucket.index()]
    }

    /// Infectiousness weight for a key used `days_since_onset` days after
    /// onset, percent.
    pub fn infectiousness_weight(&self, days_since_onset: Option<i8>) -> u16 {
        match days_since_onset {
            None => self.unknown_onset_weight_pct,
            Some(d) if (-ONSET_RANGE..=ONSET_RANGE).contains(&d) => {
                self.infectiousness_weights_pct[(d + ONSET_RANGE) as usize]
            }
            Some(_) => 0,
        }
    }

    /// Checks every field against its allowed range; the error names the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |field, reason: String| {
            Err(Error::InvalidField {
                what: WHAT,
                field,
                reason,
            })
        };
        let [t0, t1, t2] = self.attenuation_thresholds_db;
        if !(t0 < t1 && t1 < t2) {
            return bad(
                "attenuation_thresholds_db",
                format!("[{t0}, {t1}, {t2}] must be strictly increasing"),
            );
        }
        let weights = self
            .attenuation_weights_pct
            .iter()
            .chain(&self.infectiousness_weights_pct)
            .chain([&self.unknown_onset_weight_pct]);
        if let Some(w) = weights.into_iter().find(|&&w| w > MAX_WEIGHT_PCT) {
            return bad("weights", format!("{w}% exceeds {MAX_WEIGHT_PCT}%"));
        }
        if self.min_window_secs > 3600 {
            return bad(
                "min_window_secs",
                format!("{} is not in 0..=3600", self.min_window_secs),
            );
        }
        if self.yellow_threshold_minutes == 0 {
            return bad("yellow_threshold_minutes", "must be at least 1".into());
        }
        if self.red_threshold_minutes < self.yellow_threshold_minutes {
            return bad(
                "red_threshold_minutes",
                format!(
                    "{} is below yellow_threshold_minutes {}",
                    self.red_threshold_minutes, self.yellow_threshold_minutes
                ),
            );
        }
        for (field, days) in [
            ("yellow_quarantine_days", self.yellow_quarantine_days),
            ("red_quarantine_days", self.red_quarantine_days),
            ("isolation_days", self.isolation_days),
        ] {
            if !(1..=60).contains(&days) {
                return bad(field, format!("{days} is not in 1..=60"));
            }
        }
        if self.epoch_skew > 4 {
            return bad("epoch_skew", format!("{} is not in 0..=4", self.epoch_skew));
        }
        Ok(())
    }

    /// Validates, encodes and signs the policy (SPEC §9.2).
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>> {
        self.validate()?;
        let mut w = Writer::default();
        w.bytes(POLICY_MAGIC);
        w.u8(POLICY_VERSION);
        w.region(&self.region);
        w.u32(self.serial);
        w.bytes(&self.attenuation_thresholds_db);
        for &x in self
            .attenuation_weights_pct
            .iter()
            .chain(&self.infectiousness_weights_pct)
        {
            w.u16(x);
        }
        w.u16(self.unknown_onset_weight_pct);
        w.u32(self.min_window_secs);
        w.u16(self.yellow_threshold_minutes);
        w.u16(self.red_threshold_minutes);
        w.u8(self.yellow_quarantine_days);
        w.u8(self.red_quarantine_days);
        w.u8(self.isolation_days);
        w.u8(u8::from(self.daily_checkin));
        w.u8(self.epoch_skew);
        w.i8(self.assumed_tx_power_dbm);
        Ok(w.sign(key))
    }

    /// Verifies a policy offered as a replacement for `held` (SPEC §9.5):
    /// besides [`ExposurePolicy::verify`], refuses a lower serial, and an
    /// equal serial with other content, so a server cannot roll a phone
    /// back to older rules.
    pub fn verify_update(
        bytes: &[u8],
        region: &RegionId,
        key: &VerifyingKey,
        held: Option<&ExposurePolicy>,
    ) -> Result<ExposurePolicy> {
        let policy = ExposurePolicy::verify(bytes, region, key)?;
        match held {
            Some(h) if policy.serial < h.serial || (policy.serial == h.serial && &policy != h) => {
                Err(Error::StaleSerial {
                    what: WHAT,
                    got: policy.serial,
                    held: h.serial,
                })
            }
            _ => Ok(policy),
        }
    }

    /// Checks magic, version, region and signature, then decodes and validates.
    pub fn verify(bytes: &[u8], region: &RegionId, key: &VerifyingKey) -> Result<ExposurePolicy> {
        let mut head = Reader::new(WHAT, bytes);
        head.header(POLICY_MAGIC, POLICY_VERSION)?;
        let got = head.region()?;
        if &got != region {
            return Err(Error::WrongRegion {
                what: WHAT,
                expected: region.to_string(),
                got: got.to_string(),
            });
        }
        let body = verify_signed(WHAT, bytes, key)?;
        let mut r = Reader::new(WHAT, body);
        r.header(POLICY_MAGIC, POLICY_VERSION)?;
        let region = r.region()?;
        let serial = r.u32()?;
        let attenuation_thresholds_db = r.array()?;
        let mut attenuation_weights_pct = [0u16; 4];
        for w in &mut attenuation_weights_pct {
            *w = r.u16()?;
        }
        let mut infectiousness_weights_pct = [0u16; INFECTIOUSNESS_DAYS];
        for w in &mut infectiousness_weights_pct {
            *w = r.u16()?;
        }
        let policy = ExposurePolicy {
            region,
            serial,
            attenuation_thresholds_db,
            attenuation_weights_pct,
            infectiousness_weights_pct,
            unknown_onset_weight_pct: r.u16()?,
            min_window_secs: r.u32()?,
            yellow_threshold_minutes: r.u16()?,
            red_threshold_minutes: r.u16()?,
            yellow_quarantine_days: r.u8()?,
            red_quarantine_days: r.u8()?,
            isolation_days: r.u8()?,
            daily_checkin: match r.u8()? {
                0 => false,
                1 => true,
                other => {
                    return Err(Error::InvalidField {
                        what: WHAT,
                        field: "daily_checkin",
                        reason: format!("{other}, expected 0 or 1"),
                    })
                }
            },
            epoch_skew: r.u8()?,
            assumed_tx_power_dbm: r.i8()?,
        };
        r.finish()?;
        policy.validate()?;
        Ok(policy)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn ch() -> RegionId {
        RegionId::new("CH").expect("valid")
    }

    #[test]
    fn signed_policy_round_trips() {
        let sk = SigningKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(5));
        let p = ExposurePolicy::recommended(ch());
        let bytes = p.sign(&sk).expect("valid");
        assert_eq!(
            ExposurePolicy::verify(&bytes, &ch(), &sk.verifying_key()),
            Ok(p)
        );
    }

    #[test]
    fn older_or_altered_serials_are_refused() {
        let sk = SigningKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(6));
        let vk = sk.verifying_key();
        let mut held = ExposurePolicy::recommended(ch());
        held.serial = 5;
        let mut older = held.clone();
        older.serial = 4;
        let mut altered = held.clone();
        altered.red_threshold_minutes = 30;
        let mut newer = altered.clone();
        newer.serial = 6;
        let check = |p: &ExposurePolicy| {
            ExposurePolicy::verify_update(&p.sign(&sk).expect("valid"), &ch(), &vk, Some(&held))
        };
        assert!(matches!(
            check(&older),
            Err(Error::StaleSerial {
                got: 4,
                held: 5,
                ..
            })
        ));
        assert!(matches!(check(&altered), Err(Error::StaleSerial { .. })));
        assert_eq!(check(&held), Ok(held.clone()));
        assert_eq!(check(&newer), Ok(newer.clone()));
    }

    #[test]
    fn toml_authoring_round_trips_and_names_bad_fields() {
        let p = ExposurePolicy::recommended(ch());
        let text = toml::to_string(&p).expect("serializes");
        let back: ExposurePolicy = toml::from_str(&text).expect("parses");
        assert_eq!(back, p);
        let mut bad = p.clone();
        bad.red_threshold_minutes = 5;
        assert!(matches!(
            bad.validate(),
            Err(Error::InvalidField {
                field: "red_threshold_minutes",
                ..
            })
        ));
        let mut bad = p;
        bad.attenuation_thresholds_db = [60, 60, 70];
        assert!(matches!(
            bad.validate(),
            Err(Error::InvalidField {
                field: "attenuation_thresholds_db",
                ..
            })
        ));
    }

    #[test]
    fn buckets_and_weights() {
        let p = ExposurePolicy::recommended(ch());
        assert_eq!(p.bucket(Attenuation(55)), AttenuationBucket::Immediate);
        assert_eq!(p.bucket(Attenuation(56)), AttenuationBucket::Near);
        assert_eq!(p.bucket(Attenuation(73)), AttenuationBucket::Medium);
        assert_eq!(p.bucket(Attenuation(74)), AttenuationBucket::Far);
        assert_eq!(p.infectiousness_weight(Some(0)), 150);
        assert_eq!(p.infectiousness_weight(Some(-14)), 0);
        assert_eq!(p.infectiousness_weight(Some(100)), 0);
        assert_eq!(p.infectiousness_weight(None), 100);
    }
}
