//! Shared synthetic workloads for the protocol benchmarks: a national-scale
//! batch and a busy phone's 14 days of windows.

use greenlight_protocol::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// First day of the workload.
pub const DAY0: DayNumber = DayNumber(20_400);

/// A compact batch of `keys` daily keys spread over 14 days.
pub fn batch(keys: usize, seed: u64) -> KeyBatch {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let region = RegionId::new("CH").expect("valid region");
    KeyBatch {
        region: region.clone(),
        number: BatchNumber(1),
        start: DAY0.start(),
        end: DAY0.offset(14).start(),
        origins: vec![region],
        payload: BatchPayload::Compact(
            (0..keys)
                .map(|i| PublishedKey {
                    day: DAY0.offset((i % 14) as i64),
                    key: DailyKey::generate(&mut rng),
                    days_since_onset: Some(0),
                    origin: 0,
                })
                .collect(),
        ),
    }
}

/// `count` windows over 14 days, of which `from_batch` come from the batch's keys.
pub fn windows(
    batch: &KeyBatch,
    count: usize,
    from_batch: usize,
    seed: u64,
) -> Vec<ObservedWindow> {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let BatchPayload::Compact(keys) = &batch.payload else {
        panic!("compact batch expected")
    };
    (0..count)
        .map(|i| {
            let index = EpochIndex::new(rng.gen_range(0..96)).expect("below 96");
            let (day, beacon) = if i < from_batch {
                let k = &keys[rng.gen_range(0..keys.len())];
                (
                    k.day,
                    k.key
                        .ephid_generator(k.day)
                        .beacon(index, Metadata { tx_power_dbm: -5 }),
                )
            } else {
                let random = Beacon {
                    ephid: EphId(rng.gen()),
                    metadata: EncryptedMetadata(rng.gen()),
                };
                (DAY0.offset(rng.gen_range(0..14)), random)
            };
            let start = Timestamp(day.epoch(index).start().0 + 60);
            ObservedWindow {
                ephid: beacon.ephid,
                metadata: beacon.metadata,
                first_seen: start,
                last_seen: Timestamp(start.0 + 300),
                rssi: vec![Rssi(-60); 6],
            }
        })
        .collect()
}

/// The same ChaCha20 keystream bytes that deriving `keys` days of EphIDs
/// needs, with no HKDF and no lookup: the physical floor of matching.
pub fn raw_keystream(keys: usize) -> u8 {
    use chacha20::cipher::{KeyIvInit, StreamCipher};
    let mut buf = [0u8; 1536];
    let mut acc = 0u8;
    for i in 0..keys {
        let mut key = [0u8; 32];
        key[..8].copy_from_slice(&(i as u64).to_le_bytes());
        buf.fill(0);
        chacha20::ChaCha20::new(&key.into(), &[0u8; 12].into()).apply_keystream(&mut buf);
        acc ^= buf[i % 1536];
    }
    acc
}
