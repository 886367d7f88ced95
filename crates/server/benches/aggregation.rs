//! A day of aggregate reports (SPEC §19.4) through a leader and a real
//! helper on loopback HTTP, both `greenlight-server`s in this process with
//! their own SQLite databases:
//!
//! `cargo bench -p greenlight-server --bench aggregation [-- REPORTS]`
//! (or `GREENLIGHT_BENCH_REPORTS=1000000`; default 10,000;
//! `GREENLIGHT_BENCH_JOB_SIZE` sets `job_size`, default the server's).
//!
//! The reports are made on every core (each from its own seed), stored in
//! the leader's database in transactions of 20,000 as `POST /v1/reports`
//! would store them, then the day is aggregated with `aggregate_day`, the
//! function the schedule and the authority call: jobs to the helper, the
//! collect, the counts, checked against the measurements sent; then the
//! day's reports are deleted in batches. Printed: reports/s and wall time
//! of each phase, peak RSS during the aggregation
//! (leader and helper together, since they share this process) and over the
//! whole run, database sizes, and the aggregation's rate against the two
//! cores' bound measured in the same run (the Prio3 and HPKE work of both
//! aggregators, no I/O, on one core, times the cores).

use greenlight_analytics::{
    aggregate, helper_prepare, prepare_report, unshard, AggregatorKeyPair, HelperInput, LeaderPrep,
    Measurement, Report, VerifyKey, BUCKETS,
};
use greenlight_protocol::{DayNumber, RegionId, Timestamp};
use greenlight_server::config::{AggregatorRole, Config};
use greenlight_server::Server;
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rayon::prelude::*;
use sqlx::Connection;
use std::path::Path;
use std::time::Instant;
use tokio_util::sync::CancellationToken;

/// Reports stored per transaction.
const CHUNK: usize = 20_000;
/// Reports in the one-core measurement of the aggregators' work.
const SAMPLE: usize = 2_000;

fn secret(dir: &Path, name: &str) -> [u8; 32] {
    let text = std::fs::read_to_string(dir.join(name)).expect("secret file");
    hex::decode(text.trim())
        .expect("hex")
        .try_into()
        .expect("32 bytes")
}

/// Peak resident memory of this process, MiB (VmHWM).
fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// CPU time this process has used, user and system, seconds (Linux
/// reports it in ticks of 1/100 s to user space).
fn cpu_secs() -> f64 {
    std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the command name, which ends with the last ')'.
            let rest = s.get(s.rfind(')')? + 2..)?.to_owned();
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some((f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?) / 100.0)
        })
        .unwrap_or(f64::NAN)
}

/// Starts the peak RSS afresh (Linux: `5` to clear_refs resets VmHWM).
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn file_mib(path: &Path) -> f64 {
    ["", "-wal"]
        .iter()
        .filter_map(|s| std::fs::metadata(format!("{}{s}", path.display())).ok())
        .map(|m| m.len() as f64 / (1024.0 * 1024.0))
        .sum()
}

/// The bucket of report `i`.
fn bucket_of(i: usize) -> usize {
    (i * 7 + i / 13) % BUCKETS
}

fn config(dir: &Path, role: AggregatorRole, helper_url: &str, reports: usize) -> Config {
    let mut c = Config {
        data_dir: dir.to_path_buf(),
        region: "CH".into(),
        ..Config::default()
    };
    c.aggregator.role = role;
    c.aggregator.helper_url = helper_url.to_owned();
    c.aggregator.min_batch_reports = reports.clamp(1, 100);
    if let Some(size) = std::env::var("GREENLIGHT_BENCH_JOB_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        c.aggregator.job_size = size;
    }
    c
}

/// The Prio3 and HPKE work of both aggregators for `SAMPLE` reports on
/// one core: reports per second.
fn one_core_rate(
    reports: &[Report],
    leader: &AggregatorKeyPair,
    helper: &AggregatorKeyPair,
    vk: &VerifyKey,
) -> f64 {
    let region = RegionId::new("CH").expect("region");
    let started = Instant::now();
    let (mut l, mut h) = (Vec::new(), Vec::new());
    for r in reports {
        let (prep, share) = LeaderPrep::start(r, leader, vk).expect("leader");
        let out = helper_prepare(&HelperInput::of(r, &share), &region, helper, vk).expect("helper");
        l.push(prep.finish(&out.prep_message).expect("finish"));
        h.push(out.output);
    }
    let counts = unshard(
        &aggregate(l).expect("aggregate"),
        &aggregate(h).expect("aggregate"),
        reports.len(),
    )
    .expect("unshard");
    assert_eq!(counts.buckets.iter().sum::<u64>(), reports.len() as u64);
    reports.len() as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .or_else(|| {
            std::env::var("GREENLIGHT_BENCH_REPORTS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(10_000);
    let cores = rayon::current_num_threads();
    let whole = Instant::now();
    // GREENLIGHT_LOG=greenlight_server=debug shows when each job, the
    // collect and the record end.
    if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("GREENLIGHT_LOG") {
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }

    // The helper, served on loopback; the leader, holding the secrets the
    // helper's operator hands over, called in this process.
    let helper_dir = tempfile::tempdir().expect("temp dir");
    let leader_dir = tempfile::tempdir().expect("temp dir");
    let helper = Server::open(config(helper_dir.path(), AggregatorRole::Helper, "", n))
        .await
        .expect("helper opens");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let helper_url = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    let serving = tokio::spawn(helper.serve(listener, shutdown.clone()));
    for name in ["aggregator-verify.key", "aggregator.token"] {
        std::fs::copy(helper_dir.path().join(name), leader_dir.path().join(name)).expect("copy");
    }
    let leader_config = config(leader_dir.path(), AggregatorRole::Leader, &helper_url, n);
    let job_size = leader_config.aggregator.job_size;
    let leader = Server::open(leader_config.clone())
        .await
        .expect("leader opens");
    let state = leader.state.clone();
    let aggregator = state.aggregator.clone().expect("the leader aggregates");
    let leader_keys =
        AggregatorKeyPair::from_secret(secret(leader_dir.path(), "aggregator-hpke.key"));
    let helper_keys =
        AggregatorKeyPair::from_secret(secret(helper_dir.path(), "aggregator-hpke.key"));
    let verify_key = VerifyKey::from_bytes(secret(helper_dir.path(), "aggregator-verify.key"));
    let (lc, hc) = (leader_keys.config(), helper_keys.config());
    let region = RegionId::new("CH").expect("region");
    let now = Timestamp(greenlight_server::now_secs());
    let day = DayNumber(now.day().0 - 1);
    println!(
        "aggregation bench: {n} reports, jobs of {job_size}, {cores} cores, leader and helper in one process (SQLite each)"
    );

    // Phones' reports, made on every core and stored chunk by chunk.
    let make = |i: usize| {
        let m = Measurement::from_bucket(bucket_of(i)).expect("bucket");
        let mut rng = ChaCha20Rng::seed_from_u64(i as u64);
        prepare_report(&m, now, day, &region, &lc, &hc, &mut rng).expect("report")
    };
    let sample: Vec<Report> = (0..SAMPLE.min(n)).map(|i| make(n + i)).collect();
    let mut db = sqlx::SqliteConnection::connect(&leader_config.database())
        .await
        .expect("the leader's database");
    let (mut making, mut storing) = (0.0, 0.0);
    let mut expected = [0u64; BUCKETS];
    for from in (0..n).step_by(CHUNK) {
        let to = (from + CHUNK).min(n);
        let started = Instant::now();
        let rows: Vec<serde_json::Value> = (from..to)
            .into_par_iter()
            .map(|i| {
                let r = make(i);
                serde_json::json!([r.report_id, serde_json::to_string(&r).expect("JSON")])
            })
            .collect();
        making += started.elapsed().as_secs_f64();
        for i in from..to {
            expected[bucket_of(i)] += 1;
        }
        let started = Instant::now();
        sqlx::query(
            "INSERT INTO reports (report_id, day, time, body) \
             SELECT unhex(json_extract(value, '$[0]')), $1, $2, json_extract(value, '$[1]') FROM json_each($3)",
        )
        .bind(i64::from(day.0))
        .bind(now.0 as i64)
        .bind(serde_json::Value::Array(rows).to_string())
        .execute(&mut db)
        .await
        .expect("store reports");
        storing += started.elapsed().as_secs_f64();
        if to % 100_000 == 0 || to == n {
            eprintln!("  {to} reports made and stored");
        }
    }
    db.close().await.expect("close");
    println!(
        "reports made: {n} in {making:.1} s = {:.0} reports/s on {cores} cores; stored in {storing:.1} s = {:.0} reports/s",
        n as f64 / making,
        n as f64 / storing
    );
    let rss_before = peak_rss_mib();
    // The bound, before and after the aggregation: on a machine whose
    // cores are shared, the faster of the two is the less disturbed.
    let one_core_before = one_core_rate(&sample, &leader_keys, &helper_keys, &verify_key);

    reset_peak_rss();
    let cpu_before = cpu_secs();
    let started = Instant::now();
    let record = greenlight_server::aggregator::aggregate_day(&state, &aggregator, day)
        .await
        .expect("the day is aggregated");
    let wall = started.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu_before;
    // The day's reports are deleted after the counts, in batches.
    let counted = Instant::now();
    while state.store.count_reports(day.0).await.expect("count") > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let purge = counted.elapsed().as_secs_f64();
    let rss_aggregation = peak_rss_mib();
    assert_eq!(record.reports, n as u64, "every report counted");
    assert_eq!(record.invalid, 0);
    assert_eq!(record.buckets, expected.to_vec(), "exact counts");
    let rate = n as f64 / wall;
    println!(
        "aggregation: {n} reports in {wall:.1} s = {rate:.0} reports/s ({} jobs); counts exact; \
         {cpu:.1} s of CPU = {:.2} of the {cores} cores busy",
        n.div_ceil(job_size),
        cpu / (wall * cores as f64)
    );
    println!("the day's reports deleted {purge:.1} s after its counts were recorded");
    println!(
        "peak RSS: {rss_aggregation:.0} MiB during the aggregation (leader + helper); {:.0} MiB over the run, making the reports included",
        rss_before.max(rss_aggregation)
    );
    println!(
        "databases after: leader {:.0} MiB (reports deleted, pages not returned to the file system), helper {:.0} MiB",
        file_mib(&leader_dir.path().join("greenlight.db")),
        file_mib(&helper_dir.path().join("greenlight.db"))
    );
    let one_core_after = one_core_rate(&sample, &leader_keys, &helper_keys, &verify_key);
    let one_core = one_core_before.max(one_core_after);
    println!(
        "bound: the aggregators' Prio3 and HPKE work alone runs at {one_core:.0} reports/s on one core \
         ({one_core_before:.0} before the aggregation, {one_core_after:.0} after), {:.0} on {cores}; \
         the aggregation reaches {:.2} of it",
        one_core * cores as f64,
        rate / (one_core * cores as f64)
    );
    println!("whole run: {:.1} s", whole.elapsed().as_secs_f64());
    shutdown.cancel();
    serving.await.expect("helper task").expect("helper stops");
    drop(leader);
}
