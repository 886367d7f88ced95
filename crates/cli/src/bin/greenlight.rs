//! `greenlight`: the user's command line. Talks to `greenlightd` over its
//! local socket; `greenlight demo` runs the whole system on its own.

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand, ValueEnum};
use greenlight_cli::{card, demo};
use greenlight_daemon::api::{self, Request, Response};
use greenlight_daemon::runtime::DaemonConfig;
use greenlight_daemon::sync::{Consent, Mode};
use greenlight_protocol::{DayNumber, RegionId, Timestamp};
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

/// Greenlight: your exposure status, decided on your phone.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// The daemon's socket (default: as greenlightd's configuration says).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// greenlightd's configuration file, to find its socket.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Print answers as JSON.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Your colour, when it ends, and why.
    Status {
        /// Show the colour as a card with a QR code.
        #[arg(long)]
        qr: bool,
    },
    /// Record today's check-in (needed each day of a quarantine).
    CheckIn,
    /// Upload your keys after a positive test, with the health authority's code.
    ReportPositive {
        /// The verification code.
        #[arg(long)]
        code: String,
        /// compact (daily keys) or unlinkable (hashes per 15 minutes; lets you leave out hours).
        #[arg(long, value_enum, default_value_t = ModeArg::Compact)]
        mode: ModeArg,
        /// Leave out a day (YYYY-MM-DD); repeatable.
        #[arg(long = "omit-day", value_parser = parse_day)]
        omit_days: Vec<DayNumber>,
        /// Leave out a time range, unlinkable mode only: `YYYY-MM-DDTHH:MM/YYYY-MM-DDTHH:MM` (UTC); repeatable.
        #[arg(long = "omit-range", value_parser = parse_range)]
        omit_ranges: Vec<(Timestamp, Timestamp)>,
        /// A region you visited while infectious (e.g. CH-GE), so it learns of your case; repeatable.
        #[arg(long = "visited", value_parser = parse_region)]
        visited: Vec<RegionId>,
        /// Consent without asking (for scripts).
        #[arg(long)]
        yes: bool,
    },
    /// Fetch the policy and new batches now, and match.
    Sync,
    /// Print everything stored about you, as JSON.
    ExportMyData {
        /// Write to this file instead of standard output.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Delete everything stored about you.
    Forget {
        /// Do not ask.
        #[arg(long)]
        yes: bool,
    },
    /// Run the whole system on this machine: a server and four phones.
    Demo {
        /// Seed of the simulated air.
        #[arg(long, default_value_t = 2026)]
        seed: u64,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum ModeArg {
    Compact,
    Unlinkable,
}

fn parse_day(s: &str) -> Result<DayNumber, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, format)
        .ok()
        .and_then(DayNumber::from_date)
        .ok_or_else(|| format!("{s}: expected a date as YYYY-MM-DD"))
}

fn parse_region(s: &str) -> Result<RegionId, String> {
    RegionId::new(s).map_err(|e| format!("{s}: {e}"))
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    let format = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]");
    time::PrimitiveDateTime::parse(s, format)
        .ok()
        .and_then(|t| u64::try_from(t.assume_utc().unix_timestamp()).ok())
        .map(Timestamp)
        .ok_or_else(|| format!("{s}: expected YYYY-MM-DDTHH:MM (UTC)"))
}

fn parse_range(s: &str) -> Result<(Timestamp, Timestamp), String> {
    let (a, b) = s
        .split_once('/')
        .ok_or_else(|| format!("{s}: expected FROM/TO"))?;
    let (from, to) = (parse_time(a)?, parse_time(b)?);
    if to <= from {
        return Err(format!("{s}: the range ends before it starts"));
    }
    Ok((from, to))
}

/// Asks a yes/no question on the terminal; no terminal means no.
fn confirm(question: &str) -> anyhow::Result<bool> {
    if !std::io::stdin().is_terminal() {
        return Ok(false);
    }
    print!("{question} [y/N] ");
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(matches!(line.trim(), "y" | "Y" | "yes"))
}

fn socket(args: &Args) -> anyhow::Result<PathBuf> {
    if let Some(s) = &args.socket {
        return Ok(s.clone());
    }
    Ok(DaemonConfig::load(args.config.as_deref())?.socket_path())
}

async fn ask(args: &Args, request: Request) -> anyhow::Result<Response> {
    let response = api::call(&socket(args)?, &request).await?;
    if let Response::Error { code, message } = &response {
        bail!("{message} ({code})");
    }
    Ok(response)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let response = match &args.command {
        Command::Demo { seed } => {
            let options = demo::DemoOptions {
                seed: *seed,
                ..demo::DemoOptions::default()
            };
            let mut out = std::io::stdout();
            demo::run(&options, &mut out).await?;
            return Ok(());
        }
        Command::Status { .. } => ask(&args, Request::Status).await?,
        Command::CheckIn => ask(&args, Request::CheckIn).await?,
        Command::ReportPositive {
            code,
            mode,
            omit_days,
            omit_ranges,
            visited,
            yes,
        } => {
            let consent = Consent {
                mode: match mode {
                    ModeArg::Compact => Mode::Compact,
                    ModeArg::Unlinkable => Mode::Unlinkable,
                },
                omit_days: omit_days.clone(),
                omit_ranges: omit_ranges.clone(),
                visited: visited.clone(),
            };
            println!("This uploads the keys your phone broadcast over the last 14 days, so that");
            println!("people you met can learn they were exposed. It reveals nothing else: not");
            println!("who you met, where you were, or who you are.");
            for d in omit_days {
                println!("  left out: {d}");
            }
            for (a, b) in omit_ranges {
                println!("  left out: {a} to {b}");
            }
            for r in visited {
                println!("  also sent to region {r}, which you visited");
            }
            if !yes && !confirm("Upload?")? {
                bail!("nothing uploaded: consent not given (use --yes in scripts)");
            }
            ask(
                &args,
                Request::ReportPositive {
                    code: code.clone(),
                    consent,
                },
            )
            .await?
        }
        Command::Sync => ask(&args, Request::Sync).await?,
        Command::ExportMyData { .. } => ask(&args, Request::Export).await?,
        Command::Forget { yes } => {
            if !yes && !confirm("Delete everything Greenlight stored on this device?")? {
                bail!("nothing deleted (use --yes in scripts)");
            }
            ask(&args, Request::Forget { confirm: true }).await?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&response)?);
        return Ok(());
    }
    match (&args.command, response) {
        (Command::Status { qr: true }, Response::Status(view)) => {
            print!("{}", card::render(&view, std::io::stdout().is_terminal()));
        }
        (_, Response::Status(view)) => {
            print!("{}", view.explanation);
            if view.colour != greenlight_protocol::Colour::Green && !view.checked_in_today {
                println!("You have not checked in today: run `greenlight check-in`.");
            }
            if !view.policy_signed {
                println!("(Using the built-in policy until the first sync.)");
            }
        }
        (_, Response::CheckedIn { day, new }) => {
            if new {
                println!("Checked in for {day}.");
            } else {
                println!("Already checked in for {day}.");
            }
        }
        (_, Response::Reported(r)) => println!(
            "Uploaded {} key(s) or hashes of {} day(s) to {} (with {} padding entries). Thank you.",
            r.real_entries,
            r.days.len(),
            r.server,
            r.padding
        ),
        (_, Response::Synced(report)) => {
            for s in &report.servers {
                match &s.error {
                    None => println!(
                        "{}: {} new batch(es), {} new exposure(s){}",
                        s.server,
                        s.batches,
                        s.new_exposures,
                        if s.policy_updated {
                            ", policy updated"
                        } else {
                            ""
                        }
                    ),
                    Some(e) => println!("{}: failed: {e}", s.server),
                }
            }
            if !report.ok() {
                bail!("some servers could not be synced; the others were");
            }
        }
        (Command::ExportMyData { output }, Response::Exported(export)) => {
            let json = serde_json::to_string_pretty(&export)?;
            match output {
                Some(path) => std::fs::write(path, json)
                    .with_context(|| format!("cannot write {}", path.display()))?,
                None => println!("{json}"),
            }
        }
        (_, Response::Forgotten) => println!("Everything was deleted; the store key was replaced."),
        (_, other) => println!("{}", serde_json::to_string_pretty(&other)?),
    }
    Ok(())
}
