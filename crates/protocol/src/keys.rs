//! Daily tracing keys, EphIDs and their encrypted metadata (SPEC §4).
//!
//! Each UTC day a phone draws a fresh random [`DailyKey`]; keys are never
//! chained, so publishing one day reveals nothing about another. HKDF-SHA256
//! turns (key, day) into a ChaCha20 key whose keystream yields the day's 96
//! EphIDs and their metadata masks, each computable on its own.
//!
//! The daily key is 32 uniformly random bytes, a full-strength
//! pseudorandom key, so HKDF's extract step is skipped (RFC 5869 §3.3) and
//! the key enters HKDF-Expand directly as the PRK.

use crate::error::{Error, Result};
use crate::time::{DayNumber, EpochIndex, EPOCHS_PER_DAY};
use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
use chacha20::ChaCha20;
use hkdf::Hkdf;
use rand_core::{CryptoRng, RngCore};
use sha2::Sha256;
use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// HKDF info prefix; the big-endian day number follows (SPEC §4.2).
pub const HKDF_INFO_PREFIX: &[u8] = b"greenlight/v1/ephid-key";
/// Bytes in one EphID.
pub const EPHID_LEN: usize = 16;
/// Bytes of keystream that hold a day's EphIDs: 96 × 16.
pub const EPHID_KEYSTREAM_LEN: usize = EPHID_LEN * EPOCHS_PER_DAY as usize;
/// Bytes in the metadata field.
pub const METADATA_LEN: usize = 4;
/// Bytes of keystream behind a day's beacons: the EphIDs, then 96 × 4
/// bytes of metadata masks.
pub const BEACON_KEYSTREAM_LEN: usize =
    EPHID_KEYSTREAM_LEN + METADATA_LEN * EPOCHS_PER_DAY as usize;
/// Version carried in the metadata of this protocol version.
pub const METADATA_VERSION: u8 = 1;

/// A phone's secret key for one UTC day: 32 random bytes. Zeroized on drop;
/// `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct DailyKey([u8; 32]);

impl DailyKey {
    /// Draws a fresh key. Call once per UTC day; never derive one key from another.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> DailyKey {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        DailyKey(bytes)
    }

    /// Wraps key bytes read from a store or a published batch.
    pub fn from_bytes(bytes: [u8; 32]) -> DailyKey {
        DailyKey(bytes)
    }

    /// The key bytes, for storage or upload.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The EphID generator of this key on `day`. The day is bound into the
    /// derivation: a key published for one day yields nothing for another.
    pub fn ephid_generator(&self, day: DayNumber) -> EphIdGenerator {
        let mut info = [0u8; 27];
        info[..HKDF_INFO_PREFIX.len()].copy_from_slice(HKDF_INFO_PREFIX);
        info[HKDF_INFO_PREFIX.len()..].copy_from_slice(&day.0.to_be_bytes());
        let mut cipher_key = [0u8; 32];
        // SPEC §4.2: the daily key is the PRK of HKDF-Expand (no extract).
        Hkdf::<Sha256>::from_prk(&self.0)
            .expect("a 32-byte PRK is long enough for HKDF-SHA256")
            .expand(&info, &mut cipher_key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        EphIdGenerator { cipher_key, day }
    }
}

impl fmt::Debug for DailyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DailyKey(<redacted>)")
    }
}

/// An ephemeral ID: 16 pseudorandom bytes broadcast during one epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EphId(pub [u8; EPHID_LEN]);

impl fmt::Debug for EphId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never log EphIDs: a log of them links a person's movements.
        f.write_str("EphId(<redacted>)")
    }
}

/// Plaintext metadata broadcast with each EphID (SPEC §4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// Calibrated radiated transmit power of the broadcasting phone, in dBm,
    /// so that attenuation = transmit power − RSSI (SPEC §4.4).
    pub tx_power_dbm: i8,
}

impl Metadata {
    /// The four plaintext bytes: version, transmit power, two reserved zeros.
    pub fn to_bytes(self) -> [u8; METADATA_LEN] {
        [METADATA_VERSION, self.tx_power_dbm.to_be_bytes()[0], 0, 0]
    }

    /// Reads plaintext metadata; the version must be known, reserved bytes are ignored.
    pub fn from_bytes(bytes: [u8; METADATA_LEN]) -> Result<Metadata> {
        if bytes[0] != METADATA_VERSION {
            return Err(Error::UnknownVersion {
                what: "metadata",
                got: bytes[0],
                supported: METADATA_VERSION,
            });
        }
        Ok(Metadata {
            tx_power_dbm: i8::from_be_bytes([bytes[1]]),
        })
    }
}

/// Metadata as broadcast: XORed with keystream, readable only with the daily key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct EncryptedMetadata(pub [u8; METADATA_LEN]);

impl fmt::Debug for EncryptedMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EncryptedMetadata({})", hex::encode(self.0))
    }
}

/// Derives one day's EphIDs and metadata masks from the ChaCha20 keystream.
/// Holds key material: zeroized on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EphIdGenerator {
    cipher_key: [u8; 32],
    #[zeroize(skip)]
    day: DayNumber,
}

impl EphIdGenerator {
    fn cipher_at(&self, offset: usize) -> ChaCha20 {
        // SPEC §4.2: nonce is all zero; the key is used for this stream only.
        let mut cipher = ChaCha20::new(&self.cipher_key.into(), &[0u8; 12].into());
        cipher.seek(offset as u64);
        cipher
    }

    /// The day this generator belongs to.
    pub fn day(&self) -> DayNumber {
        self.day
    }

    /// The EphID of one epoch: keystream bytes `16·i .. 16·i + 16`.
    pub fn ephid(&self, index: EpochIndex) -> EphId {
        let mut out = [0u8; EPHID_LEN];
        self.cipher_at(EPHID_LEN * usize::from(index.get()))
            .apply_keystream(&mut out);
        EphId(out)
    }

    /// All 96 EphIDs of the day as one keystream run (1,536 bytes), the fast
    /// path for matching. Chunk `i` of 16 bytes is the EphID of epoch `i`.
    pub fn fill_ephids(&self, out: &mut [u8; EPHID_KEYSTREAM_LEN]) {
        out.fill(0);
        self.cipher_at(0).apply_keystream(out);
    }

    /// All 96 EphIDs of the day, in epoch order.
    pub fn all_ephids(&self) -> Vec<EphId> {
        let mut stream = [0u8; EPHID_KEYSTREAM_LEN];
        self.fill_ephids(&mut stream);
        stream
            .chunks_exact(EPHID_LEN)
            .map(|c| {
                let mut id = [0u8; EPHID_LEN];
                id.copy_from_slice(c);
                EphId(id)
            })
            .collect()
    }

    /// The metadata mask of one epoch: keystream bytes `1536 + 4·i .. + 4`.
    fn metadata_mask(&self, index: EpochIndex) -> [u8; METADATA_LEN] {
        let mut mask = [0u8; METADATA_LEN];
        self.cipher_at(EPHID_KEYSTREAM_LEN + METADATA_LEN * usize::from(index.get()))
            .apply_keystream(&mut mask);
        mask
    }

    /// Encrypts metadata for broadcast in epoch `index`.
    pub fn encrypt_metadata(&self, index: EpochIndex, metadata: Metadata) -> EncryptedMetadata {
        let mut bytes = metadata.to_bytes();
        xor(&mut bytes, &self.metadata_mask(index));
        EncryptedMetadata(bytes)
    }

    /// Decrypts metadata heard in epoch `index`; fails on an unknown version.
    pub fn decrypt_metadata(
        &self,
        index: EpochIndex,
        sealed: EncryptedMetadata,
    ) -> Result<Metadata> {
        let mut bytes = sealed.0;
        xor(&mut bytes, &self.metadata_mask(index));
        Metadata::from_bytes(bytes)
    }

    /// The beacons of epochs `first` to the end of the day, to be read
    /// with [`Beacons::get`]: [`EphIdGenerator::beacon`] of each, from two
    /// keystream runs (one for the EphIDs, one for the metadata masks) at
    /// a fraction of the cost of one [`EphIdGenerator::beacon`] per epoch,
    /// and with no allocation. [`EpochIndex::FIRST`] gives the whole day.
    pub fn beacons_from(&self, first: EpochIndex, metadata: Metadata) -> Beacons {
        let start = usize::from(first.get());
        let mut stream = [0u8; BEACON_KEYSTREAM_LEN];
        let (ephids, masks) = stream.split_at_mut(EPHID_KEYSTREAM_LEN);
        self.cipher_at(EPHID_LEN * start)
            .apply_keystream(&mut ephids[EPHID_LEN * start..]);
        self.cipher_at(EPHID_KEYSTREAM_LEN + METADATA_LEN * start)
            .apply_keystream(&mut masks[METADATA_LEN * start..]);
        Beacons {
            first,
            stream,
            plain: metadata.to_bytes(),
        }
    }

    /// What a phone broadcasts in epoch `index`: the EphID and sealed metadata.
    pub fn beacon(&self, index: EpochIndex, metadata: Metadata) -> Beacon {
        Beacon {
            ephid: self.ephid(index),
            metadata: self.encrypt_metadata(index, metadata),
        }
    }
}

impl fmt::Debug for EphIdGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "EphIdGenerator {{ day: {:?}, key: <redacted> }}",
            self.day
        )
    }
}

fn xor(bytes: &mut [u8; METADATA_LEN], mask: &[u8; METADATA_LEN]) {
    for (b, m) in bytes.iter_mut().zip(mask) {
        *b ^= m;
    }
}

/// A day's beacons from one epoch on ([`EphIdGenerator::beacons_from`]).
/// Holds keystream, not the key: what it yields is broadcast anyway.
#[derive(Clone)]
pub struct Beacons {
    first: EpochIndex,
    stream: [u8; BEACON_KEYSTREAM_LEN],
    plain: [u8; METADATA_LEN],
}

impl Beacons {
    /// The beacon of epoch `index`; `None` before the first epoch derived.
    pub fn get(&self, index: EpochIndex) -> Option<Beacon> {
        if index < self.first {
            return None;
        }
        let i = usize::from(index.get());
        let mut ephid = [0u8; EPHID_LEN];
        ephid.copy_from_slice(&self.stream[EPHID_LEN * i..EPHID_LEN * (i + 1)]);
        let at = EPHID_KEYSTREAM_LEN + METADATA_LEN * i;
        let mut mask = [0u8; METADATA_LEN];
        mask.copy_from_slice(&self.stream[at..at + METADATA_LEN]);
        let mut sealed = self.plain;
        xor(&mut sealed, &mask);
        Some(Beacon {
            ephid: EphId(ephid),
            metadata: EncryptedMetadata(sealed),
        })
    }
}

impl fmt::Debug for Beacons {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Beacons")
            .field("first", &self.first)
            .finish_non_exhaustive()
    }
}

/// The 20 bytes a phone broadcasts in one epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Beacon {
    /// This epoch's EphID.
    pub ephid: EphId,
    /// Metadata sealed under the day's keystream.
    pub metadata: EncryptedMetadata,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn key() -> DailyKey {
        DailyKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(7))
    }

    #[test]
    fn random_access_equals_sequential_stream() {
        let g = key().ephid_generator(DayNumber(20_000));
        let all = g.all_ephids();
        for i in EpochIndex::all() {
            assert_eq!(g.ephid(i), all[usize::from(i.get())]);
        }
        let distinct: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), 96);
    }

    #[test]
    fn beacons_from_equal_each_epochs_beacon() {
        let g = key().ephid_generator(DayNumber(20_000));
        let metadata = Metadata { tx_power_dbm: -7 };
        let all = g.beacons_from(EpochIndex::FIRST, metadata);
        for i in EpochIndex::all() {
            let b = all.get(i).expect("the whole day");
            assert_eq!(b, g.beacon(i, metadata));
            assert_eq!(
                g.decrypt_metadata(i, b.metadata).expect("decrypts"),
                metadata
            );
        }
        for first in [1u8, 32, 95] {
            let tail = g.beacons_from(EpochIndex::new(first).expect("< 96"), metadata);
            for i in EpochIndex::all() {
                let expected = (i.get() >= first).then(|| all.get(i).expect("whole day"));
                assert_eq!(tail.get(i), expected);
            }
        }
    }

    #[test]
    fn day_is_bound_into_the_derivation() {
        let k = key();
        let i = EpochIndex::new(5).expect("5 < 96");
        assert_ne!(
            k.ephid_generator(DayNumber(1)).ephid(i),
            k.ephid_generator(DayNumber(2)).ephid(i)
        );
    }

    #[test]
    fn metadata_round_trips_only_with_the_key() {
        let g = key().ephid_generator(DayNumber(20_000));
        let i = EpochIndex::new(42).expect("42 < 96");
        let m = Metadata { tx_power_dbm: -12 };
        let sealed = g.encrypt_metadata(i, m);
        assert_ne!(sealed.0, m.to_bytes());
        assert_eq!(g.decrypt_metadata(i, sealed), Ok(m));
        let other = DailyKey::from_bytes([9; 32]).ephid_generator(DayNumber(20_000));
        // With the wrong key the version byte is garbage in 255 of 256 cases.
        assert_ne!(other.decrypt_metadata(i, sealed), Ok(m));
    }

    #[test]
    fn spec_worked_example() {
        // SPEC §14.2: key 00 01 … 1f on day 20415.
        let key = DailyKey::from_bytes(std::array::from_fn(|i| i as u8));
        let g = key.ephid_generator(DayNumber(20_415));
        let first = EpochIndex::new(0).expect("0 < 96");
        let last = EpochIndex::new(95).expect("95 < 96");
        assert_eq!(
            hex::encode(g.ephid(first).0),
            "f103268ef246c01f63726469a7a5c44c"
        );
        assert_eq!(
            hex::encode(g.ephid(last).0),
            "0d3d92bcc3a6ae9000e0d51dc2e7d133"
        );
        let sealed = g.encrypt_metadata(first, Metadata { tx_power_dbm: -8 });
        assert_eq!(hex::encode(sealed.0), "f0876dca");
    }

    #[test]
    fn secrets_are_redacted_in_debug() {
        let k = key();
        assert_eq!(format!("{k:?}"), "DailyKey(<redacted>)");
        let g = k.ephid_generator(DayNumber(3));
        assert!(!format!("{g:?}").contains(&hex::encode(k.as_bytes())));
    }
}
