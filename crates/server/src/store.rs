//! Durable storage: embedded SQLite by default, PostgreSQL for scale, one
//! code path through sqlx's `Any` driver. Migrations run on open.
//!
//! Keys wait in arrival order only until their batch is published, then are
//! deleted: the shuffled batch file is the only copy, so nothing links an
//! upload's keys beyond its batch. Nothing stored points to a person (no IP
//! address, no device identifier, codes kept as hashes).

use greenlight_protocol::PublicationMode;
use sha2::Digest;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use std::collections::HashSet;
use thiserror::Error;

/// Storage failures, each with what the operator can do about it.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be reached or refused the statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A schema migration failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// A stored value is outside what this server ever writes.
    #[error("corrupt database row: {0}")]
    Corrupt(String),
    /// The URL names a database this server does not support.
    #[error("unsupported database URL {0:?}: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
}

type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The few statements whose SQL differs between the backends: each takes a
/// whole group of rows as one JSON array parameter, so a group commit is a
/// handful of statements whatever its size. (sqlx's SQLite driver binds each
/// `$N` by scanning the statement's parameters: measured here, a 512-row
/// insert cost 38 µs a row, 8 rows 6.8 µs, one row 39 µs. One JSON
/// parameter avoids both costs.)
struct BulkSql {
    spend_tokens: &'static str,
    insert_keys: &'static str,
    delete_published: &'static str,
    /// Records key digests; returns (hex, lower case) those not seen before.
    insert_seen: &'static str,
}

const SQLITE_BULK: BulkSql = BulkSql {
    spend_tokens: "UPDATE tokens SET used = 1 WHERE used = 0 AND expires_at > $1 \
                   AND hash IN (SELECT unhex(value) FROM json_each($2)) RETURNING hash",
    insert_keys: "INSERT INTO keys (mode, day, data, days_since_onset, origin, visited, received_day) \
                  SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]'), unhex(json_extract(value, '$[2]')), \
                  json_extract(value, '$[3]'), json_extract(value, '$[4]'), json_extract(value, '$[5]'), $2 FROM json_each($1)",
    delete_published: "DELETE FROM keys WHERE id IN (SELECT value FROM json_each($1))",
    insert_seen: "INSERT INTO seen_keys (digest, day) \
                  SELECT unhex(json_extract(value, '$[0]')), json_extract(value, '$[1]') FROM json_each($1) \
                  WHERE true ON CONFLICT (digest) DO NOTHING RETURNING lower(hex(digest)) AS d",
};

const POSTGRES_BULK: BulkSql = BulkSql {
    spend_tokens: "UPDATE tokens SET used = 1 WHERE used = 0 AND expires_at > $1 \
                   AND hash IN (SELECT decode(value, 'hex') FROM jsonb_array_elements_text($2::jsonb) AS value) \
                   RETURNING hash",
    insert_keys: "INSERT INTO keys (mode, day, data, days_since_onset, origin, visited, received_day) \
                  SELECT (e->>0)::bigint, (e->>1)::bigint, decode(e->>2, 'hex'), (e->>3)::bigint, e->>4, e->>5, $2 \
                  FROM jsonb_array_elements($1::jsonb) AS e",
    delete_published: "DELETE FROM keys \
                       WHERE id IN (SELECT value::bigint FROM jsonb_array_elements_text($1::jsonb) AS value)",
    insert_seen: "INSERT INTO seen_keys (digest, day) \
                  SELECT decode(e->>0, 'hex'), (e->>1)::bigint FROM jsonb_array_elements($1::jsonb) AS e \
                  ON CONFLICT (digest) DO NOTHING RETURNING encode(digest, 'hex') AS d",
};

/// Which database is behind the pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// A verification code as stored: hashes only.
#[derive(Clone, Debug)]
pub struct NewCode {
    /// Public handle for revocation.
    pub id: String,
    /// SHA-256 of the short numeric code.
    pub short_hash: [u8; 32],
    /// SHA-256 of the long code.
    pub long_hash: [u8; 32],
    /// Kind of test, e.g. "pcr".
    pub test_type: String,
    /// Day of the test.
    pub test_day: u32,
    /// Day symptoms began, if known.
    pub onset_day: Option<u32>,
    /// Creation time, Unix seconds.
    pub created_at: i64,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
}

/// What an upload token authorizes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenGrant {
    /// Day of the test.
    pub test_day: u32,
    /// Day symptoms began, if known.
    pub onset_day: Option<u32>,
    /// Expiry, Unix seconds.
    pub expires_at: i64,
    /// Whether the token has been spent.
    pub used: bool,
}

/// Why redeeming a code failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeRefusal {
    /// No such code.
    Unknown,
    /// Already exchanged for a token.
    Used,
    /// Revoked by the health authority.
    Revoked,
    /// Past its expiry.
    Expired,
}

/// One key or epoch hash to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewKey {
    /// Compact key or unlinkable epoch hash.
    pub mode: PublicationMode,
    /// Compact: the key's day.
    pub day: Option<u32>,
    /// 32-byte key or 16-byte epoch hash.
    pub data: Vec<u8>,
    /// Day of the key relative to onset.
    pub days_since_onset: Option<i8>,
    /// Region that confirmed the case.
    pub origin: String,
    /// Peers to pass the key on to, comma-separated (empty: none).
    pub visited: String,
}

/// One upload waiting for the group commit.
#[derive(Clone, Debug)]
pub struct PendingUpload {
    /// SHA-256 of the token that authorizes it.
    pub token_hash: [u8; 32],
    /// What to store.
    pub keys: Vec<NewKey>,
}

/// Why a committed upload was refused inside the transaction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UploadRefusal {
    /// The token was spent, expired or unknown by commit time.
    TokenSpent,
}

/// A stored key read back for publishing.
#[derive(Clone, Debug)]
pub struct StoredKey {
    /// Row id.
    pub id: i64,
    /// The key's day (compact).
    pub day: Option<u32>,
    /// Key or epoch hash bytes.
    pub data: Vec<u8>,
    /// Days since onset.
    pub days_since_onset: Option<i8>,
    /// Origin region.
    pub origin: String,
    /// Regions the patient named as visited, comma-separated.
    pub visited: String,
}

impl StoredKey {
    /// Whether `peer` is to receive this key: a local key whose patient
    /// named the peer, or any local key when the peer gets everything.
    pub fn goes_to(&self, local: &str, peer: &str, share_all: bool) -> bool {
        self.origin == local && (share_all || self.visited.split(',').any(|r| r == peer))
    }
}

/// What a retention clean-up deleted.
#[derive(Clone, Debug, Default)]
pub struct Expired {
    /// Keys still pending past retention.
    pub keys: u64,
    /// Batch numbers.
    pub batches: Vec<u64>,
    /// Batches made for peers: (peer, number).
    pub federation_batches: Vec<(String, u64)>,
}

/// One publication to record: the batch, the keys it published, the
/// imported filter it republished, and the batches made for peers.
#[derive(Clone, Debug)]
pub struct Publication {
    /// The batch.
    pub record: BatchRecord,
    /// Row ids of the keys it carries.
    pub real_keys: Vec<i64>,
    /// The imported filter it republishes.
    pub filter: Option<i64>,
    /// Batches for peers made from the same keys: (peer region, record).
    pub outbox: Vec<(String, BatchRecord)>,
}

/// What one peer batch brought.
#[derive(Clone, Debug, Default)]
pub struct Import {
    /// Keys (compact), each with its origin region.
    pub keys: Vec<NewKey>,
    /// A whole filter (unlinkable): origin, bits, items.
    pub filter: Option<(String, Vec<u8>, u32)>,
}

/// A published batch's record.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
pub struct BatchRecord {
    /// Sequence number.
    pub number: u64,
    /// Compact or unlinkable.
    #[schema(value_type = String, example = "compact")]
    pub mode: PublicationMode,
    /// Start of the upload period, Unix seconds.
    pub start: u64,
    /// End of the upload period, Unix seconds.
    pub end: u64,
    /// Keys or filter entries, padding included.
    pub entries: u64,
    /// SHA-256 of the file, hex: also its ETag.
    pub sha256: String,
    /// File size in bytes.
    pub size: u64,
}

/// The server's database.
#[derive(Clone, Debug)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
}

impl Store {
    fn bulk(&self) -> &'static BulkSql {
        match self.backend {
            Backend::Sqlite => &SQLITE_BULK,
            Backend::Postgres => &POSTGRES_BULK,
        }
    }

    /// Opens (creating if needed) the database at `url` and migrates it.
    pub async fn open(url: &str) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::UnsupportedUrl(url.to_owned()));
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if backend == Backend::Sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if backend == Backend::Sqlite {
                        // Durability: an acknowledged upload survives power loss.
                        conn.execute("PRAGMA journal_mode = WAL").await?;
                        conn.execute("PRAGMA synchronous = FULL").await?;
                        conn.execute("PRAGMA busy_timeout = 10000").await?;
                    }
                    Ok(())
                })
            })
            .connect(url)
            .await?;
        match backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite").run(&pool).await?,
            Backend::Postgres => sqlx::migrate!("./migrations/postgres").run(&pool).await?,
        }
        Ok(Store { pool, backend })
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Closes the pool, waiting for connections to finish.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Stores a new verification code.
    pub async fn insert_code(&self, c: &NewCode) -> Result<()> {
        sqlx::query(
            "INSERT INTO codes (id, short_hash, long_hash, test_type, test_day, onset_day, created_at, expires_at, state) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'issued')",
        )
        .bind(&c.id)
        .bind(c.short_hash.to_vec())
        .bind(c.long_hash.to_vec())
        .bind(&c.test_type)
        .bind(i64::from(c.test_day))
        .bind(c.onset_day.map(i64::from))
        .bind(c.created_at)
        .bind(c.expires_at)
        .execute(&self.pool)
        .await?;
        self.bump("codes_issued", 1).await
    }

    /// Revokes an unused code; false if there was no such unused code.
    pub async fn revoke_code(&self, id: &str) -> Result<bool> {
        let done =
            sqlx::query("UPDATE codes SET state = 'revoked' WHERE id = $1 AND state = 'issued'")
                .bind(id)
                .execute(&self.pool)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Exchanges a code (by the hash of its short or long form) for an
    /// upload token, atomically: a code works once.
    pub async fn redeem_code(
        &self,
        code_hash: &[u8; 32],
        now: i64,
        token_hash: &[u8; 32],
        token_expires_at: i64,
    ) -> Result<Result<TokenGrant, CodeRefusal>> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "SELECT id, state, expires_at, test_day, onset_day FROM codes WHERE short_hash = $1 OR long_hash = $1",
        )
        .bind(code_hash.to_vec())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(Err(CodeRefusal::Unknown));
        };
        let id: String = row.try_get("id")?;
        let state: String = row.try_get("state")?;
        let expires_at: i64 = row.try_get("expires_at")?;
        match state.as_str() {
            "used" => return Ok(Err(CodeRefusal::Used)),
            "revoked" => return Ok(Err(CodeRefusal::Revoked)),
            _ if expires_at <= now => return Ok(Err(CodeRefusal::Expired)),
            _ => {}
        }
        let test_day: i64 = row.try_get("test_day")?;
        let onset_day: Option<i64> = row.try_get("onset_day")?;
        let updated =
            sqlx::query("UPDATE codes SET state = 'used' WHERE id = $1 AND state = 'issued'")
                .bind(&id)
                .execute(&mut *tx)
                .await?;
        if updated.rows_affected() != 1 {
            return Ok(Err(CodeRefusal::Used));
        }
        sqlx::query("INSERT INTO tokens (hash, test_day, onset_day, expires_at, used) VALUES ($1, $2, $3, $4, 0)")
            .bind(token_hash.to_vec())
            .bind(test_day)
            .bind(onset_day)
            .bind(token_expires_at)
            .execute(&mut *tx)
            .await?;
        bump_in(&mut tx, "codes_redeemed", 1).await?;
        tx.commit().await?;
        Ok(Ok(TokenGrant {
            test_day: test_day as u32,
            onset_day: onset_day.map(|d| d as u32),
            expires_at: token_expires_at,
            used: false,
        }))
    }

    /// The grant behind a token hash, if any.
    pub async fn token(&self, token_hash: &[u8; 32]) -> Result<Option<TokenGrant>> {
        let row =
            sqlx::query("SELECT test_day, onset_day, expires_at, used FROM tokens WHERE hash = $1")
                .bind(token_hash.to_vec())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(TokenGrant {
                test_day: r.try_get::<i64, _>("test_day")? as u32,
                onset_day: r.try_get::<Option<i64>, _>("onset_day")?.map(|d| d as u32),
                expires_at: r.try_get("expires_at")?,
                used: r.try_get::<i64, _>("used")? != 0,
            })
        })
        .transpose()
    }

    /// Group commit: stores many uploads in one transaction (one fsync),
    /// spending each token atomically. Returns one outcome per upload, all
    /// durable once this returns `Ok`.
    pub async fn commit_uploads(
        &self,
        uploads: &[PendingUpload],
        now: i64,
        received_day: u32,
    ) -> Result<Vec<Result<usize, UploadRefusal>>> {
        let mut tx = self.pool.begin().await?;
        // Spend every token of the group in one statement; RETURNING says
        // which were still unspent (SQLite 3.35+, PostgreSQL).
        let hashes: Vec<String> = uploads.iter().map(|u| hex::encode(u.token_hash)).collect();
        let mut spent: HashSet<[u8; 32]> = HashSet::new();
        if !hashes.is_empty() {
            let rows = sqlx::query(self.bulk().spend_tokens)
                .bind(now)
                .bind(serde_json::Value::from(hashes).to_string())
                .fetch_all(&mut *tx)
                .await?;
            for row in rows {
                let hash: Vec<u8> = row.try_get("hash")?;
                if let Ok(h) = <[u8; 32]>::try_from(hash.as_slice()) {
                    spent.insert(h);
                }
            }
        }
        let mut outcomes = Vec::with_capacity(uploads.len());
        let mut rows: Vec<serde_json::Value> = Vec::new();
        let mut stored = 0i64;
        for u in uploads {
            // A token spends once, even if two uploads carry it in one group.
            if spent.remove(&u.token_hash) {
                stored += 1;
                rows.extend(u.keys.iter().map(|k| {
                    serde_json::json!([
                        k.mode.code(),
                        k.day,
                        hex::encode(&k.data),
                        k.days_since_onset,
                        k.origin,
                        k.visited
                    ])
                }));
                outcomes.push(Ok(u.keys.len()));
            } else {
                outcomes.push(Err(UploadRefusal::TokenSpent));
            }
        }
        if !rows.is_empty() {
            sqlx::query(self.bulk().insert_keys)
                .bind(serde_json::Value::Array(rows).to_string())
                .bind(i64::from(received_day))
                .execute(&mut *tx)
                .await?;
        }
        bump_in(&mut tx, "uploads", stored).await?;
        tx.commit().await?;
        Ok(outcomes)
    }

    /// Keys of `mode` waiting for a batch, oldest first, at most as many as
    /// one batch may carry (the rest wait for the next).
    pub async fn pending_keys(&self, mode: PublicationMode) -> Result<Vec<StoredKey>> {
        let rows =
            sqlx::query("SELECT id, day, data, days_since_onset, origin, visited FROM keys WHERE mode = $1 ORDER BY id LIMIT $2")
                .bind(i64::from(mode.code()))
            .bind(i64::from(greenlight_protocol::batch::MAX_BATCH_KEYS))
                .fetch_all(&self.pool)
                .await?;
        rows.iter().map(stored_key).collect()
    }

    /// The next batch number (1 for the first).
    pub async fn next_batch_number(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COALESCE(MAX(number), 0) AS n FROM batches")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? as u64 + 1)
    }

    /// Records a published batch, the batches made from the same keys for
    /// peers, and deletes its keys (and the imported filter it carries, if
    /// any), all in one transaction: from now on only the shuffled batch
    /// files hold them.
    pub async fn record_batch(&self, p: &Publication, now: i64) -> Result<()> {
        let b = &p.record;
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO batches (number, mode, start_time, end_time, entries, real_keys, sha256, size, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(b.number as i64)
        .bind(i64::from(b.mode.code()))
        .bind(b.start as i64)
        .bind(b.end as i64)
        .bind(b.entries as i64)
        .bind(p.real_keys.len() as i64)
        .bind(&b.sha256)
        .bind(b.size as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for (peer, f) in &p.outbox {
            sqlx::query(
                "INSERT INTO federation_batches (peer, number, mode, start_time, end_time, entries, sha256, size, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .bind(peer)
            .bind(f.number as i64)
            .bind(i64::from(f.mode.code()))
            .bind(f.start as i64)
            .bind(f.end as i64)
            .bind(f.entries as i64)
            .bind(&f.sha256)
            .bind(f.size as i64)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        if !p.real_keys.is_empty() {
            sqlx::query(self.bulk().delete_published)
                .bind(serde_json::Value::from(p.real_keys.clone()).to_string())
                .execute(&mut *tx)
                .await?;
        }
        if let Some(id) = p.filter {
            sqlx::query("DELETE FROM imported_filters WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        bump_in(&mut tx, "batches_published", 1).await?;
        bump_in(&mut tx, "keys_published", p.real_keys.len() as i64).await?;
        tx.commit().await?;
        Ok(())
    }

    /// The next number of a batch made for `peer` (1 for the first).
    pub async fn next_federation_number(&self, peer: &str) -> Result<u64> {
        let row = sqlx::query(
            "SELECT COALESCE(MAX(number), 0) AS n FROM federation_batches WHERE peer = $1",
        )
        .bind(peer)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? as u64 + 1)
    }

    /// Up to `limit` batches made for `peer` numbered above `after`.
    pub async fn federation_batches_after(
        &self,
        peer: &str,
        after: u64,
        limit: u64,
    ) -> Result<Vec<BatchRecord>> {
        let rows = sqlx::query(
            "SELECT number, mode, start_time, end_time, entries, sha256, size FROM federation_batches \
             WHERE peer = $1 AND number > $2 ORDER BY number LIMIT $3",
        )
        .bind(peer)
        .bind(after as i64)
        .bind(limit.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_record).collect()
    }

    /// The last batch imported from `peer` (0 before the first).
    pub async fn peer_cursor(&self, peer: &str) -> Result<u64> {
        let row = sqlx::query("SELECT last_batch FROM peer_cursors WHERE peer = $1")
            .bind(peer)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<i64, _>("last_batch"))
            .transpose()?
            .map_or(0, |n| n as u64))
    }

    /// Stores what batch `number` of `peer` brought — keys not seen before
    /// (they wait for this region's next batch, never passed on) or a whole
    /// filter — and moves the peer's cursor past it, in one transaction.
    /// Returns how many keys were new.
    pub async fn import_batch(
        &self,
        peer: &str,
        number: u64,
        import: &Import,
        now: i64,
    ) -> Result<usize> {
        let received_day = now.div_euclid(86_400);
        let mut tx = self.pool.begin().await?;
        // Two statements whatever the batch's size: record the digests,
        // learning which are new, then insert those keys.
        let digests: Vec<String> = import
            .keys
            .iter()
            .map(|k| {
                hex::encode(
                    sha2::Sha256::new()
                        .chain_update(k.data.as_slice())
                        .chain_update(k.day.unwrap_or(0).to_be_bytes())
                        .finalize(),
                )
            })
            .collect();
        let mut fresh: HashSet<String> = HashSet::new();
        if !digests.is_empty() {
            let rows: Vec<serde_json::Value> = digests
                .iter()
                .zip(&import.keys)
                .map(|(d, k)| serde_json::json!([d, k.day.unwrap_or(received_day as u32)]))
                .collect();
            for row in sqlx::query(self.bulk().insert_seen)
                .bind(serde_json::Value::Array(rows).to_string())
                .fetch_all(&mut *tx)
                .await?
            {
                fresh.insert(row.try_get("d")?);
            }
        }
        let rows: Vec<serde_json::Value> = digests
            .iter()
            .zip(&import.keys)
            .filter(|(d, _)| fresh.remove(*d))
            .map(|(_, k)| {
                serde_json::json!([
                    k.mode.code(),
                    k.day,
                    hex::encode(&k.data),
                    k.days_since_onset,
                    k.origin,
                    ""
                ])
            })
            .collect();
        let new = rows.len();
        if !rows.is_empty() {
            sqlx::query(self.bulk().insert_keys)
                .bind(serde_json::Value::Array(rows).to_string())
                .bind(received_day)
                .execute(&mut *tx)
                .await?;
        }
        if let Some((origin, bits, items)) = &import.filter {
            sqlx::query(
                "INSERT INTO imported_filters (origin, bits, items, received_day) VALUES ($1, $2, $3, $4)",
            )
            .bind(origin)
            .bind(bits.clone())
            .bind(i64::from(*items))
            .bind(received_day)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO peer_cursors (peer, last_batch, updated_at) VALUES ($1, $2, $3) \
             ON CONFLICT (peer) DO UPDATE SET last_batch = excluded.last_batch, updated_at = excluded.updated_at",
        )
        .bind(peer)
        .bind(number as i64)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        bump_in(&mut tx, "federation_batches_imported", 1).await?;
        bump_in(&mut tx, "federation_keys_imported", new as i64).await?;
        tx.commit().await?;
        Ok(new)
    }

    /// Imported filters waiting to be republished: id, origin, bits, items.
    pub async fn pending_filters(&self) -> Result<Vec<(i64, String, Vec<u8>, u32)>> {
        sqlx::query("SELECT id, origin, bits, items FROM imported_filters ORDER BY id")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("id")?,
                    r.try_get("origin")?,
                    r.try_get("bits")?,
                    r.try_get::<i64, _>("items")? as u32,
                ))
            })
            .collect()
    }

    /// Up to `limit` published batches numbered above `after`, oldest first.
    pub async fn batches_after(&self, after: u64, limit: u64) -> Result<Vec<BatchRecord>> {
        let rows = sqlx::query(
            "SELECT number, mode, start_time, end_time, entries, sha256, size FROM batches \
             WHERE number > $1 ORDER BY number LIMIT $2",
        )
        .bind(after as i64)
        .bind(limit.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(batch_record).collect()
    }

    /// Stores a signed policy.
    pub async fn save_policy(&self, serial: u32, bytes: &[u8], now: i64) -> Result<()> {
        sqlx::query("INSERT INTO policies (serial, bytes, created_at) VALUES ($1, $2, $3)")
            .bind(i64::from(serial))
            .bind(bytes.to_vec())
            .bind(now)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The newest signed policy, if any.
    pub async fn latest_policy(&self) -> Result<Option<(u32, Vec<u8>)>> {
        let row = sqlx::query("SELECT serial, bytes FROM policies ORDER BY serial DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get::<i64, _>("serial")? as u32, r.try_get("bytes")?)))
            .transpose()
    }

    /// Adds to a named counter.
    pub async fn bump(&self, name: &str, by: i64) -> Result<()> {
        let mut tx = self.pool.begin().await?;
        bump_in(&mut tx, name, by).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Every counter with its value, plus keys waiting for a batch and
    /// aggregate reports stored (waiting for their day's aggregation, or
    /// for deletion once it is done).
    pub async fn counters(&self) -> Result<Vec<(String, i64)>> {
        let mut out: Vec<(String, i64)> =
            sqlx::query("SELECT name, value FROM counters ORDER BY name")
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("name")?, r.try_get("value")?)))
                .collect::<Result<_>>()?;
        let pending = sqlx::query("SELECT COUNT(*) AS n FROM keys")
            .fetch_one(&self.pool)
            .await?;
        out.push(("keys_pending".into(), pending.try_get("n")?));
        let reports = sqlx::query("SELECT COUNT(*) AS n FROM reports")
            .fetch_one(&self.pool)
            .await?;
        out.push(("reports_pending".into(), reports.try_get("n")?));
        Ok(out)
    }

    /// Deletes keys received before `day` and batches that ended before
    /// `before_secs`; returns the numbers of the deleted batches, then the
    /// deleted batches made for peers.
    pub async fn expire(&self, day: u32, before_secs: i64) -> Result<Expired> {
        let mut tx = self.pool.begin().await?;
        let keys = sqlx::query("DELETE FROM keys WHERE received_day < $1")
            .bind(i64::from(day))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let old: Vec<u64> = sqlx::query("SELECT number FROM batches WHERE end_time < $1")
            .bind(before_secs)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| r.try_get::<i64, _>("number").map(|n| n as u64))
            .collect::<Result<_, _>>()?;
        sqlx::query("DELETE FROM batches WHERE end_time < $1")
            .bind(before_secs)
            .execute(&mut *tx)
            .await?;
        let old_federation: Vec<(String, u64)> =
            sqlx::query("SELECT peer, number FROM federation_batches WHERE end_time < $1")
                .bind(before_secs)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| Ok((r.try_get("peer")?, r.try_get::<i64, _>("number")? as u64)))
                .collect::<Result<_>>()?;
        sqlx::query("DELETE FROM federation_batches WHERE end_time < $1")
            .bind(before_secs)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM seen_keys WHERE day < $1")
            .bind(i64::from(day))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM imported_filters WHERE received_day < $1")
            .bind(i64::from(day))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM tokens WHERE expires_at < $1")
            .bind(before_secs)
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM codes WHERE expires_at < $1")
            .bind(before_secs)
            .execute(&mut *tx)
            .await?;
        // Aggregate reports never aggregated (batch below the minimum), a
        // collect never answered, the helper's replay list and its records
        // of uncollected runs age out with everything else. A day's
        // collected record (helper_days, aggregates) stays: a day is
        // released once.
        sqlx::query("DELETE FROM reports WHERE day < $1")
            .bind(i64::from(day))
            .execute(&mut *tx)
            .await?;
        for table in [
            "helper_seen",
            "leader_collects",
            "helper_dropped_runs",
            "helper_jobs",
            "helper_job_reports",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE day < $1"))
                .bind(i64::from(day))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(Expired {
            keys,
            batches: old,
            federation_batches: old_federation,
        })
    }
}

fn mode_of(code: i64) -> Result<PublicationMode> {
    u8::try_from(code)
        .ok()
        .and_then(PublicationMode::from_code)
        .ok_or_else(|| StoreError::Corrupt(format!("publication mode {code}")))
}

fn batch_record(r: &AnyRow) -> Result<BatchRecord> {
    Ok(BatchRecord {
        number: r.try_get::<i64, _>("number")? as u64,
        mode: mode_of(r.try_get("mode")?)?,
        start: r.try_get::<i64, _>("start_time")? as u64,
        end: r.try_get::<i64, _>("end_time")? as u64,
        entries: r.try_get::<i64, _>("entries")? as u64,
        sha256: r.try_get("sha256")?,
        size: r.try_get::<i64, _>("size")? as u64,
    })
}

fn stored_key(r: &AnyRow) -> Result<StoredKey> {
    Ok(StoredKey {
        id: r.try_get("id")?,
        day: r.try_get::<Option<i64>, _>("day")?.map(|d| d as u32),
        data: r.try_get("data")?,
        days_since_onset: r
            .try_get::<Option<i64>, _>("days_since_onset")?
            .map(|d| d as i8),
        origin: r.try_get("origin")?,
        visited: r.try_get("visited")?,
    })
}

async fn bump_in(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str, by: i64) -> Result<()> {
    // Portable upsert: both SQLite (3.24+) and PostgreSQL accept ON CONFLICT.
    sqlx::query("INSERT INTO counters (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = counters.value + $2")
        .bind(name)
        .bind(by)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Counts released for one day (SPEC §19.4), as stored by the leader.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateRecord {
    /// The day the reports describe.
    pub day: u32,
    /// Valid reports counted.
    pub reports: u64,
    /// Reports excluded because a check failed.
    pub invalid: u64,
    /// Count per histogram bucket (SPEC §19.1), noisy if `dp_epsilon` is set.
    pub buckets: Vec<u64>,
    /// The ε each aggregator's noise used, empty without noise.
    pub dp_epsilon: String,
}

/// The collect a leader is about to send, or has sent, for a day: kept
/// until the day's counts are recorded (SPEC §19.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PendingCollect {
    /// The day.
    pub day: u32,
    /// The run the jobs were sent in, hex.
    pub run: String,
    /// Jobs sent in the run.
    pub jobs: u32,
    /// Reports valid at both aggregators.
    pub reports: u64,
    /// Reports excluded because a check failed.
    pub invalid: u64,
    /// The leader's aggregate share, hex, noised once if `dp_epsilon` is set.
    pub leader_share: String,
    /// The ε of the leader's noise, empty without noise.
    pub dp_epsilon: String,
}

/// A day at the helper: its current run and, once collected, the collect
/// that closed it and the answer given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperDay {
    /// The current (latest) run, hex; empty for a day aggregated before jobs.
    pub run: String,
    /// `(collect key, answer)` once the day is collected.
    pub collected: Option<(String, String)>,
}

/// One job as the helper records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HelperJob {
    /// The day its reports describe.
    pub day: u32,
    /// The run, hex.
    pub run: String,
    /// The job's number in its run, from 0.
    pub job: u32,
    /// Digest of the job's report ids in order: a retry carries the same.
    pub ids_digest: String,
    /// Valid reports added to `share`.
    pub reports: u64,
    /// The sum of the valid reports' output shares, hex, without noise.
    pub share: String,
    /// The answer given, sent again to a retry.
    pub response: String,
}

/// What became of a job the helper was asked to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum JobRecord {
    /// Recorded now (a new run replaces the day's earlier, uncollected one).
    Recorded,
    /// The same job was recorded before: here is the answer given then.
    Repeated(String),
    /// The run has another job under this number.
    Conflict,
    /// A report of the job is in another job of the run.
    DuplicateReport,
    /// A newer run of the day replaced this one.
    Superseded,
    /// The day is collected.
    Collected,
}

/// What became of a collect the helper was asked to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CollectRecord {
    /// Recorded now: the day is closed.
    Recorded,
    /// The same collect closed the day before: here is the answer given then.
    Repeated(String),
    /// The day was collected by another collect.
    Collected,
    /// The run is not the day's current run.
    NotCurrent,
    /// A report of the run was counted in another day meanwhile; nothing changed.
    AlreadyCounted,
}

/// The statements of aggregation whose SQL differs between the backends:
/// report ids travel as one JSON array parameter (see [`BulkSql`]).
struct AggregateSql {
    /// `$1` day, `$2` run, `$3` `[[id hex, counted 0|1], …]`; ids already
    /// in the run are skipped.
    insert_job_reports: &'static str,
    /// `$1` `[id hex, …]`: those already counted, hex.
    counted_before: &'static str,
}

const SQLITE_AGGREGATE: AggregateSql = AggregateSql {
    insert_job_reports: "INSERT INTO helper_job_reports (day, run_id, report_id, counted) \
                         SELECT $1, $2, unhex(json_extract(value, '$[0]')), json_extract(value, '$[1]') \
                         FROM json_each($3) WHERE true ON CONFLICT DO NOTHING",
    counted_before: "SELECT lower(hex(report_id)) AS id FROM helper_seen \
                     WHERE report_id IN (SELECT unhex(value) FROM json_each($1))",
};

const POSTGRES_AGGREGATE: AggregateSql = AggregateSql {
    insert_job_reports: "INSERT INTO helper_job_reports (day, run_id, report_id, counted) \
                         SELECT $1::bigint, $2::text, decode(e->>0, 'hex'), (e->>1)::bigint \
                         FROM jsonb_array_elements($3::jsonb) AS e ON CONFLICT DO NOTHING",
    counted_before: "SELECT encode(report_id, 'hex') AS id FROM helper_seen \
                     WHERE report_id IN (SELECT decode(value, 'hex') \
                     FROM jsonb_array_elements_text($1::jsonb) AS value)",
};

fn report_id_of(bytes: Vec<u8>) -> Result<[u8; 16]> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("a report id is not 16 bytes".into()))
}

impl Store {
    fn aggregate_sql(&self) -> &'static AggregateSql {
        match self.backend {
            Backend::Sqlite => &SQLITE_AGGREGATE,
            Backend::Postgres => &POSTGRES_AGGREGATE,
        }
    }

    /// Stores a phone's report for the leader; false if its id is known.
    pub async fn insert_report(
        &self,
        id: &[u8; 16],
        day: u32,
        time: i64,
        body: &str,
    ) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO reports (report_id, day, time, body) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (report_id) DO NOTHING",
        )
        .bind(id.to_vec())
        .bind(i64::from(day))
        .bind(time)
        .bind(body)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// How many reports of `day` are stored.
    pub async fn count_reports(&self, day: u32) -> Result<u64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM reports WHERE day = $1")
            .bind(i64::from(day))
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")? as u64)
    }

    /// Up to `limit` stored reports of `day` (id and JSON), in report id
    /// order, after the id `after` (from the first if `None`).
    pub async fn reports_page(
        &self,
        day: u32,
        after: Option<&[u8; 16]>,
        limit: usize,
    ) -> Result<Vec<([u8; 16], String)>> {
        sqlx::query(
            "SELECT report_id, body FROM reports WHERE day = $1 AND report_id > $2 \
             ORDER BY report_id LIMIT $3",
        )
        .bind(i64::from(day))
        .bind(after.map_or_else(Vec::new, |id| id.to_vec()))
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((report_id_of(r.try_get("report_id")?)?, r.try_get("body")?)))
        .collect()
    }

    /// Whether `day` takes no more reports: aggregated, or its collect is
    /// pending.
    pub async fn day_closed(&self, day: u32) -> Result<bool> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM aggregates WHERE day = $1) \
             + (SELECT COUNT(*) FROM leader_collects WHERE day = $1) AS n",
        )
        .bind(i64::from(day))
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// The counts released for `day`, if it was aggregated.
    pub async fn aggregate_of(&self, day: u32) -> Result<Option<AggregateRecord>> {
        let row = sqlx::query(
            "SELECT day, reports, invalid, buckets, dp_epsilon FROM aggregates WHERE day = $1",
        )
        .bind(i64::from(day))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let buckets: String = r.try_get("buckets")?;
            Ok(AggregateRecord {
                day: r.try_get::<i64, _>("day")? as u32,
                reports: r.try_get::<i64, _>("reports")? as u64,
                invalid: r.try_get::<i64, _>("invalid")? as u64,
                buckets: serde_json::from_str(&buckets)
                    .map_err(|e| StoreError::Corrupt(format!("aggregate buckets: {e}")))?,
                dp_epsilon: r.try_get("dp_epsilon")?,
            })
        })
        .transpose()
    }

    /// Records a day's counts and deletes its pending collect, in one
    /// transaction; false (and nothing changed) if the day was already
    /// aggregated. The day's reports go with [`Store::purge_aggregated_reports`].
    pub async fn record_aggregate(&self, a: &AggregateRecord, now: i64) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        let n = sqlx::query(
            "INSERT INTO aggregates (day, reports, invalid, buckets, dp_epsilon, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (day) DO NOTHING",
        )
        .bind(i64::from(a.day))
        .bind(a.reports as i64)
        .bind(a.invalid as i64)
        .bind(serde_json::to_string(&a.buckets).unwrap_or_default())
        .bind(&a.dp_epsilon)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        sqlx::query("DELETE FROM leader_collects WHERE day = $1")
            .bind(i64::from(a.day))
            .execute(&mut *tx)
            .await?;
        bump_in(&mut tx, "aggregate_reports_counted", a.reports as i64).await?;
        bump_in(&mut tx, "aggregate_reports_invalid", a.invalid as i64).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Deletes up to `limit` stored reports of days already aggregated, in
    /// one transaction; returns how many. A day's reports are deleted in
    /// such batches after its counts are recorded: deleting a million
    /// reports in one transaction holds SQLite's write lock for half a
    /// minute, longer than an upload waits for it.
    pub async fn purge_aggregated_reports(&self, limit: usize) -> Result<u64> {
        let n = sqlx::query(
            "DELETE FROM reports WHERE report_id IN (SELECT report_id FROM reports \
             WHERE day IN (SELECT day FROM aggregates) LIMIT $1)",
        )
        .bind(limit.min(i64::MAX as usize) as i64)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n)
    }

    /// The leader's pending collect for `day`, if any.
    pub async fn leader_collect(&self, day: u32) -> Result<Option<PendingCollect>> {
        let row = sqlx::query(
            "SELECT day, run_id, jobs, reports, invalid, leader_share, dp_epsilon \
             FROM leader_collects WHERE day = $1",
        )
        .bind(i64::from(day))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(PendingCollect {
                day: r.try_get::<i64, _>("day")? as u32,
                run: r.try_get("run_id")?,
                jobs: r.try_get::<i64, _>("jobs")? as u32,
                reports: r.try_get::<i64, _>("reports")? as u64,
                invalid: r.try_get::<i64, _>("invalid")? as u64,
                leader_share: r.try_get("leader_share")?,
                dp_epsilon: r.try_get("dp_epsilon")?,
            })
        })
        .transpose()
    }

    /// Records the collect the leader is about to send; false (and nothing
    /// changed) if the day already has one.
    pub async fn save_leader_collect(&self, c: &PendingCollect, now: i64) -> Result<bool> {
        let n = sqlx::query(
            "INSERT INTO leader_collects (day, run_id, jobs, reports, invalid, leader_share, dp_epsilon, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (day) DO NOTHING",
        )
        .bind(i64::from(c.day))
        .bind(&c.run)
        .bind(i64::from(c.jobs))
        .bind(c.reports as i64)
        .bind(c.invalid as i64)
        .bind(&c.leader_share)
        .bind(&c.dp_epsilon)
        .bind(now)
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Forgets the pending collect of `day` (the helper refused it): the
    /// day takes reports again and its next aggregation is a new run.
    pub async fn drop_leader_collect(&self, day: u32) -> Result<()> {
        sqlx::query("DELETE FROM leader_collects WHERE day = $1")
            .bind(i64::from(day))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// The helper's record of `day`, if any run of it was seen.
    pub async fn helper_day(&self, day: u32) -> Result<Option<HelperDay>> {
        let row =
            sqlx::query("SELECT run_id, collect_key, response FROM helper_days WHERE day = $1")
                .bind(i64::from(day))
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            let key: Option<String> = r.try_get("collect_key")?;
            let response: Option<String> = r.try_get("response")?;
            Ok(HelperDay {
                run: r.try_get("run_id")?,
                collected: key.zip(response),
            })
        })
        .transpose()
    }

    /// Whether `run` of `day` was replaced by a newer run.
    pub async fn helper_run_dropped(&self, day: u32, run: &str) -> Result<bool> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM helper_dropped_runs WHERE day = $1 AND run_id = $2",
        )
        .bind(i64::from(day))
        .bind(run)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")? > 0)
    }

    /// The helper's record of one job: digest of its ids and its answer.
    pub async fn helper_job(
        &self,
        day: u32,
        run: &str,
        job: u32,
    ) -> Result<Option<(String, String)>> {
        let row = sqlx::query(
            "SELECT ids_digest, response FROM helper_jobs WHERE day = $1 AND run_id = $2 AND job = $3",
        )
        .bind(i64::from(day))
        .bind(run)
        .bind(i64::from(job))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("ids_digest")?, r.try_get("response")?)))
            .transpose()
    }

    /// The report ids among `ids` the helper counted in a collected day.
    pub async fn counted_before(&self, ids: &[[u8; 16]]) -> Result<HashSet<[u8; 16]>> {
        if ids.is_empty() {
            return Ok(HashSet::new());
        }
        let list: Vec<String> = ids.iter().map(hex::encode).collect();
        let rows = sqlx::query(self.aggregate_sql().counted_before)
            .bind(serde_json::Value::from(list).to_string())
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                let id: String = r.try_get("id")?;
                let bytes = hex::decode(&id)
                    .map_err(|_| StoreError::Corrupt("a report id is not hex".into()))?;
                report_id_of(bytes)
            })
            .collect()
    }

    /// Records one job with its report ids (each with whether it was
    /// counted), all or nothing. The first job of a new run replaces the
    /// day's earlier, uncollected run: its jobs are deleted and its id is
    /// remembered so that its late jobs are refused.
    pub async fn record_helper_job(
        &self,
        job: &HelperJob,
        ids: &[([u8; 16], bool)],
        now: i64,
    ) -> Result<JobRecord> {
        let day = i64::from(job.day);
        let mut tx = self.pool.begin().await?;
        let current = sqlx::query("SELECT run_id, collect_key FROM helper_days WHERE day = $1")
            .bind(day)
            .fetch_optional(&mut *tx)
            .await?;
        match current {
            Some(r) if r.try_get::<Option<String>, _>("collect_key")?.is_some() => {
                return Ok(JobRecord::Collected);
            }
            Some(r) => {
                let run: String = r.try_get("run_id")?;
                if run != job.run {
                    let dropped = sqlx::query(
                        "SELECT COUNT(*) AS n FROM helper_dropped_runs WHERE day = $1 AND run_id = $2",
                    )
                    .bind(day)
                    .bind(&job.run)
                    .fetch_one(&mut *tx)
                    .await?
                    .try_get::<i64, _>("n")?;
                    if dropped > 0 {
                        return Ok(JobRecord::Superseded);
                    }
                    sqlx::query("INSERT INTO helper_dropped_runs (day, run_id) VALUES ($1, $2)")
                        .bind(day)
                        .bind(&run)
                        .execute(&mut *tx)
                        .await?;
                    for table in ["helper_jobs", "helper_job_reports"] {
                        sqlx::query(&format!("DELETE FROM {table} WHERE day = $1"))
                            .bind(day)
                            .execute(&mut *tx)
                            .await?;
                    }
                    sqlx::query(
                        "UPDATE helper_days SET run_id = $2, updated_at = $3 WHERE day = $1",
                    )
                    .bind(day)
                    .bind(&job.run)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            None => {
                sqlx::query(
                    "INSERT INTO helper_days (day, run_id, collect_key, response, updated_at) \
                     VALUES ($1, $2, NULL, NULL, $3)",
                )
                .bind(day)
                .bind(&job.run)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            }
        }
        let earlier = sqlx::query(
            "SELECT ids_digest, response FROM helper_jobs WHERE day = $1 AND run_id = $2 AND job = $3",
        )
        .bind(day)
        .bind(&job.run)
        .bind(i64::from(job.job))
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = earlier {
            let digest: String = r.try_get("ids_digest")?;
            return Ok(if digest == job.ids_digest {
                JobRecord::Repeated(r.try_get("response")?)
            } else {
                JobRecord::Conflict
            });
        }
        let list: Vec<serde_json::Value> = ids
            .iter()
            .map(|(id, counted)| serde_json::json!([hex::encode(id), i64::from(*counted)]))
            .collect();
        let inserted = sqlx::query(self.aggregate_sql().insert_job_reports)
            .bind(day)
            .bind(&job.run)
            .bind(serde_json::Value::Array(list).to_string())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if inserted != ids.len() as u64 {
            tx.rollback().await?;
            return Ok(JobRecord::DuplicateReport);
        }
        sqlx::query(
            "INSERT INTO helper_jobs (day, run_id, job, ids_digest, reports, share, response, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(day)
        .bind(&job.run)
        .bind(i64::from(job.job))
        .bind(&job.ids_digest)
        .bind(job.reports as i64)
        .bind(&job.share)
        .bind(&job.response)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(JobRecord::Recorded)
    }

    /// The jobs recorded for `run` of `day`: number, valid reports and
    /// share (hex, without noise), by number.
    pub async fn helper_run_jobs(&self, day: u32, run: &str) -> Result<Vec<(u32, u64, String)>> {
        sqlx::query(
            "SELECT job, reports, share FROM helper_jobs WHERE day = $1 AND run_id = $2 ORDER BY job",
        )
        .bind(i64::from(day))
        .bind(run)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<i64, _>("job")? as u32,
                r.try_get::<i64, _>("reports")? as u64,
                r.try_get("share")?,
            ))
        })
        .collect()
    }

    /// Closes `day` with the collect of `run`, all or nothing: the run's
    /// counted report ids join those counted before (refused if one is
    /// there already), the answer is kept for a retry of the same collect,
    /// and the day's job records are deleted.
    pub async fn record_helper_collect(
        &self,
        day: u32,
        run: &str,
        collect_key: &str,
        response: &str,
        reports: u64,
        now: i64,
    ) -> Result<CollectRecord> {
        let day = i64::from(day);
        let mut tx = self.pool.begin().await?;
        let current =
            sqlx::query("SELECT run_id, collect_key, response FROM helper_days WHERE day = $1")
                .bind(day)
                .fetch_optional(&mut *tx)
                .await?;
        let Some(current) = current else {
            return Ok(CollectRecord::NotCurrent);
        };
        if let Some(key) = current.try_get::<Option<String>, _>("collect_key")? {
            return Ok(if key == collect_key {
                CollectRecord::Repeated(current.try_get("response")?)
            } else {
                CollectRecord::Collected
            });
        }
        if current.try_get::<String, _>("run_id")? != run {
            return Ok(CollectRecord::NotCurrent);
        }
        let counted = sqlx::query(
            "INSERT INTO helper_seen (report_id, day) SELECT report_id, day FROM helper_job_reports \
             WHERE day = $1 AND run_id = $2 AND counted = 1 ON CONFLICT (report_id) DO NOTHING",
        )
        .bind(day)
        .bind(run)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if counted != reports {
            tx.rollback().await?;
            return Ok(CollectRecord::AlreadyCounted);
        }
        sqlx::query(
            "INSERT INTO helper_seen (report_id, day) SELECT report_id, day FROM helper_job_reports \
             WHERE day = $1 AND run_id = $2 AND counted = 0 ON CONFLICT (report_id) DO NOTHING",
        )
        .bind(day)
        .bind(run)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE helper_days SET collect_key = $2, response = $3, updated_at = $4 WHERE day = $1",
        )
        .bind(day)
        .bind(collect_key)
        .bind(response)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        for table in ["helper_jobs", "helper_job_reports"] {
            sqlx::query(&format!("DELETE FROM {table} WHERE day = $1"))
                .bind(day)
                .execute(&mut *tx)
                .await?;
        }
        bump_in(&mut tx, "helper_reports_counted", reports as i64).await?;
        tx.commit().await?;
        Ok(CollectRecord::Recorded)
    }
}
