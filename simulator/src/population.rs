//! The synthetic population: ages, households, the static workplace and
//! school networks, and who carries a phone with the app.
//!
//! Per-agent data is kept as struct-of-arrays indexed by agent id. Members
//! of a household have consecutive ids, so a household is a range.
//!
//! Simplifications (against OpenABM-Covid19): ages are drawn independently
//! of the household (OpenABM samples reference households); one small-world
//! network per age group (OpenABM also links some adults into school
//! networks).

use crate::rng::{self, Stream};
use crate::scenario::Scenario;
use rand::seq::SliceRandom;
use rand::Rng;

/// Probability that a small-world link is rewired to a random member
/// (Watts–Strogatz; OpenABM uses small-world networks for workplaces).
const REWIRING: f64 = 0.1;

/// Everyone, as struct-of-arrays.
#[derive(Debug)]
pub struct Population {
    /// Age band 0–8 (0–9, 10–19, …, 80+).
    pub age_band: Vec<u8>,
    /// Household `h` is agents `household_start[h] .. household_start[h + 1]`.
    pub household_start: Vec<u32>,
    /// Workplace/school links of agent `a`: `work_links[work_offsets[a] .. work_offsets[a + 1]]`.
    pub work_offsets: Vec<u32>,
    /// Link targets, both directions stored.
    pub work_links: Vec<u32>,
    /// Whether the agent runs the app.
    pub app: Vec<bool>,
    /// Transmit calibration error of the agent's phone, dB.
    pub tx_error_db: Vec<f32>,
    /// Receive calibration error of the agent's phone, dB.
    pub rx_error_db: Vec<f32>,
    /// Expected contacts per person per day when nobody stays home.
    pub mean_daily_contacts: f64,
}

impl Population {
    /// Number of agents.
    pub fn len(&self) -> usize {
        self.age_band.len()
    }

    /// Whether there is nobody.
    pub fn is_empty(&self) -> bool {
        self.age_band.is_empty()
    }

    /// Number of households.
    pub fn households(&self) -> usize {
        self.household_start.len() - 1
    }

    /// Workplace/school links of one agent.
    pub fn links(&self, agent: u32) -> &[u32] {
        let a = agent as usize;
        &self.work_links[self.work_offsets[a] as usize..self.work_offsets[a + 1] as usize]
    }

    /// Builds the population of a scenario, deterministically from its seed.
    pub fn build(s: &Scenario) -> Population {
        let n = s.population.agents as usize;
        let mut rng = rng::small_rng(s.seed, Stream::Population, 0, 0, 0);
        let mut household_start = vec![0u32];
        let mut filled = 0usize;
        while filled < n {
            let size = draw(&mut rng, &s.population.household_size_fractions) + 1;
            filled = (filled + size).min(n);
            household_start.push(filled as u32);
        }
        let age_band: Vec<u8> = (0..n)
            .map(|_| draw(&mut rng, &s.population.age_fractions) as u8)
            .collect();

        let (work_offsets, work_links) = work_networks(s, &age_band);

        let app: Vec<bool> = (0..n as u64)
            .map(|a| rng::uniform(s.seed, Stream::Devices, a, 0, 0) < s.app.adoption)
            .collect();
        let error = |a: u64, which: u64, max: f64| {
            ((rng::uniform(s.seed, Stream::Devices, a, which, 0) * 2.0 - 1.0) * max) as f32
        };
        let tx_error_db = (0..n as u64)
            .map(|a| error(a, 1, s.radio.tx_error_db))
            .collect();
        let rx_error_db = (0..n as u64)
            .map(|a| error(a, 2, s.radio.rx_error_db))
            .collect();

        let mut expected = 0.0;
        for w in household_start.windows(2) {
            let size = f64::from(w[1] - w[0]);
            expected += size * (size - 1.0);
        }
        for (a, band) in age_band.iter().enumerate() {
            let degree = f64::from(work_offsets[a + 1] - work_offsets[a]);
            expected += degree * s.contacts.work_daily_fraction;
            expected += s.contacts.random_mean[usize::from(*band)];
        }
        let mean_daily_contacts = (expected / n as f64).max(1.0);

        Population {
            age_band,
            household_start,
            work_offsets,
            work_links,
            app,
            tx_error_db,
            rx_error_db,
            mean_daily_contacts,
        }
    }
}

/// Index drawn from a discrete distribution given as fractions.
fn draw(rng: &mut impl Rng, fractions: &[f64]) -> usize {
    let total: f64 = fractions.iter().sum();
    let mut u = rng.gen::<f64>() * total;
    for (i, f) in fractions.iter().enumerate() {
        if u < *f {
            return i;
        }
        u -= f;
    }
    fractions.len() - 1
}

/// The network an age band works or studies in: primary school, secondary
/// school, working age, and two retired groups (as OpenABM).
fn network_of(band: u8) -> usize {
    match band {
        0 => 0,
        1 => 1,
        2..=6 => 2,
        7 => 3,
        _ => 4,
    }
}

/// Small-world networks, one per group: a ring lattice over the shuffled
/// members with `degree / 2` neighbours each side, each link rewired with
/// probability [`REWIRING`]. Returns CSR offsets and targets.
fn work_networks(s: &Scenario, age_band: &[u8]) -> (Vec<u32>, Vec<u32>) {
    let n = age_band.len();
    let mut rng = rng::small_rng(s.seed, Stream::Network, 0, 0, 0);
    let mut members: [Vec<u32>; 5] = Default::default();
    let mut degree = [0.0f64; 5];
    let mut counts = [0usize; 5];
    for (a, &band) in age_band.iter().enumerate() {
        let g = network_of(band);
        members[g].push(a as u32);
        degree[g] += s.contacts.work_degree[usize::from(band)];
        counts[g] += 1;
    }
    let mut edges: Vec<(u32, u32)> = Vec::new();
    for g in 0..5 {
        let m = &mut members[g];
        if m.len() < 2 {
            continue;
        }
        m.shuffle(&mut rng);
        let mean = degree[g] / counts[g] as f64;
        let half = ((mean / 2.0).round() as usize).min(m.len() / 2);
        for i in 0..m.len() {
            for j in 1..=half {
                let mut b = m[(i + j) % m.len()];
                if rng.gen::<f64>() < REWIRING {
                    b = m[rng.gen_range(0..m.len())];
                }
                if b != m[i] {
                    edges.push((m[i], b));
                }
            }
        }
    }
    let mut offsets = vec![0u32; n + 1];
    for &(a, b) in &edges {
        offsets[a as usize + 1] += 1;
        offsets[b as usize + 1] += 1;
    }
    for i in 0..n {
        offsets[i + 1] += offsets[i];
    }
    let mut next = offsets.clone();
    let mut links = vec![0u32; offsets[n] as usize];
    for &(a, b) in &edges {
        links[next[a as usize] as usize] = b;
        next[a as usize] += 1;
        links[next[b as usize] as usize] = a;
        next[b as usize] += 1;
    }
    (offsets, links)
}
