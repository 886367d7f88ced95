//! # greenlight-client
//!
//! Reading what a Greenlight server publishes, as phones and peer regions
//! do: the batch index, batch files verified before use, the signed
//! policy. Every answer is read with a size limit; every batch is checked
//! against the index (size, SHA-256) and then its signature under the key
//! the caller pinned — never a key the server announces.

#![warn(missing_docs)]

use greenlight_protocol::ed25519_dalek::VerifyingKey;
use greenlight_protocol::{KeyBatch, RegionId};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::time::Duration;

/// Largest batch file downloaded (2 M keys × 38 bytes, with room).
pub const MAX_BATCH_BYTES: u64 = 96 * 1024 * 1024;
/// Largest index, policy or error answer read.
pub const MAX_SMALL_BYTES: u64 = 1024 * 1024;

/// What can go wrong reading from a server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No answer: connection refused, timeout, cut off.
    #[error("{0}")]
    Unreachable(String),
    /// The server answered with an error status.
    #[error("{message} ({code}, HTTP {status})")]
    Status {
        /// HTTP status.
        status: u16,
        /// The server's error code, if it sent one.
        code: String,
        /// The server's message, if it sent one.
        message: String,
    },
    /// The answer is larger than allowed.
    #[error("answer over the {0}-byte limit")]
    TooLarge(u64),
    /// The answer is not what the API promises.
    #[error("{0}")]
    Malformed(String),
    /// A batch failed verification; it must not be used.
    #[error("batch {number} refused: {reason}")]
    BadBatch {
        /// The batch number.
        number: u64,
        /// Why.
        reason: String,
    },
}

/// One entry of a batch index.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct IndexEntry {
    /// Sequence number.
    pub number: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// File size in bytes.
    pub size: u64,
}

/// A batch index as served.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct BatchIndex {
    /// The publishing region.
    pub region: String,
    /// Batches, oldest first.
    pub batches: Vec<IndexEntry>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: String,
    message: String,
}

/// A client for one server's base URL.
#[derive(Clone, Debug)]
pub struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    /// A client for `base` (e.g. `https://greenlight.example`), with
    /// connect and overall timeouts.
    pub fn new(base: &str) -> Result<Client, FetchError> {
        Client::with_timeout(base, Duration::from_secs(120))
    }

    /// A client whose every request gives up after `timeout`.
    pub fn with_timeout(base: &str, timeout: Duration) -> Result<Client, FetchError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10).min(timeout))
            .timeout(timeout)
            .user_agent("greenlight")
            .build()
            .map_err(|e| FetchError::Unreachable(e.to_string()))?;
        Ok(Client {
            http,
            base: base.trim_end_matches('/').to_owned(),
        })
    }

    /// The base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// The full URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GETs `path` and reads at most `limit` bytes of a 2xx answer.
    pub async fn get(&self, path: &str, limit: u64) -> Result<Vec<u8>, FetchError> {
        let resp = self
            .http
            .get(self.url(path))
            .send()
            .await
            .map_err(unreachable)?;
        read_ok(resp, limit).await
    }

    /// POSTs `body` as JSON to `path`, with `bearer` as the bearer token if
    /// given, and reads at most `limit` bytes of a 2xx answer.
    pub async fn post_json(
        &self,
        path: &str,
        bearer: Option<&str>,
        body: &impl serde::Serialize,
        limit: u64,
    ) -> Result<Vec<u8>, FetchError> {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = bearer {
            request = request.bearer_auth(token);
        }
        let resp = request.send().await.map_err(unreachable)?;
        read_ok(resp, limit).await
    }

    /// The batch index at `path` (e.g. `/v1/batches?after=7`), which must
    /// name `region`.
    pub async fn index(&self, path: &str, region: &RegionId) -> Result<BatchIndex, FetchError> {
        let body = self.get(path, MAX_SMALL_BYTES).await?;
        let index: BatchIndex = serde_json::from_slice(&body)
            .map_err(|e| FetchError::Malformed(format!("unreadable batch index: {e}")))?;
        if index.region != region.as_str() {
            return Err(FetchError::Malformed(format!(
                "the index is for region {}, expected {region}",
                index.region
            )));
        }
        Ok(index)
    }

    /// Downloads the batch of `entry` from `{prefix}/{number}` and verifies
    /// it: size and SHA-256 as the index says, then the signature under
    /// `key` for `region`, then the number. Returns it with its size.
    pub async fn verified_batch(
        &self,
        prefix: &str,
        entry: &IndexEntry,
        region: &RegionId,
        key: &VerifyingKey,
    ) -> Result<(KeyBatch, usize), FetchError> {
        let bad = |reason: String| FetchError::BadBatch {
            number: entry.number,
            reason,
        };
        if entry.size > MAX_BATCH_BYTES {
            return Err(bad(format!(
                "{} bytes, over the {MAX_BATCH_BYTES}-byte limit",
                entry.size
            )));
        }
        let bytes = self
            .get(&format!("{prefix}/{}", entry.number), MAX_BATCH_BYTES)
            .await?;
        if bytes.len() as u64 != entry.size {
            return Err(bad(format!(
                "truncated or padded: {} bytes, the index says {}",
                bytes.len(),
                entry.size
            )));
        }
        if hex::encode(Sha256::digest(&bytes)) != entry.sha256.to_ascii_lowercase() {
            return Err(bad("content differs from the index's SHA-256".into()));
        }
        let batch = KeyBatch::verify(&bytes, region, key).map_err(|e| bad(e.to_string()))?;
        if batch.number.0 != entry.number {
            return Err(bad(format!(
                "the signed batch says it is number {}",
                batch.number.0
            )));
        }
        Ok((batch, bytes.len()))
    }
}

/// Why a request did not get through, without the URL.
pub fn unreachable(e: reqwest::Error) -> FetchError {
    FetchError::Unreachable(if e.is_timeout() {
        "timed out".into()
    } else if e.is_connect() {
        "cannot connect".into()
    } else {
        e.without_url().to_string()
    })
}

/// Reads a 2xx answer of at most `limit` bytes; an error status becomes
/// [`FetchError::Status`] with the server's own code and message.
pub async fn read_ok(mut resp: reqwest::Response, limit: u64) -> Result<Vec<u8>, FetchError> {
    let status = resp.status();
    if resp.content_length().is_some_and(|n| n > limit) {
        return Err(FetchError::TooLarge(limit));
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| match unreachable(e) {
        FetchError::Unreachable(r) => FetchError::Unreachable(format!("answer cut off: {r}")),
        other => other,
    })? {
        if (body.len() + chunk.len()) as u64 > limit {
            return Err(FetchError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    if status.is_success() {
        return Ok(body);
    }
    Err(match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(e) => FetchError::Status {
            status: status.as_u16(),
            code: e.error,
            message: e.message,
        },
        Err(_) => FetchError::Status {
            status: status.as_u16(),
            code: "http".into(),
            message: format!("HTTP {}", status.as_u16()),
        },
    })
}
