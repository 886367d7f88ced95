//! # greenlight-server
//!
//! The health authority's minimal server. It issues one-time verification
//! codes to confirmed patients, exchanges them for short-lived upload
//! tokens, stores uploaded keys durably (group commit), and publishes them
//! as signed, padded, shuffled, immutable batch files with the signed
//! exposure policy. SQLite is embedded by default; PostgreSQL for scale.
//!
//! Depends on the protocol crate for every format. Must never store or log
//! an IP address, a user agent, a device identifier or anything that links
//! an upload's keys to each other or to a person.

#![warn(missing_docs)]

pub mod aggregator;
pub mod api;
pub mod config;
pub mod error;
pub mod federation;
pub mod publish;
pub mod secrets;
pub mod store;
pub mod upload;

use anyhow::{Context, Result};
use axum::extract::DefaultBodyLimit;
use config::Config;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use greenlight_protocol::ed25519_dalek::SigningKey;
use greenlight_protocol::{ExposurePolicy, RegionId, Timestamp};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use sha2::{Digest, Sha256};
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use store::Store;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

/// Seconds since the Unix epoch, from the system clock.
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Where the server reads the time: the system clock in production, or a
/// clock its owner sets (the demo lives through weeks in a minute). Every
/// time-dependent rule — code and token expiry, the upload window, batch
/// periods — reads this one clock.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl Clock {
    /// The system clock.
    pub fn system() -> Clock {
        Clock(Arc::new(now_secs))
    }

    /// A clock that reads `f` (Unix seconds).
    pub fn from_fn(f: impl Fn() -> u64 + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(f))
    }

    /// Unix seconds now.
    pub fn now(&self) -> u64 {
        (self.0)()
    }

    /// The current timestamp.
    pub fn timestamp(&self) -> Timestamp {
        Timestamp(self.now())
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clock({})", self.now())
    }
}

/// What every request handler can reach.
#[derive(Clone, Debug)]
pub struct AppState {
    /// Effective configuration.
    pub config: Arc<Config>,
    /// This server's region.
    pub region: RegionId,
    /// The database.
    pub store: Store,
    /// The region's signing key.
    pub signing_key: SigningKey,
    /// Secret mixed into code hashes.
    pub code_pepper: [u8; 32],
    /// The health authority's admin token.
    pub admin_token: Arc<str>,
    /// The group-commit writer.
    pub writer: upload::Writer,
    /// Batch builder.
    pub publisher: publish::Publisher,
    /// Where batch files live.
    pub batch_dir: PathBuf,
    /// Serializes publications.
    pub publish_lock: Arc<tokio::sync::Mutex<()>>,
    /// Server-wide limit on code redemptions.
    pub verify_limiter: Arc<DefaultDirectRateLimiter>,
    /// Server-wide limit on uploads.
    pub upload_limiter: Arc<DefaultDirectRateLimiter>,
    /// Prometheus exposition.
    pub metrics: PrometheusHandle,
    /// The one clock every rule reads.
    pub clock: Clock,
    /// Recognized regions.
    pub peers: Arc<Vec<federation::Peer>>,
    /// The aggregator this server is, if any (SPEC §19).
    pub aggregator: Option<Arc<aggregator::Aggregator>>,
}

fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new().build_recorder();
            let handle = recorder.handle();
            // A second server in the same process shares the first recorder.
            let _ = metrics::set_global_recorder(recorder);
            handle
        })
        .clone()
}

fn limiter(per_second: u32) -> Arc<DefaultDirectRateLimiter> {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    Arc::new(RateLimiter::direct(
        Quota::per_second(rate).allow_burst(rate),
    ))
}

/// A server ready to serve: state, router and background tasks' handles.
#[derive(Debug)]
pub struct Server {
    /// Shared state.
    pub state: AppState,
    /// Whether the signing key was created by this start.
    pub new_signing_key: bool,
    /// Whether the admin token was created by this start.
    pub new_admin_token: bool,
    writer_task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Opens the data directory and database, loading or creating the
    /// signing key and admin token, and starts the upload writer.
    pub async fn open(config: Config) -> Result<Server> {
        Server::open_with_clock(config, Clock::system()).await
    }

    /// [`Server::open`] on another clock than the system's.
    pub async fn open_with_clock(config: Config, clock: Clock) -> Result<Server> {
        let region = config.validate()?;
        std::fs::create_dir_all(&config.data_dir).with_context(|| {
            format!("cannot create data directory {}", config.data_dir.display())
        })?;
        let (signing_key, new_signing_key) = secrets::signing_key(&config.data_dir)?;
        let (admin_token, new_admin_token) = secrets::admin_token(&config.data_dir)?;
        let store = Store::open(&config.database())
            .await
            .with_context(|| format!("cannot open database {}", redact_url(&config.database())))?;
        let code_pepper: [u8; 32] = Sha256::new()
            .chain_update(b"greenlight/code-pepper")
            .chain_update(signing_key.to_bytes())
            .finalize()
            .into();
        if store.latest_policy().await?.is_none() {
            let policy = ExposurePolicy::recommended(region.clone());
            store
                .save_policy(
                    policy.serial,
                    &policy.sign(&signing_key)?,
                    clock.now() as i64,
                )
                .await?;
        }
        let batch_dir = config.data_dir.join("batches");
        let publisher = publish::Publisher {
            store: store.clone(),
            key: signing_key.clone(),
            region: region.clone(),
            dir: batch_dir.clone(),
            min_entries: config.min_batch_entries,
            peers: config
                .peers
                .iter()
                .filter_map(|p| Some((RegionId::new(&p.region).ok()?, p.share_all)))
                .collect(),
            federation_dir: config.data_dir.join("federation"),
        };
        let (writer, writer_task) = upload::Writer::start(store.clone(), clock.clone());
        let timeout = Duration::from_secs(config.federation_timeout_secs);
        let peers = config
            .peers
            .iter()
            .map(|p| federation::Peer::new(p, timeout))
            .collect::<Result<Vec<_>>>()?;
        let aggregator =
            aggregator::Aggregator::open(&config.aggregator, &config.data_dir, timeout)?
                .map(Arc::new);
        let state = AppState {
            aggregator,
            verify_limiter: limiter(config.verify_per_second),
            upload_limiter: limiter(config.upload_per_second),
            config: Arc::new(config),
            region,
            store,
            signing_key,
            code_pepper,
            admin_token: admin_token.into(),
            writer,
            publisher,
            batch_dir,
            publish_lock: Arc::new(tokio::sync::Mutex::new(())),
            metrics: metrics_handle(),
            clock,
            peers: Arc::new(peers),
        };
        Ok(Server {
            state,
            new_signing_key,
            new_admin_token,
            writer_task,
        })
    }

    /// The router with every route and middleware.
    pub fn router(&self) -> axum::Router {
        let (router, openapi) = api::router().split_for_parts();
        let openapi = Arc::new(openapi);
        let config = &self.state.config;
        router
            .route(
                "/openapi.json",
                axum::routing::get(move || async move { axum::Json((*openapi).clone()) }),
            )
            .layer(DefaultBodyLimit::max(config.max_body_bytes))
            .layer(TimeoutLayer::with_status_code(
                axum::http::StatusCode::REQUEST_TIMEOUT,
                Duration::from_secs(config.request_timeout_secs),
            ))
            // Privacy: the span holds the method and the route template only —
            // no client address, no user agent, no query, no path parameters.
            .layer(TraceLayer::new_for_http().make_span_with(
                |req: &axum::http::Request<axum::body::Body>| {
                    let route = req
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map_or("unmatched", |p| p.as_str())
                        .to_owned();
                    tracing::info_span!("request", method = %req.method(), route)
                },
            ))
            .with_state(self.state.clone())
    }

    /// Serves on `listener` until `shutdown` is cancelled, publishing batches
    /// every interval; then drains requests and commits pending uploads.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: CancellationToken,
    ) -> Result<()> {
        let app = self.router();
        let scheduler = tokio::spawn(schedule_publications(self.state.clone(), shutdown.clone()));
        let interval = Duration::from_secs(self.state.config.federation_interval_secs);
        let pullers: Vec<_> = self
            .state
            .peers
            .iter()
            .map(|peer| {
                tokio::spawn(federation::run(
                    self.state.clone(),
                    peer.clone(),
                    interval,
                    shutdown.clone(),
                ))
            })
            .collect();
        let aggregation = match &self.state.aggregator {
            Some(a) if a.role == config::AggregatorRole::Leader => Some(tokio::spawn(
                aggregator::run_schedule(self.state.clone(), a.clone(), shutdown.clone()),
            )),
            _ => None,
        };
        let stop = shutdown.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .context("HTTP server failed")?;
        shutdown.cancel();
        let _ = scheduler.await;
        for p in pullers {
            let _ = p.await;
        }
        if let Some(task) = aggregation {
            let _ = task.await;
        }
        let Server {
            state, writer_task, ..
        } = self;
        let store = state.store.clone();
        drop(state);
        // The writer ends once every handle is gone, after its last commit.
        let _ = tokio::time::timeout(Duration::from_secs(10), writer_task).await;
        store.close().await;
        Ok(())
    }
}

/// Hides a password in a database URL before it is printed.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://…@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

async fn schedule_publications(state: AppState, shutdown: CancellationToken) {
    let interval = state.config.batch_interval_secs.max(1);
    loop {
        let now = state.clock.now();
        let next = (now / interval + 1) * interval;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(next - now)) => {}
        }
        let _guard = state.publish_lock.lock().await;
        let (start, end) = (Timestamp(next - interval), Timestamp(next));
        if let Err(e) = state.publisher.publish(start, end).await {
            tracing::error!(error = %e, "batch publication failed; keys stay pending for the next interval");
        }
        if let Err(e) = state
            .publisher
            .expire(end, state.config.retention_days)
            .await
        {
            tracing::error!(error = %e, "retention clean-up failed");
        }
    }
}
