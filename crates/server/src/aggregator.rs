//! The two aggregators of SPEC §19: the leader takes phones' reports,
//! and for each finished day sends them to the helper — the same binary,
//! run by another organization with its own database and keys — in jobs of
//! `job_size` reports to check and add its shares, then asks it to collect
//! the day; it combines both aggregate shares into counts for the health
//! authority. Neither ever decrypts more than its own share of a
//! measurement, and nothing here logs or stores a decrypted share: the
//! leader keeps the phone's sealed report until the day is aggregated,
//! then deletes it and keeps the counts only.

use crate::api::{bearer, require_admin, ApiJson};
use crate::config::{AggregatorRole, AggregatorSettings};
use crate::error::{ApiError, ErrorBody};
use crate::store::{AggregateRecord, CollectRecord, HelperJob, JobRecord, PendingCollect};
use crate::AppState;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use greenlight_analytics::{
    self as analytics, AggregateShare, AggregatorKeyPair, Counts, HelperInput, LeaderPrep,
    OutputShare, Report, VerifyKey, BUCKETS,
};
use greenlight_protocol::{DayNumber, RegionId};
use rayon::prelude::*;
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
    /// Helper: one job or collect is recorded at a time, so the checks
    /// of a record and its write stay together (and SQLite has one writer).
    helper_records: tokio::sync::Mutex<()>,
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
            helper_records: tokio::sync::Mutex::new(()),
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
        .day_closed(report.day.0)
        .await
        .map_err(ApiError::storage)?
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

/// One job: a part of a day's reports the leader sends the helper
/// (SPEC §19.4).
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// The day the reports describe.
    pub day: DayNumber,
    /// The region.
    pub region: RegionId,
    /// The leader's attempt at the day: 16 random bytes, hex.
    pub run: String,
    /// The job's number in its run, from 0.
    pub job: u32,
    /// One entry per report the leader found valid.
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

/// The helper's answer to a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobResponse {
    /// One verdict per report, in the request's order.
    pub verdicts: Vec<HelperVerdict>,
}

/// The leader's request to close a day with the jobs of one run.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectRequest {
    /// The day.
    pub day: DayNumber,
    /// The region.
    pub region: RegionId,
    /// The run whose jobs are to be added, hex.
    pub run: String,
    /// How many jobs the leader sent in the run (numbered 0 to jobs − 1).
    pub jobs: u32,
    /// How many reports the leader counted: valid at both aggregators.
    pub reports: u64,
}

impl CollectRequest {
    /// What tells a retry of this collect from another collect of the day.
    fn key(&self) -> String {
        format!("{}:{}:{}", self.run, self.jobs, self.reports)
    }
}

/// The helper's answer to a collect.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CollectResponse {
    /// Valid reports in the helper's aggregate share.
    pub reports: u64,
    /// The helper's aggregate share, hex (noised once if it has `dp_epsilon`).
    pub aggregate_share: String,
}

/// Digest of report ids in their order: a retried job has the same.
fn ids_digest(ids: &[[u8; 16]]) -> String {
    let mut h = Sha256::new();
    for id in ids {
        h.update(id);
    }
    hex::encode(h.finalize())
}

fn batch_too_small(valid: u64, min: usize, day: DayNumber) -> ApiError {
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

fn run_superseded(day: DayNumber) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "run_superseded",
        format!("a newer run of {day} replaced this one"),
    )
}

fn unknown_run(day: DayNumber) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "unknown_run",
        format!("this run is not the current run of {day}: it has no jobs here"),
    )
}

/// The helper's checks common to jobs and collects: the leader's secret,
/// the region, the run id's form.
fn check_leader_request(
    state: &AppState,
    headers: &HeaderMap,
    region: &RegionId,
    run: &str,
) -> Result<Arc<Aggregator>, ApiError> {
    let a = aggregator_in(state, AggregatorRole::Helper)?;
    let given = bearer(headers)
        .ok_or_else(|| ApiError::unauthorized("the leader's bearer secret is required"))?;
    let ok: bool = Sha256::digest(given.as_bytes())
        .ct_eq(&Sha256::digest(a.token.as_bytes()))
        .into();
    if !ok {
        return Err(ApiError::unauthorized("wrong aggregator secret"));
    }
    if *region != state.region {
        return Err(report_error(analytics::Error::WrongRegion {
            got: region.to_string(),
            expected: state.region.to_string(),
        }));
    }
    if run.len() != 32 || hex::decode(run).is_err() {
        return Err(ApiError::bad_request(
            "malformed_run",
            "a run id is 16 bytes, hex",
        ));
    }
    Ok(a)
}

fn job_answer(text: &str) -> Result<axum::Json<JobResponse>, ApiError> {
    serde_json::from_str(text)
        .map(axum::Json)
        .map_err(ApiError::storage)
}

/// Check the helper's shares of one job of a day's reports and keep their
/// sum (helper; called by the leader with the shared bearer secret). The
/// same job again gets the same answer; a report is in one job of a run.
#[utoipa::path(post, path = "/v1/aggregator/jobs", tag = "aggregator", security(("bearer" = [])),
    request_body(content = Object, description = "a job: the helper inputs of part of a day (SPEC §19.4)"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn helper_job(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<JobRequest>,
) -> Result<axum::Json<JobResponse>, ApiError> {
    let a = check_leader_request(&state, &headers, &req.region, &req.run)?;
    if req.reports.is_empty() {
        return Err(ApiError::bad_request(
            "empty_job",
            "a job carries at least one report",
        ));
    }
    if req.reports.iter().any(|r| r.day != req.day) {
        return Err(ApiError::bad_request(
            "mixed_days",
            "every report of a job must describe the job's day",
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
            "a report appears twice in the job",
        ));
    }
    drop(sorted);
    let (day, run, job) = (req.day, req.run.clone(), req.job);
    let digest = ids_digest(&ids);
    // What is known already: a retried job, a closed day, a replaced run.
    if let Some(known) = state
        .store
        .helper_day(day.0)
        .await
        .map_err(ApiError::storage)?
    {
        if known.collected.is_some() {
            return Err(already_aggregated(day));
        }
        if known.run != run {
            if state
                .store
                .helper_run_dropped(day.0, &run)
                .await
                .map_err(ApiError::storage)?
            {
                return Err(run_superseded(day));
            }
        } else if let Some((earlier, text)) = state
            .store
            .helper_job(day.0, &run, job)
            .await
            .map_err(ApiError::storage)?
        {
            if earlier == digest {
                return job_answer(&text);
            }
            return Err(job_conflict(job));
        }
    }
    let seen = state
        .store
        .counted_before(&ids)
        .await
        .map_err(ApiError::storage)?;
    let (keys, verify_key, region) = (a.keys.clone(), a.verify_key.clone(), state.region.clone());
    let (response, marked, share, valid) = tokio::task::spawn_blocking(move || {
        // Each report is prepared on its own: on every core.
        let outcomes: Vec<(HelperVerdict, Option<OutputShare>)> = req
            .reports
            .into_par_iter()
            .zip(ids.par_iter())
            .map(|(r, id)| {
                let prepared = if seen.contains(id) {
                    Err("replayed_report")
                } else {
                    analytics::helper_prepare(&r, &region, &keys, &verify_key)
                        .map_err(|e| report_error(e).code)
                };
                match prepared {
                    Ok(out) => (
                        HelperVerdict {
                            report_id: r.report_id,
                            prep_message: Some(out.prep_message),
                            error: None,
                        },
                        Some(out.output),
                    ),
                    Err(code) => (
                        HelperVerdict {
                            report_id: r.report_id,
                            prep_message: None,
                            error: Some(code.to_owned()),
                        },
                        None,
                    ),
                }
            })
            .collect();
        let mut verdicts = Vec::with_capacity(outcomes.len());
        let mut marked = Vec::with_capacity(outcomes.len());
        let mut outputs = Vec::new();
        for ((verdict, output), id) in outcomes.into_iter().zip(ids) {
            marked.push((id, output.is_some()));
            outputs.extend(output);
            verdicts.push(verdict);
        }
        let valid = outputs.len() as u64;
        let share = analytics::aggregate(outputs).map_err(report_error)?;
        Ok::<_, ApiError>((JobResponse { verdicts }, marked, share, valid))
    })
    .await
    .map_err(ApiError::storage)??;
    let record = HelperJob {
        day: day.0,
        run,
        job,
        ids_digest: digest,
        reports: valid,
        share: share.to_hex().map_err(report_error)?,
        response: serde_json::to_string(&response).map_err(ApiError::storage)?,
    };
    let _records = a.helper_records.lock().await;
    match state
        .store
        .record_helper_job(&record, &marked, state.clock.now() as i64)
        .await
        .map_err(ApiError::storage)?
    {
        JobRecord::Recorded => {
            tracing::debug!(reports = marked.len(), valid, "helper prepared a job");
            Ok(axum::Json(response))
        }
        JobRecord::Repeated(text) => job_answer(&text),
        JobRecord::Conflict => Err(job_conflict(job)),
        JobRecord::DuplicateReport => Err(ApiError::new(
            StatusCode::CONFLICT,
            "duplicate_report",
            "a report of the job is in another job of the run; nothing was recorded",
        )),
        JobRecord::Superseded => Err(run_superseded(day)),
        JobRecord::Collected => Err(already_aggregated(day)),
    }
}

fn job_conflict(job: u32) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "job_conflict",
        format!("job {job} of this run was sent before with other reports"),
    )
}

/// Close a day: add the partial sums of every job of the run, add noise
/// once, and answer with the helper's aggregate share (helper; called by
/// the leader with the shared bearer secret). A day is collected once; the
/// same collect again gets the same answer.
#[utoipa::path(post, path = "/v1/aggregator/collect", tag = "aggregator", security(("bearer" = [])),
    request_body(content = Object, description = "the day, run, number of jobs and reports counted (SPEC §19.4)"),
    responses((status = 200, body = Object), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn helper_collect(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<CollectRequest>,
) -> Result<axum::Json<CollectResponse>, ApiError> {
    let a = check_leader_request(&state, &headers, &req.region, &req.run)?;
    let day = req.day;
    let collect_answer = |text: &str| {
        serde_json::from_str(text)
            .map(axum::Json)
            .map_err(ApiError::storage)
    };
    let _records = a.helper_records.lock().await;
    match state
        .store
        .helper_day(day.0)
        .await
        .map_err(ApiError::storage)?
    {
        None => return Err(unknown_run(day)),
        Some(d) => match d.collected {
            Some((key, text)) if key == req.key() => return collect_answer(&text),
            Some(_) => return Err(already_aggregated(day)),
            None if d.run != req.run => {
                return Err(
                    if state
                        .store
                        .helper_run_dropped(day.0, &req.run)
                        .await
                        .map_err(ApiError::storage)?
                    {
                        run_superseded(day)
                    } else {
                        unknown_run(day)
                    },
                );
            }
            None => {}
        },
    }
    let jobs = state
        .store
        .helper_run_jobs(day.0, &req.run)
        .await
        .map_err(ApiError::storage)?;
    if jobs.len() as u64 != u64::from(req.jobs)
        || jobs.iter().enumerate().any(|(i, j)| j.0 as usize != i)
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "jobs_mismatch",
            format!(
                "the leader sent {} jobs in this run; the helper has {} others",
                req.jobs,
                jobs.len()
            ),
        ));
    }
    let valid: u64 = jobs.iter().map(|j| j.1).sum();
    if valid != req.reports {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "count_mismatch",
            format!(
                "the leader counted {} valid reports; the helper {valid}",
                req.reports
            ),
        ));
    }
    let min = a.settings.min_batch_reports;
    if valid < min as u64 {
        return Err(batch_too_small(valid, min, day));
    }
    let mut share = analytics::aggregate([]).map_err(report_error)?;
    for (_, _, hex) in &jobs {
        let part = AggregateShare::from_hex(hex).map_err(ApiError::storage)?;
        analytics::merge(&mut share, &part).map_err(report_error)?;
    }
    // SPEC §19.6: noise once per day, on the sum of every job.
    if let Some(e) = a.settings.dp_epsilon {
        analytics::add_noise(&mut share, e, &mut rand::rngs::OsRng).map_err(report_error)?;
    }
    let response = CollectResponse {
        reports: valid,
        aggregate_share: share.to_hex().map_err(report_error)?,
    };
    let text = serde_json::to_string(&response).map_err(ApiError::storage)?;
    match state
        .store
        .record_helper_collect(
            day.0,
            &req.run,
            &req.key(),
            &text,
            valid,
            state.clock.now() as i64,
        )
        .await
        .map_err(ApiError::storage)?
    {
        CollectRecord::Recorded => {
            tracing::info!(reports = valid, jobs = req.jobs, "helper aggregated a day");
            Ok(axum::Json(response))
        }
        CollectRecord::Repeated(text) => collect_answer(&text),
        CollectRecord::Collected => Err(already_aggregated(day)),
        CollectRecord::NotCurrent => Err(unknown_run(day)),
        CollectRecord::AlreadyCounted => Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_counted",
            "a report of the run was counted in another day; a new run leaves it out",
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

/// The answer while a day's aggregation outlasts the request.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct AggregationRunning {
    /// The day number.
    pub day: u32,
    /// `running`: the counts appear at `GET /v1/authority/aggregates` when done.
    pub status: String,
}

/// Aggregate a finished day now (health authority, leader): with the
/// helper, if the day has at least the minimum of valid reports. A day
/// that takes longer than the request may goes on after the answer
/// `202 running`; its counts are then read with `GET /v1/authority/aggregates`.
#[utoipa::path(post, path = "/v1/authority/aggregate", tag = "authority", security(("bearer" = [])),
    request_body = AggregateRequest,
    responses((status = 200, body = AggregateCounts), (status = 202, body = AggregationRunning),
              (status = 401, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody), (status = 502, body = ErrorBody)))]
pub async fn aggregate_now(
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiJson(req): ApiJson<AggregateRequest>,
) -> Result<Response, ApiError> {
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
    // The aggregation is a task of its own: it runs to its end even when
    // the answer goes out before (a request is cut at request_timeout_secs).
    let task_state = state.clone();
    let mut task =
        tokio::spawn(async move { aggregate_day(&task_state, &a, DayNumber(req.day)).await });
    let budget = Duration::from_secs(state.config.request_timeout_secs).mul_f64(0.8);
    match tokio::time::timeout(budget, &mut task).await {
        Ok(done) => {
            let record = done.map_err(ApiError::storage)??;
            Ok(axum::Json(counts_of(&state, &record)).into_response())
        }
        Err(_) => Ok((
            StatusCode::ACCEPTED,
            axum::Json(AggregationRunning {
                day: req.day,
                status: "running".into(),
            }),
        )
            .into_response()),
    }
}

fn helper_error(message: String) -> ApiError {
    tracing::warn!(%message, "the helper failed");
    ApiError::new(StatusCode::BAD_GATEWAY, "helper_failed", message)
}

/// Attempts at one request to the helper: a lost connection, a timeout or
/// a 5xx is tried again; a job or collect answered once is answered again
/// the same way.
const HELPER_ATTEMPTS: u32 = 3;

/// Why a request to the helper failed.
enum HelperFailure {
    /// No answer, or a passing failure (408, 429, 5xx): sending the same
    /// request later may succeed.
    Unanswered(ApiError),
    /// The helper refused the request (4xx): the same request gets the same.
    Refused(ApiError),
}

impl HelperFailure {
    fn error(self) -> ApiError {
        match self {
            HelperFailure::Unanswered(e) | HelperFailure::Refused(e) => e,
        }
    }
}

async fn post_to_helper<T: serde::de::DeserializeOwned>(
    a: &Aggregator,
    path: &str,
    body: &impl Serialize,
) -> Result<T, HelperFailure> {
    let url = format!("{}{path}", a.settings.helper_url.trim_end_matches('/'));
    let bytes =
        serde_json::to_vec(body).map_err(|e| HelperFailure::Refused(ApiError::storage(e)))?;
    let mut attempt = 1;
    loop {
        let sent = a
            .http
            .post(&url)
            .bearer_auth(&a.token)
            .header(axum::http::header::CONTENT_TYPE, "application/json")
            .body(bytes.clone())
            .send()
            .await;
        let failure = match sent {
            Err(e) => {
                HelperFailure::Unanswered(helper_error(format!("cannot reach the helper: {e}")))
            }
            Ok(answer) if answer.status().is_success() => {
                return answer.json().await.map_err(|e| {
                    HelperFailure::Unanswered(helper_error(format!(
                        "the helper's answer is not valid: {e}"
                    )))
                });
            }
            Ok(answer) => {
                let status = answer.status();
                let body: Option<ErrorBodyIn> = answer.json().await.ok();
                let (code, message) =
                    body.map_or((String::new(), String::new()), |b| (b.error, b.message));
                if code == "batch_too_small" {
                    return Err(HelperFailure::Refused(ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "batch_too_small",
                        format!("the helper refused: {message}"),
                    )));
                }
                let e = helper_error(format!("the helper answered {status} {code}: {message}"));
                if status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                    || status == StatusCode::TOO_MANY_REQUESTS
                {
                    HelperFailure::Unanswered(e)
                } else {
                    return Err(HelperFailure::Refused(e));
                }
            }
        };
        if attempt == HELPER_ATTEMPTS {
            return Err(failure);
        }
        tokio::time::sleep(Duration::from_millis(500) * 2u32.pow(attempt)).await;
        attempt += 1;
    }
}

/// One job's reports as the leader prepared them.
struct PreparedJob {
    /// What the helper gets.
    inputs: Vec<HelperInput>,
    /// The leader's state for each, in the same order.
    preps: Vec<LeaderPrep>,
    /// Reports of the page that failed at the leader.
    invalid: u64,
}

/// Opens and prepares one page of stored reports on every core; the
/// reports' JSON is dropped as soon as each is prepared.
fn prepare_page(
    page: Vec<([u8; 16], String)>,
    keys: &AggregatorKeyPair,
    verify_key: &VerifyKey,
) -> PreparedJob {
    let started: Vec<Option<(HelperInput, LeaderPrep)>> = page
        .into_par_iter()
        .map(|(_, body)| {
            let r: Report = serde_json::from_str(&body).ok()?;
            let (prep, share) = LeaderPrep::start(&r, keys, verify_key).ok()?;
            Some((HelperInput::of(&r, &share), prep))
        })
        .collect();
    let mut job = PreparedJob {
        inputs: Vec::with_capacity(started.len()),
        preps: Vec::with_capacity(started.len()),
        invalid: 0,
    };
    for s in started {
        match s {
            Some((input, prep)) => {
                job.inputs.push(input);
                job.preps.push(prep);
            }
            None => job.invalid += 1,
        }
    }
    job
}

/// Reads the day's reports a page of `job_size` at a time and prepares
/// each while the helper works on the job before; the channel holds one
/// prepared job, so the leader keeps at most four jobs in memory (one
/// being prepared, one prepared, one at the helper, one being finished).
async fn prepare_jobs(
    store: crate::store::Store,
    keys: AggregatorKeyPair,
    verify_key: VerifyKey,
    day: DayNumber,
    job_size: usize,
    jobs: tokio::sync::mpsc::Sender<Result<PreparedJob, ApiError>>,
) {
    let mut after: Option<[u8; 16]> = None;
    loop {
        let page = match store.reports_page(day.0, after.as_ref(), job_size).await {
            Ok(page) => page,
            Err(e) => {
                let _ = jobs.send(Err(ApiError::storage(e))).await;
                return;
            }
        };
        let Some((last, _)) = page.last() else {
            return;
        };
        after = Some(*last);
        let whole = page.len() == job_size;
        let (k, v) = (keys.clone(), verify_key.clone());
        let prepared = tokio::task::spawn_blocking(move || prepare_page(page, &k, &v))
            .await
            .map_err(ApiError::storage);
        if jobs.send(prepared).await.is_err() || !whole {
            return;
        }
    }
}

/// Aborts a task when dropped (the leader's preparation, when a job fails).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What one run of jobs gave the leader.
struct RunTotals {
    jobs: u32,
    reports: u64,
    invalid: u64,
    share: AggregateShare,
}

/// Sends the day's reports to the helper in jobs of `run` and finishes
/// each job's reports with the helper's verdicts (SPEC §19.4 steps 2–4).
async fn run_jobs(
    state: &AppState,
    a: &Aggregator,
    day: DayNumber,
    run: &str,
) -> Result<RunTotals, ApiError> {
    let (tx, mut prepared) = tokio::sync::mpsc::channel(1);
    let _preparing = AbortOnDrop(tokio::spawn(prepare_jobs(
        state.store.clone(),
        a.keys.clone(),
        a.verify_key.clone(),
        day,
        a.settings.job_size,
        tx,
    )));
    let mut totals = RunTotals {
        jobs: 0,
        reports: 0,
        invalid: 0,
        share: analytics::aggregate([]).map_err(report_error)?,
    };
    let mut unfinished = None;
    while let Some(job) = prepared.recv().await {
        let PreparedJob {
            inputs,
            preps,
            invalid,
        } = job?;
        totals.invalid += invalid;
        if inputs.is_empty() {
            continue;
        }
        let request = JobRequest {
            day,
            region: state.region.clone(),
            run: run.to_owned(),
            job: totals.jobs,
            reports: inputs,
        };
        let answer: JobResponse = post_to_helper(a, "/v1/aggregator/jobs", &request)
            .await
            .map_err(HelperFailure::error)?;
        totals.jobs += 1;
        if answer.verdicts.len() != preps.len()
            || answer
                .verdicts
                .iter()
                .zip(&request.reports)
                .any(|(v, r)| v.report_id != r.report_id)
        {
            return Err(helper_error("the helper answered for other reports".into()));
        }
        drop(request);
        // Finish this job while the helper works on the next one.
        let finishing = tokio::task::spawn_blocking(move || finish_job(preps, &answer));
        if let Some(earlier) = unfinished.replace(finishing) {
            totals.add(earlier.await.map_err(ApiError::storage)??)?;
        }
    }
    if let Some(last) = unfinished {
        totals.add(last.await.map_err(ApiError::storage)??)?;
    }
    Ok(totals)
}

/// A job finished at the leader: the sum of its valid reports' output
/// shares, how many were valid and how many the helper refused.
struct FinishedJob {
    share: AggregateShare,
    counted: u64,
    refused: u64,
}

impl RunTotals {
    fn add(&mut self, job: FinishedJob) -> Result<(), ApiError> {
        analytics::merge(&mut self.share, &job.share).map_err(report_error)?;
        self.reports += job.counted;
        self.invalid += job.refused;
        Ok(())
    }
}

/// Finishes each report of a job the helper accepted, on every core.
fn finish_job(preps: Vec<LeaderPrep>, answer: &JobResponse) -> Result<FinishedJob, ApiError> {
    let finished: Vec<Option<Result<OutputShare, analytics::Error>>> = preps
        .into_par_iter()
        .zip(answer.verdicts.par_iter())
        .map(|(prep, verdict)| verdict.prep_message.as_deref().map(|m| prep.finish(m)))
        .collect();
    let refused = finished.iter().filter(|f| f.is_none()).count() as u64;
    let outputs = finished
        .into_iter()
        .flatten()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| helper_error("a report the helper accepted fails at the leader".into()))?;
    let counted = outputs.len() as u64;
    let share = analytics::aggregate(outputs).map_err(report_error)?;
    Ok(FinishedJob {
        share,
        counted,
        refused,
    })
}

/// The leader's aggregation of one day (SPEC §19.4): a new run of jobs
/// (or, if a collect is pending from an earlier attempt, that collect
/// again), then the collect, then the counts, recorded once.
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
    let min = a.settings.min_batch_reports;
    let pending = match state
        .store
        .leader_collect(day.0)
        .await
        .map_err(ApiError::storage)?
    {
        Some(pending) => pending,
        None => {
            let stored = state
                .store
                .count_reports(day.0)
                .await
                .map_err(ApiError::storage)?;
            if stored < min as u64 {
                return Err(batch_too_small(stored, min, day));
            }
            let run = hex::encode(rand::random::<[u8; 16]>());
            let totals = run_jobs(state, a, day, &run).await?;
            if totals.reports < min as u64 {
                return Err(batch_too_small(totals.reports, min, day));
            }
            let mut share = totals.share;
            // SPEC §19.6: the leader's noise, once, kept with the collect.
            if let Some(e) = a.settings.dp_epsilon {
                analytics::add_noise(&mut share, e, &mut rand::rngs::OsRng)
                    .map_err(report_error)?;
            }
            let pending = PendingCollect {
                day: day.0,
                run,
                jobs: totals.jobs,
                reports: totals.reports,
                invalid: totals.invalid,
                leader_share: share.to_hex().map_err(report_error)?,
                dp_epsilon: a
                    .settings
                    .dp_epsilon
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
            };
            if !state
                .store
                .save_leader_collect(&pending, state.clock.now() as i64)
                .await
                .map_err(ApiError::storage)?
            {
                return Err(ApiError::storage(
                    "a collect appeared for a day being aggregated",
                ));
            }
            pending
        }
    };
    let request = CollectRequest {
        day,
        region: state.region.clone(),
        run: pending.run.clone(),
        jobs: pending.jobs,
        reports: pending.reports,
    };
    let answer: CollectResponse = match post_to_helper(a, "/v1/aggregator/collect", &request).await
    {
        Ok(answer) => answer,
        Err(HelperFailure::Refused(e)) => {
            // The same collect would be refused again: the day takes
            // reports again and its next aggregation is a new run.
            state
                .store
                .drop_leader_collect(day.0)
                .await
                .map_err(ApiError::storage)?;
            return Err(e);
        }
        Err(HelperFailure::Unanswered(e)) => return Err(e),
    };
    if answer.reports != pending.reports {
        return Err(helper_error("the helper counted other reports".into()));
    }
    let (leader_share, helper_share) = (
        AggregateShare::from_hex(&pending.leader_share).map_err(ApiError::storage)?,
        AggregateShare::from_hex(&answer.aggregate_share)
            .map_err(|e| helper_error(format!("the helper's aggregate share is not valid: {e}")))?,
    );
    let counts = analytics::unshard(&leader_share, &helper_share, pending.reports as usize)
        .map_err(report_error)?;
    let record = AggregateRecord {
        day: day.0,
        reports: pending.reports,
        invalid: pending.invalid,
        buckets: counts.buckets.to_vec(),
        dp_epsilon: pending.dp_epsilon,
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
        jobs = pending.jobs,
        "aggregated a day"
    );
    tokio::spawn(purge_reports(state.store.clone()));
    Ok(record)
}

/// Reports deleted per transaction once their day is aggregated: about a
/// quarter of a second each for SQLite, so uploads and reports for other
/// days are stored in between.
const PURGE_BATCH: usize = 10_000;

/// Deletes the stored reports of aggregated days, a batch at a time. Run
/// after each aggregation and on each tick of the schedule (for a leader
/// stopped in the middle).
pub async fn purge_reports(store: crate::store::Store) {
    loop {
        match store.purge_aggregated_reports(PURGE_BATCH).await {
            Ok(n) if n < PURGE_BATCH as u64 => return,
            Ok(_) => {}
            Err(e) => {
                tracing::error!(error = %e, "deleting aggregated reports failed; the schedule tries again");
                return;
            }
        }
    }
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
        purge_reports(state.store.clone()).await;
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
