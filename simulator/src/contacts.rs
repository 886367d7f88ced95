//! The day's contacts: household (every pair, every day), workplace and
//! school (a daily fraction of the static links), random (a negative
//! binomial number per person, paired at random, regenerated daily), and
//! optionally venues and transit (visitors of the same place in the same
//! hour meet).
//!
//! Who may meet is decided by [`Presence`]: people in hospital meet
//! nobody, people isolating or in quarantine meet only their household.

use crate::population::Population;
use crate::rng::{self, Stream};
use crate::scenario::{ContactParams, Scenario};
use rand::seq::SliceRandom;
use rayon::prelude::*;

/// Where a contact happened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum ContactKind {
    /// At home.
    #[default]
    Household = 0,
    /// At the workplace or school.
    Work = 1,
    /// Anywhere else, at random.
    Random = 2,
    /// In a shop, restaurant or other venue.
    Venue = 3,
    /// On public transport.
    Transit = 4,
}

/// One contact between two people on one day.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Contact {
    /// One person.
    pub a: u32,
    /// The other.
    pub b: u32,
    /// Where they met.
    pub kind: ContactKind,
    /// How long, minutes.
    pub minutes: u16,
}

/// Whether a person can meet others today.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Presence {
    /// In hospital or dead.
    Absent = 0,
    /// Isolating or in quarantine: household contacts only.
    Home = 1,
    /// Out and about.
    Out = 2,
}

/// Hours in a day during which venues and transit are used.
const GATHERING_SLOTS: u64 = 12;
/// Largest random contact count drawn for one person on one day.
const MAX_RANDOM: usize = 64;

/// Cumulative negative-binomial probabilities of the random contact count,
/// one table per age band: a draw is a binary search.
#[derive(Debug)]
pub struct RandomContactTables {
    cdf: Vec<Vec<f64>>,
}

impl RandomContactTables {
    /// Tables for the scenario's means and dispersion.
    pub fn new(p: &ContactParams) -> RandomContactTables {
        let k = p.random_dispersion;
        let cdf = p
            .random_mean
            .iter()
            .map(|&mean| {
                let mut table = Vec::with_capacity(MAX_RANDOM + 1);
                if mean <= 0.0 {
                    table.resize(MAX_RANDOM + 1, 1.0);
                    return table;
                }
                // NB(k, p) with mean m: p = k / (k + m); P(0) = p^k,
                // P(n + 1) = P(n) · (n + k) / (n + 1) · (1 − p).
                let q = mean / (k + mean);
                let mut pmf = (k / (k + mean)).powf(k);
                let mut sum = 0.0;
                for n in 0..=MAX_RANDOM {
                    sum += pmf;
                    table.push(sum);
                    pmf *= (n as f64 + k) / (n as f64 + 1.0) * q;
                }
                table
            })
            .collect();
        RandomContactTables { cdf }
    }

    fn draw(&self, band: u8, u: f64) -> usize {
        let table = &self.cdf[usize::from(band)];
        table.partition_point(|&c| c <= u).min(MAX_RANDOM)
    }
}

fn minutes(seed: u64, day: u64, a: u32, b: u32, kind: ContactKind, max: u32) -> u16 {
    let u = rng::uniform(seed, Stream::Radio, day, pair(a, b), kind as u64);
    let span = f64::from(max.saturating_sub(5) + 1);
    (5 + (u * span) as u32).min(max) as u16
}

fn pair(a: u32, b: u32) -> u64 {
    (u64::from(a.min(b)) << 32) | u64::from(a.max(b))
}

/// Generates the day's contacts into `contacts` (emptied first; a buffer
/// kept from day to day spares the allocation of tens of megabytes daily).
/// Deterministic: the order and content of the result depend only on the
/// seed, the day and who is present.
pub fn generate(
    s: &Scenario,
    pop: &Population,
    presence: &[Presence],
    tables: &RandomContactTables,
    day: u32,
    contacts: &mut Vec<Contact>,
) {
    let seed = s.seed;
    let d = u64::from(day);
    let p = &s.contacts;
    let household_minutes = p.household_minutes.min(u32::from(u16::MAX)) as u16;

    // Random contacts: each person's count from the negative binomial,
    // then the "stubs" are shuffled and paired (configuration model).
    let counts: Vec<u8> = (0..pop.len())
        .into_par_iter()
        .map(|a| {
            if presence[a] != Presence::Out {
                return 0;
            }
            let u = rng::uniform(seed, Stream::Random, d, a as u64, 0);
            tables.draw(pop.age_band[a], u) as u8
        })
        .collect();
    let mut stubs: Vec<u32> = Vec::with_capacity(counts.iter().map(|&c| usize::from(c)).sum());
    for (a, &c) in counts.iter().enumerate() {
        stubs.extend(std::iter::repeat_n(a as u32, usize::from(c)));
    }
    drop(counts);
    // The shuffle is one sequence of draws, so it runs on one thread; the
    // household and workplace contacts are made meanwhile.
    rayon::join(
        || stubs.shuffle(&mut rng::small_rng(seed, Stream::Random, d, u64::MAX, 0)),
        || {
            contacts.clear();
            contacts.par_extend((0..pop.households()).into_par_iter().flat_map_iter(|h| {
                let (start, end) = (pop.household_start[h], pop.household_start[h + 1]);
                (start..end).flat_map(move |a| {
                    (a + 1..end).filter_map(move |b| {
                        (presence[a as usize] != Presence::Absent
                            && presence[b as usize] != Presence::Absent)
                            .then_some(Contact {
                                a,
                                b,
                                kind: ContactKind::Household,
                                minutes: household_minutes,
                            })
                    })
                })
            }));

            let work = (0..pop.len() as u32)
                .into_par_iter()
                .filter(|&a| presence[a as usize] == Presence::Out)
                .flat_map_iter(|a| {
                    pop.links(a)
                        .iter()
                        .filter(move |&&b| {
                            b > a
                                && presence[b as usize] == Presence::Out
                                && rng::uniform(seed, Stream::Work, d, pair(a, b), 0)
                                    < p.work_daily_fraction
                        })
                        .map(move |&b| Contact {
                            a,
                            b,
                            kind: ContactKind::Work,
                            minutes: minutes(seed, d, a, b, ContactKind::Work, p.work_max_minutes),
                        })
                });
            contacts.par_extend(work);
        },
    );
    let random = stubs.par_chunks_exact(2).filter_map(|pair_of| {
        let (a, b) = (pair_of[0], pair_of[1]);
        (a != b).then(|| Contact {
            a,
            b,
            kind: ContactKind::Random,
            minutes: minutes(seed, d, a, b, ContactKind::Random, p.random_max_minutes),
        })
    });
    contacts.par_extend(random);

    if p.venues {
        gatherings(
            s,
            pop,
            presence,
            day,
            ContactKind::Venue,
            p.venue_visit_probability,
            p.venues_per_1000,
            p.venue_contacts,
            contacts,
        );
    }
    if p.transit {
        gatherings(
            s,
            pop,
            presence,
            day,
            ContactKind::Transit,
            p.transit_probability,
            p.transit_vehicles_per_1000,
            p.transit_contacts,
            contacts,
        );
    }
}

/// People who visit the same place in the same hour meet: each visitor
/// meets up to `per_visit` others who came just before or after.
#[allow(clippy::too_many_arguments)]
fn gatherings(
    s: &Scenario,
    pop: &Population,
    presence: &[Presence],
    day: u32,
    kind: ContactKind,
    probability: f64,
    places_per_1000: f64,
    per_visit: u32,
    out: &mut Vec<Contact>,
) {
    let seed = s.seed;
    let d = u64::from(day);
    let places = ((pop.len() as f64 * places_per_1000 / 1000.0).ceil() as u64).max(1);
    let mut visits: Vec<(u64, u32)> = (0..pop.len() as u32)
        .into_par_iter()
        .filter_map(|a| {
            if presence[a as usize] != Presence::Out {
                return None;
            }
            let h = rng::hash(seed, Stream::Gathering, d, u64::from(a), kind as u64);
            if rng::unit(h) >= probability {
                return None;
            }
            let place = (h >> 8) % (places * GATHERING_SLOTS);
            Some((place, a))
        })
        .collect();
    visits.par_sort_unstable();
    let reach = per_visit.div_ceil(2) as usize;
    let (max_minutes, _) = match kind {
        ContactKind::Transit => (30, ()),
        _ => (45, ()),
    };
    for i in 0..visits.len() {
        for j in i + 1..(i + 1 + reach).min(visits.len()) {
            if visits[j].0 != visits[i].0 {
                break;
            }
            let (a, b) = (visits[i].1, visits[j].1);
            out.push(Contact {
                a,
                b,
                kind,
                minutes: minutes(seed, d, a, b, kind, max_minutes),
            });
        }
    }
}
