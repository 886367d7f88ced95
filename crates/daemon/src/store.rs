//! The phone's sighting store: SQLite (WAL, synchronous=FULL, so `kill -9`
//! loses nothing committed and corrupts nothing), each row sealed with
//! ChaCha20-Poly1305 under a key kept in a 0600 file beside the database.
//! Everything older than the retention period is deleted.
//!
//! A row holds `(day, nonce, ciphertext)`. The plaintext is
//! `EphID (16) ‖ encrypted metadata (4) ‖ time (u64 BE) ‖ RSSI (i8)`; the
//! row's day is authenticated as associated data, so a row moved to
//! another day fails to open.

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

/// Seals `plain` for a row of `day` under a fresh random nonce; the day is
/// authenticated as associated data.
fn seal(cipher: &ChaCha20Poly1305, day: DayNumber, plain: &[u8]) -> ([u8; 12], Vec<u8>) {
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let sealed = cipher
        .encrypt(
            Nonce::from_slice(&nonce),
            Payload {
                msg: plain,
                aad: &day.0.to_be_bytes(),
            },
        )
        .expect("ChaCha20-Poly1305 encrypts any message shorter than 256 GiB");
    (nonce, sealed)
}

/// Opens a row sealed by [`seal`]; `None` if anything about it is wrong.
fn unseal(
    cipher: &ChaCha20Poly1305,
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
                aad: &day.to_be_bytes(),
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
             );",
        )
        .map_err(db)?;
        Ok(SightingStore {
            conn,
            cipher: ChaCha20Poly1305::new(Key::from_slice(key.as_ref())),
            path,
        })
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
                let (nonce, sealed) = seal(&self.cipher, day, plain.as_ref());
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
        let plain = unseal(&self.cipher, day, nonce, sealed)?;
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

    /// Deletes sightings and daily keys older than the retention period
    /// before `today`; returns how many sightings went.
    pub fn expire(&mut self, today: DayNumber) -> Result<usize, StoreError> {
        let cutoff = today.offset(-i64::from(RETENTION_DAYS));
        self.conn
            .execute(
                "DELETE FROM sightings WHERE day < ?1",
                params![i64::from(cutoff.0)],
            )
            .map_err(self.db())
    }

    /// Stores the phone's own daily key for `day`, sealed like sightings
    /// (the day is authenticated). A key already stored for that day is
    /// kept: a day has exactly one key.
    pub fn save_daily_key(&mut self, day: DayNumber, key: &DailyKey) -> Result<(), StoreError> {
        let (nonce, sealed) = seal(&self.cipher, day, key.as_bytes());
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
            let opened = unseal(&self.cipher, day, &nonce, &sealed).and_then(|plain| {
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
            .query_map(params![i64::from(from_day.0)], |r| {
                let blob = |i| {
                    r.get_ref(i)
                        .map(|v| v.as_blob().map(<[u8]>::to_vec).unwrap_or_default())
                };
                Ok((r.get_ref(0)?.as_i64().unwrap_or(-1), blob(1)?, blob(2)?))
            })
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
