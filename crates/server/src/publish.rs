//! Publishing: at every interval, pending keys become one signed,
//! shuffled, padded, immutable batch file per publication mode. Keys
//! imported from peers are published with their origin marked; filters
//! imported from peers are republished whole. Local keys bound for a peer
//! (the patient named it, or the peer gets everything) also go into an
//! unpadded batch made for that peer, recorded in the same transaction.

use crate::store::{BatchRecord, Publication, Store, StoredKey};
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
    /// Peers: region, and whether it gets every local key.
    pub peers: Vec<(RegionId, bool)>,
    /// Directory of the batches made for peers (one subdirectory each).
    pub federation_dir: PathBuf,
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

/// The origin table of a batch of `real` keys published by `local`: the
/// local region first, then every other origin once (SPEC §8.2).
pub fn origin_table(local: &RegionId, real: &[StoredKey]) -> Vec<RegionId> {
    let mut origins = vec![local.clone()];
    for k in real {
        if let Ok(r) = RegionId::new(&k.origin) {
            if !origins.contains(&r) && origins.len() < 256 {
                origins.push(r);
            }
        }
    }
    origins
}

/// Compact payload: real keys (each pointing into `origins`) plus padding
/// up to `min`, shuffled.
pub fn compact_payload(
    real: &[StoredKey],
    origins: &[RegionId],
    min: usize,
    today: DayNumber,
    rng: &mut impl Rng,
) -> BatchPayload {
    let mut keys: Vec<PublishedKey> = real
        .iter()
        .filter_map(|k| {
            let bytes: [u8; 32] = k.data.as_slice().try_into().ok()?;
            let origin = origins.iter().position(|o| o.as_str() == k.origin)?;
            Some(PublishedKey {
                day: DayNumber(k.day?),
                key: DailyKey::from_bytes(bytes),
                days_since_onset: k.days_since_onset,
                origin: u8::try_from(origin).ok()?,
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

/// Path of batch `number` made for `peer` under `dir`.
pub fn federation_batch_path(dir: &Path, peer: &str, number: u64) -> PathBuf {
    dir.join(peer).join(format!("{number:010}.glb"))
}

/// Signs `batch` and writes it durably to `path`; returns its record.
fn sign_and_write(batch: &KeyBatch, key: &SigningKey, path: &Path) -> Result<BatchRecord> {
    let bytes = batch.sign(key)?;
    std::fs::create_dir_all(path.parent().context("batch path has a directory")?)?;
    write_durably(path, &bytes)?;
    let mode = match batch.payload {
        BatchPayload::Compact(_) => PublicationMode::Compact,
        BatchPayload::Unlinkable(_) => PublicationMode::Unlinkable,
    };
    Ok(BatchRecord {
        number: batch.number.0,
        mode,
        start: batch.start.0,
        end: batch.end.0,
        entries: batch.payload.entries(),
        sha256: hex::encode(Sha256::digest(&bytes)),
        size: bytes.len() as u64,
    })
}

impl Publisher {
    /// Publishes one batch per mode for uploads received in `[start, end)`,
    /// plus one batch per filter imported from a peer.
    pub async fn publish(&self, start: Timestamp, end: Timestamp) -> Result<Vec<BatchRecord>> {
        let mut published = Vec::new();
        for mode in PublicationMode::ALL {
            let real = self.store.pending_keys(mode).await?;
            let number = self.store.next_batch_number().await?;
            let mut outbox_numbers = Vec::new();
            for (peer, share_all) in &self.peers {
                let bound = real
                    .iter()
                    .any(|k| k.goes_to(self.region.as_str(), peer.as_str(), *share_all));
                if bound {
                    let n = self.store.next_federation_number(peer.as_str()).await?;
                    outbox_numbers.push((peer.clone(), *share_all, n));
                }
            }
            let this = self.clone();
            let real_ids: Vec<i64> = real.iter().map(|k| k.id).collect();
            // Building and signing 100,000 keys is CPU work: off the runtime.
            let (record, outbox) = tokio::task::spawn_blocking(move || -> Result<_> {
                let mut rng = rand::thread_rng();
                let batch_of = |number: u64, keys: &[StoredKey], min: usize, rng: &mut _| {
                    let origins = origin_table(&this.region, keys);
                    let payload = match mode {
                        PublicationMode::Compact => {
                            compact_payload(keys, &origins, min, end.day(), rng)
                        }
                        PublicationMode::Unlinkable => unlinkable_payload(keys, min, rng)?,
                    };
                    anyhow::Ok(KeyBatch {
                        region: this.region.clone(),
                        number: BatchNumber(number),
                        start,
                        end,
                        origins,
                        payload,
                    })
                };
                let batch = batch_of(number, &real, this.min_entries, &mut rng)?;
                let record = sign_and_write(&batch, &this.key, &batch_path(&this.dir, number))?;
                let mut outbox = Vec::new();
                for (peer, share_all, n) in outbox_numbers {
                    let bound: Vec<StoredKey> = real
                        .iter()
                        .filter(|k| k.goes_to(this.region.as_str(), peer.as_str(), share_all))
                        .cloned()
                        .collect();
                    // Unpadded: a peer republishes inside its own padded batches.
                    let batch = batch_of(n, &bound, 0, &mut rng)?;
                    let path = federation_batch_path(&this.federation_dir, peer.as_str(), n);
                    outbox.push((peer.to_string(), sign_and_write(&batch, &this.key, &path)?));
                }
                Ok((record, outbox))
            })
            .await??;
            let publication = Publication {
                record: record.clone(),
                real_keys: real_ids,
                filter: None,
                outbox,
            };
            self.record(&publication, end).await?;
            published.push(record);
        }
        for (id, origin, bits, items) in self.store.pending_filters().await? {
            let number = self.store.next_batch_number().await?;
            let origin = RegionId::new(&origin).context("stored origin region")?;
            let batch = KeyBatch {
                region: self.region.clone(),
                number: BatchNumber(number),
                start,
                end,
                origins: vec![origin],
                payload: BatchPayload::Unlinkable(EpochFilter::from_bits(bits, items)?),
            };
            let record = sign_and_write(&batch, &self.key, &batch_path(&self.dir, number))?;
            let publication = Publication {
                record: record.clone(),
                real_keys: Vec::new(),
                filter: Some(id),
                outbox: Vec::new(),
            };
            self.record(&publication, end).await?;
            published.push(record);
        }
        Ok(published)
    }

    async fn record(&self, p: &Publication, end: Timestamp) -> Result<()> {
        self.store.record_batch(p, end.0 as i64).await?;
        let record = &p.record;
        metrics::counter!("greenlight_batches_published_total", "mode" => record.mode.name())
            .increment(1);
        metrics::counter!("greenlight_keys_published_total").increment(p.real_keys.len() as u64);
        tracing::info!(
            batch = record.number,
            mode = record.mode.name(),
            entries = record.entries,
            for_peers = p.outbox.len(),
            "published batch"
        );
        Ok(())
    }

    /// Deletes keys and batch files past retention.
    pub async fn expire(&self, now: Timestamp, retention_days: u32) -> Result<()> {
        let cutoff_day = now.day().offset(-i64::from(retention_days));
        let expired = self
            .store
            .expire(cutoff_day.0, cutoff_day.start().0 as i64)
            .await?;
        for n in &expired.batches {
            let _ = std::fs::remove_file(batch_path(&self.dir, *n));
        }
        for (peer, n) in &expired.federation_batches {
            let _ = std::fs::remove_file(federation_batch_path(&self.federation_dir, peer, *n));
        }
        if expired.keys > 0 || !expired.batches.is_empty() {
            tracing::info!(
                keys = expired.keys,
                batches = expired.batches.len(),
                peer_batches = expired.federation_batches.len(),
                "deleted data past retention"
            );
        }
        Ok(())
    }
}
