-- Greenlight server schema, PostgreSQL. No table holds an IP address or a
-- device identifier.
CREATE TABLE codes (
    id          TEXT PRIMARY KEY,          -- public handle for revocation
    short_hash  BYTEA NOT NULL UNIQUE,      -- SHA-256 of the numeric code
    long_hash   BYTEA NOT NULL UNIQUE,      -- SHA-256 of the link code
    test_type   TEXT NOT NULL,
    test_day    BIGINT NOT NULL,
    onset_day   BIGINT,
    created_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL,
    state       TEXT NOT NULL              -- issued | used | revoked
);
CREATE TABLE tokens (
    hash        BYTEA PRIMARY KEY,          -- SHA-256 of the upload token
    test_day    BIGINT NOT NULL,
    onset_day   BIGINT,
    expires_at  BIGINT NOT NULL,
    used        BIGINT NOT NULL DEFAULT 0
);
-- Keys waiting for the next batch. A published key is deleted in the same
-- transaction that records its batch: from then on only the shuffled,
-- padded batch file holds it, so nothing links the keys of one upload
-- beyond the hour they waited here.
CREATE TABLE keys (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, -- arrival order; rows live only until published
    mode             BIGINT NOT NULL,      -- 1 compact, 2 unlinkable
    day              BIGINT,               -- compact: the key's UTC day
    data             BYTEA NOT NULL,        -- 32-byte key or 16-byte epoch hash
    days_since_onset BIGINT,
    origin           TEXT NOT NULL,
    received_day     BIGINT NOT NULL
);
CREATE TABLE batches (
    number      BIGINT PRIMARY KEY,
    mode        BIGINT NOT NULL,
    start_time  BIGINT NOT NULL,
    end_time    BIGINT NOT NULL,
    entries     BIGINT NOT NULL,
    real_keys   BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE policies (
    serial      BIGINT PRIMARY KEY,
    bytes       BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);
CREATE TABLE counters (
    name        TEXT PRIMARY KEY,
    value       BIGINT NOT NULL
);
