//! The HTTP API: phone routes, authority routes, batch files, operations.
//! Every route is declared with its OpenAPI description, so the document at
//! `/openapi.json` is built from the same list as the router.

use crate::error::{ApiError, ErrorBody};
use crate::store::{BatchRecord, CodeRefusal, NewCode, PendingUpload};
use crate::upload::{self, UploadRequest, UploadResponse};
use crate::AppState;
use axum::extract::{FromRequest, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use greenlight_protocol::{DayNumber, ExposurePolicy, RegionId, Timestamp};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// JSON body extractor whose rejections are [`ApiError`]s.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// Largest job the helper takes from the leader: more than
/// [`crate::config::MAX_JOB_SIZE`] reports of ≈ 920 bytes (SPEC §19.4).
pub const HELPER_BODY_LIMIT: usize = 64 * 1024 * 1024;

/// Every route of the API, with its OpenAPI description.
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(verify_code))
        .routes(routes!(upload_keys))
        .routes(routes!(list_batches))
        .routes(routes!(get_batch))
        .routes(routes!(get_policy))
        .routes(routes!(get_public_key))
        .routes(routes!(issue_code))
        .routes(routes!(revoke_code))
        .routes(routes!(publish_policy))
        .routes(routes!(publish_now))
        .routes(routes!(stats))
        .routes(routes!(list_federation_batches))
        .routes(routes!(get_federation_batch))
        .routes(routes!(pull_peers))
        .routes(routes!(crate::aggregator::aggregator_config))
        .routes(routes!(crate::aggregator::submit_report))
        .routes(routes!(crate::aggregator::read_aggregates))
        .routes(routes!(crate::aggregator::aggregate_now))
        .routes(routes!(crate::aggregator::helper_collect))
        .merge(
            // A job is larger than any phone's body (SPEC §19.4).
            OpenApiRouter::new()
                .routes(routes!(crate::aggregator::helper_job))
                .layer(axum::extract::DefaultBodyLimit::max(HELPER_BODY_LIMIT)),
        )
        .routes(routes!(health))
        .routes(routes!(ready))
        .routes(routes!(metrics_text))
}

fn code_hash(state: &AppState, code: &str) -> [u8; 32] {
    // Keyed with a secret derived from the signing key, so a stolen
    // database does not give away codes by brute force over 10 digits.
    let normalized: String = code
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .collect();
    Sha256::new()
        .chain_update(b"greenlight/code")
        .chain_update(state.code_pepper)
        .chain_update(normalized.to_ascii_lowercase().as_bytes())
        .finalize()
        .into()
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
}

pub(crate) fn require_admin(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("an admin bearer token is required"))?;
    // Compare digests in constant time: neither content nor length leaks.
    let ok: bool = Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(state.admin_token.as_bytes()))
        .into();
    if ok {
        Ok(())
    } else {
        Err(ApiError::unauthorized("wrong admin token"))
    }
}

fn today(state: &AppState) -> DayNumber {
    state.clock.timestamp().day()
}

/// Body of `POST /v1/verify`.
#[derive(Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// The short numeric code or the long link code.
    pub code: String,
}

impl std::fmt::Debug for VerifyRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("VerifyRequest { code: <redacted> }")
    }
}

/// An upload token.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct VerifyResponse {
    /// Bearer token for one upload.
    pub token: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for VerifyResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "VerifyResponse {{ token: <redacted>, expires_at: {} }}",
            self.expires_at
        )
    }
}

/// Exchange a verification code for a short-lived upload token. A code works once.
#[utoipa::path(post, path = "/v1/verify", tag = "phone", request_body = VerifyRequest,
    responses((status = 200, body = VerifyResponse), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 410, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn verify_code(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<VerifyRequest>,
) -> Result<axum::Json<VerifyResponse>, ApiError> {
    if state.verify_limiter.check().is_err() {
        metrics::counter!("greenlight_verify_total", "outcome" => "rate_limited").increment(1);
        return Err(ApiError::rate_limited());
    }
    if req.code.len() > 128 {
        return Err(ApiError::bad_request(
            "malformed_code",
            "codes are at most 128 characters",
        ));
    }
    let mut raw = [0u8; 32];
    rand::rngs::OsRng.fill(&mut raw);
    let token = hex::encode(raw);
    let now = state.clock.now() as i64;
    let expires_at = now + state.config.token_ttl_secs as i64;
    let outcome = state
        .store
        .redeem_code(
            &code_hash(&state, &req.code),
            now,
            &token_hash(&token),
            expires_at,
        )
        .await
        .map_err(ApiError::storage)?;
    let (label, result) = match outcome {
        Ok(_) => ("ok", Ok(axum::Json(VerifyResponse { token, expires_at }))),
        Err(CodeRefusal::Unknown) => (
            "unknown",
            Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "code_unknown",
                "no such verification code",
            )),
        ),
        Err(CodeRefusal::Used) => (
            "used",
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "code_used",
                "this code was already used",
            )),
        ),
        Err(CodeRefusal::Revoked) => (
            "revoked",
            Err(ApiError::new(
                StatusCode::GONE,
                "code_revoked",
                "this code was revoked",
            )),
        ),
        Err(CodeRefusal::Expired) => (
            "expired",
            Err(ApiError::new(
                StatusCode::GONE,
                "code_expired",
                "this code has expired",
            )),
        ),
    };
    metrics::counter!("greenlight_verify_total", "outcome" => label).increment(1);
    result
}

/// Upload daily keys (compact) or epoch hashes (unlinkable) with an upload
/// token. Acknowledged only once durably stored. Chaff gets the same answer.
#[utoipa::path(post, path = "/v1/upload", tag = "phone", request_body = UploadRequest,
    security(("bearer" = [])),
    responses((status = 200, body = UploadResponse), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 410, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn upload_keys(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<UploadRequest>,
) -> Result<axum::Json<UploadResponse>, ApiError> {
    if state.upload_limiter.check().is_err() {
        return Err(ApiError::rate_limited());
    }
    let count = req.keys.len() + req.epoch_hashes.len();
    if req.chaff {
        metrics::counter!("greenlight_upload_chaff_total").increment(1);
        let accepted = state.writer.submit(None, count).await?;
        return Ok(axum::Json(UploadResponse { accepted }));
    }
    let token = bearer(&headers)
        .ok_or_else(|| ApiError::unauthorized("an upload bearer token is required"))?;
    let token_hash = token_hash(token);
    let grant = state
        .store
        .token(&token_hash)
        .await
        .map_err(ApiError::storage)?
        .ok_or_else(|| ApiError::unauthorized("unknown upload token"))?;
    if grant.used {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "token_used",
            "this upload token was already used",
        ));
    }
    if grant.expires_at <= state.clock.now() as i64 {
        return Err(ApiError::new(
            StatusCode::GONE,
            "token_expired",
            "this upload token has expired",
        ));
    }
    let keys = upload::validate(&req, &grant, today(&state), &state.region)?;
    let accepted = state
        .writer
        .submit(Some(PendingUpload { token_hash, keys }), count)
        .await?;
    metrics::counter!("greenlight_uploads_total", "mode" => req.mode.name()).increment(1);
    Ok(axum::Json(UploadResponse { accepted }))
}

/// Most batches one index answer lists; a phone asks again with
/// `after` = the last number it got.
pub const INDEX_PAGE: u64 = 1000;

/// Which batches to list.
#[derive(Debug, Deserialize, IntoParams)]
pub struct BatchQuery {
    /// Only batches numbered above this.
    #[serde(default)]
    pub after: u64,
}

/// The batch index.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchIndex {
    /// The publishing region.
    pub region: String,
    /// Hex ed25519 public key that signs the batches.
    pub public_key: String,
    /// Batches, oldest first.
    pub batches: Vec<BatchRecord>,
}

/// The index of published batches.
#[utoipa::path(get, path = "/v1/batches", tag = "phone", params(BatchQuery), responses((status = 200, body = BatchIndex)))]
async fn list_batches(
    State(state): State<AppState>,
    Query(q): Query<BatchQuery>,
) -> Result<Response, ApiError> {
    let batches = state
        .store
        .batches_after(q.after, INDEX_PAGE)
        .await
        .map_err(ApiError::storage)?;
    let index = BatchIndex {
        region: state.region.to_string(),
        public_key: hex::encode(state.signing_key.verifying_key().to_bytes()),
        batches,
    };
    Ok((
        [(header::CACHE_CONTROL, "public, max-age=60")],
        axum::Json(index),
    )
        .into_response())
}

/// One signed batch file (SPEC §8). Immutable: cacheable forever.
#[utoipa::path(get, path = "/v1/batches/{number}", tag = "phone", params(("number" = u64, Path, description = "batch number")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 304), (status = 404, body = ErrorBody)))]
async fn get_batch(
    State(state): State<AppState>,
    Path(number): Path<u64>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let record = state
        .store
        .batches_after(number.saturating_sub(1), 1)
        .await
        .map_err(ApiError::storage)?
        .into_iter()
        .find(|b| b.number == number)
        .ok_or_else(|| ApiError::not_found("batch"))?;
    let etag = format!("\"{}\"", record.sha256);
    if headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        == Some(etag.as_str())
    {
        return Ok((StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response());
    }
    let bytes = tokio::fs::read(crate::publish::batch_path(&state.batch_dir, number))
        .await
        .map_err(ApiError::storage)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_owned(),
            ),
            (header::ETAG, etag),
        ],
        bytes,
    )
        .into_response())
}

/// The peer named in a federation path, if it is one this server recognizes.
fn recognized_peer(state: &AppState, peer: &str) -> Result<RegionId, ApiError> {
    RegionId::new(peer)
        .ok()
        .filter(|r| state.peers.iter().any(|p| &p.region == r))
        .ok_or_else(|| ApiError::not_found("peer region"))
}

/// Batches made for a recognized peer region: this region's cases who
/// named it as visited (SPEC §18).
#[utoipa::path(get, path = "/v1/federation/{peer}/batches", tag = "federation",
    params(("peer" = String, Path, description = "the peer region"), BatchQuery),
    responses((status = 200, body = BatchIndex), (status = 404, body = ErrorBody)))]
async fn list_federation_batches(
    State(state): State<AppState>,
    Path(peer): Path<String>,
    Query(q): Query<BatchQuery>,
) -> Result<axum::Json<BatchIndex>, ApiError> {
    let peer = recognized_peer(&state, &peer)?;
    let batches = state
        .store
        .federation_batches_after(peer.as_str(), q.after, INDEX_PAGE)
        .await
        .map_err(ApiError::storage)?;
    Ok(axum::Json(BatchIndex {
        region: state.region.to_string(),
        public_key: hex::encode(state.signing_key.verifying_key().to_bytes()),
        batches,
    }))
}

/// One batch made for a peer region. Immutable.
#[utoipa::path(get, path = "/v1/federation/{peer}/batches/{number}", tag = "federation",
    params(("peer" = String, Path, description = "the peer region"), ("number" = u64, Path, description = "batch number")),
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn get_federation_batch(
    State(state): State<AppState>,
    Path((peer, number)): Path<(String, u64)>,
) -> Result<Response, ApiError> {
    let peer = recognized_peer(&state, &peer)?;
    let record = state
        .store
        .federation_batches_after(peer.as_str(), number.saturating_sub(1), 1)
        .await
        .map_err(ApiError::storage)?
        .into_iter()
        .find(|b| b.number == number)
        .ok_or_else(|| ApiError::not_found("batch"))?;
    let path = crate::publish::federation_batch_path(
        &state.publisher.federation_dir,
        peer.as_str(),
        number,
    );
    let bytes = tokio::fs::read(path).await.map_err(ApiError::storage)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".to_owned(),
            ),
            (header::ETAG, format!("\"{}\"", record.sha256)),
        ],
        bytes,
    )
        .into_response())
}

/// Pull from every recognized peer now instead of waiting for the interval.
#[utoipa::path(post, path = "/v1/authority/federation/pull", tag = "authority", security(("bearer" = [])),
    responses((status = 200, body = Vec<crate::federation::PullReport>), (status = 401, body = ErrorBody)))]
async fn pull_peers(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<Vec<crate::federation::PullReport>>, ApiError> {
    require_admin(&state, &headers)?;
    let mut reports = Vec::new();
    for peer in state.peers.iter() {
        reports.push(crate::federation::pull(&state, peer).await);
    }
    Ok(axum::Json(reports))
}

/// The signed exposure policy (SPEC §9).
#[utoipa::path(get, path = "/v1/policy", tag = "phone",
    responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn get_policy(State(state): State<AppState>) -> Result<Response, ApiError> {
    let (serial, bytes) = state
        .store
        .latest_policy()
        .await
        .map_err(ApiError::storage)?
        .ok_or_else(|| ApiError::not_found("policy"))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CACHE_CONTROL, "public, max-age=300".to_owned()),
            (header::ETAG, format!("\"policy-{serial}\"")),
        ],
        bytes,
    )
        .into_response())
}

/// The region and its signing key.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PublicKeyResponse {
    /// Region id.
    pub region: String,
    /// Hex ed25519 public key.
    pub public_key: String,
}

/// The public key phones pin for this region.
#[utoipa::path(get, path = "/v1/public-key", tag = "phone", responses((status = 200, body = PublicKeyResponse)))]
async fn get_public_key(State(state): State<AppState>) -> axum::Json<PublicKeyResponse> {
    axum::Json(PublicKeyResponse {
        region: state.region.to_string(),
        public_key: hex::encode(state.signing_key.verifying_key().to_bytes()),
    })
}

/// Body of `POST /v1/authority/codes`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct IssueCodeRequest {
    /// Kind of test, e.g. `pcr` or `antigen`.
    pub test_type: String,
    /// UTC day number of the test.
    pub test_day: u32,
    /// UTC day number of symptom onset, if any.
    #[serde(default)]
    pub onset_day: Option<u32>,
    /// Lifetime in seconds; the server default if absent.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
}

/// A freshly issued code: shown once, stored only as a hash.
#[derive(Deserialize, Serialize, ToSchema)]
pub struct IssueCodeResponse {
    /// Handle to revoke the code.
    pub id: String,
    /// 10-digit code to read over the phone.
    pub short_code: String,
    /// Long code for links.
    pub long_code: String,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

impl std::fmt::Debug for IssueCodeResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "IssueCodeResponse {{ id: {}, codes: <redacted>, expires_at: {} }}",
            self.id, self.expires_at
        )
    }
}

/// Issue a one-time verification code for a confirmed patient.
#[utoipa::path(post, path = "/v1/authority/codes", tag = "authority", request_body = IssueCodeRequest, security(("bearer" = [])),
    responses((status = 201, body = IssueCodeResponse), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn issue_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<IssueCodeRequest>,
) -> Result<(StatusCode, axum::Json<IssueCodeResponse>), ApiError> {
    require_admin(&state, &headers)?;
    let today = today(&state);
    let oldest = today.offset(-i64::from(state.config.retention_days));
    let unprocessable =
        |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_code_request", m);
    if DayNumber(req.test_day) > today || DayNumber(req.test_day) < oldest {
        return Err(unprocessable(format!(
            "test_day must be within the last {} days",
            state.config.retention_days
        )));
    }
    if req
        .onset_day
        .is_some_and(|o| o > req.test_day || DayNumber(o) < oldest.offset(-14))
    {
        return Err(unprocessable(
            "onset_day must not be after test_day nor a month before it".into(),
        ));
    }
    if req.test_type.is_empty()
        || req.test_type.len() > 32
        || !req
            .test_type
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(unprocessable(
            "test_type must be 1 to 32 letters, digits or '-'".into(),
        ));
    }
    let ttl = req
        .ttl_secs
        .unwrap_or(state.config.code_ttl_secs)
        .clamp(1, 7 * 86_400);
    let mut rng = rand::rngs::OsRng;
    let short_code: String = (0..10)
        .map(|_| char::from(b'0' + rng.gen_range(0..10u8)))
        .collect();
    let long_code = hex::encode(rng.gen::<[u8; 16]>());
    let id = hex::encode(rng.gen::<[u8; 8]>());
    let now = state.clock.now() as i64;
    let code = NewCode {
        id: id.clone(),
        short_hash: code_hash(&state, &short_code),
        long_hash: code_hash(&state, &long_code),
        test_type: req.test_type,
        test_day: req.test_day,
        onset_day: req.onset_day,
        created_at: now,
        expires_at: now + ttl as i64,
    };
    state
        .store
        .insert_code(&code)
        .await
        .map_err(ApiError::storage)?;
    metrics::counter!("greenlight_codes_issued_total").increment(1);
    Ok((
        StatusCode::CREATED,
        axum::Json(IssueCodeResponse {
            id,
            short_code,
            long_code,
            expires_at: code.expires_at,
        }),
    ))
}

/// Revoke an unused verification code.
#[utoipa::path(delete, path = "/v1/authority/codes/{id}", tag = "authority", params(("id" = String, Path, description = "code id")),
    security(("bearer" = [])), responses((status = 204), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn revoke_code(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    require_admin(&state, &headers)?;
    if state
        .store
        .revoke_code(&id)
        .await
        .map_err(ApiError::storage)?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("unused code with this id"))
    }
}

/// The published policy's serial.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PolicyPublished {
    /// Serial now served.
    pub serial: u32,
    /// Size of the signed file.
    pub size: usize,
}

/// Sign and publish an exposure policy (JSON form of SPEC §9.1). Its serial
/// must exceed the current one.
#[utoipa::path(put, path = "/v1/authority/policy", tag = "authority", request_body = Object, security(("bearer" = [])),
    responses((status = 200, body = PolicyPublished), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn publish_policy(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(policy): ApiJson<ExposurePolicy>,
) -> Result<axum::Json<PolicyPublished>, ApiError> {
    require_admin(&state, &headers)?;
    if policy.region != state.region {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "wrong_region",
            format!("this server publishes for {}", state.region),
        ));
    }
    let bytes = policy.sign(&state.signing_key).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_policy",
            e.to_string(),
        )
    })?;
    if let Some((held, _)) = state
        .store
        .latest_policy()
        .await
        .map_err(ApiError::storage)?
    {
        if policy.serial <= held {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "stale_serial",
                format!("serial must exceed {held}"),
            ));
        }
    }
    state
        .store
        .save_policy(policy.serial, &bytes, state.clock.now() as i64)
        .await
        .map_err(ApiError::storage)?;
    tracing::info!(serial = policy.serial, "published policy");
    Ok(axum::Json(PolicyPublished {
        serial: policy.serial,
        size: bytes.len(),
    }))
}

/// Publish pending uploads now instead of waiting for the interval.
#[utoipa::path(post, path = "/v1/authority/publish", tag = "authority", security(("bearer" = [])),
    responses((status = 200, body = Vec<BatchRecord>), (status = 401, body = ErrorBody)))]
async fn publish_now(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<Vec<BatchRecord>>, ApiError> {
    require_admin(&state, &headers)?;
    let _guard = state.publish_lock.lock().await;
    let end = state.clock.timestamp();
    let start = Timestamp(end.0.saturating_sub(state.config.batch_interval_secs));
    let published = state
        .publisher
        .publish(start, end)
        .await
        .map_err(ApiError::storage)?;
    Ok(axum::Json(published))
}

/// Aggregate counters.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Counter name → value: codes issued and redeemed, uploads, batches, keys.
    pub counters: std::collections::BTreeMap<String, i64>,
}

/// Aggregate counts for the health authority: no per-person data.
#[utoipa::path(get, path = "/v1/authority/stats", tag = "authority", security(("bearer" = [])),
    responses((status = 200, body = Stats), (status = 401, body = ErrorBody)))]
async fn stats(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<axum::Json<Stats>, ApiError> {
    require_admin(&state, &headers)?;
    let counters = state
        .store
        .counters()
        .await
        .map_err(ApiError::storage)?
        .into_iter()
        .collect();
    Ok(axum::Json(Stats { counters }))
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, body = String)))]
async fn health() -> &'static str {
    "ok"
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, body = String), (status = 503, body = ErrorBody)))]
async fn ready(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.store.ping().await.map_err(ApiError::storage)?;
    Ok("ready")
}

/// Prometheus metrics; labels carry no personal data.
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, body = String)))]
async fn metrics_text(State(state): State<AppState>) -> String {
    state.metrics.render()
}
