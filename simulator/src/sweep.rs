//! Sweeps: one scenario run for each value of one parameter, compared in
//! one CSV and one plot.

use crate::scenario::{Scenario, ScenarioError};
use crate::sim::{self, RunResult, Summary};
use std::fmt::Write as _;

/// Parses `0,0.2,0.5` or a range `start:end:step` (end included).
pub fn parse_values(spec: &str) -> Result<Vec<f64>, ScenarioError> {
    let bad = || ScenarioError::OutOfRange {
        field: "--values".into(),
        value: spec.into(),
        allowed: "a list like 0,0.2,0.5 or a range start:end:step with step > 0".into(),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    if parts.len() == 3 {
        let n: Vec<f64> = parts
            .iter()
            .map(|p| p.trim().parse::<f64>())
            .collect::<Result<_, _>>()
            .map_err(|_| bad())?;
        let (start, end, step) = (n[0], n[1], n[2]);
        if step <= 0.0 || end < start || (end - start) / step > 1000.0 {
            return Err(bad());
        }
        let count = ((end - start) / step + 1e-9).floor() as usize;
        // Rounded to 9 digits so that 0.1 steps print as 0.3, not 0.30000000000000004.
        return Ok((0..=count)
            .map(|i| ((start + step * i as f64) * 1e9).round() / 1e9)
            .collect());
    }
    let values: Vec<f64> = spec
        .split(',')
        .map(|p| p.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .map_err(|_| bad())?;
    if values.is_empty() {
        return Err(bad());
    }
    Ok(values)
}

/// Runs the base scenario once per value of `parameter`.
pub fn run(
    base: &Scenario,
    parameter: &str,
    values: &[f64],
    mut progress: impl FnMut(usize, u32),
) -> anyhow::Result<Vec<(f64, RunResult)>> {
    let scenarios: Vec<Scenario> = values
        .iter()
        .map(|&v| base.with_parameter(parameter, v))
        .collect::<Result<_, _>>()?;
    let mut out = Vec::with_capacity(values.len());
    for (i, (s, &v)) in scenarios.iter().zip(values).enumerate() {
        let result = sim::run(s, |day| progress(i, day))?;
        out.push((v, result));
    }
    Ok(out)
}

/// The sweep as CSV: one row per value.
pub fn csv(parameter: &str, points: &[(f64, Summary)]) -> String {
    let mut out = format!(
        "{parameter},infections,attack_rate,peak_day,peak_new_infections,deaths,notifications,notifications_true,notifications_false,notification_precision,secondary_attack_rate_notified,quarantine_person_days,isolation_person_days,uploads,batch_entries\n"
    );
    for (v, s) in points {
        let _ = writeln!(
            out,
            "{v},{},{:.6},{},{},{},{},{},{},{:.6},{:.6},{},{},{},{}",
            s.infections,
            s.attack_rate,
            s.peak_day,
            s.peak_new_infections,
            s.deaths,
            s.notifications,
            s.notifications_true,
            s.notifications_false,
            s.notification_precision,
            s.secondary_attack_rate_notified,
            s.quarantine_person_days,
            s.isolation_person_days,
            s.uploads,
            s.batch_entries
        );
    }
    out
}
