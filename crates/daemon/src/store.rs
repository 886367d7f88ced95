//! The phone's sighting store: SQLite (WAL, synchronous=FULL, so `kill -9`
//! loses nothing committed and corrupts nothing), each row sealed with
//! ChaCha20-Poly1305 under a key kept in a 0600 file beside the database.
//! Everything older than the retention period is deleted.
//!
//! A row holds `(day, nonce, ciphertext)`. The plaintext is
//! `EphID (16) ‖ encrypted metadata (4) ‖ time (u64 BE) ‖ RSSI (i8)`; the
//! row's day is authenticated as associated data, so a row moved to
//! another day fails to open. The phone's own daily keys and its other
//! personal records (matched exposures, check-ins, its own positive test)
//! are sealed the same way; records also authenticate their kind. Public
//! settings (server cursors, the signed policy) are kept in the clear.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use greenlight_protocol::time::RETENTION_DAYS;
use greenlight_protocol::{
    DailyKey, DayNumber, EncryptedMetadata, EphId, Rssi, Sighting, Timestamp,
};
use rand::RngCore;
use rusqlite::{params, Connection};
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

/// Bytes of one sealed sighting's plaintext.
const PLAINTEXT_LEN: usize = 16 + 4 + 8 + 1;

/// What can go wrong with the store; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused an operation (full disk, permissions, a locked file).
    #[error("sighting store {path}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// SQLite's error.
        source: rusqlite::Error,
    },
    /// The key file cannot be read or created.
    #[error("store key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

/// A sighting store opened on a directory.
pub struct SightingStore {
    conn: Connection,
    cipher: ChaCha20Poly1305,
    path: PathBuf,
}

impl std::fmt::Debug for SightingStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SightingStore {{ path: {}, key: <redacted> }}",
            self.path.display()
        )
    }
}

/// What a read found.
#[derive(Debug, Default)]
pub struct ReadOutcome {
    /// Sightings that opened, in time order.
    pub sightings: Vec<Sighting>,
    /// Rows that failed to open (corrupted, or sealed under another key):
    /// skipped, never guessed at.
    pub unreadable: usize,
}

fn load_key(path: &Path) -> Result<Zeroizing<[u8; 32]>, StoreError> {
    let err = |reason: String| StoreError::Key {
        path: path.to_owned(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let mode = std::fs::metadata(path)
                .map_err(|e| err(e.to_string()))?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(err(format!(
                    "readable by others (mode {:o}); run chmod 600",
                    mode & 0o777
                )));
            }
            let key: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| err(format!("{} bytes, expected 32", bytes.len())))?;
            Ok(Zeroizing::new(key))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut key = Zeroizing::new([0u8; 32]);
            rand::rngs::OsRng.fill_bytes(key.as_mut());
            let tmp = path.with_extension("tmp");
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| err(format!("cannot create: {e}")))?;
            f.write_all(key.as_ref())
                .and_then(|_| f.sync_all())
                .map_err(|e| err(format!("cannot write: {e}")))?;
            std::fs::rename(&tmp, path).map_err(|e| err(format!("cannot create: {e}")))?;
            Ok(key)
        }
        Err(e) => Err(err(e.to_string())),
    }
}

/// A stored row as read: day, nonce and ciphertext, not yet checked.
type SealedRow = (i64, Vec<u8>, Vec<u8>);

/// Reads `(day, nonce, sealed)` loosely: a value of the wrong type (a
/// corrupted row) becomes one that fails to open, rather than failing the
/// whole read.
fn loose_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<SealedRow> {
    let blob = |i| {
        r.get_ref(i)
            .map(|v| v.as_blob().map(<[u8]>::to_vec).unwrap_or_default())
    };
    Ok((r.get_ref(0)?.as_i64().unwrap_or(-1), blob(1)?, blob(2)?))
}

/// The kinds of sealed record the phone keeps besides sightings and keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecordKind {
    /// A matched exposure (JSON).
    Exposure,
    /// A daily check-in (the day; empty body).
    CheckIn,
    /// The user's own positive test (the test day; empty body).
    PositiveTest,
}

impl RecordKind {
    fn name(self) -> &'static str {
        match self {
            RecordKind::Exposure => "exposure",
            RecordKind::CheckIn => "checkin",
            RecordKind::PositiveTest => "positive_test",
        }
    }
}

/// One opened record.
#[derive(Debug)]
pub struct Record {
    /// The day it belongs to (authenticated).
    pub day: DayNumber,
    /// Its body.
    pub plain: Zeroizing<Vec<u8>>,
}

/// Associated data of a sighting or daily-key row: its day.
fn day_aad(day: u32) -> Vec<u8> {
    day.to_be_bytes().to_vec()
}

/// Associated data of a record row: its kind and day, so a row cannot be
/// moved to another kind or day.
fn record_aad(kind: RecordKind, day: u32) -> Vec<u8> {
    let mut aad = kind.name().as_bytes().to_vec();
    aad.push(0);
    aad.extend_from_slice(&day.to_be_bytes());
    aad
}

/// Seals `plain` under a fresh random nonce with `aad` authenticated.
fn seal(cipher: &ChaCha20Poly1305, aad: &[u8], plain: &[u8]) -> ([u8; 12], Vec<u8>) {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
        .expect("ChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
    (nonce, sealed)
}

/// Opens a row sealed by [`seal`]; `None` if anything about it is wrong.
/// `aad` gets the row's day, or `None` for a day out of range.
fn unseal(
    cipher: &ChaCha20Poly1305,
    aad: impl Fn(u32) -> Vec<u8>,
    day: i64,
    nonce: &[u8],
    sealed: &[u8],
) -> Option<Zeroizing<Vec<u8>>> {
    let day = u32::try_from(day).ok()?;
    let nonce: [u8; 12] = nonce.try_into().ok()?;
    cipher
        .decrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: sealed,
                aad: &aad(day),
            },
        )
        .ok()
        .map(Zeroizing::new)
}

impl SightingStore {
    /// Opens (creating on first use) `dir/sightings.db` and `dir/store.key`.
    pub fn open(dir: &Path) -> Result<SightingStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Key {
            path: dir.to_owned(),
            reason: format!("cannot create directory: {e}"),
        })?;
        let key = load_key(&dir.join("store.key"))?;
        let path = dir.join("sightings.db");
        let db = |source| StoreError::Database {
            path: path.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(db)?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL;
             PRAGMA synchronous = FULL;
             PRAGMA busy_timeout = 5000;
             CREATE TABLE IF NOT EXISTS sightings (
                 id INTEGER PRIMARY KEY,
                 day INTEGER NOT NULL,
                 nonce BLOB NOT NULL,
                 sealed BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS sightings_day ON sightings (day);
             CREATE TABLE IF NOT EXISTS daily_keys (
                 day INTEGER PRIMARY KEY,
                 nonce BLOB NOT NULL,
                 sealed BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS records (
                 id INTEGER PRIMARY KEY,
                 kind TEXT NOT NULL,
                 day INTEGER NOT NULL,
                 nonce BLOB NOT NULL,
                 sealed BLOB NOT NULL
             );
             CREATE INDEX IF NOT EXISTS records_kind ON records (kind);
             CREATE TABLE IF NOT EXISTS settings (
                 name TEXT PRIMARY KEY,
                 value BLOB NOT NULL
             );",
        )
        .map_err(db)?;
        Ok(SightingStore {
            conn,
            cipher: ChaCha20Poly1305::new(Key::from_slice(key.as_ref())),
            path,
        })
    }

    /// Caps the database at about `bytes` (SQLite's `max_page_count`): a
    /// phone can bound what Greenlight takes of its storage. Past the cap,
    /// writes fail as on a full disk — typed errors, nothing already
    /// stored is lost — until expiry frees space. Returns the cap in bytes.
    pub fn limit_size(&mut self, bytes: u64) -> Result<u64, StoreError> {
        let page: i64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(self.db())?;
        let pages = (bytes / page.max(1) as u64).max(1);
        let set: i64 = self
            .conn
            .query_row(&format!("PRAGMA max_page_count = {pages}"), [], |r| {
                r.get(0)
            })
            .map_err(self.db())?;
        Ok(set as u64 * page as u64)
    }

    /// Whether an error means the disk (or the store's cap) is full.
    pub fn is_full(e: &StoreError) -> bool {
        matches!(
            e,
            StoreError::Database {
                source: rusqlite::Error::SqliteFailure(f, _),
                ..
            } if f.code == rusqlite::ErrorCode::DiskFull
        )
    }

    fn db(&self) -> impl Fn(rusqlite::Error) -> StoreError + '_ {
        move |source| StoreError::Database {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores sightings in one transaction: all or none.
    pub fn record(&mut self, sightings: &[Sighting]) -> Result<(), StoreError> {
        let path = self.path.clone();
        let db = move |source| StoreError::Database {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(&db)?;
        {
            let mut insert = tx
                .prepare_cached("INSERT INTO sightings (day, nonce, sealed) VALUES (?1, ?2, ?3)")
                .map_err(&db)?;
            for s in sightings {
                let mut plain = Zeroizing::new([0u8; PLAINTEXT_LEN]);
                plain[..16].copy_from_slice(&s.ephid.0);
                plain[16..20].copy_from_slice(&s.metadata.0);
                plain[20..28].copy_from_slice(&s.at.0.to_be_bytes());
                plain[28] = s.rssi.0.to_be_bytes()[0];
                let day = s.at.day();
                let (nonce, sealed) = seal(&self.cipher, &day_aad(day.0), plain.as_ref());
                insert
                    .execute(params![i64::from(day.0), nonce.as_slice(), sealed])
                    .map_err(&db)?;
            }
        }
        tx.commit().map_err(&db)
    }

    /// Every sighting from `from_day` on, opened; unreadable rows are counted.
    pub fn sightings_since(&self, from_day: DayNumber) -> Result<ReadOutcome, StoreError> {
        let mut out = ReadOutcome::default();
        for (day, nonce, sealed) in self.sealed_rows("sightings", from_day)? {
            match self.open_row(day, &nonce, &sealed) {
                Some(s) => out.sightings.push(s),
                None => out.unreadable += 1,
            }
        }
        out.sightings.sort_by_key(|s| s.at);
        Ok(out)
    }

    fn open_row(&self, day: i64, nonce: &[u8], sealed: &[u8]) -> Option<Sighting> {
        let plain = unseal(&self.cipher, day_aad, day, nonce, sealed)?;
        if plain.len() != PLAINTEXT_LEN {
            return None;
        }
        let mut ephid = [0u8; 16];
        ephid.copy_from_slice(&plain[..16]);
        let mut metadata = [0u8; 4];
        metadata.copy_from_slice(&plain[16..20]);
        let mut at = [0u8; 8];
        at.copy_from_slice(&plain[20..28]);
        Some(Sighting {
            ephid: EphId(ephid),
            metadata: EncryptedMetadata(metadata),
            at: Timestamp(u64::from_be_bytes(at)),
            rssi: Rssi(i8::from_be_bytes([plain[28]])),
        })
    }

    /// Deletes sightings, daily keys and records older than the retention
    /// period before `today`, in one transaction; returns how many
    /// sightings went.
    pub fn expire(&mut self, today: DayNumber) -> Result<usize, StoreError> {
        let cutoff = i64::from(today.offset(-i64::from(RETENTION_DAYS)).0);
        let path = self.path.clone();
        let db = move |source| StoreError::Database {
            path: path.clone(),
            source,
        };
        let tx = self.conn.transaction().map_err(&db)?;
        let gone = tx
            .execute("DELETE FROM sightings WHERE day < ?1", params![cutoff])
            .map_err(&db)?;
        tx.execute("DELETE FROM daily_keys WHERE day < ?1", params![cutoff])
            .map_err(&db)?;
        tx.execute("DELETE FROM records WHERE day < ?1", params![cutoff])
            .map_err(&db)?;
        tx.commit().map_err(&db)?;
        Ok(gone)
    }

    /// Stores one sealed record of `kind` for `day` (its kind and day are
    /// authenticated).
    pub fn put_record(
        &mut self,
        kind: RecordKind,
        day: DayNumber,
        plain: &[u8],
    ) -> Result<(), StoreError> {
        let (nonce, sealed) = seal(&self.cipher, &record_aad(kind, day.0), plain);
        self.conn
            .execute(
                "INSERT INTO records (kind, day, nonce, sealed) VALUES (?1, ?2, ?3, ?4)",
                params![kind.name(), i64::from(day.0), nonce.as_slice(), sealed],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// Every record of `kind`, opened, with its day, in insertion order;
    /// and how many failed to open (counted, never guessed at).
    pub fn records(&self, kind: RecordKind) -> Result<(Vec<Record>, usize), StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT day, nonce, sealed FROM records WHERE kind = ?1 ORDER BY id")
            .map_err(self.db())?;
        let rows = stmt
            .query_map(params![kind.name()], loose_row)
            .map_err(self.db())?
            .collect::<Result<Vec<SealedRow>, _>>()
            .map_err(self.db())?;
        let (mut out, mut unreadable) = (Vec::new(), 0);
        for (day, nonce, sealed) in rows {
            let aad = |d| record_aad(kind, d);
            match unseal(&self.cipher, aad, day, &nonce, &sealed) {
                Some(plain) => out.push(Record {
                    day: DayNumber(day as u32),
                    plain,
                }),
                None => unreadable += 1,
            }
        }
        Ok((out, unreadable))
    }

    /// Deletes every record of `kind`.
    pub fn delete_records(&mut self, kind: RecordKind) -> Result<usize, StoreError> {
        self.conn
            .execute("DELETE FROM records WHERE kind = ?1", params![kind.name()])
            .map_err(self.db())
    }

    /// A public setting (a server's cursor, the signed policy): stored in
    /// the clear, since it says nothing about the user.
    pub fn setting(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.conn
            .query_row(
                "SELECT value FROM settings WHERE name = ?1",
                params![name],
                |r| r.get::<_, Vec<u8>>(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })
            .map_err(self.db())
    }

    /// Sets a public setting.
    pub fn set_setting(&mut self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO settings (name, value) VALUES (?1, ?2)
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// Deletes every row of every table, compacts the database so no
    /// freed page keeps old ciphertext, and replaces the key file with a
    /// new key: what was stored cannot be read back, even from a copy of
    /// the old file. The store stays usable, empty.
    pub fn wipe(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch(
                "BEGIN;
                 DELETE FROM sightings;
                 DELETE FROM daily_keys;
                 DELETE FROM records;
                 DELETE FROM settings;
                 COMMIT;
                 VACUUM;
                 PRAGMA wal_checkpoint(TRUNCATE);",
            )
            .map_err(self.db())?;
        let key_path = self.key_path();
        std::fs::remove_file(&key_path).map_err(|e| StoreError::Key {
            path: key_path.clone(),
            reason: format!("cannot delete: {e}"),
        })?;
        let key = load_key(&key_path)?;
        self.cipher = ChaCha20Poly1305::new(Key::from_slice(key.as_ref()));
        Ok(())
    }

    fn key_path(&self) -> PathBuf {
        self.path.with_file_name("store.key")
    }

    /// Stores the phone's own daily key for `day`, sealed like sightings
    /// (the day is authenticated). A key already stored for that day is
    /// kept: a day has exactly one key.
    pub fn save_daily_key(&mut self, day: DayNumber, key: &DailyKey) -> Result<(), StoreError> {
        let (nonce, sealed) = seal(&self.cipher, &day_aad(day.0), key.as_bytes());
        self.conn
            .execute(
                "INSERT OR IGNORE INTO daily_keys (day, nonce, sealed) VALUES (?1, ?2, ?3)",
                params![i64::from(day.0), nonce.as_slice(), sealed],
            )
            .map(drop)
            .map_err(self.db())
    }

    /// The phone's own daily keys from `from_day` on; keys that fail to
    /// open are counted, not returned.
    pub fn daily_keys_since(
        &self,
        from_day: DayNumber,
    ) -> Result<(Vec<(DayNumber, DailyKey)>, usize), StoreError> {
        let (mut keys, mut unreadable) = (Vec::new(), 0);
        for (day, nonce, sealed) in self.sealed_rows("daily_keys", from_day)? {
            let opened = unseal(&self.cipher, day_aad, day, &nonce, &sealed).and_then(|plain| {
                let bytes: [u8; 32] = plain.as_slice().try_into().ok()?;
                Some((
                    DayNumber(u32::try_from(day).ok()?),
                    DailyKey::from_bytes(bytes),
                ))
            });
            match opened {
                Some(k) => keys.push(k),
                None => unreadable += 1,
            }
        }
        Ok((keys, unreadable))
    }

    /// `(day, nonce, sealed)` of every row of `table` from `from_day` on,
    /// in insertion order. A row of the wrong type is corrupt: it is read
    /// loosely so that opening it fails, rather than failing the whole read.
    fn sealed_rows(
        &self,
        table: &'static str,
        from_day: DayNumber,
    ) -> Result<Vec<SealedRow>, StoreError> {
        let sql = format!("SELECT day, nonce, sealed FROM {table} WHERE day >= ?1 ORDER BY rowid");
        let mut stmt = self.conn.prepare_cached(&sql).map_err(self.db())?;
        let rows = stmt
            .query_map(params![i64::from(from_day.0)], loose_row)
            .map_err(self.db())?;
        rows.collect::<Result<_, _>>().map_err(self.db())
    }

    /// Number of stored rows.
    pub fn len(&self) -> Result<usize, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM sightings", [], |r| r.get::<_, i64>(0))
            .map(|n| n as usize)
            .map_err(self.db())
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.len()? == 0)
    }
}
