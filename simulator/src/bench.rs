//! Throughput and memory figures: agent-days per second at a given
//! population and thread count, and the process's peak resident memory.

use crate::scenario::Scenario;
use crate::sim;
use std::time::Duration;

/// One measured run.
#[derive(Debug, Clone)]
pub struct Measurement {
    /// Agents.
    pub agents: u32,
    /// Days.
    pub days: u32,
    /// Rayon threads.
    pub threads: usize,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
    /// Time in the phones' lookups.
    pub matching: Duration,
    /// Time generating keys and sightings.
    pub sightings: Duration,
    /// Time building, signing, verifying and preparing batches.
    pub publication: Duration,
    /// Time in the status engine.
    pub status: Duration,
    /// Time generating contacts.
    pub contacts: Duration,
    /// Time in transmission.
    pub disease: Duration,
    /// Building the population and seeding the epidemic.
    pub setup: Duration,
    /// Infections.
    pub infections: u64,
    /// Notifications.
    pub notifications: u64,
    /// Windows looked up over the run.
    pub windows_looked_up: u64,
    /// Peak resident memory of the process so far, MiB (VmHWM).
    pub peak_rss_mib: Option<f64>,
}

impl Measurement {
    /// Time of the daily loop outside the measured phases: counting,
    /// presence, test results and the like.
    pub fn rest(&self) -> Duration {
        self.elapsed.saturating_sub(
            self.setup
                + self.matching
                + self.sightings
                + self.publication
                + self.status
                + self.contacts
                + self.disease,
        )
    }

    /// Agent-days simulated per second.
    pub fn agent_days_per_sec(&self) -> f64 {
        f64::from(self.agents) * f64::from(self.days) / self.elapsed.as_secs_f64()
    }
}

/// The process's peak resident set size in MiB, from /proc/self/status.
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// The scenario measured for `agents` over `days`: `base` with that many
/// agents and days, seeded with one infection per 5,000 agents. An error
/// names the field out of range; a thread count of 0 is refused too.
pub fn scenario(
    base: &Scenario,
    agents: u32,
    days: u32,
    threads: usize,
) -> anyhow::Result<Scenario> {
    anyhow::ensure!(
        threads >= 1,
        "a thread count must be at least 1, got {threads}"
    );
    let s = Scenario {
        days,
        population: crate::scenario::PopulationParams {
            agents,
            ..base.population.clone()
        },
        initial_infections: (agents / 5_000).max(base.initial_infections.min(agents)),
        ..base.clone()
    };
    s.validate()?;
    Ok(s)
}

/// Runs `base` with `agents` for `days` on `threads` threads ([`scenario`]).
pub fn measure(
    base: &Scenario,
    agents: u32,
    days: u32,
    threads: usize,
) -> anyhow::Result<Measurement> {
    let s = scenario(base, agents, days, threads)?;
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let run = pool.install(|| sim::run(&s, |_| {}))?;
    let t = run.timings;
    Ok(Measurement {
        agents,
        days,
        threads,
        elapsed: t.total,
        matching: t.protocol.matching,
        sightings: t.protocol.sightings,
        publication: t.protocol.publication,
        status: t.protocol.status,
        contacts: t.contacts,
        disease: t.disease,
        setup: t.setup,
        infections: run.summary.infections,
        notifications: run.summary.notifications,
        windows_looked_up: run.summary.windows_looked_up,
        peak_rss_mib: peak_rss_mib(),
    })
}

/// A table row for a measurement.
pub fn row(m: &Measurement) -> String {
    let days = f64::from(m.days);
    format!(
        "{:>9} agents × {} days, {} thread(s): {:>7.1} s, {:>6.3} M agent-days/s; per sim-day: matching {:.3} s, sightings {:.3} s, batches {:.3} s, status {:.3} s, contacts {:.3} s, transmission {:.3} s, the rest {:.3} s; setup {:.2} s; {} infections, {} notifications, {:.1} M window lookups; peak RSS {}",
        m.agents,
        m.days,
        m.threads,
        m.elapsed.as_secs_f64(),
        m.agent_days_per_sec() / 1e6,
        m.matching.as_secs_f64() / days,
        m.sightings.as_secs_f64() / days,
        m.publication.as_secs_f64() / days,
        m.status.as_secs_f64() / days,
        m.contacts.as_secs_f64() / days,
        m.disease.as_secs_f64() / days,
        m.rest().as_secs_f64() / days,
        m.setup.as_secs_f64(),
        m.infections,
        m.notifications,
        m.windows_looked_up as f64 / 1e6,
        m.peak_rss_mib.map_or("unknown".into(), |v| format!("{v:.0} MiB")),
    )
}
