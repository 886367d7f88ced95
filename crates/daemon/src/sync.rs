//! Talking to servers: fetching the signed policy and new batches from one
//! or more servers (each with its pinned public key), and uploading the
//! user's own keys after explicit consent.
//!
//! Nothing a server sends is used before it is verified: the batch's size
//! and SHA-256 against the index, then its signature against the key pinned
//! in the configuration (never the key the server announces). A batch that
//! fails is not used and the cursor stays before it, so it is asked for
//! again at the next sync; a dead or lying server never stops the others,
//! nor the radio.

use crate::phone::Phone;
use crate::{Error, Result};
use greenlight_client::{Client, FetchError, MAX_SMALL_BYTES};
use greenlight_protocol::ed25519_dalek::VerifyingKey;
use greenlight_protocol::time::RETENTION_DAYS;
use greenlight_protocol::{
    DayNumber, EpochHash, EpochIndex, KeyBatch, PublicationMode, RegionId, Timestamp,
};
use rand::{Rng, RngCore};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};

/// Batches absorbed together once this many bytes are held.
const ABSORB_BYTES: usize = 64 * 1024 * 1024;
/// Compact uploads are padded to this many keys (SPEC §16.1): 14 days and today.
pub const COMPACT_UPLOAD_KEYS: usize = 15;
/// Unlinkable uploads are padded to this many epoch hashes.
pub const UNLINKABLE_UPLOAD_HASHES: usize = 15 * 96;

/// One server the phone follows, with the key it trusts for that region.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Base URL, e.g. `https://greenlight.example`.
    pub url: String,
    /// The region it publishes for.
    pub region: RegionId,
    /// Its ed25519 public key, hex (pinned: batches signed otherwise are refused).
    pub public_key: String,
}

impl ServerConfig {
    /// The pinned key, parsed.
    pub fn verifying_key(&self) -> Result<VerifyingKey> {
        let bytes: [u8; 32] = hex::decode(&self.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| {
                Error::Config(format!(
                    "server {}: public_key must be 64 hex digits",
                    self.url
                ))
            })?;
        VerifyingKey::from_bytes(&bytes).map_err(|e| {
            Error::Config(format!(
                "server {}: public_key is not a valid key: {e}",
                self.url
            ))
        })
    }

    fn cursor_setting(&self) -> String {
        format!("cursor:{}:{}", self.region, self.url)
    }
}

/// What one sync did with one server.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerReport {
    /// The server's base URL.
    pub server: String,
    /// Batches downloaded, verified and matched.
    pub batches: usize,
    /// Keys and filter entries in them.
    pub entries: u64,
    /// New exposures found.
    pub new_exposures: usize,
    /// Whether a newer policy was put in force.
    pub policy_updated: bool,
    /// The last batch number matched.
    pub cursor: u64,
    /// What went wrong, if anything (the other servers are still synced).
    pub error: Option<String>,
}

/// What one sync did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// One entry per configured server.
    pub servers: Vec<ServerReport>,
}

impl SyncReport {
    /// New exposures over all servers.
    pub fn new_exposures(&self) -> usize {
        self.servers.iter().map(|s| s.new_exposures).sum()
    }

    /// Whether every server synced cleanly.
    pub fn ok(&self) -> bool {
        self.servers.iter().all(|s| s.error.is_none())
    }
}

/// What the user agreed to upload (SPEC §16.1): the mode, and what to
/// leave out — whole days (either mode) or time ranges (unlinkable mode,
/// which can drop single epochs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consent {
    /// Compact (daily keys) or unlinkable (epoch hashes).
    pub mode: Mode,
    /// Days left out.
    #[serde(default)]
    pub omit_days: Vec<DayNumber>,
    /// Time ranges `[from, to)` left out; every epoch overlapping one is
    /// dropped. Unlinkable mode only.
    #[serde(default)]
    pub omit_ranges: Vec<(Timestamp, Timestamp)>,
    /// Regions visited during the infectious period: the home server
    /// passes the keys on to those it recognizes (SPEC §18).
    #[serde(default)]
    pub visited: Vec<RegionId>,
}

/// Publication mode as the user picks it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Daily keys.
    #[default]
    Compact,
    /// Epoch hashes in a Bloom filter.
    Unlinkable,
}

impl From<Mode> for PublicationMode {
    fn from(m: Mode) -> PublicationMode {
        match m {
            Mode::Compact => PublicationMode::Compact,
            Mode::Unlinkable => PublicationMode::Unlinkable,
        }
    }
}

/// What an upload sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadReceipt {
    /// The server it went to.
    pub server: String,
    /// Days whose keys (or epochs) were sent.
    pub days: Vec<DayNumber>,
    /// Real keys or epoch hashes sent.
    pub real_entries: usize,
    /// Random entries added so every upload has the same size.
    pub padding: usize,
    /// What the server stored (real and padding).
    pub accepted: usize,
}

/// The JSON body of an upload (the server's `UploadRequest`).
#[derive(Serialize)]
struct UploadBody {
    mode: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    keys: Vec<UploadKey>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    epoch_hashes: Vec<String>,
    chaff: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    visited: Vec<String>,
}

#[derive(Serialize)]
struct UploadKey {
    day: u32,
    key: String,
}

/// The phone as shared by the daemon's tasks.
pub type SharedPhone = Arc<Mutex<Phone>>;

/// Locks the phone; a task that panicked while holding it left nothing
/// half-written in the store (every write is one transaction), so the lock
/// is taken back.
pub fn lock(phone: &SharedPhone) -> std::sync::MutexGuard<'_, Phone> {
    phone
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The phone's HTTP client for its servers.
#[derive(Clone, Debug)]
pub struct Syncer {
    clients: Vec<Client>,
    servers: Vec<ServerConfig>,
}

/// A server's failure as the phone reports it.
fn fetch_error(server: &ServerConfig, e: FetchError) -> Error {
    match e {
        FetchError::BadBatch { number, reason } => Error::BadBatch {
            server: server.url.clone(),
            number,
            reason,
        },
        other => Error::server(&server.url, other),
    }
}

impl Syncer {
    /// A client for `servers`; the first is the home server (policy and
    /// uploads). Every key is checked here, so a typo fails at start.
    pub fn new(servers: Vec<ServerConfig>) -> Result<Syncer> {
        if servers.is_empty() {
            return Err(Error::Config("at least one server is needed".into()));
        }
        let mut clients = Vec::new();
        for s in &servers {
            s.verifying_key()?;
            clients.push(Client::new(&s.url).map_err(|e| fetch_error(s, e))?);
        }
        Ok(Syncer { clients, servers })
    }

    /// The configured servers, home first.
    pub fn servers(&self) -> &[ServerConfig] {
        &self.servers
    }

    /// Syncs with every server in turn; one failing does not stop the others.
    pub async fn sync(&self, phone: &SharedPhone, now: Timestamp) -> SyncReport {
        let mut report = SyncReport::default();
        for (i, (server, client)) in self.servers.iter().zip(&self.clients).enumerate() {
            let mut r = ServerReport {
                server: server.url.clone(),
                ..ServerReport::default()
            };
            if let Err(e) = self
                .sync_server(phone, server, client, i == 0, now, &mut r)
                .await
            {
                tracing::warn!(server = %server.url, error = %e, "sync failed");
                r.error = Some(e.to_string());
            }
            report.servers.push(r);
        }
        report
    }

    async fn sync_server(
        &self,
        phone: &SharedPhone,
        server: &ServerConfig,
        client: &Client,
        home: bool,
        now: Timestamp,
        report: &mut ServerReport,
    ) -> Result<()> {
        let key = server.verifying_key()?;
        let fail = |e| fetch_error(server, e);
        // The policy comes from the home server only: its region's rules apply.
        if home {
            let bytes = client
                .get("/v1/policy", MAX_SMALL_BYTES)
                .await
                .map_err(fail)?;
            report.policy_updated = lock(phone).update_policy(&bytes, &key)?;
        }
        let setting = server.cursor_setting();
        let mut cursor = lock(phone)
            .setting(&setting)?
            .and_then(|v| <[u8; 8]>::try_from(v.as_slice()).ok())
            .map_or(0, u64::from_be_bytes);
        loop {
            let before = cursor;
            let index = client
                .index(&format!("/v1/batches?after={cursor}"), &server.region)
                .await
                .map_err(fail)?;
            if index.batches.is_empty() {
                break;
            }
            let mut held: Vec<KeyBatch> = Vec::new();
            let mut held_bytes = 0;
            let mut failure = None;
            for entry in &index.batches {
                if entry.number <= cursor {
                    continue;
                }
                match client
                    .verified_batch("/v1/batches", entry, &server.region, &key)
                    .await
                    .map_err(fail)
                {
                    Ok((batch, size)) => {
                        held_bytes += size;
                        held.push(batch);
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
                if held_bytes >= ABSORB_BYTES {
                    cursor = absorb(phone, &setting, &mut held, now, report)?;
                    held_bytes = 0;
                }
            }
            if !held.is_empty() {
                cursor = absorb(phone, &setting, &mut held, now, report)?;
            }
            report.cursor = cursor;
            if let Some(e) = failure {
                return Err(e);
            }
            if cursor == before {
                // An index that lists nothing new: nothing more to ask for.
                break;
            }
        }
        report.cursor = cursor;
        Ok(())
    }

    /// Uploads the user's keys to the home server with a verification
    /// code from the health authority, as consented; records the positive
    /// test. The upload is padded to a fixed size with random entries.
    pub async fn report_positive(
        &self,
        phone: &SharedPhone,
        code: &str,
        consent: &Consent,
        now: Timestamp,
    ) -> Result<UploadReceipt> {
        let (server, client) = (&self.servers[0], &self.clients[0]);
        let today = now.day();
        let (body, days, real, padding) = {
            let p = lock(phone);
            upload_body(&p, consent, today)?
        };
        let token = self.redeem(server, client, code).await?;
        let answer = client
            .post_json("/v1/upload", Some(&token), &body, MAX_SMALL_BYTES)
            .await
            .map_err(|e| fetch_error(server, e))?;
        let accepted = serde_json::from_slice::<serde_json::Value>(&answer)
            .ok()
            .and_then(|v| v.get("accepted")?.as_u64())
            .ok_or_else(|| Error::server(&server.url, "unreadable upload answer"))?;
        lock(phone).record_positive_test(today)?;
        Ok(UploadReceipt {
            server: server.url.clone(),
            days,
            real_entries: real,
            padding,
            accepted: accepted as usize,
        })
    }

    /// Sends one chaff upload to the home server: the same shape and size
    /// as a real compact upload, flagged so the server discards it, so an
    /// observer of the traffic cannot tell who uploaded for real.
    pub async fn send_chaff(&self, today: DayNumber) -> Result<()> {
        let (server, client) = (&self.servers[0], &self.clients[0]);
        let mut rng = rand::rngs::OsRng;
        let keys = (0..COMPACT_UPLOAD_KEYS as i64)
            .map(|i| UploadKey {
                day: today.offset(-i).0,
                key: random_hex::<32>(&mut rng),
            })
            .collect();
        let body = UploadBody {
            mode: PublicationMode::Compact.name(),
            keys,
            epoch_hashes: Vec::new(),
            chaff: true,
            visited: Vec::new(),
        };
        let token = random_hex::<16>(&mut rng);
        client
            .post_json("/v1/upload", Some(&token), &body, MAX_SMALL_BYTES)
            .await
            .map(drop)
            .map_err(|e| fetch_error(server, e))
    }

    async fn redeem(&self, server: &ServerConfig, client: &Client, code: &str) -> Result<String> {
        let body = client
            .post_json(
                "/v1/verify",
                None,
                &serde_json::json!({ "code": code.trim() }),
                MAX_SMALL_BYTES,
            )
            .await
            .map_err(|e| fetch_error(server, e))?;
        serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("token")?.as_str().map(str::to_owned))
            .ok_or_else(|| Error::server(&server.url, "unreadable verification answer"))
    }
}

/// Matches what is held and moves the cursor past it.
fn absorb(
    phone: &SharedPhone,
    setting: &str,
    held: &mut Vec<KeyBatch>,
    now: Timestamp,
    report: &mut ServerReport,
) -> Result<u64> {
    // Each batch's number was checked against the index when it was verified.
    let last = held.last().map_or(0, |b| b.number.0);
    let mut p = lock(phone);
    report.new_exposures += p.absorb(held, now)?;
    report.batches += held.len();
    report.entries += held.iter().map(|b| b.payload.entries()).sum::<u64>();
    p.set_setting(setting, &last.to_be_bytes())?;
    held.clear();
    Ok(last)
}

/// The upload's JSON body, the days it covers, and its real and padding
/// entry counts.
fn upload_body(
    phone: &Phone,
    consent: &Consent,
    today: DayNumber,
) -> Result<(UploadBody, Vec<DayNumber>, usize, usize)> {
    if consent.mode == Mode::Compact && !consent.omit_ranges.is_empty() {
        return Err(Error::Refused(
            "compact mode can leave out whole days only; use the unlinkable mode to leave out hours"
                .into(),
        ));
    }
    let oldest = today.offset(-i64::from(RETENTION_DAYS));
    let days: Vec<DayNumber> = phone
        .key_days()
        .into_iter()
        .filter(|d| *d >= oldest && *d <= today && !consent.omit_days.contains(d))
        .collect();
    let keys = phone.keys_for_upload(&days);
    if keys.is_empty() {
        return Err(Error::Refused(
            "nothing to upload: no key of the last 14 days is left after the days left out".into(),
        ));
    }
    let mut rng = rand::rngs::OsRng;
    match consent.mode {
        Mode::Compact => {
            let mut upload: Vec<UploadKey> = keys
                .iter()
                .map(|(d, k)| UploadKey {
                    day: d.0,
                    key: hex::encode(k.as_bytes()),
                })
                .collect();
            let real = upload.len();
            // Pad with random keys for the days not sent, so every upload
            // carries the same number of keys.
            let mut d = today;
            while upload.len() < COMPACT_UPLOAD_KEYS && d >= today.offset(-14) {
                if !days.contains(&d) {
                    upload.push(UploadKey {
                        day: d.0,
                        key: random_hex::<32>(&mut rng),
                    });
                }
                d = d.offset(-1);
            }
            let padding = upload.len() - real;
            // Real and padding keys in random order.
            for i in (1..upload.len()).rev() {
                upload.swap(i, rng.gen_range(0..=i));
            }
            let body = UploadBody {
                mode: PublicationMode::Compact.name(),
                keys: upload,
                epoch_hashes: Vec::new(),
                chaff: false,
                visited: visited(consent),
            };
            Ok((body, days, real, padding))
        }
        Mode::Unlinkable => {
            let mut hashes = Vec::new();
            for (day, key) in &keys {
                let generator = key.ephid_generator(*day);
                let epochs = EpochIndex::all().filter(|i| {
                    let start = day.epoch(*i).start().0;
                    let end = start + greenlight_protocol::time::EPOCH_SECONDS;
                    !consent
                        .omit_ranges
                        .iter()
                        .any(|(from, to)| start < to.0 && from.0 < end)
                });
                hashes.extend(
                    EpochHash::for_epochs(&generator, epochs)
                        .into_iter()
                        .map(|h| hex::encode(h.0)),
                );
            }
            if hashes.is_empty() {
                return Err(Error::Refused(
                    "nothing to upload: every epoch was left out".into(),
                ));
            }
            let real = hashes.len();
            while hashes.len() < UNLINKABLE_UPLOAD_HASHES {
                hashes.push(random_hex::<16>(&mut rng));
            }
            for i in (1..hashes.len()).rev() {
                hashes.swap(i, rng.gen_range(0..=i));
            }
            let padding = hashes.len() - real;
            let body = UploadBody {
                mode: PublicationMode::Unlinkable.name(),
                keys: Vec::new(),
                epoch_hashes: hashes,
                chaff: false,
                visited: visited(consent),
            };
            Ok((body, days, real, padding))
        }
    }
}

fn visited(consent: &Consent) -> Vec<String> {
    consent.visited.iter().map(ToString::to_string).collect()
}

fn random_hex<const N: usize>(rng: &mut impl RngCore) -> String {
    let mut b = [0u8; N];
    rng.fill_bytes(&mut b);
    hex::encode(b)
}
