//! greenlightd and greenlight as processes, against a real server: every
//! CLI command through the local socket, consent, permissions, shutdown.

use greenlight_e2e::TestServer;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

struct Daemon {
    child: std::process::Child,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_daemon(dir: &Path, server: &TestServer, public_key: &str) -> Daemon {
    let socket = dir.join("run/greenlight.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_greenlightd"))
        .args(["--radio", "simulated", "--region", "DEMO"])
        .arg("--data-dir")
        .arg(dir.join("phone"))
        .arg("--socket")
        .arg(&socket)
        .args(["--server", &server.url, "--public-key", public_key])
        .env("GREENLIGHT_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .expect("greenlightd starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "greenlightd never opened its socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Daemon { child }
}

fn greenlight(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_greenlight"))
        .arg("--socket")
        .arg(dir.join("run/greenlight.sock"))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("greenlight runs")
}

fn ok(out: &Output) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

fn failed(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_cli_command_through_the_daemon() {
    let server = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_owned();
    let key = server.public_key.clone();
    let daemon = {
        let dir = dir.clone();
        let server_ref = &server;
        start_daemon(&dir, server_ref, &key)
    };
    let run = |args: &'static [&'static str]| {
        let dir = dir.clone();
        tokio::task::spawn_blocking(move || greenlight(&dir, args))
    };

    // Only the user can reach the socket and the store key.
    let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
    assert_eq!(mode(&dir.join("run/greenlight.sock")), 0o600);
    assert_eq!(mode(&dir.join("run")), 0o700);
    assert_eq!(mode(&dir.join("phone/store.key")), 0o600);

    let status = ok(&run(&["status"]).await.expect("joins"));
    assert!(status.contains("GREEN"), "{status}");
    assert!(status.contains("No exposure"), "{status}");
    let card = ok(&run(&["status", "--qr"]).await.expect("joins"));
    assert!(
        card.contains("[   GREEN]") && card.contains("shown on"),
        "{card}"
    );
    assert!(
        card.contains('█') || card.contains('▀'),
        "a QR code is drawn"
    );

    let synced = ok(&run(&["sync"]).await.expect("joins"));
    assert!(synced.contains("policy updated"), "{synced}");

    let first = ok(&run(&["check-in"]).await.expect("joins"));
    assert!(first.starts_with("Checked in for"), "{first}");
    let again = ok(&run(&["check-in"]).await.expect("joins"));
    assert!(again.starts_with("Already checked in"), "{again}");

    // No consent, no upload: without a terminal the CLI does not ask.
    let refused = failed(
        &run(&["report-positive", "--code", "1234567890"])
            .await
            .expect("joins"),
    );
    assert!(refused.contains("consent not given"), "{refused}");
    // A wrong code: the server's own message comes through.
    let wrong = failed(
        &run(&["report-positive", "--code", "0000000000", "--yes"])
            .await
            .expect("joins"),
    );
    assert!(wrong.contains("server"), "{wrong}");
    // Compact mode cannot leave out hours.
    let hours = failed(
        &run(&[
            "report-positive",
            "--code",
            "0000000000",
            "--yes",
            "--omit-range",
            "2026-11-20T10:00/2026-11-20T12:00",
        ])
        .await
        .expect("joins"),
    );
    assert!(hours.contains("whole days only"), "{hours}");

    // The real thing.
    let code = server.issue_code().await;
    let dir2 = dir.clone();
    let reported = tokio::task::spawn_blocking(move || {
        greenlight(&dir2, &["report-positive", "--code", &code, "--yes"])
    })
    .await
    .expect("joins");
    let reported = ok(&reported);
    assert!(reported.contains("Uploaded 1 key"), "{reported}");
    assert!(reported.contains("14 padding"), "{reported}");
    let published = server.publish().await;
    assert_eq!(published.as_array().map(Vec::len), Some(2), "{published}");

    let status = ok(&run(&["status"]).await.expect("joins"));
    assert!(
        status.contains("RED") && status.contains("isolation"),
        "{status}"
    );

    let json = ok(&run(&["--json", "status"]).await.expect("joins"));
    let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(v["result"], "status");
    assert_eq!(v["colour"], "red");

    let export_path = dir.join("export.json");
    let dir2 = dir.clone();
    let path2 = export_path.clone();
    ok(&tokio::task::spawn_blocking(move || {
        greenlight(
            &dir2,
            &["export-my-data", "--output", path2.to_str().expect("utf-8")],
        )
    })
    .await
    .expect("joins"));
    let export: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&export_path).expect("written")).expect("JSON");
    assert_eq!(export["daily_keys"].as_array().map(Vec::len), Some(1));
    assert!(export["positive_test"].is_object(), "{export}");
    assert_eq!(export["checkins"].as_array().map(Vec::len), Some(1));
    assert_eq!(export["policy_signed"], true);

    // Forget needs consent too, then deletes everything.
    failed(&run(&["forget"]).await.expect("joins"));
    let forgotten = ok(&run(&["forget", "--yes"]).await.expect("joins"));
    assert!(forgotten.contains("deleted"), "{forgotten}");
    let status = ok(&run(&["status"]).await.expect("joins"));
    assert!(status.contains("GREEN"), "{status}");
    let json = ok(&run(&["--json", "export-my-data"]).await.expect("joins"));
    let export: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert!(export["positive_test"].is_null(), "{export}");
    assert_eq!(export["checkins"].as_array().map(Vec::len), Some(0));

    // SIGTERM: a clean exit that removes the socket.
    let mut daemon = daemon;
    let pid = daemon.child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill runs");
    assert!(killed.success());
    let status = daemon.child.wait().expect("exits");
    assert!(status.success(), "{status:?}");
    assert!(!dir.join("run/greenlight.sock").exists());
    // Without a daemon the CLI says what to do.
    let down = failed(&run(&["status"]).await.expect("joins"));
    assert!(down.contains("is greenlightd running?"), "{down}");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_loses_nothing_committed() {
    let server = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path().to_owned();
    let mut daemon = start_daemon(&dir, &server, &server.public_key);
    let d = dir.clone();
    let out = tokio::task::spawn_blocking(move || {
        ok(&greenlight(&d, &["check-in"]));
        ok(&greenlight(&d, &["--json", "export-my-data"]))
    })
    .await
    .expect("joins");
    let before: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    // No chance to clean up: SIGKILL.
    daemon.child.kill().expect("killed");
    daemon.child.wait().expect("reaped");
    // The stale socket is replaced by the next start.
    let daemon = start_daemon(&dir, &server, &server.public_key);
    let d = dir.clone();
    let out =
        tokio::task::spawn_blocking(move || ok(&greenlight(&d, &["--json", "export-my-data"])))
            .await
            .expect("joins");
    let after: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(after["checkins"], before["checkins"]);
    assert_eq!(
        after["daily_keys"], before["daily_keys"],
        "today's key survives"
    );
    assert_eq!(after["unreadable_rows"], 0);
    drop(daemon);
    server.stop().await;
}
