//! The encrypted sighting store against bad keys, tampering and time.

use greenlight_daemon::store::{SightingStore, StoreError};
use greenlight_protocol::{DayNumber, EncryptedMetadata, EphId, Rssi, Sighting, Timestamp};
use std::os::unix::fs::PermissionsExt;

fn sighting(i: u8, day: u32) -> Sighting {
    Sighting {
        ephid: EphId(std::array::from_fn(|k| {
            (usize::from(i) * 31 + k * 7) as u8 ^ 0x5A
        })),
        metadata: EncryptedMetadata([i, 1, 2, 3]),
        at: Timestamp(u64::from(day) * 86_400 + u64::from(i) * 60),
        rssi: Rssi(-(i as i8 % 100)),
    }
}

fn raw(dir: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open(dir.join("sightings.db")).expect("raw connection")
}

#[test]
fn sightings_round_trip_under_a_private_key_file() {
    let dir = tempfile::tempdir().expect("temp dir");
    let written: Vec<Sighting> = (0..50).map(|i| sighting(i, 20_000)).collect();
    {
        let mut store = SightingStore::open(dir.path()).expect("opens");
        store.record(&written).expect("records");
    }
    let mode = std::fs::metadata(dir.path().join("store.key"))
        .expect("key exists")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let store = SightingStore::open(dir.path()).expect("reopens");
    let read = store.sightings_since(DayNumber(20_000)).expect("reads");
    assert_eq!(read.unreadable, 0);
    assert_eq!(read.sightings, written);
    // At rest, no EphID appears in the clear.
    let db = std::fs::read(dir.path().join("sightings.db")).expect("db file");
    let wal = std::fs::read(dir.path().join("sightings.db-wal")).unwrap_or_default();
    for s in &written {
        assert!(
            !db.windows(16).any(|w| w == s.ephid.0) && !wal.windows(16).any(|w| w == s.ephid.0)
        );
    }
}

#[test]
fn tampered_moved_or_foreign_rows_are_skipped_not_guessed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = SightingStore::open(dir.path()).expect("opens");
    store
        .record(&(0..10).map(|i| sighting(i, 20_000)).collect::<Vec<_>>())
        .expect("records");
    let conn = raw(dir.path());
    conn.execute(
        "UPDATE sightings SET sealed = X'00' || substr(sealed, 2) WHERE id = 1",
        [],
    )
    .expect("tamper into text");
    conn.execute(
        "UPDATE sightings SET sealed = zeroblob(45) WHERE id = 4",
        [],
    )
    .expect("zeroed");
    conn.execute("UPDATE sightings SET day = 20001 WHERE id = 2", [])
        .expect("move");
    conn.execute("UPDATE sightings SET nonce = X'01' WHERE id = 3", [])
        .expect("short nonce");
    let read = store.sightings_since(DayNumber(19_000)).expect("reads");
    assert_eq!((read.sightings.len(), read.unreadable), (6, 4));
    drop(store);
    // Another key opens nothing, and says so.
    std::fs::write(dir.path().join("store.key"), [9u8; 32]).expect("replace key");
    let store = SightingStore::open(dir.path()).expect("opens");
    let read = store.sightings_since(DayNumber(19_000)).expect("reads");
    assert_eq!((read.sightings.len(), read.unreadable), (0, 10));
}

#[test]
fn bad_key_files_are_refused_with_a_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    drop(SightingStore::open(dir.path()).expect("opens"));
    let key = dir.path().join("store.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let err = SightingStore::open(dir.path()).expect_err("world-readable key");
    assert!(
        matches!(&err, StoreError::Key { reason, .. } if reason.contains("chmod 600")),
        "{err}"
    );
    std::fs::write(&key, [1u8; 7]).expect("truncate");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let err = SightingStore::open(dir.path()).expect_err("short key");
    assert!(err.to_string().contains("7 bytes, expected 32"), "{err}");
}

#[test]
fn a_corrupted_database_file_is_an_error_not_a_crash() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("sightings.db"),
        b"this is not a database, just text that fills the header",
    )
    .expect("write");
    let err = SightingStore::open(dir.path()).expect_err("not a database");
    assert!(matches!(err, StoreError::Database { .. }), "{err}");
}

#[test]
fn everything_past_fourteen_days_is_deleted() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = SightingStore::open(dir.path()).expect("opens");
    store
        .record(&[
            sighting(1, 20_000),
            sighting(2, 20_005),
            sighting(3, 20_014),
        ])
        .expect("records");
    assert_eq!(
        store.expire(DayNumber(20_014)).expect("expires"),
        0,
        "day 20000 is exactly 14 days old"
    );
    assert_eq!(store.expire(DayNumber(20_015)).expect("expires"), 1);
    assert_eq!(store.len().expect("len"), 2);
    assert_eq!(store.expire(DayNumber(20_100)).expect("expires"), 2);
    assert!(store.is_empty().expect("len"));
}

#[test]
fn daily_keys_are_fresh_per_day_persist_and_expire() {
    use greenlight_daemon::keyring::KeyRing;
    use greenlight_protocol::{decode_advertisement, Metadata};
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = rand::rngs::OsRng;
    let day = DayNumber(20_000);
    let noon = Timestamp(u64::from(day.0) * 86_400 + 12 * 3600);
    let meta = Metadata { tx_power_dbm: -8 };
    let (first, next_epoch, tomorrow) = {
        let mut store = SightingStore::open(dir.path()).expect("opens");
        let mut ring = KeyRing::load(&store, day).expect("loads");
        let a = ring
            .advertisement_at(&mut store, noon, meta, &mut rng)
            .expect("advertises");
        assert_eq!(
            ring.advertisement_at(&mut store, Timestamp(noon.0 + 60), meta, &mut rng)
                .expect("same epoch"),
            a
        );
        let b = ring
            .advertisement_at(&mut store, Timestamp(noon.0 + 900), meta, &mut rng)
            .expect("next epoch");
        let c = ring
            .advertisement_at(&mut store, Timestamp(noon.0 + 86_400), meta, &mut rng)
            .expect("tomorrow");
        (a, b, c)
    };
    assert_ne!(first, next_epoch, "the EphID rotates each epoch");
    assert!(decode_advertisement(&tomorrow).is_ok());
    // After a restart the same keys come back: the same advertisement.
    let mut store = SightingStore::open(dir.path()).expect("reopens");
    let mut ring = KeyRing::load(&store, day.offset(1)).expect("loads");
    assert_eq!(
        (ring.days(), ring.unreadable),
        (vec![day, day.offset(1)], 0)
    );
    assert_eq!(
        ring.advertisement_at(&mut store, noon, meta, &mut rng)
            .expect("same day"),
        first
    );
    let upload = ring.keys_for_upload(&[day, day.offset(5)]);
    assert_eq!(upload.len(), 1, "days without a key are skipped");
    let keys = ring.keys_for_upload(&[day, day.offset(1)]);
    assert_ne!(keys[0].1, keys[1].1, "a fresh key each day");
    // Fourteen days on, the first key is gone from the ring and the store.
    store.expire(day.offset(15)).expect("expires");
    ring.expire(day.offset(15));
    assert_eq!(ring.days(), vec![day.offset(1)]);
    let reloaded = KeyRing::load(&store, day.offset(15)).expect("loads");
    assert_eq!(reloaded.days(), vec![day.offset(1)]);
}

#[test]
fn a_full_disk_is_a_typed_error_and_loses_nothing_stored() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = SightingStore::open(dir.path()).expect("opens");
    // A cap a little above what the empty database takes: the disk "fills".
    let used = std::fs::metadata(dir.path().join("sightings.db"))
        .map(|m| m.len())
        .unwrap_or(0);
    store.limit_size(used + 64 * 1024).expect("cap set");
    let mut stored = Vec::new();
    let mut full = None;
    for batch in 0..1000u32 {
        let scan: Vec<Sighting> = (0..50u8)
            .map(|i| Sighting {
                at: Timestamp(20_000 * 86_400 + u64::from(batch) * 60 + u64::from(i)),
                ..sighting(i, 20_000)
            })
            .collect();
        match store.record(&scan) {
            Ok(()) => stored.extend(scan),
            Err(e) => {
                full = Some(e);
                break;
            }
        }
    }
    let e = full.expect("the cap is reached");
    assert!(SightingStore::is_full(&e), "{e}");
    assert!(e.to_string().contains("full"), "{e}");
    // Everything committed before is intact; the failed scan left nothing half-written.
    let read = store.sightings_since(DayNumber(20_000)).expect("reads");
    assert_eq!(read.unreadable, 0);
    assert_eq!(read.sightings.len(), stored.len());
    drop(store);
    let store = SightingStore::open(dir.path()).expect("reopens after a full disk");
    assert_eq!(store.len().expect("counts"), stored.len());
}
