//! Phone uploads: validation of the JSON body, and the group-commit writer
//! that makes each upload durable before it is acknowledged.

use crate::error::ApiError;
use crate::store::{NewKey, PendingUpload, Store, TokenGrant, UploadRefusal};
use axum::http::StatusCode;
use greenlight_protocol::{DayNumber, PublicationMode, RegionId};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use tokio::sync::{mpsc, oneshot};

/// Most daily keys one compact upload may carry: 14 days plus today.
pub const MAX_COMPACT_KEYS: usize = 15;
/// Most epoch hashes one unlinkable upload may carry: 15 days × 96 epochs.
pub const MAX_EPOCH_HASHES: usize = 15 * 96;
/// Most uploads committed in one transaction.
const GROUP_COMMIT_MAX: usize = 512;

/// One daily key as uploaded.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadKey {
    /// UTC day number the key was used.
    pub day: u32,
    /// The 32-byte key, hex.
    pub key: String,
}

/// The body of `POST /v1/upload` (SPEC §16).
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UploadRequest {
    /// `compact` or `unlinkable`.
    #[schema(value_type = String, example = "compact")]
    pub mode: PublicationMode,
    /// Compact mode: the daily keys to publish (days may be left out).
    #[serde(default)]
    pub keys: Vec<UploadKey>,
    /// Unlinkable mode: 16-byte epoch hashes, hex (epochs may be left out).
    #[serde(default)]
    pub epoch_hashes: Vec<String>,
    /// Chaff: answered exactly like a real upload, then discarded.
    #[serde(default)]
    pub chaff: bool,
    /// Regions the patient visited during the infectious period: the
    /// peers among them receive these keys (SPEC §18).
    #[serde(default)]
    pub visited: Vec<String>,
}

/// Most regions one upload may name as visited.
pub const MAX_VISITED: usize = 32;

/// The visited regions of an upload, checked, deduplicated and sorted, as
/// stored: comma-separated.
fn visited(req: &UploadRequest, origin: &RegionId) -> Result<String, ApiError> {
    if req.visited.len() > MAX_VISITED {
        return Err(invalid(
            "invalid_region",
            format!("name at most {MAX_VISITED} visited regions"),
        ));
    }
    let mut regions = req
        .visited
        .iter()
        .map(|r| RegionId::new(r).map_err(|e| invalid("invalid_region", format!("visited: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    regions.retain(|r| r != origin);
    regions.sort();
    regions.dedup();
    Ok(regions
        .iter()
        .map(RegionId::as_str)
        .collect::<Vec<_>>()
        .join(","))
}

/// The answer to an upload.
#[derive(Clone, Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct UploadResponse {
    /// Keys or hashes stored.
    pub accepted: usize,
}

fn invalid(code: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
}

fn decode_hex<const N: usize>(field: &str, text: &str) -> Result<Vec<u8>, ApiError> {
    hex::decode(text)
        .ok()
        .filter(|b| b.len() == N)
        .ok_or_else(|| invalid("malformed_key", format!("{field} must be {N} bytes of hex")))
}

/// Checks an upload against the window, limits and duplicates, and turns it
/// into rows. `today` is the server's UTC day.
pub fn validate(
    req: &UploadRequest,
    grant: &TokenGrant,
    today: DayNumber,
    origin: &RegionId,
) -> Result<Vec<NewKey>, ApiError> {
    let onset = grant.onset_day.unwrap_or(grant.test_day);
    let visited = visited(req, origin)?;
    match req.mode {
        PublicationMode::Compact => {
            if !req.epoch_hashes.is_empty() {
                return Err(invalid(
                    "invalid_upload",
                    "compact uploads carry keys, not epoch_hashes",
                ));
            }
            if req.keys.is_empty() || req.keys.len() > MAX_COMPACT_KEYS {
                return Err(invalid(
                    "too_many_keys",
                    format!("send 1 to {MAX_COMPACT_KEYS} keys"),
                ));
            }
            let oldest = today.offset(-14);
            let mut days = HashSet::new();
            req.keys
                .iter()
                .map(|k| {
                    let day = DayNumber(k.day);
                    if day > today {
                        return Err(invalid(
                            "future_key",
                            format!("day {day} is after today ({today})"),
                        ));
                    }
                    if day < oldest {
                        return Err(invalid(
                            "key_out_of_window",
                            format!("day {day} is older than 14 days"),
                        ));
                    }
                    if !days.insert(k.day) {
                        return Err(invalid("duplicate_key", format!("two keys for day {day}")));
                    }
                    let dso = (i64::from(k.day) - i64::from(onset)).clamp(-127, 127) as i8;
                    Ok(NewKey {
                        mode: PublicationMode::Compact,
                        day: Some(k.day),
                        data: decode_hex::<32>("key", &k.key)?,
                        days_since_onset: Some(dso),
                        origin: origin.to_string(),
                        visited: visited.clone(),
                    })
                })
                .collect()
        }
        PublicationMode::Unlinkable => {
            if !req.keys.is_empty() {
                return Err(invalid(
                    "invalid_upload",
                    "unlinkable uploads carry epoch_hashes, not keys",
                ));
            }
            if req.epoch_hashes.is_empty() || req.epoch_hashes.len() > MAX_EPOCH_HASHES {
                return Err(invalid(
                    "too_many_keys",
                    format!("send 1 to {MAX_EPOCH_HASHES} epoch hashes"),
                ));
            }
            let mut seen = HashSet::new();
            req.epoch_hashes
                .iter()
                .map(|h| {
                    let data = decode_hex::<16>("epoch hash", h)?;
                    if !seen.insert(data.clone()) {
                        return Err(invalid("duplicate_key", "an epoch hash appears twice"));
                    }
                    Ok(NewKey {
                        mode: PublicationMode::Unlinkable,
                        day: None,
                        data,
                        days_since_onset: None,
                        origin: origin.to_string(),
                        visited: visited.clone(),
                    })
                })
                .collect()
        }
    }
}

/// An upload waiting for the writer; `None` keys mean chaff.
struct Job {
    upload: Option<PendingUpload>,
    count: usize,
    reply: oneshot::Sender<Result<usize, ApiError>>,
}

/// Handle to the group-commit writer.
#[derive(Clone, Debug)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Job({} keys)", self.count)
    }
}

impl Writer {
    /// Starts the writer task. It stops when every `Writer` is dropped,
    /// after committing what it holds.
    pub fn start(store: Store, clock: crate::Clock) -> (Writer, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Job>(4096);
        let task = tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                let mut jobs = vec![first];
                while jobs.len() < GROUP_COMMIT_MAX {
                    match rx.try_recv() {
                        Ok(j) => jobs.push(j),
                        Err(_) => break,
                    }
                }
                let real: Vec<PendingUpload> =
                    jobs.iter().filter_map(|j| j.upload.clone()).collect();
                metrics::counter!("greenlight_upload_commits_total").increment(1);
                metrics::histogram!("greenlight_upload_group_size").record(jobs.len() as f64);
                let now = clock.timestamp();
                let outcome = store.commit_uploads(&real, now.0 as i64, now.day().0).await;
                let mut outcomes = match outcome {
                    Ok(o) => o.into_iter(),
                    Err(e) => {
                        let err = ApiError::storage(e);
                        for j in jobs {
                            let _ = j.reply.send(Err(err.clone()));
                        }
                        continue;
                    }
                };
                for j in jobs {
                    let answer = if j.upload.is_some() {
                        match outcomes.next() {
                            Some(Ok(n)) => Ok(n),
                            Some(Err(UploadRefusal::TokenSpent)) | None => Err(ApiError::new(
                                StatusCode::CONFLICT,
                                "token_used",
                                "this upload token was already used",
                            )),
                        }
                    } else {
                        // Chaff waits for the same commit as real uploads, so
                        // its timing matches theirs.
                        Ok(j.count)
                    };
                    let _ = j.reply.send(answer);
                }
            }
        });
        (Writer { tx }, task)
    }

    /// Queues an upload (or chaff, `upload = None`) and waits until it is
    /// durably committed.
    pub async fn submit(
        &self,
        upload: Option<PendingUpload>,
        count: usize,
    ) -> Result<usize, ApiError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job {
                upload,
                count,
                reply,
            })
            .await
            .map_err(|_| {
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "shutting_down",
                    "the server is shutting down",
                )
            })?;
        answer.await.map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            )
        })?
    }
}
