-- Federation between regions (SPEC §18).
-- Regions the patient named as visited during the infectious period,
-- comma-separated: those peers receive the key. Empty for keys imported
-- from a peer (they are never passed on).
ALTER TABLE keys ADD COLUMN visited TEXT NOT NULL DEFAULT '';
-- Batches made for one peer: the local keys it should receive.
CREATE TABLE federation_batches (
    peer        TEXT NOT NULL,
    number      BIGINT NOT NULL,
    mode        BIGINT NOT NULL,
    start_time  BIGINT NOT NULL,
    end_time    BIGINT NOT NULL,
    entries     BIGINT NOT NULL,
    sha256      TEXT NOT NULL,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (peer, number)
);
-- The last batch imported from each peer: moved in the transaction that
-- stores what the batch brought, so nothing is fetched twice or lost.
CREATE TABLE peer_cursors (
    peer        TEXT PRIMARY KEY,
    last_batch  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);
-- Digests of keys already imported or published, to drop duplicates.
CREATE TABLE seen_keys (
    digest      BLOB PRIMARY KEY,
    day         BIGINT NOT NULL
);
-- Unlinkable filters imported from peers, republished whole (a Bloom
-- filter cannot be split) as batches of their own.
CREATE TABLE imported_filters (
    id           INTEGER PRIMARY KEY,
    origin       TEXT NOT NULL,
    bits         BLOB NOT NULL,
    items        BIGINT NOT NULL,
    received_day BIGINT NOT NULL
);
