//! Every route over real HTTP on 127.0.0.1, on SQLite and on PostgreSQL,
//! with the bad inputs a health authority's server meets in practice.

mod common;

use common::{backends, compact_upload, Db, TestServer};
use greenlight_protocol::{BatchPayload, ExposurePolicy, RegionId};
use serde_json::{json, Value};

fn ch() -> RegionId {
    RegionId::new("CH").expect("valid")
}

#[tokio::test]
async fn patient_upload_reaches_a_signed_batch() {
    for db in backends() {
        let s = TestServer::start(db, |_| {}).await;
        let token = s.token().await;
        let (body, keys) = compact_upload(3, 10);
        let (status, answer) = s.upload(&token, &body).await;
        assert_eq!(
            (status, answer["accepted"].as_u64()),
            (200, Some(3)),
            "{db:?}: {answer}"
        );
        let r = s.admin_post("/v1/authority/publish").await;
        assert_eq!(r.status(), 200);
        let published: Value = r.json().await.expect("JSON");
        assert_eq!(
            published.as_array().map(Vec::len),
            Some(2),
            "one batch per mode"
        );

        let batches = common::fetch_batches(&s.client, &s.url("")).await;
        let compact = batches.iter().find_map(|b| match &b.payload {
            BatchPayload::Compact(k) => Some(k),
            BatchPayload::Unlinkable(_) => None,
        });
        let compact = compact.expect("a compact batch");
        assert_eq!(compact.len(), 10, "padded to the minimum");
        let today = (greenlight_server::now_secs() / 86_400) as u32;
        for (day, key) in &keys {
            let k = compact
                .iter()
                .find(|k| k.key.as_bytes() == key)
                .expect("uploaded key published");
            assert_eq!(k.day.0, *day);
            // Onset two days ago: days_since_onset = day − onset.
            assert_eq!(
                k.days_since_onset,
                Some((*day as i64 - (today as i64 - 2)) as i8)
            );
        }
        let stats = s.stats().await;
        assert_eq!(stats["uploads"], 1);
        assert_eq!(stats["keys_published"], 3);
        assert_eq!(stats["keys_pending"], 0);
        s.stop().await;
    }
}

#[tokio::test]
async fn unlinkable_uploads_are_published_as_a_filter() {
    for db in backends() {
        let s = TestServer::start(db, |_| {}).await;
        let token = s.token().await;
        let hashes: Vec<[u8; 16]> = (0..5u8).map(|i| [i + 1; 16]).collect();
        let body = json!({ "mode": "unlinkable", "epoch_hashes": hashes.iter().map(hex::encode).collect::<Vec<_>>() });
        let (status, answer) = s.upload(&token, &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(s.admin_post("/v1/authority/publish").await.status(), 200);
        let batches = common::fetch_batches(&s.client, &s.url("")).await;
        let filter = batches
            .iter()
            .find_map(|b| match &b.payload {
                BatchPayload::Unlinkable(f) => Some(f),
                BatchPayload::Compact(_) => None,
            })
            .expect("an unlinkable batch");
        assert!(hashes
            .iter()
            .all(|h| filter.contains(&greenlight_protocol::EpochHash(*h))));
        assert_eq!(filter.items(), 10);
        s.stop().await;
    }
}

#[tokio::test]
async fn codes_work_once_and_can_be_revoked_or_expire() {
    for db in backends() {
        let s = TestServer::start(db, |_| {}).await;
        let code = s.issue_code(0, None).await;
        let short = code["short_code"].as_str().expect("code");
        assert_eq!(short.len(), 10);
        assert!(short.bytes().all(|b| b.is_ascii_digit()));
        assert_eq!(s.verify(short).await.0, 200);
        let (status, body) = s.verify(short).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (409, Some("code_used")),
            "replayed code"
        );
        // The long form of a used code is used too.
        assert_eq!(
            s.verify(code["long_code"].as_str().expect("long")).await.0,
            409
        );

        let code = s.issue_code(0, None).await;
        let r = s
            .client
            .delete(s.url(&format!(
                "/v1/authority/codes/{}",
                code["id"].as_str().expect("id")
            )))
            .bearer_auth(&s.admin)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 204);
        let (status, body) = s.verify(code["long_code"].as_str().expect("long")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (410, Some("code_revoked"))
        );

        let (status, body) = s.verify("0000000000").await;
        assert_eq!(
            (status, body["error"].as_str()),
            (404, Some("code_unknown"))
        );

        let today = greenlight_server::now_secs() / 86_400;
        let r = s
            .client
            .post(s.url("/v1/authority/codes"))
            .bearer_auth(&s.admin)
            .json(&json!({ "test_type": "pcr", "test_day": today, "ttl_secs": 1 }))
            .send()
            .await
            .expect("send");
        let code: Value = r.json().await.expect("JSON");
        tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
        let (status, body) = s.verify(code["short_code"].as_str().expect("code")).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (410, Some("code_expired"))
        );
        s.stop().await;
    }
}

#[tokio::test]
async fn bad_uploads_get_typed_errors_and_store_nothing() {
    for db in backends() {
        let s = TestServer::start(db, |c| c.max_body_bytes = 4096).await;
        let today = (greenlight_server::now_secs() / 86_400) as u32;
        let token = s.token().await;
        let key = hex::encode([1u8; 32]);
        let cases = [
            (
                json!({ "mode": "compact", "keys": [{ "day": today - 15, "key": key }] }),
                422,
                "key_out_of_window",
            ),
            (
                json!({ "mode": "compact", "keys": [{ "day": today + 1, "key": key }] }),
                422,
                "future_key",
            ),
            (
                json!({ "mode": "compact", "keys": [{ "day": today, "key": key }, { "day": today, "key": key }] }),
                422,
                "duplicate_key",
            ),
            (
                json!({ "mode": "compact", "keys": [{ "day": today, "key": "abcd" }] }),
                422,
                "malformed_key",
            ),
            (
                json!({ "mode": "compact", "keys": [] }),
                422,
                "too_many_keys",
            ),
            (
                json!({ "mode": "compact", "keys": [{ "day": today, "key": key }], "epoch_hashes": ["00"] }),
                422,
                "invalid_upload",
            ),
            (
                json!({ "mode": "sideways", "keys": [] }),
                400,
                "invalid_body",
            ),
            (
                json!({ "mode": "compact", "keys": [], "extra": 1 }),
                400,
                "invalid_body",
            ),
        ];
        for (body, status, code) in cases {
            let (got, answer) = s.upload(&token, &body).await;
            assert_eq!(
                (got, answer["error"].as_str()),
                (status, Some(code)),
                "{db:?} {body}"
            );
        }
        let raw = |body: &'static str, ctype: &'static str| {
            s.client
                .post(s.url("/v1/upload"))
                .bearer_auth(&token)
                .header("content-type", ctype)
                .body(body)
                .send()
        };
        let r = raw("{not json", "application/json").await.expect("send");
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.json::<Value>().await.expect("JSON")["error"],
            "malformed_json"
        );
        let r = raw("{}", "text/plain").await.expect("send");
        assert_eq!(r.status(), 415);
        assert_eq!(
            r.json::<Value>().await.expect("JSON")["error"],
            "unsupported_media_type"
        );
        let big =
            json!({ "mode": "unlinkable", "epoch_hashes": vec![hex::encode([7u8; 16]); 200] });
        let (status, answer) = s.upload(&token, &big).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (413, Some("body_too_large"))
        );

        let (status, answer) = s.upload("not-a-token", &compact_upload(1, 1).0).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (401, Some("unauthorized"))
        );
        let r = s
            .client
            .post(s.url("/v1/upload"))
            .json(&compact_upload(1, 1).0)
            .send()
            .await
            .expect("send");
        assert_eq!(r.status(), 401);

        // The token survived the refused attempts; it works once.
        assert_eq!(s.upload(&token, &compact_upload(2, 50).0).await.0, 200);
        let (status, answer) = s.upload(&token, &compact_upload(2, 60).0).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (409, Some("token_used"))
        );
        assert_eq!(s.stats().await["keys_pending"], 2);
        s.stop().await;
    }
}

#[tokio::test]
async fn expired_tokens_are_refused() {
    let s = TestServer::start(Db::Sqlite, |c| c.token_ttl_secs = 1).await;
    let token = s.token().await;
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let (status, answer) = s.upload(&token, &compact_upload(1, 3).0).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (410, Some("token_expired"))
    );
    s.stop().await;
}

#[tokio::test]
async fn chaff_looks_like_an_upload_and_is_discarded() {
    let s = TestServer::start(Db::Sqlite, |_| {}).await;
    let token = s.token().await;
    let (mut chaff, _) = compact_upload(3, 9);
    chaff["chaff"] = json!(true);
    let (status, answer) = s
        .upload(
            "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            &chaff,
        )
        .await;
    let (real_status, real_answer) = s.upload(&token, &compact_upload(3, 20).0).await;
    assert_eq!(
        (status, &answer),
        (real_status, &real_answer),
        "same answer on the wire"
    );
    assert_eq!(
        s.stats().await["keys_pending"],
        3,
        "only the real upload is stored"
    );
    s.stop().await;
}

#[tokio::test]
async fn authority_routes_need_the_admin_token() {
    let s = TestServer::start(Db::Sqlite, |_| {}).await;
    for token in [None, Some("wrong")] {
        let mut r = s.client.get(s.url("/v1/authority/stats"));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        let r = r.send().await.expect("send");
        assert_eq!(r.status(), 401);
        assert_eq!(
            r.json::<Value>().await.expect("JSON")["error"],
            "unauthorized"
        );
    }
    let r = s
        .client
        .post(s.url("/v1/authority/publish"))
        .bearer_auth("x")
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 401);
    s.stop().await;
}

#[tokio::test]
async fn policy_is_served_signed_and_only_newer_serials_publish() {
    for db in backends() {
        let s = TestServer::start(db, |_| {}).await;
        let bytes = s
            .client
            .get(s.url("/v1/policy"))
            .send()
            .await
            .expect("send")
            .bytes()
            .await
            .expect("body");
        let served = ExposurePolicy::verify(&bytes, &ch(), &common::key_of(&s.public_key))
            .expect("signed policy");
        assert_eq!(served, ExposurePolicy::recommended(ch()));
        let mut next = served.clone();
        next.serial = 2;
        next.red_threshold_minutes = 20;
        let put = |p: Value| {
            s.client
                .put(s.url("/v1/authority/policy"))
                .bearer_auth(&s.admin)
                .json(&p)
                .send()
        };
        assert_eq!(
            put(serde_json::to_value(&next).expect("JSON"))
                .await
                .expect("send")
                .status(),
            200
        );
        let bytes = s
            .client
            .get(s.url("/v1/policy"))
            .send()
            .await
            .expect("send")
            .bytes()
            .await
            .expect("body");
        let now = ExposurePolicy::verify_update(
            &bytes,
            &ch(),
            &common::key_of(&s.public_key),
            Some(&served),
        )
        .expect("newer");
        assert_eq!(now.red_threshold_minutes, 20);
        let r = put(serde_json::to_value(&served).expect("JSON"))
            .await
            .expect("send");
        assert_eq!(r.status(), 409, "stale serial");
        let mut bad = next.clone();
        bad.serial = 3;
        bad.yellow_threshold_minutes = 0;
        let r = put(serde_json::to_value(&bad).expect("JSON"))
            .await
            .expect("send");
        assert_eq!(r.status(), 422);
        let mut foreign = next;
        foreign.serial = 4;
        foreign.region = RegionId::new("DE").expect("valid");
        assert_eq!(
            put(serde_json::to_value(&foreign).expect("JSON"))
                .await
                .expect("send")
                .status(),
            422
        );
        // A phone pinning another key refuses the policy.
        let other =
            greenlight_protocol::ed25519_dalek::SigningKey::from_bytes(&[1; 32]).verifying_key();
        assert!(matches!(
            ExposurePolicy::verify(&bytes, &ch(), &other),
            Err(greenlight_protocol::Error::BadSignature { .. })
        ));
        s.stop().await;
    }
}

#[tokio::test]
async fn batch_files_are_immutable_and_cacheable() {
    let s = TestServer::start(Db::Sqlite, |_| {}).await;
    assert_eq!(s.admin_post("/v1/authority/publish").await.status(), 200);
    let r = s
        .client
        .get(s.url("/v1/batches/1"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["cache-control"],
        "public, max-age=31536000, immutable"
    );
    let etag = r.headers()["etag"].to_str().expect("etag").to_owned();
    let r = s
        .client
        .get(s.url("/v1/batches/1"))
        .header("if-none-match", &etag)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 304);
    let r = s
        .client
        .get(s.url("/v1/batches/99"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 404);
    assert_eq!(r.json::<Value>().await.expect("JSON")["error"], "not_found");
    let r = s
        .client
        .get(s.url("/v1/batches/abc"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 400);
    let index: Value = s
        .client
        .get(s.url("/v1/batches?after=1"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        index["batches"].as_array().map(Vec::len),
        Some(1),
        "only batch 2 after 1"
    );
    s.stop().await;
}

#[tokio::test]
async fn code_guessing_is_rate_limited() {
    let s = TestServer::start(Db::Sqlite, |c| c.verify_per_second = 3).await;
    let mut statuses = Vec::new();
    for i in 0..6 {
        statuses.push(s.verify(&format!("{i:010}")).await.0);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    s.stop().await;
}

#[tokio::test]
async fn operations_endpoints_answer() {
    let s = TestServer::start(Db::Sqlite, |_| {}).await;
    assert_eq!(
        s.client
            .get(s.url("/healthz"))
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("text"),
        "ok"
    );
    assert_eq!(
        s.client
            .get(s.url("/readyz"))
            .send()
            .await
            .expect("send")
            .text()
            .await
            .expect("text"),
        "ready"
    );
    let _ = s.token().await;
    let metrics = s
        .client
        .get(s.url("/metrics"))
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert!(metrics.contains("greenlight_verify_total"), "{metrics}");
    let pk: Value = s
        .client
        .get(s.url("/v1/public-key"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    assert_eq!(pk["public_key"], s.public_key.as_str());
    assert_eq!(pk["region"], "CH");
    s.stop().await;
}

#[tokio::test]
async fn openapi_document_lists_exactly_the_routes() {
    let s = TestServer::start(Db::Sqlite, |_| {}).await;
    let doc: Value = s
        .client
        .get(s.url("/openapi.json"))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("JSON");
    let paths = doc["paths"].as_object().expect("paths");
    let mut documented: Vec<String> = Vec::new();
    for (path, item) in paths {
        for method in item.as_object().expect("operations").keys() {
            documented.push(format!("{} {path}", method.to_uppercase()));
        }
    }
    documented.sort();
    let expected = [
        "DELETE /v1/authority/codes/{id}",
        "GET /healthz",
        "GET /metrics",
        "GET /readyz",
        "GET /v1/aggregator/config",
        "GET /v1/authority/aggregates",
        "GET /v1/authority/stats",
        "GET /v1/batches",
        "GET /v1/batches/{number}",
        "GET /v1/federation/{peer}/batches",
        "GET /v1/federation/{peer}/batches/{number}",
        "GET /v1/policy",
        "GET /v1/public-key",
        "POST /v1/aggregator/collect",
        "POST /v1/aggregator/jobs",
        "POST /v1/authority/aggregate",
        "POST /v1/authority/codes",
        "POST /v1/authority/federation/pull",
        "POST /v1/authority/publish",
        "POST /v1/reports",
        "POST /v1/upload",
        "POST /v1/verify",
        "PUT /v1/authority/policy",
    ];
    assert_eq!(documented, expected);
    // Every documented route is served: none answers 404 or 405 for its method.
    for entry in documented {
        let (method, path) = entry.split_once(' ').expect("method and path");
        let path = path.replace("{id}", "x").replace("{number}", "1");
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let r = s
            .client
            .request(method, s.url(&path))
            .send()
            .await
            .expect("send");
        assert!(
            r.status() != 405 && !(r.status() == 404 && r.headers().get("content-type").is_none()),
            "{entry}: {}",
            r.status()
        );
    }
    s.stop().await;
}

#[tokio::test]
async fn keys_and_batches_past_retention_are_deleted() {
    use greenlight_server::store::{NewKey, PendingUpload, Store};
    for db in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = common::fresh_database(db, dir.path()).await;
        let store = Store::open(&url).await.expect("opens");
        let now = 30 * 86_400;
        for (i, received_day) in [(1u8, 10u32), (2, 20)] {
            let token = [i; 32];
            let key = NewKey {
                mode: greenlight_protocol::PublicationMode::Compact,
                day: Some(received_day),
                data: vec![i; 32],
                days_since_onset: Some(0),
                origin: "CH".into(),
                visited: String::new(),
            };
            // A token row made directly: this test is about retention, not codes.
            sqlx_token(&url, &token, now + 100).await;
            let out = store
                .commit_uploads(
                    &[PendingUpload {
                        token_hash: token,
                        keys: vec![key],
                    }],
                    now,
                    received_day,
                )
                .await
                .expect("commit");
            assert_eq!(out, vec![Ok(1)]);
        }
        let pending = |s: &Store| {
            let s = s.clone();
            async move {
                s.counters()
                    .await
                    .expect("counters")
                    .into_iter()
                    .find(|(n, _)| n == "keys_pending")
                    .map(|(_, v)| v)
            }
        };
        assert_eq!(pending(&store).await, Some(2));
        let deleted = store.expire(16, 16 * 86_400).await.expect("expire").keys;
        assert_eq!(
            deleted, 1,
            "{db:?}: only the key received on day 10 is past a cut-off of day 16"
        );
        assert_eq!(pending(&store).await, Some(1));
        store.close().await;
        if db == Db::Postgres {
            common::drop_postgres(&url).await;
        }
    }
}

async fn sqlx_token(url: &str, hash: &[u8; 32], expires_at: i64) {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await.expect("connect");
    sqlx::query("INSERT INTO tokens (hash, test_day, onset_day, expires_at, used) VALUES ($1, 0, NULL, $2, 0)")
        .bind(hash.to_vec())
        .bind(expires_at)
        .execute(&mut conn)
        .await
        .expect("insert token");
    conn.close().await.expect("close");
}

#[tokio::test]
async fn a_token_spends_once_within_one_group_commit() {
    use greenlight_server::store::{NewKey, PendingUpload, Store, UploadRefusal};
    for db in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = common::fresh_database(db, dir.path()).await;
        let store = Store::open(&url).await.expect("opens");
        let token = [5u8; 32];
        sqlx_token(&url, &token, 1_000).await;
        let key = |b: u8| NewKey {
            mode: greenlight_protocol::PublicationMode::Compact,
            day: Some(7),
            data: vec![b; 32],
            days_since_onset: None,
            origin: "CH".into(),
            visited: String::new(),
        };
        let twice = [
            PendingUpload {
                token_hash: token,
                keys: vec![key(1), key(2)],
            },
            PendingUpload {
                token_hash: token,
                keys: vec![key(3)],
            },
            PendingUpload {
                token_hash: [6u8; 32],
                keys: vec![key(4)],
            },
        ];
        let out = store.commit_uploads(&twice, 10, 7).await.expect("commit");
        assert_eq!(
            out,
            vec![
                Ok(2),
                Err(UploadRefusal::TokenSpent),
                Err(UploadRefusal::TokenSpent)
            ],
            "{db:?}"
        );
        let stored = store
            .pending_keys(greenlight_protocol::PublicationMode::Compact)
            .await
            .expect("pending");
        let mut data: Vec<u8> = stored.iter().map(|k| k.data[0]).collect();
        data.sort();
        assert_eq!(data, vec![1, 2], "{db:?}: only the first upload's keys");
        assert!(stored
            .iter()
            .all(|k| k.day == Some(7) && k.days_since_onset.is_none() && k.origin == "CH"));
        store.close().await;
        if db == Db::Postgres {
            common::drop_postgres(&url).await;
        }
    }
}

#[tokio::test]
async fn federation_imports_are_deduplicated_and_the_cursor_survives_reopening() {
    use greenlight_server::store::{Import, NewKey, Store};
    for db in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = common::fresh_database(db, dir.path()).await;
        let key = |b: u8| NewKey {
            mode: greenlight_protocol::PublicationMode::Compact,
            day: Some(20_000),
            data: vec![b; 32],
            days_since_onset: Some(1),
            origin: "BB".into(),
            visited: String::new(),
        };
        let store = Store::open(&url).await.expect("opens");
        assert_eq!(store.peer_cursor("BB").await.expect("cursor"), 0);
        let first = Import {
            keys: vec![key(1), key(2)],
            filter: Some(("BB".into(), vec![0xAA; 64], 3)),
        };
        let new = store
            .import_batch("BB", 1, &first, 20_000 * 86_400)
            .await
            .expect("imports");
        assert_eq!(new, 2, "{db:?}");
        // The same key again (a re-sent batch, or the patient uploaded in two regions).
        let second = Import {
            keys: vec![key(2), key(3)],
            filter: None,
        };
        let new = store
            .import_batch("BB", 2, &second, 20_000 * 86_400)
            .await
            .expect("imports");
        assert_eq!(new, 1, "{db:?}: key 2 was seen");
        store.close().await;
        let store = Store::open(&url).await.expect("reopens");
        assert_eq!(store.peer_cursor("BB").await.expect("cursor"), 2, "{db:?}");
        let pending = store
            .pending_keys(greenlight_protocol::PublicationMode::Compact)
            .await
            .expect("pending");
        assert_eq!(pending.len(), 3, "{db:?}");
        assert!(pending
            .iter()
            .all(|k| k.origin == "BB" && k.visited.is_empty()));
        let filters = store.pending_filters().await.expect("filters");
        assert_eq!(filters.len(), 1, "{db:?}");
        assert_eq!((filters[0].1.as_str(), filters[0].3), ("BB", 3));
        store.close().await;
        if db == Db::Postgres {
            common::drop_postgres(&url).await;
        }
    }
}

#[tokio::test]
async fn aggregate_storage_counts_nothing_twice() {
    use greenlight_server::store::{
        AggregateRecord, CollectRecord, HelperDay, HelperJob, JobRecord, PendingCollect, Store,
    };
    for db in backends() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = common::fresh_database(db, dir.path()).await;
        let store = Store::open(&url).await.expect("opens");
        // The leader: a report id stored once, a day read in pages.
        let (a, b, c) = ([1u8; 16], [2u8; 16], [3u8; 16]);
        assert!(store.insert_report(&b, 20, 100, "b").await.expect("insert"));
        assert!(
            !store
                .insert_report(&b, 20, 101, "{}")
                .await
                .expect("insert"),
            "{db:?}: duplicate id"
        );
        assert!(store.insert_report(&a, 20, 102, "a").await.expect("insert"));
        assert!(store.insert_report(&c, 21, 103, "c").await.expect("insert"));
        assert_eq!(store.count_reports(20).await.expect("count"), 2);
        let first = store.reports_page(20, None, 1).await.expect("page");
        assert_eq!(first, vec![(a, "a".to_owned())], "{db:?}: in id order");
        let second = store.reports_page(20, Some(&a), 1).await.expect("page");
        assert_eq!(second, vec![(b, "b".to_owned())]);
        assert!(store
            .reports_page(20, Some(&b), 1)
            .await
            .expect("page")
            .is_empty());
        // A pending collect closes the day until the counts are recorded.
        let pending = PendingCollect {
            day: 20,
            run: "r".into(),
            jobs: 1,
            reports: 2,
            invalid: 0,
            leader_share: "share".into(),
            dp_epsilon: String::new(),
        };
        assert!(!store.day_closed(20).await.expect("closed"));
        assert!(store.save_leader_collect(&pending, 1).await.expect("save"));
        assert!(!store.save_leader_collect(&pending, 2).await.expect("save"));
        assert!(store.day_closed(20).await.expect("closed"));
        assert_eq!(
            store.leader_collect(20).await.expect("read"),
            Some(pending.clone())
        );
        store.drop_leader_collect(20).await.expect("drop");
        assert!(!store.day_closed(20).await.expect("closed"));
        assert!(store.save_leader_collect(&pending, 3).await.expect("save"));
        let record = AggregateRecord {
            day: 20,
            reports: 2,
            invalid: 0,
            buckets: vec![1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            dp_epsilon: String::new(),
        };
        assert!(store.record_aggregate(&record, 1).await.expect("record"));
        assert!(
            !store.record_aggregate(&record, 2).await.expect("record"),
            "{db:?}: once"
        );
        assert_eq!(store.aggregate_of(20).await.expect("read"), Some(record));
        assert_eq!(store.leader_collect(20).await.expect("read"), None);
        assert!(store.day_closed(20).await.expect("closed"));
        // The aggregated day's reports go a batch at a time; other days' stay.
        assert_eq!(store.purge_aggregated_reports(1).await.expect("purge"), 1);
        assert_eq!(store.count_reports(20).await.expect("count"), 1);
        assert_eq!(store.purge_aggregated_reports(5).await.expect("purge"), 1);
        assert_eq!(store.purge_aggregated_reports(5).await.expect("purge"), 0);
        assert_eq!(
            store.count_reports(20).await.expect("count"),
            0,
            "reports deleted"
        );
        assert_eq!(
            store.count_reports(21).await.expect("count"),
            1,
            "other days kept"
        );

        // The helper: jobs of a run, a new run replacing it, one collect.
        let (x1, x2, x3, x4) = ([11u8; 16], [12u8; 16], [13u8; 16], [14u8; 16]);
        let job = |run: &str, job: u32, digest: &str, reports: u64| HelperJob {
            day: 30,
            run: run.into(),
            job,
            ids_digest: digest.into(),
            reports,
            share: format!("share {run} {job}"),
            response: format!("answer {run} {job}"),
        };
        let record = |j: &HelperJob, ids: &[([u8; 16], bool)]| {
            let (store, j, ids) = (store.clone(), j.clone(), ids.to_vec());
            async move { store.record_helper_job(&j, &ids, 5).await.expect("job") }
        };
        let r1_0 = job("r1", 0, "d0", 1);
        assert_eq!(
            record(&r1_0, &[(x1, true), (x2, false)]).await,
            JobRecord::Recorded
        );
        assert_eq!(
            record(&r1_0, &[(x1, true), (x2, false)]).await,
            JobRecord::Repeated("answer r1 0".into()),
            "{db:?}: a retried job"
        );
        assert_eq!(
            record(&job("r1", 0, "other", 1), &[(x3, true)]).await,
            JobRecord::Conflict
        );
        assert_eq!(
            record(&job("r1", 1, "d1", 0), &[(x3, false), (x2, false)]).await,
            JobRecord::DuplicateReport,
            "{db:?}: a report in two jobs of a run"
        );
        assert_eq!(
            store.helper_job(30, "r1", 1).await.expect("read"),
            None,
            "nothing half-recorded"
        );
        assert_eq!(
            store.helper_run_jobs(30, "r1").await.expect("jobs"),
            vec![(0, 1, "share r1 0".to_owned())]
        );
        assert_eq!(
            record(&job("r2", 0, "d0", 2), &[(x1, true), (x3, true)]).await,
            JobRecord::Recorded,
            "{db:?}: a new run"
        );
        assert!(store
            .helper_run_jobs(30, "r1")
            .await
            .expect("jobs")
            .is_empty());
        assert!(store.helper_run_dropped(30, "r1").await.expect("dropped"));
        assert!(!store.helper_run_dropped(30, "r2").await.expect("dropped"));
        assert_eq!(
            record(&r1_0, &[(x1, true), (x2, false)]).await,
            JobRecord::Superseded
        );
        assert_eq!(
            store
                .record_helper_collect(30, "r1", "k1", "no", 1, 6)
                .await
                .expect("collect"),
            CollectRecord::NotCurrent
        );
        assert_eq!(
            store
                .record_helper_collect(30, "r2", "k2", "sum", 2, 6)
                .await
                .expect("collect"),
            CollectRecord::Recorded
        );
        assert_eq!(
            store.helper_day(30).await.expect("day"),
            Some(HelperDay {
                run: "r2".into(),
                collected: Some(("k2".into(), "sum".into())),
            })
        );
        assert_eq!(
            store
                .record_helper_collect(30, "r2", "k2", "again", 2, 7)
                .await
                .expect("collect"),
            CollectRecord::Repeated("sum".into())
        );
        assert_eq!(
            store
                .record_helper_collect(30, "r2", "k3", "x", 2, 7)
                .await
                .expect("collect"),
            CollectRecord::Collected
        );
        assert_eq!(
            record(&job("r3", 0, "d0", 1), &[(x4, true)]).await,
            JobRecord::Collected,
            "{db:?}: a collected day takes no job"
        );
        let counted = store.counted_before(&[x1, x2, x3, x4]).await.expect("seen");
        assert_eq!(counted, [x1, x3].into_iter().collect());
        // Collecting a run with a report counted in another day changes nothing.
        let other_day = HelperJob {
            day: 31,
            ..job("r4", 0, "d0", 2)
        };
        assert_eq!(
            record(&other_day, &[(x4, true), (x1, true)]).await,
            JobRecord::Recorded
        );
        assert_eq!(
            store
                .record_helper_collect(31, "r4", "k", "sum", 2, 8)
                .await
                .expect("collect"),
            CollectRecord::AlreadyCounted
        );
        assert_eq!(
            store
                .helper_day(31)
                .await
                .expect("day")
                .and_then(|d| d.collected),
            None
        );
        assert!(store.counted_before(&[x4]).await.expect("seen").is_empty());
        assert_eq!(
            store.helper_run_jobs(31, "r4").await.expect("jobs").len(),
            1
        );
        store.close().await;
        if db == Db::Postgres {
            common::drop_postgres(&url).await;
        }
    }
}
