//! Exposure notification with the real protocol: every app user's phone
//! draws daily keys, broadcasts the EphIDs they yield, records exposure
//! windows of the phones it hears, downloads each day's key batch, matches
//! it with [`MatchIndex`] and derives its colour with [`evaluate`].
//!
//! Sightings are recorded compactly: a contact between two app users gives
//! each phone one window per 15-minute epoch of the contact (the EphID
//! changes every epoch, so a phone could not merge them), at most
//! `app.max_windows_per_contact`. A window keeps the EphID and sealed
//! metadata heard, its first sighting, its length and one calibrated RSSI
//! (the shadowing of the window); it becomes an [`ObservedWindow`] with one
//! sample per scanned minute when the phone matches. Windows are kept for
//! [`RETENTION_DAYS`], as on a phone.
//!
//! Each day the server puts the day's uploads in one batch, signs it, and
//! every phone verifies it, prepares it once for all ([`MatchIndex::prepare`]
//! then [`MatchIndex::with_ephid_tables_in`], in the memory of the day
//! before: the simulator's stand-in for millions of phones downloading the
//! same file). Every phone then looks up each window it stored on a day the
//! batch has keys for ([`MatchIndex::covers`]; other days need not be read,
//! as on a phone): [`MatchIndex::may_match_with`] probes it in place, and
//! the few that pass become full
//! windows, RSSI samples and all, for [`MatchIndex::match_windows_indexed`].
//! Each lookup is a single window's and its answer does not depend on the
//! others, so the simulator runs all phones' lookups of a stored day as one
//! sweep: the day's windows are kept in parts by
//! [`MatchIndex::probe_order`], each part probing one slice of the index
//! that stays in cache, and each exposure found goes back to the phone that
//! recorded the window. The lookups, their number and their answers are
//! those of every phone looking up its own store.

use crate::contacts::Contact;
use crate::grouped::{Grouped, Parts};
use crate::population::Population;
use crate::radio;
use crate::rng::{self, Stream};
use crate::scenario::{Mode, Scenario};
use greenlight_protocol::ed25519_dalek::SigningKey;
use greenlight_protocol::status::Cause;
use greenlight_protocol::time::{EPOCHS_PER_DAY, EPOCH_SECONDS, RETENTION_DAYS};
use greenlight_protocol::{
    evaluate, BatchNumber, BatchPayload, Colour, DailyKey, DayNumber, EncryptedMetadata, EphId,
    EpochFilter, EpochHash, EpochIndex, Exposure, ExposurePolicy, KeyBatch, MatchIndex,
    MatchOptions, Metadata, ObservedWindow, PositiveTest, PublishedKey, RegionId, Rssi,
    StatusInput, TableMemory, Timestamp, WindowKey,
};
use rayon::prelude::*;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Simulation day 0 is 2026-01-01.
pub const START_DAY: DayNumber = DayNumber(20_454);
/// The simulated health authority's region.
pub const REGION: &str = "SIM";
/// Seconds between two scans (one RSSI sample each), as `WindowConfig::default`.
const SAMPLE_SECS: u32 = 60;
/// Days a phone keeps windows and a patient may upload keys for.
pub const RETENTION: u32 = RETENTION_DAYS;
/// First epoch of the day in which contacts start (08:00).
const FIRST_CONTACT_EPOCH: u32 = 32;
/// Contacts per producer when grouping them by sender.
const CHUNK: usize = 16_384;
/// Bits of [`MatchIndex::probe_order`] that choose a window's part: 256
/// parts, so that the slice of a large batch's presence filter one part
/// probes stays in a core's cache.
const WINDOW_PART_BITS: u32 = 8;
/// Windows looked up at a time.
const LOOKUP_CHUNK: usize = 1_024;

/// One exposure window as a phone stores it, with the phone that stored
/// it, in 27 bytes (every field is bytes, so there is no padding): the day
/// is its [`DayWindows`]'s.
#[derive(Clone, Copy, Debug, Default)]
pub struct WindowRecord {
    /// The phone that recorded the window (little-endian agent id).
    receiver: [u8; 4],
    ephid: [u8; 16],
    metadata: [u8; 4],
    /// The epoch of the day it starts in (contacts start on an epoch).
    epoch: u8,
    /// Scans in the window, one a minute: 1 to 15.
    minutes: u8,
    rssi: i8,
}

impl WindowRecord {
    /// First sighting and last sighting of the window, stored on the day
    /// that starts at `day_start`.
    fn seen(&self, day_start: Timestamp) -> (Timestamp, Timestamp) {
        let first = Timestamp(day_start.0 + u64::from(self.epoch) * EPOCH_SECONDS);
        let last = Timestamp(first.0 + (u64::from(self.minutes) - 1) * u64::from(SAMPLE_SECS));
        (first, last)
    }

    /// The phone that recorded it.
    fn receiver(&self) -> u32 {
        u32::from_le_bytes(self.receiver)
    }
}

/// One day's windows of every phone, in parts by the top bits of
/// [`MatchIndex::probe_order`], each part in the order they were recorded.
#[derive(Debug)]
struct DayWindows {
    /// The simulation day they were recorded on.
    day: u32,
    parts: Vec<Vec<WindowRecord>>,
}

impl DayWindows {
    fn len(&self) -> usize {
        self.parts.iter().map(Vec::len).sum()
    }
}

/// A matching thread's buffers, reused from part to part.
#[derive(Debug, Default)]
struct Scratch {
    passed: Vec<usize>,
    windows: Vec<ObservedWindow>,
}

/// A window a phone broadcasts and another hears, grouped by the sender:
/// the sender derives its beacons once for all the windows it sends.
#[derive(Clone, Copy, Debug, Default)]
struct Sent {
    receiver: u32,
    epoch: u8,
    minutes: u8,
    rssi: i8,
}

/// What the server published on one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Publication {
    /// People who uploaded.
    pub uploads: u32,
    /// Entries of the batch: daily keys (compact) or epoch hashes (unlinkable).
    pub entries: u64,
    /// Size of the signed batch file, bytes.
    pub bytes: u64,
}

/// What the phones did on one day.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PhoneDay {
    /// Phones that went from no exposure quarantine to one.
    pub notified: u32,
    /// Windows looked up in the day's batch.
    pub windows_looked_up: u64,
    /// Windows that matched.
    pub matches: u64,
}

/// Time spent in each part of the protocol, for the benchmark.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProtocolTimings {
    /// Key derivation and sighting generation.
    pub sightings: Duration,
    /// Batch building, signing, verification and index preparation.
    pub publication: Duration,
    /// Every phone's lookups.
    pub matching: Duration,
    /// The status engine.
    pub status: Duration,
}

/// Every phone and the server.
#[derive(Debug)]
pub struct Phones {
    seed: u64,
    policy: ExposurePolicy,
    options: MatchOptions,
    region: RegionId,
    authority: SigningKey,
    mode: Mode,
    /// App users, by id.
    users: Vec<u32>,
    /// The last RETENTION_DAYS days of windows, oldest first.
    windows: VecDeque<DayWindows>,
    /// Matched exposures still relevant to the colour.
    exposures: Vec<Vec<Exposure>>,
    /// The user's own positive test, entered when uploading.
    positive_test: Vec<Option<PositiveTest>>,
    /// Phones whose colour the engine must decide: with exposures or a test.
    tracked: Vec<u32>,
    /// The colour each phone shows.
    pub colour: Vec<Colour>,
    /// Whether the phone is in a quarantine caused by exposure.
    pub exposure_quarantine: Vec<bool>,
    batch_number: u64,
    /// Buffers of [`Phones::record_sightings`]: by sender part, by window part.
    produced: Vec<Vec<Vec<WindowRecord>>>,
    /// The memory of the day's EphID tables, kept for the next day's.
    tables: TableMemory,
    /// The radio model's median distances, from the scenario.
    distances: radio::Distances,
    /// The day's windows grouped by sender, in memory kept from day to day.
    sent: Grouped<Sent>,
    /// Cumulative timings.
    pub timings: ProtocolTimings,
}

/// The daily key of `agent` on simulation day `day`: fresh for every day
/// (never chained), derived from the seed for reproducibility. A phone draws
/// its keys from the system's CSPRNG; the simulator needs keys that are
/// distinct and uniformly distributed, not secret, so four 64-bit hashes
/// of (seed, agent, day) make the 32 bytes.
pub fn daily_key(seed: u64, agent: u32, day: u32) -> DailyKey {
    let mut bytes = [0u8; 32];
    for (i, chunk) in bytes.chunks_exact_mut(8).enumerate() {
        let h = rng::hash(
            seed,
            Stream::Keys,
            u64::from(agent),
            u64::from(day),
            i as u64,
        );
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    DailyKey::from_bytes(bytes)
}

/// The protocol day of a simulation day.
pub fn protocol_day(day: u32) -> DayNumber {
    START_DAY.offset(i64::from(day))
}

impl Phones {
    /// Phones for the scenario's app users.
    pub fn new(s: &Scenario, pop: &Population) -> anyhow::Result<Phones> {
        let region = RegionId::new(REGION)?;
        let mut policy = ExposurePolicy::recommended(region.clone());
        policy.yellow_threshold_minutes = s.app.yellow_threshold_minutes;
        policy.red_threshold_minutes = s.app.red_threshold_minutes;
        policy.yellow_quarantine_days = s.app.yellow_quarantine_days;
        policy.red_quarantine_days = s.app.red_quarantine_days;
        let n = pop.len();
        let seed_bytes = rng::hash(s.seed, Stream::Keys, u64::MAX, 0, 0).to_le_bytes();
        Ok(Phones {
            seed: s.seed,
            options: MatchOptions::from(&policy),
            policy,
            region,
            authority: SigningKey::from_bytes(&std::array::from_fn(|i| {
                seed_bytes[i % 8] ^ i as u8
            })),
            mode: s.app.mode,
            users: (0..n as u32).filter(|&a| pop.app[a as usize]).collect(),
            windows: VecDeque::new(),
            exposures: vec![Vec::new(); n],
            positive_test: vec![None; n],
            tracked: Vec::new(),
            colour: vec![Colour::Green; n],
            exposure_quarantine: vec![false; n],
            batch_number: 0,
            produced: Vec::new(),
            sent: Grouped::build(Parts::new(n), Vec::new()),
            tables: TableMemory::default(),
            distances: radio::Distances::new(&s.radio),
            timings: ProtocolTimings::default(),
        })
    }

    /// The policy the phones apply.
    pub fn policy(&self) -> &ExposurePolicy {
        &self.policy
    }

    /// Number of app users.
    pub fn users(&self) -> usize {
        self.users.len()
    }

    /// Windows stored on all phones.
    pub fn stored_windows(&self) -> usize {
        self.windows.iter().map(DayWindows::len).sum()
    }

    /// Records the windows of the day's contacts between two app users.
    pub fn record_sightings(
        &mut self,
        s: &Scenario,
        pop: &Population,
        contacts: &[Contact],
        day: u32,
    ) {
        let started = Instant::now();
        let parts = Parts::new(pop.len());
        let seed = self.seed;
        let cap = s.app.max_windows_per_contact.clamp(1, EPOCHS_PER_DAY);
        // Contacts start at 08:00, earlier only if they are too long to fit.
        let first_epoch = FIRST_CONTACT_EPOCH.min(EPOCHS_PER_DAY - cap);
        // Each contact's windows, drawn once for both phones (the channel is
        // reciprocal), grouped by the phone that sends them, so that a
        // sender derives its day's EphIDs once (one keystream run).
        let by_sender: Vec<Vec<Vec<(u32, Sent)>>> = contacts
            .par_chunks(CHUNK)
            .enumerate()
            .map(|(chunk, cs)| {
                let mut buckets = parts.buckets();
                let app = cs
                    .iter()
                    .enumerate()
                    .filter(|(_, c)| pop.app[c.a as usize] && pop.app[c.b as usize]);
                for (i, c) in app {
                    let contact = (chunk * CHUNK + i) as u32;
                    let windows = u32::from(c.minutes).div_ceil(15).clamp(1, cap);
                    let key = (u64::from(c.a) << 32) | u64::from(c.b);
                    let latest = EPOCHS_PER_DAY - windows;
                    let span = latest.saturating_sub(first_epoch) + 1;
                    let u =
                        rng::uniform(seed, Stream::Radio, u64::from(day), key, u64::from(contact));
                    let start = (first_epoch + (u * f64::from(span)) as u32).min(latest);
                    let mut channel =
                        radio::Channel::new(&s.radio, &self.distances, seed, day, key, c.kind);
                    for w in 0..windows {
                        let minutes = (u32::from(c.minutes).saturating_sub(15 * w)).clamp(1, 15);
                        let loss = channel.next_loss();
                        for (sender, receiver) in [(c.a, c.b), (c.b, c.a)] {
                            buckets[parts.of(sender)].push((
                                sender,
                                Sent {
                                    receiver,
                                    epoch: (start + w) as u8,
                                    minutes: minutes as u8,
                                    rssi: radio::rssi(
                                        &s.radio,
                                        loss,
                                        pop.tx_error_db[sender as usize],
                                        pop.rx_error_db[receiver as usize],
                                    ),
                                },
                            ));
                        }
                    }
                }
                buckets
            })
            .collect();
        // Grouped in the memory of the day before.
        self.sent.rebuild(parts, &by_sender);
        drop(by_sender);
        let pday = protocol_day(day);
        let metadata = Metadata {
            tx_power_dbm: s.radio.tx_power_dbm,
        };
        let first_index =
            EpochIndex::new(first_epoch as u8).expect("an index below 96 is an epoch of the day");
        let sent = &self.sent;
        let window_parts = 1usize << WINDOW_PART_BITS;
        // Each producer's windows by part; kept from day to day, so that
        // tens of thousands of buffers are not allocated and freed daily.
        let mut produced = std::mem::take(&mut self.produced);
        produced.resize_with(parts.count(), Vec::new);
        produced
            .par_iter_mut()
            .enumerate()
            .for_each(|(p, buckets)| {
                buckets.resize_with(window_parts, Vec::new);
                buckets.iter_mut().for_each(Vec::clear);
                for sender in parts.agents(p) {
                    let list = sent.of(sender);
                    if list.is_empty() {
                        continue;
                    }
                    // What the sender broadcasts from the first contact epoch on.
                    let beacons = daily_key(seed, sender as u32, day)
                        .ephid_generator(pday)
                        .beacons_from(first_index, metadata);
                    for x in list {
                        // first_epoch ≤ start ≤ epoch < 96.
                        let beacon = EpochIndex::new(x.epoch)
                            .and_then(|i| beacons.get(i))
                            .expect("contacts lie in the epochs derived");
                        let part =
                            MatchIndex::probe_order(&beacon.ephid) >> (64 - WINDOW_PART_BITS);
                        buckets[part as usize].push(WindowRecord {
                            receiver: x.receiver.to_le_bytes(),
                            ephid: beacon.ephid.0,
                            metadata: beacon.metadata.0,
                            epoch: x.epoch,
                            minutes: x.minutes,
                            rssi: x.rssi,
                        });
                    }
                }
            });
        // The oldest day leaves the store; its memory takes the new day's
        // windows (fresh memory would cost a page fault per 4 KiB).
        let mut windows = if self.windows.len() == RETENTION_DAYS as usize {
            self.windows
                .pop_front()
                .map(|d| d.parts)
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        windows.resize_with(window_parts, Vec::new);
        let all = &produced;
        windows.par_iter_mut().enumerate().for_each(|(q, part)| {
            let len = all.iter().map(|b| b[q].len()).sum();
            part.clear();
            if part.capacity() < len {
                // Room to spare, so that a growing epidemic's next day fits.
                *part = Vec::with_capacity(len + len / 8);
            }
            for buckets in all {
                part.extend_from_slice(&buckets[q]);
            }
        });
        self.produced = produced;
        self.windows.push_back(DayWindows {
            day,
            parts: windows,
        });
        self.timings.sightings += started.elapsed();
    }

    /// Looks up `records`, stored on simulation day `day`, in `index`, as
    /// the phones that stored them would: each is probed in place with
    /// [`MatchIndex::may_match_with`], and those that pass become full
    /// [`ObservedWindow`]s (reusing `scratch`'s allocations) for
    /// [`MatchIndex::match_windows_indexed`]. Pushes each exposure found
    /// with the phone it is for onto `found`.
    fn look_up(
        &self,
        day: u32,
        records: &[WindowRecord],
        index: &MatchIndex,
        today: DayNumber,
        scratch: &mut Scratch,
        found: &mut Vec<(u32, Exposure)>,
    ) {
        let day_start = protocol_day(day).start();
        let key_of = |rec: &WindowRecord| {
            let (first_seen, last_seen) = rec.seen(day_start);
            WindowKey {
                ephid: EphId(rec.ephid),
                first_seen,
                last_seen,
            }
        };
        for chunk in records.chunks(LOOKUP_CHUNK) {
            scratch.passed.clear();
            index.may_match_with(chunk, key_of, self.options.epoch_skew, &mut scratch.passed);
            let buf = &mut scratch.windows;
            for (n, &i) in scratch.passed.iter().enumerate() {
                let rec = &chunk[i];
                let key = key_of(rec);
                // The RSSI samples' allocation is kept from window to window.
                let mut rssi = buf
                    .get_mut(n)
                    .map_or_else(|| Vec::with_capacity(15), |w| std::mem::take(&mut w.rssi));
                rssi.clear();
                rssi.resize(usize::from(rec.minutes).max(1), Rssi(rec.rssi));
                let window = ObservedWindow {
                    ephid: key.ephid,
                    metadata: EncryptedMetadata(rec.metadata),
                    first_seen: key.first_seen,
                    last_seen: key.last_seen,
                    rssi,
                };
                match buf.get_mut(n) {
                    Some(w) => *w = window,
                    None => buf.push(window),
                }
            }
            let passed = scratch.passed.len();
            if passed == 0 {
                continue;
            }
            let hits = index.match_windows_indexed(&buf[..passed], &self.options, today);
            found.extend(
                hits.into_iter()
                    .map(|(n, e)| (chunk[scratch.passed[n]].receiver(), e)),
            );
        }
    }

    /// An app user who tested positive on `result_day` and consented
    /// uploads on `day` the keys from `first_key_day` on; the phone takes
    /// note of its own positive test.
    pub fn upload_batch(
        &mut self,
        uploads: &[(u32, u32, u32, Option<u32>)],
        day: u32,
    ) -> anyhow::Result<(Option<KeyBatch>, Publication)> {
        let mut publication = Publication {
            uploads: uploads.len() as u32,
            ..Publication::default()
        };
        for &(agent, result_day, _, _) in uploads {
            let a = agent as usize;
            self.positive_test[a] = Some(PositiveTest {
                test_day: protocol_day(result_day),
            });
            if let Err(at) = self.tracked.binary_search(&agent) {
                self.tracked.insert(at, agent);
            }
        }
        if uploads.is_empty() {
            return Ok((None, publication));
        }
        let seed = self.seed;
        // (agent, key day, days since onset)
        let keys: Vec<(u32, u32, Option<i8>)> = uploads
            .iter()
            .flat_map(|&(agent, _, first, onset)| {
                (first..=day).map(move |d| {
                    let since = onset.map(|o| (i64::from(d) - i64::from(o)).clamp(-14, 14) as i8);
                    (agent, d, since)
                })
            })
            .collect();
        let payload = match self.mode {
            Mode::Compact => BatchPayload::Compact(
                keys.par_iter()
                    .map(|&(agent, d, since)| PublishedKey {
                        day: protocol_day(d),
                        key: daily_key(seed, agent, d),
                        days_since_onset: since,
                        origin: 0,
                    })
                    .collect(),
            ),
            Mode::Unlinkable => {
                let hashes: Vec<EpochHash> = keys
                    .par_iter()
                    .flat_map_iter(|&(agent, d, _)| {
                        let g = daily_key(seed, agent, d).ephid_generator(protocol_day(d));
                        EpochHash::for_epochs(&g, EpochIndex::all())
                    })
                    .collect();
                let mut filter = EpochFilter::with_capacity(hashes.len())?;
                for h in &hashes {
                    filter.insert(h);
                }
                BatchPayload::Unlinkable(filter)
            }
        };
        self.batch_number += 1;
        let batch = KeyBatch {
            region: self.region.clone(),
            number: BatchNumber(self.batch_number),
            start: protocol_day(day).start(),
            end: protocol_day(day + 1).start(),
            origins: vec![self.region.clone()],
            payload,
        };
        publication.entries = batch.payload.entries();
        let file = batch.sign(&self.authority)?;
        publication.bytes = file.len() as u64;
        let verified = KeyBatch::verify(&file, &self.region, &self.authority.verifying_key())?;
        Ok((Some(verified), publication))
    }

    /// Every phone looks the day's batch up, then every phone with
    /// exposures or a positive test asks the status engine for its colour
    /// on `today` (the morning after `day`). Calls `notified` for each
    /// phone that enters a quarantine caused by exposure.
    pub fn match_and_decide(
        &mut self,
        batch: Option<&KeyBatch>,
        today: DayNumber,
        mut notified: impl FnMut(u32),
    ) -> PhoneDay {
        let mut result = PhoneDay::default();
        if let Some(batch) = batch {
            let started = Instant::now();
            let index = MatchIndex::prepare(batch);
            let index = match self.mode {
                Mode::Compact => index.with_ephid_tables_in(&mut self.tables),
                Mode::Unlinkable => index,
            };
            self.timings.publication += started.elapsed();
            let started = Instant::now();
            // As a phone: windows of days without a published key (one day
            // either side for clock skew) need not be read at all.
            let days: Vec<&DayWindows> = self
                .windows
                .iter()
                .filter(|d| {
                    index.covers(
                        protocol_day(d.day).offset(-1),
                        protocol_day(d.day).offset(1),
                    )
                })
                .collect();
            let this = &*self;
            let index_ref = &index;
            // Every stored day's parts, oldest day first.
            let found: Vec<Vec<(u32, Exposure)>> = days
                .iter()
                .flat_map(|d| d.parts.iter().map(move |records| (d.day, records)))
                .filter(|(_, records)| !records.is_empty())
                .collect::<Vec<_>>()
                .into_par_iter()
                .map_init(Scratch::default, |scratch, (day, records)| {
                    let mut found = Vec::new();
                    this.look_up(day, records, index_ref, today, scratch, &mut found);
                    found
                })
                .collect();
            result.windows_looked_up = days.iter().map(|d| d.len() as u64).sum();
            let mut found: Vec<(u32, Exposure)> = found.into_iter().flatten().collect();
            // Stable: each phone's exposures stay in the order found.
            found.sort_by_key(|&(agent, _)| agent);
            result.matches = found.len() as u64;
            let before = self.tracked.len();
            let mut previous = None;
            for (agent, exposure) in found {
                self.exposures[agent as usize].push(exposure);
                if previous != Some(agent) {
                    self.tracked.push(agent);
                    previous = Some(agent);
                }
            }
            if self.tracked.len() > before {
                self.tracked.sort_unstable();
                self.tracked.dedup();
            }
            index.recycle_tables(&mut self.tables);
            self.timings.matching += started.elapsed();
        }

        let started = Instant::now();
        let policy = &self.policy;
        let longest = i64::from(
            policy
                .red_quarantine_days
                .max(policy.yellow_quarantine_days),
        );
        let checkins: Vec<DayNumber> = (START_DAY.0..=today.0).map(DayNumber).collect();
        let exposures = &mut self.exposures;
        let positive_test = &self.positive_test;
        // Exposures too old to hold anyone in quarantine no longer matter
        // (a phone with exposures is tracked).
        exposures
            .par_iter_mut()
            .filter(|e| !e.is_empty())
            .for_each(|e| e.retain(|e| e.day().offset(longest) > today));
        let exposures = &*exposures;
        let decided: Vec<(u32, Colour, bool)> = self
            .tracked
            .par_iter()
            .map(|&a| {
                let (test, exposures) = (positive_test[a as usize], &exposures[a as usize]);
                // Every app user checks in daily (see README: simplifications).
                // The engine asks only about days after a notification or a
                // test, so the check-ins before the earliest are left out.
                let earliest = exposures
                    .iter()
                    .map(|e| e.matched_on)
                    .chain(test.map(|t| t.test_day))
                    .min()
                    .unwrap_or(today);
                let from = checkins.partition_point(|&d| d <= earliest);
                let status = evaluate(
                    policy,
                    &StatusInput {
                        today,
                        positive_test: test,
                        exposures,
                        checkins: &checkins[from..],
                    },
                );
                let exposed = status
                    .reason
                    .active
                    .iter()
                    .any(|q| matches!(q.cause, Cause::Exposure { .. }));
                (a, status.colour, exposed)
            })
            .collect();
        let mut keep = Vec::with_capacity(self.tracked.len());
        for (a, colour, exposed) in decided {
            let i = a as usize;
            if exposed && !self.exposure_quarantine[i] {
                result.notified += 1;
                notified(a);
            }
            self.colour[i] = colour;
            self.exposure_quarantine[i] = exposed;
            let isolating = self.positive_test[i]
                .is_some_and(|t| t.test_day.offset(i64::from(self.policy.isolation_days)) > today);
            if colour != Colour::Green || !self.exposures[i].is_empty() || isolating {
                keep.push(a);
            }
        }
        self.tracked = keep;
        self.timings.status += started.elapsed();
        result
    }
}
