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
//!   is derived once into one open-addressing table keyed by its first 8
//!   bytes, 8 bytes a slot; each window is then a single probe, usually
//!   one cache line.
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

/// What looking a window up needs: the EphID heard, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowKey {
    /// The EphID heard.
    pub ephid: EphId,
    /// First sighting.
    pub first_seen: Timestamp,
    /// Last sighting.
    pub last_seen: Timestamp,
}

impl From<&ObservedWindow> for WindowKey {
    fn from(w: &ObservedWindow) -> WindowKey {
        WindowKey {
            ephid: w.ephid,
            first_seen: w.first_seen,
            last_seen: w.last_seen,
        }
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
        table: Option<EphIdTable>,
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

/// Every EphID of a batch's keys in one open-addressing table with linear
/// probing, at most half full. The home slot comes from the top bits of
/// the EphID's fingerprint; a slot holds the fingerprint's low 32 bits
/// and `key · 96 + epoch + 1` (0 marks an empty slot).
///
/// In front of it, a Bloom filter blocked into 64-bit words (one word per
/// EphID, three bits in it, 8 to 16 bits per EphID): a miss, the common
/// case, reads one word of a structure an eighth of the table's size,
/// which stays in cache far longer, and goes on to the table about once
/// in 25 to 50.
#[derive(Debug)]
struct EphIdTable {
    present: Vec<u64>,
    slots: Vec<u64>,
}

/// Bits of the presence filter per EphID, at least.
const PRESENT_BITS_PER_ENTRY: usize = 8;

/// The word of the presence filter (of `words`) and the three bits in it
/// for `fp`: the word from the top bits, the bits from the bottom ones.
#[inline]
fn presence(fp: u64, words: usize) -> (usize, u64) {
    let bits = (1 << (fp & 63)) | (1 << ((fp >> 6) & 63)) | (1 << ((fp >> 12) & 63));
    (home_slot(fp, words), bits)
}

/// `f` of every key with its position, in order: on every core with the
/// `parallel` feature, else on this thread. The same result either way.
fn map_keys<K: Sync, T: Send>(keys: &[K], f: impl Fn(usize, &K) -> T + Sync + Send) -> Vec<T> {
    let mut out = Vec::new();
    map_keys_into(&mut out, keys, f);
    out
}

/// [`map_keys`] into `out`, emptied first (its memory is reused).
fn map_keys_into<K: Sync, T: Send>(
    out: &mut Vec<T>,
    keys: &[K],
    f: impl Fn(usize, &K) -> T + Sync + Send,
) {
    out.clear();
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        out.par_extend(keys.par_iter().enumerate().map(|(i, k)| f(i, k)));
    }
    #[cfg(not(feature = "parallel"))]
    {
        out.extend(keys.iter().enumerate().map(|(i, k)| f(i, k)));
    }
}

/// `f(b, table region b, filter region b)` for each of `buckets` equal
/// regions of both, in order: on every core with the `parallel` feature.
fn fill_regions<T: Send>(
    table: &mut [u64],
    present: &mut [u64],
    buckets: usize,
    f: impl Fn(usize, &mut [u64], &mut [u64]) -> T + Sync + Send,
) -> Vec<T> {
    let (region, words) = (table.len() / buckets, present.len() / buckets);
    #[cfg(feature = "parallel")]
    {
        use rayon::prelude::*;
        table
            .par_chunks_mut(region)
            .zip(present.par_chunks_mut(words))
            .enumerate()
            .map(|(b, (t, p))| f(b, t, p))
            .collect()
    }
    #[cfg(not(feature = "parallel"))]
    {
        table
            .chunks_mut(region)
            .zip(present.chunks_mut(words))
            .enumerate()
            .map(|(b, (t, p))| f(b, t, p))
            .collect()
    }
}

#[inline]
fn fingerprint(ephid: &[u8]) -> u64 {
    let mut head = [0u8; 8];
    head.copy_from_slice(&ephid[..8]);
    u64::from_be_bytes(head)
}

#[inline]
fn home_slot(fp: u64, slots: usize) -> usize {
    // Multiply-shift range reduction: fp is uniform, so is the slot.
    ((u128::from(fp) * slots as u128) >> 64) as usize
}

#[inline]
fn next_slot(slot: usize, slots: usize) -> usize {
    if slot + 1 == slots {
        0
    } else {
        slot + 1
    }
}

/// The memory of a batch's EphID tables, given back by
/// [`MatchIndex::recycle_tables`] to build the next batch's in
/// ([`MatchIndex::with_ephid_tables_in`]). A process that prepares batch
/// after batch (the simulator, every day) then writes into memory it
/// already has instead of having the kernel hand it fresh, zeroed pages
/// (hundreds of megabytes a batch at a million phones).
#[derive(Debug, Default)]
pub struct TableMemory {
    fingerprints: Vec<[(u64, u32); EPOCHS_PER_DAY as usize]>,
    ordered: Vec<(u64, u32)>,
    present: Vec<u64>,
    slots: Vec<u64>,
}

impl EphIdTable {
    fn build(keys: &[IndexedKey], memory: &mut TableMemory) -> EphIdTable {
        // Each key's 96 fingerprints, with `key · 96 + epoch + 1`.
        map_keys_into(&mut memory.fingerprints, keys, |k, key| {
            let mut stream = [0u8; EPHID_KEYSTREAM_LEN];
            key.generator.fill_ephids(&mut stream);
            let mut out = [(0u64, 0u32); EPOCHS_PER_DAY as usize];
            for (i, ephid) in stream.chunks_exact(EPHID_LEN).enumerate() {
                // Invariant: MAX_BATCH_KEYS · 96 + 1 fits in u32.
                out[i] = (fingerprint(ephid), k as u32 * EPOCHS_PER_DAY + i as u32 + 1);
            }
            out
        });
        Self::from_fingerprints(memory)
    }

    /// The table and filter of `memory.fingerprints`, in `memory`.
    fn from_fingerprints(memory: &mut TableMemory) -> EphIdTable {
        let found = &memory.fingerprints;
        let ordered = &mut memory.ordered;
        let mut present = std::mem::take(&mut memory.present);
        let mut table = std::mem::take(&mut memory.slots);
        let entries = found.len() * EPOCHS_PER_DAY as usize;
        let slots = (entries * 2).next_power_of_two().max(16);
        // Both structures place an EphID by the top bits of its
        // fingerprint; inserting in the order of the top byte fills them
        // front to back, a cache-friendly pass where random inserts into a
        // table of a hundred megabytes would each miss the cache.
        let buckets = 256.min(slots);
        // At least one filter word per bucket, so the buckets' regions
        // divide the filter as they divide the table.
        let words = (entries * PRESENT_BITS_PER_ENTRY / 64)
            .next_power_of_two()
            .max(buckets);
        let mut start = vec![0usize; buckets + 1];
        for &(fp, _) in found.iter().flatten() {
            start[home_slot(fp, buckets) + 1] += 1;
        }
        for b in 0..buckets {
            start[b + 1] += start[b];
        }
        let bounds = start.clone();
        ordered.clear();
        ordered.resize(entries, (0, 0));
        for &(fp, r) in found.iter().flatten() {
            let at = &mut start[home_slot(fp, buckets)];
            ordered[*at] = (fp, r);
            *at += 1;
        }
        // Bucket b's entries have their home slot in region b of the table
        // and their filter word in region b of the filter (both sizes are
        // powers of two, at least `buckets`), so the regions are cleared and
        // filled independently. An entry whose probe would run past its
        // region's end is inserted afterwards, probing on into the next
        // regions: every slot from an entry's home to where it lies is
        // still taken, so the table is a valid linear-probing table.
        table.truncate(slots);
        table.resize(slots, 0);
        present.truncate(words);
        present.resize(words, 0);
        let region = slots / buckets;
        let ordered = &*ordered;
        let spilled = fill_regions(&mut table, &mut present, buckets, |b, slots_b, words_b| {
            slots_b.fill(0);
            words_b.fill(0);
            let mut spill = Vec::new();
            for &(fp, r) in &ordered[bounds[b]..bounds[b + 1]] {
                let (word, bits) = presence(fp, words);
                words_b[word - b * words_b.len()] |= bits;
                let mut slot = home_slot(fp, slots) - b * region;
                while slot < region && slots_b[slot] != 0 {
                    slot += 1;
                }
                if slot == region {
                    spill.push((fp, r));
                } else {
                    slots_b[slot] = (fp << 32) | u64::from(r);
                }
            }
            spill
        });
        for (fp, r) in spilled.into_iter().flatten() {
            let mut slot = home_slot(fp, slots);
            while table[slot] != 0 {
                slot = next_slot(slot, slots);
            }
            table[slot] = (fp << 32) | u64::from(r);
        }
        EphIdTable {
            present,
            slots: table,
        }
    }

    /// Calls `found` with the `key · 96 + epoch` of every entry whose
    /// fingerprint may equal that of `ephid`, until it returns `Some`.
    #[inline]
    fn find<T>(&self, ephid: &EphId, found: impl FnMut(u32) -> Option<T>) -> Option<T> {
        let fp = fingerprint(&ephid.0);
        let (word, bits) = presence(fp, self.present.len());
        if self.present[word] & bits != bits {
            return None;
        }
        self.probe(fp, found)
    }

    /// [`EphIdTable::find`] past the presence filter.
    #[inline]
    fn probe<T>(&self, fp: u64, mut found: impl FnMut(u32) -> Option<T>) -> Option<T> {
        let slots = self.slots.len();
        let mut slot = home_slot(fp, slots);
        loop {
            let here = self.slots[slot];
            if here == 0 {
                return None;
            }
            if (here ^ (fp << 32)) >> 32 == 0 {
                if let Some(hit) = found((here & 0xFFFF_FFFF) as u32 - 1) {
                    return Some(hit);
                }
            }
            slot = next_slot(slot, slots);
        }
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
                let mut keys: Vec<IndexedKey> = map_keys(published, |position, k| IndexedKey {
                    generator: k.key.ephid_generator(k.day),
                    days_since_onset: k.days_since_onset,
                    origin: k.origin,
                    // Invariant: a batch holds at most MAX_BATCH_KEYS (< 2³²) keys.
                    position: position as u32,
                });
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
                    table: None,
                }
            }
        };
        MatchIndex {
            region: batch.region.clone(),
            origins: batch.origins.clone(),
            kind,
        }
    }

    /// Derives every EphID of the batch once into one table, so that each
    /// later window costs one probe instead of a pass over the keys. Worth
    /// it when one batch serves many phones (the simulator); 16 to 32
    /// bytes of memory per EphID.
    pub fn with_ephid_tables(self) -> MatchIndex {
        self.with_ephid_tables_in(&mut TableMemory::default())
    }

    /// [`MatchIndex::with_ephid_tables`] in `memory`, which an earlier
    /// index gave back with [`MatchIndex::recycle_tables`]: the same
    /// tables, the same answers. `memory` keeps the build's scratch space;
    /// the tables take the rest.
    pub fn with_ephid_tables_in(mut self, memory: &mut TableMemory) -> MatchIndex {
        if let Kind::Compact { keys, table, .. } = &mut self.kind {
            *table = Some(EphIdTable::build(keys, memory));
        }
        self
    }

    /// Gives the memory of this index's EphID tables back to `memory`, for
    /// the next batch's ([`MatchIndex::with_ephid_tables_in`]).
    pub fn recycle_tables(self, memory: &mut TableMemory) {
        if let Kind::Compact {
            table: Some(table), ..
        } = self.kind
        {
            memory.present = table.present;
            memory.slots = table.slots;
        }
    }

    /// Whether windows seen from day `from` to day `to` (inclusive) can
    /// match at all: false when the batch holds no key for any of those
    /// days. An unlinkable filter does not say which days it covers, so it
    /// always may. A phone need not read such windows from its store.
    pub fn covers(&self, from: DayNumber, to: DayNumber) -> bool {
        match &self.kind {
            Kind::Compact { days, .. } => {
                let first = days.partition_point(|d| d.day < from);
                days.get(first).is_some_and(|d| d.day <= to)
            }
            Kind::Unlinkable(_) => true,
        }
    }

    /// Where a window with `ephid` is probed in the index's presence filter
    /// and EphID table, as a number: both are laid out in ascending order
    /// of it. Probing many windows in ascending order (or grouped by its
    /// top bits) walks them front to back and keeps the probes in cache;
    /// any order gives the same answers. A store that holds many windows
    /// can keep them grouped this way and look them all up in one sweep.
    pub fn probe_order(ephid: &EphId) -> u64 {
        fingerprint(&ephid.0)
    }

    /// Which of `windows` may match: their positions are pushed onto
    /// `passed`, in order. With EphID tables, one probe per window rules out
    /// all but a few of those that do not match, and the probes are issued
    /// in groups so that their cache misses overlap (the table of a large
    /// batch does not fit in a cache). Otherwise (streaming, unlinkable)
    /// every window passes, the full check being left to matching. A phone
    /// can thus load only the windows that pass, with their RSSI samples,
    /// and give those to [`MatchIndex::match_windows_indexed`].
    pub fn may_match(&self, windows: &[WindowKey], skew: u8, passed: &mut Vec<usize>) {
        self.may_match_with(windows, |w| *w, skew, passed);
    }

    /// [`MatchIndex::may_match`] over a store's own records, each read as a
    /// [`WindowKey`] by `key`: no copy of the keys is made, and `key` is
    /// asked only for what each step needs (the compiler drops the rest).
    pub fn may_match_with<T>(
        &self,
        items: &[T],
        key: impl Fn(&T) -> WindowKey,
        skew: u8,
        passed: &mut Vec<usize>,
    ) {
        let Kind::Compact {
            table: Some(table), ..
        } = &self.kind
        else {
            passed.extend(0..items.len());
            return;
        };
        const GROUP: usize = 16;
        for (g, group) in items.chunks(GROUP).enumerate() {
            let mut fps = [0u64; GROUP];
            let mut places = [(0usize, 0u64); GROUP];
            let mut words = [0u64; GROUP];
            for (j, item) in group.iter().enumerate() {
                fps[j] = fingerprint(&key(item).ephid.0);
                places[j] = presence(fps[j], table.present.len());
            }
            // Independent loads: the processor overlaps their misses.
            for j in 0..group.len() {
                words[j] = table.present[places[j].0];
            }
            for (j, item) in group.iter().enumerate() {
                let bits = places[j].1;
                if words[j] & bits == bits
                    && {
                        let w = key(item);
                        Self::allowed_between(w.first_seen, w.last_seen, skew).is_some()
                    }
                    && table.probe(fps[j], |_| Some(())).is_some()
                {
                    passed.push(g * GROUP + j);
                }
            }
        }
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
        Self::allowed_between(window.first_seen, window.last_seen, skew)
    }

    fn allowed_between(
        first_seen: Timestamp,
        last_seen: Timestamp,
        skew: u8,
    ) -> Option<(EpochNumber, EpochNumber)> {
        let lo = last_seen.epoch().offset(-i64::from(skew));
        let hi = first_seen.epoch().offset(i64::from(skew));
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

    /// The key (index into the day-sorted keys) and epoch of the published
    /// EphID one window heard, through the EphID table.
    #[inline]
    fn find_in_table(
        keys: &[IndexedKey],
        table: &EphIdTable,
        window: &ObservedWindow,
        skew: u8,
    ) -> Option<(usize, EpochNumber)> {
        let allowed = Self::allowed_epochs(window, skew)?;
        table.find(&window.ephid, |r| {
            let k = (r / EPOCHS_PER_DAY) as usize;
            // Invariant: refs are key · 96 + epoch, epoch < 96.
            let index = EpochIndex::new((r % EPOCHS_PER_DAY) as u8)?;
            Self::confirm(&keys[k], index, allowed, &window.ephid).map(|epoch| (k, epoch))
        })
    }

    /// The epoch of `key`'s EphID number `index` if that EphID is `heard`
    /// and its epoch lies in `allowed`: a candidate found by fingerprint,
    /// confirmed on all 16 bytes and on its time (SPEC §10.3).
    fn confirm(
        key: &IndexedKey,
        index: EpochIndex,
        (lo, hi): (EpochNumber, EpochNumber),
        heard: &EphId,
    ) -> Option<EpochNumber> {
        let epoch = key.generator.day().epoch(index);
        (lo <= epoch && epoch <= hi && key.generator.ephid(index) == *heard).then_some(epoch)
    }

    /// For each window, the index (into the day-sorted keys) and epoch of
    /// the published EphID it heard.
    fn find(&self, windows: &[ObservedWindow], skew: u8) -> Vec<Option<(usize, EpochNumber)>> {
        let Kind::Compact { keys, days, table } = &self.kind else {
            return vec![None; windows.len()];
        };
        if let Some(table) = table {
            return windows
                .iter()
                .map(|w| Self::find_in_table(keys, table, w, skew))
                .collect();
        }
        let allowed: Vec<_> = windows
            .iter()
            .map(|w| Self::allowed_epochs(w, skew))
            .collect();
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
                            hits[w] = allowed[w]
                                .and_then(|a| Self::confirm(key, i, a, &windows[w].ephid))
                                .map(|epoch| (k, epoch));
                        }
                    });
                }
            }
        }
        hits
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
                let matched = |n: usize, (k, epoch): (usize, EpochNumber), w: &ObservedWindow| {
                    let key: &IndexedKey = &keys[k];
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
                };
                self.find(windows, options.epoch_skew)
                    .into_iter()
                    .zip(windows)
                    .enumerate()
                    .filter_map(|(n, (hit, w))| matched(n, hit?, w))
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
    fn may_match_passes_every_match_and_few_others() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(5);
        let keys: Vec<DailyKey> = (0..50).map(|_| DailyKey::generate(&mut rng)).collect();
        let b = batch(keys.iter().map(|k| published(k, DAY)).collect());
        let [streaming, tables] = both(&b);
        let passed = |index: &MatchIndex, windows: &[ObservedWindow]| {
            let keys: Vec<WindowKey> = windows.iter().map(WindowKey::from).collect();
            let mut passed = Vec::new();
            index.may_match(&keys, 1, &mut passed);
            passed
        };
        let mut windows: Vec<ObservedWindow> = keys
            .iter()
            .map(|k| window(&k.ephid_generator(DAY), 40, 0, 120))
            .collect();
        // Too long for any one epoch: a replay, never a match.
        let mut replayed = windows[0].clone();
        replayed.last_seen = Timestamp(replayed.first_seen.0 + 3 * 900);
        windows.push(replayed);
        let all: Vec<usize> = (0..51).collect();
        assert_eq!(passed(&tables, &windows), all[..50]);
        assert_eq!(passed(&streaming, &windows), all);
        // Reading the windows in place gives the same answers.
        for index in [&tables, &streaming] {
            let mut with = Vec::new();
            index.may_match_with(
                &windows,
                |w: &ObservedWindow| WindowKey::from(w),
                1,
                &mut with,
            );
            assert_eq!(with, passed(index, &windows));
        }
        let strangers: Vec<ObservedWindow> = (0..2_000)
            .map(|_| {
                window(
                    &DailyKey::generate(&mut rng).ephid_generator(DAY),
                    40,
                    0,
                    120,
                )
            })
            .collect();
        // The presence filter lets a few in a hundred through, and the
        // table's 32-bit tags nearly none of those.
        let through = passed(&tables, &strangers);
        assert!(
            through.len() < 5,
            "{} of 2,000 strangers passed",
            through.len()
        );
        assert_eq!(passed(&streaming, &strangers).len(), 2_000);
        assert!(tables.match_windows(&strangers, &options(), DAY).is_empty());
    }

    #[test]
    fn probe_order_is_the_layout_order_and_changes_no_answer() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(8);
        let keys: Vec<DailyKey> = (0..40).map(|_| DailyKey::generate(&mut rng)).collect();
        let [_, tables] = both(&batch(keys.iter().map(|k| published(k, DAY)).collect()));
        let mut windows: Vec<ObservedWindow> = keys
            .iter()
            .chain(
                (0..400)
                    .map(|_| DailyKey::generate(&mut rng))
                    .collect::<Vec<_>>()
                    .iter(),
            )
            .map(|k| window(&k.ephid_generator(DAY), 40, 0, 120))
            .collect();
        let answers = |windows: &[ObservedWindow]| {
            let keys: Vec<WindowKey> = windows.iter().map(WindowKey::from).collect();
            let mut passed = Vec::new();
            tables.may_match(&keys, 1, &mut passed);
            let mut ids: Vec<EphId> = passed.iter().map(|&i| windows[i].ephid).collect();
            ids.sort();
            ids
        };
        let before = answers(&windows);
        assert_eq!(before.len(), 40);
        windows.sort_by_key(|w| MatchIndex::probe_order(&w.ephid));
        assert_eq!(answers(&windows), before);
        // Ascending probe order is ascending filter word and table slot.
        for size in [1_000usize, 1 << 20, 12_345_678] {
            let places: Vec<(usize, usize)> = windows
                .iter()
                .map(|w| {
                    let fp = MatchIndex::probe_order(&w.ephid);
                    (presence(fp, size).0, home_slot(fp, 2 * size))
                })
                .collect();
            assert!(places
                .windows(2)
                .all(|p| p[0].0 <= p[1].0 && p[0].1 <= p[1].1));
        }
    }

    #[test]
    fn tables_built_in_recycled_memory_answer_as_fresh_ones() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(12);
        let first: Vec<DailyKey> = (0..300).map(|_| DailyKey::generate(&mut rng)).collect();
        let second: Vec<DailyKey> = (0..40).map(|_| DailyKey::generate(&mut rng)).collect();
        let windows: Vec<ObservedWindow> = first
            .iter()
            .chain(&second)
            .map(|k| window(&k.ephid_generator(DAY), 50, 0, 120))
            .collect();
        let mut memory = TableMemory::default();
        for keys in [&first, &second, &first] {
            let b = batch(keys.iter().map(|k| published(k, DAY)).collect());
            let fresh = MatchIndex::prepare(&b).with_ephid_tables();
            let reused = MatchIndex::prepare(&b).with_ephid_tables_in(&mut memory);
            assert_eq!(reused.lookup(&windows, 1), fresh.lookup(&windows, 1));
            let found = reused.lookup(&windows, 1).iter().flatten().count();
            assert_eq!(found, keys.len());
            reused.recycle_tables(&mut memory);
        }
    }

    #[test]
    fn table_regions_spill_into_the_next_and_wrap_around() {
        // All of the first two keys' 96 entries share the table's first
        // slot and all of the last two's its last slot (they wrap to the
        // front), so most spill past their region; the rest spread out.
        let keys = 8;
        let fingerprints: Vec<[(u64, u32); EPOCHS_PER_DAY as usize]> = (0..keys)
            .map(|k| {
                std::array::from_fn(|i| {
                    let r = (k * EPOCHS_PER_DAY as usize + i + 1) as u32;
                    let fp = match k {
                        0 | 1 => i as u64,
                        6 | 7 => u64::MAX - i as u64,
                        _ => u64::from(r).wrapping_mul(0x9e37_79b9_7f4a_7c15),
                    };
                    (fp, r)
                })
            })
            .collect();
        let mut memory = TableMemory {
            fingerprints: fingerprints.clone(),
            ..TableMemory::default()
        };
        let table = EphIdTable::from_fingerprints(&mut memory);
        let taken = table.slots.iter().filter(|&&s| s != 0).count();
        assert_eq!(taken, keys * EPOCHS_PER_DAY as usize);
        for &(fp, r) in fingerprints.iter().flatten() {
            let (word, bits) = presence(fp, table.present.len());
            assert_eq!(table.present[word] & bits, bits);
            let hit = table.probe(fp, |got| (got == r - 1).then_some(()));
            assert!(hit.is_some(), "entry {r} not found");
        }
    }

    #[test]
    fn covers_names_the_days_with_keys() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(3);
        let later = DAY.offset(3);
        let keys = vec![
            published(&DailyKey::generate(&mut rng), later),
            published(&DailyKey::generate(&mut rng), DAY),
        ];
        for index in both(&batch(keys)) {
            assert!(index.covers(DAY, DAY));
            assert!(index.covers(DAY.offset(1), later));
            assert!(index.covers(DAY.offset(-5), DAY));
            assert!(!index.covers(DAY.offset(1), DAY.offset(2)));
            assert!(!index.covers(later.offset(1), later.offset(9)));
            assert!(!index.covers(DAY.offset(-9), DAY.offset(-1)));
        }
        let filter = EpochFilter::with_capacity(1).expect("filter");
        let mut b = batch(Vec::new());
        b.payload = BatchPayload::Unlinkable(filter);
        assert!(MatchIndex::prepare(&b).covers(DAY, DAY));
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
