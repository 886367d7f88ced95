//! The phone's own daily keys and what it broadcasts (SPEC §4): a fresh
//! random key for each UTC day, never derived from another, kept (sealed
//! in the store) for the retention period so the user can upload them.

use crate::store::{SightingStore, StoreError};
use greenlight_protocol::time::RETENTION_DAYS;
use greenlight_protocol::{encode_advertisement, DailyKey, DayNumber, Metadata, Timestamp};
use rand::{CryptoRng, RngCore};
use std::collections::btree_map::Entry;
use std::collections::BTreeMap;

/// The phone's daily keys, backed by the store.
#[derive(Debug)]
pub struct KeyRing {
    keys: BTreeMap<DayNumber, DailyKey>,
    /// Keys that failed to open when loaded (reported, never guessed).
    pub unreadable: usize,
}

impl KeyRing {
    /// Loads the keys of the retention period before `today`.
    pub fn load(store: &SightingStore, today: DayNumber) -> Result<KeyRing, StoreError> {
        let (keys, unreadable) =
            store.daily_keys_since(today.offset(-i64::from(RETENTION_DAYS)))?;
        Ok(KeyRing {
            keys: keys.into_iter().collect(),
            unreadable,
        })
    }

    /// The key of `day`, drawn fresh (and stored before use) if the phone
    /// has none yet: a key is never broadcast unless it can be uploaded later.
    pub fn key_for<R: RngCore + CryptoRng>(
        &mut self,
        store: &mut SightingStore,
        day: DayNumber,
        rng: &mut R,
    ) -> Result<&DailyKey, StoreError> {
        if let Entry::Vacant(slot) = self.keys.entry(day) {
            let key = DailyKey::generate(rng);
            store.save_daily_key(day, &key)?;
            slot.insert(key);
        }
        Ok(&self.keys[&day])
    }

    /// The 31-byte advertisement to broadcast at `now`: this epoch's EphID
    /// and sealed metadata under today's key.
    pub fn advertisement_at<R: RngCore + CryptoRng>(
        &mut self,
        store: &mut SightingStore,
        now: Timestamp,
        metadata: Metadata,
        rng: &mut R,
    ) -> Result<[u8; 31], StoreError> {
        let key = self.key_for(store, now.day(), rng)?;
        let beacon = key
            .ephid_generator(now.day())
            .beacon(now.epoch().index(), metadata);
        Ok(encode_advertisement(&beacon))
    }

    /// The keys of the chosen days, for an upload the user consented to;
    /// days the user leaves out, or the phone has no key for, are skipped.
    pub fn keys_for_upload(&self, days: &[DayNumber]) -> Vec<(DayNumber, DailyKey)> {
        days.iter()
            .filter_map(|d| self.keys.get(d).map(|k| (*d, k.clone())))
            .collect()
    }

    /// Forgets keys older than the retention period.
    pub fn expire(&mut self, today: DayNumber) {
        let cutoff = today.offset(-i64::from(RETENTION_DAYS));
        self.keys.retain(|d, _| *d >= cutoff);
    }

    /// Days the ring holds a key for.
    pub fn days(&self) -> Vec<DayNumber> {
        self.keys.keys().copied().collect()
    }
}
