//! Phones running the advertise/scan cycle on the simulated air.

use greenlight_ble::sim::{PhoneId, SimulatedAir};
use greenlight_ble::Radio;
use greenlight_daemon::radio_loop::{DutyCycle, RadioLoop};
use greenlight_protocol::{DayNumber, RegionId, Timestamp};
use std::collections::HashSet;

struct Phone {
    cycle: RadioLoop<greenlight_ble::sim::SimRadio>,
    phone: greenlight_daemon::Phone,
    wake: Timestamp,
    _dir: tempfile::TempDir,
}

fn phone(air: &SimulatedAir, id: u32, position: (f64, f64), start: Timestamp) -> Phone {
    let dir = tempfile::tempdir().expect("temp dir");
    let region = RegionId::new("DEMO").expect("valid region");
    let phone = greenlight_daemon::Phone::open(dir.path(), region, start.day()).expect("opens");
    let cycle = RadioLoop::new(
        air.add_phone(PhoneId(id), position, -8),
        DutyCycle::default(),
    );
    Phone {
        cycle,
        phone,
        wake: start,
        _dir: dir,
    }
}

/// Runs every phone's cycle in simulated time until `end`.
async fn run(air: &SimulatedAir, phones: &mut [Phone], end: Timestamp) {
    loop {
        let (i, at) = phones
            .iter()
            .enumerate()
            .map(|(i, p)| (i, p.wake))
            .min_by_key(|(_, t)| *t)
            .expect("phones");
        if at >= end {
            return;
        }
        air.set_time(at);
        let p = &mut phones[i];
        p.wake = p.cycle.step(&mut p.phone, at).await.expect("step");
        assert!(p.wake > at, "the cycle always moves forward");
    }
}

#[tokio::test]
async fn two_phones_an_hour_apart_in_time_hear_each_others_rotating_ephids() {
    let start = Timestamp(u64::from(DayNumber(20_415).0) * 86_400 + 9 * 3600);
    let air = SimulatedAir::new(7);
    let mut phones = vec![
        phone(&air, 1, (0.0, 0.0), start),
        phone(&air, 2, (1.5, 0.0), start),
        phone(&air, 3, (200.0, 0.0), start),
    ];
    run(&air, &mut phones, Timestamp(start.0 + 3600)).await;
    let heard_by = |i: usize| {
        phones[i]
            .phone
            .sightings_since(start.day())
            .expect("reads")
            .sightings
    };
    let alice = heard_by(0);
    // One scan a minute for an hour; Bob is heard in every scan but the
    // very first, which Alice makes before Bob's first advertisement.
    assert_eq!(phones[0].cycle.stats.scans, 60);
    assert_eq!(alice.len(), 59);
    let ephids: HashSet<_> = alice.iter().map(|s| s.ephid).collect();
    assert_eq!(ephids.len(), 4, "Bob's EphID rotates every 15 minutes");
    // 1.5 m apart: −8 dBm − 55 dB − 4.4 dB, ± 3 dB calibration; shadowing averages out.
    let mean = alice.iter().map(|s| f64::from(s.rssi.0)).sum::<f64>() / alice.len() as f64;
    assert!((-72.0..=-62.0).contains(&mean), "mean RSSI {mean}");
    assert!(heard_by(2).is_empty(), "Carol is 200 m away");
    let stats = phones[0].cycle.stats;
    assert_eq!(
        (stats.rotations, stats.radio_errors, stats.store_errors),
        (4, 0, 0)
    );
    // What Alice stored is exactly what Bob broadcast: his keys match it.
    let bob_keys = phones[1].phone.keys_for_upload(&[start.day()]);
    let bob_ephids: HashSet<_> = bob_keys[0]
        .1
        .ephid_generator(start.day())
        .all_ephids()
        .into_iter()
        .collect();
    assert!(ephids.is_subset(&bob_ephids));
}

#[tokio::test]
async fn foreign_advertisements_are_counted_and_the_cycle_goes_on() {
    let start = Timestamp(u64::from(DayNumber(20_415).0) * 86_400);
    let air = SimulatedAir::new(8);
    let mut phones = vec![
        phone(&air, 1, (0.0, 0.0), start),
        phone(&air, 2, (1.0, 0.0), start),
    ];
    // A nearby device sends Apple/Google exposure-notification frames.
    let gaen = air.add_phone(PhoneId(9), (0.5, 0.0), 0);
    let mut frame = [0u8; 31];
    frame[..8].copy_from_slice(&[3, 3, 0x6F, 0xFD, 23, 0x16, 0x6F, 0xFD]);
    gaen.advertise(&frame).await.expect("advertises");
    run(&air, &mut phones, Timestamp(start.0 + 600)).await;
    let stats = phones[0].cycle.stats;
    assert!(stats.foreign >= 10, "{stats:?}");
    // One Greenlight phone heard per scan, but for the first (see above).
    assert_eq!(stats.stored + 1, stats.scans);
    // The radio disappears (adapter unplugged): counted, no panic, time moves on.
    air.remove_phone(PhoneId(1));
    let p = &mut phones[0];
    let next = p
        .cycle
        .step(&mut p.phone, Timestamp(start.0 + 600))
        .await
        .expect("step");
    assert!(next > Timestamp(start.0 + 600));
    assert!(p.cycle.stats.radio_errors >= 1);
}
