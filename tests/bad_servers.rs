//! A phone against servers that are dead, sign with another key, or serve
//! truncated or altered batches: clear errors, nothing matched from bad
//! data, the cursor stays so nothing is lost, and every window counts once.

use greenlight_daemon::radio_loop::PhoneState;
use greenlight_daemon::sync::{lock, Consent, ServerConfig, SharedPhone, Syncer};
use greenlight_daemon::Phone;
use greenlight_e2e::{dead_url, TestServer};
use greenlight_protocol::{
    decode_advertisement, Colour, Metadata, RegionId, Rssi, Sighting, Timestamp,
};
use std::sync::{Arc, Mutex};

fn region() -> RegionId {
    RegionId::new("DEMO").expect("valid")
}

fn phone(dir: &std::path::Path, now: Timestamp) -> SharedPhone {
    Arc::new(Mutex::new(
        Phone::open(dir, region(), now.day()).expect("phone opens"),
    ))
}

fn server(url: &str, key: &str) -> ServerConfig {
    ServerConfig {
        url: url.to_owned(),
        region: region(),
        public_key: key.to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_servers_never_lose_or_double_count_anything() {
    let srv = TestServer::start().await;
    let tmp = tempfile::tempdir().expect("temp dir");
    let now = Timestamp(greenlight_server::now_secs());
    let start = Timestamp(now.0.saturating_sub(1800).max(now.day().start().0));

    // Alice broadcasts; Bob hears her for 20 minutes at about 1 m.
    let alice = phone(&tmp.path().join("alice"), now);
    let bob = phone(&tmp.path().join("bob"), now);
    let mut heard = Vec::new();
    for m in 0..20 {
        let at = Timestamp(start.0 + 60 * m);
        let payload = lock(&alice)
            .advertisement_at(at, Metadata { tx_power_dbm: -8 })
            .expect("advertises");
        let beacon = decode_advertisement(&payload).expect("decodes");
        heard.push(Sighting {
            ephid: beacon.ephid,
            metadata: beacon.metadata,
            at,
            rssi: Rssi(-62),
        });
    }
    lock(&bob).record(&heard).expect("stored");

    let good = Syncer::new(vec![server(&srv.url, &srv.public_key)]).expect("valid");
    let code = srv.issue_code().await;
    let receipt = good
        .report_positive(&alice, &code, &Consent::default(), now)
        .await
        .expect("uploads");
    assert_eq!((receipt.real_entries, receipt.padding), (1, 14));
    // The same code a second time: refused by the server, nothing stored twice.
    let again = good
        .report_positive(&alice, &code, &Consent::default(), now)
        .await
        .expect_err("a code works once");
    assert!(again.to_string().contains("code"), "{again}");
    srv.publish().await;

    // A dead server: a clear error, nothing else happens.
    let dead = Syncer::new(vec![server(&dead_url(), &srv.public_key)]).expect("valid");
    let report = dead.sync(&bob, now).await;
    let err = report.servers[0].error.clone().expect("fails");
    assert!(err.contains("cannot connect"), "{err}");

    // Signed with another key than the one pinned: refused.
    let other = greenlight_protocol::ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
    let wrong_key = hex::encode(other.verifying_key().to_bytes());
    let liar = Syncer::new(vec![server(&srv.url, &wrong_key)]).expect("valid");
    let report = liar.sync(&bob, now).await;
    let err = report.servers[0].error.clone().expect("fails");
    assert!(err.contains("signature"), "{err}");
    // As a second (non-home) server, the policy is not asked for, and the
    // batch itself is refused.
    let liar = Syncer::new(vec![
        server(&dead_url(), &srv.public_key),
        server(&srv.url, &wrong_key),
    ])
    .expect("valid");
    let report = liar.sync(&bob, now).await;
    let err = report.servers[1].error.clone().expect("fails");
    assert!(
        err.contains("batch 1 refused") && err.contains("signature"),
        "{err}"
    );
    assert_eq!(lock(&bob).exposures().len(), 0);

    // A truncated file, then one altered in place: refused, cursor kept.
    let file = srv.data_dir.join("batches/0000000001.glb");
    let original = std::fs::read(&file).expect("batch file");
    std::fs::write(&file, &original[..original.len() / 2]).expect("truncates");
    let report = good.sync(&bob, now).await;
    let err = report.servers[0].error.clone().expect("fails");
    assert!(err.contains("truncated"), "{err}");
    assert_eq!(report.servers[0].cursor, 0);
    let mut altered = original.clone();
    altered[100] ^= 1;
    std::fs::write(&file, &altered).expect("alters");
    let err = good.sync(&bob, now).await.servers[0]
        .error
        .clone()
        .expect("fails");
    assert!(err.contains("differs"), "{err}");
    assert_eq!(lock(&bob).exposures().len(), 0);

    // Repaired: the same batches are fetched, verified and matched.
    std::fs::write(&file, &original).expect("restores");
    let report = good.sync(&bob, now).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.servers[0].batches, 2);
    assert_eq!(report.servers[0].cursor, 2);
    assert!(report.new_exposures() >= 1, "{report:?}");
    let found = lock(&bob).exposures().len();
    assert_ne!(lock(&bob).status(now.day()).colour, Colour::Green);

    // Nothing new the next time; and the same batches reached through a
    // second subscription (another cursor) match windows already counted.
    let report = good.sync(&bob, now).await;
    assert_eq!((report.servers[0].batches, report.new_exposures()), (0, 0));
    let twice = Syncer::new(vec![
        server(&srv.url, &srv.public_key),
        server(&format!("{}/", srv.url), &srv.public_key),
    ])
    .expect("valid");
    let report = twice.sync(&bob, now).await;
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.servers[1].batches, 2);
    assert_eq!(report.new_exposures(), 0);
    assert_eq!(lock(&bob).exposures().len(), found);

    // Reopened from disk: the same exposures, still once each.
    drop(bob);
    let bob = phone(&tmp.path().join("bob"), now);
    assert_eq!(lock(&bob).exposures().len(), found);
    srv.stop().await;
}
