//! Shared test harness: a real server on 127.0.0.1 with a fresh SQLite or
//! PostgreSQL database, and an HTTP client; or the `greenlight-server`
//! binary as a process.

#![allow(dead_code)]

use greenlight_server::config::Config;
use greenlight_server::Server;
use serde_json::{json, Value};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

/// Which database a test runs against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Db {
    Sqlite,
    Postgres,
}

/// The PostgreSQL server for tests: `GREENLIGHT_TEST_POSTGRES_URL`.
/// Required in CI; elsewhere its absence skips the PostgreSQL runs loudly.
pub fn postgres_base() -> Option<String> {
    match std::env::var("GREENLIGHT_TEST_POSTGRES_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var_os("CI").is_some() => {
            panic!("GREENLIGHT_TEST_POSTGRES_URL must be set in CI (.ci/run starts PostgreSQL)")
        }
        _ => {
            eprintln!("\n*** SKIPPED PostgreSQL run: set GREENLIGHT_TEST_POSTGRES_URL=postgres://user:pass@127.0.0.1/db ***\n");
            None
        }
    }
}

/// The databases to run a test against.
pub fn backends() -> Vec<Db> {
    let mut v = vec![Db::Sqlite];
    if postgres_base().is_some() {
        v.push(Db::Postgres);
    }
    v
}

/// The URL of a fresh, empty database of kind `db`: a SQLite file in
/// `dir`, or a new database on the test PostgreSQL server (drop it with
/// [`drop_postgres`]).
pub async fn fresh_database(db: Db, dir: &std::path::Path) -> String {
    match db {
        Db::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("t.db").display()),
        Db::Postgres => fresh_postgres().await,
    }
}

/// A fresh, empty PostgreSQL database on the test server.
pub async fn fresh_postgres() -> String {
    use sqlx::Connection;
    let base = postgres_base().expect("PostgreSQL configured");
    let name = format!("greenlight_test_{}", hex::encode(rand::random::<[u8; 6]>()));
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let (head, _) = base.rsplit_once('/').expect("URL has a database path");
    format!("{head}/{name}")
}

/// Drops a database made by [`fresh_postgres`].
pub async fn drop_postgres(url: &str) {
    use sqlx::Connection;
    let name = url
        .rsplit_once('/')
        .map(|(_, n)| n)
        .expect("URL has a database");
    let base = postgres_base().expect("PostgreSQL configured");
    let mut conn = sqlx::PgConnection::connect(&base)
        .await
        .expect("connect to the test PostgreSQL");
    sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .expect("drop database");
}

/// A running server and what a test needs to talk to it.
#[derive(Debug)]
pub struct TestServer {
    pub addr: SocketAddr,
    pub admin: String,
    pub public_key: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub shutdown: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    pg_url: Option<String>,
}

impl TestServer {
    pub async fn start(db: Db, tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config {
            listen: "127.0.0.1:0".parse().expect("address"),
            data_dir: dir.path().to_path_buf(),
            region: "CH".into(),
            min_batch_entries: 10,
            batch_interval_secs: 3600,
            ..Config::default()
        };
        let mut pg_url = None;
        if db == Db::Postgres {
            config.database_url = fresh_postgres().await;
            pg_url = Some(config.database_url.clone());
        }
        tweak(&mut config);
        let server = Server::open(config).await.expect("server opens");
        let admin = server.state.admin_token.to_string();
        let public_key = hex::encode(server.state.signing_key.verifying_key().to_bytes());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("address");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.serve(listener, shutdown.clone()));
        TestServer {
            addr,
            admin,
            public_key,
            client: reqwest::Client::new(),
            dir,
            shutdown,
            task,
            pg_url,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task
            .await
            .expect("server task")
            .expect("clean shutdown");
        if let Some(url) = self.pg_url {
            drop_postgres(&url).await;
        }
    }

    /// Issues a code for a test `days_ago` days before today.
    pub async fn issue_code(&self, days_ago: u32, onset_days_ago: Option<u32>) -> Value {
        let today = greenlight_server::now_secs() / 86_400;
        let body = json!({
            "test_type": "pcr",
            "test_day": today as u32 - days_ago,
            "onset_day": onset_days_ago.map(|d| today as u32 - d),
        });
        let r = self
            .client
            .post(self.url("/v1/authority/codes"))
            .bearer_auth(&self.admin)
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 201, "issue code");
        r.json().await.expect("JSON")
    }

    /// Redeems a code; returns the status and JSON body.
    pub async fn verify(&self, code: &str) -> (u16, Value) {
        let r = self
            .client
            .post(self.url("/v1/verify"))
            .json(&json!({ "code": code }))
            .send()
            .await
            .expect("send");
        (r.status().as_u16(), r.json().await.expect("JSON"))
    }

    /// A fresh upload token.
    pub async fn token(&self) -> String {
        let code = self.issue_code(1, Some(2)).await;
        let (status, body) = self
            .verify(code["short_code"].as_str().expect("code"))
            .await;
        assert_eq!(status, 200, "{body}");
        body["token"].as_str().expect("token").to_owned()
    }

    /// Uploads `body` with `token`; returns the status and JSON body.
    pub async fn upload(&self, token: &str, body: &Value) -> (u16, Value) {
        let r = self
            .client
            .post(self.url("/v1/upload"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("send");
        (r.status().as_u16(), r.json().await.expect("JSON"))
    }

    pub async fn admin_post(&self, path: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("send")
    }

    pub async fn stats(&self) -> Value {
        let r = self
            .client
            .get(self.url("/v1/authority/stats"))
            .bearer_auth(&self.admin)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 200);
        r.json::<Value>().await.expect("JSON")["counters"].clone()
    }
}

/// GETs `url` (with the bearer secret, if any) and reads the answer as JSON.
pub async fn get_json(client: &reqwest::Client, url: &str, bearer: Option<&str>) -> Value {
    let mut request = client.get(url);
    if let Some(secret) = bearer {
        request = request.bearer_auth(secret);
    }
    request
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON")
}

/// A compact upload of `n` distinct keys for the last `n` days.
pub fn compact_upload(n: u32, seed: u8) -> (Value, Vec<(u32, [u8; 32])>) {
    let today = (greenlight_server::now_secs() / 86_400) as u32;
    let keys: Vec<(u32, [u8; 32])> = (0..n)
        .map(|i| (today - i, [seed.wrapping_add(i as u8); 32]))
        .collect();
    let body = json!({
        "mode": "compact",
        "keys": keys.iter().map(|(d, k)| json!({ "day": d, "key": hex::encode(k) })).collect::<Vec<_>>(),
    });
    (body, keys)
}

/// The public key printed as hex by the server.
pub fn key_of(hex_key: &str) -> greenlight_protocol::ed25519_dalek::VerifyingKey {
    let bytes: [u8; 32] = hex::decode(hex_key)
        .expect("hex")
        .try_into()
        .expect("32 bytes");
    greenlight_protocol::ed25519_dalek::VerifyingKey::from_bytes(&bytes).expect("valid key")
}

/// Every published batch of the server at `base`, each verified as a phone
/// would under the key the index names.
pub async fn fetch_batches(
    client: &reqwest::Client,
    base: &str,
) -> Vec<greenlight_protocol::KeyBatch> {
    let index = get_json(client, &format!("{base}/v1/batches"), None).await;
    let vk = key_of(index["public_key"].as_str().expect("key"));
    let region = greenlight_protocol::RegionId::new(index["region"].as_str().expect("region"))
        .expect("valid region");
    let mut out = Vec::new();
    for b in index["batches"].as_array().expect("batches") {
        let n = b["number"].as_u64().expect("number");
        let bytes = client
            .get(format!("{base}/v1/batches/{n}"))
            .send()
            .await
            .expect("send")
            .bytes()
            .await
            .expect("body");
        out.push(
            greenlight_protocol::KeyBatch::verify(&bytes, &region, &vk).expect("batch verifies"),
        );
    }
    out
}

/// The server binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_greenlight-server");

/// `greenlight-server serve` for region CH on a free loopback port, with its
/// data in `data_dir` and debug logging; callers add configuration,
/// environment and stderr, then [`Proc::spawn`] it.
pub fn serve_command(data_dir: &std::path::Path) -> std::process::Command {
    let mut command = std::process::Command::new(BIN);
    command
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--region",
            "CH",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("GREENLIGHT_LOG", "debug");
    command
}

/// Runs `greenlight-server authority` against `p` with the admin token in
/// `dir`.
pub fn authority_command(p: &Proc, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(BIN)
        .args(["authority", "--server", &p.base, "--data-dir"])
        .arg(dir)
        .args(args)
        .output()
        .expect("CLI runs")
}

/// A server process and the address it printed; killed and reaped on drop.
pub struct Proc {
    pub child: std::process::Child,
    pub base: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Spawns `serve`, given as a command with its arguments, environment
    /// and stderr, with stdout piped; returns once it prints its address.
    pub fn spawn(command: &mut std::process::Command) -> Proc {
        use std::io::{BufRead, BufReader};
        use std::time::{Duration, Instant};
        let child = command
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("server starts");
        let mut proc = Proc {
            child,
            base: String::new(),
        };
        let stdout = proc.child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            assert!(Instant::now() < deadline, "server printed no address");
            let line = lines
                .next()
                .expect("server is running")
                .expect("readable stdout");
            if let Some(url) = line.split_whitespace().find(|w| w.starts_with("http://")) {
                // Keep draining stdout so the server never blocks on a full pipe.
                std::thread::spawn(move || lines.for_each(drop));
                proc.base = url.to_owned();
                return proc;
            }
        }
    }
}

/// The admin token a server created in `dir`.
pub fn admin_token(dir: &std::path::Path) -> String {
    std::fs::read_to_string(dir.join("admin.token"))
        .expect("admin token")
        .trim()
        .to_owned()
}
