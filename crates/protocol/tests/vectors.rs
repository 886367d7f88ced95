//! Checks the implementation against the frozen vectors in
//! `protocol-spec/vectors/` (SPEC §14). A failure here means the code no
//! longer speaks protocol version 1.

use greenlight_protocol::ed25519_dalek::SigningKey;
use greenlight_protocol::*;
use serde_json::Value;

fn load(name: &str) -> Value {
    let path = format!(
        "{}/../../protocol-spec/vectors/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not JSON: {e}"))
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn array<const N: usize>(v: &Value) -> [u8; N] {
    bytes(v).try_into().expect("hex of the expected length")
}

fn num(v: &Value) -> u64 {
    v.as_u64().expect("number")
}

fn region(v: &Value) -> RegionId {
    RegionId::new(v.as_str().expect("region string")).expect("valid region")
}

fn error_code(e: &Error) -> &'static str {
    match e {
        Error::Truncated { .. } => "truncated",
        Error::TrailingBytes { .. } => "trailing_bytes",
        Error::BadMagic { .. } => "bad_magic",
        Error::UnknownVersion { .. } => "unknown_version",
        Error::InvalidField { .. } => "invalid_field",
        Error::TooLarge { .. } => "too_large",
        Error::WrongRegion { .. } => "wrong_region",
        Error::BadSignature { .. } => "bad_signature",
        Error::NotGreenlight => "not_greenlight",
        _ => "other",
    }
}

#[test]
fn ephids_and_metadata() {
    let v = load("ephid.json");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 3);
    for case in cases {
        let key = DailyKey::from_bytes(array(&case["daily_key"]));
        let day = DayNumber(num(&case["day"]) as u32);
        let g = key.ephid_generator(day);
        for e in case["epochs"].as_array().expect("epochs") {
            let i = EpochIndex::new(num(&e["epoch_index"]) as u8).expect("below 96");
            assert_eq!(day.epoch(i).0 as u64, num(&e["epoch_number"]));
            assert_eq!(
                g.ephid(i).0,
                array(&e["ephid"]),
                "EphID, day {day:?} epoch {i:?}"
            );
            assert_eq!(g.all_ephids()[usize::from(i.get())].0, array(&e["ephid"]));
            let m = Metadata {
                tx_power_dbm: e["tx_power_dbm"].as_i64().expect("tx") as i8,
            };
            assert_eq!(m.to_bytes(), array(&e["metadata_plain"]));
            let sealed = EncryptedMetadata(array(&e["metadata_encrypted"]));
            assert_eq!(g.encrypt_metadata(i, m), sealed);
            assert_eq!(g.decrypt_metadata(i, sealed), Ok(m));
        }
    }
}

#[test]
fn advertisements() {
    let v = load("advertisement.json");
    for case in v["valid"].as_array().expect("valid") {
        let beacon = Beacon {
            ephid: EphId(array(&case["ephid"])),
            metadata: EncryptedMetadata(array(&case["metadata_encrypted"])),
        };
        let adv = bytes(&case["advertisement"]);
        assert_eq!(encode_advertisement(&beacon).to_vec(), adv);
        assert_eq!(
            encode_service_data(&beacon).to_vec(),
            bytes(&case["service_data"])
        );
        assert_eq!(decode_advertisement(&adv), Ok(beacon));
        assert_eq!(
            decode_service_data(&bytes(&case["service_data"])),
            Ok(beacon)
        );
        for other in case["also_decodes"].as_array().expect("list") {
            assert_eq!(decode_advertisement(&bytes(other)), Ok(beacon));
        }
    }
    for case in v["invalid"].as_array().expect("invalid") {
        let err = decode_advertisement(&bytes(&case["payload"])).expect_err("must be refused");
        assert_eq!(error_code(&err), case["error"], "{}", case["why"]);
    }
}

#[test]
fn epoch_hashes() {
    for case in load("epoch_hash.json")["cases"].as_array().expect("cases") {
        let h = EpochHash::new(
            &EphId(array(&case["ephid"])),
            EpochNumber(num(&case["epoch"]) as u32),
        );
        assert_eq!(h.0, array(&case["epoch_hash"]));
    }
}

#[test]
fn bloom_filter_bits() {
    let v = load("bloom.json");
    assert_eq!(num(&v["hash_functions"]), 32);
    assert_eq!(bytes(&v["seed"]), greenlight_protocol::bloom::BLOOM_SEED);
    let items: Vec<EpochHash> = v["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|h| EpochHash(array(h)))
        .collect();
    let mut filter = EpochFilter::with_capacity(num(&v["capacity"]) as usize).expect("valid size");
    assert_eq!(filter.bits().len() as u64, num(&v["bitmap_bytes"]));
    let mut single = filter.clone();
    single.insert(&items[0]);
    let set: Vec<u64> = (0..single.len_bits())
        .filter(|&b| single.bits()[(b / 8) as usize] >> (b % 8) & 1 == 1)
        .collect();
    let expected: Vec<u64> = v["bits_set_by_first_item"]
        .as_array()
        .expect("bits")
        .iter()
        .map(num)
        .collect();
    assert_eq!(set, expected);
    for it in &items {
        filter.insert(it);
    }
    assert_eq!(filter.bits(), bytes(&v["bitmap"]).as_slice());
    let parsed =
        EpochFilter::from_bits(bytes(&v["bitmap"]), items.len() as u32).expect("valid bitmap");
    assert!(items.iter().all(|it| parsed.contains(it)));
    let absent = v["absent"].as_array().expect("absent");
    assert!(!absent.is_empty());
    assert!(absent
        .iter()
        .all(|h| !parsed.contains(&EpochHash(array(h)))));
}

#[test]
fn signed_batches() {
    let v = load("batch.json");
    let sk = SigningKey::from_bytes(&array(&v["signing_key_seed"]));
    let vk = sk.verifying_key();
    assert_eq!(vk.to_bytes(), array::<32>(&v["public_key"]));
    for (mode, number) in [("compact", 42), ("unlinkable", 43)] {
        let c = &v[mode];
        let origins: Vec<RegionId> = c["origins"]
            .as_array()
            .expect("origins")
            .iter()
            .map(region)
            .collect();
        let payload = if mode == "compact" {
            BatchPayload::Compact(
                c["keys"]
                    .as_array()
                    .expect("keys")
                    .iter()
                    .map(|k| PublishedKey {
                        day: DayNumber(num(&k["day"]) as u32),
                        key: DailyKey::from_bytes(array(&k["key"])),
                        days_since_onset: k["days_since_onset"].as_i64().map(|d| d as i8),
                        origin: num(&k["origin"]) as u8,
                    })
                    .collect(),
            )
        } else {
            let items = c["items"].as_array().expect("items");
            let mut f = EpochFilter::with_capacity(items.len()).expect("valid size");
            for h in items {
                f.insert(&EpochHash(array(h)));
            }
            BatchPayload::Unlinkable(f)
        };
        let batch = KeyBatch {
            region: region(&c["region"]),
            number: BatchNumber(num(&c["number"])),
            start: Timestamp(num(&c["start"])),
            end: Timestamp(num(&c["end"])),
            origins,
            payload,
        };
        let expected = bytes(&c["bytes"]);
        assert_eq!(
            batch.sign(&sk).expect("valid batch"),
            expected,
            "{mode} batch bytes"
        );
        let back = KeyBatch::verify(&expected, &batch.region, &vk).expect("vector verifies");
        assert_eq!(back.number, BatchNumber(number));
        assert_eq!(back.mode(), batch.mode());
        match (&back.payload, &batch.payload) {
            (BatchPayload::Compact(a), BatchPayload::Compact(b)) => assert_eq!(a, b),
            (BatchPayload::Unlinkable(a), BatchPayload::Unlinkable(b)) => {
                assert_eq!(a.bits(), b.bits())
            }
            _ => panic!("mode changed in transit"),
        }
    }
    let ch = RegionId::new("CH").expect("valid");
    for case in v["invalid"].as_array().expect("invalid") {
        let err = KeyBatch::verify(&bytes(&case["bytes"]), &ch, &vk).expect_err("must be refused");
        assert_eq!(error_code(&err), case["error"], "{}", case["why"]);
    }
}

#[test]
fn signed_policy() {
    let v = load("policy.json");
    let sk = SigningKey::from_bytes(&array(&v["signing_key_seed"]));
    let policy: ExposurePolicy = serde_json::from_value(v["policy"].clone()).expect("policy JSON");
    assert_eq!(
        policy,
        ExposurePolicy::recommended(policy.region.clone()),
        "recommended defaults changed"
    );
    let expected = bytes(&v["bytes"]);
    assert_eq!(policy.sign(&sk).expect("valid policy"), expected);
    assert_eq!(
        ExposurePolicy::verify(&expected, &policy.region, &sk.verifying_key()),
        Ok(policy)
    );
}

#[test]
fn status_engine() {
    let v = load("status.json");
    let policy: ExposurePolicy = serde_json::from_value(v["policy"].clone()).expect("policy JSON");
    let cases = v["cases"].as_array().expect("cases");
    assert!(cases.len() >= 8);
    for case in cases {
        let name = case["name"].as_str().expect("name");
        let exposures: Vec<Exposure> =
            serde_json::from_value(case["exposures"].clone()).expect("exposures");
        let checkins: Vec<DayNumber> =
            serde_json::from_value(case["checkins"].clone()).expect("checkins");
        let positive_test: Option<PositiveTest> =
            serde_json::from_value(case["positive_test"].clone()).expect("positive test");
        let today = DayNumber(num(&case["today"]) as u32);
        let s = evaluate(
            &policy,
            &StatusInput {
                today,
                positive_test,
                exposures: &exposures,
                checkins: &checkins,
            },
        );
        let want = &case["expected"];
        assert_eq!(
            serde_json::to_value(s.colour).expect("colour"),
            want["colour"],
            "{name}"
        );
        assert_eq!(
            s.green_on.map(|d| u64::from(d.0)),
            want["green_on"].as_u64(),
            "{name}"
        );
        assert_eq!(s.reason.ended.len() as u64, num(&want["ended"]), "{name}");
        assert_eq!(
            s.reason.ignored_exposures as u64,
            num(&want["ignored_exposures"]),
            "{name}"
        );
        let active = want["active"].as_array().expect("active");
        assert_eq!(s.reason.active.len(), active.len(), "{name}");
        for (q, w) in s.reason.active.iter().zip(active) {
            assert_eq!(
                serde_json::to_value(q.colour).expect("colour"),
                w["colour"],
                "{name}"
            );
            assert_eq!(u64::from(q.end.0), num(&w["end"]), "{name}");
            assert_eq!(u64::from(q.base_end.0), num(&w["base_end"]), "{name}");
            assert_eq!(u64::from(q.notified_on.0), num(&w["notified_on"]), "{name}");
            let missed: Vec<u64> = q.missed_checkins.iter().map(|d| u64::from(d.0)).collect();
            let want_missed: Vec<u64> = w["missed_checkins"]
                .as_array()
                .expect("missed")
                .iter()
                .map(num)
                .collect();
            assert_eq!(missed, want_missed, "{name}");
        }
        let days: Vec<(u64, u64)> = greenlight_protocol::status::exposure_days(&policy, &exposures)
            .iter()
            .map(|d| (u64::from(d.day.0), d.weighted_secs))
            .collect();
        let want_days: Vec<(u64, u64)> = want["day_weighted_secs"]
            .as_array()
            .expect("days")
            .iter()
            .map(|p| (num(&p[0]), num(&p[1])))
            .collect();
        assert_eq!(days, want_days, "{name}");
        assert_eq!(
            s.to_string(),
            want["reason_text"].as_str().expect("text"),
            "{name}"
        );
    }
}
