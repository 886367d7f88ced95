//! Server throughput on this machine, with a real HTTP client on loopback:
//! `cargo bench -p greenlight-server --bench throughput`.
//!
//! Durable uploads per second (group commit, SQLite WAL synchronous=FULL
//! and PostgreSQL when GREENLIGHT_TEST_POSTGRES_URL is set), and the time
//! to build, sign and publish a batch of 100,000 keys, and to import a
//! peer region's batch of 100,000 keys (new, then duplicates). Every loop is
//! bounded in count and in time. Client and server share the two cores.

use greenlight_protocol::{BatchNumber, DayNumber, KeyBatch, RegionId, Timestamp};
use greenlight_server::config::Config;
use greenlight_server::publish::compact_payload;
use greenlight_server::store::{NewKey, PendingUpload, StoredKey};
use greenlight_server::Server;
use serde_json::json;
use sqlx::Connection;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const UPLOADS: usize = 20_000;
const CLIENTS: usize = 64;
const KEYS_PER_UPLOAD: u32 = 14;
const TIME_LIMIT: Duration = Duration::from_secs(60);

async fn fresh_postgres(base: &str) -> String {
    let name = format!(
        "greenlight_bench_{}",
        hex::encode(rand::random::<[u8; 6]>())
    );
    let mut conn = sqlx::PgConnection::connect(base)
        .await
        .expect("connect to PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    format!(
        "{}/{name}",
        base.rsplit_once('/').expect("URL with database").0
    )
}

async fn insert_tokens(url: &str, n: usize) -> Vec<String> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    let mut tx = conn.begin().await.expect("begin");
    let mut tokens = Vec::with_capacity(n);
    for _ in 0..n {
        let token = hex::encode(rand::random::<[u8; 32]>());
        let hash: [u8; 32] = <sha2::Sha256 as sha2::Digest>::digest(token.as_bytes()).into();
        sqlx::query("INSERT INTO tokens (hash, test_day, onset_day, expires_at, used) VALUES ($1, $2, NULL, $3, 0)")
            .bind(hash.to_vec())
            .bind((greenlight_server::now_secs() / 86_400) as i64)
            .bind(greenlight_server::now_secs() as i64 + 3600)
            .execute(&mut *tx)
            .await
            .expect("insert token");
        tokens.push(token);
    }
    tx.commit().await.expect("commit");
    tokens
}

/// `CLIENTS` concurrent clients upload one token each until the tokens or
/// the time run out; returns acknowledged uploads and seconds.
async fn upload_load(
    client: &reqwest::Client,
    base: &str,
    tokens: Vec<String>,
    today: u32,
    chaff: bool,
) -> (usize, f64) {
    let queue = std::sync::Arc::new(std::sync::Mutex::new(tokens));
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CLIENTS {
        let (client, base, queue) = (client.clone(), base.to_owned(), queue.clone());
        workers.push(tokio::spawn(async move {
            let mut done = 0usize;
            loop {
                if started.elapsed() > TIME_LIMIT {
                    return done;
                }
                let Some(token) = queue.lock().expect("lock").pop() else { return done };
                let keys: Vec<_> = (0..KEYS_PER_UPLOAD)
                    .map(|d| json!({ "day": today - d, "key": hex::encode(rand::random::<[u8; 32]>()) }))
                    .collect();
                let body = json!({ "mode": "compact", "keys": keys, "chaff": chaff });
                let r = client.post(format!("{base}/v1/upload")).bearer_auth(token).json(&body).send().await;
                if matches!(r, Ok(ref r) if r.status() == 200) {
                    done += 1;
                }
            }
        }));
    }
    let mut acked = 0;
    for w in workers {
        acked += w.await.expect("worker");
    }
    (acked, started.elapsed().as_secs_f64())
}

/// The server's count of group commits, from /metrics.
async fn commits(client: &reqwest::Client, base: &str) -> u64 {
    let text = client
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    text.lines()
        .find(|l| l.starts_with("greenlight_upload_commits_total"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn run(name: &str, database_url: String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = Config {
        data_dir: dir.path().to_path_buf(),
        database_url: if database_url.starts_with("postgres") {
            database_url.clone()
        } else {
            String::new()
        },
        region: "CH".into(),
        upload_per_second: 1_000_000,
        min_batch_entries: 1,
        ..Config::default()
    };
    let db_url = config.database();
    let server = Server::open(config).await.expect("server opens");
    let store = server.state.store.clone();
    let publisher = server.state.publisher.clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(server.serve(listener, shutdown.clone()));

    let tokens = insert_tokens(&db_url, UPLOADS).await;
    let today = (greenlight_server::now_secs() / 86_400) as u32;
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(CLIENTS)
        .build()
        .expect("client");
    let (acked, secs) = upload_load(&client, &base, tokens.clone(), today, true).await;
    println!(
        "{name}: HTTP ceiling, {acked} chaff uploads (same path, no storage) at {:.0} uploads/s",
        acked as f64 / secs
    );
    let commits_before = commits(&client, &base).await;
    let (acked, secs) = upload_load(&client, &base, tokens, today, false).await;
    let commits = commits(&client, &base).await - commits_before;
    println!(
        "{name}: {commits} group commits, {:.1} uploads per commit",
        acked as f64 / commits.max(1) as f64
    );
    println!("{name}: {acked} durable uploads ({} keys) in {secs:.2} s = {:.0} uploads/s, {:.0} keys/s ({CLIENTS} concurrent clients)",
        acked * KEYS_PER_UPLOAD as usize, acked as f64 / secs, (acked * KEYS_PER_UPLOAD as usize) as f64 / secs);

    // Publish what the uploads left, then time a batch of exactly 100,000
    // keys through the database: read, pad, shuffle, sign, write, record.
    publisher
        .publish(Timestamp(0), Timestamp(greenlight_server::now_secs()))
        .await
        .expect("publish");
    let extra = 100_000usize;
    let fill: Vec<PendingUpload> = insert_tokens(&db_url, extra.div_ceil(1000))
        .await
        .into_iter()
        .enumerate()
        .map(|(i, t)| PendingUpload {
            token_hash: <sha2::Sha256 as sha2::Digest>::digest(t.as_bytes()).into(),
            keys: (0..1000.min(extra - i * 1000))
                .map(|j| NewKey {
                    mode: greenlight_protocol::PublicationMode::Compact,
                    day: Some(today - (j % 14) as u32),
                    data: rand::random::<[u8; 32]>().to_vec(),
                    days_since_onset: Some(0),
                    origin: "CH".into(),
                    visited: String::new(),
                })
                .collect(),
        })
        .collect();
    for chunk in fill.chunks(10) {
        store
            .commit_uploads(chunk, greenlight_server::now_secs() as i64, today)
            .await
            .expect("fill");
    }
    let t = Instant::now();
    let published = publisher
        .publish(Timestamp(0), Timestamp(greenlight_server::now_secs()))
        .await
        .expect("publish");
    let publish_secs = t.elapsed().as_secs_f64();
    println!("{name}: published batch of {} keys ({} bytes) in {publish_secs:.2} s (read, pad, shuffle, sign, fsync, record)",
        published[0].entries, published[0].size);
    // Federation: one peer batch of 100,000 keys imported (digest check and
    // insert per key, one transaction), then the same batch again (all
    // duplicates).
    let import = greenlight_server::store::Import {
        keys: (0..100_000u32)
            .map(|j| NewKey {
                mode: greenlight_protocol::PublicationMode::Compact,
                day: Some(today - (j % 14)),
                data: rand::random::<[u8; 32]>().to_vec(),
                days_since_onset: Some(1),
                origin: "BB".into(),
                visited: String::new(),
            })
            .collect(),
        filter: None,
    };
    for (n, what) in [(1, "new"), (2, "duplicate")] {
        let t = Instant::now();
        let new = store
            .import_batch("BB", n, &import, greenlight_server::now_secs() as i64)
            .await
            .expect("imports");
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name}: imported a peer batch of 100,000 {what} keys ({new} new) in {secs:.2} s = {:.0} keys/s",
            100_000.0 / secs
        );
    }
    shutdown.cancel();
    task.await.expect("server task").expect("clean shutdown");
}

fn build_and_sign_only() {
    let mut rng = rand::thread_rng();
    let keys: Vec<StoredKey> = (0..100_000)
        .map(|i| StoredKey {
            id: i,
            day: Some(20_400 + (i % 14) as u32),
            data: rand::random::<[u8; 32]>().to_vec(),
            days_since_onset: Some(0),
            origin: "CH".into(),
            visited: String::new(),
        })
        .collect();
    let key = greenlight_protocol::ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let region = RegionId::new("CH").expect("valid");
    let t = Instant::now();
    let payload = compact_payload(
        &keys,
        std::slice::from_ref(&region),
        100_000,
        DayNumber(20_414),
        &mut rng,
    );
    let batch = KeyBatch {
        region: region.clone(),
        number: BatchNumber(1),
        start: Timestamp(0),
        end: Timestamp(1),
        origins: vec![region],
        payload,
    };
    let bytes = batch.sign(&key).expect("valid batch");
    println!(
        "in memory: built, shuffled and signed 100,000 keys ({} bytes) in {:.3} s",
        bytes.len(),
        t.elapsed().as_secs_f64()
    );
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    build_and_sign_only();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run("SQLite", String::new()));
    match std::env::var("GREENLIGHT_TEST_POSTGRES_URL") {
        Ok(base) if !base.is_empty() => {
            let url = rt.block_on(fresh_postgres(&base));
            rt.block_on(run("PostgreSQL", url.clone()));
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&base).await.expect("connect");
                let name = url.rsplit_once('/').expect("name").1;
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name}"))
                    .execute(&mut conn)
                    .await;
            });
        }
        _ => println!("PostgreSQL: skipped (set GREENLIGHT_TEST_POSTGRES_URL)"),
    }
}
