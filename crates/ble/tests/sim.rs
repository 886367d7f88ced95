//! The simulated air as a daemon sees it through the `Radio` trait.

use greenlight_ble::sim::{ChannelModel, PhoneId, SimulatedAir};
use greenlight_ble::{Radio, RadioError};
use greenlight_protocol::{
    decode_advertisement, encode_advertisement, DailyKey, DayNumber, EpochIndex, Metadata,
    Timestamp,
};
use std::time::Duration;

const SCAN: Duration = Duration::from_secs(4);

fn payload(seed: u8, epoch: u8) -> [u8; 31] {
    let g = DailyKey::from_bytes([seed; 32]).ephid_generator(DayNumber(20_415));
    encode_advertisement(&g.beacon(
        EpochIndex::new(epoch).expect("below 96"),
        Metadata { tx_power_dbm: -8 },
    ))
}

#[tokio::test]
async fn near_phones_hear_each_other_with_plausible_rssi() {
    let air = SimulatedAir::new(1);
    air.set_time(Timestamp(1_763_856_000));
    let alice = air.add_phone(PhoneId(1), (0.0, 0.0), -8);
    let bob = air.add_phone(PhoneId(2), (1.0, 0.0), -8);
    alice.advertise(&payload(1, 0)).await.expect("advertises");
    let mut rssi = Vec::new();
    for _ in 0..200 {
        let heard = bob.scan(SCAN).await.expect("scans");
        assert_eq!(heard.len(), 1);
        assert_eq!(
            decode_advertisement(&heard[0].payload).map(|b| b.ephid),
            decode_advertisement(&payload(1, 0)).map(|b| b.ephid)
        );
        assert_eq!(heard[0].at, Timestamp(1_763_856_000));
        rssi.push(f64::from(heard[0].rssi.0));
    }
    let mean = rssi.iter().sum::<f64>() / rssi.len() as f64;
    // −8 dBm − 55 dB at 1 m, ± 3 dB calibration error, shadowing averages out.
    assert!((-67.0..=-59.0).contains(&mean), "mean RSSI {mean}");
    assert!(
        alice.scan(SCAN).await.expect("scans").is_empty(),
        "Bob does not advertise"
    );
}

#[tokio::test]
async fn signal_fades_with_distance_and_vanishes_far_away() {
    let air = SimulatedAir::with_model(
        2,
        ChannelModel {
            shadowing_db: 0.0,
            tx_error_db: 0.0,
            ..ChannelModel::default()
        },
    );
    let speaker = air.add_phone(PhoneId(1), (0.0, 0.0), -8);
    speaker.advertise(&payload(2, 5)).await.expect("advertises");
    let at = |d: f64| {
        let listener = air.add_phone(PhoneId(100 + d as u32), (d, 0.0), -8);
        async move {
            listener
                .scan(SCAN)
                .await
                .expect("scans")
                .first()
                .map(|h| h.rssi.0)
        }
    };
    assert_eq!(at(1.0).await, Some(-63));
    assert_eq!(at(10.0).await, Some(-83));
    assert_eq!(
        at(40.0).await,
        None,
        "−8 − 55 − 32 = −95.04 dBm is below the sensitivity"
    );
}

#[tokio::test]
async fn the_address_rotates_with_the_payload_and_stopping_silences() {
    let air = SimulatedAir::new(3);
    let a = air.add_phone(PhoneId(1), (0.0, 0.0), 0);
    let b = air.add_phone(PhoneId(2), (0.5, 0.0), 0);
    a.advertise(&payload(3, 0)).await.expect("advertises");
    let first = b.scan(SCAN).await.expect("scans")[0].address;
    a.advertise(&payload(3, 0))
        .await
        .expect("same payload again");
    assert_eq!(
        b.scan(SCAN).await.expect("scans")[0].address,
        first,
        "same EphID, same address"
    );
    a.advertise(&payload(3, 1)).await.expect("next epoch");
    assert_ne!(
        b.scan(SCAN).await.expect("scans")[0].address,
        first,
        "new EphID, new address"
    );
    a.stop_advertising().await.expect("stops");
    assert!(b.scan(SCAN).await.expect("scans").is_empty());
    air.remove_phone(PhoneId(1));
    assert_eq!(a.advertise(&payload(3, 2)).await, Err(RadioError::Gone));
}

#[tokio::test]
async fn the_same_seed_gives_the_same_air() {
    async fn run(seed: u64) -> Vec<i8> {
        let air = SimulatedAir::new(seed);
        let a = air.add_phone(PhoneId(1), (0.0, 0.0), -8);
        let b = air.add_phone(PhoneId(2), (2.0, 1.0), -8);
        a.advertise(&payload(4, 0)).await.expect("advertises");
        let mut out = Vec::new();
        for i in 0..20 {
            air.move_phone(PhoneId(2), (2.0 + f64::from(i), 1.0));
            out.extend(b.scan(SCAN).await.expect("scans").iter().map(|h| h.rssi.0));
        }
        out
    }
    assert_eq!(run(9).await, run(9).await);
    assert_ne!(run(9).await, run(10).await);
}
