//! Mutual recognition between regions (SPEC §18). Each peer makes, at
//! every publication, a batch of its local keys bound for this region (the
//! patient named this region as visited, or the peer shares everything);
//! this server pulls those batches, verifies them under the peer's pinned
//! key, drops keys it has already seen, and republishes the rest in its own
//! signed batches with their origin marked, so a phone needs only its home
//! server. Compact keys are merged into the next batch; an unlinkable
//! filter, which cannot be split, is republished whole.
//!
//! A peer that is down, slow, answers garbage or signs with another key
//! never stops local publishing: each peer has its own task, retries with
//! exponential backoff (2 s doubling, capped at the pull interval), logs
//! one line per failure and counts it in
//! `greenlight_federation_errors_total{peer}`. The cursor per peer moves in
//! the transaction that stores what a batch brought, so nothing is fetched
//! twice or lost across restarts.

use crate::config::PeerConfig;
use crate::store::{Import, NewKey};
use crate::AppState;
use greenlight_client::{Client, FetchError};
use greenlight_protocol::ed25519_dalek::VerifyingKey;
use greenlight_protocol::{BatchPayload, KeyBatch, PublicationMode, RegionId};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// What one pull from one peer did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PullReport {
    /// The peer's region.
    pub peer: String,
    /// Batches imported.
    pub batches: usize,
    /// New keys (compact) stored for the next publication.
    pub new_keys: usize,
    /// Keys already seen, dropped.
    pub duplicates: usize,
    /// Filters (unlinkable) stored for republication.
    pub filters: usize,
    /// The peer's last batch imported.
    pub cursor: u64,
    /// What went wrong, if anything.
    pub error: Option<String>,
}

/// One recognized peer, ready to pull from.
#[derive(Clone, Debug)]
pub struct Peer {
    /// Its region.
    pub region: RegionId,
    /// Its pinned key.
    pub key: VerifyingKey,
    client: Client,
}

impl Peer {
    /// Builds a peer from its (validated) configuration.
    pub fn new(config: &PeerConfig, timeout: Duration) -> anyhow::Result<Peer> {
        let region = RegionId::new(&config.region)?;
        let key = config
            .verifying_key()
            .map_err(|e| anyhow::anyhow!("peer {}: {e}", config.region))?;
        let client = Client::with_timeout(&config.url, timeout)?;
        Ok(Peer {
            region,
            key,
            client,
        })
    }
}

/// What a verified peer batch brings: its keys with their origins, minus
/// any that came from this region (never imported back), or its filter.
fn import_of(batch: &KeyBatch, local: &RegionId) -> Import {
    match &batch.payload {
        BatchPayload::Compact(keys) => Import {
            keys: keys
                .iter()
                .filter_map(|k| {
                    let origin = batch
                        .origins
                        .get(usize::from(k.origin))
                        .unwrap_or(&batch.region);
                    (origin != local).then(|| NewKey {
                        mode: PublicationMode::Compact,
                        day: Some(k.day.0),
                        data: k.key.as_bytes().to_vec(),
                        days_since_onset: k.days_since_onset,
                        origin: origin.to_string(),
                        visited: String::new(),
                    })
                })
                .collect(),
            filter: None,
        },
        BatchPayload::Unlinkable(filter) => {
            let origin = batch.origins.first().unwrap_or(&batch.region);
            Import {
                keys: Vec::new(),
                filter: (origin != local)
                    .then(|| (origin.to_string(), filter.bits().to_vec(), filter.items())),
            }
        }
    }
}

/// Pulls every new batch `peer` made for this region, in order, storing
/// each before asking for the next. Stops at the first failure, which is
/// returned in the report; what was imported before it stays.
pub async fn pull(state: &AppState, peer: &Peer) -> PullReport {
    let mut report = PullReport {
        peer: peer.region.to_string(),
        ..PullReport::default()
    };
    if let Err(e) = pull_into(state, peer, &mut report).await {
        report.error = Some(e.to_string());
    }
    report
}

async fn pull_into(
    state: &AppState,
    peer: &Peer,
    report: &mut PullReport,
) -> Result<(), PullError> {
    let local = &state.region;
    let prefix = format!("/v1/federation/{local}/batches");
    let mut cursor = state.store.peer_cursor(peer.region.as_str()).await?;
    report.cursor = cursor;
    loop {
        let index = peer
            .client
            .index(&format!("{prefix}?after={cursor}"), &peer.region)
            .await?;
        let before = cursor;
        for entry in index.batches.iter().filter(|e| e.number > before) {
            let (batch, _) = peer
                .client
                .verified_batch(&prefix, entry, &peer.region, &peer.key)
                .await?;
            let import = import_of(&batch, local);
            let offered = import.keys.len();
            let new = state
                .store
                .import_batch(
                    peer.region.as_str(),
                    entry.number,
                    &import,
                    state.clock.now() as i64,
                )
                .await?;
            report.batches += 1;
            report.new_keys += new;
            report.duplicates += offered - new;
            report.filters += usize::from(import.filter.is_some());
            cursor = entry.number;
            report.cursor = cursor;
        }
        if cursor == before {
            return Ok(());
        }
    }
}

/// Why a pull stopped.
#[derive(Debug, thiserror::Error)]
enum PullError {
    #[error(transparent)]
    Fetch(#[from] FetchError),
    #[error("storing the import failed: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Pulls from `peer` every `interval` until `shutdown`, backing off after
/// failures.
pub async fn run(state: AppState, peer: Peer, interval: Duration, shutdown: CancellationToken) {
    let mut failures: u32 = 0;
    loop {
        let report = pull(&state, &peer).await;
        let wait = match &report.error {
            None => {
                failures = 0;
                if report.batches > 0 {
                    tracing::info!(
                        peer = %peer.region,
                        batches = report.batches,
                        new_keys = report.new_keys,
                        duplicates = report.duplicates,
                        filters = report.filters,
                        "imported from peer"
                    );
                }
                metrics::gauge!("greenlight_federation_last_success_seconds", "peer" => peer.region.to_string())
                    .set(state.clock.now() as f64);
                interval
            }
            Some(error) => {
                failures = failures.saturating_add(1);
                let backoff = Duration::from_secs(2u64.saturating_pow(failures.min(20)));
                let wait = backoff.min(interval);
                metrics::counter!("greenlight_federation_errors_total", "peer" => peer.region.to_string())
                    .increment(1);
                tracing::warn!(
                    peer = %peer.region,
                    error = %error,
                    attempt = failures,
                    retry_in_secs = wait.as_secs(),
                    "pull from peer failed; local publishing goes on"
                );
                wait
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}
