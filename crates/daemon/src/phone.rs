//! Everything one phone knows, in one place: its store and key ring, the
//! exposure policy in force, the exposures matched so far (each observed
//! window once), the user's check-ins and own positive test. Every method
//! takes the time as a parameter, so the daemon runs it on the wall clock
//! and the demo and tests on a simulated one.

use crate::keyring::KeyRing;
use crate::radio_loop::PhoneState;
use crate::store::{ReadOutcome, RecordKind, SightingStore, StoreError};
use greenlight_protocol::ed25519_dalek::VerifyingKey;
use greenlight_protocol::time::RETENTION_DAYS;
use greenlight_protocol::{
    evaluate, group_into_windows, DailyKey, DayNumber, Exposure, ExposurePolicy, KeyBatch,
    MatchIndex, MatchOptions, Metadata, PositiveTest, RegionId, Sighting, Status, StatusInput,
    Timestamp, WindowConfig,
};
use rand::rngs::OsRng;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::path::{Path, PathBuf};

/// Setting holding the policy in force (JSON, stored once its signature
/// was verified).
const POLICY_SETTING: &str = "policy";

/// An exposure with the window it came from: the window's EphID and first
/// sighting identify it, so a window matched again (a key published twice,
/// or by two regions) is counted once (SPEC §11.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MatchedWindow {
    /// The EphID heard, hex.
    pub ephid: String,
    /// What the match found.
    pub exposure: Exposure,
    /// The day the phone found the match (told the user): what the daily
    /// aggregate report counts as "notified" (SPEC §19.1).
    #[serde(default)]
    pub matched_on: Option<DayNumber>,
}

impl MatchedWindow {
    fn identity(&self) -> (String, Timestamp) {
        (self.ephid.clone(), self.exposure.start)
    }
}

/// Everything stored about the user, as `greenlight export-my-data` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Export {
    /// When the export was made.
    pub exported_at: Timestamp,
    /// The phone's own daily keys, hex, by day: what it broadcast from.
    pub daily_keys: Vec<(DayNumber, String)>,
    /// Every stored sighting: EphID heard, when, and how strongly.
    pub sightings: Vec<ExportedSighting>,
    /// Sighting rows that failed to open.
    pub unreadable_rows: usize,
    /// Matched exposures.
    pub exposures: Vec<MatchedWindow>,
    /// Days the user checked in.
    pub checkins: Vec<DayNumber>,
    /// The user's own positive test.
    pub positive_test: Option<PositiveTest>,
    /// The policy in force.
    pub policy: ExposurePolicy,
    /// Whether that policy came signed from the home server (or is the
    /// embedded default).
    pub policy_signed: bool,
}

/// One sighting as exported.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ExportedSighting {
    /// EphID heard, hex.
    pub ephid: String,
    /// When.
    pub at: Timestamp,
    /// Received signal strength, dBm.
    pub rssi: i8,
}

/// One phone's state, backed by its encrypted store.
#[derive(Debug)]
pub struct Phone {
    store: SightingStore,
    ring: KeyRing,
    dir: PathBuf,
    region: RegionId,
    policy: ExposurePolicy,
    policy_signed: bool,
    matched: Vec<MatchedWindow>,
    seen: HashSet<(String, Timestamp)>,
    checkins: BTreeSet<DayNumber>,
    positive: Option<PositiveTest>,
    /// Records (keys, exposures, check-ins) that failed to open when loaded.
    pub unreadable: usize,
    /// This phone's calibrated transmit power, dBm.
    pub tx_power_dbm: i8,
}

impl Phone {
    /// Opens (creating on first use) the phone's store in `dir`, with
    /// `region` as the home region whose policy applies. Until a signed
    /// policy arrives, the recommended one is used.
    pub fn open(dir: &Path, region: RegionId, today: DayNumber) -> Result<Phone, StoreError> {
        let store = SightingStore::open(dir)?;
        let ring = KeyRing::load(&store, today)?;
        let mut unreadable = ring.unreadable;
        let (policy, policy_signed) = match store.setting(POLICY_SETTING)? {
            // Stored only after its signature was verified.
            Some(json) => match serde_json::from_slice::<ExposurePolicy>(&json) {
                Ok(p) if p.region == region && p.validate().is_ok() => (p, true),
                _ => (ExposurePolicy::recommended(region.clone()), false),
            },
            None => (ExposurePolicy::recommended(region.clone()), false),
        };
        let (rows, bad) = store.records(RecordKind::Exposure)?;
        unreadable += bad;
        let mut matched = Vec::new();
        let mut seen = HashSet::new();
        for r in rows {
            match serde_json::from_slice::<MatchedWindow>(&r.plain) {
                Ok(m) if seen.insert(m.identity()) => matched.push(m),
                Ok(_) => {}
                Err(_) => unreadable += 1,
            }
        }
        let (rows, bad) = store.records(RecordKind::CheckIn)?;
        unreadable += bad;
        let checkins = rows.into_iter().map(|r| r.day).collect();
        let (rows, bad) = store.records(RecordKind::PositiveTest)?;
        unreadable += bad;
        let positive = rows
            .into_iter()
            .map(|r| PositiveTest { test_day: r.day })
            .next_back();
        Ok(Phone {
            store,
            ring,
            dir: dir.to_owned(),
            region,
            policy,
            policy_signed,
            matched,
            seen,
            checkins,
            positive,
            unreadable,
            tx_power_dbm: crate::radio_loop::DutyCycle::default().tx_power_dbm,
        })
    }

    /// The home region.
    pub fn region(&self) -> &RegionId {
        &self.region
    }

    /// The policy in force.
    pub fn policy(&self) -> &ExposurePolicy {
        &self.policy
    }

    /// Whether the policy in force came signed from the home server.
    pub fn policy_signed(&self) -> bool {
        self.policy_signed
    }

    /// The colour for `today`, with its reason.
    pub fn status(&self, today: DayNumber) -> Status {
        let exposures: Vec<Exposure> = self.matched.iter().map(|m| m.exposure.clone()).collect();
        let checkins: Vec<DayNumber> = self.checkins.iter().copied().collect();
        evaluate(
            &self.policy,
            &StatusInput {
                today,
                positive_test: self.positive,
                exposures: &exposures,
                checkins: &checkins,
            },
        )
    }

    /// Exposures matched so far, each window once.
    pub fn exposures(&self) -> &[MatchedWindow] {
        &self.matched
    }

    /// Records today's check-in; `false` if the user already checked in today.
    pub fn check_in(&mut self, today: DayNumber) -> Result<bool, StoreError> {
        if self.checkins.contains(&today) {
            return Ok(false);
        }
        self.store.put_record(RecordKind::CheckIn, today, &[])?;
        self.checkins.insert(today);
        Ok(true)
    }

    /// Days the user checked in.
    pub fn checkins(&self) -> impl Iterator<Item = DayNumber> + '_ {
        self.checkins.iter().copied()
    }

    /// Records the user's own confirmed positive test.
    pub fn record_positive_test(&mut self, test_day: DayNumber) -> Result<(), StoreError> {
        self.store
            .put_record(RecordKind::PositiveTest, test_day, &[])?;
        self.positive = Some(PositiveTest { test_day });
        Ok(())
    }

    /// The user's own positive test.
    pub fn positive_test(&self) -> Option<PositiveTest> {
        self.positive
    }

    /// Verifies a signed policy from the home server with its pinned key
    /// and puts it in force unless it is older than the one in force.
    /// Returns whether it changed anything.
    pub fn update_policy(&mut self, bytes: &[u8], key: &VerifyingKey) -> crate::Result<bool> {
        let held = self.policy_signed.then_some(&self.policy);
        let policy = ExposurePolicy::verify_update(bytes, &self.region, key, held)?;
        if held == Some(&policy) {
            return Ok(false);
        }
        let json = serde_json::to_vec(&policy).map_err(crate::Error::internal)?;
        self.store.set_setting(POLICY_SETTING, &json)?;
        self.policy = policy;
        self.policy_signed = true;
        Ok(true)
    }

    /// Matches verified batches against the sightings of the retention
    /// period and keeps each new window's exposure; returns how many new
    /// exposures were found. Windows already matched are not counted again.
    pub fn absorb(&mut self, batches: &[KeyBatch], now: Timestamp) -> crate::Result<usize> {
        if batches.is_empty() {
            return Ok(0);
        }
        let today = now.day();
        let read = self
            .store
            .sightings_since(today.offset(-i64::from(RETENTION_DAYS)))?;
        let options = MatchOptions::from(&self.policy);
        let windows = group_into_windows(&read.sightings, &WindowConfig::default());
        let mut new = 0;
        for batch in batches {
            let index = MatchIndex::prepare(batch);
            for (n, exposure) in index.match_windows_indexed(&windows, &options, today) {
                let m = MatchedWindow {
                    ephid: hex::encode(windows[n].ephid.0),
                    exposure,
                    matched_on: Some(today),
                };
                if self.seen.contains(&m.identity()) {
                    continue;
                }
                let body = serde_json::to_vec(&m).map_err(crate::Error::internal)?;
                self.store
                    .put_record(RecordKind::Exposure, m.exposure.day(), &body)?;
                self.seen.insert(m.identity());
                self.matched.push(m);
                new += 1;
            }
        }
        Ok(new)
    }

    /// The phone's own keys for the chosen days, for an upload the user
    /// consented to.
    pub fn keys_for_upload(&self, days: &[DayNumber]) -> Vec<(DayNumber, DailyKey)> {
        self.ring.keys_for_upload(days)
    }

    /// Days the phone holds a key for.
    pub fn key_days(&self) -> Vec<DayNumber> {
        self.ring.days()
    }

    /// Deletes what is older than the retention period.
    pub fn expire(&mut self, today: DayNumber) -> Result<usize, StoreError> {
        let cutoff = today.offset(-i64::from(RETENTION_DAYS));
        let gone = self.store.expire(today)?;
        self.ring.expire(today);
        self.matched.retain(|m| m.exposure.day() >= cutoff);
        self.seen = self.matched.iter().map(MatchedWindow::identity).collect();
        self.checkins.retain(|d| *d >= cutoff);
        if self.positive.is_some_and(|p| p.test_day < cutoff) {
            self.positive = None;
        }
        Ok(gone)
    }

    /// A public setting of the store (e.g. a server cursor).
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.setting(name)
    }

    /// Sets a public setting of the store.
    pub fn set_setting(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store.set_setting(name, value)
    }

    /// Caps the store at about `bytes` (see [`SightingStore::limit_size`]).
    pub fn limit_store(&mut self, bytes: u64) -> Result<u64, StoreError> {
        self.store.limit_size(bytes)
    }

    /// Stored sightings from `from_day` on.
    pub fn sightings_since(&self, from_day: DayNumber) -> Result<ReadOutcome, StoreError> {
        self.store.sightings_since(from_day)
    }

    /// Number of stored sightings.
    pub fn sighting_count(&self) -> Result<usize, StoreError> {
        self.store.len()
    }

    /// Everything stored about the user.
    pub fn export(&self, now: Timestamp) -> Result<Export, StoreError> {
        let read = self.store.sightings_since(DayNumber(0))?;
        let (keys, _) = self.store.daily_keys_since(DayNumber(0))?;
        Ok(Export {
            exported_at: now,
            daily_keys: keys
                .iter()
                .map(|(d, k)| (*d, hex::encode(k.as_bytes())))
                .collect(),
            sightings: read
                .sightings
                .iter()
                .map(|s| ExportedSighting {
                    ephid: hex::encode(s.ephid.0),
                    at: s.at,
                    rssi: s.rssi.0,
                })
                .collect(),
            unreadable_rows: read.unreadable,
            exposures: self.matched.clone(),
            checkins: self.checkins.iter().copied().collect(),
            positive_test: self.positive,
            policy: self.policy.clone(),
            policy_signed: self.policy_signed,
        })
    }

    /// Deletes everything: sightings, keys, exposures, check-ins, the
    /// positive test, the policy and server cursors, and replaces the store
    /// key. The phone goes on, as new: it draws a fresh key for today.
    pub fn forget(&mut self) -> Result<(), StoreError> {
        self.store.wipe()?;
        self.ring = KeyRing::load(&self.store, DayNumber(0))?;
        self.policy = ExposurePolicy::recommended(self.region.clone());
        self.policy_signed = false;
        self.matched.clear();
        self.seen.clear();
        self.checkins.clear();
        self.positive = None;
        self.unreadable = 0;
        Ok(())
    }

    /// Where the store lives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl PhoneState for Phone {
    fn advertisement_at(
        &mut self,
        now: Timestamp,
        metadata: Metadata,
    ) -> Result<[u8; 31], StoreError> {
        self.ring
            .advertisement_at(&mut self.store, now, metadata, &mut OsRng)
    }

    fn record(&mut self, sightings: &[Sighting]) -> Result<(), StoreError> {
        self.store.record(sightings)
    }
}
