//! The real `greenlight-server` binary as a process: its logs hold no
//! client address, user agent, code, token or key; the authority CLI works
//! against it; and every acknowledged upload survives `kill -9`.

mod common;

use common::{admin_token, authority_command, compact_upload, serve_command, Proc};
use greenlight_protocol::BatchPayload;
use serde_json::{json, Value};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn start(data_dir: &Path, log: Option<&Path>) -> Proc {
    let stderr = match log {
        Some(p) => Stdio::from(std::fs::File::create(p).expect("log file")),
        None => Stdio::null(),
    };
    Proc::spawn(
        serve_command(data_dir)
            .env("GREENLIGHT_MIN_BATCH_ENTRIES", "10")
            .env("GREENLIGHT_VERIFY_PER_SECOND", "100000")
            .stderr(stderr),
    )
}

fn authority_cli(p: &Proc, dir: &Path, args: &[&str]) -> Value {
    let out = authority_command(p, dir, args);
    assert!(
        out.status.success(),
        "authority {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

async fn published_keys(client: &reqwest::Client, base: &str) -> Vec<[u8; 32]> {
    common::fetch_batches(client, base)
        .await
        .into_iter()
        .flat_map(|b| match b.payload {
            BatchPayload::Compact(k) => k.iter().map(|k| *k.key.as_bytes()).collect(),
            BatchPayload::Unlinkable(_) => Vec::new(),
        })
        .collect()
}

#[tokio::test]
async fn logs_hold_no_personal_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("server.log");
    let mut p = start(dir.path(), Some(&log));
    let today = greenlight_server::now_secs() / 86_400;
    let code = authority_cli(
        &p,
        dir.path(),
        &["issue-code", "--test-date", &time_date(today)],
    );
    let short = code["short_code"].as_str().expect("code").to_owned();
    // The phone talks from another loopback address with a telling user agent.
    let phone = reqwest::Client::builder()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .user_agent("SecretPhone/7.7 (device zq4711x)")
        .build()
        .expect("client");
    let r: Value = phone
        .post(format!("{}/v1/verify", p.base))
        .json(&json!({ "code": short }))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    let token = r["token"].as_str().expect("token").to_owned();
    let (upload, keys) = compact_upload(2, 77);
    let r = phone
        .post(format!("{}/v1/upload?device=zq4711x", p.base))
        .bearer_auth(&token)
        .json(&upload)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    let _ = phone
        .get(format!("{}/v1/batches/12345", p.base))
        .send()
        .await
        .expect("send");
    authority_cli(&p, dir.path(), &["publish-now"]);
    let stats = authority_cli(&p, dir.path(), &["stats"]);
    assert_eq!(stats["counters"]["keys_published"], 2);
    // Graceful stop on SIGTERM.
    Command::new("kill")
        .arg("-TERM")
        .arg(p.child.id().to_string())
        .status()
        .expect("kill runs");
    let status = p.child.wait().expect("exits");
    assert!(status.success(), "clean exit on SIGTERM: {status}");

    let text = std::fs::read_to_string(&log).expect("log");
    assert!(
        text.contains("published batch"),
        "the log was captured:\n{text}"
    );
    assert!(
        text.contains("/v1/upload"),
        "requests are logged by route:\n{text}"
    );
    for secret in [
        "127.0.0.2",
        "SecretPhone",
        "zq4711x",
        short.as_str(),
        token.as_str(),
        &hex::encode(keys[0].1),
    ] {
        assert!(
            !text.contains(secret),
            "the log contains {secret:?}:\n{text}"
        );
    }
}

fn time_date(day: u64) -> String {
    greenlight_protocol::DayNumber(day as u32).to_string()
}

#[tokio::test]
async fn acknowledged_uploads_survive_kill_dash_nine() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut p = start(dir.path(), None);
    let admin = admin_token(dir.path());
    let client = reqwest::Client::new();
    let today = greenlight_server::now_secs() / 86_400;
    // Tokens first, so the uploads race only against the kill.
    let mut tokens = Vec::new();
    for _ in 0..120 {
        let code: Value = client
            .post(format!("{}/v1/authority/codes", p.base))
            .bearer_auth(&admin)
            .json(&json!({ "test_type": "pcr", "test_day": today }))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("JSON");
        let r: Value = client
            .post(format!("{}/v1/verify", p.base))
            .json(&json!({ "code": code["long_code"] }))
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("JSON");
        tokens.push(r["token"].as_str().expect("token").to_owned());
    }
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<[u8; 32]>::new()));
    let mut tasks = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (client, base, acked) = (client.clone(), p.base.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let (body, keys) = compact_upload(2, i as u8);
            let key = [[(i % 251) as u8, (i / 251) as u8, 0xAB, 0xCD], [0u8; 4]].concat();
            let mut body = body;
            let mut unique = keys.clone();
            for (j, k) in unique.iter_mut().enumerate() {
                k.1[..8].copy_from_slice(&key);
                k.1[8] = j as u8;
                body["keys"][j]["key"] = json!(hex::encode(k.1));
            }
            if let Ok(r) = client
                .post(format!("{base}/v1/upload"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
            {
                if r.status() == 200 {
                    acked
                        .lock()
                        .expect("lock")
                        .extend(unique.iter().map(|k| k.1));
                }
            }
        }));
    }
    // Kill as soon as some uploads are acknowledged, with others in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked.lock().expect("lock").len() < 40 {
        assert!(Instant::now() < deadline, "uploads were not acknowledged");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    p.child.kill().expect("kill -9");
    p.child.wait().expect("reaped");
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().expect("lock").clone();
    assert!(!acked.is_empty());

    let mut p = start(dir.path(), None);
    let r = client
        .post(format!("{}/v1/authority/publish", p.base))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200, "publishing after the crash");
    let published = published_keys(&client, &p.base).await;
    let missing = acked.iter().filter(|k| !published.contains(k)).count();
    assert_eq!(
        missing,
        0,
        "{missing} of {} acknowledged keys lost",
        acked.len()
    );
    p.child.kill().expect("stop");
    let _ = p.child.wait();
}
