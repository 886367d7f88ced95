//! Generates the frozen test vectors in `protocol-spec/vectors/` (SPEC §14).
//!
//! Run once: `cargo run -p greenlight-protocol --example gen_vectors -- protocol-spec/vectors`.
//! Existing files are never overwritten unless `--force` is given: the
//! vectors are frozen, and a change to them is a protocol change.
//! Everything is derived from fixed seeds, so a run reproduces them exactly.

use greenlight_protocol::ed25519_dalek::SigningKey;
use greenlight_protocol::*;
use hkdf::Hkdf;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde_json::{json, Value};
use sha2::Sha256;
use std::path::{Path, PathBuf};

fn hex(b: impl AsRef<[u8]>) -> String {
    hex::encode(b)
}

fn index(i: u8) -> EpochIndex {
    EpochIndex::new(i).expect("vector epochs are below 96")
}

fn ephid_vectors(rng: &mut ChaCha20Rng) -> Value {
    let mut keys = vec![DailyKey::from_bytes(std::array::from_fn(|i| i as u8))];
    keys.extend((0..2).map(|_| DailyKey::generate(rng)));
    let days = [DayNumber(0), DayNumber(20_415), DayNumber(20_780)];
    let cases: Vec<Value> = keys
        .iter()
        .zip(days)
        .map(|(key, day)| {
            let mut info = b"greenlight/v1/ephid-key".to_vec();
            info.extend_from_slice(&day.0.to_be_bytes());
            let mut chacha_key = [0u8; 32];
            Hkdf::<Sha256>::from_prk(key.as_bytes())
                .expect("32-byte PRK")
                .expand(&info, &mut chacha_key)
                .expect("32-byte output");
            let g = key.ephid_generator(day);
            let epochs: Vec<Value> = [0u8, 1, 42, 95]
                .iter()
                .zip([-128i8, -8, 0, 20])
                .map(|(&i, tx)| {
                    let m = Metadata { tx_power_dbm: tx };
                    json!({
                        "epoch_index": i,
                        "epoch_number": day.epoch(index(i)).0,
                        "ephid": hex(g.ephid(index(i)).0),
                        "tx_power_dbm": tx,
                        "metadata_plain": hex(m.to_bytes()),
                        "metadata_encrypted": hex(g.encrypt_metadata(index(i), m).0),
                    })
                })
                .collect();
            json!({
                "daily_key": hex(key.as_bytes()),
                "day": day.0,
                "hkdf_info": hex(&info),
                "chacha20_key": hex(chacha_key),
                "epochs": epochs,
            })
        })
        .collect();
    json!({ "description": "SPEC §4: daily key and day -> ChaCha20 key -> EphIDs and encrypted metadata", "cases": cases })
}

fn advertisement_vectors(rng: &mut ChaCha20Rng) -> Value {
    let g = DailyKey::generate(rng).ephid_generator(DayNumber(20_415));
    let beacon = g.beacon(index(7), Metadata { tx_power_dbm: -8 });
    let adv = encode_advertisement(&beacon);
    let mut with_tx_power = vec![2, 0x0A, 0xF8];
    with_tx_power.extend_from_slice(&adv[7..]);
    with_tx_power.extend_from_slice(&[0, 0]);
    let gaen: Vec<u8> = [3u8, 3, 0x6F, 0xFD, 23, 0x16, 0x6F, 0xFD]
        .iter()
        .copied()
        .chain([0u8; 20])
        .collect();
    let mut wrong_len = adv[..11].to_vec();
    wrong_len[7] = 20;
    wrong_len.extend_from_slice(&[0u8; 17]);
    json!({
        "description": "SPEC §5: beacon -> 31-byte legacy advertising payload, and payloads decoders must accept or refuse",
        "valid": [{
            "ephid": hex(beacon.ephid.0),
            "metadata_encrypted": hex(beacon.metadata.0),
            "service_data": hex(encode_service_data(&beacon)),
            "advertisement": hex(adv),
            "also_decodes": [hex(&with_tx_power)],
        }],
        "invalid": [
            { "payload": hex(&gaen), "error": "not_greenlight", "why": "Apple/Google 0xFD6F service data" },
            { "payload": hex(&adv[..20]), "error": "truncated", "why": "cut inside the service data structure" },
            { "payload": hex(&wrong_len), "error": "invalid_field", "why": "service data of 17 bytes" },
            { "payload": hex([2u8, 1, 6]), "error": "not_greenlight", "why": "flags only" },
        ],
    })
}

fn epoch_hash_vectors(rng: &mut ChaCha20Rng) -> Value {
    let cases: Vec<Value> = (0..4)
        .map(|i| {
            let ephid = EphId(if i == 0 { [0; 16] } else { rng.gen() });
            let epoch = EpochNumber(if i == 0 { 0 } else { rng.gen_range(1_900_000..2_000_000) });
            json!({ "ephid": hex(ephid.0), "epoch": epoch.0, "epoch_hash": hex(EpochHash::new(&ephid, epoch).0) })
        })
        .collect();
    json!({ "description": "SPEC §7.1: SHA-256(\"greenlight/v1/epoch-hash\" || EphID || u32be(epoch))[0..16]", "cases": cases })
}

fn bloom_vectors(rng: &mut ChaCha20Rng) -> Value {
    let items: Vec<EpochHash> = (0..10).map(|_| EpochHash(rng.gen())).collect();
    let absent: Vec<EpochHash> = (0..10).map(|_| EpochHash(rng.gen())).collect();
    let mut filter = EpochFilter::with_capacity(items.len()).expect("valid size");
    for it in &items {
        filter.insert(it);
    }
    let mut single = EpochFilter::with_capacity(items.len()).expect("valid size");
    single.insert(&items[0]);
    let bits_of_first: Vec<u64> = (0..single.len_bits())
        .filter(|&b| single.bits()[(b / 8) as usize] >> (b % 8) & 1 == 1)
        .collect();
    json!({
        "description": "SPEC §7.2-7.3: Bloom filter with k = 32, fixed seed; bit b is bit (b mod 8), LSB first, of byte b/8",
        "hash_functions": 32,
        "seed": hex(bloom::BLOOM_SEED),
        "capacity": items.len(),
        "bitmap_bytes": filter.bits().len(),
        "items": items.iter().map(|h| hex(h.0)).collect::<Vec<_>>(),
        "bits_set_by_first_item": bits_of_first,
        "bitmap": hex(filter.bits()),
        "absent": absent.iter().filter(|h| !filter.contains(h)).map(|h| hex(h.0)).collect::<Vec<_>>(),
    })
}

fn authority(rng: &mut ChaCha20Rng) -> SigningKey {
    SigningKey::from_bytes(&rng.gen())
}

fn batch_vectors(rng: &mut ChaCha20Rng) -> Value {
    let sk = authority(rng);
    let ch = RegionId::new("CH").expect("valid");
    let de = RegionId::new("DE").expect("valid");
    let keys: Vec<PublishedKey> = (0..3)
        .map(|i| PublishedKey {
            day: DayNumber(20_410 + i),
            key: DailyKey::generate(rng),
            days_since_onset: [Some(-2), None, Some(3)][i as usize],
            origin: [0, 1, 0][i as usize],
        })
        .collect();
    let compact = KeyBatch {
        region: ch.clone(),
        number: BatchNumber(42),
        start: Timestamp(1_763_856_000),
        end: Timestamp(1_763_859_600),
        origins: vec![ch.clone(), de],
        payload: BatchPayload::Compact(keys.clone()),
    };
    let compact_bytes = compact.sign(&sk).expect("valid batch");
    let items: Vec<EpochHash> = (0..5).map(|_| EpochHash(rng.gen())).collect();
    let mut filter = EpochFilter::with_capacity(items.len()).expect("valid size");
    for it in &items {
        filter.insert(it);
    }
    let unlinkable = KeyBatch {
        region: ch.clone(),
        number: BatchNumber(43),
        start: Timestamp(1_763_859_600),
        end: Timestamp(1_763_863_200),
        origins: vec![ch],
        payload: BatchPayload::Unlinkable(filter),
    };
    let unlinkable_bytes = unlinkable.sign(&sk).expect("valid batch");
    let mut tampered = compact_bytes.clone();
    tampered[40] ^= 0x01;
    json!({
        "description": "SPEC §8: signed key batches, compact and unlinkable (Ed25519 is deterministic)",
        "signing_key_seed": hex(sk.to_bytes()),
        "public_key": hex(sk.verifying_key().to_bytes()),
        "compact": {
            "region": "CH", "number": 42, "start": 1_763_856_000u64, "end": 1_763_859_600u64,
            "origins": ["CH", "DE"],
            "keys": keys.iter().map(|k| json!({
                "day": k.day.0, "key": hex(k.key.as_bytes()), "days_since_onset": k.days_since_onset, "origin": k.origin,
            })).collect::<Vec<_>>(),
            "bytes": hex(&compact_bytes),
        },
        "unlinkable": {
            "region": "CH", "number": 43, "start": 1_763_859_600u64, "end": 1_763_863_200u64,
            "origins": ["CH"],
            "items": items.iter().map(|h| hex(h.0)).collect::<Vec<_>>(),
            "bytes": hex(&unlinkable_bytes),
        },
        "invalid": [
            { "bytes": hex(&tampered), "error": "bad_signature", "why": "one bit flipped in the first key record" },
            { "bytes": hex(&compact_bytes[..compact_bytes.len() - 1]), "error": "bad_signature", "why": "last byte cut" },
            { "bytes": hex(b"GLKB\x02"), "error": "unknown_version", "why": "version 2" },
            { "bytes": hex(b"GLPL\x01"), "error": "bad_magic", "why": "a policy is not a batch" },
        ],
    })
}

fn policy_vectors(rng: &mut ChaCha20Rng) -> Value {
    let sk = authority(rng);
    let policy = ExposurePolicy::recommended(RegionId::new("CH").expect("valid"));
    json!({
        "description": "SPEC §9: the recommended policy, signed",
        "signing_key_seed": hex(sk.to_bytes()),
        "public_key": hex(sk.verifying_key().to_bytes()),
        "policy": policy,
        "bytes": hex(policy.sign(&sk).expect("valid policy")),
    })
}

fn status_vectors() -> Value {
    let ch = RegionId::new("CH").expect("valid");
    let policy = ExposurePolicy::recommended(ch.clone());
    let d = DayNumber(20_415);
    let exposure = |day: DayNumber,
                    hour: u64,
                    minutes: u32,
                    attenuation: u8,
                    onset: Option<i8>,
                    matched: DayNumber| {
        let a = Attenuation(attenuation);
        Exposure {
            start: Timestamp(day.start().0 + hour * 3600),
            duration_secs: minutes * 60,
            attenuation: AttenuationStats {
                min: a,
                median: a,
                mean: a,
                max: a,
                samples: minutes,
            },
            tx_power_dbm: Some(-8),
            days_since_onset: onset,
            origin: ch.clone(),
            matched_on: matched,
        }
    };
    let checkins = |from: DayNumber, to: DayNumber, skip: &[u32]| -> Vec<DayNumber> {
        (from.0..to.0)
            .filter(|x| !skip.contains(&(x - from.0)))
            .map(DayNumber)
            .collect()
    };
    let cases = vec![
        (
            "close contact: 20 min near, onset day",
            d.offset(1),
            None,
            vec![exposure(d, 9, 20, 60, Some(0), d.offset(1))],
            checkins(d, d.offset(1), &[]),
        ),
        (
            "weaker contact: 12 min near, 2 days after onset",
            d.offset(1),
            None,
            vec![exposure(d, 9, 12, 60, Some(2), d.offset(1))],
            checkins(d, d.offset(1), &[]),
        ),
        (
            "two windows adding up on one day",
            d.offset(2),
            None,
            vec![
                exposure(d, 9, 5, 50, Some(0), d.offset(1)),
                exposure(d, 17, 5, 50, Some(0), d.offset(1)),
            ],
            checkins(d.offset(1), d.offset(2), &[]),
        ),
        (
            "brief, far and too-early exposures do not count",
            d.offset(1),
            None,
            vec![
                exposure(d, 9, 1, 40, Some(0), d),
                exposure(d, 10, 60, 80, Some(0), d),
                exposure(d, 11, 60, 50, Some(-10), d),
            ],
            vec![],
        ),
        (
            "yellow with two missed check-ins",
            d.offset(7),
            None,
            vec![exposure(d, 9, 12, 60, Some(2), d)],
            checkins(d, d.offset(20), &[3, 4]),
        ),
        (
            "quarantine over, check-ins done",
            d.offset(7),
            None,
            vec![exposure(d, 9, 12, 60, Some(2), d)],
            checkins(d, d.offset(20), &[]),
        ),
        (
            "own positive test",
            d.offset(3),
            Some(PositiveTest { test_day: d }),
            vec![],
            checkins(d, d.offset(3), &[]),
        ),
        (
            "red exposure ended, later yellow still active",
            d.offset(15),
            None,
            vec![
                exposure(d, 9, 20, 60, Some(0), d),
                exposure(d.offset(10), 9, 12, 60, Some(2), d.offset(10)),
            ],
            checkins(d, d.offset(20), &[]),
        ),
        (
            "unlinkable match: unknown onset",
            d.offset(1),
            None,
            vec![Exposure {
                tx_power_dbm: None,
                ..exposure(d, 9, 16, 60, None, d.offset(1))
            }],
            vec![],
        ),
    ];
    let cases: Vec<Value> = cases
        .into_iter()
        .map(|(name, today, positive_test, exposures, checkins)| {
            let s = evaluate(&policy, &StatusInput { today, positive_test, exposures: &exposures, checkins: &checkins });
            let active: Vec<Value> = s.reason.active.iter().map(|q| json!({
                "colour": q.colour, "end": q.end.0, "base_end": q.base_end.0, "notified_on": q.notified_on.0,
                "missed_checkins": q.missed_checkins.iter().map(|d| d.0).collect::<Vec<_>>(),
            })).collect();
            let days = status::exposure_days(&policy, &exposures);
            json!({
                "name": name,
                "today": today.0,
                "positive_test": positive_test,
                "exposures": exposures,
                "checkins": checkins.iter().map(|d| d.0).collect::<Vec<_>>(),
                "expected": {
                    "colour": s.colour,
                    "green_on": s.green_on.map(|d| d.0),
                    "active": active,
                    "ended": s.reason.ended.len(),
                    "ignored_exposures": s.reason.ignored_exposures,
                    "day_weighted_secs": days.iter().map(|d| json!([d.day.0, d.weighted_secs])).collect::<Vec<_>>(),
                    "reason_text": s.to_string(),
                },
            })
        })
        .collect();
    json!({ "description": "SPEC §11: policy + exposures + check-ins + today -> colour, end day and reason", "policy": policy, "cases": cases })
}

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let force = args.iter().any(|a| a == "--force");
    let dir = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../protocol-spec/vectors")
        });
    let mut rng = ChaCha20Rng::seed_from_u64(0x6772_6565_6e6c_6967); // "greenlig"
    let files = [
        ("ephid.json", ephid_vectors(&mut rng)),
        ("advertisement.json", advertisement_vectors(&mut rng)),
        ("epoch_hash.json", epoch_hash_vectors(&mut rng)),
        ("bloom.json", bloom_vectors(&mut rng)),
        ("batch.json", batch_vectors(&mut rng)),
        ("policy.json", policy_vectors(&mut rng)),
        ("status.json", status_vectors()),
    ];
    std::fs::create_dir_all(&dir)?;
    for (name, value) in files {
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(&value).map_err(std::io::Error::other)? + "\n";
        match std::fs::read_to_string(&path) {
            Ok(old) if old == text => println!("{}: unchanged", path.display()),
            Ok(_) if !force => {
                eprintln!("{}: differs from the frozen vectors; not overwritten (a protocol change needs --force and a spec change)", path.display());
                std::process::exit(1);
            }
            _ => {
                std::fs::write(&path, text)?;
                println!("{}: written", path.display());
            }
        }
    }
    Ok(())
}
