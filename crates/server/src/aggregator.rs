//! The two aggregators of SPEC §19: the leader takes phones' reports,
//! and for each finished day asks the helper — the same binary, run by
//! another organization with its own database and keys — to check and add
//! its shares; then it combines both aggregate shares into counts for the
//! health authority. Neither ever decrypts more than its own share of a
//! measurement, and nothing here logs or stores a decrypted share: the
//! leader keeps the phone's sealed report until the day is aggregated,
//! then deletes it and keeps the counts only.

use crate::api::{bearer, require_admin, ApiJson};
use crate::config::{AggregatorRole, AggregatorSettings};
use crate::error::{ApiError, ErrorBody};
use crate::store::{AggregateRecord, HelperBatch};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use greenlight_analytics::{
    self as analytics, AggregateShare, AggregatorKeyPair, Counts, HelperInput, LeaderPrep, Report,
    VerifyKey, BUCKETS,
};
use greenlight_protocol::{DayNumber, RegionId};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use utoipa::{IntoParams, ToSchema};

/// Seconds a report's time may be ahead of the server's clock (skew).
pub const MAX_FUTURE_SECS: u64 = 300;

/// This server's aggregator: its role, keys and the link to the helper.
pub struct Aggregator {
    /// Leader or helper.
    pub role: AggregatorRole,
    /// The `[aggregator]` settings.
    pub settings: AggregatorSettings,
    keys: AggregatorKeyPair,
    verify_key: VerifyKey,
    token: String,
    http: reqwest::Client,
    days: DayLocks,
}

/// One lock per day. Aggregating a day holds its lock exclusively, so the
/// day is aggregated once and no report is stored for it while it is being
/// closed; storing a report holds its day's lock shared. Days do not wait
/// for each other: phones' reports for today are stored while an earlier
/// day of a million reports is aggregated.
#[derive(Debug, Default)]
struct DayLocks(std::sync::Mutex<HashMap<u32, Arc<tokio::sync::RwLock<()>>>>);

impl DayLocks {
    fn of(&self, day: DayNumber) -> Arc<tokio::sync::RwLock<()>> {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // Forget the locks no one holds or waits for.
        map.retain(|_, lock| Arc::strong_count(lock) > 1);
        map.entry(day.0).or_default().clone()
    }
}

impl std::fmt::Debug for Aggregator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Aggregator")
            .field("role", &self.role)
            .field("key_id", &self.keys.key_id())
            .finish_non_exhaustive()
    }
}

impl Aggregator {
    /// Loads or creates the keys in `data_dir`; `None` when the role is off.
    pub fn open(
        settings: &AggregatorSettings,
        data_dir: &std::path::Path,
        timeout: Duration,
    ) -> anyhow::Result<Option<Aggregator>> {
        if settings.role == AggregatorRole::Off {
            return Ok(None);
        }
        let keys = crate::secrets::aggregator_keys(data_dir)?;
        let (verify_key, _) = crate::secrets::verify_key(data_dir)?;
        let (token, _) = crate::secrets::aggregator_token(data_dir)?;
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Some(Aggregator {
            role: settings.role,
            settings: settings.clone(),
            keys,
            verify_key,
            token,
            http,
            days: DayLocks::default(),
        }))
    }
}

fn aggregator_in(state: &AppState, role: AggregatorRole) -> Result<Arc<Aggregator>, ApiError> {
    state
        .aggregator
        .clone()
        .filter(|a| a.role == role)
        .ok_or_else(|| {
            let name = match role {
                AggregatorRole::Leader => "the leader",
                _ => "the helper",
            };
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_aggregator",
                format!("this server is not {name} aggregator"),
            )
        })
}

/// An aggregate-report error as an HTTP answer with a stable code.
pub fn report_error(e: analytics::Error) -> ApiError {
    use analytics::Error as E;
    let code = match &e {
        E::UnknownVersion { .. } => return ApiError::bad_request("unknown_version", e.to_string()),
        E::Malformed { .. } => return ApiError::bad_request("malformed_report", e.to_string()),
        E::WrongKeyId { .. } => "wrong_key_id",
        E::Undecryptable => "undecryptable_share",
        E::InvalidProof => "invalid_proof",
        E::WrongRegion { .. } => "wrong_region",
        E::BadShare | E::Vdaf(_) | E::Hpke(_) => "bad_share",
    };
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, code, e.to_string())
}

/// What phones pin for an aggregator.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AggregatorInfo {
    /// `leader` or `helper`.
    pub role: String,
    /// The region whose reports it aggregates.
    pub region: String,
    /// HPKE key id.
    pub key_id: u8,
    /// HPKE X25519 public key, hex.
    pub public_key: String,
    /// Smallest batch it aggregates.
    pub min_batch_reports: usize,
}

/// This aggregator's HPKE configuration, for phones to pin (SPEC §19.3).
#[utoipa::path(get, path = "/v1/aggregator/config", tag = "aggregator",
    responses((status = 200, body = AggregatorInfo), (status = 404, body = ErrorBody)))]
pub async fn aggregator_config(
    State(state): State<AppState>,
) -> Result<axum::Json<AggregatorInfo>, ApiError> {
    let a = state.aggregator.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_aggregator",
            "this server is not an aggregator",
        )
    })?;
    let config = a.keys.config();
    Ok(axum::Json(AggregatorInfo {
        role: match a.role {
            AggregatorRole::Leader => "leader",
            _ => "helper",
        }
        .into(),
        region: state.region.to_string(),
        key_id: config.key_id,
        public_key: config.public_key,
        min_batch_reports: a.settings.min_batch_reports,
    }))
}

/// The answer to an accepted report.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ReportAccepted {
    /// The report id, hex.
    pub report_id: String,
}

/// Why a report's time or day is refused, if it is (SPEC §19.5).
fn check_time(report: &Report, now: u64, max_age: u64) -> Result<(), ApiError> {
    if report.time > now + MAX_FUTURE_SECS {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "future_report",
            "the report's time is ahead of the server's clock",
        ));
    }
    if report.time + max_age < now {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "stale_report",
            format!("reports older than {max_age} s are refused"),
        ));
    }
    let made = report.timestamp().day();
    if report.day > made || made.0 - report.day.0 > 1 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_day",
            "a report describes the day it was made or the day before",
        ));
    }
    Ok(())
}

/// Submit a phone's daily report (leader). Checked — version, region,
/// time, key id, decryption of the leader's share — and stored sealed
/// until its day is aggregated.
#[utoipa::path(post, path = "/v1/reports", tag = "phone",
    request_body(content = Object, description = "a report (SPEC §19.2)"),
    responses((status = 201, body = ReportAccepted), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn submit_report(
    State(state): State<AppState>,
    ApiJson(report): ApiJson<Report>,
) -> Result<(StatusCode, axum::Json<ReportAccepted>), ApiError> {
    let a = aggregator_in(&state, AggregatorRole::Leader)?;
    let outcome = accept_report(&state, &a, &report).await;
    let label = match &outcome {
        Ok(_) => "accepted",
        Err(e) => e.code,
    };
    metrics::counter!("greenlight_reports_total", "outcome" => label).increment(1);
    outcome?;
    Ok((
        StatusCode::CREATED,
        axum::Json(ReportAccepted {
            report_id: report.report_id,
        }),
    ))
}

async fn accept_report(state: &AppState, a: &Aggregator, report: &Report) -> Result<(), ApiError> {
    if report.version != analytics::REPORT_VERSION {
        return Err(report_error(analytics::Error::UnknownVersion {
            got: report.version,
            supported: analytics::REPORT_VERSION,
        }));
    }
    if report.region != state.region {
        return Err(report_error(analytics::Error::WrongRegion {
            got: report.region.to_string(),
            expected: state.region.to_string(),
        }));
    }
    let id = report.id().map_err(report_error)?;
    check_time(report, state.clock.now(), a.settings.max_report_age_secs)?;
    // Open the leader's share now, so a phone hears at once about a wrong
    // key; the share itself is dropped, only the sealed report is stored.
    let (keys, verify_key, r) = (a.keys.clone(), a.verify_key.clone(), report.clone());
    tokio::task::spawn_blocking(move || LeaderPrep::start(&r, &keys, &verify_key).map(drop))
        .await
        .map_err(ApiError::storage)?
        .map_err(report_error)?;
    let body = serde_json::to_string(report).map_err(ApiError::storage)?;
    let _shared = a.days.of(report.day).read_owned().await;
    if state
        .store
        .aggregate_of(report.day.0)
        .await
        .map_err(ApiError::storage)?
        .is_some()
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "batch_closed",
            "this day was already aggregated",
        ));
    }
    let fresh = state
        .store
        .insert_report(&id, report.day.0, report.time as i64, &body)
        .await
        .map_err(ApiError::storage)?;
    if !fresh {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "duplicate_report",
            "a report with this id was already received",
        ));
    }
    Ok(())
}

/// What the leader sends the helper for one day (SPEC §19.4).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelperRequest {
    /// The day the reports describe.
    pub day: DayNumber,
    /// The region.
    pub region: RegionId,
    /// One entry per report the leader found valid so far.
    pub reports: Vec<HelperInput>,
}

/// The helper's verdict on one report.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelperVerdict {
    /// The report id, hex.
    pub report_id: String,
    /// Prio3 preparation message, hex, if the report is valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prep_message: Option<String>,
    /// The error code, if not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The helper's answer for a day.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HelperResponse {
    /// One verdict per report, in the request's order.
    pub verdicts: Vec<HelperVerdict>,
    /// Valid reports in the helper's aggregate share.
    pub reports: u64,
    /// The helper's aggregate share, hex (noised if it has `dp_epsilon`).
    pub aggregate_share: String,
}

fn ids_digest(reports: &[HelperInput]) -> String {
    let mut ids: Vec<&str> = reports.iter().map(|r| r.report_id.as_str()).collect();
    ids.sort_unstable();
    let mut h = Sha256::new();
    for id in ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

fn batch_too_small(valid: usize, min: usize, day: DayNumber) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "batch_too_small",
        format!("{day} has {valid} valid reports; at least {min} are needed to release counts"),
    )
}

fn already_aggregated(day: DayNumber) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "already_aggregated",
        format!("{day} was already aggregated; its counts stay as released"),
    )
}

/// Check and add the helper's shares of a day's reports (helper; called
/// by the leader with the shared bearer secret). A day is aggregated once
/// and a report counted once; the same request again gets the same answer.
#[utoipa::path(post, path = "/v1/aggregator/aggregate", tag = "aggregator", security(("bearer" = [])),
    request_body(content = Object, description = "the day's helper inputs (SPEC §19.4)"),
    responses((status = 200, body = Object), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn helper_aggregate(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<HelperRequest>,
) -> Result<axum::Json<HelperResponse>, ApiError> {
    let a = aggregator_in(&state, AggregatorRole::Helper)?;
    let given = bearer(&headers)
        .ok_or_else(|| ApiError::unauthorized("the leader's bearer secret is required"))?;
    let ok: bool = Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(a.token.as_bytes()))
        .into();
    if !ok {
        return Err(ApiError::unauthorized("wrong aggregator secret"));
    }
    if req.region != state.region {
        return Err(report_error(analytics::Error::WrongRegion {
            got: req.region.to_string(),
            expected: state.region.to_string(),
        }));
    }
    if req.reports.iter().any(|r| r.day != req.day) {
        return Err(ApiError::bad_request(
            "mixed_days",
            "every report of a batch must describe the batch's day",
        ));
    }
    let mut ids = Vec::with_capacity(req.reports.len());
    for r in &req.reports {
        let id: [u8; 16] = hex::decode(&r.report_id)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                ApiError::bad_request("malformed_report", "report ids are 16 bytes, hex")
            })?;
        ids.push(id);
    }
    let mut sorted = ids.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != ids.len() {
        return Err(ApiError::bad_request(
            "duplicate_report",
            "a report appears twice in the batch",
        ));
    }
    let _guard = a.days.of(req.day).write_owned().await;
    let digest = ids_digest(&req.reports);
    if let Some((earlier, response)) = state
        .store
        .helper_batch(req.day.0)
        .await
        .map_err(ApiError::storage)?
    {
        if earlier == digest {
            return serde_json::from_str(&response)
                .map(axum::Json)
                .map_err(ApiError::storage);
        }
        return Err(already_aggregated(req.day));
    }
    let (keys, verify_key, region, epsilon) = (
        a.keys.clone(),
        a.verify_key.clone(),
        state.region.clone(),
        a.settings.dp_epsilon,
    );
    let min = a.settings.min_batch_reports;
    let day = req.day;
    let response = tokio::task::spawn_blocking(move || -> Result<HelperResponse, ApiError> {
        let mut outputs = Vec::new();
        let verdicts: Vec<HelperVerdict> = req
            .reports
            .iter()
            .map(
                |r| match analytics::helper_prepare(r, &region, &keys, &verify_key) {
                    Ok(out) => {
                        outputs.push(out.output);
                        HelperVerdict {
                            report_id: r.report_id.clone(),
                            prep_message: Some(out.prep_message),
                            error: None,
                        }
                    }
                    Err(e) => HelperVerdict {
                        report_id: r.report_id.clone(),
                        prep_message: None,
                        error: Some(report_error(e).code.to_owned()),
                    },
                },
            )
            .collect();
        if outputs.len() < min {
            return Err(batch_too_small(outputs.len(), min, day));
        }
        let reports = outputs.len() as u64;
        let mut share = analytics::aggregate(outputs).map_err(report_error)?;
        if let Some(e) = epsilon {
            analytics::add_noise(&mut share, e, &mut rand::rngs::OsRng).map_err(report_error)?;
        }
        Ok(HelperResponse {
            verdicts,
            reports,
            aggregate_share: share.to_hex().map_err(report_error)?,
        })
    })
    .await
    .map_err(ApiError::storage)??;
    let text = serde_json::to_string(&response).map_err(ApiError::storage)?;
    match state
        .store
        .record_helper_batch(day.0, &ids, &digest, &text, state.clock.now() as i64)
        .await
        .map_err(ApiError::storage)?
    {
        HelperBatch::Recorded => {
            tracing::info!(reports = response.reports, "helper aggregated a day");
            Ok(axum::Json(response))
        }
        HelperBatch::Repeated(earlier) => serde_json::from_str(&earlier)
            .map(axum::Json)
            .map_err(ApiError::storage),
        HelperBatch::Refused => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_counted",
            "the day, or a report in the batch, was already counted",
        )),
    }
}

/// Counts released for one day and region.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AggregateCounts {
    /// The day, YYYY-MM-DD.
    pub date: String,
    /// The day number.
    pub day: u32,
    /// The region.
    pub region: String,
    /// Valid reports counted.
    pub reports: u64,
    /// Reports refused by a check at aggregation (never added).
    pub invalid: u64,
    /// ε of each aggregator's noise, if any.
    pub dp_epsilon: Option<f64>,
    /// Green phones.
    pub green: u64,
    /// Yellow phones.
    pub yellow: u64,
    /// Red phones.
    pub red: u64,
    /// Phones notified of an exposure that day.
    pub notified: u64,
    /// Phones whose users uploaded keys that day.
    pub uploaded: u64,
    /// The 12 buckets (SPEC §19.1): index 4·colour + 2·notified + uploaded.
    pub buckets: Vec<u64>,
}

fn counts_of(state: &AppState, r: &AggregateRecord) -> AggregateCounts {
    let mut buckets = [0u64; BUCKETS];
    for (b, v) in buckets.iter_mut().zip(&r.buckets) {
        *b = *v;
    }
    let c = Counts { buckets };
    AggregateCounts {
        date: DayNumber(r.day).to_string(),
        day: r.day,
        region: state.region.to_string(),
        reports: r.reports,
        invalid: r.invalid,
        dp_epsilon: r.dp_epsilon.parse().ok(),
        green: c.green(),
        yellow: c.yellow(),
        red: c.red(),
        notified: c.notified(),
        uploaded: c.uploaded(),
        buckets: r.buckets.clone(),
    }
}

/// Which day's counts.
#[derive(Debug, Deserialize, IntoParams)]
pub struct AggregateQuery {
    /// The day number.
    pub day: u32,
    /// The region (default: this server's).
    #[serde(default)]
    pub region: Option<String>,
}

fn own_region(state: &AppState, region: Option<&str>) -> Result<(), ApiError> {
    match region {
        Some(r) if r != state.region.as_str() => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "wrong_region",
            format!("this server aggregates {} only", state.region),
        )),
        _ => Ok(()),
    }
}

/// The counts released for a day and region (health authority).
#[utoipa::path(get, path = "/v1/authority/aggregates", tag = "authority", security(("bearer" = [])),
    params(AggregateQuery),
    responses((status = 200, body = AggregateCounts), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
pub async fn read_aggregates(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(q): Query<AggregateQuery>,
) -> Result<axum::Json<AggregateCounts>, ApiError> {
    require_admin(&state, &headers)?;
    aggregator_in(&state, AggregatorRole::Leader)?;
    own_region(&state, q.region.as_deref())?;
    let record = state
        .store
        .aggregate_of(q.day)
        .await
        .map_err(ApiError::storage)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_aggregated",
                format!("{} has not been aggregated", DayNumber(q.day)),
            )
        })?;
    Ok(axum::Json(counts_of(&state, &record)))
}

/// Body of `POST /v1/authority/aggregate`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AggregateRequest {
    /// The day number to aggregate (a day that is over).
    pub day: u32,
    /// The region (default: this server's).
    #[serde(default)]
    pub region: Option<String>,
}

/// Aggregate a finished day now (health authority, leader): with the
/// helper, if the day has at least the minimum of valid reports.
#[utoipa::path(post, path = "/v1/authority/aggregate", tag = "authority", security(("bearer" = [])),
    request_body = AggregateRequest,
    responses((status = 200, body = AggregateCounts), (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn aggregate_now(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AggregateRequest>,
) -> Result<axum::Json<AggregateCounts>, ApiError> {
    require_admin(&state, &headers)?;
    let a = aggregator_in(&state, AggregatorRole::Leader)?;
    own_region(&state, req.region.as_deref())?;
    if req.day >= state.clock.timestamp().day().0 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "day_not_over",
            "only a day that is over can be aggregated",
        ));
    }
    let record = aggregate_day(&state, &a, DayNumber(req.day)).await?;
    Ok(axum::Json(counts_of(&state, &record)))
}

fn helper_error(message: String) -> ApiError {
    tracing::warn!(%message, "the helper failed");
    ApiError::new(StatusCode::BAD_GATEWAY, "helper_failed", message)
}

/// The leader's aggregation of one day (SPEC §19.4): open and prepare its
/// shares, ask the helper, finish, combine, record once.
pub async fn aggregate_day(
    state: &AppState,
    a: &Aggregator,
    day: DayNumber,
) -> Result<AggregateRecord, ApiError> {
    let _guard = a.days.of(day).write_owned().await;
    if state
        .store
        .aggregate_of(day.0)
        .await
        .map_err(ApiError::storage)?
        .is_some()
    {
        return Err(already_aggregated(day));
    }
    let bodies = state
        .store
        .reports_of_day(day.0)
        .await
        .map_err(ApiError::storage)?;
    let (keys, verify_key) = (a.keys.clone(), a.verify_key.clone());
    let (prepared, mut invalid) = tokio::task::spawn_blocking(move || {
        let mut prepared = Vec::new();
        let mut invalid = 0u64;
        for body in bodies {
            let started = serde_json::from_str::<Report>(&body)
                .map_err(|_| analytics::Error::BadShare)
                .and_then(|r| {
                    let (prep, share) = LeaderPrep::start(&r, &keys, &verify_key)?;
                    Ok((HelperInput::of(&r, &share), prep))
                });
            match started {
                Ok(p) => prepared.push(p),
                Err(_) => invalid += 1,
            }
        }
        (prepared, invalid)
    })
    .await
    .map_err(ApiError::storage)?;
    let min = a.settings.min_batch_reports;
    if prepared.len() < min {
        return Err(batch_too_small(prepared.len(), min, day));
    }
    let (inputs, preps): (Vec<HelperInput>, Vec<LeaderPrep>) = prepared.into_iter().unzip();
    let request = HelperRequest {
        day,
        region: state.region.clone(),
        reports: inputs,
    };
    let url = format!(
        "{}/v1/aggregator/aggregate",
        a.settings.helper_url.trim_end_matches('/')
    );
    let answer = a
        .http
        .post(&url)
        .bearer_auth(&a.token)
        .json(&request)
        .send()
        .await
        .map_err(|e| helper_error(format!("cannot reach the helper: {e}")))?;
    let status = answer.status();
    if !status.is_success() {
        let body: Option<ErrorBodyIn> = answer.json().await.ok();
        let (code, message) = body.map_or((String::new(), String::new()), |b| (b.error, b.message));
        if code == "batch_too_small" {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "batch_too_small",
                format!("the helper refused: {message}"),
            ));
        }
        return Err(helper_error(format!(
            "the helper answered {status} {code}: {message}"
        )));
    }
    let response: HelperResponse = answer
        .json()
        .await
        .map_err(|e| helper_error(format!("the helper's answer is not valid: {e}")))?;
    if response.verdicts.len() != preps.len()
        || response
            .verdicts
            .iter()
            .zip(&request.reports)
            .any(|(v, r)| v.report_id != r.report_id)
    {
        return Err(helper_error("the helper answered for other reports".into()));
    }
    let epsilon = a.settings.dp_epsilon;
    let helper_reports = response.reports;
    let (leader_share, counted, refused) = tokio::task::spawn_blocking(move || {
        let mut outputs = Vec::new();
        let mut refused = 0u64;
        for (prep, verdict) in preps.into_iter().zip(&response.verdicts) {
            match &verdict.prep_message {
                Some(m) => outputs.push(prep.finish(m).map_err(|_| {
                    helper_error("a report the helper accepted fails at the leader".into())
                })?),
                None => refused += 1,
            }
        }
        let counted = outputs.len();
        let mut share = analytics::aggregate(outputs).map_err(report_error)?;
        if let Some(e) = epsilon {
            analytics::add_noise(&mut share, e, &mut rand::rngs::OsRng).map_err(report_error)?;
        }
        let helper_share =
            AggregateShare::from_hex(&response.aggregate_share).map_err(report_error)?;
        let counts = analytics::unshard(&share, &helper_share, counted).map_err(report_error)?;
        Ok::<_, ApiError>((counts, counted, refused))
    })
    .await
    .map_err(ApiError::storage)??;
    if counted as u64 != helper_reports {
        return Err(helper_error("the helper counted other reports".into()));
    }
    invalid += refused;
    let record = AggregateRecord {
        day: day.0,
        reports: counted as u64,
        invalid,
        buckets: leader_share.buckets.to_vec(),
        dp_epsilon: epsilon.map(|e| e.to_string()).unwrap_or_default(),
    };
    if !state
        .store
        .record_aggregate(&record, state.clock.now() as i64)
        .await
        .map_err(ApiError::storage)?
    {
        return Err(already_aggregated(day));
    }
    tracing::info!(
        reports = record.reports,
        invalid = record.invalid,
        "aggregated a day"
    );
    Ok(record)
}

#[derive(Deserialize)]
struct ErrorBodyIn {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
}

/// The leader's schedule: once a day is complete — reports for day D come
/// during D+1, so at D+2 plus the clock-skew allowance — aggregate it if
/// it has enough reports.
pub async fn run_schedule(state: AppState, a: Arc<Aggregator>, shutdown: CancellationToken) {
    let interval = Duration::from_secs(a.settings.aggregate_interval_secs.max(1));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let now = state.clock.now().saturating_sub(MAX_FUTURE_SECS);
        let Some(day) = (now / 86_400).checked_sub(2) else {
            continue;
        };
        let day = DayNumber(day as u32);
        match state.store.aggregate_of(day.0).await {
            Ok(None) => {}
            _ => continue,
        }
        if let Err(e) = aggregate_day(&state, &a, day).await {
            tracing::info!(code = e.code, "scheduled aggregation did not run");
        }
    }
}
