//! Matching a phone's windows against a downloaded batch (SPEC §10).
//!
//! The work is split as a phone does it: [`MatchIndex::prepare`] turns a
//! verified batch into an index once (every key's HKDF step, keys grouped
//! by day); [`MatchIndex::match_windows`] then matches windows against it.
//!
//! Two strategies give the same answer:
//! - **streaming** (the default, for a phone): for each day, the phone's
//!   windows go into a small table that stays in cache, and each published
//!   key's 96 EphIDs are streamed past it. Memory is proportional to the
//!   phone's windows; time is close to the raw ChaCha20 keystream.
//! - **EphID tables** ([`MatchIndex::with_ephid_tables`], for serving many
//!   phones from one batch, as the simulator does): every EphID of the batch
//!   is derived once into one open-addressing table per day, keyed by its
//!   first 8 bytes; each window is then a single probe.
//!
//! EphIDs are uniformly random, so their first bytes are the hash; every
//! candidate is confirmed on all 16 bytes and on its epoch.

use crate::batch::{BatchPayload, KeyBatch};
use crate::bloom::{EpochFilter, EpochHash};
use crate::keys::{EphId, EphIdGenerator, EPHID_KEYSTREAM_LEN, EPHID_LEN};
use crate::policy::ExposurePolicy;
use crate::region::RegionId;
use crate::time::{DayNumber, EpochIndex, EpochNumber, Timestamp, EPOCHS_PER_DAY};
use crate::window::{AttenuationStats, ObservedWindow, WindowConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Table slots per entry: a load factor of 0.7 keeps linear probes short.
const SLOTS_PER_ENTRY: f64 = 1.0 / 0.7;
/// Fingerprint value that marks an empty slot.
const EMPTY: u64 = 0;

/// What matching needs besides the index.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatchOptions {
    /// Epochs of clock skew tolerated (SPEC §10.3); default 1.
    pub epoch_skew: u8,
    /// Transmit power assumed when metadata cannot be decrypted (unlinkable mode).
    pub assumed_tx_power_dbm: i8,
    /// How sightings were grouped into windows.
    pub window: WindowConfig,
}

impl From<&ExposurePolicy> for MatchOptions {
    fn from(p: &ExposurePolicy) -> Self {
        MatchOptions {
            epoch_skew: p.epoch_skew,
            assumed_tx_power_dbm: p.assumed_tx_power_dbm,
            window: WindowConfig::default(),
        }
    }
}

/// One window that matched published case data: the input of the status engine.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exposure {
    /// First sighting.
    pub start: Timestamp,
    /// Duration credited to the window, seconds.
    pub duration_secs: u32,
    /// Attenuation statistics of the window.
    pub attenuation: AttenuationStats,
    /// The sender's transmit power, if it was decrypted (compact mode).
    pub tx_power_dbm: Option<i8>,
    /// Days since the patient's onset for the key's day, if known.
    pub days_since_onset: Option<i8>,
    /// The region that confirmed the case.
    pub origin: RegionId,
    /// The day the phone found the match (when it was notified).
    pub matched_on: DayNumber,
}

impl Exposure {
    /// The UTC day the exposure started.
    pub fn day(&self) -> DayNumber {
        self.start.day()
    }
}

/// Where a looked-up EphID was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexHit {
    /// Position of the key in the batch.
    pub key: u32,
    /// The epoch the EphID belongs to.
    pub epoch: EpochNumber,
}

/// A batch prepared for matching.
#[derive(Debug)]
pub struct MatchIndex {
    region: RegionId,
    origins: Vec<RegionId>,
    kind: Kind,
}

#[derive(Debug)]
enum Kind {
    Compact {
        /// Keys sorted by day.
        keys: Vec<IndexedKey>,
        /// Each day's run of `keys`.
        days: Vec<DayKeys>,
        /// Every EphID, when materialized for many queries.
        tables: Option<Vec<DayTable>>,
    },
    Unlinkable(EpochFilter),
}

#[derive(Debug)]
struct IndexedKey {
    generator: EphIdGenerator,
    days_since_onset: Option<i8>,
    origin: u8,
    /// Position in the batch.
    position: u32,
}

#[derive(Debug)]
struct DayKeys {
    day: DayNumber,
    start: usize,
    end: usize,
}

/// All EphIDs of one day's keys: fingerprints and `key · 96 + epoch` refs.
#[derive(Debug)]
struct DayTable {
    day: DayNumber,
    fingerprints: Vec<u64>,
    refs: Vec<u32>,
}

fn fingerprint(ephid: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&ephid[..8]);
    // An all-zero prefix (probability 2⁻⁶⁴) is stored as 1; the full
    // comparison on a hit keeps the result exact.
    u64::from_be_bytes(head).max(1)
}

fn home_slot(fp: u64, slots: usize) -> usize {
    // Multiply-shift range reduction: fp is uniform, so is the slot.
    ((u128::from(fp) * slots as u128) >> 64) as usize
}

fn next_slot(slot: usize, slots: usize) -> usize {
    if slot + 1 == slots {
        0
    } else {
        slot + 1
    }
}

impl DayTable {
    fn build(day: &DayKeys, keys: &[IndexedKey]) -> DayTable {
        let entries = (day.end - day.start) * EPOCHS_PER_DAY as usize;
        let slots = ((entries as f64 * SLOTS_PER_ENTRY) as usize).max(16);
        let mut fingerprints = vec![EMPTY; slots];
        let mut refs = vec![0u32; slots];
        let mut stream = [0u8; EPHID_KEYSTREAM_LEN];
        for (k, key) in keys.iter().enumerate().take(day.end).skip(day.start) {
            key.generator.fill_ephids(&mut stream);
            for (i, ephid) in stream.chunks_exact(EPHID_LEN).enumerate() {
                let fp = fingerprint(ephid);
                let mut slot = home_slot(fp, slots);
                while fingerprints[slot] != EMPTY {
                    slot = next_slot(slot, slots);
                }
                fingerprints[slot] = fp;
                // Invariant: MAX_BATCH_KEYS · 96 fits in u32.
                refs[slot] = k as u32 * EPOCHS_PER_DAY + i as u32;
            }
        }
        DayTable {
            day: day.day,
            fingerprints,
            refs,
        }
    }

    /// Refs of every entry whose fingerprint equals that of `ephid`.
    fn candidates<'a>(&'a self, ephid: &EphId) -> impl Iterator<Item = u32> + 'a {
        let fp = fingerprint(&ephid.0);
        let slots = self.fingerprints.len();
        let mut slot = home_slot(fp, slots);
        let mut probed = 0;
        std::iter::from_fn(move || loop {
            let here = self.fingerprints[slot];
            if here == EMPTY || probed == slots {
                return None;
            }
            probed += 1;
            let r = self.refs[slot];
            slot = next_slot(slot, slots);
            if here == fp {
                return Some(r);
            }
        })
    }
}

/// A phone's windows for one day, keyed by the top 32 bits of their EphID:
/// small enough to stay in cache while a day's keys stream past.
struct WindowTable {
    /// One bit per value of the fingerprint's top 16 bits (8 KiB, stays in
    /// L1): most published EphIDs are rejected here without a table probe.
    present: Box<[u64; 1024]>,
    /// `fingerprint high 32 bits << 32 | window index + 1`; 0 is empty.
    slots: Vec<u64>,
}

impl WindowTable {
    fn build(members: &[u32], windows: &[ObservedWindow]) -> WindowTable {
        // Load factor at most 1/4: a miss, the common case, probes ~1.2 slots.
        let n = (members.len() * 4).next_power_of_two().max(16);
        let mut slots = vec![0u64; n];
        let mut present = Box::new([0u64; 1024]);
        for &w in members {
            let fp = fingerprint(&windows[w as usize].ephid.0);
            present[(fp >> 54) as usize] |= 1 << ((fp >> 48) & 63);
            let mut slot = home_slot(fp, n);
            while slots[slot] != 0 {
                slot = next_slot(slot, n);
            }
            slots[slot] = (fp & 0xFFFF_FFFF_0000_0000) | u64::from(w + 1);
        }
        WindowTable { present, slots }
    }

    /// Calls `found` with every window whose EphID may equal `ephid`.
    #[inline]
    fn probe(&self, ephid: &[u8], mut found: impl FnMut(usize)) {
        let fp = fingerprint(ephid);
        if self.present[(fp >> 54) as usize] & (1 << ((fp >> 48) & 63)) == 0 {
            return;
        }
        let n = self.slots.len();
        let mut slot = home_slot(fp, n);
        loop {
            let here = self.slots[slot];
            if here == 0 {
                return;
            }
            if (here ^ fp) >> 32 == 0 {
                found((here & 0xFFFF_FFFF) as usize - 1);
            }
            slot = next_slot(slot, n);
        }
    }
}

impl MatchIndex {
    /// Prepares a verified batch for matching: derives every key's
    /// ChaCha20 key and groups the keys by day. Unlinkable mode keeps the filter.
    pub fn prepare(batch: &KeyBatch) -> MatchIndex {
        let kind = match &batch.payload {
            BatchPayload::Unlinkable(filter) => Kind::Unlinkable(filter.clone()),
            BatchPayload::Compact(published) => {
                let mut keys: Vec<IndexedKey> = published
                    .iter()
                    .enumerate()
                    .map(|(position, k)| IndexedKey {
                        generator: k.key.ephid_generator(k.day),
                        days_since_onset: k.days_since_onset,
                        origin: k.origin,
                        // Invariant: a batch holds at most MAX_BATCH_KEYS (< 2³²) keys.
                        position: position as u32,
                    })
                    .collect();
                keys.sort_by_key(|k| k.generator.day());
                let mut days: Vec<DayKeys> = Vec::new();
                for (i, k) in keys.iter().enumerate() {
                    match days.last_mut() {
                        Some(d) if d.day == k.generator.day() => d.end = i + 1,
                        _ => days.push(DayKeys {
                            day: k.generator.day(),
                            start: i,
                            end: i + 1,
                        }),
                    }
                }
                Kind::Compact {
                    keys,
                    days,
                    tables: None,
                }
            }
        };
        MatchIndex {
            region: batch.region.clone(),
            origins: batch.origins.clone(),
            kind,
        }
    }

    /// Derives every EphID of the batch once into per-day tables, so that
    /// each later window costs one probe instead of a pass over the keys.
    /// Worth it when one batch serves many phones (the simulator); about
    /// 17 bytes of memory per EphID.
    pub fn with_ephid_tables(mut self) -> MatchIndex {
        if let Kind::Compact { keys, days, tables } = &mut self.kind {
            *tables = Some(days.iter().map(|d| DayTable::build(d, keys)).collect());
        }
        self
    }

    /// Number of published keys (compact) or filter entries (unlinkable).
    pub fn len(&self) -> usize {
        match &self.kind {
            Kind::Compact { keys, .. } => keys.len(),
            Kind::Unlinkable(f) => f.items() as usize,
        }
    }

    /// Whether the index holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The EphID epochs a window may match: every sighting must lie within
    /// `epoch ± skew` (SPEC §10.3). `None` if the window is too long for any
    /// one epoch — a replayed EphID.
    fn allowed_epochs(window: &ObservedWindow, skew: u8) -> Option<(EpochNumber, EpochNumber)> {
        let lo = window.last_epoch().offset(-i64::from(skew));
        let hi = window.first_epoch().offset(i64::from(skew));
        (lo <= hi).then_some((lo, hi))
    }

    /// Finds the published EphID behind each window, if any (compact mode;
    /// an unlinkable filter carries no key to point at, so every entry is
    /// `None`). Uses the EphID tables when built, else streams the keys.
    pub fn lookup(&self, windows: &[ObservedWindow], skew: u8) -> Vec<Option<IndexHit>> {
        let Kind::Compact { keys, .. } = &self.kind else {
            return vec![None; windows.len()];
        };
        self.find(windows, skew)
            .into_iter()
            .map(|hit| {
                hit.map(|(k, epoch)| IndexHit {
                    key: keys[k].position,
                    epoch,
                })
            })
            .collect()
    }

    /// For each window, the index (into the day-sorted keys) and epoch of
    /// the published EphID it heard.
    fn find(&self, windows: &[ObservedWindow], skew: u8) -> Vec<Option<(usize, EpochNumber)>> {
        let Kind::Compact { keys, days, tables } = &self.kind else {
            return vec![None; windows.len()];
        };
        let allowed: Vec<_> = windows
            .iter()
            .map(|w| Self::allowed_epochs(w, skew))
            .collect();
        let confirm = |w: usize, k: usize, index: EpochIndex, day: DayNumber| {
            let (lo, hi) = allowed[w]?;
            let epoch = day.epoch(index);
            (lo <= epoch && epoch <= hi && keys[k].generator.ephid(index) == windows[w].ephid)
                .then_some((k, epoch))
        };
        match tables {
            Some(tables) => (0..windows.len())
                .map(|w| {
                    let (lo, hi) = allowed[w]?;
                    let first = tables.partition_point(|t| t.day < lo.day());
                    tables[first..]
                        .iter()
                        .take_while(|t| t.day <= hi.day())
                        .flat_map(|t| t.candidates(&windows[w].ephid).map(move |r| (t.day, r)))
                        .find_map(|(day, r)| {
                            let (k, i) = (r / EPOCHS_PER_DAY, r % EPOCHS_PER_DAY);
                            // Invariant: refs are key · 96 + epoch, epoch < 96.
                            confirm(w, k as usize, EpochIndex::new(i as u8)?, day)
                        })
                })
                .collect(),
            None => {
                let mut hits = vec![None; windows.len()];
                let mut by_day: BTreeMap<DayNumber, Vec<u32>> = BTreeMap::new();
                for (w, range) in allowed.iter().enumerate() {
                    if let Some((lo, hi)) = range {
                        for d in lo.day().0..=hi.day().0 {
                            // Invariant: the caller's slice length fits in u32.
                            by_day.entry(DayNumber(d)).or_default().push(w as u32);
                        }
                    }
                }
                let mut stream = [0u8; EPHID_KEYSTREAM_LEN];
                for day in days {
                    let Some(members) = by_day.get(&day.day) else {
                        continue;
                    };
                    let table = WindowTable::build(members, windows);
                    for (k, key) in keys.iter().enumerate().take(day.end).skip(day.start) {
                        key.generator.fill_ephids(&mut stream);
                        for (i, ephid) in EpochIndex::all().zip(stream.chunks_exact(EPHID_LEN)) {
                            table.probe(ephid, |w| {
                                if hits[w].is_none() {
                                    hits[w] = confirm(w, k, i, day.day);
                                }
                            });
                        }
                    }
                }
                hits
            }
        }
    }

    /// Matches a phone's windows; each match becomes an [`Exposure`]
    /// stamped with `today` as its notification day.
    pub fn match_windows(
        &self,
        windows: &[ObservedWindow],
        options: &MatchOptions,
        today: DayNumber,
    ) -> Vec<Exposure> {
        self.match_windows_indexed(windows, options, today)
            .into_iter()
            .map(|(_, e)| e)
            .collect()
    }

    /// [`MatchIndex::match_windows`], each exposure with the index of the
    /// window it came from: a phone that matches several batches counts
    /// each window once (SPEC §11.1) by remembering which it already has.
    pub fn match_windows_indexed(
        &self,
        windows: &[ObservedWindow],
        options: &MatchOptions,
        today: DayNumber,
    ) -> Vec<(usize, Exposure)> {
        let exposure = |w: &ObservedWindow,
                        tx_power_dbm: Option<i8>,
                        days_since_onset,
                        origin: &RegionId| Exposure {
            start: w.first_seen,
            duration_secs: w.duration_secs(&options.window),
            attenuation: w.attenuation(tx_power_dbm.unwrap_or(options.assumed_tx_power_dbm)),
            tx_power_dbm,
            days_since_onset,
            origin: origin.clone(),
            matched_on: today,
        };
        match &self.kind {
            Kind::Compact { keys, .. } => {
                self.find(windows, options.epoch_skew)
                    .into_iter()
                    .zip(windows)
                    .enumerate()
                    .filter_map(|(n, (hit, w))| {
                        let (k, epoch) = hit?;
                        let key = &keys[k];
                        // SPEC §10.4: metadata that does not decrypt to a known
                        // version under the matched key is refused; metadata is
                        // not authenticated, so this catches only a changed
                        // version byte (or a false fingerprint match).
                        let metadata = key
                            .generator
                            .decrypt_metadata(epoch.index(), w.metadata)
                            .ok()?;
                        let origin = self
                            .origins
                            .get(usize::from(key.origin))
                            .unwrap_or(&self.region);
                        Some((
                            n,
                            exposure(w, Some(metadata.tx_power_dbm), key.days_since_onset, origin),
                        ))
                    })
                    .collect()
            }
            Kind::Unlinkable(filter) => windows
                .iter()
                .enumerate()
                .filter(|(_, w)| {
                    Self::allowed_epochs(w, options.epoch_skew).is_some_and(|(lo, hi)| {
                        (lo.0..=hi.0)
                            .any(|e| filter.contains(&EpochHash::new(&w.ephid, EpochNumber(e))))
                    })
                })
                // A filter carries one origin for all its entries (a
                // region republishing a peer's filter names the peer).
                .map(|(n, w)| {
                    let origin = self.origins.first().unwrap_or(&self.region);
                    (n, exposure(w, None, None, origin))
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchNumber, PublishedKey};
    use crate::keys::{DailyKey, Metadata};
    use crate::time::Timestamp;
    use crate::window::Rssi;
    use rand::SeedableRng;

    const DAY: DayNumber = DayNumber(20_000);

    fn window(g: &EphIdGenerator, epoch: u8, at_offset_secs: u64, len_secs: u64) -> ObservedWindow {
        let index = EpochIndex::new(epoch).expect("< 96");
        let beacon = g.beacon(index, Metadata { tx_power_dbm: -5 });
        let start = Timestamp(DAY.epoch(index).start().0 + at_offset_secs);
        ObservedWindow {
            ephid: beacon.ephid,
            metadata: beacon.metadata,
            first_seen: start,
            last_seen: Timestamp(start.0 + len_secs),
            rssi: vec![Rssi(-60); 3],
        }
    }

    fn batch(keys: Vec<PublishedKey>) -> KeyBatch {
        let ch = RegionId::new("CH").expect("valid");
        KeyBatch {
            region: ch.clone(),
            number: BatchNumber(1),
            start: Timestamp(0),
            end: Timestamp(1),
            origins: vec![ch],
            payload: BatchPayload::Compact(keys),
        }
    }

    fn published(key: &DailyKey, day: DayNumber) -> PublishedKey {
        PublishedKey {
            day,
            key: key.clone(),
            days_since_onset: Some(1),
            origin: 0,
        }
    }

    /// The same batch under both strategies: streaming and EphID tables.
    fn both(b: &KeyBatch) -> [MatchIndex; 2] {
        [
            MatchIndex::prepare(b),
            MatchIndex::prepare(b).with_ephid_tables(),
        ]
    }

    fn options() -> MatchOptions {
        MatchOptions {
            epoch_skew: 1,
            assumed_tx_power_dbm: 0,
            window: WindowConfig::default(),
        }
    }

    #[test]
    fn finds_published_ephids_and_only_those() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(9);
        let patient = DailyKey::generate(&mut rng);
        let stranger = DailyKey::generate(&mut rng);
        let mut keys: Vec<_> = (0..200)
            .map(|_| published(&DailyKey::generate(&mut rng), DAY))
            .collect();
        keys.push(published(&patient, DAY));
        let g = patient.ephid_generator(DAY);
        let s = stranger.ephid_generator(DAY);
        let windows = [
            window(&g, 10, 30, 300),
            window(&s, 10, 30, 300),
            window(&g, 95, 0, 60),
        ];
        for index in both(&batch(keys)) {
            let found = index.match_windows(&windows, &options(), DAY);
            assert_eq!(found.len(), 2);
            assert_eq!(found[0].tx_power_dbm, Some(-5));
            assert_eq!(found[0].attenuation.median.0, 55);
            assert_eq!(found[0].duration_secs, 360);
            assert_eq!(found[0].days_since_onset, Some(1));
            assert_eq!(index.lookup(&windows, 1)[0].map(|h| h.key), Some(200));
            assert_eq!(index.lookup(&windows, 1)[1], None);
        }
    }

    #[test]
    fn replays_outside_the_skew_do_not_match() {
        let key = DailyKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(10));
        let g = key.ephid_generator(DAY);
        for index in both(&batch(vec![published(&key, DAY)])) {
            let heard_late = |epochs_late: u64, skew: u8| {
                let mut w = window(&g, 20, 0, 60);
                w.first_seen = Timestamp(w.first_seen.0 + epochs_late * 900);
                w.last_seen = Timestamp(w.last_seen.0 + epochs_late * 900);
                let o = MatchOptions {
                    epoch_skew: skew,
                    ..options()
                };
                index.match_windows(&[w], &o, DAY).len()
            };
            assert_eq!(heard_late(0, 0), 1);
            assert_eq!(heard_late(1, 1), 1);
            assert_eq!(heard_late(2, 1), 0);
            assert_eq!(heard_late(1, 0), 0);
            // An EphID replayed for an hour spans too many epochs.
            let long = window(&g, 20, 0, 3600);
            assert!(index.match_windows(&[long], &options(), DAY).is_empty());
            // A key published for another day yields nothing on this one.
        }
        for other_day in both(&batch(vec![published(&key, DAY.offset(1))])) {
            assert!(other_day
                .match_windows(&[window(&g, 20, 0, 60)], &options(), DAY)
                .is_empty());
        }
    }

    #[test]
    fn epoch_boundary_crossing_matches_both_neighbours() {
        let key = DailyKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(11));
        for prev_day in both(&batch(vec![published(&key, DAY.offset(-1))])) {
            let g = key.ephid_generator(DAY.offset(-1));
            // Last epoch of the previous day, heard just after midnight.
            let mut w = window(&g, 95, 0, 60);
            w.first_seen = Timestamp(DAY.start().0 + 30);
            w.last_seen = Timestamp(DAY.start().0 + 90);
            assert_eq!(prev_day.match_windows(&[w], &options(), DAY).len(), 1);
        }
    }

    #[test]
    fn unlinkable_filters_match_only_published_epochs() {
        let key = DailyKey::generate(&mut rand_chacha::ChaCha20Rng::seed_from_u64(12));
        let g = key.ephid_generator(DAY);
        let mut filter = EpochFilter::with_capacity(96).expect("valid");
        // The patient redacts epochs 40..96 (a private afternoon).
        for h in EpochHash::for_epochs(&g, EpochIndex::all().take(40)) {
            filter.insert(&h);
        }
        let mut b = batch(Vec::new());
        b.payload = BatchPayload::Unlinkable(filter);
        let index = MatchIndex::prepare(&b);
        let found = index.match_windows(
            &[window(&g, 10, 0, 60), window(&g, 50, 0, 60)],
            &options(),
            DAY,
        );
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].tx_power_dbm, None);
        assert_eq!(found[0].attenuation.median.0, 60, "assumed 0 dBm − (−60)");
        let mut late = window(&g, 10, 0, 60);
        late.first_seen = Timestamp(late.first_seen.0 + 1800);
        late.last_seen = Timestamp(late.last_seen.0 + 1800);
        assert!(index.match_windows(&[late], &options(), DAY).is_empty());
    }
}
