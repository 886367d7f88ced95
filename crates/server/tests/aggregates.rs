//! Aggregate counts with the leader and the helper as two
//! `greenlight-server` processes on loopback, each with its own data
//! directory (SPEC §19): valid reports are counted exactly, in jobs of a
//! few reports, bad ones are refused with clear errors or excluded as
//! invalid, a batch below the minimum is refused, an interrupted run is
//! replaced by the next, a collect whose answer was lost is sent again,
//! noise is added once, and nothing is counted twice.

use greenlight_analytics::{
    aggregate, prepare_report, testing, unshard, AggregateShare, AggregatorConfig,
    AggregatorKeyPair, HelperInput, LeaderPrep, Measurement, Report, VerifyKey, BUCKETS,
};
use greenlight_protocol::{DayNumber, RegionId, Timestamp};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
mod common;

use common::{admin_token, authority_command, get_json, serve_command, Proc};
use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

const MIN: usize = 100;

fn start(data_dir: &Path, aggregator_table: &str, env: &[(&str, &str)]) -> Proc {
    let log = std::fs::File::create(data_dir.join("server.log")).expect("log file");
    let config = data_dir.join("server.toml");
    std::fs::write(&config, format!("[aggregator]\n{aggregator_table}")).expect("config");
    Proc::spawn(
        serve_command(data_dir)
            .arg("--config")
            .arg(&config)
            .envs(env.iter().copied())
            .stderr(Stdio::from(log)),
    )
}

/// A helper, and a leader's data directory holding the secrets the
/// helper's operator hands over: the verify key and the bearer secret.
struct Helper {
    proc: Proc,
    dir: tempfile::TempDir,
    leader_dir: tempfile::TempDir,
}

impl Helper {
    fn start(table: &str) -> Helper {
        let dir = tempfile::tempdir().expect("temp dir");
        let leader_dir = tempfile::tempdir().expect("temp dir");
        let proc = start(dir.path(), &format!("role = \"helper\"\n{table}"), &[]);
        for name in ["aggregator-verify.key", "aggregator.token"] {
            std::fs::copy(dir.path().join(name), leader_dir.path().join(name)).expect("copy");
        }
        Helper {
            proc,
            dir,
            leader_dir,
        }
    }

    /// Starts (or restarts) the leader, asking the helper at `helper_url`.
    fn leader(&self, helper_url: &str, table: &str, env: &[(&str, &str)]) -> Proc {
        start(
            self.leader_dir.path(),
            &format!("role = \"leader\"\nhelper_url = \"{helper_url}\"\n{table}"),
            env,
        )
    }

    fn secret(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name))
            .expect("secret")
            .trim()
            .to_owned()
    }

    fn token(&self) -> String {
        self.secret("aggregator.token")
    }

    fn verify_key(&self) -> VerifyKey {
        VerifyKey::from_bytes(
            hex::decode(self.secret("aggregator-verify.key"))
                .expect("hex")
                .try_into()
                .expect("32 bytes"),
        )
    }

    /// The leader's HPKE key pair, from its data directory.
    fn leader_keys(&self) -> AggregatorKeyPair {
        let secret = std::fs::read_to_string(self.leader_dir.path().join("aggregator-hpke.key"))
            .expect("key");
        AggregatorKeyPair::from_secret(
            hex::decode(secret.trim())
                .expect("hex")
                .try_into()
                .expect("32 bytes"),
        )
    }
}

fn authority_cli(p: &Proc, dir: &Path, args: &[&str]) -> (bool, String) {
    let out = authority_command(p, dir, args);
    let text = if out.status.success() {
        out.stdout
    } else {
        out.stderr
    };
    (
        out.status.success(),
        String::from_utf8_lossy(&text).into_owned(),
    )
}

/// `authority aggregate --day`, expecting the counts.
fn aggregate_now(leader: &Proc, dir: &Path, day: DayNumber) -> Value {
    let (ok, text) = authority_cli(leader, dir, &["aggregate", "--day", &day.to_string()]);
    assert!(ok, "{text}");
    let counts: Value = serde_json::from_str(&text).expect("JSON");
    assert!(counts["buckets"].is_array(), "counts, not {counts}");
    counts
}

async fn pinned(client: &reqwest::Client, base: &str) -> AggregatorConfig {
    let v = get_json(client, &format!("{base}/v1/aggregator/config"), None).await;
    AggregatorConfig {
        key_id: v["key_id"].as_u64().expect("key id") as u8,
        public_key: v["public_key"].as_str().expect("key").to_owned(),
    }
}

async fn submit(client: &reqwest::Client, base: &str, report: &Report) -> (u16, String) {
    let r = client
        .post(format!("{base}/v1/reports"))
        .json(report)
        .send()
        .await
        .expect("send");
    let status = r.status().as_u16();
    let body: Value = r.json().await.expect("JSON");
    (
        status,
        body["error"].as_str().unwrap_or_default().to_owned(),
    )
}

/// Who sends what and when: today, yesterday, the region, the two pinned keys.
struct Phones {
    now: Timestamp,
    day: DayNumber,
    region: RegionId,
    leader: AggregatorConfig,
    helper: AggregatorConfig,
}

impl Phones {
    async fn pinning(client: &reqwest::Client, leader: &str, helper: &str) -> Phones {
        let now = Timestamp(greenlight_server::now_secs());
        Phones {
            now,
            day: DayNumber(now.day().0 - 1),
            region: RegionId::new("CH").expect("region"),
            leader: pinned(client, leader).await,
            helper: pinned(client, helper).await,
        }
    }

    /// Report `i` of a day: its bucket varies with `i`.
    fn report(&self, i: usize, rng: &mut ChaCha20Rng) -> (usize, Report) {
        self.report_for(self.day, i, rng)
    }

    fn report_for(&self, day: DayNumber, i: usize, rng: &mut ChaCha20Rng) -> (usize, Report) {
        let m = Measurement::from_bucket((i * 5 + i / 7) % BUCKETS).expect("bucket");
        let r = prepare_report(
            &m,
            self.now,
            day,
            &self.region,
            &self.leader,
            &self.helper,
            rng,
        )
        .expect("report");
        (m.bucket(), r)
    }

    /// Sends `n` reports, numbered from `from`, to the leader; adds them to `expected`.
    async fn send(
        &self,
        client: &reqwest::Client,
        leader: &Proc,
        from: usize,
        n: usize,
        rng: &mut ChaCha20Rng,
        expected: &mut [u64; BUCKETS],
    ) -> Vec<Report> {
        let mut sent = Vec::with_capacity(n);
        for i in from..from + n {
            let (bucket, report) = self.report(i, rng);
            assert_eq!(
                submit(client, &leader.base, &report).await,
                (201, String::new())
            );
            expected[bucket] += 1;
            sent.push(report);
        }
        sent
    }
}

fn buckets(counts: &Value) -> Vec<u64> {
    serde_json::from_value(counts["buckets"].clone()).expect("buckets")
}

/// The test in the leader's place: prepares reports as aggregator 0 and
/// talks to the helper itself.
struct FakeLeader {
    keys: AggregatorKeyPair,
    verify_key: VerifyKey,
    token: String,
    base: String,
    client: reqwest::Client,
}

impl FakeLeader {
    fn prepare(&self, reports: &[Report]) -> (Vec<HelperInput>, Vec<LeaderPrep>) {
        reports
            .iter()
            .map(|r| {
                let (prep, share) = LeaderPrep::start(r, &self.keys, &self.verify_key)
                    .expect("the leader's share opens");
                (HelperInput::of(r, &share), prep)
            })
            .unzip()
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(format!("{}{path}", self.base))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .await
            .expect("send");
        (r.status().as_u16(), r.json().await.expect("JSON"))
    }

    async fn job(
        &self,
        day: DayNumber,
        run: &str,
        job: u32,
        inputs: &[HelperInput],
    ) -> (u16, Value) {
        let body =
            json!({ "day": day.0, "region": "CH", "run": run, "job": job, "reports": inputs });
        self.post("/v1/aggregator/jobs", &body).await
    }

    async fn collect(&self, day: DayNumber, run: &str, jobs: u32, reports: u64) -> (u16, Value) {
        let body =
            json!({ "day": day.0, "region": "CH", "run": run, "jobs": jobs, "reports": reports });
        self.post("/v1/aggregator/collect", &body).await
    }
}

fn error_of(answer: &(u16, Value)) -> (u16, &str) {
    (answer.0, answer.1["error"].as_str().unwrap_or_default())
}

fn run_id(n: u8) -> String {
    hex::encode([n; 16])
}

#[tokio::test]
async fn leader_and_helper_release_exact_counts_once() {
    let helper = Helper::start("");
    // Jobs of 40 reports, set through the environment.
    let leader = helper.leader(
        &helper.proc.base,
        "",
        &[("GREENLIGHT_AGGREGATOR_JOB_SIZE", "40")],
    );
    let leader_dir = helper.leader_dir.path();
    let client = reqwest::Client::new();
    let phones = Phones::pinning(&client, &leader.base, &helper.proc.base).await;
    let leader_keys = helper.leader_keys();
    assert_eq!(leader_keys.config(), phones.leader);
    let (now, day, region) = (phones.now, phones.day, phones.region.clone());
    let (leader_cfg, helper_cfg) = (phones.leader.clone(), phones.helper.clone());
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let mut expected = [0u64; BUCKETS];
    let mut sent = phones
        .send(&client, &leader, 0, MIN - 1, &mut rng, &mut expected)
        .await;
    let first = sent[0].clone();

    // Bad inputs the leader refuses at once.
    assert_eq!(
        submit(&client, &leader.base, &first).await,
        (409, "duplicate_report".into()),
        "a replayed report"
    );
    let stranger = AggregatorKeyPair::generate(&mut rng);
    let impostor = AggregatorConfig {
        key_id: leader_cfg.key_id,
        public_key: stranger.config().public_key,
    };
    let m = Measurement::from_bucket(0).expect("bucket");
    let wrong_key =
        prepare_report(&m, now, day, &region, &impostor, &helper_cfg, &mut rng).expect("report");
    assert_eq!(
        submit(&client, &leader.base, &wrong_key).await,
        (422, "undecryptable_share".into())
    );
    let mut other_id = stranger.config();
    if other_id.key_id == leader_cfg.key_id {
        other_id.key_id = other_id.key_id.wrapping_add(1);
    }
    let wrong_id =
        prepare_report(&m, now, day, &region, &other_id, &helper_cfg, &mut rng).expect("report");
    assert_eq!(
        submit(&client, &leader.base, &wrong_id).await,
        (422, "wrong_key_id".into())
    );
    let stale_time = Timestamp(now.0 - 3 * 86_400);
    let stale = prepare_report(
        &m,
        stale_time,
        stale_time.day(),
        &region,
        &leader_cfg,
        &helper_cfg,
        &mut rng,
    )
    .expect("report");
    assert_eq!(
        submit(&client, &leader.base, &stale).await,
        (422, "stale_report".into())
    );
    let future = prepare_report(
        &m,
        Timestamp(now.0 + 3600),
        day,
        &region,
        &leader_cfg,
        &helper_cfg,
        &mut rng,
    )
    .expect("report");
    assert_eq!(
        submit(&client, &leader.base, &future).await,
        (422, "future_report".into())
    );
    let de = RegionId::new("DE").expect("region");
    let elsewhere =
        prepare_report(&m, now, day, &de, &leader_cfg, &helper_cfg, &mut rng).expect("report");
    assert_eq!(
        submit(&client, &leader.base, &elsewhere).await,
        (422, "wrong_region".into())
    );
    // Bad inputs only the two aggregators together can see: an invalid
    // proof, and a helper share sealed to another key. Stored, then
    // excluded at aggregation as invalid, never added.
    for i in 0..2 {
        let two_hot =
            testing::two_hot_report(&m, now, day, &region, &leader_keys, &helper_cfg, &mut rng)
                .expect("report");
        assert_eq!(submit(&client, &leader.base, &two_hot).await.0, 201, "{i}");
    }
    let not_helper = AggregatorConfig {
        key_id: helper_cfg.key_id,
        public_key: stranger.config().public_key,
    };
    let bad_helper_share =
        prepare_report(&m, now, day, &region, &leader_cfg, &not_helper, &mut rng).expect("report");
    assert_eq!(
        submit(&client, &leader.base, &bad_helper_share).await.0,
        201
    );

    // 99 valid reports and 3 the helper refuses, in three jobs: below the
    // minimum. The run is left uncollected at the helper.
    let date = day.to_string();
    let (ok, text) = authority_cli(&leader, leader_dir, &["aggregate", "--day", &date]);
    assert!(!ok, "a batch below the minimum is refused");
    assert!(text.contains("batch_too_small"), "{text}");
    let (ok, text) = authority_cli(&leader, leader_dir, &["aggregates", "--day", &date]);
    assert!(!ok && text.contains("not_aggregated"), "{text}");

    // 130 valid reports and the 3 invalid ones: four jobs of a new run.
    sent.extend(
        phones
            .send(&client, &leader, MIN, 31, &mut rng, &mut expected)
            .await,
    );
    let counts = aggregate_now(&leader, leader_dir, day);
    assert_eq!(counts["reports"], 130);
    assert_eq!(counts["invalid"], 3);
    assert_eq!(buckets(&counts), expected.to_vec());
    let red: u64 = expected[8..].iter().sum();
    assert_eq!(counts["red"], red);
    assert_eq!(counts["dp_epsilon"], Value::Null);
    // The day's sealed reports are deleted once its counts are recorded.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let stats = get_json(
            &client,
            &format!("{}/v1/authority/stats", leader.base),
            Some(&admin_token(leader_dir)),
        )
        .await;
        if stats["counters"]["reports_pending"] == 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "reports stay stored: {stats}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    // Aggregating again changes nothing; late or replayed reports are refused.
    let (ok, text) = authority_cli(&leader, leader_dir, &["aggregate", "--day", &date]);
    assert!(!ok && text.contains("already_aggregated"), "{text}");
    assert_eq!(
        submit(&client, &leader.base, &first).await,
        (409, "batch_closed".into())
    );
    let read = get_json(
        &client,
        &format!(
            "{}/v1/authority/aggregates?day={}&region=CH",
            leader.base, day.0
        ),
        Some(&admin_token(leader_dir)),
    )
    .await;
    assert_eq!(read, counts);
    // The helper refuses another run for the same day, or anything without the secret.
    let fake = FakeLeader {
        keys: leader_keys.clone(),
        verify_key: helper.verify_key(),
        token: helper.token(),
        base: helper.proc.base.clone(),
        client: client.clone(),
    };
    let (inputs, _) = fake.prepare(&sent[..3]);
    assert_eq!(
        error_of(&fake.job(day, &run_id(9), 0, &inputs).await),
        (409, "already_aggregated")
    );
    assert_eq!(
        error_of(&fake.collect(day, &run_id(9), 1, 3).await),
        (409, "already_aggregated")
    );
    let stranger_leader = FakeLeader {
        token: "not-the-secret".into(),
        ..fake
    };
    assert_eq!(
        error_of(
            &stranger_leader
                .job(DayNumber(day.0 - 1), &run_id(9), 0, &inputs)
                .await
        ),
        (401, "unauthorized")
    );
    assert_eq!(
        error_of(
            &stranger_leader
                .collect(DayNumber(day.0 - 1), &run_id(9), 1, 3)
                .await
        ),
        (401, "unauthorized")
    );
    // Admin-only reading.
    let r = client
        .get(format!(
            "{}/v1/authority/aggregates?day={}",
            leader.base, day.0
        ))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);

    // Neither aggregator's log holds anything of a report.
    drop(leader);
    let Helper {
        proc,
        dir,
        leader_dir,
    } = helper;
    drop(proc);
    for dir in [leader_dir.path(), dir.path()] {
        let log = std::fs::read_to_string(dir.join("server.log")).expect("log");
        assert!(
            log.contains("aggregated a day"),
            "the log was captured:\n{log}"
        );
        for r in &sent {
            for secret in [
                &r.report_id,
                &r.public_share,
                &r.leader_share.enc,
                &r.helper_share.enc,
            ] {
                assert!(
                    !log.contains(secret.as_str()),
                    "the log holds {secret}:\n{log}"
                );
            }
        }
    }
}

#[tokio::test]
async fn helper_answers_each_job_once_and_counts_each_report_once() {
    let helper = Helper::start("min_batch_reports = 40\n");
    let client = reqwest::Client::new();
    // The test is the leader: its own HPKE key, the helper's shared secrets.
    let mut rng = ChaCha20Rng::seed_from_u64(77);
    let leader_keys = AggregatorKeyPair::generate(&mut rng);
    let now = Timestamp(greenlight_server::now_secs());
    let phones = Phones {
        now,
        day: DayNumber(now.day().0 - 1),
        region: RegionId::new("CH").expect("region"),
        leader: leader_keys.config(),
        helper: pinned(&client, &helper.proc.base).await,
    };
    let day = phones.day;
    let fake = FakeLeader {
        keys: leader_keys,
        verify_key: helper.verify_key(),
        token: helper.token(),
        base: helper.proc.base.clone(),
        client: client.clone(),
    };
    let mut expected = [0u64; BUCKETS];
    let mut seeds = Vec::new();
    let reports: Vec<Report> = (0..60)
        .map(|i| {
            let seed = 1000 + i as u64;
            seeds.push(seed);
            let (bucket, r) = phones.report(i, &mut ChaCha20Rng::seed_from_u64(seed));
            expected[bucket] += 1;
            r
        })
        .collect();
    let (inputs, preps) = fake.prepare(&reports);
    let run = run_id(1);

    let job0 = fake.job(day, &run, 0, &inputs[..20]).await;
    assert_eq!(job0.0, 200, "{}", job0.1);
    assert_eq!(
        fake.job(day, &run, 0, &inputs[..20]).await,
        job0,
        "a retried job gets the same answer"
    );
    assert_eq!(
        error_of(&fake.job(day, &run, 0, &inputs[20..40]).await),
        (409, "job_conflict"),
        "another job under the same number"
    );
    let mut replayed = inputs[20..40].to_vec();
    replayed[7] = inputs[5].clone();
    assert_eq!(
        error_of(&fake.job(day, &run, 1, &replayed).await),
        (409, "duplicate_report"),
        "a report already in job 0"
    );
    let mut twice = inputs[20..40].to_vec();
    twice[3] = twice[4].clone();
    assert_eq!(
        error_of(&fake.job(day, &run, 1, &twice).await),
        (400, "duplicate_report")
    );
    assert_eq!(
        error_of(&fake.job(day, "not hex", 1, &inputs[20..40]).await),
        (400, "malformed_run")
    );
    assert_eq!(
        error_of(
            &fake
                .job(DayNumber(day.0 - 1), &run, 1, &inputs[20..40])
                .await
        ),
        (400, "mixed_days")
    );
    assert_eq!(
        error_of(&fake.job(day, &run, 1, &[]).await),
        (400, "empty_job")
    );
    let wrong_region = fake
        .post(
            "/v1/aggregator/jobs",
            &json!({ "day": day.0, "region": "DE", "run": run, "job": 1, "reports": &inputs[20..40] }),
        )
        .await;
    assert_eq!(error_of(&wrong_region), (422, "wrong_region"));
    // Nothing of the refused jobs was kept: job 1 goes through whole.
    let job1 = fake.job(day, &run, 1, &inputs[20..40]).await;
    assert_eq!(job1.0, 200, "{}", job1.1);
    let job2 = fake.job(day, &run, 2, &inputs[40..]).await;
    assert_eq!(job2.0, 200, "{}", job2.1);

    assert_eq!(
        error_of(&fake.collect(day, &run, 2, 60).await),
        (409, "jobs_mismatch")
    );
    assert_eq!(
        error_of(&fake.collect(day, &run, 4, 60).await),
        (409, "jobs_mismatch")
    );
    assert_eq!(
        error_of(&fake.collect(day, &run, 3, 59).await),
        (409, "count_mismatch")
    );
    assert_eq!(
        error_of(&fake.collect(day, &run_id(2), 3, 60).await),
        (409, "unknown_run")
    );
    let collected = fake.collect(day, &run, 3, 60).await;
    assert_eq!(collected.0, 200, "{}", collected.1);
    assert_eq!(collected.1["reports"], 60);
    assert_eq!(
        fake.collect(day, &run, 3, 60).await,
        collected,
        "a retried collect gets the same answer"
    );
    assert_eq!(
        error_of(&fake.collect(day, &run, 2, 40).await),
        (409, "already_aggregated")
    );
    assert_eq!(
        error_of(&fake.job(day, &run_id(3), 0, &inputs[..20]).await),
        (409, "already_aggregated")
    );
    // The leader's share with the helper's: exact counts.
    let mut verdicts = Vec::new();
    for answer in [&job0, &job1, &job2] {
        verdicts.extend(answer.1["verdicts"].as_array().expect("verdicts").clone());
    }
    let outputs: Vec<_> = preps
        .into_iter()
        .zip(&verdicts)
        .map(|(prep, v)| {
            prep.finish(v["prep_message"].as_str().expect("valid"))
                .expect("finishes")
        })
        .collect();
    let leader_share = aggregate(outputs).expect("aggregate");
    let helper_share =
        AggregateShare::from_hex(collected.1["aggregate_share"].as_str().expect("share"))
            .expect("share");
    let counts = unshard(&leader_share, &helper_share, 60).expect("unshard");
    assert_eq!(counts.buckets, expected);

    // Another day: a report id counted on `day` is refused as a replay,
    // and a day below the minimum is not collected.
    let next = DayNumber(day.0 + 1);
    let again = phones
        .report_for(next, 0, &mut ChaCha20Rng::seed_from_u64(seeds[0]))
        .1;
    assert_eq!(again.report_id, reports[0].report_id, "the same id");
    let fresh: Vec<Report> = (1..10)
        .map(|i| phones.report_for(next, i, &mut rng).1)
        .collect();
    let (mut next_inputs, _) = fake.prepare(&fresh);
    next_inputs.extend(fake.prepare(&[again]).0);
    let (status, answer) = fake.job(next, &run_id(4), 0, &next_inputs).await;
    assert_eq!(status, 200, "{answer}");
    let verdicts = answer["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts[9]["error"], "replayed_report");
    assert!(verdicts[..9].iter().all(|v| v["prep_message"].is_string()));
    assert_eq!(
        error_of(&fake.collect(next, &run_id(4), 1, 9).await),
        (422, "batch_too_small")
    );
}

#[tokio::test]
async fn an_interrupted_run_is_replaced_by_the_next() {
    let helper = Helper::start("");
    let leader = helper.leader(&helper.proc.base, "job_size = 40\n", &[]);
    let client = reqwest::Client::new();
    let phones = Phones::pinning(&client, &leader.base, &helper.proc.base).await;
    let day = phones.day;
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let mut expected = [0u64; BUCKETS];
    let sent = phones
        .send(&client, &leader, 0, 130, &mut rng, &mut expected)
        .await;
    // A leader that stopped after two jobs of its run.
    let fake = FakeLeader {
        keys: helper.leader_keys(),
        verify_key: helper.verify_key(),
        token: helper.token(),
        base: helper.proc.base.clone(),
        client: client.clone(),
    };
    let (inputs, _) = fake.prepare(&sent[..80]);
    let stopped = run_id(1);
    for (job, part) in inputs.chunks(40).enumerate() {
        assert_eq!(fake.job(day, &stopped, job as u32, part).await.0, 200);
    }
    // The next attempt is a new run: its jobs replace the earlier ones.
    let counts = aggregate_now(&leader, helper.leader_dir.path(), day);
    assert_eq!(counts["reports"], 130);
    assert_eq!(counts["invalid"], 0);
    assert_eq!(buckets(&counts), expected.to_vec());
    // The stopped run and any later run are refused.
    assert_eq!(
        error_of(&fake.job(day, &stopped, 2, &inputs[..40]).await),
        (409, "already_aggregated")
    );
    assert_eq!(
        error_of(&fake.collect(day, &stopped, 2, 80).await),
        (409, "already_aggregated")
    );
    assert_eq!(
        error_of(&fake.job(day, &run_id(2), 0, &inputs[..40]).await),
        (409, "already_aggregated")
    );
}

/// A proxy between leader and helper that, while `lose` is set, passes
/// each collect to the helper and then loses its answer (503).
async fn lossy_link(helper: String) -> (String, Arc<AtomicBool>, Arc<AtomicUsize>) {
    let lose = Arc::new(AtomicBool::new(true));
    let lost = Arc::new(AtomicUsize::new(0));
    let (lose_in, lost_in) = (lose.clone(), lost.clone());
    let forward = move |request: axum::extract::Request| {
        let (helper, lose, lost) = (helper.clone(), lose_in.clone(), lost_in.clone());
        async move {
            let (parts, body) = request.into_parts();
            let body = axum::body::to_bytes(body, usize::MAX).await.expect("body");
            let answer = reqwest::Client::new()
                .post(format!("{helper}{}", parts.uri.path()))
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .expect("the helper answers");
            let status = answer.status().as_u16();
            let bytes = answer.bytes().await.expect("answer");
            if parts.uri.path().ends_with("/collect") && lose.load(Ordering::SeqCst) {
                lost.fetch_add(1, Ordering::SeqCst);
                return (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    axum::body::Bytes::from_static(b"{\"error\":\"lost\",\"message\":\"\"}"),
                );
            }
            (
                axum::http::StatusCode::from_u16(status).expect("status"),
                bytes,
            )
        }
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        axum::serve(listener, axum::Router::new().fallback(forward))
            .await
            .expect("proxy")
    });
    (url, lose, lost)
}

// The proxy runs on the test's runtime while the CLI blocks a thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collect_whose_answer_was_lost_is_sent_again_after_a_restart() {
    let helper = Helper::start("");
    let (link, lose, lost) = lossy_link(helper.proc.base.clone()).await;
    // Time for the leader's three tries within one request.
    let patient = [("GREENLIGHT_REQUEST_TIMEOUT_SECS", "60")];
    let leader = helper.leader(&link, "job_size = 40\n", &patient);
    let leader_dir = helper.leader_dir.path();
    let client = reqwest::Client::new();
    let phones = Phones::pinning(&client, &leader.base, &helper.proc.base).await;
    let day = phones.day;
    let mut rng = ChaCha20Rng::seed_from_u64(6);
    let mut expected = [0u64; BUCKETS];
    let sent = phones
        .send(&client, &leader, 0, 120, &mut rng, &mut expected)
        .await;
    // The helper records the collect; every answer to the leader is lost.
    let (ok, text) = authority_cli(
        &leader,
        leader_dir,
        &["aggregate", "--day", &day.to_string()],
    );
    assert!(!ok && text.contains("helper_failed"), "{text}");
    assert!(lost.load(Ordering::SeqCst) >= 2, "the leader tried again");
    // The day is closed at the leader until its collect is answered.
    let late = phones.report(500, &mut rng).1;
    assert_eq!(
        submit(&client, &leader.base, &late).await,
        (409, "batch_closed".into())
    );
    drop(leader);
    lose.store(false, Ordering::SeqCst);
    let leader = helper.leader(&link, "job_size = 40\n", &patient);
    let counts = aggregate_now(&leader, leader_dir, day);
    assert_eq!(counts["reports"], sent.len() as u64);
    assert_eq!(buckets(&counts), expected.to_vec());
}

#[tokio::test]
async fn noise_is_added_once_by_each_aggregator() {
    let helper = Helper::start("dp_epsilon = 0.5\n");
    let leader = helper.leader(&helper.proc.base, "job_size = 40\ndp_epsilon = 0.5\n", &[]);
    let client = reqwest::Client::new();
    let phones = Phones::pinning(&client, &leader.base, &helper.proc.base).await;
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let mut expected = [0u64; BUCKETS];
    phones
        .send(&client, &leader, 0, 130, &mut rng, &mut expected)
        .await;
    let counts = aggregate_now(&leader, helper.leader_dir.path(), phones.day);
    assert_eq!(counts["reports"], 130, "the number of reports is exact");
    assert_eq!(counts["dp_epsilon"], 0.5);
    let noisy = buckets(&counts);
    // Two draws of scale 2 a bucket (variance ≈ 7.7 each at ε = 0.5): far
    // below 40, and all twelve unchanged about once in 10^10 runs.
    for (n, e) in noisy.iter().zip(&expected) {
        assert!(n.abs_diff(*e) <= 40, "{noisy:?} against {expected:?}");
    }
    assert_ne!(noisy, expected.to_vec(), "noise was added");
}

#[tokio::test]
async fn reports_for_today_are_stored_while_an_earlier_day_is_aggregated_past_its_request() {
    // A helper that takes the leader's request and never answers: the
    // leader's aggregation of yesterday waits on it.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let helper_url = format!("http://{}", silent.local_addr().expect("address"));
    let (asked, mut helper_asked) = tokio::sync::mpsc::channel::<()>(1);
    let silent_helper = tokio::spawn(async move {
        let mut held = Vec::new();
        loop {
            let (stream, _) = silent.accept().await.expect("accept");
            held.push(stream);
            let _ = asked.try_send(());
        }
    });
    let leader_dir = tempfile::tempdir().expect("temp dir");
    let leader = start(
        leader_dir.path(),
        &format!("role = \"leader\"\nhelper_url = \"{helper_url}\"\nmin_batch_reports = 1\n"),
        &[("GREENLIGHT_REQUEST_TIMEOUT_SECS", "3")],
    );
    let client = reqwest::Client::new();
    let leader_cfg = pinned(&client, &leader.base).await;
    let helper_cfg = AggregatorKeyPair::generate(&mut ChaCha20Rng::seed_from_u64(7)).config();
    let now = Timestamp(greenlight_server::now_secs());
    let region = RegionId::new("CH").expect("region");
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let m = Measurement::from_bucket(3).expect("bucket");
    let yesterday = DayNumber(now.day().0 - 1);
    let report = prepare_report(
        &m,
        now,
        yesterday,
        &region,
        &leader_cfg,
        &helper_cfg,
        &mut rng,
    )
    .expect("report");
    assert_eq!(submit(&client, &leader.base, &report).await.0, 201);

    let (base, token) = (leader.base.clone(), admin_token(leader_dir.path()));
    let aggregation = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("{base}/v1/authority/aggregate"))
            .bearer_auth(token)
            .json(&json!({ "day": yesterday.0 }))
            .send()
            .await
    });
    tokio::time::timeout(std::time::Duration::from_secs(30), helper_asked.recv())
        .await
        .expect("the leader asks the helper");
    let today = prepare_report(
        &m,
        now,
        now.day(),
        &region,
        &leader_cfg,
        &helper_cfg,
        &mut rng,
    )
    .expect("report");
    let stored = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        submit(&client, &leader.base, &today),
    )
    .await
    .expect("today's report does not wait for yesterday's aggregation");
    assert_eq!(stored, (201, String::new()));
    // The authority hears that the aggregation goes on past its request.
    let answer = aggregation
        .await
        .expect("task")
        .expect("the leader answers");
    assert_eq!(answer.status(), 202);
    let body: Value = answer.json().await.expect("JSON");
    assert_eq!(body, json!({ "day": yesterday.0, "status": "running" }));
    silent_helper.abort();
}
