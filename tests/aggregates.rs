//! A phone's daily aggregate report, end to end (SPEC §19): the daemon
//! seals it to the pinned leader and helper, the leader accepts it, and
//! leader and helper together count it in the right bucket.

use greenlight_analytics::AggregatorConfig;
use greenlight_daemon::report::{send_daily_report, ReportConfig, Sent};
use greenlight_daemon::sync::SharedPhone;
use greenlight_daemon::Phone;
use greenlight_e2e::{Prepared, TestServer};
use greenlight_protocol::{RegionId, Timestamp};
use greenlight_server::config::AggregatorRole;
use std::sync::{Arc, Mutex};

async fn pinned(base: &str) -> AggregatorConfig {
    let v: serde_json::Value = reqwest::get(format!("{base}/v1/aggregator/config"))
        .await
        .expect("answers")
        .json()
        .await
        .expect("JSON");
    AggregatorConfig {
        key_id: v["key_id"].as_u64().expect("key id") as u8,
        public_key: v["public_key"].as_str().expect("key").to_owned(),
    }
}

#[tokio::test]
async fn a_phones_daily_report_is_accepted_and_counted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let helper_prepared = Prepared::new(&dir.path().join("helper")).await;
    let helper = TestServer::run(helper_prepared, "DEMO", |c| {
        c.aggregator.role = AggregatorRole::Helper;
        c.aggregator.min_batch_reports = 1;
    })
    .await;
    let leader_prepared = Prepared::new(&dir.path().join("leader")).await;
    for name in ["aggregator-verify.key", "aggregator.token"] {
        std::fs::copy(
            helper.data_dir.join(name),
            leader_prepared.data_dir.join(name),
        )
        .expect("operator copies the shared secrets");
    }
    let helper_url = helper.url.clone();
    let leader = TestServer::run(leader_prepared, "DEMO", |c| {
        c.aggregator.role = AggregatorRole::Leader;
        c.aggregator.helper_url = helper_url;
        c.aggregator.min_batch_reports = 1;
    })
    .await;

    let now = Timestamp(greenlight_server::now_secs());
    let region = RegionId::new("DEMO").expect("region");
    let phone: SharedPhone = Arc::new(Mutex::new(
        Phone::open(&dir.path().join("phone"), region, now.day()).expect("phone opens"),
    ));
    let config = ReportConfig {
        leader_url: leader.url.clone(),
        leader: pinned(&leader.url).await,
        helper: pinned(&helper.url).await,
        check_every_secs: 3600,
    };
    let to_leader = greenlight_client::Client::new(&leader.url).expect("client");
    let yesterday = now.day().offset(-1);
    assert_eq!(
        send_daily_report(&to_leader, &config, &phone, now)
            .await
            .expect("sent"),
        Sent::Accepted(yesterday)
    );
    assert_eq!(
        send_daily_report(&to_leader, &config, &phone, now)
            .await
            .expect("no resend"),
        Sent::AlreadyReported(yesterday),
        "one report a day"
    );
    let counts = leader
        .admin(
            "/v1/authority/aggregate",
            serde_json::json!({ "day": yesterday.0 }),
        )
        .await;
    assert_eq!(counts["reports"], 1);
    assert_eq!(counts["green"], 1, "a new phone is green: {counts}");
    assert_eq!(counts["notified"], 0);
    leader.stop().await;
    helper.stop().await;
}
