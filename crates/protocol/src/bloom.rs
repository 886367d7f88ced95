//! The unlinkable publication mode: a Bloom filter of epoch hashes (SPEC §7).
//!
//! A patient uploads `H(EphID ‖ epoch)` for the epochs they choose to
//! publish, never the key behind them, so nobody can link their EphIDs to
//! each other. The server inserts the hashes into one filter per batch.
//!
//! The filter is the `bloomfilter` crate's, with every parameter fixed so
//! that its bits are portable: SipHash-1-3 over exactly the 16 hash bytes
//! (through [`EpochHash`]'s `Hash`, which writes the bytes and nothing
//! else), the seed [`BLOOM_SEED`], and [`BLOOM_HASHES`] hash functions.

use crate::error::{Error, Result};
use crate::keys::{EphId, EphIdGenerator};
use crate::time::{EpochIndex, EpochNumber};
use bloomfilter::Bloom;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};

/// Domain-separation prefix of the epoch hash (SPEC §7.1).
pub const EPOCH_HASH_DOMAIN: &[u8] = b"greenlight/v1/epoch-hash";
/// Number of hash functions, fixed by the format: false-positive rate 2⁻³²
/// per lookup at the optimal fill (SPEC §7.3).
pub const BLOOM_HASHES: u32 = 32;
/// SipHash seed, fixed by the format: SHA-256("greenlight/v1/bloom-seed").
pub const BLOOM_SEED: [u8; 32] = [
    0x5e, 0xfe, 0xa3, 0x4e, 0x25, 0xb2, 0x94, 0xef, 0xb8, 0xe0, 0x17, 0x8d, 0x0c, 0x88, 0xae, 0xe7,
    0x61, 0xe3, 0x5d, 0x07, 0x5e, 0x86, 0xb3, 0xff, 0xca, 0x08, 0xcc, 0x13, 0x90, 0x6b, 0x04, 0xaf,
];
/// Largest filter accepted, in bytes (256 MiB): room for about 46.5 million entries.
pub const MAX_FILTER_BYTES: usize = 256 << 20;

/// Layout of the `bloomfilter` 3.0 serialization header: version (1),
/// bitmap length in bytes (u64 LE), hash count (u32 LE), seed (32).
const CRATE_HEADER_LEN: usize = 1 + 8 + 4 + 32;
const CRATE_FORMAT_VERSION: u8 = 1;

/// `SHA-256(domain ‖ EphID ‖ epoch as u32 BE)`, first 16 bytes: what a
/// patient uploads and what a phone looks up in unlinkable mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EpochHash(pub [u8; 16]);

impl EpochHash {
    /// The hash of an EphID heard (or broadcast) in `epoch`.
    pub fn new(ephid: &EphId, epoch: EpochNumber) -> EpochHash {
        let digest = Sha256::new()
            .chain_update(EPOCH_HASH_DOMAIN)
            .chain_update(ephid.0)
            .chain_update(epoch.0.to_be_bytes())
            .finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        EpochHash(out)
    }

    /// The hashes a patient uploads for the chosen epochs of one day; the
    /// epochs left out stay private.
    pub fn for_epochs(
        generator: &EphIdGenerator,
        epochs: impl IntoIterator<Item = EpochIndex>,
    ) -> Vec<EpochHash> {
        let day = generator.day();
        epochs
            .into_iter()
            .map(|i| EpochHash::new(&generator.ephid(i), day.epoch(i)))
            .collect()
    }
}

impl Hash for EpochHash {
    /// Feeds exactly the 16 bytes, with no length prefix (SPEC §7.2).
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(&self.0);
    }
}

/// A Bloom filter of epoch hashes with the format's fixed parameters.
#[derive(Clone, Debug)]
pub struct EpochFilter {
    bloom: Bloom<EpochHash>,
    items: u32,
}

impl EpochFilter {
    /// An empty filter sized for `capacity` entries at the optimal fill
    /// for 32 hash functions: ⌈capacity · 32 / ln 2 / 8⌉ bytes (SPEC §7.3).
    pub fn with_capacity(capacity: usize) -> Result<EpochFilter> {
        let bits = (capacity.max(1) as f64) * f64::from(BLOOM_HASHES) / std::f64::consts::LN_2;
        let bytes = (bits / 8.0).ceil() as usize;
        EpochFilter::from_bits(vec![0; bytes], 0)
    }

    /// A filter from its published bitmap and entry count. The bitmap must
    /// hold 1 to [`MAX_FILTER_BYTES`] bytes.
    pub fn from_bits(bits: Vec<u8>, items: u32) -> Result<EpochFilter> {
        if bits.is_empty() || bits.len() > MAX_FILTER_BYTES {
            return Err(Error::InvalidField {
                what: "Bloom filter",
                field: "bitmap length",
                reason: format!("{} bytes, allowed 1 to {MAX_FILTER_BYTES}", bits.len()),
            });
        }
        let mut raw = Vec::with_capacity(CRATE_HEADER_LEN + bits.len());
        raw.push(CRATE_FORMAT_VERSION);
        raw.extend_from_slice(&(bits.len() as u64).to_le_bytes());
        raw.extend_from_slice(&BLOOM_HASHES.to_le_bytes());
        raw.extend_from_slice(&BLOOM_SEED);
        raw.extend_from_slice(&bits);
        let bloom = Bloom::from_bytes(raw).map_err(|e| Error::InvalidField {
            what: "Bloom filter",
            field: "bitmap",
            reason: e.to_string(),
        })?;
        Ok(EpochFilter { bloom, items })
    }

    /// Adds an epoch hash.
    pub fn insert(&mut self, item: &EpochHash) {
        self.bloom.set(item);
        self.items = self.items.saturating_add(1);
    }

    /// Whether the filter (probably) holds `item`; never a false negative.
    pub fn contains(&self, item: &EpochHash) -> bool {
        self.bloom.check(item)
    }

    /// The bitmap: bit `i` is bit `i mod 8` (LSB first) of byte `i / 8`.
    pub fn bits(&self) -> &[u8] {
        &self.bloom.as_slice()[CRATE_HEADER_LEN..]
    }

    /// Entries inserted, as published (padding included).
    pub fn items(&self) -> u32 {
        self.items
    }

    /// Size of the bitmap in bits.
    pub fn len_bits(&self) -> u64 {
        self.bloom.len()
    }

    /// Fraction of bits set.
    pub fn fill_ratio(&self) -> f64 {
        let ones: u64 = self.bits().iter().map(|b| u64::from(b.count_ones())).sum();
        ones as f64 / self.len_bits() as f64
    }

    /// False-positive rate per lookup implied by the actual fill: fillᵏ.
    pub fn false_positive_rate(&self) -> f64 {
        self.fill_ratio().powi(BLOOM_HASHES as i32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Digest;

    #[test]
    fn seed_is_the_documented_hash() {
        assert_eq!(
            Sha256::digest(b"greenlight/v1/bloom-seed").as_slice(),
            BLOOM_SEED
        );
    }

    #[test]
    fn inserted_items_are_found_and_others_are_not() {
        let mut f = EpochFilter::with_capacity(1000).expect("valid size");
        let items: Vec<_> = (0..1000u32)
            .map(|i| EpochHash::new(&EphId([7; 16]), EpochNumber(i)))
            .collect();
        for it in &items {
            f.insert(it);
        }
        assert!(items.iter().all(|it| f.contains(it)));
        let strangers = (0..100_000u32)
            .filter(|&i| f.contains(&EpochHash::new(&EphId([8; 16]), EpochNumber(i))))
            .count();
        assert_eq!(strangers, 0);
        assert!(
            (f.fill_ratio() - 0.5).abs() < 0.05,
            "fill {}",
            f.fill_ratio()
        );
        let g = EpochFilter::from_bits(f.bits().to_vec(), f.items()).expect("round trip");
        assert!(items.iter().all(|it| g.contains(it)));
    }

    #[test]
    fn refuses_empty_bitmaps() {
        assert!(EpochFilter::from_bits(Vec::new(), 0).is_err());
    }
}
