//! The server's configuration: defaults that work out of the box, a TOML
//! file, `GREENLIGHT_*` environment variables (`GREENLIGHT_AGGREGATOR_*` for
//! the `[aggregator]` table), then command-line flags.

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use greenlight_protocol::RegionId;
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Everything `greenlight-server serve` can be told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Directory for the SQLite database, signing key, admin token and batch files.
    pub data_dir: PathBuf,
    /// `postgres://…` to use PostgreSQL; empty for SQLite in `data_dir`.
    pub database_url: String,
    /// This server's region id.
    pub region: String,
    /// Seconds between batch publications.
    pub batch_interval_secs: u64,
    /// Batches are padded with random keys up to this many entries.
    pub min_batch_entries: usize,
    /// Lifetime of a verification code, seconds.
    pub code_ttl_secs: u64,
    /// Lifetime of an upload token, seconds.
    pub token_ttl_secs: u64,
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Longest a request may take, seconds.
    pub request_timeout_secs: u64,
    /// Code redemptions allowed per second, server-wide (guessing defence).
    pub verify_per_second: u32,
    /// Uploads allowed per second, server-wide.
    pub upload_per_second: u32,
    /// Days keys and batches are kept.
    pub retention_days: u32,
    /// Regions this server recognizes (`[[peers]]` tables): their cases
    /// reach this region's phones, and keys of local patients who name
    /// them as visited reach theirs.
    pub peers: Vec<PeerConfig>,
    /// Seconds between pulls from each peer.
    pub federation_interval_secs: u64,
    /// A peer request taking longer than this many seconds fails.
    pub federation_timeout_secs: u64,
    /// Aggregate counts (`[aggregator]` table, SPEC §19).
    pub aggregator: AggregatorSettings,
}

/// Which aggregator this server is, if any (SPEC §19.4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AggregatorRole {
    /// No aggregate reports: the routes answer 404.
    #[default]
    Off,
    /// Takes phones' reports, asks the helper, releases counts to the authority.
    Leader,
    /// Checks and adds its shares when the leader asks; run by another organization.
    Helper,
}

/// The `[aggregator]` table.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregatorSettings {
    /// `off` (default), `leader` or `helper`.
    pub role: AggregatorRole,
    /// Leader: the helper's base URL.
    pub helper_url: String,
    /// A day is aggregated only with at least this many valid reports.
    pub min_batch_reports: usize,
    /// Leader: reports older than this many seconds are refused as stale.
    pub max_report_age_secs: u64,
    /// Leader: seconds between checks for a finished day to aggregate.
    pub aggregate_interval_secs: u64,
    /// Leader: reports sent to the helper in one job (SPEC §19.4). A job's
    /// body is about 1 kB a report, well under the helper's 64 MiB limit.
    pub job_size: usize,
    /// If set, this aggregator adds two-sided geometric noise of scale
    /// 1/ε to each bucket of its aggregate share (SPEC §19.6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dp_epsilon: Option<f64>,
}

impl Default for AggregatorSettings {
    fn default() -> Self {
        AggregatorSettings {
            role: AggregatorRole::Off,
            helper_url: String::new(),
            min_batch_reports: 100,
            max_report_age_secs: 2 * 86_400,
            aggregate_interval_secs: 3600,
            // ≈ 4 MB a job; about 0.5 s of one core at the helper.
            job_size: 4000,
            dp_epsilon: None,
        }
    }
}

/// One recognized region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerConfig {
    /// The peer's region id.
    pub region: String,
    /// The peer server's base URL.
    pub url: String,
    /// The peer's ed25519 public key, hex: its batches must verify under it.
    pub public_key: String,
    /// Also send the peer every local case, not only those who name it as
    /// visited (neighbouring regions with daily commuters).
    #[serde(default)]
    pub share_all: bool,
}

impl PeerConfig {
    /// The pinned key, parsed.
    pub fn verifying_key(
        &self,
    ) -> Result<greenlight_protocol::ed25519_dalek::VerifyingKey, String> {
        let bytes: [u8; 32] = hex::decode(&self.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("public_key must be 64 hex digits")?;
        greenlight_protocol::ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|e| format!("public_key is not a valid ed25519 key: {e}"))
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("greenlight-data"),
            database_url: String::new(),
            region: "DEMO".into(),
            batch_interval_secs: 3600,
            min_batch_entries: 1000,
            code_ttl_secs: 3600,
            token_ttl_secs: 900,
            max_body_bytes: 64 * 1024,
            request_timeout_secs: 10,
            verify_per_second: 20,
            upload_per_second: 5000,
            retention_days: 14,
            peers: Vec::new(),
            federation_interval_secs: 300,
            federation_timeout_secs: 30,
            aggregator: AggregatorSettings::default(),
        }
    }
}

/// What follows `GREENLIGHT_` in the name of a variable that sets a key
/// of the `[aggregator]` table.
const AGGREGATOR_PREFIX: &str = "aggregator_";

/// Most reports in one job: about 50 MB of JSON, under the helper's
/// 64 MiB body limit for jobs.
pub const MAX_JOB_SIZE: usize = 50_000;

/// A configuration value outside its allowed range.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {field}: {reason}")]
pub struct ConfigError {
    /// The field, as spelled in the TOML file.
    pub field: &'static str,
    /// What is allowed.
    pub reason: String,
}

impl Config {
    /// Loads defaults, then `file` (if given), then `GREENLIGHT_*` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, Box<figment::Error>> {
        let mut f = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            f = f.merge(Toml::file_exact(path));
        }
        // Only variables that name a field: GREENLIGHT_LOG and friends
        // belong to other parts of the program.
        let fields: Vec<String> = match toml::Value::try_from(Config::default()) {
            Ok(toml::Value::Table(t)) => t.keys().cloned().collect(),
            _ => Vec::new(),
        };
        // `[aggregator]` keys as GREENLIGHT_AGGREGATOR_<KEY>, e.g.
        // GREENLIGHT_AGGREGATOR_ROLE=helper. (Its optional `dp_epsilon` is
        // not serialized when unset, so list the keys of a table that sets it.)
        let aggregator_fields: Vec<String> = match toml::Value::try_from(AggregatorSettings {
            dp_epsilon: Some(1.0),
            ..AggregatorSettings::default()
        }) {
            Ok(toml::Value::Table(t)) => t.keys().cloned().collect(),
            _ => Vec::new(),
        };
        let env = Env::prefixed("GREENLIGHT_").filter_map(move |k| {
            let k = k.as_str();
            if fields.iter().any(|f| k.eq_ignore_ascii_case(f)) {
                return Some(k.to_owned().into());
            }
            let rest = k
                .get(..AGGREGATOR_PREFIX.len())
                .filter(|p| p.eq_ignore_ascii_case(AGGREGATOR_PREFIX))
                .map(|_| &k[AGGREGATOR_PREFIX.len()..])?;
            aggregator_fields
                .iter()
                .any(|f| rest.eq_ignore_ascii_case(f))
                .then(|| format!("aggregator.{}", rest.to_ascii_lowercase()).into())
        });
        f.merge(env).extract().map_err(Box::new)
    }

    /// Checks every field; the error names the bad one.
    pub fn validate(&self) -> Result<RegionId, ConfigError> {
        let bad = |field, reason: &str| {
            Err(ConfigError {
                field,
                reason: reason.into(),
            })
        };
        let region = RegionId::new(&self.region).map_err(|e| ConfigError {
            field: "region",
            reason: e.to_string(),
        })?;
        if self.batch_interval_secs == 0 {
            return bad("batch_interval_secs", "must be at least 1");
        }
        if !(1..=1_000_000).contains(&self.min_batch_entries) {
            return bad("min_batch_entries", "must be in 1..=1000000");
        }
        if self.code_ttl_secs == 0 || self.token_ttl_secs == 0 {
            return bad(
                "code_ttl_secs",
                "code and token lifetimes must be at least 1 s",
            );
        }
        if !(1024..=16 * 1024 * 1024).contains(&self.max_body_bytes) {
            return bad("max_body_bytes", "must be in 1024..=16777216");
        }
        if self.request_timeout_secs == 0 {
            return bad("request_timeout_secs", "must be at least 1");
        }
        if self.verify_per_second == 0 || self.upload_per_second == 0 {
            return bad(
                "verify_per_second",
                "rate limits must be at least 1 per second",
            );
        }
        if !(1..=60).contains(&self.retention_days) {
            return bad("retention_days", "must be in 1..=60");
        }
        if self.federation_interval_secs == 0 {
            return bad("federation_interval_secs", "must be at least 1");
        }
        if !(1..=600).contains(&self.federation_timeout_secs) {
            return bad("federation_timeout_secs", "must be in 1..=600");
        }
        let mut seen = std::collections::HashSet::new();
        for p in &self.peers {
            let peer = RegionId::new(&p.region).map_err(|e| ConfigError {
                field: "peers.region",
                reason: e.to_string(),
            })?;
            if peer == region {
                return bad("peers.region", "a server cannot be its own peer");
            }
            if !seen.insert(peer) {
                return bad("peers.region", "each peer region may appear once");
            }
            if !(p.url.starts_with("http://") || p.url.starts_with("https://")) {
                return bad("peers.url", "must be an http:// or https:// URL");
            }
            p.verifying_key().map_err(|reason| ConfigError {
                field: "peers.public_key",
                reason,
            })?;
        }
        let a = &self.aggregator;
        if a.role == AggregatorRole::Leader
            && !(a.helper_url.starts_with("http://") || a.helper_url.starts_with("https://"))
        {
            return bad(
                "aggregator.helper_url",
                "a leader needs the helper's http:// or https:// URL",
            );
        }
        if !(1..=10_000_000).contains(&a.min_batch_reports) {
            return bad("aggregator.min_batch_reports", "must be in 1..=10000000");
        }
        if !(60..=30 * 86_400).contains(&a.max_report_age_secs) {
            return bad("aggregator.max_report_age_secs", "must be in 60..=2592000");
        }
        if a.aggregate_interval_secs == 0 {
            return bad("aggregator.aggregate_interval_secs", "must be at least 1");
        }
        if !(1..=MAX_JOB_SIZE).contains(&a.job_size) {
            return bad("aggregator.job_size", "must be in 1..=50000");
        }
        if a.dp_epsilon
            .is_some_and(|e| !(e.is_finite() && e > 0.0 && e <= 20.0))
        {
            return bad("aggregator.dp_epsilon", "must be in (0, 20]");
        }
        let url = &self.database_url;
        if !(url.is_empty() || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return bad(
                "database_url",
                "must be empty (SQLite) or a postgres:// URL",
            );
        }
        Ok(region)
    }

    /// The database URL to open.
    pub fn database(&self) -> String {
        if self.database_url.is_empty() {
            format!(
                "sqlite://{}?mode=rwc",
                self.data_dir.join("greenlight.db").display()
            )
        } else {
            self.database_url.clone()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail requires figment::Error.
    fn environment_overrides_fields_and_ignores_other_variables() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GREENLIGHT_REGION", "DE");
            jail.set_env("GREENLIGHT_BATCH_INTERVAL_SECS", "60");
            jail.set_env("GREENLIGHT_LOG", "debug");
            jail.create_file("server.toml", "min_batch_entries = 7")?;
            let c = Config::load(Some(Path::new("server.toml"))).map_err(|e| *e)?;
            assert_eq!(
                (
                    c.region.as_str(),
                    c.batch_interval_secs,
                    c.min_batch_entries
                ),
                ("DE", 60, 7)
            );
            jail.create_file("bad.toml", "regoin = \"DE\"")?;
            assert!(
                Config::load(Some(Path::new("bad.toml"))).is_err(),
                "unknown keys are refused"
            );
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)] // figment::Jail requires figment::Error.
    fn environment_overrides_aggregator_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "server.toml",
                "[aggregator]\nrole = \"leader\"\nhelper_url = \"http://h\"\nmin_batch_reports = 7",
            )?;
            jail.set_env("GREENLIGHT_AGGREGATOR_MIN_BATCH_REPORTS", "250");
            jail.set_env("GREENLIGHT_AGGREGATOR_DP_EPSILON", "0.5");
            jail.set_env("GREENLIGHT_AGGREGATOR_NO_SUCH_KEY", "1");
            let c = Config::load(Some(Path::new("server.toml"))).map_err(|e| *e)?;
            let a = &c.aggregator;
            assert_eq!(
                (
                    a.role,
                    a.helper_url.as_str(),
                    a.min_batch_reports,
                    a.dp_epsilon
                ),
                (AggregatorRole::Leader, "http://h", 250, Some(0.5))
            );
            jail.set_env("GREENLIGHT_AGGREGATOR_ROLE", "helper");
            let c = Config::load(Some(Path::new("server.toml"))).map_err(|e| *e)?;
            assert_eq!(c.aggregator.role, AggregatorRole::Helper);
            jail.set_env("GREENLIGHT_AGGREGATOR_ROLE", "bystander");
            assert!(
                Config::load(Some(Path::new("server.toml"))).is_err(),
                "a role that does not exist is refused"
            );
            Ok(())
        });
    }

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        assert!(Config::default().validate().is_ok());
        let c = Config {
            retention_days: 0,
            ..Config::default()
        };
        assert_eq!(
            c.validate().map_err(|e| e.field).err(),
            Some("retention_days")
        );
        let c = Config {
            region: "not a region".into(),
            ..Config::default()
        };
        assert_eq!(c.validate().map_err(|e| e.field).err(), Some("region"));
        let c = Config {
            aggregator: AggregatorSettings {
                job_size: MAX_JOB_SIZE + 1,
                ..AggregatorSettings::default()
            },
            ..Config::default()
        };
        assert_eq!(
            c.validate().map_err(|e| e.field).err(),
            Some("aggregator.job_size")
        );
        let c = Config {
            database_url: "mysql://x".into(),
            ..Config::default()
        };
        assert_eq!(
            c.validate().map_err(|e| e.field).err(),
            Some("database_url")
        );
    }
}
