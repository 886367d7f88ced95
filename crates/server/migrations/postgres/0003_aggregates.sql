-- Aggregate counts (SPEC §19).
-- Leader: reports waiting for their day's aggregation. Each holds only
-- HPKE-sealed shares (the JSON the phone sent); deleted once aggregated.
CREATE TABLE reports (
    report_id   BYTEA PRIMARY KEY,
    day         BIGINT NOT NULL,
    time        BIGINT NOT NULL,
    body        TEXT NOT NULL
);
CREATE INDEX reports_by_day ON reports (day);
-- Leader: released counts, one row per day; a day is aggregated once.
CREATE TABLE aggregates (
    day         BIGINT PRIMARY KEY,
    reports     BIGINT NOT NULL,
    invalid     BIGINT NOT NULL,
    buckets     TEXT NOT NULL,
    dp_epsilon  TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
-- Helper: every report id it has prepared, so none is counted twice.
CREATE TABLE helper_seen (
    report_id   BYTEA PRIMARY KEY,
    day         BIGINT NOT NULL
);
-- Helper: the one batch per day it has aggregated and its answer, given
-- again (same noise) if the leader retries the same batch.
CREATE TABLE helper_batches (
    day         BIGINT PRIMARY KEY,
    ids_digest  TEXT NOT NULL,
    response    TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);
