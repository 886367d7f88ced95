//! Scenario files: every parameter of a run, its documented default and its
//! allowed range.
//!
//! A scenario is TOML; every section and field is optional and falls back
//! to the default documented here and in `simulator/README.md`. Unknown
//! fields are refused, and [`Scenario::validate`] names the first field out
//! of its range together with that range.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Number of age bands: 0–9, 10–19, …, 70–79, 80+.
pub const AGE_BANDS: usize = 9;

/// Why a scenario was refused.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read scenario {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed, a field is unknown or has the wrong type.
    #[error("invalid scenario: {0}")]
    Parse(String),
    /// A field lies outside its allowed range.
    #[error("invalid scenario: {field} = {value} is out of range, allowed {allowed}")]
    OutOfRange {
        /// Dotted path of the field, e.g. `app.adoption`.
        field: String,
        /// The value given.
        value: String,
        /// The allowed range, in words.
        allowed: String,
    },
    /// A sweep names a parameter that is not a numeric scenario field.
    #[error("cannot sweep {0}: not a numeric scenario field")]
    UnknownParameter(String),
}

/// One simulation run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Scenario {
    /// Name shown in reports and plots.
    pub name: String,
    /// Master seed: the same seed and scenario give identical output.
    pub seed: u64,
    /// Days simulated.
    pub days: u32,
    /// People infected on day 0.
    pub initial_infections: u32,
    /// Who lives where and who meets whom.
    pub population: PopulationParams,
    /// Daily contacts.
    pub contacts: ContactParams,
    /// The course of the disease.
    pub disease: DiseaseParams,
    /// Testing of symptomatic people and isolation of positives.
    pub testing: TestingParams,
    /// Exposure notification.
    pub app: AppParams,
    /// From distance to the attenuation a phone measures.
    pub radio: RadioParams,
}

impl Default for Scenario {
    fn default() -> Self {
        Scenario {
            name: "default".into(),
            seed: 1,
            days: 60,
            initial_infections: 20,
            population: PopulationParams::default(),
            contacts: ContactParams::default(),
            disease: DiseaseParams::default(),
            testing: TestingParams::default(),
            app: AppParams::default(),
            radio: RadioParams::default(),
        }
    }
}

/// The synthetic population.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PopulationParams {
    /// Number of agents.
    pub agents: u32,
    /// Fraction of people in each age band 0–9 … 80+ (UK 2018, ONS, as in
    /// OpenABM-Covid19).
    pub age_fractions: [f64; AGE_BANDS],
    /// Fraction of households with 1 … 6 members (UK 2018, ONS, as in
    /// OpenABM-Covid19).
    pub household_size_fractions: [f64; 6],
}

impl Default for PopulationParams {
    fn default() -> Self {
        PopulationParams {
            agents: 100_000,
            age_fractions: [
                0.118, 0.114, 0.134, 0.136, 0.128, 0.136, 0.108, 0.079, 0.047,
            ],
            household_size_fractions: [0.294, 0.345, 0.154, 0.139, 0.047, 0.021],
        }
    }
}

/// Daily contact networks (OpenABM-Covid19 defaults, Hinch et al. 2021).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ContactParams {
    /// Mean degree of the static workplace/school networks per age band.
    pub work_degree: [f64; AGE_BANDS],
    /// Fraction of workplace/school links active on a given day.
    pub work_daily_fraction: f64,
    /// Mean random daily contacts per age band.
    pub random_mean: [f64; AGE_BANDS],
    /// Dispersion k of the negative binomial of random contacts (smaller:
    /// more overdispersed).
    pub random_dispersion: f64,
    /// Transmission multiplier of a household contact.
    pub household_factor: f64,
    /// Transmission multiplier of a workplace or school contact.
    pub work_factor: f64,
    /// Transmission multiplier of a random contact.
    pub random_factor: f64,
    /// Transmission multiplier of a venue or transit contact.
    pub venue_factor: f64,
    /// Minutes of a household contact (capped by `app.max_windows_per_contact`).
    pub household_minutes: u32,
    /// Largest duration of a workplace/school contact, minutes (uniform from 5).
    pub work_max_minutes: u32,
    /// Largest duration of a random contact, minutes (uniform from 5).
    pub random_max_minutes: u32,
    /// Whether people visit venues (shops, restaurants) and meet there.
    pub venues: bool,
    /// Probability that a person visits a venue on a given day.
    pub venue_visit_probability: f64,
    /// Venues per 1,000 people.
    pub venues_per_1000: f64,
    /// Others met during one venue visit (at most).
    pub venue_contacts: u32,
    /// Whether people ride public transport and meet there.
    pub transit: bool,
    /// Probability that a person rides public transport on a given day.
    pub transit_probability: f64,
    /// Vehicles (bus or train cars) per 1,000 people.
    pub transit_vehicles_per_1000: f64,
    /// Others met during one ride (at most).
    pub transit_contacts: u32,
}

impl Default for ContactParams {
    fn default() -> Self {
        ContactParams {
            // OpenABM: 10 for school networks, 7 for workers, 3 for the retired.
            work_degree: [10.0, 10.0, 7.0, 7.0, 7.0, 7.0, 7.0, 3.0, 3.0],
            work_daily_fraction: 0.5,
            // OpenABM: 2 for children, 4 for adults, 3 for the elderly.
            random_mean: [2.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 3.0, 3.0],
            random_dispersion: 2.0,
            household_factor: 2.0,
            work_factor: 1.0,
            random_factor: 1.0,
            venue_factor: 1.0,
            household_minutes: 60,
            work_max_minutes: 45,
            random_max_minutes: 30,
            venues: false,
            venue_visit_probability: 0.3,
            venues_per_1000: 2.0,
            venue_contacts: 3,
            transit: false,
            transit_probability: 0.2,
            transit_vehicles_per_1000: 5.0,
            transit_contacts: 4,
        }
    }
}

/// The course of the disease.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiseaseParams {
    /// Expected infections caused over a symptomatic course by a person
    /// with the mean number of daily contacts, before type multipliers
    /// (OpenABM's `infectious_rate`; calibrated in VALIDATION.md).
    pub infectious_rate: f64,
    /// Shape of the Weibull generation-time distribution that sets
    /// infectiousness by days since infection (Ferretti et al. 2020: 2.826).
    pub generation_shape: f64,
    /// Scale of that distribution, days (Ferretti et al. 2020: 5.665).
    pub generation_scale: f64,
    /// Log-mean of the log-normal incubation period (Lauer et al. 2020: 1.621).
    pub incubation_log_mean: f64,
    /// Log-sd of the incubation period (Lauer et al. 2020: 0.418).
    pub incubation_log_sd: f64,
    /// Fraction of infections that never show symptoms (Buitrago-Garcia et
    /// al. 2020: 0.31).
    pub asymptomatic_fraction: f64,
    /// Infectiousness of an asymptomatic course relative to a symptomatic
    /// one (Buitrago-Garcia et al. 2020: 0.35).
    pub asymptomatic_infectiousness: f64,
    /// Probability of hospitalisation given infection, per age band
    /// (Verity et al. 2020).
    pub hospitalisation: [f64; AGE_BANDS],
    /// Probability of death given infection, per age band (Verity et al. 2020).
    pub fatality: [f64; AGE_BANDS],
    /// Days from symptom onset to hospital admission (OpenABM: 5).
    pub onset_to_hospital_days: u32,
    /// Days in hospital until discharge or death (OpenABM: about 10–12).
    pub hospital_days: u32,
    /// Days from infection after which a non-hospitalised person has recovered.
    pub recovery_days: u32,
}

impl Default for DiseaseParams {
    fn default() -> Self {
        DiseaseParams {
            infectious_rate: 3.0,
            generation_shape: 2.826,
            generation_scale: 5.665,
            incubation_log_mean: 1.621,
            incubation_log_sd: 0.418,
            asymptomatic_fraction: 0.31,
            asymptomatic_infectiousness: 0.35,
            hospitalisation: [
                0.000_1, 0.000_408, 0.010_4, 0.034_3, 0.042_5, 0.081_6, 0.118, 0.166, 0.184,
            ],
            fatality: [
                0.000_016_1,
                0.000_069_5,
                0.000_309,
                0.000_844,
                0.001_61,
                0.005_95,
                0.019_3,
                0.042_8,
                0.078,
            ],
            onset_to_hospital_days: 5,
            hospital_days: 10,
            recovery_days: 14,
        }
    }
}

/// Testing and isolation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TestingParams {
    /// Probability that a symptomatic person gets tested.
    pub test_probability: f64,
    /// Days from symptom onset to the test result (OpenABM: 1 to order, 1
    /// for the result).
    pub delay_days: u32,
    /// Probability that the test of an infected person is positive.
    pub sensitivity: f64,
    /// Probability that a person who tested positive stays home.
    pub isolation_compliance: f64,
}

impl Default for TestingParams {
    fn default() -> Self {
        TestingParams {
            test_probability: 0.8,
            delay_days: 2,
            sensitivity: 0.9,
            isolation_compliance: 0.9,
        }
    }
}

/// Publication mode of the key batches, as in the protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Daily keys.
    Compact,
    /// A Bloom filter of epoch hashes.
    Unlinkable,
}

/// Exposure notification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppParams {
    /// Fraction of people who run the app.
    pub adoption: f64,
    /// Publication mode of the batches.
    pub mode: Mode,
    /// Probability that an app user who tests positive uploads.
    pub upload_consent: f64,
    /// Days from the positive result to the upload.
    pub upload_delay_days: u32,
    /// Days before symptom onset (or the test, without symptoms) whose keys
    /// are uploaded.
    pub upload_days_before_onset: u32,
    /// Probability that a notified person stays home while yellow or red.
    pub quarantine_compliance: f64,
    /// Yellow threshold, weighted minutes in one day (policy default 10).
    pub yellow_threshold_minutes: u16,
    /// Red threshold, weighted minutes in one day (policy default 15).
    pub red_threshold_minutes: u16,
    /// Yellow quarantine, days after the exposure (policy default 7).
    pub yellow_quarantine_days: u8,
    /// Red quarantine, days after the exposure (policy default 14).
    pub red_quarantine_days: u8,
    /// Exposure windows recorded per contact at most: one per 15-minute
    /// epoch of the contact.
    pub max_windows_per_contact: u32,
}

impl Default for AppParams {
    fn default() -> Self {
        AppParams {
            adoption: 0.6,
            mode: Mode::Compact,
            upload_consent: 0.8,
            upload_delay_days: 1,
            upload_days_before_onset: 2,
            quarantine_compliance: 0.8,
            yellow_threshold_minutes: 10,
            red_threshold_minutes: 15,
            yellow_quarantine_days: 7,
            red_quarantine_days: 14,
            max_windows_per_contact: 2,
        }
    }
}

/// The radio model: distance by contact type, log-distance path loss,
/// log-normal shadowing and device calibration error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RadioParams {
    /// Path loss at 1 m between two phones, dB, body and pocket included
    /// (as greenlight-ble's simulated air).
    pub loss_at_1m_db: f64,
    /// Path-loss exponent (Leith & Farrell 2020 measured 1.8–2.5).
    pub exponent: f64,
    /// Standard deviation of log-normal shadowing per window, dB.
    pub shadowing_db: f64,
    /// Largest transmit calibration error of a phone, dB (uniform ±).
    pub tx_error_db: f64,
    /// Largest receive calibration error of a phone, dB (uniform ±).
    pub rx_error_db: f64,
    /// Median distance of a household contact, m.
    pub household_distance_m: f64,
    /// Median distance of a workplace/school contact, m.
    pub work_distance_m: f64,
    /// Median distance of a random contact, m.
    pub random_distance_m: f64,
    /// Median distance of a venue contact, m.
    pub venue_distance_m: f64,
    /// Median distance of a transit contact, m.
    pub transit_distance_m: f64,
    /// Log-sd of the distance around its median.
    pub distance_log_sd: f64,
    /// Calibrated transmit power the phones declare in their metadata, dBm.
    pub tx_power_dbm: i8,
}

impl Default for RadioParams {
    fn default() -> Self {
        RadioParams {
            loss_at_1m_db: 55.0,
            exponent: 2.0,
            shadowing_db: 4.0,
            tx_error_db: 3.0,
            rx_error_db: 3.0,
            household_distance_m: 1.5,
            work_distance_m: 2.0,
            random_distance_m: 2.0,
            venue_distance_m: 3.0,
            transit_distance_m: 1.2,
            distance_log_sd: 0.5,
            tx_power_dbm: -8,
        }
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn from_file(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Scenario::from_toml(&text)
    }

    /// Parses and validates a scenario from TOML text.
    pub fn from_toml(text: &str) -> Result<Scenario, ScenarioError> {
        let scenario: Scenario =
            toml::from_str(text).map_err(|e| ScenarioError::Parse(e.to_string()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// This scenario as TOML, every field written out.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a scenario is plain data and always serializes")
    }

    /// The same scenario with one numeric field, named by its dotted path
    /// (e.g. `app.adoption`), set to `value`; validated.
    pub fn with_parameter(&self, path: &str, value: f64) -> Result<Scenario, ScenarioError> {
        let mut root = toml::Value::try_from(self)
            .map_err(|e| ScenarioError::Parse(format!("cannot represent scenario: {e}")))?;
        let mut slot = &mut root;
        for part in path.split('.') {
            slot = slot
                .get_mut(part)
                .ok_or_else(|| ScenarioError::UnknownParameter(path.into()))?;
        }
        *slot = match slot {
            toml::Value::Float(_) => toml::Value::Float(value),
            toml::Value::Integer(_) if value.fract() == 0.0 => toml::Value::Integer(value as i64),
            toml::Value::Integer(_) => {
                return Err(ScenarioError::OutOfRange {
                    field: path.into(),
                    value: value.to_string(),
                    allowed: "whole numbers".into(),
                })
            }
            _ => return Err(ScenarioError::UnknownParameter(path.into())),
        };
        let scenario: Scenario = root
            .try_into()
            .map_err(|e: toml::de::Error| ScenarioError::Parse(e.to_string()))?;
        scenario.validate()?;
        Ok(scenario)
    }

    /// Checks every field against its allowed range; the error names the
    /// first offending field and the range.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let mut c = Checker::default();
        c.int("days", self.days, 1, 3650);
        c.int("population.agents", self.population.agents, 10, 20_000_000);
        c.int(
            "initial_infections",
            self.initial_infections,
            1,
            self.population.agents.max(1),
        );
        c.distribution("population.age_fractions", &self.population.age_fractions);
        c.distribution(
            "population.household_size_fractions",
            &self.population.household_size_fractions,
        );
        let k = &self.contacts;
        for (band, v) in k.work_degree.iter().enumerate() {
            c.real(&format!("contacts.work_degree[{band}]"), *v, 0.0, 100.0);
        }
        for (band, v) in k.random_mean.iter().enumerate() {
            c.real(&format!("contacts.random_mean[{band}]"), *v, 0.0, 100.0);
        }
        c.real(
            "contacts.work_daily_fraction",
            k.work_daily_fraction,
            0.0,
            1.0,
        );
        c.real(
            "contacts.random_dispersion",
            k.random_dispersion,
            0.01,
            1000.0,
        );
        c.real("contacts.household_factor", k.household_factor, 0.0, 100.0);
        c.real("contacts.work_factor", k.work_factor, 0.0, 100.0);
        c.real("contacts.random_factor", k.random_factor, 0.0, 100.0);
        c.real("contacts.venue_factor", k.venue_factor, 0.0, 100.0);
        c.int("contacts.household_minutes", k.household_minutes, 1, 1440);
        c.int("contacts.work_max_minutes", k.work_max_minutes, 5, 1440);
        c.int("contacts.random_max_minutes", k.random_max_minutes, 5, 1440);
        c.real(
            "contacts.venue_visit_probability",
            k.venue_visit_probability,
            0.0,
            1.0,
        );
        c.real("contacts.venues_per_1000", k.venues_per_1000, 0.001, 1000.0);
        c.int("contacts.venue_contacts", k.venue_contacts, 0, 100);
        c.real(
            "contacts.transit_probability",
            k.transit_probability,
            0.0,
            1.0,
        );
        c.real(
            "contacts.transit_vehicles_per_1000",
            k.transit_vehicles_per_1000,
            0.001,
            1000.0,
        );
        c.int("contacts.transit_contacts", k.transit_contacts, 0, 100);
        let d = &self.disease;
        c.real("disease.infectious_rate", d.infectious_rate, 0.0, 100.0);
        c.real("disease.generation_shape", d.generation_shape, 0.1, 20.0);
        c.real("disease.generation_scale", d.generation_scale, 0.1, 30.0);
        c.real(
            "disease.incubation_log_mean",
            d.incubation_log_mean,
            0.0,
            3.0,
        );
        c.real("disease.incubation_log_sd", d.incubation_log_sd, 0.0, 2.0);
        c.real(
            "disease.asymptomatic_fraction",
            d.asymptomatic_fraction,
            0.0,
            1.0,
        );
        c.real(
            "disease.asymptomatic_infectiousness",
            d.asymptomatic_infectiousness,
            0.0,
            1.0,
        );
        for (band, (h, f)) in d.hospitalisation.iter().zip(&d.fatality).enumerate() {
            c.real(&format!("disease.hospitalisation[{band}]"), *h, 0.0, 1.0);
            c.real(&format!("disease.fatality[{band}]"), *f, 0.0, *h);
        }
        c.int(
            "disease.onset_to_hospital_days",
            d.onset_to_hospital_days,
            0,
            30,
        );
        c.int("disease.hospital_days", d.hospital_days, 1, 100);
        c.int("disease.recovery_days", d.recovery_days, 5, 60);
        let t = &self.testing;
        c.real("testing.test_probability", t.test_probability, 0.0, 1.0);
        c.int("testing.delay_days", t.delay_days, 0, 30);
        c.real("testing.sensitivity", t.sensitivity, 0.0, 1.0);
        c.real(
            "testing.isolation_compliance",
            t.isolation_compliance,
            0.0,
            1.0,
        );
        let a = &self.app;
        c.real("app.adoption", a.adoption, 0.0, 1.0);
        c.real("app.upload_consent", a.upload_consent, 0.0, 1.0);
        c.int("app.upload_delay_days", a.upload_delay_days, 0, 13);
        c.int(
            "app.upload_days_before_onset",
            a.upload_days_before_onset,
            0,
            13,
        );
        c.real(
            "app.quarantine_compliance",
            a.quarantine_compliance,
            0.0,
            1.0,
        );
        c.int(
            "app.yellow_threshold_minutes",
            a.yellow_threshold_minutes,
            1,
            1440,
        );
        c.int(
            "app.red_threshold_minutes",
            a.red_threshold_minutes,
            a.yellow_threshold_minutes,
            1440,
        );
        c.int(
            "app.yellow_quarantine_days",
            a.yellow_quarantine_days,
            1,
            30,
        );
        c.int("app.red_quarantine_days", a.red_quarantine_days, 1, 30);
        c.int(
            "app.max_windows_per_contact",
            a.max_windows_per_contact,
            1,
            96,
        );
        let r = &self.radio;
        c.real("radio.loss_at_1m_db", r.loss_at_1m_db, 0.0, 120.0);
        c.real("radio.exponent", r.exponent, 1.0, 6.0);
        c.real("radio.shadowing_db", r.shadowing_db, 0.0, 30.0);
        c.real("radio.tx_error_db", r.tx_error_db, 0.0, 30.0);
        c.real("radio.rx_error_db", r.rx_error_db, 0.0, 30.0);
        for (name, v) in [
            ("radio.household_distance_m", r.household_distance_m),
            ("radio.work_distance_m", r.work_distance_m),
            ("radio.random_distance_m", r.random_distance_m),
            ("radio.venue_distance_m", r.venue_distance_m),
            ("radio.transit_distance_m", r.transit_distance_m),
        ] {
            c.real(name, v, 0.1, 100.0);
        }
        c.real("radio.distance_log_sd", r.distance_log_sd, 0.0, 3.0);
        c.int("radio.tx_power_dbm", i32::from(r.tx_power_dbm), -40, 20);
        c.finish()
    }
}

/// Collects the first range violation.
#[derive(Default)]
struct Checker {
    first: Option<ScenarioError>,
}

impl Checker {
    fn fail(&mut self, field: &str, value: String, allowed: String) {
        if self.first.is_none() {
            self.first = Some(ScenarioError::OutOfRange {
                field: field.into(),
                value,
                allowed,
            });
        }
    }

    fn real(&mut self, field: &str, v: f64, lo: f64, hi: f64) {
        if !(v.is_finite() && lo <= v && v <= hi) {
            self.fail(field, v.to_string(), format!("{lo} to {hi}"));
        }
    }

    fn int<T: Into<i64> + Copy>(&mut self, field: &str, v: T, lo: T, hi: T) {
        let (v, lo, hi) = (v.into(), lo.into(), hi.into());
        if !(lo..=hi).contains(&v) {
            self.fail(field, v.to_string(), format!("{lo} to {hi}"));
        }
    }

    fn distribution(&mut self, field: &str, values: &[f64]) {
        for (i, v) in values.iter().enumerate() {
            self.real(&format!("{field}[{i}]"), *v, 0.0, 1.0);
        }
        let sum: f64 = values.iter().sum();
        if (sum - 1.0).abs() > 0.01 {
            self.fail(
                field,
                format!("sum {sum}"),
                "fractions summing to 1 ± 0.01".into(),
            );
        }
    }

    fn finish(self) -> Result<(), ScenarioError> {
        self.first.map_or(Ok(()), Err)
    }
}
