//! Sighting store figures on this disk: `cargo bench -p greenlight-daemon --bench store`.
//! Ingest rate (one transaction per scan of 50 sightings, and per single
//! sighting) and the store's size per day for a busy phone: 500 distinct
//! EphIDs a day, each heard once a minute for 5 minutes.

use greenlight_daemon::store::SightingStore;
use greenlight_protocol::{DayNumber, EncryptedMetadata, EphId, Rssi, Sighting, Timestamp};
use std::time::Instant;

fn sightings(day: u32, n: usize) -> Vec<Sighting> {
    (0..n)
        .map(|i| Sighting {
            ephid: EphId(rand::random()),
            metadata: EncryptedMetadata(rand::random()),
            at: Timestamp(u64::from(day) * 86_400 + (i as u64 * 30) % 86_400),
            rssi: Rssi(-60),
        })
        .collect()
}

fn size(dir: &std::path::Path) -> u64 {
    ["sightings.db", "sightings.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(dir.join(f)).ok())
        .map(|m| m.len())
        .sum()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = SightingStore::open(dir.path()).expect("opens");
    let batch = sightings(20_000, 50_000);
    let t = Instant::now();
    for chunk in batch.chunks(50) {
        store.record(chunk).expect("records");
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "ingest, 50 sightings per transaction (one scan): {:.0} sightings/s ({} in {s:.2} s)",
        50_000.0 / s,
        batch.len()
    );
    let t = Instant::now();
    for one in batch.iter().take(2_000) {
        store.record(std::slice::from_ref(one)).expect("records");
    }
    let s = t.elapsed().as_secs_f64();
    println!(
        "ingest, one sighting per transaction: {:.0} sightings/s",
        2_000.0 / s
    );
    let t = Instant::now();
    let read = store.sightings_since(DayNumber(0)).expect("reads");
    println!(
        "read and open {} sightings: {:.3} s",
        read.sightings.len(),
        t.elapsed().as_secs_f64()
    );

    let busy = tempfile::tempdir().expect("temp dir");
    let mut store = SightingStore::open(busy.path()).expect("opens");
    for day in 0..14u32 {
        let per_day: Vec<Sighting> = sightings(20_000 + day, 500)
            .into_iter()
            .flat_map(|s| {
                (0..5u64).map(move |m| Sighting {
                    at: Timestamp(s.at.0 + 60 * m),
                    ..s
                })
            })
            .collect();
        for scan in per_day.chunks(50) {
            store.record(scan).expect("records");
        }
    }
    drop(store);
    let bytes = size(busy.path());
    println!("busy phone (500 EphIDs/day × 5 sightings): {:.0} KiB for 14 days, {:.0} KiB per day, {:.0} bytes per sighting",
        bytes as f64 / 1024.0, bytes as f64 / 1024.0 / 14.0, bytes as f64 / (14.0 * 2_500.0));
}
