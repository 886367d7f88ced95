//! Aggregate counts with the leader and the helper as two
//! `greenlight-server` processes on loopback, each with its own data
//! directory (SPEC §19): valid reports are counted exactly, bad ones are
//! refused with clear errors or excluded as invalid, a batch below the
//! minimum is refused, and nothing is counted twice.

use greenlight_analytics::{
    prepare_report, testing, AggregatorConfig, AggregatorKeyPair, Measurement, Report, BUCKETS,
};
use greenlight_protocol::{DayNumber, RegionId, Timestamp};
use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
mod common;

use common::{admin_token, Proc, BIN};
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};

const MIN: usize = 100;

fn start(data_dir: &Path, aggregator_table: &str) -> Proc {
    let log = std::fs::File::create(data_dir.join("server.log")).expect("log file");
    let config = data_dir.join("server.toml");
    std::fs::write(&config, format!("[aggregator]\n{aggregator_table}")).expect("config");
    Proc::spawn(
        Command::new(BIN)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--region",
                "CH",
                "--config",
            ])
            .arg(&config)
            .arg("--data-dir")
            .arg(data_dir)
            .env("GREENLIGHT_LOG", "debug")
            .stderr(Stdio::from(log)),
    )
}

fn authority_cli(p: &Proc, dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(BIN)
        .args(["authority", "--server", &p.base, "--data-dir"])
        .arg(dir)
        .args(args)
        .output()
        .expect("CLI runs");
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

async fn pinned(client: &reqwest::Client, base: &str) -> AggregatorConfig {
    let v: Value = client
        .get(format!("{base}/v1/aggregator/config"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
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

#[tokio::test]
async fn leader_and_helper_release_exact_counts_once() {
    let helper_dir = tempfile::tempdir().expect("temp dir");
    let leader_dir = tempfile::tempdir().expect("temp dir");
    let helper = start(helper_dir.path(), "role = \"helper\"\n");
    // The operators share the verify key and the leader's bearer secret:
    // the helper made them, the leader's operator copies them (mode 0600).
    for name in ["aggregator-verify.key", "aggregator.token"] {
        std::fs::copy(helper_dir.path().join(name), leader_dir.path().join(name)).expect("copy");
    }
    let leader = start(
        leader_dir.path(),
        &format!("role = \"leader\"\nhelper_url = \"{}\"\n", helper.base),
    );
    let client = reqwest::Client::new();
    let (leader_cfg, helper_cfg) = (
        pinned(&client, &leader.base).await,
        pinned(&client, &helper.base).await,
    );
    let leader_secret: [u8; 32] = hex::decode(
        std::fs::read_to_string(leader_dir.path().join("aggregator-hpke.key"))
            .expect("key")
            .trim(),
    )
    .expect("hex")
    .try_into()
    .expect("32 bytes");
    let leader_keys = AggregatorKeyPair::from_secret(leader_secret);
    assert_eq!(leader_keys.config(), leader_cfg);

    let now = Timestamp(greenlight_server::now_secs());
    let day = DayNumber(now.day().0 - 1);
    let region = RegionId::new("CH").expect("region");
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let mut expected = [0u64; BUCKETS];
    let make = |i: usize, rng: &mut ChaCha20Rng| {
        let m = Measurement::from_bucket((i * 5 + i / 7) % BUCKETS).expect("bucket");
        let r =
            prepare_report(&m, now, day, &region, &leader_cfg, &helper_cfg, rng).expect("report");
        (m, r)
    };
    let mut first = None;
    let mut sent = Vec::new();
    for i in 0..MIN - 1 {
        let (m, report) = make(i, &mut rng);
        sent.push(report.clone());
        assert_eq!(
            submit(&client, &leader.base, &report).await,
            (201, String::new())
        );
        expected[m.bucket()] += 1;
        first.get_or_insert(report);
    }
    let first = first.expect("one report");

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

    // 99 valid reports (and 3 that will fail): below the minimum.
    let date = day.to_string();
    let (ok, text) = authority_cli(&leader, leader_dir.path(), &["aggregate", "--day", &date]);
    assert!(!ok, "a batch below the minimum is refused");
    assert!(text.contains("batch_too_small"), "{text}");
    let (ok, text) = authority_cli(&leader, leader_dir.path(), &["aggregates", "--day", &date]);
    assert!(!ok && text.contains("not_aggregated"), "{text}");

    let (m, report) = make(MIN, &mut rng);
    assert_eq!(submit(&client, &leader.base, &report).await.0, 201);
    expected[m.bucket()] += 1;
    let (ok, text) = authority_cli(&leader, leader_dir.path(), &["aggregate", "--day", &date]);
    assert!(ok, "{text}");
    let counts: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(counts["reports"], MIN as u64);
    assert_eq!(counts["invalid"], 3);
    let buckets: Vec<u64> = serde_json::from_value(counts["buckets"].clone()).expect("buckets");
    assert_eq!(buckets, expected.to_vec());
    let red: u64 = expected[8..].iter().sum();
    assert_eq!(counts["red"], red);

    // Aggregating again changes nothing; late or replayed reports are refused.
    let (ok, text) = authority_cli(&leader, leader_dir.path(), &["aggregate", "--day", &date]);
    assert!(!ok && text.contains("already_aggregated"), "{text}");
    assert_eq!(
        submit(&client, &leader.base, &first).await,
        (409, "batch_closed".into())
    );
    let read: Value = client
        .get(format!(
            "{}/v1/authority/aggregates?day={}&region=CH",
            leader.base, day.0
        ))
        .bearer_auth(admin_token(leader_dir.path()))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    assert_eq!(read, counts);
    // The helper refuses another batch for the same day, or without the secret.
    let r = client
        .post(format!("{}/v1/aggregator/aggregate", helper.base))
        .bearer_auth(
            std::fs::read_to_string(helper_dir.path().join("aggregator.token"))
                .expect("token")
                .trim(),
        )
        .json(&json!({ "day": day.0, "region": "CH", "reports": [] }))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 409);
    let r = client
        .post(format!("{}/v1/aggregator/aggregate", helper.base))
        .bearer_auth("not-the-secret")
        .json(&json!({ "day": day.0 - 1, "region": "CH", "reports": [] }))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
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
    drop((leader, helper));
    for dir in [leader_dir.path(), helper_dir.path()] {
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
async fn reports_for_today_are_stored_while_an_earlier_day_is_aggregated() {
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
    aggregation.abort();
    silent_helper.abort();
}
