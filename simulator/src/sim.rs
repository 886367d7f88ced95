//! The daily loop: who is present, who meets whom, who infects whom, what
//! the phones record, who tests positive and uploads, what the server
//! publishes, what the phones match, and who stays home.

use crate::app::{self, Phones, ProtocolTimings};
use crate::contacts::{self, Contact, ContactKind, Presence, RandomContactTables};
use crate::disease::{Health, Infectiousness, INFECTIOUS_WEIGHT_MIN, NEVER};
use crate::population::Population;
use crate::rng::{self, Stream};
use crate::scenario::Scenario;
use greenlight_protocol::Colour;
use rayon::prelude::*;
use serde::Serialize;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One row of the per-day CSV.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct DailyRecord {
    /// Simulation day, from 0.
    pub day: u32,
    /// Calendar date.
    pub date: String,
    /// Infections on this day.
    pub new_infections: u64,
    /// Infections so far, the initial ones included.
    pub cumulative_infections: u64,
    /// People infectious today.
    pub infectious: u64,
    /// People in hospital today.
    pub hospitalised: u64,
    /// Deaths so far.
    pub deaths: u64,
    /// Positive test results today.
    pub positive_tests: u64,
    /// People isolating after a positive test today.
    pub isolating: u64,
    /// People staying home because their app is yellow or red after an exposure.
    pub quarantined: u64,
    /// Contacts today.
    pub contacts: u64,
    /// App users whose phone is green.
    pub green: u64,
    /// App users whose phone is yellow.
    pub yellow: u64,
    /// App users whose phone is red.
    pub red: u64,
    /// Phones that entered an exposure quarantine (notified for today).
    pub notifications: u64,
    /// Of those, people who had a contact with an infectious person in the
    /// 14 days before.
    pub notifications_true: u64,
    /// The others.
    pub notifications_false: u64,
    /// People who uploaded.
    pub uploads: u64,
    /// Entries of the day's batch (keys or epoch hashes).
    pub batch_entries: u64,
    /// Bytes of the signed batch.
    pub batch_bytes: u64,
    /// Windows stored on all phones.
    pub stored_windows: u64,
    /// Windows the phones looked up in the day's batch.
    pub windows_looked_up: u64,
    /// Windows that matched.
    pub matched_windows: u64,
}

/// Totals of a run.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    /// Scenario name.
    pub name: String,
    /// Agents.
    pub agents: u64,
    /// Days simulated.
    pub days: u32,
    /// App users.
    pub app_users: u64,
    /// Infections, initial ones included.
    pub infections: u64,
    /// Infections / agents.
    pub attack_rate: f64,
    /// Day with the most new infections.
    pub peak_day: u32,
    /// New infections on that day.
    pub peak_new_infections: u64,
    /// Hospital admissions.
    pub hospitalisations: u64,
    /// Deaths.
    pub deaths: u64,
    /// Positive test results.
    pub positive_tests: u64,
    /// Person-days of isolation after a positive test.
    pub isolation_person_days: u64,
    /// Person-days of quarantine after an app notification.
    pub quarantine_person_days: u64,
    /// Phones that entered an exposure quarantine.
    pub notifications: u64,
    /// Of those, people with an infectious contact in the 14 days before.
    pub notifications_true: u64,
    /// The others.
    pub notifications_false: u64,
    /// notifications_true / notifications.
    pub notification_precision: f64,
    /// Of the notified, the fraction infected within 14 days before or
    /// after the notification.
    pub secondary_attack_rate_notified: f64,
    /// People who uploaded.
    pub uploads: u64,
    /// Batch entries published (keys or epoch hashes).
    pub batch_entries: u64,
    /// Batches published.
    pub batches: u64,
    /// Mean entries of a published batch.
    pub mean_batch_entries: f64,
    /// Largest batch.
    pub max_batch_entries: u64,
    /// Bytes published.
    pub batch_bytes: u64,
    /// Windows looked up over the run.
    pub windows_looked_up: u64,
}

/// Wall-clock time by phase, for the benchmark (never written to the
/// deterministic outputs).
#[derive(Clone, Copy, Debug, Default)]
pub struct Timings {
    /// Building the population.
    pub setup: Duration,
    /// Generating contacts.
    pub contacts: Duration,
    /// Transmission and the course of infections.
    pub disease: Duration,
    /// The protocol's parts.
    pub protocol: ProtocolTimings,
    /// The whole run.
    pub total: Duration,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct RunResult {
    /// The scenario run.
    pub scenario: Scenario,
    /// One record per day.
    pub days: Vec<DailyRecord>,
    /// Totals.
    pub summary: Summary,
    /// Wall-clock times.
    pub timings: Timings,
}

/// Runs a scenario; `progress` is called after each day with the day number.
// Per-agent state is struct-of-arrays: loops index several arrays by agent.
#[allow(clippy::needless_range_loop)]
pub fn run(s: &Scenario, mut progress: impl FnMut(u32)) -> anyhow::Result<RunResult> {
    let started = Instant::now();
    let mut timings = Timings::default();
    let pop = Population::build(s);
    let n = pop.len();
    let mut health = Health::new(n);
    let infectiousness = Infectiousness::new(&s.disease);
    let tables = RandomContactTables::new(&s.contacts);
    let mut phones = Phones::new(s, &pop)?;
    let isolation_days = u16::from(phones.policy().isolation_days);
    // Ground truth: 1 + the last day each person met someone infectious.
    let last_infectious_contact: Vec<AtomicU16> = (0..n).map(|_| AtomicU16::new(0)).collect();
    let infected_by: Vec<AtomicU64> = (0..n).map(|_| AtomicU64::new(u64::MAX)).collect();
    let mut isolating_until = vec![0u16; n];
    let mut complies = vec![false; n];
    let mut notified_log: Vec<(u32, u32)> = Vec::new();
    let mut days = Vec::with_capacity(s.days as usize);
    // The day's contacts, in a buffer kept from day to day.
    let mut contacts: Vec<Contact> = Vec::new();
    let mut cumulative = 0u64;

    let mut seeds: Vec<u32> = (0..n as u32).collect();
    seeds.sort_by_key(|&a| rng::hash(s.seed, Stream::Seeding, u64::from(a), 0, 0));
    for &a in seeds.iter().take(s.initial_infections as usize) {
        health.infect(s, a as usize, pop.age_band[a as usize], 0);
        cumulative += 1;
    }
    drop(seeds);
    timings.setup = started.elapsed();

    let mut summary = Summary {
        name: s.name.clone(),
        agents: n as u64,
        days: s.days,
        app_users: phones.users() as u64,
        ..Summary::default()
    };

    for day in 0..s.days {
        let t = day as u16;
        let mut rec = DailyRecord {
            day,
            date: app::protocol_day(day).to_string(),
            ..DailyRecord::default()
        };

        // Test results of the day: isolation, and uploads due today (in
        // order of agent: rayon's reduce keeps the order of the parts).
        let (positive_tests, hospitalisations, uploads) = isolating_until
            .par_iter_mut()
            .enumerate()
            .fold(
                || (0u64, 0u64, Vec::new()),
                |(mut positive, mut hospital, mut uploads), (a, isolating)| {
                    let result = health.positive_result[a];
                    if result == t {
                        positive += 1;
                        if rng::uniform(s.seed, Stream::Compliance, a as u64, u64::from(t), 0)
                            < s.testing.isolation_compliance
                        {
                            *isolating = t.saturating_add(isolation_days);
                        }
                    }
                    if result != NEVER
                        && pop.app[a]
                        && u32::from(result) + s.app.upload_delay_days == day
                        && rng::uniform(s.seed, Stream::Consent, a as u64, 0, 0)
                            < s.app.upload_consent
                    {
                        let onset = health.onset[a];
                        let anchor = if onset == NEVER { result } else { onset };
                        let first = u32::from(anchor)
                            .saturating_sub(s.app.upload_days_before_onset)
                            .max(day.saturating_sub(app::RETENTION - 1));
                        let onset = (onset != NEVER).then_some(u32::from(onset));
                        uploads.push((a as u32, u32::from(result), first, onset));
                    }
                    if health.hospital[a] == t {
                        hospital += 1;
                    }
                    (positive, hospital, uploads)
                },
            )
            .reduce(
                || (0, 0, Vec::new()),
                |(p1, h1, mut u1), (p2, h2, u2)| {
                    u1.extend(u2);
                    (p1 + p2, h1 + h2, u1)
                },
            );
        rec.positive_tests = positive_tests;
        summary.hospitalisations += hospitalisations;

        // Who can meet whom, and why not: in hospital, isolating after a
        // positive test, or in quarantine after a notification.
        let mut presence = vec![Presence::Out; n];
        let counts = presence
            .par_iter_mut()
            .enumerate()
            .map(|(a, place)| {
                let (here, count) = if health.absent(a, t) {
                    (Presence::Absent, [u64::from(!health.dead(a, t)), 0, 0])
                } else if isolating_until[a] > t {
                    (Presence::Home, [0, 1, 0])
                } else if phones.exposure_quarantine[a] && complies[a] {
                    (Presence::Home, [0, 0, 1])
                } else {
                    (Presence::Out, [0, 0, 0])
                };
                *place = here;
                count
            })
            .reduce(|| [0; 3], add);
        [rec.hospitalised, rec.isolating, rec.quarantined] = counts;

        let phase = Instant::now();
        contacts::generate(s, &pop, &presence, &tables, day, &mut contacts);
        rec.contacts = contacts.len() as u64;
        timings.contacts += phase.elapsed();

        let phase = Instant::now();
        transmit(
            s,
            &pop,
            &health,
            &infectiousness,
            &contacts,
            t,
            &last_infectious_contact,
            &infected_by,
        );
        let infected: Vec<usize> = (0..n)
            .into_par_iter()
            .filter(|&a| infected_by[a].swap(u64::MAX, Ordering::Relaxed) != u64::MAX)
            .collect();
        for &a in &infected {
            health.infect(s, a, pop.age_band[a], t);
        }
        rec.new_infections = infected.len() as u64;
        cumulative += rec.new_infections;
        if day == 0 {
            rec.new_infections += u64::from(s.initial_infections);
        }
        timings.disease += phase.elapsed();

        if phones.users() > 0 {
            phones.record_sightings(s, &pop, &contacts, day);
        }
        let phase = Instant::now();
        let (batch, publication) = phones.upload_batch(&uploads, day)?;
        phones.timings.publication += phase.elapsed();
        let tomorrow = app::protocol_day(day + 1);
        let mut newly_notified = Vec::new();
        let phone_day = phones.match_and_decide(batch.as_ref(), tomorrow, |a| {
            newly_notified.push(a);
        });
        for a in newly_notified {
            let i = a as usize;
            complies[i] = rng::uniform(s.seed, Stream::Compliance, u64::from(a), u64::from(t), 1)
                < s.app.quarantine_compliance;
            let last = last_infectious_contact[i].load(Ordering::Relaxed);
            if last > 0 && u32::from(last - 1) + 14 >= day {
                rec.notifications_true += 1;
            } else {
                rec.notifications_false += 1;
            }
            notified_log.push((a, day + 1));
        }
        rec.notifications = u64::from(phone_day.notified);
        rec.uploads = u64::from(publication.uploads);
        rec.batch_entries = publication.entries;
        rec.batch_bytes = publication.bytes;
        rec.windows_looked_up = phone_day.windows_looked_up;
        rec.matched_windows = phone_day.matches;
        rec.stored_windows = phones.stored_windows() as u64;

        let counts = (0..n)
            .into_par_iter()
            .map(|a| {
                let mut c = [0u64; 5];
                if pop.app[a] {
                    c[match phones.colour[a] {
                        Colour::Green => 0,
                        Colour::Yellow => 1,
                        Colour::Red => 2,
                    }] = 1;
                }
                let infected = health.infected[a];
                if infected != NEVER && infected <= t && t < health.end[a] && !health.absent(a, t) {
                    c[3] = 1;
                }
                c[4] = u64::from(health.dead(a, t));
                c
            })
            .reduce(|| [0; 5], add);
        [rec.green, rec.yellow, rec.red, rec.infectious, rec.deaths] = counts;
        rec.cumulative_infections = cumulative;
        days.push(rec);
        progress(day);
    }

    // Totals.
    for d in &days {
        if d.new_infections > summary.peak_new_infections {
            summary.peak_new_infections = d.new_infections;
            summary.peak_day = d.day;
        }
        summary.positive_tests += d.positive_tests;
        summary.isolation_person_days += d.isolating;
        summary.quarantine_person_days += d.quarantined;
        summary.notifications += d.notifications;
        summary.notifications_true += d.notifications_true;
        summary.notifications_false += d.notifications_false;
        summary.uploads += d.uploads;
        summary.batch_entries += d.batch_entries;
        summary.batch_bytes += d.batch_bytes;
        summary.windows_looked_up += d.windows_looked_up;
        if d.batch_bytes > 0 {
            summary.batches += 1;
        }
        summary.max_batch_entries = summary.max_batch_entries.max(d.batch_entries);
    }
    summary.infections = cumulative;
    summary.attack_rate = ratio(cumulative, n as u64);
    summary.deaths = days.last().map_or(0, |d| d.deaths);
    summary.notification_precision = ratio(summary.notifications_true, summary.notifications);
    summary.mean_batch_entries = if summary.batches > 0 {
        summary.batch_entries as f64 / summary.batches as f64
    } else {
        0.0
    };
    let infected_near = notified_log
        .iter()
        .filter(|&&(a, d)| {
            let i = health.infected[a as usize];
            i != NEVER && u32::from(i) + 14 >= d && u32::from(i) <= d + 14
        })
        .count();
    summary.secondary_attack_rate_notified = ratio(infected_near as u64, notified_log.len() as u64);

    timings.protocol = phones.timings;
    timings.total = started.elapsed();
    Ok(RunResult {
        scenario: s.clone(),
        days,
        summary,
        timings,
    })
}

/// Counts added element by element.
fn add<const N: usize>(a: [u64; N], b: [u64; N]) -> [u64; N] {
    std::array::from_fn(|i| a[i] + b[i])
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Transmission on every contact, in parallel; each infection's source is
/// the lowest-numbered transmitting contact, so the result does not depend
/// on the order threads run in.
#[allow(clippy::too_many_arguments)]
fn transmit(
    s: &Scenario,
    pop: &Population,
    health: &Health,
    infectiousness: &Infectiousness,
    contacts: &[Contact],
    t: u16,
    last_infectious_contact: &[AtomicU16],
    infected_by: &[AtomicU64],
) {
    let k = &s.contacts;
    let scale = s.disease.infectious_rate / pop.mean_daily_contacts;
    contacts.par_iter().enumerate().for_each(|(i, c)| {
        let factor = match c.kind {
            ContactKind::Household => k.household_factor,
            ContactKind::Work => k.work_factor,
            ContactKind::Random => k.random_factor,
            ContactKind::Venue | ContactKind::Transit => k.venue_factor,
        };
        for (dir, (x, y)) in [(c.a, c.b), (c.b, c.a)].into_iter().enumerate() {
            let w = infectiousness.of(health, x as usize, t);
            if w <= 0.0 {
                continue;
            }
            let y = y as usize;
            if w >= INFECTIOUS_WEIGHT_MIN {
                last_infectious_contact[y].fetch_max(t + 1, Ordering::Relaxed);
            }
            if !health.susceptible(y) {
                continue;
            }
            let p = 1.0 - (-scale * w * factor).exp();
            if rng::uniform(
                s.seed,
                Stream::Transmission,
                u64::from(t),
                i as u64,
                dir as u64,
            ) < p
            {
                infected_by[y].fetch_min(i as u64 * 2 + dir as u64, Ordering::Relaxed);
            }
        }
    });
}
