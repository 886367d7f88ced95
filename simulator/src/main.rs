//! `greenlight-sim`: run a scenario, sweep a parameter, or measure throughput.

use anyhow::Context;
use clap::{Parser, Subcommand};
use greenlight_sim::{bench, plot, report, sim, sweep, Scenario};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::path::{Path, PathBuf};

#[derive(Parser, Debug)]
#[command(
    name = "greenlight-sim",
    version,
    about = "Agent-based epidemic simulator running the real Greenlight protocol"
)]
struct Cli {
    /// Worker threads (default: all cores).
    #[arg(long, global = true)]
    threads: Option<usize>,
    /// No progress bar.
    #[arg(long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run one scenario (and the same without the app, for comparison).
    Run {
        #[command(flatten)]
        input: Input,
        /// Skip the comparison run without the app.
        #[arg(long)]
        no_baseline: bool,
    },
    /// Run a scenario once per value of one parameter.
    Sweep {
        #[command(flatten)]
        input: Input,
        /// Dotted name of a numeric scenario field, e.g. app.adoption.
        #[arg(long, default_value = "app.adoption")]
        parameter: String,
        /// Values: a list (0,0.3,0.6) or a range start:end:step.
        #[arg(long, default_value = "0:1:0.2")]
        values: String,
    },
    /// Measure agent-days per second and peak memory.
    Bench {
        /// Populations to measure.
        #[arg(long, value_delimiter = ',', default_value = "100000,1000000")]
        agents: Vec<u32>,
        /// Days per run.
        #[arg(long, default_value_t = 60)]
        days: u32,
        /// Thread counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,2")]
        threads: Vec<usize>,
        /// Scenario to start from (default: the built-in defaults).
        #[arg(long)]
        scenario: Option<PathBuf>,
    },
    /// Print the default scenario as TOML.
    Defaults,
}

#[derive(clap::Args, Debug)]
struct Input {
    /// Scenario file (TOML); the built-in defaults without one.
    #[arg(long)]
    scenario: Option<PathBuf>,
    /// Override the scenario's seed.
    #[arg(long)]
    seed: Option<u64>,
    /// Override the number of agents.
    #[arg(long)]
    agents: Option<u32>,
    /// Override the number of days.
    #[arg(long)]
    days: Option<u32>,
    /// Directory for the outputs.
    #[arg(long, default_value = "sim-out")]
    out: PathBuf,
}

impl Input {
    fn scenario(&self) -> anyhow::Result<Scenario> {
        let mut s = match &self.scenario {
            Some(path) => Scenario::from_file(path)?,
            None => Scenario::default(),
        };
        if let Some(seed) = self.seed {
            s.seed = seed;
        }
        if let Some(agents) = self.agents {
            s.population.agents = agents;
            s.initial_infections = s.initial_infections.min(agents);
        }
        if let Some(days) = self.days {
            s.days = days;
        }
        s.validate()?;
        std::fs::create_dir_all(&self.out)
            .with_context(|| format!("cannot create output directory {}", self.out.display()))?;
        Ok(s)
    }
}

fn bar(quiet: bool, len: u64, what: &str) -> ProgressBar {
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
    };
    bar.set_style(
        ProgressStyle::with_template("{msg:>24} [{bar:40}] {pos}/{len} days ({eta})")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

fn run_one(s: &Scenario, quiet: bool, what: &str) -> anyhow::Result<sim::RunResult> {
    let pb = bar(quiet, u64::from(s.days), what);
    let r = sim::run(s, |_| pb.inc(1))?;
    pb.finish_and_clear();
    Ok(r)
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(threads) = cli.threads {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build_global()
            .context("cannot start the worker threads")?;
    }
    match cli.command {
        Command::Run { input, no_baseline } => {
            let s = input.scenario()?;
            let with_app = run_one(&s, cli.quiet, "with the app")?;
            let without = if no_baseline || s.app.adoption == 0.0 {
                None
            } else {
                let mut base = s.clone();
                base.app.adoption = 0.0;
                Some(run_one(&base, cli.quiet, "without the app")?)
            };
            write_run(&input.out, &with_app, without.as_ref())?;
            let m = &with_app.summary;
            println!(
                "{}: {} agents, {} days: {} infections ({:.1} %), {} notifications ({} true, {} false), {} quarantine person-days, {} uploads",
                m.name,
                m.agents,
                m.days,
                m.infections,
                m.attack_rate * 100.0,
                m.notifications,
                m.notifications_true,
                m.notifications_false,
                m.quarantine_person_days,
                m.uploads
            );
            if let Some(b) = &without {
                println!(
                    "without the app: {} infections ({:.1} %)",
                    b.summary.infections,
                    b.summary.attack_rate * 100.0
                );
            }
            println!("outputs in {}", input.out.display());
        }
        Command::Sweep {
            input,
            parameter,
            values,
        } => {
            let s = input.scenario()?;
            let values = sweep::parse_values(&values)?;
            let pb = bar(
                cli.quiet,
                u64::from(s.days) * values.len() as u64,
                &parameter,
            );
            let runs = sweep::run(&s, &parameter, &values, |_, _| pb.inc(1))?;
            pb.finish_and_clear();
            for (v, run) in &runs {
                let name = format!("daily-{parameter}-{v}.csv");
                report::write(&input.out.join(name), &report::daily_csv(&run.days))?;
            }
            let points: Vec<(f64, greenlight_sim::Summary)> =
                runs.into_iter().map(|(v, r)| (v, r.summary)).collect();
            report::write(
                &input.out.join("sweep.csv"),
                &sweep::csv(&parameter, &points),
            )?;
            plot::sweep(&input.out.join("sweep"), &parameter, &points)?;
            print!("{}", sweep::csv(&parameter, &points));
            println!("outputs in {}", input.out.display());
        }
        Command::Bench {
            agents,
            days,
            threads,
            scenario,
        } => {
            let base = match &scenario {
                Some(p) => Scenario::from_file(p)?,
                None => Scenario::default(),
            };
            println!(
                "adoption {:.0} %, mode {:?}, {} cores available",
                base.app.adoption * 100.0,
                base.app.mode,
                std::thread::available_parallelism().map_or(1, |n| n.get())
            );
            // Every measurement's scenario is checked before the first one
            // runs, so a bad value does not wait for the runs before it.
            for &n in &agents {
                for &t in &threads {
                    bench::scenario(&base, n, days, t)?;
                }
            }
            if agents.len() * threads.len() == 1 {
                let m = bench::measure(&base, agents[0], days, threads[0])?;
                println!("{}", bench::row(&m));
                return Ok(());
            }
            // One process per measurement: peak memory is a process's, and
            // memory a run freed stays with the process that ran it.
            for &n in &agents {
                for &t in &threads {
                    let mut child = std::process::Command::new(std::env::current_exe()?);
                    child.args(["bench", "--quiet", "--days", &days.to_string()]);
                    child.args(["--agents", &n.to_string(), "--threads", &t.to_string()]);
                    if let Some(p) = &scenario {
                        child.arg("--scenario").arg(p);
                    }
                    let out = child
                        .stderr(std::process::Stdio::inherit())
                        .output()
                        .context("starting a measurement process")?;
                    anyhow::ensure!(
                        out.status.success(),
                        "the measurement of {n} agents on {t} thread(s) failed ({})",
                        out.status
                    );
                    // Its first line repeats the scenario's.
                    for line in String::from_utf8_lossy(&out.stdout).lines().skip(1) {
                        println!("{line}");
                    }
                }
            }
        }
        Command::Defaults => print!("{}", Scenario::default().to_toml()),
    }
    Ok(())
}

fn write_run(
    out: &Path,
    with_app: &sim::RunResult,
    without: Option<&sim::RunResult>,
) -> anyhow::Result<()> {
    report::write(&out.join("daily.csv"), &report::daily_csv(&with_app.days))?;
    if let Some(b) = without {
        report::write(
            &out.join("daily-without-app.csv"),
            &report::daily_csv(&b.days),
        )?;
    }
    report::write(
        &out.join("summary.json"),
        &report::summary_json(with_app, without),
    )?;
    plot::epidemic_curves(&out.join("epidemic"), with_app, without)?;
    plot::colours(&out.join("colours"), with_app)?;
    Ok(())
}
