//! A real greenlight-server on loopback for the phone-side tests.
#![allow(dead_code)]

use greenlight_server::config::Config;
use greenlight_server::Server;
use std::path::PathBuf;
use tokio_util::sync::CancellationToken;

/// A server running in this process on the system clock.
pub struct TestServer {
    pub url: String,
    pub public_key: String,
    pub admin_token: String,
    pub data_dir: PathBuf,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = Config {
            data_dir: dir.path().join("server"),
            region: "DEMO".into(),
            min_batch_entries: 10,
            ..Config::default()
        };
        let data_dir = config.data_dir.clone();
        let server = Server::open(config).await.expect("server opens");
        let public_key = hex::encode(server.state.signing_key.verifying_key().to_bytes());
        let admin_token = server.state.admin_token.to_string();
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("binds");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.serve(listener, shutdown.clone()));
        TestServer {
            url,
            public_key,
            admin_token,
            data_dir,
            shutdown,
            task,
            _dir: dir,
        }
    }

    async fn admin(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
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
