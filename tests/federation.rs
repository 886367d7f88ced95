//! Three regions on loopback: A recognizes B and C, B recognizes A. A
//! patient confirmed in B met a phone whose home is A; that phone turns
//! non-green through A alone, in both publication modes. Then every kind
//! of bad peer: down, slow, garbage, wrong key — A goes on publishing.

use greenlight_daemon::radio_loop::PhoneState;
use greenlight_daemon::sync::{lock, Consent, Mode, ServerConfig, SharedPhone, Syncer};
use greenlight_daemon::Phone;
use greenlight_e2e::{dead_url, Prepared, TestServer};
use greenlight_protocol::{
    decode_advertisement, Colour, Metadata, RegionId, Rssi, Sighting, Timestamp,
};
use greenlight_server::config::PeerConfig;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn region(r: &str) -> RegionId {
    RegionId::new(r).expect("valid region")
}

fn peer(r: &str, url: &str, key: &str) -> PeerConfig {
    PeerConfig {
        region: r.into(),
        url: url.into(),
        public_key: key.into(),
        share_all: false,
    }
}

fn phone(dir: &Path, home: &str, now: Timestamp) -> SharedPhone {
    Arc::new(Mutex::new(
        Phone::open(dir, region(home), now.day()).expect("phone opens"),
    ))
}

fn syncer(home: &str, server: &TestServer) -> Syncer {
    Syncer::new(vec![ServerConfig {
        url: server.url.clone(),
        region: region(home),
        public_key: server.public_key.clone(),
    }])
    .expect("valid")
}

/// `listener` hears `speaker` for 20 minutes at about 1 m, ending now.
fn meet(speaker: &SharedPhone, listener: &SharedPhone, now: Timestamp) {
    let start = Timestamp(now.0.saturating_sub(1800).max(now.day().start().0));
    let heard: Vec<Sighting> = (0..20)
        .map(|m| {
            let at = Timestamp(start.0 + 60 * m);
            let payload = lock(speaker)
                .advertisement_at(at, Metadata { tx_power_dbm: -8 })
                .expect("advertises");
            let beacon = decode_advertisement(&payload).expect("decodes");
            Sighting {
                ephid: beacon.ephid,
                metadata: beacon.metadata,
                at,
                rssi: Rssi(-62),
            }
        })
        .collect();
    lock(listener).record(&heard).expect("stored");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_case_confirmed_in_b_reaches_a_phone_of_a_through_a_alone() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let (a, b, c) = (
        Prepared::new(&tmp.path().join("a")).await,
        Prepared::new(&tmp.path().join("b")).await,
        Prepared::new(&tmp.path().join("c")).await,
    );
    let (a_url, a_key) = (a.url.clone(), a.public_key.clone());
    let (b_url, b_key) = (b.url.clone(), b.public_key.clone());
    let (c_url, c_key) = (c.url.clone(), c.public_key.clone());
    let a_dir = a.data_dir.clone();
    let a_peers = vec![peer("BB", &b_url, &b_key), peer("CC", &c_url, &c_key)];
    let peers = a_peers.clone();
    let server_a = TestServer::run(a, "AA", move |cfg| {
        cfg.peers = peers;
        cfg.federation_interval_secs = 3600;
    })
    .await;
    let server_b = TestServer::run(b, "BB", |cfg| {
        cfg.peers = vec![peer("AA", &a_url, &a_key)];
        cfg.federation_interval_secs = 3600;
    })
    .await;
    let server_c = TestServer::run(c, "CC", |_| {}).await;

    let now = Timestamp(greenlight_server::now_secs());
    // Two patients of region B, one per publication mode; each met one
    // phone whose home is A.
    let bea = phone(&tmp.path().join("bea"), "BB", now);
    let ben = phone(&tmp.path().join("ben"), "BB", now);
    let anna = phone(&tmp.path().join("anna"), "AA", now);
    let arno = phone(&tmp.path().join("arno"), "AA", now);
    let stay = phone(&tmp.path().join("stay"), "BB", now);
    meet(&bea, &anna, now);
    meet(&ben, &arno, now);
    meet(&bea, &stay, now);

    let to_b = syncer("BB", &server_b);
    for (patient, mode) in [(&bea, Mode::Compact), (&ben, Mode::Unlinkable)] {
        let code = server_b.issue_code().await;
        let consent = Consent {
            mode,
            visited: vec![region("AA")],
            ..Consent::default()
        };
        to_b.report_positive(patient, &code, &consent, now)
            .await
            .expect("uploads to B");
    }
    server_b.publish().await;

    // A pulls: B's batches for A arrive; C does not recognize A (404),
    // which is reported and stops nothing.
    let reports = server_a.pull_peers().await;
    let from_b = &reports[0];
    assert_eq!(from_b["peer"], "BB");
    assert!(from_b["error"].is_null(), "{reports}");
    assert_eq!(from_b["batches"], 2, "{reports}");
    assert_eq!(from_b["new_keys"], 15, "Bea's padded compact upload");
    assert_eq!(from_b["filters"], 1, "Ben's unlinkable filter");
    let from_c = &reports[1];
    assert!(
        from_c["error"].as_str().is_some_and(|e| e.contains("404")),
        "{reports}"
    );
    let published = server_a.publish().await;
    assert_eq!(
        published.as_array().map(Vec::len),
        Some(3),
        "A's compact and unlinkable batches, and B's filter republished: {published}"
    );

    // The phones of A sync with A only, and see a case confirmed in BB.
    let to_a = syncer("AA", &server_a);
    for p in [&anna, &arno] {
        let report = to_a.sync(p, now).await;
        assert!(report.ok(), "{report:?}");
        assert!(report.new_exposures() >= 1, "{report:?}");
        let status = lock(p).status(now.day());
        assert_ne!(status.colour, Colour::Green, "{status}");
        assert!(status.to_string().contains("confirmed in BB"), "{status}");
    }
    // And B's own phones see it through B, as before.
    let report = to_b.sync(&stay, now).await;
    assert!(report.new_exposures() >= 1, "{report:?}");

    // B pulls from A too: A made nothing for B (its own patients named no
    // region, and B's cases are never passed back).
    let from_a = server_b.pull_peers().await;
    assert!(from_a[0]["error"].is_null(), "{from_a}");
    assert_eq!(from_a[0]["batches"], 0, "{from_a}");

    // Nothing twice: a second pull brings nothing; nor does a restart of
    // A, whose cursor per peer is in its database.
    let again = server_a.pull_peers().await;
    assert_eq!(again[0]["batches"], 0, "{again}");
    let imported = server_a.counter("federation_keys_imported").await;
    assert_eq!(imported, 15);
    server_a.stop().await;
    let a2 = Prepared::new(&a_dir).await;
    let peers = a_peers.clone();
    let server_a = TestServer::run(a2, "AA", move |cfg| {
        cfg.peers = peers;
        cfg.federation_interval_secs = 3600;
    })
    .await;
    let after_restart = server_a.pull_peers().await;
    assert_eq!(after_restart[0]["batches"], 0, "{after_restart}");
    assert_eq!(server_a.counter("federation_keys_imported").await, imported);

    server_a.stop().await;
    server_b.stop().await;
    server_c.stop().await;
}

/// A TCP server that answers every request with a 200 and garbage.
async fn garbage_server() -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{garbage!")
                .await;
        }
    });
    url
}

/// A TCP server that accepts and never answers.
async fn silent_server() -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .expect("binds");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_peers_never_stop_local_publishing() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let b = Prepared::new(&tmp.path().join("b")).await;
    let a = Prepared::new(&tmp.path().join("a")).await;
    let a_url = a.url.clone();
    let a_key = a.public_key.clone();
    let server_b = TestServer::run(b, "BB", |cfg| {
        cfg.peers = vec![peer("AA", &a_url, &a_key)];
        cfg.federation_interval_secs = 3600;
    })
    .await;
    // B has a batch for A, so a wrong key is caught on a real batch.
    let now = Timestamp(greenlight_server::now_secs());
    let bea = phone(&tmp.path().join("bea"), "BB", now);
    lock(&bea)
        .advertisement_at(now, Metadata { tx_power_dbm: -8 })
        .expect("a key for today");
    let code = server_b.issue_code().await;
    let consent = Consent {
        visited: vec![region("AA")],
        ..Consent::default()
    };
    syncer("BB", &server_b)
        .report_positive(&bea, &code, &consent, now)
        .await
        .expect("uploads");
    server_b.publish().await;

    let wrong = greenlight_protocol::ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
    let wrong_key = hex::encode(wrong.verifying_key().to_bytes());
    let (garbage, silent, dead) = (garbage_server().await, silent_server().await, dead_url());
    let peers = vec![
        peer("BB", &server_b.url, &wrong_key),
        peer("DOWN", &dead, &server_b.public_key),
        peer("JUNK", &garbage, &server_b.public_key),
        peer("SLOW", &silent, &server_b.public_key),
    ];
    let server_a = TestServer::run(a, "AA", move |cfg| {
        cfg.peers = peers;
        cfg.federation_interval_secs = 3600;
        cfg.federation_timeout_secs = 1;
    })
    .await;

    let reports = server_a.pull_peers().await;
    let error = |i: usize| reports[i]["error"].as_str().unwrap_or_default().to_owned();
    assert!(
        error(0).contains("batch 1 refused") && error(0).contains("signature"),
        "{reports}"
    );
    assert!(error(1).contains("cannot connect"), "{reports}");
    assert!(error(2).contains("unreadable batch index"), "{reports}");
    assert!(error(3).contains("timed out"), "{reports}");
    assert_eq!(reports[0]["cursor"], 0, "nothing imported from a wrong key");
    assert_eq!(server_a.counter("federation_keys_imported").await, 0);

    // Local publishing goes on.
    let published = server_a.publish().await;
    assert_eq!(published.as_array().map(Vec::len), Some(2), "{published}");
    // The background loops count and back off (their first attempt runs at start).
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let metrics = server_a.get_text("/metrics").await;
        let counted = ["BB", "DOWN", "JUNK", "SLOW"].iter().all(|p| {
            metrics.contains(&format!(
                "greenlight_federation_errors_total{{peer=\"{p}\"}}"
            ))
        });
        if counted {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    server_a.stop().await;
    server_b.stop().await;
}
