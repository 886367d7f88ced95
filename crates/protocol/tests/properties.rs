//! Property tests: every codec round-trips, every parser survives arbitrary
//! bytes (also behind a valid signature), and both matching strategies agree.

use greenlight_protocol::ed25519_dalek::{Signer, SigningKey};
use greenlight_protocol::*;
use proptest::prelude::*;

fn authority() -> SigningKey {
    SigningKey::from_bytes(&[42; 32])
}

fn ch() -> RegionId {
    RegionId::new("CH").expect("valid")
}

/// `body` followed by a valid signature over it: reaches the parsers that
/// run only after signature verification.
fn signed(body: &[u8]) -> Vec<u8> {
    let mut out = body.to_vec();
    out.extend_from_slice(&authority().sign(body).to_bytes());
    out
}

fn beacon() -> impl Strategy<Value = Beacon> {
    (any::<[u8; 16]>(), any::<[u8; 4]>()).prop_map(|(e, m)| Beacon {
        ephid: EphId(e),
        metadata: EncryptedMetadata(m),
    })
}

fn published_key() -> impl Strategy<Value = PublishedKey> {
    (
        20_000u32..20_100,
        any::<[u8; 32]>(),
        proptest::option::of(-127i8..=127),
        0u8..3,
    )
        .prop_map(|(day, key, onset, origin)| PublishedKey {
            day: DayNumber(day),
            key: DailyKey::from_bytes(key),
            days_since_onset: onset,
            origin,
        })
}

fn policy() -> impl Strategy<Value = ExposurePolicy> {
    (
        any::<u32>(),
        (0u8..80, 1u8..40, 1u8..40),
        proptest::array::uniform4(0u16..=1000),
        proptest::array::uniform29(0u16..=1000),
        (0u32..=3600, 1u16..100, 0u16..100),
        (1u8..=60, 1u8..=60, 1u8..=60),
        (any::<bool>(), 0u8..=4, any::<i8>()),
    )
        .prop_map(
            |(
                serial,
                (t0, d1, d2),
                aw,
                iw,
                (min, yellow, extra),
                (y, r, iso),
                (checkin, skew, tx),
            )| {
                ExposurePolicy {
                    region: ch(),
                    serial,
                    attenuation_thresholds_db: [t0, t0 + d1, t0 + d1 + d2],
                    attenuation_weights_pct: aw,
                    infectiousness_weights_pct: iw,
                    unknown_onset_weight_pct: aw[1],
                    min_window_secs: min,
                    yellow_threshold_minutes: yellow,
                    red_threshold_minutes: yellow + extra,
                    yellow_quarantine_days: y,
                    red_quarantine_days: r,
                    isolation_days: iso,
                    daily_checkin: checkin,
                    epoch_skew: skew,
                    assumed_tx_power_dbm: tx,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn advertisement_round_trips(b in beacon()) {
        prop_assert_eq!(decode_advertisement(&encode_advertisement(&b)), Ok(b));
        prop_assert_eq!(decode_service_data(&encode_service_data(&b)), Ok(b));
    }

    #[test]
    fn advertisement_parser_survives_anything(bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = decode_advertisement(&bytes);
        let _ = decode_service_data(&bytes);
    }

    #[test]
    fn compact_batches_round_trip(keys in proptest::collection::vec(published_key(), 0..20), number in any::<u64>(), start in 0u64..1 << 40, len in 0u64..1 << 20) {
        let batch = KeyBatch {
            region: ch(),
            number: BatchNumber(number),
            start: Timestamp(start),
            end: Timestamp(start + len),
            origins: vec![ch(), RegionId::new("DE").expect("valid"), RegionId::new("AT").expect("valid")],
            payload: BatchPayload::Compact(keys.clone()),
        };
        let bytes = batch.sign(&authority()).expect("valid batch");
        let back = KeyBatch::verify(&bytes, &ch(), &authority().verifying_key()).expect("verifies");
        prop_assert_eq!((back.number, back.start, back.end), (batch.number, batch.start, batch.end));
        match back.payload {
            BatchPayload::Compact(k) => prop_assert_eq!(k, keys),
            BatchPayload::Unlinkable(_) => prop_assert!(false, "mode changed"),
        }
    }

    #[test]
    fn batch_parser_survives_anything(bytes in proptest::collection::vec(any::<u8>(), 0..400), cut in any::<usize>()) {
        let vk = authority().verifying_key();
        let _ = KeyBatch::verify(&bytes, &ch(), &vk);
        // The same bytes behind a valid header and signature reach the body parser.
        let mut body = b"GLKB\x01".to_vec();
        body.extend_from_slice(&bytes[..bytes.len().min(1)]);
        body.extend_from_slice(b"\x02CH");
        body.extend_from_slice(&bytes);
        let s = signed(&body);
        let _ = KeyBatch::verify(&s, &ch(), &vk);
        let _ = KeyBatch::verify(&s[..cut % (s.len() + 1)], &ch(), &vk);
    }

    #[test]
    fn tampered_batches_are_refused(keys in proptest::collection::vec(published_key(), 1..5), at in any::<usize>(), bit in 0u8..8) {
        let batch = KeyBatch {
            region: ch(), number: BatchNumber(1), start: Timestamp(0), end: Timestamp(1),
            origins: vec![ch(), ch(), ch()], payload: BatchPayload::Compact(keys),
        };
        let mut bytes = batch.sign(&authority()).expect("valid");
        let i = at % bytes.len();
        bytes[i] ^= 1 << bit;
        prop_assert!(KeyBatch::verify(&bytes, &ch(), &authority().verifying_key()).is_err());
    }

    #[test]
    fn policies_round_trip(p in policy()) {
        let bytes = p.sign(&authority()).expect("valid policy");
        prop_assert_eq!(ExposurePolicy::verify(&bytes, &ch(), &authority().verifying_key()), Ok(p));
    }

    #[test]
    fn policy_parser_survives_anything(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let vk = authority().verifying_key();
        let _ = ExposurePolicy::verify(&bytes, &ch(), &vk);
        let mut body = b"GLPL\x01\x02CH".to_vec();
        body.extend_from_slice(&bytes);
        let _ = ExposurePolicy::verify(&signed(&body), &ch(), &vk);
    }

    #[test]
    fn bloom_parser_survives_anything(bytes in proptest::collection::vec(any::<u8>(), 0..64), probe in any::<[u8; 16]>()) {
        if let Ok(f) = EpochFilter::from_bits(bytes, 3) {
            let _ = f.contains(&EpochHash(probe));
        }
    }

    #[test]
    fn every_sighting_lands_in_one_window(raw in proptest::collection::vec((0u8..4, 0u64..4000, any::<i8>()), 0..60)) {
        let sightings: Vec<Sighting> = raw.iter().map(|&(id, at, rssi)| Sighting {
            ephid: EphId([id; 16]), metadata: EncryptedMetadata([0; 4]), at: Timestamp(at), rssi: Rssi(rssi),
        }).collect();
        let config = WindowConfig::default();
        let windows = group_into_windows(&sightings, &config);
        prop_assert_eq!(windows.iter().map(|w| w.rssi.len()).sum::<usize>(), sightings.len());
        for w in &windows {
            prop_assert!(w.first_seen <= w.last_seen);
            prop_assert!(w.duration_secs(&config) >= config.sample_period_secs);
        }
    }

    #[test]
    fn both_matching_strategies_agree(
        keys in proptest::collection::vec((0u32..4, any::<[u8; 32]>()), 1..30),
        picks in proptest::collection::vec((any::<usize>(), 0u8..96, 0u64..2000, 0u64..1800), 0..30),
        noise in proptest::collection::vec((any::<[u8; 16]>(), 0u32..400), 0..30),
        skew in 0u8..3,
    ) {
        let day0 = DayNumber(20_000);
        let published: Vec<PublishedKey> = keys.iter().map(|&(d, k)| PublishedKey {
            day: day0.offset(i64::from(d)), key: DailyKey::from_bytes(k), days_since_onset: None, origin: 0,
        }).collect();
        let batch = KeyBatch {
            region: ch(), number: BatchNumber(1), start: Timestamp(0), end: Timestamp(0),
            origins: vec![ch()], payload: BatchPayload::Compact(published.clone()),
        };
        let mut windows: Vec<ObservedWindow> = picks.iter().map(|&(k, i, shift, len)| {
            let key = &published[k % published.len()];
            let index = EpochIndex::new(i).expect("below 96");
            let b = key.key.ephid_generator(key.day).beacon(index, Metadata { tx_power_dbm: 0 });
            let start = Timestamp(key.day.epoch(index).start().0 + shift);
            ObservedWindow { ephid: b.ephid, metadata: b.metadata, first_seen: start, last_seen: Timestamp(start.0 + len), rssi: vec![Rssi(-50)] }
        }).collect();
        windows.extend(noise.iter().map(|&(e, epoch)| ObservedWindow {
            ephid: EphId(e), metadata: EncryptedMetadata([0; 4]),
            first_seen: day0.epoch(EpochIndex::new(0).expect("0")).offset(i64::from(epoch)).start(),
            last_seen: day0.epoch(EpochIndex::new(0).expect("0")).offset(i64::from(epoch)).start(),
            rssi: vec![Rssi(-50)],
        }));
        let streaming = MatchIndex::prepare(&batch).lookup(&windows, skew);
        let tables = MatchIndex::prepare(&batch).with_ephid_tables().lookup(&windows, skew);
        prop_assert_eq!(&streaming, &tables);
        // A window within its epoch (no shift past the end) always matches.
        for (w, &(_, _, shift, len)) in picks.iter().enumerate() {
            if shift + len < 900 {
                prop_assert!(streaming[w].is_some(), "window {} within its epoch did not match", w);
            }
            if let Some(hit) = streaming[w] {
                let heard = (windows[w].first_seen.epoch(), windows[w].last_seen.epoch());
                prop_assert!(hit.epoch.offset(i64::from(skew)) >= heard.1 && hit.epoch <= heard.0.offset(i64::from(skew)));
            }
        }
    }

    #[test]
    fn status_engine_is_total(
        p in policy(),
        raw in proptest::collection::vec((0u32..40, 0u32..7200, any::<u8>(), proptest::option::of(any::<i8>()), 0u32..40), 0..20),
        checkins in proptest::collection::vec(0u32..60, 0..40),
        test in proptest::option::of(0u32..40),
        today in 0u32..60,
    ) {
        let d0 = DayNumber(20_000);
        let exposures: Vec<Exposure> = raw.iter().map(|&(day, dur, att, onset, matched)| Exposure {
            start: d0.offset(i64::from(day)).start(),
            duration_secs: dur,
            attenuation: AttenuationStats { min: Attenuation(att), median: Attenuation(att), mean: Attenuation(att), max: Attenuation(att), samples: 1 },
            tx_power_dbm: None,
            days_since_onset: onset,
            origin: ch(),
            matched_on: d0.offset(i64::from(day.max(matched))),
        }).collect();
        let checkins: Vec<DayNumber> = checkins.iter().map(|&c| d0.offset(i64::from(c))).collect();
        let s = evaluate(&p, &StatusInput {
            today: d0.offset(i64::from(today)),
            positive_test: test.map(|t| PositiveTest { test_day: d0.offset(i64::from(t)) }),
            exposures: &exposures,
            checkins: &checkins,
        });
        prop_assert_eq!(s.colour == Colour::Green, s.green_on.is_none());
        if let Some(end) = s.green_on {
            prop_assert!(end > d0.offset(i64::from(today)));
        }
        let _ = s.to_string();
    }
}
