//! The course of an infection, per agent, as struct-of-arrays of days.
//!
//! An infection on day `t` is infectious from day `t` on with a weight that
//! follows the generation-time distribution (Weibull, Ferretti et al.
//! 2020), scaled down for asymptomatic courses (Buitrago-Garcia et al.
//! 2020). Symptomatic courses show symptoms after a log-normal incubation
//! period (Lauer et al. 2020), which puts part of the transmission before
//! onset, as He et al. 2020 observed. Hospitalisation and death depend on
//! age (Verity et al. 2020). Symptomatic people are tested with a delay and
//! a sensitivity; hospital patients are always tested.

use crate::rng::{self, Stream};
use crate::scenario::{DiseaseParams, Scenario};
use rand::Rng;
use rand_distr::{Distribution, LogNormal};

/// "Never" for a day field.
pub const NEVER: u16 = u16::MAX;
/// Days after infection with a non-zero infectiousness weight.
pub const INFECTIOUS_DAYS: usize = 21;
/// Smallest daily weight that counts a contact as "infectious" when
/// judging notifications against the ground truth.
pub const INFECTIOUS_WEIGHT_MIN: f64 = 0.01;

/// The disease state of every agent.
#[derive(Debug)]
pub struct Health {
    /// Day of infection.
    pub infected: Vec<u16>,
    /// Day of symptom onset (NEVER for asymptomatic courses).
    pub onset: Vec<u16>,
    /// Day of hospital admission.
    pub hospital: Vec<u16>,
    /// Day of recovery, discharge or death.
    pub end: Vec<u16>,
    /// Whether the course ends in death.
    pub dies: Vec<bool>,
    /// Day a positive test result is known.
    pub positive_result: Vec<u16>,
    /// Whether the course is asymptomatic.
    pub asymptomatic: Vec<bool>,
}

/// Infectiousness by days since infection.
#[derive(Debug, Clone)]
pub struct Infectiousness {
    weights: [f64; INFECTIOUS_DAYS],
    asymptomatic: f64,
}

impl Infectiousness {
    /// The Weibull generation-time mass of each day since infection.
    pub fn new(p: &DiseaseParams) -> Infectiousness {
        let cdf = |x: f64| 1.0 - (-(x / p.generation_scale).powf(p.generation_shape)).exp();
        let mut weights = [0.0; INFECTIOUS_DAYS];
        for (t, w) in weights.iter_mut().enumerate() {
            *w = cdf(t as f64 + 1.0) - cdf(t as f64);
        }
        let total: f64 = weights.iter().sum();
        for w in &mut weights {
            *w /= total;
        }
        Infectiousness {
            weights,
            asymptomatic: p.asymptomatic_infectiousness,
        }
    }

    /// The weight of agent `a` on `day` (0 if not infectious).
    #[inline]
    pub fn of(&self, health: &Health, a: usize, day: u16) -> f64 {
        let t = health.infected[a];
        if t == NEVER || day < t {
            return 0.0;
        }
        let tau = usize::from(day - t);
        if tau >= INFECTIOUS_DAYS || day >= health.end[a] {
            return 0.0;
        }
        let w = self.weights[tau];
        if health.asymptomatic[a] {
            w * self.asymptomatic
        } else {
            w
        }
    }

    /// The daily weights, for reports.
    pub fn weights(&self) -> &[f64; INFECTIOUS_DAYS] {
        &self.weights
    }
}

impl Health {
    /// Everyone susceptible.
    pub fn new(n: usize) -> Health {
        Health {
            infected: vec![NEVER; n],
            onset: vec![NEVER; n],
            hospital: vec![NEVER; n],
            end: vec![NEVER; n],
            dies: vec![false; n],
            positive_result: vec![NEVER; n],
            asymptomatic: vec![false; n],
        }
    }

    /// Whether the agent has never been infected.
    #[inline]
    pub fn susceptible(&self, a: usize) -> bool {
        self.infected[a] == NEVER
    }

    /// Whether the agent is in hospital (or dead) on `day`.
    #[inline]
    pub fn absent(&self, a: usize, day: u16) -> bool {
        (self.hospital[a] != NEVER && day >= self.hospital[a])
            && (day < self.end[a] || self.dies[a])
    }

    /// Whether the agent has died by `day`.
    pub fn dead(&self, a: usize, day: u16) -> bool {
        self.dies[a] && day >= self.end[a]
    }

    /// Infects agent `a` (age band `band`) on `day` and draws the whole
    /// course at once.
    pub fn infect(&mut self, s: &Scenario, a: usize, band: u8, day: u16) {
        let course = Course::draw(s, a, band, day);
        self.infected[a] = day;
        self.onset[a] = course.onset;
        self.hospital[a] = course.hospital;
        self.end[a] = course.end;
        self.dies[a] = course.dies;
        self.positive_result[a] = course.positive_result;
        self.asymptomatic[a] = course.asymptomatic;
    }
}

/// One infection's course, drawn at infection.
#[derive(Debug, Clone, Copy)]
pub struct Course {
    onset: u16,
    hospital: u16,
    end: u16,
    dies: bool,
    positive_result: u16,
    asymptomatic: bool,
}

impl Course {
    /// Draws the course of agent `a` infected on `day`; a pure function of
    /// the seed, the agent and the day.
    pub fn draw(s: &Scenario, a: usize, band: u8, day: u16) -> Course {
        let d = &s.disease;
        let t = &s.testing;
        let band = usize::from(band);
        let mut rng = rng::small_rng(s.seed, Stream::Course, a as u64, u64::from(day), 0);
        let add = |x: u16, y: u32| {
            x.saturating_add(y.min(u32::from(u16::MAX - 1)) as u16)
                .min(NEVER - 1)
        };
        let asymptomatic = rng.gen::<f64>() < d.asymptomatic_fraction;
        let mut c = Course {
            onset: NEVER,
            hospital: NEVER,
            end: add(day, d.recovery_days),
            dies: false,
            positive_result: NEVER,
            asymptomatic,
        };
        if asymptomatic {
            return c;
        }
        let incubation = LogNormal::new(d.incubation_log_mean, d.incubation_log_sd)
            .map(|l| l.sample(&mut rng))
            .unwrap_or(5.5);
        c.onset = add(day, (incubation.round() as u32).max(1));
        // Verity et al. give P(hospital | infection); condition on symptoms.
        let symptomatic = (1.0 - d.asymptomatic_fraction).max(1e-9);
        let p_hospital = (d.hospitalisation[band] / symptomatic).min(1.0);
        if rng.gen::<f64>() < p_hospital {
            c.hospital = add(c.onset, d.onset_to_hospital_days);
            c.end = add(c.hospital, d.hospital_days);
            let p_death = if d.hospitalisation[band] > 0.0 {
                (d.fatality[band] / d.hospitalisation[band]).min(1.0)
            } else {
                0.0
            };
            c.dies = rng.gen::<f64>() < p_death;
        }
        let tested = rng.gen::<f64>() < t.test_probability;
        let detected = rng.gen::<f64>() < t.sensitivity;
        if tested && detected {
            c.positive_result = add(c.onset, t.delay_days);
        }
        if c.hospital != NEVER && c.positive_result > c.hospital {
            c.positive_result = c.hospital;
        }
        c
    }
}
