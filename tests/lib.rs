//! # greenlight-e2e
//!
//! End-to-end tests across crates, one file per story: `story.rs` (the
//! demo's story, every colour and date), `bad_servers.rs` (a phone against
//! dead, lying, truncating and altering servers) and `federation.rs`
//! (three regions recognizing each other), `aggregates.rs` (a phone's
//! daily aggregate report through leader and helper). The library starts real
//! servers on loopback for them and for the CLI's process tests.

#![warn(missing_docs)]

use greenlight_server::config::Config;
use greenlight_server::Server;
use std::path::{Path, PathBuf};
use tokio_util::sync::CancellationToken;

/// A server's address and keys, known before it starts (so that peers can
/// name each other).
#[derive(Debug)]
pub struct Prepared {
    /// The bound listener.
    pub listener: tokio::net::TcpListener,
    /// Its base URL.
    pub url: String,
    /// Its public key, hex (the signing key is created in `data_dir`).
    pub public_key: String,
    /// Its data directory.
    pub data_dir: PathBuf,
}

impl Prepared {
    /// Binds a loopback port and creates the signing key in `data_dir`.
    pub async fn new(data_dir: &Path) -> Prepared {
        std::fs::create_dir_all(data_dir).expect("data dir");
        let (key, _) = greenlight_server::secrets::signing_key(data_dir).expect("signing key");
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binds");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        Prepared {
            listener,
            url,
            public_key: hex::encode(key.verifying_key().to_bytes()),
            data_dir: data_dir.to_owned(),
        }
    }
}

/// A server running in this process on the system clock.
#[derive(Debug)]
pub struct TestServer {
    /// Its base URL.
    pub url: String,
    /// Its public key, hex.
    pub public_key: String,
    /// The health authority's admin token.
    pub admin_token: String,
    /// Its data directory.
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A server for region DEMO in a temporary directory.
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let prepared = Prepared::new(&dir.path().join("server")).await;
        let mut server = TestServer::run(prepared, "DEMO", |_| {}).await;
        server._dir = Some(dir);
        server
    }

    /// Runs a prepared server for `region`; `edit` adjusts its configuration.
    pub async fn run(
        prepared: Prepared,
        region: &str,
        edit: impl FnOnce(&mut Config),
    ) -> TestServer {
        let mut config = Config {
            data_dir: prepared.data_dir.clone(),
            region: region.into(),
            min_batch_entries: 10,
            ..Config::default()
        };
        edit(&mut config);
        let server = Server::open(config).await.expect("server opens");
        let admin_token = server.state.admin_token.to_string();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.serve(prepared.listener, shutdown.clone()));
        TestServer {
            url: prepared.url,
            public_key: prepared.public_key,
            admin_token,
            data_dir: prepared.data_dir,
            shutdown,
            task,
            _dir: None,
        }
    }

    /// POSTs to an authority route with the admin token; the JSON answer.
    pub async fn admin(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        let resp = reqwest::Client::new()
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token)
            .json(&body)
            .send()
            .await
            .expect("server answers");
        assert!(resp.status().is_success(), "{path}: {}", resp.status());
        resp.json().await.expect("JSON")
    }

    /// GETs a route (with the admin token); the answer's text.
    pub async fn get_text(&self, path: &str) -> String {
        reqwest::Client::new()
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token)
            .send()
            .await
            .expect("server answers")
            .text()
            .await
            .expect("text")
    }

    /// The server's aggregate counter `name`.
    pub async fn counter(&self, name: &str) -> i64 {
        let stats: serde_json::Value =
            serde_json::from_str(&self.get_text("/v1/authority/stats").await).expect("JSON");
        stats["counters"][name].as_i64().unwrap_or(0)
    }

    /// A fresh verification code for a test taken today.
    pub async fn issue_code(&self) -> String {
        let today = greenlight_server::now_secs() / 86_400;
        let code = self
            .admin(
                "/v1/authority/codes",
                serde_json::json!({ "test_type": "pcr", "test_day": today }),
            )
            .await;
        code["short_code"].as_str().expect("short code").to_owned()
    }

    /// Publishes pending keys now.
    pub async fn publish(&self) -> serde_json::Value {
        self.admin("/v1/authority/publish", serde_json::json!({}))
            .await
    }

    /// Pulls from every peer now; one report per peer.
    pub async fn pull_peers(&self) -> serde_json::Value {
        self.admin("/v1/authority/federation/pull", serde_json::json!({}))
            .await
    }

    /// Stops the server and waits until it has.
    pub async fn stop(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

/// A loopback URL nobody listens on.
pub fn dead_url() -> String {
    let l = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("binds");
    let addr = l.local_addr().expect("address");
    drop(l);
    format!("http://{addr}")
}
