//! Publishing: at every interval, pending keys become one signed,
//! shuffled, padded, immutable batch file per publication mode.

use crate::store::{BatchRecord, Store, StoredKey};
use anyhow::{Context, Result};
use greenlight_protocol::bloom::EpochFilter;
use greenlight_protocol::ed25519_dalek::SigningKey;
use greenlight_protocol::{
    BatchNumber, BatchPayload, DailyKey, DayNumber, EpochHash, KeyBatch, PublicationMode,
    PublishedKey, RegionId, Timestamp,
};
use rand::seq::SliceRandom;
use rand::Rng;
use sha2::{Digest, Sha256};
use std::io::Write;
use std::path::{Path, PathBuf};

/// Builds, signs and stores batches.
#[derive(Clone, Debug)]
pub struct Publisher {
    /// Where keys wait and batches are recorded.
    pub store: Store,
    /// The region's signing key.
    pub key: SigningKey,
    /// This server's region.
    pub region: RegionId,
    /// Directory of the batch files.
    pub dir: PathBuf,
    /// Entries each batch is padded up to.
    pub min_entries: usize,
}

/// Path of batch `number` under `dir`.
pub fn batch_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:010}.glb"))
}

/// Padding keys look like real ones: a random key, a day in the last two
/// weeks and an onset offset drawn like a real patient's (SPEC §8.3).
fn padding_key(today: DayNumber, rng: &mut impl Rng) -> PublishedKey {
    let mut key = [0u8; 32];
    rng.fill(&mut key);
    PublishedKey {
        day: today.offset(-rng.gen_range(1..=14)),
        key: DailyKey::from_bytes(key),
        days_since_onset: Some(rng.gen_range(-2..=9)),
        origin: 0,
    }
}

/// Compact payload: real keys plus padding up to `min`, shuffled.
pub fn compact_payload(
    real: &[StoredKey],
    min: usize,
    today: DayNumber,
    rng: &mut impl Rng,
) -> BatchPayload {
    let mut keys: Vec<PublishedKey> = real
        .iter()
        .filter_map(|k| {
            let bytes: [u8; 32] = k.data.as_slice().try_into().ok()?;
            Some(PublishedKey {
                day: DayNumber(k.day?),
                key: DailyKey::from_bytes(bytes),
                days_since_onset: k.days_since_onset,
                origin: 0,
            })
        })
        .collect();
    while keys.len() < min {
        keys.push(padding_key(today, rng));
    }
    keys.shuffle(rng);
    BatchPayload::Compact(keys)
}

/// Unlinkable payload: real epoch hashes plus random ones up to `min`.
pub fn unlinkable_payload(
    real: &[StoredKey],
    min: usize,
    rng: &mut impl Rng,
) -> Result<BatchPayload> {
    let entries = real.len().max(min);
    let mut filter = EpochFilter::with_capacity(entries)?;
    for k in real {
        if let Ok(bytes) = <[u8; 16]>::try_from(k.data.as_slice()) {
            filter.insert(&EpochHash(bytes));
        }
    }
    for _ in real.len()..entries {
        filter.insert(&EpochHash(rng.gen()));
    }
    Ok(BatchPayload::Unlinkable(filter))
}

/// Writes `bytes` to `path` durably: temporary file, fsync, rename, fsync dir.
fn write_durably(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().context("batch path has a directory")?;
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {} (disk full?)", tmp.display()))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

impl Publisher {
    /// Publishes one batch per mode for uploads received in `[start, end)`.
    pub async fn publish(&self, start: Timestamp, end: Timestamp) -> Result<Vec<BatchRecord>> {
        let mut published = Vec::new();
        for mode in PublicationMode::ALL {
            let real = self.store.pending_keys(mode).await?;
            let number = self.store.next_batch_number().await?;
            let this = self.clone();
            let real_ids: Vec<i64> = real.iter().map(|k| k.id).collect();
            // Building and signing 100,000 keys is CPU work: off the runtime.
            let record = tokio::task::spawn_blocking(move || -> Result<BatchRecord> {
                let mut rng = rand::thread_rng();
                let payload = match mode {
                    PublicationMode::Compact => {
                        compact_payload(&real, this.min_entries, end.day(), &mut rng)
                    }
                    PublicationMode::Unlinkable => {
                        unlinkable_payload(&real, this.min_entries, &mut rng)?
                    }
                };
                let entries = match &payload {
                    BatchPayload::Compact(k) => k.len() as u64,
                    BatchPayload::Unlinkable(f) => u64::from(f.items()),
                };
                let batch = KeyBatch {
                    region: this.region.clone(),
                    number: BatchNumber(number),
                    start,
                    end,
                    origins: vec![this.region.clone()],
                    payload,
                };
                let bytes = batch.sign(&this.key)?;
                std::fs::create_dir_all(&this.dir)?;
                write_durably(&batch_path(&this.dir, number), &bytes)?;
                let record = BatchRecord {
                    number,
                    mode,
                    start: start.0,
                    end: end.0,
                    entries,
                    sha256: hex::encode(Sha256::digest(&bytes)),
                    size: bytes.len() as u64,
                };
                Ok(record)
            })
            .await??;
            self.store
                .record_batch(&record, &real_ids, end.0 as i64)
                .await?;
            metrics::counter!("greenlight_batches_published_total", "mode" => record.mode.name())
                .increment(1);
            metrics::counter!("greenlight_keys_published_total").increment(real_ids.len() as u64);
            tracing::info!(
                batch = record.number,
                mode = record.mode.name(),
                entries = record.entries,
                "published batch"
            );
            published.push(record);
        }
        Ok(published)
    }

    /// Deletes keys and batch files past retention.
    pub async fn expire(&self, now: Timestamp, retention_days: u32) -> Result<()> {
        let cutoff_day = now.day().offset(-i64::from(retention_days));
        let (keys, batches) = self
            .store
            .expire(cutoff_day.0, cutoff_day.start().0 as i64)
            .await?;
        for n in &batches {
            let _ = std::fs::remove_file(batch_path(&self.dir, *n));
        }
        if keys > 0 || !batches.is_empty() {
            tracing::info!(keys, batches = batches.len(), "deleted data past retention");
        }
        Ok(())
    }
}
