//! `greenlight demo`: the whole system on one machine, in about a minute.
//!
//! A real `greenlight-server` (embedded SQLite, on loopback) and four real
//! phones — each with its encrypted store, key ring, radio cycle, sync
//! client and status engine — share a simulated air. One clock, run
//! faster than real time, drives them all. People meet; Alice tests
//! positive and, with a code from the health authority, uploads her keys;
//! the authority publishes; every phone downloads, verifies and matches on
//! its own, and turns red, yellow or stays green with the reason; daily
//! check-ins bring everyone back to green; at the end the demo prints
//! what the server learned.

use anyhow::{anyhow, bail, Context as _, Result};
use greenlight_ble::sim::{PhoneId, SimRadio, SimulatedAir};
use greenlight_daemon::radio_loop::{DutyCycle, RadioLoop};
use greenlight_daemon::runtime::Shared;
use greenlight_daemon::sync::{lock, Consent, ServerConfig, SharedPhone, Syncer};
use greenlight_daemon::Phone;
use greenlight_protocol::{Colour, DayNumber, RegionId, Timestamp};
use greenlight_server::config::Config;
use greenlight_server::{Clock, Server};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// The people of the story, in order.
pub const PEOPLE: [&str; 4] = ["Alice", "Bob", "Carol", "Dan"];
const ALICE: usize = 0;
const CAROL: usize = 2;

/// How the demo runs.
#[derive(Clone, Debug)]
pub struct DemoOptions {
    /// Seed of the simulated air (shadowing, calibration errors).
    pub seed: u64,
    /// The first day of the story.
    pub start_day: DayNumber,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            seed: 2026,
            start_day: greenlight_daemon::runtime::wall_clock().day(),
        }
    }
}

/// One person's status on one day.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The day.
    pub day: DayNumber,
    /// Who.
    pub person: &'static str,
    /// Their colour that day.
    pub colour: Colour,
    /// Their first green day, if not green.
    pub green_on: Option<DayNumber>,
}

/// What happened, for the end-to-end test.
#[derive(Clone, Debug)]
pub struct DemoOutcome {
    /// The first day.
    pub start_day: DayNumber,
    /// Each person's status on the day Alice reported and every day after.
    pub timeline: Vec<Snapshot>,
    /// New exposures each phone found at the first sync after the report.
    pub exposures_found: [usize; 4],
    /// What Alice's upload carried: real keys and padding.
    pub uploaded: (usize, usize),
    /// The server's aggregate counters at the end.
    pub server_counters: BTreeMap<String, i64>,
    /// Batches the server published, and their entries with padding.
    pub batches: Vec<(u64, u64)>,
}

impl DemoOutcome {
    /// `person`'s snapshot on `day`.
    pub fn on(&self, person: &str, day: DayNumber) -> Option<&Snapshot> {
        self.timeline
            .iter()
            .find(|s| s.person == person && s.day == day)
    }
}

/// The shared simulated clock.
#[derive(Clone, Debug)]
struct SimClock(Arc<AtomicU64>);

impl SimClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
    fn set(&self, t: Timestamp) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

struct Person {
    name: &'static str,
    phone: SharedPhone,
    cycle: RadioLoop<SimRadio>,
    wake: Timestamp,
}

struct World {
    clock: SimClock,
    air: SimulatedAir,
    people: Vec<Person>,
    syncer: Syncer,
    http: reqwest::Client,
    url: String,
    admin_token: String,
}

fn at(day: DayNumber, hh: u64, mm: u64) -> Timestamp {
    Timestamp(day.start().0 + hh * 3600 + mm * 60)
}

impl World {
    /// Everyone's radio runs from `from` to `to` at these positions.
    async fn live(&mut self, from: Timestamp, to: Timestamp, positions: [(f64, f64); 4]) {
        for (i, p) in positions.iter().enumerate() {
            self.air.move_phone(PhoneId(i as u32 + 1), *p);
        }
        for p in &mut self.people {
            p.wake = p.wake.max(from);
        }
        loop {
            let Some((i, t)) = self
                .people
                .iter()
                .enumerate()
                .map(|(i, p)| (i, p.wake))
                .min_by_key(|(_, t)| *t)
            else {
                return;
            };
            if t >= to {
                return;
            }
            self.clock.set(t);
            self.air.set_time(t);
            let p = &mut self.people[i];
            let mut state = Shared(p.phone.clone());
            p.wake = match p.cycle.step(&mut state, t).await {
                Ok(next) => next,
                Err(_) => Timestamp(t.0 + 60),
            };
        }
    }

    async fn admin_post(&self, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
        let resp = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await?;
        let status = resp.status();
        let value: serde_json::Value = resp.json().await?;
        if !status.is_success() {
            bail!("{path}: HTTP {status}: {value}");
        }
        Ok(value)
    }

    async fn admin_get(&self, path: &str) -> Result<serde_json::Value> {
        let resp = self
            .http
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token)
            .send()
            .await?;
        Ok(resp.error_for_status()?.json().await?)
    }
}

/// Runs the story, narrating to `out`.
pub async fn run(options: &DemoOptions, out: &mut dyn Write) -> Result<DemoOutcome> {
    let dir = tempfile::tempdir().context("cannot create a temporary directory")?;
    run_in(options, dir.path(), out).await
}

/// [`run`] with its data under `dir`.
pub async fn run_in(options: &DemoOptions, dir: &Path, out: &mut dyn Write) -> Result<DemoOutcome> {
    let d0 = options.start_day;
    let clock = SimClock(Arc::new(AtomicU64::new(at(d0, 8, 0).0)));
    let region = RegionId::new("DEMO")?;

    // The health authority's server: embedded SQLite, loopback, the demo's clock.
    let config = Config {
        data_dir: dir.join("server"),
        region: region.to_string(),
        // Publication is triggered by the authority below, not by a timer.
        batch_interval_secs: 365 * 86_400,
        ..Config::default()
    };
    let server_clock = clock.clone();
    let server = Server::open_with_clock(config, Clock::from_fn(move || server_clock.now().0))
        .await
        .context("the demo server does not start")?;
    let public_key = hex::encode(server.state.signing_key.verifying_key().to_bytes());
    let admin_token = server.state.admin_token.to_string();
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await?;
    let url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(server.serve(listener, shutdown.clone()));

    writeln!(
        out,
        "Greenlight demo — four phones, one health authority, {} to {}.",
        d0,
        d0.offset(16)
    )?;
    writeln!(
        out,
        "A real server runs at {url} (embedded SQLite); each phone has its own encrypted store."
    )?;
    writeln!(out, "Time runs fast: two weeks take seconds.\n")?;

    let syncer = Syncer::new(vec![ServerConfig {
        url: url.clone(),
        region: region.clone(),
        public_key,
    }])?;
    let air = SimulatedAir::new(options.seed);
    let mut people = Vec::new();
    for (i, name) in PEOPLE.iter().enumerate() {
        let phone = Phone::open(&dir.join(name.to_lowercase()), region.clone(), d0)?;
        let radio = air.add_phone(PhoneId(i as u32 + 1), (1000.0 * i as f64, 0.0), -8);
        people.push(Person {
            name,
            phone: Arc::new(Mutex::new(phone)),
            cycle: RadioLoop::new(radio, DutyCycle::default()),
            wake: at(d0, 8, 0),
        });
    }
    let mut world = World {
        clock,
        air,
        people,
        syncer,
        http: reqwest::Client::new(),
        url,
        admin_token,
    };

    let far = |x: f64| (x, 5000.0);
    writeln!(
        out,
        "{d0}, 09:00  Alice and Bob work side by side, 1 m apart, for two hours."
    )?;
    world
        .live(
            at(d0, 9, 0),
            at(d0, 11, 0),
            [(0.0, 0.0), (1.0, 0.0), far(0.0), far(1000.0)],
        )
        .await;
    writeln!(
        out,
        "{d0}, 12:30  Carol chats with Alice in the canteen queue, 1.8 m apart, for 12 minutes."
    )?;
    world
        .live(
            at(d0, 12, 30),
            at(d0, 12, 42),
            [(0.0, 0.0), far(2000.0), (1.8, 0.0), far(1000.0)],
        )
        .await;
    writeln!(
        out,
        "{d0}, 17:40  Dan, a stranger, stands 3 m from Alice on the tram for 3 minutes."
    )?;
    world
        .live(
            at(d0, 17, 40),
            at(d0, 17, 43),
            [(0.0, 0.0), far(2000.0), far(3000.0), (3.0, 0.0)],
        )
        .await;
    // The next two days everyone goes about their life, apart; the phones
    // go on broadcasting (a new daily key each day) and hear no one.
    let apart = [(0.0, 0.0), far(1000.0), far(2000.0), far(3000.0)];
    for day in [d0.offset(1), d0.offset(2)] {
        world.live(at(day, 7, 0), at(day, 8, 0), apart).await;
    }
    for p in &world.people {
        let n = lock(&p.phone).sighting_count()?;
        writeln!(
            out,
            "             {}'s phone has stored {n} sightings, sealed with its own key.",
            p.name
        )?;
    }

    // Day 2: Alice is confirmed; the authority gives her a one-time code.
    let d2 = d0.offset(2);
    world.clock.set(at(d2, 10, 0));
    let code = world
        .admin_post(
            "/v1/authority/codes",
            serde_json::json!({ "test_type": "pcr", "test_day": d2.0, "onset_day": d2.0 }),
        )
        .await?;
    let short_code = code["short_code"]
        .as_str()
        .ok_or_else(|| anyhow!("no short code in {code}"))?
        .to_owned();
    writeln!(
        out,
        "\n{d2}, 10:00  Alice tests positive. The health authority issues her a one-time code."
    )?;
    let receipt = world
        .syncer
        .report_positive(
            &world.people[ALICE].phone,
            &short_code,
            &Consent::default(),
            world.clock.now(),
        )
        .await?;
    writeln!(
        out,
        "             Alice consents and uploads her daily keys of {} day(s), padded with random ones to {} so every upload looks alike.",
        receipt.real_entries,
        receipt.real_entries + receipt.padding
    )?;
    world.clock.set(at(d2, 12, 0));
    let published = world
        .admin_post("/v1/authority/publish", serde_json::json!({}))
        .await?;
    let listed: Vec<String> = published
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| {
                    format!(
                        "batch {} ({}, {} entries)",
                        b["number"],
                        b["mode"].as_str().unwrap_or("?"),
                        b["entries"]
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    writeln!(
        out,
        "{d2}, 12:00  The authority publishes signed, padded batches: {}.",
        listed.join(", ")
    )?;

    world.clock.set(at(d2, 18, 0));
    writeln!(
        out,
        "{d2}, 18:00  Every phone syncs, verifies the signatures and matches on its own:\n"
    )?;
    let mut exposures_found = [0usize; 4];
    for (i, p) in world.people.iter().enumerate() {
        let report = world.syncer.sync(&p.phone, world.clock.now()).await;
        if let Some(err) = report.servers.iter().find_map(|s| s.error.clone()) {
            bail!("{}'s sync failed: {err}", p.name);
        }
        exposures_found[i] = report.new_exposures();
    }
    let mut timeline = Vec::new();
    let mut last: Vec<Option<(Colour, Option<DayNumber>)>> = vec![None; 4];
    for (i, p) in world.people.iter().enumerate() {
        let status = lock(&p.phone).status(d2);
        writeln!(out, "  {} — {}", p.name, indent(&status.to_string()))?;
        last[i] = Some((status.colour, status.green_on));
        timeline.push(Snapshot {
            day: d2,
            person: p.name,
            colour: status.colour,
            green_on: status.green_on,
        });
    }

    // The following days: check-ins, one forgotten, and the way back to green.
    writeln!(
        out,
        "Every morning those in quarantine check in. Carol forgets on {}.\n",
        d0.offset(4)
    )?;
    for n in 3..=17 {
        let day = d0.offset(n);
        world.clock.set(at(day, 9, 0));
        for (i, p) in world.people.iter().enumerate() {
            let mut phone = lock(&p.phone);
            let before = phone.status(day);
            if before.colour != Colour::Green && !(i == CAROL && n == 4) {
                phone.check_in(day)?;
            }
            let status = phone.status(day);
            timeline.push(Snapshot {
                day,
                person: p.name,
                colour: status.colour,
                green_on: status.green_on,
            });
            let now = Some((status.colour, status.green_on));
            if now != last[i] {
                match status.green_on {
                    Some(g) => writeln!(out, "{day}  {}: {} until {g}.", p.name, status.colour)?,
                    None => writeln!(out, "{day}  {}: {} again.", p.name, status.colour)?,
                }
                last[i] = now;
            }
        }
    }

    // What the server learned.
    let stats = world.admin_get("/v1/authority/stats").await?;
    let server_counters: BTreeMap<String, i64> =
        serde_json::from_value(stats["counters"].clone()).unwrap_or_default();
    let index: serde_json::Value = world
        .http
        .get(format!("{}/v1/batches", world.url))
        .send()
        .await?
        .json()
        .await?;
    let batches: Vec<(u64, u64)> = index["batches"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|b| {
                    (
                        b["number"].as_u64().unwrap_or(0),
                        b["entries"].as_u64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    writeln!(out, "\nWhat the server learned:")?;
    for (name, value) in &server_counters {
        writeln!(out, "  {name}: {value}")?;
    }
    for (n, entries) in &batches {
        writeln!(
            out,
            "  batch {n}: {entries} entries, real keys mixed with padding"
        )?;
    }
    writeln!(
        out,
        "It never saw who met whom, where, any phone's sightings or colour, a name, or an IP address:\n\
         matching and colours stayed on the phones."
    )?;

    shutdown.cancel();
    serving
        .await
        .map_err(|e| anyhow!("server task: {e}"))?
        .context("server shutdown")?;
    Ok(DemoOutcome {
        start_day: d0,
        timeline,
        exposures_found,
        uploaded: (receipt.real_entries, receipt.padding),
        server_counters,
        batches,
    })
}

fn indent(text: &str) -> String {
    text.trim_end().replace('\n', "\n      ") + "\n"
}
