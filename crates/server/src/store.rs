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

    /// Every counter with its value, plus keys waiting for a batch.
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
        // Aggregate reports never aggregated (batch below the minimum) and
        // the helper's replay list age out with everything else.
        sqlx::query("DELETE FROM reports WHERE day < $1")
            .bind(i64::from(day))
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM helper_seen WHERE day < $1")
            .bind(i64::from(day))
            .execute(&mut *tx)
            .await?;
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

/// What the helper answered for a day's batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HelperBatch {
    /// Recorded now.
    Recorded,
    /// The same report ids were aggregated before: here is the answer given then.
    Repeated(String),
    /// The day was aggregated with other reports, or a report id was
    /// already counted in another batch.
    Refused,
}

impl Store {
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

    /// The stored reports of `day` (their JSON), in arrival order of id.
    pub async fn reports_of_day(&self, day: u32) -> Result<Vec<String>> {
        sqlx::query("SELECT body FROM reports WHERE day = $1 ORDER BY report_id")
            .bind(i64::from(day))
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| Ok(r.try_get("body")?))
            .collect()
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

    /// Records a day's counts and deletes its reports, in one transaction;
    /// false (and nothing changed) if the day was already aggregated.
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
        sqlx::query("DELETE FROM reports WHERE day = $1")
            .bind(i64::from(a.day))
            .execute(&mut *tx)
            .await?;
        bump_in(&mut tx, "aggregate_reports_counted", a.reports as i64).await?;
        bump_in(&mut tx, "aggregate_reports_invalid", a.invalid as i64).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// The helper's earlier answer for `day`: digest of its report ids and
    /// the response.
    pub async fn helper_batch(&self, day: u32) -> Result<Option<(String, String)>> {
        let row = sqlx::query("SELECT ids_digest, response FROM helper_batches WHERE day = $1")
            .bind(i64::from(day))
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("ids_digest")?, r.try_get("response")?)))
            .transpose()
    }

    /// Records the helper's batch for `day` with every report id it counts,
    /// all or nothing: refused if the day or any id was counted before.
    pub async fn record_helper_batch(
        &self,
        day: u32,
        ids: &[[u8; 16]],
        ids_digest: &str,
        response: &str,
        now: i64,
    ) -> Result<HelperBatch> {
        if let Some((digest, earlier)) = self.helper_batch(day).await? {
            return Ok(if digest == ids_digest {
                HelperBatch::Repeated(earlier)
            } else {
                HelperBatch::Refused
            });
        }
        let mut tx = self.pool.begin().await?;
        for id in ids {
            let fresh = sqlx::query(
                "INSERT INTO helper_seen (report_id, day) VALUES ($1, $2) ON CONFLICT (report_id) DO NOTHING",
            )
            .bind(id.to_vec())
            .bind(i64::from(day))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if fresh == 0 {
                tx.rollback().await?;
                return Ok(HelperBatch::Refused);
            }
        }
        let n = sqlx::query(
            "INSERT INTO helper_batches (day, ids_digest, response, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (day) DO NOTHING",
        )
        .bind(i64::from(day))
        .bind(ids_digest)
        .bind(response)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            tx.rollback().await?;
            return Ok(HelperBatch::Refused);
        }
        bump_in(&mut tx, "helper_reports_counted", ids.len() as i64).await?;
        tx.commit().await?;
        Ok(HelperBatch::Recorded)
    }
}
