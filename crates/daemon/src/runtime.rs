//! The running daemon: the radio cycle on the wall clock, periodic sync
//! (with chaff uploads and daily clean-up), and the local API, until
//! shutdown. Each part fails on its own: a dead server never stops the
//! radio, a radio error never stops the sync.

use crate::api::{self, Context};
use crate::radio_loop::{DutyCycle, PhoneState, RadioLoop};
use crate::store::StoreError;
use crate::sync::{lock, ServerConfig, SharedPhone, Syncer};
use crate::{Error, Phone, Result};
use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use greenlight_ble::Radio;
use greenlight_protocol::{Metadata, RegionId, Sighting, Timestamp};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Which radio the daemon drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RadioChoice {
    /// The Linux Bluetooth stack, through D-Bus.
    Bluez,
    /// A simulated air with this phone alone: the full cycle (daily keys,
    /// rotation, scans) without Bluetooth hardware; nothing is heard.
    Simulated,
    /// No radio: sync, status and uploads only.
    None,
}

/// The daemon's settings: defaults, then a TOML file, then
/// `GREENLIGHTD_*` variables, then command-line flags.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// Where the encrypted store and its key live.
    pub data_dir: PathBuf,
    /// The local API socket; default `$XDG_RUNTIME_DIR/greenlight/greenlight.sock`.
    pub socket: Option<PathBuf>,
    /// The home region, whose policy applies.
    pub region: String,
    /// Servers to follow, home first: `[[servers]]` with `url`, `region`,
    /// `public_key`.
    pub servers: Vec<ServerConfig>,
    /// Seconds between syncs (±10 % jitter).
    pub sync_interval_secs: u64,
    /// Chance that a sync is followed by a chaff upload.
    pub chaff_probability: f64,
    /// The radio.
    pub radio: RadioChoice,
    /// Scan length, seconds.
    pub scan_window_secs: u64,
    /// Seconds from one scan's start to the next.
    pub scan_every_secs: u64,
    /// Calibrated transmit power of this device, dBm.
    pub tx_power_dbm: i8,
    /// Most the store may take, MiB (a busy phone needs about 3 MiB for
    /// 14 days); past it, new sightings are dropped and counted, nothing
    /// stored is lost.
    pub max_store_mib: u64,
    /// The daily aggregate report (`[aggregator]` table, SPEC §19); none
    /// is sent without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aggregator: Option<crate::report::ReportConfig>,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        let duty = DutyCycle::default();
        DaemonConfig {
            data_dir: PathBuf::from("greenlight-phone"),
            socket: None,
            region: "DEMO".into(),
            servers: Vec::new(),
            sync_interval_secs: 3600,
            chaff_probability: 0.1,
            radio: RadioChoice::Bluez,
            scan_window_secs: duty.scan_window.as_secs(),
            scan_every_secs: duty.scan_every_secs,
            tx_power_dbm: duty.tx_power_dbm,
            max_store_mib: 64,
            aggregator: None,
        }
    }
}

impl DaemonConfig {
    /// Defaults, then `file` if given, then `GREENLIGHTD_*` variables.
    pub fn load(file: Option<&Path>) -> Result<DaemonConfig> {
        let mut f = Figment::from(Serialized::defaults(DaemonConfig::default()));
        if let Some(path) = file {
            f = f.merge(Toml::file_exact(path));
        }
        f.merge(Env::prefixed("GREENLIGHTD_"))
            .extract()
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// Checks every field; the error names the field and what is allowed.
    pub fn validate(&self) -> Result<RegionId> {
        let region =
            RegionId::new(&self.region).map_err(|e| Error::Config(format!("region: {e}")))?;
        if self.servers.is_empty() {
            return Err(Error::Config(
                "servers: at least one server is needed ([[servers]] url, region, public_key)"
                    .into(),
            ));
        }
        if self.servers[0].region != region {
            return Err(Error::Config(format!(
                "servers: the first server is the home server and must publish for region {region}, not {}",
                self.servers[0].region
            )));
        }
        if self.sync_interval_secs < 60 {
            return Err(Error::Config("sync_interval_secs: at least 60".into()));
        }
        if self.max_store_mib < 1 {
            return Err(Error::Config("max_store_mib: at least 1".into()));
        }
        if let Some(a) = &self.aggregator {
            if !(a.leader_url.starts_with("http://") || a.leader_url.starts_with("https://")) {
                return Err(Error::Config(
                    "aggregator.leader_url: an http:// or https:// URL".into(),
                ));
            }
        }
        if !(0.0..=1.0).contains(&self.chaff_probability) {
            return Err(Error::Config("chaff_probability: between 0 and 1".into()));
        }
        if self.scan_window_secs == 0 || self.scan_window_secs > self.scan_every_secs {
            return Err(Error::Config(
                "scan_window_secs: from 1 to scan_every_secs".into(),
            ));
        }
        Ok(region)
    }

    /// The socket path in use.
    pub fn socket_path(&self) -> PathBuf {
        self.socket
            .clone()
            .unwrap_or_else(|| api::default_socket(&self.data_dir))
    }

    /// The radio duty cycle.
    pub fn duty_cycle(&self) -> DutyCycle {
        DutyCycle {
            scan_window: Duration::from_secs(self.scan_window_secs),
            scan_every_secs: self.scan_every_secs,
            tx_power_dbm: self.tx_power_dbm,
        }
    }
}

/// The wall clock.
pub fn wall_clock() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// The shared phone as the radio cycle sees it: each call locks briefly,
/// never across a scan.
#[derive(Debug, Clone)]
pub struct Shared(pub SharedPhone);

impl PhoneState for Shared {
    fn advertisement_at(
        &mut self,
        now: Timestamp,
        metadata: Metadata,
    ) -> Result<[u8; 31], StoreError> {
        lock(&self.0).advertisement_at(now, metadata)
    }

    fn record(&mut self, sightings: &[Sighting]) -> Result<(), StoreError> {
        lock(&self.0).record(sightings)
    }
}

/// Opens the phone of `config`.
pub fn open_phone(config: &DaemonConfig) -> Result<SharedPhone> {
    let region = config.validate()?;
    let mut phone = Phone::open(&config.data_dir, region, wall_clock().day())?;
    phone.tx_power_dbm = config.tx_power_dbm;
    phone.limit_store(config.max_store_mib.saturating_mul(1024 * 1024))?;
    if phone.unreadable > 0 {
        tracing::warn!(
            rows = phone.unreadable,
            "some stored rows could not be opened and are skipped"
        );
    }
    Ok(Arc::new(Mutex::new(phone)))
}

/// Runs the daemon until `shutdown`: radio (if any), sync, local API.
pub async fn run<R: Radio>(
    config: DaemonConfig,
    phone: SharedPhone,
    radio: Option<R>,
    shutdown: CancellationToken,
) -> Result<()> {
    config.validate()?;
    let syncer = Syncer::new(config.servers.clone())?;
    let socket = config.socket_path();
    let listener = api::bind(&socket).await?;
    tracing::info!(socket = %socket.display(), "local API listening");
    let ctx = Context {
        phone: phone.clone(),
        syncer: syncer.clone(),
        clock: Arc::new(wall_clock),
    };
    let api_task = tokio::spawn(api::serve(listener, ctx, shutdown.clone()));
    let sync_task = tokio::spawn(sync_loop(
        syncer,
        phone.clone(),
        config.sync_interval_secs,
        config.chaff_probability,
        shutdown.clone(),
    ));
    let report_task = config.aggregator.clone().map(|a| {
        tokio::spawn(crate::report::report_loop(
            a,
            phone.clone(),
            wall_clock,
            shutdown.clone(),
        ))
    });
    if let Some(radio) = radio {
        radio_loop(radio, config.duty_cycle(), phone.clone(), shutdown.clone()).await;
    } else {
        shutdown.cancelled().await;
    }
    let _ = sync_task.await;
    if let Some(task) = report_task {
        let _ = task.await;
    }
    let _ = api_task.await;
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

async fn radio_loop<R: Radio>(
    radio: R,
    duty: DutyCycle,
    phone: SharedPhone,
    shutdown: CancellationToken,
) {
    let mut cycle = RadioLoop::new(radio, duty);
    let mut state = Shared(phone);
    let mut reported = cycle.stats;
    loop {
        let now = wall_clock();
        let wake = tokio::select! {
            _ = shutdown.cancelled() => break,
            next = cycle.step(&mut state, now) => match next {
                Ok(next) => next,
                Err(e) => {
                    // Without a stored key for today nothing is broadcast
                    // (it could never be uploaded); scanning goes on.
                    tracing::error!(error = %e, "cannot keep today's key; retrying in a minute");
                    Timestamp(now.0 + 60)
                }
            },
        };
        let stats = cycle.stats;
        if stats.radio_errors > reported.radio_errors || stats.store_errors > reported.store_errors
        {
            tracing::warn!(
                radio_errors = stats.radio_errors,
                store_errors = stats.store_errors,
                "radio cycle had errors; it goes on"
            );
        }
        reported = stats;
        // Sleep to the next wake, but at most a minute: after a suspend or
        // a clock change the next step sees the new time and re-plans.
        let secs = wake.0.saturating_sub(wall_clock().0).clamp(1, 60);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = tokio::time::sleep(Duration::from_secs(secs)) => {}
        }
    }
    let _ = cycle.radio().stop_advertising().await;
}

async fn sync_loop(
    syncer: Syncer,
    phone: SharedPhone,
    interval_secs: u64,
    chaff_probability: f64,
    shutdown: CancellationToken,
) {
    let mut wait = Duration::from_secs(5);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        let now = wall_clock();
        if let Err(e) = lock(&phone).expire(now.day()) {
            tracing::warn!(error = %e, "clean-up of old data failed; retried at the next sync");
        }
        let report = syncer.sync(&phone, now).await;
        tracing::info!(
            new_exposures = report.new_exposures(),
            ok = report.ok(),
            "synced"
        );
        let (chaff, jitter) = {
            let mut rng = rand::thread_rng();
            (rng.gen_bool(chaff_probability), rng.gen_range(0.9..1.1))
        };
        if chaff {
            if let Err(e) = syncer.send_chaff(now.day()).await {
                tracing::debug!(error = %e, "chaff upload failed");
            }
        }
        wait = Duration::from_secs_f64(interval_secs as f64 * jitter);
    }
}
