//! A day in Greenlight, told with the real protocol code and no server:
//! four phones meet, one owner tests positive, the authority signs a batch,
//! every phone matches locally and shows its colour with the reason, and the
//! quarantines end after daily check-ins.
//!
//! Run: `cargo run -p greenlight-protocol --example story`

use greenlight_protocol::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// A phone: its own daily key and what it heard.
struct Phone {
    name: &'static str,
    key: DailyKey,
    heard: Vec<Sighting>,
}

/// Log-distance path loss: RSSI at `metres` for a phone radiating `tx` dBm.
fn rssi_at(tx: i8, metres: f64, rng: &mut ChaCha20Rng) -> Rssi {
    let loss = 55.0 + 25.0 * metres.max(0.1).log10() + rng.gen_range(-3.0..3.0);
    Rssi((f64::from(tx) - loss).round().clamp(-127.0, 20.0) as i8)
}

/// `listener` hears `speaker` at `metres` once a minute for `minutes` from `start`.
fn meet(
    speaker: &Phone,
    listener: &mut Phone,
    start: Timestamp,
    minutes: u64,
    metres: f64,
    rng: &mut ChaCha20Rng,
) {
    const TX: i8 = -5;
    for m in 0..minutes {
        let at = Timestamp(start.0 + 60 * m);
        let generator = speaker.key.ephid_generator(at.day());
        let radio_bytes = encode_advertisement(
            &generator.beacon(at.epoch().index(), Metadata { tx_power_dbm: TX }),
        );
        let beacon =
            decode_advertisement(&radio_bytes).expect("a Greenlight advertisement decodes");
        listener.heard.push(Sighting {
            ephid: beacon.ephid,
            metadata: beacon.metadata,
            at,
            rssi: rssi_at(TX, metres, rng),
        });
    }
}

fn main() -> Result<(), Error> {
    let mut rng = ChaCha20Rng::seed_from_u64(2026);
    let region = RegionId::new("CH-ZH")?;
    let monday = DayNumber::from_date(::time::macros::date!(2026 - 11 - 23)).expect("after 1970");
    let at = |day: DayNumber, hh: u64, mm: u64| Timestamp(day.start().0 + hh * 3600 + mm * 60);
    let mut phone = |name| Phone {
        name,
        key: DailyKey::generate(&mut rng),
        heard: Vec::new(),
    };
    let (alice, mut bob, mut carol, mut dan) =
        (phone("Alice"), phone("Bob"), phone("Carol"), phone("Dan"));
    let mut rng = ChaCha20Rng::seed_from_u64(7);

    println!("== {monday}: people meet ==");
    println!("Bob shares an office with Alice: 40 minutes at 1 m.");
    meet(&alice, &mut bob, at(monday, 9, 0), 40, 1.0, &mut rng);
    println!("Carol sits near Alice on the bus: 12 minutes at 2 m.");
    meet(&alice, &mut carol, at(monday, 8, 10), 12, 2.0, &mut rng);
    println!("Dan passes Alice in a corridor: 1 minute at 3 m; he spends an hour with Bob.");
    meet(&alice, &mut dan, at(monday, 12, 0), 1, 3.0, &mut rng);
    meet(&bob, &mut dan, at(monday, 13, 0), 60, 1.0, &mut rng);

    let tuesday = monday.offset(1);
    println!("\n== {tuesday}: Alice tests positive and uploads Monday's key ==");
    let authority = ed25519_dalek::SigningKey::generate(&mut rng);
    let policy = ExposurePolicy::recommended(region.clone());
    // The server pads the batch with random keys that look like real ones.
    let mut keys = vec![PublishedKey {
        day: monday,
        key: alice.key.clone(),
        days_since_onset: Some(-2),
        origin: 0,
    }];
    keys.extend((0..999).map(|_| PublishedKey {
        day: monday.offset(-rng.gen_range(0..14)),
        key: DailyKey::generate(&mut rng),
        days_since_onset: Some(rng.gen_range(-2..5)),
        origin: 0,
    }));
    let batch = KeyBatch {
        region: region.clone(),
        number: BatchNumber(1),
        start: tuesday.start(),
        end: tuesday.offset(1).start(),
        origins: vec![region.clone()],
        payload: BatchPayload::Compact(keys),
    };
    let batch_file = batch.sign(&authority)?;
    let policy_file = policy.sign(&authority)?;
    println!("The authority publishes batch 1 ({} bytes, 1,000 keys with padding) and its policy ({} bytes), both signed.", batch_file.len(), policy_file.len());

    let trusted = authority.verifying_key();
    let policy = ExposurePolicy::verify(&policy_file, &region, &trusted)?;
    let index = MatchIndex::prepare(&KeyBatch::verify(&batch_file, &region, &trusted)?);
    let options = MatchOptions::from(&policy);
    let mut phones = [bob, carol, dan];
    let exposures: Vec<Vec<Exposure>> = phones
        .iter()
        .map(|p| {
            index.match_windows(
                &group_into_windows(&p.heard, &options.window),
                &options,
                tuesday,
            )
        })
        .collect();
    for (p, e) in phones.iter().zip(&exposures) {
        let status = evaluate(
            &policy,
            &StatusInput {
                today: tuesday,
                positive_test: None,
                exposures: e,
                checkins: &[],
            },
        );
        println!(
            "\n{}'s phone heard {} beacons, matched {} window(s):\n{status}",
            p.name,
            p.heard.len(),
            e.len()
        );
    }
    let status = evaluate(
        &policy,
        &StatusInput {
            today: tuesday,
            positive_test: Some(PositiveTest { test_day: tuesday }),
            exposures: &[],
            checkins: &[],
        },
    );
    println!("{}'s phone:\n{status}", alice.name);

    println!("== Two weeks of daily check-ins later ==");
    for (p, e) in phones.iter_mut().zip(&exposures) {
        let checkins: Vec<DayNumber> = (tuesday.0..tuesday.0 + 20).map(DayNumber).collect();
        for day in [monday.offset(8), monday.offset(14)] {
            let s = evaluate(
                &policy,
                &StatusInput {
                    today: day,
                    positive_test: None,
                    exposures: e,
                    checkins: &checkins,
                },
            );
            print!("{day} {}: {}", p.name, s.colour);
            println!(
                "{}",
                s.green_on
                    .map(|d| format!(" until {d}"))
                    .unwrap_or_default()
            );
        }
    }
    println!("\nWhat the server learned: 1,000 daily keys for batch 1 — no names, no contacts, no colours.");
    Ok(())
}
