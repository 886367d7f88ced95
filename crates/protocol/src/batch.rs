//! Signed key batches, the files a health authority publishes (SPEC §8).
//!
//! A batch is immutable once signed. A phone verifies magic, version, region
//! and the ed25519 signature before it reads a single key.

use crate::bloom::EpochFilter;
use crate::error::{Error, Result};
use crate::keys::DailyKey;
use crate::region::RegionId;
use crate::time::{DayNumber, Timestamp};
use crate::wire::{verify_signed, Reader, Writer};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// First bytes of every batch file.
pub const BATCH_MAGIC: &[u8; 4] = b"GLKB";
/// The batch format version this implementation writes and reads.
pub const BATCH_VERSION: u8 = 1;
/// Most keys one batch may carry (76 MB of records).
pub const MAX_BATCH_KEYS: u32 = 2_000_000;
/// Most origin regions one batch may name.
pub const MAX_ORIGINS: usize = 64;
/// Bytes in one compact key record.
pub const KEY_RECORD_LEN: usize = 4 + 32 + 1 + 1;
/// Encoding of "days since onset unknown".
const ONSET_UNKNOWN: i8 = i8::MIN;
const WHAT: &str = "key batch";

/// Sequence number of a region's batches, starting at 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct BatchNumber(pub u64);

/// How a batch publishes patients' data (SPEC §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PublicationMode {
    /// Daily keys: small, but a key links its day's EphIDs.
    Compact,
    /// A Bloom filter of epoch hashes: larger, unlinkable, redactable.
    Unlinkable,
}

impl PublicationMode {
    /// Both modes, compact first.
    pub const ALL: [PublicationMode; 2] = [PublicationMode::Compact, PublicationMode::Unlinkable];

    /// The mode byte of the batch format (SPEC §8.1): 1 compact, 2 unlinkable.
    pub fn code(self) -> u8 {
        match self {
            PublicationMode::Compact => 1,
            PublicationMode::Unlinkable => 2,
        }
    }

    /// The mode of a mode byte, if it names one.
    pub fn from_code(code: u8) -> Option<PublicationMode> {
        PublicationMode::ALL.into_iter().find(|m| m.code() == code)
    }

    /// The mode's name as written in JSON and TOML: `compact`, `unlinkable`.
    pub fn name(self) -> &'static str {
        match self {
            PublicationMode::Compact => "compact",
            PublicationMode::Unlinkable => "unlinkable",
        }
    }
}

/// One published daily key with what the status engine needs to weigh it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishedKey {
    /// The UTC day the key was used.
    pub day: DayNumber,
    /// The key itself, now public.
    pub key: DailyKey,
    /// `day − symptom onset` (or test date), if known; weighs infectiousness.
    pub days_since_onset: Option<i8>,
    /// Index into the batch's `origins`: the region that confirmed the case.
    pub origin: u8,
}

/// What a batch carries.
#[derive(Clone, Debug)]
pub enum BatchPayload {
    /// Compact mode: daily keys, shuffled.
    Compact(Vec<PublishedKey>),
    /// Unlinkable mode: one Bloom filter of epoch hashes.
    Unlinkable(EpochFilter),
}

impl BatchPayload {
    /// Keys (compact) or filter entries (unlinkable), padding included.
    pub fn entries(&self) -> u64 {
        match self {
            BatchPayload::Compact(keys) => keys.len() as u64,
            BatchPayload::Unlinkable(filter) => u64::from(filter.items()),
        }
    }
}

/// A batch of published case data, before signing or after verification.
#[derive(Clone, Debug)]
pub struct KeyBatch {
    /// The publishing region.
    pub region: RegionId,
    /// The batch's sequence number in that region.
    pub number: BatchNumber,
    /// Uploads received from (inclusive)…
    pub start: Timestamp,
    /// …until (exclusive).
    pub end: Timestamp,
    /// Regions whose cases the batch carries; keys point into this list.
    pub origins: Vec<RegionId>,
    /// The keys or the filter.
    pub payload: BatchPayload,
}

impl KeyBatch {
    /// The publication mode of the payload.
    pub fn mode(&self) -> PublicationMode {
        match self.payload {
            BatchPayload::Compact(_) => PublicationMode::Compact,
            BatchPayload::Unlinkable(_) => PublicationMode::Unlinkable,
        }
    }

    /// The origin region of a key of this batch.
    pub fn origin_of(&self, key: &PublishedKey) -> Option<&RegionId> {
        self.origins.get(usize::from(key.origin))
    }

    fn validate(&self) -> Result<()> {
        let invalid = |field, reason: String| Error::InvalidField {
            what: WHAT,
            field,
            reason,
        };
        if self.start > self.end {
            return Err(invalid("time range", "start is after end".into()));
        }
        if self.origins.is_empty() || self.origins.len() > MAX_ORIGINS {
            return Err(invalid(
                "origins",
                format!("{} regions, allowed 1 to {MAX_ORIGINS}", self.origins.len()),
            ));
        }
        if let BatchPayload::Compact(keys) = &self.payload {
            if keys.len() > MAX_BATCH_KEYS as usize {
                return Err(Error::TooLarge {
                    what: WHAT,
                    field: "keys",
                    count: keys.len() as u64,
                    max: u64::from(MAX_BATCH_KEYS),
                });
            }
            for k in keys {
                if usize::from(k.origin) >= self.origins.len() {
                    return Err(invalid(
                        "origin",
                        format!("index {} out of range", k.origin),
                    ));
                }
                if k.days_since_onset == Some(ONSET_UNKNOWN) {
                    return Err(invalid(
                        "days since onset",
                        "-128 is reserved for unknown".into(),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Encodes and signs the batch with the region's key (SPEC §8.1).
    pub fn sign(&self, key: &SigningKey) -> Result<Vec<u8>> {
        self.validate()?;
        let mut w = Writer::default();
        w.bytes(BATCH_MAGIC);
        w.u8(BATCH_VERSION);
        w.u8(self.mode().code());
        w.region(&self.region);
        w.u64(self.number.0);
        w.u64(self.start.0);
        w.u64(self.end.0);
        // Invariant: validate() capped origins at 64.
        w.u8(self.origins.len() as u8);
        for o in &self.origins {
            w.region(o);
        }
        match &self.payload {
            BatchPayload::Compact(keys) => {
                // Invariant: validate() capped keys at MAX_BATCH_KEYS.
                w.u32(keys.len() as u32);
                for k in keys {
                    w.u32(k.day.0);
                    w.bytes(k.key.as_bytes());
                    w.i8(k.days_since_onset.unwrap_or(ONSET_UNKNOWN));
                    w.u8(k.origin);
                }
            }
            BatchPayload::Unlinkable(filter) => {
                w.u32(filter.items());
                // Invariant: EpochFilter caps its bitmap at 256 MiB.
                w.u32(filter.bits().len() as u32);
                w.bytes(filter.bits());
            }
        }
        Ok(w.sign(key))
    }

    /// Checks magic, version, region and signature, then decodes (SPEC §8.2).
    /// `region` and `key` are the trust anchor configured for the server.
    pub fn verify(bytes: &[u8], region: &RegionId, key: &VerifyingKey) -> Result<KeyBatch> {
        let mut head = Reader::new(WHAT, bytes);
        head.header(BATCH_MAGIC, BATCH_VERSION)?;
        let _mode = head.u8()?;
        let got = head.region()?;
        if &got != region {
            return Err(Error::WrongRegion {
                what: WHAT,
                expected: region.to_string(),
                got: got.to_string(),
            });
        }
        let body = verify_signed(WHAT, bytes, key)?;
        decode_body(body)
    }
}

fn decode_body(body: &[u8]) -> Result<KeyBatch> {
    let mut r = Reader::new(WHAT, body);
    r.header(BATCH_MAGIC, BATCH_VERSION)?;
    let mode = r.u8()?;
    let region = r.region()?;
    let number = BatchNumber(r.u64()?);
    let start = Timestamp(r.u64()?);
    let end = Timestamp(r.u64()?);
    let origin_count = usize::from(r.u8()?);
    let origins = (0..origin_count)
        .map(|_| r.region())
        .collect::<Result<Vec<_>>>()?;
    let payload = match PublicationMode::from_code(mode) {
        Some(PublicationMode::Compact) => {
            let count = r.u32()?;
            if count > MAX_BATCH_KEYS {
                return Err(Error::TooLarge {
                    what: WHAT,
                    field: "keys",
                    count: u64::from(count),
                    max: u64::from(MAX_BATCH_KEYS),
                });
            }
            // Check the length before allocating: a forged count cannot
            // make us reserve memory the input does not back.
            let needed = count as usize * KEY_RECORD_LEN;
            if r.remaining() < needed {
                return Err(Error::Truncated {
                    what: WHAT,
                    needed,
                    remaining: r.remaining(),
                });
            }
            let mut keys = Vec::with_capacity(count as usize);
            for _ in 0..count {
                let day = DayNumber(r.u32()?);
                let key = DailyKey::from_bytes(r.array()?);
                let onset = r.i8()?;
                let origin = r.u8()?;
                keys.push(PublishedKey {
                    day,
                    key,
                    days_since_onset: (onset != ONSET_UNKNOWN).then_some(onset),
                    origin,
                });
            }
            BatchPayload::Compact(keys)
        }
        Some(PublicationMode::Unlinkable) => {
            let items = r.u32()?;
            let len = r.u32()? as usize;
            BatchPayload::Unlinkable(EpochFilter::from_bits(r.take(len)?.to_vec(), items)?)
        }
        None => {
            return Err(Error::InvalidField {
                what: WHAT,
                field: "mode",
                reason: format!("{mode}, expected 1 (compact) or 2 (unlinkable)"),
            })
        }
    };
    r.finish()?;
    let batch = KeyBatch {
        region,
        number,
        start,
        end,
        origins,
        payload,
    };
    batch.validate()?;
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn region(s: &str) -> RegionId {
        RegionId::new(s).expect("valid region")
    }

    fn sample(rng: &mut rand_chacha::ChaCha20Rng) -> KeyBatch {
        KeyBatch {
            region: region("CH"),
            number: BatchNumber(3),
            start: Timestamp(1_000),
            end: Timestamp(2_000),
            origins: vec![region("CH"), region("DE")],
            payload: BatchPayload::Compact(
                (0..5)
                    .map(|i| PublishedKey {
                        day: DayNumber(20_000 + i),
                        key: DailyKey::generate(rng),
                        days_since_onset: (i != 2).then_some(i as i8 - 2),
                        origin: (i % 2) as u8,
                    })
                    .collect(),
            ),
        }
    }

    #[test]
    fn signed_batches_verify_and_round_trip() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let sk = SigningKey::generate(&mut rng);
        let batch = sample(&mut rng);
        let bytes = batch.sign(&sk).expect("valid batch");
        let back = KeyBatch::verify(&bytes, &region("CH"), &sk.verifying_key()).expect("verifies");
        match (&back.payload, &batch.payload) {
            (BatchPayload::Compact(a), BatchPayload::Compact(b)) => assert_eq!(a, b),
            _ => panic!("mode changed"),
        }
        assert_eq!(back.origins, batch.origins);
        assert_eq!(
            back.origin_of(&sample(&mut rng).payload_keys()[1]),
            Some(&region("DE"))
        );
    }

    impl KeyBatch {
        fn payload_keys(&self) -> &[PublishedKey] {
            match &self.payload {
                BatchPayload::Compact(k) => k,
                BatchPayload::Unlinkable(_) => &[],
            }
        }
    }

    #[test]
    fn refuses_wrong_key_region_version_and_tampering() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        let sk = SigningKey::generate(&mut rng);
        let other = SigningKey::generate(&mut rng);
        let bytes = sample(&mut rng).sign(&sk).expect("valid batch");
        let vk = sk.verifying_key();
        assert!(matches!(
            KeyBatch::verify(&bytes, &region("CH"), &other.verifying_key()),
            Err(Error::BadSignature { .. })
        ));
        assert!(matches!(
            KeyBatch::verify(&bytes, &region("DE"), &vk),
            Err(Error::WrongRegion { .. })
        ));
        let mut v2 = bytes.clone();
        v2[4] = 2;
        assert!(matches!(
            KeyBatch::verify(&v2, &region("CH"), &vk),
            Err(Error::UnknownVersion {
                got: 2,
                supported: 1,
                ..
            })
        ));
        let mut flipped = bytes.clone();
        flipped[60] ^= 1;
        assert!(matches!(
            KeyBatch::verify(&flipped, &region("CH"), &vk),
            Err(Error::BadSignature { .. })
        ));
        assert!(matches!(
            KeyBatch::verify(&bytes[..bytes.len() - 1], &region("CH"), &vk),
            Err(Error::BadSignature { .. })
        ));
        assert!(matches!(
            KeyBatch::verify(b"GLK", &region("CH"), &vk),
            Err(Error::Truncated { .. })
        ));
    }

    #[test]
    fn refuses_to_sign_inconsistent_batches() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let sk = SigningKey::generate(&mut rng);
        let mut b = sample(&mut rng);
        b.origins.truncate(1);
        assert!(matches!(
            b.sign(&sk),
            Err(Error::InvalidField {
                field: "origin",
                ..
            })
        ));
        let mut b = sample(&mut rng);
        b.start = Timestamp(5_000);
        assert!(b.sign(&sk).is_err());
    }

    #[test]
    fn unlinkable_batches_round_trip() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(4);
        let sk = SigningKey::generate(&mut rng);
        let mut filter = EpochFilter::with_capacity(10).expect("valid size");
        let item = crate::bloom::EpochHash([3; 16]);
        filter.insert(&item);
        let mut b = sample(&mut rng);
        b.payload = BatchPayload::Unlinkable(filter);
        let bytes = b.sign(&sk).expect("valid");
        let back = KeyBatch::verify(&bytes, &region("CH"), &sk.verifying_key()).expect("verifies");
        match back.payload {
            BatchPayload::Unlinkable(f) => {
                assert!(f.contains(&item));
                assert_eq!(f.items(), 1);
            }
            BatchPayload::Compact(_) => panic!("mode changed"),
        }
    }
}
